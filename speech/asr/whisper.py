"""Whisper backend: the front end, and the transformers engine (any ``WhisperForConditionalGeneration``).

Front end (CPU): a file becomes windows of at most 30 s - consecutive slices of the file or,
with VAD, slices around its speech regions packed together (the WhisperX approach) - each
turned into the log-mel features the checkpoint's own feature extractor computes. Both
engines (this one and :mod:`speech.asr.whisper_ct2`) use it, so they see the same features.

Recognizer (GPU when there is one): :class:`WhisperRecognizer` runs the transformers model
under the shared loop of :class:`~speech.asr.whisper_base.WhisperBase`. Per batch: one encoder
pass; one decoder step from ``<|startoftranscript|>``, whose distribution gives the language
(on a file's first window, unless a language is given) and the no-speech probability; then
``generate`` per temperature of the fallback. Words are timed from the alignment heads'
cross-attention with dynamic time warping (:mod:`speech.asr.alignment`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from transformers import AutoModelForSpeechSeq2Seq, AutoTokenizer, LogitsProcessor, LogitsProcessorList
from transformers.modeling_outputs import BaseModelOutput

from speech.asr import packing
from speech.asr.alignment import CrossAttention, token_bounds
from speech.asr.base import Batches, Window
from speech.asr.decoding import Attempt, Request
from speech.asr.whisper_base import (
    SpecialTokens,
    Task,
    Timestamps,
    WhisperBase,
    average_logprob,
    check_request,
    load_feature_extractor,
)
from speech.batching import plan_windows
from speech.options import DecodingOptions

#: How a window shorter than 30 s is padded: "audio" (transformers: silence appended to the
#: audio, then log-mel) or "log_mel" (openai-whisper, faster-whisper: log-mel of the audio, then
#: zero frames appended). The padded frames differ (the silence floor vs 0), and the decoder
#: hears the difference: each engine gets the features of its reference implementation.
MelPadding = Literal["audio", "log_mel"]


class WhisperFrontEnd:
    """Waveform -> windows of log-mel features; loads only the feature extractor.

    Args:
        model: hub id or local directory of a Whisper checkpoint (transformers or CTranslate2).
        vad: cut windows around speech found by Silero VAD instead of walking the file in
            consecutive 30 s slices. Silence and music then produce no window at all.
        padding: see :data:`MelPadding`; the registry picks the engine's (transformers: audio,
            CTranslate2: log_mel).
        condition_on_previous_text: the recognizer prompts each window with the text before it,
            so :meth:`plan` keeps window k + 1 of a file out of window k's batch.
        pack: the recognizer packs short files into shared windows, so a short window costs
            its audio and a gap (:meth:`batch_cost`) and a planned batch holds enough files
            to fill its windows.
    """

    def __init__(self, model: str, *, vad: bool = False, padding: MelPadding = "audio",
                 condition_on_previous_text: bool = False, pack: bool = False):
        self.padding = padding
        self.condition_on_previous_text = condition_on_previous_text
        self.pack = pack
        self.feature_extractor = load_feature_extractor(model)
        self.sample_rate = int(self.feature_extractor.sampling_rate)
        self.window_samples = int(self.feature_extractor.n_samples)  # 30 s: what the encoder sees
        self.vad = None
        if vad:
            from speech.asr.vad import SileroVad

            self.vad = SileroVad()

    def batch_cost(self, window: Window) -> int:
        """30 s whatever the window holds (the encoder always runs on features padded to 30 s),
        unless packing: then a window that can share costs its audio and the gap before the next."""
        gap = packing.gap_samples(self.sample_rate)
        if self.pack and packing.can_share(window.num_samples, self.window_samples, gap):
            return window.num_samples + gap
        return self.window_samples

    def plan(self, utterances: Sequence[list[Window]], max_padded: int) -> Batches:
        """The engine calls, as ``WhisperBase.plan`` makes them for a recognizer of ``max_padded``
        samples per call decoding with this front end's ``condition_on_previous_text``."""
        return plan_windows([[self.batch_cost(w) for w in u] for u in utterances], max_padded,
                            by_rank=self.condition_on_previous_text)

    def windows(self, audio: np.ndarray) -> list[Window]:
        """``audio``: mono float32 ``[n]`` at ``sample_rate`` -> windows in file order.

        Each window's ``features`` are float32 ``[num_mel_bins, 3000]`` (padded to 30 s),
        ``num_samples`` the audio it covers and ``offset`` its first sample in ``audio``.
        With VAD, a file without speech gives an empty list.
        """
        return [
            Window(self._features(audio[start:end]), end - start, offset=start) for start, end in self._slices(audio)
        ]

    def _slices(self, audio: np.ndarray) -> list[tuple[int, int]]:
        """``(start, end)`` samples of each window."""
        if self.vad is None:
            return [(s, min(s + self.window_samples, len(audio))) for s in range(0, len(audio), self.window_samples)]
        from speech.asr.vad import pack_spans, speech_spans

        groups = pack_spans(speech_spans(audio, self.sample_rate, vad=self.vad), self.window_samples)
        # A group's window runs from its first span's start to its last span's end, pauses
        # included, so one offset maps every time in it back onto the file.
        return [(group[0].start, group[-1].end) for group in groups]

    def _features(self, audio: np.ndarray) -> np.ndarray:
        extractor = self.feature_extractor
        if self.padding == "audio":
            features = extractor(audio, sampling_rate=self.sample_rate, return_tensors="np").input_features
            return features[0].astype(np.float32, copy=False)
        # The STFT reflects half a frame at each edge: give it at least one frame of audio.
        audio = np.pad(audio, (0, max(0, extractor.n_fft - len(audio))))
        features = extractor(audio, sampling_rate=self.sample_rate, padding="longest", return_tensors="np").input_features[0]
        frames = extractor.nb_max_frames  # 3000
        return np.pad(features[:, :frames], ((0, 0), (0, max(0, frames - features.shape[1])))).astype(np.float32)


class _ChosenLogprobs(LogitsProcessor):
    """Records the log-probability of every generated token, without keeping all scores.

    Whisper's generate puts its own processors (timestamp rules, suppressed tokens) before
    user ones, and sampling's temperature after them, so this one sees the distribution
    greedy decoding picks from (for sampled tokens: the distribution before the temperature,
    as openai-whisper scores them). At each step it reads the token picked from the previous
    step's distribution; storing only the last step costs ``[batch, vocab]`` instead of
    ``output_scores``' ``[steps, batch, vocab]``.
    """

    def __init__(self) -> None:
        self.previous: torch.Tensor | None = None  # float32 [batch, vocab] log-probabilities
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.previous is not None:
            self.steps.append(self.previous.gather(1, input_ids[:, -1:])[:, 0])
        self.previous = scores.float().log_softmax(dim=-1)
        return scores

    def logprobs(self, sequences: torch.Tensor) -> np.ndarray:
        """float32 ``[batch, new tokens]`` once generation returned ``sequences``."""
        steps = [*self.steps, self.previous.gather(1, sequences[:, -1:])[:, 0]]
        return torch.stack(steps, dim=1).cpu().numpy()


@dataclass(frozen=True)
class _Encoded:
    hidden: torch.Tensor  # [batch, 1500, d_model] encoder output
    first_step: torch.Tensor  # [batch, vocab] logits after <|startoftranscript|>
    no_speech: list[float]  # P(<|nospeech|>) there, per row


class WhisperRecognizer(WhisperBase):
    """Runs a transformers Whisper checkpoint over windows of many files in batches.

    Args:
        model: hub id or local directory of a Whisper checkpoint with its tokenizer.
        device: torch device string, e.g. ``"cpu"`` or ``"cuda"``.
        dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"``; the weights are cast to it.
        batch_seconds: padded audio per ``generate`` call; every window costs 30 s, so
            this allows ``max(1, batch_seconds // 30)`` windows per call.
        language: a code or name (``"ko"``, ``"korean"``) used for every file whose own
            language (see :meth:`transcribe`) is not given; None or ``"auto"`` detects it
            per file.
        task: ``"transcribe"``, or ``"translate"`` to English.
        timestamps: ``"none"`` (one segment per window), ``"segment"`` (the model's
            timestamp tokens) or ``"word"`` (segments plus words timed by the alignment heads).
        max_new_tokens: bound on generated tokens per window; None: half the decoder's
            context (224 for every released Whisper), as openai-whisper.
        decoding: beam size, temperature fallback, thresholds and prompts (see
            :class:`~speech.options.DecodingOptions`); None: the defaults (greedy, fallback on).
        pack: short files share 30 s windows, split back by timestamps (:mod:`speech.asr.whisper_packed`).

    With beam search, the chosen tokens' log-probabilities (and word timings) come from one
    more, teacher-forced decoder pass, since beams reorder as they go.
    """

    engine = "transformers"

    def __init__(
        self,
        model: str,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        batch_seconds: float = 30.0,
        language: str | None = None,
        task: Task = "transcribe",
        timestamps: Timestamps = "segment",
        max_new_tokens: int | None = None,
        decoding: DecodingOptions | None = None,
        pack: bool = False,
    ):
        if language is not None and language.strip().lower() == "auto":
            language = None
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype)
        # Eager attention returns the cross-attention weights word timing needs (transformers
        # would switch to it inside generate anyway).
        attention = "eager" if timestamps == "word" else None
        self.model = (
            AutoModelForSpeechSeq2Seq.from_pretrained(model, dtype=self.dtype, attn_implementation=attention)
            .to(self.device)
            .eval()
        )
        generation = self.model.generation_config
        check_generation_config(generation, model, language=language, task=task, timestamps=timestamps)
        multilingual = bool(getattr(generation, "is_multilingual", False))
        tokens = SpecialTokens(
            eos=generation.eos_token_id,
            sot=generation.decoder_start_token_id,
            sot_prev=generation.prev_sot_token_id,
            no_timestamps=generation.no_timestamps_token_id,
            tasks=dict(getattr(generation, "task_to_id", None) or {}),
            languages=dict(generation.lang_to_id) if multilingual else {},
        )
        self._setup(
            model=model, tokenizer=AutoTokenizer.from_pretrained(model), tokens=tokens,
            feature_extractor=load_feature_extractor(model), batch_seconds=batch_seconds, language=language, task=task,
            timestamps=timestamps, max_new_tokens=max_new_tokens, context_tokens=self.model.config.max_target_positions,
            decoding_options=decoding, pack=pack,
        )
        self.alignment_heads = [tuple(h) for h in generation.alignment_heads] if timestamps == "word" else []
        self.suppressed = list(generation.suppress_tokens or [])

    @torch.inference_mode()
    def _encode(self, windows: list[Window]) -> _Encoded:
        features = torch.from_numpy(np.stack([w.features for w in windows])).to(self.device, self.dtype)
        hidden = self.model.get_encoder()(features).last_hidden_state
        start = torch.full((len(windows), 1), self.tokens.sot, device=self.device)
        logits = self.model(encoder_outputs=(hidden,), decoder_input_ids=start, use_cache=False).logits[:, -1]
        no_speech = logits.float().softmax(dim=-1)[:, self.tokens.no_speech].tolist()
        return _Encoded(hidden, logits, no_speech)

    def _detect(self, encoded: _Encoded, rows: list[int]) -> list[tuple[str, float]]:
        """Most likely language code and its probability among the language tokens only."""
        codes = list(self.tokens.languages)
        probs = encoded.first_step[rows][:, list(self.tokens.languages.values())].float().softmax(dim=-1)
        best = probs.argmax(dim=-1).tolist()
        return [(codes[b][2:-2], float(probs[i, b])) for i, b in enumerate(best)]

    @torch.inference_mode()
    def _decode(self, encoded: _Encoded, requests: list[Request], temperature: float, windows: list[Window]) -> list[Attempt]:
        options = requests[0].options
        samples = options.best_of if temperature > 0 else 1
        beam = temperature == 0 and options.beam_size > 1
        rows = [r.row for r in requests for _ in range(samples)]
        prompt = len(self._prompt(requests[0]))
        kwargs = {}
        if self.tokens.multilingual:
            kwargs.update(language=[requests[i // samples].language for i in range(len(rows))], task=self.task)
        if requests[0].context:
            kwargs["prompt_ids"] = torch.tensor(requests[0].context, device=self.device)
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_k=0)  # the whole distribution, as openai-whisper
        else:
            kwargs.update(do_sample=False, num_beams=options.beam_size)
        recorder = None if beam else _ChosenLogprobs()
        with CrossAttention(self.model, [] if beam else self.alignment_heads) as attention:
            sequences = self.model.generate(
                encoder_outputs=BaseModelOutput(last_hidden_state=encoded.hidden[rows]),
                return_timestamps=self.timed,
                max_new_tokens=max(1, min(self.max_new_tokens, self.context_tokens - prompt)),
                logits_processor=LogitsProcessorList([recorder] if recorder else []),
                # Short-form: one generate call per window, never a seek to its last timestamp.
                force_unique_generate_call=True,
                return_dict_in_generate=True,
                **kwargs,
            )["sequences"]  # [rows, prompt + new]: the prompt included
        new = sequences[:, prompt:].cpu().numpy()
        lengths = [self._length(row) for row in new]
        if beam:
            attempts = self._rescore(encoded, requests, [row[:n] for row, n in zip(new, lengths)], windows)
        else:
            logprobs = recorder.logprobs(sequences)
            weights = attention.weights() if self.alignment_heads else None  # [rows, heads, queries, 1500]
            attempts = []
            for i, (row, length) in enumerate(zip(new, lengths)):
                request = requests[i // samples]
                bounds = None
                if weights is not None:
                    # Queries after the prompt: one per token fed back, up to this row's own end
                    # (rows of batch-mates that ran longer are cut, so a file's word times do not
                    # depend on its batch).
                    queries = weights[i, :, prompt : prompt + min(length, new.shape[1] - 1)]
                    bounds = self._token_bounds(queries, windows[request.row])[: length + 1]
                attempts.append(Attempt(row[:length], logprobs[i, :length], average_logprob(logprobs[i], length),
                                        encoded.no_speech[request.row], bounds))
        # Of a window's samples, the likeliest (openai-whisper's best_of).
        return [max(attempts[k * samples : (k + 1) * samples], key=lambda a: a.avg_logprob) for k in range(len(requests))]

    def _length(self, new: np.ndarray) -> int:
        """Generated tokens before the first end-of-text (all of them when none was)."""
        ended = new == self.tokens.eos
        return int(np.argmax(ended)) if ended.any() else len(new)

    def _align(self, encoded: _Encoded, requests: list[Request], attempts: list[Attempt], windows: list[Window]) -> list[np.ndarray]:
        return [a.bounds for a in self._rescore(encoded, requests, [a.tokens for a in attempts], windows)]

    @torch.inference_mode()
    def _rescore(self, encoded: _Encoded, requests: list[Request], tokens: list[np.ndarray], windows: list[Window]) -> list[Attempt]:
        """Attempts for given tokens by one teacher-forced decoder pass: each token's
        log-probability (suppressed tokens excluded) and, for word timestamps, its bounds."""
        prompts = [self._prompt(r) for r in requests]
        ids = [p + [int(t) for t in row] + [self.tokens.eos] for p, row in zip(prompts, tokens)]
        width = max(map(len, ids))
        padded = torch.tensor([row + [self.tokens.eos] * (width - len(row)) for row in ids], device=self.device)
        hidden = encoded.hidden[[r.row for r in requests]]
        with CrossAttention(self.model, self.alignment_heads) as attention:
            logits = self.model(encoder_outputs=(hidden,), decoder_input_ids=padded, use_cache=False).logits.float()
        logits[..., self.suppressed] = -math.inf
        logprobs = logits.log_softmax(dim=-1)
        weights = attention.weights() if self.alignment_heads else None
        attempts = []
        for i, (prompt, row) in enumerate(zip(prompts, tokens)):
            start, length = len(prompt), len(row)
            targets = padded[i, start : start + length + 1]  # the tokens and the end-of-text
            chosen = logprobs[i, start - 1 : start + length].gather(1, targets[:, None])[:, 0].cpu().numpy()
            bounds = None
            if weights is not None:
                bounds = self._token_bounds(weights[i, :, start : start + length], windows[requests[i].row])[: length + 1]
            attempts.append(Attempt(np.asarray(row, np.int64), chosen[:length], float(chosen.mean()),
                                    encoded.no_speech[requests[i].row], bounds))
        return attempts

    def _token_bounds(self, queries: torch.Tensor, window: Window) -> np.ndarray:
        # Encoder frames of real audio: mel frames as the feature extractor counts them, / 2.
        frames = math.ceil(window.num_samples / self.hop_length) // 2
        return token_bounds(queries, frames, self.model.config.median_filter_width, self.time_precision)


def check_generation_config(generation, model: str, *, language: str | None, task: Task, timestamps: Timestamps) -> None:
    """Raise ``ValueError`` if the checkpoint cannot do what the options ask.

    Reads only the generation config, so the driver can check before any actor starts.
    """
    multilingual = bool(getattr(generation, "is_multilingual", False))
    if not hasattr(generation, "no_timestamps_token_id"):
        raise ValueError(f"model {model!r}: its generation config has no no_timestamps_token_id (outdated config)")
    if multilingual and not getattr(generation, "lang_to_id", None):
        raise ValueError(f"model {model!r}: multilingual, but its generation config has no lang_to_id")
    if timestamps == "word" and not getattr(generation, "alignment_heads", None):
        raise ValueError(f"timestamps 'word': model {model!r} names no alignment_heads in its generation config")
    check_request(model, multilingual, dict(getattr(generation, "lang_to_id", None) or {}), language=language, task=task)
