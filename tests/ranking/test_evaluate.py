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


def _pairs_stream() -> list[Review]:
    """40 items known first; users 'x...' (worker 0) go from a to b; then user 'y' (worker 1)
    reviews a, then b (the one event evaluated)."""
    rows = [_review(i, f"z{i}", f"filler{i}", T0 + i) for i in range(40)]
    rows += [_review(100 + 2 * i + j, f"x{i}", item, T0 + 100 + 2 * i + j)
             for i in range(10) for j, item in enumerate(("a", "b"))]
    rows += [_review(200, "y", "a", T0 + 200), _review(201, "y", "b", T0 + 201)]
    return rows


def test_workers_see_only_their_own_users_events() -> None:
    """A group of two workers: co-occurrence that one worker's users taught it (a -> b) is not
    known to the other worker's copy, so its users' b is found only in the one-worker replay.
    Every copy still knows every item, and the same events are evaluated either way."""
    data = EvalData(events=_pairs_stream())
    eval_from = T0 + 200
    one, _ = evaluate(data, EvalOptions(eval_from=eval_from, models=["cooccurrence"]), None)
    two, details = evaluate(data, EvalOptions(eval_from=eval_from, models=["cooccurrence", "xlrec"], workers=2,
                                              worker_of=lambda user: 1 if user == "y" else 0), None)
    assert one["events_evaluated"] == two["events_evaluated"] == 1
    assert one["models"]["cooccurrence"]["all"]["hr@10"] == 1.0
    assert two["models"]["cooccurrence"]["all"]["hr@10"] == 0.0
    assert two["workers"] == 2 and "xlrec_weights" in details
