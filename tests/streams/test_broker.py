"""The local Kafka broker (streams/ops/broker.py) and `xlrec kafka`: start, status, traffic, SASL,
stop and restart against a real JVM; config and error paths without one."""

from __future__ import annotations

import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streams.ops import broker
from streams.ops.kafka_cli import app
from streams.contracts.settings import Settings

SASL_USERS = {"alice": "alice-secret"}


def _jvms_of(data_dir: Path) -> list[int]:
    """Pids of live (non-zombie) processes whose command line names this data dir's config."""
    needle = str(data_dir / "server.properties").encode()
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and needle in (proc / "cmdline").read_bytes() \
                    and (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


# --- without a broker -------------------------------------------------------------------------


def test_server_properties_is_one_local_node(tmp_path: Path) -> None:
    props = broker.server_properties(tmp_path, 19092, 19093)
    lines = set(props.splitlines())
    assert {"process.roles=broker,controller", "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1", "transaction.state.log.min.isr=1",
            "group.initial.rebalance.delay.ms=0", "auto.create.topics.enable=true",
            "controller.quorum.voters=1@127.0.0.1:19093",
            "listeners=PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093",
            "advertised.listeners=PLAINTEXT://127.0.0.1:19092"} <= lines
    assert "sasl" not in props
    assert "auto.create.topics.enable=false" in broker.server_properties(
        tmp_path, 1, 2, auto_create_topics=False)


def test_server_properties_with_sasl_users(tmp_path: Path) -> None:
    props = broker.server_properties(tmp_path, 1, 2, 3, {"alice": "a", "bob": "b c"})
    assert "SASL_PLAINTEXT://127.0.0.1:3" in props
    assert ('listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security'
            '.plain.PlainLoginModule required user_alice="a" user_bob="b c";') in props.splitlines()
    with pytest.raises(broker.BrokerError, match="SASL user"):
        broker.server_properties(tmp_path, 1, 2, 3, {"eve": 'quo"te'})


def test_cluster_id_is_a_kafka_uuid() -> None:
    ids = {broker.new_cluster_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(len(i) == 22 and not i.startswith("-") and "=" not in i for i in ids)


def test_missing_java_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(broker.BrokerError, match="apt-get install openjdk-17-jre-headless maven"):
        broker.install(cache_dir=tmp_path)


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(broker.BrokerError, match=f"port {port} on 127.0.0.1 is already in use"):
            broker.start(port, tmp_path)
        result = CliRunner().invoke(app, ["start", "--port", str(port), "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "already in use" in result.output and "Traceback" not in result.output
    assert _jvms_of(tmp_path) == []


def test_stop_and_status_without_broker(tmp_path: Path) -> None:
    assert broker.status(tmp_path) is None
    assert broker.stop(tmp_path) is False
    assert CliRunner().invoke(app, ["status", "--data-dir", str(tmp_path)]).exit_code == 1


def test_stale_pid_file_is_not_running(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "broker.json").write_text(
        '{"port": 1, "controller_port": 2, "sasl_port": null, "version": "4"}')
    (tmp_path / "broker.pid").write_text(f"{dead.pid}\n")
    info = broker.status(tmp_path)
    assert info is not None and not info.running and info.pid is None
    assert broker.stop(tmp_path) is False
    assert not (tmp_path / "broker.pid").exists()


# --- with a real broker -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[broker.BrokerInfo]:
    """One broker with a SASL listener for this module; stopped even when tests fail."""
    data_dir = tmp_path_factory.mktemp("broker")
    try:
        yield broker.start(port=0, data_dir=data_dir, sasl_users=SASL_USERS)
    finally:
        broker.stop(data_dir)
    assert _jvms_of(data_dir) == []


@pytest.mark.integration
def test_status_reflects_running_broker(running: broker.BrokerInfo) -> None:
    info = broker.status(running.data_dir)
    assert info == running
    assert info.running and info.pid and _jvms_of(running.data_dir) == [info.pid]
    assert "Kafka Server started" in info.log_path.read_text()
    result = CliRunner().invoke(app, ["status", "--data-dir", str(running.data_dir)])
    assert result.exit_code == 0 and running.bootstrap in result.output


def _round_trip(conf: dict[str, object], topic: str) -> bytes | None:
    """Create topic, produce one record, read it back with a fresh consumer group."""
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(conf)  # keep a reference: a collected client cancels its futures
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=20)
    producer = Producer(conf)
    producer.produce(topic, key=b"u1", value=b'{"hello": "kafka"}')
    assert producer.flush(20) == 0
    consumer = Consumer({**conf, "group.id": f"g{uuid.uuid4().hex}", "auto.offset.reset": "earliest"})
    try:
        consumer.subscribe([topic])
        for _ in range(30):
            msg = consumer.poll(1.0)
            if msg is not None and not msg.error():
                return msg.value()
        return None
    finally:
        consumer.close()


@pytest.mark.integration
def test_produce_consume_round_trip(running: broker.BrokerInfo) -> None:
    settings = Settings(bootstrap=running.bootstrap)
    assert _round_trip(settings.connection().librdkafka(), "roundtrip") == b'{"hello": "kafka"}'


@pytest.mark.integration
def test_sasl_plain_listener(running: broker.BrokerInfo) -> None:
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    assert running.sasl_bootstrap
    good = Settings(bootstrap=running.sasl_bootstrap, security_protocol="SASL_PLAINTEXT",
                    sasl_mechanism="PLAIN", sasl_username="alice", sasl_password="alice-secret")
    assert _round_trip(good.connection().librdkafka(), "sasl-roundtrip") == b'{"hello": "kafka"}'

    errors: list[KafkaError] = []
    bad = {**good.connection().librdkafka(), "sasl.password": "wrong"}
    admin = AdminClient({**bad, "error_cb": errors.append, "log_level": 0})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=2)
    admin.poll(1)  # error_cb is served by poll
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors)


@pytest.mark.integration
def test_start_twice_keeps_the_running_broker(running: broker.BrokerInfo, tmp_path: Path) -> None:
    again = broker.start(port=running.port, data_dir=running.data_dir, sasl_users=SASL_USERS)
    assert again.pid == running.pid and _jvms_of(running.data_dir) == [running.pid]
    with pytest.raises(broker.BrokerError, match="already runs"):
        broker.start(port=broker.free_port(), data_dir=running.data_dir)
    with pytest.raises(broker.BrokerError, match=f"port {running.port} .* already in use"):
        broker.start(port=running.port, data_dir=tmp_path)


@pytest.mark.integration
def test_stop_leaves_no_jvm_and_restart_keeps_data(running: broker.BrokerInfo) -> None:
    """Last in this module: it stops the module's broker and starts it again."""
    from confluent_kafka.admin import AdminClient

    assert broker.stop(running.data_dir) is True
    assert _jvms_of(running.data_dir) == []
    assert not (running.data_dir / "broker.pid").exists()
    assert not broker.status(running.data_dir).running
    assert broker.stop(running.data_dir) is False

    cluster = (running.data_dir / "kraft" / "meta.properties").read_text()
    again = broker.start(port=running.port, data_dir=running.data_dir, sasl_users=SASL_USERS)
    assert (running.data_dir / "kraft" / "meta.properties").read_text() == cluster
    assert "roundtrip" in AdminClient({"bootstrap.servers": again.bootstrap}).list_topics(timeout=10).topics
