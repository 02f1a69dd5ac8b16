"""Poison input: many kinds of malformed messages interleaved with valid events. Every
malformed one lands in dlq with its reason (matched by source topic, partition and offset),
every valid one is applied exactly once, the worker stays alive and its memory bounded."""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from streams.worker.dlq import Reason, parse_headers
from streams.sdk.producer import EventProducer
from streams.contracts.schemas import ClickEvent
from streams.contracts.topics import admin_client, create_topics
from tests.faults.harness import (POISON_MESSAGES, Figures, Worker, count_applied, dead_letters,
                                  fault_settings, read_table, wait_consumed)

pytestmark = pytest.mark.faults

BIG = 16 * 1024 * 1024
MAX_RSS_GROWTH_MB = 400.0  # the 10 MB message is held a few times over while it is dead-lettered


def click(event_id: str, user: str, ts: float) -> dict[str, Any]:
    return ClickEvent(event_id=event_id, user_id=user, item_id=f"item-{event_id[-1]}", ts=ts).model_dump(
        mode="json", exclude_none=True)


def poison_kinds(now: float) -> list[tuple[str, str, Any, bytes, str]]:
    """(kind, topic kind, key, value, expected reason) for each kind of malformed message."""
    good = click("p-x", "poison-user", now)
    raw = orjson.dumps(good)
    rng = random.Random(7)
    return [
        ("random bytes", "clicks", b"poison-user", bytes(rng.randrange(256) for _ in range(200)), Reason.INVALID_JSON),
        ("truncated JSON", "clicks", b"poison-user", raw[: len(raw) // 2], Reason.INVALID_JSON),
        ("empty value", "reviews", b"poison-user", b"", Reason.INVALID_JSON),
        ("JSON array", "clicks", b"poison-user", b"[1, 2, 3]", Reason.INVALID_JSON),
        ("deep nesting", "clicks", b"poison-user", b"[" * 100_000, Reason.INVALID_JSON),
        ("invalid UTF-8", "clicks", b"poison-user", raw.replace(b"p-x", b"p-\xff\xfe"), Reason.INVALID_JSON),
        ("wrong types", "clicks", b"poison-user",
         orjson.dumps({**good, "ts": "yesterday", "item_id": 5}), Reason.SCHEMA),
        ("missing field", "reviews", b"poison-user",
         orjson.dumps({"type": "review", "event_id": "r", "user_id": "poison-user", "item_id": "i", "ts": now}),
         Reason.SCHEMA),
        ("unknown event type", "clicks", b"poison-user", orjson.dumps({**good, "type": "purchase"}), Reason.SCHEMA),
        ("unknown field", "clicks", b"poison-user", orjson.dumps({**good, "price": 3}), Reason.SCHEMA),
        ("control characters in id", "clicks", b"poison\x00user",
         orjson.dumps({**good, "user_id": "poison\x00user", "event_id": "p\x07x"}), Reason.SCHEMA),
        ("timestamp far in the future", "clicks", b"poison-user",
         orjson.dumps({**good, "ts": now + 10 * 365 * 86400}), Reason.SCHEMA),
        ("timestamp in milliseconds", "clicks", b"poison-user",
         orjson.dumps({**good, "ts": now * 1000}), Reason.SCHEMA),
        ("id too long", "clicks", b"poison-user", orjson.dumps({**good, "event_id": "e" * 10_000}), Reason.SCHEMA),
        ("null key", "clicks", None, raw, Reason.KEY_MISMATCH),
        ("key of another user", "clicks", b"someone-else", raw, Reason.KEY_MISMATCH),
        ("item without title", "items", b"g1", orjson.dumps({"item_id": "g1", "ts": now}), Reason.SCHEMA),
        ("request for 10,000 items", "requests", b"poison-user",
         orjson.dumps({"type": "request", "request_id": "r", "user_id": "poison-user", "k": 10_000, "ts": now}),
         Reason.SCHEMA),
    ]


def widen(settings: Any, topic: str) -> None:
    """Let the 10 MB message reach the worker (a broker refuses it at 1 MB by default)."""
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("max.message.bytes", str(BIG), incremental_operation=AlterConfigOpType.SET)])
    admin = admin_client(settings)
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)


def test_poison_is_dead_lettered_with_its_reason_and_valid_events_are_applied(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = fault_settings(kafka_bootstrap)
    create_topics(settings)
    widen(settings, settings.topic("reviews"))
    worker = Worker(settings, tmp_path / "data").start()
    now = time.time()
    kinds = poison_kinds(now)
    expected_reason: dict[tuple[str, int, int], tuple[str, str]] = {}
    users: dict[str, list[str]] = {}
    try:
        worker.wait_ready()
        rss_before = worker.rss_mb()

        with EventProducer(settings, **{"message.max.bytes": BIG + 1024}) as producer:
            for i in range(POISON_MESSAGES):
                kind, topic_kind, key, value, reason = kinds[i % len(kinds)]
                topic = settings.topic(topic_kind)
                producer._producer.produce(
                    topic, value=value, key=key, on_delivery=lambda err, msg, k=kind, r=reason:
                    expected_reason.__setitem__((msg.topic(), msg.partition(), msg.offset()), (k, r)))
                user = f"valid-{i % 50}"
                event_id = f"v{i}"
                producer.send(ClickEvent(event_id=event_id, user_id=user, item_id=f"item-{i % 30}", ts=now))
                users.setdefault(user, []).append(event_id)
                producer._producer.poll(0)
            big = orjson.dumps({"type": "review", "event_id": "big", "user_id": "poison-user", "item_id": "i",
                                "ts": now, "voted_up": True, "text": "x" * (10 * 1024 * 1024)})
            producer._producer.produce(settings.topic("reviews"), value=big, key=b"poison-user",
                                       on_delivery=lambda err, msg: expected_reason.__setitem__(
                                           (msg.topic(), msg.partition(), msg.offset()), ("10 MB text", Reason.SCHEMA)))
        poisoned = POISON_MESSAGES + 1
        assert len(expected_reason) == poisoned, "the broker acknowledged every malformed message"
        waited = wait_consumed(settings, [settings.topic(k) for k in ("clicks", "reviews", "items", "requests")],
                               600, [worker])
        time.sleep(2.0)  # dead letters of the last batch
        assert worker.alive()
        rss_after = worker.rss_mb()
        letters = dead_letters(settings)
    finally:
        worker.stop()
    table = read_table(settings)
    figures = Figures("poison", produced=sum(map(len, users.values())), dead_lettered=len(letters),
                      extra={"malformed": poisoned, "kinds": len(kinds) + 1, "seconds": round(waited, 1),
                             "rss_mb_before": round(rss_before), "rss_mb_after": round(rss_after)})
    problems = count_applied(table, users, figures)
    figures.print()
    seen: Counter[tuple[str, int, int]] = Counter()
    wrong = []
    for letter in letters:
        h = parse_headers(letter.headers())
        where = (h["source-topic"], int(h["source-partition"]), int(h["source-offset"]))
        seen[where] += 1
        kind, reason = expected_reason.get(where, ("valid event", "none"))
        if h["reason"] != reason:
            wrong.append(f"{kind}: reason {h['reason']} ({h['error'][:120]}), expected {reason}")
    missing = Counter(expected_reason[w][0] for w in set(expected_reason) - set(seen))
    by_kind = Counter(expected_reason[w][0] for w in seen if w in expected_reason)
    print("dead letters by kind:", dict(by_kind))
    assert not missing, f"malformed messages missing from dlq: {dict(missing)}"
    assert not wrong, wrong[:5]
    assert max(seen.values()) == 1, "a malformed message was dead-lettered twice"
    assert figures.lost == 0 and figures.applied_twice == 0 and not problems, problems[:5]
    assert "poison-user" not in table and "someone-else" not in table
    assert rss_after - rss_before < MAX_RSS_GROWTH_MB, f"memory grew {rss_after - rss_before:.0f} MB"
