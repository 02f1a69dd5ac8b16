"""Regression: a ranking with NaN scores was sent as `"score": null`, which every app's
`Recommendation` parser rejects (tests/faults/test_crash.py found it). The runner now turns it
into a ranking error instead of a message that breaks the topic's contract."""

from __future__ import annotations

import math
from collections.abc import Callable

from streams.worker.engine_runner import EngineRunner, RankJob
from tests.streams.fake_engine import FakeEngine, catalog


def second_scores(score: float) -> Callable[[int], float]:
    """The first item scores 1.0, the second `score`."""
    return lambda rank: 1.0 if rank == 0 else score


def test_non_finite_scores_are_a_ranking_error() -> None:
    for score, ok in ((0.5, True), (math.nan, False), (math.inf, False)):
        engine = FakeEngine(items=catalog(2), score=second_scores(score))
        runner = EngineRunner(engine)
        try:
            (result,) = runner._recommend_all([RankJob("u1", None, 2, 0.0)])
        finally:
            runner.close()
        assert isinstance(result, list) == ok, (score, result)
        if ok:
            assert isinstance(result, list) and [r.score for r in result] == [1.0, 0.5]
        else:
            assert "non-finite score" in str(result)
