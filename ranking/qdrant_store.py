"""Qdrant behind the VectorStore protocol: embedded (qdrant-edge-py, the default) or a server
(qdrant-client), so the worker and the evaluation harness never see which one they talk to.

Qdrant point ids must be ints or UUIDs: an item's point id is uuid5 of its item_id, which
makes upserts idempotent by item_id, and the item_id itself travels in the payload.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from ranking.edge_rebuild import ROOT_ONLY, DeferredWrites, ShardRebuild, edge_config
from ranking.store import Hit, ItemPoint, VectorStore

log = logging.getLogger(__name__)

ITEM_ID_KEY = "item_id"
LANGS_KEY = "langs"
# A fixed namespace: the same item_id maps to the same point id in every process and store.
POINT_NAMESPACE = uuid.UUID("8d3a5f0e-5b7c-4c1e-9a53-2f6a1c0b7e41")
# The embedded shard's index is rebuilt (in a child process) once this many points were
# written or deferred since the last build; past MAX_PENDING_WRITES written during one rebuild (a catalog
# being loaded), that rebuild is dropped and another starts REBUILD_RETRY_S later.
REBUILD_AFTER = 2_000
REBUILD_SHARE = 0.05     # ... or a twentieth of the shard, whichever is more
MAX_PENDING_WRITES = 50_000
REBUILD_RETRY_S = 10.0


class StoreError(RuntimeError):
    """The vector store cannot be opened or used; the message says why and what to do."""


@functools.lru_cache(maxsize=65_536)
def point_id(item_id: str) -> str:
    """Stable Qdrant point id (UUID string) of an item (cached: a user's history is excluded
    from every search they get, and uuid5 hashes with SHA-1)."""
    return str(uuid.uuid5(POINT_NAMESPACE, item_id))


def _as_vector(vector: np.ndarray, dim: int) -> list[float]:
    vec = np.asarray(vector, dtype=np.float32).reshape(-1)
    if vec.shape[0] != dim:
        raise ValueError(f"vector has {vec.shape[0]} dimensions, the store holds {dim}")
    return vec.tolist()


def _payload(point: ItemPoint) -> dict[str, Any]:
    return {**point.payload, ITEM_ID_KEY: point.item_id}


def _hit(stored: dict[str, Any], score: float, payload: bool) -> Hit:
    return Hit(stored[ITEM_ID_KEY], score, dict(stored) if payload else {})


def _to_point(record: Any) -> tuple[str, ItemPoint]:
    """A retrieved Qdrant record (edge or client) as (item_id, ItemPoint)."""
    payload = dict(record.payload or {})
    item_id = payload[ITEM_ID_KEY]
    return item_id, ItemPoint(item_id, np.asarray(record.vector, dtype=np.float32), payload)


class EdgeStore:
    """The Qdrant engine in-process, on disk under `path` (one process owns a shard path).

    Points written since the ANN index was built are scanned exactly by every search, and
    qdrant-edge's `optimize()` holds the GIL while it builds. So once `rebuild_after` points
    were written, `maintain()` (called often by the owner) rebuilds the index in a child
    process (`ranking.edge_rebuild`) and switches to the rebuilt copy. The shard lives in a
    generation directory named by the `CURRENT` file (a shard of the old layout, directly in
    `path`, is used as it is until its first rebuild). `optimize()` builds in-process.
    """

    LOCK_FILE = "xlrec.lock"
    CURRENT_FILE = "CURRENT"

    def __init__(self, path: Path | str, dim: int, *, rebuild_after: int | None = REBUILD_AFTER) -> None:
        from qdrant_edge import EdgeShard

        self.path = Path(path)
        self.dim = dim
        self.rebuild_after = rebuild_after
        self.rebuilds = 0                    # switched to a rebuilt copy (for tests and benches)
        self._written = 0                    # points written since the index was last built
        self._rebuild: ShardRebuild | None = None
        self._deferred: dict[str, ItemPoint] = {}   # for the next rebuild (`upsert(defer=True)`)
        # Point id -> item_id of the points searches returned: a search without payload reads
        # them here (reading the item_id payload of 100 hits cost 0.4-1 ms at 100,000 points,
        # more than the search). A point id is a function of its item_id, so an entry never
        # goes stale; deleted items leave.
        self._item_ids: dict[int | uuid.UUID | str, str] = {}
        self._retry_at = 0.0
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = self._acquire_lock()
        self._live = self._live_dir()
        self._remove_stale_generations()
        try:
            if (self._live / "edge_config.json").exists():
                self._shard = EdgeShard.load(str(self._live), edge_config(dim))
            else:
                self._shard = EdgeShard.create(str(self._live), edge_config(dim))
        except Exception as exc:
            self._release_lock()
            raise StoreError(f"cannot open the embedded Qdrant shard at {self._live}: {exc}") from None
        self._points = self.count()

    def _live_dir(self) -> Path:
        current = self.path / self.CURRENT_FILE
        if current.exists():
            return self.path / current.read_text().strip()
        if (self.path / "edge_config.json").exists():
            return self.path                 # the layout before generations
        current.write_text("gen-0\n")
        return self.path / "gen-0"

    def _remove_stale_generations(self) -> None:
        """Copies left by a rebuild that a crash interrupted."""
        for entry in self.path.glob("gen-*"):
            if entry != self._live:
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)

    def _acquire_lock(self) -> IO[str]:
        """Fail at once, naming the holder, when another process owns the shard path."""
        handle = open(self.path / self.LOCK_FILE, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise StoreError(
                f"the embedded Qdrant shard {self.path} is held by pid {holder}; one process owns "
                "a shard path: stop that worker, give this one another XLREC_DATA_DIR, or share "
                "vectors through a Qdrant server with XLREC_QDRANT_URL") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        return handle

    def _release_lock(self) -> None:
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def upsert(self, points: Sequence[ItemPoint], *, defer: bool = False) -> None:
        if defer:    # kept for the next rebuild, which indexes them with the rest
            for p in points:
                self._deferred.pop(p.item_id, None)
                self._deferred[p.item_id] = p
            return
        self._write({p.item_id: p for p in points})

    def delete(self, item_ids: Sequence[str]) -> None:
        for item_id in item_ids:
            self._item_ids.pop(uuid.UUID(point_id(item_id)), None)
        self._write(dict.fromkeys(item_ids))

    def _write(self, writes: dict[str, ItemPoint | None]) -> None:
        """Writes reach the live shard, except while a rebuild copies its files (held until
        the copy is done); a rebuild under way remembers them for its copy. A write replaces
        the item's deferred one, which is older."""
        if not writes:
            return
        self._written += len(writes)
        for item_id in writes:
            self._deferred.pop(item_id, None)
        if self._rebuild is not None:
            for item_id, write in writes.items():
                self._rebuild.remember(item_id, write)
            if self._rebuild.copying:
                return
        self._apply(None, writes)

    def _apply(self, shard: Any, writes: dict[str, ItemPoint | None]) -> None:
        from qdrant_edge import Point, UpdateOperation

        shard = self._shard if shard is None else shard
        upserts = [Point(point_id(p.item_id), _as_vector(p.vector, self.dim), _payload(p))
                   for p in writes.values() if p is not None]
        deletes: list[int | uuid.UUID | str] = [point_id(item_id) for item_id, p in writes.items() if p is None]
        if upserts:
            shard.update(UpdateOperation.upsert_points(upserts))
        if deletes:
            shard.update(UpdateOperation.delete_points(deletes))

    def maintain(self) -> None:
        """Advance the background index rebuild by one short step (start it once
        `rebuild_after` points were written since the last build). Call it often, from the
        thread that owns the store; a failed rebuild is logged and tried again later."""
        rebuild = self._rebuild
        if rebuild is None:
            if (self.rebuild_after is not None and time.monotonic() >= self._retry_at
                    and self._written + len(self._deferred) >= max(self.rebuild_after, REBUILD_SHARE * self._points)):
                self._start_rebuild()
            return
        try:
            done = rebuild.step(self._apply)
        except Exception as exc:
            log.warning("the vector index rebuild was abandoned: %s", exc)
            done = None
        if done is False and len(rebuild.pending) > MAX_PENDING_WRITES:   # a catalog being loaded
            log.info("the vector index rebuild starts again later: %s writes came while it ran",
                     f"{len(rebuild.pending):,}")
            done = None
        if done is None:
            self._drop_rebuild()
            self._retry_at = time.monotonic() + REBUILD_RETRY_S
            return
        if done:
            self._switch(rebuild)

    def _start_rebuild(self) -> None:
        base, self._deferred = self._deferred, {}
        points = list(base.values())
        deferred = DeferredWrites(
            [point_id(p.item_id) for p in points],
            np.stack([np.asarray(_as_vector(p.vector, self.dim), np.float32) for p in points])
            if points else np.zeros((0, self.dim), np.float32),
            [_payload(p) for p in points])
        self._shard.flush()
        self._rebuild = ShardRebuild(self._live, self._next_generation(), self.dim, base, deferred)

    def _apply_deferred(self) -> None:
        """Before an in-process build or a close: the deferred writes reach the live shard."""
        self._drop_rebuild()
        deferred, self._deferred = self._deferred, {}
        self._apply(None, dict(deferred))

    def _drop_rebuild(self) -> None:
        if self._rebuild is not None:
            rebuild, self._rebuild = self._rebuild, None
            self._apply(None, rebuild.abandon())

    def _next_generation(self) -> Path:
        numbers = [int(p.name[4:]) for p in self.path.glob("gen-*") if p.name[4:].isdigit()]
        return self.path / f"gen-{max(numbers, default=0) + 1}"

    def _switch(self, rebuild: ShardRebuild) -> None:
        """Make the caught-up copy the live shard, durably, and remove the old one."""
        old, old_dir = self._shard, self._live
        self._shard, self._live = rebuild.shard, rebuild.target
        rebuild.shard = None
        self._rebuild = None
        self._written = 0
        self._points = self.count()
        self.rebuilds += 1
        tmp = self.path / (self.CURRENT_FILE + ".tmp")
        tmp.write_text(self._live.name + "\n")
        os.replace(tmp, self.path / self.CURRENT_FILE)
        old.close()
        rebuild.remove_side_files()
        if old_dir == self.path:   # the old layout: the shard's own entries in the root
            for entry in self.path.iterdir():
                if not any(entry.match(pattern) for pattern in ROOT_ONLY):
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        else:
            shutil.rmtree(old_dir, ignore_errors=True)

    def get(self, item_ids: Sequence[str]) -> dict[str, ItemPoint]:
        if not item_ids:
            return {}
        records = self._shard.retrieve([point_id(i) for i in item_ids], with_payload=True, with_vector=True)
        found = dict(_to_point(rec) for rec in records)
        later = (self._rebuild.unapplied() if self._rebuild else {}) | self._deferred   # not in the live shard yet
        for item_id in item_ids:
            if item_id in later:
                write = later[item_id]
                if write is None:
                    found.pop(item_id, None)
                else:
                    found[item_id] = write
        return found

    def search(self, vector: np.ndarray, k: int, *, exclude: Collection[str] = (),
               langs: Collection[str] | None = None, payload: bool = True) -> list[Hit]:
        from qdrant_edge import FieldCondition, Filter, HasIdCondition, MatchAny, Query, SearchRequest

        if k <= 0 or (langs is not None and not langs):
            return []
        must: list[Any] | None = [FieldCondition(LANGS_KEY, match=MatchAny(list(langs)))] if langs is not None else None
        must_not: list[Any] | None = [HasIdCondition({point_id(i) for i in exclude})] if exclude else None
        flt = Filter(must=must, must_not=must_not) if (must or must_not) else None
        found = self._shard.search(SearchRequest(query=Query.Nearest(_as_vector(vector, self.dim)),
                                                 limit=k, filter=flt, with_payload=payload))
        if payload:   # every point has at least its item_id in the payload
            return [_hit(p.payload, float(p.score), True) for p in found]  # type: ignore[arg-type]
        ids = [p.id for p in found]
        missing = [i for i in ids if i not in self._item_ids]
        if missing:
            for record in self._shard.retrieve(missing, with_payload=True, with_vector=False):
                self._item_ids[record.id] = (record.payload or {})[ITEM_ID_KEY]
        return [Hit(self._item_ids[i], float(p.score), {}) for i, p in zip(ids, found)]

    def count(self) -> int:
        from qdrant_edge import CountRequest

        return int(self._shard.count(CountRequest(exact=True)))

    def optimize(self) -> None:
        """Build the index here and now (holding the GIL: for benches and tests)."""
        self._apply_deferred()
        self._shard.optimize()
        self._written = 0

    def close(self) -> None:
        if not self._lock.closed:
            self._apply_deferred()
            self._shard.flush()
            self._shard.close()
            self._release_lock()


class ServerStore:
    """A Qdrant server (`XLREC_QDRANT_URL`) shared by several workers, via qdrant-client.

    `url=":memory:"` runs qdrant-client's in-process implementation of the same API (tests);
    `client` shares one existing QdrantClient between stores.
    """

    def __init__(self, url: str, dim: int, collection: str = "xlrec_items", *,
                 timeout_s: int = 10, client: Any = None) -> None:
        from qdrant_client import QdrantClient, models

        self.dim = dim
        self.collection = collection
        self.url = url
        self._models = models
        if client is None:
            client = (QdrantClient(location=":memory:") if url == ":memory:"
                      else QdrantClient(url=url, timeout=timeout_s))
        self._client = client
        try:
            if self._client.collection_exists(collection):
                params = self._client.get_collection(collection).config.params.vectors
                size = getattr(params, "size", None)
                if size != dim:
                    raise StoreError(f"Qdrant collection {collection!r} at {url} holds {size}-d vectors, "
                                     f"the encoder makes {dim}-d ones; use another collection")
            else:
                self._client.create_collection(
                    collection, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE))
                if url != ":memory:":
                    self._client.create_payload_index(collection, LANGS_KEY, models.PayloadSchemaType.KEYWORD)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"cannot reach the Qdrant server at {url}: {exc}") from None

    def upsert(self, points: Sequence[ItemPoint], *, defer: bool = False) -> None:
        if points:   # the server indexes as it goes: deferring would gain nothing
            self._client.upsert(self.collection, wait=True, points=[
                self._models.PointStruct(id=point_id(p.item_id), vector=_as_vector(p.vector, self.dim),
                                         payload=_payload(p)) for p in points])

    def delete(self, item_ids: Sequence[str]) -> None:
        if item_ids:
            self._client.delete(self.collection, points_selector=[point_id(i) for i in item_ids], wait=True)

    def get(self, item_ids: Sequence[str]) -> dict[str, ItemPoint]:
        if not item_ids:
            return {}
        records = self._client.retrieve(self.collection, [point_id(i) for i in item_ids],
                                        with_payload=True, with_vectors=True)
        return dict(_to_point(rec) for rec in records)

    def search(self, vector: np.ndarray, k: int, *, exclude: Collection[str] = (),
               langs: Collection[str] | None = None, payload: bool = True) -> list[Hit]:
        m = self._models
        if k <= 0 or (langs is not None and not langs):
            return []
        must = [m.FieldCondition(key=LANGS_KEY, match=m.MatchAny(any=list(langs)))] if langs is not None else None
        must_not = [m.HasIdCondition(has_id=[point_id(i) for i in exclude])] if exclude else None
        flt = m.Filter(must=must, must_not=must_not) if (must or must_not) else None
        found = self._client.query_points(self.collection, query=_as_vector(vector, self.dim), limit=k,
                                          query_filter=flt,
                                          with_payload=True if payload else [ITEM_ID_KEY]).points
        return [_hit(p.payload, float(p.score), payload) for p in found]

    def count(self) -> int:
        return int(self._client.count(self.collection, exact=True).count)

    def optimize(self) -> None:
        """The server indexes in the background by itself: nothing to do here."""

    def maintain(self) -> None:
        """The server indexes in the background by itself: nothing to do here."""

    def close(self) -> None:
        self._client.close()


def collection_name(topic_prefix: str, dim: int) -> str:
    """`xlrec.` -> `xlrec_items_384`: one collection per deployment and vector size."""
    base = re.sub(r"[^A-Za-z0-9_-]+", "_", topic_prefix).strip("_") or "xlrec"
    return f"{base}_items_{dim}"


def open_store(settings: Any, dim: int) -> VectorStore:
    """The store the settings ask for: a server when `qdrant_url` is set, else embedded on disk
    under `data_dir/qdrant/<collection>`."""
    name = collection_name(settings.topic_prefix, dim)
    if settings.qdrant_url:
        return ServerStore(settings.qdrant_url, dim, name)
    return EdgeStore(Path(settings.data_dir) / "qdrant" / name, dim)
