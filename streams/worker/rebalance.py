"""Partitions coming and going: which user partitions this worker owns, and what it does
when the group hands it new ones."""

from __future__ import annotations

import logging
import time
from typing import Any

from streams.worker.context import WorkerContext
from streams.worker.review_text_lane import ReviewTextLane
from streams.worker.users_table import RECENT_S
from streams.worker.web import LatestRecommendations

log = logging.getLogger(__name__)

RERANK_AFTER_RECOVERY_S = RECENT_S   # users active this recently are re-ranked after a rebalance


class Rebalance:
    """Faust's rebalance signals, in the order Faust sends them: revoked, assigned, complete."""

    def __init__(self, ctx: WorkerContext, lane: ReviewTextLane, latest: LatestRecommendations) -> None:
        self.ctx = ctx
        self.lane = lane
        self.latest = latest

    async def on_partitions_revoked(self, sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        """Sent before the group hands the partitions to anyone else: their users are no
        longer ranked here, their waiting review texts are not folded in here, and the user
        routes no longer answer for them here (streams.worker.web)."""
        self.ctx.owned -= self.ctx.user_partitions(revoked)
        self.lane.drop({(tp.topic, tp.partition) for tp in revoked})

    async def on_partitions_assigned(self, sender: Any, assigned: set[Any], **kwargs: Any) -> None:
        # A newly assigned partition is owned once its table is recovered (on_rebalance_complete):
        # ranked before, its users would be ranked from what this worker knew when it last held
        # it, and that ranking could land after the fresh one of the previous owner.
        held = self.ctx.user_partitions(assigned)
        self.ctx.owned &= held
        # The latest lists of partitions given to another worker are dropped; those of partitions
        # revoked and assigned here again are kept (nobody else held them meanwhile).
        self.latest.keep_partitions(held)

    async def on_rebalance_complete(self, sender: Any = None, **kwargs: Any) -> None:
        """After a restart or a rebalance, re-rank users whose last events may not have been
        ranked before the previous owner stopped (their rankings lived only in memory). The
        table is recovered now, so the assigned partitions are owned from here on."""
        ctx = self.ctx
        ctx.owned = ctx.user_partitions(ctx.app.consumer.assignment())
        # The users table indexes its writes as they happen; what a RocksDB store held before
        # this process started is indexed once (one read of those partitions' values).
        scanned = await ctx.users.index_local_state(ctx.owned)
        if scanned:
            log.info("indexed %d users-table values kept on disk", scanned)
        horizon = time.time() - RERANK_AFTER_RECOVERY_S
        count = 0
        for user_id in ctx.users.recent_users(horizon, ctx.owned):
            # The ranking names the last event of the record it ranks (RankingLoop.rank_batch).
            ctx.scheduler.mark(user_id, None, time.time())
            count += 1
        if count:
            log.info("re-ranking %d recently active users after rebalance", count)
            ctx.wake_ranking()
        self.lane.read_again()
