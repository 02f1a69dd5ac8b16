"""`xlrec bench pipeline`: the worker's throughput and freshness next to the raw Kafka limit.

One run, one broker, the same N events on the same topics and partitions (the Steam reviews
when `../shared/data/steam` or `$XLREC_STEAM_DIR` has them, else generated clicks and reviews:
`streams.tools.generated`):
1. the limit: a plain confluent-kafka consume-then-produce loop doing no work;
2. xlrec at full speed: the N events as a backlog read by fresh worker(s) with ranking off
   (profile updates/s), then with ranking on (recommendations/s);
3. freshness: the ranking-on worker, caught up, gets the next events at each fixed
   rate; every user event is timed from its produce call to the first recommendation that
   reflects it (the first one for that user whose trigger is this event or a later one), and
   new items from their produce call to `GET /items/{id}` finding them in the vector store;
4. memory: each worker's peak RSS, and the bytes per user of the users table (its
   changelog: the latest value per key, key included);
5. online quality: HR@10 of the events the ranking-on workers applied (the backlog and the
   fixed-rate phases), read from their `xlrec_online_*` counters: each click or review against
   the latest recommendation its user had been sent before it (streams.worker.online_quality).
Rates are measured between the first and the last poll of the workers' own counters
(`/metrics`), so worker start-up and group joins do not count. Machines are noisy: compare
runs by `ratio_vs_limit`, which both sides of the same run share.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from streams.tools.worker_process import WorkerProcess

WORKER_START_S = 300.0   # a first start on a machine may export the encoder
POLL_S = 0.2
ITEM_EVERY_S = 1.0       # one new item per second during each fixed-rate phase
ITEM_TIMEOUT_S = 30.0    # an item not found by then counts as not searchable
SETTLE_S = 3.0           # after a phase: the last coalesced rankings (rank interval + margin)
TAIL_STILL_S = 1.5       # recommendations that stop for this long (none pending) are done
RANKINGS_DRAIN_S = 300.0  # after a fixed-rate phase: time for the last pending rankings
LIMIT_TOPIC = "bench-limit-out"   # the raw loop's output; also takes each phase's warm-up message


@dataclass(frozen=True)
class Msg:
    """One input message, serialised once: topic kind, key, JSON value, and the user event's
    (user_id, event_id), or None for items."""

    kind: str
    key: bytes
    value: bytes
    user_event: tuple[str, str] | None


def stream_messages(n: int, extra: int, steam_dir: Path | None = None) -> tuple[str, list[Msg], list[Msg]]:
    """Where the events come from, the first n events (items included) as the backlog, and up to
    `extra` more: the Steam stream when its data is there, else a generated one."""
    from streams.contracts.schemas import ClickEvent, ItemEvent, ReviewEvent
    from streams.tools.generated import realistic_events

    source, events = realistic_events(n + extra, steam_dir=steam_dir)
    out: list[Msg] = []
    for event in events:
        if isinstance(event, ItemEvent):
            out.append(Msg("items", event.key.encode(), event.to_json(), None))
        else:
            assert isinstance(event, (ClickEvent, ReviewEvent))
            out.append(Msg("clicks" if isinstance(event, ClickEvent) else "reviews", event.key.encode(),
                           event.to_json(), (event.user_id, event.event_id)))
        if len(out) >= n + extra:
            break
    return source, out[:n], out[n:]


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    """p50/p95/p99/max (nearest rank) and the count."""
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None, "n": 0}
    v = sorted(values)

    def at(q: float) -> float:
        return round(v[min(len(v) - 1, max(0, int(round(q * len(v))) - 1))], 1)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(v[-1], 1), "n": len(v)}


ONLINE = "xlrec_online_"   # live quality series, also kept per label set (`online_hr`)


def scrape(port: int) -> dict[str, float]:
    """The worker's /metrics summed per sample name (labels added up); the online-quality
    samples also per label set, as `name{k=10,slice=all}` (labels sorted)."""
    from prometheus_client.parser import text_string_to_metric_families

    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            out[sample.name] += sample.value
            if sample.name.startswith(ONLINE):
                out[labelled(sample.name, sample.labels)] += sample.value
    # Rankings that follow events; refreshes (a review's text folded in later) trail for long.
    out["recommendations_after_events"] = (out["xlrec_recommendations_total"]
                                           - out["xlrec_recommendations_refreshed_total"])
    return out


# The workers' own XLREC_* settings come from `run`; of this process's, only these pass on.
INHERITED_ENV = ("XLREC_CACHE_DIR", "XLREC_DEVICE", "XLREC_ENCODER_THREADS", "XLREC_ENCODER_MAX_TOKENS",
                 "XLREC_REVIEW_TEXT_PROCESS")


class Worker(WorkerProcess):
    """An `xlrec worker` subprocess (streams.tools.worker_process) in `workdir`: data dir
    `workdir/name`, log `workdir/name.log`; `metrics()` reads its /metrics."""

    def __init__(self, env: dict[str, str], workdir: Path, name: str) -> None:
        super().__init__(None, workdir / name, name, env, loglevel="warning", inherit=INHERITED_ENV)

    def metrics(self) -> dict[str, float]:
        try:
            return scrape(self.port)
        except OSError:
            return {}


def labelled(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"


def total(workers: list[Worker], name: str) -> float:
    return sum(w.metrics().get(name, 0.0) for w in workers)


def online_hr(samples: list[dict[str, float]], k: int = 10) -> dict[str, Any]:
    """Online HR@k per slice over the workers' scraped counters (streams.worker.online_quality):
    hits / events that had a recommendation before them (None without such events), with
    the counts, and the events whose user had none yet."""
    def summed(name: str, **labels: str) -> float:
        key = labelled(f"{ONLINE}{name}_total", labels)
        return sum(m.get(key, 0.0) for m in samples)

    out: dict[str, Any] = {}
    for slice_ in ("all", "cross_lingual", "non_english"):
        events = summed("events", slice=slice_)
        hits = summed("hits", k=str(k), slice=slice_)
        out[slice_] = {"hr": round(hits / events, 4) if events else None, "hits": int(hits),
                       "events": int(events), "no_list": int(summed("no_list", slice=slice_))}
    return out


def text_lane(workers: list[Worker]) -> dict[str, float]:
    """The review-text lane's own lag now: texts waiting (all workers) and the oldest wait."""
    samples = [w.metrics() for w in workers]
    return {"waiting": sum(m.get("xlrec_review_text_backlog", 0.0) for m in samples),
            "oldest_wait_s": round(max((m.get("xlrec_review_text_oldest_wait_seconds", 0.0)
                                        for m in samples), default=0.0), 1)}


def measure_rate(workers: list[Worker], name: str, target: float, timeout_s: float,
                 tail: str | None = None) -> dict[str, Any]:
    """Poll the summed counter `name` until it reaches `target` (or stalls, or time runs out):
    its rate between the last poll before every worker made progress (else the first) and the
    last poll that saw progress. (Workers join the group one after the other, and the first
    one consumes alone until the group rebalances: that start is not the group's rate.)
    With `tail` (e.g. recommendations, which trail the updates that cause them), polling goes
    on until no ranking is pending and the tail counter stood still for TAIL_STILL_S; its rate
    is over the first update to its own last change."""
    names = (name, tail, "xlrec_rankings_pending") if tail else (name,)
    first: tuple[float, dict[str, float]] | None = None
    first_any: tuple[float, dict[str, float]] | None = None   # for a worker left without partitions
    last: tuple[float, dict[str, float]] | None = None
    tail_last: tuple[float, float] | None = None
    deadline = time.monotonic() + timeout_s
    stalled_since = time.monotonic()
    previous = -1.0
    reached = False
    while time.monotonic() < deadline:
        now = time.monotonic()
        per_worker = [w.metrics() for w in workers]
        sample = {k: sum(m.get(k, 0.0) for m in per_worker) for k in names}
        if first_any is None or sample[name] == 0:
            first_any = (now, sample)
        if first is None or any(m.get(name, 0.0) == 0 for m in per_worker):
            first = (now, sample)
        if sample[name] > previous:
            previous, stalled_since = sample[name], now
            if first is not None:
                last = (now, sample)
        if tail and (tail_last is None or sample[tail] > tail_last[1]):
            tail_last = (now, sample[tail])
        reached = reached or sample[name] >= target or (first is not None and now - stalled_since > 60.0)
        if reached and (not tail or tail_last is None or (
                sample["xlrec_rankings_pending"] == 0 and now - tail_last[0] >= TAIL_STILL_S)):
            break
        if any(w.proc is None or w.proc.poll() is not None for w in workers):
            raise RuntimeError(f"a worker exited; see {workers[0].log}")
        time.sleep(POLL_S)
    if last is not None and first is not None and last[0] <= first[0]:
        first = first_any
    if first is None or last is None or last[0] <= first[0]:
        return {"per_s": 0.0, "done": previous, "target": target, "completed": False}
    span = last[0] - first[0]
    out: dict[str, Any] = {"per_s": round((last[1][name] - first[1][name]) / span, 1),
                           "done": last[1][name], "target": target, "seconds": round(span, 2),
                           "completed": last[1][name] >= target}
    if tail and tail_last is not None and tail_last[0] > first[0]:
        out[f"{tail}_per_s"] = round((tail_last[1] - first[1][tail]) / (tail_last[0] - first[0]), 1)
        out[f"{tail}_seconds"] = round(tail_last[0] - first[0], 2)
    return out


def backlog_phase(workers: list[Worker], n_user: int, timeout_s: float, ranking: bool) -> dict[str, Any]:
    """The rate at which `workers` apply the backlog (and, `ranking`, rank after its events),
    with each worker's part of it (`per_worker_per_s`: the rate times its share of the work)."""
    tail = "recommendations_after_events" if ranking else None
    out = measure_rate(workers, "xlrec_profile_updates_total", n_user, timeout_s, tail=tail)
    metrics = [w.metrics() for w in workers]
    counted = [("xlrec_profile_updates_total", "per_s")] + ([(tail, f"{tail}_per_s")] if tail else [])
    for name, key in counted:
        done = [m.get(name, 0.0) for m in metrics]
        if key in out and sum(done) > 0:
            out[f"per_worker_{key}"] = [round(out[key] * d / sum(done), 1) for d in done]
    return out


def scaling(r: dict[str, Any], workers: int) -> dict[str, Any]:
    """The group against one worker on the same backlog: rates per worker, and efficiency,
    the group's rate over `workers` times one worker's (1.0: perfect scaling)."""
    one = r["one_worker"]
    recs = "recommendations_after_events_per_s"
    pairs = {"profile_updates": (r["ranking_off"].get("per_s", 0.0), one["ranking_off"].get("per_s", 0.0)),
             "recommendations": (r["ranking_on"].get(recs, 0.0), one["ranking_on"].get(recs, 0.0))}
    return {
        "workers": workers,
        "profile_updates_per_s_per_worker": r["ranking_off"].get("per_worker_per_s", []),
        "recommendations_per_s_per_worker": r["ranking_on"].get(f"per_worker_{recs}", []),
        "one_worker": {name: single for name, (_, single) in pairs.items()},
        "efficiency": {name: round(group / (workers * single), 3) if single else None
                       for name, (group, single) in pairs.items()},
    }


def produce_backlog(settings: Any, messages: list[Msg]) -> None:
    from streams.sdk.producer import EventProducer

    with EventProducer(settings, check=False) as producer:
        for m in messages:
            producer.send_raw(settings.topic(m.kind), m.key, m.value)


def raw_limit(settings: Any, n: int, timeout_s: float) -> dict[str, Any]:
    """Consume the n backlog events from the input topics and produce each, unchanged, to an
    output topic with the same partitions: Kafka and the Python client, no work."""
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import NewTopic

    from streams.contracts.topics import admin_client

    out_topic = f"{settings.topic_prefix}{LIMIT_TOPIC}"
    admin = admin_client(settings)
    for future in admin.create_topics([NewTopic(out_topic, num_partitions=settings.partitions,
                                                replication_factor=settings.replication)]).values():
        future.result()
    consumer = Consumer({**settings.connection().librdkafka(), "group.id": f"bench-limit-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": True})
    producer = Producer({**settings.connection().librdkafka(), "acks": "all", "linger.ms": 5,
                         "partitioner": "murmur2_random"})
    consumer.subscribe([settings.topic(k) for k in ("items", "clicks", "reviews")])
    done, start = 0, None
    deadline = time.monotonic() + timeout_s
    try:
        while done < n and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if msg.error():
                    continue
                if start is None:
                    start = time.perf_counter()
                while True:
                    try:
                        producer.produce(out_topic, msg.value(), msg.key())
                        break
                    except BufferError:
                        producer.poll(0.05)
                done += 1
            producer.poll(0)
        producer.flush(30)
        seconds = time.perf_counter() - start if start is not None else 0.0
    finally:
        consumer.close()
    return {"per_s": round(done / seconds, 1) if seconds else 0.0, "done": done,
            "seconds": round(seconds, 3), "completed": done >= n}


class RecommendationLog(threading.Thread):
    """Reads the recommendations topic from its current end: (user, trigger, created_ts)."""

    def __init__(self, settings: Any) -> None:
        from confluent_kafka import OFFSET_END, Consumer, TopicPartition

        super().__init__(daemon=True)
        topic = settings.topic("recommendations")
        self.consumer = Consumer({**settings.connection().librdkafka(),
                                  "group.id": f"bench-recs-{uuid.uuid4().hex[:8]}",
                                  "enable.auto.commit": False})
        parts = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in parts])
        self.recs: list[tuple[str, str | None, float]] = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def run(self) -> None:
        import orjson

        while not self.stopped.is_set():
            for msg in self.consumer.consume(500, 0.2):
                value = msg.value()
                if msg.error() or value is None:
                    continue
                rec = orjson.loads(value)
                with self.lock:
                    self.recs.append((rec["user_id"], rec.get("trigger_event_id"), rec["created_ts"]))
        self.consumer.close()

    def snapshot(self) -> list[tuple[str, str | None, float]]:
        with self.lock:
            return list(self.recs)


def freshness(sent: list[tuple[str, str, float]], recs: list[tuple[str, str | None, float]]
              ) -> tuple[list[float], int]:
    """Per user event: ms from its produce call to the first recommendation that reflects it.

    A user's events are applied in order, so a recommendation triggered by the user's k-th
    event reflects events 1..k. Returns the latencies and how many events got none."""
    index: dict[tuple[str, str], int] = {}
    produced: dict[str, list[float]] = defaultdict(list)
    for user, event_id, ts in sent:
        index[(user, event_id)] = len(produced[user])
        produced[user].append(ts)
    reflected: dict[str, int] = defaultdict(int)   # per user: events covered so far
    out: list[float] = []
    for user, trigger, created in sorted(recs, key=lambda r: r[2]):
        k = index.get((user, trigger or ""))
        if k is None or k < reflected[user]:
            continue
        out.extend((created - ts) * 1000.0 for ts in produced[user][reflected[user]: k + 1])
        reflected[user] = k + 1
    missing = sum(len(v) for v in produced.values()) - len(out)
    return out, missing


class ItemProbe(threading.Thread):
    """Polls `GET /items/{id}` on every worker until one finds the item: produce-to-searchable
    in ms, or None when no worker found it within ITEM_TIMEOUT_S."""

    def __init__(self, ports: list[int], item_id: str, produced: float, out: list[float | None]) -> None:
        super().__init__(daemon=True)
        self.ports, self.item_id, self.produced, self.out = ports, item_id, produced, out

    def run(self) -> None:
        deadline = self.produced + ITEM_TIMEOUT_S
        while time.time() < deadline:
            for port in self.ports:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/items/{self.item_id}", timeout=2).read()
                    self.out.append((time.time() - self.produced) * 1000.0)
                    return
                except (urllib.error.HTTPError, OSError):
                    pass
            time.sleep(0.01)
        self.out.append(None)


def new_item(item_id: str, i: int) -> bytes:
    from streams.contracts.schemas import ItemEvent

    return ItemEvent(item_id=item_id, title=f"Benchmark game {i}", lang="en", ts=time.time(),
                     description="A brand-new strategy game about fleets, planets and trade routes.",
                     categories=["game"]).to_json()


def fixed_rate(settings: Any, workers: list[Worker], messages: Iterator[Msg], rate: float,
               seconds: float, searchable: list[float | None], label: str) -> dict[str, Any]:
    """Produce at `rate` events/s for `seconds`, one new item per second, then wait for the
    workers to apply everything; freshness of every user event and item."""
    from streams.sdk.producer import EventProducer

    recs = RecommendationLog(settings)
    recs.start()
    sent: list[tuple[str, str, float]] = []
    probes: list[ItemProbe] = []
    target = total(workers, "xlrec_profile_updates_total")
    lane_before = text_lane(workers)
    with EventProducer(settings, check=False) as producer:
        # A new idempotent producer's first send waits for its connection and producer id
        # (up to ~0.5 s here): an app's long-lived producer pays that once, so the phase does
        # too, before its clock starts, with one message to the benchmark's own topic.
        producer.send_raw(f"{settings.topic_prefix}{LIMIT_TOPIC}", b"warm-up", b"{}")
        producer.flush()
        start = time.time()
        next_item = start
        count = 0
        for i, m in enumerate(messages):
            due = start + i / rate
            if due - start >= seconds:
                break
            count += 1
            if (pause := due - time.time()) > 0:
                time.sleep(pause)
            if time.time() >= next_item:
                item_id = f"bench-{label}-{len(probes)}-{uuid.uuid4().hex[:6]}"
                value = new_item(item_id, len(probes))
                produced = time.time()
                producer.send_raw(settings.topic("items"), item_id, value)
                probes.append(ItemProbe([w.port for w in workers], item_id, produced, searchable))
                probes[-1].start()
                next_item += ITEM_EVERY_S
            if m.user_event is not None:
                sent.append((*m.user_event, time.time()))
                target += 1
            producer.send_raw(settings.topic(m.kind), m.key, m.value)
    produce_s = time.time() - start
    lane_after = text_lane(workers)
    # Until every event is applied and no ranking waits: under overload the rankings trail the
    # updates, and cutting them off would leave the slowest events out of the percentiles.
    applied = measure_rate(workers, "xlrec_profile_updates_total", target, timeout_s=RANKINGS_DRAIN_S,
                           tail="recommendations_after_events")
    time.sleep(SETTLE_S)
    for probe in probes:
        probe.join(ITEM_TIMEOUT_S)
    recs.stopped.set()
    recs.join(10)
    latencies, missing = freshness(sent, recs.snapshot())
    last: dict[str, float] = {}
    bursts = 0   # events within the rank interval of the same user's previous one: they wait for it
    for user, _, ts in sent:
        bursts += ts - last.get(user, float("-inf")) < settings.rank_interval_s
        last[user] = ts
    return {**percentiles(latencies), "events": len(sent), "without_recommendation": missing,
            "within_rank_interval_of_previous": bursts,
            "achieved_rate": round(count / max(produce_s, 1e-9), 1),
            "all_applied": bool(applied.get("completed")),
            "text_lane": {"at_start": lane_before, "at_end": lane_after}}


def bytes_per_user(settings: Any, group_id: str) -> dict[str, float]:
    """The users table's size per user: the latest changelog value per key, key included."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    from streams.worker.app import changelog_name

    topic = changelog_name(settings.model_copy(update={"group_id": group_id}), "users")
    consumer = Consumer({**settings.connection().librdkafka(), "group.id": f"bench-size-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "enable.partition.eof": True,
                         "auto.offset.reset": "earliest"})
    sizes: dict[bytes, int] = {}
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or not meta.partitions:
            return {"mean": 0.0, "max": 0.0, "users": 0}
        consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
        eof: set[int] = set()
        deadline = time.monotonic() + 60
        while len(eof) < len(meta.partitions) and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 1.0):
                error, partition, value = msg.error(), msg.partition(), msg.value()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF and partition is not None:
                        eof.add(partition)
                    continue
                key = msg.key() or b""
                if value is None:
                    sizes.pop(key, None)
                else:
                    sizes[key] = len(key) + len(value)
    finally:
        consumer.close()
    if not sizes:
        return {"mean": 0.0, "max": 0.0, "users": 0}
    return {"mean": round(sum(sizes.values()) / len(sizes), 1), "max": float(max(sizes.values())),
            "users": len(sizes)}


def machine_info(settings: Any, workers: int) -> dict[str, Any]:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    commit = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    return {"cpus": len(os.sched_getaffinity(0)), "cpu": cpu, "memory_gb": round(mem_gb, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "partitions": settings.partitions, "workers": workers, "device": settings.device,
            "rank_interval_s": settings.rank_interval_s, "commit": commit}


def run_workers(env: dict[str, str], workdir: Path, count: int, name: str) -> list[Worker]:
    workers = [Worker(env, workdir, f"{name}-{i}").start() for i in range(count)]
    for w in workers:
        w.wait_ready(WORKER_START_S)
    return workers


def run(events: int, rates: list[float], bootstrap: str | None, partitions: int, workers: int,
        rate_seconds: float, phase_timeout_s: float, workdir: Path,
        rank_interval_s: float | None = None) -> dict[str, Any]:
    """Every phase of the benchmark; returns the JSON document."""
    from streams.ops import broker
    from streams.contracts.settings import Settings, get_settings
    from streams.contracts.topics import create_topics

    extra = int(sum(rates) * rate_seconds) + 1000
    source, backlog, live = stream_messages(events, extra)
    n_user = sum(m.user_event is not None for m in backlog)
    started_broker = bootstrap is None
    if started_broker:
        bootstrap = broker.start(port=0, data_dir=workdir / "kafka").bootstrap
    assert bootstrap is not None
    run_id = uuid.uuid4().hex[:8]
    overrides: dict[str, Any] = {"bootstrap": bootstrap, "partitions": partitions, "topic_prefix": f"bench{run_id}."}
    if rank_interval_s is not None:
        overrides["rank_interval_s"] = rank_interval_s
    settings = Settings(**{**get_settings().model_dump(), **overrides})
    base_env = {"XLREC_BOOTSTRAP": bootstrap, "XLREC_TOPIC_PREFIX": settings.topic_prefix,
                "XLREC_PARTITIONS": str(partitions), "XLREC_RANK_INTERVAL_S": str(settings.rank_interval_s)}
    result: dict[str, Any] = {"events": len(backlog), "user_events": n_user, "source": source}
    running: list[Worker] = []
    rss: list[float] = []
    try:
        create_topics(settings)
        produce_backlog(settings, backlog)
        limit = raw_limit(settings, len(backlog), phase_timeout_s)
        result["limit"] = limit

        if workers > 1:   # the reference for the group's scaling: one worker, same backlog
            result["one_worker"] = {}
            for phase, ranking in (("ranking_off", "false"), ("ranking_on", "true")):
                running = run_workers({**base_env, "XLREC_GROUP_ID": f"one-{phase}{run_id}",
                                       "XLREC_RANKING_ENABLED": ranking}, workdir, 1, f"one-{phase}")
                result["one_worker"][phase] = backlog_phase(running, n_user, phase_timeout_s, ranking == "true")
                for w in running:
                    w.stop()

        running = run_workers({**base_env, "XLREC_GROUP_ID": f"off{run_id}", "XLREC_RANKING_ENABLED": "false"},
                              workdir, workers, "off")
        off = backlog_phase(running, n_user, phase_timeout_s, False)
        rss += [round(w.peak_rss_mb(), 1) for w in running]
        for w in running:
            w.stop()
        result["ranking_off"] = off

        on_group = f"on{run_id}"
        running = run_workers({**base_env, "XLREC_GROUP_ID": on_group, "XLREC_RANKING_ENABLED": "true"},
                              workdir, workers, "on")
        on = backlog_phase(running, n_user, phase_timeout_s, True)
        result["ranking_on"] = on
        stream = iter(live)
        searchable: list[float | None] = []
        result["freshness"] = {}
        if on["completed"]:
            time.sleep(SETTLE_S)
            for rate in rates:
                result["freshness"][f"{rate:g}"] = fixed_rate(settings, running, stream, rate, rate_seconds,
                                                              searchable, f"r{rate:g}")
        # Every event the ranking-on workers applied: the backlog, then the fixed-rate phases.
        result["online"] = online_hr([w.metrics() for w in running])
        result["item_searchable"] = {**percentiles([s for s in searchable if s is not None]),
                                     "not_searchable": sum(s is None for s in searchable)}
        rss += [round(w.peak_rss_mb(), 1) for w in running]
        result["rss_mb_per_worker"] = rss
        result["table"] = bytes_per_user(settings, on_group)
    finally:
        for w in running:
            w.stop()
        if started_broker:
            broker.stop(workdir / "kafka")
    return finish(result, settings, workers)


def finish(r: dict[str, Any], settings: Any, workers: int) -> dict[str, Any]:
    """The issue's JSON keys first, the details after."""
    limit = r["limit"]["per_s"]
    updates = r["ranking_off"]["per_s"]
    fresh = {rate: {k: v[k] for k in ("p50", "p95", "p99")} for rate, v in r["freshness"].items()}
    lanes = {rate: v["text_lane"]["at_end"] for rate, v in r["freshness"].items() if "text_lane" in v}
    return {
        "limit_events_per_s": limit,
        "profile_updates_per_s": updates,
        "recommendations_per_s": r["ranking_on"].get("recommendations_after_events_per_s", 0.0),
        "ratio_vs_limit": round(updates / limit, 4) if limit else None,
        "freshness_ms": fresh,
        "online_hr@10": {name: v["hr"] for name, v in r["online"].items()},
        "item_searchable_ms": r["item_searchable"],
        "text_lane": lanes,
        "rss_mb": max(r["rss_mb_per_worker"], default=0.0),
        "bytes_per_user": r["table"]["mean"],
        "machine": machine_info(settings, workers),
        **({"scaling": scaling(r, workers)} if "one_worker" in r else {}),
        "details": r,
    }


def print_table(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    d = doc["details"]
    t = Table(title=f"xlrec bench pipeline: {d['events']} events ({d.get('source', 'Steam')}), "
                    f"{doc['machine']['workers']} worker(s), "
                    f"{doc['machine']['partitions']} partitions", title_justify="left")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row("raw consume-produce limit", f"{doc['limit_events_per_s']:,.0f} events/s")
    t.add_row("profile updates, ranking off", f"{doc['profile_updates_per_s']:,.0f} /s"
              + ("" if d["ranking_off"]["completed"] else " (did not finish)"))
    t.add_row("  ratio to the limit", f"{(doc['ratio_vs_limit'] or 0) * 100:.1f} %")
    t.add_row("profile updates, ranking on", f"{d['ranking_on']['per_s']:,.0f} /s"
              + ("" if d["ranking_on"]["completed"] else " (did not finish)"))
    t.add_row("recommendations, ranking on", f"{doc['recommendations_per_s']:,.0f} /s")
    if "scaling" in doc:
        sc = doc["scaling"]
        t.add_row("  one worker: updates / recommendations",
                  f"{sc['one_worker']['profile_updates']:,.0f} / {sc['one_worker']['recommendations']:,.0f} /s")
        t.add_row("  per worker: updates / recommendations",
                  f"{sc['profile_updates_per_s_per_worker']} / {sc['recommendations_per_s_per_worker']} /s")
        eff = sc["efficiency"]
        t.add_row(f"  scaling efficiency of {sc['workers']} workers",
                  f"updates {eff['profile_updates']}, recommendations {eff['recommendations']}")
    for rate, f in d["freshness"].items():
        t.add_row(f"freshness at {rate} events/s p50/p95/p99",
                  f"{f['p50']} / {f['p95']} / {f['p99']} ms ({f['without_recommendation']} of {f['events']} none)")
        lane = f.get("text_lane", {}).get("at_end")
        if lane:
            t.add_row("  review texts waiting at its end, oldest wait",
                      f"{lane['waiting']:,.0f}, {lane['oldest_wait_s']:,.1f} s")
    s = doc["item_searchable_ms"]
    t.add_row("new item searchable p50/p99", f"{s['p50']} / {s['p99']} ms (n={s['n']}, "
              f"{s['not_searchable']} not within {ITEM_TIMEOUT_S:.0f} s)")
    for name, v in d["online"].items():
        hr = "-" if v["hr"] is None else f"{v['hr']:.4f}"
        t.add_row(f"online HR@10, {name.replace('_', '-')} events", f"{hr} ({v['hits']:,} of {v['events']:,}; "
                  f"{v['no_list']:,} before any list)")
    t.add_row("worker peak RSS", f"{doc['rss_mb']:,.0f} MB")
    t.add_row("users table per user", f"{doc['bytes_per_user']:,.0f} bytes ({d['table']['users']} users)")
    Console().print(t)


def bench_pipeline(
    out: Path = typer.Option(..., "--out", help="Where to write the JSON results"),
    events: int = typer.Option(50_000, "--events", min=10, help="Events replayed as the backlog (Steam "
                               "reviews, or generated ones without the Steam data)"),
    rates: str = typer.Option("200,1000", "--rates", help="Fixed input rates (events/s) for freshness"),
    bootstrap: str | None = typer.Option(None, "--bootstrap", help="Use this broker instead of starting one"),
    partitions: int = typer.Option(8, "--partitions", min=1, help="Partitions of the benchmark's topics"),
    workers: int = typer.Option(1, "--workers", min=1, help="Workers in the consumer group"),
    rate_seconds: float = typer.Option(20.0, "--rate-seconds", min=1.0, help="Length of each fixed-rate phase"),
    phase_timeout: float = typer.Option(900.0, "--phase-timeout", help="Give up a full-speed phase after this "
                                        "many seconds and report the rate so far"),
    rank_interval: float | None = typer.Option(None, "--rank-interval", help="The workers' "
                                                  "XLREC_RANK_INTERVAL_S (default: the settings')"),
) -> None:
    """Throughput and freshness of the pipeline next to the raw Kafka consume-produce limit."""
    rate_list = [float(r) for r in rates.split(",") if r.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="xlrec-bench-"))
    try:
        doc = run(events, rate_list, bootstrap, partitions, workers, rate_seconds, phase_timeout, workdir,
                  rank_interval)
    except Exception:
        print(f"benchmark failed; logs kept in {workdir}", file=sys.stderr)
        raise
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print_table(doc)
    print(f"wrote {out}")
    shutil.rmtree(workdir, ignore_errors=True)
