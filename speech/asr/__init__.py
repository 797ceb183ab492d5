"""Speech recognition backends behind one interface, picked from the checkpoint.

The checkpoint's config decides the backend (here, and only here), so no stage of a
job or of the server ever switches on a model-type string.
"""

from __future__ import annotations

from transformers import AutoConfig

from speech.asr.base import FrontEnd, Recognizer, Transcript, Window
from speech.options import TranscribeOptions

__all__ = ["FrontEnd", "Recognizer", "Transcript", "Window", "ModelError", "detect_backend", "load_front_end", "load_recognizer"]


class ModelError(ValueError):
    """The model cannot be loaded or is of a kind no backend handles."""


def detect_backend(model: str) -> str:
    """``"ctc"`` for a checkpoint whose config names a ``*ForCTC`` architecture.

    Reads only the config (no weights), so the driver can reject a bad model before
    any actor starts.
    """
    try:
        config = AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load model {model!r}: {_first_line(err)}") from err
    architectures = getattr(config, "architectures", None) or []
    if any(name.endswith("ForCTC") for name in architectures):
        return "ctc"
    raise ModelError(
        f"model {model!r} ({config.model_type}, architectures {architectures}) is not a supported ASR model; "
        "supported: CTC models (AutoModelForCTC)"
    )


def load_front_end(model: str, options: TranscribeOptions) -> FrontEnd:
    """The CPU front end for ``model``."""
    if detect_backend(model) == "ctc":
        from speech.asr.ctc import CtcFrontEnd

        return CtcFrontEnd(model, chunk_length_s=options.chunk_length_s, stride_length_s=options.stride_length_s)
    raise AssertionError("unreachable: detect_backend validated the model")


def load_recognizer(model: str, options: TranscribeOptions, device: str) -> Recognizer:
    """The recognizer for ``model`` on ``device``, batching as ``options`` say."""
    if detect_backend(model) == "ctc":
        from speech.asr.ctc import CtcRecognizer

        return CtcRecognizer(
            model,
            device=device,
            dtype=options.dtype,
            batch_seconds=options.budget_s,
            strict_padding=options.strict_padding,
        )
    raise AssertionError("unreachable: detect_backend validated the model")


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
