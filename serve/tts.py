"""The speech synthesis deployment: the synthesis job's text front end and TTS model over HTTP.

Per request (in the replica, outside the batch): the job's front end turns the text into
sentence pieces (:func:`speech.tts.frontend.prepare_row`: normalize, validate, resolve the
voice, split, encode, seed each piece) with the job's options. Each piece then waits in the
replica's batch queue (:mod:`serve.batcher`: a batch forms when the model is free, bounded by
pieces and by characters), so pieces of many requests share model calls. A TTS model's output for a piece does not depend
on its batch-mates (the :class:`speech.tts.TtsModel` contract), so the audio equals the job's.

Pieces are streamed back in reading order as they are ready, each after the job's
``sentence_pause_s`` of silence (:func:`speech.tts.frontend.join_pieces`, piece by piece),
so the joined stream is the waveform the job writes.

Models are multiplexed by name. A request's voice and speaking rate travel with its pieces
(:class:`speech.tts.Utterance`), which the model applies per call: any number of voices and
speeds share one loaded model and its batches.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field

from serve.batcher import Batching
from serve.replica import ModelReplica, Rejected, model_deployment, served_options
from speech.options import TtsOptions, TtsRun
from speech.text import TextError
from speech.tts import TextFrontEnd, TtsModel, Utterance, load_front_end, load_model
from speech.tts.frontend import check_speed, join_pieces, prepare_row

DEPLOYMENT = "Synthesizer"

#: TtsOptions fields a Serve config's ``tts_options`` cannot set, and why. Every other field of
#: TtsOptions (what the audio depends on, as a job's rows do) and of TtsRun (a model's batch
#: size and threads) can.
NOT_SERVED = {
    "model": "the served models are tts_models",
    "voices": "dealing voices is for a corpus; a request names its voice",
    "format": "a request's response_format decides it",
    "embed_audio": "a server answers with audio, not Parquet rows",
}


class TtsBatching(Batching):
    """``user_config`` of the Synthesizer deployment; items are sentence pieces."""

    max_batch_chars: int = Field(2000, ge=1)  # characters of text per batch

    @property
    def budget(self) -> float:
        return float(self.max_batch_chars)


@dataclass(frozen=True)
class SpeechRequest:
    text: str
    voice: str | None = None  # None: tts_options.voice, else the model's default
    speed: float | None = None  # None: tts_options.speed, else the model's own rate


@dataclass(frozen=True)
class SpeechChunk:
    """One sentence piece of the answer, in reading order."""

    samples: np.ndarray  # float32 [n] at sample_rate; the pause before the piece included
    sample_rate: int  # Hz
    batch_size: int  # pieces in the model call that made this one


def synthesize_options(source: str, overrides: dict[str, Any]) -> tuple[TtsOptions, TtsRun]:
    """The options a served model ``source`` runs with: ``overrides`` (``tts_options``) on the
    defaults.

    Raises ``ValueError`` naming a field a server cannot set, ``pydantic.ValidationError``
    for bad values.
    """
    return served_options("tts_options", overrides, TtsOptions, TtsRun, NOT_SERVED, model=source)


class _Model:
    """One served TTS model in a replica: the job's front end and model of it."""

    def __init__(self, options: tuple[TtsOptions, TtsRun], device: str):
        self.options, run = options
        self.front_end: TextFrontEnd = load_front_end(self.options)
        self.model: TtsModel = load_model(self.options, device, run)

    def prepare(self, request: SpeechRequest) -> list[Utterance] | Rejected:
        """The request's pieces, as the job's front end stage makes them for a row."""
        options = self.options
        voice = request.voice or options.voice
        speed = options.speed if request.speed is None else request.speed
        try:
            check_speed(self.front_end.backend, speed)
        except TextError as err:
            return Rejected("speed", str(err))
        try:
            self.front_end.resolve_voice(voice, options.seed)
        except TextError as err:
            return Rejected("voice", str(err))
        try:
            return prepare_row(
                self.front_end, request.text, voice=voice, language=options.language, seed=options.seed,
                max_text_chars=options.max_text_chars, speed=speed, normalize=options.normalize,
                unknown_chars=options.unknown_chars,
            ).utterances
        except TextError as err:
            return Rejected("input", str(err))

    def synthesize(self, utterances: list[Utterance]) -> list[np.ndarray]:
        # Similar lengths side by side (as the job sorts them), so batching backends pad little.
        order = sorted(range(len(utterances)), key=lambda i: utterances[i].cost)
        waveforms = self.model.synthesize([utterances[i] for i in order])
        result: list[np.ndarray] = [np.empty(0, np.float32)] * len(utterances)
        for i, waveform in zip(order, waveforms):
            result[i] = np.asarray(waveform, np.float32)
        return result


@model_deployment(DEPLOYMENT, TtsBatching)
class Synthesizer:
    """Speech synthesis replica: several multiplexed models, budgeted dynamic batching.

    Args: as :class:`serve.replica.ModelReplica`'s; ``options`` are the ``tts_options``, the
    TtsOptions and TtsRun fields every model runs with.
    """

    async def __init__(self, models: dict[str, str], options: dict[str, Any], max_models: int):
        self._replica: ModelReplica[_Model] = ModelReplica(models, options, max_models, TtsBatching, self._load)
        await self._replica.load_default()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply a new ``user_config`` (batch size, budget, wait) without restarting."""
        self._replica.reconfigure(user_config)

    def _load(self, name: str) -> _Model:
        replica = self._replica
        return _Model(synthesize_options(replica.sources[name], replica.overrides), replica.device)

    async def synthesize(self, request: SpeechRequest) -> AsyncIterator[SpeechChunk | Rejected]:
        """Stream the request's audio, piece by piece, with the model of the multiplexed model id.

        A bad request (unknown voice, text that cannot be said) gets one :class:`Rejected`
        instead of audio; an exception is a server-side failure.
        """
        model = await self._replica.model()
        utterances = await asyncio.to_thread(model.prepare, request)
        if isinstance(utterances, Rejected):
            yield utterances
            return
        pieces = [asyncio.ensure_future(self._replica.batched(_Model.synthesize, u, len(u.text))) for u in utterances]
        try:
            for index, piece in enumerate(pieces):
                waveform, batch_size = await piece
                rate = model.model.sample_rate
                samples = join_pieces([waveform], pause_s=model.options.sentence_pause_s, sample_rate=rate, start=index)
                yield SpeechChunk(samples, rate, batch_size)
        finally:
            for piece in pieces:  # the client went away: its remaining pieces are not needed
                piece.cancel()

    def describe(self) -> dict[str, Any]:
        """Replica facts for operators and tests: when it started, its batching, its models."""
        return self._replica.describe()


__all__ = ["DEPLOYMENT", "NOT_SERVED", "SpeechChunk", "SpeechRequest", "Synthesizer", "TtsBatching", "synthesize_options"]
