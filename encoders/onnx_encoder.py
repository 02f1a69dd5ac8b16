"""The runtime encoder: onnxruntime on an exported model, CUDA (fp16) when the machine has
it, CPU (int8) otherwise. Needs neither torch nor transformers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from encoders.base import EncoderError
from encoders.config import default_device, default_max_tokens, default_threads, physical_cores
from encoders.export import CPU_DISABLED_OPTIMIZERS, MODEL_FILES, OUTPUT_NAME, TOKENIZER_FILE, read_manifest
from encoders.text import BATCH_LIMITS, PAD_FREE_CPU_LIMITS, Batch, TextBatcher

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
DEVICE_VARIANT = {"cuda": "fp16", "cpu": "int8"}


class EncoderDeviceError(EncoderError, RuntimeError):
    """The requested device cannot be used; the message says what to install or set."""


def cuda_available() -> bool:
    """Whether the installed onnxruntime offers the CUDA provider (onnxruntime-gpu)."""
    import onnxruntime as ort

    return CUDA in ort.get_available_providers()


def resolve_device(device: str | None = None) -> str:
    """'cpu' or 'cuda' from an explicit choice, else XLREC_DEVICE, where 'auto' means CUDA
    when onnxruntime offers it."""
    if device is None:
        device = default_device()
    device = device.lower()
    if device not in ("auto", "cpu", "cuda"):
        raise EncoderDeviceError(f"unknown device {device!r}; use auto, cpu or cuda")
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device == "cuda" and not cuda_available():
        raise EncoderDeviceError(
            "device 'cuda' was requested but onnxruntime has no CUDAExecutionProvider; install "
            "the GPU build (pip install '.[gpu]', i.e. onnxruntime-gpu instead of onnxruntime) "
            "or set XLREC_DEVICE=cpu")
    return device


class OnnxEncoder:
    """Encoder protocol over an exported model folder (see encoders.export)."""

    def __init__(self, model_dir: Path, *, device: str | None = None, variant: str | None = None,
                 max_tokens: int | None = None, threads: int | None = None,
                 batch_size: int | None = None, max_batch_tokens: int | None = None,
                 spin: bool = False) -> None:
        import onnxruntime as ort

        manifest = read_manifest(model_dir)
        if manifest is None:
            raise FileNotFoundError(f"no exported encoder in {model_dir}; run: xlrec encoder export")
        self.device = resolve_device(device)
        self.variant = variant or DEVICE_VARIANT[self.device]
        if self.variant not in manifest["variants"]:
            flag = {"int8": " --int8", "fp16": " --fp16"}.get(self.variant, "")
            raise FileNotFoundError(f"{model_dir} has no {self.variant} model; run: "
                                    f"xlrec encoder export --source {manifest['source']['ref']}{flag}")
        self.model_dir = model_dir
        self.manifest = manifest
        max_tokens = max_tokens or default_max_tokens()
        self.max_tokens = min(max_tokens, int(manifest["max_positions"]))
        default_batch, default_tokens = PAD_FREE_CPU_LIMITS if self.device == "cpu" else BATCH_LIMITS[self.device]
        # On the CPU every batch holds texts of one token length: nothing is padded, and the
        # small batches this makes are faster there (see docs/encoder-speed.md). The GPU
        # wants large batches, so it keeps length-sorted padded ones.
        self.batcher = TextBatcher(model_dir / TOKENIZER_FILE, max_tokens=self.max_tokens,
                                   prefix=manifest["prefix"], batch_size=batch_size or default_batch,
                                   max_batch_tokens=max_batch_tokens or default_tokens,
                                   exact_lengths=self.device == "cpu")

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = default_threads() if threads is None else threads
        options.intra_op_num_threads = threads if threads > 0 else physical_cores()
        options.inter_op_num_threads = 1
        # Idle threads sleep instead of spinning: the worker shares its cores with Kafka
        # clients and other processes, and under contention this is faster, too. A process
        # that only encodes (`spin`: the review-text lane, at a low priority) lets them spin
        # between the steps of a batch, as PyTorch's do: 1.29x faster on an idle machine
        # (docs/encoder-speed.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self.spin = spin
        providers: list[Any] = [CPU]
        if self.device == "cuda":
            providers = [(CUDA, {"device_id": 0}), CPU]
        path = model_dir / MODEL_FILES[self.variant]
        self.session = ort.InferenceSession(
            str(path), options, providers=providers,
            disabled_optimizers=list(CPU_DISABLED_OPTIMIZERS) if self.device == "cpu" else None)
        if self.device == "cuda" and self.session.get_providers()[0] != CUDA:
            raise EncoderDeviceError(f"onnxruntime could not start CUDA for {path}; "
                                     "check the CUDA/cuDNN libraries or set XLREC_DEVICE=cpu")
        self.threads = options.intra_op_num_threads
        self._name = str(manifest["name"])
        self._dim = int(manifest["dim"])

    @property
    def name(self) -> str:
        """The model's name; every variant of one model shares the vector space."""
        return self._name

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def provider(self) -> str:
        """The execution provider actually running the model."""
        return self.session.get_providers()[0]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts; rows come back in input order, each of unit length."""
        out = self.batcher.embed(texts, self._dim, self._run)
        if self.variant == "fp16":   # the norm was computed in half precision
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def _run(self, batch: Batch) -> np.ndarray:
        feed = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        return self.session.run([OUTPUT_NAME], feed)[0]

    def __repr__(self) -> str:
        return (f"OnnxEncoder(name={self._name!r}, variant={self.variant!r}, "
                f"provider={self.provider!r}, max_tokens={self.max_tokens}, threads={self.threads})")
