"""Regression: a ranking with NaN scores was sent as `"score": null`, which every app's
`Recommendation` parser rejects (tests/faults/test_crash.py found it). The runner now turns it
into a ranking error instead of a message that breaks the topic's contract."""

from __future__ import annotations

import math
from typing import Any

from ranking.engine import Recommended
from streams.worker.engine_runner import EngineRunner, RankJob


class Engine:
    encoder = None

    def __init__(self, score: float) -> None:
        self.score = score

    def recommend(self, user_id: str, profile: Any, k: int, **kwargs: Any) -> list[Recommended]:
        return [Recommended("a", 1.0, "new", "A", "en"), Recommended("b", self.score, "new", "B", "en")]


def test_non_finite_scores_are_a_ranking_error() -> None:
    for score, ok in ((0.5, True), (math.nan, False), (math.inf, False)):
        runner = EngineRunner(Engine(score))  # type: ignore[arg-type]
        try:
            (result,) = runner._recommend_all([RankJob("u1", None, 2, 0.0)])
        finally:
            runner.close()
        assert isinstance(result, list) == ok, (score, result)
        if not ok:
            assert "non-finite score" in str(result)
