"""The worker's timers: snapshots, the ANN index, consumer lag, gauges, and memory settling."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

from streams.worker import metrics
from streams.worker.catalog_feed import CatalogFeed, Resume, save_resume
from streams.worker.context import WorkerContext

log = logging.getLogger(__name__)

# Python's cyclic GC collects young objects every 700 allocations and, every 100 of those,
# scans every tracked object: with a worker's libraries, catalog and users table that is a
# stall of the event loop each time. What the hot path allocates is freed by reference
# counting, so young collections are made rarer and the long-lived start-up state is left
# out of the scans (`settle_memory`).
GC_YOUNG_THRESHOLD = 50_000
MAINTENANCE_INTERVAL_S = 10.0
STORE_INTERVAL_S = 5.0
LAG_INTERVAL_S = 5.0


class Maintenance:
    def __init__(self, ctx: WorkerContext, feed: CatalogFeed) -> None:
        self.ctx = ctx
        self.feed = feed
        self._lag_monitor: Any = None

    async def settle_memory(self) -> None:
        """Once the catalog of the items at start is read, freeze what exists (libraries, the
        encoder, the catalog) out of the cyclic GC, and collect young objects less often."""
        await self.feed.ready.wait()
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])

    async def gauges(self) -> None:
        metrics.USERS.set(self.ctx.users.count(self.ctx.owned))
        self.ctx.users.index.prune()
        self.ctx.scheduler.forget_old()

    async def maintain_store(self) -> None:
        """Let the vector store advance its index rebuild while no event calls it (it is
        also called after every batch the engine writes)."""
        await self.ctx.runner.maintain_store()

    async def snapshot(self) -> None:
        """Engine state, then the catalog offsets it holds (taken first: at worst older). A
        failed snapshot (the engine flushes the vector store first, which may be away) is
        logged and left to the next one: a timer that raises would crash the worker."""
        path = self.ctx.snapshot_path
        if path is not None:
            resume = Resume(dict(self.feed.applied), self.ctx.event_time)
            try:
                await self.ctx.runner.snapshot(path)
            except Exception as exc:
                log.warning("engine snapshot failed (%s: %s); the next one retries", type(exc).__name__, exc)
                return
            save_resume(path, resume)

    async def sample_lag(self) -> None:
        """Fill `xlrec_consumer_lag`: the group's lag from Kafka's admin API (blocking, so in a
        thread) and the catalog feed's own."""
        from streams.ops.lag import LagMonitor

        settings = self.ctx.settings
        loop = asyncio.get_running_loop()
        try:
            if self._lag_monitor is None:
                self._lag_monitor = await loop.run_in_executor(None, LagMonitor, settings, settings.group_id)
            report = await loop.run_in_executor(None, self._lag_monitor.sample)
            rows: list[Any] = list(report.rows)
        except Exception as exc:  # no broker, or the group not there yet: the feed's lag still counts
            log.debug("consumer lag not sampled: %s", exc)
            rows = []
        metrics.record_consumer_lag(rows + self.feed.lag(), time.time())

    async def on_shutdown(self, sender: Any = None, **kwargs: Any) -> None:
        await self.snapshot()
