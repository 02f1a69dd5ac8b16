"""`xlrec bench scale`: the catalog measurement at a tiny size (a fresh process, the real engine
over embedded Qdrant) gives a full row of positive, finite numbers; the synthetic catalog and
events have the properties the benchmark claims (Zipf popularity, several languages, item-to-item
sessions, increasing time, deterministic by seed); the command writes the issue's JSON shape."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from streams.cli import app
from streams.tools import bench_scale
from streams.tools.scale_catalog import ROW_KEYS, SyntheticCatalog, measure_catalog, synthetic_events


def test_a_tiny_catalog_gives_a_full_row_of_positive_finite_numbers(tmp_path: Path) -> None:
    lines: list[str] = []
    rows = measure_catalog([300], events=500, seed=1, work_dir=tmp_path, echo=lines.append)
    assert len(rows) == 1 and len(lines) == 1 and "300 items" in lines[0]
    row = rows[0]
    assert "error" not in row, row
    assert set(ROW_KEYS) <= set(row)
    assert row["items"] == 300
    for key in ROW_KEYS:
        assert isinstance(row[key], int | float) and math.isfinite(row[key]) and row[key] > 0, (key, row[key])
    assert row["observe_ms_p50"] <= row["observe_ms_p99"] and row["recommend_ms_p50"] <= row["recommend_ms_p99"]
    assert row["details"]["events"] == 500 and row["details"]["recommends"] == 100


def test_a_size_over_the_memory_limit_is_killed_and_its_row_says_so(tmp_path: Path) -> None:
    rows = measure_catalog([200], events=10, seed=0, work_dir=tmp_path, max_rss_mb=1.0, echo=lambda _: None)
    assert rows[0]["items"] == 200 and "RSS" in rows[0]["error"] and rows[0]["observe_ms_p50"] is None


def test_the_synthetic_catalog_has_zipf_popularity_several_languages_and_is_deterministic() -> None:
    cat = SyntheticCatalog(5_000, seed=3)
    counts = np.sort(np.bincount(cat.rank))   # one item per rank
    assert counts.tolist() == [1] * 5_000
    p = np.sort(cat.popularity)[::-1]
    assert p[0] / p[99] == pytest.approx(100.0)          # 1 / rank
    assert p[:50].sum() > 0.4                            # 1% of the items, over 40% of the picks
    langs = Counter(cat.lang(i) for i in range(cat.n))
    assert len(langs) >= 8 and langs.most_common(1)[0][0] == "en"
    titles = {cat.title(i) for i in range(cat.n)}
    assert len(titles) == cat.n
    assert any(any("\u3040" <= ch <= "\u9fff" for ch in t) for t in titles)   # CJK titles too
    vecs = cat.vectors(0, 2_500)
    assert vecs.shape == (2_500, 384) and np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(vecs[1_990:2_010], cat.vectors(1_990, 2_010))   # batching does not matter
    same = SyntheticCatalog(5_000, seed=3)
    assert np.array_equal(same.vectors(0, 100), cat.vectors(0, 100)) and same.title(7) == cat.title(7)
    assert not np.array_equal(SyntheticCatalog(5_000, seed=4).vectors(0, 100), cat.vectors(0, 100))


def test_synthetic_events_are_skewed_multilingual_sessioned_increasing_and_deterministic() -> None:
    cat = SyntheticCatalog(2_000, seed=0)
    events = list(synthetic_events(cat, 5_000, seed=0))
    assert len(events) == 5_000
    ts = [e.event.ts for e in events]
    assert all(a < b for a, b in zip(ts, ts[1:]))
    by_item = Counter(e.event.item_id for e in events)
    top = sum(c for _, c in by_item.most_common(20))     # 1% of the items
    assert top > 0.15 * len(events)
    assert len({e.event.lang for e in events}) >= 8
    kinds = Counter(e.event.type for e in events)
    assert kinds["click"] > 1_000 and kinds["review"] > 2_000
    assert all((e.review_vector is None) == (e.event.type == "click") for e in events)
    users = Counter(e.event.user_id for e in events)
    assert users.most_common(1)[0][1] >= 20 and len(users) > 200    # heavy users and many light ones
    # Sessions: a user's next item is often a neighbour (same topic) of the previous one.
    topic = {cat.item_id(i): int(cat.topic[i]) for i in range(cat.n)}
    last: dict[str, str] = {}
    same_topic = pairs = 0
    for e in events:
        prev = last.get(e.event.user_id)
        if prev is not None:
            pairs += 1
            same_topic += topic[prev] == topic[e.event.item_id]
        last[e.event.user_id] = e.event.item_id
    assert same_topic > 0.4 * pairs
    again = list(synthetic_events(cat, 5_000, seed=0))
    assert [e.event for e in again] == [e.event for e in events]
    assert [e.event for e in synthetic_events(cat, 5_000, seed=1)] != [e.event for e in events]


def test_counts_parse_and_an_empty_users_list_skips_the_users_half() -> None:
    assert bench_scale.parse_counts("1000, 10k,1m,10_000") == [1000, 10_000, 1_000_000, 10_000]
    for empty in ("", "0", "none", " None "):
        assert bench_scale.parse_counts(empty) == []
    with pytest.raises(typer.BadParameter):
        bench_scale.parse_counts("ten")


def test_the_command_writes_the_issue_shape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_users(counts: list[int], *, work_dir: Path) -> list[dict]:
        return [{"users": n, "rss_mb": 1.0, "bytes_per_user": 900.0, "restart_s": 2.0} for n in counts]

    monkeypatch.setattr(bench_scale, "measure_users_fn", lambda: fake_users)
    out = tmp_path / "scale.json"
    result = CliRunner().invoke(app, ["bench", "scale", "--items", "200", "--users", "5,6", "--events", "50",
                                      "--out", str(out), "--work-dir", str(tmp_path / "w")])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert [list(r) for r in doc["catalog"]] == [list(ROW_KEYS)]
    assert doc["users"] == fake_users([5, 6], work_dir=tmp_path)
    assert doc["details"]["catalog"][0]["events"] == 50


def test_users_asked_for_without_scale_users_is_a_clear_error(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_scale, "SCALE_USERS_MODULE", "streams.tools.no_such_module")
    result = CliRunner().invoke(app, ["bench", "scale", "--items", "200", "--users", "10",
                                      "--out", str(tmp_path / "x.json")])
    assert result.exit_code != 0 and "--users ''" in result.output
    assert not (tmp_path / "x.json").exists()
