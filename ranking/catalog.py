"""The worker-side item catalog: dense rows of vectors and counters for fast scoring.

Each item's vector is its own text (title/description) blended with the reviews it has
received, every review embedded once and folded in incrementally. Vectors here are already
language-neutral (see `ranking.vectors.LanguageCentering`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ranking.top_rows import TopRows
from ranking.vectors import unit

TITLE_WEIGHT = 2.0   # the item's own text counts as much as two reviews
NEWEST = 1000        # newest items kept listed (fresh candidates without a catalog scan)


@dataclass
class ItemIndex:
    """item_id <-> dense row, growing by doubling; rows are never reused."""

    ids: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)

    def row(self, item_id: str) -> int | None:
        return self.rows.get(item_id)

    def add(self, item_id: str) -> tuple[int, bool]:
        """(row, created)."""
        row = self.rows.get(item_id)
        if row is not None:
            return row, False
        self.rows[item_id] = row = len(self.ids)
        self.ids.append(item_id)
        return row, True

    def __len__(self) -> int:
        return len(self.ids)


def grow(a: np.ndarray, n: int) -> np.ndarray:
    """`a` with at least n rows (capacity doubles; new rows are zero)."""
    if a.shape[0] >= n:
        return a
    cap = max(n, 2 * a.shape[0], 64)
    out = np.zeros((cap,) + a.shape[1:], dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


class ItemCatalog:
    """Items known so far with their blended vectors, language counts and counters."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.index = ItemIndex()
        self.text_vec = np.zeros((0, dim), np.float32)   # own text, neutral, unit (0 = none)
        # An item's vector is its text blended with its reviews (`vectors`): without reviews,
        # its text vector itself. The review sum and the blend are kept only for items with
        # reviews: in a large catalog most have none, and dense arrays would cost 2 x 1.5 GB
        # at a million items.
        self.review_slot = np.zeros(0, np.int32)          # 1 + its row in review_sums; 0: none
        self.review_sums = np.zeros((0, dim), np.float32)
        self.blended = np.zeros((0, dim), np.float32)     # unit(TITLE_WEIGHT * text + reviews)
        self.n_reviewed = 0
        self.n_reviews = np.zeros(0, np.int32)
        self.reviews_pushed = np.zeros(0, np.int32)     # n_reviews when the store last got it
        self.n_events = np.zeros(0, np.int32)
        self.n_pos = np.zeros(0, np.int32)
        self.first_ts = np.zeros(0, np.float64)
        self.active = np.zeros(0, bool)
        self.titles: list[str | None] = []
        self.declared_lang: list[str | None] = []
        self.lang_counts: list[dict[str, int]] = []
        self.newest = TopRows(NEWEST)                     # by first_ts

    def __len__(self) -> int:
        return len(self.index)

    ARRAYS = ("text_vec", "n_reviews", "reviews_pushed", "n_events", "n_pos", "first_ts", "active")
    LISTS = ("titles", "declared_lang", "lang_counts")

    def rows_state(self, a: int, b: int) -> dict[str, Any]:
        """Rows a..b of every per-item field (for a snapshot taken piece by piece)."""
        slots = self.review_slot[a:b]
        return {**{name: getattr(self, name)[a:b] for name in self.ARRAYS + self.LISTS},
                "reviewed": slots > 0, "review_sums": self.review_sums[slots[slots > 0] - 1]}

    @classmethod
    def from_rows(cls, dim: int, ids: list[str], pieces: list[dict[str, Any]]) -> ItemCatalog:
        """The catalog of `ids` from the `rows_state` pieces of all its rows, in order."""
        catalog = cls(dim)
        for item_id in ids:
            catalog.index.add(item_id)
        for name in cls.ARRAYS:
            setattr(catalog, name, np.concatenate([p[name] for p in pieces]) if pieces
                    else getattr(catalog, name))
        for name in cls.LISTS:
            setattr(catalog, name, [v for p in pieces for v in p[name]])
        n = len(ids)
        reviewed = np.concatenate([p["reviewed"] for p in pieces]) if pieces else np.zeros(0, bool)
        catalog.n_reviewed = int(reviewed.sum())
        catalog.review_slot = np.zeros(n, np.int32)
        catalog.review_slot[reviewed] = np.arange(1, catalog.n_reviewed + 1)
        if pieces:
            catalog.review_sums = np.concatenate([p["review_sums"] for p in pieces])
        catalog.blended = np.zeros_like(catalog.review_sums)
        for row in np.flatnonzero(reviewed).tolist():
            catalog._blend(row)
        newest = np.argsort(catalog.first_ts[:n], kind="stable")[-NEWEST:]
        for row in newest.tolist():
            catalog.newest.update(row, float(catalog.first_ts[row]))
        return catalog

    def _ensure(self, item_id: str, ts: float) -> int:
        row, created = self.index.add(item_id)
        if created:
            n = len(self.index)
            for name in (*self.ARRAYS, "review_slot"):
                setattr(self, name, grow(getattr(self, name), n))
            self.first_ts[row] = ts
            self.newest.update(row, ts)
            self.titles.append(None)
            self.declared_lang.append(None)
            self.lang_counts.append({})
        return row

    def upsert(self, item_id: str, ts: float, title: str | None, lang: str | None,
               text_vector: np.ndarray | None) -> int:
        """Add or update an item's own text; returns its row. Re-activates a deleted item."""
        row = self._ensure(item_id, ts)
        if ts < self.first_ts[row]:
            self.first_ts[row] = ts
            self.newest.update(row, ts)
        self.titles[row] = title or self.titles[row]
        self.declared_lang[row] = lang or self.declared_lang[row]
        if text_vector is not None:
            self.text_vec[row] = text_vector
        self.active[row] = True
        self._blend(row)
        return row

    def touch(self, item_id: str, ts: float) -> int:
        """The row of an item an event names, made if unknown: it gathers the item's counts
        but stays out of recommendations until an item event names it (`upsert`)."""
        return self._ensure(item_id, ts)

    def delete(self, item_id: str) -> int | None:
        row = self.index.row(item_id)
        if row is not None:
            self.active[row] = False
        return row

    def add_event(self, row: int, positive: bool, lang: str | None,
                  review_vector: np.ndarray | None) -> None:
        """Count one user event on the item and fold its (neutral) review vector in."""
        self.n_events[row] += 1
        self.n_pos[row] += int(positive)
        if lang:
            counts = self.lang_counts[row]
            counts[lang] = counts.get(lang, 0) + 1
        if review_vector is not None:
            self.add_review(row, review_vector)

    def add_review(self, row: int, review_vector: np.ndarray) -> None:
        """Fold one (neutral) review vector into the item's vector."""
        slot = int(self.review_slot[row]) - 1
        if slot < 0:
            slot = self.n_reviewed
            self.n_reviewed += 1
            self.review_sums = grow(self.review_sums, self.n_reviewed)
            self.blended = grow(self.blended, self.n_reviewed)
            self.review_slot[row] = slot + 1
        self.review_sums[slot] += review_vector
        self.n_reviews[row] += 1
        self._blend(row)

    def _blend(self, row: int) -> None:
        slot = int(self.review_slot[row]) - 1
        if slot >= 0:
            self.blended[slot] = unit(TITLE_WEIGHT * self.text_vec[row] + self.review_sums[slot])

    def vectors(self, rows: np.ndarray | list[int]) -> np.ndarray:
        """[len(rows), dim]: each item's vector (0 = none yet), unit length."""
        rows = np.asarray(rows, np.int64)
        out = self.text_vec[rows]
        slots = self.review_slot[rows]
        reviewed = slots > 0
        out[reviewed] = self.blended[slots[reviewed] - 1]
        return out

    def text_and_vectors(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(text vectors, `vectors`) of `rows`, from one gather of the text vectors; the two
        are the same array when none of the rows has reviews (read them, do not write)."""
        text = self.text_vec[rows]
        slots = self.review_slot[rows]
        reviewed = slots > 0
        if not reviewed.any():
            return text, text
        out = text.copy()
        out[reviewed] = self.blended[slots[reviewed] - 1]
        return text, out

    def vector(self, row: int) -> np.ndarray:
        slot = int(self.review_slot[row]) - 1
        return (self.blended[slot] if slot >= 0 else self.text_vec[row]).copy()

    def scores(self, query: np.ndarray, n: int) -> np.ndarray:
        """The first n items' vectors times `query`, without building their matrix."""
        out = self.text_vec[:n] @ query
        slots = self.review_slot[:n]
        reviewed = np.flatnonzero(slots)
        if reviewed.size:   # every blended vector times `query` in place, then picked
            out[reviewed] = (self.blended[: self.n_reviewed] @ query)[slots[reviewed] - 1]
        return out

    def content_scores(self, interest: np.ndarray, own: np.ndarray | None, n: int) -> np.ndarray:
        """[n, 3] float32 for the first n items: their vectors times `interest`, times `own`
        (0 without it) and their text vectors times `interest`, reading the vectors in place
        (a ranking that searches every item exactly gets its features from it too). One
        matrix-vector product per vector: a two-column product costs several times more on
        large catalogs (BLAS packs the matrix for it)."""
        out = np.zeros((n, 3), np.float32)
        text, blended = self.text_vec[:n], self.blended[: self.n_reviewed]
        slots = self.review_slot[:n]
        reviewed = np.flatnonzero(slots)
        for j, vector in ((0, interest), (1, own)):
            if vector is None:
                continue
            out[:, j] = text @ vector
            if j == 0:
                out[:, 2] = out[:, 0]
            if reviewed.size:
                out[reviewed, j] = (blended @ vector)[slots[reviewed] - 1]
        return out

    def main_lang(self, row: int) -> str | None:
        """The language most of the item's events so far were in, else its declared one."""
        counts = self.lang_counts[row]
        if counts:
            return max(counts, key=counts.__getitem__)
        return self.declared_lang[row]

    def langs(self, row: int) -> list[str]:
        out = sorted(self.lang_counts[row], key=lambda k: -self.lang_counts[row][k])
        lang = self.declared_lang[row]
        return out + [lang] if lang and lang not in out else out

    def title(self, row: int) -> str:
        return self.titles[row] or f"item {self.index.ids[row]}"

    def active_rows(self) -> np.ndarray:
        return np.flatnonzero(self.active[: len(self)])
