"""The worker's agents: items into the vector store, user events into the users table,
coalesced rankings and on-demand requests onto `recommendations`, impressions into feedback.

Processing guarantee. Kafka delivery is at-least-once (Faust commits source offsets after
the batch was processed, and a batch is acknowledged only once the broker acknowledged its
changelog writes). The users
table is made exactly-once in effect by idempotent updates: each table value (an
"envelope") records the last applied offset per (topic, partition) and the engine's profile
keeps the latest event_ids, so a message redelivered after a crash, or an event an app sent
twice, changes nothing. Values are plain JSON, never pickled objects.

Every message that fails to decode, validate or process is dead-lettered (`streams.worker.dlq`)
and the stream goes on.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from faust.types import EventT
from faust.types.tuples import FutureMessage, Message

from ranking.engine import Profile, Recommended
from ranking.profile import already_applied as profile_has
from streams.worker import metrics
from streams.worker import web
from streams.worker.app import changelog_name, declare_topics
from streams.worker.catalog_feed import BACKOFF_MAX_S, BACKOFF_START_S, CatalogFeed, Resume, save_resume
from streams.worker.rank_scheduler import PendingRank, RankScheduler
from streams.worker.dlq import DeadLetterQueue, KeyMismatch, Reason
from streams.worker.review_texts import (add_waiting, read_messages, to_read, user_partition, waiting,
                                  with_waiting)
from streams.worker.engine_runner import EngineRunner, FeedbackJob, RankJob
from streams.contracts.schemas import (ClickEvent, Event, ItemEvent, Recommendation, RecommendationRequest,
                             RecommendedItem, ReviewEvent, parse_event)
from streams.contracts.settings import Settings

log = logging.getLogger(__name__)

# Python's cyclic GC collects young objects every 700 allocations and, every 100 of those,
# scans every tracked object: with a worker's libraries, catalog and users table that took
# ~150 ms each time, ~10% of a worker's time and a stall of its event loop. What the hot path
# allocates is freed by reference counting, so young collections are made rarer and the
# long-lived start-up state is left out of the scans (`Pipeline.settle_memory`).
GC_YOUNG_THRESHOLD = 50_000
ITEM_BATCH, ITEM_WITHIN_S = 64, 0.05    # a new item is searchable well within 1 s
USER_BATCH, USER_WITHIN_S = 256, 0.01   # big batches under load, ~no wait when idle
RANK_BATCH = 32
REVIEW_TEXT_BATCH = 64                  # review texts per encoder call (cache-sized on CPU)
MAX_REVIEW_TEXT_BACKLOG = 20_000        # past it, the oldest waiting texts are never embedded
MAX_LATEST = 200_000                    # latest recommendations kept for the HTTP API
MAX_IMPRESSIONS = 200_000
RERANK_AFTER_RECOVERY_S = 300.0         # users active this recently are re-ranked after a rebalance
MAINTENANCE_INTERVAL_S = 10.0
OPTIMIZE_INTERVAL_S = 30.0
LAG_INTERVAL_S = 5.0

Envelope = dict[str, Any]
"""Users-table value: `{"p": profile, "o": {"clicks:3": offset, ...}, "e": last event_id,
"at": unix time applied}`."""

_changelog_partition: ContextVar[int | None] = ContextVar("xlrec_changelog_partition", default=None)


class UsersTable(faust.Table):
    """A Faust table whose writes name their changelog partition.

    Faust writes a key's changelog to the partition of the *current* event; batches from
    `take_events` mix partitions, so the agent says which one (the user's source partition,
    which recovery and the partition assignor rely on).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_serializer = "raw"       # user_id as UTF-8, like the input topics' keys
        self.value_serializer = "orjson"  # plain JSON envelopes
        self._unacked: list[asyncio.Future[Any]] = []

    def send_changelog(self, *args: Any, **kwargs: Any) -> FutureMessage:
        """Faust's changelog write, remembered until the broker acknowledged it (`acked`)."""
        write = super().send_changelog(*args, **kwargs)
        self._unacked.append(write)
        return write

    async def acked(self) -> None:
        """Until the broker acknowledged (acks=all) every changelog write made so far; a
        write that failed raises, and its batch is then never acknowledged."""
        while self._unacked:
            writes, self._unacked = self._unacked, []
            await asyncio.gather(*writes)

    def partition_for_key(self, key: Any) -> int | None:
        partition = _changelog_partition.get()
        return partition if partition is not None else super().partition_for_key(key)

    def put(self, key: str, value: Envelope, partition: int) -> None:
        token = _changelog_partition.set(partition)
        try:
            self[key] = value
        finally:
            _changelog_partition.reset(token)


def offset_key(message: Message, kind: str) -> str:
    return f"{kind}:{message.partition}"


def already_applied(envelope: Envelope | None, message: Message, kind: str) -> bool:
    """True for a message at or below the last offset applied from its partition (a replay)."""
    return envelope is not None and message.offset <= envelope["o"].get(offset_key(message, kind), -1)


def decode(kind: str, message: Message) -> Event:
    """Validate one raw message; user events must be keyed by their user_id (their state
    partition), else the profile would be split across workers."""
    event = parse_event(kind, message.value if isinstance(message.value, bytes) else b"")
    if kind != "items":
        key = message.key.decode("utf-8", "replace") if isinstance(message.key, bytes) else None
        if key != event.user_id:  # type: ignore[attr-defined]
            shown = "no key" if key is None else f"key {key[:64]!r}"
            raise KeyMismatch(f"{kind} must be keyed by user_id; got {shown} for user "
                              f"{event.user_id!r}")  # type: ignore[attr-defined]
    return event


def count_events(kinds: Iterable[str]) -> None:
    """`xlrec_events_processed` once per topic and batch: a labelled counter costs a lookup
    and a lock per call, which per event was ~2% of a worker's time."""
    for kind, n in Counter(kinds).items():
        metrics.EVENTS_PROCESSED.labels(topic=kind).inc(n)


class LatestRecommendations:
    """The latest recommendation per user, as sent (JSON bytes), LRU-bounded."""

    def __init__(self, max_users: int = MAX_LATEST) -> None:
        self.max_users = max_users
        self._data: OrderedDict[str, bytes] = OrderedDict()

    def put(self, user_id: str, body: bytes) -> None:
        self._data[user_id] = body
        self._data.move_to_end(user_id)
        while len(self._data) > self.max_users:
            self._data.popitem(last=False)

    def get(self, user_id: str) -> bytes | None:
        return self._data.get(user_id)


@dataclass
class Impression:
    user_id: str
    shown: tuple[str, ...]
    created: float
    clicked: bool = False


class ImpressionTracker:
    """Recommendations shown and awaiting feedback: a click on one is a positive, and the
    items of an impression never clicked within `window_s` are negatives."""

    def __init__(self, window_s: float, max_size: int = MAX_IMPRESSIONS) -> None:
        self.window_s = window_s
        self.max_size = max_size
        self._data: OrderedDict[str, Impression] = OrderedDict()

    def track(self, recommendation_id: str, user_id: str, shown: Sequence[str], now: float) -> None:
        self._data[recommendation_id] = Impression(user_id, tuple(shown), now)
        while len(self._data) > self.max_size:
            self._data.popitem(last=False)

    def click(self, recommendation_id: str, user_id: str, item_id: str) -> Impression | None:
        """The impression this click answers, or None (unknown, expired, another user, not shown)."""
        imp = self._data.get(recommendation_id)
        if imp is None or imp.user_id != user_id or item_id not in imp.shown:
            return None
        imp.clicked = True
        return imp

    def expired(self, now: float) -> list[Impression]:
        """Pop impressions older than the window; only unclicked ones need negative feedback."""
        out = []
        while self._data:
            rec_id, imp = next(iter(self._data.items()))
            if imp.created + self.window_s > now:
                break
            del self._data[rec_id]
            if not imp.clicked:
                out.append(imp)
        return out


class Pipeline:
    """Wires the agents, tasks, timers and web pages of one worker onto a Faust app."""

    def __init__(self, app: faust.App, settings: Settings, runner: EngineRunner, *,
                 snapshot_path: Path | None = None, resume: Resume | None = None) -> None:
        self.app = app
        self.settings = settings
        self.runner = runner
        self.snapshot_path = snapshot_path
        self.topics = declare_topics(app, settings)
        self.dlq = DeadLetterQueue(self.topics.dlq)
        self.users: UsersTable = self._users_table()
        self.scheduler = RankScheduler(settings.rank_interval_s, enabled=settings.ranking_enabled)
        self.latest = LatestRecommendations()
        self.impressions = ImpressionTracker(settings.feedback_window_s)
        self.requests: deque[tuple[RecommendationRequest, Message]] = deque()
        self.review_texts: deque[tuple[ReviewEvent, Message]] = deque()
        self._texts_waiting = asyncio.Event()
        self._revoked: set[tuple[str, int]] = set()   # during the review-text batch in flight
        self._profiles = asyncio.Lock()   # one read-modify-write of the users table at a time
        self.event_time = resume.event_time if resume else 0.0  # newest event time seen: the engine's "now"
        self._wake = asyncio.Event()
        self._upserts_since_optimize = 0
        self._kinds = {settings.topic(k): k for k in ("items", "clicks", "reviews", "requests")}
        self._user_topics = {settings.topic(k) for k in ("clicks", "reviews")}
        self.owned: set[int] = set()  # user partitions this worker holds, with their table recovered
        self.feed = CatalogFeed(settings, runner, resume.items if resume else {}, self.items_applied)
        self._lag_monitor: Any = None
        self._text_reader: asyncio.Future[None] | None = None

        self.items_agent = app.agent(self.topics.items, name="xlrec-items")(self.process_items)
        user_topics = app.topic(*(settings.topic(k) for k in ("clicks", "reviews", "requests")),
                                key_type=bytes, value_type=bytes, key_serializer="raw",
                                value_serializer="raw")
        self.users_agent = app.agent(user_topics, name="xlrec-users")(self.process_user_events)
        app.task(self.ranking_loop)
        app.task(self.settle_memory)
        app.task(self.feed.run)
        app.timer(LAG_INTERVAL_S)(self.sample_lag)
        app.task(self.review_text_lane)
        app.timer(max(1.0, settings.feedback_window_s / 10))(self.expire_impressions)
        app.timer(MAINTENANCE_INTERVAL_S)(self.maintenance)
        app.timer(OPTIMIZE_INTERVAL_S)(self.optimize_store)
        app.timer(settings.snapshot_interval_s)(self.snapshot)
        app.on_rebalance_complete.connect(self.on_rebalance_complete)
        app.on_partitions_revoked.connect(self.on_partitions_revoked)
        app.on_partitions_assigned.connect(self.on_partitions_assigned)
        app.on_before_shutdown.connect(self.on_shutdown)
        web.register(app, self.latest.get, self.runner.searchable_item)

    def _users_table(self) -> UsersTable:
        s = self.settings
        changelog = self.app.topic(changelog_name(s, "users"), key_type=str, value_type=None,
                                   key_serializer="raw", value_serializer="orjson",
                                   partitions=s.partitions, internal=True, compacting=True,
                                   deleting=False, acks=False, maxsize=131_072, allow_empty=True)
        table = UsersTable(self.app, name="users", key_type=str, partitions=s.partitions,
                           changelog_topic=changelog, beacon=self.app.tables.beacon,
                           help="User profiles (plain JSON envelopes, see streams.worker.agents)")
        return self.app.tables.add(table)

    async def settle_memory(self) -> None:
        """Once the catalog of the items at start is read, freeze what exists (libraries, the
        encoder, the catalog) out of the cyclic GC, and collect young objects less often."""
        await self.feed.ready.wait()
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])

    def now(self) -> float:
        """Event time: the newest timestamp seen, so replays of old data rank as of then."""
        return self.event_time or time.time()

    def profile_of(self, user_id: str) -> Profile | None:
        envelope = self.users.get(user_id)
        return envelope["p"] if envelope else None

    def owns(self, user_id: str) -> bool:
        """Whether this worker still holds the user's partition: after a rebalance the old
        owner must not send a ranking that lands after the new owner's fresher one."""
        envelope = self.users.get(user_id)
        partition = user_partition(envelope) if envelope else None
        return partition is None or partition in self.owned

    async def on_partitions_revoked(self, sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        """Faust signals a revocation before the group hands the partitions to anyone else.
        Waiting review texts of those users are not folded in here: a late write to their
        changelog would overwrite what the new owner wrote."""
        self.owned -= {tp.partition for tp in revoked if tp.topic in self._user_topics}
        gone = {(tp.topic, tp.partition) for tp in revoked}
        self._revoked |= gone
        keep = deque((e, m) for e, m in self.review_texts if (m.topic, m.partition) not in gone)
        metrics.REVIEW_TEXTS_SKIPPED.inc(len(self.review_texts) - len(keep))
        self.review_texts = keep
        metrics.REVIEW_TEXT_BACKLOG.set(len(keep))

    async def on_partitions_assigned(self, sender: Any, assigned: set[Any], **kwargs: Any) -> None:
        # A newly assigned partition is owned once its table is recovered (on_rebalance_complete):
        # ranked before, its users would be ranked from what this worker knew when it last held
        # it, and that ranking could land after the fresh one of the previous owner.
        self.owned &= {tp.partition for tp in assigned if tp.topic in self._user_topics}

    def wake(self) -> None:
        self._wake.set()

    # ---- items --------------------------------------------------------------------------
    async def process_items(self, stream: faust.StreamT) -> None:
        async for events in stream.take_events(ITEM_BATCH, within=ITEM_WITHIN_S):
            await self.handle_items(events)

    async def handle_items(self, events: Sequence[EventT]) -> None:
        """Validate each item message once for the group and dead-letter poison; every
        worker's `CatalogFeed` applies the valid ones to its own full catalog."""
        for ev in events:
            try:
                decode("items", ev.message)
            except Exception as exc:
                await self.dlq.send(ev.message, exc)
        metrics.EVENTS_PROCESSED.labels(topic="items").inc(len(events))

    def items_applied(self, items: list[ItemEvent]) -> None:
        """The catalog feed applied these items."""
        self.event_time = max(self.event_time, max(item.ts for item in items))
        self._upserts_since_optimize += len(items)

    # ---- user events --------------------------------------------------------------------
    async def process_user_events(self, stream: faust.StreamT) -> None:
        async for events in stream.take_events(USER_BATCH, within=USER_WITHIN_S):
            async with self._profiles:
                await self.handle_user_events(events)

    async def handle_user_events(self, events: Sequence[EventT]) -> None:
        """Clicks and reviews update profiles in order; requests queue an immediate ranking.
        Waits until the catalog feed has read the items that existed at start, so profiles
        never learn from items this worker does not know yet."""
        await self.feed.ready.wait()
        fresh: list[tuple[ClickEvent | ReviewEvent, Message, str]] = []
        envelopes: dict[str, Envelope | None] = {}
        count_events(self._kinds[ev.message.topic] for ev in events)
        for ev in events:
            message = ev.message
            kind = self._kinds[message.topic]
            try:
                event = decode(kind, message)
            except Exception as exc:
                await self.dlq.send(message, exc)
                continue
            if isinstance(event, RecommendationRequest):
                self.requests.append((event, message))
                continue
            assert isinstance(event, (ClickEvent, ReviewEvent))
            if event.user_id not in envelopes:
                envelopes[event.user_id] = self.users.get(event.user_id)
            if already_applied(envelopes[event.user_id], message, kind):
                # A replay after a crash: the table has it, but its ranking may have been lost.
                self.scheduler.mark(event.user_id, event.event_id, time.time())
                self.event_time = max(self.event_time, event.ts)
                continue
            fresh.append((event, message, kind))
        if fresh:
            await self._apply(fresh, envelopes)
        self.wake()

    async def _apply(self, fresh: list[tuple[ClickEvent | ReviewEvent, Message, str]],
                     envelopes: dict[str, Envelope | None]) -> None:
        results = await self._observe([e for e, _, _ in fresh], envelopes)
        touched: dict[str, int] = {}
        texts: list[tuple[ReviewEvent, Message]] = []
        feedback: list[FeedbackJob] = []
        for (event, message, kind), result in zip(fresh, results):
            if isinstance(result, Exception):
                await self.dlq.send(message, result)
                continue
            old = envelopes.get(event.user_id)
            texts_waiting = waiting(old)
            if isinstance(event, ReviewEvent) and event.text.strip() and \
                    not profile_has(old["p"] if old else None, event.event_id):
                texts.append((event, message))
                texts_waiting = add_waiting(texts_waiting, message.offset)
            envelopes[event.user_id] = with_waiting({
                "p": result, "o": {**(old["o"] if old else {}), offset_key(message, kind): message.offset},
                "e": event.event_id, "at": time.time()}, texts_waiting)
            touched[event.user_id] = message.partition
            self.scheduler.mark(event.user_id, event.event_id, message.timestamp or time.time())
            self.event_time = max(self.event_time, event.ts)
            if isinstance(event, ClickEvent) and event.context and event.context.recommendation_id:
                imp = self.impressions.click(event.context.recommendation_id, event.user_id, event.item_id)
                if imp is not None:
                    feedback.append(FeedbackJob(event.user_id, result, imp.shown, event.item_id, event.ts))
        for user_id, partition in touched.items():
            self.users.put(user_id, envelopes[user_id], partition)  # type: ignore[arg-type]
        metrics.PROFILE_UPDATES.inc(len(fresh) - sum(isinstance(r, Exception) for r in results))
        self.queue_review_texts(texts)
        await self.changelog_durable()
        await self.runner.feedback(feedback)

    async def changelog_durable(self) -> None:
        """Wait until the broker acknowledged this batch's changelog writes, before the batch
        is acknowledged: its source offsets are then never committed ahead of the users
        table, so a SIGKILL cannot lose an update. (Faust's own pre-commit flush gives up after
        0.1 s when the loop is busy, and a message its background sender holds is in neither
        its buffer nor the client.)

        The agent first hands the buffered writes to the Kafka client itself, in order: Faust's
        `buffer.flush()` waits for its background sender message by message (a queue hand-off,
        an event and a timeout each), which profiling showed cost as much as the sends."""
        buffer = self.app.producer.buffer
        while buffer.size:
            await buffer._send_pending(buffer.pending.get_nowait())
        try:
            await self.users.acked()
        except Exception as exc:
            # The batch must be read again, which only a restart from the committed offsets
            # does: a restarted agent would go on after it, and the group would stall on it.
            log.critical("a users-table changelog write failed (%s: %s); stopping the worker",
                         type(exc).__name__, exc)
            await self.app.crash(exc)
            raise

    async def _observe(self, events: list[ClickEvent | ReviewEvent],
                       envelopes: dict[str, Envelope | None]) -> list[Any]:
        """Apply the events; while the vector store does not answer, wait with backoff and
        apply them again (from the same profiles), instead of dead-lettering a whole outage.
        The batch is not acknowledged meanwhile, so the group's lag shows the stall."""
        delay = BACKOFF_START_S
        while True:
            profiles = {uid: env["p"] for uid, env in envelopes.items() if env}
            try:
                results = await self.runner.observe(events, profiles)
            except Exception as exc:  # the batch's store write failed: no event was kept
                results = [exc] * len(events)
            if not any(isinstance(r, Exception) for r in results) or await self.runner.store_answers():
                return results
            log.warning("vector store unavailable; retrying %d user events in %.1fs", len(events), delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)

    # ---- review texts -------------------------------------------------------------------
    def queue_review_texts(self, reviews: Sequence[tuple[ReviewEvent, Message]]) -> None:
        """Review texts wait here for the encoder, after their events updated the profiles:
        on CPU the encoder embeds ~50-250 texts/s, far below the rate profiles update at."""
        for review in reviews:
            if len(self.review_texts) >= MAX_REVIEW_TEXT_BACKLOG:
                self.review_texts.popleft()
                metrics.REVIEW_TEXTS_SKIPPED.inc()
            self.review_texts.append(review)
        metrics.REVIEW_TEXT_BACKLOG.set(len(self.review_texts))
        if reviews:
            self._texts_waiting.set()

    def _queued_texts(self) -> set[tuple[int, int]]:
        """(partition, offset) of the review texts in the lane's queue."""
        return {(m.partition, m.offset) for _, m in self.review_texts}

    async def review_text_lane(self) -> None:
        """Embed waiting review texts batch after batch, forever."""
        while True:
            if not self.review_texts:
                self._texts_waiting.clear()
                await self._texts_waiting.wait()
                continue
            try:
                await self.embed_review_texts()
            except Exception:  # never let one bad batch stop the lane
                log.exception("review texts could not be folded in")

    async def embed_review_texts(self) -> None:
        """One encoder batch of waiting texts, folded into items and the users' profiles, whose
        users are then re-ranked with their own words (a refresh, which does not delay the
        ranking of their next event)."""
        batch = [self.review_texts.popleft() for _ in range(min(REVIEW_TEXT_BATCH, len(self.review_texts)))]
        metrics.REVIEW_TEXT_BACKLOG.set(len(self.review_texts))
        self._revoked = set()
        vectors, failed = await self._embed_reviews([event for event, _ in batch])
        for event, message in batch:
            if event.event_id in failed:
                await self.dlq.send(message, failed[event.event_id], Reason.ENCODER_ERROR)
        mine = [(event, message) for event, message in batch
                if (message.topic, message.partition) not in self._revoked]
        metrics.REVIEW_TEXTS_SKIPPED.inc(len(batch) - len(mine))  # the new owner reads them again
        async with self._profiles:
            envelopes = {event.user_id: self.users.get(event.user_id) for event, _ in mine}
            # Folded in already (a text read again after a restart that had folded it): skip.
            mine = [(e, m) for e, m in mine if m.offset in waiting(envelopes[e.user_id])]
            done = [(e, m) for e, m in mine if e.event_id in vectors]
            profiles = {e.user_id: envelopes[e.user_id]["p"] for e, _ in done}  # type: ignore[index]
            await self.runner.add_review_texts([(e, vectors[e.event_id]) for e, _ in done], profiles)
            finished: dict[str, set[int]] = {}   # folded in, or dead-lettered: no longer waiting
            for event, message in mine:
                finished.setdefault(event.user_id, set()).add(message.offset)
            partitions = {event.user_id: message.partition for event, message in mine}
            for user_id, offsets in finished.items():
                envelope = envelopes[user_id]
                assert envelope is not None   # it has waiting offsets
                left = [o for o in waiting(envelope) if o not in offsets]
                self.users.put(user_id, with_waiting({**envelope, "p": profiles.get(user_id, envelope["p"])}, left),
                               partitions[user_id])
                if user_id in profiles:
                    self.scheduler.mark(user_id, envelope.get("e"), time.time(), refresh=True)
        metrics.REVIEW_TEXTS_EMBEDDED.inc(len(done))
        self.wake()

    async def _embed_reviews(self, reviews: list[ReviewEvent]) -> tuple[dict[str, Any], dict[str, Exception]]:
        """One encoder batch; if it fails, find the culprits one by one so the rest go on."""
        try:
            return await self.runner.embed_reviews(reviews), {}
        except Exception:
            log.exception("review batch failed to embed; retrying one by one")
        vectors: dict[str, Any] = {}
        failed: dict[str, Exception] = {}
        for review in reviews:
            try:
                vectors.update(await self.runner.embed_reviews([review]))
            except Exception as exc:
                failed[review.event_id] = exc
        return vectors, failed

    # ---- ranking ------------------------------------------------------------------------
    async def ranking_loop(self) -> None:
        """Rank due users and answer requests, forever; sleeps until woken or someone is due."""
        while True:
            self._wake.clear()
            requests = [self.requests.popleft() for _ in range(min(RANK_BATCH, len(self.requests)))]
            due = self.scheduler.due(RANK_BATCH - len(requests))
            metrics.RANKINGS_PENDING.set(self.scheduler.waiting_after_events())
            if not requests and not due:
                wait = self.scheduler.seconds_until_next()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=1.0 if wait is None else wait)
                except asyncio.TimeoutError:
                    pass
                continue
            try:
                await self.rank(due, requests)
            except Exception:  # never let one bad batch stop ranking for everyone
                log.exception("ranking batch failed")
                metrics.DEAD_LETTERS.labels(reason=Reason.RANKING_ERROR).inc(len(due) + len(requests))

    async def rank(self, due: list[PendingRank],
                   requests: list[tuple[RecommendationRequest, Message]]) -> None:
        """Compute and emit one batch of rankings (coalesced users first, then requests)."""
        now = self.now()
        envelopes = [self.users.get(p.user_id) for p in due]
        jobs = [RankJob(p.user_id, env["p"] if env else None, self.settings.top_k, now)
                for p, env in zip(due, envelopes)]
        # The trigger is the last event of the profile ranked, read with it: the one marked may
        # be older (a replay after a crash, or a pending entry that outlived losing and
        # regaining the partition), and a ranking labelled with it would look stale.
        triggers = [(env or {}).get("e") or p.trigger_event_id for p, env in zip(due, envelopes)]
        answered: list[tuple[RecommendationRequest, Message]] = []
        for request, message in requests:
            try:
                query = await self.runner.embed_query(request.query) if request.query else None
            except Exception as exc:
                await self.dlq.send(message, exc, Reason.ENCODER_ERROR)
                continue
            jobs.append(RankJob(request.user_id, self.profile_of(request.user_id), request.k, now,
                                query_vector=query, lang=request.lang))
            answered.append((request, message))
        results = await self.runner.recommend(jobs)
        model_version = self.runner.rec.model_version
        for i, (job, result) in enumerate(zip(jobs, results)):
            pending = due[i] if i < len(due) else None
            request, message = answered[i - len(due)] if pending is None else (None, None)
            if isinstance(result, Exception):
                if message is not None:
                    await self.dlq.send(message, result, Reason.RANKING_ERROR)
                elif pending is not None and not await self.runner.store_answers():
                    # The store is away: rank this user again later rather than never.
                    self.scheduler.mark(pending.user_id, pending.trigger_event_id, pending.oldest_produced_ts)
                    await asyncio.sleep(BACKOFF_START_S)
                else:
                    log.error("ranking user %s failed: %r", job.user_id, result)
                    metrics.DEAD_LETTERS.labels(reason=Reason.RANKING_ERROR).inc()
                continue
            if pending is not None and not self.owns(job.user_id):
                continue  # revoked meanwhile: the new owner ranks the user (on_rebalance_complete)
            produced = pending.oldest_produced_ts if pending else (message.timestamp or time.time())
            await self.emit(job.user_id, result, model_version, produced,
                            trigger_event_id=triggers[i] if pending else None,
                            request_id=request.request_id if request else None,
                            refresh=pending.refresh if pending else False)

    async def emit(self, user_id: str, items: list[Recommended], model_version: str,
                   produced_ts: float, *, trigger_event_id: str | None,
                   request_id: str | None, refresh: bool = False) -> Recommendation:
        """Send one Recommendation keyed by user_id, remember it for HTTP and feedback."""
        sent_at = time.time()
        rec = Recommendation(
            user_id=user_id, model_version=model_version, trigger_event_id=trigger_event_id,
            request_id=request_id, created_ts=sent_at,
            latency_ms=max(0.0, (sent_at - produced_ts) * 1000.0),
            items=[RecommendedItem(item_id=r.item_id, score=float(r.score), reason=r.reason,
                                   title=r.title, lang=r.lang) for r in items])
        body = rec.to_json()
        await self.topics.recommendations.send(key=user_id.encode(), value=body)
        self.latest.put(user_id, body)
        self.impressions.track(rec.recommendation_id, user_id, [r.item_id for r in items], time.monotonic())
        if refresh:
            metrics.RECOMMENDATIONS_REFRESHED.inc()
        else:
            self.scheduler.ranked(user_id)
        metrics.RECOMMENDATIONS.inc()
        metrics.EVENT_TO_RECOMMENDATION_SECONDS.observe(rec.latency_ms / 1000.0)  # type: ignore[operator]
        return rec

    # ---- timers and signals -------------------------------------------------------------
    async def expire_impressions(self) -> None:
        """Impressions not clicked within the feedback window become negatives."""
        expired = self.impressions.expired(time.monotonic())
        now = self.now()
        await self.runner.feedback([FeedbackJob(imp.user_id, self.profile_of(imp.user_id), imp.shown,
                                                None, now) for imp in expired])

    async def maintenance(self) -> None:
        metrics.USERS.set(len(self.users))
        self.scheduler.forget_old()

    async def optimize_store(self) -> None:
        """Build the ANN index off the hot path once enough items changed."""
        if self._upserts_since_optimize:
            self._upserts_since_optimize = 0
            await self.runner.optimize_store()

    async def snapshot(self) -> None:
        """Engine state, then the catalog offsets it holds (taken first: at worst older). A
        failed snapshot (the engine flushes the vector store first, which may be away) is
        logged and left to the next one: a timer that raises would crash the worker."""
        if self.snapshot_path is not None:
            resume = Resume(dict(self.feed.applied), self.event_time)
            try:
                await self.runner.snapshot(self.snapshot_path)
            except Exception as exc:
                log.warning("engine snapshot failed (%s: %s); the next one retries", type(exc).__name__, exc)
                return
            save_resume(self.snapshot_path, resume)

    async def sample_lag(self) -> None:
        """Fill `xlrec_consumer_lag`: the group's lag from Kafka's admin API (blocking, so in a
        thread) and the catalog feed's own."""
        from streams.ops.lag import LagMonitor

        loop = asyncio.get_running_loop()
        try:
            if self._lag_monitor is None:
                self._lag_monitor = await loop.run_in_executor(
                    None, LagMonitor, self.settings, self.settings.group_id)
            report = await loop.run_in_executor(None, self._lag_monitor.sample)
            rows: list[Any] = list(report.rows)
        except Exception as exc:  # no broker, or the group not there yet: the feed's lag still counts
            log.debug("consumer lag not sampled: %s", exc)
            rows = []
        metrics.record_consumer_lag(rows + self.feed.lag(), time.time())

    async def on_rebalance_complete(self, sender: Any = None, **kwargs: Any) -> None:
        """After a restart or a rebalance, re-rank users whose last events may not have been
        ranked before the previous owner stopped (their rankings lived only in memory). The
        table is recovered now, so the assigned partitions are owned from here on."""
        self.owned = {tp.partition for tp in self.app.consumer.assignment() if tp.topic in self._user_topics}
        horizon = time.time() - RERANK_AFTER_RECOVERY_S
        count = 0
        for user_id, envelope in list(self.users.items()):
            if envelope and envelope.get("at", 0.0) >= horizon:
                self.scheduler.mark(user_id, envelope.get("e"), time.time())
                count += 1
        if count:
            log.info("re-ranking %d recently active users after rebalance", count)
            self.wake()
        wanted = to_read(self.users.values(), self.owned, self._queued_texts())
        if wanted:
            self._text_reader = asyncio.ensure_future(self.read_waiting_texts(wanted))

    async def read_waiting_texts(self, wanted: dict[int, set[int]]) -> None:
        """Queue again the review texts this worker's users still wait for (their offsets are
        in the users table): left by a crashed worker or by the previous owner of a partition."""
        topic = self.settings.topic("reviews")
        loop = asyncio.get_running_loop()
        try:
            messages = await loop.run_in_executor(None, read_messages, self.settings, topic, wanted)
        except Exception as exc:  # the broker away: the next rebalance or restart reads them
            log.warning("waiting review texts not read again (%s: %s)", type(exc).__name__, exc)
            return
        queued = self._queued_texts()
        texts = []
        for message in messages:
            if (message.partition, message.offset) in queued or message.partition not in self.owned:
                continue
            try:
                texts.append((parse_event("reviews", message.value), message))
            except Exception as exc:  # it was valid when applied; never let one stop the rest
                log.warning("waiting review text at %s[%d]@%d unreadable: %s", topic,
                            message.partition, message.offset, exc)
        log.info("read %d waiting review texts again", len(texts))
        metrics.REVIEW_TEXTS_READ_AGAIN.inc(len(texts))
        self.queue_review_texts(texts)  # type: ignore[arg-type]

    async def on_shutdown(self, sender: Any = None, **kwargs: Any) -> None:
        await self.snapshot()
