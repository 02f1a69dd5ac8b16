"""Fixtures of the worker's unit tests: a FakeEngine with a small catalog, and a real `Worker`
on Faust's test context around it (sends and changelog writes patched). A test file that needs
other settings defines its own `engine` or `worker`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.worker.wiring import Worker
from tests.streams.fake_engine import FakeEngine, catalog
from tests.streams.fake_worker import fake_worker


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(items=catalog(10))


@pytest.fixture
def worker(engine: FakeEngine, tmp_path: Path) -> Iterator[Worker]:
    with fake_worker(engine, tmp_path, rank_interval_s=1.0, top_k=3, feedback_window_s=60.0) as w:
        yield w
