"""Consumer SDK for apps: iterate the recommendations topic as `Recommendation` objects."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from confluent_kafka import Consumer, KafkaError

from streams.contracts.schemas import InvalidEvent, Recommendation, parse_event
from streams.contracts.settings import Settings, get_settings
from streams.contracts.topics import check_broker


class RecommendationConsumer:
    """Yields recommendations (optionally for one user), committing offsets as it goes.

    `group_id=None` uses a throw-away group: good for tailing, not for apps that must
    resume where they stopped.
    """

    def __init__(self, settings: Settings | None = None, *, group_id: str | None = None,
                 user_id: str | None = None, from_beginning: bool = False):
        self.settings = settings or get_settings()
        check_broker(self.settings)
        self.user_id = user_id
        self.skipped = 0
        self._consumer = Consumer({
            **self.settings.connection().librdkafka(),
            "group.id": group_id or f"xlrec-tail-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            "enable.auto.commit": True,
        })
        self._consumer.subscribe([self.settings.topic("recommendations")])

    def poll(self, timeout_s: float = 1.0) -> Recommendation | None:
        """The next recommendation that matches, or None when none came within `timeout_s`."""
        msg = self._consumer.poll(timeout_s)
        if msg is None:
            return None
        error = msg.error()
        if error:
            if error.code() == KafkaError._PARTITION_EOF:
                return None
            raise RuntimeError(f"consumer error: {error.str()}")
        if self.user_id is not None and (msg.key() or b"").decode("utf-8", "replace") != self.user_id:
            return None
        try:
            rec = parse_event("recommendations", msg.value())  # type: ignore[arg-type]
        except InvalidEvent:
            self.skipped += 1
            return None
        assert isinstance(rec, Recommendation)
        return rec

    def __iter__(self) -> Iterator[Recommendation]:
        while True:
            rec = self.poll()
            if rec is not None:
                yield rec

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> RecommendationConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
