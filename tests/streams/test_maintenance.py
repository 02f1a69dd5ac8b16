"""The worker's timers (`streams.worker.maintenance`): memory settling once the catalog is read,
and the vector store's index upkeep on the engine thread. (Snapshots during a store outage:
tests/streams/test_snapshot_store_outage.py.)"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Iterator
from pathlib import Path
from unittest.mock import patch

import pytest

from ranking.memory_store import MemoryStore
from streams.worker.maintenance import GC_YOUNG_THRESHOLD
from streams.worker.wiring import Worker
from tests.streams.fake_engine import FakeEngine
from tests.streams.fake_worker import fake_worker

pytestmark = pytest.mark.anyio


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    with fake_worker(FakeEngine(), tmp_path) as w:
        yield w


async def test_start_up_state_leaves_the_cyclic_gc_once_the_catalog_is_read(worker: Worker) -> None:
    threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
    worker.feed.ready.clear()
    settling = asyncio.create_task(worker.maintenance.settle_memory())
    try:
        await asyncio.sleep(0.05)
        assert not settling.done() and gc.get_freeze_count() == frozen  # the catalog is still loading
        worker.feed.ready.set()
        await asyncio.wait_for(settling, 5)
        assert gc.get_freeze_count() > frozen and gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
    finally:
        settling.cancel()
        gc.unfreeze()
        gc.set_threshold(*threshold)


async def test_the_store_is_maintained_on_the_engine_thread(tmp_path: Path) -> None:
    """The timer steps the store's index upkeep on the thread that owns the store (an embedded
    shard is used from one thread: its rebuild switches shards between two calls)."""
    threads: list[str] = []
    store = MemoryStore(4)
    with fake_worker(FakeEngine(), tmp_path, store=store) as worker, \
            patch.object(store, "maintain", side_effect=lambda: threads.append(threading.current_thread().name)):
        await worker.maintenance.maintain_store()
        await worker.maintenance.maintain_store()
    assert len(threads) == 2 and all(name.startswith("xlrec-engine") for name in threads), threads
