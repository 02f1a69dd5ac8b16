"""`xlrec kafka ...`: the local Kafka broker without Docker (see streams/ops/broker.py).

streams.ops.broker is imported inside each command so that `xlrec --help` stays fast."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(help="Local Apache Kafka broker (KRaft, one node, 127.0.0.1) without Docker.",
                  no_args_is_help=True)
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

DataDir = Annotated[Path | None, typer.Option(
    "--data-dir", help="Broker data, logs and pid file [default: ~/.cache/xlrec/kafka-data]")]


def _fail(message: str) -> NoReturn:
    """One red line (plus a log tail, when the message carries one) and exit code 1."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(1)


@app.command()
def install() -> None:
    """Resolve the broker's jars with Maven into ~/.cache/xlrec (once; fast afterwards)."""
    from streams.ops import broker

    try:
        with console.status(f"resolving Apache Kafka {broker.kafka_version()} with Maven"):
            lib = broker.install()
    except broker.BrokerError as exc:
        _fail(str(exc))
    console.print(f"Kafka {broker.kafka_version()} jars in {lib}", highlight=False)


@app.command()
def start(port: Annotated[int, typer.Option(help="PLAINTEXT port on 127.0.0.1 (0 = any free)")] = 9092,
          data_dir: DataDir = None,
          sasl_user: Annotated[list[str] | None, typer.Option(
              help="USER:PASSWORD; adds a SASL_PLAINTEXT (PLAIN) listener. Repeatable.")] = None,
          timeout: Annotated[float, typer.Option(help="Seconds to wait until it answers")] = 60.0,
          ) -> None:
    """Start the broker detached and wait until it answers; a running one is left as it is."""
    from streams.ops import broker

    users: dict[str, str] = {}
    for item in sasl_user or []:
        user, sep, password = item.partition(":")
        if not sep:
            _fail(f"--sasl-user {item!r}: expected USER:PASSWORD")
        users[user] = password
    began = time.monotonic()
    try:
        before = broker.status(data_dir)
        with console.status("starting Kafka"):
            info = broker.start(port, data_dir, sasl_users=users or None, timeout=timeout)
    except broker.BrokerError as exc:
        _fail(str(exc))
    if before and before.running:
        console.print(f"Kafka already running on {info.bootstrap} (pid {info.pid})", highlight=False)
        return
    sasl = f", SASL_PLAINTEXT on {info.sasl_bootstrap}" if info.sasl_bootstrap else ""
    console.print(f"Kafka {info.version} ready on {info.bootstrap}{sasl} (pid {info.pid}) in "
                  f"{time.monotonic() - began:.1f} s; log: {info.log_path}", highlight=False)


@app.command()
def stop(data_dir: DataDir = None) -> None:
    """Stop the broker cleanly (SIGTERM, SIGKILL after 30 s)."""
    from streams.ops import broker

    try:
        stopped = broker.stop(data_dir)
    except broker.BrokerError as exc:
        _fail(str(exc))
    console.print("Kafka stopped" if stopped else "Kafka was not running", highlight=False)


@app.command()
def status(data_dir: DataDir = None) -> None:
    """Say whether the broker runs, with pid, port and log; exit code 1 when it does not."""
    from streams.ops import broker

    info = broker.status(data_dir)
    if info is None:
        console.print(f"Kafka not running (never started in {data_dir or broker.default_data_dir()})",
                      highlight=False)
        raise typer.Exit(1)
    if not info.running:
        console.print(f"Kafka not running (last on {info.bootstrap}); log: {info.log_path}",
                      highlight=False)
        raise typer.Exit(1)
    sasl = f", SASL_PLAINTEXT on {info.sasl_bootstrap}" if info.sasl_bootstrap else ""
    console.print(f"Kafka {info.version} running on {info.bootstrap}{sasl} (pid {info.pid}); "
                  f"data: {info.data_dir}; log: {info.log_path}", highlight=False)
