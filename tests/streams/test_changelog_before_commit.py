"""Regression: Faust drains its producer buffer before committing source offsets, but
`ProducerBuffer.flush` gives up after 0.1 s when the event loop is busy; offsets were then
committed ahead of the users-table changelog writes, and a SIGKILL lost those updates
(tests/faults/test_crash.py: 11 to 374 of 1,200 events lost). The agent now hands every
buffered write to the Kafka client and waits for the broker's acknowledgement of each before
its batch is acknowledged."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from streams.worker.user_events import UserEvents
from streams.worker.users_table import UsersTable

pytestmark = pytest.mark.anyio


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
        self.crashed: list[BaseException] = []

    async def crash(self, reason: BaseException) -> None:
        self.crashed.append(reason)


def users_table() -> UsersTable:
    """Only the acknowledgement bookkeeping of a users table (no app behind it)."""
    table = UsersTable.__new__(UsersTable)
    table._unacked = []
    return table


def user_events(app: App) -> UserEvents:
    """Only the hand-over is exercised: the users agent's part with an app and a users table."""
    events = UserEvents.__new__(UserEvents)
    events.ctx = SimpleNamespace(app=app, users=users_table())  # type: ignore[assignment]
    return events


async def test_the_batch_waits_until_every_changelog_write_left_the_buffer() -> None:
    buffer = SlowBuffer(size=5)
    events = user_events(App(buffer))
    await events.changelog_durable()
    assert buffer.size == 0 and buffer.client == [0, 1, 2, 3, 4]  # all of them, in order


async def test_the_batch_waits_for_the_brokers_acknowledgement_of_every_write() -> None:
    events = user_events(App(SlowBuffer(size=0)))
    loop = asyncio.get_running_loop()
    writes = [loop.create_future() for _ in range(3)]
    events.ctx.users._unacked.extend(writes)
    durable = asyncio.ensure_future(events.changelog_durable())
    for write in writes:
        await asyncio.sleep(0.01)
        assert not durable.done()  # one write still unacknowledged
        write.set_result(None)
    await asyncio.wait_for(durable, 1.0)
    assert events.ctx.users._unacked == []


async def test_a_failed_write_stops_the_worker() -> None:
    """Its batch is replayed from the committed offsets after the restart."""
    app = App(SlowBuffer(size=0))
    events = user_events(app)
    write = asyncio.get_running_loop().create_future()
    write.set_exception(RuntimeError("broker refused the write"))
    events.ctx.users._unacked.append(write)
    with pytest.raises(RuntimeError, match="refused"):
        await events.changelog_durable()
    assert [str(exc) for exc in app.crashed] == ["broker refused the write"]
