"""Speech recognition backends behind one interface, picked from the checkpoint.

The checkpoint's config decides the backend (here, and only here), so no stage of a
job or of the server ever switches on a model-type string.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from transformers import AutoConfig, GenerationConfig, PretrainedConfig

from speech.asr.base import FrontEnd, Recognizer, Transcript, Window
from speech.options import TranscribeOptions

__all__ = ["FrontEnd", "Recognizer", "Transcript", "Window", "ModelError", "detect_backend", "load_front_end", "load_recognizer"]


class ModelError(ValueError):
    """The model cannot be loaded or is of a kind no backend handles."""


@dataclass(frozen=True)
class _Backend:
    """How to build one backend's two halves, and how to check options against a checkpoint."""

    front_end: Callable[[str, TranscribeOptions], FrontEnd]
    recognizer: Callable[[str, TranscribeOptions, str], Recognizer]  # (model, options, device)
    check: Callable[[str, TranscribeOptions], None]  # raises ValueError naming the option


def _ctc_front_end(model: str, options: TranscribeOptions) -> FrontEnd:
    from speech.asr.ctc import CtcFrontEnd

    return CtcFrontEnd(
        model, chunk_length_s=options.chunk_length_s, stride_length_s=options.stride_length_s, vad=options.vad
    )


def _ctc_recognizer(model: str, options: TranscribeOptions, device: str) -> Recognizer:
    from speech.asr.ctc import CtcRecognizer

    return CtcRecognizer(
        model,
        device=device,
        dtype=options.dtype,
        batch_seconds=options.budget_s("ctc"),
        strict_padding=options.strict_padding,
    )


def _check_ctc(model: str, options: TranscribeOptions) -> None:
    if options.task != "transcribe":
        raise ValueError(f"task {options.task!r}: model {model!r} is a CTC model, which can only transcribe")
    from speech.onnx_model import is_onnx_model

    if is_onnx_model(model):  # exported by `speech convert onnx`: runs on onnxruntime
        from transformers import AutoFeatureExtractor

        from speech.asr.ctc_onnx import check_ctc_model

        if options.dtype != "float32":
            raise ValueError(f"dtype {options.dtype}: ONNX model {model} runs at the precision it was exported with; use dtype float32")
        attention_mask = bool(AutoFeatureExtractor.from_pretrained(model).return_attention_mask)
        check_ctc_model(model, attention_mask=attention_mask)


def _whisper_front_end(model: str, options: TranscribeOptions) -> FrontEnd:
    from speech.asr.whisper import WhisperFrontEnd

    return WhisperFrontEnd(model, vad=options.vad)


def _whisper_recognizer(model: str, options: TranscribeOptions, device: str) -> Recognizer:
    from speech.asr.whisper import WhisperRecognizer

    return WhisperRecognizer(
        model,
        device=device,
        dtype=options.dtype,
        batch_seconds=options.budget_s("whisper"),
        language=options.language,
        task=options.task,
        timestamps=options.timestamps,
        max_new_tokens=options.max_new_tokens,
    )


def _check_whisper(model: str, options: TranscribeOptions) -> None:
    from speech.asr.whisper import check_generation_config

    try:
        generation = GenerationConfig.from_pretrained(model)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot load the generation config of model {model!r}: {_first_line(err)}") from err
    check_generation_config(
        generation, model, language=options.language, task=options.task, timestamps=options.timestamps
    )


_BACKENDS = {
    "ctc": _Backend(_ctc_front_end, _ctc_recognizer, _check_ctc),
    "whisper": _Backend(_whisper_front_end, _whisper_recognizer, _check_whisper),
}


def _backend_name(config: PretrainedConfig) -> str | None:
    architectures = getattr(config, "architectures", None) or []
    if config.model_type == "whisper" and (not architectures or "WhisperForConditionalGeneration" in architectures):
        return "whisper"
    if any(name.endswith("ForCTC") for name in architectures):
        return "ctc"
    return None


def detect_backend(model: str, options: TranscribeOptions | None = None) -> str:
    """``"whisper"`` for a Whisper checkpoint, ``"ctc"`` for one naming a ``*ForCTC`` architecture
    (a directory exported by ``speech convert onnx`` is the CTC backend on onnxruntime).

    Reads only configs (no weights), so the driver can reject a bad model - or, given
    ``options``, options the model cannot honour (a language it does not know, word
    timestamps without alignment heads, ...) - before any actor starts.
    """
    try:
        config = AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load model {model!r}: {_first_line(err)}") from err
    name = _backend_name(config)
    if name is None:
        architectures = getattr(config, "architectures", None) or []
        raise ModelError(
            f"model {model!r} ({config.model_type}, architectures {architectures}) is not a supported ASR model; "
            "supported: CTC models (AutoModelForCTC) and Whisper (WhisperForConditionalGeneration)"
        )
    if options is not None:
        try:
            _BACKENDS[name].check(model, options)
        except ValueError as err:
            raise ModelError(str(err)) from err
    return name


def load_front_end(model: str, options: TranscribeOptions) -> FrontEnd:
    """The CPU front end for ``model``."""
    return _BACKENDS[detect_backend(model)].front_end(model, options)


def load_recognizer(model: str, options: TranscribeOptions, device: str) -> Recognizer:
    """The recognizer for ``model`` on ``device``, batching as ``options`` say."""
    return _BACKENDS[detect_backend(model)].recognizer(model, options, device)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
