"""Regression: after a rebalance the old owner's ranking loop still sent rankings of users
whose partition had moved, and one could land after the new owner's fresher ranking, leaving
an app with a recommendation older than the user's last event (tests/faults/test_rebalance.py
found 34 of 589 users so; checking the consumer's assignment still let 55 through, since it
changes only when the new one arrives). A worker now stops sending coalesced rankings of a
partition as soon as Faust signals its revocation, before anyone else can own it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock, MagicMock, patch

import orjson
import pytest
from faust.types import TP
from faust.types.tuples import Message

from ranking.engine import Recommended
from streams.worker.agents import Pipeline
from streams.worker.app import build_app
from streams.worker.engine_runner import EngineRunner
from streams.contracts.settings import Settings

pytestmark = pytest.mark.anyio


class Engine:
    model_version = "fake"
    encoder = None

    def observe(self, profile: Any, event: Any, *, review_vector: Any = None,
                text_later: bool = False, learn: bool = True) -> dict[str, Any]:
        return {"events": [event.event_id]}

    def flush_store(self) -> None:
        pass

    def recommend(self, user_id: str, profile: Any, k: int, **kwargs: Any) -> list[Recommended]:
        return [Recommended("a", 1.0, "new", "A", "en")]


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    settings = Settings(topic_prefix="t.", data_dir=tmp_path, rank_interval_s=0.0)
    app = build_app(settings, web_enabled=False)
    runner = EngineRunner(Engine())  # type: ignore[arg-type]
    pipe = Pipeline(app, settings, runner)
    pipe.feed.ready.set()
    app.finalize()
    with patch.object(pipe.topics.recommendations, "send", new=AsyncMock()), \
            patch.object(pipe.users, "send_changelog", new=MagicMock()):
        yield pipe
    runner.close()


def click(user: str, partition: int) -> Any:
    value = orjson.dumps({"type": "click", "event_id": f"{user}-1", "user_id": user, "item_id": "i",
                          "ts": time.time()})
    event = MagicMock()
    event.message = Message(topic="t.clicks", partition=partition, offset=0, timestamp=time.time(),
                            timestamp_type=0, headers=[], key=user.encode(), value=value, checksum=b"")
    return event


def user_tps(*partitions: int) -> set[TP]:
    return {TP(t, p) for t in ("t.clicks", "t.reviews") for p in partitions}


async def recovered(pipeline: Pipeline, assignment: set[TP]) -> None:
    """Faust's end of a rebalance: the tables of `assignment` are recovered."""
    with patch.object(pipeline.app.consumer, "assignment", return_value=assignment):
        await pipeline.on_rebalance_complete()


def sent_to(pipeline: Pipeline) -> list[str]:
    return [orjson.loads(call.kwargs["value"])["user_id"]
            for call in pipeline.topics.recommendations.send.await_args_list]  # type: ignore[attr-defined]


async def test_rankings_of_revoked_partitions_are_not_sent(pipeline: Pipeline) -> None:
    await pipeline.on_partitions_assigned(None, user_tps(1, 2))
    await recovered(pipeline, user_tps(1, 2))
    pipeline.scheduler.due(10)    # the re-ranking after recovery: nobody is known yet
    await pipeline.handle_user_events([click("kept", 1), click("moved", 2)])
    await pipeline.on_partitions_revoked(None, {TP("t.clicks", 2), TP("t.reviews", 2)})  # to another worker
    await pipeline.rank(pipeline.scheduler.due(10), [])
    assert sent_to(pipeline) == ["kept"]


async def test_a_newly_assigned_partition_is_ranked_once_its_table_is_recovered(pipeline: Pipeline) -> None:
    """What this worker knew of a partition it held before is stale until the recovery
    brought its table up to date: a ranking from it could land after the previous owner's."""
    await pipeline.on_partitions_assigned(None, user_tps(1))
    await recovered(pipeline, user_tps(1))
    await pipeline.handle_user_events([click("old", 2)])   # e.g. applied when it last held 2
    await pipeline.on_partitions_assigned(None, user_tps(1, 2))
    await pipeline.rank(pipeline.scheduler.due(10), [])
    assert sent_to(pipeline) == []          # partition 2's table is not recovered yet
    await recovered(pipeline, user_tps(1, 2))
    await pipeline.rank(pipeline.scheduler.due(10), [])
    assert sent_to(pipeline) == ["old"]     # re-ranked from the recovered table
