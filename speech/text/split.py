"""Sentence splitting: long text -> pieces no longer than a model's limit.

Pieces are cut, in order of preference, at sentence ends, then at clause punctuation,
then between words, and only as a last resort inside a run of characters (Chinese or
Japanese text without punctuation). Neighbouring short sentences are packed together,
so a short row stays one piece. Joining the pieces with single spaces gives back the
input text (modulo whitespace at the cuts); prosody markers such as ``[uv_break]`` are
never cut apart.
"""

from __future__ import annotations

import re

# A sentence ends after ./!/?/… (with closing quotes or brackets) followed by a space, or
# after a CJK full stop, exclamation or question mark, which need no space.
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+|(?<=[。！？])\s*")
_CLAUSE_END = re.compile(r"(?<=[,;:，、；：])\s*")
_SPACES = re.compile(r"\s+")
_MARKER = re.compile(r"\[\w+\]")


def split_sentences(text: str, max_chars: int) -> list[str]:
    """Split ``text`` into pieces of at most ``max_chars`` characters.

    Returns a list of non-empty, stripped pieces (empty for blank text).
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    text = text.strip()
    if not text:
        return []
    if len(text) <= max_chars:
        return [text]
    parts: list[str] = []
    for sentence in _split(text, _SENTENCE_END):
        parts.extend(_fit(sentence, max_chars))
    return _pack(parts, max_chars)


def _fit(sentence: str, max_chars: int) -> list[str]:
    """One sentence -> parts within ``max_chars``: clauses, then words, then hard cuts."""
    if len(sentence) <= max_chars:
        return [sentence]
    parts: list[str] = []
    for clause in _split(sentence, _CLAUSE_END):
        if len(clause) <= max_chars:
            parts.append(clause)
            continue
        for word in _split(clause, _SPACES):
            parts.extend(_hard_cut(word, max_chars) if len(word) > max_chars else [word])
    return _pack(parts, max_chars)


def _split(text: str, boundary: re.Pattern[str]) -> list[str]:
    return [part.strip() for part in boundary.split(text) if part and part.strip()]


def _hard_cut(word: str, max_chars: int) -> list[str]:
    """Cut a run without spaces every ``max_chars`` characters, moving a cut out of a marker."""
    pieces = []
    start = 0
    while len(word) - start > max_chars:
        end = start + max_chars
        for marker in _MARKER.finditer(word, start):
            if marker.start() < end < marker.end() and marker.start() > start:
                end = marker.start()
                break
        pieces.append(word[start:end])
        start = end
    pieces.append(word[start:])
    return pieces


def _pack(parts: list[str], max_chars: int) -> list[str]:
    """Greedily join consecutive parts with spaces while the result fits ``max_chars``."""
    packed: list[str] = []
    for part in parts:
        if packed and len(packed[-1]) + 1 + len(part) <= max_chars:
            packed[-1] = f"{packed[-1]} {part}"
        else:
            packed.append(part)
    return packed
