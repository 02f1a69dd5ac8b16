"""The vector-store protocol: item vectors and payloads, searched by cosine.

Implementations (embedded Qdrant via qdrant-edge-py, a Qdrant server via qdrant-client,
an in-memory numpy store for fast evaluation) all pass one conformance test.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class ItemPoint:
    """One item: its L2-normalised float32 vector and a JSON-serialisable payload
    (title, langs, ts, categories, counters...)."""

    item_id: str
    vector: np.ndarray
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    """A search result: cosine similarity to the query and the item's payload (empty when
    the search asked for ids only)."""

    item_id: str
    score: float
    payload: dict[str, Any]


class VectorStore(Protocol):
    """What the ranking code needs from a vector database."""

    dim: int

    def upsert(self, points: Sequence[ItemPoint], *, defer: bool = False) -> None:
        """Insert or replace points; idempotent by item_id. `defer`: searches may see the
        change late, at the store's next index build (a vector that reviews moved a little),
        which spares a store with a rebuilt index from scanning it until then; `get` sees
        it at once."""

    def delete(self, item_ids: Sequence[str]) -> None:
        """Remove items; unknown ids are ignored."""

    def get(self, item_ids: Sequence[str]) -> dict[str, ItemPoint]:
        """Stored points (with vectors) of the ids that exist."""

    def search(self, vector: np.ndarray, k: int, *, exclude: Collection[str] = (),
               langs: Collection[str] | None = None, payload: bool = True) -> list[Hit]:
        """Top-k by cosine, best first, skipping `exclude`; `langs` keeps items whose
        payload `langs` list shares a language with it. `payload=False` returns item ids
        and scores only (the ranker's case: reading payloads is a third of a search)."""

    def count(self) -> int:
        """Number of stored items."""

    def optimize(self) -> None:
        """Build or refresh the ANN index now (slow: for loads, benches and tests)."""

    def maintain(self) -> None:
        """One short step of index upkeep (a store may rebuild its index in the background);
        called after every flush of writes, from the thread that uses the store."""

    def close(self) -> None:
        """Release files and connections."""
