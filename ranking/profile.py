"""User profiles as plain JSON: what the users table stores and `Recommender.observe` updates.

A profile holds a time-decayed multilingual interest vector (a click, a positive review and
a negative review weigh differently, and a negative review pushes the vector away from the
item), the vector of the user's own review texts, the languages the user reads (clicks) and
writes (reviews), the last items, counters, timestamps, and the ids of the latest events so
that the same event delivered twice changes nothing. Vectors are int8 base64 so that a busy
user's profile stays under ~2 KB.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ranking.vectors import decode_vector, encode_vector, unit

PROFILE_VERSION = 1
MAX_RECENT_ITEMS = 20
MAX_EVENT_IDS = 12


@dataclass(frozen=True)
class ProfileConfig:
    """How events move a profile. Product choices, the same for every data set."""

    click_weight: float = 1.0
    positive_weight: float = 2.0
    negative_weight: float = -1.0
    half_life_s: float = 30 * 86400.0


def new_profile(user_id: str) -> dict[str, Any]:
    """The profile of a user never seen before."""
    return {"v": PROFILE_VERSION, "user_id": user_id, "n": 0, "n_click": 0, "n_pos": 0,
            "n_neg": 0, "first_ts": None, "last_ts": None, "interest": None, "interest_w": 0.0,
            "own": None, "own_w": 0.0, "read": {}, "written": {}, "recent": [], "events": []}


def has_event(profile: Mapping[str, Any] | None, event_id: str) -> bool:
    """True when this event was folded into the profile already (a redelivery)."""
    if not profile:
        return False
    return event_id in profile.get("events", ())


def _decayed(vec_b64: str | None, weight: float, dt: float, half_life: float) -> np.ndarray | None:
    if vec_b64 is None:
        return None
    return decode_vector(vec_b64) * (weight * 0.5 ** (max(dt, 0.0) / half_life))


def apply_event(profile: Mapping[str, Any] | None, *, user_id: str, event_id: str,
                item_id: str, ts: float, kind: str, positive: bool, lang: str | None,
                item_vector: np.ndarray | None, review_vector: np.ndarray | None,
                config: ProfileConfig = ProfileConfig()) -> dict[str, Any]:
    """Pure: the profile after one click (`kind="click"`) or review (`kind="review"`).

    `item_vector` is the item's (language-neutral) vector, `review_vector` the vector of the
    user's own review text; either may be None. The input is never mutated.
    """
    if has_event(profile, event_id):
        return _copy(profile)  # type: ignore[arg-type]
    p = _copy(profile) if profile else new_profile(user_id)
    dt = ts - p["last_ts"] if p["last_ts"] is not None else 0.0
    if kind == "click":
        weight, p["n_click"] = config.click_weight, p["n_click"] + 1
    elif positive:
        weight, p["n_pos"] = config.positive_weight, p["n_pos"] + 1
    else:
        weight, p["n_neg"] = config.negative_weight, p["n_neg"] + 1
    p["n"] += 1

    if item_vector is not None:
        old = _decayed(p["interest"], p["interest_w"], dt, config.half_life_s)
        new = weight * np.asarray(item_vector, dtype=np.float32)
        vec = new if old is None else old + new
        p["interest_w"] = float(np.linalg.norm(vec))
        p["interest"] = encode_vector(unit(vec)) if p["interest_w"] > 0 else None
    if review_vector is not None:
        old = _decayed(p["own"], p["own_w"], dt, config.half_life_s)
        vec = np.asarray(review_vector, dtype=np.float32) if old is None else old + review_vector
        p["own_w"] = float(np.linalg.norm(vec))
        p["own"] = encode_vector(unit(vec)) if p["own_w"] > 0 else None

    if lang:
        side = "read" if kind == "click" else "written"
        p[side][lang] = p[side].get(lang, 0) + 1
    p["recent"] = [r for r in p["recent"] if r[0] != item_id][-(MAX_RECENT_ITEMS - 1):]
    p["recent"].append([item_id, round(weight, 2), lang])
    p["events"] = (p["events"] + [event_id])[-MAX_EVENT_IDS:]
    p["first_ts"] = ts if p["first_ts"] is None else min(p["first_ts"], ts)
    p["last_ts"] = ts if p["last_ts"] is None else max(p["last_ts"], ts)
    return p


def _copy(profile: Mapping[str, Any]) -> dict[str, Any]:
    """A copy deep enough that updating it never touches the original (faster than deepcopy)."""
    p = dict(profile)
    p["read"], p["written"] = dict(p["read"]), dict(p["written"])
    p["recent"] = [list(r) for r in p["recent"]]
    p["events"] = list(p["events"])
    return p


def add_review_vector(profile: Mapping[str, Any], review_vector: np.ndarray, ts: float,
                      config: ProfileConfig = ProfileConfig()) -> dict[str, Any]:
    """Pure: fold the vector of a review written at `ts` into the user's own-text vector after
    `apply_event` applied the review without it (the worker's encoder got to the text later).

    The own-text vector is a sum of texts that halve in weight every half-life; `own_ts` is
    the time the stored sum refers to, so a text folded in late weighs what it would have
    with the event, and texts folded in order decay as in `apply_event`. The input is never
    mutated.
    """
    p = dict(profile)
    ref = p.get("own_ts") or p["last_ts"] or ts
    half = config.half_life_s
    new = np.asarray(review_vector, np.float32) * 0.5 ** (max(ref - ts, 0.0) / half)
    old = _decayed(p["own"], p["own_w"], ts - ref, half)
    vec = new if old is None else old + new
    p["own_w"] = float(np.linalg.norm(vec))
    p["own"] = encode_vector(unit(vec)) if p["own_w"] > 0 else None
    p["own_ts"] = max(ref, ts)
    return p


def main_language(profile: Mapping[str, Any] | None) -> str | None:
    """The user's most frequent language so far (reviews and clicks), ties to the first seen."""
    if not profile:
        return None
    counts: dict[str, int] = dict(profile.get("written", {}))
    for lang, n in profile.get("read", {}).items():
        counts[lang] = counts.get(lang, 0) + n
    return max(counts, key=counts.__getitem__) if counts else None


def languages(profile: Mapping[str, Any] | None) -> list[str]:
    """Every language the user reads or writes, most used first."""
    if not profile:
        return []
    counts: dict[str, int] = dict(profile.get("written", {}))
    for lang, n in profile.get("read", {}).items():
        counts[lang] = counts.get(lang, 0) + n
    return sorted(counts, key=lambda k: -counts[k])


def interest_vector(profile: Mapping[str, Any] | None) -> np.ndarray | None:
    """Unit interest vector, or None before any event with an item vector."""
    return decode_vector(profile["interest"]) if profile and profile.get("interest") else None


def own_review_vector(profile: Mapping[str, Any] | None) -> np.ndarray | None:
    """Unit vector of the user's own review texts, or None."""
    return decode_vector(profile["own"]) if profile and profile.get("own") else None


def history(profile: Mapping[str, Any] | None) -> list[str]:
    """The last items the user interacted with, oldest first."""
    return [r[0] for r in profile.get("recent", ())] if profile else []


def to_json(profile: Mapping[str, Any]) -> str:
    """Compact JSON text of a profile."""
    return json.dumps(profile, separators=(",", ":"), ensure_ascii=False)


def from_json(text: str | bytes) -> dict[str, Any]:
    """Parse a profile written by `to_json`; refuses other versions with a clear message."""
    p = json.loads(text)
    if not isinstance(p, dict) or p.get("v") != PROFILE_VERSION:
        raise ValueError(f"not an xlrec profile of version {PROFILE_VERSION}")
    return p
