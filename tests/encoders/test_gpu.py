"""The CUDA path. Runs only where onnxruntime offers CUDAExecutionProvider; skips elsewhere."""

from __future__ import annotations

import pytest

from encoders.bench import cosines
from encoders.onnx_encoder import CUDA, OnnxEncoder, cuda_available

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not cuda_available(),
                                 reason="onnxruntime has no CUDAExecutionProvider on this machine")]


def test_cuda_fp16_runs_on_the_gpu_and_matches_cpu_fp32(fp32_encoder: OnnxEncoder,
                                                      steam_sample: list[str]) -> None:
    from encoders.factory import load_default_encoder

    gpu = load_default_encoder(device="cuda")
    assert gpu.provider == CUDA and gpu.variant == "fp16"
    texts = steam_sample[:200]
    c = cosines(gpu.encode(texts), fp32_encoder.encode(texts))
    assert c.min() >= 0.99


def test_auto_device_picks_cuda() -> None:
    from encoders.onnx_encoder import resolve_device

    assert resolve_device("auto") == "cuda"
