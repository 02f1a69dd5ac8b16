"""User events on the wrong partition are re-routed to their user's partition.

A user's profile lives in one partition of the users table: the partition the SDK sends the
user to (murmur2 of the user_id, like Java clients, aiokafka and Faust). librdkafka clients (kcat,
confluent-kafka, Go, .NET, Node) partition by crc32 by default, so their events of the same user
may arrive on another partition, where another worker (or the same worker, with another users
table partition) would build a second profile. Like a Kafka Streams or Faust `group_by`, the users
agent forwards such an event, bytes and key untouched, to an internal topic of the consumer group
(`<prefix><group>-users-repartition`, `repartition_name`) at the user's partition; the agent
reads that topic too, co-partitioned with the input topics, and applies the event there. Events
already on their user's partition (the fast path) are applied at once.

The forwarded copy names where it came from (`xlrec-origin-topic`, `-partition`, `-offset`), and
the users table deduplicates a re-routed event by that origin, as it does a direct one by its
own position: a copy forwarded twice (the forwarding worker crashed before it committed) is
applied once. That holds because a batch is acknowledged, and its source offsets committed, only
once the broker acknowledged its forwarded copies (`Rerouter.forward`), and one producer sends
them in order: every copy of an origin offset comes after a copy of each earlier offset of the
same origin partition.

Ordering: a user's events that arrive on one partition are applied in that partition's order,
whether they were applied there or re-routed. Events of the same user that arrive on different
partitions (apps with different partitioners) are applied in the order the worker reads them,
as Kafka orders nothing across partitions; a re-routed event takes one more produce and fetch.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faust
from faust.types.tuples import Message

from streams.worker import metrics

ORIGIN_TOPIC = "xlrec-origin-topic"
ORIGIN_PARTITION = "xlrec-origin-partition"
ORIGIN_OFFSET = "xlrec-origin-offset"


@dataclass(frozen=True, slots=True)
class Arrival:
    """Where a user-path message entered xlrec: its kind, topic, partition and offset there,
    and, for a re-routed copy, its (partition, offset) in the repartition topic (`via`)."""

    kind: str
    topic: str
    partition: int
    offset: int
    via: tuple[int, int] | None = None

    def origin_message(self, message: Message) -> Message:
        """The message as it was consumed first (dead letters name the app's topic, so that
        they can be replayed there)."""
        if self.via is None:
            return message
        return Message(topic=self.topic, partition=self.partition, offset=self.offset,
                       timestamp=message.timestamp, timestamp_type=message.timestamp_type,
                       headers=[], key=message.key, value=message.value, checksum=None)


class NoOrigin(ValueError):
    """A message on the repartition topic without the origin headers xlrec writes."""


def _headers(message: Message) -> dict[str, bytes]:
    raw: Any = message.headers or []
    items = list(raw.items()) if isinstance(raw, dict) else list(raw)
    return {str(k): v for k, v in items if isinstance(v, bytes)}


def arrival(message: Message, kinds: dict[str, str], repartition_topic: str) -> Arrival:
    """The `Arrival` of a consumed message (`kinds`: topic -> kind of the input topics)."""
    if message.topic != repartition_topic:
        return Arrival(kinds[message.topic], message.topic, message.partition, message.offset)
    headers = _headers(message)
    try:
        topic = headers[ORIGIN_TOPIC].decode()
        partition, offset = int(headers[ORIGIN_PARTITION]), int(headers[ORIGIN_OFFSET])
    except (KeyError, ValueError, UnicodeDecodeError):
        raise NoOrigin(f"{repartition_topic} message without valid {ORIGIN_TOPIC}/-partition/-offset "
                       "headers (only xlrec writes this topic)") from None
    if topic not in kinds:
        raise NoOrigin(f"{repartition_topic} message from unknown topic {topic[:128]!r}")
    return Arrival(kinds[topic], topic, partition, offset, via=(message.partition, message.offset))


def text_key(message: Message, repartition_topic: str) -> int:
    """A review's entry in `UserRecord.waiting_texts`: its offset in the reviews topic, or
    -(offset + 1) for a re-routed review, whose text is read again from the repartition topic."""
    return -(message.offset + 1) if message.topic == repartition_topic else message.offset


def text_position(entry: int) -> tuple[bool, int]:
    """(whether in the repartition topic, offset) of a `waiting_texts` entry (`text_key`)."""
    return (True, -entry - 1) if entry < 0 else (False, entry)


class Rerouter:
    """Forwards messages to the repartition topic at their user's partition, in order, and
    returns once the broker acknowledged every one (acks=all)."""

    def __init__(self, topic: faust.TopicT) -> None:
        self.topic = topic

    async def forward(self, moves: Sequence[tuple[Message, str, int]]) -> None:
        """Forward (message, kind, user partition) in the order given; raises if any failed."""
        if not moves:
            return
        acks = []
        for message, _, partition in moves:
            headers = [(ORIGIN_TOPIC, message.topic.encode()),
                       (ORIGIN_PARTITION, str(message.partition).encode()),
                       (ORIGIN_OFFSET, str(message.offset).encode())]
            future = self.topic.as_future_message(
                key=message.key, value=message.value, partition=partition, timestamp=message.timestamp,
                headers=headers, key_serializer="raw", value_serializer="raw", eager_partitioning=True)
            # One at a time: the client appends each to its partition's batch before the next.
            acks.append(await future.message.channel.publish_message(future, wait=False))
        await asyncio.gather(*acks)
        for kind, n in Counter(kind for _, kind, _ in moves).items():
            metrics.EVENTS_REROUTED.labels(topic=kind).inc(n)
