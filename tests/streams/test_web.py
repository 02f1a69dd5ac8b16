"""`streams.worker.web`: the latest recommendations kept for HTTP are bounded."""

from __future__ import annotations

from streams.worker.web import LatestRecommendations


def test_latest_recommendations_are_bounded() -> None:
    latest = LatestRecommendations(max_users=2)
    for user in ("a", "b", "a", "c"):
        latest.put(user, user.encode())
    assert (latest.get("a"), latest.get("b"), latest.get("c")) == (b"a", None, b"c")
