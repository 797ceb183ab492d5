"""The speech recognition deployment: the transcription job's front end and recognizer over HTTP.

Per request (in the replica, outside the batch): decode the upload with
:func:`speech.audio.decode` at the model's rate and cut it into windows with the model's
front end, exactly as the job's prepare stage does. Then the request waits in a
``@serve.batch`` queue bounded by requests and by audio seconds (see :mod:`serve.replica`);
a batch (requests for one model: Serve splits batches by model id) goes through
``Recognizer.transcribe`` in one call, which buckets the windows by length within the
model's ``batch_seconds`` budget, as in the job. Transcripts therefore equal the job's.

Models are multiplexed: the model id of a request is a served model's name, with
``#translate`` appended for translation (a Whisper recognizer built with ``task=translate``).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field
from ray import serve

from serve.replica import Batching, Item, ModelReplica, Rejected, batch_slots, model_deployment
from speech.asr import FrontEnd, ModelError, Recognizer, Transcript, Window, detect_backend, load_front_end, load_recognizer
from speech.audio import AudioDecodeError, decode
from speech.options import DecodingOptions, TranscribeOptions
from speech.schema import TranscriptRow

DEPLOYMENT = "Transcriber"
Task = Literal["transcribe", "translate"]

#: TranscribeOptions fields a server may set (``asr_options``): those that decide what a model
#: computes. Inputs, outputs and actor pools are the job's; replicas come from the Serve config.
SERVING_OPTIONS = frozenset(
    {"dtype", "compute_type", "batch_seconds", "strict_padding", "chunk_length_s", "stride_length_s", "language",
     "timestamps", "vad", "max_new_tokens", "max_duration_s", "torch_threads", *DecodingOptions.model_fields}
)

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


def transcribe_options(source: str, overrides: dict[str, Any], *, task: Task = "transcribe", gpus: float = 0.0) -> TranscribeOptions:
    """The job options a served model runs with: ``overrides`` (``asr_options``) on the defaults.

    Raises ``ValueError`` naming a field a server cannot set, ``pydantic.ValidationError``
    for bad values.
    """
    unknown = sorted(set(overrides) - SERVING_OPTIONS)
    if unknown:
        raise ValueError(f"asr_options: {', '.join(unknown)} cannot be set for serving; allowed: {', '.join(sorted(SERVING_OPTIONS))}")
    # The server has no corpus: the two fields a job must have get placeholders nothing reads.
    return TranscribeOptions(inputs=["<http>"], output="<http>", model=source, task=task, gpus_per_actor=gpus, **overrides)


class _Model:
    """One served ASR model in a replica: the job's two halves of it."""

    def __init__(self, name: str, options: TranscribeOptions, device: str):
        self.name = name
        self.options = options
        self.front_end: FrontEnd = load_front_end(options.model, options)
        self.recognizer: Recognizer = load_recognizer(options.model, options, device)

    def prepare(self, audio: bytes, filename: str) -> tuple[list[Window], float] | Rejected:
        """Upload bytes -> (windows, seconds of audio), as the job's prepare stage does."""
        try:
            samples = decode(audio, self.front_end.sample_rate)
        except AudioDecodeError as err:
            return Rejected("file", f"cannot read the uploaded file {filename!r}: {err}", "invalid_audio")
        seconds = len(samples) / self.front_end.sample_rate
        limit = self.options.max_duration_s
        if limit is not None and seconds > limit:
            return Rejected("file", f"audio is {seconds:.1f} s long, over this model's limit of {limit:g} s", "audio_too_long")
        return self.front_end.windows(samples), seconds

    def transcribe(self, payloads: list[tuple[list[Window], str | None, DecodingOptions]]) -> list[Transcript]:
        windows, languages, options = zip(*payloads)
        return self.recognizer.transcribe(list(windows), list(languages), list(options))


@model_deployment(DEPLOYMENT, AsrBatching)
class Transcriber:
    """Speech recognition replica: several multiplexed models, budgeted dynamic batching.

    Args: as :class:`serve.replica.ModelReplica`'s; ``options`` are the ``asr_options``, the
    TranscribeOptions every model runs with.
    """

    async def __init__(self, models: dict[str, str], options: dict[str, Any], max_models: int):
        self._replica: ModelReplica[_Model] = ModelReplica(models, options, max_models, AsrBatching, self._load)
        self._gpus = 1.0 if self._replica.device == "cuda" else 0.0
        self._languages: set[tuple[str, Task, str]] = set()  # (model, task, language) known to be accepted
        await self._replica.load_default()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply a new ``user_config`` (batch size, budget, wait) without restarting."""
        self._replica.reconfigure(self._recognize, user_config)

    def _options(self, name: str, task: Task, language: str | None = None) -> TranscribeOptions:
        overrides = self._replica.overrides if language is None else {**self._replica.overrides, "language": language}
        return transcribe_options(self._replica.sources[name], overrides, task=task, gpus=self._gpus)

    def _load(self, key: str) -> _Model:
        name, _, task = key.partition("#")
        return _Model(name, self._options(name, task or "transcribe"), self._replica.device)

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
        prepared = await asyncio.to_thread(model.prepare, request.audio, request.filename)
        if isinstance(prepared, Rejected):
            return prepared
        windows, seconds = prepared
        decoding = request_decoding(model.options, request.temperature, request.prompt)
        result = await self._recognize(Item((windows, request.language, decoding), seconds, self._replica.budget))
        if isinstance(result, Exception):
            raise result
        transcript, batch_size = result
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

    @serve.batch(max_batch_size=AsrBatching().max_batch_size, batch_wait_timeout_s=AsrBatching().batch_wait_timeout_s, batch_size_fn=batch_slots)
    async def _recognize(self, items: list[Item]) -> list[tuple[Transcript, int] | Exception]:
        return await self._replica.run_batch(_Model.transcribe, items)

    def _check_language(self, name: str, task: Task, language: str) -> str | None:
        """Why model ``name`` cannot take ``language``, or None if it can (reads configs once)."""
        if (name, task, language) in self._languages:
            return None
        try:
            detect_backend(self._replica.sources[name], self._options(name, task, language))
        except ModelError as err:
            return str(err)
        self._languages.add((name, task, language))
        return None

    def describe(self) -> dict[str, Any]:
        """Replica facts for operators and tests: when it started, its batching, its models."""
        return self._replica.describe()


__all__ = [
    "AsrBatching", "AsrRequest", "AsrResult", "DEPLOYMENT", "Transcriber", "model_key", "request_decoding",
    "transcribe_options",
]
