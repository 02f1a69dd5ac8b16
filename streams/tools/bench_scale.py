"""`xlrec bench scale`: memory and latency as the catalog and the user base grow.

- catalog: for each size in `--items`, the real engine (`ranking.engine.Recommender` over
  embedded Qdrant, HNSW built) in a fresh process, loaded with a synthetic catalog and fed
  `--events` synthetic clicks and reviews (`streams.tools.scale_catalog`);
- users: for each count in `--users`, the real worker with a real broker
  (`streams.tools.scale_users.measure_users`).

Writes `{"catalog": [{"items", "rss_mb", "observe_ms_p50", "observe_ms_p99", "recommend_ms_p50",
"recommend_ms_p99", "snapshot_mb", "snapshot_s"}], "users": [{"users", "rss_mb",
"bytes_per_user", "restart_s"}], "details": {...}}`; a size that failed has its numbers null
and an `error`. The file is rewritten after every size, so an interrupted run keeps what it
measured. `--users ''` (or `0`, `none`) skips the users half, `--items ''` the catalog half.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import typer

from streams.tools.scale_catalog import ROW_KEYS, measure_catalog

USER_KEYS = ("users", "rss_mb", "bytes_per_user", "restart_s")
SCALE_USERS_MODULE = "streams.tools.scale_users"


def parse_counts(text: str | None) -> list[int]:
    """'1000,10000' -> [1000, 10000]; also `10_000`, `10k`, `1m`. Empty, `0` and `none` -> []."""
    if text is None or text.strip().lower() in ("", "0", "none", "no", "off"):
        return []
    out = []
    for part in text.split(","):
        p = part.strip().lower().replace("_", "")
        if not p:
            continue
        scale = {"k": 1_000, "m": 1_000_000}.get(p[-1], 1)
        try:
            value = int(float(p[:-1] if scale > 1 else p) * scale)
        except ValueError:
            raise typer.BadParameter(f"{part.strip()!r} is not a count (use e.g. 1000,10000 or 10k,1m)") from None
        if value <= 0:
            raise typer.BadParameter(f"counts are positive: {part.strip()!r}")
        out.append(value)
    return out


def machine() -> dict[str, Any]:
    """Where the numbers were measured."""
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "memory_gb": mem, "python": platform.python_version(),
            "platform": platform.platform()}


def split_details(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> tuple[list[dict[str, Any]], list[Any]]:
    """Rows with exactly `keys` (plus `error` where one failed), and what else each had."""
    clean, extra = [], []
    for row in rows:
        clean.append({k: row.get(k) for k in keys} | ({"error": row["error"]} if row.get("error") else {}))
        extra.append(row.get("details", {k: v for k, v in row.items() if k not in keys and k != "error"}))
    return clean, extra


def measure_users_fn() -> Any:
    """`streams.tools.scale_users.measure_users`, imported only when the users half runs."""
    if importlib.util.find_spec(SCALE_USERS_MODULE) is None:
        raise typer.BadParameter(f"the users half needs {SCALE_USERS_MODULE}, which this checkout does "
                                 "not have yet; run the catalog half alone with --users ''",
                                 param_hint="--users")
    return importlib.import_module(SCALE_USERS_MODULE).measure_users


def run(items: list[int], users: list[int], *, events: int, seed: int, out: Path, work_dir: Path,
        max_seconds: float | None = None, max_rss_mb: float | None = None,
        recommend_every: int = 5) -> dict[str, Any]:
    """Both halves; writes `out` after every size and returns the document."""
    measure_users = measure_users_fn() if users else None   # fail before hours of catalog work
    doc: dict[str, Any] = {"catalog": [], "users": [], "details": {
        "machine": machine(), "events": events, "seed": seed, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "catalog": [], "users": []}}

    def write() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        tmp.replace(out)

    for n in items:   # one size at a time, so the file grows as they finish
        rows = measure_catalog([n], events=events, seed=seed, work_dir=work_dir,
                               recommend_every=recommend_every, max_seconds=max_seconds, max_rss_mb=max_rss_mb)
        clean, extra = split_details(rows, ROW_KEYS)
        doc["catalog"] += clean
        doc["details"]["catalog"] += extra
        write()
    if measure_users is not None:
        # Its progress lines as it goes, where it offers them.
        extra_args = {"progress": print} if "progress" in inspect.signature(measure_users).parameters else {}
        rows = measure_users(users, work_dir=work_dir / "users", **extra_args)
        clean, extra = split_details(list(rows), USER_KEYS)
        doc["users"], doc["details"]["users"] = clean, extra
        for row in clean:
            print(f"users {row['users']:>10,}: {json.dumps(row)}")
    write()
    return doc


def bench_scale(
    out: Path = typer.Option(..., "--out", help="Where to write the JSON results"),
    items: str = typer.Option("1000,10000,100000", "--items", help="Catalog sizes, comma-separated "
                              "(10k, 1m work too); '' skips the catalog half"),
    users: str = typer.Option("10000", "--users", help="User counts for the worker with a real broker, "
                              "comma-separated; '', 0 or none skips the users half"),
    events: int = typer.Option(50_000, "--events", min=1, help="Synthetic clicks and reviews replayed "
                               "per catalog size"),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic catalog and events"),
    max_seconds: float | None = typer.Option(None, "--max-seconds", min=1.0, help="Time budget per catalog "
                                             "size: past it the size stops and its row has an error"),
    max_rss_mb: float | None = typer.Option(None, "--max-rss-mb", min=1.0, help="Kill a catalog size whose "
                                            "process passes this RSS (default: 90% of available memory)"),
    recommend_every: int = typer.Option(5, "--recommend-every", min=1, help="A recommend for the event's "
                                        "user every this many events"),
    work_dir: Path | None = typer.Option(None, "--work-dir", help="Scratch space (default: a temporary "
                                         "folder, removed afterwards unless a size failed)"),
) -> None:
    """Memory and latency per catalog size (the real engine) and per user count (the real worker)."""
    item_counts, user_counts = parse_counts(items), parse_counts(users)
    if not item_counts and not user_counts:
        raise typer.BadParameter("nothing to measure: give --items or --users")
    scratch = work_dir or Path(tempfile.mkdtemp(prefix="xlrec-scale-"))
    doc = run(item_counts, user_counts, events=events, seed=seed, out=out, work_dir=scratch,
              max_seconds=max_seconds, max_rss_mb=max_rss_mb, recommend_every=recommend_every)
    print(json.dumps({"catalog": doc["catalog"], "users": doc["users"]}, indent=2, ensure_ascii=False))
    print(f"wrote {out}")
    failed = any(r.get("error") for r in doc["catalog"] + doc["users"])
    if failed:
        print(f"some sizes failed; logs kept in {scratch}", file=sys.stderr)
    elif work_dir is None:
        shutil.rmtree(scratch, ignore_errors=True)
