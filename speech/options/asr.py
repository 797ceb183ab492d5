"""Options of speech recognition: Whisper's decoding, the recognizer's (``AsrOptions``, what
the job's rows and the server's answers depend on) and the ``speech transcribe`` job's."""

from __future__ import annotations

import itertools
from typing import Any, Literal

from pydantic import Field, field_validator

from speech.options.audio import AudioJobOptions, AudioModelOptions, AudioRun
from speech.options.base import Options

#: faster-whisper's and openai-whisper's temperature schedule: greedy first, then sampling ever
#: hotter for the windows whose output fails the thresholds.
DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)

#: Compute types of the CTranslate2 engine (on a CPU, float16 is refused by CTranslate2).
ComputeType = Literal["float32", "float16", "int8", "int8_float32"]


class DecodingOptions(Options):
    """How Whisper decodes a 30 s window; the same for both engines, the job and the server.

    Defaults are faster-whisper's (``WhisperModel.transcribe``), except two: ``beam_size`` is
    1 (greedy; faster-whisper's is 5) because this project decodes greedily unless told
    otherwise, and ``condition_on_previous_text`` is False (faster-whisper's is True) because
    windows of different files share batches; see docs/whisper.md.
    """

    beam_size: int = Field(1, ge=1, description="Whisper: 1 is greedy search; faster-whisper's default is 5")
    best_of: int = Field(
        5, ge=1, description="Whisper: samples drawn per window at a temperature above 0; the likeliest is kept")
    temperature: tuple[float, ...] = Field(
        DEFAULT_TEMPERATURES, description="Whisper: temperatures tried in order, the next one while a window's "
                                          "output compresses too well (a loop) or is too unlikely")
    compression_ratio_threshold: float | None = Field(
        2.4, gt=0, description="Whisper: retry hotter when the text's gzip ratio is above this ('none': off)")
    logprob_threshold: float | None = Field(
        -1.0, description="Whisper: retry hotter when the mean token log-probability is below this ('none': off)")
    no_speech_threshold: float | None = Field(
        0.6, ge=0, le=1, description="Whisper: a window is silence (no text) above this no-speech probability, "
                                     "when its mean log-probability is also below logprob_threshold ('none': off)")
    initial_prompt: str | None = Field(
        None, description="Whisper: text before each file's first window (names, spelling, style)")
    hotwords: str | None = Field(None, description="Whisper: text before every window, favouring these words")
    condition_on_previous_text: bool = Field(
        False, description="Whisper: prompt each window with the text of the file's previous one (long-form "
                           "coherence, at the price of one batch per window index)")

    @field_validator("temperature", mode="before")
    @classmethod
    def _temperatures(cls, value: Any) -> Any:
        """``0.2``, ``"0,0.2,0.4"`` or a list; each in [0, 1], strictly increasing."""
        if isinstance(value, str):
            try:
                value = [float(part) for part in value.split(",") if part.strip()]
            except ValueError:
                raise ValueError(f"expected numbers separated by commas, got {value!r}") from None
        if isinstance(value, (int, float)):
            value = [value]
        if isinstance(value, (list, tuple)):
            if not value:
                raise ValueError("give at least one temperature")
            if any(not 0 <= float(t) <= 1 for t in value) or any(b <= a for a, b in itertools.pairwise(value)):
                raise ValueError(f"temperatures must lie in [0, 1] and increase, got {list(value)}")
        return value

    @field_validator("compression_ratio_threshold", "logprob_threshold", "no_speech_threshold", mode="before")
    @classmethod
    def _none_disables(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip().lower() in ("none", "off") else value

    @field_validator("initial_prompt", "hotwords")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    def decoding(self) -> DecodingOptions:
        """Just these fields (also of a subclass such as AsrOptions)."""
        return DecodingOptions(**{name: getattr(self, name) for name in DecodingOptions.model_fields})


class AsrOptions(DecodingOptions, AudioModelOptions):
    """What a recognizer's transcripts depend on: the rows part of ``speech transcribe`` and the
    options of a served ASR model. Whisper's decoding options are the fields of
    :class:`DecodingOptions` (inherited, so they are set flat, like every other option)."""

    model: str = Field(
        description="hub id or local checkpoint directory (any AutoModelForCTC or WhisperForConditionalGeneration), "
                    "or a CTranslate2 Whisper directory (with a model.bin: the CTranslate2 engine)")
    compute_type: ComputeType | None = Field(
        None, description="CTranslate2 models (a directory with a model.bin): precision the weights run at "
                          "(default: as stored, float32 on a CPU for float16 weights); transformers models take dtype")
    language: str | None = Field(
        None, description="language of rows whose manifest gives none; 'auto' (default): Whisper detects it per "
                          "file from its first window; CTC models only record it")
    task: Literal["transcribe", "translate"] = Field(
        "transcribe", description="Whisper: translate gives English text (CTC models refuse it)")
    timestamps: Literal["none", "segment", "word"] = Field(
        "segment", description="Whisper: segment or word timings (word: alignment-head timings, cost extra)")
    vad: bool = Field(
        False, description="only the speech Silero VAD finds: Whisper packs it into 30 s windows; CTC skips silence "
                           "and splits long files at pauses instead of fixed overlapping chunks")
    max_new_tokens: int | None = Field(
        None, ge=1, description="Whisper: bound on tokens per 30 s window (default: the model's half context)")

    pack: bool = Field(False, description=(
        "Whisper: pack short files (one window each, in duration order) into shared 30 s windows, 1 s of "
        "silence apart, decode with timestamps and split the text back to each file by time; languages are "
        "known or detected per file first. Off by default: see docs/benchmarks.md for its speed and WER"))

    @field_validator("language")
    @classmethod
    def _auto_is_none(cls, value: str | None) -> str | None:
        return None if value is None or value.strip().lower() in ("", "auto") else value.strip()


class TranscribeOptions(AudioJobOptions):
    """Options of ``speech transcribe``: ``asr`` decides the rows, ``run`` where and how the job
    runs; see configs/transcribe.yaml for a commented example (one flat mapping)."""

    asr: AsrOptions
    run: AudioRun
