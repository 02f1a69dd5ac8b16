"""Regression: Faust drains its producer buffer before committing source offsets, but
`ProducerBuffer.flush` gives up after 0.1 s when the event loop is busy; offsets were then
committed ahead of the users-table changelog writes, and a SIGKILL lost those updates
(tests/faults/test_crash.py: 11 to 374 of 1,200 events lost). The agent now waits until the
buffer is empty before its batch is acknowledged."""

from __future__ import annotations

import asyncio

import pytest

from streams.agents import Pipeline

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class SlowBuffer:
    """Like Faust's ProducerBuffer: writes wait in `pending` and reach the Kafka client only
    when sent; `flush` under load gives up before the buffer is empty."""

    def __init__(self, size: int) -> None:
        self.pending: asyncio.Queue[int] = asyncio.Queue()
        for message in range(size):
            self.pending.put_nowait(message)
        self.client: list[int] = []

    @property
    def size(self) -> int:
        return self.pending.qsize()

    async def _send_pending(self, message: int) -> None:
        await asyncio.sleep(0)
        self.client.append(message)

    async def flush(self) -> None:
        await asyncio.sleep(0)  # gave up after 0.1 s: nothing handed over


class App:
    def __init__(self, buffer: SlowBuffer) -> None:
        self.producer = type("Producer", (), {"buffer": buffer})()


async def test_the_batch_waits_until_every_changelog_write_left_the_buffer() -> None:
    buffer = SlowBuffer(size=5)
    pipe = Pipeline.__new__(Pipeline)  # only the hand-over is exercised
    pipe.app = App(buffer)  # type: ignore[assignment]
    await pipe.changelog_handed_over()
    assert buffer.size == 0 and buffer.client == [0, 1, 2, 3, 4]  # all of them, in order
