"""Ranking metrics of the prequential evaluation, and their per-slice accumulators."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def hit_rank(recommended: Sequence[str], item_id: str) -> int | None:
    """0-based position of `item_id` in the list, or None."""
    try:
        return list(recommended).index(item_id)
    except ValueError:
        return None


def hr_at_k(rank: int | None, k: int = 10) -> float:
    """1 when the item is in the top k."""
    return 1.0 if rank is not None and rank < k else 0.0


def ndcg_at_k(rank: int | None, k: int = 10) -> float:
    """With one relevant item the ideal DCG is 1, so NDCG = 1 / log2(rank + 2)."""
    return 1.0 / math.log2(rank + 2) if rank is not None and rank < k else 0.0


def coverage(recommended: set[str], catalog_size: int) -> float:
    """Share of the catalog that appeared in at least one list."""
    return len(recommended) / catalog_size if catalog_size else 0.0


@dataclass
class Stats:
    """Running HR@k and NDCG@k of one slice."""

    n: int = 0
    hits: float = 0.0
    ndcg: float = 0.0

    def add(self, rank: int | None, k: int = 10) -> None:
        self.n += 1
        self.hits += hr_at_k(rank, k)
        self.ndcg += ndcg_at_k(rank, k)

    @property
    def hr(self) -> float:
        return self.hits / self.n if self.n else 0.0

    def to_dict(self, k: int = 10) -> dict[str, float | int]:
        return {f"hr@{k}": round(self.hr, 6),
                f"ndcg@{k}": round(self.ndcg / self.n, 6) if self.n else 0.0, "n": self.n}
