"""Regression (issue 16, point 2): a 20 MB review sent gzip-compressed passes the broker (the
compressed batch is small) and fails validation; its dead letter did not fit the dlq topic
(MessageSizeTooLarge), the agent restarted and committed past the batch, so valid events
around it were neither applied nor dead-lettered. Now the dead letter keeps a prefix with the
original's size and sha256, fits even a dlq topic left at the broker's default size, and every
valid event around it is applied.

The producer is a plain confluent-kafka one, as any app in another language would use (gzip,
`message.max.bytes` raised); its partitioner is murmur2, the SDK's, so that this test is about
dead letters only."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from streams.contracts.schemas import ItemEvent, ReviewEvent
from streams.contracts.settings import Settings
from streams.contracts.topics import admin_client, create_topics
from streams.worker.dlq import MAX_DEAD_LETTER_BYTES, Reason, parse_headers
from tests.faults.harness import (Figures, Stream, Worker, count_applied, dead_letters, fault_settings,
                                  feed_items, read_table, wait_consumed)

pytestmark = pytest.mark.faults

BIG_TEXT_BYTES = 20 * 1024 * 1024
KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588
USERS = [f"u{i}" for i in range(9)] + ["big-user"]   # the big review's author has valid events too
VALID = 100


def shrink_dlq(settings: Settings) -> None:
    """The dlq topic at Kafka's default size, as Faust declares it when xlrec did not create it."""
    resource = ConfigResource(ResourceType.TOPIC, settings.topic("dlq"), incremental_configs=[
        ConfigEntry("max.message.bytes", str(KAFKA_DEFAULT_MAX_MESSAGE_BYTES),
                    incremental_operation=AlterConfigOpType.SET)])
    admin = admin_client(settings)
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)


def test_a_20mb_compressed_review_is_dead_lettered_truncated_and_its_batch_applied(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = fault_settings(kafka_bootstrap)
    create_topics(settings)
    shrink_dlq(settings)
    now = time.time()
    items = tuple(ItemEvent(item_id=f"item-{i}", title=f"Game {i}", lang="en", ts=now) for i in range(10))
    worker = Worker(settings, tmp_path / "data").start()
    expected: dict[str, list[str]] = {}
    where: dict[str, tuple[str, int, int]] = {}
    big = orjson.dumps({"type": "review", "event_id": "big", "user_id": "big-user", "item_id": "item-0",
                        "ts": now, "voted_up": True, "text": "x" * BIG_TEXT_BYTES})
    try:
        worker.wait_ready()
        feed_items(settings, Stream(items, ()), [worker])
        producer = Producer({**settings.connection().librdkafka(), "compression.type": "gzip",
                             "message.max.bytes": 2 * BIG_TEXT_BYTES, "partitioner": "murmur2_random",
                             "linger.ms": 50, "acks": "all"})

        def delivered(event_id: str) -> Callable[[Any, Any], None]:
            def record(err: Any, msg: Any) -> None:
                assert err is None, f"{event_id}: {err}"
                where[event_id] = (msg.topic(), msg.partition(), msg.offset())
            return record

        for i in range(VALID):
            if i == VALID // 2:
                producer.produce(settings.topic("reviews"), key=b"big-user", value=big,
                                 on_delivery=delivered("big"))
            user = USERS[i % len(USERS)]
            review = ReviewEvent(event_id=f"v{i}", user_id=user, item_id=f"item-{i % 10}", ts=now,
                                 voted_up=i % 3 != 0)
            producer.produce(settings.topic("reviews"), key=user.encode(), value=review.to_json(),
                             on_delivery=delivered(review.event_id))
            expected.setdefault(user, []).append(review.event_id)
        assert producer.flush(60) == 0
        assert len(where) == VALID + 1, "the broker acknowledged every message, the big one included"
        waited = wait_consumed(settings, [settings.topic("reviews")], 300, [worker])
        letters = dead_letters(settings)
    finally:
        worker.stop()
    table = read_table(settings)
    figures = Figures("dead letter size", produced=VALID, dead_lettered=len(letters),
                      extra={"big_bytes": len(big), "seconds": round(waited, 1)})
    problems = count_applied(table, expected, figures)
    figures.print()
    assert figures.lost == 0 and figures.applied_twice == 0 and not problems, problems[:5]
    assert len(letters) == 1, [parse_headers(m.headers()) for m in letters]
    letter = letters[0]
    h = parse_headers(letter.headers())
    assert (h["source-topic"], int(h["source-partition"]), int(h["source-offset"])) == where["big"]
    assert h["reason"] == Reason.SCHEMA and "text" in h["error"]
    assert h["truncated"] == "value"
    assert h["original-bytes"] == str(len(big))
    assert h["original-sha256"] == hashlib.sha256(big).hexdigest()
    assert letter.key() == b"big-user" and big.startswith(letter.value())
    assert len(letter.value()) <= MAX_DEAD_LETTER_BYTES
