"""The users half of `xlrec bench scale`: what a worker costs per user, and how long it takes
to answer again after a restart, through the real worker and a real broker.

For each user count: fresh topics, the demo catalog's items, then one `xlrec worker` (ranking
off: this measures the users table, not the ranker) and `events_per_user` clicks for each of
`users` synthetic users, produced in large batches straight with confluent-kafka. Once the
worker applied them all and committed, its RSS is read; it is then stopped (SIGTERM) and
started again on the same data dir, and the clock runs from that start until the
recommendations topic holds an answer to one request for a user of every partition.

`measure_users` returns one dict per count with exactly these keys:
- `users`: the count;
- `rss_mb`: the worker's resident memory (VmRSS) once every user was applied;
- `bytes_per_user`: the worker's RSS growth from ready (catalog read, no user yet) to every
  user applied, divided by the users: the memory the users table costs per user;
- `restart_s`: from starting the worker again, its local state kept, to its answer for a user
  of every partition.
Progress and further figures (the table's size on disk) go to `progress`.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from streams.contracts.settings import Settings
from streams.tools.worker_process import WorkerProcess

ITEMS = 50                  # demo-catalog items the clicks go to (their vectors make real profiles)
READY_S = 300.0
INHERITED_ENV = ("XLREC_CACHE_DIR", "XLREC_DEVICE", "XLREC_ENCODER_THREADS")

Progress = Callable[[str], None]


def measure_users(counts: list[int], *, work_dir: Path, store: str = "rocksdb", bootstrap: str | None = None,
                  partitions: int = 8, events_per_user: int = 1, timeout_s: float = 3600.0,
                  keep: bool = False, progress: Progress | None = None) -> list[dict[str, Any]]:
    """One dict per count: `users`, `rss_mb`, `bytes_per_user`, `restart_s` (see the module).

    `store` is the worker's users-table store (`rocksdb` or `memory`); without `bootstrap` a
    broker is started in `work_dir/kafka` and stopped at the end. `timeout_s` bounds each
    phase (applying every user, the restart). Each count's worker data is removed afterwards
    unless `keep`."""
    from streams.ops import broker

    say = progress or (lambda line: None)
    work_dir.mkdir(parents=True, exist_ok=True)
    started = bootstrap is None
    if started:
        bootstrap = broker.start(port=0, data_dir=work_dir / "kafka").bootstrap
    assert bootstrap is not None
    try:
        return [_measure(n, work_dir=work_dir, store=store, bootstrap=bootstrap, partitions=partitions,
                         events_per_user=events_per_user, timeout_s=timeout_s, keep=keep, say=say)
                for n in counts]
    finally:
        if started:
            broker.stop(work_dir / "kafka")


def _measure(n: int, *, work_dir: Path, store: str, bootstrap: str, partitions: int, events_per_user: int,
             timeout_s: float, keep: bool, say: Progress) -> dict[str, Any]:
    from streams.contracts.topics import create_topics

    run = f"scale{uuid.uuid4().hex[:8]}"
    settings = Settings(bootstrap=bootstrap, partitions=partitions, topic_prefix=f"{run}.", group_id=run,
                        data_dir=work_dir / run / "data")
    create_topics(settings)
    _produce_items(settings)
    env = {"XLREC_USERS_STORE": store, "XLREC_RANKING_ENABLED": "false"}
    worker = _worker(settings, env, "worker").start()
    try:
        worker.wait_ready(READY_S)
        _wait_catalog(worker, timeout_s)
        base_mb = worker.rss_mb()
        say(f"{n:,} users, {store}: worker ready, RSS {base_mb:.0f} MB; producing {n * events_per_user:,} clicks")
        t0 = time.monotonic()
        produced = _produce_clicks(settings, n, events_per_user)
        say(f"  produced in {time.monotonic() - t0:.1f}s")
        applied_s = wait_applied(worker, settings, produced, timeout_s)
        rss_mb = worker.rss_mb()
        say(f"  applied in {applied_s:.1f}s ({produced / max(applied_s, 1e-9):,.0f}/s); RSS {rss_mb:.0f} MB")
    finally:
        worker.stop()
    disk = _table_bytes(settings.data_dir)
    say(f"  users table on disk: {disk / 1e6:.1f} MB ({disk / n:,.0f} B/user)")
    restart_s = _restart(settings, env, n, timeout_s, say)
    if not keep:
        shutil.rmtree(work_dir / run, ignore_errors=True)
    return {"users": n, "rss_mb": round(rss_mb, 1),
            "bytes_per_user": round(max(rss_mb - base_mb, 0.0) * 2**20 / n, 1),
            "restart_s": round(restart_s, 2)}


def _worker(settings: Settings, env: dict[str, str], name: str) -> WorkerProcess:
    return WorkerProcess(settings, settings.data_dir, name=name, env=env, inherit=INHERITED_ENV)


def _produce_items(settings: Settings) -> None:
    from streams.sdk.producer import EventProducer
    from streams.tools.demo import DEMO_DIR

    lines = (DEMO_DIR / "items.jsonl").read_text().splitlines()[:ITEMS]
    with EventProducer(settings, check=False) as producer:
        for line in lines:
            item = orjson.loads(line)
            producer.send_raw(settings.topic("items"), item["item_id"].encode(), line.encode())


def user_id(i: int) -> str:
    return f"scale-user-{i}"


def _produce_clicks(settings: Settings, n: int, events_per_user: int) -> int:
    """n users x events_per_user clicks, keyed by user (murmur2 like the SDK), in big batches."""
    from confluent_kafka import Producer

    producer = Producer({**settings.connection().librdkafka(), "acks": "all", "linger.ms": 50,
                         "batch.size": 1_000_000, "compression.type": "lz4", "partitioner": "murmur2_random",
                         "queue.buffering.max.messages": 500_000, "enable.idempotence": True})
    topic = settings.topic("clicks")
    ts = int(time.time()) - 3600
    count = 0
    for e in range(events_per_user):
        for i in range(n):
            uid = user_id(i)
            value = orjson.dumps({"type": "click", "event_id": f"c{e}-{i}", "user_id": uid,
                                  "item_id": f"demo-{1 + (i * 7 + e) % ITEMS:04d}", "ts": ts + e})
            while True:
                try:
                    producer.produce(topic, value, uid.encode())
                    break
                except BufferError:
                    producer.poll(0.05)
            count += 1
            if count % 10_000 == 0:
                producer.poll(0)
    left = producer.flush(120)
    if left:
        raise RuntimeError(f"{left} clicks not delivered")
    return count


def metric(worker: WorkerProcess, name: str) -> float:
    from streams.tools.bench_pipeline import scrape

    try:
        return scrape(worker.port).get(name, 0.0)
    except OSError:
        return 0.0


def _wait_catalog(worker: WorkerProcess, timeout_s: float) -> None:
    """Until the worker encoded the catalog's items (its memory before any user)."""
    deadline = time.monotonic() + min(timeout_s, 300.0)
    while metric(worker, "xlrec_item_upserts_total") < ITEMS and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2.0)   # the group join and the first gauges


def wait_applied(worker: WorkerProcess, settings: Settings, produced: int, timeout_s: float) -> float:
    """Seconds until the worker applied `produced` clicks and committed past them all."""
    start = time.monotonic()
    deadline = start + timeout_s
    while metric(worker, "xlrec_profile_updates_total") < produced:
        if not worker.alive():
            raise RuntimeError(f"the worker exited; see {worker.log}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{metric(worker, 'xlrec_profile_updates_total'):.0f} of {produced} "
                               f"clicks applied in {timeout_s:.0f}s")
        time.sleep(0.5)
    applied = time.monotonic() - start
    while committed_behind(settings) > 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    return applied


def committed_behind(settings: Settings) -> int:
    """Clicks the worker's group has not committed yet."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**settings.connection().librdkafka(), "group.id": settings.group_id,
                         "enable.auto.commit": False})
    try:
        tps = [TopicPartition(settings.topic("clicks"), p) for p in range(settings.partitions)]
        committed = consumer.committed(tps, timeout=10)
        behind = 0
        for tp in committed:
            _, high = consumer.get_watermark_offsets(tp, timeout=10)
            behind += max(high - max(tp.offset, 0), 0)
        return behind
    finally:
        consumer.close()


def _table_bytes(data_dir: Path) -> int:
    return sum(f.stat().st_size for f in (data_dir / "faust").rglob("*") if f.is_file())


def _restart(settings: Settings, env: dict[str, str], n: int, timeout_s: float, say: Progress) -> float:
    """Start the worker again on its data dir; seconds until one request per partition is answered."""
    from confluent_kafka import Consumer, TopicPartition

    from streams.contracts.schemas import RecommendationRequest
    from streams.sdk.producer import EventProducer
    from streams.worker.users_table import guess_partition

    users: dict[int, str] = {}
    for i in range(n):
        users.setdefault(guess_partition(user_id(i), settings.partitions), user_id(i))
        if len(users) == settings.partitions:
            break
    topic = settings.topic("recommendations")
    consumer = Consumer({**settings.connection().librdkafka(), "group.id": f"{settings.group_id}-restart",
                         "enable.auto.commit": False})
    tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
    consumer.assign([TopicPartition(topic, p, consumer.get_watermark_offsets(tp, timeout=10)[1]) for p, tp in
                     enumerate(tps)])
    tag = uuid.uuid4().hex[:8]
    worker = _worker(settings, env, "restart")
    start = time.monotonic()
    worker.start()
    try:
        with EventProducer(settings) as producer:
            for uid in users.values():
                producer.send(RecommendationRequest(request_id=f"{tag}-{uid}", user_id=uid, k=10, ts=time.time()))
        waiting = {f"{tag}-{uid}" for uid in users.values()}
        deadline = start + timeout_s
        while waiting:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(waiting)} of {len(users)} requests unanswered {timeout_s:.0f}s after "
                                   f"the restart; see {worker.log}")
            if not worker.alive():
                raise RuntimeError(f"the restarted worker exited; see {worker.log}")
            for msg in consumer.consume(100, 0.2):
                value = msg.value()
                if not msg.error() and value is not None:
                    waiting.discard(orjson.loads(value).get("request_id"))
        restart_s = time.monotonic() - start
        say(f"  restart: every partition answered after {restart_s:.1f}s; RSS {worker.rss_mb():.0f} MB")
        return restart_s
    finally:
        consumer.close()
        worker.stop()
