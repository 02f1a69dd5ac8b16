"""`classify`: each exception type the worker can meet maps to its dead-letter reason; encoder
failures are recognised by type (`encoders.base.EncoderError`), not by the module they come from.
A dead letter always fits (a prefix, the original's size and sha256), and `send` returns only
once it is written: a failed write is retried, so the batch is never acknowledged past it."""

from __future__ import annotations

import asyncio
import hashlib
from types import SimpleNamespace
from typing import Any

import pytest

from encoders.base import EncoderError, EncoderInputError
from encoders.export import ExportError
from encoders.onnx_encoder import EncoderDeviceError
from encoders.sources import SourceError
from ranking.qdrant_store import StoreError
from streams.contracts.schemas import InvalidEvent
from streams.worker import metrics
from streams.worker.dlq import (
    MAX_DEAD_LETTER_BYTES,
    DeadLetterQueue,
    KeyMismatch,
    Reason,
    classify,
    dead_letter_headers,
    fit,
    parse_headers,
)


@pytest.mark.parametrize(("exc", "reason"), [
    (KeyMismatch("key 'a' is not the event's user_id 'b'"), Reason.KEY_MISMATCH),
    (InvalidEvent("not valid UTF-8 JSON: x"), Reason.INVALID_JSON),
    (InvalidEvent("expected a JSON object, got list"), Reason.INVALID_JSON),
    (InvalidEvent("field 'ts': bad"), Reason.SCHEMA),
    (EncoderError("x"), Reason.ENCODER_ERROR),
    (EncoderInputError("texts must be str"), Reason.ENCODER_ERROR),
    (EncoderDeviceError("no CUDA"), Reason.ENCODER_ERROR),
    (SourceError("no model"), Reason.ENCODER_ERROR),
    (ExportError("cosine too low"), Reason.ENCODER_ERROR),
    (StoreError("store down"), Reason.PROCESSING_ERROR),
    (RuntimeError("x"), Reason.PROCESSING_ERROR),
    (ValueError("x"), Reason.PROCESSING_ERROR),
    (FileNotFoundError("no exported encoder"), Reason.PROCESSING_ERROR),
])
def test_classify(exc: BaseException, reason: str) -> None:
    assert classify(exc) == reason


def test_encoder_errors_keep_their_builtin_bases() -> None:
    """Code that catches ValueError / RuntimeError still catches them."""
    assert issubclass(EncoderInputError, ValueError)
    for cls in (EncoderDeviceError, SourceError, ExportError):
        assert issubclass(cls, RuntimeError) and issubclass(cls, EncoderError)


def test_dead_letter_reasons_and_headers() -> None:
    assert classify(InvalidEvent("not valid UTF-8 JSON: x")) == Reason.INVALID_JSON
    assert classify(InvalidEvent("field 'ts': bad")) == Reason.SCHEMA
    assert classify(RuntimeError("x")) == Reason.PROCESSING_ERROR
    headers = parse_headers(dead_letter_headers("t.clicks", 1, 2, "schema", "field 'x': é"))
    assert headers["error"] == "field 'x': é" and float(headers["failed-ts"]) > 0


BIG_REVIEW = b'{"type": "review", "text": "' + b"x" * (20 * 1024 * 1024) + b'"}'


def test_a_dead_letter_too_large_keeps_a_prefix_and_the_original_size_and_sha256() -> None:
    headers = dead_letter_headers("t.reviews", 3, 7, Reason.SCHEMA, "field 'text': too long")
    key, value, out = fit(b"u1", BIG_REVIEW, headers)
    h = parse_headers(out)
    assert key == b"u1" and BIG_REVIEW.startswith(value) and len(value) > MAX_DEAD_LETTER_BYTES // 2
    assert len(key) + len(value) + sum(len(k) + len(v) for k, v in out) <= MAX_DEAD_LETTER_BYTES
    assert h["truncated"] == "value" and h["reason"] == "schema" and h["source-offset"] == "7"
    assert h["original-bytes"] == str(len(BIG_REVIEW))
    assert h["original-sha256"] == hashlib.sha256(BIG_REVIEW).hexdigest()
    # A letter that fits is untouched; a key too long is cut too (ids are <= 128 characters).
    assert fit(b"u1", b"{}", headers) == (b"u1", b"{}", headers)
    key, value, out = fit(b"k" * 5000, b"{}", headers)
    h = parse_headers(out)
    assert (key, value, h["truncated"], h["original-key-bytes"]) == (b"k" * 1024, b"{}", "key", "5000")


class FlakyTopic:
    """A dlq topic whose first writes fail as the broker fails them (the future, not the call)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.written: list[tuple[bytes | None, bytes, dict[str, str]]] = []

    async def send(self, *, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> Any:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if len(value) > MAX_DEAD_LETTER_BYTES:
            raise RuntimeError("MessageSizeTooLargeError: the message is too large")
        if self.failures:
            self.failures -= 1
            future.set_exception(RuntimeError("KafkaTimeoutError"))
        else:
            self.written.append((key, value, parse_headers(headers)))
            future.set_result(None)
        return future


def test_a_dead_letter_is_written_before_send_returns_retried_when_the_write_fails() -> None:
    topic = FlakyTopic(failures=2)
    dlq = DeadLetterQueue(topic)  # type: ignore[arg-type]
    message = SimpleNamespace(topic="t.reviews", partition=0, offset=41, key=b"u1", value=BIG_REVIEW)
    counted = metrics.DEAD_LETTERS.labels(reason=Reason.SCHEMA)._value.get()
    asyncio.run(dlq.send(message, InvalidEvent("field 'text': too long")))  # type: ignore[arg-type]
    assert len(topic.written) == 1 and topic.written[0][2]["original-bytes"] == str(len(BIG_REVIEW))
    assert dlq.sent == 1 and metrics.DEAD_LETTERS.labels(reason=Reason.SCHEMA)._value.get() == counted + 1
