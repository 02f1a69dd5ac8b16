"""The ranking loop: rank users whose profiles changed (coalesced by `RankScheduler`) and answer
requests, then emit each ranking to the recommendations topic, keyed by user_id."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from faust.types.tuples import Message

from ranking.engine import RankedItem
from streams.contracts.schemas import Recommendation, RecommendationRequest, RecommendedItem
from streams.worker import metrics
from streams.worker.backoff import BACKOFF_START_S
from streams.worker.context import WorkerContext
from streams.worker.dlq import Reason
from streams.worker.engine_runner import RankJob
from streams.worker.feedback import ImpressionTracker
from streams.worker.online_quality import OnlineQuality
from streams.worker.rank_scheduler import PendingRank
from streams.worker.web import LatestRecommendations

log = logging.getLogger(__name__)

RANK_BATCH = 32
Request = tuple[RecommendationRequest, Message]


class RankingLoop:
    """Owns the queue of requests; the users agent fills it and marks users in the scheduler."""

    def __init__(self, ctx: WorkerContext, impressions: ImpressionTracker,
                 latest: LatestRecommendations, quality: OnlineQuality) -> None:
        self.ctx = ctx
        self.impressions = impressions
        self.latest = latest
        self.quality = quality
        self.requests: deque[Request] = deque()
        self._on_request: dict[str, asyncio.Future[bytes | None]] = {}

    async def run(self) -> None:
        """Rank due users and answer requests, forever; sleeps until woken or someone is due."""
        ctx = self.ctx
        while True:
            ctx.ranking_wanted.clear()
            requests = [self.requests.popleft() for _ in range(min(RANK_BATCH, len(self.requests)))]
            due = ctx.scheduler.due(RANK_BATCH - len(requests))
            metrics.RANKINGS_PENDING.set(ctx.scheduler.waiting_after_events())
            if not requests and not due:
                wait = ctx.scheduler.seconds_until_next()
                try:
                    await asyncio.wait_for(ctx.ranking_wanted.wait(), timeout=1.0 if wait is None else wait)
                except TimeoutError:
                    pass
                continue
            try:
                await self.rank_batch(due, requests)
            except Exception:  # never let one bad batch stop ranking for everyone
                log.exception("ranking batch failed")
                metrics.DEAD_LETTERS.labels(reason=Reason.RANKING_ERROR).inc(len(due) + len(requests))

    async def rank_batch(self, due: list[PendingRank], requests: list[Request]) -> None:
        """Compute and emit one batch of rankings (coalesced users first, then requests)."""
        ctx = self.ctx
        now = ctx.now()
        erasures = ctx.erasures
        records = [ctx.users.record(p.user_id) for p in due]
        jobs = [RankJob(p.user_id, r.profile if r else None, ctx.settings.top_k, now)
                for p, r in zip(due, records)]
        # The trigger is the last event of the profile ranked, read with it: the one marked may
        # be older (a replay after a crash, or a pending entry that outlived losing and
        # regaining the partition), and a ranking labelled with it would look stale.
        triggers = [(r.last_event_id if r else None) or p.trigger_event_id for p, r in zip(due, records)]
        answered: list[Request] = []
        for asked, message_asked in requests:
            try:
                query = await ctx.runner.embed_query(asked.query) if asked.query else None
            except Exception as exc:
                await ctx.dlq.send(message_asked, exc, Reason.ENCODER_ERROR)
                continue
            jobs.append(RankJob(asked.user_id, ctx.profile_of(asked.user_id), asked.k, now,
                                query_vector=query, lang=asked.lang))
            answered.append((asked, message_asked))
        results = await ctx.runner.recommend(jobs)
        model_version = ctx.runner.engine.model_version
        for i, (job, result) in enumerate(zip(jobs, results)):
            pending = due[i] if i < len(due) else None
            request: RecommendationRequest | None = None
            message: Message | None = None
            if pending is None:
                request, message = answered[i - len(due)]
            if isinstance(result, Exception):
                await self._failed(job, result, pending, message)
                continue
            if pending is not None and not ctx.owns(job.user_id):
                continue  # revoked meanwhile: the new owner ranks the user (rebalance)
            if ctx.erased_since(job.user_id, erasures):
                continue  # erased meanwhile (streams.worker.privacy): nothing of the user is kept
            if pending is not None:
                produced = pending.oldest_produced_ts
            else:
                assert message is not None
                produced = message.timestamp or time.time()
            await self.emit(job.user_id, result, model_version, produced,
                            trigger_event_id=triggers[i] if pending else None,
                            request_id=request.request_id if request else None,
                            refresh=pending.refresh if pending else False)

    async def rank_stored(self, user_id: str) -> bytes | None:
        """The latest recommendation of a user held here that has none in memory (the worker
        restarted since, or the list was evicted): the user's profile in the users table ranked
        now, sent like any ranking (streams.worker.web) and returned; None when the table does
        not hold the user or ranking is off. Concurrent asks for one user share one ranking."""
        running = self._on_request.get(user_id)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._on_request[user_id] = future
        try:
            body = await self._rank_stored(user_id)
            future.set_result(body)
            return body
        except Exception as exc:
            future.set_exception(exc)
            future.exception()   # retrieved: nobody else need wait for it
            raise
        finally:
            del self._on_request[user_id]
            if not future.done():
                future.cancel()

    async def _rank_stored(self, user_id: str) -> bytes | None:
        ctx = self.ctx
        record = ctx.users.record(user_id)
        if record is None or not ctx.scheduler.enabled:
            return None
        erasures = ctx.erasures
        [result] = await ctx.runner.recommend([RankJob(user_id, record.profile, ctx.settings.top_k, ctx.now())])
        if isinstance(result, Exception):
            raise result
        held = self.latest.get(user_id)
        if held is not None:              # the ranking loop sent one meanwhile: that one is the latest
            return held
        if ctx.home_partition(user_id) not in ctx.owned or ctx.erased_since(user_id, erasures):
            return None                   # moved away or erased meanwhile: nothing is sent from here
        await self.emit(user_id, result, ctx.runner.engine.model_version, time.time(),
                        trigger_event_id=record.last_event_id, request_id=None, on_read=True)
        return self.latest.get(user_id)

    async def _failed(self, job: RankJob, error: Exception, pending: PendingRank | None,
                      message: Message | None) -> None:
        """A request's failure is dead-lettered; a user's is retried while the store is away."""
        if message is not None:
            await self.ctx.dlq.send(message, error, Reason.RANKING_ERROR)
        elif pending is not None and not await self.ctx.runner.store_answers():
            # The store is away: rank this user again later rather than never.
            self.ctx.scheduler.mark(pending.user_id, pending.trigger_event_id, pending.oldest_produced_ts)
            await asyncio.sleep(BACKOFF_START_S)
        else:
            log.error("ranking user %s failed: %r", job.user_id, error)
            metrics.DEAD_LETTERS.labels(reason=Reason.RANKING_ERROR).inc()

    async def emit(self, user_id: str, items: list[RankedItem], model_version: str,
                   produced_ts: float, *, trigger_event_id: str | None,
                   request_id: str | None, refresh: bool = False, on_read: bool = False) -> Recommendation:
        """Send one Recommendation keyed by user_id, remember it for HTTP and feedback (`on_read`:
        ranked because HTTP asked for it, `rank_stored`: no event latency to observe)."""
        sent_at = time.time()
        rec = Recommendation(
            user_id=user_id, model_version=model_version, trigger_event_id=trigger_event_id,
            request_id=request_id, created_ts=sent_at,
            latency_ms=max(0.0, (sent_at - produced_ts) * 1000.0),
            items=[RecommendedItem(item_id=r.item_id, score=float(r.score), reason=r.reason,
                                   title=r.title, lang=r.lang) for r in items])
        body = rec.to_json()
        await self.ctx.topics.recommendations.send(key=user_id.encode(), value=body)
        self.latest.put(user_id, body, self.ctx.home_partition(user_id))
        shown = [r.item_id for r in items]
        self.impressions.track(rec.recommendation_id, user_id, shown, time.monotonic())
        self.quality.sent(user_id, body, shown)
        metrics.RECOMMENDATIONS.inc()
        if on_read:
            metrics.RECOMMENDATIONS_ON_READ.inc()
            return rec
        if refresh:
            metrics.RECOMMENDATIONS_REFRESHED.inc()
        else:
            self.ctx.scheduler.ranked(user_id)
        metrics.EVENT_TO_RECOMMENDATION_SECONDS.observe(rec.latency_ms / 1000.0)  # type: ignore[operator]
        return rec
