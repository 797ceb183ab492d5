"""Scoring a transcript against its reference text: character and word error rates."""

from __future__ import annotations

from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein

from speech.text.normalize import scoring_text


@dataclass(frozen=True)
class ErrorCounts:
    """Edits (insertions, deletions, substitutions) and reference lengths, summable over a corpus.

    A corpus's rates are its summed edits over its summed lengths (not a mean of per-row rates),
    so long rows weigh as much as they say.
    """

    char_edits: int = 0
    chars: int = 0
    word_edits: int = 0
    words: int = 0

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(self.char_edits + other.char_edits, self.chars + other.chars,
                           self.word_edits + other.word_edits, self.words + other.words)

    @property
    def cer(self) -> float:
        """Character error rate; 0.0 for an empty reference matched by nothing (see :func:`error_counts`)."""
        return _rate(self.char_edits, self.chars)

    @property
    def wer(self) -> float:
        """Word error rate (words are split at spaces of the scoring form)."""
        return _rate(self.word_edits, self.words)


def error_counts(reference: str, hypothesis: str) -> ErrorCounts:
    """Character and word edits from ``reference`` to ``hypothesis``, both in :func:`scoring_text`
    form (case, punctuation and extra spaces ignored). An empty reference counts one character
    and one word, so that any hypothesis for it is an error."""
    ref, hyp = scoring_text(reference), scoring_text(hypothesis)
    if not ref:
        empty = 0 if not hyp else 1
        return ErrorCounts(empty, 1, empty, 1)
    ref_words, hyp_words = ref.split(" "), hyp.split(" ") if hyp else []
    return ErrorCounts(Levenshtein.distance(ref, hyp), len(ref), Levenshtein.distance(ref_words, hyp_words), len(ref_words))


def character_error_rate(reference: str, hypothesis: str) -> float:
    """Character edits per reference character.

    0.0 is a perfect match; values above 1 are possible (hypothesis much longer). An empty
    reference scores 0.0 against an empty hypothesis and 1.0 otherwise.
    """
    return error_counts(reference, hypothesis).cer


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word edits per reference word, with the conventions of :func:`character_error_rate`."""
    return error_counts(reference, hypothesis).wer


def _rate(edits: int, length: int) -> float:
    return edits / length if length else 0.0


def english_words(text: str) -> list[str]:
    """The words of an English text as word error rates compare them: Whisper's English
    normalizer (lower case, no punctuation, numbers and British spellings standardized,
    "twenty five" -> "25"), then split on spaces."""
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer({})(text).split()


def english_word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus word error rate of English transcripts, as Whisper's evaluations count it: word
    edits summed over all pairs / reference words summed.

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
