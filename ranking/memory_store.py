"""`MemoryStore`: the VectorStore protocol on a numpy matrix, exact cosine search.

For evaluation and tests: no files, no server, and fast for catalogs of up to ~100k items.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from ranking.catalog import grow
from ranking.store import Hit, ItemPoint
from ranking.vectors import unit


class MemoryStore:
    """In-process vector store; rows of deleted items are recycled."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._vecs = np.zeros((0, dim), np.float32)
        self._live = np.zeros(0, bool)
        self._rows: dict[str, int] = {}
        self._ids: list[str | None] = []
        self._payloads: list[dict] = []
        self._free: list[int] = []

    def upsert(self, points: Sequence[ItemPoint], *, defer: bool = False) -> None:
        for p in points:
            v = np.asarray(p.vector, np.float32).reshape(-1)
            if v.shape[0] != self.dim:
                raise ValueError(f"item {p.item_id!r}: vector has {v.shape[0]} dimensions, the store has {self.dim}")
            row = self._rows.get(p.item_id)
            if row is None:
                row = self._free.pop() if self._free else len(self._ids)
                if row == len(self._ids):
                    self._ids.append(None)
                    self._payloads.append({})
                self._vecs, self._live = grow(self._vecs, row + 1), grow(self._live, row + 1)
                self._rows[p.item_id] = row
                self._ids[row] = p.item_id
            self._vecs[row] = unit(v)
            self._live[row] = True
            self._payloads[row] = dict(p.payload)

    def delete(self, item_ids: Sequence[str]) -> None:
        for item_id in item_ids:
            row = self._rows.pop(item_id, None)
            if row is not None:
                self._live[row] = False
                self._ids[row] = None
                self._payloads[row] = {}
                self._free.append(row)

    def get(self, item_ids: Sequence[str]) -> dict[str, ItemPoint]:
        out = {}
        for item_id in item_ids:
            row = self._rows.get(item_id)
            if row is not None:
                out[item_id] = ItemPoint(item_id, self._vecs[row].copy(), dict(self._payloads[row]))
        return out

    def search(self, vector: np.ndarray, k: int, *, exclude: Collection[str] = (),
               langs: Collection[str] | None = None, payload: bool = True) -> list[Hit]:
        n = len(self._ids)
        if n == 0 or k <= 0:
            return []
        q = unit(np.asarray(vector, np.float32).reshape(-1))
        scores = np.where(self._live[:n], self._vecs[:n] @ q, -np.inf)
        for item_id in exclude:
            row = self._rows.get(item_id)
            if row is not None:
                scores[row] = -np.inf
        if langs is not None:
            wanted = set(langs)
            for r in np.flatnonzero(np.isfinite(scores)):
                if not wanted.intersection(self._payloads[r].get("langs", ())):
                    scores[r] = -np.inf
        finite = np.flatnonzero(np.isfinite(scores))
        order = finite[np.lexsort((finite, -scores[finite]))][:k]
        return [Hit(self._ids[r], float(scores[r]), dict(self._payloads[r]) if payload else {}) for r in order]

    def count(self) -> int:
        return len(self._rows)

    def optimize(self) -> None:
        """Exact search needs no index."""

    def maintain(self) -> None:
        """Exact search needs no index."""

    def close(self) -> None:
        """Nothing to release."""
