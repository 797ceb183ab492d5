"""Speech synthesis backends behind one interface (see :mod:`speech.tts.base`).

The backend is chosen here, and only here: from ``--backend`` when given, else from the
checkpoint's layout, so no stage of the job switches on a model-type string.
"""

from __future__ import annotations

import json
from pathlib import Path

from speech.options import SynthesizeOptions
from speech.tts.base import TextFrontEnd, TtsModel, Utterance

__all__ = ["ModelError", "TextFrontEnd", "TtsModel", "Utterance", "detect_backend", "load_front_end", "load_model"]

#: Longest piece each backend is given at once when the options do not say (characters).
_PIECE_CHARS = {"vits": 200, "chattts": 120, "kokoro": 300}


class ModelError(ValueError):
    """The model cannot be loaded or is of a kind no backend handles."""


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


def load_front_end(options: SynthesizeOptions) -> TextFrontEnd:
    """The CPU text front end of ``options.model``."""
    backend = detect_backend(options.model, options.backend)
    max_piece_chars = options.max_piece_chars or _PIECE_CHARS[backend]
    try:
        if backend == "vits":
            from speech.tts.vits import VitsFrontEnd

            return VitsFrontEnd(options.model, max_piece_chars=max_piece_chars)
        if backend == "chattts":
            from speech.tts.chattts import ChatTtsFrontEnd

            return ChatTtsFrontEnd(options.model, max_piece_chars=max_piece_chars)
        from speech.tts.kokoro import KokoroFrontEnd

        return KokoroFrontEnd(options.model, max_piece_chars=max_piece_chars, default_voice=options.voice)
    except (OSError, ValueError, KeyError) as err:
        raise ModelError(f"cannot load the {backend} front end of {options.model!r}: {err}") from err


def load_model(options: SynthesizeOptions, device: str) -> TtsModel:
    """A model replica of ``options.model`` on ``device``."""
    backend = detect_backend(options.model, options.backend)
    try:
        if backend == "vits":
            from speech.tts.vits import VitsTts

            return VitsTts(options.model, device=device, speaking_rate=options.speed)
        if backend == "chattts":
            from speech.tts.chattts import ChatTts

            return ChatTts(
                options.model,
                device=device,
                batch_size=options.batch_size,
                refine_text=options.refine_text,
                temperature=options.temperature,
                top_p=options.top_p,
                top_k=options.top_k,
                max_new_tokens=options.max_new_tokens,
            )
        from speech.onnx_model import is_onnx_model

        if is_onnx_model(options.model):  # exported by `speech convert onnx`: runs on onnxruntime
            from speech.tts.kokoro_onnx import KokoroOnnxTts

            return KokoroOnnxTts(options.model, device=device, speed=options.speed or 1.0)
        from speech.tts.kokoro import KokoroTts

        return KokoroTts(options.model, device=device, speed=options.speed or 1.0)
    except (OSError, ValueError, KeyError) as err:
        raise ModelError(f"cannot load the {backend} model {options.model!r}: {err}") from err
