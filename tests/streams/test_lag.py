"""`xlrec lag` and streams.ops.lag against a real broker: the numbers equal what Kafka's admin API
reports, --max-lag sets the exit status, and errors are one line and fast."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import NewTopic, OffsetSpec

from streams.ops.lag import COORDINATOR_STARTING, LagMonitor, LagReport, PartitionLag, is_xlrec_group
from streams.contracts.settings import Settings
from streams.contracts.topics import admin_client

XLREC = str(Path(sys.executable).with_name("xlrec"))
PARTITIONS = 3
PER_PARTITION = 20
CONSUMED = {0: 10, 1: 5, 2: 10}


@dataclass
class Backlog:
    """A topic with PER_PARTITION messages per partition and a group that read CONSUMED of them."""

    settings: Settings
    topic: str
    group: str


def make_topic(settings: Settings, topic: str, partitions: int = PARTITIONS) -> str:
    admin = admin_client(settings)  # keep it alive until the future resolves
    for future in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]).values():
        future.result()
    return topic


def produce(settings: Settings, topic: str, per_partition: int, partitions: int = PARTITIONS) -> None:
    producer = Producer(settings.connection().librdkafka())
    for partition in range(partitions):
        for n in range(per_partition):
            producer.produce(topic, key=f"user-{n}".encode(), value=b"{}", partition=partition)
    assert producer.flush(10) == 0


def consume(settings: Settings, topic: str, group: str, counts: dict[int, int]) -> None:
    """Read counts[p] more messages of partition p as `group`, committing each one."""
    consumer = Consumer({**settings.connection().librdkafka(), "group.id": group, "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
                     for tp in committed(consumer, [TopicPartition(topic, p) for p in counts])])
    left = dict(counts)
    try:
        deadline = time.monotonic() + 30
        while any(left.values()):
            assert time.monotonic() < deadline, f"still to read: {left}"
            msg = consumer.poll(0.5)
            if msg is None or msg.error() or not left[msg.partition()]:
                continue
            left[msg.partition()] -= 1
            consumer.commit(message=msg, asynchronous=False)
            if not left[msg.partition()]:
                consumer.pause([TopicPartition(topic, msg.partition())])
    finally:
        consumer.close()


def committed(consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
    """The group's committed offsets, waiting out a fresh broker's coordinator start-up.

    (Assigning OFFSET_STORED instead stalls: librdkafka does not retry the offset fetch
    after the NOT_COORDINATOR that the first group on a new broker gets.)
    """
    deadline = time.monotonic() + 30
    while True:
        try:
            return consumer.committed(partitions, timeout=5)
        except KafkaException as exc:
            if exc.args[0].code() not in COORDINATOR_STARTING or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture
def backlog(kafka_settings: Settings) -> Iterator[Backlog]:
    topic = make_topic(kafka_settings, kafka_settings.topic("clicks"))
    group = f"{kafka_settings.topic_prefix}lag-test"
    produce(kafka_settings, topic, PER_PARTITION)
    consume(kafka_settings, topic, group, CONSUMED)
    yield Backlog(kafka_settings, topic, group)


def run_lag(settings: Settings, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XLREC_BOOTSTRAP": settings.bootstrap, "XLREC_TOPIC_PREFIX": settings.topic_prefix,
           "XLREC_GROUP_ID": settings.group_id, "COLUMNS": "160"}
    return subprocess.run([XLREC, "lag", *args], env=env, capture_output=True, text=True, timeout=timeout)


def kafka_truth(settings: Settings, group: str, topic: str) -> dict[tuple[str, int], tuple[int, int]]:
    """(topic, partition) -> (committed, end offset) straight from Kafka: the group's commits as
    its own consumer reads them (not through the monitor), log ends from AdminClient."""
    admin = admin_client(settings)
    probe = Consumer({**settings.connection().librdkafka(), "group.id": group})
    try:
        found = probe.committed([TopicPartition(topic, p) for p in range(settings.partitions)], timeout=10)
    finally:
        probe.close()
    committed = {(tp.topic, tp.partition): tp.offset for tp in found if tp.offset >= 0}
    ends = admin.list_offsets({TopicPartition(t, p): OffsetSpec.latest() for t, p in committed})
    return {(tp.topic, tp.partition): (committed[(tp.topic, tp.partition)], future.result().offset)
            for tp, future in ends.items()}


@pytest.mark.integration
def test_json_equals_kafka_admin_api(backlog: Backlog) -> None:
    result = run_lag(backlog.settings, "--group", backlog.group, "--json", "--interval", "0.3")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    truth = kafka_truth(backlog.settings, backlog.group, backlog.topic)
    print("xlrec lag --json:", result.stdout.strip())

    assert {(r["topic"], r["partition"]) for r in rows} == set(truth)
    for row in rows:
        assert set(row) == {"group", "topic", "partition", "committed", "end_offset", "lag", "rate_per_s", "eta_s"}
        committed, end = truth[(row["topic"], row["partition"])]
        assert (row["group"], row["committed"], row["end_offset"], row["lag"]) == \
            (backlog.group, committed, end, end - committed)
        assert row["rate_per_s"] == 0.0  # nobody consumes between the two samples
        assert row["eta_s"] == (0.0 if row["lag"] == 0 else None)
    assert {r["partition"]: r["lag"] for r in rows} == {p: PER_PARTITION - n for p, n in CONSUMED.items()}


@pytest.mark.integration
def test_default_selection_finds_xlrec_groups(backlog: Backlog) -> None:
    settings = backlog.settings.model_copy(update={"group_id": f"worker-{uuid.uuid4().hex[:8]}"})
    other_topic = f"other-{uuid.uuid4().hex[:8]}"
    make_topic(settings, other_topic, partitions=1)
    produce(settings, other_topic, 4, partitions=1)
    consume(settings, other_topic, f"{settings.group_id}-replica", {0: 2})  # by group id
    consume(settings, backlog.topic, f"xlrec-tail-{uuid.uuid4().hex[:8]}", {0: 1})  # throw-away: left out
    consume(settings, other_topic, f"stranger-{uuid.uuid4().hex[:8]}", {0: 1})  # not xlrec's at all

    result = run_lag(settings, "--json", "--interval", "0")
    assert result.returncode == 0, result.stderr
    groups = {row["group"] for row in json.loads(result.stdout)}
    assert {backlog.group, f"{settings.group_id}-replica"} <= groups
    assert not any(g.startswith("xlrec-tail-") or g.startswith("stranger-") for g in groups)


@pytest.mark.integration
def test_max_lag_exit_status(backlog: Backlog) -> None:
    worst = max(r["lag"] for r in json.loads(run_lag(backlog.settings, "-g", backlog.group, "--json",
                                                     "--interval", "0").stdout))
    over = run_lag(backlog.settings, "-g", backlog.group, "--interval", "0", "--max-lag", str(worst - 1))
    assert over.returncode == 2, over.stderr
    assert backlog.group in over.stdout  # the table is still printed
    assert run_lag(backlog.settings, "-g", backlog.group, "--interval", "0",
                   "--max-lag", str(worst)).returncode == 0


@pytest.mark.integration
def test_rate_and_eta_follow_the_consumer(backlog: Backlog) -> None:
    monitor = LagMonitor(backlog.settings, backlog.group)
    monitor.sample()  # the start of the rate window
    consume(backlog.settings, backlog.topic, backlog.group, {0: 10, 1: 5})
    after = monitor.sample()
    lags = {r.partition: r.lag for r in after.rows}
    assert lags == {0: 0, 1: 10, 2: 10}
    rates = {r.partition: r.rate_per_s for r in after.rows}
    assert rates[0] > 0 and rates[1] > 0 and rates[2] == 0.0
    etas = {r.partition: r.eta_s for r in after.rows}
    # Nothing is produced meanwhile, so the lag shrinks exactly as fast as the group reads.
    assert etas[0] == 0.0 and etas[2] is None
    assert etas[1] == pytest.approx(lags[1] / rates[1], rel=0.01, abs=2e-3)


@pytest.mark.integration
def test_unknown_group_is_one_line(backlog: Backlog) -> None:
    result = run_lag(backlog.settings, "--group", "no-such-group", "--json")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().count("\n") == 0
    assert "unknown consumer group 'no-such-group'" in result.stderr
    typo = run_lag(backlog.settings, "--group", backlog.group + "x")
    assert typo.returncode == 1 and f"did you mean '{backlog.group}'" in typo.stderr


def test_unreachable_broker_is_one_line_and_fast() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    result = run_lag(Settings(bootstrap=f"127.0.0.1:{port}"), "--json", timeout=20)
    assert time.monotonic() - started < 10
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert f"no Kafka broker answers at 127.0.0.1:{port}" in result.stderr


def test_totals_per_group_and_topic() -> None:
    def row(topic: str, partition: int, lag: int, rate: float | None, eta: float | None) -> PartitionLag:
        return PartitionLag("g", topic, partition, 100, 100 + lag, lag, rate, eta)

    report = LagReport(at=0.0, rows=[row("a", 0, 10, 5.0, 2.0), row("a", 1, 0, 1.0, 0.0),
                                     row("b", 0, 30, 3.0, 10.0)])
    totals = {(t.group, t.topic): (t.partitions, t.lag, t.rate_per_s, t.eta_s) for t in report.totals()}
    assert totals == {("g", "a"): (2, 10, 6.0, 2.0), ("g", "b"): (1, 30, 3.0, 10.0),
                      ("g", None): (3, 40, 9.0, 10.0)}
    assert report.max_lag == 30
    stuck = LagReport(at=0.0, rows=[row("a", 0, 10, 0.0, None), row("b", 0, 5, 5.0, 1.0)])
    assert [t.eta_s for t in stuck.totals() if t.topic is None] == [None]  # one partition never catches up


def test_group_selection_rule() -> None:
    settings = Settings(group_id="xlrec", topic_prefix="xlrec.")
    assert is_xlrec_group("xlrec", [], settings)
    assert is_xlrec_group("xlrec-replica", ["anything"], settings)
    assert is_xlrec_group("my-app", ["xlrec.recommendations"], settings)
    assert not is_xlrec_group("my-app", ["orders"], settings)
    assert not is_xlrec_group("xlrec-tail-1234abcd", ["xlrec.recommendations"], settings)


class FakeMonitor:
    """Stands in for LagMonitor in CLI tests: always the same report."""

    def __init__(self, report: LagReport):
        self.report = report

    def sample(self) -> LagReport:
        return self.report


@pytest.mark.parametrize(("report", "reason"), [
    (LagReport(at=0.0, rows=[], uncommitted=["xlrec"]), "group 'xlrec' has committed no offsets yet"),
    (LagReport(at=0.0, rows=[]), "no xlrec consumer group has committed offsets yet"),
])
def test_max_lag_is_not_met_by_a_group_without_commits(report: LagReport, reason: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from streams.cli import app

    monkeypatch.setattr("streams.ops.lag.open_monitor", lambda *a, **k: FakeMonitor(report))
    checked = CliRunner().invoke(app, ["lag", "--interval", "0", "--max-lag", "100"])
    assert checked.exit_code == 2, checked.output
    assert checked.stderr.strip().startswith(f"--max-lag 100 not met: {reason}")
    assert checked.stderr.strip().count("\n") == 0
    shown = CliRunner().invoke(app, ["lag", "--interval", "0"], env={"COLUMNS": "160"})
    assert shown.exit_code == 0 and shown.stderr == ""  # without --max-lag it is only a report
    if report.uncommitted:
        assert "nothing committed yet" in shown.stdout


@pytest.mark.integration
def test_max_lag_with_a_group_that_committed_nothing(kafka_settings: Settings) -> None:
    topic = make_topic(kafka_settings, kafka_settings.topic("clicks"), partitions=1)
    produce(kafka_settings, topic, 5, partitions=1)
    group = f"{kafka_settings.topic_prefix}never-commits"
    consumer = Consumer({**kafka_settings.connection().librdkafka(), "group.id": group,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + 30
        while not consumer.assignment():  # a member of the group, which has committed nothing
            assert time.monotonic() < deadline, "the consumer never got its partition"
            consumer.poll(0.2)
        assert LagMonitor(kafka_settings, group).sample().uncommitted == [group]
        result = run_lag(kafka_settings, "--group", group, "--interval", "0", "--max-lag", "1000")
        print("xlrec lag --max-lag 1000:", result.returncode, result.stderr.strip())
        assert result.returncode == 2
        assert f"group '{group}' has committed no offsets yet" in result.stderr
        assert run_lag(kafka_settings, "--group", group, "--interval", "0").returncode == 0
    finally:
        consumer.close()
