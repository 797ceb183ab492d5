"""Whisper decoding rules shared by both engines: prompts, temperature fallback, silence.

An engine only knows how to decode a batch of windows once, at one temperature; this module
decides what to ask it and which answer to keep, exactly as faster-whisper and openai-whisper
decide for one window (``generate_with_fallback``), but for a batch:

1. decode every window at the first temperature of its :class:`~speech.options.DecodingOptions`;
2. a window whose text compresses too well (gzip ratio above ``compression_ratio_threshold``:
   the decoder looped) or whose mean token log-probability is below ``logprob_threshold``
   is decoded again at the next temperature (sampling ``best_of`` candidates), unless it is
   silence (no-speech probability above ``no_speech_threshold`` and log-probability below
   ``logprob_threshold``), which no temperature fixes;
3. a window that still fails after the last temperature keeps its best attempt (the likeliest
   among those under the compression threshold, else among all) and is marked ``failed``.

The windows re-decoded at one temperature share a batch again, so fallback costs extra
calls only for the windows that need it. :func:`is_silence` is the no-speech rule that then
drops a window's text.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from speech.options import DecodingOptions

#: A window decoded hotter than this does not prompt the next one (faster-whisper's
#: ``prompt_reset_on_temperature``): sampled text is a poor context.
PROMPT_RESET_TEMPERATURE = 0.5


@dataclass(frozen=True)
class Attempt:
    """One decoding of one window, in window time."""

    tokens: np.ndarray  # int64 [n]: generated ids (text and timestamps), end-of-text removed
    logprobs: np.ndarray  # float32 [n]: log-probability of each token when it was chosen
    avg_logprob: float  # mean over the tokens and the end-of-text token, if one was generated
    no_speech_prob: float  # P(<|nospeech|>) after <|startoftranscript|>
    # float64 [n + 1] when the engine timed the tokens while decoding (word timestamps):
    # token j runs from bounds[j] to bounds[j + 1], seconds from the window start.
    bounds: np.ndarray | None = None


@dataclass(frozen=True)
class Request:
    """A window to decode: where it sits in the engine's batch, and how to prompt it."""

    row: int  # index of the window in the batch the engine encoded
    language: str  # language code of the <|xx|> token
    context: tuple[int, ...]  # tokens before <|startoftranscript|>: () or <|startofprev|> ...
    options: DecodingOptions


@dataclass(frozen=True)
class Decoded:
    """The attempt kept for a window, with what decided it."""

    attempt: Attempt
    temperature: float  # at which it was decoded
    compression_ratio: float  # of its text
    failed: bool  # it still failed a threshold after the last temperature


#: ``decode(requests, temperature) -> attempts``: requests sharing a context, beam size and best_of.
Decode = Callable[[list[Request], float], list[Attempt]]


def compression_ratio(text: str) -> float:
    """UTF-8 bytes / zlib-compressed bytes of ``text``: above ~2.4 the text repeats itself."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def is_silence(attempt: Attempt, options: DecodingOptions) -> bool:
    """The window holds no speech: likely ``<|nospeech|>`` and (if set) unlikely text."""
    if options.no_speech_threshold is None or attempt.no_speech_prob <= options.no_speech_threshold:
        return False
    return options.logprob_threshold is None or attempt.avg_logprob < options.logprob_threshold


def _fails(attempt: Attempt, ratio: float, options: DecodingOptions) -> bool:
    looped = options.compression_ratio_threshold is not None and ratio > options.compression_ratio_threshold
    unlikely = options.logprob_threshold is not None and attempt.avg_logprob < options.logprob_threshold
    return (looped or unlikely) and not is_silence(attempt, options)


def decode_with_fallback(requests: Sequence[Request], decode: Decode, text: Callable[[np.ndarray], str]) -> list[Decoded]:
    """Decode ``requests`` with temperature fallback; one :class:`Decoded` per request, in order.

    ``text(tokens)`` is the text of an attempt's tokens (for the compression ratio). Requests
    may differ in their options (a server mixes requests): at each round every pending
    request uses its own next temperature, and requests are grouped so that each ``decode``
    call shares a temperature, context, beam size and ``best_of``.
    """
    kept: list[Decoded | None] = [None] * len(requests)
    tried: list[list[Decoded]] = [[] for _ in requests]
    pending = list(range(len(requests)))
    round_ = 0
    while pending:
        groups: dict[tuple, list[int]] = {}
        for i in pending:
            request = requests[i]
            key = (request.options.temperature[round_], request.context, request.options.beam_size, request.options.best_of)
            groups.setdefault(key, []).append(i)
        pending = []
        for (temperature, *_), members in groups.items():
            for i, attempt in zip(members, decode([requests[i] for i in members], temperature)):
                options = requests[i].options
                ratio = compression_ratio(text(attempt.tokens))
                result = Decoded(attempt, temperature, ratio, _fails(attempt, ratio, options))
                tried[i].append(result)
                if not result.failed:
                    kept[i] = result
                elif round_ + 1 < len(options.temperature):
                    pending.append(i)
                else:
                    kept[i] = _best(tried[i], options)
        round_ += 1
    return kept


def _best(tried: list[Decoded], options: DecodingOptions) -> Decoded:
    """Of attempts that all failed: the likeliest that did not loop, else the likeliest."""
    threshold = options.compression_ratio_threshold
    unlooped = [d for d in tried if threshold is None or d.compression_ratio <= threshold]
    return max(unlooped or tried, key=lambda d: d.attempt.avg_logprob)


def context(
    options: DecodingOptions, previous: Sequence[int], encode: Callable[[str], list[int]], start_of_previous: int,
    limit: int,
) -> tuple[int, ...]:
    """The prompt before ``<|startoftranscript|>``: ``<|startofprev|>``, the hotwords, then the
    most recent ``previous`` text tokens, at most ``limit`` tokens in all; () when there is
    nothing to say (openai-whisper's and faster-whisper's layout)."""
    hot = encode(" " + options.hotwords) if options.hotwords else []
    if not hot and not previous:
        return ()
    hot = hot[: limit - 1]
    room = limit - 1 - len(hot)
    recent = list(previous)[-room:] if room > 0 else []
    return (start_of_previous, *hot, *recent)


def initial_tokens(options: DecodingOptions, encode: Callable[[str], list[int]]) -> list[int]:
    """The text tokens of ``initial_prompt`` (the "previous text" of each file's first window)."""
    return encode(" " + options.initial_prompt) if options.initial_prompt else []
