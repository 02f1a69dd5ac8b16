"""Regression: while the vector store (Qdrant server) was away, every click and review failed
in `Recommender.observe` (it mirrors item counters into the store) and was dead-lettered, so
an outage silently dropped user events. Now the batch waits with backoff and is applied when
the store answers again (tests/faults/test_store_outage.py shows it against the broker)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from streams.worker import agents
from streams.worker.agents import Pipeline
from streams.contracts.schemas import ClickEvent

pytestmark = pytest.mark.anyio


class Runner:
    """observe fails while the store is down; the store comes back after `down` probes."""

    def __init__(self, down: int) -> None:
        self.down = down
        self.attempts = 0

    async def observe(self, events: list[Any], profiles: dict[str, Any]) -> list[Any]:
        self.attempts += 1
        if self.down:
            return [ConnectionError("store refused")] * len(events)
        return [{"events": [e.event_id], "base": profiles.get(e.user_id)} for e in events]

    async def store_answers(self) -> bool:
        if self.down:
            self.down -= 1
            return False
        return True


async def test_user_events_wait_for_the_store_instead_of_being_dead_lettered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agents, "BACKOFF_START_S", 0.01)
    pipe = Pipeline.__new__(Pipeline)   # only `_observe` and its runner are exercised
    pipe.runner = Runner(down=3)        # type: ignore[assignment]
    event = ClickEvent(event_id="e1", user_id="u1", item_id="i1", ts=time.time())
    envelopes: dict[str, Any] = {"u1": {"p": {"events": ["e0"]}, "o": {}}}
    results = await pipe._observe([event], envelopes)
    assert results == [{"events": ["e1"], "base": {"events": ["e0"]}}]   # from the stored profile, once
    assert pipe.runner.attempts == 4  # type: ignore[attr-defined]


async def test_an_event_that_fails_with_the_store_up_is_returned_for_the_dead_letter_queue() -> None:
    class Bad(Runner):
        async def observe(self, events: list[Any], profiles: dict[str, Any]) -> list[Any]:
            self.attempts += 1
            return [ValueError("bad event")]

    pipe = Pipeline.__new__(Pipeline)
    pipe.runner = Bad(down=0)  # type: ignore[assignment]
    event = ClickEvent(event_id="e1", user_id="u1", item_id="i1", ts=time.time())
    (result,) = await pipe._observe([event], {})
    assert isinstance(result, ValueError) and pipe.runner.attempts == 1  # type: ignore[attr-defined]


async def test_a_batch_whose_store_write_raises_waits_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine writes the store once per batch: an outage raises for the whole batch."""
    monkeypatch.setattr(agents, "BACKOFF_START_S", 0.01)

    class Raising(Runner):
        async def observe(self, events: list[Any], profiles: dict[str, Any]) -> list[Any]:
            if self.down:
                self.attempts += 1
                raise ConnectionError("store refused")
            return await super().observe(events, profiles)

    pipe = Pipeline.__new__(Pipeline)
    pipe.runner = Raising(down=2)  # type: ignore[assignment]
    event = ClickEvent(event_id="e1", user_id="u1", item_id="i1", ts=time.time())
    (result,) = await pipe._observe([event], {}, )
    assert result == {"events": ["e1"], "base": None}
