"""The users table on disk (RocksDB): a worker restarted with its local state kept does not
replay the whole changelog. Shown by deleting every record of the changelog topic written
before the restart: the restarted worker still knows each user's earlier events (it reads
them from disk), where a worker on the memory store starts every user from nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from streams.contracts.settings import Settings
from streams.contracts.topics import admin_client, create_topics
from streams.sdk.producer import EventProducer
from streams.tools.scale_users import wait_applied
from streams.tools.worker_process import WorkerProcess
from streams.worker.app import changelog_name
from streams.worker.user_record import UserRecord

pytestmark = pytest.mark.integration

USERS = 40
EVENTS = 3          # per user before the restart


def click(user: str, n: int) -> bytes:
    return (f'{{"type":"click","event_id":"{user}-e{n}","user_id":"{user}","item_id":"i{n % 5}",'
            f'"ts":{int(time.time()) - 60 + n}}}').encode()


def produce_clicks(settings: Settings, users: list[str], rounds: range) -> int:
    with EventProducer(settings, check=False) as producer:
        for n in rounds:
            for user in users:
                producer.send_raw(settings.topic("clicks"), user, click(user, n))
    return len(users) * len(rounds)


def changelog_offsets(settings: Settings, topic: str) -> list[TopicPartition]:
    consumer = Consumer({**settings.connection().librdkafka(), "group.id": "offsets"})
    try:
        return [TopicPartition(topic, p, consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1])
                for p in range(settings.partitions)]
    finally:
        consumer.close()


def read_changelog(settings: Settings, topic: str) -> dict[str, UserRecord]:
    """The latest record per user in what the changelog topic still holds."""
    ends = changelog_offsets(settings, topic)
    consumer = Consumer({**settings.connection().librdkafka(), "group.id": "read", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, p, -2) for p in range(settings.partitions)])   # from the start
    table: dict[str, UserRecord] = {}
    left = {tp.partition: tp.offset for tp in ends}
    deadline = time.time() + 30
    try:
        while any(consumer.position([TopicPartition(topic, p)])[0].offset < end for p, end in left.items()
                  if end > 0) and time.time() < deadline:
            for msg in consumer.consume(500, 0.5):
                if not msg.error() and msg.value() is not None:
                    table[msg.key().decode()] = UserRecord.from_bytes(msg.value())
    finally:
        consumer.close()
    return table


def run_and_restart(kafka_settings: Settings, tmp_path: Path, store: str) -> tuple[dict[str, UserRecord], str]:
    """EVENTS clicks per user, a clean stop, every changelog record of before deleted, a restart
    on the same data dir, one more click per user: the table the changelog then holds."""
    settings = kafka_settings.model_copy(update={"partitions": 4, "group_id": f"g{kafka_settings.topic_prefix}"})
    create_topics(settings)
    env = {"XLREC_USERS_STORE": store, "XLREC_RANKING_ENABLED": "false", "XLREC_DEVICE": "cpu"}
    users = [f"user-{i}" for i in range(USERS)]
    changelog = changelog_name(settings, "users")
    worker = WorkerProcess(settings, tmp_path / "data", name=f"worker-{store}", env=env).start()
    try:
        worker.wait_ready()
        wait_applied(worker, settings, produce_clicks(settings, users, range(EVENTS)), 120)
    finally:
        worker.stop()
    before = read_changelog(settings, changelog)
    assert {u: r.profile["n"] for u, r in before.items()} == dict.fromkeys(users, EVENTS)
    # Nothing written before the restart is left on the changelog topic (records of a topic
    # that is only compacted cannot be deleted: it is compacted and deleted meanwhile).
    admin = admin_client(settings)
    policy = ConfigEntry("cleanup.policy", "compact,delete", incremental_operation=AlterConfigOpType.SET)
    for future in admin.incremental_alter_configs([ConfigResource(ResourceType.TOPIC, changelog,
                                                                  incremental_configs=[policy])]).values():
        future.result(timeout=30)
    ends = [tp for tp in changelog_offsets(settings, changelog) if tp.offset > 0]
    for future in admin.delete_records(ends, request_timeout=30).values():
        future.result(timeout=60)
    assert read_changelog(settings, changelog) == {}
    worker = WorkerProcess(settings, tmp_path / "data", name=f"worker-{store}", env=env).start()
    try:
        worker.wait_ready()
        wait_applied(worker, settings, produce_clicks(settings, users, range(EVENTS, EVENTS + 1)), 120)
    finally:
        worker.stop()
    return read_changelog(settings, changelog), worker.output()


def test_a_restart_with_rocksdb_state_kept_reads_the_table_from_disk(kafka_settings: Settings,
                                                                     tmp_path: Path) -> None:
    table, log = run_and_restart(kafka_settings, tmp_path, "rocksdb")
    assert len(table) == USERS, log[-3000:]
    for user, record in table.items():
        assert record.profile["n"] == EVENTS + 1, (user, record.profile["n"])
        assert record.profile["events"][-EVENTS - 1:] == [f"{user}-e{n}" for n in range(EVENTS + 1)]
    assert list((tmp_path / "data" / "faust").rglob("users-*.db")), "no RocksDB partition on disk"


def test_the_memory_store_starts_over_without_its_changelog(kafka_settings: Settings, tmp_path: Path) -> None:
    """The control: the same steps on the memory store lose what the changelog no longer has, so
    the test above would fail if the restarted worker recovered from the changelog alone."""
    table, log = run_and_restart(kafka_settings, tmp_path, "memory")
    assert len(table) == USERS, log[-3000:]
    assert {record.profile["n"] for record in table.values()} == {1}
