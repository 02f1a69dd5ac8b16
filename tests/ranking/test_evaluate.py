"""The prequential harness: no leakage, the metrics.json schema, malformed lines, determinism,
and a small slice of the real Steam stream through every model (as `make test` runs it)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from ranking.eval_cli import evaluate as evaluate_command
from ranking.evaluate import ABLATIONS, ALL_MODELS, SLICES, EvalOptions, evaluate
from ranking.report import write_outputs
from streams.tools.steam import DEFAULT_STEAM_DIR, EVENT_COLUMNS
from tests.ranking.fakes import FakeEncoder

T0 = 1_500_000_000
STEAM_EVENTS = DEFAULT_STEAM_DIR / "events-dev.tsv.gz"
STEAM_GAMES = DEFAULT_STEAM_DIR / "games.tsv"


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _review(n: int, user: str, item: str, ts: float, text: str = "fun game") -> dict:
    return {"type": "review", "event_id": f"e{n}", "user_id": user, "item_id": item,
            "ts": ts, "text": text, "lang": "en", "voted_up": True}


def _leaky_stream() -> list[dict]:
    """Warm-up on item a, then every user's second event is on brand-new item 'fresh'."""
    rows = [_review(i, f"u{i}", "a", T0 + i) for i in range(20)]
    rows += [_review(100 + i, f"u{i}", "fresh", T0 + 100 + i) for i in range(20)]
    return rows


def test_an_item_first_seen_in_the_evaluated_event_is_never_a_hit(tmp_path: Path) -> None:
    events = _jsonl(tmp_path / "events.jsonl", _leaky_stream()[:21])  # one event on 'fresh'
    metrics, _ = evaluate(EvalOptions(events, None, models=list(ALL_MODELS)), FakeEncoder())
    for name, m in metrics["models"].items():
        assert m["all"]["n"] == 1, name
        assert m["all"]["hr@10"] == 0.0, name


def test_an_item_introduced_earlier_by_the_items_file_can_be_a_hit(tmp_path: Path) -> None:
    events = _jsonl(tmp_path / "events.jsonl", _leaky_stream()[:21])
    items = _jsonl(tmp_path / "items.jsonl", [
        {"type": "item", "item_id": "fresh", "title": "Fresh game", "ts": T0 + 50},
        {"type": "item", "item_id": "a", "title": "Old game", "ts": T0 - 10}])
    metrics, _ = evaluate(EvalOptions(events, items, models=["popularity", "xlrec"]), FakeEncoder())
    # the user already reviewed 'a', so 'fresh' is the only candidate left: a hit
    assert metrics["models"]["popularity"]["all"]["hr@10"] == 1.0
    assert metrics["models"]["xlrec"]["all"]["hr@10"] == 1.0


def test_malformed_lines_are_reported_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "events.tsv.gz"
    good = ["1", "10", str(T0), "1", "english", "7", "ok"]
    lines = ["\t".join(EVENT_COLUMNS), "\t".join(good),
             "\t".join(["2", "10", str(T0 + 1), "1", "klingon", "8", "bad lang"]),
             "\t".join(["3", "10", "not-a-ts", "1", "english", "9", "bad ts"]),
             "\t".join(["1", "20", str(T0 + 2), "0", "german", "10", "gut"])]
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    metrics, details = evaluate(EvalOptions(path, None, models=["popularity"]), None)
    assert metrics["events_total"] == 2
    assert [b.split(":")[1] for b in details["bad_lines"]] == ["3", "4"]
    assert "klingon" in details["bad_lines"][0]


@pytest.mark.skipif(not STEAM_EVENTS.exists(), reason="shared Steam data not present")
def test_small_steam_slice_every_model_schema_and_determinism(tmp_path: Path) -> None:
    options = EvalOptions(STEAM_EVENTS, STEAM_GAMES, eval_from=None, models=list(ALL_MODELS),
                          limit=1500, seed=7)
    metrics, details = evaluate(options, FakeEncoder(16))
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
    again, _ = evaluate(options, FakeEncoder(16))
    strip = lambda m: {n: {k: v for k, v in x.items() if k != "seconds"} for n, x in m["models"].items()}
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
