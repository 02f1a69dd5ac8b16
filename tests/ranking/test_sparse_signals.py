"""The bounded structures behind the ranker's signals against plain references: top lists kept
one update at a time, neighbour lists of bounded length, and the sparse co-occurrence scores."""

from __future__ import annotations

import random

import numpy as np

from ranking.signals import HOUR, CoCounts, DecayedCounts, NeighbourLists, Transitions, merge
from ranking.top_rows import TopRows

T0 = 1.6e9


def test_top_rows_equal_a_full_sort_of_growing_values() -> None:
    rng = random.Random(3)
    top, values = TopRows(10), np.zeros(200)
    for _ in range(3000):
        row = min(int(rng.paretovariate(1.2)), 199)
        values[row] += rng.random()
        top.update(row, float(values[row]))
    expected = np.argsort(-values, kind="stable")[:10]
    assert top.best(10).tolist() == expected.tolist()
    assert top.peak() == values.max()
    odd = top.best(3, keep=lambda rows: rows % 2 == 1)
    assert odd.tolist() == [r for r in expected.tolist() if r % 2 == 1][:3]


def test_decayed_counts_top_lists_are_exact_at_any_time_and_across_rebases() -> None:
    counts = DecayedCounts([3 * HOUR, 168 * HOUR], top=5)
    rng = random.Random(7)
    ts = T0
    for _ in range(4000):
        ts += rng.expovariate(1 / 120)           # ~5 months: several rebases of the 3 h column
        counts.add(min(int(rng.paretovariate(1.1)), 99), ts)
    for now in (ts, ts + 3 * HOUR, ts + 30 * 24 * HOUR):
        dense = counts.values(now, 100)
        for column in range(2):
            assert counts.best(column, 5).tolist() == np.argsort(-dense[:, column], kind="stable")[:5].tolist()
        np.testing.assert_allclose(counts.peaks(now), dense.max(axis=0), rtol=1e-9)
        rows = np.asarray([3, 250, 0])              # 250: never seen
        np.testing.assert_allclose(counts.values_of(rows, now), np.vstack([dense[3], np.zeros(2), dense[0]]))


def test_neighbour_lists_stay_bounded_and_keep_the_heaviest_pairs() -> None:
    lists = NeighbourLists(capacity=4)
    for col, times in ((1, 9), (2, 7), (3, 5), (4, 3)):
        for _ in range(times):
            lists.add(0, col, 1.0)
    lists.add(0, 5, 1.0)                  # a new pair takes the lightest one's place
    assert lists.pairs() == 4 and lists.get(0, 4) == 0.0 and lists.get(0, 5) == 1.0
    cols, vals, owner = lists.block([7, 0])
    assert sorted(cols.tolist()) == [1, 2, 3, 5] and owner.tolist() == [1] * 4
    assert dict(zip(cols.tolist(), vals.tolist())) == {1: 9.0, 2: 7.0, 3: 5.0, 5: 1.0}
    lists.scale(0.5, drop_below=1.0)      # aged pairs are forgotten
    assert lists.get(0, 5) == 0.0 and lists.get(0, 1) == 4.5 and lists.pairs() == 3
    lists.add(0, 6, 2.0)
    assert lists.get(0, 6) == 2.0 and lists.pairs() == 4


def test_co_counts_scores_equal_the_dense_definition() -> None:
    rng = random.Random(11)
    co, n = CoCounts(), 30
    dense = np.zeros((n, n))
    totals = np.zeros(n)
    histories: dict[int, list[int]] = {}
    for _ in range(600):
        user = rng.randrange(40)
        row = rng.randrange(n)
        hist = histories.setdefault(user, [])
        co.add(row, hist)
        totals[row] += 1
        for h in set(hist) - {row}:
            dense[row, h] += 1
            dense[h, row] += 1
        if row not in hist:
            hist.append(row)
    norm = np.sqrt(np.maximum(totals, 1e-6))
    hist, weights = histories[0], [rng.random() for _ in histories[0]]
    block = dense[hist] / norm[hist][:, None] / norm[None, :] * np.asarray(weights)[:, None]
    total, best = co.scores(hist, n, weights)
    np.testing.assert_allclose(total, block.sum(axis=0), rtol=1e-5)
    np.testing.assert_allclose(best, block.max(axis=0), rtol=1e-5)
    items, sparse_total, _ = co.sparse_scores(hist, weights)
    assert set(items.tolist()) == set(np.flatnonzero(block.sum(axis=0)).tolist())


def test_transitions_are_normalised_by_what_followed_each_item() -> None:
    t = Transitions(neighbours=8)
    for prev, nxt in ((0, 1), (0, 1), (0, 2), (3, 1)):
        t.add(nxt, [prev])
    np.testing.assert_allclose(t.scores([0, 3], 4), [0.0, 2 / 3 + 1.0, 1 / 3, 0.0])


def test_merge_counts_the_same_in_dense_arrays_and_by_sorting() -> None:
    rng = np.random.default_rng(5)
    cols, values = rng.integers(0, 300, 2000), rng.random(2000).astype(np.float32)
    by_sort, in_dense = merge(cols, values), merge(cols, values, 300)
    np.testing.assert_array_equal(by_sort[0], in_dense[0])
    np.testing.assert_allclose(by_sort[1], in_dense[1], rtol=1e-5)
    np.testing.assert_array_equal(by_sort[2], in_dense[2])
