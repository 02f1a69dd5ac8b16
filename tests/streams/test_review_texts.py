"""The bookkeeping of waiting review texts (streams.worker.review_texts) and reading them again from a
real broker by offset."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from streams.worker.review_texts import MAX_WAITING_TEXTS, add_waiting, read_messages, to_read, with_waiting
from streams.contracts.settings import Settings
from streams.contracts.topics import create_topics


def test_waiting_offsets_are_bounded_and_absent_when_none() -> None:
    offsets: list[int] = []
    for offset in range(MAX_WAITING_TEXTS + 5):
        offsets = add_waiting(offsets, offset)
    assert offsets == list(range(5, MAX_WAITING_TEXTS + 5))
    assert with_waiting({"p": {}, "t": [1]}, []) == {"p": {}}
    assert with_waiting({"p": {}}, [3]) == {"p": {}, "t": [3]}


def test_only_owned_partitions_and_texts_not_queued_are_read() -> None:
    envelopes = [{"o": {"reviews:0": 9}, "t": [4, 9]}, {"o": {"clicks:1": 2, "reviews:1": 5}, "t": [5]},
                 {"o": {"reviews:2": 1}}, None]
    assert to_read(envelopes, owned={0, 1}, queued={(0, 4)}) == {0: {9}, 1: {5}}
    assert to_read(envelopes, owned={2}, queued=set()) == {}


@pytest.mark.integration
def test_messages_are_read_again_by_offset(kafka_settings: Settings) -> None:
    settings = kafka_settings.model_copy(update={"partitions": 2})
    create_topics(settings)
    topic = settings.topic("reviews")
    producer = Producer(settings.kafka_config())
    for i in range(20):
        producer.produce(topic, key=f"u{i}".encode(), value=f"text {i}".encode(), partition=i % 2)
    producer.flush(10)
    # Partition 0 holds texts 0, 2, ..., 18 at offsets 0..9; partition 1 texts 1, 3, ... 19.
    got = read_messages(settings, topic, {0: {2, 7}, 1: {0, 9}})
    assert sorted((m.partition, m.offset, m.value) for m in got) == [
        (0, 2, b"text 4"), (0, 7, b"text 14"), (1, 0, b"text 1"), (1, 9, b"text 19")]
    assert read_messages(settings, topic, {0: {50}}) == []   # past the end: not waited for
