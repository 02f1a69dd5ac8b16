"""Dead letters: a message that fails to decode, validate or process goes to the `dlq` topic
with its original bytes and key, plus where it came from and why, and the worker goes on.

Value = the original bytes, untouched (an operator can replay them after a fix). Headers:
`xlrec-source-topic`, `xlrec-source-partition`, `xlrec-source-offset`, `xlrec-reason` (a
short code, also the metrics label), `xlrec-error` (one readable line), `xlrec-failed-ts`.

A dead letter always fits: an original larger than MAX_DEAD_LETTER_BYTES (a 20 MB review sent
gzip-compressed passes the broker's size check as a small batch) keeps a prefix only, with
`xlrec-truncated` (`value`, `key` or both), `xlrec-original-bytes` and `xlrec-original-sha256`
(and `xlrec-original-key-bytes`, `xlrec-original-key-sha256` for a long key); such a letter is
evidence, never replayable (`xlrec dlq replay` skips it). The header names are the contract in
`streams.contracts.dead_letters`. And the agent goes on only once the broker acknowledged the dead
letter: a write that fails is retried, so the batch is never acknowledged (and committed) without it.
"""

from __future__ import annotations

import hashlib
import logging
import time

import faust

from encoders.base import EncoderError
from streams.worker import metrics
from streams.worker.backoff import BACKOFF_MAX_S, BACKOFF_START_S, Backoff
# The header contract lives in streams.contracts (tools read it without Faust); re-exported here.
from streams.contracts.dead_letters import HEADER_PREFIX as HEADER_PREFIX
from streams.contracts.dead_letters import TRUNCATED as TRUNCATED
from streams.contracts.dead_letters import parse_headers as parse_headers
from streams.contracts.schemas import InvalidEvent

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 1_000
# Key, value and headers of a dead letter stay under 900 KiB: below Kafka's default
# max.message.bytes (1,048,588) and max.request.size (1 MiB) with room for the batch and record
# overhead, so a dead letter fits even on a dlq topic created with the broker's defaults (Faust
# declares it so when `xlrec topics` did not create it with its 16 MiB) and through any producer
# left at its default. Valid events are smaller (review texts <= 200,000 characters), so only
# what is poison anyway, or a rare huge valid event failing later, is cut.
MAX_DEAD_LETTER_BYTES = 900 * 1024
MAX_KEY_BYTES = 1024   # event keys are ids of <= 128 characters


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


def fit(key: bytes | None, value: bytes, headers: list[tuple[str, bytes]],
        limit: int = MAX_DEAD_LETTER_BYTES) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """The dead letter cut to `limit` bytes (key + value + headers): prefixes of an over-long key
    and value, with headers giving their original sizes and sha256 (to match the letter with
    the producer's copy). Unchanged when it fits."""
    headers = list(headers)
    truncated = []
    if key is not None and len(key) > MAX_KEY_BYTES:
        headers += _original("key-", key)
        key = key[:MAX_KEY_BYTES]
        truncated.append("key")
    if len(key or b"") + len(value) + _headers_bytes(headers) > limit:
        headers += _original("", value)
        room = limit - len(key or b"") - _headers_bytes(headers) - _headers_bytes([(TRUNCATED, b"key,value")])
        value = value[:max(room, 0)]
        truncated.append("value")
    if truncated:
        headers.append((TRUNCATED, ",".join(truncated).encode()))
    return key, value, headers


def _original(what: str, data: bytes) -> list[tuple[str, bytes]]:
    return [(f"{HEADER_PREFIX}original-{what}bytes", str(len(data)).encode()),
            (f"{HEADER_PREFIX}original-{what}sha256", hashlib.sha256(data).hexdigest().encode())]


def _headers_bytes(headers: list[tuple[str, bytes]]) -> int:
    """Bytes the headers take in a record (names and values; varint lengths rounded up)."""
    return sum(len(k.encode()) + len(v) + 10 for k, v in headers)


class DeadLetterQueue:
    """Sends failed messages to the dlq topic and counts them per reason."""

    def __init__(self, topic: faust.TopicT) -> None:
        self.topic = topic
        self.sent = 0

    async def send(self, message: faust.types.tuples.Message, exc: BaseException,
                   reason: str | None = None) -> None:
        """Dead-letter one consumed message; `reason` defaults to `classify(exc)`. Returns once
        the broker acknowledged the letter: until then the caller's batch is not acknowledged,
        so a failed write (broker away, topic refusing it) is retried, never skipped past."""
        reason = reason or classify(exc)
        error = describe(exc)
        log.warning("dead letter from %s[%d]@%d: %s (%s)", message.topic, message.partition,
                    message.offset, reason, error)
        value = message.value if isinstance(message.value, bytes) else b""
        key = message.key if isinstance(message.key, bytes) or message.key is None else None
        key, value, headers = fit(key, value, dead_letter_headers(
            message.topic, message.partition, message.offset, reason, error))
        backoff = Backoff(BACKOFF_START_S, BACKOFF_MAX_S)
        while True:
            try:
                await (await self.topic.send(key=key, value=value, headers=headers))
                break
            except Exception as write_error:  # whatever failed: retry, never go on without it
                log.error("dead letter from %s[%d]@%d not written (%s: %s); retrying in %.1fs",
                          message.topic, message.partition, message.offset,
                          type(write_error).__name__, write_error, backoff.delay)
                await backoff.sleep()
        metrics.DEAD_LETTERS.labels(reason=reason).inc()
        self.sent += 1
