"""The on-disk embedding cache: a second pass reads every vector back instead of encoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ranking.embed_cache import CachedEncoder, model_key
from tests.ranking.fakes import FakeEncoder


def test_second_pass_hits_the_cache(tmp_path: Path) -> None:
    texts = ["great game", "très bon jeu", "great game", "", "멋진 게임"]
    inner = FakeEncoder()
    cached = CachedEncoder(inner, tmp_path)
    first = cached.encode(texts)
    assert inner.calls == 4            # the duplicate is embedded once
    cached.close()

    inner2 = FakeEncoder()
    again = CachedEncoder(inner2, tmp_path)
    second = again.encode(texts)
    assert inner2.calls == 0 and again.hits == len(texts)
    np.testing.assert_allclose(first, second)
    np.testing.assert_allclose(first, inner.encode(texts), atol=2e-3)   # float16 storage
    assert again.name == inner.name and again.dim == inner.dim


def test_models_do_not_share_vectors(tmp_path: Path) -> None:
    a, b = FakeEncoder(), FakeEncoder()
    b.name = "other-model"
    CachedEncoder(a, tmp_path).encode(["x"])
    c = CachedEncoder(b, tmp_path)
    c.encode(["x"])
    assert c.misses == 1
    assert model_key(a) != model_key(b)
