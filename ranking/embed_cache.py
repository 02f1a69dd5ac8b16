"""An on-disk embedding cache in front of any Encoder, keyed by text hash and model.

Embedding the reviews is the whole cost of a cold evaluation run; with this cache a rerun
only reads vectors back. One SQLite file per model key (name, variant, token budget), so
vectors of different models never mix. Vectors are stored as float16 (cosines move < 1e-3).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from encoders.base import Encoder

BATCH = 256


def text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def model_key(encoder: Encoder) -> str:
    """Name plus what changes the vectors (variant, token budget) when the encoder says."""
    parts = [encoder.name]
    for attr in ("variant", "max_tokens"):
        value = getattr(encoder, attr, None)
        if value is not None:
            parts.append(f"{attr}={value}")
    return "-".join(parts).replace("/", "_").replace(" ", "")


class CachedEncoder:
    """Encoder protocol; texts already embedded by this model are read from disk."""

    def __init__(self, encoder: Encoder, cache_dir: Path) -> None:
        self.inner = encoder
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.path = cache_dir / f"{model_key(encoder)}.sqlite"
        self.db = sqlite3.connect(self.path)
        self.db.execute("CREATE TABLE IF NOT EXISTS vec (k BLOB PRIMARY KEY, v BLOB NOT NULL)")
        self.hits = 0
        self.misses = 0

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dim(self) -> int:
        return self.inner.dim

    def lookup(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        for i in range(0, len(unique), 500):
            chunk = unique[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for k, v in self.db.execute(f"SELECT k, v FROM vec WHERE k IN ({marks})", chunk):
                found[k] = np.frombuffer(v, np.float16).astype(np.float32)
        return found

    def encode(self, texts: Sequence[str],
               progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Rows in input order; `progress(n)` is called as batches of misses are embedded."""
        keys = [text_key(t) for t in texts]
        found = self.lookup(keys)
        out = np.empty((len(texts), self.dim), np.float32)
        todo: dict[bytes, list[int]] = {}
        for i, k in enumerate(keys):
            if k in found:
                out[i] = found[k]
            else:
                todo.setdefault(k, []).append(i)
        self.hits += len(texts) - sum(len(v) for v in todo.values())
        # Globally length-sorted, so each encoder call pads texts of similar length.
        pending = sorted(todo, key=lambda k: len(texts[todo[k][0]]))
        for start in range(0, len(pending), BATCH):
            chunk = pending[start:start + BATCH]
            vecs = self.inner.encode([texts[todo[k][0]] for k in chunk])
            self.db.executemany("INSERT OR REPLACE INTO vec VALUES (?, ?)",
                                [(k, v.astype(np.float16).tobytes()) for k, v in zip(chunk, vecs)])
            self.db.commit()
            for k, v in zip(chunk, vecs):
                out[todo[k]] = v.astype(np.float16).astype(np.float32)
            self.misses += len(chunk)
            if progress is not None:
                progress(sum(len(todo[k]) for k in chunk))
        return out

    def close(self) -> None:
        self.db.close()
