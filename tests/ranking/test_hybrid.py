"""The ranker's fast paths against straightforward references: the feature matrix built a
block of columns at a time, and River learning pairs in mini-batches instead of one by one."""

from __future__ import annotations

import math
import pickle
import random

import numpy as np
from river import linear_model, optim, preprocessing

from ranking.engine import Recommender
from ranking.hybrid import (FEATURES, HISTORY_DEPTH, LANG_HALF_LIVES_H, TREND_HALF_LIVES_H,
                            VARIANCE_FLOOR, HybridConfig, PairwiseScorer, Signals, UserContext)
from ranking.memory_store import MemoryStore
from ranking.signals import HOUR
from streams.contracts.schemas import ItemEvent, ReviewEvent
from tests.ranking.fakes import FakeEncoder

T0 = 1.6e9
THEMES = ["space ship stars", "farm cows harvest", "zombie horror dark", "racing cars speed"]
LANGS = ["de", "en", "ja", "ko"]


# ---- features -------------------------------------------------------------------------------
def _rel(values: np.ndarray) -> np.ndarray:
    top = float(values.max()) if values.size else 0.0
    return (values / top).astype(np.float32) if top > 0 else np.zeros(values.shape, np.float32)


def _co_scores(co, rows: list[int], weights: list[float], n: int, cosine: bool = True
               ) -> tuple[np.ndarray, np.ndarray]:
    """Sum and max over the history of c_hj / sqrt(n_h [n_j]) * w_h, pair by pair."""
    norm = np.sqrt(np.maximum(co.n, 1e-6))
    terms = np.asarray([[co.lists.get(h, j) / norm[h] / (norm[j] if cosine else 1.0) * w
                         for j in range(n)] for h, w in zip(rows, weights)], np.float32)
    return terms.sum(axis=0), terms.max(axis=0)


def _reference_features(rec: Recommender, ctx: UserContext, now: float) -> np.ndarray:
    """Every feature computed on its own, as one array per feature (the plain definition)."""
    c, n = rec.catalog, len(rec.catalog)
    zeros = np.zeros(n, np.float32)
    f: dict[str, np.ndarray] = {}
    vec = np.stack([c.vector(r) for r in range(n)])
    f["content"] = vec @ ctx.interest if ctx.interest is not None else zeros
    f["content_own"] = vec @ ctx.own if ctx.own is not None else zeros
    f["content_text"] = c.text_vec[:n] @ ctx.interest if ctx.interest is not None else zeros
    rows, pos_w = ctx.history_rows, [max(w, 0.0) for w in ctx.history_weights]
    total, best = _co_scores(rec.cooc, rows, pos_w, n)
    last, _ = _co_scores(rec.cooc, rows[-3:], pos_w[-3:], n)
    f["cooc"], f["cooc_last"], f["cooc_max"] = _rel(total), _rel(last), best
    f["cooc_recent"] = _rel(_co_scores(rec.cooc_recent, rows, pos_w, n, cosine=False)[0])
    f["next"] = _rel(np.asarray([sum(rec.transitions.lists.get(p, j) / max(rec.transitions.out[p], 1.0)
                                     for p in rows[-3:]) for j in range(n)], np.float32))
    counts = rec.trend.values(now, n)
    for j, h in enumerate(TREND_HALF_LIVES_H):
        f[f"trend_{int(h)}h"] = _rel(counts[:, j])
    f["trend_log"] = np.log((counts[:, 2] + 0.01) / (rec.trend.totals(now)[2] + 1.0))
    lang_counts = rec.lang_trend[ctx.main_lang].values(now, n)
    for j, h in enumerate(LANG_HALF_LIVES_H):
        f[f"lang_trend_{int(h)}h"] = _rel(lang_counts[:, j])
    n_events = c.n_events[:n].astype(np.float32)
    age_h = np.maximum(now - c.first_ts[:n], 0.0) / HOUR
    f["age"], f["new"] = np.log1p(age_h), (age_h < 48.0).astype(np.float32)
    f["pop"], f["pos_rate"] = np.log1p(n_events), (c.n_pos[:n] + 1.0) / (n_events + 2.0)
    depth = min(len(rows), HISTORY_DEPTH) / HISTORY_DEPTH
    for name, base in (("content_x_hist", "content"), ("cooc_x_hist", "cooc"), ("trend_x_hist", "trend_24h")):
        f[name] = f[base] * depth
    return np.stack([f[name] for name in FEATURES], axis=1).astype(np.float64)


def _busy_engine() -> tuple[Recommender, dict[str, dict]]:
    """Sixteen items in four themes and languages, reviewed by users who stick to a theme."""
    enc = FakeEncoder(32)
    rec = Recommender(MemoryStore(32), enc, seed=0)
    rec.upsert_items([ItemEvent(item_id=f"{t}-{i}", title=f"{THEMES[t]} {i}", lang=LANGS[t],
                                description=THEMES[t], ts=T0) for t in range(4) for i in range(4)])
    rng = random.Random(1)
    profiles: dict[str, dict] = {}
    for n in range(300):
        user = f"u{n % 23}"
        theme = n % 23 % 4 if rng.random() < 0.8 else rng.randrange(4)
        e = ReviewEvent(event_id=f"r{n}", user_id=user, item_id=f"{theme}-{rng.randrange(4)}",
                        ts=T0 + 600 * n, text=THEMES[theme], lang=LANGS[n % 23 % 4],
                        voted_up=rng.random() < 0.8)
        profiles[user] = rec.observe(profiles.get(user), e)
    return rec, profiles


def test_feature_matrix_equals_the_per_feature_definition() -> None:
    rec, profiles = _busy_engine()
    now = T0 + 600 * 300
    for user in ("u0", "u5", "u22"):
        ctx = rec._context(profiles[user], None)
        signals = Signals(rec.catalog, rec.trend, rec.lang_trend, rec.cooc, rec.cooc_recent,
                          rec.transitions, ctx, now, 48.0)
        rows = np.arange(len(rec.catalog))
        expected = _reference_features(rec, ctx, now)
        assert np.count_nonzero(expected.any(axis=0)) >= len(FEATURES) - 1  # "new" may be all 0
        np.testing.assert_allclose(signals.matrix(rows), expected, rtol=1e-5, atol=1e-6)
        some = rows[::3][::-1]                       # any rows, in any order, alone
        np.testing.assert_allclose(signals.matrix(some), signals.matrix(rows)[some], rtol=1e-6)
        cooc = expected[:, FEATURES.index("cooc")]
        ranked = signals.ranked("cooc")
        assert set(ranked.tolist()) == set(np.flatnonzero(cooc).tolist())
        assert (np.diff(cooc[ranked]) <= 1e-6).all()      # highest first


def test_empty_catalog_has_an_empty_matrix_and_no_candidates() -> None:
    rec = Recommender(MemoryStore(8), None)
    ctx = rec._context(None, None)
    signals = rec._signals("u", None, ctx, T0, None)
    assert signals.matrix(np.arange(0)).shape == (0, len(FEATURES))
    assert rec._candidates(signals, ctx, set(), None).size == 0
    assert rec.recommend("u", None, now=T0) == []


# ---- learning -------------------------------------------------------------------------------
def _pairs_stream(n_events: int, n_negs: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Events whose chosen item scores higher under a hidden weight vector (plus noise)."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=len(FEATURES)) * (rng.random(len(FEATURES)) < 0.5)
    scale = rng.uniform(0.2, 3.0, len(FEATURES))          # features on unequal scales
    events = []
    for _ in range(n_events):
        x = rng.normal(size=(n_negs + 1, len(FEATURES))) * scale
        best = int(np.argmax(x @ (truth / scale) + rng.gumbel(size=n_negs + 1)))
        events.append((x[best], np.delete(x, best, axis=0)))
    return events


def _per_pair_river(config: HybridConfig, events, rng: random.Random) -> tuple[np.ndarray, int]:
    """The unbatched learner: River's learn_one on every pair and the weight average moved
    after every event. Returns (averaged raw weights, pairs)."""
    scaler = preprocessing.StandardScaler()
    model = linear_model.LogisticRegression(optimizer=optim.SGD(config.learning_rate), l2=config.l2,
                                            intercept_lr=0.0)
    average, pairs = np.zeros(len(FEATURES)), 0

    def scales() -> list[float]:
        return [math.sqrt(scaler.vars.get(name, 0.0) + VARIANCE_FLOOR) for name in FEATURES]

    for updates, (x_pos, x_negs) in enumerate(events, 1):
        for x_neg in x_negs:
            sign = rng.random() < 0.5
            x = dict(zip(FEATURES, ((x_pos - x_neg) if sign else (x_neg - x_pos)).tolist()))
            scaler.learn_one(x)
            s = scales()
            model.learn_one({k: v / s[j] for j, (k, v) in enumerate(x.items())}, sign)
            pairs += 1
        raw = np.asarray([model.weights.get(name, 0.0) for name in FEATURES]) / np.asarray(scales())
        average += (raw - average) / min(updates, config.average_updates)
    return average, pairs


def _batched(config: HybridConfig, events, rng: random.Random) -> PairwiseScorer:
    scorer = PairwiseScorer(config)
    for x_pos, x_negs in events:
        scorer.learn(x_pos, x_negs, rng)
    scorer.flush()
    return scorer


def test_one_pair_per_batch_is_river_learn_one() -> None:
    config = HybridConfig(learn_batch=1, warmup_pairs=0, average_updates=50)
    events = _pairs_stream(300, n_negs=1, seed=2)
    expected, pairs = _per_pair_river(config, events, random.Random(7))
    scorer = _batched(config, events, random.Random(7))
    assert scorer.pairs == pairs
    np.testing.assert_allclose(scorer.weights(), expected, rtol=1e-6, atol=1e-9)


def test_mini_batches_learn_what_per_pair_learning_learns() -> None:
    config = HybridConfig(warmup_pairs=0, average_updates=1_000)
    events = _pairs_stream(3_000, n_negs=6, seed=3)
    expected, _ = _per_pair_river(config, events, random.Random(5))
    got = _batched(config, events, random.Random(5)).weights()
    cosine = got @ expected / (np.linalg.norm(got) * np.linalg.norm(expected))
    assert cosine > 0.99, cosine
    assert 0.8 < np.linalg.norm(got) / np.linalg.norm(expected) < 1.25   # same step size
    held_out = [np.vstack([p, n]) for p, n in _pairs_stream(500, n_negs=6, seed=4)]
    same_top = np.mean([np.argmax(x @ got) == np.argmax(x @ expected) for x in held_out])
    assert same_top > 0.95, same_top


def test_weights_move_once_a_batch_is_complete_and_pending_pairs_survive_pickling() -> None:
    scorer = PairwiseScorer(HybridConfig(learn_batch=4, warmup_pairs=0))
    events = _pairs_stream(8, n_negs=3, seed=5)
    rng = random.Random(0)
    for x_pos, x_negs in events[:3]:
        scorer.learn(x_pos, x_negs, rng)
    assert scorer.pairs == 0 and not scorer.weights().any()
    copy = pickle.loads(pickle.dumps(scorer))
    for s in (scorer, copy):
        s.learn(*events[3], random.Random(1))
    assert scorer.pairs == copy.pairs == 12
    assert scorer.weights().any()
    np.testing.assert_array_equal(scorer.weights(), copy.weights())
