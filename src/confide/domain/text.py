"""Message and away text rules: MS1 (length), MS2 (emoji codes), MS4 (plain text).

Text is stored and shipped exactly as plain text. Nothing here produces markup; the
web layer escapes on output and turns links into anchors itself (MS4).
"""

import re
import unicodedata
from functools import cache

import emoji

from confide.domain.errors import InvalidInput

MAX_MESSAGE_CHARS = 5000
MAX_AWAY_CHARS = 600
MAX_NAME_CHARS = 200

_ALLOWED_CONTROLS = {"\n", "\t"}


_CODE = re.compile(r":[A-Za-z0-9_+\-&.'()!#*]+:")


def emojize(text: str) -> str:
    """MS2: `:grin:`, `:smile:`, `:thumbsup:` … become emoji; unknown codes stay as typed.

    Scans left to right and lets a closing colon open the next code, so "at 3:30:grin:"
    still turns `:grin:` into an emoji though `:30:` is no code.
    """
    if ":" not in text:
        return text
    codes = _code_map()
    out: list[str] = []
    i = 0
    while (start := text.find(":", i)) != -1:
        m = _CODE.match(text, start)
        if m is not None and (char := codes.get(m.group())) is not None:
            out.append(text[i:start])
            out.append(char)
            i = m.end()
        else:
            out.append(text[i : start + 1])
            i = start + 1
    out.append(text[i:])
    return "".join(out)


def _is_blank(text: str) -> bool:
    """Whitespace and invisible format characters (zero-width space, BOM …) only."""
    return all(ch.isspace() or unicodedata.category(ch) == "Cf" for ch in text)


def _check_characters(text: str, what: str) -> None:
    for ch in text:
        if "\ud800" <= ch <= "\udfff":
            raise InvalidInput("invalid_text", f"The {what} contains invalid characters.")
        if ch not in _ALLOWED_CONTROLS and unicodedata.category(ch) == "Cc":
            raise InvalidInput("invalid_text", f"The {what} contains control characters.")


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def prepare_message_text(raw: str) -> str:
    """MS1 + MS2: the text as it will be stored, or InvalidInput.

    Length counts Unicode code points after emoji codes became emoji, so `:grin:`
    counts as one character. Blank (whitespace-only) messages are refused.
    """
    text = emojize(_normalise_newlines(raw))
    _check_characters(text, "message")
    if _is_blank(text):
        raise InvalidInput("message_blank", "Write a message before sending.")
    if len(text) > MAX_MESSAGE_CHARS:
        raise InvalidInput(
            "message_too_long",
            f"A message can hold at most {MAX_MESSAGE_CHARS:,} characters "
            f"(this one has {len(text):,}).",
        )
    return text


def prepare_away_text(raw: str) -> str:
    """AW2: away text, up to 600 characters after emoji codes; blank is refused."""
    text = emojize(_normalise_newlines(raw)).strip()
    _check_characters(text, "away message")
    if _is_blank(text):
        raise InvalidInput("away_text_blank", "The away message cannot be empty.")
    if len(text) > MAX_AWAY_CHARS:
        raise InvalidInput(
            "away_text_too_long",
            f"The away message can hold at most {MAX_AWAY_CHARS} characters.",
        )
    return text


def prepare_name(raw: str, what: str = "name") -> str:
    text = " ".join(raw.split())
    _check_characters(text, what)
    if not text:
        raise InvalidInput("name_blank", f"The {what} cannot be empty.")
    if len(text) > MAX_NAME_CHARS:
        raise InvalidInput("name_too_long", f"The {what} can hold at most 200 characters.")
    return text


MAX_SEARCH_CHARS = 100


def prepare_search(raw: str) -> str:
    """A name search: trimmed, at most 100 characters, no control characters."""
    text = " ".join(raw.split())
    _check_characters(text, "search")
    if len(text) > MAX_SEARCH_CHARS:
        raise InvalidInput("query_too_long", "Search for at most 100 characters.")
    return text


_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


def prepare_email(raw: str) -> str:
    text = raw.strip().lower()
    if len(text) > 254 or not _EMAIL.match(text):
        raise InvalidInput("invalid_email", "Enter a valid email address.")
    _check_characters(text, "email")
    return text


@cache
def _code_map() -> dict[str, str]:
    """Every English name and alias code of the `emoji` package, e.g. `:thumbsup:`."""
    codes: dict[str, str] = {}
    for char, data in emoji.EMOJI_DATA.items():
        for code in [data.get("en", ""), *data.get("alias", [])]:
            if code and code.isascii():
                codes.setdefault(code, char)
    return codes


@cache
def _alias_codes() -> tuple[tuple[str, str], ...]:
    return tuple(sorted(_code_map().items()))


def suggest_emoji_codes(prefix: str, limit: int = 8) -> list[tuple[str, str]]:
    """MS2 composer suggestions: `(code, emoji)` pairs whose code starts with prefix."""
    p = prefix.strip().lower()
    if not p.startswith(":"):
        p = ":" + p
    if len(p) < 3:
        return []
    out = [(code, char) for code, char in _alias_codes() if code.startswith(p)]
    out.sort(key=lambda pair: (len(pair[0]), pair[0]))
    return out[:limit]
