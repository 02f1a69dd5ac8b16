"""`xlrec evaluate` on files: Steam TSV(.gz) and JSON lines read into events (malformed lines
reported with line numbers), a small slice of the real Steam stream through every model (the
metrics.json schema, determinism, the report), and the command itself."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from ranking.evaluate import ABLATIONS, ALL_MODELS, SLICES, EvalOptions, evaluate
from ranking.report import write_outputs
from streams.tools.evaluate_cli import evaluate as evaluate_command
from streams.tools.event_files import load_eval_data
from streams.tools.steam import DEFAULT_STEAM_DIR, EVENT_COLUMNS
from tests.ranking.fakes import FakeEncoder

T0 = 1_500_000_000
STEAM_EVENTS = DEFAULT_STEAM_DIR / "events-dev.tsv.gz"
STEAM_GAMES = DEFAULT_STEAM_DIR / "games.tsv"


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _review(n: int, user: str, item: str, ts: float) -> dict:
    return {"type": "review", "event_id": f"e{n}", "user_id": user, "item_id": item,
            "ts": ts, "text": "fun game", "lang": "en", "voted_up": True}


def test_json_lines_events_and_items_in_time_order(tmp_path: Path) -> None:
    events = _jsonl(tmp_path / "events.jsonl", [
        _review(2, "u1", "b", T0 + 5), _review(1, "u1", "a", T0 + 1),
        {"type": "click", "event_id": "c1", "user_id": "u2", "item_id": "a", "ts": T0 + 5},
        {"type": "item", "item_id": "b", "title": "B", "ts": T0 + 5}])
    items = _jsonl(tmp_path / "items.jsonl", [
        {"type": "item", "item_id": "a", "title": "Old game", "ts": T0 - 10}])
    data = load_eval_data(events, items, limit=None)
    assert [(e.type, e.ts) for e in data.events] == [
        ("review", T0 + 1), ("item", T0 + 5), ("review", T0 + 5), ("click", T0 + 5)]
    assert [e.item_id for e in data.item_events] == ["a"] and data.titles == {}
    assert data.bad_lines == []
    assert len(load_eval_data(events, None, limit=2).events) == 2


def test_malformed_lines_are_reported_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "events.tsv.gz"
    good = ["1", "10", str(T0), "1", "english", "7", "ok"]
    lines = ["\t".join(EVENT_COLUMNS), "\t".join(good),
             "\t".join(["2", "10", str(T0 + 1), "1", "klingon", "8", "bad lang"]),
             "\t".join(["3", "10", "not-a-ts", "1", "english", "9", "bad ts"]),
             "\t".join(["1", "20", str(T0 + 2), "0", "german", "10", "gut"])]
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    metrics, details = evaluate(load_eval_data(path), EvalOptions(models=["popularity"]), None)
    assert metrics["events_total"] == 2
    assert [b.split(":")[1] for b in details["bad_lines"]] == ["3", "4"]
    assert "klingon" in details["bad_lines"][0]


def test_malformed_json_lines_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(_review(1, "u1", "a", T0)) + "\n{not json\n"
                    + json.dumps({"type": "request"}) + "\n")
    data = load_eval_data(path)
    assert len(data.events) == 1
    assert [str(b).split(":")[1] for b in data.bad_lines] == ["2", "3"]


@pytest.mark.skipif(not STEAM_EVENTS.exists(), reason="shared Steam data not present")
def test_small_steam_slice_every_model_schema_and_determinism(tmp_path: Path) -> None:
    data = load_eval_data(STEAM_EVENTS, STEAM_GAMES, limit=1500)
    options = EvalOptions(eval_from=None, models=list(ALL_MODELS), seed=7)
    metrics, details = evaluate(data, options, FakeEncoder(16))
    assert set(metrics) == {"eval_from", "events_total", "events_evaluated", "seed", "models"}
    assert metrics["events_total"] == 1500 and metrics["seed"] == 7
    assert 0 < metrics["events_evaluated"] < 1500
    assert set(metrics["models"]) == set(ALL_MODELS) | set(ABLATIONS)
    for name, m in metrics["models"].items():
        assert set(m) == set(SLICES) | {"per_language", "coverage@10", "seconds"}, name
        for s in SLICES:
            assert set(m[s]) == {"hr@10", "ndcg@10", "n"}
            assert 0.0 <= m[s]["ndcg@10"] <= m[s]["hr@10"] <= 1.0
        assert m["all"]["n"] == metrics["events_evaluated"]
        assert m["cross_lingual"]["n"] + m["same_lingual"]["n"] <= m["all"]["n"]
        assert sum(v["n"] for v in m["per_language"].values()) == m["all"]["n"]
        assert 0.0 < m["coverage@10"] <= 1.0
    assert metrics["models"]["recent_popularity"]["all"]["hr@10"] > 0.05
    again, _ = evaluate(load_eval_data(STEAM_EVENTS, STEAM_GAMES, limit=1500), options, FakeEncoder(16))
    strip = lambda m: {n: {k: v for k, v in x.items() if k != "seconds"} for n, x in m["models"].items()}  # noqa: E731
    assert strip(again) == strip(metrics)

    paths = write_outputs(tmp_path / "out", metrics, details, "xlrec evaluate --limit 1500")
    names = {p.name for p in paths}
    assert {"metrics.json", "report.md", "hr_slices.png", "hr_languages.png", "hr_weekly.png"} <= names
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| xlrec |" in report and "Targets" in report
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == metrics


@pytest.mark.skipif(not STEAM_EVENTS.exists(), reason="shared Steam data not present")
def test_cli_without_encoder(tmp_path: Path) -> None:
    evaluate_command(events=STEAM_EVENTS, out=tmp_path / "cli", items=STEAM_GAMES,
                     eval_from=None, models="popularity,cooccurrence,xlrec", limit=300, seed=0,
                     encoder="none", max_tokens=128, progress=False)
    metrics = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert set(metrics["models"]) == {"popularity", "cooccurrence", "xlrec", *ABLATIONS}


def test_cli_as_a_group_of_workers(tmp_path: Path) -> None:
    """`--workers 2`: every user is replayed on the worker owning the user's murmur2 partition
    (partitions dealt in turn), the same events are evaluated, and metrics.json says so; more
    workers than partitions is refused."""
    from streams.tools.evaluate_cli import group_member
    from streams.worker.users_table import guess_partition

    member = group_member(8, 2)
    users = [f"user-{i}" for i in range(200)]
    assert {member(u) for u in users} == {0, 1}
    assert all(member(u) == guess_partition(u, 8) % 2 for u in users)
    with pytest.raises(Exception, match="raise XLREC_PARTITIONS"):
        group_member(8, 9)
    rows = [_review(i, f"u{i % 30}", f"g{i % 17}", T0 + i) for i in range(400)]
    events = _jsonl(tmp_path / "events.jsonl", rows)
    for workers in (1, 2):
        evaluate_command(events=events, out=tmp_path / f"w{workers}", items=None, eval_from=T0 + 200,
                         models="popularity,xlrec", limit=None, seed=0, encoder="none", max_tokens=128,
                         progress=False, workers=workers)
    one, two = (json.loads((tmp_path / f"w{w}" / "metrics.json").read_text()) for w in (1, 2))
    assert ("workers" not in one, two["workers"]) == (True, 2)
    assert one["events_evaluated"] == two["events_evaluated"] > 0
    assert "group of 2 workers" in (tmp_path / "w2" / "report.md").read_text()
    assert "workers" not in (tmp_path / "w1" / "report.md").read_text()
