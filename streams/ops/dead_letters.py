"""Reading the dead-letter topic (`xlrec tail dlq`) and replaying it (`xlrec dlq replay`).

Replay re-sends every letter that validates now (after a producer or validator fix) to the input
topic of its kind: the kind is the letter's `xlrec-source-topic` without the topic prefix (an
internal topic's letter goes by its `type` field instead), the value is the original bytes and
the key the event's partitioning id, as the SDK would send it, with an `xlrec-replayed-from`
header. Truncated letters are skipped (a prefix is not the event), still-invalid ones counted.

Safe to run twice: replay reads the dlq topic in its own consumer group (`<group_id>-dlq-replay`
by default), from that group's committed offsets up to the end the topic had when it started,
and commits once every re-sent letter is acknowledged: a second run starts after the letters the
first one examined (re-sent, still invalid or truncated alike) and re-sends nothing twice. If a
re-send fails, the commit stops before that letter, so the next run retries from there.
`from_offset` re-examines older letters (say, the still-invalid ones after a validator fix); the
worker ignores an event it has already applied by event_id, within each user's recent events.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from streams.contracts.dead_letters import REPLAYED_FROM, parse_headers
from streams.contracts.schemas import InvalidEvent
from streams.contracts.settings import Settings
from streams.contracts.topics import check_broker
from streams.sdk.producer import TOPIC_OF, validate_event

INPUT_KINDS = tuple(TOPIC_OF.values())
KIND_OF_TYPE = {model.model_fields["type"].default: kind for model, kind in TOPIC_OF.items()}
TIMEOUT_S = 10.0


class DeadLetterTopicMissing(RuntimeError):
    """The dlq topic does not exist (no worker or `xlrec topics create` made it yet)."""


@dataclass(frozen=True)
class DeadLetter:
    """One letter of the dlq topic: where it sits there, the original bytes and the headers."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]

    @classmethod
    def of(cls, msg: Message) -> DeadLetter:
        key, value = msg.key(), msg.value() or b""
        return cls(topic=msg.topic() or "", partition=msg.partition() or 0, offset=msg.offset() or 0,
                   key=key.encode() if isinstance(key, str) else key,
                   value=value.encode() if isinstance(value, str) else value, headers=parse_headers(msg.headers()))

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"

    @property
    def source(self) -> str:
        h = self.headers
        if "source-topic" not in h:
            return "unknown source"
        return f"{h['source-topic']}[{h.get('source-partition', '?')}]@{h.get('source-offset', '?')}"

    @property
    def truncated(self) -> str | None:
        """What was cut to make the letter fit (`value`, `key` or both), else None."""
        return self.headers.get("truncated")

    @property
    def failed_at(self) -> str:
        try:
            return datetime.fromtimestamp(float(self.headers["failed-ts"]), tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
        except (KeyError, ValueError):
            return "?"


def source_kind(letter: DeadLetter, settings: Settings) -> str | None:
    """The input kind the letter was read as: its source topic's, or for a topic that is not an
    input topic (an internal one), its `type` field's; None when neither says."""
    source = letter.headers.get("source-topic", "")
    if source.startswith(settings.topic_prefix) and source.removeprefix(settings.topic_prefix) in INPUT_KINDS:
        return source.removeprefix(settings.topic_prefix)
    try:
        declared = orjson.loads(letter.value).get("type")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return KIND_OF_TYPE.get(declared) if isinstance(declared, str) else None


def _consumer(settings: Settings, group: str) -> Consumer:
    return Consumer({**settings.connection().librdkafka(), "group.id": group, "enable.auto.commit": False,
                     "enable.auto.offset.store": False, "auto.offset.reset": "earliest",
                     "enable.partition.eof": True})


def _partitions(consumer: Consumer, topic: str) -> list[int]:
    meta = consumer.list_topics(topic, timeout=TIMEOUT_S).topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise DeadLetterTopicMissing(f"no dead-letter topic {topic!r} yet (nothing was dead-lettered, or "
                                     "the topics were never created)")
    return sorted(meta.partitions)


def follow(settings: Settings, *, from_beginning: bool, stop: Callable[[], bool]) -> Iterator[DeadLetter | None]:
    """Letters as they arrive (None while none comes, so the caller can time out); commits nothing."""
    check_broker(settings)
    topic = settings.topic("dlq")
    consumer = _consumer(settings, f"xlrec-tail-{time.time_ns():x}")
    try:
        partitions = _partitions(consumer, topic)
        start = []
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=TIMEOUT_S)
            start.append(TopicPartition(topic, p, low if from_beginning else high))
        consumer.assign(start)
        while not stop():
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                error = msg.error() if msg is not None else None
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(f"reading {topic}: {error.str()}")
                yield None
                continue
            yield DeadLetter.of(msg)
    finally:
        consumer.close()


@dataclass
class ReplayReport:
    """What one replay did: letters re-sent (or, in a dry run, that would be), still invalid (with
    why), truncated and skipped, re-sends the broker refused, and the offsets committed."""

    resent: list[tuple[DeadLetter, str]] = field(default_factory=list)   # (letter, destination topic)
    invalid: list[tuple[DeadLetter, str]] = field(default_factory=list)  # (letter, reason)
    truncated: list[DeadLetter] = field(default_factory=list)
    failed: list[tuple[DeadLetter, str]] = field(default_factory=list)   # (letter, delivery error)
    committed: dict[int, int] = field(default_factory=dict)
    unfinished: dict[int, int] = field(default_factory=dict)             # partition -> next offset to read
    dry_run: bool = False

    @property
    def summary(self) -> str:
        """`re-sent N, still invalid M, truncated skipped K` (`would re-send N, ...` in a dry run)."""
        verb = "would re-send" if self.dry_run else "re-sent"
        line = (f"{verb} {len(self.resent) - len(self.failed)}, still invalid {len(self.invalid)}, "
                f"truncated skipped {len(self.truncated)}")
        return line + (f", failed to re-send {len(self.failed)}" if self.failed else "")


def replay(settings: Settings, *, group: str | None = None, from_offset: int | None = None,
           dry_run: bool = False, timeout_s: float = 60.0) -> ReplayReport:
    """Re-send the dead letters that validate now; see the module's docstring for the rules."""
    check_broker(settings)
    topic = settings.topic("dlq")
    consumer = _consumer(settings, group or f"{settings.group_id}-dlq-replay")
    producer: Producer | None = None
    report = ReplayReport(dry_run=dry_run)
    try:
        partitions = _partitions(consumer, topic)
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=TIMEOUT_S)
        start: dict[int, int] = {}
        end: dict[int, int] = {}
        for tp in committed:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=TIMEOUT_S)
            first = from_offset if from_offset is not None else (tp.offset if tp.offset >= 0 else low)
            start[tp.partition], end[tp.partition] = max(first, low), high
        reading = {p for p in partitions if start[p] < end[p]}
        next_offset = dict(start)
        if not reading:
            return report
        consumer.assign([TopicPartition(topic, p, start[p]) for p in reading])
        if not dry_run:
            producer = Producer({**settings.connection().librdkafka(), "enable.idempotence": True,
                                 "acks": "all", "linger.ms": 5, "partitioner": "murmur2_random",
                                 "message.timeout.ms": 30000})
        failed_at: dict[int, int] = {}

        def delivered(letter: DeadLetter) -> Callable[[KafkaError | None, Message], None]:
            def done(err: KafkaError | None, _msg: Message) -> None:
                if err is not None:
                    report.failed.append((letter, err.str()))
                    failed_at[letter.partition] = min(failed_at.get(letter.partition, letter.offset),
                                                      letter.offset)
            return done

        deadline = time.monotonic() + timeout_s
        while reading and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    reading.discard(msg.partition() or 0)
                    continue
                raise RuntimeError(f"reading {topic}: {error.str()}")
            letter = DeadLetter.of(msg)
            if letter.offset >= end[letter.partition]:  # written after the replay started
                reading.discard(letter.partition)
                continue
            _replay_one(letter, settings, report, producer, delivered(letter))
            next_offset[letter.partition] = letter.offset + 1
            if next_offset[letter.partition] >= end[letter.partition]:
                reading.discard(letter.partition)
        report.unfinished = {p: next_offset[p] for p in reading}
        if producer is not None:
            if producer.flush(30.0):
                raise RuntimeError("the broker did not acknowledge every re-sent letter within 30s; "
                                   "nothing committed, run the replay again")
        if not dry_run:
            commits = {p: min(next_offset[p], failed_at.get(p, next_offset[p])) for p in start}
            commits = {p: o for p, o in commits.items() if o > start[p]}
            if commits:
                consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in commits.items()],
                                asynchronous=False)
            report.committed = commits
        return report
    finally:
        consumer.close()


def _replay_one(letter: DeadLetter, settings: Settings, report: ReplayReport, producer: Producer | None,
                on_delivery: Callable[[KafkaError | None, Message], None]) -> None:
    if letter.truncated:
        report.truncated.append(letter)
        return
    kind = source_kind(letter, settings)
    if kind is None:
        report.invalid.append((letter, f"{letter.headers.get('source-topic', 'no source topic')} is not an "
                                       "input topic and the value names no input event type"))
        return
    try:
        event = validate_event(letter.value, kind)
    except InvalidEvent as exc:
        report.invalid.append((letter, exc.reason))
        return
    destination = settings.topic(kind)
    key: Any = event.key  # type: ignore[attr-defined]  # every input event (TOPIC_OF) has a key
    if producer is not None:
        headers: list[tuple[str, str | bytes | None]] = [
            (REPLAYED_FROM, f"{letter.topic}:{letter.partition}:{letter.offset}".encode())]
        while True:
            try:
                producer.produce(destination, value=letter.value, key=key, headers=headers,
                                 on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    report.resent.append((letter, destination))
