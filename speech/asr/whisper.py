"""Whisper backend: any ``WhisperForConditionalGeneration`` checkpoint (tiny to large-v3, turbo).

Front end (CPU): a file becomes windows of at most 30 s - consecutive slices of the file or,
with VAD, slices around its speech regions packed together (the WhisperX approach) - each
turned into the log-mel features the checkpoint's own feature extractor computes.

Recognizer (GPU when there is one): windows of many files share batches under a seconds
budget. Per batch: one encoder pass; one decoder step from ``<|startoftranscript|>``, whose
distribution gives the language (on a file's first window, unless a language is given) and
the no-speech probability; then one ``generate`` call. Generated tokens are cut into segments
at timestamp tokens; words are timed from the alignment heads' cross-attention with dynamic
time warping (transformers' ``return_token_timestamps``). Every time is mapped back onto the
file's timeline.

Windows are decoded independently - no conditioning on the previous window's text and no
seeking back to its last timestamp, unlike openai-whisper's sequential loop - which is what
lets windows of different files share a batch. A word cut by a window edge (without VAD) may
come out split or garbled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
from transformers import AutoFeatureExtractor, AutoModelForSpeechSeq2Seq, AutoTokenizer, LogitsProcessor, LogitsProcessorList
from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

# Groups tokens into words exactly as transformers' ASR pipeline does (spaces, or unicode
# boundaries for languages written without spaces; punctuation attached). A private helper,
# used with the transformers version pinned in pyproject.toml.
from transformers.models.whisper.tokenization_whisper import _combine_tokens_into_words

from speech.asr.base import Transcript, Window
from speech.schema import Segment, Word

Task = Literal["transcribe", "translate"]
Timestamps = Literal["none", "segment", "word"]


class WhisperFrontEnd:
    """Waveform -> windows of log-mel features; loads only the feature extractor.

    Args:
        model: hub id or local directory of a Whisper checkpoint.
        vad: cut windows around speech found by Silero VAD instead of walking the file in
            consecutive 30 s slices. Silence and music then produce no window at all.
    """

    def __init__(self, model: str, *, vad: bool = False):
        self.feature_extractor = AutoFeatureExtractor.from_pretrained(model)
        self.sample_rate = int(self.feature_extractor.sampling_rate)
        self.window_samples = int(self.feature_extractor.n_samples)  # 30 s: what the encoder sees
        self.vad = None
        if vad:
            from speech.asr.vad import SileroVad

            self.vad = SileroVad()

    def batch_cost(self, window: Window) -> int:
        """30 s whatever the window holds: the encoder always runs on features padded to 30 s."""
        return self.window_samples

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
        features = self.feature_extractor(audio, sampling_rate=self.sample_rate, return_tensors="np").input_features
        return features[0].astype(np.float32, copy=False)


@dataclass(frozen=True)
class _Decoded:
    """What generation produced for one window, in window time (seconds from its start)."""

    tokens: np.ndarray  # int64 [n]: generated ids, prompt and end-of-text removed
    logprobs: np.ndarray  # float32 [n]: log-probability of each token when it was chosen
    avg_logprob: float  # mean over the tokens and the end-of-text token, if one was generated
    no_speech_prob: float  # P(<|nospeech|>) at <|startoftranscript|>
    # float64 [n + 1] (word timestamps only): token j runs from bounds[j] to bounds[j + 1].
    bounds: np.ndarray | None


@dataclass(frozen=True)
class _Piece:
    """A run of text tokens between timestamp tokens; steps are timestamp indices (20 ms)."""

    start: int | None  # None: from the window start
    end: int | None  # None: to the window end (no closing timestamp was generated)
    positions: list[int]  # indices of its text tokens in _Decoded.tokens


class _ChosenLogprobs(LogitsProcessor):
    """Records the log-probability of every generated token, without keeping all scores.

    Whisper's generate puts its own processors (timestamp rules, suppressed tokens) before
    user ones, so this one sees the final distribution greedy decoding picks from; at each
    step it reads the token picked from the previous step's distribution. Storing only the
    last step costs ``[batch, vocab]`` instead of ``output_scores``' ``[steps, batch, vocab]``.
    """

    def __init__(self) -> None:
        self.prompt_length: int | None = None
        self.previous: torch.Tensor | None = None  # float32 [batch, vocab] log-probabilities
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.previous is None:
            self.prompt_length = input_ids.shape[1]
        else:
            self.steps.append(self.previous.gather(1, input_ids[:, -1:])[:, 0])
        self.previous = scores.float().log_softmax(dim=-1)
        return scores

    def logprobs(self, sequences: torch.Tensor) -> np.ndarray:
        """float32 ``[batch, new tokens]`` once generation returned ``sequences``."""
        steps = self.steps + [self.previous.gather(1, sequences[:, -1:])[:, 0]]
        return torch.stack(steps, dim=1).cpu().numpy()


class WhisperRecognizer:
    """Runs a Whisper checkpoint over windows of many files in batches.

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
        no_speech_threshold, logprob_threshold: a window whose no-speech probability is
            above the first and whose average token log-probability is below the second is
            silence, and contributes no text (openai-whisper's rule and defaults).

    Greedy decoding. Segments carry their window's ``avg_logprob`` and ``no_speech_prob``
    (as openai-whisper's do); a transcript's ``confidence`` is the mean probability of its
    text tokens, a word's the mean over its tokens.

    One :meth:`transcribe` call at a time per instance (word timing hooks the shared model).
    """

    backend = "whisper"
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
        no_speech_threshold: float = 0.6,
        logprob_threshold: float | None = -1.0,
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
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        feature_extractor = AutoFeatureExtractor.from_pretrained(model)
        self.sample_rate = int(feature_extractor.sampling_rate)
        self.window_samples = int(feature_extractor.n_samples)
        self.hop_length = int(feature_extractor.hop_length)
        self.batch_size = max(1, int(batch_seconds * self.sample_rate) // self.window_samples)
        generation = self.model.generation_config
        check_generation_config(generation, model, language=language, task=task, timestamps=timestamps)
        # One timestamp step is one encoder frame: two mel hops (the encoder's stride-2 conv).
        self.time_precision = 2 * self.hop_length / self.sample_rate
        self.timestamp_begin = generation.no_timestamps_token_id + 1
        self.no_speech_id = generation.no_timestamps_token_id - 1  # <|nospeech|> (<|nocaptions|> in v1)
        self.eos_id = generation.eos_token_id
        self.multilingual = bool(getattr(generation, "is_multilingual", False))
        self.language_ids = dict(getattr(generation, "lang_to_id", None) or {}) if self.multilingual else {}
        self.language = None if language is None else self._language_code(language)
        self.task = task
        self.timestamps = timestamps
        self.max_new_tokens = max_new_tokens or self.model.config.max_target_positions // 2
        self.alignment_heads = [tuple(h) for h in generation.alignment_heads] if timestamps == "word" else []
        self.no_speech_threshold = no_speech_threshold
        self.logprob_threshold = logprob_threshold

    def transcribe(
        self, utterances: Sequence[list[Window]], languages: Sequence[str | None] | None = None
    ) -> list[Transcript]:
        """Transcribe utterances given as window lists (see :class:`WhisperFrontEnd`).

        Args:
            utterances: each file's windows, in file order; an empty list (VAD found no
                speech) gives an empty transcript.
            languages: per file, a known language (e.g. from a manifest) or None; a file
                with neither this nor the recognizer's ``language`` has its language
                detected from its first window.

        Raises:
            ValueError: a language this checkpoint does not know.
        """
        given = [self.language] * len(utterances)
        if languages is not None:
            given = [self._language_code(g) if g else default for g, default in zip(languages, given)]
        language: list[str | None] = list(given) if self.multilingual else ["en"] * len(utterances)
        probability: list[float | None] = [None] * len(utterances)

        # First windows first: a file's language is known before any later window of it runs.
        order = sorted(
            ((u, k) for u, windows in enumerate(utterances) for k in range(len(windows))), key=lambda uk: (uk[1], uk[0])
        )
        decoded: dict[tuple[int, int], _Decoded] = {}
        for begin in range(0, len(order), self.batch_size):
            batch = order[begin : begin + self.batch_size]
            windows = [utterances[u][k] for u, k in batch]
            encoded, first_step = self._encode(windows)
            for row, (u, k) in enumerate(batch):
                if language[u] is None and k == 0:
                    language[u], probability[u] = self._detect(first_step[row])
            no_speech = first_step.float().softmax(dim=-1)[:, self.no_speech_id].tolist()
            outputs = self._generate(encoded, windows, [language[u] for u, _ in batch], no_speech)
            decoded.update(zip(batch, outputs))

        return [
            self._transcript(windows, [decoded[(u, k)] for k in range(len(windows))], language[u], probability[u])
            for u, windows in enumerate(utterances)
        ]

    @torch.inference_mode()
    def _encode(self, windows: list[Window]):
        """Encoder outputs and the logits ``[batch, vocab]`` after ``<|startoftranscript|>``."""
        features = torch.from_numpy(np.stack([w.features for w in windows])).to(self.device, self.dtype)
        encoded = self.model.get_encoder()(features)
        start = torch.full((len(windows), 1), self.model.generation_config.decoder_start_token_id, device=self.device)
        logits = self.model(encoder_outputs=encoded, decoder_input_ids=start, use_cache=False).logits[:, -1]
        return encoded, logits

    def _detect(self, logits: torch.Tensor) -> tuple[str, float]:
        """Most likely language code and its probability among the language tokens only."""
        codes = list(self.language_ids)
        probs = logits[list(self.language_ids.values())].float().softmax(dim=-1)
        best = int(probs.argmax())
        return codes[best][2:-2], float(probs[best])

    @torch.inference_mode()
    def _generate(self, encoded, windows: list[Window], languages: list[str], no_speech: list[float]) -> list[_Decoded]:
        recorder = _ChosenLogprobs()
        kwargs = {"language": languages, "task": self.task} if self.multilingual else {}
        with _CrossAttention(self.model, self.alignment_heads) as attention:
            sequences = self.model.generate(
                encoder_outputs=encoded,
                return_timestamps=self.timestamps != "none",
                max_new_tokens=self.max_new_tokens,
                logits_processor=LogitsProcessorList([recorder]),
                # Short-form: one generate call per window, never a seek to its last timestamp.
                force_unique_generate_call=True,
                return_dict_in_generate=True,
                **kwargs,
            )["sequences"]  # [batch, prompt + new]: the prompt included
        prompt = recorder.prompt_length
        logprobs = recorder.logprobs(sequences)
        new = sequences[:, prompt:].cpu().numpy()
        weights = attention.weights() if self.alignment_heads else None  # [batch, heads, queries, 1500]
        results = []
        for row, window in enumerate(windows):
            ended = new[row] == self.eos_id
            length = int(np.argmax(ended)) if ended.any() else new.shape[1]
            scored = logprobs[row, : min(length + 1, new.shape[1])]  # the end-of-text token counts
            bounds = None
            if weights is not None:
                # Queries after the prompt: one per token fed back, up to this row's own end
                # (rows of batch-mates that ran longer are cut, so a file's word times do not
                # depend on its batch).
                queries = weights[row, :, prompt : prompt + min(length, new.shape[1] - 1)]
                bounds = self._token_bounds(queries, window)[: length + 1]
            results.append(
                _Decoded(
                    tokens=new[row, :length],
                    logprobs=logprobs[row, :length],
                    avg_logprob=float(scored.mean()) if scored.size else 0.0,
                    no_speech_prob=no_speech[row],
                    bounds=bounds,
                )
            )
        return results

    def _token_bounds(self, queries: torch.Tensor, window: Window) -> np.ndarray:
        """Token boundary times (seconds) from alignment-head cross-attention, by DTW.

        ``queries``: float32 ``[heads, tokens, encoder frames]``, one row per generated token
        fed back. Returns float64 ``[tokens + 2]``: 0 for the token before the first, then the
        time each next token's alignment starts (so token ``j`` ends at entry ``j + 1``), then
        the last one again for the end-of-text token. The steps are transformers' (z-score over
        tokens per head, median filter along time, mean over heads, DTW, jump times), except
        that each window keeps only its own tokens and frames of real audio.
        """
        tokens = queries.shape[1]
        # Encoder frames of real audio: mel frames as the feature extractor counts them, / 2.
        frames = math.ceil(window.num_samples / self.hop_length) // 2
        if tokens == 0 or frames == 0:
            return np.zeros(tokens + 2)
        matrix = queries[:, :, :frames]
        std, mean = torch.std_mean(matrix, dim=-2, keepdim=True, unbiased=False)
        matrix = _median_filter((matrix - mean) / std, self.model.config.median_filter_width).mean(dim=0)
        text_indices, time_indices = _dtw(-matrix.double().cpu().numpy())
        jumps = np.diff(text_indices, prepend=-1).astype(bool)
        times = time_indices[jumps] * self.time_precision
        return np.concatenate([[0.0], times, times[-1:]])

    def _transcript(
        self, windows: list[Window], decoded: list[_Decoded], language: str | None, probability: float | None
    ) -> Transcript:
        texts, segments, words, probs = [], [], [], []
        for window, out in zip(windows, decoded):
            if self._is_silence(out):
                continue
            text_positions = [j for j, t in enumerate(out.tokens) if t < self.eos_id]
            texts.append(self.tokenizer.decode(out.tokens[text_positions].tolist()))
            probs.extend(np.exp(out.logprobs[text_positions]).tolist())
            for piece in self._pieces(out.tokens):
                segments.append(self._segment(window, out, piece))
                if out.bounds is not None:
                    words.extend(self._words(window, out, piece, language))
        return Transcript(
            text="".join(texts).strip(),
            confidence=float(np.mean(probs)) if probs else None,
            words=words,
            segments=segments,
            language=language,
            language_probability=probability,
            # The encoder always runs on 30 s, whatever the window holds.
            computed_samples=len(windows) * self.window_samples,
        )

    def _is_silence(self, out: _Decoded) -> bool:
        if out.no_speech_prob <= self.no_speech_threshold:
            return False
        return self.logprob_threshold is None or out.avg_logprob < self.logprob_threshold

    def _pieces(self, tokens: np.ndarray) -> list[_Piece]:
        """Text runs of one window; timestamp tokens open and close them (in pairs)."""
        if self.timestamps == "none":
            # Timestamp tokens the model emits anyway carry no text and are skipped.
            text = [j for j, t in enumerate(tokens) if t < self.eos_id]
            return [_Piece(None, None, text)] if text else []
        pieces, start, positions = [], None, []
        for j, token in enumerate(tokens):
            if token >= self.timestamp_begin:
                step = int(token - self.timestamp_begin)
                if start is None:
                    start = step
                else:  # a closing timestamp; an opening one usually follows
                    if positions:
                        pieces.append(_Piece(start, step, positions))
                    start, positions = None, []
            elif token < self.eos_id:
                positions.append(j)
        if positions:
            pieces.append(_Piece(start, None, positions))
        return [p for p in pieces if p.positions]

    def _segment(self, window: Window, out: _Decoded, piece: _Piece) -> Segment:
        start = 0.0 if piece.start is None else piece.start * self.time_precision
        end = math.inf if piece.end is None else piece.end * self.time_precision
        return Segment(
            start=self._file_time(window, start),
            end=self._file_time(window, end),
            text=self.tokenizer.decode(out.tokens[piece.positions].tolist()),
            avg_logprob=out.avg_logprob,
            no_speech_prob=out.no_speech_prob,
        )

    def _words(self, window: Window, out: _Decoded, piece: _Piece, language: str | None) -> list[Word]:
        tokens = [int(out.tokens[j]) for j in piece.positions]
        name = LANGUAGES.get(language or "en", "english")
        _, _, groups = _combine_tokens_into_words(self.tokenizer, tokens, name)
        words = []
        for group in groups:
            positions = [piece.positions[i] for i in group]
            words.append(
                Word(
                    word=self.tokenizer.decode(out.tokens[positions].tolist()).strip(),
                    start=self._file_time(window, out.bounds[positions[0]]),
                    end=self._file_time(window, out.bounds[positions[-1] + 1]),
                    confidence=float(np.exp(out.logprobs[positions]).mean()),
                )
            )
        return words

    def _file_time(self, window: Window, seconds: float) -> float:
        """A time inside ``window`` (seconds) -> seconds on the file's timeline.

        Clipped to the window's audio: a model may predict times in the padding.
        """
        inside = min(max(float(seconds), 0.0), window.num_samples / self.sample_rate)
        return round((window.offset + inside * self.sample_rate) / self.sample_rate, 3)

    def _language_code(self, language: str) -> str:
        return language_code(language, self.language_ids if self.multilingual else {"<|en|>": 0})


class _CrossAttention:
    """Collects the cross-attention weights of chosen decoder heads while it is entered.

    Forward hooks on the decoder layers' cross-attention keep only the alignment heads,
    ``[batch, heads, queries, frames]`` per step, rather than every layer and head as
    ``output_attentions`` would (gigabytes for large-v3 batches). Needs eager attention,
    which returns the weights.
    """

    def __init__(self, model, heads: list[tuple[int, int]]):
        self.model = model
        self.heads = heads
        self.steps: dict[int, list[torch.Tensor]] = {layer: [] for layer, _ in heads}
        self.handles = []

    def __enter__(self) -> "_CrossAttention":
        layers = self.model.get_decoder().layers
        for layer in self.steps:
            wanted = [head for l, head in self.heads if l == layer]
            self.handles.append(layers[layer].encoder_attn.register_forward_hook(self._keep(layer, wanted)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()

    def _keep(self, layer: int, heads: list[int]):
        def hook(module, args, output):
            weights = output[1]
            if weights is None:
                raise RuntimeError("word timestamps need attention weights; load the model with attn_implementation='eager'")
            self.steps[layer].append(weights[:, heads].float())

        return hook

    def weights(self) -> torch.Tensor:
        """float32 ``[batch, heads, queries, frames]``, heads in the order they were given."""
        by_layer = {layer: torch.cat(steps, dim=2) for layer, steps in self.steps.items()}
        index = {layer: [h for l, h in self.heads if l == layer] for layer in by_layer}
        return torch.stack([by_layer[layer][:, index[layer].index(head)] for layer, head in self.heads], dim=1)


def _median_filter(x: torch.Tensor, width: int) -> torch.Tensor:
    """Median over a sliding window of odd ``width`` along the last axis, edges reflected."""
    half = width // 2
    if x.shape[-1] <= half:
        return x
    padded = torch.nn.functional.pad(x, (half, half), mode="reflect")  # x: [..., rows, time], 3-D
    return padded.unfold(-1, width, 1).sort(dim=-1).values[..., half]


def _dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cheapest monotonic path through ``cost`` (``[tokens, frames]``, float64).

    Returns ``(text_indices, time_indices)``, the path's cells from ``(0, 0)`` to the last
    one. Ties are broken as transformers breaks them (diagonal, then up, then left) and the
    accumulated cost is kept in float32 as it keeps it, so the path is the same; the cells
    of one anti-diagonal are computed together instead of one by one.
    """
    rows, cols = cost.shape
    total = np.full((rows + 1, cols + 1), np.inf, dtype=np.float32)
    trace = np.full((rows + 1, cols + 1), -1, dtype=np.int8)
    total[0, 0] = 0
    for diagonal in range(2, rows + cols + 1):
        i = np.arange(max(1, diagonal - cols), min(rows, diagonal - 1) + 1)
        j = diagonal - i
        diag, up, left = total[i - 1, j - 1], total[i - 1, j], total[i, j - 1]
        step = np.where((diag < up) & (diag < left), 0, np.where((up < diag) & (up < left), 1, 2))
        best = np.choose(step, [diag, up, left])
        total[i, j] = cost[i - 1, j - 1] + best
        trace[i, j] = step
    trace[0, :] = 2
    trace[:, 0] = 1
    i, j, path = rows, cols, []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        move = trace[i, j]
        i, j = (i - 1, j - 1) if move == 0 else (i - 1, j) if move == 1 else (i, j - 1)
    text, time = np.array(path[::-1]).T
    return text, time


def language_code(language: str, language_ids: dict[str, int]) -> str:
    """``"ko"``, ``"Korean"`` or ``"<|ko|>"`` -> ``"ko"``, if the checkpoint knows it.

    Raises:
        ValueError: naming the language and the checkpoint's languages.
    """
    text = language.strip().lower()
    code = TO_LANGUAGE_CODE.get(text, text.strip("<|>"))
    if f"<|{code}|>" not in language_ids:
        known = ", ".join(token[2:-2] for token in language_ids)
        raise ValueError(f"language {language!r} is not one this model knows; known: {known}")
    return code


def check_generation_config(generation, model: str, *, language: str | None, task: Task, timestamps: Timestamps) -> None:
    """Raise ``ValueError`` if the checkpoint cannot do what the options ask.

    Reads only the generation config, so the driver can check before any actor starts.
    """
    multilingual = bool(getattr(generation, "is_multilingual", False))
    if not hasattr(generation, "no_timestamps_token_id"):
        raise ValueError(f"model {model!r}: its generation config has no no_timestamps_token_id (outdated config)")
    if multilingual and not getattr(generation, "lang_to_id", None):
        raise ValueError(f"model {model!r}: multilingual, but its generation config has no lang_to_id")
    if task == "translate" and not multilingual:
        raise ValueError(f"task 'translate': model {model!r} is English-only")
    if timestamps == "word" and not getattr(generation, "alignment_heads", None):
        raise ValueError(f"timestamps 'word': model {model!r} names no alignment_heads in its generation config")
    if language is not None:
        language_code(language, generation.lang_to_id if multilingual else {"<|en|>": 0})
