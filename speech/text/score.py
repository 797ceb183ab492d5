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
