"""Table recovery that cannot skip input messages, nor changelog records, after a restart or a
rebalance.

faust-streaming 0.15.3 ends a table recovery (`Recovery.on_recovery_completed`) by resuming
the stream partitions and only then seeking them to their committed offsets, while the
fetcher is already running (it was started to read the changelogs). The fetcher then
delivers messages from the old position while the seek runs in the consumer's thread; the
seek resets Faust's read offsets, the next message looks like a jump past missing offsets,
and Faust's gap handling counts those offsets as processed. They are committed and never
read: the crash fault test lost two messages per partition at every restart this way.

Here the stream partitions are sought while they are still paused, and resumed after: no fetch
can return their records from the old position (nor drain them while they are paused: a fetch
waiting when the active set emptied took it for "all", see `streams.worker.fetch`). The
consumer's flow is not stopped for it (as a first fix did): by then the standby changelog
partitions are being read, and a stopped flow makes Faust drop the records it is delivering
(`getmany` breaks off, the drain loop gives up on a message once `suspend_flow` is set) while
their offsets count as read. A standby lost the first records of its partitions that way, later
records moved its persisted offset past them, and the worker that took the partition over from
that standby restarted those users without their first events (the rebalance fault test with
the RocksDB store: 39 events lost, every key last written before the standby's first highwater
missing).
"""

from __future__ import annotations

import asyncio
from typing import cast

from faust.app.base import App as _App
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery


class SeekBeforeResumeRecovery(Recovery):
    """`Recovery` whose last step seeks the stream partitions before they are resumed."""

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        """Faust's `Recovery.on_recovery_completed` with the seek moved before the resume."""
        consumer = self.app.consumer
        self.log.info("Restore complete!")
        await self.app.on_rebalance_complete.send()
        self._set_recovery_ended()
        callback_coros = [
            asyncio.ensure_future(table.on_recovery_completed(self.actives_for_table[table],
                                                              self.standbys_for_table[table]))
            for table in self.tables.values()
        ]
        if callback_coros:
            await asyncio.wait(callback_coros)
        assignment = consumer.assignment()
        if self.app.consumer_generation_id != generation_id:
            self.log.warning(f"Recovery rebalancing again app id {self.app.consumer_generation_id} "
                             f"param {generation_id}")
            return
        if assignment:
            self.log.info("Seek stream partitions to committed offsets.")
            await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
        consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
        self.completed.set()
        self.log.dev("Resume stream partitions")
        self.app.flow_control.resume()
        consumer.resume_flow()
        # finally make sure the fetcher is running.
        await cast(_App, self.app)._fetcher.maybe_start()
        self.tables.on_actives_ready()
        if not self.app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        self.app.on_rebalance_end()
        self.log.info("Worker ready")


class XlrecTableManager(TableManager):
    """Faust's table manager with `SeekBeforeResumeRecovery` (set as `TableManager` in the app)."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = SeekBeforeResumeRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
