"""Scoring a round trip: how far a transcript of synthesized audio is from its text."""

from __future__ import annotations

from rapidfuzz.distance import Levenshtein

from speech.text.normalize import scoring_text


def character_error_rate(reference: str, hypothesis: str) -> float:
    """Character edits (insertions, deletions, substitutions) per reference character.

    Both sides are compared in :func:`scoring_text` form (case, punctuation and extra spaces
    ignored). 0.0 is a perfect match; values above 1 are possible (hypothesis much longer).
    An empty reference scores 0.0 against an empty hypothesis and 1.0 otherwise.
    """
    ref, hyp = scoring_text(reference), scoring_text(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return Levenshtein.distance(ref, hyp) / len(ref)


def english_words(text: str) -> list[str]:
    """The words of an English text as word error rates compare them: Whisper's English
    normalizer (lower case, no punctuation, numbers and British spellings standardized,
    "twenty five" -> "25"), then split on spaces."""
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer({})(text).split()


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus word error rate: word edits summed over all pairs / reference words summed.

    Texts are compared as :func:`english_words`. Raises ``ValueError`` if the lists differ in
    length or the references hold no words.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    refs = [english_words(r) for r in references]
    words = sum(len(r) for r in refs)
    if words == 0:
        raise ValueError("the references hold no words")
    edits = sum(Levenshtein.distance(r, english_words(h or "")) for r, h in zip(refs, hypotheses))
    return edits / words
