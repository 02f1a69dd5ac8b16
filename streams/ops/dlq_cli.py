"""`xlrec tail dlq` shows dead letters with their reasons; `xlrec dlq replay` re-sends the ones
that validate now (rules and offsets: `streams.ops.dead_letters`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from streams.sdk.cli import EXIT_REJECTED, SHOWN_REJECTED, console, fail
from streams.sdk.render import safe

if TYPE_CHECKING:
    from streams.ops.dead_letters import DeadLetter

out = Console(soft_wrap=True)
PREVIEW_CHARS = 200


def print_letter(console: Console, letter: DeadLetter) -> None:
    """Where the letter sits and came from, why it failed, and the start of its value; every
    external string (key, error, value) escaped and with bidi controls made visible."""
    h = letter.headers
    key = "no key" if letter.key is None else f"key {letter.key.decode('utf-8', 'replace')[:80]!r}"
    console.print(f"[bold]{safe(letter.where)}[/] at {letter.failed_at} UTC  from {safe(letter.source)}  "
                  f"{safe(key)}", highlight=False)
    console.print(f"  [red]{safe(h.get('reason', 'no reason header'))}[/]: {safe(h.get('error', ''))}",
                  highlight=False)
    if letter.truncated:
        console.print(f"  [yellow]truncated[/] ({safe(letter.truncated)}): original "
                      f"{safe(h.get('original-bytes', '?'))} bytes, sha256 {safe(h.get('original-sha256', '?'))}"
                      " (not replayable)", highlight=False)
    text = " ".join(letter.value.decode("utf-8", "replace").split())
    shown = text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + f"… ({len(letter.value):,} bytes)"
    console.print(f"  {safe(shown)}", highlight=False)


def tail_dlq(
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Start at the oldest letter"),
    max_messages: int | None = typer.Option(None, "--max", help="Stop after N letters"),
    timeout: float | None = typer.Option(None, help="Stop after S seconds without a letter"),
    reason: str | None = typer.Option(None, help="Only letters with this reason (schema, invalid_json, "
                                                 "key_mismatch, encoder_error, processing_error, ...)"),
) -> None:
    """Print dead letters as they arrive: where each came from, its reason and error headers, and
    the start of its value (truncated letters say so). Commits nothing."""
    from streams.contracts.settings import get_settings
    from streams.contracts.topics import BrokerUnavailable
    from confluent_kafka import KafkaException

    from streams.ops.dead_letters import DeadLetterTopicMissing, follow

    seen = 0
    last = time.monotonic()

    def stop() -> bool:
        return (max_messages is not None and seen >= max_messages) or \
            (timeout is not None and time.monotonic() - last > timeout)

    try:
        for letter in follow(get_settings(), from_beginning=from_beginning, stop=stop):
            if letter is None:
                continue
            last = time.monotonic()
            if reason is not None and letter.headers.get("reason") != reason:
                continue
            seen += 1
            print_letter(out, letter)
    except (BrokerUnavailable, DeadLetterTopicMissing, RuntimeError, KafkaException) as exc:
        fail(str(exc))


dlq_app = typer.Typer(help="Dead letters: re-send the ones that validate now.", no_args_is_help=True)


@dlq_app.command("replay")
def dlq_replay(
    group: str | None = typer.Option(None, help="Consumer group whose offsets on the dlq topic remember "
                                                "what was replayed (default: <XLREC_GROUP_ID>-dlq-replay)"),
    from_offset: int | None = typer.Option(None, "--from-offset", min=0,
                                           help="Start at this offset in every dlq partition instead of "
                                                "where the group stopped (to look at letters again)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be re-sent; send and commit nothing"),
    timeout: float = typer.Option(60.0, help="Stop reading after S seconds"),
) -> None:
    """Re-send the dead letters that validate now to their input topic, skip truncated ones, and
    commit the group's offsets, so running it again re-sends nothing twice. Exit 0 when every
    letter was re-sent, 3 when some are still invalid or truncated, 1 when a re-send failed."""
    from streams.contracts.settings import get_settings
    from streams.contracts.topics import BrokerUnavailable
    from confluent_kafka import KafkaException

    from streams.ops.dead_letters import DeadLetterTopicMissing, replay

    try:
        report = replay(get_settings(), group=group, from_offset=from_offset, dry_run=dry_run,
                        timeout_s=timeout)
    except (BrokerUnavailable, DeadLetterTopicMissing, RuntimeError, KafkaException) as exc:
        fail(str(exc))  # a commit the broker refused included: nothing was committed, run it again
    left: list[str] = [f"{letter.where} from {letter.source}: still invalid: {why}"
                       for letter, why in report.invalid]
    left += [f"{letter.where} from {letter.source}: truncated ({letter.truncated}), "
             f"{letter.headers.get('original-bytes', '?')} bytes originally: skipped" for letter in report.truncated]
    for line in left[:SHOWN_REJECTED]:
        console.print(safe(line), highlight=False)
    if len(left) > SHOWN_REJECTED:
        console.print(f"... and {len(left) - SHOWN_REJECTED} more letters not re-sent")
    for letter, error in report.failed:
        console.print(f"[bold red]error:[/] {safe(letter.where)} not re-sent: {safe(error)}", highlight=False)
    if report.unfinished:
        where = ", ".join(f"partition {p} at offset {o}" for p, o in sorted(report.unfinished.items()))
        console.print(f"[bold red]error:[/] stopped after {timeout:.0f}s before the end ({where}); "
                      "run it again to go on", highlight=False)
    out.print(report.summary + ("" if dry_run else f"; committed {_offsets(report.committed)}"), highlight=False)
    if report.failed or report.unfinished:
        raise typer.Exit(1)
    if left:
        raise typer.Exit(EXIT_REJECTED)


def _offsets(committed: dict[int, int]) -> str:
    return ", ".join(f"partition {p} at {o}" for p, o in sorted(committed.items())) or "nothing new"
