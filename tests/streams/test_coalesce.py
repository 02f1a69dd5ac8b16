"""RankScheduler switched off (XLREC_RANKING_ENABLED=false): profile changes queue nothing."""

from __future__ import annotations

from streams.worker.rank_scheduler import REFRESHES_PER_BATCH, RankScheduler


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


def test_refreshes_neither_hold_events_back_nor_skip_the_interval() -> None:
    clock = [0.0]
    s = RankScheduler(1.0, clock=lambda: clock[0])
    s.ranked("u1")
    s.ranked("r0")
    for i in range(40):
        s.mark(f"r{i}", None, float(i), refresh=True)   # review texts folded in
    s.mark("u1", "e1", 100.0)                            # u1 was ranked just now
    due = s.due(32)
    assert due[0].user_id == "u1"                        # 40 refreshes are not load
    assert [p.user_id for p in due[1:]] == [f"r{i}" for i in range(1, 1 + REFRESHES_PER_BATCH)]
    assert "r0" not in {p.user_id for p in due}          # a refresh waits for the interval
    clock[0] += 1.0
    assert "r0" in {p.user_id for p in s.due(32)}


def test_refreshes_come_a_few_per_batch_until_all_are_ranked() -> None:
    s = RankScheduler(1.0, clock=lambda: 0.0)
    n = 2 * REFRESHES_PER_BATCH + 1
    for i in range(n):
        s.mark(f"r{i}", None, float(i), refresh=True)
    batches = [s.due(32) for _ in range(3)]
    assert [len(b) for b in batches] == [REFRESHES_PER_BATCH, REFRESHES_PER_BATCH, 1] and len(s) == 0
    assert [p.user_id for b in batches for p in b] == [f"r{i}" for i in range(n)]
