"""The model being fine-tuned: checked before training, loaded in each worker, saved for inference."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from transformers import AutoConfig, AutoModelForCTC, AutoProcessor, PreTrainedModel, ProcessorMixin

from speech.asr import _first_line
from speech.train.vocab import extend_vocabulary


class TrainingError(ValueError):
    """Fine-tuning cannot start: bad model, manifest or vocabulary; the message says why."""


def check_ctc_model(model: str) -> ProcessorMixin:
    """The processor of ``model`` after checking (configs only, no weights) that it has a CTC head.

    Raises TrainingError with a one-line reason.
    """
    try:
        config = AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as err:
        raise TrainingError(f"cannot load model {model!r}: {_first_line(err)}") from err
    architectures = getattr(config, "architectures", None) or []
    if not any(name.endswith("ForCTC") for name in architectures):
        raise TrainingError(
            f"model {model!r} ({config.model_type}, architectures {architectures}) has no CTC head; "
            "speech finetune trains AutoModelForCTC checkpoints (with their tokenizer)"
        )
    try:
        processor = AutoProcessor.from_pretrained(model)
    except (OSError, ValueError, TypeError) as err:
        raise TrainingError(f"cannot load the processor (feature extractor + tokenizer) of model {model!r}: {_first_line(err)}") from err
    if getattr(processor, "tokenizer", None) is None or getattr(processor, "feature_extractor", None) is None:
        raise TrainingError(f"model {model!r}: its processor has no tokenizer and feature extractor pair")
    return processor


def load_for_training(model: str, *, new_characters: Iterable[str] = (), seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    """``(model, processor)`` from a checkpoint, with ``new_characters`` added to the vocabulary."""
    processor = AutoProcessor.from_pretrained(model)
    network = AutoModelForCTC.from_pretrained(model)
    new_characters = list(new_characters)
    if new_characters:
        tokenizer = extend_vocabulary(network, processor.tokenizer, new_characters, seed=seed)
        processor = type(processor)(feature_extractor=processor.feature_extractor, tokenizer=tokenizer)
    # One target longer than its audio's frames has no CTC alignment: its loss would be
    # infinite and its gradient NaN for the whole batch. Zero it instead.
    network.config.ctc_zero_infinity = True
    return network, processor


def save_for_inference(model: PreTrainedModel, processor: ProcessorMixin, directory: str | Path) -> None:
    """Write what ``from_pretrained`` (``speech transcribe --model``, ``speech serve``) reads:
    the model, the processor, and the feature extractor on its own for tools that read it flat."""
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    processor.feature_extractor.save_pretrained(directory)

