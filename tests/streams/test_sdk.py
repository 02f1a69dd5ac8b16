"""Producer and consumer SDK and the produce/replay/tail CLI against a real broker."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from streams.sdk.consumer import RecommendationConsumer
from streams.sdk.producer import EventProducer
from streams.contracts.schemas import InvalidEvent, Recommendation
from streams.contracts.settings import Settings
from streams.contracts.topics import BrokerUnavailable, check_broker, create_topics
from streams.tools.steam import DEFAULT_STEAM_DIR

pytestmark = pytest.mark.integration
STEAM = DEFAULT_STEAM_DIR


def drain(settings: Settings, kinds: list[str], expected: int, timeout_s: float = 30.0
          ) -> dict[str, list[tuple[str, dict]]]:
    """Read every message of the given topics: kind -> [(key, value)]."""
    consumer = Consumer({**settings.connection().librdkafka(), "group.id": f"drain-{random.random()}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([settings.topic(k) for k in kinds])
    got: dict[str, list[tuple[str, dict]]] = {k: [] for k in kinds}
    by_topic = {settings.topic(k): k for k in kinds}
    import time
    deadline = time.monotonic() + timeout_s
    total = 0
    while total < expected and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        got[by_topic[msg.topic()]].append((msg.key().decode(), json.loads(msg.value())))
        total += 1
    consumer.close()
    return got


def mixed_events(n: int, invalid_every: int) -> tuple[dict[str, list[str]], dict[str, list[int]]]:
    """Lines per kind, with one invalid line every `invalid_every`; returns lines and bad line numbers."""
    rng = random.Random(7)
    lines: dict[str, list[str]] = {"items": [], "clicks": [], "reviews": []}
    bad: dict[str, list[int]] = {"items": [], "clicks": [], "reviews": []}
    breakers = [("user_id", ""), ("ts", "soon"), ("item_id", None), ("lang", "??"), ("extra", 1)]
    for i in range(n):
        kind = ("items", "clicks", "reviews")[i % 3]
        if kind == "items":
            event = {"item_id": f"i{i}", "title": f"Item {i}", "lang": "fr", "ts": 1_600_000_000 + i}
        elif kind == "clicks":
            event = {"event_id": f"c{i}", "user_id": f"u{i % 17}", "item_id": f"i{i % 50}",
                     "ts": 1_600_000_000 + i}
        else:
            event = {"event_id": f"r{i}", "user_id": f"u{i % 17}", "item_id": f"i{i % 50}",
                     "ts": 1_600_000_000 + i, "text": "좋아요", "lang": "ko", "voted_up": True}
        if i % invalid_every == invalid_every - 1:
            field, value = rng.choice(breakers)
            if field == "item_id" or field == "user_id" and kind == "items":
                event.pop("item_id")
            else:
                event[field] = value
            bad[kind].append(len(lines[kind]) + 1)
        lines[kind].append(json.dumps(event, ensure_ascii=False))
    return lines, bad


def test_produce_cli_sends_valid_and_reports_invalid(kafka_settings: Settings, tmp_path: Path) -> None:
    create_topics(kafka_settings)
    lines, bad = mixed_events(1000, invalid_every=20)
    assert sum(map(len, bad.values())) == 50
    env = {**os.environ, "XLREC_BOOTSTRAP": kafka_settings.bootstrap,
           "XLREC_TOPIC_PREFIX": kafka_settings.topic_prefix}
    for kind, kind_lines in lines.items():
        path = tmp_path / f"{kind}.jsonl"
        path.write_text("\n".join(kind_lines) + "\n", encoding="utf-8")
        run = subprocess.run([sys.executable, "-m", "streams.cli", "produce", kind, str(path)],
                             env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == (3 if bad[kind] else 0), run.stderr  # 3: some lines were rejected
        valid = len(kind_lines) - len(bad[kind])
        assert f"sent {valid}, rejected {len(bad[kind])}" in run.stdout
        for number in bad[kind]:
            assert f"line {number}: field '" in run.stderr
        assert "Traceback" not in run.stderr
    got = drain(kafka_settings, ["items", "clicks", "reviews"], expected=950)
    assert sum(map(len, got.values())) == 950
    assert all(key == value["item_id"] for key, value in got["items"])
    assert all(key == value["user_id"] for kind in ("clicks", "reviews") for key, value in got[kind])
    assert {value["type"] for _, value in got["reviews"]} == {"review"}


def test_event_producer_rejects_invalid_before_sending(kafka_settings: Settings) -> None:
    create_topics(kafka_settings)
    with EventProducer(kafka_settings) as producer:
        with pytest.raises(InvalidEvent, match="field 'ts'"):
            producer.send({"event_id": "c", "user_id": "u", "item_id": "i", "ts": -1}, kind="clicks")
        producer.send({"event_id": "c", "user_id": "u", "item_id": "i", "ts": 1_600_000_000},
                      kind="clicks")
    assert producer.delivered == 1 and not producer.failed


def test_unreachable_broker_fails_fast_and_clearly() -> None:
    import time
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="no Kafka broker answers at 127.0.0.1:9"):
        check_broker(Settings(bootstrap="127.0.0.1:9"), timeout_s=3)
    assert time.monotonic() - started < 10


def test_topics_create_is_idempotent(kafka_settings: Settings) -> None:
    first = create_topics(kafka_settings)
    assert set(first.values()) == {"created"} and len(first) == 6
    assert set(create_topics(kafka_settings).values()) == {"exists"}


def test_recommendation_consumer_filters_by_user(kafka_settings: Settings) -> None:
    create_topics(kafka_settings)
    with EventProducer(kafka_settings) as producer:
        for user in ("alice", "bob", "alice"):
            rec = Recommendation(user_id=user, model_version="t",
                                 items=[{"item_id": "g", "score": 1.0, "reason": "new"}])
            producer.send_raw(kafka_settings.topic("recommendations"), user, rec.to_json())
        producer.send_raw(kafka_settings.topic("recommendations"), "alice", b"garbage")
    with RecommendationConsumer(kafka_settings, user_id="alice", from_beginning=True) as consumer:
        got = [r for r in (consumer.poll(1.0) for _ in range(20)) if r is not None]
    assert [r.user_id for r in got] == ["alice", "alice"]
    assert consumer.skipped == 1


@pytest.mark.skipif(not (STEAM / "events-dev.tsv.gz").exists(),
                    reason=f"Steam data not in {STEAM}: `xlrec replay steam` replays the Steam files themselves")
def test_replay_steam_then_tail(kafka_settings: Settings) -> None:
    create_topics(kafka_settings)
    env = {**os.environ, "XLREC_BOOTSTRAP": kafka_settings.bootstrap,
           "XLREC_TOPIC_PREFIX": kafka_settings.topic_prefix}
    run = subprocess.run([sys.executable, "-m", "streams.cli", "replay", "steam",
                          "--events", str(STEAM / "events-dev.tsv.gz"), "--games", str(STEAM / "games.tsv"),
                          "--limit", "300"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "and 300 reviews" in run.stdout
    got = drain(kafka_settings, ["items", "reviews"], expected=10_000, timeout_s=8)
    assert len(got["reviews"]) == 300
    first_review_ts: dict[str, float] = {}
    for _, review in got["reviews"]:
        first_review_ts.setdefault(review["item_id"], review["ts"])
    item_ts = {value["item_id"]: value["ts"] for _, value in got["items"]}
    assert set(item_ts) == set(first_review_ts)
    assert all(item_ts[i] < ts for i, ts in first_review_ts.items())
    assert {r["lang"] for _, r in got["reviews"]} > {"en"}
    rec = Recommendation(user_id="u1", model_version="t",
                         items=[{"item_id": "570", "score": 0.5, "reason": "popular with Korean readers",
                                 "title": "Dota 2"}])
    with EventProducer(kafka_settings) as producer:
        producer.send_raw(kafka_settings.topic("recommendations"), "u1", rec.to_json())
    tail = subprocess.run([sys.executable, "-m", "streams.cli", "tail", "recommendations",
                           "--from-beginning", "--max", "1", "--timeout", "20"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert tail.returncode == 0, tail.stderr
    assert "Dota 2" in tail.stdout and "popular with Korean readers" in tail.stdout
