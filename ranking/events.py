"""What ranking reads from the events it learns from, as structural types.

`ranking` does not import the wire contracts (`streams.contracts.schemas`): any object with
these read-only attributes will do, and the pydantic models there satisfy them as they are.
Each kind carries a `type` literal ("item", "click", "review"); code tells the kinds apart
by it, not by isinstance. The frozen dataclasses below are ranking's own events, for callers
that make events themselves (the evaluation harness).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol


class ItemEvent(Protocol):
    """A new or updated catalog item; `deleted` removes it from recommendations."""

    @property
    def type(self) -> Literal["item"]: ...
    @property
    def item_id(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def description(self) -> str | None: ...
    @property
    def text(self) -> str | None: ...
    @property
    def lang(self) -> str | None: ...
    @property
    def ts(self) -> float: ...
    @property
    def deleted(self) -> bool: ...


class _UserAction(Protocol):
    """What clicks and reviews share: who did it to which item, when, in which language."""

    @property
    def event_id(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def item_id(self) -> str: ...
    @property
    def ts(self) -> float: ...
    @property
    def lang(self) -> str | None: ...


class ClickEvent(_UserAction, Protocol):
    """A user opened, played or bought an item."""

    @property
    def type(self) -> Literal["click"]: ...


class ReviewEvent(_UserAction, Protocol):
    """A user reviewed an item: its text (any language) and whether the user liked it."""

    @property
    def type(self) -> Literal["review"]: ...
    @property
    def text(self) -> str: ...
    @property
    def positive(self) -> bool: ...


UserEvent = ClickEvent | ReviewEvent
AnyEvent = ItemEvent | ClickEvent | ReviewEvent


@dataclass(frozen=True)
class Item:
    """An `ItemEvent` made by ranking itself."""

    item_id: str
    title: str
    ts: float
    lang: str | None = None
    description: str | None = None
    text: str | None = None
    deleted: bool = False
    type: Literal["item"] = "item"


@dataclass(frozen=True)
class Click:
    """A `ClickEvent` made by ranking itself."""

    event_id: str
    user_id: str
    item_id: str
    ts: float
    lang: str | None = None
    type: Literal["click"] = "click"


@dataclass(frozen=True)
class Review:
    """A `ReviewEvent` made by ranking itself."""

    event_id: str
    user_id: str
    item_id: str
    ts: float
    positive: bool
    lang: str | None = None
    text: str = ""
    type: Literal["review"] = "review"
