"""The prequential harness on events it is given (it reads no files): no leakage, item events
introduce items, the reader's bad lines are reported. Reading Steam TSVs and JSON lines, the
metrics.json schema on a real Steam slice and the CLI: tests/streams/test_evaluate_cli.py."""

from __future__ import annotations

from ranking.evaluate import ALL_MODELS, EvalData, EvalOptions, evaluate
from ranking.events import Item, Review
from tests.ranking.fakes import FakeEncoder

T0 = 1_500_000_000


def _review(n: int, user: str, item: str, ts: float, text: str = "fun game") -> Review:
    return Review(event_id=f"e{n}", user_id=user, item_id=item, ts=ts, positive=True, lang="en",
                  text=text)


def _leaky_stream() -> list[Review]:
    """Warm-up on item a, then every user's second event is on brand-new item 'fresh'."""
    rows = [_review(i, f"u{i}", "a", T0 + i) for i in range(20)]
    rows += [_review(100 + i, f"u{i}", "fresh", T0 + 100 + i) for i in range(20)]
    return rows


def test_an_item_first_seen_in_the_evaluated_event_is_never_a_hit() -> None:
    data = EvalData(events=_leaky_stream()[:21])  # one event on 'fresh'
    metrics, _ = evaluate(data, EvalOptions(models=list(ALL_MODELS)), FakeEncoder())
    for name, m in metrics["models"].items():
        assert m["all"]["n"] == 1, name
        assert m["all"]["hr@10"] == 0.0, name


def test_an_item_introduced_earlier_by_an_item_event_can_be_a_hit() -> None:
    items = [Item(item_id="fresh", title="Fresh game", ts=T0 + 50),
             Item(item_id="a", title="Old game", ts=T0 - 10)]
    data = EvalData(events=_leaky_stream()[:21], item_events=items)
    metrics, _ = evaluate(data, EvalOptions(models=["popularity", "xlrec"]), FakeEncoder())
    # the user already reviewed 'a', so 'fresh' is the only candidate left: a hit
    assert metrics["models"]["popularity"]["all"]["hr@10"] == 1.0
    assert metrics["models"]["xlrec"]["all"]["hr@10"] == 1.0


def test_bad_lines_of_the_reader_are_reported_and_runs_repeat() -> None:
    data = EvalData(events=_leaky_stream(), bad_lines=["events.tsv:3: bad ts"])
    options = EvalOptions(models=list(ALL_MODELS), seed=3)
    metrics, details = evaluate(data, options, FakeEncoder())
    assert details["bad_lines"] == ["events.tsv:3: bad ts"]
    assert metrics["events_total"] == 40 and metrics["seed"] == 3
    again, _ = evaluate(data, options, FakeEncoder())
    strip = lambda m: {n: {k: v for k, v in x.items() if k != "seconds"} for n, x in m["models"].items()}  # noqa: E731
    assert strip(again) == strip(metrics)
