"""Re-routing (`streams.worker.reroute`): a user event on another partition than its user's (a
librdkafka client's default crc32 partitioner) is forwarded to the user's partition and applied
there, once, however often it was forwarded; the batch waits for the forwarded copies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import orjson
import pytest
from faust.types.tuples import Message

from streams.worker import metrics
from streams.worker.dlq import parse_headers
from streams.worker.reroute import ORIGIN_OFFSET, ORIGIN_PARTITION, ORIGIN_TOPIC, text_key
from streams.worker.user_record import UserRecord
from streams.worker.users_table import guess_partition
from streams.worker.wiring import Worker
from tests.streams.fake_engine import FakeEngine, catalog
from tests.streams.fake_worker import click, consumed, fake_worker, review, sent

pytestmark = pytest.mark.anyio

PARTITIONS = 8
USER = "u4"                                  # murmur2: partition 2 of 8
HOME = guess_partition(USER, PARTITIONS)
ELSEWHERE = 5                                # where a crc32 producer put it, say


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(items=catalog(10))


@pytest.fixture
def worker(engine: FakeEngine, tmp_path: Path) -> Iterator[Worker]:
    with fake_worker(engine, tmp_path, reroute=True, partitions=PARTITIONS, rank_interval_s=1.0,
                     top_k=3, feedback_window_s=60.0) as w:
        yield w


def forwarded(worker: Worker) -> list[Any]:
    """The FutureMessages handed to the repartition topic, in order."""
    publish: AsyncMock = worker.ctx.topics.repartition.publish_message  # type: ignore[assignment]
    return [call.args[0] for call in publish.await_args_list]


def copy(worker: Worker, origin: Message, offset: int, partition: int = HOME) -> Any:
    """The forwarded copy of `origin` as the agent consumes it from the repartition topic."""
    headers = [(ORIGIN_TOPIC, origin.topic.encode()), (ORIGIN_PARTITION, str(origin.partition).encode()),
               (ORIGIN_OFFSET, str(origin.offset).encode())]
    event = MagicMock()
    event.message = Message(topic=worker.ctx.repartition_topic, partition=partition, offset=offset,
                            timestamp=time.time(), timestamp_type=0, headers=headers, key=origin.key,
                            value=origin.value, checksum=b"")
    return event


def record(worker: Worker, user_id: str) -> UserRecord | None:
    return worker.ctx.users.record(user_id)


def rerouted(kind: str) -> float:
    return float(metrics.EVENTS_REROUTED.labels(topic=kind)._value.get())


async def test_an_event_on_another_partition_is_forwarded_to_its_users_partition(
        worker: Worker, engine: FakeEngine) -> None:
    assert HOME != ELSEWHERE
    before = rerouted("clicks")
    here = consumed("t.clicks", click("e1", user=USER), USER, 7, partition=ELSEWHERE)
    await worker.user_events.handle([here])
    assert engine.observe_calls == [] and record(worker, USER) is None   # not applied there
    [future] = forwarded(worker)
    message = future.message
    assert message.channel.get_topic_name() == worker.ctx.repartition_topic == "t.xlrec-users-repartition"
    assert (message.partition, message.key, message.value) == (HOME, USER.encode(), here.message.value)
    assert dict(message.headers) == {ORIGIN_TOPIC: b"t.clicks", ORIGIN_PARTITION: str(ELSEWHERE).encode(),
                                     ORIGIN_OFFSET: b"7"}
    assert rerouted("clicks") - before == 1


async def test_an_event_on_its_users_partition_takes_the_fast_path(worker: Worker, engine: FakeEngine) -> None:
    await worker.user_events.handle([consumed("t.clicks", click("e1", user=USER), USER, 7, partition=HOME)])
    assert forwarded(worker) == [] and engine.observed == ["e1"]
    stored = record(worker, USER)
    assert stored is not None and stored.offsets == {f"clicks:{HOME}": 7} and stored.partition == HOME


async def test_the_forwarded_copy_is_applied_once_on_the_users_partition(worker: Worker, engine: FakeEngine) -> None:
    origin = consumed("t.clicks", click("e1", user=USER), USER, 7, partition=ELSEWHERE).message
    await worker.user_events.handle([copy(worker, origin, 3)])
    stored = record(worker, USER)
    assert stored is not None and stored.profile["events"] == ["e1"]
    # Named by where it arrived (for replays) and where its copy is (the user's partition).
    assert stored.offsets == {f"repartition:{HOME}": 3, f"clicks:{ELSEWHERE}": 7} and stored.partition == HOME
    partition, key, value = worker.ctx.users.send_changelog.call_args.args  # type: ignore[attr-defined]
    assert (partition, key, value) == (HOME, USER, stored)
    assert forwarded(worker) == []                     # a copy is never forwarded again


async def test_an_event_forwarded_twice_is_applied_once(worker: Worker, engine: FakeEngine) -> None:
    """The forwarding worker crashed after the broker had the copies and before it committed:
    its successor forwards them again; the repartition topic holds both runs."""
    origins = [consumed("t.clicks", click(f"e{i}", user=USER), USER, 10 + i, partition=ELSEWHERE).message
               for i in range(3)]
    first = [copy(worker, m, i) for i, m in enumerate(origins)]
    again = [copy(worker, m, 3 + i) for i, m in enumerate(origins)]
    await worker.user_events.handle([*first, *again])                  # both runs in one batch
    await worker.user_events.handle([copy(worker, origins[2], 6)])     # and a third copy later
    assert engine.observe_calls == ["e0", "e1", "e2"]
    stored = record(worker, USER)
    assert stored is not None and stored.profile["n"] == 3


async def test_a_user_with_events_from_both_kinds_of_producer_has_one_profile(
        worker: Worker, engine: FakeEngine) -> None:
    sdk = consumed("t.clicks", click("e1", user=USER), USER, 1, partition=HOME)
    crc = consumed("t.clicks", click("e2", user=USER), USER, 1, partition=ELSEWHERE)
    await worker.user_events.handle([sdk, crc])
    await worker.user_events.handle([copy(worker, crc.message, 0)])
    await worker.user_events.handle([consumed("t.clicks", click("e3", user=USER), USER, 2, partition=HOME)])
    stored = record(worker, USER)
    assert stored is not None and stored.profile["events"] == ["e1", "e2", "e3"]
    assert {p for p, *_ in (c.args for c in worker.ctx.users.send_changelog.call_args_list)} == {HOME}  # type: ignore[attr-defined]


async def test_requests_are_forwarded_too_and_invalid_events_are_dead_lettered_where_they_arrived(
        worker: Worker) -> None:
    request = {"type": "request", "request_id": "r1", "user_id": USER, "k": 3, "ts": time.time()}
    await worker.user_events.handle([
        consumed("t.requests", request, USER, 4, partition=ELSEWHERE),
        consumed("t.clicks", b"not json", USER, 5, partition=ELSEWHERE)])
    assert [f.message.headers[0][1] for f in forwarded(worker)] == [b"t.requests"]
    [letter] = sent(worker.ctx.topics.dlq.send)
    assert parse_headers(letter["headers"])["source-partition"] == str(ELSEWHERE)


async def test_a_forwarded_copy_that_fails_names_its_origin_in_the_dead_letter(worker: Worker,
                                                                              engine: FakeEngine) -> None:
    engine.fail_on = {"boom"}
    origin = consumed("t.clicks", click("boom", user=USER), USER, 9, partition=ELSEWHERE).message
    await worker.user_events.handle([copy(worker, origin, 0)])
    [letter] = sent(worker.ctx.topics.dlq.send)
    headers = parse_headers(letter["headers"])
    assert (headers["source-topic"], headers["source-partition"], headers["source-offset"]) == \
        ("t.clicks", str(ELSEWHERE), "9")


async def test_a_repartition_message_without_origin_headers_is_dead_lettered(worker: Worker) -> None:
    event = MagicMock()
    event.message = Message(topic=worker.ctx.repartition_topic, partition=HOME, offset=0, timestamp=time.time(),
                            timestamp_type=0, headers=[], key=USER.encode(),
                            value=orjson.dumps(click("e1", user=USER)), checksum=b"")
    await worker.user_events.handle([event])
    assert record(worker, USER) is None and worker.ctx.dlq.sent == 1


async def test_a_rerouted_reviews_text_waits_under_its_copys_entry_and_is_folded_in(
        worker: Worker, engine: FakeEngine) -> None:
    origin = consumed("t.reviews", review("r1", user=USER), USER, 4, partition=ELSEWHERE).message
    the_copy = copy(worker, origin, 11)
    await worker.user_events.handle([the_copy])
    stored = record(worker, USER)
    entry = text_key(the_copy.message, worker.ctx.repartition_topic)
    assert stored is not None and stored.waiting_texts == (entry,) == (-12,)
    await worker.lane.embed_batch()
    await asyncio.sleep(0)
    folded = record(worker, USER)
    assert folded is not None and folded.waiting_texts == () and folded.profile.get("reviewed")


async def test_the_batch_waits_for_the_broker_to_acknowledge_the_copies(worker: Worker) -> None:
    acked = asyncio.get_running_loop().create_future()

    async def publish(future: Any, wait: bool = False) -> Any:
        return acked

    worker.ctx.topics.repartition.publish_message.side_effect = publish  # type: ignore[attr-defined]
    handled = asyncio.ensure_future(worker.user_events.handle(
        [consumed("t.clicks", click("e1", user=USER), USER, 7, partition=ELSEWHERE)]))
    await asyncio.sleep(0.05)
    assert not handled.done()          # not acknowledged: the source offset is not committed
    acked.set_result(None)
    await asyncio.wait_for(handled, 1.0)
