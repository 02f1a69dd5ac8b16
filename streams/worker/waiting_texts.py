"""Reads again the review texts whose users still wait for them (`review_text_lane`): the
messages at given offsets of the reviews topic, with a group-less consumer."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any, cast

from confluent_kafka import Consumer, TopicPartition
from faust.types.tuples import Message

from streams.contracts.settings import Settings

READ_TIMEOUT_S = 60.0


def read_messages(settings: Settings, topic: str, wanted: Mapping[int, set[int]],
                  timeout: float = READ_TIMEOUT_S) -> list[Message]:
    """The messages at these offsets, read with a group-less consumer (blocking: run it in a
    thread). Offsets not in the topic (deleted by retention) are not returned."""
    consumer = Consumer({**settings.connection().librdkafka(), "group.id": f"xlrec-texts-{uuid.uuid4().hex[:8]}",
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
            if partition is None or offset is None or partition not in left:
                continue
            offsets = left[partition]
            if offset in offsets:
                out.append(Message(topic=topic, partition=partition, offset=offset,
                                   timestamp=msg.timestamp()[1] / 1000.0, timestamp_type=0,
                                   headers=cast(Any, msg.headers()) or [], key=msg.key(), value=msg.value(),
                                   checksum=None))
            offsets.discard(offset)
            if not offsets or offset >= max(offsets, default=-1):
                left.pop(partition)
                consumer.incremental_unassign([TopicPartition(topic, partition)])
    finally:
        consumer.close()
    return out
