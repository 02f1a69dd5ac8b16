"""The catalog half of `xlrec bench scale`: the real engine at growing catalog sizes.

For each catalog size, a fresh Python process (so that its RSS is that size's alone):
1. builds a synthetic catalog (`SyntheticCatalog`): items in several languages with titles
   and random unit vectors of the encoder's dimension (384, multilingual-e5-small), grouped
   around topic directions, with Zipf popularity;
2. loads it into a `ranking.engine.Recommender` the way the worker does, without the text
   encoder (the vectors are passed in), over the worker's default vector store, embedded
   Qdrant (`ranking.qdrant_store.EdgeStore`), and builds the HNSW index in a child process, as
   the worker does (`EdgeStore.maintain`; `details.index_build_rss_mb` is that process's peak);
3. replays `events` synthetic clicks and reviews (`synthetic_events`): users with a home
   language and a heavy-tailed activity, items by Zipf popularity or, within a session, a
   neighbour of the user's previous item in its topic (item-to-item structure), timestamps
   increasing, reviews with a vector near their item's topic;
4. times each `observe` (with the `flush_store` that follows each batch in the worker: here
   a batch is one event; it also steps the ANN index rebuild, which runs in a child process)
   and, every `recommend_every` events, a `recommend` of 10 items for the event's user, both
   as wall-clock time (`time.perf_counter`) per call;
5. times `snapshot(path)` and takes the file's size; RSS is the process's peak (`VmHWM`
   from /proc/self/status), taken last, so it includes the snapshot.

A size that fails (MemoryError, another exception, the process killed or over the memory
limit, or the time budget spent) gives a row with the error and what it had measured, and
the next size still runs. Run one size by hand with
`python -m streams.tools.scale_catalog --items 1000 --result out.json --work-dir /tmp/x`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ranking.qdrant_store import EdgeStore

DIM = 384                  # multilingual-e5-small, the worker's encoder (encoders.factory)
BASE_TS = 1_700_000_000.0  # the replay starts here; items are published before
EVENT_SPACING_S = 10.0     # one event every ~10 s: 50,000 events span ~6 days
ZIPF_EXPONENT = 1.0        # item popularity ~ 1 / rank
REVIEW_SHARE = 0.6         # the rest are clicks
POSITIVE_SHARE = 0.8       # of reviews
SESSION_SHARE = 0.5        # an event that follows a neighbour of the user's previous item
NEIGHBOURS = 5             # an item's neighbours: the next items of its topic, by popularity
HOME_LANG_SHARE = 0.9      # a user's events are in their home language, else in any
EVENTS_PER_USER = 5        # users = events / this (activity is heavy-tailed)
RECOMMEND_EVERY = 5        # a recommend for the event's user every this many events
ITEM_BATCH = 2_000         # items per upsert_items call while loading the catalog
ROW_KEYS = ("items", "rss_mb", "observe_ms_p50", "observe_ms_p99", "recommend_ms_p50",
            "recommend_ms_p99", "snapshot_mb", "snapshot_s")
MB = 1024 * 1024

# Languages with their shares of items and users (a long tail, English first), and a few
# title words in each, so that titles are in the item's script.
LANGS: dict[str, tuple[float, tuple[str, ...]]] = {
    "en": (0.30, ("Star", "Night", "Quest", "River", "Iron", "Garden", "Shadow", "Legend")),
    "de": (0.12, ("Stern", "Nacht", "Reise", "Fluss", "Eisen", "Garten", "Schatten", "Legende")),
    "fr": (0.10, ("Étoile", "Nuit", "Quête", "Rivière", "Fer", "Jardin", "Ombre", "Légende")),
    "es": (0.10, ("Estrella", "Noche", "Búsqueda", "Río", "Hierro", "Jardín", "Sombra", "Leyenda")),
    "pt": (0.06, ("Estrela", "Noite", "Jornada", "Rio", "Ferro", "Jardim", "Sombra", "Lenda")),
    "ru": (0.08, ("Звезда", "Ночь", "Поход", "Река", "Железо", "Сад", "Тень", "Легенда")),
    "ja": (0.07, ("星", "夜", "冒険", "川", "鉄", "庭", "影", "伝説")),
    "ko": (0.06, ("별", "밤", "모험", "강", "철", "정원", "그림자", "전설")),
    "zh": (0.07, ("星", "夜", "探险", "河", "铁", "花园", "影子", "传说")),
    "ar": (0.04, ("نجم", "ليل", "رحلة", "نهر", "حديد", "حديقة", "ظل", "أسطورة")),
}


def _unit_rows(m: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(m, axis=1, keepdims=True)
    return (m / np.maximum(n, 1e-9)).astype(np.float32)


class SyntheticCatalog:
    """n items, deterministic for (n, seed): ids, languages, titles, topics, Zipf popularity
    and vectors. Vectors are made batch by batch (`item_batches`), never all at once, so a
    million-item catalog costs the engine's memory, not this generator's."""

    def __init__(self, n_items: int, seed: int = 0, dim: int = DIM) -> None:
        if n_items < 1:
            raise ValueError("a catalog needs at least one item")
        self.n, self.seed, self.dim = n_items, seed, dim
        rng = np.random.default_rng([seed, n_items, 1])
        self.langs = list(LANGS)
        shares = np.asarray([LANGS[lang][0] for lang in self.langs])
        self.lang_p = shares / shares.sum()
        self.n_topics = max(4, int(math.sqrt(n_items)))
        self.centers = _unit_rows(rng.standard_normal((self.n_topics, dim)))
        self.item_lang = rng.choice(len(self.langs), size=n_items, p=self.lang_p).astype(np.int8)
        self.topic = rng.integers(0, self.n_topics, size=n_items).astype(np.int32)
        # Popularity: rank r (0 = most popular) has weight 1 / (r + 1)^s; ranks are shuffled
        # over the items so that popularity is not the catalog's order.
        self.rank = rng.permutation(n_items).astype(np.int32)
        weights = 1.0 / np.power(self.rank + 1.0, ZIPF_EXPONENT)
        self.popularity = weights / weights.sum()
        # Item-to-item structure: each topic's items in a ring by popularity; an item's
        # neighbours are the NEIGHBOURS items after it on its ring.
        self.ring = np.lexsort((self.rank, self.topic)).astype(np.int32)
        self.pos = np.empty(n_items, np.int32)
        self.pos[self.ring] = np.arange(n_items, dtype=np.int32)
        sizes = np.bincount(self.topic, minlength=self.n_topics)
        self.topic_start = (np.cumsum(sizes) - sizes).astype(np.int64)
        self.topic_size = sizes.astype(np.int64)

    def item_id(self, i: int) -> str:
        return f"scale-{i:07d}"

    def lang(self, i: int) -> str:
        return self.langs[int(self.item_lang[i])]

    def title(self, i: int) -> str:
        words = LANGS[self.lang(i)][1]
        return f"{words[i % len(words)]} {words[(i // len(words) + int(self.topic[i])) % len(words)]} {i}"

    def neighbour(self, i: int, j: int) -> int:
        """The j-th neighbour (1..NEIGHBOURS) of item i within its topic."""
        t = int(self.topic[i])
        start, size = int(self.topic_start[t]), int(self.topic_size[t])
        return int(self.ring[start + (int(self.pos[i]) - start + j) % size])

    def vectors(self, lo: int, hi: int) -> np.ndarray:
        """Unit vectors of items lo..hi-1 (the same whatever the batching: one generator per
        item range of ITEM_BATCH)."""
        out = np.empty((hi - lo, self.dim), np.float32)
        for b in range(lo // ITEM_BATCH, (hi - 1) // ITEM_BATCH + 1):
            b_lo, b_hi = b * ITEM_BATCH, min((b + 1) * ITEM_BATCH, self.n)
            noise = np.random.default_rng([self.seed, self.n, 2, b]).standard_normal((b_hi - b_lo, self.dim))
            block = _unit_rows(self.centers[self.topic[b_lo:b_hi]] + 0.08 * noise)  # cosine ~0.3 within a topic
            s, e = max(lo, b_lo), min(hi, b_hi)
            out[s - lo:e - lo] = block[s - b_lo:e - b_lo]
        return out

    def item_batches(self, batch: int = ITEM_BATCH) -> Iterator[tuple[list[Any], np.ndarray]]:
        """(ranking Item events, their vectors) in batches; items are published over the 30
        days before the replay."""
        from ranking.events import Item

        for lo in range(0, self.n, batch):
            hi = min(lo + batch, self.n)
            items = [Item(item_id=self.item_id(i), title=self.title(i), lang=self.lang(i),
                          ts=BASE_TS - 30 * 86_400.0 * (1.0 - i / self.n)) for i in range(lo, hi)]
            yield items, self.vectors(lo, hi)


@dataclass(frozen=True)
class SyntheticEvent:
    """One replayed event: the ranking event and, for a review, its text vector."""

    event: Any                        # ranking.events.Click or Review
    review_vector: np.ndarray | None


def synthetic_events(catalog: SyntheticCatalog, events: int, seed: int = 0) -> Iterator[SyntheticEvent]:
    """`events` clicks and reviews over `catalog`, timestamps increasing, deterministic for
    (catalog, events, seed). Users have a home language and a heavy-tailed activity (Pareto
    weights); an item is a neighbour of the user's previous one (a session) or drawn by Zipf
    popularity."""
    from ranking.events import Click, Review

    rng = np.random.default_rng([seed, catalog.n, events, 3])
    n_users = max(1, events // EVENTS_PER_USER)
    activity = np.minimum(rng.pareto(1.2, n_users) + 1.0, 200.0)
    who = rng.choice(n_users, size=events, p=activity / activity.sum())
    user_lang = rng.choice(len(catalog.langs), size=n_users, p=catalog.lang_p)
    popular = rng.choice(catalog.n, size=events, p=catalog.popularity)
    u = rng.random((events, 5))
    hop = rng.integers(1, NEIGHBOURS + 1, size=events)
    any_lang = rng.integers(0, len(catalog.langs), size=events)
    last: dict[int, int] = {}
    for k in range(events):
        user = int(who[k])
        prev = last.get(user)
        item = catalog.neighbour(prev, int(hop[k])) if prev is not None and u[k, 0] < SESSION_SHARE \
            else int(popular[k])
        last[user] = item
        lang = catalog.langs[int(user_lang[user] if u[k, 1] < HOME_LANG_SHARE else any_lang[k])]
        common = {"event_id": f"scale-{seed}-{k:07d}", "user_id": f"scale-u{user:07d}",
                  "item_id": catalog.item_id(item), "ts": BASE_TS + EVENT_SPACING_S * (k + u[k, 2]),
                  "lang": lang}
        if u[k, 3] >= REVIEW_SHARE:
            yield SyntheticEvent(Click(**common), None)
            continue
        noise = np.random.default_rng([seed, events, 4, k]).standard_normal(catalog.dim)
        vec = catalog.centers[catalog.topic[item]] + 0.08 * noise
        yield SyntheticEvent(Review(**common, positive=bool(u[k, 4] < POSITIVE_SHARE)),
                             (vec / np.linalg.norm(vec)).astype(np.float32))


def build_index(store: EdgeStore, over_budget: Callable[[], bool]) -> None:
    """Build the loaded catalog's HNSW index as the worker does: in a child process
    (`EdgeStore.maintain`), which the engine's process waits for. (`optimize()` in-process held
    the old segments and the new one at once: 9.3 GB peak at a million items.)"""
    before = store.rebuilds
    wanted, store.rebuild_after = store.rebuild_after, 0   # a small catalog is built too
    try:
        while store.rebuilds == before:
            if over_budget():
                raise TimeoutError("--max-seconds spent building the index")
            store.maintain()
            time.sleep(0.05)
    finally:
        store.rebuild_after = wanted


def percentiles_ms(seconds: list[float]) -> dict[str, float | None]:
    """p50/p99/max in milliseconds (nearest rank), rounded to 0.01 ms; None when empty."""
    if not seconds:
        return {"p50": None, "p99": None, "max": None}
    v = sorted(seconds)

    def at(q: float) -> float:
        return round(1000.0 * v[min(len(v) - 1, max(0, int(round(q * len(v))) - 1))], 3)

    return {"p50": at(0.50), "p99": at(0.99), "max": round(1000.0 * v[-1], 3)}


def proc_status_mb(field: str, pid: int | str = "self") -> float | None:
    """A memory line of /proc/PID/status (VmRSS: now, VmHWM: peak) in MB (MiB)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def empty_row(items: int) -> dict[str, Any]:
    return {key: (items if key == "items" else None) for key in ROW_KEYS}


def measure_one(n_items: int, *, events: int, seed: int, work_dir: Path,
                recommend_every: int = RECOMMEND_EVERY, max_seconds: float | None = None) -> dict[str, Any]:
    """One catalog size in THIS process (run it in a fresh one: RSS is the process's peak).
    Returns the row (`ROW_KEYS`, plus `error` when it failed or ran out of time) with a
    `details` dict of everything else."""
    from ranking.engine import Recommender
    from ranking.qdrant_store import EdgeStore

    start = time.monotonic()
    row = empty_row(n_items)
    details: dict[str, Any] = {"events_asked": events, "events": 0, "recommends": 0, "seed": seed,
                               "recommend_every": recommend_every, "timing": "wall clock per call "
                               "(time.perf_counter); observe includes the flush_store after it",
                               "rss_mb": "peak (VmHWM), taken after the snapshot",
                               "rss_baseline_mb": proc_status_mb("VmRSS")}
    row["details"] = details

    def over_budget() -> bool:
        return max_seconds is not None and time.monotonic() - start > max_seconds

    observe_s: list[float] = []
    recommend_s: list[float] = []
    store = None
    try:
        catalog = SyntheticCatalog(n_items, seed)
        store = EdgeStore(work_dir / "qdrant", DIM)
        rec = Recommender(store=store, encoder=None, seed=seed)
        t = time.perf_counter()
        for items, vectors in catalog.item_batches():
            rec.upsert_items(items, vectors=list(vectors))
            if over_budget():
                raise TimeoutError(f"--max-seconds {max_seconds:g} spent loading the catalog")
        details["load_s"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        build_index(store, over_budget)
        details["optimize_s"] = round(time.perf_counter() - t, 3)
        details["rss_loaded_mb"] = proc_status_mb("VmRSS")
        profiles: dict[str, Any] = {}
        t_replay = time.perf_counter()
        for k, ev in enumerate(synthetic_events(catalog, events, seed)):
            if over_budget():
                raise TimeoutError(f"--max-seconds {max_seconds:g} spent after {k:,} of {events:,} events")
            e = ev.event
            t = time.perf_counter()
            profile = rec.observe(profiles.get(e.user_id), e, review_vector=ev.review_vector)
            rec.flush_store()
            observe_s.append(time.perf_counter() - t)
            profiles[e.user_id] = profile
            details["events"] = k + 1
            if k % recommend_every == 0:
                t = time.perf_counter()
                rec.recommend(e.user_id, profile, k=10, now=e.ts)
                recommend_s.append(time.perf_counter() - t)
        details["replay_s"] = round(time.perf_counter() - t_replay, 3)
        details["index_rebuilds"] = store.rebuilds   # ANN index rebuilt in a child process meanwhile
        details["users"] = len(profiles)
        snap = work_dir / "engine.snapshot"
        t = time.perf_counter()
        rec.snapshot(snap)
        row["snapshot_s"] = round(time.perf_counter() - t, 3)
        row["snapshot_mb"] = round(snap.stat().st_size / MB, 1)
        snap.unlink()
    except (MemoryError, TimeoutError) as exc:
        row["error"] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    except Exception as exc:  # the row says what failed; the next size still runs
        row["error"] = f"{type(exc).__name__}: {exc}"
        details["traceback"] = traceback.format_exc(limit=-4).splitlines()
    finally:
        details["recommends"] = len(recommend_s)
        obs, recm = percentiles_ms(observe_s), percentiles_ms(recommend_s)
        row["observe_ms_p50"], row["observe_ms_p99"] = obs["p50"], obs["p99"]
        row["recommend_ms_p50"], row["recommend_ms_p99"] = recm["p50"], recm["p99"]
        details["observe_ms_max"], details["recommend_ms_max"] = obs["max"], recm["max"]
        details["rss_current_mb"] = proc_status_mb("VmRSS")
        row["rss_mb"] = proc_status_mb("VmHWM")
        # The index builds (child processes, as in the worker): the largest one's peak RSS.
        details["index_build_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
        details["seconds"] = round(time.monotonic() - start, 1)
        if store is not None:
            try:
                store.close()
            except Exception:  # closing after a failure: the error above is the one to report
                pass
    return row


def _meminfo_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def measure_catalog(counts: list[int], *, events: int = 50_000, seed: int = 0, work_dir: Path,
                    recommend_every: int = RECOMMEND_EVERY, max_seconds: float | None = None,
                    max_rss_mb: float | None = None,
                    echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """One row per catalog size, each measured in a fresh `python -m streams.tools.scale_catalog`
    process. `max_seconds` is each size's time budget (the replay stops and the row says so);
    `max_rss_mb` kills a size whose process grows past it (default: 90% of the memory available
    when the size starts, so that the kernel's OOM killer never picks another process).
    Each row has `ROW_KEYS`, `error` when the size failed, and `details`."""
    rows = []
    for n in counts:
        size_dir = Path(work_dir) / f"catalog-{n}"
        size_dir.mkdir(parents=True, exist_ok=True)
        row = _run_child(n, events=events, seed=seed, work_dir=size_dir, recommend_every=recommend_every,
                         max_seconds=max_seconds, max_rss_mb=max_rss_mb)
        echo(format_row(row))
        rows.append(row)
    return rows


def _run_child(n: int, *, events: int, seed: int, work_dir: Path, recommend_every: int,
               max_seconds: float | None, max_rss_mb: float | None) -> dict[str, Any]:
    result = work_dir / "result.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "streams.tools.scale_catalog", "--items", str(n), "--events", str(events),
           "--seed", str(seed), "--work-dir", str(work_dir), "--result", str(result),
           "--recommend-every", str(recommend_every)]
    if max_seconds is not None:
        cmd += ["--max-seconds", str(max_seconds)]
    limit = max_rss_mb if max_rss_mb is not None else 0.9 * (_meminfo_mb("MemAvailable") or math.inf)
    # The child stops itself at max_seconds; past that (one call that never returns) it is killed.
    hard_s = None if max_seconds is None else 2 * max_seconds + 300
    log = work_dir / "child.log"
    killed = None
    peak = 0.0
    start = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONHASHSEED": "0"})
        try:
            while proc.poll() is None:
                rss = proc_status_mb("VmRSS", proc.pid) or 0.0
                peak = max(peak, rss)
                if rss > limit:
                    killed = f"killed at {rss:,.0f} MB RSS, over the limit of {limit:,.0f} MB"
                elif hard_s is not None and time.monotonic() - start > hard_s:
                    killed = f"killed after {hard_s:,.0f} s (--max-seconds {max_seconds:g})"
                if killed:
                    proc.kill()
                    proc.wait()
                    break
                time.sleep(0.2)
        finally:
            if proc.poll() is None:   # interrupted: leave no process behind
                proc.kill()
                proc.wait()
    if result.exists() and not killed:
        row: dict[str, Any] = json.loads(result.read_text())
        return row
    row = empty_row(n)
    row["rss_mb"] = round(peak, 1) if peak else None
    tail = log.read_text(errors="replace").strip().splitlines()[-5:]
    why = killed or f"the measuring process exited with {proc.returncode}"
    row["error"] = why + (f" ({' | '.join(tail)})" if tail and not killed else "")
    row["details"] = {"rss_mb": "peak VmRSS seen by the parent (sampled every 0.2 s)",
                      "seconds": round(time.monotonic() - start, 1), "log": str(log)}
    return row


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_row(row: dict[str, Any]) -> str:
    """One line per size, as it is measured."""
    d = row.get("details", {})
    line = (f"catalog {row['items']:>9,} items: rss {_fmt(row['rss_mb'], ',.0f')} MB, "
            f"observe p50/p99 {_fmt(row['observe_ms_p50'], '.2f')}/{_fmt(row['observe_ms_p99'], '.2f')} ms, "
            f"recommend p50/p99 {_fmt(row['recommend_ms_p50'], '.2f')}/{_fmt(row['recommend_ms_p99'], '.2f')} ms, "
            f"snapshot {_fmt(row['snapshot_mb'], ',.1f')} MB in {_fmt(row['snapshot_s'], '.2f')} s "
            f"({d.get('events', 0):,} events, {_fmt(d.get('seconds'), ',.0f')} s)")
    return line + (f"  ERROR: {row['error']}" if row.get("error") else "")


def main(argv: list[str] | None = None) -> None:
    """The child process: measure one size and write its row as JSON to --result."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--items", type=int, required=True)
    p.add_argument("--events", type=int, default=50_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", type=Path, required=True)
    p.add_argument("--result", type=Path, required=True)
    p.add_argument("--recommend-every", type=int, default=RECOMMEND_EVERY)
    p.add_argument("--max-seconds", type=float, default=None)
    a = p.parse_args(argv)
    a.work_dir.mkdir(parents=True, exist_ok=True)
    from ranking.vectors import one_blas_thread

    one_blas_thread()   # as the worker does
    row = measure_one(a.items, events=a.events, seed=a.seed, work_dir=a.work_dir,
                      recommend_every=a.recommend_every, max_seconds=a.max_seconds)
    tmp = a.result.with_suffix(".tmp")
    tmp.write_text(json.dumps(row, indent=2) + "\n")
    tmp.replace(a.result)


if __name__ == "__main__":
    main()
