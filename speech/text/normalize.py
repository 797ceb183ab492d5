"""Text normalization: what the synthesizer reads, and what round-trip scoring compares."""

from __future__ import annotations

import re
import unicodedata

_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Canonical form of a row's text before splitting: NFC, one space between words, no edge spaces.

    NFC (not NFKC) keeps full-width CJK punctuation, which the Chinese front ends read as pauses.
    """
    return _SPACES.sub(" ", unicodedata.normalize("NFC", text)).strip()


def scoring_text(text: str) -> str:
    """Form of a text compared when scoring a transcript against it (character error rate).

    NFKC, case-folded, punctuation and symbols removed, single spaces: a round trip is judged
    on what is spoken, not on casing or punctuation no recognizer can hear.
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(" " if unicodedata.category(c)[0] in "PSZC" else c for c in folded)
    return _SPACES.sub(" ", kept).strip()
