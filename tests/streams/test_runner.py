"""EngineRunner's load shedding: under a backlog (a batch of more than LEARN_PER_BATCH events)
the ranker learns from a sample and the vector store is written by the timer, not per batch."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from streams.runner import LEARN_PER_BATCH, EngineRunner


class CountingEngine:
    def __init__(self) -> None:
        self.learned = 0
        self.flushes = 0

    def observe(self, profile: Any, event: Any, *, text_later: bool, learn: bool) -> dict:
        self.learned += learn
        return {"n": (profile or {}).get("n", 0) + 1}

    def flush_store(self) -> None:
        self.flushes += 1


def events(n: int) -> list[Any]:
    return [SimpleNamespace(user_id=f"u{i % 7}") for i in range(n)]


def test_store_writes_follow_small_batches_and_the_timer_under_a_backlog() -> None:
    engine = CountingEngine()
    runner = EngineRunner(engine)  # type: ignore[arg-type]
    try:
        profiles: dict[str, Any] = {}
        asyncio.run(runner.observe(events(LEARN_PER_BATCH), profiles))
        assert engine.flushes == 1 and engine.learned == LEARN_PER_BATCH
        asyncio.run(runner.observe(events(10 * LEARN_PER_BATCH), profiles))
        assert engine.flushes == 1 and engine.learned == 2 * LEARN_PER_BATCH
        assert sum(p["n"] for p in profiles.values()) == 11 * LEARN_PER_BATCH  # every event applied
        asyncio.run(runner.sync_store())
        assert engine.flushes == 2
    finally:
        runner.close()
