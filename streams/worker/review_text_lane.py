"""The review-text lane: review texts are embedded after their events updated the profiles.

On CPU the encoder embeds far fewer texts per second than profiles update, so a review's
event is applied at once and its text waits here. While it waits, the review's offset is kept
in the user's `UserRecord` and removed in the same write that folds the text in: a worker
that restarts, or takes over the partition, finds in its recovered table which texts were
never folded and reads them again from Kafka (`read_again`); a text is folded into a profile
exactly once (offsets no longer waiting are skipped).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from faust.types.tuples import Message

from ranking.engine import Profile
from streams.contracts.schemas import ReviewEvent, parse_event
from streams.worker import metrics
from streams.worker.context import WorkerContext
from streams.worker.dlq import Reason
from streams.worker.reroute import NoOrigin, arrival, text_key, text_position
from streams.worker.user_record import UserRecord
from streams.worker.waiting_texts import read_messages

log = logging.getLogger(__name__)

REVIEW_TEXT_BATCH = 64                  # review texts per encoder call (cache-sized on CPU)
MAX_REVIEW_TEXT_BACKLOG = 20_000        # past it, the oldest waiting texts are never embedded

Review = tuple[ReviewEvent, Message]


def to_read(records: Iterable[UserRecord | None], owned: set[int],
            queued: set[tuple[int, int]]) -> dict[int, set[int]]:
    """partition -> waiting entries (`text_key`) of owned users that are not in the lane's queue."""
    out: dict[int, set[int]] = {}
    for record in records:
        if record is None or not record.waiting_texts:
            continue
        partition = record.partition
        if partition is None or partition not in owned:
            continue
        missing = {o for o in record.waiting_texts if (partition, o) not in queued}
        if missing:
            out.setdefault(partition, set()).update(missing)
    return out


def _waiting(record: UserRecord | None) -> tuple[int, ...]:
    return record.waiting_texts if record else ()


class ReviewTextLane:
    """A bounded queue of waiting review texts and the task that embeds and folds them in."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.texts: deque[Review] = deque()
        self._queued_at: deque[float] = deque()       # monotonic time each text was queued
        self._waiting = asyncio.Event()
        self._revoked: set[tuple[str, int]] = set()   # during the batch in flight
        self.reader: asyncio.Future[None] | None = None
        metrics.REVIEW_TEXT_OLDEST_WAIT.set_function(self.oldest_wait)

    def oldest_wait(self) -> float:
        """Seconds the oldest queued text has waited (0 with none queued)."""
        if not self.texts or not self._queued_at:
            return 0.0
        return max(0.0, time.monotonic() - self._queued_at[0])

    def _take(self) -> Review:
        if self._queued_at:
            self._queued_at.popleft()
        return self.texts.popleft()

    def queue(self, reviews: Sequence[Review]) -> None:
        now = time.monotonic()
        for review in reviews:
            if len(self.texts) >= MAX_REVIEW_TEXT_BACKLOG:
                self._take()
                metrics.REVIEW_TEXTS_SKIPPED.inc()
            self.texts.append(review)
            self._queued_at.append(now)
        metrics.REVIEW_TEXT_BACKLOG.set(len(self.texts))
        if reviews:
            self._waiting.set()

    def key(self, message: Message) -> int:
        """The review's entry in `UserRecord.waiting_texts` (its offset; a re-routed one's differs)."""
        return text_key(message, self.ctx.repartition_topic)

    def origin(self, message: Message) -> Message:
        """The review as the app sent it (a re-routed copy names its origin), for dead letters."""
        try:
            return arrival(message, self.ctx.kinds, self.ctx.repartition_topic).origin_message(message)
        except NoOrigin:
            return message

    def queued(self) -> set[tuple[int, int]]:
        """(partition, waiting-texts entry) of the review texts in the queue."""
        return {(m.partition, self.key(m)) for _, m in self.texts}

    def forget(self, user_id: str) -> None:
        """Drop an erased user's queued texts (one in the batch in flight is skipped when it is
        folded in: the user has no record any more)."""
        kept = [(review, at) for review, at in zip(self.texts, self._queued_at) if review[0].user_id != user_id]
        self.texts = deque(review for review, _ in kept)
        self._queued_at = deque(at for _, at in kept)
        metrics.REVIEW_TEXT_BACKLOG.set(len(kept))

    def drop(self, gone: set[tuple[str, int]]) -> None:
        """Forget the texts of revoked partitions, including those of the batch in flight: a
        late write to their changelog would overwrite what the new owner wrote."""
        self._revoked |= gone
        kept = [(review, at) for review, at in zip(self.texts, self._queued_at)
                if (review[1].topic, review[1].partition) not in gone]
        metrics.REVIEW_TEXTS_SKIPPED.inc(len(self.texts) - len(kept))
        self.texts = deque(review for review, _ in kept)
        self._queued_at = deque(at for _, at in kept)
        metrics.REVIEW_TEXT_BACKLOG.set(len(kept))

    async def run(self) -> None:
        """Embed waiting review texts batch after batch, forever."""
        while True:
            if not self.texts:
                self._waiting.clear()
                await self._waiting.wait()
                continue
            try:
                await self.embed_batch()
            except Exception:  # never let one bad batch stop the lane
                log.exception("review texts could not be folded in")

    async def embed_batch(self) -> None:
        """One encoder batch of waiting texts, folded into items and the users' profiles, whose
        users are then re-ranked with their own words (a refresh, which does not delay the
        ranking of their next event)."""
        ctx = self.ctx
        batch = [self._take() for _ in range(min(REVIEW_TEXT_BATCH, len(self.texts)))]
        metrics.REVIEW_TEXT_BACKLOG.set(len(self.texts))
        self._revoked = set()
        vectors, failed = await self._embed([event for event, _ in batch])
        for event, message in batch:
            if event.event_id in failed:
                await ctx.dlq.send(self.origin(message), failed[event.event_id], Reason.ENCODER_ERROR)
        mine = [(event, message) for event, message in batch
                if (message.topic, message.partition) not in self._revoked]
        metrics.REVIEW_TEXTS_SKIPPED.inc(len(batch) - len(mine))  # the new owner reads them again
        async with ctx.profiles_lock:
            records = {event.user_id: ctx.users.record(event.user_id) for event, _ in mine}
            # Folded in already (a text read again after a restart that had folded it): skip.
            mine = [(e, m) for e, m in mine if self.key(m) in _waiting(records[e.user_id])]
            done = [(e, m) for e, m in mine if e.event_id in vectors]
            profiles = {e.user_id: records[e.user_id].profile for e, _ in done}  # type: ignore[union-attr]
            await ctx.runner.add_review_texts([(e, vectors[e.event_id]) for e, _ in done], profiles)
            self._write_back(mine, records, profiles)
        metrics.REVIEW_TEXTS_EMBEDDED.inc(len(done))
        ctx.wake_ranking()

    def _write_back(self, mine: list[Review], records: dict[str, UserRecord | None],
                    profiles: dict[str, Profile | None]) -> None:
        """One write per user: the new profile, without the offsets folded in or dead-lettered."""
        finished: dict[str, set[int]] = {}
        partitions: dict[str, int] = {}
        for event, message in mine:
            finished.setdefault(event.user_id, set()).add(self.key(message))
            partitions[event.user_id] = message.partition
        for user_id, offsets in finished.items():
            record = records[user_id]
            assert record is not None   # it has waiting offsets
            left = [o for o in record.waiting_texts if o not in offsets]
            profile = profiles.get(user_id, record.profile)
            self.ctx.users.put(user_id, record.with_profile(profile, left), partitions[user_id])  # type: ignore[arg-type]
            if user_id in profiles:
                self.ctx.scheduler.mark(user_id, record.last_event_id, time.time(), refresh=True)

    async def _embed(self, reviews: list[ReviewEvent]) -> tuple[dict[str, Any], dict[str, Exception]]:
        """One encoder batch; if it fails, find the culprits one by one so the rest go on."""
        try:
            return await self.ctx.runner.embed_reviews(reviews), {}
        except Exception:
            log.exception("review batch failed to embed; retrying one by one")
        vectors: dict[str, Any] = {}
        failed: dict[str, Exception] = {}
        for review in reviews:
            try:
                vectors.update(await self.ctx.runner.embed_reviews([review]))
            except Exception as exc:
                failed[review.event_id] = exc
        return vectors, failed

    def read_again(self) -> None:
        """After a rebalance: queue again, in the background, the texts that this worker's
        users still wait for (left by a crashed worker or by the partition's previous owner)."""
        owned = self.ctx.owned
        wanted = to_read(self.ctx.users.waiting_records(owned), owned, self.queued())
        if wanted:
            self.reader = asyncio.ensure_future(self._read(wanted))

    async def _read(self, wanted: dict[int, set[int]]) -> None:
        """Read the waiting entries: offsets of the reviews topic, and re-routed reviews' copies
        in the repartition topic (streams.worker.reroute.text_position)."""
        ctx = self.ctx
        loop = asyncio.get_running_loop()
        where: dict[str, dict[int, set[int]]] = {}
        for partition, entries in wanted.items():
            for entry in entries:
                rerouted, offset = text_position(entry)
                topic = ctx.repartition_topic if rerouted else ctx.settings.topic("reviews")
                where.setdefault(topic, {}).setdefault(partition, set()).add(offset)
        messages: list[Message] = []
        try:
            for topic, offsets in where.items():
                messages += await loop.run_in_executor(None, read_messages, ctx.settings, topic, offsets)
        except Exception as exc:  # the broker away: the next rebalance or restart reads them
            log.warning("waiting review texts not read again (%s: %s)", type(exc).__name__, exc)
            return
        queued = self.queued()
        texts: list[Review] = []
        for message in messages:
            if (message.partition, self.key(message)) in queued or message.partition not in ctx.owned:
                continue
            try:
                texts.append((parse_event("reviews", message.value), message))  # type: ignore[arg-type]
            except Exception as exc:  # it was valid when applied; never let one stop the rest
                log.warning("waiting review text at %s[%d]@%d unreadable: %s", message.topic,
                            message.partition, message.offset, exc)
        log.info("read %d waiting review texts again", len(texts))
        metrics.REVIEW_TEXTS_READ_AGAIN.inc(len(texts))
        self.queue(texts)

