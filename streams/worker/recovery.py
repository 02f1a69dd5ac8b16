"""Table recovery that cannot skip input messages after a restart or a rebalance.

faust-streaming 0.15.3 ends a table recovery (`Recovery.on_recovery_completed`) by resuming
the stream partitions and only then seeking them to their committed offsets, while the
fetcher is already running (it was started to read the changelogs). The fetcher then
delivers messages from the old position while the seek runs in the consumer's thread; the
seek resets Faust's read offsets, the next message looks like a jump past missing offsets,
and Faust's gap handling counts those offsets as processed. They are committed and never
read: the crash fault test lost two messages per partition at every restart this way.

Stopping the consumer's flow before that step closes the race: no fetch returns records
until the seek is done, and the upstream method resumes the flow itself right after it.
"""

from __future__ import annotations

from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery


class SeekBeforeResumeRecovery(Recovery):
    """`Recovery` whose last step seeks the stream partitions before any record is fetched."""

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        self.app.consumer.stop_flow()
        await super().on_recovery_completed(generation_id)


class XlrecTableManager(TableManager):
    """Faust's table manager with `SeekBeforeResumeRecovery` (set as `TableManager` in the app)."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = SeekBeforeResumeRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
