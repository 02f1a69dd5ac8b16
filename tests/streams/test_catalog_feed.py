"""The catalog feed without a broker: last version per batch, outages retried with backoff
until the store answers (nothing skipped), culprit items skipped only while the store answers,
offsets saved beside the snapshot. Regression: with several workers each knew only the items
of its own partitions (tests/faults/test_rebalance.py shows it against the broker)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from streams.worker import catalog_feed
from streams.worker.catalog_feed import CatalogFeed, Resume, load_resume, save_resume
from streams.worker.engine_runner import EngineRunner
from streams.contracts.settings import Settings
from tests.streams.fake_engine import FakeEngine, FlakyStore

NOW = time.time()
pytestmark = pytest.mark.anyio


def record(offset: int, value: dict[str, Any] | bytes) -> Any:
    return SimpleNamespace(offset=offset, value=value if isinstance(value, bytes) else orjson.dumps(value))


def item(item_id: str, title: str = "t", **extra: Any) -> dict[str, Any]:
    return {"item_id": item_id, "title": title, "ts": NOW, **extra}


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(fail_on={"bad"})   # an item named "bad" fails while the store answers


@pytest.fixture
def feed(engine: FakeEngine) -> Any:
    runner = EngineRunner(engine, FlakyStore(engine))
    applied: list[str] = []
    feed = CatalogFeed(Settings(topic_prefix="t."), runner, {}, lambda items: applied.extend(i.item_id for i in items))
    feed.applied_ids = applied  # type: ignore[attr-defined]
    yield feed
    runner.close()


async def test_a_batch_keeps_the_last_version_of_each_item_and_skips_poison(feed: Any, engine: FakeEngine) -> None:
    await feed._apply(2, [record(10, item("g1", "old")), record(11, item("g2", "other")),
                          record(12, b"\xff not json"), record(13, item("g1", "new", deleted=True))])
    assert engine.upserted == [("g2", "other", False), ("g1", "new", True)]
    assert feed.applied == {2: 14} and feed.applied_ids == ["g2", "g1"]


async def test_an_outage_is_retried_with_backoff_and_nothing_is_lost(
        feed: Any, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog_feed, "BACKOFF_START_S", 0.01)
    engine.store_down = 3   # the store answers after three probes
    await asyncio.wait_for(feed._apply(0, [record(0, item("a")), record(1, item("b"))]), 5)
    assert engine.upserted == [("a", "t", False), ("b", "t", False)]
    assert feed.retries == 3 and feed.applied == {0: 2}


async def test_an_item_that_fails_while_the_store_answers_is_skipped_alone(feed: Any, engine: FakeEngine) -> None:
    await feed._apply(0, [record(0, item("ok")), record(1, item("bad"))])
    assert engine.upserted == [("ok", "t", False)] and feed.applied == {0: 2}


def test_offsets_and_event_time_are_saved_beside_the_snapshot(tmp_path: Path) -> None:
    snapshot = tmp_path / "engine.snapshot"
    assert load_resume(snapshot) == Resume({})
    save_resume(snapshot, Resume({0: 5, 3: 12}, 1_300_000_000.5))
    assert load_resume(snapshot) == Resume({0: 5, 3: 12}, 1_300_000_000.5)
    (tmp_path / "resume.json").write_text("{broken")
    assert load_resume(snapshot) == Resume({})
