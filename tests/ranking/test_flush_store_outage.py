"""Regression: `Recommender.flush_store` forgot the items it had to write before writing them,
so an upsert that failed while the Qdrant server was away dropped those items from the store
for good (tests/faults/test_store_outage.py: an item missing after the outage). They now stay
pending until a write succeeds."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pytest

from ranking.engine import Recommender
from ranking.memory_store import MemoryStore
from ranking.store import ItemPoint
from streams.contracts.schemas import ItemEvent


class FlakyStore(MemoryStore):
    """A store whose writes fail while `down`."""

    down = False

    def upsert(self, points: Sequence[ItemPoint], *, defer: bool = False) -> None:
        if self.down:
            raise ConnectionError("store away")
        super().upsert(points)


def item(item_id: str) -> ItemEvent:
    return ItemEvent(item_id=item_id, title=item_id.upper(), ts=time.time())


def test_items_whose_write_failed_are_written_by_the_next_flush() -> None:
    store = FlakyStore(4)
    rec = Recommender(store=store, encoder=None)
    rec.upsert_items([item("a")], [np.array([1, 0, 0, 0], np.float32)])
    store.down = True
    with pytest.raises(ConnectionError):
        rec.upsert_items([item("b")], [np.array([0, 1, 0, 0], np.float32)])
    assert store.get(["b"]) == {}
    store.down = False
    rec.flush_store()
    assert set(store.get(["b"])) == {"b"}
