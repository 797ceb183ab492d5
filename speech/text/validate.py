"""Row checks that run before any model: each failing row gets a reason, never a crash."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import Literal

#: What happens to letters and digits a model cannot say (``--unknown-chars``).
UnknownChars = Literal["error", "drop", "spell"]


class TextError(ValueError):
    """A row's text (or voice) cannot be synthesized; the message is the row's ``error``.

    ``unknown``: the characters the model cannot say, when that is the reason (counted in
    the job's summary); ``spoken``: the row's text as normalized so far, when it got that far.
    """

    def __init__(self, message: str, *, unknown: str = "", spoken: str | None = None):
        super().__init__(message)
        self.unknown = unknown
        self.spoken = spoken


def is_spoken(char: str) -> bool:
    """Letters and digits are what a synthesizer must say; punctuation and symbols are optional."""
    return unicodedata.category(char)[0] in "LN"


def check_text(text: str, *, max_chars: int) -> None:
    """Reject text that no backend can turn into speech.

    Args:
        text: the normalized text of one row, prosody markers removed.
        max_chars: longest text accepted for one row (it is split into pieces later); longer
            text is far over what a row is meant to hold and is refused, not truncated.

    Raises:
        TextError: empty or whitespace-only text, text without a letter or digit, text over
            ``max_chars`` characters.
    """
    if not text.strip():
        raise TextError("text is empty")
    if not any(is_spoken(c) for c in text):
        raise TextError(f"text has nothing to say (only punctuation or symbols): {text[:40]!r}")
    if len(text) > max_chars:
        raise TextError(f"text is {len(text)} characters, over the limit of {max_chars} (max_text_chars)")


def unsayable_characters(text: str, sayable: Callable[[str], bool]) -> list[str]:
    """Letters and digits of ``text`` that ``sayable`` rejects, in order of first appearance."""
    found: dict[str, None] = {}
    for char in text:
        if is_spoken(char) and not sayable(char):
            found.setdefault(char)
    return list(found)


def describe_unsayable(chars: list[str], backend: str) -> str:
    """The error message for characters a backend cannot pronounce."""
    shown = ", ".join(repr(c) for c in chars[:10])
    more = f" and {len(chars) - 10} more" if len(chars) > 10 else ""
    return f"characters the {backend} model cannot say: {shown}{more}"


# Words of Unicode character names that say what kind of character it is, not which one.
_NAME_FILLER = re.compile(r"\b(?:LETTER|SMALL|CAPITAL|DIGIT|SYLLABLE|CHARACTER|SIGN|FULLWIDTH|HALFWIDTH)\b|[^A-Z ]")


def spoken_name(char: str, sayable: Callable[[str], bool]) -> str:
    """What ``char`` is called, in characters ``sayable`` accepts, or "" when there is no such name.

    A letter with marks says its base letter (``é`` -> ``e``, full-width ``Ａ`` -> ``A``);
    otherwise its Unicode name in English without the kind words (``п`` CYRILLIC SMALL
    LETTER PE -> ``cyrillic pe``, ``9`` DIGIT NINE -> ``nine``, ``ж`` -> ``cyrillic zhe``).
    """
    base = "".join(c for c in unicodedata.normalize("NFKD", char) if unicodedata.category(c)[0] != "M")
    if base and base != char and all(sayable(c) for c in base if is_spoken(c)):
        return base
    name = unicodedata.name(char, "")
    if re.search(r"-[0-9A-F]{4,}$", name):  # "CJK UNIFIED IDEOGRAPH-4F60": a code point, not a name
        return ""
    words = " ".join(_NAME_FILLER.sub(" ", name).split()).lower()
    if words and all(sayable(c) for c in words if is_spoken(c)):
        return words
    return ""


def handle_unsayable(text: str, chars: list[str], policy: UnknownChars, sayable: Callable[[str], bool],
                     markers: re.Pattern[str] | None = None) -> str:
    """``text`` with the unsayable ``chars`` dropped (``"drop"``) or replaced by their
    :func:`spoken_name` set off by spaces (``"spell"``; dropped when they have none).

    Prosody markers (``markers``) are left as they are. ``"error"`` is the caller's business.
    """
    replace = {c: (f" {spoken_name(c, sayable)} " if policy == "spell" else "") for c in chars}
    pattern = re.compile("|".join(re.escape(c) for c in chars))

    def fix(part: str) -> str:
        return pattern.sub(lambda m: replace[m.group(0)], part)

    if markers is None:
        fixed = fix(text)
    else:
        pieces, start = [], 0
        for marker in markers.finditer(text):
            pieces += [fix(text[start : marker.start()]), marker.group(0)]
            start = marker.end()
        fixed = "".join(pieces) + fix(text[start:])
    return " ".join(fixed.split())
