"""streams.ops.dashboard without Kafka or a browser: worker URLs, quantiles, several workers with
counter resets, and the SSE stream the page reads."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import ClientSession, web

from streams.ops.dashboard import (
    PROCESSED,
    Dashboard,
    MonotonicCounters,
    WorkerStatus,
    histogram_quantile,
    make_app,
    parse_worker_metrics,
    worker_url,
)
from streams.ops.lag import LagReport, PartitionLag, UnknownGroup


def test_worker_url_forms() -> None:
    assert worker_url("127.0.0.1:6066") == "http://127.0.0.1:6066/metrics"
    assert worker_url(" http://w1:6066/ ") == "http://w1:6066/metrics"
    assert worker_url("https://w2/custom") == "https://w2/custom"
    with pytest.raises(ValueError, match="neither host:port"):
        worker_url("ftp://w3")


def test_histogram_quantile_like_prometheus() -> None:
    buckets = {0.1: 2.0, 0.5: 6.0, 1.0: 10.0, float("inf"): 10.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1 + 0.4 * 3 / 4)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.5 + 0.5 * 3.9 / 4)
    assert histogram_quantile(0.99, {0.1: 5.0, float("inf"): 10.0}) == 0.1  # in +Inf: highest finite bound
    assert histogram_quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None
    assert histogram_quantile(0.5, {}) is None


def exposition(processed: float, dead: float, fast: float, slow: float) -> str:
    """A worker's /metrics body with `fast` recommendations under 0.1 s and `slow` under 1 s."""
    return (f'# TYPE xlrec_events_processed counter\nxlrec_events_processed_total{{topic="xlrec.clicks"}} {processed}\n'
            f'# TYPE xlrec_dead_letters counter\nxlrec_dead_letters_total{{reason="schema"}} {dead}\n'
            '# TYPE xlrec_event_to_recommendation_seconds histogram\n'
            f'xlrec_event_to_recommendation_seconds_bucket{{le="0.1"}} {fast}\n'
            f'xlrec_event_to_recommendation_seconds_bucket{{le="1.0"}} {fast + slow}\n'
            f'xlrec_event_to_recommendation_seconds_bucket{{le="+Inf"}} {fast + slow}\n'
            f'xlrec_event_to_recommendation_seconds_count {fast + slow}\n'
            'xlrec_event_to_recommendation_seconds_sum 1.0\n')


def test_counters_survive_a_worker_restart() -> None:
    counters = MonotonicCounters()
    counters.update("a", parse_worker_metrics(exposition(100, 1, 0, 0)))  # baseline only
    counters.update("b", parse_worker_metrics(exposition(7, 0, 0, 0)))
    counters.update("a", parse_worker_metrics(exposition(130, 1, 0, 0)))
    counters.update("b", parse_worker_metrics(exposition(3, 0, 0, 0)))  # b restarted: 3 new events
    assert counters.summed()[(PROCESSED, "xlrec.clicks")] == 30 + 3


def snapshot_rates(dashboard: Dashboard, workers: list[str], bodies: list[str], now: float) -> dict[str, Any]:
    for url, body in zip(workers, bodies, strict=True):
        dashboard._counters.update(url, parse_worker_metrics(body))
    return dashboard.snapshot(LagReport(at=now, rows=[]), [WorkerStatus(url, up=True) for url in workers],
                              at=now, now=now)


def test_several_workers_are_summed_into_rates_and_quantiles() -> None:
    dashboard = Dashboard(lambda: LagReport(0.0, []), ["a", "b"], window_s=10.0)
    snapshot_rates(dashboard, ["a", "b"], [exposition(0, 0, 0, 0), exposition(0, 0, 0, 0)], now=0.0)
    snap = snapshot_rates(dashboard, ["a", "b"], [exposition(40, 2, 18, 2), exposition(60, 0, 0, 0)], now=2.0)
    assert snap["throughput"] == {"xlrec.clicks": (40 + 60) / 2}
    assert snap["throughput_source"] == "workers"
    assert snap["dead_letters"] == {"schema": 1.0}
    assert snap["latency"]["p50"] == pytest.approx(0.1 * 10 / 18)
    assert 0.1 < snap["latency"]["p99"] <= 1.0


def test_run_scrapes_workers_and_streams_snapshots() -> None:
    row = PartitionLag("xlrec", "xlrec.clicks", 0, 5, 12, 7, 1.5, 4.0)
    samples: list[LagReport | Exception] = [LagReport(0.0, [row]), UnknownGroup("group gone")]

    def sample_lag() -> LagReport:
        item = samples[0] if len(samples) == 1 else samples.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
        counts = {"processed": 0.0}

        async def metrics(_: web.Request) -> web.Response:
            counts["processed"] += 10
            return web.Response(text=exposition(counts["processed"], 0, counts["processed"] / 10, 0),
                                content_type="text/plain")

        worker = web.Application()
        worker.router.add_get("/metrics", metrics)
        worker_runner = web.AppRunner(worker)
        await worker_runner.setup()
        await web.TCPSite(worker_runner, "127.0.0.1", 0).start()
        up = f"http://127.0.0.1:{worker_runner.addresses[0][1]}/metrics"
        down = "http://127.0.0.1:9/metrics"  # discard port: nothing listens

        dashboard = Dashboard(sample_lag, [up, down], tick_s=0.2)
        runner = web.AppRunner(make_app(dashboard))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            async with ClientSession() as session:
                await asyncio.sleep(0.7)
                events = []
                async with session.get(f"{base}/events") as response:
                    assert response.headers["Content-Type"] == "text/event-stream"
                    while len(events) < 2:
                        event = (await response.content.readuntil(b"\n\n")).decode()
                        name, data = event.split("\n")[:2]
                        events.append({"event": name.removeprefix("event: "),
                                       "data": json.loads(data.removeprefix("data: "))})
                async with session.get(f"{base}/api/snapshot") as response:
                    latest = await response.json()
                async with session.get(f"{base}/") as response:
                    assert "static/dashboard.js" in await response.text()
        finally:
            await runner.cleanup()
            await worker_runner.cleanup()
        return events[0], events[1:], latest

    history, snapshots, latest = asyncio.run(scenario())
    assert history["event"] == "history" and len(history["data"]) >= 2
    first = history["data"][0]
    assert first["lag"] == [row.as_dict()] and first["lag_error"] is None
    assert snapshots[0]["event"] == "snapshot"
    assert latest["lag_error"] == "group gone" and latest["lag"] == []
    assert [w["up"] for w in latest["workers"]] == [True, False]
    assert latest["throughput_source"] == "workers"
    assert latest["throughput"]["xlrec.clicks"] > 0
    assert latest["latency"]["p99"] is not None
    assert latest["dead_letters"] == {"schema": 0.0}


def online_exposition(events: float, hits10: float, hits5: float, no_list: float, cross: float = 0.0,
                      cross_hits: float = 0.0) -> str:
    """A worker's live-quality series (streams.worker.online_quality), as its /metrics writes them."""
    return ("# TYPE xlrec_online_events counter\n"
            f'xlrec_online_events_total{{slice="all"}} {events}\n'
            f'xlrec_online_events_total{{slice="cross_lingual"}} {cross}\n'
            "# TYPE xlrec_online_hits counter\n"
            f'xlrec_online_hits_total{{k="10",slice="all"}} {hits10}\n'
            f'xlrec_online_hits_total{{k="5",slice="all"}} {hits5}\n'
            f'xlrec_online_hits_total{{k="10",slice="cross_lingual"}} {cross_hits}\n'
            "# TYPE xlrec_online_no_list counter\n"
            f'xlrec_online_no_list_total{{slice="all"}} {no_list}\n')


def test_online_hr_at_10_is_summed_over_workers_since_the_dashboard_started() -> None:
    dashboard = Dashboard(lambda: LagReport(0.0, []), ["a", "b"], window_s=10.0)
    first = snapshot_rates(dashboard, ["a", "b"], [online_exposition(100, 50, 40, 9), online_exposition(0, 0, 0, 0)],
                           now=0.0)
    assert first["online"]["all"]["hr"] is None   # the first scrape is the baseline
    snap = snapshot_rates(dashboard, ["a", "b"], [online_exposition(110, 54, 40, 10, 4, 1),
                                                  online_exposition(10, 2, 1, 3, 4, 2)], now=2.0)
    assert snap["online"]["all"] == {"hr": 0.3, "events": 20, "no_list": 4}
    assert snap["online"]["cross_lingual"]["hr"] == 0.375
    assert snap["online"]["non_english"] == {"hr": None, "events": 0.0, "no_list": 0.0}
