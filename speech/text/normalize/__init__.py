"""Text normalization: what the synthesizer reads, and what round-trip scoring compares.

:func:`normalize_text` is the canonical form of every row (NFC, single spaces);
:func:`to_spoken` then writes out what a reader says for the spans a model cannot read as
written: numbers, dates, times, currencies, percentages, units, abbreviations, phone
numbers, web addresses (English, Korean and Chinese; see :mod:`.driver` and the language
modules); :func:`scoring_text` is what round-trip scoring compares.
"""

from __future__ import annotations

import importlib
import re
import unicodedata

from speech.text.normalize.driver import needs_reading
from speech.text.validate import TextError

_SPACES = re.compile(r"\s+")
_LATIN_WORD = re.compile(r"[A-Za-z\u00C0-\u024F]+")

#: Languages with a normalizer, by the codes a corpus may use for them.
_CODES = {"en": "en", "eng": "en", "ko": "ko", "kor": "ko", "zh": "zh", "cmn": "zh", "zho": "zh", "chi": "zh"}
SPOKEN_LANGUAGES = ("en", "ko", "zh")


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


def spoken_language(language: str | None, text: str) -> str:
    """The normalizer language of a row: its ``language`` code (``en``, ``en-US``, ``kor``,
    ``cmn``...) reduced to ``en``/``ko``/``zh``, any other code as given (lower case).

    Without one, the script of ``text``: any kana is Japanese (which mixes kana with Han);
    otherwise the most frequent of Hangul syllables (ko), Han characters (zh) and Latin words
    (en; one word weighs as much as a syllable or a character), ties going to ko, then zh;
    en for text without letters.
    """
    if language:
        code = language.strip().lower().replace("_", "-")
        return _CODES.get(code.split("-")[0], code)
    names = [unicodedata.name(c, "") for c in text if c.isalpha()]
    if any(name.startswith(("HIRAGANA", "KATAKANA")) for name in names):
        return "ja"
    counts = {
        "ko": sum(name.startswith("HANGUL") for name in names),
        "zh": sum(name.startswith("CJK UNIFIED") for name in names),
        "en": len(_LATIN_WORD.findall(text)),
    }
    if not any(counts.values()):
        return "en"
    return max(counts, key=lambda code: (counts[code], code != "en", code == "ko"))


def to_spoken(text: str, language: str | None, *, keep: re.Pattern[str] | None = None) -> str:
    """``text`` with numbers, dates, currencies, units ... written out as said in ``language``.

    ``language`` as :func:`spoken_language` reads it. Text in another language passes
    unchanged unless it holds something to read (digits, ``%``, ``$`` ...). Spans matching
    ``keep`` (a backend's prosody markers, ``[break_6]``) are left exactly as they are.

    Raises:
        TextError: something is left that the language's normalizer cannot read, or the
            language has no normalizer and the text needs one; the message names it.
    """
    kept = list(keep.finditer(text)) if keep is not None else []
    parts = keep.split(text) if kept else [text]  # the text between the kept spans
    code = spoken_language(language, " ".join(parts))
    if code in SPOKEN_LANGUAGES:
        rules = importlib.import_module(f"speech.text.normalize.{code}").RULES
        parts = [rules.apply(part) for part in parts]
    left = needs_reading("".join(parts))
    if left:
        shown = ", ".join(repr(c) for c in left[:10])
        if code in SPOKEN_LANGUAGES:
            raise TextError(f"cannot read {shown} in this {code} text: {text[:60]!r}")
        raise TextError(
            f"cannot read {shown}: numbers and symbols are written out for {', '.join(SPOKEN_LANGUAGES)} only, "
            f"this row's language is {code!r} (write them as words, or turn normalization off)"
        )
    if not kept:
        return parts[0]
    pieces = [parts[0]]
    for marker, part in zip(kept, parts[1:]):
        pieces += [marker.group(0), part]
    return _SPACES.sub(" ", " ".join(p for p in pieces if p)).strip()
