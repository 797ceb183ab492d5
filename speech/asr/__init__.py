"""Speech recognition backends behind one interface, picked from the checkpoint.

The checkpoint decides the backend and its engine (here, and only here), so no stage of a
job or of the server ever switches on a model-type string:

* a directory holding a CTranslate2 ``model.bin``: Whisper on the CTranslate2 engine;
* a transformers checkpoint (hub id or directory) of ``WhisperForConditionalGeneration``:
  Whisper on the transformers engine;
* a directory written by ``speech convert onnx`` from a CTC checkpoint: CTC on onnxruntime;
* a transformers checkpoint naming a ``*ForCTC`` architecture: CTC on transformers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoConfig, GenerationConfig, PretrainedConfig

from speech.asr.base import FrontEnd, Recognizer, Transcript, Window
from speech.options import AsrOptions, ModelRun

__all__ = [
    "FrontEnd",
    "ModelError",
    "ModelKind",
    "Recognizer",
    "Transcript",
    "Window",
    "detect_backend",
    "detect_model",
    "load_front_end",
    "load_recognizer",
]


class ModelError(ValueError):
    """The model cannot be loaded or is of a kind no backend handles."""


@dataclass(frozen=True)
class ModelKind:
    """What runs a model: its family (``backend``) and the runtime (``engine``)."""

    backend: str  # "ctc" or "whisper"
    engine: str  # "transformers", "onnxruntime" or "ctranslate2"


@dataclass(frozen=True)
class _Backend:
    """How to build one backend's two halves, and how to check options against a checkpoint."""

    front_end: Callable[[str, AsrOptions], FrontEnd]
    recognizer: Callable[[str, AsrOptions, str, ModelRun], Recognizer]  # (model, options, device, run)
    check: Callable[[str, AsrOptions, str], None]  # (model, options, device); raises ValueError naming the option


def _ctc_front_end(model: str, options: AsrOptions) -> FrontEnd:
    from speech.asr.ctc import CtcFrontEnd

    return CtcFrontEnd(
        model, chunk_length_s=options.chunk_length_s, stride_length_s=options.stride_length_s, vad=options.vad,
        strict_padding=options.strict_padding,
    )


def _ctc_recognizer(engine: str) -> Callable[[str, AsrOptions, str, ModelRun], Recognizer]:
    def load(model: str, options: AsrOptions, device: str, run: ModelRun) -> Recognizer:
        from speech.asr.ctc import CtcRecognizer

        return CtcRecognizer(
            model,
            device=device,
            dtype=options.dtype,
            batch_seconds=run.batch_budget_s("ctc", device),
            strict_padding=options.strict_padding,
            engine=engine,
        )

    return load


def _check_ctc(model: str, options: AsrOptions, device: str) -> None:
    if options.task != "transcribe":
        raise ValueError(f"task {options.task!r}: model {model!r} is a CTC model, which can only transcribe")
    if options.pack:
        raise ValueError(f"pack: model {model!r} is a CTC model, whose cost follows the audio; packing is for Whisper")
    _no_compute_type(model, options)


def _check_ctc_onnx(model: str, options: AsrOptions, device: str) -> None:
    from transformers import AutoFeatureExtractor

    from speech.asr.ctc_onnx import check_ctc_model

    _check_ctc(model, options, device)
    if options.dtype != "float32":
        raise ValueError(f"dtype {options.dtype}: ONNX model {model} runs at the precision it was exported with; use dtype float32")
    attention_mask = bool(AutoFeatureExtractor.from_pretrained(model).return_attention_mask)
    check_ctc_model(model, attention_mask=attention_mask)


def _no_compute_type(model: str, options: AsrOptions) -> None:
    if options.compute_type is not None:
        raise ValueError(
            f"compute_type {options.compute_type!r}: model {model!r} is not a CTranslate2 model, and its precision "
            "is set by dtype; compute_type is for CTranslate2 models (a directory with a model.bin)"
        )


def _whisper_front_end(model: str, options: AsrOptions) -> FrontEnd:
    from speech.asr.whisper import WhisperFrontEnd

    # Audio padding as transformers' pipeline.
    return WhisperFrontEnd(model, vad=options.vad, padding="audio",
                           condition_on_previous_text=options.condition_on_previous_text, pack=options.pack)


def _whisper_ct2_front_end(model: str, options: AsrOptions) -> FrontEnd:
    from speech.asr.whisper import WhisperFrontEnd

    # Log-mel padding as openai-whisper and faster-whisper.
    return WhisperFrontEnd(model, vad=options.vad, padding="log_mel",
                           condition_on_previous_text=options.condition_on_previous_text, pack=options.pack)


def _whisper_recognizer(model: str, options: AsrOptions, device: str, run: ModelRun) -> Recognizer:
    from speech.asr.whisper import WhisperRecognizer

    return WhisperRecognizer(model, device=device, dtype=options.dtype, **_whisper_options(options, device, run))


def _whisper_options(options: AsrOptions, device: str, run: ModelRun) -> dict:
    """What both Whisper engines take from the options."""
    return dict(
        batch_seconds=run.batch_budget_s("whisper", device),
        language=options.language,
        task=options.task,
        timestamps=options.timestamps,
        max_new_tokens=options.max_new_tokens,
        decoding=options.decoding(),
        pack=options.pack,
    )


def _whisper_ct2_recognizer(model: str, options: AsrOptions, device: str, run: ModelRun) -> Recognizer:
    from speech.asr.whisper_ct2 import Ct2WhisperRecognizer

    return Ct2WhisperRecognizer(
        model, device=device, compute_type=options.compute_type, threads=run.threads,
        **_whisper_options(options, device, run),
    )


def _check_whisper_ct2(model: str, options: AsrOptions, device: str) -> None:
    from speech.asr.whisper_ct2 import check_model

    if "dtype" in options.model_fields_set and options.dtype != "float32":
        raise ValueError(f"dtype {options.dtype!r}: model {model!r} is a CTranslate2 model; set its precision with compute_type")
    check_model(model, language=options.language, task=options.task, compute_type=options.compute_type, device=device)


def _check_whisper(model: str, options: AsrOptions, device: str) -> None:
    from speech.asr.whisper import check_generation_config

    try:
        generation = GenerationConfig.from_pretrained(model)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot load the generation config of model {model!r}: {_first_line(err)}") from err
    check_generation_config(
        generation, model, language=options.language, task=options.task, timestamps=options.timestamps
    )
    _no_compute_type(model, options)


_BACKENDS = {
    ModelKind("ctc", "transformers"): _Backend(_ctc_front_end, _ctc_recognizer("transformers"), _check_ctc),
    # One recognizer around either engine's network (speech.asr.ctc.CtcNetwork).
    ModelKind("ctc", "onnxruntime"): _Backend(_ctc_front_end, _ctc_recognizer("onnxruntime"), _check_ctc_onnx),
    ModelKind("whisper", "transformers"): _Backend(_whisper_front_end, _whisper_recognizer, _check_whisper),
    ModelKind("whisper", "ctranslate2"): _Backend(_whisper_ct2_front_end, _whisper_ct2_recognizer, _check_whisper_ct2),
}


def _backend_name(config: PretrainedConfig) -> str | None:
    architectures = getattr(config, "architectures", None) or []
    if config.model_type == "whisper" and (not architectures or "WhisperForConditionalGeneration" in architectures):
        return "whisper"
    if any(name.endswith("ForCTC") for name in architectures):
        return "ctc"
    return None


def detect_model(model: str, options: AsrOptions | None = None, device: str = "cpu") -> ModelKind:
    """The backend and engine of ``model`` (see the module docstring).

    Reads only configs and the model.bin header (no weights), so the driver can reject a bad
    model - a truncated or foreign model.bin, a model split in parts, an unsupported
    architecture - or, given ``options``, options the model cannot honour on ``device`` (a
    language it does not know, word timestamps without alignment heads, ...) before any actor
    starts.
    """
    kind = _ctranslate2_kind(model) or _onnx_kind(model) or ModelKind(_transformers_backend(model), "transformers")
    if options is not None:
        try:
            _BACKENDS[kind].check(model, options, device)
        except ValueError as err:
            raise ModelError(str(err)) from err
    return kind


def detect_backend(model: str, options: AsrOptions | None = None, device: str = "cpu") -> str:
    """``"whisper"`` for a Whisper model (either engine), ``"ctc"`` for a ``*ForCTC`` checkpoint;
    see :func:`detect_model`."""
    return detect_model(model, options, device).backend


def _ctranslate2_kind(model: str) -> ModelKind | None:
    from speech.asr.whisper_base import CT2_MODEL_FILE, is_ctranslate2

    directory = Path(model)
    if not is_ctranslate2(model):
        parts = sorted(p.name for p in directory.glob(f"{CT2_MODEL_FILE}.part*")) if directory.is_dir() else []
        if parts:
            raise ModelError(
                f"model {model!r} holds {', '.join(parts)} but no {CT2_MODEL_FILE}: join every part in order "
                f"(cat {CT2_MODEL_FILE}.part1 {CT2_MODEL_FILE}.part2 > {CT2_MODEL_FILE}), or build the real Whisper "
                "base with `speech fixtures DIR --real`"
            )
        return None
    from speech.convert.ct2_whisper import ConversionError, check_whisper

    try:
        check_whisper(model)
    except ConversionError as err:
        raise ModelError(f"model {model!r}: {err}") from err
    return ModelKind("whisper", "ctranslate2")


def _onnx_kind(model: str) -> ModelKind | None:
    """A directory written by ``speech convert onnx`` (CTC; a Kokoro export is refused by its check)."""
    from speech.onnx_model import is_onnx_model

    return ModelKind("ctc", "onnxruntime") if is_onnx_model(model) else None


def _transformers_backend(model: str) -> str:
    try:
        config = AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load model {model!r}: {_first_line(err)}") from err
    name = _backend_name(config)
    if name is None:
        architectures = getattr(config, "architectures", None) or []
        raise ModelError(
            f"model {model!r} ({config.model_type}, architectures {architectures}) is not a supported ASR model; "
            "supported: CTC models (AutoModelForCTC), Whisper (WhisperForConditionalGeneration) and "
            "CTranslate2 Whisper models (a directory with a model.bin)"
        )
    return name


def load_front_end(model: str, options: AsrOptions, kind: ModelKind | None = None) -> FrontEnd:
    """The CPU front end for ``model``; ``kind``: as :func:`detect_model` found it (a job's driver
    detects once and passes it to its actors), None: detected here."""
    return _BACKENDS[kind or detect_model(model)].front_end(model, options)


def load_recognizer(model: str, options: AsrOptions, device: str, kind: ModelKind | None = None,
                    run: ModelRun | None = None) -> Recognizer:
    """The recognizer for ``model`` on ``device``, decoding as ``options`` say; ``kind`` as for
    :func:`load_front_end`; ``run``: its batch budget and threads (a job's ``options.run``;
    None: the defaults)."""
    return _BACKENDS[kind or detect_model(model)].recognizer(model, options, device, run or ModelRun())


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
