"""The driver every language's normalizer shares: find spans by pattern, have them read out.

A language module (:mod:`.en`, :mod:`.ko`, :mod:`.zh`) is an ordered list of :class:`Rule`:
a kind of span (date, time, phone number, currency, ...), the pattern that finds it, and
the function that reads it, which hands the numbers to the language's number library
(num2words, cn2an). Rules run in order over the whole text, most specific first (a date
before the plain numbers inside it); a rule's output has no digits left, so later rules
never re-read it. Whatever still needs reading after the last rule (a digit, ``%``, ``$``
...) is an error naming it: text is never sent to a model with something silently skipped.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass

#: A number as written: ``1234``, ``1,234,567``, ``3.14`` (Unicode digits too, as ``\d`` does).
NUMBER = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"

#: Symbols that stand for words; with digits (and other numerals: ``½``, ``²``) they are what
#: a normalizer must read. Other symbols and punctuation are left to the model (pauses, or nothing).
READABLE_SYMBOLS = frozenset("%‰$€£¥₩₹&@#+=°℃℉§№")


# Spaces a padded reading leaves before closing punctuation or after an opening bracket.
_SPACE_BEFORE = re.compile(r"\s+([,.;:!?)\]}，。、；：！？）])")
_SPACE_AFTER = re.compile(r"([(\[{（])\s+")


@dataclass(frozen=True)
class Rule:
    """Spans of kind ``name`` found by ``pattern`` and read aloud by ``read``."""

    name: str
    pattern: re.Pattern[str]
    read: Callable[[re.Match[str]], str]


class Rules:
    """A language's rules in the order they run; :meth:`add` is a decorator that appends one.

    ``spaced``: readings are set off by spaces (languages that write spaces between words).
    """

    def __init__(self, *, spaced: bool = True) -> None:
        self._rules: list[Rule] = []
        self._pad = " " if spaced else ""

    def add(self, name: str, pattern: str, flags: int = 0) -> Callable[[Callable[[re.Match[str]], str]], Callable]:
        def register(read: Callable[[re.Match[str]], str]) -> Callable[[re.Match[str]], str]:
            self._rules.append(Rule(name, re.compile(pattern, flags), read))
            return read

        return register

    def add_words(self, name: str, words: dict[str, str]) -> None:
        """A rule reading each key of ``words`` (symbols such as ``&``) as its value."""
        self.add(name, "|".join(re.escape(key) for key in sorted(words, key=len, reverse=True)))(lambda m: words[m.group(0)])

    def add_web_addresses(self, words: dict[str, str]) -> None:
        """A rule reading URLs and e-mail addresses, their punctuation by ``words`` (see :func:`web_address`)."""
        self.add("web address", WEB_ADDRESS, re.IGNORECASE)(lambda m: web_address(m, words))

    def __iter__(self) -> Iterator[Rule]:
        return iter(self._rules)

    def apply(self, text: str) -> str:
        """``text`` with every span read out, rule by rule; spaces around readings collapsed."""
        for rule in self._rules:
            text = rule.pattern.sub(lambda m, read=rule.read: f"{self._pad}{read(m)}{self._pad}", text)
        text = _SPACE_BEFORE.sub(r"\1", _SPACE_AFTER.sub(r"\1", text))
        return re.sub(r"\s+", " ", text).strip()


def needs_reading(text: str) -> list[str]:
    """Characters of ``text`` that stand for words (numerals, ``%``, ``$`` ...), once each, in order."""
    found = (c for c in text if c in READABLE_SYMBOLS or unicodedata.category(c)[0] == "N")
    return list(dict.fromkeys(found))


def digits(text: str) -> list[int]:
    """The digit values of the (Unicode) digits in ``text``, other characters skipped."""
    return [unicodedata.digit(c) for c in text if c.isdigit()]


def plain(number: str) -> str:
    """A written number in ASCII digits without thousands separators: ``"1,234.5"`` -> ``"1234.5"``."""
    return "".join(str(unicodedata.digit(c)) if c.isdigit() else c for c in number if c != ",")


def web_address(match: re.Match[str], words: dict[str, str]) -> str:
    """A URL or e-mail address read out: ``.`` ``/`` ``@`` ``:`` ``-`` ``_`` by ``words``, the
    scheme (``https://``) left out; digits stay for the language's number rules."""
    text = re.sub(r"^[a-z]+://", "", match.group(0), flags=re.IGNORECASE).rstrip("/")
    return "".join(f" {words[c]} " if c in words else c for c in text)


#: A URL (with a scheme or starting ``www.``) or an e-mail address.
WEB_ADDRESS = r"(?:https?://|www\.)[^\s<>\"]+[^\s<>\".,;:!?)]|[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
