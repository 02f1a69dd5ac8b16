"""CLI commands for apps and operators: schema, topics, produce, validate, replay, tail."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import BinaryIO

import typer
from rich.console import Console
from rich.markup import escape

console = Console(stderr=True, soft_wrap=True)
out = Console()

INPUT_KINDS = ("items", "clicks", "reviews", "requests")
# Some lines of a `produce` or `validate` file were rejected: distinct from 1 (an error such as
# no broker) and 2 (invalid settings), so a script can tell "fix your data" from "fix xlrec".
EXIT_REJECTED = 3
SHOWN_REJECTED = 50


def fail(message: str, code: int = 1) -> None:
    """One clear line on stderr and a non-zero exit: no tracebacks for users."""
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)  # [..] is text, not markup
    raise typer.Exit(code)


def schema(name: str | None = typer.Argument(None, help="One of ItemEvent, ClickEvent, ...")) -> None:
    """Print the JSON Schema of every message type (or of one)."""
    import orjson

    from streams.contracts.schemas import json_schemas
    schemas = json_schemas()
    if name is not None:
        if name not in schemas:
            fail(f"unknown schema {name!r}; choose one of {', '.join(schemas)}")
        schemas = {name: schemas[name]}
    sys.stdout.write(orjson.dumps(schemas, option=orjson.OPT_INDENT_2).decode() + "\n")


topics_app = typer.Typer(help="Manage xlrec's Kafka topics.", no_args_is_help=True)


@topics_app.command("create")
def topics_create() -> None:
    """Create every xlrec topic (idempotent)."""
    from streams.contracts.settings import get_settings
    from streams.contracts.topics import BrokerUnavailable, create_topics
    try:
        result = create_topics(get_settings())
    except BrokerUnavailable as exc:
        fail(str(exc))
    for topic, state in result.items():
        out.print(f"{topic}: {state}")


KIND_HELP = "items, clicks, reviews or requests"
FILE_HELP = "JSON lines file, or - for stdin"


def _open_events(kind: str, file: str) -> BinaryIO:
    """The input of `produce` and `validate`, after checking the kind and that the file exists."""
    if kind not in INPUT_KINDS:
        fail(f"unknown kind {kind!r}; choose one of {', '.join(INPUT_KINDS)}")
    if file != "-" and not Path(file).is_file():
        fail(f"no such file: {file}")
    return sys.stdin.buffer if file == "-" else open(file, "rb")


def _report_rejected(rejected: list[tuple[int, str]]) -> None:
    """Each rejected line by number (the first SHOWN_REJECTED), on stderr."""
    for number, reason in rejected[:SHOWN_REJECTED]:
        console.print(f"line {number}: {reason}", highlight=False, markup=False)
    if len(rejected) > SHOWN_REJECTED:
        console.print(f"... and {len(rejected) - SHOWN_REJECTED} more rejected lines")


def produce(kind: str = typer.Argument(..., help=KIND_HELP),
            file: str = typer.Argument(..., help=FILE_HELP)) -> None:
    """Validate and send JSON-lines events; bad lines are reported (exit 3), good ones still sent."""
    from rich.progress import Progress

    from streams.sdk.producer import DeliveryError, EventProducer
    from streams.contracts.schemas import InvalidEvent
    from streams.contracts.topics import BrokerUnavailable
    stream = _open_events(kind, file)
    rejected: list[tuple[int, str]] = []
    sent = 0
    try:
        with stream, EventProducer() as producer, Progress(console=console, transient=True) as bar:
            task = bar.add_task(f"producing {kind}", total=None)
            for number, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                try:
                    producer.send(line, kind=kind)
                    sent += 1
                except InvalidEvent as exc:
                    rejected.append((number, exc.reason))
                bar.advance(task)
    except (BrokerUnavailable, DeliveryError) as exc:
        fail(str(exc))
    _report_rejected(rejected)
    out.print(f"sent {sent}, rejected {len(rejected)}")
    if rejected:
        raise typer.Exit(EXIT_REJECTED)


def validate(kind: str = typer.Argument(..., help=KIND_HELP),
             file: str = typer.Argument(..., help=FILE_HELP)) -> None:
    """Check JSON-lines events offline as `xlrec produce` would (exit 3 if any line is bad)."""
    from streams.contracts.schemas import InvalidEvent
    from streams.sdk.producer import validate_event
    rejected: list[tuple[int, str]] = []
    valid = 0
    with _open_events(kind, file) as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                validate_event(line, kind)
                valid += 1
            except InvalidEvent as exc:
                rejected.append((number, exc.reason))
    _report_rejected(rejected)
    out.print(f"valid {valid}, rejected {len(rejected)}")
    if rejected:
        raise typer.Exit(EXIT_REJECTED)


replay_app = typer.Typer(help="Replay public data sets as live events.", no_args_is_help=True)


@replay_app.command("steam")
def replay_steam(
    events: Path | None = typer.Option(None, help="Steam events TSV (default: events-dev.tsv.gz in "
                                       "$XLREC_STEAM_DIR, else ../shared/data/steam/ beside the repository)"),
    games: Path | None = typer.Option(None, help="games.tsv with titles (default: beside the events)"),
    limit: int | None = typer.Option(None, help="Stop after N reviews"),
    rate: float | None = typer.Option(None, help="Events per second (default: as fast as possible)"),
    live_ts: bool = typer.Option(False, help="Stamp events with the current time instead of the data's"),
) -> None:
    """Produce the Steam stream: each game's item event before its first review, then reviews."""
    from rich.progress import Progress

    from streams.contracts.topics import BrokerUnavailable
    from streams.sdk.producer import DeliveryError, EventProducer
    from streams.tools.steam import DEFAULT_STEAM_DIR, BadLine, replay_events

    events = events or DEFAULT_STEAM_DIR / "events-dev.tsv.gz"
    games = games or events.with_name("games.tsv")
    if not events.is_file():
        fail(f"no such file: {events} (the Steam data lives in ../shared/data/steam/ or $XLREC_STEAM_DIR)")
    bad: list[BadLine] = []
    counts = {"items": 0, "reviews": 0}
    started = time.monotonic()
    try:
        with EventProducer() as producer, Progress(console=console, transient=True) as bar:
            task = bar.add_task("replaying steam", total=limit)
            for n, event in enumerate(replay_events(events, games, limit=limit, bad=bad)):
                if rate:
                    delay = started + n / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                if live_ts:
                    event = event.model_copy(update={"ts": time.time()})
                producer.send(event)
                if event.type == "item":
                    counts["items"] += 1
                else:
                    counts["reviews"] += 1
                    bar.advance(task)
    except (BrokerUnavailable, DeliveryError) as exc:
        fail(str(exc))
    for line in bad[:20]:
        console.print(str(line), highlight=False, markup=False)
    seconds = time.monotonic() - started
    out.print(f"sent {counts['items']} items and {counts['reviews']} reviews in {seconds:.1f}s; "
              f"skipped {len(bad)} malformed lines")


tail_app = typer.Typer(help="Follow an output topic.", no_args_is_help=True)


@tail_app.command("recommendations")
def tail_recommendations(
    user: str | None = typer.Option(None, help="Only this user's recommendations"),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Start at the oldest message"),
    max_messages: int | None = typer.Option(None, "--max", help="Stop after N recommendations"),
    timeout: float | None = typer.Option(None, help="Stop after S seconds without a message"),
) -> None:
    """Print recommendations as they arrive, readably."""
    from streams.sdk.consumer import RecommendationConsumer
    from streams.contracts.topics import BrokerUnavailable
    from streams.sdk.render import print_recommendation
    try:
        consumer = RecommendationConsumer(user_id=user, from_beginning=from_beginning)
    except BrokerUnavailable as exc:
        fail(str(exc))
    seen = 0
    last = time.monotonic()
    with consumer:
        while max_messages is None or seen < max_messages:
            rec = consumer.poll(0.5)
            if rec is None:
                if timeout is not None and time.monotonic() - last > timeout:
                    break
                continue
            last = time.monotonic()
            seen += 1
            print_recommendation(out, rec)


def register(app: typer.Typer) -> None:
    """Attach these commands to the main `xlrec` app."""
    app.command("schema")(schema)
    app.command("produce")(produce)
    app.command("validate")(validate)
    app.add_typer(topics_app, name="topics")
    app.add_typer(replay_app, name="replay")
    app.add_typer(tail_app, name="tail")
