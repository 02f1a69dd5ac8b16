"""Per-user coalescing of rankings under load: at most one ranking per user per interval
while the ranking loop has more users waiting than one batch takes.

With spare capacity every event is ranked at once (freshness: a user's second event in a
second does not wait for the interval); refreshes after a review text was folded in never
count as load and wait for the interval. Under load a burst of events from one user costs one
ranking, not one per event, and no event waits more than the interval for the ranking that
reflects it. Plain logic with an injectable clock so that it is tested without Kafka or sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

# Refreshes per ranking batch. They are optional work that comes in bursts (one per encoder
# batch of review texts): a whole batch of them at once holds the engine thread while the
# events that come meanwhile wait behind them. A few per batch drain the same refreshes in
# slices that events interleave with.
REFRESHES_PER_BATCH = 4


@dataclass
class PendingRank:
    """A user whose profile changed since their last ranking."""

    user_id: str
    trigger_event_id: str | None  # the latest event the ranking will reflect
    oldest_produced_ts: float     # produce time (unix s) of the oldest event not yet reflected
    refresh: bool = False         # only a review text was folded in: this ranking does not
    #                               take the user's interval from their next event


class RankScheduler:
    """Tracks users that need a ranking and says which are due now."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic, *,
                 enabled: bool = True) -> None:
        self.interval_s = interval_s
        self.enabled = enabled  # off: profile changes queue no ranking (XLREC_RANKING_ENABLED)
        self.clock = clock
        self._pending: dict[str, PendingRank] = {}
        self._last: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def waiting_after_events(self) -> int:
        """Pending users whose ranking follows an event (not only a refresh)."""
        return sum(not p.refresh for p in self._pending.values())

    def mark(self, user_id: str, event_id: str | None, produced_ts: float, *,
             refresh: bool = False) -> None:
        """The user's profile changed because of this event (`refresh`: because a review's
        text was folded in after the event's own ranking)."""
        if not self.enabled:
            return
        pending = self._pending.get(user_id)
        if pending is None:
            self._pending[user_id] = PendingRank(user_id, event_id, produced_ts, refresh)
        else:
            pending.trigger_event_id = event_id or pending.trigger_event_id
            pending.refresh = pending.refresh and refresh
            pending.oldest_produced_ts = min(pending.oldest_produced_ts, produced_ts)

    def _ready_at(self, user_id: str) -> float:
        last = self._last.get(user_id)
        return float("-inf") if last is None else last + self.interval_s

    def due(self, limit: int) -> list[PendingRank]:
        """Pop up to `limit` pending users, oldest event first. Users with a new event come
        first: all of them when they fit in `limit` (spare capacity), else only those whose
        interval has passed (coalescing). Refreshes (a review text folded in) only fill the
        slots left, at most REFRESHES_PER_BATCH, and always wait for the interval: they are
        optional, events are not."""
        now = self.clock()
        after_events = [p for p in self._pending.values() if not p.refresh]
        if len(after_events) > limit:
            after_events = [p for p in after_events if self._ready_at(p.user_id) <= now]
        refreshes = [p for p in self._pending.values() if p.refresh and self._ready_at(p.user_id) <= now]
        out = sorted(after_events, key=lambda p: p.oldest_produced_ts)[:limit]
        out += sorted(refreshes, key=lambda p: p.oldest_produced_ts)[:min(limit - len(out), REFRESHES_PER_BATCH)]
        for p in out:
            del self._pending[p.user_id]
        return out

    def ranked(self, user_id: str) -> None:
        """A ranking of this user was just emitted (coalesced or on request)."""
        self._last[user_id] = self.clock()

    def seconds_until_next(self) -> float | None:
        """How long until some pending user's interval has passed; None when nobody is
        pending. (The ranking loop only waits when `due` returned nobody.)"""
        if not self._pending:
            return None
        now = self.clock()
        return max(0.0, min(self._ready_at(u) for u in self._pending) - now)

    def forget(self, user_id: str) -> None:
        """An erased user: no ranking is pending for them any more."""
        self._pending.pop(user_id, None)
        self._last.pop(user_id, None)

    def forget_old(self) -> None:
        """Drop ranking times that no longer hold anyone back (bounds memory)."""
        horizon = self.clock() - self.interval_s
        self._last = {u: t for u, t in self._last.items() if t > horizon or u in self._pending}
