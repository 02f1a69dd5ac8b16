"""Runs the recommender (`Engine`, `ranking.engine.Recommender`) off the worker's event loop.

Single-thread executors: one for the encoder on the latency path (items, queries; CPU-heavy,
releases the GIL inside onnxruntime), one for review texts (their own lane, so that a backlog
of reviews never delays a new item), and one for everything that reads or mutates the
engine's state (River models, counters, catalog), which is not thread-safe, so those calls
are serialised on one thread. Another builds the ANN index, which can take seconds and must
not hold up ranking.
The event loop only awaits futures and so stays free to consume, commit and serve HTTP.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from encoders.base import Encoder
from encoders.files import atomic_open
from ranking.engine import Profile, RankedItem, item_text
from ranking.store import VectorStore
from streams.worker import metrics
from streams.contracts.schemas import ClickEvent, ItemEvent, ReviewEvent

T = TypeVar("T")
# The review-text lane runs at a lower OS priority: on CPU the encoder could take every core,
# and a review's text can wait where its profile update, its ranking and new items cannot.
REVIEW_LANE_NICE = 10
# A batch of more user events than this means a backlog: the ranker then learns from every
# n-th event only, this many per batch (profiles, counters and item vectors still take every
# event). Its weights are one global model of a few dozen features that no single event
# decides, and learning is most of an event's cost; without a backlog it sees every event.
LEARN_PER_BATCH = 8


UserEvent = ClickEvent | ReviewEvent


@runtime_checkable
class Engine(Protocol):
    """What the worker calls on the recommender: `ranking.engine.Recommender` is the real one.
    Not thread-safe: the runner calls it from one thread (`tests/streams/test_engine_conformance.py`
    checks every implementation against the same expectations)."""

    @property
    def model_version(self) -> str: ...

    @property
    def encoder(self) -> Encoder | None: ...

    unknown_item_events: int
    """Events so far on items no item event named (applied, not recommended)."""

    def upsert_items(self, events: Sequence[ItemEvent], vectors: Sequence[np.ndarray] | None = None) -> None:
        """Add, update or (`deleted`) remove items; `vectors` are their text embeddings."""

    def observe(self, profile: Profile | None, event: UserEvent, *, text_later: bool = False,
                learn: bool = True) -> Profile:
        """The profile after the event (the same profile when the event was applied before)."""
        ...

    def embed_reviews(self, events: Sequence[ReviewEvent]) -> dict[str, np.ndarray]:
        """event_id -> vector of each review's text (those with text)."""
        ...

    def item_lang(self, item_id: str) -> str | None:
        """The item's main language (of its events so far, else declared), None if unknown; cheap."""
        ...

    def add_review_text(self, profile: Profile | None, event: ReviewEvent,
                        review_vector: np.ndarray) -> Profile | None:
        """Fold an embedded review text into its item and its author's profile."""

    def flush_store(self) -> None:
        """Write pending item changes to the vector store."""

    def embed_query(self, text: str) -> np.ndarray: ...

    def recommend(self, user_id: str, profile: Profile | None, k: int = 10, *, now: float,
                  query_vector: np.ndarray | None = None, lang: str | None = None) -> list[RankedItem]:
        """At most k items for the user, best first, each with a readable reason."""
        ...

    def feedback(self, user_id: str, profile: Profile | None, shown: Sequence[str],
                 clicked: str | None, *, now: float) -> None:
        """An impression's outcome: a click on one of `shown`, or None when none was clicked."""

    def forget_user(self, user_id: str) -> None:
        """Drop whatever the engine keeps about this user (an erasure; profiles are not kept here)."""

    def snapshot_pieces(self) -> Iterator[bytes]:
        """The state that is not in Kafka (models, counters) as pieces of a file, each taken
        when asked for (a few milliseconds each)."""


def _lower_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), REVIEW_LANE_NICE)
    except OSError:  # not permitted here: the lane still works, only unprioritised
        pass


@dataclass(frozen=True)
class RankJob:
    """One ranking to compute: coalesced after profile changes, or asked for on `requests`."""

    user_id: str
    profile: Profile | None
    k: int
    now: float
    query_vector: np.ndarray | None = None
    lang: str | None = None


@dataclass(frozen=True)
class FeedbackJob:
    """An impression's outcome: `clicked` is None when the feedback window passed without a click."""

    user_id: str
    profile: Profile | None
    shown: tuple[str, ...]
    clicked: str | None
    now: float


class EngineRunner:
    """Async facade over one engine; every method returns once its thread is done."""

    def __init__(self, engine: Engine, store: VectorStore | None = None) -> None:
        self.engine = engine
        self.store = store
        self._engine_thread = ThreadPoolExecutor(1, thread_name_prefix="xlrec-engine")
        self._encoder = ThreadPoolExecutor(1, thread_name_prefix="xlrec-encode")
        self._reviews = ThreadPoolExecutor(1, thread_name_prefix="xlrec-review-texts",
                                           initializer=_lower_priority)

    async def _run(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    # ---- items --------------------------------------------------------------------------
    async def upsert_items(self, events: Sequence[ItemEvent]) -> None:
        """Embed a batch of item texts on the encoder thread, then upsert them (and remove
        deleted items) on the engine thread, so rankings never wait for the encoder."""
        events = list(events)
        vectors: list[np.ndarray] | None = None
        live = [i for i, e in enumerate(events) if not e.deleted]
        if live and self.engine.encoder is not None:
            start = time.perf_counter()
            encoded = await self._run(self._encoder, self.engine.encoder.encode,
                                      [item_text(events[i]) for i in live])
            metrics.ENCODER_BATCH_SECONDS.observe(time.perf_counter() - start)
            metrics.ENCODER_BATCH_SIZE.observe(len(live))
            by_index = dict(zip(live, encoded))
            empty = np.zeros(self.engine.encoder.dim, dtype=np.float32)
            vectors = [by_index.get(i, empty) for i in range(len(events))]  # deleted: ignored
        await self._run(self._engine_thread, self.engine.upsert_items, events, vectors)
        metrics.ITEM_UPSERTS.inc(len(live))

    # ---- user events --------------------------------------------------------------------
    async def embed_reviews(self, events: Sequence[ReviewEvent]) -> dict[str, np.ndarray]:
        """One encoder batch for the review texts of a batch of events (event_id -> vector)."""
        if not events:
            return {}
        start = time.perf_counter()
        vectors = await self._run(self._reviews, self.engine.embed_reviews, list(events))
        metrics.ENCODER_BATCH_SECONDS.observe(time.perf_counter() - start)
        metrics.ENCODER_BATCH_SIZE.observe(len(events))
        return vectors

    async def observe(self, events: Sequence[UserEvent], profiles: dict[str, Profile | None],
                      item_langs: list[str | None] | None = None) -> list[Profile | Exception]:
        """Apply events in order, each to the profile its predecessors left (`profiles` is
        updated in place); an event that raises yields its exception and changes nothing.
        Review texts are not embedded here: `add_review_texts` folds them in later.
        `item_langs`, when given, gets each event's item main language as it was just before
        the event (None for events without a language: nobody asks for theirs)."""
        return await self._run(self._engine_thread, self._observe_all, list(events), profiles, item_langs)

    def _observe_all(self, events: list[UserEvent], profiles: dict[str, Profile | None],
                     item_langs: list[str | None] | None = None) -> list[Profile | Exception]:
        out: list[Profile | Exception] = []
        unknown = self.engine.unknown_item_events
        stride = max(1, math.ceil(len(events) / LEARN_PER_BATCH))
        metrics.RANKER_LEARNING_SKIPPED.inc(len(events) - len(range(0, len(events), stride)))
        for i, event in enumerate(events):
            if item_langs is not None:
                item_langs.append(self.engine.item_lang(event.item_id) if event.lang else None)
            try:
                profile = self.engine.observe(profiles.get(event.user_id), event, text_later=True,
                                           learn=i % stride == 0)
            except Exception as exc:  # one bad event must not sink the batch: it is dead-lettered
                out.append(exc)
                continue
            profiles[event.user_id] = profile
            out.append(profile)
        metrics.EVENTS_UNKNOWN_ITEM.inc(self.engine.unknown_item_events - unknown)
        self.engine.flush_store()
        return out

    async def add_review_texts(self, reviews: Sequence[tuple[ReviewEvent, np.ndarray]],
                               profiles: dict[str, Profile | None]) -> None:
        """Fold embedded review texts into their items and, in order, into `profiles`."""
        await self._run(self._engine_thread, self._add_texts, list(reviews), profiles)

    def _add_texts(self, reviews: list[tuple[ReviewEvent, np.ndarray]],
                   profiles: dict[str, Profile | None]) -> None:
        for event, vector in reviews:
            profiles[event.user_id] = self.engine.add_review_text(profiles.get(event.user_id), event, vector)
        self.engine.flush_store()

    async def feedback(self, jobs: Sequence[FeedbackJob]) -> None:
        if jobs:
            await self._run(self._engine_thread, self._feedback_all, list(jobs))

    def _feedback_all(self, jobs: list[FeedbackJob]) -> None:
        for job in jobs:
            self.engine.feedback(job.user_id, job.profile, job.shown, job.clicked, now=job.now)

    async def forget_user(self, user_id: str) -> None:
        """Erase the engine's per-user state (streams.worker.privacy), on the engine thread."""
        await self._run(self._engine_thread, self.engine.forget_user, user_id)

    # ---- ranking ------------------------------------------------------------------------
    async def embed_query(self, text: str) -> np.ndarray:
        return await self._run(self._encoder, self.engine.embed_query, text)

    async def recommend(self, jobs: Sequence[RankJob]) -> list[list[RankedItem] | Exception]:
        """Rank several users in one hop to the engine thread."""
        return await self._run(self._engine_thread, self._recommend_all, list(jobs))

    def _recommend_all(self, jobs: list[RankJob]) -> list[list[RankedItem] | Exception]:
        out: list[list[RankedItem] | Exception] = []
        for job in jobs:
            start = time.perf_counter()
            try:
                items = self.engine.recommend(job.user_id, job.profile, job.k, now=job.now,
                                           query_vector=job.query_vector, lang=job.lang)
                if not all(math.isfinite(item.score) for item in items):
                    # JSON has no NaN: the message would break the topic's contract for every app
                    raise ValueError(f"ranking of user {job.user_id!r} gave a non-finite score")
                out.append(items)
            except Exception as exc:
                out.append(exc)
            metrics.RANKING_SECONDS.observe(time.perf_counter() - start)
        return out

    async def model_version(self) -> str:
        return await self._run(self._engine_thread, lambda: self.engine.model_version)

    async def searchable_item(self, item_id: str) -> dict[str, Any] | None:
        """The payload of an item when the vector store can find it (HTTP `/items/{id}`);
        on the default executor, since a Qdrant server answers over the network."""
        if self.store is None:
            return None
        store = self.store
        found = await asyncio.get_running_loop().run_in_executor(None, store.get, [item_id])
        point = found.get(item_id)
        return None if point is None else point.payload

    # ---- maintenance --------------------------------------------------------------------
    async def snapshot(self, path: Path) -> None:
        """Save the worker-side state (River models, counters) to `path` atomically, one
        piece at a time: each is taken on the engine thread, which runs other work between
        pieces, and written from another thread, so no event waits for a whole snapshot."""
        started = time.perf_counter()
        pieces = self.engine.snapshot_pieces()
        path.parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        with atomic_open(path, "wb", private=True) as f:
            while True:
                start = time.perf_counter()
                piece = await self._run(self._engine_thread, next, pieces, None)
                metrics.SNAPSHOT_PIECE_SECONDS.observe(time.perf_counter() - start)
                if piece is None:
                    break
                await loop.run_in_executor(None, f.write, piece)
        metrics.SNAPSHOT_SECONDS.set(time.perf_counter() - started)

    async def store_answers(self) -> bool:
        """Whether the vector store answers now (tells an outage from a bad item)."""
        if self.store is None:
            return True
        try:
            await self._run(self._engine_thread, self.store.count)
        except Exception:
            return False
        return True

    async def maintain_store(self) -> None:
        """One step of the vector store's index upkeep, on the engine thread that owns it."""
        if self.store is not None:
            await self._run(self._engine_thread, self.store.maintain)

    def close(self) -> None:
        for pool in (self._engine_thread, self._encoder, self._reviews):
            pool.shutdown(wait=True, cancel_futures=False)
