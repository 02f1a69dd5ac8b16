"""Readable terminal output of recommendations (used by `xlrec tail` and the demo)."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table

from streams.contracts.schemas import Recommendation


def print_recommendation(console: Console, rec: Recommendation) -> None:
    """One table per recommendation: rank, item, score and the reason a person can read."""
    created = datetime.fromtimestamp(rec.created_ts, tz=UTC).strftime("%H:%M:%S")
    latency = f", {rec.latency_ms:.0f} ms after the event" if rec.latency_ms is not None else ""
    table = Table(title=f"user {rec.user_id} at {created}{latency} ({rec.model_version})",
                  title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("#", justify="right")
    table.add_column("item")
    table.add_column("score", justify="right")
    table.add_column("why")
    for rank, item in enumerate(rec.items, start=1):
        name = f"{item.title} ({item.item_id})" if item.title else item.item_id
        table.add_row(str(rank), name, f"{item.score:.3f}", item.reason)
    console.print(table)
