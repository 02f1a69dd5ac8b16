"""`Recommender`: the one ranking object that both the Faust agents and `xlrec evaluate` call.

Division of state, so that the worker can keep its Faust table plain JSON:
- a user's profile is a JSON dict (see `ranking.profile`) owned by the caller (the users
  table, or the evaluation harness); `observe` returns the updated dict and never mutates it;
- everything else (item catalog and vectors, trend counters, co-occurrence counts, the
  River models) lives in this object, in the worker, and is saved with `snapshot`/`restore`.

Typical use by the agents:
    rec = Recommender(store=EdgeStore(...), encoder=load_encoder())
    rec.upsert_item(item_event)                              # item agent
    profile = rec.observe(profile, click_or_review_event)    # profile agent
    items = rec.recommend(user_id, profile, k=10, now=ts)    # ranking agent
    rec.feedback(user_id, profile, shown=[...], clicked=item_id, now=ts)
"""

from __future__ import annotations

import pickle
import random
import zlib
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from encoders.base import Encoder
from ranking import profile as profiles
from ranking import reasons
from ranking.catalog import ItemCatalog
from ranking.events import ItemEvent, ReviewEvent, UserEvent
from ranking.hybrid import (COOC_HALF_LIFE_H, FEATURE_GROUPS, FEATURES, GROUP_MATRIX,
                            LANG_HALF_LIVES_H, TREND_HALF_LIVES_H, HybridConfig, PairwiseScorer,
                            Signals, UserContext, explore, mmr)
from ranking.signals import DENSE_MERGE_ROWS, HOUR, CoCounts, DecayedCounts, Transitions
from ranking.store import ItemPoint, VectorStore
from encoders.files import atomic_open
from ranking.vectors import LanguageCentering

Profile = dict[str, Any]


SNAPSHOT_VERSION = 7   # 7: blended vectors of reviewed items only; 6: sparse review sums;
#                        5: reviews_pushed; 4: pieces; 3: sparse item-to-item counts
SNAPSHOT_ROWS = 1024   # items per snapshot piece: a few milliseconds of the engine thread
STORE_MOVE_SHARE = 0.1   # see `_moved`
LEARN_FROM_LAST_S = 3600.0      # a ranking this recent gives a learning event its candidates
LEARN_FROM_LAST_USERS = 10_000  # users whose last candidates are kept (least recent go first)
# Trend columns that candidates are drawn from (three horizons), and the language trend's.
TREND_3H, TREND_24H, TREND_168H = (TREND_HALF_LIVES_H.index(h) for h in (3.0, 24.0, 168.0))
LANG_168H = LANG_HALF_LIVES_H.index(168.0)
MAX_REVIEW_CHARS = 2_000   # enough for the encoder's token budget; bounds tokenizer work


class RankedItem(NamedTuple):
    """One recommended item, in the shape of the wire contract's `RecommendedItem`."""

    item_id: str
    score: float
    reason: str
    title: str | None
    lang: str | None


@dataclass
class Ranking:
    """One ranking and the lists before diversity and exploration (for ablations)."""

    items: list[RankedItem]          # what is shown: scored, diversified, explored
    by_score: list[str]               # top-k by score alone
    diversified: list[str]            # after MMR, before exploration


class Recommender:
    """Online hybrid recommender: candidates from several sources, features scored by a
    River model that learns from the stream itself, diversified, with a reason per item.

    `store` holds the item vectors for ANN search (Qdrant in the worker, `MemoryStore` in
    evaluation). `encoder` embeds item and review texts; pass None to run without content
    (vectors then come only from `review_vector`/`vector` arguments). `seed` makes
    exploration and negative sampling reproducible.
    """

    name = "xlrec"

    def __init__(self, store: VectorStore, encoder: Encoder | None, *, seed: int = 0,
                 config: HybridConfig | None = None,
                 profile_config: profiles.ProfileConfig | None = None,
                 review_encoder: Encoder | None = None) -> None:
        self.store = store
        self.encoder = encoder
        # The same model for review texts, where they should be embedded apart (the worker:
        # in a process of their own, `encoders.process_encoder`); else `encoder`.
        self.review_encoder = review_encoder or encoder
        if encoder is not None and review_encoder is not None and review_encoder.name != encoder.name:
            raise ValueError(f"review encoder {review_encoder.name!r} is not {encoder.name!r}: "
                             "their vectors would not share a space")
        self.seed = seed
        self.config = config or HybridConfig()
        self.profile_config = profile_config or profiles.ProfileConfig()
        dim = encoder.dim if encoder is not None else store.dim
        self.catalog = ItemCatalog(dim)
        self.centering = LanguageCentering(dim)
        cfg = self.config
        self.trend = DecayedCounts([h * HOUR for h in TREND_HALF_LIVES_H], top=cfg.top_items)
        self.lang_trend: dict[str, DecayedCounts] = {}
        self.cooc = CoCounts(neighbours=cfg.neighbours)
        self.cooc_recent = CoCounts(COOC_HALF_LIFE_H * HOUR, neighbours=cfg.neighbours)
        self.transitions = Transitions(neighbours=cfg.neighbours)
        self.scorer = PairwiseScorer(self.config)
        self.rng = random.Random(seed)
        self.updates = 0
        self.unknown_item_events = 0   # events on items no item event named (not recommended)
        self._cache: tuple[Any, ...] | None = None   # (key, signals) of the last ranking
        self._unpushed: dict[int, bool] = {}         # rows changed since the store last saw them: urgent
        # user -> (time, candidate rows) of the user's last plain ranking, for learning
        self._last_candidates: OrderedDict[str, tuple[float, np.ndarray]] = OrderedDict()

    # ---- items (item agent) -------------------------------------------------------------
    def upsert_item(self, event: ItemEvent, vector: np.ndarray | None = None) -> None:
        """Add or update a catalog item (its title/description text is embedded unless
        `vector` is given); `event.deleted` removes it from recommendations. Idempotent."""
        self.upsert_items([event], None if vector is None else [vector])

    def delete_item(self, item_id: str) -> None:
        """Stop recommending an item; unknown ids are ignored."""
        if self.catalog.delete(item_id) is not None:
            self.store.delete([item_id])
            self._changed()

    def upsert_items(self, events: Sequence[ItemEvent],
                     vectors: Sequence[np.ndarray | None] | None = None) -> None:
        """`upsert_item` for a batch, embedding all texts in one encoder call; `vectors`,
        if given, are the raw text vectors aligned with `events` (None: an item with no text
        vector, which is recommended by its events alone)."""
        live = [i for i, e in enumerate(events) if not e.deleted]
        for e in events:
            if e.deleted:
                self.delete_item(e.item_id)
        if not live:
            return
        raw: dict[int, np.ndarray] = {}
        if vectors is not None:
            raw = {i: np.asarray(v, np.float32) for i in live if (v := vectors[i]) is not None}
        elif self.encoder is not None:
            encoded = self.encoder.encode([item_text(events[i]) for i in live])
            raw = dict(zip(live, encoded))
        for i in live:
            e = events[i]
            text_vec = None
            if i in raw:
                key = f"text:{e.lang or 'und'}"
                self.centering.learn(raw[i], key)
                text_vec = self.centering.neutral(raw[i], key)
            self._push(self.catalog.upsert(e.item_id, e.ts, e.title, e.lang, text_vec))
        self.flush_store()   # a new item is searchable as soon as this returns
        self._changed()

    # ---- user events (profile agent) ----------------------------------------------------
    def embed_reviews(self, events: Sequence[ReviewEvent]) -> dict[str, np.ndarray]:
        """Embed the texts of a batch of reviews at once (event_id -> vector), so the agent
        can pass them to `observe` and the encoder sees full batches. Empty texts are left out."""
        todo = [e for e in events if e.text.strip()]
        if self.review_encoder is None or not todo:
            return {}
        vecs = self.review_encoder.encode([e.text[:MAX_REVIEW_CHARS] for e in todo])
        return {e.event_id: vecs[i] for i, e in enumerate(todo)}

    def observe(self, profile: Profile | None, event: UserEvent, *,
                review_vector: np.ndarray | None = None, text_later: bool = False,
                learn: bool = True) -> Profile:
        """Learn from one click or review and return the user's updated profile.

        The profile update itself is a pure function of (profile, event, vectors); besides
        it, the worker-side state learns: the ranker is trained on this event (the item the
        user chose against other candidates), the review is folded into its
        item's vector, and trend and co-occurrence counters move. An event whose event_id is
        already in the profile changes nothing (returns the profile unchanged). An event on
        an item no item event named (or a deleted one) counts for the profile and the item's
        counters, but the item is recommended only once an item event names it; such events
        are counted in `unknown_item_events`.
        With `text_later`, a review without `review_vector` is applied without its text, which
        the caller folds in with `add_review_text` once embedded. With `learn=False` the ranker
        does not train on the event (everything else does): the worker's load shedding.
        """
        if profiles.has_event(profile, event.event_id):
            return dict(profile)  # type: ignore[arg-type]
        review = event if event.type == "review" else None
        is_review = review is not None
        positive = review.positive if review is not None else True
        if review is not None and review_vector is None and review.text.strip() and not text_later:
            review_vector = self.embed_reviews([review]).get(event.event_id)
        row = self.catalog.index.row(event.item_id)
        if row is not None and self.catalog.active[row]:
            if learn and self.catalog.first_ts[row] < event.ts:   # it could have been recommended
                self._learn_choice(event.user_id, profile, row, event.ts)
        else:
            row = self.catalog.touch(event.item_id, event.ts)
            self.unknown_item_events += 1
        neutral = None
        if review_vector is not None:
            raw = np.asarray(review_vector, np.float32)
            self.centering.learn(raw, event.lang)
            neutral = self.centering.neutral(raw, event.lang)
        # The store holds what search needs, the vector and the languages, not the counts.
        new_lang = bool(event.lang) and event.lang not in self.catalog.lang_counts[row]
        self.catalog.add_event(row, positive, event.lang, neutral)
        if new_lang or (neutral is not None and self._moved(row)):
            self._push(row, urgent=False)
        self.trend.add(row, event.ts)
        if event.lang:
            self._lang_counter(event.lang).add(row, event.ts)
        history = [r for r in self._rows(profiles.history(profile)) if r != row]
        self.cooc.add(row, history)
        self.cooc_recent.add(row, history, event.ts)
        self.transitions.add(row, history[-3:])
        item_vec = self.catalog.vector(row)
        new = profiles.apply_event(
            profile, user_id=event.user_id, event_id=event.event_id, item_id=event.item_id,
            ts=event.ts, kind="review" if is_review else "click", positive=positive,
            lang=event.lang, item_vector=item_vec if item_vec.any() else None,
            review_vector=neutral, config=self.profile_config)
        self._changed()
        return new

    def add_review_text(self, profile: Profile | None, event: ReviewEvent,
                        review_vector: np.ndarray) -> Profile | None:
        """Fold a review's text vector in after `observe(..., text_later=True)` applied the
        review: into its item's vector and the user's own-text vector. The worker embeds
        review texts in a lane of their own so that a profile update never waits for the
        encoder. Returns the updated profile (None when the caller has none)."""
        raw = np.asarray(review_vector, np.float32)
        self.centering.learn(raw, event.lang)
        neutral = self.centering.neutral(raw, event.lang)
        row = self.catalog.index.row(event.item_id)
        if row is not None:
            self.catalog.add_review(row, neutral)
            if self._moved(row):
                self._push(row, urgent=False)
        self._changed()
        if profile is None:
            return None
        return profiles.add_review_vector(profile, neutral, event.ts, self.profile_config)

    # ---- ranking (ranking agent, requests) ----------------------------------------------
    def recommend(self, user_id: str, profile: Profile | None, k: int = 10, *, now: float,
                  query_vector: np.ndarray | None = None, lang: str | None = None,
                  exclude: Collection[str] = ()) -> list[RankedItem]:
        """Top-k items for a user at time `now`, best first, each with a readable reason.

        Items in the profile's history and in `exclude` are never returned. `query_vector`
        (a free-text query embedded by the same encoder) is blended with the profile;
        `lang` keeps items available in that language. A user without history gets
        language-aware trending and fresh items.
        """
        return self.rank(user_id, profile, k, now=now, query_vector=query_vector, lang=lang,
                         exclude=exclude).items

    def rank(self, user_id: str, profile: Profile | None, k: int = 10, *, now: float,
             query_vector: np.ndarray | None = None, lang: str | None = None,
             exclude: Collection[str] = ()) -> Ranking:
        """`recommend`, also returning the lists before diversity and exploration."""
        ctx = self._context(profile, query_vector)
        signals = self._signals(user_id, profile, ctx, now, query_vector)
        banned = set(exclude) | set(profiles.history(profile))
        rows = self._candidates(signals, ctx, banned, lang)
        if lang is None and query_vector is None:
            self._last_candidates[user_id] = (now, rows)
            self._last_candidates.move_to_end(user_id)
            if len(self._last_candidates) > LEARN_FROM_LAST_USERS:
                self._last_candidates.popitem(last=False)
        if rows.size == 0:
            return Ranking([], [], [])
        x = signals.matrix(rows)
        weights = self.scorer.weights()
        scores = x @ weights
        by_query = None
        if ctx.query is not None:
            by_query = self.config.query_weight * _z(self.catalog.vectors(rows) @ ctx.query)
            scores = _z(scores) + by_query
        order = np.lexsort((rows, -scores))
        rows, scores, x = rows[order], scores[order], x[order]
        if by_query is not None:
            by_query = by_query[order]
        pool = min(len(rows), self.config.mmr_pool * k)
        picked = mmr(rows[:pool], scores[:pool], self.catalog.vectors(rows[:pool]), k,
                     self.config.mmr_lambda)
        diversified = [self.catalog.index.ids[rows[j]] for j in picked]
        rng = random.Random(zlib.crc32(f"{self.seed}:{user_id}:{now}".encode()))
        shown, explored = explore(picked, len(rows), k, self.config, rng)
        # What each signal group added to each shown item, over the average candidate.
        lifts = (((x[shown] - x.mean(axis=0)) * weights) @ GROUP_MATRIX).tolist()
        items = []
        for j, lift in zip(shown, lifts):
            group = _top_group(dict(zip(FEATURE_GROUPS, lift)))
            if by_query is not None and by_query[j] > scores[j] - by_query[j]:
                group = "query"
            items.append(self._item(int(rows[j]), float(scores[j]),
                                    "explore" if j == explored else group, ctx))
        by_score = [self.catalog.index.ids[r] for r in rows[:k]]
        return Ranking(items, by_score, diversified)

    def embed_query(self, text: str) -> np.ndarray:
        """The vector of a free-text query in any language, for `recommend(query_vector=...)`."""
        if self.encoder is None:
            raise RuntimeError("this Recommender has no encoder; queries need one")
        return self.encoder.encode([text])[0]

    def feedback(self, user_id: str, profile: Profile | None, shown: Sequence[str],
                 clicked: str | None, *, now: float) -> None:
        """Learn from an impression: `clicked` (one of `shown`) is a positive, the items shown
        and not clicked within the feedback window are negatives. An impression without a
        click says nothing about the order, so it teaches nothing."""
        pos = self.catalog.index.row(clicked) if clicked else None
        negs = [r for r in self._rows([s for s in shown if s != clicked])]
        if pos is None or not negs:
            return
        ctx = self._context(profile, None)
        signals = self._signals(user_id, profile, ctx, now, None)
        x = signals.matrix(np.asarray([pos, *negs]))
        self.scorer.learn(x[0], x[1:], self.rng)
        self._changed()

    def forget_user(self, user_id: str) -> None:
        """Erase what the engine keeps about one user (right to erasure): the candidates of their
        last ranking and the cached signals. The models and counters are global, not per user."""
        self._last_candidates.pop(user_id, None)
        self._cache = None

    # ---- persistence --------------------------------------------------------------------
    def snapshot(self, path: Path) -> None:
        """Write the worker-side state (River models, counters, catalog) to one file
        atomically; profiles are not included (they live in the users table)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(Path(path), "wb", private=True) as f:
            for piece in self.snapshot_pieces():
                f.write(piece)

    def snapshot_pieces(self) -> Iterator[bytes]:
        """The snapshot as a sequence of pickles, each of at most `SNAPSHOT_ROWS` items, so a
        caller that takes one piece at a time between other work never holds the engine for
        long, whatever the catalog size. Pieces taken while events arrive mix moments; each
        is consistent in itself, and `restore` reads every piece at the time the first was
        taken (rows added later are left out, decayed counts are brought to one time base)."""
        self.flush_store()
        c, n = self.catalog, len(self.catalog)
        yield _dumps({"version": SNAPSHOT_VERSION, "rows": n, "ids": c.index.ids[:n],
                      "centering": self.centering.state(), "scorer": self.scorer,
                      "rng": self.rng.getstate(), "updates": self.updates, "config": self.config,
                      "encoder": getattr(self.encoder, "name", None),
                      "lang_trend": sorted(self.lang_trend)})
        for a in range(0, n, SNAPSHOT_ROWS):
            b = min(a + SNAPSHOT_ROWS, n)
            yield _dumps({"from": a, "catalog": c.rows_state(a, b),
                          "trend": self.trend.rows_state(a, b),
                          "lang_trend": {lang: counter.rows_state(a, b) for lang, counter in self.lang_trend.items()},
                          "cooc": self.cooc.rows_state(a, b), "cooc_recent": self.cooc_recent.rows_state(a, b),
                          "transitions": self.transitions.rows_state(a, b)})

    def restore(self, path: Path) -> None:
        """Load a state written by `snapshot` and re-upsert the item vectors into the store.
        Only load snapshots this worker wrote: the file is pickles."""
        with open(path, "rb") as f:
            head = pickle.load(f)
            if head.get("version") != SNAPSHOT_VERSION:
                raise ValueError(f"{path}: snapshot version {head.get('version')}, "
                                 f"expected {SNAPSHOT_VERSION}")
            if head["encoder"] != getattr(self.encoder, "name", None):
                raise ValueError(f"{path}: vectors of encoder {head['encoder']!r} do not mix "
                                 f"with {getattr(self.encoder, 'name', None)!r}")
            pieces = []
            while True:
                try:
                    pieces.append(pickle.load(f))
                except EOFError:
                    break
        n = head["rows"]
        if sum(len(p["catalog"]["first_ts"]) for p in pieces) != n:
            raise ValueError(f"{path}: snapshot is incomplete ({len(pieces)} pieces for {n} items)")
        self.config = head["config"]
        self.catalog = ItemCatalog.from_rows(self.catalog.dim, head["ids"], [p["catalog"] for p in pieces])
        self.centering = LanguageCentering.from_state(head["centering"])
        self.scorer = head["scorer"]
        self.rng.setstate(head["rng"])
        self.updates = head["updates"]
        self.trend.load_rows([p["trend"] for p in pieces], n)
        self.lang_trend = {}
        for lang in head["lang_trend"]:
            self._lang_counter(lang).load_rows([p["lang_trend"].get(lang) for p in pieces], n)
        for name in ("cooc", "cooc_recent", "transitions"):
            getattr(self, name).load_rows([p[name] for p in pieces], n)
        # A store that kept its points (an embedded shard on the same disk) gets them again at
        # its next index build, not as an exactly scanned copy of the whole catalog; one that
        # lacks some gets them all at once.
        c = self.catalog
        searchable = int(np.count_nonzero(c.active[:n] & (c.text_vec[:n].any(axis=1) | (c.review_slot[:n] > 0))))
        urgent = self.store.count() < searchable
        for row in range(len(self.catalog)):
            self._push(row, urgent=urgent)
        self.flush_store()
        self._changed()

    @property
    def model_version(self) -> str:
        """Identifier for `Recommendation.model_version`: ranker name, encoder and update count."""
        return f"{self.name}/{getattr(self.encoder, 'name', 'no-encoder')}/{self.updates}"

    def item_lang(self, item_id: str) -> str | None:
        """The item's main language now (most of its events so far, else its declared one), or
        None for an item no event or item event named; a dict lookup, for the worker's live
        quality slices (cross-lingual: the event's language differs from its item's)."""
        row = self.catalog.index.row(item_id)
        return None if row is None else self.catalog.main_lang(row)

    def feature_weights(self) -> dict[str, float]:
        """The learnt weight of each feature (on raw feature scale), for reports."""
        return dict(zip(FEATURES, self.scorer.weights().tolist()))

    # ---- internals ----------------------------------------------------------------------
    def _changed(self) -> None:
        self.updates += 1
        self._cache = None

    def _lang_counter(self, lang: str) -> DecayedCounts:
        counter = self.lang_trend.get(lang)
        if counter is None:
            counter = self.lang_trend[lang] = DecayedCounts([h * HOUR for h in LANG_HALF_LIVES_H],
                                                            top=self.config.top_items)
        return counter

    def _rows(self, item_ids: Sequence[str]) -> list[int]:
        rows = (self.catalog.index.row(i) for i in item_ids)
        return [r for r in rows if r is not None]

    def _moved(self, row: int) -> bool:
        """Whether the item's vector moved enough since the store last got it to write it
        again: once the reviews since then are a tenth of those it had. A review moves an
        item's vector by about 1 / (its reviews + 2), so the stored vector stays within a few
        percent of the live one (which ranking itself uses), and a popular item is written
        O(log reviews) times instead of once per review: every write is an unindexed point
        that each search scans until the ANN index is built again."""
        c = self.catalog
        pushed = int(c.reviews_pushed[row])
        return int(c.n_reviews[row]) - pushed >= max(1.0, STORE_MOVE_SHARE * pushed)

    def _push(self, row: int, *, urgent: bool = True) -> None:
        """Mark an item for the vector store; `flush_store` writes it. Events move an item's
        vector or languages one at a time, so a batch of events writes each item once. Not
        `urgent` (a review moved the vector, a new language came): the store may show it
        to searches at its next index build (`VectorStore.upsert(defer=True)`); a new item
        or a new text is searchable at once."""
        self._unpushed[row] = urgent or self._unpushed.get(row, False)

    def flush_store(self) -> None:
        """Mirror the items changed since the last flush into the vector store, in one upsert
        per kind (only active items with a vector are searchable)."""
        c = self.catalog
        for urgent in (True, False):
            vectors = {r: c.vector(r) for r, u in sorted(self._unpushed.items()) if u == urgent and c.active[r]}
            rows = [r for r, v in vectors.items() if v.any()]
            self.store.upsert([ItemPoint(c.index.ids[r], vectors[r], {
                "title": c.titles[r], "langs": c.langs(r), "ts": float(c.first_ts[r])}) for r in rows],
                defer=not urgent)
            c.reviews_pushed[rows] = c.n_reviews[rows]
        self._unpushed.clear()  # only once written: a store outage must not drop them
        self.store.maintain()

    def _context(self, profile: Profile | None, query: np.ndarray | None) -> UserContext:
        ctx = UserContext(interest=profiles.interest_vector(profile),
                          own=profiles.own_review_vector(profile),
                          langs=profiles.languages(profile))
        if query is not None:
            q = np.asarray(query, np.float32)
            ctx.query = self.centering.neutral(q, None)
        for item_id, weight, lang in (profile or {}).get("recent", ()):
            row = self.catalog.index.row(item_id)
            if row is not None:
                ctx.history_rows.append(row)
                ctx.history_weights.append(weight)
                ctx.history_langs.append(lang)
        return ctx

    def _signals(self, user_id: str, profile: Profile | None, ctx: UserContext, now: float,
                 query: np.ndarray | None) -> Signals:
        """Signals at `now`, reused while nothing changed (recommend, then observe)."""
        key = (user_id, self.updates, now, (profile or {}).get("events", [None])[-1:],
               None if query is None else query.tobytes())
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        signals = Signals(self.catalog, self.trend, self.lang_trend, self.cooc, self.cooc_recent,
                          self.transitions, ctx, now, self.config.new_item_hours)
        self._cache = (key, signals)
        return signals

    def _candidates(self, s: Signals, ctx: UserContext, banned: set[str],
                    lang: str | None, *, search: bool = True) -> np.ndarray:
        """Union of the candidate sources, known active items only, minus `banned`. Each
        source is read from a list kept up to date as events arrive (trend and newest
        items, the user's co-occurring items) or from the vector store's search, so the cost
        does not grow with the catalog (exact content search up to `exact_search_items`)."""
        cfg, c = self.config, self.catalog
        banned_rows = np.asarray(self._rows(list(banned)), np.int64)

        allowed = None
        if s.n <= DENSE_MERGE_ROWS:            # a small catalog: one mask, then lookups
            allowed = c.active[: s.n].copy()
            allowed[banned_rows[banned_rows < s.n]] = False

        def keep(rows: np.ndarray) -> np.ndarray:
            if allowed is not None:
                ok = allowed[rows]
            else:  # banned: a user's history, tens of items; a broadcast beats np.isin's sort
                ok = c.active[rows] & ~(rows[:, None] == banned_rows[None, :]).any(axis=1)
            if lang is not None:
                ok &= np.asarray([lang in c.langs(r) for r in rows.tolist()], bool)
            return ok

        picked = [np.zeros(0, np.int64)]
        for vector in (ctx.interest, ctx.query):
            if vector is None:
                continue
            if s.n <= cfg.exact_search_items:
                scores = s.content_all()[:, 0] if vector is ctx.interest else self.catalog.scores(vector, s.n)
                picked.append(self._exact_content(scores, keep, cfg.n_content))
                continue
            if not search:
                continue
            self.flush_store()
            hits = self.store.search(vector, cfg.n_content, exclude=banned, langs=[lang] if lang else None,
                                     payload=False)
            hit_rows = np.asarray(self._rows([h.item_id for h in hits]), np.int64)
            picked.append(hit_rows[keep(hit_rows)])
        if ctx.history_rows:
            cooc = s.ranked("cooc")
            picked.append(cooc[keep(cooc)][: cfg.n_cooc])
        for column in (TREND_3H, TREND_24H, TREND_168H):
            picked.append(self.trend.best(column, cfg.n_trend // 3, keep))
        counter = self.lang_trend.get(ctx.main_lang or "")
        if counter is not None:
            picked.append(counter.best(LANG_168H, cfg.n_lang, keep))
        picked.append(c.newest.best(cfg.n_fresh, keep))
        rows = np.sort(np.concatenate(picked))
        return rows[np.r_[True, rows[1:] != rows[:-1]]] if rows.size else rows

    def _exact_content(self, scores: np.ndarray, keep: Callable[[np.ndarray], np.ndarray],
                       k: int) -> np.ndarray:
        """The k items with the highest `scores` (exact dot products of the first n items with
        a vector; items without a vector score 0 and are left out)."""
        n = len(scores)
        rows = np.arange(n)
        ok = keep(rows) & (scores != 0.0)
        v = np.where(ok, scores, -np.inf)
        top = np.argpartition(-v, k)[:k] if k < n else rows
        return top[np.isfinite(v[top])]

    def _learn_choice(self, user_id: str, profile: Profile | None, row: int, now: float) -> None:
        """The user chose `row`: learn it against other candidates drawn at random, all with
        the features they had just before the event. (Not against the items ranked highest:
        those are often what the user reviews next, so they make poor negatives.)

        The candidates are those of the user's last ranking when it is recent (the worker
        ranks after every event, so that is what the user had before this one); else they
        are drawn again, without the vector store's search (a learning event then costs no
        ANN query: content candidates come from exact search on small catalogs only)."""
        ctx = self._context(profile, None)
        signals = self._signals(user_id, profile, ctx, now, None)
        last = self._last_candidates.get(user_id)
        if last is not None and 0.0 <= now - last[0] <= LEARN_FROM_LAST_S:
            rows = last[1][last[1] != row].tolist()
        else:
            banned = set(profiles.history(profile)) | {self.catalog.index.ids[row]}
            rows = self._candidates(signals, ctx, banned, None, search=False).tolist()
        if not rows:
            return
        negatives = self.rng.sample(rows, min(self.config.negatives, len(rows)))
        x = signals.matrix(np.asarray([row, *negatives], np.int64))
        self.scorer.learn(x[0], x[1:], self.rng)

    def _item(self, row: int, score: float, group: str, ctx: UserContext) -> RankedItem:
        c = self.catalog
        return RankedItem(c.index.ids[row], score, self._reason(row, group, ctx), c.titles[row],
                           c.main_lang(row))

    def _reason(self, row: int, group: str, ctx: UserContext) -> str:
        c = self.catalog
        hist = ctx.history_rows
        if group == "explore":
            return reasons.EXPLORE
        if group == "query":
            return reasons.QUERY
        if group == "content" and hist:
            if ctx.history_vectors is None:
                ctx.history_vectors = c.vectors(hist)
            sims = ctx.history_vectors @ c.vector(row)
            j = int(np.argmax(sims))
            return reasons.similar_to(c.title(hist[j]),
                                      ctx.history_weights[j] == self.profile_config.click_weight,
                                      ctx.history_langs[j])
        if group == "cooc" and hist:
            return reasons.together_with(c.title(hist[int(np.argmax(self.cooc.pair(hist, row)))]))
        if group == "lang":
            return reasons.popular_with(ctx.main_lang)
        if group == "trend":
            return reasons.TRENDING
        if group == "new":
            return reasons.NEW
        return reasons.POPULAR


def _dumps(state: dict[str, Any]) -> bytes:
    return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


def _top_group(lift: dict[str, float]) -> str:
    """The signal group that lifted an item most above the average candidate. A personal
    reason (content, co-occurrence) wins when it did at least half as much as the strongest
    group: it tells the user more than "trending"."""
    best = max(lift, key=lift.__getitem__)
    if lift[best] <= 0:
        return "popular"
    personal = max(("content", "cooc"), key=lift.__getitem__)
    return personal if lift[personal] >= 0.5 * lift[best] else best


def _z(values: np.ndarray) -> np.ndarray:
    """Standardised across the candidates, so two scores of different scales can be added."""
    std = float(values.std())
    return (values - values.mean()) / std if std > 0 else np.zeros_like(values)


def item_text(event: ItemEvent) -> str:
    """What an item says about itself: title, then description or text."""
    parts = [event.title, event.description or "", event.text or ""]
    return ". ".join(p for p in parts if p)[:MAX_REVIEW_CHARS]
