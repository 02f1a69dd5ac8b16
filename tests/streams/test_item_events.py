"""The items agent (`streams.worker.item_events`): it only guards the topic for the group; every
worker's `CatalogFeed` applies the items (tests/streams/test_catalog_feed.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.worker.dlq import Reason, parse_headers
from streams.worker.wiring import Worker
from tests.streams.fake_engine import FakeEngine
from tests.streams.fake_worker import NOW, fake_worker, put, sent

pytestmark = pytest.mark.anyio


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def worker(engine: FakeEngine, tmp_path: Path) -> Iterator[Worker]:
    with fake_worker(engine, tmp_path) as w:
        yield w


@pytest.fixture
async def items_agent(worker: Worker) -> AsyncIterator[Any]:
    async with worker.items_agent.test_context() as agent:
        yield agent


async def test_items_agent_dead_letters_poison_and_leaves_items_to_the_catalog_feed(
        worker: Worker, engine: FakeEngine, items_agent: Any) -> None:
    await put(items_agent, "t.items", {"item_id": "g1", "title": "Kriegsspiel", "lang": "de", "ts": NOW}, "g1")
    await put(items_agent, "t.items", b"\xff\xfe not json", b"g2", partition=3, offset=41)
    await asyncio.sleep(0.2)
    assert engine.upserted == []  # every worker's CatalogFeed applies items, not the group's agent
    (letter,) = sent(worker.ctx.topics.dlq.send)
    assert letter["value"] == b"\xff\xfe not json" and letter["key"] == b"g2"
    headers = parse_headers(letter["headers"])
    assert headers["source-topic"] == "t.items" and headers["source-partition"] == "3"
    assert headers["source-offset"] == "41" and headers["reason"] == Reason.INVALID_JSON
    assert "JSON" in headers["error"]
