"""streams.worker.metrics follows Prometheus naming conventions and renders; the Prometheus and Grafana
files in deploy/ parse and only query metrics the worker really exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

from streams.worker import metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "xlrec.json"


def xlrec_metrics() -> list[Counter | Gauge | Histogram]:
    return [value for value in vars(metrics).values() if isinstance(value, (Counter, Gauge, Histogram))]


def exposed_names() -> set[str]:
    """Every sample name /metrics can show (counters' _total, histograms' _bucket/_sum/_count)."""
    body, _ = metrics.render()
    names = {sample.name for family in text_string_to_metric_families(body.decode()) for sample in family.samples}
    for metric in xlrec_metrics():  # label-only metrics show no sample until first used
        name = metric._name
        names |= {f"{name}_total"} if isinstance(metric, Counter) else \
            {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if isinstance(metric, Histogram) else {name}
    return names


def test_names_follow_prometheus_conventions() -> None:
    names = {m._name: m for m in xlrec_metrics()}
    assert {"xlrec_events_processed", "xlrec_dead_letters", "xlrec_encoder_batch_seconds",
            "xlrec_item_upserts", "xlrec_ranking_seconds", "xlrec_event_to_recommendation_seconds",
            "xlrec_users", "xlrec_consumer_lag", "xlrec_recommendations"} <= set(names)
    for name, metric in names.items():
        assert re.fullmatch(r"xlrec_[a-z0-9_]+", name), name
        assert metric._documentation, f"{name} has no help text"
        if isinstance(metric, Histogram):
            assert name.endswith(("_seconds", "_size")), f"histogram {name} names no unit"
        if isinstance(metric, Gauge):
            assert not name.endswith("_total"), f"gauge {name} must not end in _total"
    assert names["xlrec_events_processed"]._labelnames == ("topic",)
    assert names["xlrec_dead_letters"]._labelnames == ("reason",)
    assert names["xlrec_consumer_lag"]._labelnames == ("group", "topic", "partition")
    assert "# TYPE xlrec_item_upserts_total counter" in metrics.render()[0].decode()


def test_render_speaks_text_and_openmetrics() -> None:
    body, content_type = metrics.render()
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert b"xlrec_encoder_batch_seconds_bucket" in body and b"process_cpu_seconds_total" in body
    body, content_type = metrics.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text") and body.endswith(b"# EOF\n")


def test_record_consumer_lag_replaces_old_partitions() -> None:
    rows = [SimpleNamespace(group="xlrec", topic="xlrec.clicks", partition=p, lag=10 * p) for p in range(3)]
    metrics.record_consumer_lag(rows, now=1234.0)
    metrics.record_consumer_lag(rows[1:], now=1235.0)
    samples = {tuple(sorted(s.labels.items())): s.value
               for family in text_string_to_metric_families(metrics.render()[0].decode())
               for s in family.samples if s.name == "xlrec_consumer_lag"}
    assert samples == {(("group", "xlrec"), ("partition", "1"), ("topic", "xlrec.clicks")): 10.0,
                       (("group", "xlrec"), ("partition", "2"), ("topic", "xlrec.clicks")): 20.0}
    assert metrics.CONSUMER_LAG_UPDATED._value.get() == 1235.0
    metrics.record_consumer_lag([], now=0.0)  # leave the process-wide registry as we found it


def test_grafana_dashboard_queries_existing_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\bxlrec_[a-z0-9_]+", expr)}
    assert used and used <= exposed_names(), used - exposed_names()
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {"Consumer lag per group and partition", "Throughput per topic",
            "Recommendation latency p50 / p99", "Dead letters by reason"} <= titles
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uids = {ds["uid"] for ds in datasource["datasources"]}
    assert {panel["datasource"]["uid"] for panel in dashboard["panels"]} <= uids


@pytest.mark.parametrize("path", ["prometheus/prometheus.yml", "grafana/provisioning/dashboards/xlrec.yml"])
def test_deploy_yaml_parses(path: str) -> None:
    config = yaml.safe_load((DEPLOY / path).read_text())
    if path.startswith("prometheus"):
        job = config["scrape_configs"][0]
        assert job["metrics_path"] == "/metrics" and job["dns_sd_configs"][0]["port"] == 6066
    else:
        assert config["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
