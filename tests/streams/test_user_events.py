"""The users agent (`streams.worker.user_events`) on Faust's `test_context()`: clicks and reviews
update the users table in order, replays change nothing, bad events are dead-lettered, and under
a backlog the ranker learns from a sample."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
from faust.serializers import codecs

from streams.worker import metrics
from streams.worker.dlq import Reason, parse_headers
from streams.worker.engine_runner import LEARN_PER_BATCH
from streams.worker.user_record import RECORD_VERSION, UserRecord
from streams.worker.users_table import RECORD_CODEC
from streams.worker.wiring import Worker
from tests.streams.fake_engine import FakeEngine
from tests.streams.fake_worker import click, consumed, put, review, sent

pytestmark = pytest.mark.anyio


@pytest.fixture
async def users_agent(worker: Worker) -> AsyncIterator[Any]:
    async with worker.users_agent.test_context() as agent:
        yield agent


def record(worker: Worker, user_id: str) -> UserRecord:
    value = worker.ctx.users[user_id]
    assert isinstance(value, UserRecord)
    return value


async def test_click_updates_the_users_table_with_offsets(worker: Worker, engine: FakeEngine,
                                                          users_agent: Any) -> None:
    await put(users_agent, "t.clicks", click("e1"), "u1", partition=2, offset=7)
    await asyncio.sleep(0.1)
    stored = record(worker, "u1")
    assert stored.profile["events"] == ["e1"]
    assert stored.offsets == {"clicks:2": 7} and stored.last_event_id == "e1"
    partition, key, value = worker.ctx.users.send_changelog.call_args.args  # type: ignore[attr-defined]
    assert (partition, key) == (2, "u1") and value == stored  # changelog on the source partition
    # The typed, versioned value on the changelog, nothing pickled: the bytes the table's codec
    # writes start with the record version and read back as the same record.
    raw = codecs.dumps(RECORD_CODEC, value)
    assert raw == stored.to_bytes() and UserRecord.from_bytes(raw) == stored
    assert raw[0] == RECORD_VERSION and b"pickle" not in raw and not raw.startswith(b"\x80")
    as_json = stored.to_json()
    assert set(as_json) == {"v", "p", "o", "e", "at"} and as_json["v"] == RECORD_VERSION
    assert as_json["p"] == stored.profile and as_json["o"] == {"clicks:2": 7} and as_json["e"] == "e1"
    assert len(worker.ctx.scheduler) == 1


async def test_events_are_counted_per_topic_once_per_batch(worker: Worker, users_agent: Any) -> None:
    def processed(kind: str) -> float:
        return float(metrics.EVENTS_PROCESSED.labels(topic=kind)._value.get())

    before = {kind: processed(kind) for kind in ("clicks", "reviews")}
    await put(users_agent, "t.clicks", click("c1"), "u1", offset=1)
    await put(users_agent, "t.clicks", b"not json", b"u2", offset=2)  # dead-lettered, still processed
    await put(users_agent, "t.reviews", review("r1"), "u1", offset=3)
    await asyncio.sleep(0.1)
    assert processed("clicks") - before["clicks"] == 2 and processed("reviews") - before["reviews"] == 1


async def test_redelivered_offsets_and_duplicate_event_ids_change_nothing(
        worker: Worker, engine: FakeEngine, users_agent: Any) -> None:
    await put(users_agent, "t.clicks", click("e1"), "u1", offset=5)
    await put(users_agent, "t.clicks", click("e2"), "u1", offset=6)
    await asyncio.sleep(0.1)
    before = record(worker, "u1")
    await put(users_agent, "t.clicks", click("e1"), "u1", offset=5)   # replay after a crash
    await put(users_agent, "t.clicks", click("e2"), "u1", offset=9)   # an app sent e2 twice
    await asyncio.sleep(0.1)
    assert engine.observed == ["e1", "e2"]
    assert record(worker, "u1").profile == before.profile
    assert record(worker, "u1").offsets == {"clicks:0": 9}


async def test_bad_user_events_are_dead_lettered_and_the_rest_applied(worker: Worker,
                                                                     engine: FakeEngine) -> None:
    engine.fail_on = {"boom"}
    await worker.user_events.handle([
        consumed("t.clicks", click("e1", user="u1"), "u9", 0),                    # wrong key
        consumed("t.clicks", click("e2", user="u1"), None, 1),                    # no key
        consumed("t.clicks", {**click("e3"), "ts": "yesterday"}, "u1", 2),        # schema
        consumed("t.clicks", click("boom"), "u1", 3),                             # engine raises
        consumed("t.clicks", click("e5"), "u1", 4)])
    reasons = [parse_headers(k["headers"])["reason"] for k in sent(worker.ctx.topics.dlq.send)]
    assert reasons == [Reason.KEY_MISMATCH, Reason.KEY_MISMATCH, Reason.SCHEMA, Reason.PROCESSING_ERROR]
    assert record(worker, "u1").profile["events"] == ["e5"]
    assert worker.ctx.dlq.sent == 4


async def test_under_a_backlog_the_ranker_learns_from_a_sample_and_profiles_from_all(
        worker: Worker, engine: FakeEngine) -> None:
    small = [consumed("t.clicks", click(f"s{i}", user=f"u{i}"), f"u{i}", i) for i in range(LEARN_PER_BATCH)]
    await worker.user_events.handle(small)
    assert engine.learned == engine.observed == [f"s{i}" for i in range(LEARN_PER_BATCH)]
    engine.learned.clear()
    backlog = [consumed("t.clicks", click(f"b{i}", user=f"v{i}"), f"v{i}", 100 + i) for i in range(100)]
    await worker.user_events.handle(backlog)
    assert engine.observed[LEARN_PER_BATCH:] == [f"b{i}" for i in range(100)]
    stride = math.ceil(100 / LEARN_PER_BATCH)
    assert engine.learned == [f"b{i}" for i in range(0, 100, stride)]   # every n-th event
    assert LEARN_PER_BATCH // 2 < len(engine.learned) <= LEARN_PER_BATCH
    assert all(record(worker, f"v{i}").profile["n"] == 1 for i in range(100))


async def test_events_on_items_no_item_event_named_are_applied_and_counted(worker: Worker,
                                                                           engine: FakeEngine) -> None:
    """Issue 16, point 3: the profile takes the event; the item waits for its item event
    before it is recommended (the engine's side is tests/ranking/test_engine.py)."""
    before = metrics.EVENTS_UNKNOWN_ITEM._value.get()
    await worker.user_events.handle([
        consumed("t.clicks", click("g1", item="ghost"), "u1", 0),
        consumed("t.clicks", click("k1", item=next(iter(engine.catalog))), "u1", 1),
        consumed("t.reviews", review("g2", item="ghost"), "u1", 2)])
    assert record(worker, "u1").profile["events"] == ["g1", "k1", "g2"]
    assert metrics.EVENTS_UNKNOWN_ITEM._value.get() - before == 2
