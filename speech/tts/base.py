"""What every TTS backend exchanges: text in, waveforms out.

A backend has two halves so that each runs where it belongs:

* a **front end** (CPU, light): voice resolution, the backend's own text normalization,
  pronounceability checks and encoding (tokens, phonemes) of one sentence-sized piece;
* a **model** (GPU when there is one): encoded pieces -> waveforms. Inside, backends that
  make mel spectrograms finish with a vocoder (see :mod:`speech.tts.vocoder`).

The common steps around them (normalize, validate, split, seed per piece) are in
:mod:`speech.tts.frontend`, so every backend treats bad rows the same way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Utterance:
    """One model input: a sentence-sized piece of one row, encoded by the backend's front end."""

    text: str  # the piece as cut from the row (for messages)
    inputs: Any  # what the model consumes: token ids (vits), phonemes (kokoro), normalized text (chattts)
    cost: int  # batching cost, in the backend's input units (tokens, phonemes, characters)
    voice: str  # resolved voice name, blend or speaker embedding
    seed: int  # sampling seed of this piece (derived from the row's seed and the piece's index)
    speed: float | None = None  # speaking rate, 1.0 normal, 2.0 twice as fast; None: the model's own


@dataclass(frozen=True)
class Voice:
    """One voice a model offers, as ``speech voices`` lists it."""

    name: str  # what --voice or a corpus row's voice says
    language: str  # language code(s) it speaks, e.g. "en-us", "ko", "zh, en"
    note: str = ""  # what else to know (a pattern rather than one name, a speaker index ...)


class TextFrontEnd(Protocol):
    """CPU half of a backend; loads no network weights."""

    backend: str  # short name recorded in every output row
    max_piece_chars: int  # longest piece (characters) the model is given at once
    markers: re.Pattern[str] | None  # the backend's prosody markers (``[uv_break]``), or None

    def resolve_voice(self, voice: str | None, seed: int) -> str:
        """The voice a row uses (``None``: the model's default, or one drawn from ``seed`` where
        voices are sampled); raises ``TextError`` if unknown."""
        ...

    def strip_markers(self, text: str) -> str:
        """``text`` without the backend's prosody markers (what is checked for speakable content)."""
        ...

    def sayable(self, char: str, *, voice: str, language: str | None) -> bool:
        """Whether the backend can pronounce the letter or digit ``char`` (its inventory), so
        that what it cannot say is handled by the ``unknown_chars`` policy before encoding."""
        ...

    def voices(self) -> list[Voice]:
        """The voices this model offers, with their language."""
        ...

    def encode(self, piece: str, *, voice: str, language: str | None) -> tuple[Any, int]:
        """One piece -> ``(model inputs, cost)``; raises ``TextError`` if it cannot be said."""
        ...


class TtsModel(Protocol):
    """Network half of a backend."""

    backend: str
    sample_rate: int  # Hz of the waveforms it returns

    def synthesize(self, utterances: Sequence[Utterance]) -> list[np.ndarray]:
        """One mono float32 waveform ``[num_samples]`` per utterance, in order, each with its own
        voice and speed (so one loaded model serves every voice and speaking rate).

        Batching is the model's business; the result for an utterance must not depend on
        which other utterances share its call (same samples within float tolerance, same
        length), so that a dataset is reproducible whatever the batch sizes.
        """
        ...
