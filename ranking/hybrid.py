"""The production ranker's parts: features of (user, item, time), a pairwise scorer whose
weights River learns online from the stream, MMR diversity and bandit-style exploration.

Every feature is generic (no constant fitted to one data set): several trend half-lives,
from hours to a month, are all offered and the online learner decides how much each counts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from river import linear_model, optim, preprocessing

from ranking.catalog import ItemCatalog
from ranking.signals import DENSE_MERGE_ROWS, HOUR, CoCounts, DecayedCounts, Transitions, merge

TREND_HALF_LIVES_H = (3.0, 12.0, 24.0, 72.0, 168.0, 720.0)
COOC_HALF_LIFE_H = 168.0   # recent co-occurrence: pairs that are being reviewed together now
LANG_HALF_LIVES_H = (24.0, 168.0)
TREND_NAMES = tuple(f"trend_{int(h)}h" for h in TREND_HALF_LIVES_H)
LANG_NAMES = tuple(f"lang_trend_{int(h)}h" for h in LANG_HALF_LIVES_H)

FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "content": ("content", "content_own", "content_text", "content_x_hist"),
    "cooc": ("cooc", "cooc_last", "cooc_max", "cooc_recent", "next", "cooc_x_hist"),
    "trend": TREND_NAMES + ("trend_log", "trend_x_hist"),
    # What the user's language community reviews now; deliberately no "share of the item's
    # reviews in the user's language", which penalises every cross-lingual pick.
    "lang": LANG_NAMES,
    "new": ("age", "new"),
    "popular": ("pop", "pos_rate"),
}
FEATURES: tuple[str, ...] = tuple(f for group in FEATURE_GROUPS.values() for f in group)
FEATURE_INDEX: dict[str, int] = {name: j for j, name in enumerate(FEATURES)}
# [len(FEATURES), len(FEATURE_GROUPS)] 0/1: which group each feature adds to (reasons)
GROUP_MATRIX = np.asarray([[name in names for names in FEATURE_GROUPS.values()] for name in FEATURES],
                          np.float64)
# `*_x_hist` features are a signal times the user's history depth (0..1): with pairwise
# differences they let the learnt weight of that signal depend on how much we know of the user.
HISTORY_DEPTH = 20
HIST_COLS = [FEATURE_INDEX[f"{base}_x_hist"] for base in ("content", "cooc", "trend")]
HIST_BASE_COLS = [FEATURE_INDEX[base] for base in ("content", "cooc", "trend_24h")]
DENSE_FROM_ROWS = 64    # a feature matrix of this many rows reads item-to-item features densely
# Until the learner has seen `warmup_pairs` pairs, rank with this neutral start: every main
# signal counts the same. Not fitted to any data; the learnt weights replace it.
VARIANCE_FLOOR = 1e-2   # features are O(1) (shares of the top item, cosines, logs)
PRIOR_WEIGHTS = {"content": 1.0, "cooc": 1.0, "trend_24h": 1.0, "lang_trend_168h": 1.0}


def _col(name: str) -> int:
    return FEATURE_INDEX[name]


def _span(names: tuple[str, ...]) -> slice:
    """The columns of features that sit next to each other in FEATURES, in that order."""
    start = FEATURE_INDEX[names[0]]
    assert FEATURES[start:start + len(names)] == names, names
    return slice(start, start + len(names))


_CONTENT, _CONTENT_TEXT, _CONTENT_OWN = (_col(f) for f in ("content", "content_text", "content_own"))
_TREND_LOG, _AGE, _NEW, _POP, _POS_RATE = (_col(f) for f in ("trend_log", "age", "new", "pop", "pos_rate"))
_TREND_SPAN, _LANG_SPAN = _span(TREND_NAMES), _span(LANG_NAMES)


@dataclass(frozen=True)
class HybridConfig:
    """Sizes and rates of the hybrid ranker: product choices, not fitted to any data set."""

    n_content: int = 100        # ANN candidates from the profile (and query) vector
    n_cooc: int = 200           # co-occurring with the user's recent items
    n_trend: int = 300          # trending overall (three horizons share this budget)
    n_lang: int = 100           # trending in the user's languages
    n_fresh: int = 60           # newest items
    exact_search_items: int = 20_000  # up to this catalog size, content candidates are the
    #                                   exact top scores; beyond, the vector store's ANN search
    neighbours: int = 500       # co-occurring / next items kept per item (bounds memory)
    top_items: int = 1000       # most trending items kept per trend counter and horizon
    negatives: int = 6          # learning: candidates the user did not choose, per event
    learning_rate: float = 0.02
    warmup_pairs: int = 500
    learn_batch: int = 32       # learning events per River mini-batch (weights lag by < this)
    average_updates: int = 20_000  # horizon of the weight averaging, in learning events
    query_weight: float = 2.0   # a typed query outweighs the profile (both standardised)
    l2: float = 1e-5
    new_item_hours: float = 48.0
    mmr_lambda: float = 0.85    # 1 = no diversity
    mmr_pool: int = 3           # MMR picks k items among the best mmr_pool * k
    explore_rate: float = 0.1   # share of lists whose last slot explores
    explore_pool: int = 5       # exploring picks among ranks k .. explore_pool * k


@dataclass
class UserContext:
    """What ranking needs to know about the user, decoded once from the profile."""

    interest: np.ndarray | None = None
    own: np.ndarray | None = None
    query: np.ndarray | None = None
    langs: list[str] = field(default_factory=list)
    history_rows: list[int] = field(default_factory=list)      # oldest first
    history_weights: list[float] = field(default_factory=list)
    history_langs: list[str | None] = field(default_factory=list)
    history_vectors: np.ndarray | None = None   # of history_rows, once a reason needs them

    @property
    def main_lang(self) -> str | None:
        return self.langs[0] if self.langs else None


class Signals:
    """The features of (user, item) at one instant, for whichever item rows are asked.

    What depends on the user is computed once, sparsely: the item-to-item scores of the items
    that co-occur with, or followed, the user's history (every other item scores 0 there),
    and the highest trend counts to scale by (kept by the counters). A ranking then builds
    features only for its candidates, so its cost does not grow with the catalog.
    """

    def __init__(self, catalog: ItemCatalog, trend: DecayedCounts,
                 lang_trend: dict[str, DecayedCounts], cooc: CoCounts, cooc_recent: CoCounts,
                 transitions: Transitions, ctx: UserContext, now: float, new_item_hours: float) -> None:
        self.catalog, self.trend, self.ctx, self.now = catalog, trend, ctx, now
        self.new_item_hours = new_item_hours
        self.n = len(catalog)
        self.trend_peaks = trend.peaks(now)
        self.trend_total = float(trend.totals(now)[2])
        self.lang_counter = lang_trend.get(ctx.main_lang or "")
        self.lang_peaks = self.lang_counter.peaks(now) if self.lang_counter is not None else None
        # name -> (items sorted, value): the item-to-item features, 0 for items not listed
        self.sparse: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        rows = ctx.history_rows
        if rows:
            pos_w = [max(w, 0.0) for w in ctx.history_weights]
            cols, terms, owner = cooc.terms(rows, pos_w)
            items, total, best = merge(cols, terms, len(cooc.n))
            self.sparse["cooc"], self.sparse["cooc_max"] = (items, _rel(total)), (items, best)
            # the last three items alone: the terms are in history order, theirs come last
            first = int(np.searchsorted(owner, len(rows) - 3))
            items, last, _ = merge(cols[first:], terms[first:], len(cooc.n), maxima=False)
            self.sparse["cooc_last"] = (items, _rel(last))
            items, recent, _ = cooc_recent.sparse_scores(rows, pos_w, cosine=False, maxima=False)
            self.sparse["cooc_recent"] = (items, _rel(recent))
            items, following = transitions.sparse_scores(rows[-3:])
            self.sparse["next"] = (items, _rel(following))
        self._known: tuple[np.ndarray, np.ndarray] | None = None   # (sorted rows, their matrix)
        self._content: np.ndarray | None = None   # `content_all`, once asked for
        # A small catalog reads them from dense arrays (one gather instead of a search) once
        # a matrix of many rows is asked for (a ranking's candidates, not a learning step's)
        self.dense: dict[str, np.ndarray] | None = None

    def _dense(self) -> dict[str, np.ndarray]:
        if self.dense is None:
            self.dense = {}
            for name, (items, values) in self.sparse.items():
                self.dense[name] = full = np.zeros(self.n, np.float32)
                if items.size and items[-1] >= self.n:   # sorted: only then is any outside
                    inside = items < self.n
                    items, values = items[inside], values[inside]
                full[items] = values
        return self.dense

    def content_all(self) -> np.ndarray:
        """[n, 3]: content, content_own and content_text of every item (the user needs an
        interest vector), computed once; a ranking that searches the catalog exactly asks for
        it, and its candidates' content features are then read from it."""
        if self._content is None:
            assert self.ctx.interest is not None
            self._content = self.catalog.content_scores(self.ctx.interest, self.ctx.own, self.n)
        return self._content

    def matrix(self, rows: np.ndarray) -> np.ndarray:
        """[len(rows), len(FEATURES)] float64. The rows of the last sorted set asked for (a
        ranking's candidates) are kept: learning from the user's next event reads its
        negatives among them."""
        rows = np.asarray(rows, np.int64)
        if self._known is not None and rows.size:
            known_rows, known_x = self._known
            at = np.minimum(np.searchsorted(known_rows, rows), known_rows.size - 1)
            hit = known_rows[at] == rows
            if hit.all():
                return known_x[at]
            x = np.empty((len(rows), len(FEATURES)))
            x[hit] = known_x[at[hit]]
            x[~hit] = self._compute(rows[~hit])
            return x
        x = self._compute(rows)
        if rows.size > 1 and (rows[1:] > rows[:-1]).all():
            self._known = (rows, x)
        return x

    def _compute(self, rows: np.ndarray) -> np.ndarray:
        c, ctx, now = self.catalog, self.ctx, self.now
        x = np.zeros((len(rows), len(FEATURES)))
        if not rows.size:
            return x
        if self._content is not None:
            content = self._content[rows]
            x[:, _CONTENT] = content[:, 0]
            x[:, _CONTENT_TEXT] = content[:, 2]
            if ctx.own is not None:
                x[:, _CONTENT_OWN] = content[:, 1]
        elif ctx.interest is not None or ctx.own is not None:
            text, vec = c.text_and_vectors(rows)   # one gather of the text vectors for both
            if ctx.interest is not None:
                x[:, _CONTENT] = vec @ ctx.interest
                x[:, _CONTENT_TEXT] = text @ ctx.interest
            if ctx.own is not None:
                x[:, _CONTENT_OWN] = vec @ ctx.own
        dense = self._dense() if self.n <= DENSE_MERGE_ROWS and len(rows) >= DENSE_FROM_ROWS else {}
        for name, (items, values) in self.sparse.items():
            full = dense.get(name)
            x[:, FEATURE_INDEX[name]] = full[rows] if full is not None else _lookup(items, values, rows)
        counts = self.trend.values_of(rows, now)
        x[:, _TREND_SPAN] = _scaled(counts, self.trend_peaks)
        x[:, _TREND_LOG] = np.log((counts[:, 2] + 0.01) / (self.trend_total + 1.0))
        if self.lang_counter is not None:
            x[:, _LANG_SPAN] = _scaled(self.lang_counter.values_of(rows, now), self.lang_peaks)
        n_events = c.n_events[rows].astype(np.float32)
        age_h = np.maximum(now - c.first_ts[rows], 0.0) / HOUR
        x[:, _AGE] = np.log1p(age_h)
        x[:, _NEW] = age_h < self.new_item_hours
        x[:, _POP] = np.log1p(n_events)
        x[:, _POS_RATE] = (c.n_pos[rows] + 1.0) / (n_events + 2.0)
        depth = min(len(ctx.history_rows), HISTORY_DEPTH) / HISTORY_DEPTH
        x[:, HIST_COLS] = x[:, HIST_BASE_COLS].astype(np.float32) * np.float32(depth)
        return x

    def ranked(self, name: str) -> np.ndarray:
        """The items with a non-zero item-to-item feature `name`, highest first."""
        items, values = self.sparse.get(name, (np.zeros(0, np.int64), np.zeros(0, np.float32)))
        return items[np.argsort(-values, kind="stable")]


def _lookup(items: np.ndarray, values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """values[items == row] for each row (0 where a row is not among the sorted `items`)."""
    if not items.size:
        return np.zeros(len(rows), np.float32)
    at = np.minimum(np.searchsorted(items, rows), items.size - 1)
    return np.where(items[at] == rows, values[at], np.float32(0.0))


def _scaled(values: np.ndarray, peaks: np.ndarray | None) -> np.ndarray:
    """Each column divided by its peak over the whole catalog (a column whose peak is 0 stays 0)."""
    assert peaks is not None
    return (values / np.where(peaks > 0, peaks, 1.0)).astype(np.float32)


def _rel(values: np.ndarray) -> np.ndarray:
    """Non-negative values scaled to the best item's value at this instant (1 = the top
    item), so the learner compares like with like across users, history lengths and stream
    volumes. All zeros stay zeros."""
    top = float(values.max()) if values.size else 0.0
    return (values / (top if top > 0 else 1.0)).astype(np.float32)


class PairwiseScorer:
    """RankNet-style: River's logistic regression on feature differences (chosen minus
    not chosen), on features divided by their online standard deviation (River's running
    statistics) with a floor, so that a feature that barely varied so far cannot get an
    unbounded weight when it suddenly does. Scoring is one mat-vec.

    River learns the pairs of `learn_batch` events at once (`learn_many`): one call per batch
    instead of two dict-building calls per pair was most of an event's cost. The batch step is
    the sum of its pairs' gradients (sample weight = pairs), the step that as many `learn_one`
    calls would take, so the learning rate means the same. Ranking uses the weights as of the
    last batch, at most `learn_batch - 1` events behind an average over `average_updates`.
    """

    def __init__(self, config: HybridConfig) -> None:
        self.warmup_pairs = config.warmup_pairs
        self.average_updates = config.average_updates
        self.learn_batch = config.learn_batch
        self.l2 = config.l2
        self.updates = 0                 # learning events folded into `average`
        self.average = np.zeros(len(FEATURES))
        self.scaler = preprocessing.StandardScaler()
        self.model = linear_model.LogisticRegression(
            optimizer=optim.SGD(config.learning_rate), l2=config.l2, intercept_lr=0.0)
        self.pairs = 0                   # pairs learnt
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []   # (differences, labels) per event

    def learn(self, x_pos: np.ndarray, x_negs: np.ndarray, rng: random.Random) -> None:
        """One positive against several negatives (rows of `x_negs`); learnt with its batch."""
        chosen_first = np.asarray([rng.random() < 0.5 for _ in range(len(x_negs))])
        diffs = np.where(chosen_first[:, None], x_pos - x_negs, x_negs - x_pos)
        self.pending.append((diffs, chosen_first))
        if len(self.pending) >= self.learn_batch:
            self.flush()

    def flush(self) -> None:
        """Learn the pending events' pairs as one mini-batch, then move the weight average as
        that many per-event updates would have (averaged SGD: it smooths the noise of single
        updates while still following drift, horizon `average_updates` events)."""
        if not self.pending:
            return
        diffs = np.concatenate([d for d, _ in self.pending])
        labels = np.concatenate([y for _, y in self.pending])
        events = len(self.pending)
        self.pending = []
        self.scaler.learn_many(pd.DataFrame(diffs, columns=FEATURES))
        scaled = pd.DataFrame(diffs / self._scales(), columns=FEATURES)
        self.model.l2 = self.l2 * len(diffs)   # the decay that one step per pair would apply
        self.model.learn_many(scaled, pd.Series(labels), w=float(len(diffs)))
        self.pairs += len(diffs)
        keep = _average_keep(self.updates, events, self.average_updates)
        self.updates += events
        self.average += (1.0 - keep) * (self._raw_weights() - self.average)

    def weights(self) -> np.ndarray:
        """Averaged weight per raw feature (scaling folded in); the prior while warming up."""
        if self.pairs < self.warmup_pairs:
            return np.asarray([PRIOR_WEIGHTS.get(name, 0.0) for name in FEATURES])
        return self.average.copy()

    def _scales(self) -> np.ndarray:
        variances = np.asarray([self.scaler.vars.get(name, 0.0) for name in FEATURES])
        return np.sqrt(variances + VARIANCE_FLOOR)

    def _raw_weights(self) -> np.ndarray:
        w = self.model.weights
        return np.asarray([w.get(name, 0.0) for name in FEATURES]) / self._scales()


def _average_keep(done: int, events: int, horizon: int) -> float:
    """The share of a running average left after `events` more updates, the u-th of which
    has rate 1 / min(u, horizon): the per-event averaging applied to a batch in one step."""
    keep = 1.0
    for u in range(done + 1, done + events + 1):
        keep *= 1.0 - 1.0 / min(u, horizon)
    return keep


def mmr(rows: np.ndarray, scores: np.ndarray, vecs: np.ndarray, k: int, lam: float) -> list[int]:
    """Maximal marginal relevance: positions into `rows` (already sorted best first),
    trading score for dissimilarity to the items already picked (similarities below 0 count
    as 0). A handful of in-place operations per pick: on pools of ~30 items numpy's per-call
    overhead, not arithmetic, is the cost."""
    n = len(rows)
    if lam >= 1.0 or n <= 1:
        return list(range(min(k, n)))
    span = float(scores.max() - scores.min()) or 1.0
    rel = lam * ((scores - scores.min()) / span)
    sims = vecs @ vecs.T
    best_sim = np.zeros(n)                 # each item's highest similarity to the picked ones
    value = np.empty(n)
    picked: list[int] = []
    while len(picked) < min(k, n):
        np.multiply(best_sim, lam - 1.0, out=value)
        value += rel
        value[picked] = -np.inf
        j = int(value.argmax())
        picked.append(j)
        np.maximum(best_sim, sims[j], out=best_sim)
    return picked


def explore(picked: list[int], n: int, k: int, config: HybridConfig,
            rng: random.Random) -> tuple[list[int], int | None]:
    """With probability `explore_rate`, the last slot goes to an item drawn uniformly from
    ranks k .. explore_pool*k that is not shown yet (epsilon-greedy on one slot).
    Returns the positions and the explored one (or None)."""
    if len(picked) < k or rng.random() >= config.explore_rate:
        return picked, None
    pool = [j for j in range(k, min(n, config.explore_pool * k)) if j not in picked]
    if not pool:
        return picked, None
    choice = rng.choice(pool)
    return picked[:-1] + [choice], choice
