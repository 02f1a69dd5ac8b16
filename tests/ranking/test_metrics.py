"""Metric functions on hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ranking.base import top_k
from ranking.offline_metrics import Stats, coverage, hit_rank, hr_at_k, ndcg_at_k


def test_hit_rank() -> None:
    assert hit_rank(["a", "b", "c"], "a") == 0
    assert hit_rank(["a", "b", "c"], "c") == 2
    assert hit_rank(["a", "b"], "z") is None
    assert hit_rank([], "a") is None


def test_hr_and_ndcg() -> None:
    assert hr_at_k(0) == 1.0 and hr_at_k(9) == 1.0
    assert hr_at_k(10) == 0.0 and hr_at_k(None) == 0.0
    assert ndcg_at_k(0) == 1.0
    assert ndcg_at_k(1) == pytest.approx(1 / math.log2(3))
    assert ndcg_at_k(9) == pytest.approx(1 / math.log2(11))
    assert ndcg_at_k(10) == 0.0 and ndcg_at_k(None) == 0.0
    assert hr_at_k(3, k=3) == 0.0


def test_stats_accumulate() -> None:
    s = Stats()
    for rank in (0, None, 1, 12):
        s.add(rank)
    d = s.to_dict()
    assert d["n"] == 4
    assert d["hr@10"] == 0.5
    assert d["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3)) / 4, abs=1e-6)
    assert Stats().to_dict() == {"hr@10": 0.0, "ndcg@10": 0.0, "n": 0}


def test_coverage() -> None:
    assert coverage({"a", "b"}, 4) == 0.5
    assert coverage(set(), 0) == 0.0


def test_top_k_is_stable_and_skips_excluded() -> None:
    scores = np.array([1.0, 3.0, 3.0, -np.inf, 2.0])
    assert top_k(scores, 3).tolist() == [1, 2, 4]
    assert top_k(scores, 10).tolist() == [1, 2, 4, 0]
    assert top_k(np.array([-np.inf]), 3).tolist() == []
