"""The ranking loop (`streams.worker.ranking_loop`): rankings coalesced per user, named after the
last event of the profile ranked, emitted after events, and requests answered with their id."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from streams.worker.wiring import Worker
from tests.streams.fake_engine import FakeEngine
from tests.streams.fake_worker import NOW, click, consumed, recommendations

pytestmark = pytest.mark.anyio


async def test_rankings_are_coalesced_per_user(worker: Worker, engine: FakeEngine) -> None:
    scheduler = worker.ctx.scheduler
    await worker.user_events.handle([consumed("t.clicks", click(f"e{i}"), "u1", i) for i in range(5)])
    await worker.ranking.rank_batch(scheduler.due(10), [])
    await worker.user_events.handle([consumed("t.clicks", click("e9"), "u1", 9),
                                     consumed("t.clicks", click("f1", user="u2"), "u2", 10)])
    # Busy (two users for one slot): u1 was ranked less than rank_interval_s ago.
    assert [p.user_id for p in scheduler.due(1)] == ["u2"]
    (rec,) = recommendations(worker)
    assert len(engine.ranked) == 1 and engine.ranked[0][1]["n"] == 5  # type: ignore[index]
    assert rec["user_id"] == "u1" and rec["trigger_event_id"] == "e4" and rec["model_version"] == "fake-1"
    assert [i["item_id"] for i in rec["items"]] == ["item0", "item1", "item2"]
    assert 0 <= rec["latency_ms"] < 5_000
    assert orjson.loads(worker.latest.get("u1")) == rec  # type: ignore[arg-type]


async def test_a_ranking_names_the_last_event_of_the_profile_it_ranked(worker: Worker) -> None:
    """A replayed message marks its user again with its own, older event_id (after a crash, or
    on a worker that lost and regained the partition): the ranking still reflects the whole
    profile, and says so, instead of looking stale next to a newer one."""
    events = [consumed("t.clicks", click(f"e{i}"), "u1", i) for i in range(3)]
    await worker.user_events.handle(events)
    await worker.user_events.handle(events[:1])          # a replay of e0: already applied
    (pending,) = worker.ctx.scheduler.due(10)
    assert pending.trigger_event_id == "e0"
    await worker.ranking.rank_batch([pending], [])
    (rec,) = recommendations(worker)
    assert rec["trigger_event_id"] == "e2"


async def test_ranking_loop_emits_after_events(worker: Worker, engine: FakeEngine) -> None:
    task = asyncio.create_task(worker.ranking.run())
    try:
        await worker.user_events.handle([consumed("t.clicks", click("e1"), "u1", 0)])
        for _ in range(50):
            if worker.ctx.topics.recommendations.send.await_count:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.02)
        assert [u for u, _ in engine.ranked] == ["u1"]
    finally:
        task.cancel()


async def test_requests_are_answered_with_their_request_id(worker: Worker, engine: FakeEngine) -> None:
    request = {"type": "request", "request_id": "rq1", "user_id": "u7", "k": 2, "lang": "ko",
               "query": "전략 게임", "ts": NOW}
    await worker.user_events.handle([consumed("t.requests", request, "u7", 0)])
    assert len(worker.ranking.requests) == 1 and len(worker.ctx.scheduler) == 0
    await worker.ranking.rank_batch([], [worker.ranking.requests.popleft()])
    (rec,) = recommendations(worker)
    assert rec["request_id"] == "rq1" and rec["user_id"] == "u7" and len(rec["items"]) == 2
    assert engine.ranked == [("u7", None)]
