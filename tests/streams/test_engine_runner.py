"""The engine runner (`streams.worker.engine_runner`): which thread does what. (Non-finite scores:
tests/streams/test_nonfinite_scores.py; learning under a backlog: tests/streams/test_user_events.py.)"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import pytest

from streams.contracts.schemas import ItemEvent
from streams.worker.engine_runner import EngineRunner
from tests.streams.fake_engine import NOW, FakeEngine

pytestmark = pytest.mark.anyio


class ThreadRecordingEncoder:
    """Embeds a text as its length, and records the thread it ran on."""

    name, dim = "fake-length", 4

    def __init__(self) -> None:
        self.threads: list[str] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.threads.append(threading.current_thread().name)
        return np.stack([np.full(4, len(t), dtype=np.float32) for t in texts])


async def test_item_texts_are_encoded_off_the_engine_thread() -> None:
    """The runner embeds live items in one encoder batch and hands the vectors to the engine
    (deleted items get a placeholder the engine ignores)."""
    encoder = ThreadRecordingEncoder()
    engine = FakeEngine(encoder=encoder)
    runner = EngineRunner(engine)
    try:
        await runner.upsert_items([ItemEvent(item_id="a", title="Abc", ts=NOW),
                                   ItemEvent(item_id="b", title="B", ts=NOW, deleted=True),
                                   ItemEvent(item_id="c", title="Cdefg", description="x", ts=NOW)])
    finally:
        runner.close()
    (thread, ids, vectors), = engine.upserts
    assert encoder.threads == ["xlrec-encode_0"] and thread.startswith("xlrec-engine")
    assert vectors is not None
    assert ids == ["a", "b", "c"] and [float(v[0]) for v in vectors] == [3.0, 0.0, 8.0]
