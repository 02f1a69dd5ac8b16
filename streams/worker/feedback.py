"""Impressions and feedback: what a user was shown, and whether they clicked it.

A click on a recommended item is a positive for the ranker (sent by `user_events` as it
applies the click); the items of an impression never clicked within the feedback window are
negatives (`expire`, a timer).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from streams.worker.context import WorkerContext
from streams.worker.engine_runner import FeedbackJob

MAX_IMPRESSIONS = 200_000


@dataclass
class Impression:
    user_id: str
    shown: tuple[str, ...]
    created: float
    clicked: bool = False


class ImpressionTracker:
    """Recommendations shown and awaiting feedback, oldest first, bounded in number."""

    def __init__(self, window_s: float, max_size: int = MAX_IMPRESSIONS) -> None:
        self.window_s = window_s
        self.max_size = max_size
        self._data: OrderedDict[str, Impression] = OrderedDict()

    def track(self, recommendation_id: str, user_id: str, shown: Sequence[str], now: float) -> None:
        self._data[recommendation_id] = Impression(user_id, tuple(shown), now)
        while len(self._data) > self.max_size:
            self._data.popitem(last=False)

    def click(self, recommendation_id: str, user_id: str, item_id: str) -> Impression | None:
        """The impression this click answers, or None (unknown, expired, another user, not shown)."""
        imp = self._data.get(recommendation_id)
        if imp is None or imp.user_id != user_id or item_id not in imp.shown:
            return None
        imp.clicked = True
        return imp

    def forget(self, user_id: str) -> None:
        """Drop an erased user's impressions (a scan: erasures are rare)."""
        for rec_id in [r for r, imp in self._data.items() if imp.user_id == user_id]:
            del self._data[rec_id]

    def expired(self, now: float) -> list[Impression]:
        """Pop impressions older than the window; only unclicked ones need negative feedback."""
        out = []
        while self._data:
            rec_id, imp = next(iter(self._data.items()))
            if imp.created + self.window_s > now:
                break
            del self._data[rec_id]
            if not imp.clicked:
                out.append(imp)
        return out


async def expire(ctx: WorkerContext, impressions: ImpressionTracker) -> None:
    """Impressions not clicked within the feedback window become negatives."""
    expired = impressions.expired(time.monotonic())
    now = ctx.now()
    await ctx.runner.feedback([FeedbackJob(imp.user_id, ctx.profile_of(imp.user_id), imp.shown, None, now)
                               for imp in expired])
