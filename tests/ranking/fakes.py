"""A tiny deterministic encoder for unit tests: bag of hashed words, no model files."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np


class FakeEncoder:
    """Texts sharing words get similar unit vectors; `calls` counts texts embedded."""

    name = "fake-bow"

    def __init__(self, dim: int = 32) -> None:
        self.dim = dim
        self.calls = 0

    def _word(self, word: str) -> np.ndarray:
        return np.random.default_rng(zlib.crc32(word.encode())).normal(size=self.dim)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += len(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            v = sum((self._word(w) for w in text.lower().split()), np.zeros(self.dim))
            v = v if np.linalg.norm(v) > 0 else self._word("<empty>")
            out[i] = v / np.linalg.norm(v)
        return out
