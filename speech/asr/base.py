"""What every ASR backend exchanges: windows in, transcripts out.

A backend has two halves so that each runs where it belongs:

* a **front end** (CPU): waveform -> model-ready windows (features, chunking);
* a **recognizer** (GPU when there is one): windows -> transcripts.

Both are plain Python; the Ray job and the Serve app drive the same classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from speech.options import DecodingOptions
from speech.schema import Segment, Word

#: Planned model calls: per call, the ``(utterance, window)`` index pairs it runs, in call order.
Batches = list[list[tuple[int, int]]]


@dataclass
class Window:
    """One model input cut from an utterance.

    ``features`` is what the network consumes (for CTC models the normalized waveform,
    shape ``[num_samples]``; for Whisper log-mel frames ``[n_mels, 3000]``). ``left``/``right``
    are overlap samples whose outputs are dropped when windows of one utterance are stitched
    back together. ``offset`` is where the window starts in the utterance, so times inside
    it map back onto the file (Whisper windows, which may skip silence).
    """

    features: np.ndarray
    num_samples: int  # audio samples this window covers (its batching cost)
    left: int = 0
    right: int = 0
    offset: int = 0  # first sample of the window in the utterance

    def kept_frames(self, ratio: int) -> slice:
        """The window's own output frames, its overlap (``left``/``right``) dropped.

        ``ratio``: input samples per output frame (e.g. 320 for wav2vec2). Samples are converted
        to frames with the rounding of transformers' ``rescale_stride``, so stitched chunks match
        its ASR pipeline. For a window without overlap this is every frame.
        """
        total = int(round(self.num_samples / ratio))
        left = int(round(self.left / self.num_samples * total))
        right = int(round(self.right / self.num_samples * total))
        return slice(left, total - right)


@dataclass
class Transcript:
    """A recognizer's result for one utterance."""

    text: str
    confidence: float | None
    words: list[Word] = field(default_factory=list)
    segments: list[Segment] | None = None
    language: str | None = None
    language_probability: float | None = None
    computed_samples: int = 0  # samples the network ran on, incl. padding and overlap
    # Sequence models: a window still failed the decoding thresholds after the last
    # temperature (its best attempt is in the text); None for models without thresholds.
    thresholds_failed: bool | None = None


class FrontEnd(Protocol):
    """CPU half: waveform -> windows."""

    sample_rate: int  # Hz the model expects

    def windows(self, audio: np.ndarray) -> list[Window]:
        """``audio``: mono float32 ``[num_samples]`` at ``sample_rate``."""
        ...

    def batch_cost(self, window: Window) -> int:
        """Samples of audio the network computes on for ``window`` in a batch, before padding
        to its batch-mates (what the batch budget counts)."""
        ...

    def plan(self, utterances: Sequence[list[Window]], max_padded: int) -> Batches:
        """The recognizer's model calls for these utterances' windows, ``max_padded`` samples
        each (see :func:`speech.batching.plan_windows`): the plan its ``transcribe`` makes
        when it is given none."""
        ...


class Recognizer(Protocol):
    """Network half: windows -> transcripts."""

    backend: str  # model family recorded in every output row: "ctc" or "whisper"
    # What runs the network, recorded beside it: "transformers", "onnxruntime" or "ctranslate2"
    engine: str
    sample_rate: int  # Hz of the windows' audio

    def transcribe(
        self, utterances: Sequence[list[Window]], languages: Sequence[str | None] | None = None,
        options: Sequence[DecodingOptions] | None = None, batches: Batches | None = None,
    ) -> list[Transcript]:
        """One transcript per utterance, in order.

        ``languages``: per utterance, a known language code (e.g. from a manifest) or None;
        models that decode per language use it, the others ignore it. ``options``: per
        utterance, how to decode it (sequence models; None: the recognizer's own options).
        ``batches``: the model calls to make, ``(utterance, window)`` pairs each, as the front
        end's :meth:`FrontEnd.plan` made them (a job plans where it prepares); None: the
        recognizer plans them with the same function.
        """
        ...
