"""Side-by-side encoder benchmark: PyTorch fp32, ONNX fp32, ONNX int8 (and CUDA fp16 where
a GPU exists) embed the same Steam review texts, interleaved chunk by chunk so that noise
from other processes on the machine hits every engine alike."""

from __future__ import annotations

import csv
import gzip
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from encoders.base import Encoder
from encoders.config import physical_cores

STEAM_EVENTS = Path("shared") / "data" / "steam" / "events-dev.tsv.gz"
# The encoder issue's bar for the CPU int8 model, in one interleaved run.
TARGET_INT8_RATIO = 2.5
TARGET_MIN_COSINE = 0.98


def steam_events_path() -> Path:
    """../shared/data/steam/events-dev.tsv.gz beside the repository (or the working directory),
    or events-dev.tsv.gz in $XLREC_STEAM_DIR when that is set."""
    if steam_dir := os.environ.get("XLREC_STEAM_DIR"):
        return Path(steam_dir) / STEAM_EVENTS.name
    repo = Path(__file__).resolve().parents[1]
    for root in (repo.parent, Path.cwd().parent):
        if (root / STEAM_EVENTS).is_file():
            return root / STEAM_EVENTS
    return repo.parent / STEAM_EVENTS


def load_review_texts(n: int, path: Path | None = None, skip: int = 0) -> list[str]:
    """The first `n` non-empty review texts of the Steam events file, after `skip` of them."""
    path = path or steam_events_path()
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; the Steam data lives in ../shared/data/steam/")
    csv.field_size_limit(sys.maxsize)
    texts: list[str] = []
    seen = 0
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            text = row.get("review") or ""
            if not text.strip():
                continue
            seen += 1
            if seen > skip:
                texts.append(text)
                if len(texts) >= n:
                    break
    if len(texts) < n:
        raise ValueError(f"{path} has only {len(texts)} non-empty reviews after {skip}, {n} requested")
    return texts


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    na = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(na, 1e-12)


def run_interleaved(engines: dict[str, Encoder], texts: Sequence[str],
                    chunk: int = 250) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Seconds per engine for all texts, end to end (tokenisation included), and the vectors.
    Each chunk goes through every engine, in an order that rotates from chunk to chunk."""
    names = list(engines)
    seconds = dict.fromkeys(names, 0.0)
    vectors = {name: np.zeros((len(texts), engines[name].dim), np.float32) for name in names}
    for name in names:                       # warm-up: sessions, allocators, caches
        engines[name].encode(list(texts[:16]))
    for k, start in enumerate(range(0, len(texts), chunk)):
        part = list(texts[start:start + chunk])
        for name in names[k % len(names):] + names[:k % len(names)]:
            t0 = time.perf_counter()
            vectors[name][start:start + len(part)] = engines[name].encode(part)
            seconds[name] += time.perf_counter() - t0
    return seconds, vectors


def machine_info(threads: int) -> dict[str, Any]:
    """Enough about the machine to compare runs."""
    import onnxruntime as ort

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "physical_cores": physical_cores(), "threads": threads,
            "platform": platform.platform(), "python": platform.python_version(),
            "onnxruntime": ort.__version__, "providers": ort.get_available_providers()}


def bench(texts: Sequence[str], *, max_tokens: int, threads: int, batch_size: int | None,
          source: str, chunk: int, cuda_batch_sizes: Sequence[int] = (64, 256),
          with_pytorch: bool = True, spin: bool = True, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every engine on `texts` and return the JSON report (see the encoder issue)."""
    from encoders.export import export_model
    from encoders.onnx_encoder import OnnxEncoder, cuda_available

    gpu = cuda_available()
    say("checking the model cache (exports on first use)")
    model_dir = export_model(source, ["fp32", "int8"] + (["fp16"] if gpu else [])).model_dir
    cpu_threads = threads or physical_cores()
    engines: dict[str, Encoder] = {}
    if with_pytorch:
        from encoders.torch_encoder import TorchEncoder

        engines["pytorch_fp32"] = TorchEncoder(source, max_tokens=max_tokens, threads=cpu_threads,
                                               batch_size=batch_size)
    for variant in ("fp32", "int8"):
        engines[f"onnx_{variant}"] = OnnxEncoder(model_dir, device="cpu", variant=variant,
                                                 max_tokens=max_tokens, threads=cpu_threads,
                                                 batch_size=batch_size, spin=spin)
    say(f"embedding {len(texts)} texts with {', '.join(engines)} (interleaved chunks of {chunk})")
    load_before = os.getloadavg()
    seconds, vectors = run_interleaved(engines, texts, chunk)
    load_after = os.getloadavg()
    report: dict[str, Any] = {"texts": len(texts), "engines": {}}
    for name, secs in seconds.items():
        batcher = getattr(engines[name], "batcher", None)
        report["engines"][name] = {
            "sentences_per_s": round(len(texts) / secs, 2), "seconds": round(secs, 2),
            "batching": ("one token length per batch, no padding" if getattr(batcher, "exact_lengths", False)
                         else "length-sorted, padded")}
        if with_pytorch and name != "pytorch_fp32":
            c = cosines(vectors[name], vectors["pytorch_fp32"])
            report["engines"][name]["cosine_vs_pytorch_fp32"] = {"min": round(float(c.min()), 5),
                                                                 "mean": round(float(c.mean()), 5)}
    if gpu:
        for size in cuda_batch_sizes:
            gpu_engine = OnnxEncoder(model_dir, device="cuda", variant="fp16", max_tokens=max_tokens,
                                     batch_size=size, max_batch_tokens=size * max_tokens)
            say(f"embedding {len(texts)} texts with onnx_cuda_fp16 (batch {size})")
            gpu_secs, vecs = run_interleaved({"cuda": gpu_engine}, texts, chunk=len(texts))
            key = "onnx_cuda_fp16" if size == cuda_batch_sizes[-1] else f"onnx_cuda_fp16_batch{size}"
            c = cosines(vecs["cuda"], vectors["onnx_fp32"])
            report["engines"][key] = {"sentences_per_s": round(len(texts) / gpu_secs["cuda"], 2),
                                      "seconds": round(gpu_secs["cuda"], 2), "batch_size": size,
                                      "cosine_vs_cpu_fp32": {"min": round(float(c.min()), 5),
                                                             "mean": round(float(c.mean()), 5)}}
    if with_pytorch:
        base = report["engines"]["pytorch_fp32"]["sentences_per_s"]
        report["ratio_vs_pytorch"] = {name: round(e["sentences_per_s"] / base, 2)
                                      for name, e in report["engines"].items() if name != "pytorch_fp32"}
        report["max_abs_diff_onnx_fp32_vs_pytorch"] = float(
            np.abs(vectors["onnx_fp32"] - vectors["pytorch_fp32"]).max())
    c = cosines(vectors["onnx_int8"], vectors["onnx_fp32"])
    report["cosine_int8_vs_fp32"] = {"min": round(float(c.min()), 5), "mean": round(float(c.mean()), 5)}
    if with_pytorch:
        ratio = report["ratio_vs_pytorch"]["onnx_int8"]
        cos = report["engines"]["onnx_int8"]["cosine_vs_pytorch_fp32"]["min"]
        report["target"] = {"int8_ratio_vs_pytorch": TARGET_INT8_RATIO, "min_cosine_vs_pytorch": TARGET_MIN_COSINE,
                            "met": ratio >= TARGET_INT8_RATIO and cos >= TARGET_MIN_COSINE}
    report["max_tokens"] = max_tokens
    report["onnx_threads_spin"] = spin
    report["batch_size"] = {name: getattr(getattr(e, "batcher", None), "batch_size", None)
                            for name, e in engines.items()}
    report["machine"] = machine_info(cpu_threads)
    # Other processes on the machine slow PyTorch's spinning threads more than onnxruntime's
    # sleeping ones, which inflates the ratios: a run is only comparable at a similar load.
    report["machine"]["load_average_1min"] = {"before": round(load_before[0], 2),
                                              "after": round(load_after[0], 2)}
    if with_pytorch:
        import torch

        report["machine"]["torch"] = torch.__version__
    return report


def format_table(report: dict[str, Any]) -> str:
    """A short plain-text table of the report."""
    ratios = report.get("ratio_vs_pytorch", {})
    lines = [f"{'engine':<26}{'sentences/s':>12}{'vs pytorch':>12}{'min cos vs pytorch':>20}"]
    for name, e in report["engines"].items():
        ratio = f"{ratios[name]:.2f}x" if name in ratios else ("1.00x" if name == "pytorch_fp32" else "-")
        cos_pt = e.get("cosine_vs_pytorch_fp32", {}).get("min")
        lines.append(f"{name:<26}{e['sentences_per_s']:>12.1f}{ratio:>12}"
                     f"{'-' if cos_pt is None else f'{cos_pt:.4f}':>20}")
    cos = report["cosine_int8_vs_fp32"]
    lines.append(f"int8 vs fp32 cosine: min {cos['min']:.4f}, mean {cos['mean']:.4f} "
                 f"({report['texts']} texts, max {report['max_tokens']} tokens)")
    if "target" in report:
        t = report["target"]
        lines.append(f"target int8 >= {t['int8_ratio_vs_pytorch']}x pytorch at min cosine >= "
                     f"{t['min_cosine_vs_pytorch']}: {'met' if t['met'] else 'NOT met'}")
    load = report.get("machine", {}).get("load_average_1min")
    if load:
        lines.append(f"load average (1 min) {load['before']} before, {load['after']} after")
    return "\n".join(lines)
