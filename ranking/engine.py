"""`Recommender`: the one ranking object that both the Faust agents and `xlrec evaluate` call.

Division of state, so that the worker can keep its Faust table plain JSON:
- a user's profile is a JSON dict (see `ranking.profile`) owned by the caller (the users
  table, or the evaluation harness); `observe` returns the updated dict and never mutates it;
- everything else (item catalog and vectors, trend counters, co-occurrence counts, the
  River models) lives in this object, in the worker, and is saved with `snapshot`/`restore`.

Typical use by the agents:
    rec = Recommender(store=EdgeStore(...), encoder=load_encoder())
    rec.upsert_item(item_event)                              # item agent
    profile = rec.observe(profile, click_or_review_event)    # profile agent
    items = rec.recommend(user_id, profile, k=10, now=ts)    # ranking agent
    rec.feedback(user_id, profile, shown=[...], clicked=item_id, now=ts)
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from encoders.base import Encoder
from ranking.store import VectorStore
from streams.schemas import ClickEvent, ItemEvent, ReviewEvent

Profile = dict[str, Any]
UserEvent = ClickEvent | ReviewEvent


class Recommended(NamedTuple):
    """One recommended item, in the shape of `streams.schemas.RecommendedItem`."""

    item_id: str
    score: float
    reason: str
    title: str | None
    lang: str | None


class Recommender:
    """Online hybrid recommender: candidates from several sources, features scored by a
    River model that learns from the stream itself, diversified, with a reason per item.

    `store` holds the item vectors for ANN search (Qdrant in the worker, `MemoryStore` in
    evaluation). `encoder` embeds item and review texts; pass None to run without content
    (vectors then come only from `review_vector`/`item_vector` arguments). `seed` makes
    exploration reproducible.
    """

    def __init__(self, store: VectorStore, encoder: Encoder | None, *, seed: int = 0,
                 config: "HybridConfig | None" = None) -> None:
        raise NotImplementedError

    # ---- items (item agent) -------------------------------------------------------------
    def upsert_item(self, event: ItemEvent, vector: np.ndarray | None = None) -> None:
        """Add or update a catalog item (its title/description text is embedded unless
        `vector` is given); `event.deleted` removes it from recommendations. Idempotent."""
        raise NotImplementedError

    def delete_item(self, item_id: str) -> None:
        """Stop recommending an item; unknown ids are ignored."""
        raise NotImplementedError

    def upsert_items(self, events: Sequence[ItemEvent]) -> None:
        """`upsert_item` for a batch, embedding all texts in one encoder call."""
        raise NotImplementedError

    # ---- user events (profile agent) ----------------------------------------------------
    def embed_reviews(self, events: Sequence[ReviewEvent]) -> dict[str, np.ndarray]:
        """Embed the texts of a batch of reviews at once (event_id -> vector), so the agent
        can pass them to `observe` and the encoder sees full batches. Empty texts are left out."""
        raise NotImplementedError

    def observe(self, profile: Profile | None, event: UserEvent, *,
                review_vector: np.ndarray | None = None) -> Profile:
        """Learn from one click or review and return the user's updated profile.

        The profile update itself is a pure function of (profile, event, vectors); besides
        it, the worker-side state learns: the ranker is trained on this event (the item the
        user chose against items it would have ranked higher), the review is folded into its
        item's vector, and trend and co-occurrence counters move. An event whose event_id is
        already in the profile changes nothing (returns the profile unchanged). An event on
        an unknown item makes the item known (title unknown until an ItemEvent names it).
        """
        raise NotImplementedError

    # ---- ranking (ranking agent, requests) ----------------------------------------------
    def recommend(self, user_id: str, profile: Profile | None, k: int = 10, *, now: float,
                  query_vector: np.ndarray | None = None, lang: str | None = None,
                  exclude: Collection[str] = ()) -> list[Recommended]:
        """Top-k items for a user at time `now`, best first, each with a readable reason.

        Items in the profile's history and in `exclude` are never returned. `query_vector`
        (a free-text query embedded by the same encoder) is blended with the profile;
        `lang` keeps items available in that language. A user without history gets
        language-aware trending and fresh items.
        """
        raise NotImplementedError

    def embed_query(self, text: str) -> np.ndarray:
        """The vector of a free-text query in any language, for `recommend(query_vector=...)`."""
        raise NotImplementedError

    def feedback(self, user_id: str, profile: Profile | None, shown: Sequence[str],
                 clicked: str | None, *, now: float) -> None:
        """Learn from an impression: `clicked` (one of `shown`) is a positive, the items shown
        and not clicked within the feedback window are negatives."""
        raise NotImplementedError

    # ---- persistence --------------------------------------------------------------------
    def snapshot(self, path: Path) -> None:
        """Write the worker-side state (River models, counters, catalog) to one file
        atomically; profiles are not included (they live in the users table)."""
        raise NotImplementedError

    def restore(self, path: Path) -> None:
        """Load a state written by `snapshot` and re-upsert the item vectors into the store."""
        raise NotImplementedError

    @property
    def model_version(self) -> str:
        """Identifier for `Recommendation.model_version`: ranker name, encoder and update count."""
        raise NotImplementedError
