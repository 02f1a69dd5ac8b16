"""Impressions and feedback (`streams.worker.feedback`): a click on a recommended item is a
positive, an impression never clicked within the window gives negatives."""

from __future__ import annotations


import orjson
import pytest

from streams.worker.feedback import ImpressionTracker
from streams.worker.wiring import Worker
from tests.streams.fake_engine import FakeEngine
from tests.streams.fake_worker import click, consumed

pytestmark = pytest.mark.anyio


async def test_clicks_on_recommendations_are_feedback(worker: Worker, engine: FakeEngine) -> None:
    await worker.user_events.handle([consumed("t.clicks", click("e1"), "u1", 0)])
    await worker.ranking.rank_batch(worker.ctx.scheduler.due(10), [])
    rec_id = orjson.loads(worker.latest.get("u1"))["recommendation_id"]  # type: ignore[arg-type]
    await worker.user_events.handle([consumed("t.clicks", click("e2", item="item1", context={
        "recommendation_id": rec_id, "position": 1}), "u1", 1)])
    assert engine.feedbacks == [("u1", ("item0", "item1", "item2"), "item1")]


def test_impressions_without_clicks_become_negatives() -> None:
    tracker = ImpressionTracker(window_s=10.0)
    tracker.track("r1", "u1", ["a", "b"], now=100.0)
    tracker.track("r2", "u2", ["c"], now=105.0)
    assert tracker.click("r1", "u1", "zzz") is None and tracker.click("r1", "u2", "a") is None
    assert tracker.click("r2", "u2", "c") is not None
    assert tracker.expired(now=109.0) == []
    assert [i.user_id for i in tracker.expired(now=200.0)] == ["u1"]  # r2 was clicked
    assert tracker.expired(now=300.0) == []
