"""Dead letters: a message that fails to decode, validate or process goes to the `dlq` topic
with its original bytes and key, plus where it came from and why, and the worker goes on.

Value = the original bytes, untouched (an operator can replay them after a fix). Headers:
`xlrec-source-topic`, `xlrec-source-partition`, `xlrec-source-offset`, `xlrec-reason` (a
short code, also the metrics label), `xlrec-error` (one readable line), `xlrec-failed-ts`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust

from encoders.base import EncoderError
from streams.worker import metrics
from streams.contracts.schemas import InvalidEvent

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 1_000
HEADER_PREFIX = "xlrec-"


class Reason:
    """Reason codes: few and stable, because they are Prometheus label values."""

    INVALID_JSON = "invalid_json"
    SCHEMA = "schema"
    KEY_MISMATCH = "key_mismatch"
    ENCODER_ERROR = "encoder_error"
    PROCESSING_ERROR = "processing_error"
    RANKING_ERROR = "ranking_error"


class KeyMismatch(InvalidEvent):
    """The Kafka key is not the event's partitioning id (its state would land on the wrong worker)."""


def classify(exc: BaseException) -> str:
    """Reason code of an exception raised while decoding or processing a message."""
    if isinstance(exc, KeyMismatch):
        return Reason.KEY_MISMATCH
    if isinstance(exc, InvalidEvent):
        return Reason.INVALID_JSON if exc.reason.startswith(("not valid UTF-8 JSON", "expected a JSON object")) \
            else Reason.SCHEMA
    if isinstance(exc, EncoderError):
        return Reason.ENCODER_ERROR
    return Reason.PROCESSING_ERROR


def describe(exc: BaseException) -> str:
    """One line, capped: never the message's content beyond what the exception says."""
    text = exc.reason if isinstance(exc, InvalidEvent) else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 1] + "…"


def dead_letter_headers(topic: str, partition: int, offset: int, reason: str,
                        error: str) -> list[tuple[str, bytes]]:
    return [(f"{HEADER_PREFIX}source-topic", topic.encode()),
            (f"{HEADER_PREFIX}source-partition", str(partition).encode()),
            (f"{HEADER_PREFIX}source-offset", str(offset).encode()),
            (f"{HEADER_PREFIX}reason", reason.encode()),
            (f"{HEADER_PREFIX}error", error.encode("utf-8", "replace")),
            (f"{HEADER_PREFIX}failed-ts", f"{time.time():.3f}".encode())]


def parse_headers(headers: Any) -> dict[str, str]:
    """Dead-letter headers as a dict without the prefix (for tools and tests)."""
    items = headers.items() if isinstance(headers, dict) else headers or []
    return {k.removeprefix(HEADER_PREFIX): (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v))
            for k, v in items if k.startswith(HEADER_PREFIX)}


class DeadLetterQueue:
    """Sends failed messages to the dlq topic and counts them per reason."""

    def __init__(self, topic: faust.TopicT) -> None:
        self.topic = topic
        self.sent = 0

    async def send(self, message: faust.types.tuples.Message, exc: BaseException,
                   reason: str | None = None) -> None:
        """Dead-letter one consumed message; `reason` defaults to `classify(exc)`."""
        reason = reason or classify(exc)
        error = describe(exc)
        metrics.DEAD_LETTERS.labels(reason=reason).inc()
        self.sent += 1
        log.warning("dead letter from %s[%d]@%d: %s (%s)", message.topic, message.partition,
                    message.offset, reason, error)
        value = message.value if isinstance(message.value, bytes) else b""
        key = message.key if isinstance(message.key, bytes) or message.key is None else None
        await self.topic.send(key=key, value=value,
                              headers=dead_letter_headers(message.topic, message.partition,
                                                          message.offset, reason, error))
