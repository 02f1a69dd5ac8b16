"""Exponential backoff for retry loops: the first wait is `start_s`, each next one doubles, up
to `max_s`; `reset()` starts over (after a success)."""

from __future__ import annotations

import asyncio

# The worker's retries while the vector store is away (catalog feed, user events, ranking).
BACKOFF_START_S, BACKOFF_MAX_S = 0.2, 5.0


class Backoff:
    """`delay` is the wait the next `sleep()` takes.

        backoff = Backoff(0.2, 5.0)
        while True:
            try:
                return await attempt()
            except Unavailable:
                await backoff.sleep()     # 0.2, 0.4, 0.8, ... 5.0, 5.0, ...
    """

    def __init__(self, start_s: float, max_s: float) -> None:
        if not 0 < start_s <= max_s:
            raise ValueError(f"need 0 < start_s <= max_s, got {start_s} and {max_s}")
        self.start_s = start_s
        self.max_s = max_s
        self.delay = start_s

    async def sleep(self) -> float:
        """Wait the current delay, then double it (capped); returns the time waited."""
        delay = self.delay
        await asyncio.sleep(delay)
        self.delay = min(delay * 2, self.max_s)
        return delay

    def reset(self) -> None:
        self.delay = self.start_s
