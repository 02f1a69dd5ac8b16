"""A stand-in worker process for the dashboard's browser test: consumes one topic as a
consumer group at a bounded rate, stops polling while a pause file exists (so it falls
behind; it touches PAUSE_FILE.ack once it is idle), and serves the real `streams.worker.metrics`
registry on /metrics like a worker does.

Run: python slow_worker.py BOOTSTRAP TOPIC GROUP PORT_FILE PAUSE_FILE
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from confluent_kafka import Consumer
from prometheus_client import start_http_server

from streams.worker import metrics

RATE_PER_S = 100  # messages per second when not paused: the lag drains visibly, in seconds


def main(bootstrap: str, topic: str, group: str, port_file: Path, pause_file: Path) -> None:
    server, _ = start_http_server(0, addr="127.0.0.1", registry=metrics.REGISTRY)
    port_file.write_text(str(server.server_port))
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": True, "auto.commit.interval.ms": 200})
    consumer.subscribe([topic])
    paused = pause_file.with_suffix(".ack")
    seen = 0
    try:
        while True:
            if pause_file.exists():
                paused.touch()  # tells the test that no message is in flight any more
                time.sleep(0.05)
                continue
            paused.unlink(missing_ok=True)
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            seen += 1
            time.sleep(1 / RATE_PER_S)
            metrics.EVENTS_PROCESSED.labels(topic=topic).inc()
            metrics.EVENT_TO_RECOMMENDATION_SECONDS.observe(max(0.0, time.time() - msg.timestamp()[1] / 1000))
            if seen % 40 == 0:
                metrics.DEAD_LETTERS.labels(reason="schema").inc()
    finally:
        consumer.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4]), Path(sys.argv[5]))
