"""Vector store outage (server mode): the Qdrant endpoint goes away while items and reviews
flow and comes back. Items are retried with backoff and none is lost, user events wait instead
of being dead-lettered, the catalog feed's lag grows and then recovers.

The endpoint is `tests.faults.qdrant_http.FakeQdrant` (Qdrant's REST API over qdrant-client's
in-process engine): no Qdrant server binary can be installed on this machine."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ranking.qdrant_store import ServerStore, collection_name
from streams.contracts.topics import create_topics
from tests.faults.harness import (Figures, Worker, catalog_lag, count_applied, dead_letters, fault_settings,
                                  produce, read_table, fault_stream, wait_catalog, wait_consumed)
from tests.faults.qdrant_http import FakeQdrant
from streams.ops.broker import free_port

pytestmark = pytest.mark.faults

EVENTS = 400
DOWN_S = 10.0


def test_items_and_reviews_survive_a_qdrant_outage(kafka_bootstrap: str, tmp_path: Path) -> None:
    stream = fault_stream().head(EVENTS)
    half = len(stream.items) // 2
    qdrant = FakeQdrant(free_port())
    qdrant.start()
    settings = fault_settings(kafka_bootstrap, qdrant_url=qdrant.url)
    create_topics(settings)
    worker = Worker(settings, tmp_path / "data").start()
    lags: list[int] = []
    try:
        worker.wait_ready()
        produce(settings, stream.items[:half])
        wait_catalog([worker], time.time())
        qdrant.stop()
        down_at = time.time()
        produce(settings, stream.items[half:])
        produce(settings, stream.reviews)
        while time.time() - down_at < DOWN_S:
            assert worker.alive(), worker.output()[-3000:]
            lags.append(catalog_lag(worker)[1] or 0)
            time.sleep(0.5)
        qdrant.start()
        up_at = time.time()
        wait_catalog([worker], up_at, timeout=120)
        recovered_s = time.time() - up_at
        wait_consumed(settings, [settings.topic("reviews")], 300, [worker])
        log = worker.output()
    finally:
        worker.stop()
        in_store = set(ServerStore(qdrant.url, 384, collection_name(settings.topic_prefix, 384))
                       .get([i.item_id for i in stream.items]))
        qdrant.stop()
    table = read_table(settings)
    figures = Figures("vector store outage", produced=len(stream.reviews) + len(stream.items),
                      dead_lettered=len(dead_letters(settings)),
                      extra={"items": len(stream.items), "items_in_store": len(in_store),
                             "max_catalog_lag_while_down": max(lags, default=0),
                             "lag_recovered_after_s": round(recovered_s, 1),
                             "retry_warnings": log.count("vector store unavailable")})
    problems = count_applied(table, stream.expected(), figures)
    figures.applied += len(in_store)
    figures.lost += len(stream.items) - len(in_store)
    figures.print()
    assert in_store == {i.item_id for i in stream.items}, "every item reached the store"
    assert figures.lost == 0 and figures.applied_twice == 0 and not problems, problems[:5]
    assert figures.dead_lettered == 0
    assert max(lags, default=0) > 0, "the catalog feed's lag grew while the store was away"
    assert "retrying" in log
