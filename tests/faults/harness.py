"""What every fault test needs: `xlrec worker` subprocesses it can SIGKILL, a realistic review
stream (the Steam reviews when `../shared/data/steam` or `$XLREC_STEAM_DIR` has them, else a
generated multilingual one: `streams.tools.generated`), the users table read back from its
changelog topic, and the figures each test prints.

The users table is compared with a reference run on what a user's own events decide (counts,
order, languages, recent items, timestamps, the latest event ids): every event applied exactly
once shows there. Vectors also depend on what the worker has learnt about items from *other*
users' reviews, which moves with the interleaving of partitions, so they are compared by cosine.
Sizes are CI sizes by default; `XLREC_FAULT_EVENTS=20000 XLREC_FAULT_POISON=10000` gives the
issue's full sizes.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from ranking.profile import MAX_EVENT_IDS
from ranking.vectors import decode_vector
from streams.worker.app import changelog_name
from streams.sdk.producer import EventProducer
from streams.contracts.schemas import ItemEvent, Recommendation, ReviewEvent
from streams.contracts.settings import Settings
from streams.tools.generated import realistic_events
from streams.tools.worker_process import WorkerProcess, http_get
from streams.worker.user_record import UserRecord
from streams.worker.users_table import guess_partition

FAULT_EVENTS = int(os.environ.get("XLREC_FAULT_EVENTS", "1200"))
POISON_MESSAGES = int(os.environ.get("XLREC_FAULT_POISON", "1000"))
PARTITIONS = 6
# The review-text lane embeds ~100 short texts/s on these 2 cores (32 tokens each).
TEXTS_FOLDED_S = max(120.0, FAULT_EVENTS / 20)
# Fields of a profile that only the user's own events decide (ranking.profile.apply_event).
OWN_FIELDS = ("n", "n_click", "n_pos", "n_neg", "first_ts", "last_ts", "read", "written",
              "recent", "events")
# Small token budget: these tests are about delivery, not ranking quality, and 2 cores must
# encode every review of the replay several times over.
WORKER_ENV = {"XLREC_ENCODER_MAX_TOKENS": "32", "XLREC_ENCODER_THREADS": "1", "XLREC_DEVICE": "cpu",
              "XLREC_RANK_INTERVAL_S": "0.5", "XLREC_SNAPSHOT_INTERVAL_S": "5"}
# The users-table settings of the test run reach its workers (a worker's environment is
# otherwise cleared of XLREC_* variables), so `XLREC_USERS_STORE=memory pytest -m faults`
# runs the suite on the other store.
PASSED_THROUGH = ("XLREC_USERS_STORE", "XLREC_STANDBY_REPLICAS", "XLREC_USERS_CACHE_MB")
WORKER_LOGLEVEL = os.environ.get("XLREC_FAULT_LOGLEVEL", "warning")   # info: Faust's recovery steps


def fault_settings(bootstrap: str, **kwargs: Any) -> Settings:
    """A fresh deployment on the broker: its own topic prefix and consumer group."""
    tag = uuid.uuid4().hex[:8]
    return Settings(**{"bootstrap": bootstrap, "topic_prefix": f"f{tag}.", "group_id": f"fg{tag}",
                       "partitions": PARTITIONS, **kwargs})


class Worker(WorkerProcess):
    """A worker with the fault tests' settings (small token budget, frequent snapshots)."""

    def __init__(self, settings: Settings, data_dir: Path, name: str = "worker",
                 env: dict[str, str] | None = None, loglevel: str = WORKER_LOGLEVEL) -> None:
        passed = {k: os.environ[k] for k in PASSED_THROUGH if k in os.environ}
        super().__init__(settings, data_dir, name, {**WORKER_ENV, **passed, **(env or {})}, loglevel)


# ---- the review stream ---------------------------------------------------------------------
@dataclass(frozen=True)
class Stream:
    """The first `FAULT_EVENTS` reviews and the items they name, in replay order."""

    items: tuple[ItemEvent, ...]
    reviews: tuple[ReviewEvent, ...]
    source: str = ""

    def head(self, n: int) -> Stream:
        """The first n reviews and the items they name."""
        reviews = self.reviews[:n]
        named = {r.item_id for r in reviews}
        return Stream(tuple(i for i in self.items if i.item_id in named), reviews, self.source)

    def expected(self) -> dict[str, list[str]]:
        """user -> their event_ids in order."""
        out: dict[str, list[str]] = defaultdict(list)
        for review in self.reviews:
            out[review.user_id].append(review.event_id)
        return dict(out)


@lru_cache(maxsize=1)
def fault_stream(n: int = FAULT_EVENTS) -> Stream:
    """n reviews (with text, many languages) and their items. Reviews only, also when generated:
    the tests compare each user's events in order, which one topic keeps and two would not."""
    source, stream = realistic_events(n, click_share=0.0)
    events = list(stream)
    items = tuple(e for e in events if isinstance(e, ItemEvent))
    reviews = tuple(e for e in events if isinstance(e, ReviewEvent))
    assert len(reviews) == n, f"{source} has only {len(reviews)} readable reviews"
    return Stream(items, reviews, source)


def produce(settings: Settings, events: Any) -> int:
    """Send events with the SDK (acks=all, idempotent producer); returns how many."""
    count = 0
    with EventProducer(settings) as producer:
        for event in events:
            producer.send(event)
            count += 1
    return count


class MixedProducer:
    """Sends each user's events by turns with the SDK and with a librdkafka producer left at its
    defaults (a kcat-like client: consistent_random, crc32 of the key); counts where the latter's
    events landed."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sdk = EventProducer(settings)
        self.plain = Producer(settings.connection().librdkafka())
        self.turn: dict[str, int] = defaultdict(int)
        self.plain_sent = 0
        self.misplaced = 0
        self.errors: list[str] = []

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.errors.append(err.str())
            return
        key = msg.key()
        assert key is not None
        if msg.partition() != guess_partition(key, self.settings.partitions):
            self.misplaced += 1

    def send_plain(self, topic: str, key: str, value: bytes) -> None:
        """One message through the librdkafka producer, as a kcat-like app sends it."""
        self.plain.produce(topic, key=key.encode(), value=value, on_delivery=self._delivered)
        self.plain.poll(0)
        self.plain_sent += 1

    def send(self, review: ReviewEvent) -> None:
        turn = self.turn[review.user_id]
        self.turn[review.user_id] += 1
        if turn % 2 == 0:
            self.sdk.send(review)
        else:
            self.send_plain(self.settings.topic("reviews"), review.user_id, review.to_json())

    def flush(self) -> None:
        self.sdk.flush()
        assert self.plain.flush(30) == 0 and not self.errors, self.errors[:3]


# ---- offsets, topics, the users table ------------------------------------------------------
def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    probe = Consumer({**settings.connection().librdkafka(), "group.id": f"probe-{uuid.uuid4().hex[:6]}"})
    try:
        meta = probe.list_topics(topic, timeout=10).topics[topic]
        return {p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in meta.partitions}
    finally:
        probe.close()


def committed(settings: Settings, topic: str) -> dict[int, int]:
    """The group's committed offsets of a topic's partitions (those with a commit).

    Asked with a consumer of the group that never subscribes (it does not join the group), not
    with AdminClient.list_consumer_group_offsets: librdkafka 2.16's admin client crashes the test
    process (SIGSEGV in rd_kafka_cgrp_op from rd_kafka_handle_OffsetFetch, an admin client has no
    consumer group handle) when the OffsetFetch answer carries a retriable error, as a new group's
    coordinator on a fresh broker does ("coordinator load in progress")."""
    probe = Consumer({**settings.connection().librdkafka(), "group.id": settings.group_id,
                      "enable.auto.commit": False})
    try:
        partitions = probe.list_topics(topic, timeout=10).topics[topic].partitions
        found = probe.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return {tp.partition: tp.offset for tp in found if tp.offset >= 0}
    finally:
        probe.close()


def progress(settings: Settings, topic: str) -> tuple[int, int]:
    """(messages the group committed, messages in the topic)."""
    ends = end_offsets(settings, topic)
    done = committed(settings, topic)
    return sum(max(done.get(p, 0), 0) for p in ends), sum(ends.values())


def wait_consumed(settings: Settings, topics: list[str], timeout: float, workers: list[Worker] = ()) -> float:
    """Until the group committed the end of every partition of `topics`; returns seconds waited."""
    start = time.time()
    ends = {t: end_offsets(settings, t) for t in topics}
    while time.time() - start < timeout:
        for w in workers:
            assert w.alive(), f"worker exited:\n{w.output()[-3000:]}"
        try:
            if all(committed(settings, t).get(p, 0) >= end for t in topics for p, end in ends[t].items()):
                return time.time() - start
        except Exception:  # the coordinator may be moving (broker restart): ask again
            pass
        time.sleep(0.5)
    raise AssertionError(f"{topics} not consumed within {timeout:.0f}s: "
                         f"{[progress(settings, t) for t in topics]}")


def read_topic(settings: Settings, topic: str, timeout: float = 30.0) -> list[Any]:
    """Every message of a topic, from the beginning to the end offsets seen now."""
    ends = end_offsets(settings, topic)
    if not any(ends.values()):
        return []
    consumer = Consumer({**settings.connection().librdkafka(), "group.id": f"read-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "fetch.message.max.bytes": 20 * 1024 * 1024})
    consumer.assign([TopicPartition(topic, p, 0) for p, end in ends.items() if end > 0])
    out: list[Any] = []
    position = {p: 0 for p in ends}
    deadline = time.time() + timeout
    try:
        while any(position[p] < end for p, end in ends.items()) and time.time() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            position[msg.partition()] = msg.offset() + 1
            if msg.offset() < ends[msg.partition()]:
                out.append(msg)
    finally:
        consumer.close()
    assert all(position[p] >= end for p, end in ends.items()), f"{topic}: read {position} of {ends}"
    return out


def read_table(settings: Settings) -> dict[str, UserRecord]:
    """The users table as its changelog says: the last value of every key."""
    table: dict[str, UserRecord] = {}
    for msg in read_topic(settings, changelog_name(settings, "users")):
        if msg.value() is None:
            table.pop(msg.key().decode(), None)
        else:
            table[msg.key().decode()] = UserRecord.from_bytes(msg.value())
    return table


def wait_texts_folded(settings: Settings, workers: list[Worker],
                      timeout: float = TEXTS_FOLDED_S) -> dict[str, UserRecord]:
    """Until no user in the users table waits for a review text (each one embedded and folded
    in, or dead-lettered); returns that table."""
    deadline = time.time() + timeout
    while True:
        for w in workers:
            assert w.alive(), f"worker exited:\n{w.output()[-3000:]}"
        table = read_table(settings)
        waiting = [u for u, record in table.items() if record.waiting_texts]
        if not waiting:
            return table
        if time.time() > deadline:
            raise AssertionError(f"{len(waiting)} users still wait for review texts after {timeout:.0f}s, "
                                 f"e.g. {[(u, table[u].waiting_texts) for u in waiting[:3]]}")
        time.sleep(2.0)


def latest_recommendations(settings: Settings) -> dict[str, Recommendation]:
    """The last recommendation sent for each user (per-partition order = send order)."""
    latest: dict[str, Recommendation] = {}
    for msg in read_topic(settings, settings.topic("recommendations")):
        rec = Recommendation.model_validate_json(msg.value())
        if rec.request_id is None:
            latest[rec.user_id] = rec
    return latest


# ---- figures ---------------------------------------------------------------------------------
@dataclass
class Figures:
    """What every fault test prints and checks."""

    test: str
    produced: int = 0
    applied: int = 0
    lost: int = 0
    applied_twice: int = 0
    dead_lettered: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def print(self) -> None:
        extra = "".join(f" {k}={v}" for k, v in self.extra.items())
        print(f"\nFIGURES {self.test}: produced={self.produced} applied={self.applied} lost={self.lost} "
              f"applied_twice={self.applied_twice} dead_lettered={self.dead_lettered}{extra}", flush=True)


def count_applied(table: dict[str, UserRecord], expected: dict[str, list[str]], figures: Figures) -> list[str]:
    """Fill applied/lost/twice from each profile's event count and latest ids; return problems."""
    problems = []
    for user, ids in expected.items():
        profile = table[user].profile if user in table else {}
        n = int(profile.get("n", 0))
        figures.applied += n
        figures.lost += max(0, len(ids) - n)
        figures.applied_twice += max(0, n - len(ids))
        if profile.get("events") != ids[-MAX_EVENT_IDS:]:
            problems.append(f"{user}: latest event ids {profile.get('events')} != {ids[-MAX_EVENT_IDS:]}")
    unexpected = set(table) - set(expected)
    problems += [f"unexpected user {u} in the table" for u in sorted(unexpected)[:5]]
    return problems


def compare_tables(table: dict[str, UserRecord], reference: dict[str, UserRecord]
                   ) -> tuple[list[str], dict[str, Any], list[str]]:
    """Differences in what the users' own events decide, and vector figures: the lowest
    interest and own-text cosines, and how many users' vectors are on one side only. Vector
    values are reported, not compared: they depend on which items and review texts the worker
    had folded in when each event was applied (texts are embedded in a lane of their own, in
    an order that moves with timing). Whether a user has an own-text vector does not: the users
    with one on one side only come third, described."""
    problems = []
    if set(table) != set(reference):
        problems.append(f"users differ: {len(set(table) ^ set(reference))} only on one side")
    cosines, own_cosines = [], []
    interest_one_side = 0
    own_one_side: list[str] = []
    for user in set(table) & set(reference):
        mine, ref = table[user].profile, reference[user].profile
        for name in OWN_FIELDS:
            if mine.get(name) != ref.get(name):
                problems.append(f"{user}.{name}: {mine.get(name)!r} != reference {ref.get(name)!r}")
        if mine.get("interest") is not None and ref.get("interest") is not None:
            cosines.append(float(decode_vector(mine["interest"]) @ decode_vector(ref["interest"])))
        if mine.get("own") is not None and ref.get("own") is not None:
            own_cosines.append(float(decode_vector(mine["own"]) @ decode_vector(ref["own"])))
        interest_one_side += (mine.get("interest") is None) != (ref.get("interest") is None)
        if (mine.get("own") is None) != (ref.get("own") is None):
            own_one_side.append(f"{user}: here own_w={mine.get('own_w')} events={mine.get('events')}, "
                                f"reference own_w={ref.get('own_w')} events={ref.get('events')}")
    return problems, {"min_interest_cosine": round(min(cosines, default=1.0), 3),
                      "interest_vector_on_one_side": interest_one_side,
                      "min_own_text_cosine": round(min(own_cosines, default=1.0), 3),
                      "own_text_vector_on_one_side": len(own_one_side)}, own_one_side


def check_against_reference(figures: Figures, table: dict[str, UserRecord], stream: Stream,
                            reference: dict[str, UserRecord], stale: list[str] | None = None) -> None:
    """Count, print and assert the figures of a run that must equal the uninterrupted reference:
    nothing lost or applied twice, the same decisions per user, and (when given) no user whose
    latest recommendation predates their last event."""
    problems = count_applied(table, stream.expected(), figures)
    diff, vectors, own_one_side = compare_tables(table, reference)
    figures.extra.update(vectors)
    if stale is not None:
        figures.extra["stale_latest_recommendations"] = len(stale)
    figures.print()
    assert figures.lost == 0 and figures.applied_twice == 0 and not problems, problems[:5]
    assert not diff, diff[:5]
    # Every review text was folded into its author's profile on both sides (none lost).
    assert not own_one_side, own_one_side[:5]
    assert not stale, f"latest recommendation older than the user's last event, e.g. {(stale or [])[:3]}"


def dead_letters(settings: Settings) -> list[Any]:
    return read_topic(settings, settings.topic("dlq"))


def catalog_lag(worker: Worker) -> tuple[float, int | None]:
    """(when the worker last sampled lag, its catalog feed's total lag or None if not reported)."""
    _, body = http_get(worker.port, "/metrics")
    updated, lag = 0.0, None
    for line in body.decode().splitlines():
        if line.startswith("xlrec_consumer_lag_last_update_timestamp_seconds "):
            updated = float(line.split()[-1])
        elif line.startswith("xlrec_consumer_lag{") and '.catalog"' in line:
            lag = (lag or 0) + int(float(line.split()[-1]))
    return updated, lag


def counter(worker: Worker, name: str) -> float:
    """A counter of the worker's /metrics (0 when absent)."""
    _, body = http_get(worker.port, "/metrics")
    for line in body.decode().splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[-1])
    return 0.0


def wait_catalog(workers: list[Worker], since: float, timeout: float = 180.0) -> None:
    """Until every worker's catalog feed reported no lag in a sample taken after `since`."""
    deadline = time.time() + timeout
    pending = list(workers)
    while pending and time.time() < deadline:
        for w in list(pending):
            assert w.alive(), f"worker exited:\n{w.output()[-3000:]}"
            updated, lag = catalog_lag(w)
            if updated > since and lag == 0:
                pending.remove(w)
        time.sleep(0.5)
    assert not pending, f"catalog feeds not caught up within {timeout:.0f}s"


def feed_items(settings: Settings, stream: Stream, workers: list[Worker], timeout: float = 180.0) -> None:
    """Produce every item and wait until the group validated them and every worker's catalog
    holds them, so that reviews find their item in every run (vectors depend less on timing)."""
    produce(settings, stream.items)
    wait_consumed(settings, [settings.topic("items")], timeout, workers)
    time.sleep(1.0)  # the feeds fetch every 50 ms: by now their high watermarks include the items
    wait_catalog(workers, time.time(), timeout)


def stale_recommendations(settings: Settings, last_event: dict[str, str], timeout: float = 60.0) -> list[str]:
    """Users whose latest recommendation does not reflect their last event, once every one
    does or `timeout` passed (the tests print their number, then assert there are none)."""
    deadline = time.time() + timeout
    while True:
        latest = latest_recommendations(settings)
        stale = [u for u, e in last_event.items() if u not in latest or latest[u].trigger_event_id != e]
        if not stale or time.time() > deadline:
            return stale
        time.sleep(1.0)


def wait_recommended(settings: Settings, last_event: dict[str, str], timeout: float = 60.0) -> None:
    """Until every user's latest recommendation reflects their last event."""
    stale = stale_recommendations(settings, last_event, timeout)
    assert not stale, (f"{len(stale)} of {len(last_event)} users' latest recommendation does not "
                       f"reflect their last event, e.g. {stale[:3]}")
