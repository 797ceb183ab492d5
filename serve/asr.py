"""The speech recognition deployment: the transcription job's front end and recognizer over HTTP.

Per request (in the replica, outside the batch): read the upload's header (refusing audio
longer than ``max_duration_s``, 400 ``audio_too_long``, before decoding anything), wait until
the replica holds less than ``max_decoded_seconds`` of decoded audio, decode the upload with
:func:`speech.audio.decode` at the model's rate (bounded by ``max_duration_s`` even when
the header gives no length) and cut it into windows with the model's front end, exactly as
the job's prepare stage does. Then the request waits in the
replica's batch queue (:mod:`serve.batcher`: a batch forms when the model is free, bounded
by requests and by audio seconds); a batch (requests for one model) goes through
``Recognizer.transcribe`` in one call, which buckets the windows by length within the
model's ``batch_seconds`` budget, as in the job. Transcripts therefore equal the job's.

Models are multiplexed: the model id of a request is a served model's name, with
``#translate`` appended for translation (a Whisper recognizer built with ``task=translate``).

Live transcription (``/v1/realtime``, :mod:`serve.realtime`) runs on the same replicas and
model objects: a session's steps (:class:`speech.asr.streaming.StreamWork`: VAD frames, CTC
windows, turn decodes) wait in the same queue, batched with each other (not with files) under
the same limits, so the steps of many sessions share model calls (:class:`speech.asr.streaming.StreamingModel`). Steps carry
all the stream state they need; any replica can take any session's next step.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import Field

from serve.batcher import Batching
from serve.replica import HoldLimit, ModelReplica, Rejected, model_deployment, served_options
from speech.asr import FrontEnd, ModelError, Recognizer, Transcript, Window, detect_backend, load_front_end, load_recognizer
from speech.asr.streaming import StreamingModel, StreamOutput, StreamWork
from speech.asr.vad import default_vad
from speech.audio import AudioDecodeError, AudioTooLong, decode, probe
from speech.options import AsrOptions, DecodingOptions, ModelRun, StreamOptions, check_device
from speech.schema import TranscriptRow

DEPLOYMENT = "Transcriber"
Task = Literal["transcribe", "translate"]

#: AsrOptions fields a Serve config's ``asr_options`` cannot set, and why. Every other field of
#: AsrOptions (what a model's transcripts depend on, as a job's rows do) and of ModelRun (a
#: model's batch budget and threads) can; inputs, outputs and actor pools are the job's, and
#: replicas come from the Serve config.
NOT_SERVED = {
    "model": "the served models are asr_models",
    "task": "the route decides it (/v1/audio/translations translates)",
}
#: ``max_duration_s`` of served models unless ``asr_options`` sets another: a few hundred
#: kilobytes of FLAC can hold hours of audio, so a server always has a limit.
SERVING_MAX_DURATION_S = 7200.0

#: openai-whisper's step between fallback temperatures (``--temperature_increment_on_fallback``).
TEMPERATURE_STEP = 0.2


class AsrBatching(Batching):
    """``user_config`` of the Transcriber deployment."""

    max_batch_seconds: float = Field(160.0, gt=0)  # audio seconds per batch (each request counts its length)

    @property
    def budget(self) -> float:
        return self.max_batch_seconds


@dataclass(frozen=True)
class AsrRequest:
    """One uploaded file to recognize."""

    audio: bytes  # the file as uploaded (any format speech.audio.decode reads)
    filename: str  # as uploaded; recorded as the transcript's path
    language: str | None = None  # language code given by the client, if any
    temperature: float = 0.0  # OpenAI's field: see request_decoding
    prompt: str | None = None  # OpenAI's field: the initial prompt of this file


@dataclass(frozen=True)
class StreamFormat:
    """What a live session needs to know of its model before sending audio."""

    backend: str  # "ctc" or "whisper"
    sample_rate: int  # Hz of the audio its steps carry


@dataclass(frozen=True)
class AsrResult:
    row: TranscriptRow  # as the job would write it (id is the filename)
    batch_size: int  # requests in the model call that served this one


def model_key(name: str, task: Task) -> str:
    """The multiplexed model id of served model ``name`` doing ``task``."""
    return name if task == "transcribe" else f"{name}#translate"


def request_decoding(served: DecodingOptions, temperature: float, prompt: str | None) -> DecodingOptions:
    """The decoding options of one request: the server's, with OpenAI's two fields applied.

    ``temperature`` 0 (the API's default) keeps the server's schedule, which starts greedy and
    falls back hotter ("the model will use log probability to automatically increase the
    temperature", in OpenAI's words); above 0, sampling starts there and falls back in steps
    of :data:`TEMPERATURE_STEP` up to 1, as openai-whisper does. ``prompt`` becomes the
    ``initial_prompt``. No model is reloaded: options travel with the request.
    """
    update: dict[str, Any] = {}
    if temperature > 0:
        steps = math.floor((1.0 - temperature) / TEMPERATURE_STEP + 1e-6)  # as numpy.arange(t, 1 + 1e-6, step)
        update["temperature"] = tuple(round(temperature + k * TEMPERATURE_STEP, 6) for k in range(steps + 1))
    if prompt:
        update["initial_prompt"] = prompt
    return DecodingOptions.model_validate({**served.decoding().model_dump(), **update}) if update else served.decoding()


def transcribe_options(source: str, overrides: dict[str, Any], *, task: Task = "transcribe",
                       gpus: float = 0.0) -> tuple[AsrOptions, ModelRun]:
    """The options a served model runs with: ``overrides`` (``asr_options``) on the defaults,
    for model ``source`` doing ``task`` on a replica with ``gpus``.

    Raises ``ValueError`` naming a field a server cannot set (or a precision the device lacks),
    ``pydantic.ValidationError`` for bad values.
    """
    if "max_duration_s" in overrides and overrides["max_duration_s"] is None:
        raise ValueError("asr_options.max_duration_s: a server needs a limit (default "
                         f"{SERVING_MAX_DURATION_S:g} s); give a number of seconds")
    options, run = served_options("asr_options", {"max_duration_s": SERVING_MAX_DURATION_S, **overrides},
                                  AsrOptions, ModelRun, NOT_SERVED, model=source, task=task)
    check_device(options.dtype, gpus)
    return options, run


class _Model:
    """One served ASR model in a replica: the job's two halves of it."""

    def __init__(self, name: str, options: tuple[AsrOptions, ModelRun], device: str, stream_options: StreamOptions):
        self.name = name
        self.options, run = options
        self.front_end: FrontEnd = load_front_end(self.options.model, self.options)
        self.recognizer: Recognizer = load_recognizer(self.options.model, self.options, device, run=run)
        # The process's one Silero detector (loaded once, in this model thread) scores every
        # live session's frames.
        self.streaming = StreamingModel(self.front_end, self.recognizer, default_vad(), stream_options)

    def expected_seconds(self, audio: bytes, filename: str) -> float | Rejected:
        """The upload's length from its header (``max_duration_s`` when the header does not
        say), or why it is refused: not audio, or longer than ``max_duration_s``."""
        try:
            seconds = probe(audio).duration_s
        except AudioDecodeError as err:
            return _unreadable(err, filename)
        limit = self.options.max_duration_s
        if seconds is not None and seconds > limit:
            return Rejected("file", str(AudioTooLong(seconds, limit)), "audio_too_long")
        return limit if seconds is None else seconds

    def prepare(self, audio: bytes, filename: str) -> tuple[list[Window], float] | Rejected:
        """Upload bytes -> (windows, seconds of audio), as the job's prepare stage does; never
        decodes more than ``max_duration_s`` of it."""
        try:
            samples = decode(audio, self.front_end.sample_rate, max_seconds=self.options.max_duration_s)
        except AudioTooLong as err:
            return Rejected("file", str(err), "audio_too_long")
        except AudioDecodeError as err:
            return _unreadable(err, filename)
        return self.front_end.windows(samples), len(samples) / self.front_end.sample_rate

    def transcribe(self, payloads: list[tuple[list[Window], str | None, DecodingOptions]]) -> list[Transcript]:
        windows, languages, options = zip(*payloads)
        return self.recognizer.transcribe(list(windows), list(languages), list(options))

    def stream(self, works: list[StreamWork]) -> list[StreamOutput]:
        return self.streaming.run(works)


def _unreadable(err: AudioDecodeError, filename: str) -> Rejected:
    return Rejected("file", f"cannot read the uploaded file {filename!r}: {err}", "invalid_audio")


@model_deployment(DEPLOYMENT, AsrBatching)
class Transcriber:
    """Speech recognition replica: several multiplexed models, budgeted dynamic batching.

    Args: as :class:`serve.replica.ModelReplica`'s; ``options`` are the ``asr_options``, the
    AsrOptions and ModelRun fields every model runs with; ``max_decoded_seconds`` bounds the decoded audio
    the replica's requests hold at once (more wait); ``stream_options`` are the StreamOptions
    fields of live sessions.
    """

    async def __init__(self, models: dict[str, str], options: dict[str, Any], max_models: int,
                       max_decoded_seconds: float, stream_options: dict[str, Any] | None = None):
        self._stream_options = StreamOptions.model_validate(stream_options or {})
        self._replica: ModelReplica[_Model] = ModelReplica(models, options, max_models, AsrBatching, self._load)
        self._decoded = HoldLimit(max_decoded_seconds)
        self._gpus = 1.0 if self._replica.device == "cuda" else 0.0
        self._languages: set[tuple[str, Task, str]] = set()  # (model, task, language) known to be accepted
        self._stream_batches: Counter[int] = Counter()  # stream steps served, by the size of their batch
        await self._replica.load_default()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply a new ``user_config`` (batch size, budget, wait) without restarting."""
        self._replica.reconfigure(user_config)

    def _options(self, name: str, task: Task, language: str | None = None) -> tuple[AsrOptions, ModelRun]:
        overrides = self._replica.overrides if language is None else {**self._replica.overrides, "language": language}
        return transcribe_options(self._replica.sources[name], overrides, task=task, gpus=self._gpus)

    def _load(self, key: str) -> _Model:
        name, _, task = key.partition("#")
        return _Model(name, self._options(name, task or "transcribe"), self._replica.device, self._stream_options)

    async def transcribe(self, request: AsrRequest) -> AsrResult | Rejected:
        """Recognize one upload with the model named by the request's multiplexed model id.

        A bad request (not audio, too long, a language the model does not know) gets a
        :class:`Rejected`; an exception is a server-side failure.
        """
        model = await self._replica.model()
        if request.language is not None:
            problem = await asyncio.to_thread(self._check_language, model.name, model.options.task, request.language)
            if problem is not None:
                return Rejected("language", problem)
        expected = await asyncio.to_thread(model.expected_seconds, request.audio, request.filename)
        if isinstance(expected, Rejected):
            return expected
        async with self._decoded.hold(expected) as held:
            prepared = await asyncio.to_thread(model.prepare, request.audio, request.filename)
            if isinstance(prepared, Rejected):
                return prepared
            windows, seconds = prepared
            await held.resize(seconds)
            decoding = request_decoding(model.options, request.temperature, request.prompt)
            transcript, batch_size = await self._replica.batched(_Model.transcribe, (windows, request.language, decoding),
                                                                seconds)
        language = request.language or model.options.language
        row = TranscriptRow(
            id=request.filename,
            path=request.filename,
            duration_s=seconds,
            text=transcript.text,
            confidence=transcript.confidence,
            words=transcript.words,
            segments=transcript.segments,
            language=transcript.language or language,
            language_probability=transcript.language_probability,
            model=model.options.model,
            backend=model.recognizer.backend,
            engine=model.recognizer.engine,
            computed_s=transcript.computed_samples / model.front_end.sample_rate,
            thresholds_failed=transcript.thresholds_failed,
        )
        return AsrResult(row, batch_size)

    async def open_stream(self, language: str | None) -> StreamFormat | Rejected:
        """A live session's model (the multiplexed model id), loaded, and the language checked."""
        model = await self._replica.model()
        if language is not None:
            problem = await asyncio.to_thread(self._check_language, model.name, model.options.task, language)
            if problem is not None:
                return Rejected("language", problem)
        return StreamFormat(model.recognizer.backend, model.front_end.sample_rate)

    async def stream(self, work: StreamWork) -> StreamOutput:
        """One live session's step, batched with other sessions' steps for the same model."""
        model = await self._replica.model()
        output, batch_size = await self._replica.batched(_Model.stream, work, work.audio_seconds(model.front_end.sample_rate))
        self._stream_batches[batch_size] += 1
        return replace(output, batch_size=batch_size)

    def _check_language(self, name: str, task: Task, language: str) -> str | None:
        """Why model ``name`` cannot take ``language``, or None if it can (reads configs once)."""
        if (name, task, language) in self._languages:
            return None
        try:
            detect_backend(self._replica.sources[name], self._options(name, task, language)[0], self._replica.device)
        except ModelError as err:
            return str(err)
        self._languages.add((name, task, language))
        return None

    def describe(self) -> dict[str, Any]:
        """Replica facts for operators and tests: when it started, its batching, its models, the
        decoded audio seconds its requests hold now and may hold at most, and how many
        live-session steps it served in batches of each size."""
        return {**self._replica.describe(), "decoded_seconds": self._decoded.held,
                "max_decoded_seconds": self._decoded.capacity,
                "stream_batches": dict(sorted(self._stream_batches.items()))}


__all__ = [
    "DEPLOYMENT",
    "NOT_SERVED",
    "SERVING_MAX_DURATION_S",
    "AsrBatching",
    "AsrRequest",
    "AsrResult",
    "StreamFormat",
    "Transcriber",
    "model_key",
    "request_decoding",
    "transcribe_options",
]
