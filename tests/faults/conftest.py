"""Fixtures of the fault suite: the reference run that the crash, rebalance, broker-restart and
changelog tests compare their users table with, and a private broker (with a SASL listener)
that the broker-restart test may stop and that the SASL test authenticates against."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streams.ops import broker
from streams.ops.broker import BrokerInfo
from streams.contracts.settings import Settings
from streams.contracts.topics import create_topics
from streams.worker.user_record import UserRecord
from tests.faults.harness import (Figures, Worker, count_applied, fault_settings, feed_items, produce,
                                  fault_stream, wait_consumed, wait_texts_folded)


@dataclass
class Reference:
    """An uninterrupted run of one worker over the review stream (`fault_stream`)."""

    settings: Settings
    table: dict[str, UserRecord]
    seconds: float
    data_dir: Path


@pytest.fixture(scope="session")
def reference(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    stream = fault_stream()
    settings = fault_settings(kafka_bootstrap)
    create_topics(settings)
    data_dir = tmp_path_factory.mktemp("reference") / "data"
    worker = Worker(settings, data_dir).start()
    try:
        worker.wait_ready()
        feed_items(settings, stream, [worker])
        start = time.time()
        produce(settings, stream.reviews)
        wait_consumed(settings, [settings.topic("reviews")], 600, [worker])
        seconds = time.time() - start
        table = wait_texts_folded(settings, [worker])
    finally:
        worker.stop()
    figures = Figures("reference (uninterrupted)", produced=len(stream.reviews))
    problems = count_applied(table, stream.expected(), figures)
    figures.extra["seconds"] = round(seconds, 1)
    figures.extra["stream"] = repr(stream.source)
    figures.print()
    assert not problems and figures.lost == 0 and figures.applied_twice == 0, problems[:5]
    return Reference(settings, table, seconds, data_dir)


SASL_USER = "xlrec-fault"
SASL_PASSWORD = "pw-7f3a9c1e-never-in-logs"


@dataclass
class PrivateBroker:
    """A broker of the fault suite's own, which tests may stop and start (SASL listener too)."""

    data_dir: Path
    info: BrokerInfo

    def restart(self, down_s: float) -> None:
        broker.stop(self.data_dir)
        time.sleep(down_s)
        self.start()

    def start(self) -> None:
        self.info = broker.start(port=self.info.port, data_dir=self.data_dir,
                                 sasl_users={SASL_USER: SASL_PASSWORD}, sasl_port=self.info.sasl_port)


@pytest.fixture(scope="session")
def private_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateBroker]:
    data_dir = tmp_path_factory.mktemp("private-kafka")
    try:
        info = broker.start(port=0, data_dir=data_dir, sasl_users={SASL_USER: SASL_PASSWORD})
        yield PrivateBroker(data_dir, info)
    finally:
        broker.stop(data_dir)

