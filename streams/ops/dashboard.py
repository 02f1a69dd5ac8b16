"""`xlrec dashboard`: a live web page of consumer lag, throughput, latency, dead letters and
online quality (HR@10 of the clicks and reviews against the recommendations sent before them).

One process polls Kafka for lag (streams.ops.lag, so the page shows the same numbers as
`xlrec lag`) and scrapes every worker's `/metrics` once per tick, turns counters into rates
and histogram buckets into p50/p99 over a sliding window, and pushes one JSON snapshot per
tick to every open page over server-sent events. The page (streams/ops/static/) draws its own
SVG charts and loads nothing from the internet.

Several workers: their counters are summed after each one is made monotonic on its own, so
a worker restart (counter reset) neither produces a negative rate nor a spike.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import ClientError, ClientSession, ClientTimeout, web
from prometheus_client.parser import text_string_to_metric_families

from streams.ops.lag import LagReport, UnknownGroup
from streams.contracts.topics import BrokerUnavailable

STATIC_DIR = Path(str(resources.files("streams.ops") / "static"))
HISTORY_LEN = 300  # snapshots kept for pages that connect later: 5 minutes at 1 s per tick
SCRAPE_TIMEOUT_S = 2.0

# Worker series the page needs: counters (and histogram buckets, which are counters too).
PROCESSED = "xlrec_events_processed_total"
DEAD_LETTERS = "xlrec_dead_letters_total"
LATENCY_BUCKET = "xlrec_event_to_recommendation_seconds_bucket"
# Live quality (streams.worker.online_quality): events with a list before them, hits@10, per slice.
ONLINE_EVENTS = "xlrec_online_events_total"
ONLINE_HITS10 = "xlrec_online_hits_total"
ONLINE_NO_LIST = "xlrec_online_no_list_total"
ONLINE_SLICES = ("all", "cross_lingual", "non_english")
SeriesKey = tuple[str, str]  # (sample name, its one interesting label value)


def worker_url(spec: str) -> str:
    """Accept `host:port`, `http://host:port` or a full URL; the path defaults to /metrics."""
    spec = spec.strip()
    url = spec if "://" in spec else f"http://{spec}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"worker {spec!r} is neither host:port nor an http(s) URL")
    return url if parts.path not in ("", "/") else f"{parts.scheme}://{parts.netloc}/metrics"


def parse_worker_metrics(text: str) -> dict[SeriesKey, float]:
    """The counter samples the page uses from one /metrics body."""
    values: dict[SeriesKey, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == PROCESSED:
                key: SeriesKey = (PROCESSED, sample.labels.get("topic", ""))
            elif sample.name == DEAD_LETTERS:
                key = (DEAD_LETTERS, sample.labels.get("reason", ""))
            elif sample.name == LATENCY_BUCKET:
                key = (LATENCY_BUCKET, sample.labels["le"])
            elif sample.name in (ONLINE_EVENTS, ONLINE_NO_LIST) or (
                    sample.name == ONLINE_HITS10 and sample.labels.get("k") == "10"):
                key = (sample.name, sample.labels.get("slice", ""))
            else:
                continue
            values[key] = values.get(key, 0.0) + sample.value
    return values


def histogram_quantile(q: float, cumulative: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile on {upper bound: cumulative count}; None without data."""
    bounds = sorted(cumulative)
    if not bounds or cumulative[bounds[-1]] <= 0:
        return None
    rank = q * cumulative[bounds[-1]]
    lower, below = 0.0, 0.0
    for upper in bounds:
        count = cumulative[upper]
        if count >= rank:
            if math.isinf(upper):  # rank falls in +Inf: the highest finite bound is all we know
                return lower
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


@dataclass
class MonotonicCounters:
    """Per worker, turns raw counter readings into totals that survive counter resets.

    A series seen for the first time only sets the baseline, so attaching the dashboard to
    long-running workers does not count their whole past as one tick's throughput.
    """

    last: dict[tuple[str, SeriesKey], float] = field(default_factory=dict)
    totals: dict[tuple[str, SeriesKey], float] = field(default_factory=dict)

    def update(self, worker: str, values: dict[SeriesKey, float]) -> None:
        for key, value in values.items():
            previous = self.last.get((worker, key))
            increase = 0.0 if previous is None else (value - previous if value >= previous else value)
            self.totals[(worker, key)] = self.totals.get((worker, key), 0.0) + increase
            self.last[(worker, key)] = value

    def summed(self) -> dict[SeriesKey, float]:
        """Totals added up over all workers."""
        result: dict[SeriesKey, float] = {}
        for (_, key), value in self.totals.items():
            result[key] = result.get(key, 0.0) + value
        return result


@dataclass
class WorkerStatus:
    url: str
    up: bool
    error: str | None = None


class Dashboard:
    """Collects one snapshot per tick and fans it out to the connected pages."""

    def __init__(self, sample_lag: Callable[[], LagReport], workers: list[str], *, tick_s: float = 1.0,
                 window_s: float = 5.0):
        self.sample_lag = sample_lag  # LagMonitor.sample: blocking, raises on Kafka errors
        self.workers = workers
        self.tick_s = tick_s
        self.window_s = window_s
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY_LEN)
        self._counters = MonotonicCounters()
        self._totals: deque[tuple[float, dict[SeriesKey, float]]] = deque()
        self._clients: set[asyncio.Queue[dict[str, Any]]] = set()

    async def run(self) -> None:
        """Tick forever: sample lag (in a thread: the admin client blocks) and scrape workers."""
        loop = asyncio.get_running_loop()
        async with ClientSession(timeout=ClientTimeout(total=SCRAPE_TIMEOUT_S)) as session:
            while True:
                started = loop.time()
                lag, statuses = await asyncio.gather(
                    loop.run_in_executor(None, self._sample_lag),
                    asyncio.gather(*(self._scrape(session, url) for url in self.workers)))
                self._publish(self.snapshot(lag, list(statuses), time.time(), loop.time()))
                await asyncio.sleep(max(0.0, self.tick_s - (loop.time() - started)))

    def _sample_lag(self) -> LagReport | str:
        try:
            return self.sample_lag()
        except (BrokerUnavailable, UnknownGroup) as exc:
            return str(exc)

    async def _scrape(self, session: ClientSession, url: str) -> WorkerStatus:
        try:
            async with session.get(url) as response:
                response.raise_for_status()
                self._counters.update(url, parse_worker_metrics(await response.text()))
            return WorkerStatus(url, up=True)
        except (ClientError, TimeoutError, ValueError) as exc:
            return WorkerStatus(url, up=False, error=str(exc) or type(exc).__name__)

    def snapshot(self, lag: LagReport | str, workers: list[WorkerStatus], at: float,
                 now: float) -> dict[str, Any]:
        """One tick's data for the page (`now` is monotonic, for rates)."""
        self._totals.append((now, self._counters.summed()))
        while len(self._totals) > 2 and now - self._totals[1][0] >= self.window_s:
            self._totals.popleft()
        start_t, start = self._totals[0]
        end = self._totals[-1][1]
        elapsed = now - start_t

        def rates(name: str) -> dict[str, float]:
            if elapsed <= 0:
                return {}
            return {label: round((value - start.get((name, label), 0.0)) / elapsed, 3)
                    for (series, label), value in end.items() if series == name}

        rows = lag.rows if isinstance(lag, LagReport) else []
        any_up = any(w.up for w in workers)
        buckets = {float(le): value - start.get((LATENCY_BUCKET, le), 0.0)
                   for (series, le), value in end.items() if series == LATENCY_BUCKET}
        return {
            "t": at,
            "lag": [row.as_dict() for row in rows],
            "lag_error": None if isinstance(lag, LagReport) else lag,
            "throughput": rates(PROCESSED) if any_up else _kafka_throughput(rows),
            "throughput_source": "workers" if any_up else "kafka",
            "latency": {"p50": histogram_quantile(0.5, buckets), "p99": histogram_quantile(0.99, buckets)},
            "dead_letters": rates(DEAD_LETTERS),
            "online": online_quality(end),
            "workers": [{"url": w.url, "up": w.up, "error": w.error} for w in workers],
        }

    def _publish(self, snapshot: dict[str, Any]) -> None:
        self.history.append(snapshot)
        for queue in self._clients:
            if queue.full():  # a slow page skips ticks instead of growing our memory
                queue.get_nowait()
            queue.put_nowait(snapshot)

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: the history once, then one snapshot per tick."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        await response.prepare(request)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=30)
        self._clients.add(queue)
        try:
            await response.write(_sse("history", list(self.history)))
            while True:
                await response.write(_sse("snapshot", await queue.get()))
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self._clients.discard(queue)
        return response

    async def latest(self, _: web.Request) -> web.Response:
        """The newest snapshot as JSON, for scripts and debugging."""
        return web.json_response(self.history[-1] if self.history else {})


def online_quality(totals: dict[SeriesKey, float]) -> dict[str, dict[str, float | None]]:
    """HR@10 per slice since the dashboard started (its counters start at its first scrape):
    hits / events that had a recommendation before them, with those counts and the events whose
    user had none yet; `hr` is None before any such event."""
    out: dict[str, dict[str, float | None]] = {}
    for name in ONLINE_SLICES:
        events = totals.get((ONLINE_EVENTS, name), 0.0)
        hits = totals.get((ONLINE_HITS10, name), 0.0)
        out[name] = {"hr": round(hits / events, 4) if events else None, "events": events,
                     "no_list": totals.get((ONLINE_NO_LIST, name), 0.0)}
    return out


def _kafka_throughput(rows: Iterable[Any]) -> dict[str, float]:
    """Without reachable workers: per topic, the busiest group's consumption rate from Kafka."""
    per_group: dict[tuple[str, str], float] = {}
    for row in rows:
        if row.rate_per_s is not None:
            per_group[(row.group, row.topic)] = per_group.get((row.group, row.topic), 0.0) + row.rate_per_s
    result: dict[str, float] = {}
    for (_, topic), rate in per_group.items():
        result[topic] = round(max(result.get(topic, 0.0), rate), 3)
    return result


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def make_app(dashboard: Dashboard) -> web.Application:
    """The aiohttp application: the page, its static assets, /events and /api/snapshot."""
    app = web.Application()

    async def index(_: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / "dashboard.html")

    async def start_ticking(app: web.Application) -> Any:
        task = asyncio.create_task(dashboard.run())
        yield
        task.cancel()

    app.router.add_get("/", index)
    app.router.add_get("/events", dashboard.events)
    app.router.add_get("/api/snapshot", dashboard.latest)
    app.router.add_static("/static/", STATIC_DIR)
    app.cleanup_ctx.append(start_ticking)
    return app


async def serve(sample_lag: Callable[[], LagReport], workers: list[str], port: int, *, tick_s: float = 1.0,
                on_bound: Callable[[str], None] = print) -> None:
    """Serve on 127.0.0.1 until cancelled; `on_bound` gets the URL once the port is bound (port 0 works)."""
    runner = web.AppRunner(make_app(Dashboard(sample_lag, workers, tick_s=tick_s)),
                           shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        host, bound = runner.addresses[0][:2]
        on_bound(f"http://{host}:{bound}/")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
