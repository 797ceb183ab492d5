"""The common text front end: one input row -> the utterances a TTS model synthesizes, and back.

Every backend goes through the same steps, so bad rows fail the same way whatever the
model: clean up, write out numbers and symbols in the row's language
(:func:`speech.text.normalize.to_spoken`), resolve the voice, handle the characters the
model cannot say (``unknown_chars``), validate, split at sentence boundaries, then let the
backend encode each piece (its own normalization, pronounceability check, tokens). The
pieces' waveforms are joined back into the row's audio by :func:`join_pieces`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from speech.options import SPEEDS
from speech.text import TextError, check_text, normalize_text, split_sentences, unsayable_characters
from speech.text.normalize import to_spoken
from speech.text.validate import UnknownChars, describe_unsayable, handle_unsayable, is_spoken
from speech.tts import takes_speed
from speech.tts.base import TextFrontEnd, Utterance


class PieceTooLong(TextError):
    """A piece encodes to more model inputs than the model takes; the front end splits it further."""


#: How many times a piece that encodes too long is halved before the row fails.
_MAX_RESPLITS = 4


def piece_seed(row_seed: int, index: int) -> int:
    """Seed of a row's ``index``-th piece: a fixed function of both, in [0, 2**31).

    Each piece gets its own stream so that splitting a row differently never changes
    the audio of the pieces before the change, and no two pieces share noise.
    """
    return int(np.random.SeedSequence([row_seed & 0xFFFFFFFF, index]).generate_state(1)[0] >> 1)


@dataclass(frozen=True)
class PreparedRow:
    """One row made ready for a model."""

    spoken: str  # the text the pieces were cut from: normalized, unknown characters handled
    utterances: list[Utterance]  # in reading order
    unknown: str  # characters the model cannot say that ``unknown_chars`` dropped or spelled


def prepare_row(
    front_end: TextFrontEnd,
    text: str | None,
    *,
    voice: str | None,
    language: str | None,
    seed: int,
    max_text_chars: int,
    speed: float | None = None,
    normalize: bool = True,
    unknown_chars: UnknownChars = "error",
) -> PreparedRow:
    """Turn one row into utterances, in reading order.

    ``normalize``: write out numbers, dates, symbols ... in the row's ``language`` first;
    ``unknown_chars``: what to do with letters and digits the model cannot say (``"error"``:
    the row fails naming them, ``"drop"``, ``"spell"``: their name, see
    :func:`speech.text.validate.spoken_name`); ``speed``: speaking rate of every piece.

    Raises:
        TextError: the row cannot be synthesized; the message is the row's ``error``, and
            ``spoken``/``unknown`` say how far it got.
    """
    check_speed(front_end.backend, speed)
    spoken = normalize_text(text or "")
    if normalize and spoken:
        check_text(spoken, max_chars=max_text_chars)  # an absurd row is refused before any work on it
        spoken = to_spoken(spoken, language, keep=front_end.markers)
    try:
        resolved = front_end.resolve_voice(voice, seed)

        def sayable(char: str) -> bool:
            return front_end.sayable(char, voice=resolved, language=language)

        unknown = unsayable_characters(front_end.strip_markers(spoken), sayable)
        if unknown and unknown_chars == "error":
            raise TextError(describe_unsayable(unknown, front_end.backend), unknown="".join(unknown))
        if unknown:
            spoken = handle_unsayable(spoken, unknown, unknown_chars, sayable, front_end.markers)
            if not any(is_spoken(c) for c in front_end.strip_markers(spoken)):
                raise TextError(f"nothing left to say once the characters the {front_end.backend} model cannot say "
                                f"were {'dropped' if unknown_chars == 'drop' else 'spelled'}", unknown="".join(unknown))
        utterances = _utterances(front_end, spoken, voice=resolved, language=language, seed=seed,
                                 max_text_chars=max_text_chars, speed=speed)
    except TextError as err:
        err.spoken = spoken
        raise
    return PreparedRow(spoken, utterances, "".join(unknown))


def check_speed(backend: str, speed: float | None) -> None:
    """Raise ``TextError`` unless ``speed`` is None or a rate ``backend`` applies, within :data:`SPEEDS`."""
    if speed is None:
        return
    if not takes_speed(backend):
        raise TextError(f"speed: the {backend} backend takes no speaking rate")
    if not SPEEDS[0] <= speed <= SPEEDS[1]:
        raise TextError(f"speed {speed:g} is outside {SPEEDS[0]:g}..{SPEEDS[1]:g}")


def deal_voices(rows: int, voices: Sequence[str], seed: int) -> list[str]:
    """Voices of ``rows`` rows in corpus order: ``voices`` shuffled with ``seed``, then dealt in
    turn, so every voice gets the same share (give or take one) and a rerun the same voices."""
    order = list(voices)
    random.Random(seed).shuffle(order)
    return [order[i % len(order)] for i in range(rows)]


def _utterances(front_end: TextFrontEnd, text: str, *, voice: str, language: str | None, seed: int,
                max_text_chars: int, speed: float | None) -> list[Utterance]:
    spoken = front_end.strip_markers(text)
    if text and not spoken.strip():
        raise TextError(f"text has only prosody markers, nothing to say: {text[:40]!r}")
    check_text(spoken, max_chars=max_text_chars)
    pieces = split_sentences(text, front_end.max_piece_chars)
    encoded: list[tuple[str, object, int]] = []
    for piece in pieces:
        encoded.extend(_encode(front_end, piece, voice, language, front_end.max_piece_chars, _MAX_RESPLITS))
    utterances = [
        Utterance(text=piece, inputs=inputs, cost=cost, voice=voice, seed=piece_seed(seed, index), speed=speed)
        for index, (piece, inputs, cost) in enumerate(encoded)
    ]
    if not utterances:
        raise TextError(f"text has nothing the {front_end.backend} model can say: {text[:40]!r}")
    return utterances


def _encode(front_end: TextFrontEnd, piece: str, voice: str, language: str | None, max_chars: int, resplits: int):
    if not check_speakable(front_end, piece) and front_end.strip_markers(piece) == piece:
        return []  # only punctuation between sentences: nothing to say, no marker to act on
    try:
        inputs, cost = front_end.encode(piece, voice=voice, language=language)
    except PieceTooLong as err:
        smaller = split_sentences(piece, max(1, max_chars // 2))
        if resplits == 0 or len(smaller) < 2:
            raise TextError(f"piece too long for the model even after splitting: {err}") from err
        return [part for p in smaller for part in _encode(front_end, p, voice, language, max_chars // 2, resplits - 1)]
    return [(piece, inputs, cost)]


def join_pieces(parts: Sequence[np.ndarray], *, pause_s: float, sample_rate: int, start: int = 0) -> np.ndarray:
    """Waveforms of a row's pieces, in reading order, joined into its audio: float32 ``[n]``.

    ``parts`` (at least one, each ``[n_k]`` at ``sample_rate`` Hz) are the row's pieces from
    its ``start``-th on; each piece but the row's first comes after ``pause_s`` seconds of
    silence. Joining piece by piece (``start=k`` for piece ``k``) and concatenating gives the
    same samples as joining all at once, which lets the server stream what the job writes.
    """
    pause = np.zeros(int(round(pause_s * sample_rate)), np.float32)
    joined: list[np.ndarray] = []
    for k, part in enumerate(parts, start):
        if k:
            joined.append(pause)
        joined.append(np.asarray(part, np.float32))
    return np.concatenate(joined)


def check_speakable(front_end: TextFrontEnd, piece: str) -> bool:
    """Whether a piece has a letter or digit once the backend's markers are removed."""
    try:
        check_text(front_end.strip_markers(piece), max_chars=len(piece) + 1)
    except TextError:
        return False
    return True
