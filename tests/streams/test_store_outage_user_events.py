"""Regression: while the vector store (Qdrant server) was away, every click and review failed
in `Recommender.observe` (it mirrors item counters into the store) and was dead-lettered, so
an outage silently dropped user events. Now the batch waits with backoff and is applied when
the store answers again (tests/faults/test_store_outage.py shows it against the broker)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from streams.contracts.schemas import ClickEvent
from streams.worker import user_events
from streams.worker.user_record import UserRecord
from tests.streams.fake_engine import FakeEngine, FlakyStore
from tests.streams.fake_worker import fake_worker

pytestmark = pytest.mark.anyio


def event() -> ClickEvent:
    return ClickEvent(event_id="e1", user_id="u1", item_id="i1", ts=time.time())


async def test_user_events_wait_for_the_store_instead_of_being_dead_lettered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(user_events, "BACKOFF_START_S", 0.01)
    engine = FakeEngine(store_down=3, down_fails="observe")   # each event fails while it is away
    with fake_worker(engine, tmp_path, store=FlakyStore(engine)) as worker:
        stored = UserRecord({"events": ["e0"], "n": 1, "reviewed": False})
        results = await worker.user_events.observe([event()], {"u1": stored})
    # From the stored profile, once:
    assert results == [{"events": ["e0", "e1"], "n": 2, "reviewed": False}]
    assert engine.observe_calls == ["e1"] * 4   # three failed probes, then applied


async def test_an_event_that_fails_with_the_store_up_is_returned_for_the_dead_letter_queue(
        tmp_path: Path) -> None:
    engine = FakeEngine(fail_on={"e1"})
    with fake_worker(engine, tmp_path, store=FlakyStore(engine)) as worker:
        (result,) = await worker.user_events.observe([event()], {})
    assert isinstance(result, ValueError) and engine.observe_calls == ["e1"]   # one attempt


async def test_a_batch_whose_store_write_raises_waits_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine writes the store once per batch: an outage raises for the whole batch."""
    monkeypatch.setattr(user_events, "BACKOFF_START_S", 0.01)
    engine = FakeEngine(store_down=2, down_fails="flush")
    with fake_worker(engine, tmp_path, store=FlakyStore(engine)) as worker:
        (result,) = await worker.user_events.observe([event()], {})
    assert result == {"events": ["e1"], "n": 1, "reviewed": False}
    assert engine.flushes == 3   # two batches whose store write raised, then the one kept
