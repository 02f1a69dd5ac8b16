"""The users agent: clicks and reviews update the users table in order; requests queue a ranking;
a `ForgetUser` erases the user, in order with the user's events (streams.worker.privacy).

Processing guarantee. Kafka delivery is at-least-once (Faust commits source offsets after
the batch was processed, and a batch is acknowledged only once the broker acknowledged its
changelog writes). The users table is made exactly-once in effect by idempotent updates: each
`UserRecord` keeps the last applied offset per (topic, partition) and the engine's profile
keeps the latest event_ids, so a message redelivered after a crash, or an event an app sent
twice, changes nothing. An event on another partition than its user's is forwarded there
(streams.worker.reroute) and named by where it arrived, so a copy forwarded twice is applied once.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from typing import Any

import faust
from faust.types import EventT
from faust.types.tuples import Message

from ranking.engine import Profile
from ranking.profile import has_event
from streams.contracts.forget import ForgetUser
from streams.contracts.schemas import ClickEvent, RecommendationRequest, ReviewEvent
from streams.worker import metrics
from streams.worker.backoff import BACKOFF_MAX_S, BACKOFF_START_S, Backoff
from streams.worker.catalog_feed import CatalogFeed
from streams.worker.context import WorkerContext
from streams.worker.engine_runner import FeedbackJob
from streams.worker.feedback import ImpressionTracker
from streams.worker.messages import batches, decode
from streams.worker.online_quality import OnlineQuality
from streams.worker.privacy import Erasure
from streams.worker.reroute import Arrival, NoOrigin, Rerouter, arrival
from streams.worker.review_text_lane import ReviewTextLane
from streams.worker.user_record import UserRecord, source_key

log = logging.getLogger(__name__)

USER_BATCH, USER_WITHIN_S = 256, 0.01   # big batches under load, ~no wait when idle

UserEvent = ClickEvent | ReviewEvent
Requests = deque[tuple[RecommendationRequest, Message]]


def count_events(kinds: Iterable[str]) -> None:
    """`xlrec_events_processed` once per topic and batch: a labelled counter costs a lookup
    and a lock per call, which per event is a measurable share of a worker's time."""
    for kind, n in Counter(kinds).items():
        metrics.EVENTS_PROCESSED.labels(topic=kind).inc(n)


class UserEvents:
    """Applies user events to the users table and the engine, batch by batch."""

    def __init__(self, ctx: WorkerContext, feed: CatalogFeed, lane: ReviewTextLane,
                 impressions: ImpressionTracker, requests: Requests, erasure: Erasure,
                 quality: OnlineQuality) -> None:
        self.ctx = ctx
        self.feed = feed
        self.lane = lane
        self.impressions = impressions
        self.requests = requests
        self.rerouter = Rerouter(ctx.topics.repartition)
        self.erasure = erasure
        self.quality = quality

    async def process(self, stream: faust.StreamT) -> None:
        """The agent: batches of clicks, reviews and requests, one table update at a time."""
        async for events in batches(stream, USER_BATCH, USER_WITHIN_S):
            async with self.ctx.profiles_lock:
                await self.handle(events)

    async def handle(self, events: Sequence[EventT]) -> None:
        """Clicks and reviews update profiles in order; requests queue an immediate ranking.
        Waits until the catalog feed has read the items that existed at start, so profiles
        never learn from items this worker does not know yet. Events on another partition than
        their user's are forwarded there (streams.worker.reroute), and the batch is done only
        once the broker has the forwarded copies."""
        ctx = self.ctx
        await self.feed.ready.wait()
        fresh: list[tuple[UserEvent, Message, Arrival]] = []
        records: dict[str, UserRecord | None] = {}
        # Highest origin offset taken in this batch per (user, source): two copies of one
        # re-routed event can both be in the batch (it was forwarded twice).
        taken: dict[tuple[str, str], int] = {}
        moves: list[tuple[Message, str, int]] = []
        arrived: list[Arrival | Exception] = []
        for ev in events:
            try:
                arrived.append(arrival(ev.message, ctx.kinds, ctx.repartition_topic))
            except NoOrigin as exc:
                arrived.append(exc)
        count_events(a.kind for a in arrived if isinstance(a, Arrival) and a.via is None)
        for ev, came in zip(events, arrived):
            message = ev.message
            try:
                if isinstance(came, Exception):
                    raise came
                event = decode(came.kind, message)
            except Exception as exc:
                await ctx.dlq.send(came.origin_message(message) if isinstance(came, Arrival) else message, exc)
                continue
            home = self.misplaced(event.user_id, message.partition) if came.via is None else None  # type: ignore[attr-defined]
            if home is not None:
                moves.append((message, came.kind, home))
                continue
            if isinstance(event, ForgetUser):
                # In order: the events before it in the batch are applied (and durable) first.
                if fresh:
                    await self._apply(fresh, records)
                    fresh = []
                await self.erasure.erase(event.user_id, message.partition, message.timestamp)
                records[event.user_id] = None
                await self.changelog_durable()
                continue
            if self.erasure.before(event.user_id, message):  # type: ignore[attr-defined]
                continue   # produced before the user's erasure, read after it: dropped
            if isinstance(event, RecommendationRequest):
                self.requests.append((event, message))
                continue
            assert isinstance(event, (ClickEvent, ReviewEvent))
            if event.user_id not in records:
                records[event.user_id] = ctx.users.record(event.user_id)
            record = records[event.user_id]
            source = source_key(came.kind, came.partition)
            if (record is not None and record.applied(came.kind, came.partition, came.offset)) or \
                    came.offset <= taken.get((event.user_id, source), -1):
                # A replay after a crash: the table has it, but its ranking may have been lost.
                ctx.scheduler.mark(event.user_id, event.event_id, time.time())
                ctx.saw(event.ts)
                continue
            taken[(event.user_id, source)] = came.offset
            fresh.append((event, message, came))
        if fresh:
            await self._apply(fresh, records)
        await self.forward(moves)
        ctx.wake_ranking()

    def misplaced(self, user_id: str, partition: int) -> int | None:
        """The user's partition when an event of the user arrived on another one, else None."""
        home = self.ctx.home_partition(user_id)
        return home if home != partition else None

    async def forward(self, moves: list[tuple[Message, str, int]]) -> None:
        """Re-route events to their users' partitions; the batch is acknowledged (its source
        offsets committed) only once the broker acknowledged every forwarded copy."""
        try:
            await self.rerouter.forward(moves)
        except Exception as exc:
            # As for a changelog write: only a restart from the committed offsets reads it again.
            log.critical("re-routing %d user events failed (%s: %s); stopping the worker", len(moves),
                         type(exc).__name__, exc)
            await self.ctx.app.crash(exc)
            raise

    async def _apply(self, fresh: list[tuple[UserEvent, Message, Arrival]],
                     records: dict[str, UserRecord | None]) -> None:
        ctx = self.ctx
        events = [e for e, _, _ in fresh]
        # Measured against the lists sent before these events were applied (online_quality).
        ranks = self.quality.ranks_before(events)
        item_langs: list[str | None] = []
        results = await self.observe(events, records, item_langs)
        self.quality.count(events, ranks, item_langs, [not isinstance(r, Exception) for r in results])
        touched: dict[str, int] = {}
        texts: list[tuple[ReviewEvent, Message]] = []
        feedback: list[FeedbackJob] = []
        for (event, message, came), result in zip(fresh, results):
            if isinstance(result, Exception):
                await ctx.dlq.send(came.origin_message(message), result)
                continue
            old = records.get(event.user_id)
            text_waits = isinstance(event, ReviewEvent) and bool(event.text.strip()) and \
                not has_event(old.profile if old else None, event.event_id)
            if text_waits:
                texts.append((event, message))  # type: ignore[arg-type]
            records[event.user_id] = (old or UserRecord(result)).after_event(
                result, came.kind, came.partition, came.offset, event.event_id, time.time(),
                text_waits=text_waits, via=came.via)
            touched[event.user_id] = message.partition
            ctx.scheduler.mark(event.user_id, event.event_id, message.timestamp or time.time())
            ctx.saw(event.ts)
            if isinstance(event, ClickEvent) and event.context and event.context.recommendation_id:
                imp = self.impressions.click(event.context.recommendation_id, event.user_id, event.item_id)
                if imp is not None:
                    feedback.append(FeedbackJob(event.user_id, result, imp.shown, event.item_id, event.ts))
        for user_id, partition in touched.items():
            ctx.users.put(user_id, records[user_id], partition)  # type: ignore[arg-type]
        metrics.PROFILE_UPDATES.inc(len(fresh) - sum(isinstance(r, Exception) for r in results))
        self.lane.queue(texts)
        await self.changelog_durable()
        await ctx.runner.feedback(feedback)

    async def changelog_durable(self) -> None:
        """Wait until the broker acknowledged this batch's changelog writes, before the batch
        is acknowledged: its source offsets are then never committed ahead of the users
        table, so a SIGKILL cannot lose an update. (Faust's own pre-commit flush gives up after
        0.1 s when the loop is busy, and a message its background sender holds is in neither
        its buffer nor the client.)

        The buffered messages are first handed to the Kafka client itself, in order: Faust's
        `buffer.flush()` waits for its background sender message by message (a queue
        hand-off, an event and a timeout each), which costs as much as the sends. The users
        table's own writes do not go through that buffer: two senders taking from it could
        hand a user's older record to the client after a newer one (`UsersTable.send_changelog`);
        `acked` sends them, in order, from the table's outbox."""
        buffer: Any = self.ctx.app.producer.buffer   # its pending queue is not in the public type
        while buffer.size:
            await buffer._send_pending(buffer.pending.get_nowait())
        try:
            await self.ctx.users.acked()
        except Exception as exc:
            # The batch must be read again, which only a restart from the committed offsets
            # does: a restarted agent would go on after it, and the group would stall on it.
            log.critical("a users-table changelog write failed (%s: %s); stopping the worker",
                         type(exc).__name__, exc)
            await self.ctx.app.crash(exc)
            raise

    async def observe(self, events: list[UserEvent], records: dict[str, UserRecord | None],
                      item_langs: list[str | None] | None = None) -> list[Any]:
        """Apply the events; while the vector store does not answer, wait with backoff and
        apply them again (from the same profiles), instead of dead-lettering a whole outage.
        The batch is not acknowledged meanwhile, so the group's lag shows the stall.
        `item_langs` gets each event's item language before it (`EngineRunner.observe`)."""
        backoff = Backoff(BACKOFF_START_S, BACKOFF_MAX_S)
        while True:
            profiles: dict[str, Profile | None] = {uid: record.profile for uid, record in records.items() if record}
            if item_langs is not None:
                item_langs.clear()
            try:
                results = await self.ctx.runner.observe(events, profiles, item_langs)
            except Exception as exc:  # the batch's store write failed: no event was kept
                results = [exc] * len(events)
            if not any(isinstance(r, Exception) for r in results) or await self.ctx.runner.store_answers():
                return results
            log.warning("vector store unavailable; retrying %d user events in %.1fs", len(events),
                        backoff.delay)
            await backoff.sleep()
