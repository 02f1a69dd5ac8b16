"""Small vector helpers: unit normalisation, a compact JSON codec, and language centering.

Multilingual encoders place texts of one language near a shared language direction, so a
user vector built from German reviews looks "German" more than it looks like its topics.
`LanguageCentering` removes each language's mean direction, estimated online from the
stream, which leaves the part of a vector that is about the content.
"""

from __future__ import annotations

import base64

import numpy as np

EPS = 1e-9


def one_blas_thread() -> None:
    """Keep numpy's BLAS to the calling thread for the rest of the process. The engine's
    products are small (a catalog of up to `exact_search_items` times one vector), and a
    second BLAS thread only waits on the cores the event loop and the text lane use: on the
    loaded 2-core machine one 5,000-20,000 x 384 product took 8-38 ms with OpenBLAS's threads
    against 0.6-3.4 ms with one."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def unit(v: np.ndarray) -> np.ndarray:
    """`v / |v|` as float32 (a zero vector stays zero)."""
    v = np.asarray(v, dtype=np.float32)
    n = float(np.linalg.norm(v))
    return v / n if n > EPS else np.zeros_like(v)


def unit_rows(m: np.ndarray) -> np.ndarray:
    """Row-wise `unit` for a matrix."""
    m = np.asarray(m, dtype=np.float32)
    n = np.linalg.norm(m, axis=1, keepdims=True)
    return np.where(n > EPS, m / np.maximum(n, EPS), 0.0).astype(np.float32)


def encode_vector(v: np.ndarray) -> str:
    """A unit-direction vector as base64 int8 (d bytes; ~0.4% error), for JSON profiles.

    The direction is what matters for cosine scores, and int8 keeps a 384-d vector at 512
    characters, so a profile with two vectors fits in 2 KB.
    """
    v = np.asarray(v, dtype=np.float32)
    scale = float(np.max(np.abs(v))) if v.size else 0.0
    q = np.zeros(v.shape, dtype=np.int8) if scale <= EPS else np.round(v / scale * 127).astype(np.int8)
    return base64.b64encode(q.tobytes()).decode("ascii")


def decode_vector(s: str) -> np.ndarray:
    """Inverse of `encode_vector`, returned as a unit float32 vector."""
    q = np.frombuffer(base64.b64decode(s), dtype=np.int8).astype(np.float32)
    return unit(q)


class LanguageCentering:
    """Running mean direction per language; `neutral` subtracts it and re-normalises.

    `learn` takes vectors of texts known to be in `lang` (reviews). Until a language has
    `min_count` vectors its estimate is too noisy, so the global mean is used instead; until
    `min_count` vectors in all, nothing is subtracted (the mean of one text is that text, and
    subtracting it would leave the worker's first review text with no direction at all).
    """

    def __init__(self, dim: int, min_count: int = 20) -> None:
        self.dim = dim
        self.min_count = min_count
        self.sums: dict[str, np.ndarray] = {}
        self.counts: dict[str, int] = {}
        self.total = np.zeros(dim, dtype=np.float64)
        self.n = 0

    def learn(self, vector: np.ndarray, lang: str | None) -> None:
        key = lang or "und"
        if key not in self.sums:
            self.sums[key] = np.zeros(self.dim, dtype=np.float64)
            self.counts[key] = 0
        self.sums[key] += vector
        self.counts[key] += 1
        self.total += vector
        self.n += 1

    def mean(self, lang: str | None) -> np.ndarray:
        key = lang or "und"
        if self.counts.get(key, 0) >= self.min_count:
            return (self.sums[key] / self.counts[key]).astype(np.float32)
        if self.n >= self.min_count:
            return (self.total / self.n).astype(np.float32)
        return np.zeros(self.dim, dtype=np.float32)

    def neutral(self, vector: np.ndarray, lang: str | None) -> np.ndarray:
        """The vector without its language's mean direction, unit length."""
        return unit(np.asarray(vector, dtype=np.float32) - self.mean(lang))

    def state(self) -> dict:
        return {"dim": self.dim, "min_count": self.min_count, "sums": self.sums,
                "counts": self.counts, "total": self.total, "n": self.n}

    @classmethod
    def from_state(cls, state: dict) -> LanguageCentering:
        obj = cls(state["dim"], state["min_count"])
        obj.sums, obj.counts = state["sums"], state["counts"]
        obj.total, obj.n = state["total"], state["n"]
        return obj
