"""RankScheduler switched off (XLREC_RANKING_ENABLED=false): profile changes queue nothing."""

from __future__ import annotations

from streams.coalesce import RankScheduler


def test_disabled_scheduler_queues_no_ranking() -> None:
    s = RankScheduler(1.0, clock=lambda: 0.0, enabled=False)
    s.mark("u", "e1", 1.0)
    assert len(s) == 0 and s.due(10) == [] and s.seconds_until_next() is None


def test_a_refresh_does_not_delay_the_next_event() -> None:
    clock = [0.0]
    s = RankScheduler(1.0, clock=lambda: clock[0])
    s.mark("u", "e1", 0.0, refresh=True)
    assert s.waiting_after_events() == 0 and len(s) == 1
    s.mark("u", "e2", 0.0)                 # an event joins: no longer only a refresh
    (p,) = s.due(10)
    assert not p.refresh and p.trigger_event_id == "e2"
