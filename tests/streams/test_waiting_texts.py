"""`streams.worker.waiting_texts.read_messages`: reading waiting review texts again from a real
broker by offset. (Which offsets to read: tests/streams/test_review_text_lane.py.)"""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from streams.contracts.settings import Settings
from streams.contracts.topics import create_topics
from streams.worker.waiting_texts import read_messages


@pytest.mark.integration
def test_messages_are_read_again_by_offset(kafka_settings: Settings) -> None:
    settings = kafka_settings.model_copy(update={"partitions": 2})
    create_topics(settings)
    topic = settings.topic("reviews")
    producer = Producer(settings.connection().librdkafka())
    for i in range(20):
        producer.produce(topic, key=f"u{i}".encode(), value=f"text {i}".encode(), partition=i % 2)
    producer.flush(10)
    # Partition 0 holds texts 0, 2, ..., 18 at offsets 0..9; partition 1 texts 1, 3, ... 19.
    got = read_messages(settings, topic, {0: {2, 7}, 1: {0, 9}})
    assert sorted((m.partition, m.offset, m.value) for m in got) == [
        (0, 2, b"text 4"), (0, 7, b"text 14"), (1, 0, b"text 1"), (1, 9, b"text 19")]
    assert read_messages(settings, topic, {0: {50}}) == []   # past the end: not waited for
