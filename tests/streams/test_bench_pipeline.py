"""`xlrec bench pipeline` at a tiny size against the session's broker (on the Steam stream, or a
generated one without the Steam data): every phase runs and the JSON has the issue's keys with
positive numbers. Also the freshness bookkeeping alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streams.tools import bench_pipeline
from streams.tools.bench_pipeline import freshness, measure_rate, online_hr, percentiles
from streams.cli import app


def test_freshness_counts_each_event_once_from_the_first_recommendation_reflecting_it() -> None:
    sent = [("u", "e1", 10.0), ("u", "e2", 10.5), ("v", "f1", 11.0), ("u", "e3", 12.0)]
    recs = [("u", "e2", 11.0), ("u", "e1", 11.2),   # e1 re-ranked later: already covered
            ("v", "f1", 11.1), ("u", "e3", 12.05)]
    latencies, missing = freshness(sent, recs)
    assert sorted(round(x) for x in latencies) == [50, 100, 500, 1000]
    assert missing == 0
    assert freshness(sent, [])[1] == 4


def test_percentiles_nearest_rank() -> None:
    p = percentiles([float(i) for i in range(1, 101)])
    assert (p["p50"], p["p95"], p["p99"], p["max"], p["n"]) == (50.0, 95.0, 99.0, 100.0, 100)
    assert percentiles([])["n"] == 0


def test_online_hr_sums_the_workers_labelled_counters() -> None:
    def worker(events: float, hits: float, no_list: float) -> dict[str, float]:
        return {"xlrec_online_events_total{slice=all}": events,
                "xlrec_online_hits_total{k=10,slice=all}": hits,
                "xlrec_online_no_list_total{slice=all}": no_list,
                "xlrec_online_hits_total{k=5,slice=all}": 999.0}
    hr = online_hr([worker(30, 10, 5), worker(10, 2, 1)])
    assert hr["all"] == {"hr": 0.3, "hits": 12, "events": 40, "no_list": 6}
    assert hr["cross_lingual"] == {"hr": None, "hits": 0, "events": 0, "no_list": 0}


class ScriptedWorker:
    """A worker whose profile-update counter follows a script, one value per poll."""

    def __init__(self, counts: list[float]) -> None:
        self.counts = iter(counts)
        self.last = 0.0
        self.proc = type("Proc", (), {"poll": staticmethod(lambda: None)})()

    def metrics(self) -> dict[str, float]:
        self.last = next(self.counts, self.last)
        return {"xlrec_profile_updates_total": self.last}


def test_the_group_rate_starts_when_every_worker_consumes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first worker consumes alone until the second joins and the group rebalances (the
    stall); the group's rate is what both do together from then on: 200 per poll here."""
    clock = [0.0]
    monkeypatch.setattr(bench_pipeline.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(bench_pipeline.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + 1.0))
    one = ScriptedWorker([0, 300, 300, 300, 400, 500, 600, 700])
    two = ScriptedWorker([0, 0, 0, 0, 100, 200, 300, 400])
    rate = measure_rate([one, two], "xlrec_profile_updates_total", 1100, timeout_s=100)  # type: ignore[list-item]
    assert rate["completed"] and rate["per_s"] == 200.0 and rate["seconds"] == 4.0
    alone = measure_rate([ScriptedWorker([0, 300, 600, 900])], "xlrec_profile_updates_total", 900,
                         timeout_s=100)  # type: ignore[list-item]
    assert alone["per_s"] == 300.0


@pytest.mark.integration
def test_bench_pipeline_smoke(kafka_bootstrap: str, tmp_path: Path) -> None:
    """On the Steam stream, or on generated clicks and reviews without the Steam data."""
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", "pipeline", "--events", "200", "--rates", "20",
                                      "--rate-seconds", "3", "--partitions", "2",
                                      "--bootstrap", kafka_bootstrap, "--phase-timeout", "120",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    for key in ("limit_events_per_s", "profile_updates_per_s", "recommendations_per_s",
                "ratio_vs_limit", "rss_mb", "bytes_per_user"):
        assert doc[key] > 0, key
    assert doc["details"]["ranking_off"]["completed"] and doc["details"]["ranking_on"]["completed"]
    assert set(doc["freshness_ms"]["20"]) == {"p50", "p95", "p99"}
    assert doc["freshness_ms"]["20"]["p99"] > 0
    assert doc["item_searchable_ms"]["n"] >= 1 and doc["item_searchable_ms"]["p99"] > 0
    lane = doc["text_lane"]["20"]   # the review-text lane's lag at the end of the phase
    assert lane["waiting"] >= 0 and lane["oldest_wait_s"] >= 0
    assert set(doc["details"]["freshness"]["20"]["text_lane"]) == {"at_start", "at_end"}
    assert doc["machine"]["cpus"] >= 1 and doc["machine"]["partitions"] == 2
    assert doc["details"]["source"].startswith(("Steam reviews", "generated events"))
    hr = doc["online_hr@10"]   # live quality of the replayed events (streams.worker.online_quality)
    assert {"all", "cross_lingual"} <= set(hr)
    online = doc["details"]["online"]["all"]
    assert online["events"] + online["no_list"] > 0
    assert hr["all"] is None or 0.0 <= hr["all"] <= 1.0


def test_scaling_compares_the_group_with_one_worker_on_the_same_backlog() -> None:
    from streams.tools.bench_pipeline import scaling

    recs = "recommendations_after_events_per_s"
    r = {"one_worker": {"ranking_off": {"per_s": 1000.0}, "ranking_on": {recs: 300.0}},
         "ranking_off": {"per_s": 1500.0, "per_worker_per_s": [800.0, 700.0]},
         "ranking_on": {recs: 600.0, f"per_worker_{recs}": [310.0, 290.0]}}
    out = scaling(r, 2)
    assert out["efficiency"] == {"profile_updates": 0.75, "recommendations": 1.0}
    assert out["one_worker"] == {"profile_updates": 1000.0, "recommendations": 300.0}
    assert out["profile_updates_per_s_per_worker"] == [800.0, 700.0]
    assert out["recommendations_per_s_per_worker"] == [310.0, 290.0]
    r["one_worker"]["ranking_on"] = {}   # one worker ranked nothing: no ratio, not a division by 0
    assert scaling(r, 2)["efficiency"]["recommendations"] is None
