"""One worker: its parts, and the agents, tasks, timers, signals and pages they register.

A click travels: `xlrec.clicks` -> the users agent (`UserEvents.process`: decode, skip replays,
`EngineRunner.observe` on the engine thread, one `UserRecord` write per user, changelog
acknowledged) -> the user is marked in the `RankScheduler` -> `RankingLoop.run` ranks it and
emits a `Recommendation` to `xlrec.recommendations`. Invalid messages go to `xlrec.dlq`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import faust

from streams.contracts.settings import Settings
from streams.worker import feedback, web
from streams.worker.app import declare_topics
from streams.worker.catalog_feed import CatalogFeed, Resume
from streams.worker.context import WorkerContext
from streams.worker.dlq import DeadLetterQueue
from streams.worker.engine_runner import EngineRunner
from streams.worker.feedback import ImpressionTracker
from streams.worker.item_events import ItemEvents
from streams.worker.maintenance import LAG_INTERVAL_S, MAINTENANCE_INTERVAL_S, STORE_INTERVAL_S, Maintenance
from streams.worker.online_quality import OnlineQuality
from streams.worker.owners import Owners
from streams.worker.privacy import Erasure
from streams.worker.rank_scheduler import RankScheduler
from streams.worker.ranking_loop import RankingLoop
from streams.worker.rebalance import Rebalance
from streams.worker.review_text_lane import ReviewTextLane
from streams.worker.user_events import UserEvents
from streams.worker.users_table import users_table


class Worker:
    """Builds the parts of one worker on a Faust app and registers them."""

    def __init__(self, app: faust.App, settings: Settings, runner: EngineRunner, *,
                 snapshot_path: Path | None = None, resume: Resume | None = None) -> None:
        topics = declare_topics(app, settings)
        self.ctx = ctx = WorkerContext(
            app, settings, runner, topics, DeadLetterQueue(topics.dlq), users_table(app, settings),
            RankScheduler(settings.rank_interval_s, enabled=settings.ranking_enabled),
            snapshot_path, event_time=resume.event_time if resume else 0.0)
        self.items = ItemEvents(ctx)
        self.feed = CatalogFeed(settings, runner, resume.items if resume else {}, self.items.applied)
        self.impressions = ImpressionTracker(settings.feedback_window_s)
        self.latest = web.LatestRecommendations()
        self.lane = ReviewTextLane(ctx)
        self.quality = OnlineQuality(self.latest)
        self.ranking = RankingLoop(ctx, self.impressions, self.latest, self.quality)
        self.erasure = Erasure(ctx, self.lane, self.impressions, self.ranking.requests, self.latest,
                               self.quality)
        self.user_events = UserEvents(ctx, self.feed, self.lane, self.impressions, self.ranking.requests,
                                      self.erasure, self.quality)
        self.rebalance = Rebalance(ctx, self.lane, self.latest)
        self.maintenance = Maintenance(ctx, self.feed)
        self._register(app, settings)

    def _register(self, app: faust.App, settings: Settings) -> None:
        topics = self.ctx.topics
        self.items_agent = app.agent(topics.items, name="xlrec-items")(self.items.process)
        # The user-event topics and the repartition topic that events on the wrong partition are
        # forwarded through (streams.worker.reroute): one agent, co-partitioned with the table.
        user_topics = app.topic(*(settings.topic(k) for k in ("clicks", "reviews", "requests")),
                                self.ctx.repartition_topic,
                                key_type=bytes, value_type=bytes, key_serializer="raw",
                                value_serializer="raw")
        self.users_agent = app.agent(user_topics, name="xlrec-users")(self.user_events.process)
        app.task(self.ranking.run)
        app.task(self.lane.run)
        app.task(self.feed.run)
        app.task(self.maintenance.settle_memory)
        app.timer(LAG_INTERVAL_S)(self.maintenance.sample_lag)
        app.timer(MAINTENANCE_INTERVAL_S)(self.maintenance.gauges)
        app.timer(STORE_INTERVAL_S)(self.maintenance.maintain_store)
        app.timer(settings.snapshot_interval_s)(self.maintenance.snapshot)
        app.timer(max(1.0, settings.feedback_window_s / 10))(self.expire_impressions)
        _connect(app.on_partitions_revoked, self.rebalance.on_partitions_revoked)
        _connect(app.on_partitions_assigned, self.rebalance.on_partitions_assigned)
        _connect(app.on_rebalance_complete, self.rebalance.on_rebalance_complete)
        _connect(app.on_before_shutdown, self.maintenance.on_shutdown)
        web.register(app, self.latest.get, self.ctx.runner.searchable_item, profile=self.erasure.profile,
                     owners=Owners(self.ctx), rank=self.ranking.rank_stored)

    async def expire_impressions(self) -> None:
        await feedback.expire(self.ctx, self.impressions)


def _connect(signal: Any, handler: Callable[..., Awaitable[None]]) -> None:
    """Connect a handler to a Faust signal (mode's signal type names no argument but the sender)."""
    signal.connect(handler)
