"""The worker's timers (`streams.worker.maintenance`): memory settling once the catalog is read,
and the ANN index built only after items changed. (Snapshots during a store outage:
tests/streams/test_snapshot_store_outage.py.)"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from pathlib import Path
from unittest.mock import AsyncMock, patch

import pytest

from streams.worker.maintenance import GC_YOUNG_THRESHOLD
from streams.worker.wiring import Worker
from tests.streams.fake_engine import FakeEngine, catalog
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


async def test_the_ann_index_is_built_once_after_items_changed(worker: Worker) -> None:
    with patch.object(worker.ctx.runner, "optimize_store", new=AsyncMock()) as optimize:
        await worker.maintenance.optimize_store()
        assert optimize.await_count == 0            # nothing changed since start
        worker.items.applied(catalog(3))            # the catalog feed applied items
        assert worker.ctx.items_changed == 3
        await worker.maintenance.optimize_store()
        await worker.maintenance.optimize_store()
        assert optimize.await_count == 1 and worker.ctx.items_changed == 0
