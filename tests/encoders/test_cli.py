"""`xlrec encoder export` and `xlrec bench encoder` through the real command line app."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from streams.cli import app


def test_cli_module_imports_nothing_heavy() -> None:
    code = ("import sys, encoders.cli; heavy = {'torch', 'transformers', 'onnxruntime'} & set(sys.modules);"
            " assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2], timeout=60)


def test_export_command_reuses_the_cache(model_dir: Path) -> None:
    result = CliRunner().invoke(app, ["encoder", "export", "--int8"])
    assert result.exit_code == 0, result.output
    assert "cache valid, reused" in result.output and "model.int8.onnx" in result.output


def test_bench_encoder_writes_the_report(model_dir: Path, steam_events: Path, tmp_path: Path) -> None:
    """`xlrec bench encoder` embeds Steam review texts: it needs the Steam data."""
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", "encoder", "--texts", "24", "--chunk", "12", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert set(report["engines"]) >= {"pytorch_fp32", "onnx_fp32", "onnx_int8"}
    assert all(e["sentences_per_s"] > 0 for e in report["engines"].values())
    assert set(report["ratio_vs_pytorch"]) >= {"onnx_fp32", "onnx_int8"}
    assert 0.98 <= report["cosine_int8_vs_fp32"]["min"] <= report["cosine_int8_vs_fp32"]["mean"] <= 1.0
    assert report["max_tokens"] == 256 and report["machine"]["cpu_count"] >= 1
    assert report["max_abs_diff_onnx_fp32_vs_pytorch"] <= 1e-4
    assert "onnx_int8" in result.output
    int8 = report["engines"]["onnx_int8"]
    assert 0.98 <= int8["cosine_vs_pytorch_fp32"]["min"] <= int8["cosine_vs_pytorch_fp32"]["mean"] <= 1.0
    assert "no padding" in int8["batching"] and "padded" in report["engines"]["pytorch_fp32"]["batching"]
    assert report["target"]["int8_ratio_vs_pytorch"] == 2.5 and isinstance(report["target"]["met"], bool)
    assert set(report["machine"]["load_average_1min"]) == {"before", "after"}
