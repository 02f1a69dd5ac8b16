"""`xlrec tail dlq` shows dead letters with their reason headers, and `xlrec dlq replay` re-sends
the ones that validate now to their input topic (keyed as the SDK keys them), skips truncated
ones, counts the still-invalid ones, exits 3 when letters were left, and commits its group's
offsets so that a second run re-sends nothing twice. Letters are written to a real broker with
the worker's own header and size functions (streams.worker.dlq)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from rich.console import Console

from streams.contracts.dead_letters import REPLAYED_FROM, parse_headers
from streams.contracts.settings import Settings
from streams.contracts.topics import create_topics
from streams.ops.dead_letters import DeadLetter, ReplayReport, _replay_one, source_kind
from streams.ops.dlq_cli import print_letter
from streams.worker.dlq import Reason, dead_letter_headers, fit

CLICK = {"type": "click", "event_id": "c1", "user_id": "u1", "item_id": "i1", "ts": 1_700_000_000}
REVIEW = {"type": "review", "event_id": "r1", "user_id": "u2", "item_id": "i1", "ts": 1_700_000_000,
          "text": "bien", "voted_up": True}
ITEM = {"type": "item", "item_id": "i9", "title": "Markup [/] crash", "ts": 1_700_000_000}


def letter_of(settings: Settings, kind: str, value: bytes, key: bytes | None, reason: str, error: str,
              offset: int = 0) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """A dead letter as the worker writes it for a message read from `kind`'s topic."""
    return fit(key, value, dead_letter_headers(settings.topic(kind), 0, offset, reason, error))


def letters(settings: Settings) -> list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]:
    big = json.dumps({**REVIEW, "event_id": "r-big", "text": "x" * 2_000_000}).encode()
    return [
        # valid now: a key mismatch (re-sent keyed by user_id), a processing error, an item
        letter_of(settings, "clicks", json.dumps(CLICK).encode(), b"wrong-key", Reason.KEY_MISMATCH,
                  "clicks must be keyed by user_id; got key 'wrong-key' for user 'u1'", 3),
        letter_of(settings, "reviews", json.dumps(REVIEW).encode(), b"u2", Reason.PROCESSING_ERROR,
                  "StoreError: store down", 4),
        letter_of(settings, "items", json.dumps(ITEM).encode(), b"i9", Reason.PROCESSING_ERROR,
                  "RuntimeError: [bold]boom[/]", 5),
        # still invalid, and truncated (a valid-looking prefix is not the event)
        letter_of(settings, "clicks", json.dumps({**CLICK, "ts": CLICK["ts"] * 1000}).encode(), b"u1",
                  Reason.SCHEMA, "field 'ts': looks like unix milliseconds", 6),
        letter_of(settings, "clicks", b"not json", b"u1", Reason.INVALID_JSON, "not valid UTF-8 JSON", 7),
        letter_of(settings, "reviews", big, b"u2", Reason.SCHEMA, "field 'text': too long", 8),
    ]


def write(settings: Settings, batch: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]) -> None:
    producer = Producer(settings.connection().librdkafka())
    for key, value, headers in batch:
        producer.produce(settings.topic("dlq"), key=key, value=value, headers=headers)
    assert producer.flush(30) == 0


def drain(settings: Settings, kinds: list[str], wait_s: float = 6.0) -> list[tuple[str, str, dict, dict]]:
    """Every message of the topics: (kind, key, value, headers), reading until `wait_s` is quiet."""
    consumer = Consumer({**settings.connection().librdkafka(), "group.id": f"drain-{time.time_ns()}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([settings.topic(k) for k in kinds])
    got = []
    quiet = time.monotonic() + wait_s
    while time.monotonic() < quiet:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        quiet = time.monotonic() + wait_s
        got.append((msg.topic().removeprefix(settings.topic_prefix), msg.key().decode(), json.loads(msg.value()),
                    dict(msg.headers() or [])))
    consumer.close()
    return got


def xlrec(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XLREC_BOOTSTRAP": settings.bootstrap, "XLREC_TOPIC_PREFIX": settings.topic_prefix,
           "COLUMNS": "300"}
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.integration
def test_replay_resends_what_validates_now_skips_the_rest_and_is_safe_to_run_twice(
        kafka_settings: Settings) -> None:
    create_topics(kafka_settings)
    write(kafka_settings, letters(kafka_settings))

    tail = xlrec(kafka_settings, "tail", "dlq", "--from-beginning", "--max", "6", "--timeout", "20")
    assert tail.returncode == 0, tail.stderr
    for shown in ("key_mismatch", "clicks must be keyed by user_id", "processing_error", "[bold]boom[/]",
                  "looks like unix milliseconds", "invalid_json", "truncated (value): original",
                  f"from {kafka_settings.topic('clicks')}[0]@3", "Markup [/] crash"):
        assert shown in tail.stdout, (shown, tail.stdout)

    dry = xlrec(kafka_settings, "dlq", "replay", "--dry-run")
    assert dry.returncode == 3, dry.stderr
    assert "would re-send 3, still invalid 2, truncated skipped 1" in dry.stdout
    assert drain(kafka_settings, ["items", "clicks", "reviews"], wait_s=2) == []

    first = xlrec(kafka_settings, "dlq", "replay")
    print(first.stdout, first.stderr)
    assert first.returncode == 3, first.stderr  # letters were left: still invalid, truncated
    assert "re-sent 3, still invalid 2, truncated skipped 1" in first.stdout
    clicks, reviews = kafka_settings.topic("clicks"), kafka_settings.topic("reviews")
    assert f"from {clicks}[0]@6: still invalid: field 'ts': timestamp 1700000000000 looks like unix " \
           "milliseconds" in first.stderr
    assert f"from {clicks}[0]@7: still invalid: not valid UTF-8 JSON" in first.stderr
    assert f"from {reviews}[0]@8: truncated (value), 2000121 bytes originally: skipped" in first.stderr
    resent = drain(kafka_settings, ["items", "clicks", "reviews"])
    assert sorted((kind, key, value.get("event_id", value.get("item_id"))) for kind, key, value, _ in resent) == [
        ("clicks", "u1", "c1"), ("items", "i9", "i9"), ("reviews", "u2", "r1")]
    dlq = kafka_settings.topic("dlq")
    assert all(h[REPLAYED_FROM].decode().startswith(f"{dlq}:") for *_, h in resent)

    again = xlrec(kafka_settings, "dlq", "replay")
    assert again.returncode == 0, again.stderr
    assert "re-sent 0, still invalid 0, truncated skipped 0" in again.stdout
    assert len(drain(kafka_settings, ["items", "clicks", "reviews"], wait_s=2)) == 3  # nothing twice

    write(kafka_settings, [letter_of(kafka_settings, "clicks", json.dumps({**CLICK, "event_id": "c2"}).encode(),
                                     b"u1", Reason.PROCESSING_ERROR, "RuntimeError: x", 9)])
    third = xlrec(kafka_settings, "dlq", "replay")
    assert third.returncode == 0, third.stderr
    assert "re-sent 1, still invalid 0, truncated skipped 0" in third.stdout

    # --from-offset looks at old letters again (here as a dry run: nothing sent, nothing committed)
    review = xlrec(kafka_settings, "dlq", "replay", "--from-offset", "0", "--dry-run")
    assert "would re-send 4, still invalid 2, truncated skipped 1" in review.stdout
    assert len(drain(kafka_settings, ["items", "clicks", "reviews"], wait_s=2)) == 4


SETTINGS = Settings(bootstrap="127.0.0.1:9", topic_prefix="t.")


def as_letter(kind: str, value: bytes, headers: list[tuple[str, bytes]] | None = None, offset: int = 0
              ) -> DeadLetter:
    raw = headers if headers is not None else dead_letter_headers(f"t.{kind}", 0, 0, Reason.SCHEMA, "bad")
    return DeadLetter("t.dlq", 0, offset, b"k", value, parse_headers(raw))


def test_the_kind_comes_from_the_source_topic_else_from_the_event_type() -> None:
    assert source_kind(as_letter("clicks", b"{}"), SETTINGS) == "clicks"
    internal = dead_letter_headers("t.worker-user-events-repartition", 0, 0, Reason.SCHEMA, "bad")
    assert source_kind(as_letter("x", b'{"type": "review"}', internal), SETTINGS) == "reviews"
    assert source_kind(as_letter("x", b'{"type": "recommendation"}', internal), SETTINGS) is None
    assert source_kind(as_letter("x", b"[1]", internal), SETTINGS) is None
    assert source_kind(as_letter("recommendations", b"{}"), SETTINGS) is None


def test_replay_decides_per_letter_without_a_broker() -> None:
    report = ReplayReport(dry_run=True)
    big_key, big_value, big_headers = fit(b"u1", b"x" * 2_000_000,
                                          dead_letter_headers("t.clicks", 0, 0, Reason.SCHEMA, "bad"))
    for letter in [as_letter("clicks", json.dumps(CLICK).encode()),
                   as_letter("clicks", json.dumps({**CLICK, "ts": "1700000000"}).encode()),
                   DeadLetter("t.dlq", 0, 2, big_key, big_value, parse_headers(big_headers)),
                   as_letter("recommendations", b"{}")]:
        _replay_one(letter, SETTINGS, report, None, lambda *_: None)
    assert [destination for _, destination in report.resent] == ["t.clicks"]
    assert [why[:40] for _, why in report.invalid] == [
        "field 'ts': expected a number, got the s", "t.recommendations is not an input topic "]
    assert len(report.truncated) == 1
    assert report.summary == "would re-send 1, still invalid 2, truncated skipped 1"


def test_a_letter_is_printed_literally_with_its_reason() -> None:
    console = Console(record=True, width=300)
    headers = dead_letter_headers("t.items", 1, 41, Reason.PROCESSING_ERROR, "RuntimeError: [/] \u202eevil")
    letter = as_letter("items", json.dumps(ITEM).encode(), headers)
    print_letter(console, letter)
    text: Any = console.export_text()
    assert "t.dlq[0]@0" in text and "from t.items[1]@41" in text and "key 'k'" in text
    assert "processing_error: RuntimeError: [/] \\u202eevil" in text
    assert '"title": "Markup [/] crash"' in text


@pytest.mark.integration
def test_a_letter_the_broker_refuses_is_not_committed_past_and_exits_1(kafka_settings: Settings) -> None:
    """The clicks topic refuses messages over 64 bytes: the re-send fails, the run exits 1 and
    commits nothing past that letter, so once the topic is fixed the next run re-sends it."""
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

    missing = xlrec(kafka_settings, "dlq", "replay")  # no topics yet: one line, no traceback
    assert missing.returncode == 1 and f"no dead-letter topic '{kafka_settings.topic('dlq')}' yet" in missing.stderr
    admin = AdminClient(kafka_settings.connection().librdkafka())
    clicks = kafka_settings.topic("clicks")
    admin.create_topics([NewTopic(clicks, 1, 1, config={"max.message.bytes": "64"})])[clicks].result()
    create_topics(kafka_settings)
    write(kafka_settings, [letter_of(kafka_settings, "clicks", json.dumps(CLICK).encode(), b"u1",
                                     Reason.PROCESSING_ERROR, "RuntimeError: x", 1)])
    failed = xlrec(kafka_settings, "dlq", "replay")
    assert failed.returncode == 1, (failed.stdout, failed.stderr)
    assert "not re-sent" in failed.stderr and "re-sent 0, still invalid 0, truncated skipped 0, failed to " \
           "re-send 1; committed nothing new" in failed.stdout
    resource = ConfigResource("topic", clicks, incremental_configs=[
        ConfigEntry("max.message.bytes", "1048588", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource])[resource].result()
    retried = xlrec(kafka_settings, "dlq", "replay")
    assert retried.returncode == 0, retried.stderr
    assert "re-sent 1, still invalid 0, truncated skipped 0" in retried.stdout
    assert [(kind, key) for kind, key, *_ in drain(kafka_settings, ["clicks"], wait_s=2)] == [("clicks", "u1")]
