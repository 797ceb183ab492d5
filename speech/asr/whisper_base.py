"""What both Whisper engines share: batching windows, languages, prompts, transcripts.

An engine (:class:`~speech.asr.whisper.WhisperRecognizer` on transformers,
:class:`~speech.asr.whisper_ct2.Ct2WhisperRecognizer` on CTranslate2) subclasses
:class:`WhisperBase` and implements four steps on a batch of windows: encode, detect the
language, decode once at a temperature, and (for word timestamps) time the tokens. Everything
else happens here, once: which windows share a batch, each file's language, the prompt of each
window (:mod:`speech.asr.decoding`), temperature fallback, the no-speech rule, and cutting the
tokens into segments and words on the file's timeline.

Windows are decoded independently unless ``condition_on_previous_text`` is set: no seeking
back to a window's last timestamp, unlike openai-whisper's sequential loop, which is what lets
windows of different files share a batch. With conditioning, batches hold one window index at
a time (window k+1 of a file is decoded after window k, prompted with its text). A word cut by
a window edge (without VAD) may come out split or garbled.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

# Groups tokens into words exactly as transformers' ASR pipeline does (spaces, or unicode
# boundaries for languages written without spaces; punctuation attached). A private helper,
# used with the transformers version pinned in pyproject.toml.
from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE, _combine_tokens_into_words

from speech.asr import decoding
from speech.asr.base import Batches, Transcript, Window
from speech.batching import check_batches, plan_windows
from speech.options import DecodingOptions
from speech.schema import Segment, Word

Task = Literal["transcribe", "translate"]
Timestamps = Literal["none", "segment", "word"]

#: A CTranslate2 model directory holds this file (a transformers one never does).
CT2_MODEL_FILE = "model.bin"


def is_ctranslate2(model: str) -> bool:
    """Whether ``model`` is a local directory holding a CTranslate2 ``model.bin``."""
    return (Path(model) / CT2_MODEL_FILE).is_file()


def load_feature_extractor(model: str):
    """The checkpoint's log-mel feature extractor; a CTranslate2 directory without a
    ``preprocessor_config.json`` gets Whisper's, with the mel bins its model.bin takes."""
    from transformers import AutoFeatureExtractor

    if is_ctranslate2(model) and not (Path(model) / "preprocessor_config.json").is_file():
        from speech.convert import ct2_whisper

        return ct2_whisper.feature_extractor(ct2_whisper.check_whisper(model))
    return AutoFeatureExtractor.from_pretrained(model)


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of a Whisper vocabulary's special tokens (they moved between model versions)."""

    eos: int  # <|endoftext|>
    sot: int  # <|startoftranscript|>
    sot_prev: int  # <|startofprev|>
    no_timestamps: int  # <|notimestamps|>; <|nospeech|> is just before it, timestamps just after
    tasks: dict[str, int]  # "transcribe"/"translate" -> id
    languages: dict[str, int]  # "<|en|>" -> id; empty for English-only models

    @property
    def no_speech(self) -> int:
        return self.no_timestamps - 1  # <|nospeech|> (<|nocaptions|> in v1-v2)

    @property
    def timestamp_begin(self) -> int:
        return self.no_timestamps + 1

    @property
    def multilingual(self) -> bool:
        return bool(self.languages)


@dataclass
class _Window:
    """A decoded window: the attempt kept and, for word timestamps, its token bounds."""

    result: decoding.Decoded
    bounds: np.ndarray | None


class WhisperBase(ABC):
    """The engine-independent half of a Whisper recognizer (see the module docstring).

    Subclasses call :meth:`_setup` once their model and tokenizer are loaded, and implement
    :meth:`_encode`, :meth:`_detect`, :meth:`_decode` and :meth:`_align`.

    Segments carry their window's ``avg_logprob``, ``no_speech_prob``, ``temperature`` and
    ``compression_ratio`` (as openai-whisper's do); a transcript's ``confidence`` is the mean
    probability of its text tokens, a word's the mean over its tokens. One :meth:`transcribe`
    call at a time per instance.
    """

    backend = "whisper"
    engine: str  # "transformers" or "ctranslate2", recorded in every row

    def _setup(
        self, *, model: str, tokenizer, tokens: SpecialTokens, feature_extractor, batch_seconds: float,
        language: str | None, task: Task, timestamps: Timestamps, max_new_tokens: int | None, context_tokens: int,
        decoding_options: DecodingOptions | None, pack: bool = False,
    ) -> None:
        """``context_tokens``: the decoder's positions (448 for every released Whisper); ``language``
        None or ``"auto"``: detect per file; ``pack``: short files share windows (:mod:`speech.asr.packing`)."""
        if language is not None and language.strip().lower() == "auto":
            language = None
        self.tokenizer = tokenizer
        self.tokens = tokens
        self.sample_rate = int(feature_extractor.sampling_rate)
        self.window_samples = int(feature_extractor.n_samples)
        self.hop_length = int(feature_extractor.hop_length)
        # One timestamp step is one encoder frame: two mel hops (the encoder's stride-2 conv).
        self.time_precision = 2 * self.hop_length / self.sample_rate
        self.batch_size = max(1, int(batch_seconds * self.sample_rate) // self.window_samples)
        if task == "translate" and not tokens.multilingual:
            raise ValueError(f"task 'translate': model {model!r} is English-only")
        self.language = None if language is None else self.language_code(language)
        self.task = task
        self.timestamps = timestamps
        self.pack = pack
        # Packed windows are split back by their timestamps, so packing decodes with them
        # whatever the rows show (timestamps "none" still gives one segment per file).
        self.timed = timestamps != "none" or pack
        self.context_tokens = context_tokens
        # Half the context by default, as openai-whisper (224 for every released Whisper).
        self.max_new_tokens = max_new_tokens or context_tokens // 2
        self.decoding = decoding_options or DecodingOptions()

    # ------------------------------------------------------------------ engine steps

    @abstractmethod
    def _encode(self, windows: list[Window]) -> Any:
        """Run the encoder on ``windows``; an engine-specific handle for the steps below."""

    @abstractmethod
    def _detect(self, encoded: Any, rows: list[int]) -> list[tuple[str, float]]:
        """Most likely language code and its probability (among language tokens) per row."""

    @abstractmethod
    def _decode(self, encoded: Any, requests: list[decoding.Request], temperature: float,
                windows: list[Window]) -> list[decoding.Attempt]:
        """Decode each request's window once (``temperature`` 0: beam or greedy search; above:
        the likeliest of ``best_of`` samples). Requests share context, beam size and best_of."""

    @abstractmethod
    def _align(self, encoded: Any, requests: list[decoding.Request], attempts: list[decoding.Attempt],
               windows: list[Window]) -> list[np.ndarray]:
        """Token bounds (see :class:`~speech.asr.decoding.Attempt`) of attempts decoded without them."""

    # ------------------------------------------------------------------ the shared loop

    def transcribe(
        self, utterances: Sequence[list[Window]], languages: Sequence[str | None] | None = None,
        options: Sequence[DecodingOptions] | None = None, batches: Batches | None = None,
    ) -> list[Transcript]:
        """Transcribe utterances given as window lists (see ``WhisperFrontEnd``).

        Args:
            utterances: each file's windows, in file order; an empty list (VAD found no
                speech) gives an empty transcript.
            languages: per file, a known language (e.g. from a manifest) or None; a file
                with neither this nor the recognizer's ``language`` has its language
                detected from its first window.
            options: per file, its decoding options (a server's per-request temperature and
                prompt); None: the recognizer's for every file.
            batches: the engine calls to make, as ``WhisperFrontEnd.plan`` made them; None:
                :meth:`plan` them. A file's first window must come no later than its others
                (its language is detected there).

        Raises:
            ValueError: a language this checkpoint does not know.
        """
        count = len(utterances)
        given = [self.language] * count
        if languages is not None:
            given = [self.language_code(g) if g else default for g, default in zip(languages, given)]
        language: list[str | None] = list(given) if self.tokens.multilingual else ["en"] * count
        probability: list[float | None] = [None] * count
        per_file = list(options) if options is not None else [self.decoding] * count
        if batches is None:
            batches = self.plan(utterances, per_file)
        check_batches([len(u) for u in utterances], batches)
        if self.pack:
            from speech.asr.whisper_packed import transcribe_packed

            return transcribe_packed(self, utterances, language, per_file, batches)
        decoded = self._run(utterances, language, probability, per_file, batches)
        return [
            self._transcript(windows, [decoded[(u, k)] for k in range(len(windows))], language[u], probability[u], per_file[u])
            for u, windows in enumerate(utterances)
        ]

    def _run(self, utterances: Sequence[list[Window]], language: list[str | None], probability: list[float | None],
             per_file: Sequence[DecodingOptions], batches: Batches) -> dict[tuple[int, int], _Window]:
        """Decode the planned ``batches``; each window's result by ``(utterance, window)``.
        Fills in ``language`` and ``probability`` of the files whose language was unknown."""
        encode = lambda text: self.tokenizer.encode(text, add_special_tokens=False)  # noqa: E731 - a one-line local helper
        previous = [decoding.initial_tokens(o, encode) for o in per_file]  # text tokens prompting the next window
        decoded: dict[tuple[int, int], _Window] = {}
        for batch in batches:
            windows = [utterances[u][k] for u, k in batch]
            encoded = self._encode(windows)
            unknown = [row for row, (u, k) in enumerate(batch) if language[u] is None and k == 0]
            for row, (code, p) in zip(unknown, self._detect(encoded, unknown) if unknown else []):
                language[batch[row][0]], probability[batch[row][0]] = code, p
            requests = []
            for row, (u, k) in enumerate(batch):
                # A file's first window gets its initial prompt; later ones its text only when conditioning.
                prior = previous[u] if k == 0 or per_file[u].condition_on_previous_text else []
                requests.append(decoding.Request(row, language[u], self._context(per_file[u], prior, encode), per_file[u]))
            results = decoding.decode_with_fallback(
                requests, lambda group, t: self._decode(encoded, group, t, windows), self._text,  # noqa: B023 - called at once
            )
            bounds = self._bounds(encoded, requests, results, windows)
            for (u, k), request, result, times in zip(batch, requests, results, bounds):
                decoded[(u, k)] = _Window(result, times)
                previous[u] = self._next_previous(previous[u], result, request.options)
        return decoded

    def plan(self, utterances: Sequence[list[Window]], options: Sequence[DecodingOptions]) -> Batches:
        """``(utterance, window)`` pairs per engine call, ``batch_size`` windows each.

        First windows first, so a file's language is known before any later window of it
        runs. With conditioning on previous text (in any file's ``options``), a batch holds
        one window index only, so window k of every file is decoded before window k + 1 of any.
        """
        return plan_windows([[self.window_samples] * len(u) for u in utterances], self.batch_size * self.window_samples,
                            by_rank=any(o.condition_on_previous_text for o in options))

    def _context(self, options: DecodingOptions, previous: list[int], encode) -> tuple[int, ...]:
        # Up to half the decoder's positions, as openai-whisper: the rest is for the output.
        return decoding.context(options, previous, encode, self.tokens.sot_prev, self.context_tokens // 2)

    def _next_previous(self, previous: list[int], result: decoding.Decoded, options: DecodingOptions) -> list[int]:
        """The text tokens that prompt a file's next window (conditioning only)."""
        if not options.condition_on_previous_text or result.temperature > decoding.PROMPT_RESET_TEMPERATURE:
            return []
        if decoding.is_silence(result.attempt, options):
            return previous
        return previous + [int(t) for t in result.attempt.tokens if t < self.tokens.eos]

    def _bounds(self, encoded, requests, results: list[decoding.Decoded], windows) -> list[np.ndarray | None]:
        if self.timestamps != "word":
            return [None] * len(results)
        missing = [i for i, r in enumerate(results) if r.attempt.bounds is None]
        bounds = [r.attempt.bounds for r in results]
        if missing:
            timed = self._align(encoded, [requests[i] for i in missing], [results[i].attempt for i in missing], windows)
            for i, times in zip(missing, timed):
                bounds[i] = times
        return bounds

    def _text(self, tokens: np.ndarray) -> str:
        return self.tokenizer.decode([int(t) for t in tokens if t < self.tokens.eos])

    def _prompt(self, request: decoding.Request) -> list[int]:
        """The full prompt of a request: context, ``<|startoftranscript|>``, language and task
        (multilingual models), and ``<|notimestamps|>`` unless timestamps are wanted."""
        prompt = [*request.context, self.tokens.sot]
        if self.tokens.multilingual:
            prompt += [self.tokens.languages[f"<|{request.language}|>"], self.tokens.tasks[self.task]]
        if not self.timed:
            prompt.append(self.tokens.no_timestamps)
        return prompt

    # ------------------------------------------------------------------ tokens -> transcript

    def _transcript(self, windows: list[Window], decoded: list[_Window], language: str | None,
                    probability: float | None, options: DecodingOptions) -> Transcript:
        texts, segments, words, probs, failed = [], [], [], [], False
        for window, out in zip(windows, decoded):
            attempt = out.result.attempt
            if decoding.is_silence(attempt, options):
                continue
            failed = failed or out.result.failed
            text_positions = [j for j, t in enumerate(attempt.tokens) if t < self.tokens.eos]
            texts.append(self.tokenizer.decode(attempt.tokens[text_positions].tolist()))
            probs.extend(np.exp(attempt.logprobs[text_positions]).tolist())
            to_file = functools.partial(self._file_time, window)
            for positions, start, end in self._pieces(attempt.tokens):
                segments.append(self._segment(to_file, out.result, positions, start, end))
                if out.bounds is not None:
                    words.extend(self._words(to_file, attempt, out.bounds, positions, language))
        return Transcript(
            text="".join(texts).strip(),
            confidence=float(np.mean(probs)) if probs else None,
            words=words,
            segments=segments,
            language=language,
            language_probability=probability,
            # The encoder always runs on 30 s, whatever the window holds.
            computed_samples=len(windows) * self.window_samples,
            thresholds_failed=failed,
        )

    def _pieces(self, tokens: np.ndarray, timed: bool | None = None) -> list[tuple[list[int], float, float]]:
        """Text runs of one window as ``(positions, start, end)`` in seconds of the window;
        timestamp tokens open and close them (in pairs). 0 and inf: the window's edges (no
        timestamp generated there). ``timed`` False (None: the rows have no timestamps): one
        run of every text token, any timestamp the model emitted skipped."""
        eos, begin = self.tokens.eos, self.tokens.timestamp_begin
        if not (self.timestamps != "none" if timed is None else timed):
            # Timestamp tokens the model emits anyway carry no text and are skipped.
            text = [j for j, t in enumerate(tokens) if t < eos]
            return [(text, 0.0, math.inf)] if text else []
        step = self.time_precision  # seconds per timestamp token
        pieces, start, positions = [], None, []
        for j, token in enumerate(tokens):
            if token >= begin:
                time = int(token - begin) * step
                if start is None:
                    start = time
                else:  # a closing timestamp; an opening one usually follows
                    if positions:
                        pieces.append((positions, start, time))
                    start, positions = None, []
            elif token < eos:
                positions.append(j)
        if positions:
            pieces.append((positions, 0.0 if start is None else start, math.inf))
        return pieces

    def _segment(self, to_file: Callable[[float], float], result: decoding.Decoded, positions: list[int], start: float,
                 end: float) -> Segment:
        """A segment of ``positions`` from ``start`` to ``end`` (seconds of the window), its
        times mapped onto the file by ``to_file``."""
        attempt = result.attempt
        return Segment(
            start=to_file(start),
            end=to_file(end),
            text=self.tokenizer.decode(attempt.tokens[positions].tolist()),
            avg_logprob=attempt.avg_logprob,
            no_speech_prob=attempt.no_speech_prob,
            temperature=result.temperature,
            compression_ratio=result.compression_ratio,
        )

    def _word_groups(self, attempt: decoding.Attempt, positions: list[int], language: str | None) -> list[list[int]]:
        """The token positions of each word among ``positions`` (text tokens of one attempt)."""
        tokens = [int(attempt.tokens[j]) for j in positions]
        _, _, groups = _combine_tokens_into_words(self.tokenizer, tokens, LANGUAGES.get(language or "en", "english"))
        return [[positions[i] for i in group] for group in groups]

    def _words(self, to_file: Callable[[float], float], attempt: decoding.Attempt, bounds: np.ndarray,
               positions: list[int], language: str | None) -> list[Word]:
        return [
            Word(
                word=self.tokenizer.decode(attempt.tokens[chosen].tolist()).strip(),
                start=to_file(bounds[chosen[0]]),
                end=to_file(bounds[chosen[-1] + 1]),
                confidence=float(np.exp(attempt.logprobs[chosen]).mean()),
            )
            for chosen in self._word_groups(attempt, positions, language)
        ]

    def _file_time(self, window: Window, seconds: float) -> float:
        """A time inside ``window`` (seconds) -> seconds on the file's timeline.

        Clipped to the window's audio: a model may predict times in the padding.
        """
        inside = min(max(float(seconds), 0.0), window.num_samples / self.sample_rate)
        return round((window.offset + inside * self.sample_rate) / self.sample_rate, 3)

    def language_code(self, language: str) -> str:
        """``"ko"``, ``"Korean"`` or ``"<|ko|>"`` -> ``"ko"``, if this model knows it."""
        return language_code(language, self.tokens.languages if self.tokens.multilingual else {"<|en|>": 0})


def average_logprob(logprobs: np.ndarray, length: int) -> float:
    """Mean of ``logprobs`` (float ``[steps]``, one per generated token, the end-of-text one
    last when it was generated) over the first ``length`` tokens and the end-of-text token."""
    scored = logprobs[: min(length + 1, len(logprobs))]
    return float(scored.mean()) if scored.size else 0.0


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


def check_request(model: str, tokens_multilingual: bool, languages: dict[str, int], *, language: str | None, task: Task) -> None:
    """Raise ``ValueError`` if a model with these languages cannot do ``language``/``task``."""
    if task == "translate" and not tokens_multilingual:
        raise ValueError(f"task 'translate': model {model!r} is English-only")
    if language is not None:
        language_code(language, languages if tokens_multilingual else {"<|en|>": 0})
