"""User profiles: pure updates, idempotency, JSON round trip and size."""

from __future__ import annotations

import copy

import numpy as np

from ranking import profile as P
from ranking.vectors import decode_vector, encode_vector, unit


def _vec(seed: int, dim: int = 384) -> np.ndarray:
    return unit(np.random.default_rng(abs(seed) + 7919 * (seed < 0)).normal(size=dim))


def _apply(p, i: int, *, kind: str = "review", positive: bool = True, vec=None, lang="de"):
    return P.apply_event(p, user_id="u1", event_id=f"steam-{1000000 + i}", item_id=str(100000 + i),
                         ts=1.5e9 + i * 3600, kind=kind, positive=positive, lang=lang,
                         item_vector=_vec(i) if vec is None else vec, review_vector=_vec(-i - 1))


def test_same_event_twice_is_the_same_profile() -> None:
    p1 = _apply(None, 1)
    p2 = _apply(p1, 1)
    assert p2 == p1
    p3 = _apply(_apply(p1, 2), 2)
    assert p3 == _apply(p1, 2)


def test_update_is_pure() -> None:
    p1 = _apply(None, 1)
    before = copy.deepcopy(p1)
    _apply(p1, 2)
    assert p1 == before


def test_json_round_trip_and_size_of_a_busy_user() -> None:
    p = None
    for i in range(300):
        p = _apply(p, i, kind="click" if i % 3 == 0 else "review", positive=i % 5 != 0,
                   lang=["de", "en", "ko"][i % 3])
    text = P.to_json(p)
    assert P.from_json(text) == p
    assert len(text.encode()) <= 2048, len(text.encode())
    assert len(P.history(p)) == P.MAX_RECENT_ITEMS
    assert p["n"] == 300 and p["n_click"] == 100
    assert P.main_language(p) in ("de", "en", "ko")
    assert set(P.languages(p)) == {"de", "en", "ko"}
    assert p["read"] == {"de": 100} and set(p["written"]) == {"en", "ko"}


def test_negative_review_pushes_away() -> None:
    a, b = _vec(1), _vec(2)
    p = _apply(None, 1, vec=a)
    p = _apply(p, 2, vec=b)
    liked = P.interest_vector(p)
    p_neg = _apply(_apply(None, 1, vec=a), 3, vec=b, positive=False)
    disliked = P.interest_vector(p_neg)
    assert float(liked @ b) > 0.5
    assert float(disliked @ b) < 0


def test_vector_codec() -> None:
    v = _vec(7)
    assert float(decode_vector(encode_vector(v)) @ v) > 0.999
    assert len(encode_vector(v)) == 512


def test_from_json_refuses_other_things() -> None:
    import pytest

    with pytest.raises(ValueError):
        P.from_json('{"v": 99}')
