"""CTC backend: any transformers ``AutoModelForCTC`` (wav2vec2, XLSR, HuBERT, ...).

Front end: per-utterance feature extraction (normalization over the real samples
only), long inputs cut into overlapping chunks exactly as transformers' ASR
pipeline cuts them, or (with VAD) into speech spans that skip silence and split at
pauses. Recognizer: length-bucketed padded forward passes, greedy CTC decoding,
stride-trimmed stitching, word timings from the frame alignment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForCTC, AutoTokenizer

from speech.asr.base import Transcript, Window
from speech.batching import chunk_spans, pad, plan_batches
from speech.options import DecodingOptions
from speech.schema import Word

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class CtcFrontEnd:
    """Waveform -> normalized input windows; loads only the feature extractor and config."""

    def __init__(
        self, model: str, *, chunk_length_s: float = 30.0, stride_length_s: float | None = None, vad: bool = False
    ):
        self.feature_extractor = AutoFeatureExtractor.from_pretrained(model)
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

    def windows(self, audio: np.ndarray) -> list[Window]:
        """``audio``: mono float32 ``[n]`` at ``sample_rate`` -> windows.

        Without VAD: one window, or overlapping chunks for inputs over ``chunk_length_s``.
        With VAD: one window per speech span (none for silence), long spans split at their
        longest pauses so that no window exceeds ``chunk_length_s``.
        """
        if self.vad is not None:
            from speech.asr.vad import speech_spans

            spans = speech_spans(audio, self.sample_rate, vad=self.vad, max_span_s=self.chunk_len / self.sample_rate)
            return [Window(self._features(audio[s.start : s.end]), s.end - s.start, offset=s.start) for s in spans]
        if len(audio) <= self.chunk_len:
            return [Window(self._features(audio), len(audio))]
        return [
            Window(self._features(audio[c.start : c.end]), c.length, c.left, c.right, offset=c.start)
            for c in chunk_spans(len(audio), self.chunk_len, self.stride, self.stride)
        ]

    def _features(self, audio: np.ndarray) -> np.ndarray:
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

    Args:
        model: hub id or local directory with the model and its tokenizer.
        device: torch device string, e.g. ``"cpu"`` or ``"cuda"``.
        dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"``.
        batch_seconds: padded audio seconds per forward pass.
        strict_padding: for models without attention masks, never pad (batch only
            equal-length windows), since padding changes their output.
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
    ):
        self.device = torch.device(device)
        self.dtype = _DTYPES[dtype]
        self.model = AutoModelForCTC.from_pretrained(model, dtype=self.dtype).to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        feature_extractor = AutoFeatureExtractor.from_pretrained(model)
        self.sample_rate = int(feature_extractor.sampling_rate)
        self.padding_value = float(feature_extractor.padding_value)
        # The feature extractor says whether the model was trained to take a mask
        # (XLSR-style layer-norm models) or not (wav2vec2-base style group norm).
        self.uses_attention_mask = bool(feature_extractor.return_attention_mask)
        self.ratio = int(self.model.config.inputs_to_logits_ratio)
        self.frame_s = self.ratio / self.sample_rate
        self.batch_samples = int(batch_seconds * self.sample_rate)
        self.exact_lengths = strict_padding and not self.uses_attention_mask

    def transcribe(
        self, utterances: Sequence[list[Window]], languages: Sequence[str | None] | None = None,
        options: Sequence[DecodingOptions] | None = None,
    ) -> list[Transcript]:
        """Transcribe utterances given as window lists (see :class:`CtcFrontEnd`).

        ``languages`` and ``options`` are ignored: a CTC model's vocabulary is its language,
        and it decodes greedily, frame by frame, with nothing to tune.
        """
        windows = [w for utterance in utterances for w in utterance]
        outputs, computed = self._run(windows)
        transcripts = []
        cursor = 0
        for utterance in utterances:
            parts = range(cursor, cursor + len(utterance))
            cursor += len(utterance)
            alignment = self._stitch([outputs[i] for i in parts], utterance)
            transcript = self._decode(alignment)
            transcript.computed_samples = sum(computed[i] for i in parts)
            transcripts.append(transcript)
        return transcripts

    def _run(self, windows: list[Window]) -> tuple[list[_Alignment], list[int]]:
        """Forward every window; returns its greedy path and the padded samples it cost."""
        outputs: list[_Alignment | None] = [None] * len(windows)
        computed = [0] * len(windows)
        lengths = [len(w.features) for w in windows]
        for batch in plan_batches(lengths, self.batch_samples, exact_lengths=self.exact_lengths):
            longest = max(lengths[i] for i in batch)
            for i, alignment in zip(batch, self._forward([windows[i].features for i in batch])):
                outputs[i] = alignment
                computed[i] = longest
        return outputs, computed

    @torch.inference_mode()
    def _forward(self, features: list[np.ndarray]) -> list[_Alignment]:
        padded, lengths = pad(features, self.padding_value)
        inputs = torch.from_numpy(padded).to(self.device, self.dtype)
        kwargs = {}
        if self.uses_attention_mask:
            kwargs["attention_mask"] = (torch.arange(padded.shape[1])[None, :] < torch.from_numpy(lengths)[:, None]).to(
                self.device
            )
        logits = self.model(inputs, **kwargs).logits  # [batch, frames, vocab]
        # Argmax of the logits themselves, as transformers decodes; the posterior of
        # the chosen token is the confidence.
        ids = logits.argmax(dim=-1)
        probs = logits.float().softmax(dim=-1).amax(dim=-1)
        frames = self.model._get_feat_extract_output_lengths(torch.from_numpy(lengths)).tolist()
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

        Overlapping chunks: the frames of each chunk's strides are dropped, converted from
        samples to frames with the rounding of transformers' ``rescale_stride``, so chunked
        output matches its pipeline. Speech spans (VAD): a word delimiter is put between
        spans, since a pause ends a word and CTC must not merge tokens across it.
        """
        if not parts:  # VAD found no speech
            return _Alignment(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0))
        if len(parts) == 1 and windows[0].left == windows[0].right == windows[0].offset == 0:
            return parts[0]
        delimiter = self.tokenizer.convert_tokens_to_ids(self.tokenizer.word_delimiter_token)
        ids, probs, times = [], [], []
        for i, (part, window) in enumerate(zip(parts, windows)):
            total = int(round(window.num_samples / self.ratio))
            left = int(round(window.left / window.num_samples * total))
            right = int(round(window.right / window.num_samples * total))
            start = window.offset / self.sample_rate
            if i and window.left == 0:  # a gap between speech spans
                ids.append(np.array([delimiter]))
                probs.append(np.ones(1, np.float32))
                times.append(np.array([start]))
            ids.append(part.ids[left : total - right])
            probs.append(part.probs[left : total - right])
            times.append(start + part.times[left : total - right])
        return _Alignment(np.concatenate(ids), np.concatenate(probs), np.concatenate(times))



def _aligned(samples: float, align: int) -> int:
    return int(round(samples / align) * align)
