"""The worker's table recovery seeks the stream partitions before any of their records can be
fetched (streams.worker.recovery); the crash fault test shows the loss this prevents. It does
so without stopping the consumer's flow, which would drop the standby changelog records being
delivered (the rebalance fault test shows that loss). A fetch in flight meanwhile returns no
records of the paused stream partitions (streams.worker.fetch)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import pytest
from aiokafka.consumer.fetcher import Fetcher, FetchResult
from aiokafka.consumer.subscription_state import SubscriptionState
from faust.types import TP

from streams.worker.app import build_app
from streams.worker.recovery import SeekBeforeResumeRecovery
from streams.contracts.settings import Settings

pytestmark = pytest.mark.anyio


class RecordingConsumer:
    """Records the order of the flow, partition and seek calls the recovery makes."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.flow_active = True
        self.paused = True
        self.stream_tp = TP("t.reviews", 0)

    def stop_flow(self) -> None:
        self.flow_active = False
        self.calls.append("stop_flow")

    def resume_flow(self) -> None:
        self.flow_active = True
        self.calls.append("resume_flow")

    def resume_partitions(self, tps: Any) -> None:
        self.paused = False
        self.calls.append(f"resume_partitions(flow={'on' if self.flow_active else 'off'})")

    async def perform_seek(self) -> None:
        self.calls.append(f"seek({'paused' if self.paused else 'fetching'})")

    def assignment(self) -> set[TP]:
        return {self.stream_tp}


async def test_stream_partitions_are_sought_while_paused_and_the_flow_is_never_stopped(tmp_path: Path) -> None:
    """Sought while paused: no fetch returns their records from the old position. The flow
    goes on: stopped, Faust drops the changelog records it is delivering (a standby's first
    records) and counts them as read."""
    app = build_app(Settings(topic_prefix="t.", data_dir=tmp_path), web_enabled=False)
    recovery = app.tables.recovery
    assert isinstance(recovery, SeekBeforeResumeRecovery)
    consumer = RecordingConsumer()
    app.consumer = consumer  # type: ignore[assignment]
    app._fetcher = MagicMock(maybe_start=MagicMock(side_effect=_done))  # type: ignore[attr-defined]
    app.consumer_generation_id = 7
    await recovery.on_recovery_completed(7)
    assert consumer.calls == ["seek(paused)", "resume_partitions(flow=on)", "resume_flow"]
    assert "stop_flow" not in consumer.calls and consumer.flow_active


async def _done() -> None:
    return None


class Records:
    """What aiokafka's `FetchResult` reads: a partition's fetched records and the next offset."""

    def __init__(self, offsets: range) -> None:
        self._it = iter(offsets)
        self.next_fetch_offset = offsets.start

    def __iter__(self) -> Records:
        return self

    def __next__(self) -> int:
        offset = next(self._it)
        self.next_fetch_offset = offset + 1
        return offset


class FetcherThread:
    """The consumer's thread reduced to aiokafka's own `Fetcher.fetched_records` over records
    fetched in the background, as the aiokafka transport calls it."""

    def __init__(self, tps: set[TP]) -> None:
        self.subscriptions = SubscriptionState()
        self.subscriptions.assign_from_user(tps)
        self.fetcher = Fetcher.__new__(Fetcher)   # only the state that fetched_records reads
        self.fetcher._subscriptions = self.subscriptions
        self.fetcher._records = {}
        self.fetcher._fetch_waiters = set()
        self.fetcher._loop = asyncio.get_running_loop()
        self.fetcher._closed = False
        self.fetcher._wait_consume_future = None

    def position(self, tp: TP) -> int:
        return self.subscriptions.subscription.assignment.state_value(tp).position

    def arrive(self, tp: TP, offsets: range) -> None:
        """A background fetch of tp completes (e.g. from its committed offset, after a seek)."""
        assignment = self.subscriptions.subscription.assignment
        assignment.state_value(tp).seek(offsets.start)
        self.fetcher._records[tp] = FetchResult(tp, assignment=assignment, partition_records=Records(offsets),
                                                backoff=0)
        for waiter in list(self.fetcher._fetch_waiters):
            waiter.set_result(None)

    async def getmany(self, active_partitions: Any, timeout: float) -> Any:
        return await self.fetcher.fetched_records(active_partitions, timeout=timeout)


async def test_a_fetch_in_flight_returns_no_records_of_paused_stream_partitions(tmp_path: Path) -> None:
    """The end of a recovery pauses the changelog partitions while a fetch for them waits, and
    the stream partitions are still paused for their seek: the active set is empty, which
    aiokafka takes for every partition. That fetch returned the stream partitions' records and
    moved their positions past them, Faust dropped them (not active) and committed past them
    (the changelog-recovery fault test: a restarted worker answered 8 of 20 requests)."""
    app = build_app(Settings(topic_prefix="t.", data_dir=tmp_path), web_enabled=False)
    consumer = app.consumer
    changelog, stream = TP("t.t-users-changelog", 0), TP("t.requests", 0)
    thread = FetcherThread({changelog, stream})
    consumer._thread = thread  # type: ignore[attr-defined]
    consumer._active_partitions = {changelog}  # type: ignore[attr-defined]   # recovering
    consumer._paused_partitions = {stream}  # type: ignore[attr-defined]
    fetch = asyncio.ensure_future(consumer._getmany(consumer._get_active_partitions(), timeout=1.0))  # type: ignore[attr-defined]
    await asyncio.sleep(0.01)                 # the fetch waits for changelog records
    consumer.pause_partitions({changelog})    # the changelog is read: nothing is active
    thread.arrive(stream, range(5, 9))        # the requests, fetched from the sought offset
    records = await fetch
    assert stream not in records, "a paused partition's records were fetched (Faust drops them)"
    assert thread.position(stream) == 5       # still there for the fetch after the resume
    consumer.resume_partitions({stream})
    records = await consumer._getmany(consumer._get_active_partitions(), timeout=1.0)  # type: ignore[attr-defined]
    assert records[stream] == [5, 6, 7, 8]
