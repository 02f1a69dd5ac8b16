"""Online counters shared by the baselines and the hybrid: exponentially decayed
popularity (several half-lives at once) and item-to-item co-occurrence."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ranking.catalog import grow

HOUR = 3600.0


class DecayedCounts:
    """Per-item counts that halve every `half_life`, for several half-lives at once.

    Stored as `s = sum(exp((t_i - t0) / tau))`, so an update touches one row and reading
    all items at time `now` is one multiply; `t0` moves forward before values overflow.
    """

    def __init__(self, half_lives_s: Sequence[float]) -> None:
        self.tau = np.asarray([h / math.log(2) for h in half_lives_s], np.float64)
        self.s = np.zeros((0, len(self.tau)), np.float64)
        self.total = np.zeros(len(self.tau), np.float64)
        self.t0: float | None = None

    def add(self, row: int, ts: float, weight: float = 1.0) -> None:
        if self.t0 is None:
            self.t0 = ts
        if (ts - self.t0) / self.tau.min() > 200:        # rebase before exp() overflows
            factor = np.exp(-(ts - self.t0) / self.tau)
            self.s *= factor
            self.total *= factor
            self.t0 = ts
        self.s = grow(self.s, row + 1)
        inc = weight * np.exp((ts - self.t0) / self.tau)
        self.s[row] += inc
        self.total += inc

    def values(self, now: float, n: int) -> np.ndarray:
        """[n, len(half_lives)] decayed counts at `now` (rows past the stored ones are 0)."""
        out = np.zeros((n, len(self.tau)))
        if self.t0 is None:
            return out
        m = min(n, self.s.shape[0])
        out[:m] = self.s[:m] * self._decay(now)
        return out

    def totals(self, now: float) -> np.ndarray:
        if self.t0 is None:
            return np.zeros(len(self.tau))
        return self.total * self._decay(now)

    def _decay(self, now: float) -> np.ndarray:
        """exp(-(now - t0) / tau), reading a `now` before t0 as t0: a streaming worker sees
        event times go back across partitions, and rewinding past t0 overflows exp()."""
        return np.exp(-max(now - self.t0, 0.0) / self.tau)  # type: ignore[operator]  # callers check t0


class CoCounts:
    """Symmetric co-occurrence counts: how many users interacted with both items.

    With `half_life_s`, each co-occurrence weighs exp((t - t0) / tau), so recent pairs count
    more; the cosine normalisation divides the common factor out, so no decay is applied at
    read time and only a rare rebase keeps the numbers finite.
    Dense (n_items^2 float32): right for catalogs up to a few tens of thousands of items.
    """

    def __init__(self, half_life_s: float | None = None) -> None:
        self.c = np.zeros((0, 0), np.float32)
        self.n = np.zeros(0, np.float32)
        self.tau = half_life_s / math.log(2) if half_life_s else None
        self.t0: float | None = None

    def _weight(self, ts: float | None) -> float:
        if self.tau is None or ts is None:
            return 1.0
        if self.t0 is None:
            self.t0 = ts
        if (ts - self.t0) / self.tau > 30:           # float32 headroom: rebase
            factor = math.exp(-(ts - self.t0) / self.tau)
            self.c *= factor
            self.n *= factor
            self.t0 = ts
        return math.exp((ts - self.t0) / self.tau)

    def _ensure(self, n: int) -> None:
        if self.c.shape[0] < n:
            cap = max(n, 2 * self.c.shape[0], 64)
            c = np.zeros((cap, cap), np.float32)
            c[: self.c.shape[0], : self.c.shape[1]] = self.c
            self.c = c
            self.n = grow(self.n, cap)

    def add(self, row: int, history_rows: Sequence[int], ts: float | None = None) -> None:
        """The user interacted with `row` (at `ts`) after the items in `history_rows`."""
        self._ensure(max([row, *history_rows]) + 1)
        w = self._weight(ts)
        self.n[row] += w
        h = np.asarray([r for r in set(history_rows) if r != row], np.int64)
        if h.size:
            self.c[row, h] += w
            self.c[h, row] += w

    def scores(self, history_rows: Sequence[int], n: int, weights: Sequence[float] | None = None,
               *, cosine: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(sum, max) over the history of cosine-normalised co-counts c_ij / sqrt(n_i n_j),
        for the first n rows; `cosine=False` divides by sqrt(n_j) of the history item only,
        so the candidate's own (recent) popularity counts too."""
        out_sum, out_max = np.zeros(n, np.float32), np.zeros(n, np.float32)
        h = np.asarray([r for r in history_rows if r < self.c.shape[0]], np.int64)
        m = min(n, self.c.shape[0])
        if not h.size or not m:
            return out_sum, out_max
        norm = np.sqrt(np.maximum(self.n[:m], 1e-6))
        block = self.c[h, :m] / norm[h][:, None]
        if cosine:
            block = block / norm[None, :]
        if weights is not None:
            w = np.asarray([w for r, w in zip(history_rows, weights) if r < self.c.shape[0]],
                           np.float32)
            block = block * w[:, None]
        out_sum[:m] = block.sum(axis=0)
        out_max[:m] = block.max(axis=0)
        return out_sum, out_max


class Transitions:
    """Directed next-item counts: how often users went on from item j to item i (within
    their last few items), normalised by how often anyone went on from j."""

    def __init__(self) -> None:
        self.t = np.zeros((0, 0), np.float32)
        self.out = np.zeros(0, np.float32)

    def add(self, row: int, previous_rows: Sequence[int]) -> None:
        n = max([row, *previous_rows]) + 1
        if self.t.shape[0] < n:
            cap = max(n, 2 * self.t.shape[0], 64)
            t = np.zeros((cap, cap), np.float32)
            t[: self.t.shape[0], : self.t.shape[1]] = self.t
            self.t, self.out = t, grow(self.out, cap)
        prev = np.asarray([r for r in set(previous_rows) if r != row], np.int64)
        if prev.size:
            self.t[prev, row] += 1
            self.out[prev] += 1

    def scores(self, previous_rows: Sequence[int], n: int) -> np.ndarray:
        out = np.zeros(n, np.float32)
        prev = np.asarray([r for r in previous_rows if r < self.t.shape[0]], np.int64)
        m = min(n, self.t.shape[0])
        if prev.size and m:
            out[:m] = (self.t[prev, :m] / np.maximum(self.out[prev], 1.0)[:, None]).sum(axis=0)
        return out
