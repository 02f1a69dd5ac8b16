"""Readable reasons: which signal put an item in a user's list, said in words."""

from __future__ import annotations

from encoders.languages import base_language

LANGUAGE_NAMES = {
    "en": "English", "zh-Hans": "Chinese", "zh-Hant": "Chinese (Traditional)", "zh": "Chinese",
    "ru": "Russian", "de": "German", "fr": "French", "es": "Spanish", "pt": "Portuguese",
    "ko": "Korean", "ja": "Japanese", "pl": "Polish", "it": "Italian", "cs": "Czech",
    "tr": "Turkish", "th": "Thai", "ro": "Romanian", "hu": "Hungarian", "uk": "Ukrainian",
    "nl": "Dutch", "fi": "Finnish", "sv": "Swedish", "el": "Greek", "da": "Danish",
    "bg": "Bulgarian", "no": "Norwegian", "vi": "Vietnamese", "ar": "Arabic", "hi": "Hindi",
    "he": "Hebrew", "id": "Indonesian",
}


def language_name(tag: str | None) -> str | None:
    """`pt-BR` -> `Portuguese (BR)`; unknown tags are returned as they are."""
    if not tag:
        return None
    if tag in LANGUAGE_NAMES:
        return LANGUAGE_NAMES[tag]
    base = base_language(tag)
    name = LANGUAGE_NAMES.get(base)
    if name is None:
        return tag
    return f"{name} ({tag.split('-')[-1]})" if base != tag else name


def _verb(clicked: bool, lang: str | None) -> str:
    """'which you reviewed in German' / 'which you viewed'."""
    if clicked:
        return "which you viewed"
    verb = "which you reviewed"
    name = language_name(lang)
    return f"{verb} in {name}" if name else verb


def similar_to(title: str, clicked: bool, lang: str | None) -> str:
    return f"similar to {title}, {_verb(clicked, lang)}"


def together_with(title: str) -> str:
    return f"often reviewed together with {title}"


def popular_with(lang: str | None) -> str:
    name = language_name(lang)
    return f"popular with {name} readers" if name else "popular right now"


TRENDING = "trending now"
NEW = "new"
POPULAR = "popular and well reviewed"
QUERY = "matches your search"
EXPLORE = "something different, to explore"
