"""Speech embeddings from wav2vec2-family encoders (wav2vec2, XLSR, HuBERT, WavLM).

The recognizer's shape with a different output: the CTC front end cuts windows (one per
file, or overlapping chunks for long files), and :class:`Embedder` runs them in
length-bucketed padded batches through the encoder (``output_hidden_states``), keeps the
real frames of each window (padding by the model's own output lengths, chunk overlap as CTC
stitching drops it), and returns per utterance either those frames or their mean.

``layer`` N is transformers' ``hidden_states[N]``: 0 is the transformer's input (the projected
convolutional features), ``num_hidden_layers`` its last layer's output (for pre-norm "stable
layer norm" models before the final layer norm, as transformers returns it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForCTC, PretrainedConfig

from speech.asr import ModelError, _first_line
from speech.asr.base import Batches, Window
from speech.asr.ctc import TORCH_DTYPES, CtcFrontEnd, exact_lengths, padded_batch, torch_inputs
from speech.batching import plan_windows, run_planned
from speech.options import EmbeddingOptions

Layer = int | Literal["all"]
Pooling = Literal["mean", "none"]


@dataclass(frozen=True)
class EmbeddingModel:
    """What the driver needs to know of a checkpoint before any actor loads it."""

    model_type: str  # e.g. "wav2vec2", "hubert", "wavlm"
    hidden_size: int  # vector size
    num_hidden_layers: int  # transformer layers; hidden_states has one more entry
    frame_rate_hz: float  # output frames per second of audio (50 for 16 kHz and 320-sample frames)

    def resolve_layer(self, layer: Layer) -> int | None:
        """``layer`` as an index into ``hidden_states`` (None for ``"all"``).

        Raises ValueError naming the option when the model has no such layer.
        """
        if layer == "all":
            return None
        count = self.num_hidden_layers + 1
        if not -count <= layer < count:
            raise ValueError(
                f"layer {layer}: model has hidden states 0..{self.num_hidden_layers} "
                f"({self.num_hidden_layers} transformer layers); use one of them, a negative index or 'all'"
            )
        return layer % count


def inspect_model(model: str) -> EmbeddingModel:
    """Read ``model``'s configs (no weights) and check it is a wav2vec2-family encoder.

    Raises ModelError with a one-line reason otherwise.
    """
    try:
        config = AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load model {model!r}: {_first_line(err)}") from err
    ratio = getattr(config, "inputs_to_logits_ratio", None)
    if ratio is None or getattr(config, "is_encoder_decoder", False):
        raise ModelError(
            f"model {model!r} ({config.model_type}) is not a wav2vec2-family speech encoder "
            "(wav2vec2, XLSR, HuBERT, WavLM, ...): it has no convolutional feature encoder"
        )
    try:
        sample_rate = int(AutoFeatureExtractor.from_pretrained(model).sampling_rate)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load the feature extractor of model {model!r}: {_first_line(err)}") from err
    return EmbeddingModel(
        model_type=config.model_type,
        hidden_size=int(config.hidden_size),
        num_hidden_layers=int(config.num_hidden_layers),
        frame_rate_hz=sample_rate / int(ratio),
    )


def load_embed_front_end(model: str, options: EmbeddingOptions) -> CtcFrontEnd:
    """The CPU front end of ``speech embed``: the CTC one, chunking as transcription does."""
    return CtcFrontEnd(model, chunk_length_s=options.chunk_length_s, stride_length_s=options.stride_length_s,
                       strict_padding=options.strict_padding)


@dataclass
class Embedding:
    """An embedder's result for one utterance.

    ``vectors`` (float32) by pooling and layer: mean, one layer ``[hidden]``; mean, all layers
    ``[layers, hidden]``; none, one layer ``[frames, hidden]``; none, all ``[layers, frames, hidden]``.
    """

    vectors: np.ndarray
    computed_samples: int = 0  # samples the network ran on, incl. padding and overlap


class Embedder:
    """Runs a wav2vec2-family encoder over windows in length-bucketed batches.

    Args:
        model: hub id or local directory; a ``*ForCTC`` checkpoint's encoder is used without
            its output layer, any other one is loaded with ``AutoModel``.
        layer: hidden-state index (negative counts from the end) or ``"all"``.
        pooling: ``"mean"`` over each utterance's real frames, or ``"none"``.
        device: torch device string, e.g. ``"cpu"`` or ``"cuda"``.
        dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"`` (vectors come back as float32).
        batch_seconds: padded audio seconds per forward pass.
        strict_padding: for models without attention masks, batch only equal-length windows,
            since padding changes their output (group-norm feature encoders).
    """

    backend = "embed"

    def __init__(
        self,
        model: str,
        *,
        layer: Layer = -1,
        pooling: Pooling = "mean",
        device: str = "cpu",
        dtype: str = "float32",
        batch_seconds: float = 10.0,
        strict_padding: bool = True,
    ):
        self.info = inspect_model(model)
        self.layer = self.info.resolve_layer(layer)
        self.pooling = pooling
        self.device = torch.device(device)
        self.dtype = TORCH_DTYPES[dtype]
        self.model = _load_encoder(model, AutoConfig.from_pretrained(model), self.dtype).to(self.device).eval()
        feature_extractor = AutoFeatureExtractor.from_pretrained(model)
        self.sample_rate = int(feature_extractor.sampling_rate)
        self.padding_value = float(feature_extractor.padding_value)
        # Pass a mask only when the feature extractor makes one (the model was trained with it).
        self.uses_attention_mask = bool(feature_extractor.return_attention_mask)
        self.ratio = int(self.model.config.inputs_to_logits_ratio)
        self.batch_samples = int(batch_seconds * self.sample_rate)
        self.exact_lengths = exact_lengths(feature_extractor, strict_padding)

    def embed(self, utterances: Sequence[list[Window]], batches: Batches | None = None) -> list[Embedding]:
        """One :class:`Embedding` per utterance (a list of windows from :class:`CtcFrontEnd`), in order.

        ``batches``: the forward passes to make (see :meth:`CtcFrontEnd.plan`, which plans the same
        as this method does without them). Raises ValueError if a window is too short to give one
        output frame.
        """
        if batches is None:
            batches = plan_windows([[w.num_samples for w in u] for u in utterances], self.batch_samples,
                                   exact_lengths=self.exact_lengths)
        frames, computed = self._run(utterances, batches)
        results = []
        for u, utterance in enumerate(utterances):
            parts = [(u, k) for k in range(len(utterance))]
            # [layers, kept frames, hidden]: each window's own frames, overlap dropped.
            kept = np.concatenate([frames[u, k][:, utterance[k].kept_frames(self.ratio)] for u, k in parts], axis=1)
            vectors = kept.mean(axis=1, dtype=np.float64).astype(np.float32) if self.pooling == "mean" else kept
            if self.layer is not None:
                vectors = vectors[0]
            results.append(Embedding(vectors, computed_samples=sum(computed[uk] for uk in parts)))
        return results

    def _run(self, utterances: Sequence[list[Window]], batches: Batches) -> tuple[dict, dict]:
        """Forward every window in ``batches``: by ``(utterance, window)``, its selected hidden states
        ``[layers, frames, hidden]`` and padded cost."""
        windows = [w for utterance in utterances for w in utterance]
        lengths = [len(w.features) for w in windows]
        usable = self.model._get_feat_extract_output_lengths(torch.tensor(lengths or [0])).tolist()
        for window, frames in zip(windows, usable):
            if frames < 1:
                raise ValueError(
                    f"audio of {window.num_samples / self.sample_rate:.3f} s is too short: "
                    "the model's feature encoder gives no output frame"
                )
        return run_planned([[w.features for w in u] for u in utterances], batches, self._forward)

    @torch.inference_mode()
    def _forward(self, features: list[np.ndarray]) -> list[np.ndarray]:
        padded, mask, lengths = padded_batch(features, self.padding_value, attention_mask=self.uses_attention_mask)
        inputs, kwargs = torch_inputs(padded, mask, device=self.device, dtype=self.dtype)
        hidden_states = self.model(inputs, output_hidden_states=True, **kwargs).hidden_states
        selected = hidden_states if self.layer is None else (hidden_states[self.layer],)
        stacked = torch.stack(selected, dim=1).float().cpu().numpy()  # [batch, layers, frames, hidden]
        frames = self.model._get_feat_extract_output_lengths(torch.from_numpy(lengths)).tolist()
        # Only the real frames of each input: what a single-input forward gives.
        return [stacked[b, :, :n] for b, n in enumerate(frames)]


def _load_encoder(model: str, config: PretrainedConfig, dtype: torch.dtype) -> torch.nn.Module:
    architectures = getattr(config, "architectures", None) or []
    if any(name.endswith("ForCTC") for name in architectures):
        # The encoder inside the CTC model (``base_model``), loaded as the checkpoint was saved:
        # AutoModel would load the same weights but report the output layer as unexpected.
        return AutoModelForCTC.from_pretrained(model, dtype=dtype).base_model
    return AutoModel.from_pretrained(model, dtype=dtype)

