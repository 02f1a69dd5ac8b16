"""Readable terminal output of recommendations (used by `xlrec tail` and the demo)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from streams.contracts.schemas import Recommendation

# Bidirectional controls (ALM, LRM/RLM, embeddings/overrides, isolates): one in a group name or a
# title would reverse the rest of the line in a bidi-aware terminal, so they are shown as \\uXXXX.
BIDI_CONTROLS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def safe(value: object) -> str:
    """An external string (group name, title, id) as rich markup that shows it literally:
    `[/]` in a title is text, not markup that crashes the renderer, and bidi controls are visible."""
    return escape(BIDI_CONTROLS.sub(lambda m: f"\\u{ord(m.group()):04x}", str(value)))


def print_recommendation(console: Console, rec: Recommendation) -> None:
    """One table per recommendation: rank, item, score and the reason a person can read."""
    created = datetime.fromtimestamp(rec.created_ts, tz=UTC).strftime("%H:%M:%S")
    latency = f", {rec.latency_ms:.0f} ms after the event" if rec.latency_ms is not None else ""
    table = Table(title=f"user {safe(rec.user_id)} at {created}{latency} ({safe(rec.model_version)})",
                  title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("#", justify="right")
    table.add_column("item")
    table.add_column("score", justify="right")
    table.add_column("why")
    for rank, item in enumerate(rec.items, start=1):
        name = f"{item.title} ({item.item_id})" if item.title else item.item_id
        table.add_row(str(rank), safe(name), f"{item.score:.3f}", safe(item.reason))
    console.print(table)
