"""Baselines, each a `Ranker`: cumulative and decayed popularity, co-occurrence kNN,
River's BiasedMF with sampled negatives, and content only (mean review vectors)."""

from __future__ import annotations

import random
from collections.abc import Collection

import numpy as np
from river import optim, reco

from ranking.base import Interaction, NewItem, top_k
from ranking.catalog import ItemIndex, grow
from ranking.signals import HOUR, CoCounts, DecayedCounts
from ranking.vectors import unit


class _Items:
    """Known items of one baseline and the score-to-top-k step they all share."""

    def __init__(self) -> None:
        self.index = ItemIndex()
        self.active = np.zeros(0, bool)

    def add_item(self, item: NewItem) -> None:
        row, _ = self.index.add(item.item_id)
        self.active = grow(self.active, row + 1)
        self.active[row] = True

    def remove_item(self, item_id: str) -> None:
        row = self.index.row(item_id)
        if row is not None:
            self.active[row] = False

    def _pick(self, scores: np.ndarray, k: int, exclude: Collection[str]) -> list[tuple[str, float]]:
        n = len(self.index)
        s = np.where(self.active[:n], scores[:n].astype(np.float64), -np.inf)
        for item_id in exclude:
            row = self.index.row(item_id)
            if row is not None:
                s[row] = -np.inf
        return [(self.index.ids[r], float(s[r])) for r in top_k(s, k)]


class Popularity(_Items):
    """Most reviewed items so far (cumulative counts)."""

    name = "popularity"

    def __init__(self) -> None:
        super().__init__()
        self.counts = np.zeros(0, np.float64)

    def learn(self, event: Interaction) -> None:
        row, _ = self.index.add(event.item_id)
        self.counts = grow(self.counts, row + 1)
        self.counts[row] += 1

    def recommend(self, user_id: str, k: int, now: float,
                  exclude: Collection[str] = ()) -> list[tuple[str, float]]:
        return self._pick(grow(self.counts, len(self.index)), k, exclude)


class RecentPopularity(_Items):
    """Exponentially decayed counts; the default half-life of one day is the dev-data pick
    the issue reports (1 day: HR@10 0.189, 3 days: 0.183)."""

    name = "recent_popularity"

    def __init__(self, half_life_s: float = 24 * HOUR) -> None:
        super().__init__()
        self.counts = DecayedCounts([half_life_s])

    def learn(self, event: Interaction) -> None:
        row, _ = self.index.add(event.item_id)
        self.counts.add(row, event.ts)

    def recommend(self, user_id: str, k: int, now: float,
                  exclude: Collection[str] = ()) -> list[tuple[str, float]]:
        return self._pick(self.counts.values(now, len(self.index))[:, 0], k, exclude)


class CoOccurrence(_Items):
    """Item-to-item kNN on cosine-normalised co-review counts, summed over the user's items."""

    name = "cooccurrence"

    def __init__(self) -> None:
        super().__init__()
        self.co = CoCounts()
        self.history: dict[str, list[int]] = {}

    def learn(self, event: Interaction) -> None:
        row, _ = self.index.add(event.item_id)
        hist = self.history.setdefault(event.user_id, [])
        self.co.add(row, hist)
        if row not in hist:
            hist.append(row)

    def recommend(self, user_id: str, k: int, now: float,
                  exclude: Collection[str] = ()) -> list[tuple[str, float]]:
        total, _ = self.co.scores(self.history.get(user_id, []), len(self.index))
        return self._pick(total, k, exclude)


class BiasedMF(_Items):
    """River `reco.BiasedMF` learnt online: each event is a positive (1) and `negatives`
    items drawn uniformly from the known ones are negatives (0). Scoring reads the model's
    parameters into matrices kept in step with its updates, so ranking is one mat-vec."""

    name = "biased_mf"

    def __init__(self, n_factors: int = 32, negatives: int = 1, seed: int = 0) -> None:
        super().__init__()
        self.model = reco.BiasedMF(n_factors=n_factors, bias_optimizer=optim.SGD(0.01),
                                   latent_optimizer=optim.SGD(0.05), l2_bias=0.001,
                                   l2_latent=0.001, seed=seed)
        self.negatives = negatives
        self.rng = random.Random(seed)
        self.item_bias = np.zeros(0, np.float64)
        self.item_lat = np.zeros((0, n_factors), np.float64)

    def _sync(self, row: int) -> None:
        item = self.index.ids[row]
        self.item_bias = grow(self.item_bias, row + 1)
        self.item_lat = grow(self.item_lat, row + 1)
        self.item_bias[row] = self.model.i_biases[item]
        self.item_lat[row] = self.model.i_latents[item]

    def learn(self, event: Interaction) -> None:
        row, _ = self.index.add(event.item_id)
        self.model.learn_one(event.user_id, event.item_id, 1.0)
        self._sync(row)
        n = len(self.index)
        for _ in range(self.negatives if n > 1 else 0):
            neg = self.rng.randrange(n)
            if neg != row:
                self.model.learn_one(event.user_id, self.index.ids[neg], 0.0)
                self._sync(neg)

    def recommend(self, user_id: str, k: int, now: float,
                  exclude: Collection[str] = ()) -> list[tuple[str, float]]:
        n = len(self.index)
        self.item_bias, self.item_lat = grow(self.item_bias, n), grow(self.item_lat, n)
        if user_id in self.model.u_latents:
            user = self.model.u_latents[user_id]
            scores = self.item_bias[:n] + self.item_lat[:n] @ user
        else:
            scores = self.item_bias[:n].copy()
        return self._pick(scores, k, exclude)


class Content(_Items):
    """Encoder only: the user is the mean vector of the items they reviewed, an item the
    mean of its earlier review vectors (raw, not language-neutral: the naive signal)."""

    name = "content"

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.sums = np.zeros((0, dim), np.float32)
        self.history: dict[str, list[int]] = {}

    def learn(self, event: Interaction) -> None:
        row, _ = self.index.add(event.item_id)
        self.sums = grow(self.sums, row + 1)
        hist = self.history.setdefault(event.user_id, [])
        if row not in hist:
            hist.append(row)
        if event.review_vector is not None:
            self.sums[row] += event.review_vector

    def recommend(self, user_id: str, k: int, now: float,
                  exclude: Collection[str] = ()) -> list[tuple[str, float]]:
        n = len(self.index)
        self.sums = grow(self.sums, n)
        items = self.sums[:n]
        norms = np.linalg.norm(items, axis=1)
        unit_items = items / np.maximum(norms, 1e-9)[:, None]
        hist = self.history.get(user_id, [])
        if not hist:
            return self._pick(np.zeros(n), k, exclude)
        user = unit(unit_items[hist].mean(axis=0))
        scores = np.where(norms > 0, unit_items @ user, -1.0)
        return self._pick(scores, k, exclude)
