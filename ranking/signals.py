"""Online counters shared by the baselines and the hybrid: exponentially decayed
popularity (several half-lives at once) and item-to-item co-occurrence and transitions.

Memory is bounded by the catalog, not its square: per-item counters are one row each, and
item-to-item counts are per-item neighbour lists of at most `neighbours` entries (the
smallest count makes room for a new pair), so memory is O(items x neighbours) and reading
a user's signals touches only the lists of the user's own items.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ranking.catalog import grow
from ranking.top_rows import TopRows

HOUR = 3600.0
DENSE_MERGE_ROWS = 50_000   # up to this many items, sparse scores are summed in dense arrays


class DecayedCounts:
    """Per-item counts that halve every `half_life`, for several half-lives at once.

    Stored as `s = sum(exp((t_i - t0) / tau))`, so an update touches one row and reading
    all items at time `now` is one multiply; `t0` moves forward before values overflow.
    Because every stored value decays by the same factor, the order of the items in a column
    never changes with time: with `top` > 0, the `top` highest items of every column are
    kept in `TopRows` lists, exact at any time, so the most trending items and the highest
    count (to scale features by) are read without a catalog-wide scan.
    """

    def __init__(self, half_lives_s: Sequence[float], top: int = 0) -> None:
        self.tau = np.asarray([h / math.log(2) for h in half_lives_s], np.float64)
        self.s = np.zeros((0, len(self.tau)), np.float64)
        self.total = np.zeros(len(self.tau), np.float64)
        self.t0: float | None = None
        self.tops = [TopRows(top) for _ in self.tau] if top else []

    def add(self, row: int, ts: float, weight: float = 1.0) -> None:
        if self.t0 is None:
            self.t0 = ts
        if (ts - self.t0) / self.tau.min() > 200:        # rebase before exp() overflows
            factor = np.exp(-(ts - self.t0) / self.tau)
            self.s *= factor
            self.total *= factor
            for top, f in zip(self.tops, factor):
                top.scale(float(f))
            self.t0 = ts
        self.s = grow(self.s, row + 1)
        inc = weight * np.exp((ts - self.t0) / self.tau)
        self.s[row] += inc
        self.total += inc
        for top, value in zip(self.tops, self.s[row].tolist()):
            top.update(row, value)

    def values(self, now: float, n: int) -> np.ndarray:
        """[n, len(half_lives)] decayed counts at `now` (rows past the stored ones are 0)."""
        return self.values_of(np.arange(n), now)

    def values_of(self, rows: np.ndarray, now: float) -> np.ndarray:
        """[len(rows), len(half_lives)] decayed counts of `rows` at `now`."""
        if self.t0 is None:
            return np.zeros((len(rows), len(self.tau)))
        known = rows < self.s.shape[0]
        if known.all():
            return self.s[rows] * self._decay(now)
        out = np.zeros((len(rows), len(self.tau)))
        out[known] = self.s[rows[known]] * self._decay(now)
        return out

    def best(self, column: int, n: int, keep: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
        """Up to n rows with the highest counts in `column`, highest first (`top` > 0 only)."""
        return self.tops[column].best(n, keep)

    def peaks(self, now: float) -> np.ndarray:
        """The highest count of every column at `now` (`top` > 0 only)."""
        if self.t0 is None:
            return np.zeros(len(self.tau))
        return np.asarray([top.peak() for top in self.tops]) * self._decay(now)

    def totals(self, now: float) -> np.ndarray:
        if self.t0 is None:
            return np.zeros(len(self.tau))
        return self.total * self._decay(now)

    def rows_state(self, a: int, b: int) -> dict[str, Any]:
        """Rows a..b and the time base they are stored at (a snapshot piece)."""
        return {"a": a, "t0": self.t0, "s": self.s[a:b], "total": self.total.copy()}

    def load_rows(self, pieces: Sequence[dict[str, Any] | None], n: int) -> None:
        """The counts of n rows from `rows_state` pieces (None: no rows yet), each brought to
        the latest piece's time base; the top lists are rebuilt."""
        kept = [p for p in pieces if p is not None and p["t0"] is not None]
        self.s = np.zeros((n, len(self.tau)))
        self.total = np.zeros(len(self.tau))
        self.t0 = None
        self.tops = [TopRows(top.capacity) for top in self.tops]
        if not kept:
            return
        self.t0 = max(p["t0"] for p in kept)
        for p in kept:
            rows = p["s"][: max(n - p["a"], 0)]
            self.s[p["a"]: p["a"] + len(rows)] = rows * np.exp(-(self.t0 - p["t0"]) / self.tau)
        last = max(kept, key=lambda p: p["t0"])
        self.total = last["total"]
        for column, top in enumerate(self.tops):
            best = np.argsort(self.s[:, column], kind="stable")[-top.capacity:]
            for row in best[self.s[best, column] > 0].tolist():
                top.update(row, float(self.s[row, column]))

    def _decay(self, now: float) -> np.ndarray:
        """exp(-(now - t0) / tau), reading a `now` before t0 as t0: a streaming worker sees
        event times go back across partitions, and rewinding past t0 overflows exp()."""
        return np.exp(-max(now - self.t0, 0.0) / self.tau)  # type: ignore[operator]  # callers check t0


class NeighbourLists:
    """For each row, at most `capacity` (column, weight) pairs: a sparse matrix that grows
    with the pairs seen, not with rows squared. When a row's list is full, a new pair takes
    the place of the lightest one (with decayed weights, the oldest).

    A row's pairs are two numpy arrays (read as a block for many rows at once) and a dict
    from column to slot (for the update of one pair).
    """

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = capacity
        self.slots: dict[int, dict[int, int]] = {}
        self.cols: dict[int, np.ndarray] = {}
        self.vals: dict[int, np.ndarray] = {}

    def add(self, row: int, col: int, weight: float) -> None:
        slots = self.slots.get(row)
        if slots is None:
            slots = self.slots[row] = {}
            self.cols[row], self.vals[row] = np.zeros(4, np.int64), np.zeros(4, np.float32)
        slot = slots.get(col)
        vals = self.vals[row]
        if slot is not None:
            vals[slot] += weight
            return
        size = len(slots)
        if self.capacity is None or size < self.capacity:
            if size == len(vals):
                cap = 2 * size if self.capacity is None else min(2 * size, self.capacity)
                self.cols[row] = np.resize(self.cols[row], cap)
                self.vals[row] = vals = np.resize(vals, cap)
            slot = size
        else:
            slot = int(np.argmin(vals))
            del slots[int(self.cols[row][slot])]
        self.cols[row][slot] = col
        vals[slot] = weight
        slots[col] = slot

    def block(self, rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(columns, weights, index into `rows`) of every pair of `rows`."""
        cols, vals, sizes = [], [], []
        all_slots, all_cols, all_vals = self.slots, self.cols, self.vals
        for row in rows:
            slots = all_slots.get(row)
            if slots:
                size = len(slots)
                cols.append(all_cols[row][:size])
                vals.append(all_vals[row][:size])
                sizes.append(size)
            else:
                sizes.append(0)
        if not cols:
            return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64)
        return np.concatenate(cols), np.concatenate(vals), np.repeat(np.arange(len(sizes)), sizes)

    def get(self, row: int, col: int) -> float:
        slot = self.slots.get(row, {}).get(col)
        return 0.0 if slot is None else float(self.vals[row][slot])

    def scale(self, factor: float, drop_below: float = 0.0) -> None:
        """Every weight times `factor`; pairs left lighter than `drop_below` are forgotten."""
        for row in list(self.slots):
            size = len(self.slots[row])
            cols, vals = self.cols[row][:size], self.vals[row][:size] * np.float32(factor)
            keep = vals >= drop_below
            if keep.all():
                self.vals[row][:size] = vals
                continue
            cols, vals = cols[keep], vals[keep]
            if not cols.size:
                del self.slots[row], self.cols[row], self.vals[row]
                continue
            self.cols[row], self.vals[row] = cols.copy(), vals
            self.slots[row] = {int(c): i for i, c in enumerate(cols.tolist())}

    def pairs(self) -> int:
        return sum(len(s) for s in self.slots.values())

    def rows_state(self, a: int, b: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """The pairs of rows a..b, as (columns, weights) per row that has any."""
        out = {}
        for row in range(a, b):
            size = len(self.slots.get(row, ()))
            if size:
                out[row] = (self.cols[row][:size].copy(), self.vals[row][:size].copy())
        return out

    def load_rows(self, pieces: Sequence[tuple[dict[int, tuple[np.ndarray, np.ndarray]], float]],
                  n: int) -> None:
        """Pairs from `rows_state` pieces, each with the factor its weights are scaled by;
        pairs naming a row past n (added after the snapshot began) are left out."""
        self.slots, self.cols, self.vals = {}, {}, {}
        for rows, factor in pieces:
            for row, (cols, vals) in rows.items():
                keep = cols < n
                if row >= n or not keep.any():
                    continue
                self.cols[row] = cols[keep]
                self.vals[row] = (vals[keep] * np.float32(factor)).astype(np.float32)
                self.slots[row] = {int(c): i for i, c in enumerate(self.cols[row].tolist())}


def merge(cols: np.ndarray, values: np.ndarray, n: int | None = None, *, maxima: bool = True
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sorted unique columns, sum per column, max per column) of values given per entry.
    With the number of rows `n` when it is small next to the entries, counted in dense arrays
    (a tenth of the time of the sort that large catalogs use). With `maxima=False` the max
    per column is not computed (an empty array in its place)."""
    if not cols.size:
        return cols, np.zeros(0, np.float32), np.zeros(0, np.float32)
    values = np.asarray(values, np.float32)
    if n is not None and n <= max(DENSE_MERGE_ROWS, 8 * cols.size):
        items = np.flatnonzero(np.bincount(cols, minlength=n))
        sums = np.bincount(cols, weights=values, minlength=n)[items].astype(np.float32)
        if not maxima:
            return items, sums, np.zeros(0, np.float32)
        maxs = np.zeros(n, np.float32)
        np.maximum.at(maxs, cols, values)
        return items, sums, maxs[items]
    order = np.argsort(cols, kind="stable")
    cols, values = cols[order], values[order]
    starts = np.flatnonzero(np.r_[True, cols[1:] != cols[:-1]])
    return (cols[starts], np.add.reduceat(values, starts),
            np.maximum.reduceat(values, starts) if maxima else np.zeros(0, np.float32))


def dense(cols: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Sparse (columns, values) as a dense array of the first n rows."""
    out = np.zeros(n, np.float32)
    inside = cols < n
    out[cols[inside]] = values[inside]
    return out


class CoCounts:
    """Symmetric co-occurrence counts: how many users interacted with both items.

    With `half_life_s`, each co-occurrence weighs exp((t - t0) / tau), so recent pairs count
    more; the cosine normalisation divides the common factor out, so no decay is applied at
    read time and only a rare rebase keeps the numbers finite (and forgets pairs that have
    decayed to nothing). Each item keeps at most `neighbours` co-occurring items.
    """

    FORGET_BELOW = 1e-6     # of a fresh pair's weight: about 20 half-lives old

    def __init__(self, half_life_s: float | None = None, neighbours: int | None = None) -> None:
        self.lists = NeighbourLists(neighbours)
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
            self.lists.scale(factor, self.FORGET_BELOW)
            self.n *= factor
            self.t0 = ts
        return math.exp((ts - self.t0) / self.tau)

    def add(self, row: int, history_rows: Sequence[int], ts: float | None = None) -> None:
        """The user interacted with `row` (at `ts`) after the items in `history_rows`."""
        self.n = grow(self.n, max([row, *history_rows]) + 1)
        w = self._weight(ts)
        self.n[row] += w
        for h in set(history_rows):
            if h != row:
                self.lists.add(row, h, w)
                self.lists.add(h, row, w)

    def sparse_scores(self, history_rows: Sequence[int], weights: Sequence[float] | None = None,
                      *, cosine: bool = True, maxima: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(items, sum, max) over the history of cosine-normalised co-counts c_ij / sqrt(n_i n_j),
        for the items co-occurring with any of the history (all others score 0); `cosine=False`
        divides by sqrt(n_j) of the history item only, so the candidate's own (recent)
        popularity counts too. `maxima=False`: no max (see `merge`)."""
        return merge(*self.terms(history_rows, weights, cosine=cosine)[:2], len(self.n), maxima=maxima)

    def terms(self, history_rows: Sequence[int], weights: Sequence[float] | None = None,
              *, cosine: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(item, term, index into the history) of every non-zero term of `sparse_scores`."""
        cols, vals, owner = self.lists.block(history_rows)
        if not cols.size:
            return cols, vals, owner
        # Per history row, then per term: rows with pairs are inside `n`; those without are
        # clipped into it only to be read, never used.
        hist = np.minimum(np.asarray(history_rows, np.int64), self.n.size - 1)
        values = vals / np.sqrt(np.maximum(self.n[hist], 1e-6))[owner]
        if cosine:   # the same roots, taken per item where the catalog is the smaller
            roots = (np.sqrt(np.maximum(self.n, 1e-6))[cols] if self.n.size <= cols.size
                     else np.sqrt(np.maximum(self.n[cols], 1e-6)))
            values = values / roots
        if weights is not None:
            values = values * np.asarray(weights, np.float32)[owner]
        return cols, values, owner

    def scores(self, history_rows: Sequence[int], n: int, weights: Sequence[float] | None = None,
               *, cosine: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """`sparse_scores` as dense (sum, max) arrays of the first n rows."""
        items, total, best = self.sparse_scores(history_rows, weights, cosine=cosine)
        return dense(items, total, n), dense(items, best, n)

    def pair(self, history_rows: Sequence[int], row: int) -> np.ndarray:
        """c[h, row] for every h in `history_rows`."""
        return np.asarray([self.lists.get(h, row) for h in history_rows], np.float32)

    def rows_state(self, a: int, b: int) -> dict[str, Any]:
        return {"a": a, "t0": self.t0, "n": self.n[a:b], "lists": self.lists.rows_state(a, b)}

    def load_rows(self, pieces: Sequence[dict[str, Any]], n: int) -> None:
        """From `rows_state` pieces, brought to the latest piece's time base."""
        times = [p["t0"] for p in pieces if p["t0"] is not None]
        self.t0 = max(times) if times else None
        factors = [1.0 if self.tau is None or p["t0"] is None or self.t0 is None
                   else math.exp(-(self.t0 - p["t0"]) / self.tau) for p in pieces]
        self.n = np.zeros(n, np.float32)
        for p, factor in zip(pieces, factors):
            rows = p["n"][: max(n - p["a"], 0)]
            self.n[p["a"]: p["a"] + len(rows)] = rows * factor
        self.lists.load_rows([(p["lists"], f) for p, f in zip(pieces, factors)], n)


class Transitions:
    """Directed next-item counts: how often users went on from item j to item i (within
    their last few items), normalised by how often anyone went on from j. Each item keeps
    at most `neighbours` next items."""

    def __init__(self, neighbours: int | None = None) -> None:
        self.lists = NeighbourLists(neighbours)
        self.out = np.zeros(0, np.float32)

    def add(self, row: int, previous_rows: Sequence[int]) -> None:
        self.out = grow(self.out, max([row, *previous_rows]) + 1)
        for prev in set(previous_rows):
            if prev != row:
                self.lists.add(prev, row, 1.0)
                self.out[prev] += 1

    def sparse_scores(self, previous_rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(items, score) for the items that followed any of `previous_rows`."""
        cols, vals, owner = self.lists.block(previous_rows)
        if cols.size:
            prev = np.asarray(previous_rows, np.int64)[owner]
            vals = vals / np.maximum(self.out[prev], 1.0)
        items, total, _ = merge(cols, vals, len(self.out), maxima=False)
        return items, total


    def scores(self, previous_rows: Sequence[int], n: int) -> np.ndarray:
        return dense(*self.sparse_scores(previous_rows), n)

    def rows_state(self, a: int, b: int) -> dict[str, Any]:
        return {"a": a, "out": self.out[a:b], "lists": self.lists.rows_state(a, b)}

    def load_rows(self, pieces: Sequence[dict[str, Any]], n: int) -> None:
        self.out = np.zeros(n, np.float32)
        for p in pieces:
            rows = p["out"][: max(n - p["a"], 0)]
            self.out[p["a"]: p["a"] + len(rows)] = rows
        self.lists.load_rows([(p["lists"], 1.0) for p in pieces], n)
