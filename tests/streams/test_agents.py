"""Unit tests of the worker's agents with Faust's `test_context()`: no broker, topic sends and
changelog writes patched, and a fake engine that records what the agents ask of it."""

from __future__ import annotations

import asyncio
import gc
import math
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock, MagicMock, patch

import numpy as np
import orjson
import pytest
from faust.types import TP

from ranking.engine import Recommended
from streams.worker import metrics
from streams.worker.agents import (GC_YOUNG_THRESHOLD, ImpressionTracker, LatestRecommendations, Pipeline,
                            already_applied)
from streams.worker.app import build_app, changelog_name
from streams.worker.rank_scheduler import RankScheduler
from streams.worker.dlq import Reason, classify, dead_letter_headers, parse_headers
from streams.worker.engine_runner import LEARN_PER_BATCH, EngineRunner
from streams.contracts.schemas import InvalidEvent, ItemEvent
from streams.contracts.settings import Settings

NOW = time.time()
pytestmark = pytest.mark.anyio


class FakeEngine:
    """Records calls; profiles are dicts with the applied event ids, like the real engine's."""

    model_version = "fake-1"
    encoder = None

    def __init__(self) -> None:
        self.items: list[ItemEvent] = []
        self.observed: list[str] = []
        self.learned: list[str] = []
        self.folded: list[str] = []
        self.embedded: list[list[str]] = []
        self.ranked: list[tuple[str, Any]] = []
        self.feedbacks: list[tuple[str, tuple[str, ...], str | None]] = []
        self.fail_on: set[str] = set()

    def upsert_items(self, events: list[ItemEvent], vectors: Any = None) -> None:
        self.items.extend(events)

    def embed_reviews(self, events: list[Any]) -> dict[str, np.ndarray]:
        self.embedded.append([e.event_id for e in events])
        return {e.event_id: np.ones(4, dtype=np.float32) for e in events}

    def embed_query(self, text: str) -> np.ndarray:
        return np.full(4, 0.5, dtype=np.float32)

    def observe(self, profile: dict | None, event: Any, *, review_vector: Any = None,
                text_later: bool = False, learn: bool = True) -> dict:
        if event.event_id in self.fail_on:
            raise ValueError(f"cannot learn from {event.event_id}")
        profile = dict(profile or {"events": [], "n": 0})
        if event.event_id in profile["events"]:
            return profile
        self.observed.append(event.event_id)
        if learn:
            self.learned.append(event.event_id)
        return {"events": [*profile["events"], event.event_id], "n": profile["n"] + 1,
                "reviewed": review_vector is not None or profile.get("reviewed", False)}

    def add_review_text(self, profile: dict | None, event: Any, review_vector: Any) -> dict | None:
        self.folded.append(event.event_id)
        return None if profile is None else {**profile, "reviewed": True}

    def flush_store(self) -> None:
        pass

    def recommend(self, user_id: str, profile: dict | None, k: int = 10, *, now: float,
                  query_vector: Any = None, lang: str | None = None, exclude: Any = ()) -> list[Recommended]:
        self.ranked.append((user_id, profile))
        return [Recommended(f"item{i}", 1.0 - i / 10, "new", f"Item {i}", "en") for i in range(k)]

    def feedback(self, user_id: str, profile: Any, shown: Any, clicked: str | None, *, now: float) -> None:
        self.feedbacks.append((user_id, tuple(shown), clicked))


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def pipeline(engine: FakeEngine, tmp_path: Path) -> Iterator[Pipeline]:
    settings = Settings(topic_prefix="t.", data_dir=tmp_path, rank_interval_s=1.0, top_k=3,
                        feedback_window_s=60.0)
    app = build_app(settings, web_enabled=False)
    runner = EngineRunner(engine)  # type: ignore[arg-type]
    pipe = Pipeline(app, settings, runner)
    pipe.feed.ready.set()  # no catalog feed runs here (tests/streams/test_catalog_feed.py)
    app.finalize()
    pipe.owned = set(range(settings.partitions))  # as after an assignment of every partition
    with patch.object(pipe.topics.dlq, "send", new=AsyncMock()), \
            patch.object(pipe.topics.recommendations, "send", new=AsyncMock()), \
            patch.object(pipe.users, "send_changelog", new=MagicMock()):
        yield pipe
    runner.close()


def sent(topic_send: AsyncMock) -> list[dict[str, Any]]:
    return [call.kwargs for call in topic_send.await_args_list]


async def put(agent: Any, topic: str, value: dict | bytes, key: str | bytes | None, *,
              partition: int = 0, offset: int | None = None) -> None:
    """Deliver one message as if consumed from `topic` (test_context names no topic itself)."""
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    raw_key = key.encode() if isinstance(key, str) else key
    if offset is not None:
        agent.sent_offset = offset
    with patch.object(agent, "_get_strtopic", return_value=topic):
        await agent.put(raw, key=raw_key, partition=partition)


@pytest.fixture
async def users_agent(pipeline: Pipeline) -> AsyncIterator[Any]:
    async with pipeline.users_agent.test_context() as agent:
        yield agent


@pytest.fixture
async def items_agent(pipeline: Pipeline) -> AsyncIterator[Any]:
    async with pipeline.items_agent.test_context() as agent:
        yield agent


def click(event_id: str, user: str = "u1", item: str = "i1", **extra: Any) -> dict[str, Any]:
    return {"type": "click", "event_id": event_id, "user_id": user, "item_id": item, "ts": NOW, **extra}


def review(event_id: str, user: str = "u1", item: str = "i1", text: str = "Sehr gut") -> dict[str, Any]:
    return {"type": "review", "event_id": event_id, "user_id": user, "item_id": item, "ts": NOW,
            "text": text, "lang": "de", "voted_up": True}


# ---- items agent ------------------------------------------------------------------------

async def test_items_agent_dead_letters_poison_and_leaves_items_to_the_catalog_feed(
        pipeline: Pipeline, engine: FakeEngine, items_agent: Any) -> None:
    await put(items_agent, "t.items", {"item_id": "g1", "title": "Kriegsspiel", "lang": "de", "ts": NOW}, "g1")
    await put(items_agent, "t.items", b"\xff\xfe not json", b"g2", partition=3, offset=41)
    await asyncio.sleep(0.2)
    assert engine.items == []  # every worker's CatalogFeed applies items, not the group's agent
    (letter,) = sent(pipeline.topics.dlq.send)  # type: ignore[arg-type]
    assert letter["value"] == b"\xff\xfe not json" and letter["key"] == b"g2"
    headers = parse_headers(letter["headers"])
    assert headers["source-topic"] == "t.items" and headers["source-partition"] == "3"
    assert headers["source-offset"] == "41" and headers["reason"] == Reason.INVALID_JSON
    assert "JSON" in headers["error"]


# ---- users agent (profiles) -------------------------------------------------------------

async def test_click_updates_the_users_table_with_offsets(pipeline: Pipeline, engine: FakeEngine,
                                                          users_agent: Any) -> None:
    await put(users_agent, "t.clicks", click("e1"), "u1", partition=2, offset=7)
    await asyncio.sleep(0.1)
    envelope = pipeline.users["u1"]
    assert envelope["p"]["events"] == ["e1"]
    assert envelope["o"] == {"clicks:2": 7} and envelope["e"] == "e1"
    partition, key, value = pipeline.users.send_changelog.call_args.args  # type: ignore[attr-defined]
    assert (partition, key) == (2, "u1") and value == envelope  # changelog on the source partition
    assert orjson.loads(orjson.dumps(envelope)) == envelope  # plain JSON, nothing pickled
    assert len(pipeline.scheduler) == 1


async def test_events_are_counted_per_topic_once_per_batch(pipeline: Pipeline,
                                                           users_agent: Any) -> None:
    def processed(kind: str) -> float:
        return metrics.EVENTS_PROCESSED.labels(topic=kind)._value.get()  # type: ignore[attr-defined]

    before = {kind: processed(kind) for kind in ("clicks", "reviews")}
    await put(users_agent, "t.clicks", click("c1"), "u1", offset=1)
    await put(users_agent, "t.clicks", b"not json", b"u2", offset=2)  # dead-lettered, still processed
    await put(users_agent, "t.reviews", review("r1"), "u1", offset=3)
    await asyncio.sleep(0.1)
    assert processed("clicks") - before["clicks"] == 2 and processed("reviews") - before["reviews"] == 1


async def test_start_up_state_leaves_the_cyclic_gc_once_the_catalog_is_read(pipeline: Pipeline) -> None:
    threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
    pipeline.feed.ready.clear()
    settling = asyncio.create_task(pipeline.settle_memory())
    try:
        await asyncio.sleep(0.05)
        assert not settling.done() and gc.get_freeze_count() == frozen  # the catalog is still loading
        pipeline.feed.ready.set()
        await asyncio.wait_for(settling, 5)
        assert gc.get_freeze_count() > frozen and gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
    finally:
        settling.cancel()
        gc.unfreeze()
        gc.set_threshold(*threshold)


async def test_redelivered_offsets_and_duplicate_event_ids_change_nothing(
        pipeline: Pipeline, engine: FakeEngine, users_agent: Any) -> None:
    await put(users_agent, "t.clicks", click("e1"), "u1", offset=5)
    await put(users_agent, "t.clicks", click("e2"), "u1", offset=6)
    await asyncio.sleep(0.1)
    before = pipeline.users["u1"]
    await put(users_agent, "t.clicks", click("e1"), "u1", offset=5)   # replay after a crash
    await put(users_agent, "t.clicks", click("e2"), "u1", offset=9)   # an app sent e2 twice
    await asyncio.sleep(0.1)
    assert engine.observed == ["e1", "e2"]
    assert pipeline.users["u1"]["p"] == before["p"]
    assert pipeline.users["u1"]["o"] == {"clicks:0": 9}


async def test_review_texts_are_embedded_in_one_batch_after_the_profile_update(
        pipeline: Pipeline, engine: FakeEngine) -> None:
    await pipeline.handle_user_events([_event("t.reviews", review("r1"), "u1", 0),
                                       _event("t.clicks", click("c1", user="u2"), "u2", 0),
                                       _event("t.reviews", review("r2", user="u2"), "u2", 1),
                                       _event("t.reviews", review("r3", text=""), "u1", 2),
                                       _event("t.reviews", review("r1"), "u1", 3)])  # sent twice
    assert engine.embedded == [] and pipeline.users["u2"]["p"]["n"] == 2
    assert not pipeline.users["u1"]["p"]["reviewed"]   # the profile did not wait for the encoder
    await pipeline.embed_review_texts()
    assert engine.embedded == [["r1", "r2"]]  # once each; empty texts are not embedded
    assert pipeline.users["u1"]["p"]["reviewed"] and pipeline.users["u2"]["p"]["reviewed"]
    assert pipeline.users["u1"]["o"] == {"reviews:0": 3}
    assert not pipeline.review_texts


async def test_review_texts_of_revoked_partitions_are_dropped(pipeline: Pipeline, engine: FakeEngine) -> None:
    from faust.types import TP

    await pipeline.handle_user_events([_event("t.reviews", review("r1"), "u1", 0),
                                       _event("t.reviews", review("r2", user="u2"), "u2", 1, partition=1)])
    await pipeline.on_partitions_revoked(None, {TP("t.reviews", 1)})
    await pipeline.embed_review_texts()
    assert engine.embedded == [["r1"]]
    assert pipeline.users["u1"]["p"]["reviewed"] and not pipeline.users["u2"]["p"]["reviewed"]


async def test_waiting_review_texts_are_kept_in_the_table_until_folded_in(
        pipeline: Pipeline, engine: FakeEngine) -> None:
    await pipeline.handle_user_events([_event("t.reviews", review("r1"), "u1", 5),
                                       _event("t.reviews", review("r2", item="i2"), "u1", 6)])
    assert pipeline.users["u1"]["t"] == [5, 6]
    queued = list(pipeline.review_texts)
    await pipeline.embed_review_texts()
    assert "t" not in pipeline.users["u1"] and engine.folded == ["r1", "r2"]
    pipeline.queue_review_texts(queued)   # read again, e.g. by a worker that restarted
    await pipeline.embed_review_texts()
    assert engine.folded == ["r1", "r2"]  # folded in once


async def test_the_owner_after_a_restart_reads_the_waiting_texts_again(
        pipeline: Pipeline, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    await pipeline.handle_user_events([_event("t.reviews", review("r1"), "u1", 5),
                                       _event("t.reviews", review("r2", user="u2"), "u2", 7, partition=1)])
    pipeline.review_texts.clear()   # a new process: nothing queued, the table recovered
    asked = []

    def read(settings: Settings, topic: str, wanted: dict[int, set[int]]) -> list[Any]:
        asked.append((topic, wanted))
        return [_event("t.reviews", review("r1"), "u1", 5).message]

    monkeypatch.setattr("streams.worker.agents.read_messages", read)
    with patch.object(pipeline.app.consumer, "assignment", return_value={TP("t.reviews", 0), TP("t.clicks", 0)}):
        await pipeline.on_rebalance_complete()
    assert pipeline._text_reader is not None
    await pipeline._text_reader
    assert asked == [("t.reviews", {0: {5}})]   # only the partitions this worker owns
    await pipeline.embed_review_texts()
    assert engine.folded == ["r1"] and "t" not in pipeline.users["u1"]
    assert pipeline.users["u2"]["t"] == [7]     # its owner reads it


async def test_bad_user_events_are_dead_lettered_and_the_rest_applied(pipeline: Pipeline,
                                                                     engine: FakeEngine) -> None:
    engine.fail_on = {"boom"}
    await pipeline.handle_user_events([
        _event("t.clicks", click("e1", user="u1"), "u9", 0),                    # wrong key
        _event("t.clicks", click("e2", user="u1"), None, 1),                    # no key
        _event("t.clicks", {**click("e3"), "ts": "yesterday"}, "u1", 2),        # schema
        _event("t.clicks", click("boom"), "u1", 3),                             # engine raises
        _event("t.clicks", click("e5"), "u1", 4)])
    reasons = [parse_headers(k["headers"])["reason"] for k in sent(pipeline.topics.dlq.send)]  # type: ignore[arg-type]
    assert reasons == [Reason.KEY_MISMATCH, Reason.KEY_MISMATCH, Reason.SCHEMA, Reason.PROCESSING_ERROR]
    assert pipeline.users["u1"]["p"]["events"] == ["e5"]
    assert pipeline.dlq.sent == 4


# ---- ranking, requests, feedback --------------------------------------------------------

async def test_rankings_are_coalesced_per_user(pipeline: Pipeline, engine: FakeEngine) -> None:
    await pipeline.handle_user_events([_event("t.clicks", click(f"e{i}"), "u1", i) for i in range(5)])
    await pipeline.rank(pipeline.scheduler.due(10), [])
    await pipeline.handle_user_events([_event("t.clicks", click("e9"), "u1", 9),
                                       _event("t.clicks", click("f1", user="u2"), "u2", 10)])
    # Busy (two users for one slot): u1 was ranked less than rank_interval_s ago.
    assert [p.user_id for p in pipeline.scheduler.due(1)] == ["u2"]
    (rec,) = [orjson.loads(k["value"]) for k in sent(pipeline.topics.recommendations.send)]  # type: ignore[arg-type]
    assert len(engine.ranked) == 1 and engine.ranked[0][1]["n"] == 5
    assert rec["user_id"] == "u1" and rec["trigger_event_id"] == "e4" and rec["model_version"] == "fake-1"
    assert [i["item_id"] for i in rec["items"]] == ["item0", "item1", "item2"]
    assert 0 <= rec["latency_ms"] < 5_000
    assert orjson.loads(pipeline.latest.get("u1")) == rec  # type: ignore[arg-type]


async def test_a_ranking_names_the_last_event_of_the_profile_it_ranked(pipeline: Pipeline) -> None:
    """A replayed message marks its user again with its own, older event_id (after a crash, or
    on a worker that lost and regained the partition): the ranking still reflects the whole
    profile, and says so, instead of looking stale next to a newer one."""
    events = [_event("t.clicks", click(f"e{i}"), "u1", i) for i in range(3)]
    await pipeline.handle_user_events(events)
    await pipeline.handle_user_events(events[:1])          # a replay of e0: already applied
    (pending,) = pipeline.scheduler.due(10)
    assert pending.trigger_event_id == "e0"
    await pipeline.rank([pending], [])
    (rec,) = [orjson.loads(k["value"]) for k in sent(pipeline.topics.recommendations.send)]  # type: ignore[arg-type]
    assert rec["trigger_event_id"] == "e2"


async def test_ranking_loop_emits_after_events(pipeline: Pipeline, engine: FakeEngine) -> None:
    task = asyncio.create_task(pipeline.ranking_loop())
    try:
        await pipeline.handle_user_events([_event("t.clicks", click("e1"), "u1", 0)])
        for _ in range(50):
            if pipeline.topics.recommendations.send.await_count:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.02)
        assert [u for u, _ in engine.ranked] == ["u1"]
    finally:
        task.cancel()


async def test_requests_are_answered_with_their_request_id(pipeline: Pipeline, engine: FakeEngine) -> None:
    request = {"type": "request", "request_id": "rq1", "user_id": "u7", "k": 2, "lang": "ko",
               "query": "전략 게임", "ts": NOW}
    await pipeline.handle_user_events([_event("t.requests", request, "u7", 0)])
    assert len(pipeline.requests) == 1 and len(pipeline.scheduler) == 0
    await pipeline.rank([], [pipeline.requests.popleft()])
    (rec,) = [orjson.loads(k["value"]) for k in sent(pipeline.topics.recommendations.send)]  # type: ignore[arg-type]
    assert rec["request_id"] == "rq1" and rec["user_id"] == "u7" and len(rec["items"]) == 2
    assert engine.ranked == [("u7", None)]


async def test_clicks_on_recommendations_are_feedback(pipeline: Pipeline, engine: FakeEngine) -> None:
    await pipeline.handle_user_events([_event("t.clicks", click("e1"), "u1", 0)])
    await pipeline.rank(pipeline.scheduler.due(10), [])
    rec_id = orjson.loads(pipeline.latest.get("u1"))["recommendation_id"]  # type: ignore[arg-type]
    await pipeline.handle_user_events([_event("t.clicks", click("e2", item="item1", context={
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


async def test_item_texts_are_encoded_off_the_engine_thread(engine: FakeEngine) -> None:
    """The runner embeds live items in one encoder batch and hands the vectors to the engine
    (deleted items get a placeholder the engine ignores)."""
    import threading

    class Encoder:
        dim, name = 4, "fake"
        threads: list[str] = []

        def encode(self, texts: list[str]) -> np.ndarray:
            self.threads.append(threading.current_thread().name)
            return np.stack([np.full(4, len(t), dtype=np.float32) for t in texts])

    got: list[Any] = []
    engine.encoder = Encoder()  # type: ignore[assignment]
    engine.upsert_items = lambda events, vectors=None: got.append(  # type: ignore[method-assign]
        (threading.current_thread().name, [e.item_id for e in events], vectors))
    runner = EngineRunner(engine)  # type: ignore[arg-type]
    try:
        await runner.upsert_items([ItemEvent(item_id="a", title="Abc", ts=NOW),
                                   ItemEvent(item_id="b", title="B", ts=NOW, deleted=True),
                                   ItemEvent(item_id="c", title="Cdefg", description="x", ts=NOW)])
    finally:
        runner.close()
    (thread, ids, vectors), = got
    assert Encoder.threads == ["xlrec-encode_0"] and thread.startswith("xlrec-engine")
    assert ids == ["a", "b", "c"] and [float(v[0]) for v in vectors] == [3.0, 0.0, 8.0]


async def test_under_a_backlog_the_ranker_learns_from_a_sample_and_profiles_from_all(
        pipeline: Pipeline, engine: FakeEngine) -> None:
    small = [_event("t.clicks", click(f"s{i}", user=f"u{i}"), f"u{i}", i) for i in range(LEARN_PER_BATCH)]
    await pipeline.handle_user_events(small)
    assert engine.learned == engine.observed == [f"s{i}" for i in range(LEARN_PER_BATCH)]
    engine.learned.clear()
    backlog = [_event("t.clicks", click(f"b{i}", user=f"v{i}"), f"v{i}", 100 + i) for i in range(100)]
    await pipeline.handle_user_events(backlog)
    assert engine.observed[LEARN_PER_BATCH:] == [f"b{i}" for i in range(100)]
    stride = math.ceil(100 / LEARN_PER_BATCH)
    assert engine.learned == [f"b{i}" for i in range(0, 100, stride)]   # every n-th event
    assert LEARN_PER_BATCH // 2 < len(engine.learned) <= LEARN_PER_BATCH
    assert all(pipeline.users[f"v{i}"]["p"]["n"] == 1 for i in range(100))


# ---- small parts ------------------------------------------------------------------------

def test_rank_scheduler_allows_one_ranking_per_interval_under_load() -> None:
    clock = [1000.0]
    s = RankScheduler(2.0, clock=lambda: clock[0])
    s.mark("u1", "e1", produced_ts=50.0)
    s.mark("u1", "e2", produced_ts=51.0)
    s.mark("u2", "e3", produced_ts=49.0)
    assert [(p.user_id, p.trigger_event_id, p.oldest_produced_ts) for p in s.due(10)] == [
        ("u2", "e3", 49.0), ("u1", "e2", 50.0)]
    s.ranked("u1")
    s.mark("u1", "e4", produced_ts=52.0)
    s.mark("u3", "e5", produced_ts=53.0)
    assert [p.user_id for p in s.due(1)] == ["u3"]   # busy: u1 was ranked within the interval
    assert s.seconds_until_next() == pytest.approx(2.0)
    s.mark("u4", "e6", produced_ts=54.0)
    assert [p.user_id for p in s.due(1)] == ["u4"]   # still held back
    clock[0] += 2.0
    s.mark("u5", "e7", produced_ts=55.0)
    assert [p.trigger_event_id for p in s.due(1)] == ["e4"]   # its interval has passed


def test_rank_scheduler_ranks_at_once_with_spare_capacity() -> None:
    clock = [1000.0]
    s = RankScheduler(2.0, clock=lambda: clock[0])
    s.mark("u1", "e1", produced_ts=50.0)
    assert [p.trigger_event_id for p in s.due(10)] == ["e1"]
    s.ranked("u1")
    s.mark("u1", "e2", produced_ts=50.1)
    assert [p.trigger_event_id for p in s.due(10)] == ["e2"]   # no wait for the interval
    clock[0] += 10.0
    s.forget_old()
    assert s._last == {}


def test_latest_recommendations_are_bounded() -> None:
    latest = LatestRecommendations(max_users=2)
    for user in ("a", "b", "a", "c"):
        latest.put(user, user.encode())
    assert (latest.get("a"), latest.get("b"), latest.get("c")) == (b"a", None, b"c")


def test_dead_letter_reasons_and_headers() -> None:
    assert classify(InvalidEvent("not valid UTF-8 JSON: x")) == Reason.INVALID_JSON
    assert classify(InvalidEvent("field 'ts': bad")) == Reason.SCHEMA
    assert classify(RuntimeError("x")) == Reason.PROCESSING_ERROR
    headers = parse_headers(dead_letter_headers("t.clicks", 1, 2, "schema", "field 'x': é"))
    assert headers["error"] == "field 'x': é" and float(headers["failed-ts"]) > 0


def test_envelope_offsets_make_replays_idempotent() -> None:
    message = MagicMock(partition=3, offset=10)
    assert not already_applied(None, message, "clicks")
    assert already_applied({"o": {"clicks:3": 10}}, message, "clicks")
    assert not already_applied({"o": {"clicks:3": 9}}, message, "clicks")
    assert not already_applied({"o": {"reviews:3": 99}}, message, "clicks")


def test_security_settings_reach_faust(tmp_path: Path) -> None:
    import certifi

    ca_file = Path(certifi.where())
    plain = Settings(bootstrap="a:9092, b:9093")
    assert plain.connection().faust_broker_urls() == ["kafka://a:9092", "kafka://b:9093"]
    assert plain.connection().faust_credentials() is None
    sasl = Settings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="app",
                    sasl_password="s3cret", ssl_cafile=ca_file)
    creds = sasl.connection().faust_credentials()
    assert creds.protocol.value == "SASL_SSL" and creds.mechanism.value == "SCRAM-SHA-512"  # type: ignore[union-attr]
    assert creds.username == "app" and creds.password == "s3cret"  # type: ignore[union-attr]
    assert "s3cret" not in repr(creds)
    ssl_only = Settings(security_protocol="SSL", ssl_cafile=ca_file).connection().faust_credentials()
    assert ssl_only.protocol.value == "SSL"  # type: ignore[union-attr]
    app = build_app(sasl, web_enabled=False)
    assert app.conf.broker_credentials is creds or app.conf.broker_credentials.username == "app"
    assert changelog_name(plain, "users") == "xlrec.xlrec-users-changelog"


def _event(topic: str, value: dict | bytes, key: str | None, offset: int, partition: int = 0) -> Any:
    """A Faust event as `take_events` yields it."""
    from faust.types.tuples import Message

    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    message = Message(topic=topic, partition=partition, offset=offset, timestamp=time.time(),
                      timestamp_type=0, headers=[], key=key.encode() if key else None, value=raw,
                      checksum=b"")
    event = MagicMock()
    event.message = message
    return event
