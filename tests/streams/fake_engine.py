"""The one fake recommender of the worker's tests: it satisfies `Engine` (the protocol the worker
calls, `streams.worker.engine_runner`) and passes the same conformance tests as the real
`ranking.engine.Recommender` (tests/streams/test_engine_conformance.py), records every call, and
has the knobs the tests need:

- `items`: the catalog to start with (`catalog(n)` makes item0..item{n-1});
- `score(rank)`: the score of the item at a rank (a non-finite one breaks the topic's contract);
- `fail_on`: event or item ids whose processing raises ValueError (a poison event);
- `store_down`: the vector store is away until this many probes (`FlakyStore.count`) failed;
  meanwhile item upserts and snapshots raise, and so does either each `observe` (`down_fails=
  "observe"`) or the batch's `flush_store` (`"flush"`, what the real engine does);
- `encoder`: an `encoders.base.Encoder` for item texts and queries (None: no encoder).

Profiles are plain dicts like the real engine's: `events` (the applied event ids), `n`, and
`reviewed` once a review text was folded in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Literal

import numpy as np
import orjson

from encoders.base import Encoder
from ranking.engine import Profile, RankedItem
from ranking.memory_store import MemoryStore
from streams.contracts.schemas import ClickEvent, ItemEvent, ReviewEvent

DIM = 4
NOW = 1.7e9


def catalog(n: int, ts: float = NOW) -> list[ItemEvent]:
    """item0 .. item{n-1}, titled "Item i", in English."""
    return [ItemEvent(item_id=f"item{i}", title=f"Item {i}", lang="en", ts=ts) for i in range(n)]


def default_score(rank: int) -> float:
    return 1.0 - rank / 10


class StoreDown(ConnectionError):
    """What the fake's store calls raise during an outage."""


class FakeEngine:
    """Records calls; see the module's docstring for the knobs."""

    def __init__(self, *, items: Iterable[ItemEvent] = (), score: Callable[[int], float] = default_score,
                 fail_on: Iterable[str] = (), store_down: int = 0,
                 down_fails: Literal["observe", "flush"] = "flush", encoder: Encoder | None = None,
                 model_version: str = "fake-1") -> None:
        self.model_version = model_version
        self.encoder = encoder
        self.score = score
        self.fail_on = set(fail_on)
        self.store_down = store_down
        self.down_fails = down_fails
        self.catalog: dict[str, ItemEvent] = {}
        # what was asked of it, in order
        self.upserted: list[tuple[str, str, bool]] = []            # (item_id, title, deleted)
        self.upserts: list[tuple[str, list[str], list[np.ndarray] | None]] = []  # (thread, ids, vectors)
        self.observe_calls: list[str] = []   # every observe, also the failed ones and duplicates
        self.observed: list[str] = []        # events applied (not duplicates)
        self.learned: list[str] = []         # events the ranker learned from (`learn=True`)
        self.embedded: list[list[str]] = []  # event ids per embed_reviews call
        self.folded: list[str] = []          # review texts folded in
        self.ranked: list[tuple[str, Profile | None]] = []
        self.feedbacks: list[tuple[str, tuple[str, ...], str | None]] = []
        self.forgotten: list[str] = []       # users erased (forget_user)
        self.item_langs: dict[str, str | None] = {}   # item main languages set by a test
        self.unknown_item_events = 0         # events on items no item event named
        self.snapshots = 0           # snapshots whose every piece was taken
        self.flushes = 0
        if items:
            self.upsert_items(list(items))
            self.upserted.clear()
            self.upserts.clear()

    def _store(self) -> None:
        if self.store_down:
            raise StoreDown("store refused")

    # ---- items --------------------------------------------------------------------------
    def upsert_items(self, events: Sequence[ItemEvent], vectors: Sequence[np.ndarray] | None = None) -> None:
        self._store()
        for event in events:
            if event.item_id in self.fail_on:
                raise ValueError(f"cannot upsert {event.item_id}")
        self.upserts.append((threading.current_thread().name, [e.item_id for e in events],
                             None if vectors is None else list(vectors)))
        for event in events:
            self.upserted.append((event.item_id, event.title, event.deleted))
            if event.deleted:
                self.catalog.pop(event.item_id, None)
            else:
                self.catalog[event.item_id] = event

    def flush_store(self) -> None:
        self.flushes += 1
        if self.down_fails == "flush":
            self._store()

    # ---- user events --------------------------------------------------------------------
    def observe(self, profile: Profile | None, event: ClickEvent | ReviewEvent, *, text_later: bool = False,
                learn: bool = True) -> Profile:
        self.observe_calls.append(event.event_id)
        if event.event_id in self.fail_on:
            raise ValueError(f"cannot learn from {event.event_id}")
        if self.down_fails == "observe":
            self._store()
        base: Profile = dict(profile or {"events": [], "n": 0, "reviewed": False})
        if event.event_id in base["events"]:
            return base
        self.observed.append(event.event_id)
        self.unknown_item_events += event.item_id not in self.catalog
        if learn:
            self.learned.append(event.event_id)
        return {**base, "events": [*base["events"], event.event_id], "n": base["n"] + 1}

    def embed_reviews(self, events: Sequence[ReviewEvent]) -> dict[str, np.ndarray]:
        self.embedded.append([e.event_id for e in events])
        for event in events:
            if event.event_id in self.fail_on:
                raise ValueError(f"cannot embed {event.event_id}")
        return {e.event_id: np.ones(DIM, dtype=np.float32) / 2 for e in events if e.text.strip()}

    def item_lang(self, item_id: str) -> str | None:
        """Its language in `item_langs` (the tests' main language), else its item event's."""
        if item_id in self.item_langs:
            return self.item_langs[item_id]
        item = self.catalog.get(item_id)
        return item.lang if item is not None else None

    def add_review_text(self, profile: Profile | None, event: ReviewEvent,
                        review_vector: np.ndarray) -> Profile | None:
        self.folded.append(event.event_id)
        return None if profile is None else {**profile, "reviewed": True}

    def feedback(self, user_id: str, profile: Profile | None, shown: Sequence[str],
                 clicked: str | None, *, now: float) -> None:
        self.feedbacks.append((user_id, tuple(shown), clicked))

    # ---- ranking ------------------------------------------------------------------------
    def forget_user(self, user_id: str) -> None:
        self.forgotten.append(user_id)

    def embed_query(self, text: str) -> np.ndarray:
        if self.encoder is not None:
            return self.encoder.encode([text])[0]
        return np.full(DIM, 0.5, dtype=np.float32)

    def recommend(self, user_id: str, profile: Profile | None, k: int = 10, *, now: float,
                  query_vector: np.ndarray | None = None, lang: str | None = None) -> list[RankedItem]:
        self.ranked.append((user_id, profile))
        return [RankedItem(item.item_id, self.score(rank), "new in the catalog", item.title, item.lang)
                for rank, item in enumerate(list(self.catalog.values())[:k])]

    # ---- maintenance --------------------------------------------------------------------
    def snapshot_pieces(self) -> Iterator[bytes]:
        self._store()   # the real engine flushes pending item writes to the store first
        yield orjson.dumps({"model_version": self.model_version, "observed": self.observed})
        self.snapshots += 1


class FlakyStore(MemoryStore):
    """An in-memory vector store that does not answer while its engine's `store_down` counts
    down: each probe (`count`, what `EngineRunner.store_answers` asks) fails and brings it one
    step closer to answering again."""

    def __init__(self, engine: FakeEngine, dim: int = DIM) -> None:
        super().__init__(dim)
        self.engine = engine
        self.probes = 0

    def count(self) -> int:
        self.probes += 1
        if self.engine.store_down:
            self.engine.store_down -= 1
            raise StoreDown("connection refused")
        return super().count()
