"""Crash: SIGKILL the worker twice at random moments of a review replay and restart it; the users
table then equals the uninterrupted reference run (every event applied exactly once), and each
user's latest recommendation reflects their last event."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import pytest

from streams.sdk.producer import EventProducer
from streams.contracts.settings import Settings
from streams.contracts.topics import create_topics
from tests.faults.conftest import Reference
from tests.faults.harness import (FAULT_EVENTS, Figures, Stream, Worker, check_against_reference, counter,
                                  dead_letters, fault_settings, feed_items, progress,
                                  stale_recommendations, fault_stream, wait_consumed, wait_texts_folded)

pytestmark = pytest.mark.faults

# Reviews per second: the replay outlasts a restart (the group first waits out the dead member).
RATE = max(10.0, FAULT_EVENTS / 120)


def replay(settings: Settings, stream: Stream) -> None:
    """Produce the reviews at RATE (the worker would otherwise finish before the first kill)."""
    with EventProducer(settings) as producer:
        for i, review in enumerate(stream.reviews):
            producer.send(review)
            if i % 10 == 9:
                producer.flush()
                time.sleep(10 / RATE)


def test_sigkill_twice_during_replay(reference: Reference, kafka_bootstrap: str, tmp_path: Path) -> None:
    seed = int(os.environ.get("XLREC_FAULT_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    stream = fault_stream()
    settings = fault_settings(kafka_bootstrap)
    create_topics(settings)
    worker = Worker(settings, tmp_path / "data").start()
    try:
        worker.wait_ready()
        feed_items(settings, stream, [worker])
        producer = threading.Thread(target=replay, args=(settings, stream), daemon=True)
        producer.start()  # a steady stream, so that both kills land mid-replay
        topic = settings.topic("reviews")
        kills = []
        for low, high in ((0.1, 0.45), (0.55, 0.9)):
            target = rng.uniform(low, high)
            deadline = time.time() + 300
            while progress(settings, topic)[0] < target * len(stream.reviews) and time.time() < deadline:
                assert worker.alive(), worker.output()[-3000:]
                time.sleep(0.05)
            time.sleep(rng.uniform(0, 1.0))  # not always right after a commit
            kills.append(progress(settings, topic)[0])
            worker.kill()
            worker.start()
            worker.wait_ready()
        producer.join(600)
        wait_consumed(settings, [topic], 600, [worker])
        stale = stale_recommendations(settings, {user: ids[-1] for user, ids in stream.expected().items()})
        table = wait_texts_folded(settings, [worker])
        read_again = counter(worker, "xlrec_review_texts_read_again_total")  # since the last restart
    finally:
        worker.stop()
    figures = Figures("crash", produced=len(stream.reviews), dead_lettered=len(dead_letters(settings)),
                      extra={"seed": seed, "killed_at_committed": kills,
                             "review_texts_read_again_after_last_kill": int(read_again)})
    check_against_reference(figures, table, stream, reference.table, stale)
