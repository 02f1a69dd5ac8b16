"""What the ranker keeps between reads, and the one-pass content scores, against plain
recomputation: a top list's cached peak and head, the merge without maxima, and a ranking's
features read from the catalog-wide content scores instead of a gather of its candidates."""

from __future__ import annotations

import random

import numpy as np

from ranking.hybrid import FEATURES, Signals
from ranking.signals import merge
from ranking.top_rows import TopRows
from tests.ranking.test_hybrid import T0, _busy_engine


def test_top_rows_peak_and_head_follow_updates_that_go_up_down_and_scale() -> None:
    rng = random.Random(5)
    top, values = TopRows(8), {}
    for step in range(4000):
        row = rng.randrange(30)
        if rng.random() < 0.05:
            factor = rng.uniform(0.2, 1.5)
            top.scale(factor)
            values = {r: v * factor for r, v in values.items()}
        else:
            value = rng.uniform(-1.0, 10.0)   # a listed row may go down, even below zero
            top.update(row, value)
            if row in values or len(values) < 8:
                values[row] = value
            elif value > min(values.values()):
                del values[min(values, key=values.__getitem__)]
                values[row] = value
        listed = {int(r): float(top.values[s]) for r, s in top.slot.items()}
        assert listed == values
        assert top.peak() == max(values.values())
        if step % 7 == 0:
            expected = sorted(values, key=lambda r: -values[r])[:3]
            assert top.best(3).tolist() == expected
            assert top.best(3).tolist() == expected            # read again: from the cache
            assert not top.best(3).flags.writeable


def test_a_top_list_of_one_row_and_an_empty_one() -> None:
    top = TopRows(1)
    assert top.peak() == 0.0 and top.best(3).tolist() == []
    top.update(4, -2.0)
    assert top.peak() == -2.0
    top.update(5, 3.0)                    # replaces the only row
    assert top.peak() == 3.0 and top.best(1).tolist() == [5]
    top.update(5, 1.0)                    # the peak row goes down
    assert top.peak() == 1.0


def test_merge_without_maxima_sums_the_same() -> None:
    rng = np.random.default_rng(2)
    cols, values = rng.integers(0, 300, 2000), rng.random(2000).astype(np.float32)
    for n in (None, 300):
        full, quick = merge(cols, values, n), merge(cols, values, n, maxima=False)
        np.testing.assert_array_equal(full[0], quick[0])
        np.testing.assert_array_equal(full[1], quick[1])
        assert quick[2].size == 0


def test_features_from_the_catalog_wide_content_scores_equal_the_gathered_ones() -> None:
    rec, profiles = _busy_engine()
    now = T0 + 600 * 300
    rows = np.arange(0, len(rec.catalog), 2)
    for user in ("u0", "u5", "u22"):
        ctx = rec._context(profiles[user], None)
        assert ctx.interest is not None and ctx.own is not None

        gathered, one_pass = (Signals(rec.catalog, rec.trend, rec.lang_trend, rec.cooc, rec.cooc_recent,
                                      rec.transitions, ctx, now, 48.0) for _ in range(2))
        content = one_pass.content_all()
        vec = rec.catalog.vectors(np.arange(len(rec.catalog)))
        np.testing.assert_allclose(content[:, 0], vec @ ctx.interest, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(content[:, 1], vec @ ctx.own, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(content[:, 2], rec.catalog.text_vec[: len(rec.catalog)] @ ctx.interest,
                                   rtol=1e-5, atol=1e-6)
        x, y = gathered.matrix(rows), one_pass.matrix(rows)
        np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-6)
        assert np.count_nonzero(x[:, FEATURES.index("content_own")]) > 0
