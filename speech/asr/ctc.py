"""CTC backend: any transformers ``AutoModelForCTC`` (wav2vec2, XLSR, HuBERT, ...).

Front end: per-utterance feature extraction (normalization over the real samples
only), long inputs cut into overlapping chunks exactly as transformers' ASR
pipeline cuts them, or (with VAD) into speech spans that skip silence and split at
pauses. Recognizer: length-bucketed padded forward passes, greedy CTC decoding,
stride-trimmed stitching, word timings from the frame alignment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForCTC, AutoTokenizer

from speech.asr.base import Batches, Transcript, Window
from speech.batching import chunk_spans, pad, plan_windows, run_batches, run_planned
from speech.options import DecodingOptions
from speech.schema import Word

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class CtcFrontEnd:
    """Waveform -> normalized input windows; loads only the feature extractor and config.

    ``strict_padding``: as :class:`CtcRecognizer`'s, for the batches :meth:`plan` makes.
    """

    def __init__(
        self, model: str, *, chunk_length_s: float = 30.0, stride_length_s: float | None = None, vad: bool = False,
        strict_padding: bool = True,
    ):
        self.feature_extractor = AutoFeatureExtractor.from_pretrained(model)
        self.exact_lengths = exact_lengths(self.feature_extractor, strict_padding)
        self.sample_rate = int(self.feature_extractor.sampling_rate)
        # Chunk boundaries are aligned to whole output frames, as transformers does,
        # so stitched frames fall on the same timeline as unchunked ones.
        align = int(AutoConfig.from_pretrained(model).inputs_to_logits_ratio)
        stride_s = chunk_length_s / 6 if stride_length_s is None else stride_length_s
        self.chunk_len = _aligned(chunk_length_s * self.sample_rate, align)
        self.stride = _aligned(stride_s * self.sample_rate, align)
        self.vad = None
        if vad:
            from speech.asr.vad import SileroVad

            self.vad = SileroVad()

    def batch_cost(self, window: Window) -> int:
        """The window's own length: a CTC network runs on the audio it is given."""
        return window.num_samples

    def plan(self, utterances: Sequence[list[Window]], max_padded: int) -> Batches:
        """Length-bucketed model calls of ``max_padded`` padded samples (see :class:`CtcRecognizer`)."""
        return plan_windows([[self.batch_cost(w) for w in u] for u in utterances], max_padded,
                            exact_lengths=self.exact_lengths)

    def windows(self, audio: np.ndarray) -> list[Window]:
        """``audio``: mono float32 ``[n]`` at ``sample_rate`` -> windows.

        Without VAD: one window, or overlapping chunks for inputs over ``chunk_length_s``.
        With VAD: one window per speech span (none for silence), long spans split at their
        longest pauses so that no window exceeds ``chunk_length_s``.
        """
        if self.vad is not None:
            from speech.asr.vad import speech_spans

            spans = speech_spans(audio, self.sample_rate, vad=self.vad, max_span_s=self.chunk_len / self.sample_rate)
            return [Window(self.features(audio[s.start : s.end]), s.end - s.start, offset=s.start) for s in spans]
        if len(audio) <= self.chunk_len:
            return [Window(self.features(audio), len(audio))]
        return [
            Window(self.features(audio[c.start : c.end]), c.length, c.left, c.right, offset=c.start)
            for c in chunk_spans(len(audio), self.chunk_len, self.stride, self.stride)
        ]

    def features(self, audio: np.ndarray) -> np.ndarray:
        """``audio``: mono float32 ``[n]`` -> the model's input ``[n]``, normalized over ``audio``."""
        # One utterance at a time: normalization statistics must come from real
        # samples only, whatever the model's batch later pads them to.
        values = self.feature_extractor(audio, sampling_rate=self.sample_rate, return_tensors="np").input_values
        return values[0].astype(np.float32, copy=False)


@dataclass(frozen=True)
class _Alignment:
    """Greedy CTC path: token id, its posterior and its start time per output frame."""

    ids: np.ndarray  # int64 [frames]
    probs: np.ndarray  # float32 [frames]
    times: np.ndarray  # float64 [frames], seconds from the start of the utterance


class CtcRecognizer:
    """Runs a CTC model over windows in length-bucketed batches and decodes greedily.

    The network runs on one of two engines, picked from ``model``: a transformers checkpoint
    runs in PyTorch (``engine`` ``"transformers"``), a directory written by ``speech convert
    onnx`` in onnxruntime (``"onnxruntime"``, see :mod:`speech.asr.ctc_onnx`). Everything
    around the forward pass (batching, stitching, decoding, confidences, word timings) is
    this class's, the same for both.

    Args:
        model: hub id or local directory with the model and its tokenizer.
        device: torch device string, e.g. ``"cpu"`` or ``"cuda"``.
        dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"`` (ONNX models: ``"float32"``).
        batch_seconds: padded audio seconds per forward pass.
        strict_padding: for models without attention masks, never pad (batch only
            equal-length windows), since padding changes their output.
        engine: ``"transformers"`` or ``"onnxruntime"`` as the registry detected it; None:
            from the directory.
    """

    backend = "ctc"
    engine = "transformers"

    def __init__(
        self,
        model: str,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        batch_seconds: float = 10.0,
        strict_padding: bool = True,
        engine: str | None = None,
    ):
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        feature_extractor = AutoFeatureExtractor.from_pretrained(model)
        self.sample_rate = int(feature_extractor.sampling_rate)
        self.padding_value = float(feature_extractor.padding_value)
        self.uses_attention_mask = bool(feature_extractor.return_attention_mask)
        self.network = _network(model, device=device, dtype=dtype, attention_mask=self.uses_attention_mask,
                                engine=engine)
        self.engine = self.network.engine
        self.ratio = int(AutoConfig.from_pretrained(model).inputs_to_logits_ratio)
        self.frame_s = self.ratio / self.sample_rate
        self.batch_samples = int(batch_seconds * self.sample_rate)
        self.exact_lengths = exact_lengths(feature_extractor, strict_padding)

    def transcribe(
        self, utterances: Sequence[list[Window]], languages: Sequence[str | None] | None = None,
        options: Sequence[DecodingOptions] | None = None, batches: Batches | None = None,
    ) -> list[Transcript]:
        """Transcribe utterances given as window lists (see :class:`CtcFrontEnd`).

        ``batches``: the forward passes to make (see :meth:`CtcFrontEnd.plan`, which plans the
        same as this method does without them). ``languages`` and ``options`` are ignored: a
        CTC model's vocabulary is its language, and it decodes greedily, frame by frame, with
        nothing to tune.
        """
        if batches is None:
            batches = plan_windows([[w.num_samples for w in u] for u in utterances], self.batch_samples,
                                   exact_lengths=self.exact_lengths)
        outputs, computed = self._run(utterances, batches)
        transcripts = []
        for u, utterance in enumerate(utterances):
            parts = [(u, k) for k in range(len(utterance))]
            transcript = self._decode(self._stitch([outputs[uk] for uk in parts], utterance))
            transcript.computed_samples = sum(computed[uk] for uk in parts)
            transcripts.append(transcript)
        return transcripts

    def greedy_ids(self, features: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The greedy token id of every output frame (int64 ``[frames]``) of each input, batched
        as :meth:`transcribe` batches windows. Live transcription's incremental steps."""
        outputs, _ = run_batches(list(features), self.batch_samples, self._forward, exact_lengths=self.exact_lengths)
        return [output.ids for output in outputs]

    def frames(self, num_samples: int) -> int:
        """Output frames of an input of ``num_samples`` samples (0 when it is too short for one)."""
        if num_samples <= 0:
            return 0
        return max(0, int(self.network.frames(np.array([num_samples], dtype=np.int64))[0]))

    def text(self, ids: np.ndarray) -> str:
        """The text of a greedy path (repeats merged, blanks dropped), as :meth:`transcribe` decodes it."""
        return self.tokenizer.decode(ids)

    def _run(self, utterances: Sequence[list[Window]], batches: Batches) -> tuple[dict, dict]:
        """Forward every window in ``batches``; returns, by ``(utterance, window)``, its greedy
        path and the padded samples it cost."""
        return run_planned([[w.features for w in u] for u in utterances], batches, self._forward)

    @torch.inference_mode()
    def _forward(self, features: list[np.ndarray]) -> list[_Alignment]:
        padded, mask, lengths = padded_batch(features, self.padding_value, attention_mask=self.uses_attention_mask)
        logits = self.network.logits(padded, mask)  # [batch, frames, vocab]
        # Argmax of the logits themselves, as transformers decodes; the posterior of
        # the chosen token is the confidence.
        ids = logits.argmax(dim=-1)
        probs = logits.float().softmax(dim=-1).amax(dim=-1)
        frames = self.network.frames(lengths)
        return [
            _Alignment(ids[b, :n].cpu().numpy(), probs[b, :n].cpu().numpy(), np.arange(n) * self.frame_s)
            for b, n in enumerate(frames)
        ]

    def _decode(self, alignment: _Alignment) -> Transcript:
        decoded = self.tokenizer.decode(alignment.ids, output_char_offsets=True, output_word_offsets=True)
        delimiter = self.tokenizer.word_delimiter_token
        char_conf = [
            (c["start_offset"], float(alignment.probs[c["start_offset"] : c["end_offset"]].mean()))
            for c in decoded.char_offsets
            if c["char"] not in (" ", delimiter)
        ]
        words = []
        for w in decoded.word_offsets:
            inside = [p for start, p in char_conf if w["start_offset"] <= start < w["end_offset"]]
            words.append(
                Word(
                    word=w["word"],
                    start=round(float(alignment.times[w["start_offset"]]), 3),
                    end=round(float(alignment.times[w["end_offset"] - 1]) + self.frame_s, 3),
                    confidence=float(np.mean(inside)) if inside else 0.0,
                )
            )
        confidence = float(np.mean([p for _, p in char_conf])) if char_conf else None
        return Transcript(text=decoded.text, confidence=confidence, words=words)

    def _stitch(self, parts: list[_Alignment], windows: list[Window]) -> _Alignment:
        """Join one utterance's window outputs into one path on the utterance's timeline.

        Overlapping chunks: the frames of each chunk's strides are dropped
        (:meth:`Window.kept_frames`), so chunked output matches transformers' pipeline. Speech
        spans (VAD): a word delimiter is put between spans, since a pause ends a word and CTC
        must not merge tokens across it.
        """
        if not parts:  # VAD found no speech
            return _Alignment(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0))
        if len(parts) == 1 and windows[0].left == windows[0].right == windows[0].offset == 0:
            return parts[0]
        delimiter = self.tokenizer.convert_tokens_to_ids(self.tokenizer.word_delimiter_token)
        ids, probs, times = [], [], []
        for i, (part, window) in enumerate(zip(parts, windows)):
            kept = window.kept_frames(self.ratio)
            start = window.offset / self.sample_rate
            if i and window.left == 0:  # a gap between speech spans
                ids.append(np.array([delimiter]))
                probs.append(np.ones(1, np.float32))
                times.append(np.array([start]))
            ids.append(part.ids[kept])
            probs.append(part.probs[kept])
            times.append(start + part.times[kept])
        return _Alignment(np.concatenate(ids), np.concatenate(probs), np.concatenate(times))


def exact_lengths(feature_extractor, strict_padding: bool) -> bool:
    """Whether batches may hold only windows of one length: with ``strict_padding``, for models
    taking no attention mask, whose output padding changes. The feature extractor says whether
    the model was trained to take a mask (XLSR-style layer-norm models) or not (wav2vec2-base
    style group norm)."""
    return strict_padding and not feature_extractor.return_attention_mask


def padded_batch(
    features: list[np.ndarray], padding_value: float, *, attention_mask: bool
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """1-D model inputs padded into float32 ``[batch, samples]``, the bool mask ``[batch,
    samples]`` (True on real samples) for models that take one (else None), and the int64
    lengths ``[batch]``: what every engine's forward receives."""
    padded, lengths = pad(features, padding_value)
    mask = np.arange(padded.shape[1])[None, :] < lengths[:, None] if attention_mask else None
    return padded, mask, lengths


def torch_inputs(
    padded: np.ndarray, mask: np.ndarray | None, *, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, dict]:
    """A :func:`padded_batch` as a PyTorch forward's input tensor and keyword arguments."""
    kwargs = {} if mask is None else {"attention_mask": torch.from_numpy(mask).to(device)}
    return torch.from_numpy(padded).to(device, dtype), kwargs


class CtcNetwork(Protocol):
    """The forward pass of a CTC model on one engine: padded waveforms in, logits out."""

    engine: str  # recorded in every output row

    def logits(self, padded: np.ndarray, mask: np.ndarray | None) -> torch.Tensor:
        """``padded``: float32 ``[batch, samples]``; ``mask``: bool ``[batch, samples]`` (True on
        real samples) for models that take one, else None. Returns ``[batch, frames, vocab]``."""
        ...

    def frames(self, lengths: np.ndarray) -> list[int]:
        """Output frames of inputs of ``lengths`` samples (int64 ``[batch]``)."""
        ...


class TorchCtcNetwork:
    """A transformers ``AutoModelForCTC`` in PyTorch."""

    engine = "transformers"

    def __init__(self, model: str, *, device: str = "cpu", dtype: str = "float32"):
        self.device = torch.device(device)
        self.dtype = TORCH_DTYPES[dtype]
        self.model = AutoModelForCTC.from_pretrained(model, dtype=self.dtype).to(self.device).eval()

    @torch.inference_mode()
    def logits(self, padded: np.ndarray, mask: np.ndarray | None) -> torch.Tensor:
        inputs, kwargs = torch_inputs(padded, mask, device=self.device, dtype=self.dtype)
        return self.model(inputs, **kwargs).logits

    def frames(self, lengths: np.ndarray) -> list[int]:
        return self.model._get_feat_extract_output_lengths(torch.from_numpy(lengths)).tolist()


def _network(model: str, *, device: str, dtype: str, attention_mask: bool, engine: str | None) -> CtcNetwork:
    """The network on ``engine``; None: the one ``model`` asks for (onnxruntime for an exported
    directory, else PyTorch)."""
    from speech.onnx_model import is_onnx_model

    if engine is None:
        engine = "onnxruntime" if is_onnx_model(model) else "transformers"
    if engine == "onnxruntime":
        from speech.asr.ctc_onnx import OnnxCtcNetwork

        return OnnxCtcNetwork(model, device=device, dtype=dtype, attention_mask=attention_mask)
    return TorchCtcNetwork(model, device=device, dtype=dtype)


def _aligned(samples: float, align: int) -> int:
    return int(round(samples / align) * align)
