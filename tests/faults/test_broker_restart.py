"""Broker restart: stop and restart the broker while events flow. The producer buffers and
retries, the worker reconnects by itself, and the users table equals the reference run."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from streams.sdk.producer import EventProducer
from streams.contracts.topics import create_topics
from tests.faults.conftest import PrivateBroker, Reference
from tests.faults.harness import (Figures, Worker, check_against_reference, dead_letters,
                                  fault_settings, feed_items, fault_stream, wait_consumed, wait_texts_folded)

pytestmark = pytest.mark.faults

RATE = 100.0     # reviews per second while the broker goes away and comes back
DOWN_S = 3.0


def test_broker_restart_while_events_flow(private_broker: PrivateBroker, reference: Reference,
                                          tmp_path: Path) -> None:
    stream = fault_stream()
    settings = fault_settings(private_broker.info.bootstrap)
    create_topics(settings)
    worker = Worker(settings, tmp_path / "data").start()
    sent = threading.Event()
    errors: list[BaseException] = []

    def replay() -> None:
        try:  # 2 min of delivery retries: the broker is away for a few seconds only
            with EventProducer(settings, **{"message.timeout.ms": 120_000}) as producer:
                for i, review in enumerate(stream.reviews):
                    producer.send(review)
                    if i % 10 == 0:
                        time.sleep(10 / RATE)
        except BaseException as exc:  # surfaced by the test below
            errors.append(exc)
        finally:
            sent.set()

    try:
        worker.wait_ready()
        feed_items(settings, stream, [worker])
        producer = threading.Thread(target=replay, daemon=True)
        producer.start()
        time.sleep(0.4 * len(stream.reviews) / RATE)
        began = time.time()
        private_broker.restart(DOWN_S)
        restarted_s = time.time() - began
        producer.join(300)
        assert sent.is_set() and not errors, errors
        assert worker.alive(), worker.output()[-3000:]
        waited = wait_consumed(settings, [settings.topic("reviews")], 300, [worker])
        table = wait_texts_folded(settings, [worker])
    finally:
        worker.stop()
    figures = Figures("broker restart", produced=len(stream.reviews), dead_lettered=len(dead_letters(settings)),
                      extra={"broker_away_s": round(restarted_s, 1), "caught_up_after_s": round(waited, 1)})
    check_against_reference(figures, table, stream, reference.table)
