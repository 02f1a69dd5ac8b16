"""Regression: a streaming worker applies events partition by partition, so event times go
back and forth by months (Steam replay: partitions drift apart). `DecayedCounts` read at a
time before its reference `t0` overflowed exp() and every score became NaN, which the worker
cannot send as JSON (tests/faults/test_crash.py found it)."""

from __future__ import annotations

import numpy as np

from ranking.signals import HOUR, DecayedCounts

DAY = 24 * HOUR


def test_counts_read_long_before_the_newest_event_stay_finite() -> None:
    counts = DecayedCounts([3 * HOUR, 168 * HOUR])
    counts.add(0, 1_400_000_000.0)
    counts.add(1, 1_400_000_000.0 + 400 * DAY)   # another partition, far ahead: t0 rebases
    earlier = 1_400_000_000.0 + 10 * DAY           # the slower partition's event time
    values, totals = counts.values(earlier, 2), counts.totals(earlier)
    assert np.isfinite(values).all() and np.isfinite(totals).all()
    assert (values >= 0).all()


def test_counts_read_after_the_newest_event_still_decay() -> None:
    counts = DecayedCounts([HOUR])
    counts.add(0, 1_000_000_000.0)
    assert np.allclose(counts.values(1_000_000_000.0 + HOUR, 1)[0], [0.5])
