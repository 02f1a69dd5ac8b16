"""The embedded shard's index rebuilt in a child process (`ranking.edge_rebuild`): writes made
while it copies, builds and catches up all reach the shard it switches to, a failed build
leaves the live shard whole, and a store of the old layout moves to generations."""

from __future__ import annotations

import logging
import threading
from collections import Counter
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from ranking import edge_rebuild, qdrant_store
from ranking.qdrant_store import EdgeStore
from ranking.store import ItemPoint

DIM = 16


def vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def points(lo: int, hi: int, seed: int = 0) -> list[ItemPoint]:
    return [ItemPoint(f"item-{i}", vec(seed * 100_000 + i), {"title": f"t{i}", "langs": ["en"]})
            for i in range(lo, hi)]


def stage_of(store: EdgeStore) -> str:
    rebuild = store._rebuild
    return ("idle" if rebuild is None else "copying" if rebuild.copying
            else "building" if rebuild.shard is None else "catching up")


def run_until_switched(store: EdgeStore, *, write: Callable[[str], None] | None = None,
                       timeout_s: float = 60.0) -> Counter[str]:
    """Call maintain() as the engine does, calling `write(stage)` before each call; returns
    how many calls each stage of the rebuild took."""
    before = store.rebuilds
    stages: Counter[str] = Counter()
    deadline = time.monotonic() + timeout_s
    while store.rebuilds == before:
        assert time.monotonic() < deadline, "the rebuild never finished"
        stage = stage_of(store)
        stages[stage] += 1
        if write is not None:
            write(stage)
        store.maintain()
        time.sleep(0.01)
    return stages


def assert_holds(store: EdgeStore, expected: dict[str, np.ndarray]) -> None:
    assert store.count() == len(expected)
    got = store.get(list(expected))
    assert set(got) == set(expected)
    for item_id, v in expected.items():
        np.testing.assert_allclose(got[item_id].vector, v, atol=1e-5)
        assert store.search(v, 1)[0].item_id == item_id


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EdgeStore]:
    s = EdgeStore(tmp_path / "shard", DIM, rebuild_after=100)
    yield s
    s.close()


def test_writes_during_a_rebuild_reach_the_new_shard(store: EdgeStore, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edge_rebuild, "CATCH_UP_BATCH", 2)   # catching up takes many calls
    expected = {p.item_id: p.vector for p in points(0, 150)}
    store.upsert(points(0, 150))
    store.maintain()                                   # 150 written >= 100: the copy starts
    store.delete(["item-149"])
    del expected["item-149"]
    written: Counter[str] = Counter()

    def write(stage: str) -> None:   # one per call: a new vector for an old item, or a new item
        n = sum(written.values())
        p = points(n % 140, n % 140 + 1, seed=n + 1)[0] if n % 2 else points(1000 + n, 1001 + n)[0]
        store.upsert([p])
        expected[p.item_id] = p.vector
        written[stage] += 1

    run_until_switched(store, write=write)
    assert store.rebuilds == 1 and written["building"] > 0 and written["catching up"] > 0, written
    assert_holds(store, expected)
    root = tmp_path / "shard"
    assert (root / "CURRENT").read_text().strip() == "gen-1"
    assert sorted(p.name for p in root.glob("gen-*")) == ["gen-1"]   # the old one and the log are gone
    store.close()
    again = EdgeStore(root, DIM, rebuild_after=None)
    try:
        assert_holds(again, expected)
    finally:
        again.close()


def test_writes_are_held_while_the_files_are_copied(store: EdgeStore, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    real_copy = edge_rebuild.shutil.copytree

    def slow_copy(*args, **kwargs):  # type: ignore[no-untyped-def]
        release.wait(30)
        return real_copy(*args, **kwargs)

    monkeypatch.setattr(edge_rebuild.shutil, "copytree", slow_copy)
    store.upsert(points(0, 120))
    store.maintain()
    assert store._rebuild is not None and store._rebuild.copying
    late = points(0, 1, seed=7)
    store.upsert(late)
    store.delete(["item-5"])
    got = store.get(["item-0", "item-5"])             # reads see the held writes
    assert set(got) == {"item-0"}
    np.testing.assert_allclose(got["item-0"].vector, late[0].vector, atol=1e-5)
    release.set()
    run_until_switched(store)
    expected = {p.item_id: p.vector for p in points(0, 120)} | {"item-0": late[0].vector}
    del expected["item-5"]
    assert_holds(store, expected)


def test_a_failed_build_leaves_the_live_shard_whole(store: EdgeStore, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(edge_rebuild.sys, "executable", "/bin/false")
    store.upsert(points(0, 120))
    store.maintain()
    store.upsert(points(120, 130))                    # held while copying, or written while building
    deadline = time.monotonic() + 30
    while store._rebuild is not None:
        assert time.monotonic() < deadline
        store.maintain()
        time.sleep(0.01)
    assert "rebuild was abandoned" in caplog.text and "exited with 1" in caplog.text
    assert store.rebuilds == 0
    assert_holds(store, {p.item_id: p.vector for p in points(0, 130)})
    assert sorted(p.name for p in (tmp_path / "shard").glob("gen-*")) == ["gen-0"]
    store.maintain()                                   # waits before it tries again
    assert store._rebuild is None


def test_a_shard_of_the_old_layout_moves_to_a_generation(tmp_path: Path) -> None:
    from qdrant_edge import EdgeShard

    root = tmp_path / "shard"
    EdgeShard.create(str(root), edge_rebuild.edge_config(DIM)).close()   # shard files in the root
    store = EdgeStore(root, DIM, rebuild_after=100)
    try:
        store.upsert(points(0, 120))
        run_until_switched(store)
        assert_holds(store, {p.item_id: p.vector for p in points(0, 120)})
        assert sorted(p.name for p in root.iterdir()) == ["CURRENT", "gen-1", "xlrec.lock"]
    finally:
        store.close()


def test_a_copy_left_by_a_crash_is_removed_on_open(tmp_path: Path) -> None:
    root = tmp_path / "shard"
    EdgeStore(root, DIM).close()
    (root / "gen-7").mkdir()
    (root / "gen-7.log").write_text("interrupted")
    EdgeStore(root, DIM).close()
    assert sorted(p.name for p in root.glob("gen-*")) == ["gen-0"]


def test_deferred_writes_are_indexed_by_the_next_rebuild(store: EdgeStore, tmp_path: Path) -> None:
    """A vector moved by reviews may reach searches at the next build: until then searches
    see the old one, `get` the new one; the rebuilt copy has it; a later plain write wins."""
    store.upsert(points(0, 50))
    old, moved = points(0, 1)[0], points(0, 1, seed=9)[0]
    store.upsert([moved], defer=True)
    scores = {h.item_id: h.score for h in store.search(moved.vector, 50)}
    assert scores["item-0"] == pytest.approx(float(old.vector @ moved.vector), abs=1e-4)   # the old vector
    np.testing.assert_allclose(store.get(["item-0"])["item-0"].vector, moved.vector, atol=1e-5)
    store.upsert(points(1, 3, seed=5), defer=True)
    store.upsert(points(2, 3, seed=6))                   # newer than its deferred write
    store.upsert(points(50, 110))                        # 110 written or deferred: a rebuild
    run_until_switched(store)
    expected = ({p.item_id: p.vector for p in points(0, 110)} | {"item-0": moved.vector}
                | {p.item_id: p.vector for p in points(1, 2, seed=5) + points(2, 3, seed=6)})
    assert_holds(store, expected)
    store.upsert([points(3, 4, seed=8)[0]], defer=True)  # not rebuilt yet: a close writes it
    store.close()
    again = EdgeStore(tmp_path / "shard", DIM, rebuild_after=None)
    try:
        assert_holds(again, expected | {"item-3": points(3, 4, seed=8)[0].vector})
    finally:
        again.close()


def test_a_rebuild_overtaken_by_writes_starts_again_later(store: EdgeStore, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """A catalog being loaded writes faster than a copy is built: replaying it all onto the
    copy would cost what the writes did, so the copy is dropped quietly and made later."""
    monkeypatch.setattr(qdrant_store, "MAX_PENDING_WRITES", 5)
    caplog.set_level(logging.INFO, logger="ranking.qdrant_store")
    store.upsert(points(0, 120))
    store.maintain()
    deadline = time.monotonic() + 30
    n = 120
    while store._rebuild is not None:
        assert time.monotonic() < deadline
        store.upsert(points(n, n + 1))
        n += 1
        store.maintain()
        time.sleep(0.01)
    assert "starts again later" in caplog.text and "abandoned" not in caplog.text
    assert store.rebuilds == 0
    assert_holds(store, {p.item_id: p.vector for p in points(0, n)})
