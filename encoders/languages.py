"""Language tags of the texts: BCP-47 normalisation, the Steam language names mapped to tags, base_language."""

from __future__ import annotations

import re

STEAM_LANGUAGES: dict[str, str] = {
    "english": "en", "schinese": "zh-Hans", "tchinese": "zh-Hant", "russian": "ru",
    "german": "de", "french": "fr", "spanish": "es", "brazilian": "pt-BR", "portuguese": "pt",
    "koreana": "ko", "japanese": "ja", "polish": "pl", "italian": "it", "czech": "cs",
    "turkish": "tr", "thai": "th", "romanian": "ro", "hungarian": "hu", "ukrainian": "uk",
    "dutch": "nl", "finnish": "fi", "swedish": "sv", "greek": "el", "danish": "da",
    "bulgarian": "bg", "norwegian": "no", "latam": "es-419", "vietnamese": "vi",
}

# language[-script][-region]: the subset of BCP-47 that apps actually send.
_BCP47 = re.compile(r"^([A-Za-z]{2,3})(?:-([A-Za-z]{4}))?(?:-([A-Za-z]{2}|[0-9]{3}))?$")


def normalize_language(value: str) -> str:
    """Return the canonical tag (`zh-hans` -> `zh-Hans`, `koreana` -> `ko`) or raise ValueError."""
    raw = value.strip()
    steam = STEAM_LANGUAGES.get(raw.lower())
    if steam:
        return steam
    match = _BCP47.match(raw)
    if not match:
        raise ValueError(f"{value!r} is not a BCP-47 language tag such as 'en', 'zh-Hans' or 'pt-BR'")
    lang, script, region = match.groups()
    tag = lang.lower()
    if script:
        tag += "-" + script.title()
    if region:
        tag += "-" + region.upper()
    return tag


def base_language(tag: str) -> str:
    """Primary subtag: `pt-BR` -> `pt`; zh keeps its script because the scripts differ."""
    parts = tag.split("-")
    if parts[0] == "zh" and len(parts) > 1 and len(parts[1]) == 4:
        return f"zh-{parts[1]}"
    return parts[0]
