"""Review texts that wait for the encoder survive crashes and rebalances.

A review's event updates the profile at once; its text is embedded later, in a lane of its own
(streams.worker.agents). While it waits, the review's offset is kept in the user's users-table value
(`"t"`, the offsets in the user's partition of the reviews topic) and removed in the same
write that folds the text in. So a worker that restarts, or takes over the partition, finds
in its recovered table which texts were never folded and reads them again from Kafka; a text
is folded into a profile exactly once (the lane skips offsets no longer waiting).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from faust.types.tuples import Message

from streams.contracts.settings import Settings

MAX_WAITING_TEXTS = 32   # per user; older ones are dropped from the list (bounded table values)
READ_TIMEOUT_S = 60.0


def waiting(envelope: Mapping[str, Any] | None) -> list[int]:
    """Offsets of the user's reviews whose text is not folded in yet."""
    return list(envelope.get("t", ())) if envelope else []


def add_waiting(offsets: list[int], offset: int) -> list[int]:
    return [*offsets, offset][-MAX_WAITING_TEXTS:]


def with_waiting(envelope: dict[str, Any], offsets: Iterable[int]) -> dict[str, Any]:
    """The envelope with exactly these waiting offsets (no `"t"` key when none: small values)."""
    out = {k: v for k, v in envelope.items() if k != "t"}
    offsets = list(offsets)
    if offsets:
        out["t"] = offsets
    return out


def user_partition(envelope: Mapping[str, Any]) -> int | None:
    """The user's partition, from the offsets the envelope records (`"reviews:3"` -> 3)."""
    for key in envelope.get("o", ()):
        return int(key.rsplit(":", 1)[1])
    return None


def to_read(envelopes: Iterable[Mapping[str, Any] | None], owned: set[int],
            queued: set[tuple[int, int]]) -> dict[int, set[int]]:
    """partition -> waiting offsets of owned users that are not in the lane's queue."""
    out: dict[int, set[int]] = {}
    for envelope in envelopes:
        offsets = waiting(envelope)
        partition = user_partition(envelope) if offsets else None  # type: ignore[arg-type]
        if partition is None or partition not in owned:
            continue
        missing = {o for o in offsets if (partition, o) not in queued}
        if missing:
            out.setdefault(partition, set()).update(missing)
    return out


def read_messages(settings: Settings, topic: str, wanted: Mapping[int, set[int]],
                  timeout: float = READ_TIMEOUT_S) -> list[Message]:
    """The messages at these offsets, read with a group-less consumer (blocking: run it in a
    thread). Offsets not in the topic (deleted by retention) are not returned."""
    consumer = Consumer({**settings.kafka_config(), "group.id": f"xlrec-texts-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "fetch.message.max.bytes": 20 * 1024 * 1024})
    out: list[Message] = []
    try:
        left = {}
        for p, offsets in wanted.items():
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            there = {o for o in offsets if low <= o < high}
            if there:
                left[p] = there
        if not left:
            return out
        consumer.assign([TopicPartition(topic, p, min(offsets)) for p, offsets in left.items()])
        deadline = time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            partition, offset = msg.partition(), msg.offset()
            offsets = left.get(partition)
            if offsets is None:
                continue
            if offset in offsets:
                out.append(Message(topic=topic, partition=partition, offset=offset,
                                   timestamp=msg.timestamp()[1] / 1000.0, timestamp_type=0,
                                   headers=msg.headers() or [], key=msg.key(), value=msg.value(),
                                   checksum=None))
            offsets.discard(offset)
            if not offsets or offset >= max(offsets, default=-1):
                left.pop(partition)
                consumer.incremental_unassign([TopicPartition(topic, partition)])
    finally:
        consumer.close()
    return out
