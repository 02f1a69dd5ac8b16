"""Bad start: the worker fails fast, with one clear line and a non-zero exit, when its engine
model snapshot (River models, counters) is corrupt or truncated, when no broker answers at the
bootstrap address, when another process holds its embedded Qdrant shard, and when the Qdrant
server it is pointed at does not answer.

(A missing or corrupt *encoder* file is not a start failure: the encoder cache verifies each
file's sha256 and re-exports it, which tests/encoders covers.)"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ranking.qdrant_store import EdgeStore, collection_name
from streams.settings import Settings
from streams.topics import create_topics
from streams.worker_cli import snapshot_path
from tests.faults.harness import Worker, fault_settings
from tests.worker_process import free_port

pytestmark = pytest.mark.faults

FAST_S = 60.0  # loading the encoder included; the broker check alone gives up after 5 s


def start_and_fail(settings: Settings, data_dir: Path, env: dict[str, str] | None = None) -> tuple[str, float]:
    """Start a worker that must exit non-zero by itself; its output and how long it took."""
    worker = Worker(settings, data_dir, env=env)
    began = time.time()
    worker.start()
    try:
        code = worker.wait_exit(FAST_S)
    finally:
        worker.kill()
    took = time.time() - began
    lines = [line for line in worker.output().splitlines() if line.strip()]
    assert code != 0, f"exit code {code}"
    assert len(lines) == 1, "one line, no traceback:\n" + "\n".join(lines[-30:])
    return lines[0], took


def corrupt(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00garbage, not a snapshot")


def truncated(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"version": 1, "catalog": list(range(10_000))})[:500])


@pytest.mark.parametrize("damage", [corrupt, truncated], ids=["corrupt", "truncated"])
def test_a_damaged_model_snapshot_stops_the_start_with_one_line(
        damage: Callable[[Path], None], kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = fault_settings(kafka_bootstrap)
    create_topics(settings)
    data_dir = tmp_path / "data"
    snap = snapshot_path(data_dir, settings.group_id)
    damage(snap)
    line, took = start_and_fail(settings, data_dir)
    print(f"\nFIGURES bad start ({damage.__name__} snapshot): {took:.1f}s: {line}")
    assert str(snap) in line and "move it away" in line


def test_a_wrong_broker_address_stops_the_start_with_one_line(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    settings = fault_settings(address)
    line, took = start_and_fail(settings, tmp_path / "data")
    print(f"\nFIGURES bad start (wrong broker address): {took:.1f}s: {line}")
    assert address in line and took < 30


def test_a_qdrant_path_held_by_another_process_stops_the_start_with_one_line(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = fault_settings(kafka_bootstrap)
    create_topics(settings)
    data_dir = tmp_path / "data"
    holder = EdgeStore(data_dir / "qdrant" / collection_name(settings.topic_prefix, 384), 384)
    try:
        line, took = start_and_fail(settings, data_dir)
    finally:
        holder.close()
    print(f"\nFIGURES bad start (Qdrant path held): {took:.1f}s: {line}")
    assert "held by pid" in line and str(data_dir / "qdrant") in line


def test_a_qdrant_server_that_does_not_answer_stops_the_start_with_one_line(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = fault_settings(kafka_bootstrap)
    create_topics(settings)
    url = f"http://127.0.0.1:{free_port()}"
    line, took = start_and_fail(settings, tmp_path / "data", env={"XLREC_QDRANT_URL": url})
    print(f"\nFIGURES bad start (Qdrant server down): {took:.1f}s: {line}")
    assert url in line
