"""The Ranker protocol: the few verbs every model in the evaluation speaks (River-style),
so one harness and one conformance test serve the baselines and the production ranker."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Interaction:
    """One user event as the models see it. `review_vector` is the raw encoder vector of
    the review text (None for clicks, empty texts or runs without an encoder)."""

    event_id: str
    user_id: str
    item_id: str
    ts: float
    kind: str            # "click" | "review"
    positive: bool
    lang: str | None
    review_vector: np.ndarray | None = None


@dataclass(frozen=True)
class NewItem:
    """An item becoming known: from the items file or from its first event."""

    item_id: str
    ts: float
    title: str | None = None
    lang: str | None = None
    text: str | None = None
    text_vector: np.ndarray | None = None


class Ranker(Protocol):
    """A recommender that learns one event at a time and ranks the items it knows."""

    name: str

    def add_item(self, item: NewItem) -> None:
        """Make an item recommendable (idempotent)."""

    def remove_item(self, item_id: str) -> None:
        """Stop recommending an item."""

    def learn(self, event: Interaction) -> None:
        """Learn from one event (always after any `recommend` for it)."""

    def recommend(self, user_id: str, k: int, now: float,
                  exclude: Collection[str] = ()) -> list[tuple[str, float]]:
        """Top-k (item_id, score), best first, among known items not in `exclude`."""


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest finite scores, best first; ties go to the lower index."""
    finite = np.flatnonzero(np.isfinite(scores))
    if finite.size == 0:
        return finite
    order = np.lexsort((finite, -scores[finite]))
    return finite[order[:k]]
