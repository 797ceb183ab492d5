"""Speech synthesis backends behind one interface (see :mod:`speech.tts.base`).

The backend is chosen here, and only here: from ``--backend`` when given, else from the
checkpoint's layout, so no stage of the job switches on a model-type string. Each backend
is a :class:`_Backend` in ``_BACKENDS``: how to build its two halves, and what it takes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from speech.options import SynthesizeOptions
from speech.tts.base import TextFrontEnd, TtsModel, Utterance, Voice

__all__ = ["ModelError", "TextFrontEnd", "TtsModel", "Utterance", "Voice", "check_options", "detect_backend",
           "load_front_end", "load_model"]


class ModelError(ValueError):
    """The model cannot be loaded or is of a kind no backend handles."""


@dataclass(frozen=True)
class _Backend:
    """How to build one backend's two halves, and what it can be asked for."""

    front_end: Callable[[str, SynthesizeOptions, int], TextFrontEnd]  # (model, options, max_piece_chars)
    model: Callable[[str, SynthesizeOptions, str], TtsModel]  # (model, options, device)
    piece_chars: int  # longest piece given to the model at once when the options do not say (characters)
    speed: bool  # takes a speaking rate per utterance (``Utterance.speed``)


def _vits_front_end(model: str, options: SynthesizeOptions, max_piece_chars: int) -> TextFrontEnd:
    from speech.tts.vits import VitsFrontEnd

    return VitsFrontEnd(model, max_piece_chars=max_piece_chars)


def _vits_model(model: str, options: SynthesizeOptions, device: str) -> TtsModel:
    from speech.tts.vits import VitsTts

    return VitsTts(model, device=device)


def _chattts_front_end(model: str, options: SynthesizeOptions, max_piece_chars: int) -> TextFrontEnd:
    from speech.tts.chattts import ChatTtsFrontEnd

    return ChatTtsFrontEnd(model, max_piece_chars=max_piece_chars)


def _chattts_model(model: str, options: SynthesizeOptions, device: str) -> TtsModel:
    from speech.tts.chattts import ChatTts

    return ChatTts(
        model,
        device=device,
        batch_size=options.batch_size,
        refine_text=options.refine_text,
        temperature=options.temperature,
        top_p=options.top_p,
        top_k=options.top_k,
        max_new_tokens=options.max_new_tokens,
    )


def _kokoro_front_end(model: str, options: SynthesizeOptions, max_piece_chars: int) -> TextFrontEnd:
    from speech.tts.kokoro import KokoroFrontEnd

    return KokoroFrontEnd(model, max_piece_chars=max_piece_chars, default_voice=options.voice)


def _kokoro_model(model: str, options: SynthesizeOptions, device: str) -> TtsModel:
    from speech.tts.kokoro import KokoroTts

    return KokoroTts(model, device=device)


_BACKENDS = {
    "vits": _Backend(_vits_front_end, _vits_model, piece_chars=200, speed=True),
    # ChatTTS's speaking rate is a prompt token ([speed_0]..[speed_9]) of its GPT, not a rate.
    "chattts": _Backend(_chattts_front_end, _chattts_model, piece_chars=120, speed=False),
    "kokoro": _Backend(_kokoro_front_end, _kokoro_model, piece_chars=300, speed=True),
}


def detect_backend(model: str, backend: str | None = None) -> str:
    """``backend`` if given, else what the checkpoint at ``model`` is (reads no weights)."""
    if backend is not None:
        return backend
    from speech.tts.chattts import is_chattts_checkpoint

    path = Path(model)
    if is_chattts_checkpoint(path):
        return "chattts"
    config_file = path / "config.json"
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ModelError(f"cannot read {config_file}: {err}") from err
        if "istftnet" in config and "vocab" in config:
            return "kokoro"
        if config.get("model_type") == "vits":
            return "vits"
    try:
        from transformers import AutoConfig

        if AutoConfig.from_pretrained(model).model_type == "vits":
            return "vits"
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load model {model!r}: {str(err).strip().splitlines()[0]}") from err
    raise ModelError(f"model {model!r} is not a ChatTTS, Kokoro or VITS checkpoint; pass --backend to say which")


def takes_speed(backend: str) -> bool:
    """Whether ``backend`` applies a speaking rate (``Utterance.speed``)."""
    return _BACKENDS[backend].speed


def check_options(options: SynthesizeOptions) -> str:
    """The backend of ``options.model``, once the options are checked against it (reads no weights).

    Raises ``ModelError`` naming the option the backend cannot honour.
    """
    backend = detect_backend(options.model, options.backend)
    if options.speed is not None and not takes_speed(backend):
        raise ModelError(f"speed: the {backend} backend takes no speaking rate (ChatTTS: a [speed_N] prompt token "
                         "of its GPT); leave speed unset")
    return backend


def load_front_end(options: SynthesizeOptions) -> TextFrontEnd:
    """The CPU text front end of ``options.model``."""
    backend = detect_backend(options.model, options.backend)
    spec = _BACKENDS[backend]
    try:
        return spec.front_end(options.model, options, options.max_piece_chars or spec.piece_chars)
    except (OSError, ValueError, KeyError) as err:
        raise ModelError(f"cannot load the {backend} front end of {options.model!r}: {err}") from err


def load_model(options: SynthesizeOptions, device: str) -> TtsModel:
    """A model replica of ``options.model`` on ``device``. Per-utterance knobs (voice, speed)
    come with each :class:`Utterance`, so one replica serves every voice and speed."""
    backend = detect_backend(options.model, options.backend)
    try:
        return _BACKENDS[backend].model(options.model, options, device)
    except (OSError, ValueError, KeyError) as err:
        raise ModelError(f"cannot load the {backend} model {options.model!r}: {err}") from err
