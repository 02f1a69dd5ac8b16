"""Event files for `xlrec evaluate`: a Steam TSV(.gz) or JSON lines of item/click/review events,
read and validated into the events that `ranking.evaluate` replays (it reads no files itself).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ranking.evaluate import EvalData, time_order
from streams.contracts.schemas import ClickEvent, InvalidEvent, ItemEvent, ReviewEvent, parse_event
from streams.tools.steam import EVENT_COLUMNS, BadLine, open_text, read_reviews, read_titles

UserEvent = ClickEvent | ReviewEvent


def is_steam_tsv(path: Path) -> bool:
    """Whether the file starts with the Steam events header."""
    with open_text(path) as f:
        return f.readline().rstrip("\r\n").split("\t")[:7] == list(EVENT_COLUMNS)


def read_json_lines(path: Path, bad: list[BadLine]) -> Iterator[ItemEvent | UserEvent]:
    """Item, click and review events, one JSON object a line; malformed lines go to `bad`."""
    kinds: dict[Any, str] = {"item": "items", "click": "clicks", "review": "reviews"}
    with open_text(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                kind = kinds.get(raw.get("type")) if isinstance(raw, dict) else None
                if kind is None:
                    raise InvalidEvent("expected a JSON object with type item, click or review")
                event = parse_event(kind, raw)
            except (ValueError, InvalidEvent) as exc:
                bad.append(BadLine(str(path), line_no, str(exc)))
                continue
            yield event  # type: ignore[misc]


def load_events(path: Path, limit: int | None, bad: list[BadLine]) -> list[ItemEvent | UserEvent]:
    """A Steam TSV or JSON lines of events, in time order (stable for equal ts); `limit`
    counts user events."""
    if is_steam_tsv(path):
        events: list[Any] = list(read_reviews(path, limit=limit, bad=bad))
    else:
        events = []
        user_events = 0
        for e in read_json_lines(path, bad):
            events.append(e)
            user_events += not isinstance(e, ItemEvent)
            if limit is not None and user_events >= limit:
                break
    return time_order(events)


def load_items(path: Path | None, bad: list[BadLine]) -> tuple[dict[str, str], list[ItemEvent]]:
    """(titles from a games.tsv, ItemEvents from JSON lines): one of them is empty."""
    if path is None:
        return {}, []
    with open_text(path) as f:
        first = f.readline().lstrip()
    if first.startswith("{"):
        return {}, [e for e in read_json_lines(path, bad) if isinstance(e, ItemEvent)]
    return read_titles(path), []


def load_eval_data(events: Path, items: Path | None = None, limit: int | None = None) -> EvalData:
    """What `ranking.evaluate.evaluate` replays, read from the files (items first, as before)."""
    bad: list[BadLine] = []
    titles, item_events = load_items(items, bad)
    stream = load_events(events, limit, bad)
    return EvalData(events=stream, item_events=item_events, titles=titles, bad_lines=bad)
