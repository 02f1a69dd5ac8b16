"""The rows with the highest values, kept up to date one change at a time, so that "the most
trending items" or "the newest items" are read without scanning the catalog."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class TopRows:
    """The `capacity` rows with the highest values seen, updated one row at a time.

    Exact for values that only grow, or that all scale together (decayed counts stored at a
    fixed reference time: see `signals.DecayedCounts`): a row outside the list can only enter
    by growing past the smallest value in it. A row whose value drops stays listed with its
    new value until something larger pushes it out.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.rows = np.full(capacity, -1, np.int64)
        self.values = np.full(capacity, -np.inf)
        self.slot: dict[int, int] = {}
        self._min = 0                      # slot of the smallest value, once full

    def __len__(self) -> int:
        return len(self.slot)

    def update(self, row: int, value: float) -> None:
        slot = self.slot.get(row)
        full = len(self.slot) == self.capacity
        if slot is not None:
            self.values[slot] = value
            if full and (slot == self._min or value < self.values[self._min]):
                self._min = int(np.argmin(self.values))
            return
        if not full:
            slot = len(self.slot)
        else:
            slot = self._min
            if value <= self.values[slot]:
                return
            del self.slot[int(self.rows[slot])]
        self.rows[slot], self.values[slot] = row, value
        self.slot[row] = slot
        if len(self.slot) == self.capacity:
            self._min = int(np.argmin(self.values))

    def scale(self, factor: float) -> None:
        """Every value times `factor` > 0 (the order is unchanged)."""
        self.values[: len(self.slot)] *= factor

    def best(self, n: int, keep: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
        """Up to n rows, highest value first, among those `keep` (a vectorised row filter)
        accepts; `keep` sees only as many of the best rows as it takes to find n."""
        size = len(self.slot)
        look = n if keep is None else 2 * n + 32
        while True:
            head = self._head(min(look, size))
            kept = head if keep is None or not head.size else head[keep(head)]
            if kept.size >= n or look >= size:
                return kept[:n]
            look *= 4

    def _head(self, m: int) -> np.ndarray:
        """The m rows with the highest values, highest first."""
        values = self.values[: len(self.slot)]
        top = np.argpartition(-values, m - 1)[:m] if 0 < m < values.size else np.arange(m)
        return self.rows[top[np.argsort(-values[top], kind="stable")]]

    def peak(self) -> float:
        """The highest value (0 when empty)."""
        return float(self.values[: len(self.slot)].max()) if self.slot else 0.0
