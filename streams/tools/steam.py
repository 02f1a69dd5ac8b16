"""Read the Steam review stream (`../shared/data/steam/`, or `$XLREC_STEAM_DIR`) as xlrec events.

Plain Python (no Kafka): `xlrec replay steam` produces these events and `xlrec evaluate`
replays them in-process, so both see exactly the same stream.
"""

from __future__ import annotations

import csv
import gzip
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from encoders.languages import STEAM_LANGUAGES
from streams.contracts.schemas import ItemEvent, ReviewEvent

csv.field_size_limit(sys.maxsize)

EVENT_COLUMNS = ("user_id", "item_id", "ts", "voted_up", "lang", "review_id", "review")
# Research data beside the repository, never in it. XLREC_STEAM_DIR points elsewhere (tests set
# it to a missing folder to run as a fresh clone without the data would).
DEFAULT_STEAM_DIR = Path(os.environ.get("XLREC_STEAM_DIR")
                         or Path(__file__).resolve().parents[3] / "shared" / "data" / "steam")
STEAM_EVENTS_FILE = "events-dev.tsv.gz"
STEAM_GAMES_FILE = "games.tsv"


def steam_available(steam_dir: Path | None = None) -> bool:
    """Whether the Steam events file is there."""
    return ((steam_dir or DEFAULT_STEAM_DIR) / STEAM_EVENTS_FILE).is_file()


@dataclass(frozen=True)
class BadLine:
    """A line that could not be read, reported with its 1-based line number."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


def open_text(path: Path) -> TextIO:
    """A text file, gunzipped when its name ends in .gz (UTF-8, newlines as written)."""
    if str(path).endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def read_titles(path: Path) -> dict[str, str]:
    """`games.tsv`: item_id -> English store title."""
    titles: dict[str, str] = {}
    with open_text(path) as f:
        for row in csv.reader(f, delimiter="\t"):
            if len(row) >= 2 and row[0].strip().isdigit():
                titles[row[0].strip()] = row[1].strip()
    return titles


def read_reviews(path: Path, limit: int | None = None,
                 bad: list[BadLine] | None = None) -> Iterator[ReviewEvent]:
    """Review events of a Steam TSV in file (= time) order; malformed lines go to `bad`."""
    with open_text(path) as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None or tuple(header[:7]) != EVENT_COLUMNS:
            raise ValueError(f"{path}: expected header {' '.join(EVENT_COLUMNS)}, got {header}")
        count = 0
        for row in reader:
            try:
                event = review_from_row(row)
            except ValueError as exc:
                if bad is not None:
                    bad.append(BadLine(str(path), reader.line_num, str(exc)))
                continue
            yield event
            count += 1
            if limit is not None and count >= limit:
                return


def review_from_row(row: list[str]) -> ReviewEvent:
    """One TSV row -> ReviewEvent; raises ValueError with a readable reason."""
    if len(row) != len(EVENT_COLUMNS):
        raise ValueError(f"expected {len(EVENT_COLUMNS)} columns, got {len(row)}")
    user_id, item_id, ts, voted_up, lang, review_id, text = row
    if voted_up not in ("0", "1"):
        raise ValueError(f"voted_up must be 0 or 1, got {voted_up!r}")
    if lang not in STEAM_LANGUAGES:
        raise ValueError(f"unknown Steam language {lang!r}")
    try:
        ts_value = float(ts)
    except ValueError:
        raise ValueError(f"ts is not a number: {ts!r}") from None
    from streams.contracts.schemas import InvalidEvent, parse_event
    try:
        event = parse_event("reviews", {
            "event_id": f"steam-{review_id}", "user_id": user_id, "item_id": item_id,
            "ts": ts_value, "text": text, "lang": STEAM_LANGUAGES[lang], "voted_up": voted_up == "1"})
    except InvalidEvent as exc:
        raise ValueError(exc.reason) from None
    assert isinstance(event, ReviewEvent)
    return event


def item_event(item_id: str, titles: dict[str, str], ts: float) -> ItemEvent:
    """The catalog event for a game, published just before its first review."""
    title = titles.get(item_id) or f"Steam app {item_id}"
    return ItemEvent(item_id=item_id, title=title, ts=ts, categories=["game"],
                     attributes={"source": "steam"})


def replay_events(events_path: Path, games_path: Path | None, limit: int | None = None,
                  bad: list[BadLine] | None = None) -> Iterator[ItemEvent | ReviewEvent]:
    """The Steam stream as apps would send it: each game's ItemEvent, then its reviews."""
    titles = read_titles(games_path) if games_path and games_path.exists() else {}
    published: set[str] = set()
    for review in read_reviews(events_path, limit=limit, bad=bad):
        if review.item_id not in published:
            published.add(review.item_id)
            yield item_event(review.item_id, titles, review.ts - 1.0)
        yield review
