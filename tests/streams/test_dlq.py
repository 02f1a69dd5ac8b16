"""`classify`: each exception type the worker can meet maps to its dead-letter reason; encoder
failures are recognised by type (`encoders.base.EncoderError`), not by the module they come from."""

from __future__ import annotations

import pytest

from encoders.base import EncoderError, EncoderInputError
from encoders.export import ExportError
from encoders.onnx_encoder import EncoderDeviceError
from encoders.sources import SourceError
from ranking.qdrant_store import StoreError
from streams.contracts.schemas import InvalidEvent
from streams.worker.dlq import KeyMismatch, Reason, classify, dead_letter_headers, parse_headers


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
