"""Any text gives a unit vector or a clear error, and the same input gives the same output."""

from __future__ import annotations

import time

import numpy as np
import pytest

from encoders.base import EncoderInputError
from encoders.onnx_encoder import OnnxEncoder

ODD_TEXTS = {
    "empty": "",
    "spaces": "   ",
    "whitespace mix": "\n\t\r\u3000\u00a0",
    "1 MB of words": "lorem ipsum dolor " * 58_255,
    "1 MB, no spaces": "x" * 1_048_576,
    "1 MB of spaces around words": "start" + " " * 1_048_576 + "end",
    "emoji": "😀🔥👍🏽👨‍👩‍👧‍👦🏳️‍🌈" * 50,
    "mixed scripts": "Hello Привет 你好 こんにちは 안녕하세요 مرحبا שלום नमस्ते Γειά σου",
    "right-to-left": "\u202bمرحبا بالعالم\u202c and שלום עולם with \u200fRLM marks\u200f",
    "control characters": "\x00\x01\x02\x07\x08\x1b[31mred\x1b[0m\x7f\x9f",
    "lone high surrogate": "broken \ud83d text",
    "lone low surrogate": "\udc00 at the start",
    "surrogate pair as two code units": "\ud83d\ude00",
    "zero-width and combining": "e\u0301\u0301\u0301\u200b\u200c\u200d\ufeff" * 1000,
    "private use and noncharacters": "\ue000\uf8ff\ufdd0\uffff\U0010ffff",
    "replacement character": "\ufffd\ufffd",
    "only punctuation": "!!!???...,,,;;;",
    "very long single token repeat": "🙂" * 300_000,
}


@pytest.mark.parametrize("name", list(ODD_TEXTS))
def test_odd_text_gives_a_unit_vector(int8_encoder: OnnxEncoder, name: str) -> None:
    start = time.perf_counter()
    vectors = int8_encoder.encode([ODD_TEXTS[name]])
    assert time.perf_counter() - start < 30, "a single text must not take long, whatever its size"
    assert vectors.shape == (1, int8_encoder.dim) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    assert abs(float(np.linalg.norm(vectors[0])) - 1.0) < 1e-3


def test_all_odd_texts_in_one_batch_match_one_by_one_shape(int8_encoder: OnnxEncoder) -> None:
    texts = list(ODD_TEXTS.values())
    vectors = int8_encoder.encode(texts)
    assert vectors.shape == (len(texts), int8_encoder.dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)


def test_lone_surrogate_is_replaced_not_dropped(int8_encoder: OnnxEncoder) -> None:
    broken, replaced = int8_encoder.encode(["broken \ud83d text", "broken \ufffd text"])
    assert np.array_equal(broken, replaced)


@pytest.mark.parametrize("bad", [None, 42, b"bytes", ["nested"], 3.5])
def test_non_text_is_a_clear_error(int8_encoder: OnnxEncoder, bad: object) -> None:
    with pytest.raises(EncoderInputError, match=r"texts\[1\] is .*expected str"):
        int8_encoder.encode(["fine", bad])  # type: ignore[list-item]


def test_a_bare_string_is_a_clear_error(int8_encoder: OnnxEncoder) -> None:
    with pytest.raises(EncoderInputError, match="not a single str"):
        int8_encoder.encode("one text")


def test_no_texts_gives_an_empty_matrix(int8_encoder: OnnxEncoder) -> None:
    vectors = int8_encoder.encode([])
    assert vectors.shape == (0, int8_encoder.dim) and vectors.dtype == np.float32


def test_deterministic(int8_encoder: OnnxEncoder, steam_sample: list[str]) -> None:
    texts = steam_sample[:24] + list(ODD_TEXTS.values())[:6]
    first = int8_encoder.encode(texts)
    second = int8_encoder.encode(texts)
    assert np.array_equal(first, second)


def test_rows_follow_input_order(int8_encoder: OnnxEncoder) -> None:
    texts = ["a short one", "a much longer text about strategy games and their many mechanics", "mid length"]
    forward = int8_encoder.encode(texts)
    backward = int8_encoder.encode(texts[::-1])
    assert np.array_equal(forward, backward[::-1])


def test_truncation_at_max_tokens(model_dir) -> None:
    short = OnnxEncoder(model_dir, device="cpu", variant="int8", max_tokens=16)
    ids = short.batcher.tokenize(["word " * 1000, "two words"])
    assert len(ids[0]) == 16 and ids[0][-1] == ids[1][-1]   # </s> kept at the cut
    head = "The story is wonderful and the music is great."
    a, b = short.encode([head + " But then" * 200, head + " Completely different ending" * 200])
    assert float(a @ b) > 0.9   # both cut inside the shared head
