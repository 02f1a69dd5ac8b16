"""The worker's table recovery seeks the stream partitions before any of their records can be
fetched (streams.worker.recovery); the crash fault test shows the loss this prevents. It does
so without stopping the consumer's flow, which would drop the standby changelog records being
delivered (the rebalance fault test shows that loss)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import pytest
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
