"""One conformance suite for every VectorStore implementation (River-style: a tiny protocol,
several implementations, one shared test). Add a new store to STORES and it is checked too."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ranking.qdrant_store import EdgeStore, ServerStore, StoreError, collection_name, open_store
from ranking.store import ItemPoint, VectorStore
from streams.contracts.settings import Settings

DIM = 16

StoreFactory = Callable[[Path, int], VectorStore]

STORES: dict[str, StoreFactory] = {
    "edge": lambda path, dim: EdgeStore(path / "shard", dim),
    "server-memory": lambda path, dim: ServerStore(":memory:", dim),
}
try:  # the in-memory numpy store, where it exists, must behave the same
    from ranking.memory_store import MemoryStore

    STORES["memory"] = lambda path, dim: MemoryStore(dim)
except ImportError:
    pass


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    s = STORES[request.param](tmp_path, DIM)
    yield s
    s.close()


def unit(*hot: int, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[list(hot)] = 1.0
    if noise:
        v += np.random.default_rng(seed).normal(0, noise, DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def point(item_id: str, *hot: int, langs: list[str] | None = None, **payload) -> ItemPoint:
    return ItemPoint(item_id, unit(*hot), {"title": item_id, "langs": langs or ["en"], **payload})


def test_empty_store(store: VectorStore) -> None:
    assert store.dim == DIM
    assert store.count() == 0
    assert store.search(unit(0), 5) == []
    assert store.get(["nope"]) == {}
    store.delete(["nope"])  # unknown ids are ignored


def test_search_is_cosine_best_first(store: VectorStore) -> None:
    store.upsert([point("a", 0), point("b", 0, 1), point("c", 2), point("d", 3)])
    hits = store.search(unit(0), 3)
    assert [h.item_id for h in hits][:2] == ["a", "b"]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[1].score == pytest.approx(float(unit(0) @ unit(0, 1)), abs=1e-5)
    assert all(x.score >= y.score for x, y in zip(hits, hits[1:]))
    assert len(store.search(unit(0), 10)) == 4


def test_payload_round_trip_keeps_item_id(store: VectorStore) -> None:
    store.upsert([point("game:1", 0, langs=["de", "en"], ts=1_700_000_000.0, categories=["rpg"],
                        counters={"clicks": 3})])
    hit = store.search(unit(0), 1)[0]
    assert hit.item_id == "game:1"
    expected = {"title": "game:1", "langs": ["de", "en"], "ts": 1_700_000_000.0,
                "categories": ["rpg"], "counters": {"clicks": 3}}
    assert expected.items() <= hit.payload.items()
    got = store.get(["game:1", "missing"])
    assert list(got) == ["game:1"]
    assert got["game:1"].item_id == "game:1"
    assert expected.items() <= got["game:1"].payload.items()
    np.testing.assert_allclose(got["game:1"].vector, unit(0), atol=1e-5)
    assert got["game:1"].vector.dtype == np.float32


def test_search_without_payload_gives_ids_and_scores_only(store: VectorStore) -> None:
    store.upsert([point("a", 0, langs=["de"]), point("b", 0, 1), point("c", 2)])
    full = store.search(unit(0), 3, exclude=["c"], langs=["de", "en"])
    bare = store.search(unit(0), 3, exclude=["c"], langs=["de", "en"], payload=False)
    assert [(h.item_id, round(h.score, 5)) for h in bare] == [(h.item_id, round(h.score, 5)) for h in full]
    assert [h.item_id for h in bare] == ["a", "b"]
    assert all(h.payload == {} for h in bare) and full[0].payload["langs"] == ["de"]
    # Again, once the store may know the ids (EdgeStore keeps those searches returned), and
    # after a delete and a new item: the ids follow the points, never a remembered answer.
    assert [h.item_id for h in store.search(unit(0), 3, payload=False)] == ["a", "b", "c"]
    store.delete(["a"])
    store.upsert([point("d", 0)])
    assert [h.item_id for h in store.search(unit(0), 3, payload=False)] == ["d", "b", "c"]


def test_upsert_is_idempotent_by_item_id(store: VectorStore) -> None:
    store.upsert([point("a", 0)])
    store.upsert([point("a", 0)])
    assert store.count() == 1
    store.upsert([point("a", 5, langs=["ko"])])  # an update replaces vector and payload
    assert store.count() == 1
    hit = store.search(unit(5), 1)[0]
    assert hit.item_id == "a" and hit.score == pytest.approx(1.0, abs=1e-5)
    assert hit.payload["langs"] == ["ko"]


def test_delete_stops_recommending(store: VectorStore) -> None:
    store.upsert([point("a", 0), point("b", 1)])
    store.delete(["a", "never-existed"])
    assert store.count() == 1
    assert [h.item_id for h in store.search(unit(0), 5)] == ["b"]
    assert store.get(["a"]) == {}


def test_exclude_and_language_filter(store: VectorStore) -> None:
    store.upsert([point("de1", 0, langs=["de"]), point("en1", 0, 1, langs=["en"]),
                  point("multi", 0, 2, langs=["ko", "de"]), point("ja1", 3, langs=["ja"])])
    assert {h.item_id for h in store.search(unit(0), 5, exclude=["de1", "unknown"])} == {"en1", "multi", "ja1"}
    assert {h.item_id for h in store.search(unit(0), 5, langs={"de"})} == {"de1", "multi"}
    assert {h.item_id for h in store.search(unit(0), 5, langs=["ja", "en"])} == {"en1", "ja1"}
    assert {h.item_id for h in store.search(unit(0), 5, langs={"de"}, exclude={"multi"})} == {"de1"}
    assert store.search(unit(0), 5, langs=[]) == []


def test_vectors_are_normalised_for_cosine(store: VectorStore) -> None:
    store.upsert([ItemPoint("big", unit(0) * 7.0, {"langs": ["en"]})])
    hit = store.search(unit(0) * 0.5, 1)[0]
    assert hit.score == pytest.approx(1.0, abs=1e-5)


def test_wrong_dimension_is_refused(store: VectorStore) -> None:
    with pytest.raises(ValueError, match="dimensions"):
        store.upsert([ItemPoint("x", np.ones(DIM + 1, dtype=np.float32), {})])


def test_optimize_keeps_results(store: VectorStore) -> None:
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(300, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    store.upsert([ItemPoint(f"i{i}", v, {"langs": ["en"]}) for i, v in enumerate(vecs)])
    query = vecs[7]
    before = [h.item_id for h in store.search(query, 5)]
    store.optimize()
    after = [h.item_id for h in store.search(query, 5)]
    assert before[0] == after[0] == "i7"
    assert store.count() == 300
    exact = [f"i{i}" for i in np.argsort(-(vecs @ query))[:5]]
    assert before == exact


# --- implementation-specific behaviour ------------------------------------------------

def test_edge_store_persists_across_reopen(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "shard", DIM)
    store.upsert([point("a", 0, langs=["fr"])])
    store.close()
    again = EdgeStore(tmp_path / "shard", DIM)
    try:
        assert again.count() == 1
        assert again.search(unit(0), 1)[0].payload["langs"] == ["fr"]
    finally:
        again.close()


def _hold_shard(path: str, ready: Any, done: Any) -> None:
    store = EdgeStore(path, DIM)
    ready.set()
    done.wait(30)
    store.close()


def test_edge_store_refuses_a_path_held_by_another_process(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready, done = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_shard, args=(str(tmp_path / "shard"), ready, done))
    holder.start()
    try:
        assert ready.wait(30), "the holder process did not open the shard"
        with pytest.raises(StoreError, match=rf"held by pid {holder.pid}.*XLREC_QDRANT_URL"):
            EdgeStore(tmp_path / "shard", DIM)
    finally:
        done.set()
        holder.join(30)
    EdgeStore(tmp_path / "shard", DIM).close()  # free again once the holder exits


def test_edge_store_lock_dies_with_its_process(tmp_path: Path) -> None:
    """A SIGKILLed worker leaves no stale lock: the kernel drops flock with the process."""
    code = (f"from ranking.qdrant_store import EdgeStore; import os; "
            f"EdgeStore({str(tmp_path / 'shard')!r}, {DIM}); os._exit(0)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    EdgeStore(tmp_path / "shard", DIM).close()


def test_server_store_refuses_another_dimension() -> None:
    from qdrant_client import QdrantClient

    client = QdrantClient(":memory:")
    ServerStore(":memory:", DIM, "items", client=client).upsert([point("a", 0)])
    with pytest.raises(StoreError, match="holds 16-d vectors"):
        ServerStore(":memory:", DIM * 2, "items", client=client)
    assert ServerStore(":memory:", DIM, "items", client=client).count() == 1
    client.close()


def test_open_store_picks_the_implementation(tmp_path: Path) -> None:
    edge = open_store(Settings(data_dir=tmp_path), DIM)
    try:
        assert isinstance(edge, EdgeStore)
        assert edge.path == tmp_path / "qdrant" / "xlrec_items_16"
    finally:
        edge.close()
    server = open_store(Settings(data_dir=tmp_path, qdrant_url=":memory:", topic_prefix="t1."), DIM)
    try:
        assert isinstance(server, ServerStore) and server.collection == "t1_items_16"
    finally:
        server.close()
    assert collection_name("xlrec.", 384) == "xlrec_items_384"
