"""`load_default_encoder`: the one call other packages use."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from encoders import export as export_mod
from encoders import factory
from encoders.onnx_encoder import CPU, EncoderDeviceError, OnnxEncoder, cuda_available, resolve_device


def test_default_encoder_on_this_machine(model_dir: Path) -> None:
    encoder = factory.load_default_encoder()
    assert isinstance(encoder, OnnxEncoder)
    expected = ("cuda", "fp16") if cuda_available() else ("cpu", "int8")
    assert (encoder.device, encoder.variant) == expected
    assert encoder.encode(["hello"]).shape == (1, 384)


def test_valid_cache_is_not_exported_again(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("nothing may be exported when the cache is valid")

    monkeypatch.setattr(export_mod, "_export", no_export)
    assert factory.load_default_encoder(device="cpu").provider == CPU


def test_xlrec_device_setting_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XLREC_DEVICE", "cpu")
    assert resolve_device() == "cpu"


def test_cache_dir_defaults_to_xlrec_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XLREC_CACHE_DIR", str(tmp_path))
    assert export_mod.models_root() == tmp_path / "models"
    monkeypatch.delenv("XLREC_CACHE_DIR")
    assert export_mod.models_root() == Path.home() / ".cache" / "xlrec" / "models"
    assert export_mod.models_root(tmp_path / "x") == tmp_path / "x" / "models"


@pytest.mark.skipif(cuda_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_build_is_a_clear_error() -> None:
    with pytest.raises(EncoderDeviceError, match="onnxruntime-gpu"):
        factory.load_default_encoder(device="cuda")


def test_unknown_device_is_a_clear_error() -> None:
    with pytest.raises(EncoderDeviceError, match="unknown device"):
        resolve_device("tpu")


def test_runtime_needs_no_torch(model_dir: Path) -> None:
    """The worker imports only onnxruntime and tokenizers to embed."""
    code = textwrap.dedent("""
        import sys
        from encoders.factory import load_default_encoder
        load_default_encoder(device="cpu").encode(["Bonjour"])
        heavy = {"torch", "transformers"} & set(sys.modules)
        assert not heavy, heavy
    """)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2], timeout=120)


def test_threads_spin_only_where_asked(model_dir: Path) -> None:
    """The worker's encoder shares cores with the event path: its idle threads sleep; the
    review-text process only encodes, and lets them spin (same vectors either way)."""
    sleeping = factory.load_default_encoder(device="cpu", threads=2)
    spinning = OnnxEncoder(model_dir, device="cpu", variant="int8", threads=2, spin=True)
    key = "session.intra_op.allow_spinning"
    assert sleeping.session.get_session_options().get_session_config_entry(key) == "0"
    assert spinning.session.get_session_options().get_session_config_entry(key) == "1"
    texts = ["a quiet puzzle game", "ein ruhiges Rätselspiel"]
    assert abs(sleeping.encode(texts) - spinning.encode(texts)).max() < 1e-5
