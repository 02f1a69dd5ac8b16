"""Rebalance: one worker, a second and a third join mid-stream, then one is SIGKILLed. Every
partition is processed, the users table equals the reference run, and every user's latest
recommendation reflects their last event. Each worker reads the whole catalog itself
(streams.worker.catalog_feed), so profiles learn item vectors whichever worker owns the user."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from streams.sdk.producer import EventProducer
from streams.contracts.topics import create_topics
from tests.faults.conftest import Reference
from tests.faults.harness import (FAULT_EVENTS, Figures, Worker, check_against_reference, dead_letters,
                                  fault_settings, feed_items, stale_recommendations,
                                  fault_stream, wait_consumed, wait_texts_folded)

pytestmark = pytest.mark.faults

# Reviews per second: the stream outlasts two worker starts and a kill, and a full-size run
# (XLREC_FAULT_EVENTS=20000) still replays in about two minutes.
RATE = max(30.0, FAULT_EVENTS / 120)


def test_workers_join_and_one_dies_mid_stream(reference: Reference, kafka_bootstrap: str, tmp_path: Path) -> None:
    stream = fault_stream()
    settings = fault_settings(kafka_bootstrap)
    create_topics(settings)
    workers = [Worker(settings, tmp_path / f"w{i}" / "data", name=f"worker{i}") for i in range(3)]
    for w in workers:
        w.data_dir.parent.mkdir(parents=True)
    sent = [0]
    errors: list[BaseException] = []

    def replay() -> None:
        try:
            with EventProducer(settings) as producer:
                for i, review in enumerate(stream.reviews):
                    producer.send(review)
                    sent[0] = i + 1
                    if i % 10 == 9:
                        producer.flush()
                        time.sleep(10 / RATE)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    def when_sent(fraction: float) -> int:
        while sent[0] < fraction * len(stream.reviews) and thread.is_alive():
            time.sleep(0.05)
        return sent[0]

    moments = {}
    try:
        workers[0].start().wait_ready()
        feed_items(settings, stream, workers[:1])
        thread = threading.Thread(target=replay, daemon=True)
        thread.start()
        moments["second joins at"] = when_sent(0.1)
        workers[1].start().wait_ready()
        moments["third joins at"] = when_sent(0.3)
        workers[2].start().wait_ready()
        moments["second killed at"] = when_sent(0.6)
        workers[1].kill()
        thread.join(300)
        assert not errors, errors
        alive = [workers[0], workers[2]]
        waited = wait_consumed(settings, [settings.topic("reviews")], 300, alive)
        stale = stale_recommendations(settings, {user: ids[-1] for user, ids in stream.expected().items()})
        table = wait_texts_folded(settings, alive)
    finally:
        for w in workers:
            w.stop()
    figures = Figures("rebalance", produced=len(stream.reviews), dead_lettered=len(dead_letters(settings)),
                      extra={**{k.replace(" ", "_"): v for k, v in moments.items()},
                             "caught_up_after_s": round(waited, 1)})
    check_against_reference(figures, table, stream, reference.table, stale)
