"""docker-compose.yml cannot run here (no Docker engine): check its shape instead."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def load() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_images_and_ports() -> None:
    services = load()["services"]
    assert set(services) == {"kafka", "qdrant", "worker", "prometheus", "grafana"}
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["qdrant"]["image"].startswith("qdrant/qdrant:")
    assert services["worker"]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (ROOT / services["worker"]["build"]["dockerfile"]).is_file()
    ports = {name: [p.split(":")[0] for p in svc.get("ports", [])] for name, svc in services.items()}
    assert ports == {"kafka": ["9092"], "qdrant": ["6333"], "worker": ["6066"],
                     "prometheus": ["9090"], "grafana": ["3000"]}


def test_every_service_has_a_health_check() -> None:
    for name, service in load()["services"].items():
        check = service.get("healthcheck", {})
        assert check.get("test"), f"{name} has no health check"


def test_kafka_runs_kraft_and_worker_uses_it() -> None:
    services = load()["services"]
    env = services["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "kafka:29092" in env["KAFKA_ADVERTISED_LISTENERS"]
    worker_env = services["worker"]["environment"]
    assert worker_env["XLREC_BOOTSTRAP"] == "kafka:29092"
    assert worker_env["XLREC_QDRANT_URL"] == "http://qdrant:6333"
    assert worker_env["XLREC_WEB_HOST"] == "0.0.0.0"  # the worker binds 127.0.0.1 by default
    assert services["worker"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_mounted_config_files_exist() -> None:
    for name, service in load()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
