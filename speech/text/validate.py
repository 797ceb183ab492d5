"""Row checks that run before any model: each failing row gets a reason, never a crash."""

from __future__ import annotations

import unicodedata
from typing import Callable


class TextError(ValueError):
    """A row's text (or voice) cannot be synthesized; the message is the row's ``error``."""


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
