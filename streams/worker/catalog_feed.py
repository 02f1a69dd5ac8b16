"""Every worker's own full copy of the catalog, read from all partitions of `items`.

Why: the consumer group shares the *user* partitions between workers, but ranking any user
needs every item (titles, vectors, counters, co-occurrence rows). Were items consumed by the
group like user events, a worker would only know the items of its own partitions, and a user
whose events land on it could never be shown, nor learn from, items that another worker owns.
So each worker reads every item partition with a consumer of its own (no group) and applies
the items to its engine and, idempotently by item_id, to the vector store. The group's item
agent still validates each message once and dead-letters poison, and its committed offsets
are the group's lag on `items`.

Positions: the offsets applied are saved beside the engine snapshot that holds the catalog
they produced (`save_resume`, with the worker's event time), and a restarted worker resumes
from them; without a snapshot it reads from the beginning. Applying an item twice changes
nothing.

Store outages: a batch that fails while the store does not answer is retried with
exponential backoff until it does; nothing is skipped, and the feed's lag
(`xlrec_consumer_lag{group="<group>.catalog"}`) grows meanwhile. An item that fails on its
own while the store answers is logged and skipped (the item agent has already validated it).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from encoders.files import atomic_write_bytes
from streams.worker.backoff import BACKOFF_MAX_S, BACKOFF_START_S, Backoff
from streams.worker.engine_runner import EngineRunner
from streams.contracts.schemas import InvalidEvent, ItemEvent, parse_event
from streams.contracts.settings import Settings

log = logging.getLogger(__name__)

BATCH = 64
POLL_MS = 50


@dataclass(frozen=True)
class FeedLag:
    """One partition's lag of the catalog feed, in the shape `metrics.record_consumer_lag` takes."""

    group: str
    topic: str
    partition: int
    lag: int


@dataclass(frozen=True)
class Resume:
    """What a restarted worker needs besides the engine snapshot: where the catalog feed
    stopped (next offset per items partition) and the newest event time seen (the engine's
    "now" for replays of old data, which wall-clock time would put years later)."""

    items: dict[int, int]
    event_time: float = 0.0


def resume_path(snapshot: Path) -> Path:
    return snapshot.with_name("resume.json")


def load_resume(snapshot: Path) -> Resume:
    """As saved with `snapshot`; empty when none or unreadable (the catalog is then read again)."""
    path = resume_path(snapshot)
    if not path.exists():
        return Resume({})
    try:
        data = orjson.loads(path.read_bytes())
        return Resume({int(p): int(o) for p, o in data["items"].items()}, float(data["event_time"]))
    except (ValueError, KeyError, TypeError, AttributeError, orjson.JSONDecodeError):
        log.warning("ignoring unreadable %s: the catalog is read again from the beginning", path)
        return Resume({})


def save_resume(snapshot: Path, resume: Resume) -> None:
    """Write atomically, after the snapshot it belongs to."""
    atomic_write_bytes(resume_path(snapshot),
                       orjson.dumps({"items": {str(p): o for p, o in resume.items.items()},
                                     "event_time": resume.event_time}),
                       private=True)


class CatalogFeed:
    """Reads every item partition and applies valid items to the engine, retrying outages."""

    def __init__(self, settings: Settings, runner: EngineRunner, start: dict[int, int],
                 on_applied: Callable[[list[ItemEvent]], None]) -> None:
        self.settings = settings
        self.runner = runner
        self.topic = settings.topic("items")
        self.group_label = f"{settings.group_id}.catalog"
        self.applied: dict[int, int] = dict(start)   # partition -> next offset to read
        self.ready = asyncio.Event()                  # caught up with the topic as it was at start
        self.on_applied = on_applied
        self.retries = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._initial_ends: dict[int, int] = {}

    async def run(self) -> None:
        """Forever: read, apply, advance; the task is cancelled when the worker stops."""
        consumer = AIOKafkaConsumer(
            group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", client_id=f"{self.group_label}-{os.getpid()}",
            **self.settings.connection().aiokafka())
        await consumer.start()
        self._consumer = consumer
        try:
            tps = await self._assign(consumer)
            ends = await consumer.end_offsets(tps)
            self._initial_ends = {tp.partition: end for tp, end in ends.items()}
            self._check_ready()
            while True:
                batches = await consumer.getmany(timeout_ms=POLL_MS, max_records=BATCH)
                for tp, messages in batches.items():
                    await self._apply(tp.partition, messages)
                self._check_ready()
        finally:
            self._consumer = None
            await consumer.stop()

    async def _assign(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        while True:
            # The consumer's own metadata only covers topics it already reads: ask the cluster.
            partitions = (await consumer._client.fetch_all_metadata()).partitions_for_topic(self.topic)
            if partitions:
                break
            await asyncio.sleep(1.0)
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        for tp in tps:
            if tp.partition in self.applied:
                consumer.seek(tp, self.applied[tp.partition])
            else:
                await consumer.seek_to_beginning(tp)
        return tps

    def _check_ready(self) -> None:
        if not self.ready.is_set() and all(self.applied.get(p, 0) >= end for p, end in self._initial_ends.items()):
            self.ready.set()

    async def _apply(self, partition: int, messages: list[Any]) -> None:
        latest: dict[str, ItemEvent] = {}
        for message in messages:
            try:
                item = parse_event("items", message.value or b"")
            except InvalidEvent:
                continue  # dead-lettered by the group's item agent
            assert isinstance(item, ItemEvent)
            latest.pop(item.item_id, None)
            latest[item.item_id] = item
        items = list(latest.values())
        if items:
            await self._upsert_with_retry(items)
            self.on_applied(items)
        self.applied[partition] = messages[-1].offset + 1

    async def _upsert_with_retry(self, items: list[ItemEvent]) -> None:
        """The batch at once; when it fails with the store up, item by item, skipping culprits."""
        if await self._until_applied(items):
            return
        for item in items:
            if not await self._until_applied([item]):
                log.error("item %r could not be applied; skipped", item.item_id)

    async def _until_applied(self, items: list[ItemEvent]) -> bool:
        """True once applied; False when it fails while the store answers (the items are at
        fault). While the store does not answer, retries with exponential backoff."""
        backoff = Backoff(BACKOFF_START_S, BACKOFF_MAX_S)
        while True:
            try:
                await self.runner.upsert_items(items)
                return True
            except Exception as exc:
                if await self.runner.store_answers():
                    log.warning("%d items failed with the store up: %s", len(items), type(exc).__name__)
                    return False
                self.retries += 1
                log.warning("vector store unavailable (%s); retrying %d items in %.1fs",
                            type(exc).__name__, len(items), backoff.delay)
                await backoff.sleep()

    def lag(self) -> list[FeedLag]:
        """Messages between this feed's position and each partition's end, as last fetched."""
        consumer = self._consumer
        if consumer is None:
            return []
        rows = []
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            if end is None:
                end = self._initial_ends.get(tp.partition, 0)
            rows.append(FeedLag(self.group_label, self.topic, tp.partition,
                                max(0, end - self.applied.get(tp.partition, 0))))
        return rows
