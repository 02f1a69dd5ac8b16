"""Right of access and erasure (`streams.worker.privacy`): `GET /users/{id}/profile` answers with what
the worker holds about a user; a `ForgetUser` (`xlrec forget`, `EventProducer.forget`) erases the
user in order with their events: a tombstone in the users table's changelog, and the latest
recommendation, impressions, queued requests, pending ranking, waiting review texts and the
engine's per-user state dropped; afterwards both HTTP routes answer 404."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock, patch

import orjson
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from faust.types import TP
from faust.types.tuples import RecordMetadata

from ranking.profile import apply_event
from streams.contracts.forget import ForgetUser, forget_request, parse_request
from streams.contracts.schemas import InvalidEvent, RecommendationRequest
from streams.contracts.settings import Settings
from streams.sdk.producer import EventProducer
from streams.worker import web
from streams.worker.app import build_app
from streams.worker.privacy import profile_view
from streams.worker.user_record import UserRecord
from streams.worker.users_table import UsersTable, guess_partition, users_table
from streams.worker.wiring import Worker
from tests.streams.fake_engine import FakeEngine, catalog
from tests.streams.fake_worker import click, consumed, fake_worker, review

pytestmark = pytest.mark.anyio

PARTITIONS = 8
NOW = time.time()


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(items=catalog(10))


@pytest.fixture
def worker(engine: FakeEngine, tmp_path: Path) -> Iterator[Worker]:
    with fake_worker(engine, tmp_path, reroute=True, partitions=PARTITIONS, rank_interval_s=0.0,
                     top_k=3, feedback_window_s=60.0) as w:
        yield w


def forget(user: str) -> dict[str, Any]:
    return {"type": "forget", "forget_id": f"f-{user}", "user_id": user, "ts": NOW}


def home(user: str) -> int:
    return guess_partition(user, PARTITIONS)


def at_home(topic: str, value: dict[str, Any], user: str, offset: int) -> Any:
    return consumed(topic, value, user, offset, partition=home(user))


# ---- the message --------------------------------------------------------------------------
def test_the_requests_topic_carries_forget_requests_and_recommendation_requests() -> None:
    assert parse_request(orjson.dumps(forget("u1"))) == ForgetUser(forget_id="f-u1", user_id="u1", ts=NOW)
    asked = parse_request(orjson.dumps({"type": "request", "request_id": "forget", "user_id": "u1", "ts": NOW}))
    assert isinstance(asked, RecommendationRequest)
    with pytest.raises(InvalidEvent, match="user_id"):
        parse_request(orjson.dumps({**forget("u1"), "user_id": ""}))
    with pytest.raises(InvalidEvent):
        forget_request("x" * 1000, NOW)


def test_the_sdk_sends_a_forget_keyed_by_the_user_after_what_it_sent_before(tmp_path: Path) -> None:
    producer = EventProducer(Settings(topic_prefix="t.", data_dir=tmp_path), check=False)
    calls: list[Any] = []
    with patch.object(producer, "_produce", side_effect=lambda *a: calls.append(("produce", *a))), \
            patch.object(producer, "flush", side_effect=lambda *a: calls.append(("flush",))):
        producer.send(click("e1"), "clicks")
        request = producer.forget("u1")
    assert [c[0] for c in calls] == ["produce", "flush", "produce", "flush"]
    _, topic, key, value = calls[2]
    assert (topic, key) == ("t.requests", "u1") and parse_request(value) == request


# ---- access --------------------------------------------------------------------------------
def test_the_profile_view_is_what_xlrec_holds_about_the_user() -> None:
    profile = None
    for i, (item, lang, kind) in enumerate([("i1", "de", "click"), ("i2", "ko", "review"), ("i3", "de", "click")]):
        profile = apply_event(profile, user_id="u1", event_id=f"e{i}", item_id=item, ts=NOW + i, kind=kind,
                              positive=True, lang=lang, item_vector=None, review_vector=None)
    assert profile is not None
    view = profile_view("u1", UserRecord(profile, {"clicks:0": 3}, "e2", NOW, (7,)))
    assert view["user_id"] == "u1" and view["events"] == 3
    assert view["recent_items"] == ["i3", "i2", "i1"]                 # newest first
    assert view["languages"] == ["de", "ko"]
    assert view["latest_event_ids"] == ["e0", "e1", "e2"] and view["review_texts_waiting"] == 1
    orjson.dumps(view)   # JSON as it is


def serve(worker: Worker, paths: list[str]) -> list[tuple[int, Any]]:
    """(status, JSON) of GETs on the worker's routes, registered as the worker registers them."""
    app = build_app(worker.ctx.settings)
    web.register(app, worker.latest.get, None, profile=worker.erasure.profile)
    app.web.init_server()

    async def run() -> list[tuple[int, Any]]:
        async with TestServer(app.web.web_app) as server, ClientSession() as session:  # type: ignore[attr-defined]
            out = []
            for path in paths:
                async with session.get(server.make_url(path)) as response:
                    out.append((response.status, await response.json()))
            return out

    return asyncio.run(run())


# ---- erasure -------------------------------------------------------------------------------
async def test_forget_erases_the_user_and_answers_404_afterwards(worker: Worker, engine: FakeEngine) -> None:
    ctx = worker.ctx
    await worker.user_events.handle([at_home("t.clicks", click("e1"), "u1", 1),
                                     at_home("t.reviews", review("r1"), "u1", 2),
                                     at_home("t.clicks", click("e9", user="u2"), "u2", 3)])
    worker.latest.put("u1", b'{"user_id": "u1"}')
    worker.impressions.track("rec-1", "u1", ["i1"], time.monotonic())
    worker.ranking.requests.append((RecommendationRequest(request_id="q", user_id="u1", ts=NOW), MagicMock()))
    assert worker.erasure.profile("u1") is not None and worker.lane.texts and len(ctx.scheduler) == 2
    status = await asyncio.to_thread(serve, worker, ["/users/u1/profile", "/users/u1/recommendations"])
    assert [s for s, _ in status] == [200, 200] and status[0][1]["events"] == 2

    await worker.user_events.handle([at_home("t.requests", forget("u1"), "u1", 4)])
    assert ctx.users.record("u1") is None and worker.erasure.profile("u1") is None
    partition, key, value = ctx.users.send_changelog.call_args.args  # type: ignore[attr-defined]
    assert (partition, key, value) == (home("u1"), "u1", None)            # a tombstone
    assert worker.latest.get("u1") is None and worker.impressions.click("rec-1", "u1", "i1") is None
    assert not worker.ranking.requests and not worker.lane.texts
    assert [p.user_id for p in ctx.scheduler.due(10)] == ["u2"]
    assert engine.forgotten == ["u1"]
    status = await asyncio.to_thread(serve, worker, ["/users/u1/profile", "/users/u1/recommendations",
                                                      "/users/u2/profile"])
    assert [s for s, _ in status] == [404, 404, 200]


async def test_forget_is_applied_in_order_with_the_users_events(worker: Worker, engine: FakeEngine) -> None:
    await worker.user_events.handle([at_home("t.clicks", click("e1"), "u1", 1),
                                     at_home("t.requests", forget("u1"), "u1", 1),
                                     at_home("t.clicks", click("e2"), "u1", 2)])
    record = worker.ctx.users.record("u1")
    assert record is not None and record.profile["events"] == ["e2"]      # only what came after
    writes = [c.args[2] for c in worker.ctx.users.send_changelog.call_args_list]  # type: ignore[attr-defined]
    assert [w.profile["events"] if w else None for w in writes] == [["e1"], None, ["e2"]]


def stamped(event: Any, stamp: float) -> Any:
    event.message.timestamp = stamp
    return event


async def test_events_produced_before_the_forget_and_read_after_it_are_dropped(
        worker: Worker, engine: FakeEngine) -> None:
    """The user's review was on a partition the worker was behind on (or on its way through the
    repartition topic): it arrives after the forget, but was produced before it."""
    late = stamped(at_home("t.reviews", review("r1"), "u1", 7), NOW - 1)
    asked = stamped(at_home("t.requests", {"type": "request", "request_id": "q1", "user_id": "u1", "ts": NOW},
                            "u1", 8), NOW - 1)
    back = stamped(at_home("t.clicks", click("e2"), "u1", 9), NOW + 1)
    await worker.user_events.handle([stamped(at_home("t.requests", forget("u1"), "u1", 6), NOW), late, asked])
    assert worker.ctx.users.record("u1") is None and not worker.ranking.requests and engine.observe_calls == []
    await worker.user_events.handle([back])   # the user comes back: a new profile
    record = worker.ctx.users.record("u1")
    assert record is not None and record.profile["events"] == ["e2"]


async def test_a_forget_on_another_partition_is_rerouted_like_any_user_event(worker: Worker) -> None:
    elsewhere = (home("u1") + 1) % PARTITIONS
    await worker.user_events.handle([consumed("t.requests", forget("u1"), "u1", 5, partition=elsewhere)])
    [future] = [c.args[0] for c in worker.ctx.topics.repartition.publish_message.await_args_list]  # type: ignore[attr-defined]
    assert future.message.partition == home("u1")


async def test_a_ranking_computed_before_the_erasure_is_not_sent(worker: Worker) -> None:
    ctx = worker.ctx
    await worker.user_events.handle([at_home("t.clicks", click("e1"), "u1", 1)])
    recommend = ctx.runner.recommend

    async def erased_meanwhile(jobs: Any) -> Any:
        results = await recommend(jobs)
        await worker.user_events.handle([at_home("t.requests", forget("u1"), "u1", 2)])
        return results

    with patch.object(ctx.runner, "recommend", side_effect=erased_meanwhile):
        await worker.ranking.rank_batch(ctx.scheduler.due(10), [])
    assert ctx.topics.recommendations.send.await_count == 0 and worker.latest.get("u1") is None  # type: ignore[attr-defined]


# ---- the users table -----------------------------------------------------------------------
@pytest.mark.parametrize("store", ["rocksdb", "memory"])
def test_an_erased_record_leaves_the_store_once_the_tombstone_is_acknowledged(tmp_path: Path, store: str) -> None:
    config = Settings(topic_prefix="t.", data_dir=tmp_path, partitions=4, users_store=store)
    table: UsersTable = users_table(build_app(config, web_enabled=False), config)
    writes: list[Any] = []

    def send(partition: int, key: str, value: UserRecord | None, value_serializer: Any = None) -> Any:
        write = MagicMock()
        write.message.key, write.message.value = key.encode(), None if value is None else value.to_bytes()
        topic = table.changelog_topic.get_topic_name()
        write.result.return_value = RecordMetadata(topic, partition, TP(topic, partition), len(writes), NOW, 0)
        writes.append(write)
        return write

    table.send_changelog = send  # type: ignore[method-assign,assignment]
    table.put("u1", UserRecord({"events": ["e1"], "n": 1}, {"clicks:2": 5}, "e1", NOW), 2)
    table._on_changelog_sent(writes[0])
    assert table.record("u1") is not None and table.data.get("u1") is not None
    table.erase("u1", 2)
    assert table.record("u1") is None and table.data.get("u1") is not None   # not yet acknowledged
    assert table.recent_users(0.0, {2}) == []
    table._on_changelog_sent(writes[1])
    assert table.record("u1") is None and table.data.get("u1") is None and table._pending == {}
