"""RankScheduler switched off (XLREC_RANKING_ENABLED=false): profile changes queue nothing."""

from __future__ import annotations

from streams.coalesce import RankScheduler


def test_disabled_scheduler_queues_no_ranking() -> None:
    s = RankScheduler(1.0, clock=lambda: 0.0, enabled=False)
    s.mark("u", "e1", 1.0)
    assert len(s) == 0 and s.due(10) == [] and s.seconds_until_next() is None
