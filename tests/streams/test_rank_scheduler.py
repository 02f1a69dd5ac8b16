"""`streams.worker.rank_scheduler`: at most one ranking per user and interval under load, at once
with spare capacity."""

from __future__ import annotations

import pytest

from streams.worker.rank_scheduler import RankScheduler


def test_rank_scheduler_allows_one_ranking_per_interval_under_load() -> None:
    clock = [1000.0]
    s = RankScheduler(2.0, clock=lambda: clock[0])
    s.mark("u1", "e1", produced_ts=50.0)
    s.mark("u1", "e2", produced_ts=51.0)
    s.mark("u2", "e3", produced_ts=49.0)
    assert [(p.user_id, p.trigger_event_id, p.oldest_produced_ts) for p in s.due(10)] == [
        ("u2", "e3", 49.0), ("u1", "e2", 50.0)]
    s.ranked("u1")
    s.mark("u1", "e4", produced_ts=52.0)
    s.mark("u3", "e5", produced_ts=53.0)
    assert [p.user_id for p in s.due(1)] == ["u3"]   # busy: u1 was ranked within the interval
    assert s.seconds_until_next() == pytest.approx(2.0)
    s.mark("u4", "e6", produced_ts=54.0)
    assert [p.user_id for p in s.due(1)] == ["u4"]   # still held back
    clock[0] += 2.0
    s.mark("u5", "e7", produced_ts=55.0)
    assert [p.trigger_event_id for p in s.due(1)] == ["e4"]   # its interval has passed


def test_rank_scheduler_ranks_at_once_with_spare_capacity() -> None:
    clock = [1000.0]
    s = RankScheduler(2.0, clock=lambda: clock[0])
    s.mark("u1", "e1", produced_ts=50.0)
    assert [p.trigger_event_id for p in s.due(10)] == ["e1"]
    s.ranked("u1")
    s.mark("u1", "e2", produced_ts=50.1)
    assert [p.trigger_event_id for p in s.due(10)] == ["e2"]   # no wait for the interval
    clock[0] += 10.0
    s.forget_old()
    assert s._last == {}
