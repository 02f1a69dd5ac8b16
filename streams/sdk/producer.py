"""Producer SDK for apps: validate, key and send events with an idempotent Kafka producer."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from streams.contracts.forget import ForgetUser, forget_request
from streams.contracts.schemas import (ClickEvent, Event, InvalidEvent, ItemEvent, RecommendationRequest,
                             ReviewEvent, parse_event)
from streams.contracts.settings import Settings, get_settings
from streams.contracts.topics import check_broker

TOPIC_OF: dict[type[Event], str] = {
    ItemEvent: "items", ClickEvent: "clicks", ReviewEvent: "reviews",
    RecommendationRequest: "requests", ForgetUser: "requests",
}


def validate_event(event: Event | dict[str, Any] | bytes | str, kind: str | None = None) -> Event:
    """The input event `send` would send, or InvalidEvent: also `xlrec validate`'s check, offline."""
    if not isinstance(event, Event):
        if kind is None:
            raise InvalidEvent("raw events need a kind: items, clicks, reviews or requests")
        event = parse_event(kind, event)
    if type(event) not in TOPIC_OF:
        raise InvalidEvent(f"{type(event).__name__} is not an input event")
    return event


class DeliveryError(RuntimeError):
    """Kafka did not acknowledge one or more events."""


class EventProducer:
    """Sends xlrec events to their topics, keyed as DESIGN.md says (users by user_id, items by item_id).

    Use as a context manager: leaving the block flushes and raises DeliveryError if the
    broker rejected anything. `send` raises InvalidEvent before anything reaches Kafka.
    """

    def __init__(self, settings: Settings | None = None, *, check: bool = True,
                 on_delivery: Callable[[str | None, Message], None] | None = None,
                 **overrides: Any):
        self.settings = settings or get_settings()
        if check:
            check_broker(self.settings)
        conf = {**self.settings.connection().librdkafka(), "enable.idempotence": True, "acks": "all",
                "linger.ms": 5, "compression.type": "lz4",
                # murmur2 like Java clients, aiokafka and Faust: a user stays on one partition
                "partitioner": "murmur2_random", "message.timeout.ms": 30000, **overrides}
        self._producer = Producer(conf)
        self._on_delivery = on_delivery
        self._lock = threading.Lock()
        self.delivered = 0
        self.failed: list[str] = []

    def send(self, event: Event | dict[str, Any] | bytes | str, kind: str | None = None) -> Event:
        """Validate and enqueue one event. `kind` ('items', 'clicks', ...) is needed for raw input."""
        event = validate_event(event, kind)
        topic_kind = TOPIC_OF[type(event)]
        key = event.key  # type: ignore[attr-defined]  # every input event (TOPIC_OF) has a key
        self._produce(self.settings.topic(topic_kind), key, event.to_json())
        return event

    def forget(self, user_id: str) -> ForgetUser:
        """Ask xlrec to erase a user (streams.worker.privacy). It travels on the user's event path
        (the requests topic, keyed by user_id), after every event this producer sent before: those
        are acknowledged first. Returns once the broker has the request; the worker erases the
        user when it reaches it (then `GET /users/{id}/profile` answers 404)."""
        request = forget_request(user_id, time.time())   # an invalid user_id raises here
        self.flush()
        self.send(request)
        self.flush()
        return request

    def send_raw(self, topic: str, key: bytes | str | None, value: bytes) -> None:
        """Send bytes as they are (tests and fault injection: no validation)."""
        self._produce(topic, key, value)

    def _produce(self, topic: str, key: bytes | str | None, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=self._delivered)
                break
            except BufferError:  # local queue full: let librdkafka drain it
                self._producer.poll(0.1)
        self._producer.poll(0)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        with self._lock:
            if err is None:
                self.delivered += 1
            else:
                self.failed.append(f"{msg.topic()}: {err.str()}")
        if self._on_delivery:
            self._on_delivery(None if err is None else err.str(), msg)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait for every queued event; raise DeliveryError if any was not acknowledged."""
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise DeliveryError(f"{remaining} events still unacknowledged after {timeout_s:.0f}s")
        if self.failed:
            raise DeliveryError(f"{len(self.failed)} events failed, first: {self.failed[0]}")

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._producer.flush(5.0)
