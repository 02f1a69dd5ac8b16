"""`xlrec lag`: consumer lag per group and partition, once (table or JSON) or live (`--watch`)."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from streams.sdk.cli import fail

if TYPE_CHECKING:
    from rich.table import Table

    from streams.ops.lag import LagMonitor, LagReport

out = Console()

# --max-lag exceeded: distinct from 1 (error) so cron jobs and alerts can tell them apart. A group
# that has committed nothing yet (or no group at all) fails the check too: its lag is unknown, and
# "unknown" must not read as "fine"; 1 stays for what stops xlrec lag itself (no broker, a typo).
EXIT_LAG_EXCEEDED = 2


def lag(
    group: str | None = typer.Option(None, "--group", "-g",
                                        help="Only this consumer group (default: all xlrec groups)"),
    watch: bool = typer.Option(False, "--watch", "-w", help="Live-updating table until Ctrl-C"),
    interval: float = typer.Option(1.0, "--interval", "-i", min=0.0,
                                   help="Seconds between samples; one-shot runs sample twice this far "
                                        "apart to measure rates (0: one sample, no rates)"),
    as_json: bool = typer.Option(False, "--json", help="JSON array, one object per group and partition "
                                                       "(with --watch: one array per line)"),
    max_lag: int | None = typer.Option(None, "--max-lag", min=0,
                                          help="Exit with status 2 when any partition's lag exceeds N, "
                                               "or when a group has committed nothing yet "
                                               "(with --watch: highlight those rows)"),
) -> None:
    """Committed offset, log-end offset, lag, consumption rate and time to catch up, per partition."""
    from streams.ops.lag import UnknownGroup, open_monitor
    from streams.contracts.settings import get_settings
    from streams.contracts.topics import BrokerUnavailable

    try:
        monitor = open_monitor(get_settings(), group, window_s=max(10.0, 3 * interval))
        if watch:
            _watch(monitor, interval, as_json, max_lag)
            return
        report = monitor.sample()
        if interval > 0:
            time.sleep(interval)
            report = monitor.sample()
    except (BrokerUnavailable, UnknownGroup) as exc:
        fail(str(exc))
    if as_json:
        _print_json(report)
    else:
        out.print(_table(report, max_lag))
    if max_lag is not None:
        _check_max_lag(report, max_lag)


def _check_max_lag(report: LagReport, max_lag: int) -> None:
    """Exit 2 unless every selected group has committed offsets and none lags more than max_lag."""
    from rich.markup import escape

    from streams.sdk.cli import console

    unknown = [f"group {group!r} has committed no offsets yet: its lag is unknown"
               for group in report.uncommitted]
    if not report.rows and not unknown:
        unknown.append("no xlrec consumer group has committed offsets yet: there is no lag to check")
    for reason in unknown:
        console.print(f"[bold red]--max-lag {max_lag} not met:[/] {escape(reason)}", highlight=False)
    if unknown or report.max_lag > max_lag:
        raise typer.Exit(EXIT_LAG_EXCEEDED)


def _print_json(report: LagReport) -> None:
    sys.stdout.write(json.dumps([row.as_dict() for row in report.rows]) + "\n")
    sys.stdout.flush()


def _watch(monitor: LagMonitor, interval: float, as_json: bool, max_lag: int | None) -> None:
    """Refresh until Ctrl-C; a broker that goes away mid-watch is shown, not fatal."""
    from rich.live import Live

    from streams.ops.lag import UnknownGroup
    from streams.contracts.topics import BrokerUnavailable

    report = monitor.sample()  # errors here are fatal: nothing was ever shown
    interval = max(interval, 0.2)
    try:
        if as_json:
            while True:
                _print_json(report)
                time.sleep(interval)
                report = monitor.sample()
        with Live(_table(report, max_lag), console=out, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                try:
                    report = monitor.sample()
                    live.update(_table(report, max_lag), refresh=True)
                except (BrokerUnavailable, UnknownGroup) as exc:
                    live.update(_table(report, max_lag, error=str(exc)), refresh=True)
    except KeyboardInterrupt:
        return


def _table(report: LagReport, max_lag: int | None, error: str | None = None) -> Table:
    from rich.table import Table

    from streams.sdk.render import safe  # group and topic names are anyone's: never markup

    stamp = time.strftime("%H:%M:%S", time.localtime(report.at))
    caption = f"[bold red]{safe(error)}[/] (showing {stamp})" if error else f"at {stamp}"
    table = Table(title="xlrec consumer lag", caption=caption, caption_justify="left")
    table.add_column("group", no_wrap=True)  # names stay whole; the number columns give way
    table.add_column("topic", no_wrap=True)
    for name in ("part", "committed", "end", "lag", "rate/s", "eta"):
        table.add_column(name, justify="right")
    if not report.rows and not report.uncommitted:
        table.add_row("[dim]no xlrec consumer group has committed offsets yet[/]", *[""] * 7)
    for group in report.uncommitted:
        table.add_row(safe(group), "[dim]nothing committed yet[/]", *[""] * 3, "?", "", "")
    for row in report.rows:
        over = max_lag is not None and row.lag > max_lag
        table.add_row(safe(row.group), safe(row.topic), str(row.partition), str(row.committed), str(row.end_offset),
                      f"[bold red]{row.lag}[/]" if over else str(row.lag),
                      _rate(row.rate_per_s), _eta(row.eta_s, row.lag, row.rate_per_s))
    totals = report.totals() if report.rows else []
    if totals:
        table.add_section()
    for total in totals:
        table.add_row(safe(total.group), safe(total.topic) if total.topic else "(all)", "(all)", "", "", str(total.lag),
                      _rate(total.rate_per_s), _eta(total.eta_s, total.lag, total.rate_per_s),
                      style="bold" if total.topic is None else None)
    return table


def _rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:,.1f}"


def _eta(eta: float | None, lag: int, rate: float | None) -> str:
    """Human time to catch up; 'behind' when the lag is measured and not shrinking."""
    if eta is None:
        return "behind" if lag > 0 and rate is not None else "-"
    seconds = int(round(eta))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def dashboard(
    port: int = typer.Option(8066, "--port", "-p", min=0, max=65535, help="Port on 127.0.0.1 (0: any free one)"),
    workers: str | None = typer.Option(
        None, "--workers", envvar="XLREC_WORKERS",
        help="Comma-separated worker metrics endpoints, host:port or URL "
             "(default: the local worker on XLREC_WEB_PORT)"),
    group: str | None = typer.Option(None, "--group", "-g",
                                        help="Only this consumer group (default: all xlrec groups)"),
    interval: float = typer.Option(1.0, "--interval", "-i", min=0.2, max=2.0,
                                   help="Seconds between updates of the page"),
) -> None:
    """Live web page: lag per group and partition, throughput, latency p50/p99, dead letters."""
    import asyncio

    from streams.ops.dashboard import serve, worker_url
    from streams.ops.lag import UnknownGroup, open_monitor
    from streams.contracts.settings import get_settings
    from streams.contracts.topics import BrokerUnavailable

    settings = get_settings()
    specs = workers.split(",") if workers else [f"127.0.0.1:{settings.web_port}"]
    try:
        urls = [worker_url(spec) for spec in specs if spec.strip()]
        monitor = open_monitor(settings, group, window_s=10.0)
        monitor.sample()  # an unknown --group fails here, before the page promises anything
    except (ValueError, BrokerUnavailable, UnknownGroup) as exc:
        fail(str(exc))

    def announce(url: str) -> None:
        print(f"xlrec dashboard on {url} (Kafka {settings.bootstrap}; workers: {', '.join(urls)}); "
              "Ctrl-C stops it", flush=True)

    try:
        asyncio.run(serve(monitor.sample, urls, port, tick_s=interval, on_bound=announce))
    except OSError as exc:
        fail(f"cannot serve on 127.0.0.1:{port}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        return
