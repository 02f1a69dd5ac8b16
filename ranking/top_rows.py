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
        # Kept between changes (a ranking reads them several times, a batch of rankings
        # with nothing learnt in between reads the same ones): the highest value (None:
        # read it again) and the last head asked for, as (version, m, rows).
        self._peak: float | None = 0.0
        self._version = 0
        self._head_cache: tuple[int, int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.slot)

    def update(self, row: int, value: float) -> None:
        self._version += 1
        slot = self.slot.get(row)
        full = len(self.slot) == self.capacity
        peak = self._peak
        if slot is not None:
            if peak is not None and value < peak and self.values[slot] >= peak:
                self._peak = None          # the highest value went down: read it again
            elif peak is not None and value > peak:
                self._peak = value
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
            if peak is not None and self.values[slot] >= peak:
                self._peak = peak = None   # only when every value was the same
            del self.slot[int(self.rows[slot])]
        if peak is not None and (value > peak or not self.slot):
            self._peak = value
        self.rows[slot], self.values[slot] = row, value
        self.slot[row] = slot
        if len(self.slot) == self.capacity:
            self._min = int(np.argmin(self.values))

    def scale(self, factor: float) -> None:
        """Every value times `factor` > 0 (the order is unchanged)."""
        self._version += 1
        self.values[: len(self.slot)] *= factor
        if self._peak is not None and self.slot:
            self._peak *= factor           # the same product as the scaled value's

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
        """The m rows with the highest values, highest first (read-only)."""
        cached = self._head_cache
        if cached is not None and cached[0] == self._version and cached[1] == m:
            return cached[2]
        values = self.values[: len(self.slot)]
        top = np.argpartition(-values, m - 1)[:m] if 0 < m < values.size else np.arange(m)
        head = self.rows[top[np.argsort(-values[top], kind="stable")]]
        head.flags.writeable = False
        self._head_cache = (self._version, m, head)
        return head

    def peak(self) -> float:
        """The highest value (0 when empty)."""
        if self._peak is None:
            self._peak = float(self.values[: len(self.slot)].max()) if self.slot else 0.0
        return self._peak if self.slot else 0.0
