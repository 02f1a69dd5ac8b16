"""The embedded Qdrant shard's ANN index, rebuilt in a child process.

qdrant-edge builds HNSW inside `optimize()` and holds the GIL the whole time (15-22 s at
100,000 items, during which no event is handled). Until it runs, every point written since the
last build (each review moves its item's vector) sits in a plain segment that every search
scans exactly, so search cost grows with the writes. A `ShardRebuild` moves the build out of
the process that serves searches:

1. copying: the live shard is flushed and copied to a new generation directory by a thread;
   writes are held meanwhile (searches go on), so the copy is consistent. The deferred writes
   (`base`: vectors moved by reviews, which searches may see late) are saved next to it;
2. building: a niced child process (`python -m ranking.edge_rebuild DIR DIM`) applies the
   deferred writes to the copy and optimizes it, so they are indexed, while writes reach the
   live shard and are remembered (the last one per item);
3. catching up: the owner loads the built copy and replays the remembered writes onto it,
   a bounded number per call, so no call stalls long;
4. done: the owner switches to the copy (`EdgeStore` records it in `CURRENT`).

Every step runs on the owner's thread through `EdgeStore.maintain()`, except the file copy and
the child's build, which never touch the live shard.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# A segment this small (KB of vectors: ~650 points of 384 floats) is indexed too, so what the
# rebuild leaves unindexed is only the writes made since its copy.
INDEXING_THRESHOLD_KB = 1_000
CATCH_UP_BATCH = 512     # writes replayed onto the new copy per `step` call
CHILD_WRITE_BATCH = 1_000
CHILD_NICE = 19          # the build yields the CPU to the event path
LOG_TAIL_CHARS = 2_000

Write = Any              # an ItemPoint, or None for a delete (kept opaque here)
ROOT_ONLY = ("xlrec.lock", "CURRENT", "gen-*")   # what the store root holds besides a shard


def edge_config(dim: int) -> Any:
    """The one shard configuration used by the owner and the child."""
    from qdrant_edge import (Distance, EdgeConfig, EdgeOptimizersConfig, EdgeVectorParams,
                             ScalarQuantizationConfig, ScalarType)

    # One search thread: the engine thread searches, one query at a time, and a pool that
    # splits a query over segments only adds hand-offs (0.74 against 0.86 ms per search at
    # 100,000 points on an idle 2-core machine; more when the cores are busy).
    # int8 scalar quantization, held in RAM, with Qdrant's rescoring by the float vectors: the
    # index walk reads a quarter of the bytes. At 100,000 clustered points of 384 dimensions,
    # a top-100 search took 0.38 against 0.76 ms, recall@100 0.771 against 0.777, and the
    # build 15 against 40 s. A shard built without it is quantized at its next rebuild.
    quantized = ScalarQuantizationConfig(type=ScalarType.Int8, always_ram=True)
    return EdgeConfig(vectors=EdgeVectorParams(size=dim, distance=Distance.Cosine, quantization_config=quantized),
                      optimizers=EdgeOptimizersConfig(indexing_threshold=INDEXING_THRESHOLD_KB),
                      max_search_threads=1)


@dataclass(frozen=True)
class DeferredWrites:
    """Upserts that only the rebuilt copy gets (as Qdrant point ids, vectors, payloads)."""

    ids: list[str]
    vectors: np.ndarray
    payloads: list[dict[str, Any]]

    def save(self, target: Path) -> None:
        np.save(writes_path(target, ".npy"), self.vectors)
        writes_path(target, ".json").write_text(json.dumps({"ids": self.ids, "payloads": self.payloads}))

    @classmethod
    def load(cls, target: Path) -> DeferredWrites | None:
        meta = writes_path(target, ".json")
        if not meta.exists():
            return None
        head = json.loads(meta.read_text())
        return cls(head["ids"], np.load(writes_path(target, ".npy")), head["payloads"])


def writes_path(target: Path, suffix: str) -> Path:
    return target.with_name(f"{target.name}.deferred{suffix}")


class ShardRebuild:
    """One background rebuild of the shard at `live` into `target`; see the module docstring.

    `base` holds the deferred writes the copy gets before it is built (the live shard never
    does); `pending` the writes made since the copy began, in order, the last one per item id.
    """

    def __init__(self, live: Path, target: Path, dim: int, base: dict[str, Write] | None = None,
                 deferred: DeferredWrites | None = None) -> None:
        self.target = target
        self.dim = dim
        self.base = dict(base or {})
        self._deferred = deferred
        self.pending: dict[str, Write] = {}
        self.shard: Any = None              # the loaded copy, while catching up
        self._child: subprocess.Popen[bytes] | None = None
        self._copy_error: BaseException | None = None
        self._copier = threading.Thread(target=self._copy, args=(live, target), name="xlrec-shard-copy",
                                        daemon=True)
        self._copier.start()

    @property
    def copying(self) -> bool:
        """Writes must not reach the live shard while its files are being copied."""
        return self._copier.is_alive()

    def remember(self, item_id: str, write: Write) -> None:
        """A write the live shard gets (or, while copying, will get) and the copy must too."""
        self.base.pop(item_id, None)        # newer than the deferred one: the copy replays it last
        self.pending.pop(item_id, None)     # re-inserted: the replay keeps the order of writes
        self.pending[item_id] = write

    def step(self, apply: Callable[[Any, dict[str, Write]], None]) -> bool:
        """Advance one stage without blocking for long; True once the copy is caught up and
        can replace the live shard. `apply(shard, writes)` writes to a shard (None: the live
        one). Raises RuntimeError when the copy or the build failed."""
        if self.copying:
            return False
        if self._child is None:
            if self._copy_error is not None:
                raise RuntimeError(f"copying the shard failed: {self._copy_error}")
            apply(None, dict(self.pending))    # the writes held during the copy
            self._start_child()
            return False
        if self.shard is None:
            code = self._child.poll()
            if code is None:
                return False
            if code != 0:
                raise RuntimeError(f"the index build exited with {code}: {self._child_log()}")
            from qdrant_edge import EdgeShard

            self.shard = EdgeShard.load(str(self.target), edge_config(self.dim))
        batch = {}
        for item_id in list(self.pending)[:CATCH_UP_BATCH]:
            batch[item_id] = self.pending.pop(item_id)
        if batch:
            apply(self.shard, batch)
        return not self.pending

    def unapplied(self) -> dict[str, Write]:
        """The writes the live shard has not had yet, oldest first: the deferred ones, then
        those held during the copy (until `step` applies them, as the child starts)."""
        return self.base | (self.pending if self._child is None else {})

    def abandon(self) -> dict[str, Write]:
        """Stop the child, close the copy and remove its files; returns `unapplied()`."""
        self._copier.join()
        held = self.unapplied()
        if self._child is not None and self._child.poll() is None:
            self._child.kill()
            self._child.wait()
        if self.shard is not None:
            self.shard.close()
            self.shard = None
        shutil.rmtree(self.target, ignore_errors=True)
        self.remove_side_files()
        return held

    def remove_side_files(self) -> None:
        """The child's log and the deferred writes it was given."""
        for path in (self.target.with_name(self.target.name + ".log"), writes_path(self.target, ".npy"),
                     writes_path(self.target, ".json")):
            path.unlink(missing_ok=True)

    def _copy(self, live: Path, target: Path) -> None:
        try:
            shutil.rmtree(target, ignore_errors=True)
            # a shard of the old layout lives in the root, next to the generations and the lock
            shutil.copytree(live, target, ignore=shutil.ignore_patterns(*ROOT_ONLY))
            if self._deferred is not None:
                self._deferred.save(target)
        except BaseException as exc:  # reported by `step` on the owner's thread
            self._copy_error = exc

    def _start_child(self) -> None:
        log_path = self.target.with_name(self.target.name + ".log")
        with open(log_path, "wb") as out:
            self._child = subprocess.Popen(
                [sys.executable, "-m", "ranking.edge_rebuild", str(self.target), str(self.dim)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=lambda: os.nice(CHILD_NICE))

    def _child_log(self) -> str:
        path = self.target.with_name(self.target.name + ".log")
        try:
            return path.read_text(errors="replace")[-LOG_TAIL_CHARS:].strip() or "no output"
        except OSError:
            return "no output"


def build(path: Path, dim: int) -> None:
    """The child: optimize the shard at `path` (index every segment over the threshold,
    vacuum deleted points) and flush it."""
    from qdrant_edge import EdgeShard

    from qdrant_edge import Point, UpdateOperation

    started = time.perf_counter()
    shard = EdgeShard.load(str(path), edge_config(dim))
    deferred = DeferredWrites.load(path)
    if deferred is not None:
        for lo in range(0, len(deferred.ids), CHILD_WRITE_BATCH):
            hi = lo + CHILD_WRITE_BATCH
            shard.update(UpdateOperation.upsert_points([
                Point(pid, vec.tolist(), payload) for pid, vec, payload
                in zip(deferred.ids[lo:hi], deferred.vectors[lo:hi], deferred.payloads[lo:hi])]))
    changed = shard.optimize()
    info = shard.info()
    shard.flush()
    shard.close()
    print(f"deferred={0 if deferred is None else len(deferred.ids)} optimized={changed} "
          f"segments={info.segments_count} points={info.points_count} indexed={info.indexed_vectors_count} "
          f"seconds={time.perf_counter() - started:.2f}", flush=True)


if __name__ == "__main__":
    build(Path(sys.argv[1]), int(sys.argv[2]))
