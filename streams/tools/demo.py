"""`make demo`: the whole pipeline end to end on this machine.

Starts a private Kafka broker and one worker, replays the Steam review stream (or the demo
catalog shipped in `streams/demo/` when the Steam data is absent), follows the
recommendations topic, and prints for a few real users what they wrote in which languages
and what xlrec recommends them, with reasons. Everything is stopped at the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

from streams.ops import broker
from streams.sdk.consumer import RecommendationConsumer
from streams.ops.lag import LagMonitor, UnknownGroup
from streams.sdk.producer import EventProducer
from streams.sdk.render import print_recommendation, safe
from streams.contracts.schemas import ClickEvent, Event, ItemEvent, Recommendation, ReviewEvent, parse_event
from streams.contracts.settings import Settings, get_settings
from streams.tools.steam import DEFAULT_STEAM_DIR, replay_events
from streams.contracts.topics import create_topics

DEMO_DIR = Path(__file__).resolve().parent / "demo_catalog"
STEAM_LIMIT = int(os.environ.get("XLREC_DEMO_EVENTS", "3000"))
console = Console()


def demo_events() -> tuple[str, Iterator[Event]]:
    """The Steam stream when the shared data is there, else the bundled demo catalog."""
    events = DEFAULT_STEAM_DIR / "events-dev.tsv.gz"
    if events.exists():
        return (f"Steam reviews ({STEAM_LIMIT} events from {events})",
                replay_events(events, DEFAULT_STEAM_DIR / "games.tsv", limit=STEAM_LIMIT))
    return f"the demo catalog in {DEMO_DIR}", _catalog()


def _catalog() -> Iterator[Event]:
    for line in (DEMO_DIR / "items.jsonl").read_bytes().splitlines():
        if line.strip():
            yield parse_event("items", line)
    for line in (DEMO_DIR / "events.jsonl").read_bytes().splitlines():
        if line.strip():
            data = orjson.loads(line)
            yield parse_event("reviews" if data.get("type") == "review" else "clicks", data)


def wait_for_worker(port: int, proc: subprocess.Popen, log: Path, timeout_s: float = 300.0) -> None:
    """Until the worker's web server answers (it loads the encoder first)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the worker exited with {proc.returncode}; its log:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read()
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the worker did not answer on port {port} within {timeout_s:.0f}s; see {log}")


def wait_until_consumed(settings: Settings, sent: int, timeout_s: float = 900.0) -> None:
    """Until the worker's group has committed every event we produced (lag 0), showing progress."""
    monitor = LagMonitor(settings, settings.group_id)
    inputs = {settings.topic(name) for name in ("items", "clicks", "reviews")}
    deadline = time.monotonic() + timeout_s
    with console.status("worker catching up") as status:
        while time.monotonic() < deadline:
            try:
                rows = [r for r in monitor.sample().rows if r.topic in inputs]
            except UnknownGroup:  # the group commits for the first time after its first batch
                rows = []
            done = sum(r.committed for r in rows)
            status.update(f"worker catching up: {done}/{sent} events applied, "
                          f"lag {sum(r.lag for r in rows)}")
            if done >= sent:
                return
            time.sleep(1.0)
    console.print(f"[yellow]the worker had not caught up after {timeout_s:.0f}s[/]")


class Follower(threading.Thread):
    """Reads the recommendations topic in the background, keeping each user's latest."""

    def __init__(self, settings: Settings):
        super().__init__(daemon=True)
        self.consumer = RecommendationConsumer(settings, from_beginning=True)
        self.latest: dict[str, Recommendation] = {}
        self.latencies: list[float] = []
        self.count = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            rec = self.consumer.poll(0.5)
            if rec is not None:
                self.latest[rec.user_id] = rec
                self.count += 1
                if rec.latency_ms is not None:
                    self.latencies.append(rec.latency_ms)
        self.consumer.close()


def show_users(follower: Follower, titles: dict[str, str], langs: dict[str, Counter],
               history: dict[str, list[str]], n: int = 5) -> None:
    """The most multilingual, most active users: what they wrote and what they get."""
    users = sorted(follower.latest, key=lambda u: (len(langs[u]), len(history[u])), reverse=True)[:n]
    for user in users:
        spoken = ", ".join(f"{lang} ({count})" for lang, count in langs[user].most_common())
        recent = "; ".join(titles.get(i, i) for i in history[user][-5:])
        console.rule(f"[bold]user {safe(user)}")
        console.print(f"languages: {safe(spoken)}\nrecent items: {safe(recent)}", highlight=False)
        print_recommendation(console, follower.latest[user])


def main() -> None:
    settings = get_settings()
    source, events = demo_events()
    workdir = settings.cache_dir / "demo"
    shutil.rmtree(workdir, ignore_errors=True)
    console.print(f"[bold]xlrec demo[/]: {source}")
    info = broker.start(port=0, data_dir=workdir / "kafka")
    console.print(f"Kafka broker on {info.bootstrap} (log {info.log_path})")
    web_port = broker.free_port()
    env = {**os.environ, "XLREC_BOOTSTRAP": info.bootstrap, "XLREC_DATA_DIR": str(workdir / "worker"),
           "XLREC_WEB_PORT": str(web_port)}
    settings = Settings(**{**settings.model_dump(), "bootstrap": info.bootstrap})
    worker_log = workdir / "worker.log"
    worker = None
    try:
        create_topics(settings)
        with open(worker_log, "wb") as log:
            worker = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env,
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        console.print(f"worker started (pid {worker.pid}, log {worker_log}); waiting until it is ready")
        wait_for_worker(web_port, worker, worker_log)
        follower = Follower(settings)
        follower.start()
        titles: dict[str, str] = {}
        langs: dict[str, Counter] = defaultdict(Counter)
        history: dict[str, list[str]] = defaultdict(list)
        started = time.monotonic()
        sent = 0
        with EventProducer(settings) as producer:
            for event in events:
                producer.send(event)
                sent += 1
                if isinstance(event, ItemEvent):
                    titles[event.item_id] = event.title
                elif isinstance(event, (ReviewEvent, ClickEvent)):
                    history[event.user_id].append(event.item_id)
                    if event.lang:
                        langs[event.user_id][event.lang] += 1
        console.print(f"produced {sent} events in {time.monotonic() - started:.1f}s; "
                      "waiting for the worker to catch up")
        wait_until_consumed(settings, sent)
        time.sleep(settings.rank_interval_s + 3.0)  # the last coalesced rankings
        follower.stopped.set()
        follower.join(5)
        show_users(follower, titles, langs, history)
        summary = Table(title="demo summary", show_header=False, title_justify="left")
        summary.add_row("events produced", str(sent))
        summary.add_row("recommendations received", str(follower.count))
        summary.add_row("users with recommendations", str(len(follower.latest)))
        if follower.latencies:
            lat = sorted(follower.latencies)
            summary.add_row("event -> recommendation p50 / p99",
                            f"{statistics.median(lat):.0f} ms / {lat[int(0.99 * (len(lat) - 1))]:.0f} ms")
        console.print(summary)
        if not follower.latest:
            raise SystemExit(f"no recommendations arrived; see the worker log {worker_log}")
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        broker.stop(workdir / "kafka")


if __name__ == "__main__":
    main()
