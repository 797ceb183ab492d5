"""Speech synthesis backends behind one interface (see :mod:`speech.tts.base`).

The backend is chosen here, and only here: from ``--backend`` when given, else from the
checkpoint's layout, so no stage of the job switches on a model-type string. Each backend
is a :class:`_Backend` in ``_BACKENDS``: how to recognize its checkpoints, how to build its
two halves, and what it takes.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from speech.options import TtsOptions, TtsRun
from speech.tts.base import TextFrontEnd, TtsModel, Utterance, Voice

__all__ = ["ModelError", "TextFrontEnd", "TtsModel", "Utterance", "Voice", "check_options", "detect_backend",
           "load_front_end", "load_model"]


class ModelError(ValueError):
    """The model cannot be loaded or is of a kind no backend handles."""


@dataclass(frozen=True)
class _Backend:
    """How to recognize one backend's checkpoints, build its two halves, and what it can be asked for."""

    # (directory, its config) -> whether the checkpoint is this backend's, reading no weights; the
    # config is config.json's mapping (None: there is none), read on the first call.
    recognizes: Callable[[Path, Callable[[], dict | None]], bool]
    front_end: Callable[[str, TtsOptions, int], TextFrontEnd]  # (model, options, max_piece_chars)
    model: Callable[[str, TtsOptions, str, TtsRun], TtsModel]  # (model, options, device, run)
    piece_chars: int  # longest piece given to the model at once when the options do not say (characters)
    speed: bool  # takes a speaking rate per utterance (``Utterance.speed``)


def _is_chattts(path: Path, config: Callable[[], dict | None]) -> bool:
    from speech.tts.chattts import is_chattts_checkpoint

    return is_chattts_checkpoint(path)


def _is_kokoro(path: Path, config: Callable[[], dict | None]) -> bool:
    found = config()
    return found is not None and "istftnet" in found and "vocab" in found


def _is_vits(path: Path, config: Callable[[], dict | None]) -> bool:
    found = config()
    return found is not None and found.get("model_type") == "vits"


def _vits_front_end(model: str, options: TtsOptions, max_piece_chars: int) -> TextFrontEnd:
    from speech.tts.vits import VitsFrontEnd

    return VitsFrontEnd(model, max_piece_chars=max_piece_chars)


def _vits_model(model: str, options: TtsOptions, device: str, run: TtsRun) -> TtsModel:
    from speech.tts.vits import VitsTts

    return VitsTts(model, device=device)


def _chattts_front_end(model: str, options: TtsOptions, max_piece_chars: int) -> TextFrontEnd:
    from speech.tts.chattts import ChatTtsFrontEnd

    return ChatTtsFrontEnd(model, max_piece_chars=max_piece_chars)


def _chattts_model(model: str, options: TtsOptions, device: str, run: TtsRun) -> TtsModel:
    from speech.tts.chattts import ChatTts

    return ChatTts(
        model,
        device=device,
        batch_size=run.batch_size,
        refine_text=options.refine_text,
        temperature=options.temperature,
        top_p=options.top_p,
        top_k=options.top_k,
        max_new_tokens=options.max_new_tokens,
    )


def _kokoro_front_end(model: str, options: TtsOptions, max_piece_chars: int) -> TextFrontEnd:
    from speech.tts.kokoro import KokoroFrontEnd

    return KokoroFrontEnd(model, max_piece_chars=max_piece_chars, default_voice=options.voice)


def _kokoro_model(model: str, options: TtsOptions, device: str, run: TtsRun) -> TtsModel:
    from speech.onnx_model import is_onnx_model

    if is_onnx_model(model):  # exported by `speech convert onnx`: runs on onnxruntime
        from speech.tts.kokoro_onnx import KokoroOnnxTts

        return KokoroOnnxTts(model, device=device)
    from speech.tts.kokoro import KokoroTts

    return KokoroTts(model, device=device)


#: In the order detection tries them.
_BACKENDS = {
    # ChatTTS's speaking rate is a prompt token ([speed_0]..[speed_9]) of its GPT, not a rate.
    "chattts": _Backend(_is_chattts, _chattts_front_end, _chattts_model, piece_chars=120, speed=False),
    "kokoro": _Backend(_is_kokoro, _kokoro_front_end, _kokoro_model, piece_chars=300, speed=True),
    "vits": _Backend(_is_vits, _vits_front_end, _vits_model, piece_chars=200, speed=True),
}


def detect_backend(model: str, backend: str | None = None) -> str:
    """``backend`` if given, else what the checkpoint at ``model`` is (reads no weights): the
    first backend of ``_BACKENDS`` that recognizes the directory, else (a hub id) the one that
    recognizes transformers' config of it."""
    if backend is not None:
        return backend
    path = Path(model)
    local = functools.cache(lambda: _local_config(path))
    for name, spec in _BACKENDS.items():
        if spec.recognizes(path, local):
            return name
    try:
        from transformers import AutoConfig

        remote = AutoConfig.from_pretrained(model).to_dict()
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load model {model!r}: {str(err).strip().splitlines()[0]}") from err
    for name, spec in _BACKENDS.items():
        if spec.recognizes(path, lambda: remote):
            return name
    raise ModelError(f"model {model!r} is not a ChatTTS, Kokoro or VITS checkpoint; pass --backend to say which")


def _local_config(path: Path) -> dict | None:
    """The mapping in ``path/config.json``; None when there is no such file."""
    config_file = path / "config.json"
    if not config_file.is_file():
        return None
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot read {config_file}: {err}") from err


def takes_speed(backend: str) -> bool:
    """Whether ``backend`` applies a speaking rate (``Utterance.speed``)."""
    return _BACKENDS[backend].speed


def check_options(options: TtsOptions) -> str:
    """The backend of ``options.model``, once the options are checked against it (reads no weights).

    Raises ``ModelError`` naming the option the backend cannot honour.
    """
    backend = detect_backend(options.model, options.backend)
    if options.speed is not None and not takes_speed(backend):
        raise ModelError(f"speed: the {backend} backend takes no speaking rate (ChatTTS: a [speed_N] prompt token "
                         "of its GPT); leave speed unset")
    return backend


def load_front_end(options: TtsOptions) -> TextFrontEnd:
    """The CPU text front end of ``options.model``."""
    backend = detect_backend(options.model, options.backend)
    spec = _BACKENDS[backend]
    try:
        return spec.front_end(options.model, options, options.max_piece_chars or spec.piece_chars)
    except (OSError, ValueError, KeyError) as err:
        raise ModelError(f"cannot load the {backend} front end of {options.model!r}: {err}") from err


def load_model(options: TtsOptions, device: str, run: TtsRun | None = None) -> TtsModel:
    """A model replica of ``options.model`` on ``device``, batching as ``run`` says (a job's
    ``options.run``; None: the defaults). Per-utterance knobs (voice, speed) come with each
    :class:`Utterance`, so one replica serves every voice and speed."""
    backend = detect_backend(options.model, options.backend)
    try:
        return _BACKENDS[backend].model(options.model, options, device, run or TtsRun())
    except (OSError, ValueError, KeyError) as err:
        raise ModelError(f"cannot load the {backend} model {options.model!r}: {err}") from err
