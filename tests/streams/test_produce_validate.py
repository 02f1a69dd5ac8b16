"""`xlrec produce` exits 3 when any line was rejected (the valid ones are still sent), and
`xlrec validate KIND FILE` checks a file offline with the same validator and messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from streams.cli import app
from streams.contracts.schemas import Event

GOOD = {"event_id": "c1", "user_id": "u1", "item_id": "i1", "ts": 1_700_000_000}
LINES = [json.dumps(GOOD), "", json.dumps({**GOOD, "event_id": "c2", "ts": -1}), "not json",
         json.dumps({**GOOD, "event_id": "c3"}), json.dumps({**GOOD, "type": "review"})]
REJECTED = {3: "line 3: field 'ts'", 4: "line 4: not valid UTF-8 JSON",
            6: "line 6: unknown event type 'review' on the clicks topic"}


@pytest.fixture
def events(tmp_path: Path) -> Path:
    path = tmp_path / "clicks.jsonl"
    path.write_text("\n".join(LINES) + "\n")
    return path


class FakeProducer:
    """EventProducer without Kafka: validates like the real one and records what it sends."""

    sent: list[Event] = []

    def __init__(self, *args: Any, **kwargs: Any):
        FakeProducer.sent = []

    def send(self, event: Any, kind: str | None = None) -> Event:
        from streams.sdk.producer import validate_event

        checked = validate_event(event, kind)
        FakeProducer.sent.append(checked)
        return checked

    def __enter__(self) -> FakeProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def test_produce_exits_3_and_names_the_rejected_lines(events: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("streams.sdk.producer.EventProducer", FakeProducer)
    result = CliRunner().invoke(app, ["produce", "clicks", str(events)])
    print(result.stderr)
    assert result.exit_code == 3
    assert [e.event_id for e in FakeProducer.sent] == ["c1", "c3"]  # type: ignore[attr-defined]
    assert "sent 2, rejected 3" in result.stdout
    assert [line.split(":")[0] for line in result.stderr.strip().splitlines()] == ["line 3", "line 4", "line 6"]
    for number, start in REJECTED.items():
        assert start in result.stderr, number


def test_produce_exits_0_when_every_line_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("streams.sdk.producer.EventProducer", FakeProducer)
    path = tmp_path / "ok.jsonl"
    path.write_text(json.dumps(GOOD) + "\n")
    result = CliRunner().invoke(app, ["produce", "clicks", str(path)])
    assert result.exit_code == 0 and "sent 1, rejected 0" in result.stdout


def test_validate_checks_offline_with_the_same_messages(events: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XLREC_BOOTSTRAP", "127.0.0.1:9")  # nothing listens: validate must not need it
    monkeypatch.setattr("streams.sdk.producer.EventProducer", FakeProducer)
    produced = CliRunner().invoke(app, ["produce", "clicks", str(events)])
    monkeypatch.undo()
    monkeypatch.setenv("XLREC_BOOTSTRAP", "127.0.0.1:9")
    validated = CliRunner().invoke(app, ["validate", "clicks", str(events)])
    print(validated.stdout, validated.stderr)
    assert validated.exit_code == 3
    assert validated.stderr.strip() == produced.stderr.strip()
    assert "valid 2, rejected 3" in validated.stdout


def test_validate_exits_0_on_a_valid_file_and_reads_stdin() -> None:
    result = CliRunner().invoke(app, ["validate", "clicks", "-"], input=json.dumps(GOOD) + "\n\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "valid 1, rejected 0" and result.stderr == ""


def test_validate_refuses_an_unknown_kind_and_a_missing_file(tmp_path: Path) -> None:
    assert CliRunner().invoke(app, ["validate", "recommendations", "-"]).exit_code == 1
    missing = CliRunner().invoke(app, ["validate", "clicks", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 1 and "no such file" in missing.stderr


def test_help_lists_validate() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert any(line.split()[:2] == ["│", "validate"] or line.split()[:1] == ["validate"]
               for line in result.stdout.splitlines()), result.stdout
