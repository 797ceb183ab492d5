"""Text front end shared by the TTS backends: normalization, validation, sentence splitting."""

from speech.text.normalize import normalize_text, scoring_text
from speech.text.split import split_sentences
from speech.text.validate import TextError, check_text, unsayable_characters

__all__ = ["TextError", "check_text", "normalize_text", "scoring_text", "split_sentences", "unsayable_characters"]
