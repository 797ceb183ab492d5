"""The HTTP ingress: OpenAI's audio API in front of the ASR and TTS deployments.

Routes (``/v1`` as in OpenAI's API, so its client libraries work with ``base_url=.../v1``):

* ``POST /v1/audio/transcriptions`` and ``/v1/audio/translations`` (multipart upload),
* ``POST /v1/audio/speech`` (JSON), whole file or streamed (``stream_format: audio``),
* ``GET /v1/models``, ``GET /health`` (no API key needed),
* ``/v1/realtime?intent=transcription``: live transcription over a WebSocket (:mod:`serve.realtime`),
* ``GET /``: a page to try every model (:mod:`serve.page`; no API key needed to load it).

Requests are checked here before any model replica sees them: the API key, the body (read
whole, at most the route's size limit, within ``body_timeout_s``), the form fields and JSON
(parts, fields and nesting bounded), the model name. Every client error is a 4xx with an
OpenAI-style body ``{"error": {"message", "type", "param", "code"}}`` and no traceback in the
log; a body over the limit (413) or too slow (408) is answered at once and the connection
closed, so the rest of it is not read. A failure of the server itself is a 500 (503 when the
model replicas are overloaded) with the same shape, and the server keeps serving. Responses carry ``x-batch-size``: how many requests (ASR) or sentence pieces (TTS,
the largest batch among the answer's pieces) shared the model call that served this one.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import json
import logging
import os
import re
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

import numpy as np
import soundfile as sf
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message

from serve import asr, page, realtime, tts
from serve.replica import Rejected
from speech.audio import AUDIO_EXTENSIONS, encode_audio, prepare_samples
from speech.export import render
from speech.options import StreamOptions

log = logging.getLogger(__name__)

DEPLOYMENT = "Gateway"
Kind = Literal["transcription", "speech"]

_FORM_OVERHEAD = 64 * 1024  # multipart envelope allowed on top of the upload limit, bytes
_MAX_FORM_FIELDS = 32  # text fields of an upload form (OpenAI's have under 10)
_MAX_JSON_BYTES = 1024 * 1024  # body of /v1/audio/speech
_MAX_JSON_DEPTH = 32  # nesting of arrays and objects in a JSON body (the speech body has 1)
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)  # the only rates libsndfile's Opus encoder takes


# --- errors --------------------------------------------------------------------------------


class ApiError(Exception):
    """A request the server answers with an error status and an OpenAI-style JSON body.

    ``close``: the answer comes before the request body was read to its end, so the
    connection is closed after it (``Connection: close``) instead of reading the rest.
    """

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error", close: bool = False):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.close = close

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers={"connection": "close"} if self.close else None)


def _invalid(err: ValidationError) -> ApiError:
    """A field validation failure -> 400 naming the fields (the first one as ``param``)."""
    problems = []
    for error in err.errors():
        field = ".".join(str(part) for part in error["loc"]) or "body"
        problems.append(f"{field}: {error['msg']}")
    first = err.errors()[0]["loc"] if err.errors() else ()
    return ApiError(400, "; ".join(problems), param=str(first[0]) if first else None, code="invalid_value")


# --- served models -------------------------------------------------------------------------


@dataclass(frozen=True)
class ServedModel:
    """One model the server answers for, as the app builder found it."""

    name: str  # what a request's ``model`` field says (its ``source`` is accepted too)
    source: str  # hub id or checkpoint directory, as configured
    kind: Kind
    backend: str  # detected from the checkpoint
    translates: bool = False  # transcription models: the registry accepts task=translate for it


class Catalog:
    """Served models by name; the first of each kind is that kind's default."""

    def __init__(self, models: tuple[ServedModel, ...]):
        self.models = models

    def find(self, requested: str | None, kind: Kind, *, translating: bool = False) -> ServedModel:
        """The model a request names, or a 404 ``ApiError``. None names the default: the first
        model of ``kind`` (that can translate, when ``translating``)."""
        candidates = [m for m in self.models if m.kind == kind]
        if not candidates:
            raise ApiError(404, f"this server has no {kind} models", param="model", code="model_not_found")
        if requested is None:
            defaults = [m for m in candidates if m.translates or not translating]
            if not defaults:
                raise ApiError(404, "this server has no model that can translate", param="model",
                               code="model_not_found")
            return defaults[0]
        for model in candidates:
            if requested in (model.name, model.source):
                return model
        names = ", ".join(m.name for m in candidates)
        raise ApiError(404, f"model {requested!r} is not a {kind} model of this server; choose from: {names}",
                       param="model", code="model_not_found")


@dataclass(frozen=True)
class GatewaySettings:
    models: tuple[ServedModel, ...]
    max_upload_bytes: int  # largest uploaded file (and request body) accepted
    api_key_env: str | None = None  # environment variable holding the API key; None: no key
    stream_options: StreamOptions = StreamOptions()  # live transcription sessions
    body_timeout_s: float = 60.0  # a request body must arrive whole within this; else 408


# --- request fields ------------------------------------------------------------------------


class _Fields(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TranslationFields(_Fields):
    """Form fields of ``/v1/audio/translations`` (besides ``file``)."""

    model: str | None = None
    prompt: str | None = Field(None, max_length=2000)  # Whisper: the initial prompt (spelling, names, style)
    response_format: Literal["json", "text", "srt", "vtt", "verbose_json"] = "json"
    # Whisper: 0 starts greedy and falls back hotter when a window fails the thresholds;
    # above 0, sampling starts there (serve.asr.request_decoding).
    temperature: float = Field(0.0, ge=0, le=1)


class TranscriptionFields(TranslationFields):
    """Form fields of ``/v1/audio/transcriptions`` (besides ``file``)."""

    language: str | None = Field(None, max_length=32)
    timestamp_granularities: list[Literal["segment", "word"]] = Field(default_factory=lambda: ["segment"])


class SpeechFields(_Fields):
    """JSON body of ``/v1/audio/speech``."""

    model: str | None = None
    input: str = Field(min_length=1)
    voice: str | None = None  # None: the configured voice, else the model's default
    response_format: Literal["mp3", "opus", "wav", "flac", "pcm"] = "mp3"
    speed: float | None = Field(None, ge=0.25, le=4.0)  # None: the configured rate
    stream_format: Literal["audio"] | None = None  # "audio": send pieces as they are ready


_LIST_FIELDS = {"timestamp_granularities[]": "timestamp_granularities", "timestamp_granularities": "timestamp_granularities"}


def _form_values(form: FormData) -> dict[str, Any]:
    """Form fields other than ``file`` as a dict; repeated fields only where lists are allowed."""
    values: dict[str, Any] = {}
    for key in dict.fromkeys(form.keys()):
        if key == "file":
            continue
        items = form.getlist(key)
        if any(isinstance(item, UploadFile) for item in items):
            raise ApiError(400, f"field {key!r} must be text, not a file", param=key, code="invalid_value")
        if key in _LIST_FIELDS:
            values[_LIST_FIELDS[key]] = list(items)
        elif len(items) > 1:
            raise ApiError(400, f"field {key!r} is given {len(items)} times", param=key, code="invalid_value")
        elif items[0] != "":  # `curl -F language=` means "not given"
            values[key] = items[0]
    return values


# --- responses -----------------------------------------------------------------------------


def transcript_response(result: asr.AsrResult, fmt: str, granularities: list[str], task: asr.Task) -> Response:
    """The answer in OpenAI's ``response_format``; srt/vtt/text/verbose_json as ``speech export`` writes them."""
    row = asdict(result.row)
    headers = {"x-batch-size": str(result.batch_size)}
    if fmt == "json":
        return JSONResponse({"text": row["text"] or ""}, headers=headers)
    if fmt == "verbose_json":
        document = json.loads(render(row, "json"))
        document["task"] = task
        if "word" not in granularities:
            del document["words"]
        if "segment" not in granularities:
            del document["segments"]
        return JSONResponse(document, headers=headers)
    text = render(row, {"text": "txt"}.get(fmt, fmt))
    return PlainTextResponse(text, headers=headers)


_MEDIA_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg; codecs=opus", "wav": "audio/wav", "flac": "audio/flac", "pcm": "audio/pcm"}
_LIBSNDFILE = {"mp3": ("MP3", "MPEG_LAYER_III"), "opus": ("OGG", "OPUS")}


def speech_formats() -> list[str]:
    """The speech ``response_format`` values this machine's libsndfile can encode."""
    available = sf.available_formats()
    return [f for f in _MEDIA_TYPES if f not in _LIBSNDFILE or _LIBSNDFILE[f][0] in available]


def encode_speech(samples: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """Mono float32 ``[n]`` -> the bytes of a ``fmt`` file.

    wav and flac are the synthesis job's own 16-bit files (same bytes); pcm is the same
    16-bit samples, little-endian, without a header; mp3 and opus are libsndfile's LAME and
    Opus encoders (opus at 48 kHz when the model's rate is not one Opus takes).
    """
    if fmt in ("wav", "flac"):
        return encode_audio(samples, sample_rate, fmt)
    if fmt == "pcm":
        return _pcm16(samples, sample_rate)
    clipped = np.clip(samples, -1.0, 1.0)
    container, subtype = _LIBSNDFILE[fmt]
    if fmt == "opus" and sample_rate not in _OPUS_RATES:
        clipped, sample_rate = np.clip(prepare_samples(clipped, sample_rate, 48_000), -1.0, 1.0), 48_000
    buffer = io.BytesIO()
    sf.write(buffer, clipped, sample_rate, format=container, subtype=subtype)
    return buffer.getvalue()


def _pcm16(samples: np.ndarray, sample_rate: int) -> bytes:
    """16-bit little-endian samples, quantized as the job's 16-bit files are (elementwise, so
    pieces quantized one by one join into exactly the whole answer's samples)."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(samples, -1.0, 1.0), sample_rate, format="RAW", subtype="PCM_16", endian="LITTLE")
    return buffer.getvalue()


def _streaming_wav_header(sample_rate: int) -> bytes:
    """A 16-bit mono WAV header whose sizes say "unknown" (0xFFFFFFFF), for a stream of PCM after it."""
    unknown = 0xFFFFFFFF
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, sample_rate * 2, 2, 16)
    return b"RIFF" + struct.pack("<I", unknown) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", unknown)


# --- the ASGI app --------------------------------------------------------------------------


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The whole request body, or an ApiError: 413 once it passes ``limit`` bytes (from the
    declared Content-Length before anything is read, else as the chunks arrive: nothing past
    the limit is kept), 408 if it has not all arrived within ``timeout_s`` seconds."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    chunks, size = [], 0
    while True:
        try:
            message = await asyncio.wait_for(request.receive(), max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise ApiError(408, f"the request body did not arrive within {timeout_s:g} s", code="request_timeout",
                           close=True) from None
        if message["type"] == "http.disconnect":
            raise ApiError(400, "the client disconnected before sending the whole body", code="client_disconnected")
        size += len(message.get("body", b""))
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(413, f"request body of {size} bytes is over this server's limit of {limit} bytes",
                    code="request_too_large", close=True)


def _replayed(request: Request, body: bytes) -> Request:
    """``request`` with its body already read: the app gets ``body`` in one message, then
    whatever the connection says next (a disconnect)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return await request.receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(request.scope, receive)


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string literal, escapes included


def json_depth(body: bytes) -> int:
    """How deeply arrays and objects nest in the JSON text ``body`` (0 for a scalar), counted
    without parsing: Python's parser recurses, so a deep body must be refused before it."""
    brackets = np.frombuffer(_JSON_STRING.sub(b'""', body), np.uint8)
    steps = np.isin(brackets, (ord("["), ord("{"))).astype(np.int32) - np.isin(brackets, (ord("]"), ord("}")))
    return int(np.cumsum(steps).max(initial=0))


def create_api(gateway: "Gateway") -> FastAPI:
    """The FastAPI app of one Gateway replica; every route answers through ``gateway``."""
    app = FastAPI(title="speech", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        # Unknown routes (404) and wrong methods (405).
        return ApiError(err.status_code, str(err.detail), code="invalid_request").response()

    def route(handler: Callable[[Request], Awaitable[Response]], *, public: bool = False, body_limit: int = 0):
        async def answer(request: Request) -> Response:
            return await gateway.answer(handler, request, public=public, body_limit=body_limit)

        return answer

    upload_limit = gateway.settings.max_upload_bytes + _FORM_OVERHEAD
    app.add_api_route("/health", route(gateway.health, public=True), methods=["GET"])
    app.add_api_route("/v1/models", route(gateway.list_models), methods=["GET"])
    app.add_api_route("/v1/audio/transcriptions", route(gateway.transcriptions, body_limit=upload_limit), methods=["POST"])
    app.add_api_route("/v1/audio/translations", route(gateway.translations, body_limit=upload_limit), methods=["POST"])
    app.add_api_route("/v1/audio/speech", route(gateway.speech, body_limit=_MAX_JSON_BYTES), methods=["POST"])

    async def realtime_session(websocket: WebSocket) -> None:
        # Defined here, not registered as the Gateway's method: Serve ships the deployment class
        # by value, and FastAPI could not resolve the method's annotations in the replica.
        await gateway.realtime(websocket)

    app.add_api_websocket_route("/v1/realtime", realtime_session)
    page.add_page(app, api_key_required=gateway._api_key is not None)
    return app


@serve.deployment(name=DEPLOYMENT, ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=256)
@serve.ingress()
class Gateway:
    """HTTP ingress replica. Args: the settings, and handles to the Transcriber and the
    Synthesizer deployments (None when the app serves no model of that kind)."""

    def __init__(self, settings: GatewaySettings, asr_handle: DeploymentHandle | None, tts_handle: DeploymentHandle | None):
        self.settings = settings
        self.catalog = Catalog(settings.models)
        self._asr = asr_handle
        self._tts = tts_handle
        self._api_key = None
        if settings.api_key_env is not None:
            self._api_key = os.environ.get(settings.api_key_env) or None
            if self._api_key is None:
                # Fail closed: a server told to require a key must not start without one.
                raise RuntimeError(f"api_key_env names {settings.api_key_env!r}, which is not set (or empty) on this replica")
        self._formats = speech_formats()
        self._created = int(time.time())

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_api(self)

    async def realtime(self, websocket: WebSocket) -> None:
        """``/v1/realtime``: one live transcription session (serve.realtime)."""
        models = [m for m in self.catalog.models if m.kind == "transcription"]
        names = {alias: m.name for m in models for alias in (m.source, m.name)}
        server = realtime.RealtimeServer(names, models[0].name if models else None, self._asr, self._api_key,
                                         self.settings.stream_options)
        await realtime.serve_session(websocket, server)

    async def answer(self, handler: Callable[[Request], Awaitable[Response]], request: Request, *, public: bool,
                     body_limit: int = 0) -> Response:
        """Run a route: check the API key, read the body (at most ``body_limit`` bytes; 0: the
        route takes none), map errors to JSON; a failure never stops the server."""
        try:
            if not public:
                self._authorize(request)
            if body_limit:
                body = await read_body(request, body_limit, self.settings.body_timeout_s)
                request = _replayed(request, body)
            return await handler(request)
        except ApiError as err:
            return err.response()
        except StarletteHTTPException as err:  # Starlette's own request parsing: the client's mistake
            return ApiError(err.status_code, str(err.detail), code="invalid_request").response()
        except (BackPressureError, DeploymentUnavailableError) as err:
            log.warning("%s %s: %s", request.method, request.url.path, err)
            return ApiError(503, "the model replicas are overloaded; retry later", type="server_error",
                            code="overloaded").response()
        except Exception:  # noqa: BLE001 - logged with its traceback; the client gets a 500
            log.exception("%s %s failed", request.method, request.url.path)
            return ApiError(500, "the server failed to handle the request; see its logs", type="server_error").response()

    def _authorize(self, request: Request) -> None:
        if self._api_key is None:
            return
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), self._api_key.encode()):
            raise ApiError(401, "missing or invalid API key (send 'Authorization: Bearer <key>')",
                           code="invalid_api_key")

    # -- routes --

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def list_models(self, request: Request) -> Response:
        # Served names only: where a model lives on the server's disk is none of a client's business.
        data = [
            {"id": m.name, "object": "model", "created": self._created, "owned_by": "speech", "kind": m.kind,
             "backend": m.backend}
            for m in self.catalog.models
        ]
        return JSONResponse({"object": "list", "data": data})

    async def transcriptions(self, request: Request) -> Response:
        return await self._recognize(request, "transcribe", TranscriptionFields)

    async def translations(self, request: Request) -> Response:
        return await self._recognize(request, "translate", TranslationFields)

    async def _recognize(self, request: Request, task: asr.Task, schema: type[TranslationFields]) -> Response:
        audio, filename, fields = await self._read_upload(request, schema)
        model = self.catalog.find(fields.model, "transcription", translating=task == "translate")
        if task == "translate" and not model.translates:
            raise ApiError(400, f"model {model.name!r} cannot translate ({model.backend} model; translation needs a "
                                "multilingual Whisper model)", param="model", code="unsupported_task")
        if model.backend != "whisper":
            # A CTC model decodes frame by frame: it has no temperature and takes no prompt.
            for name, given in (("temperature", fields.temperature != 0), ("prompt", bool(fields.prompt))):
                if given:
                    raise ApiError(400, f"{name}: model {model.name!r} is a {model.backend} model, which takes no {name}",
                                   param=name, code="invalid_value")
        language = getattr(fields, "language", None)
        granularities = getattr(fields, "timestamp_granularities", ["segment"])
        if "timestamp_granularities" in fields.model_fields_set and fields.response_format != "verbose_json":
            raise ApiError(400, "timestamp_granularities needs response_format 'verbose_json'",
                           param="timestamp_granularities", code="invalid_value")
        handle = self._asr.options(multiplexed_model_id=asr.model_key(model.name, task))
        result = await handle.transcribe.remote(asr.AsrRequest(audio, filename, language, fields.temperature, fields.prompt))
        if isinstance(result, Rejected):
            raise ApiError(400, result.message, param=result.param, code=result.code)
        return transcript_response(result, fields.response_format, granularities, task)

    async def _read_upload(self, request: Request, schema: type[TranslationFields]) -> tuple[bytes, str, Any]:
        """The uploaded file's bytes and name, and the validated form fields."""
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ApiError(415, "expected a multipart/form-data body with the audio in field 'file'",
                           code="unsupported_media_type")
        try:
            form = await request.form(max_files=1, max_fields=_MAX_FORM_FIELDS)
        except StarletteHTTPException as err:  # two files, too many fields, no or wrong boundary
            raise ApiError(400, f"malformed multipart/form-data body: {err.detail}", code="invalid_multipart") from None
        try:
            try:
                fields = schema.model_validate(_form_values(form))
            except ValidationError as err:
                raise _invalid(err) from err
            upload = form.get("file")
            if upload is None:
                raise ApiError(400, "missing required field 'file' (the audio to recognize)", param="file",
                               code="missing_field")
            if not isinstance(upload, UploadFile):
                raise ApiError(400, "field 'file' must be an uploaded file", param="file", code="invalid_value")
            filename = PurePosixPath(upload.filename or "upload").name or "upload"
            suffix = PurePosixPath(filename).suffix.lower()
            if suffix and suffix not in AUDIO_EXTENSIONS:
                raise ApiError(415, f"unsupported audio format {suffix!r}; supported: {', '.join(sorted(AUDIO_EXTENSIONS))}",
                               param="file", code="unsupported_media_type")
            audio = await upload.read()
        finally:
            await form.close()  # the upload's spooled temporary file
        if len(audio) > self.settings.max_upload_bytes:
            raise ApiError(413, f"uploaded file of {len(audio)} bytes is over this server's limit of "
                                f"{self.settings.max_upload_bytes} bytes", param="file", code="request_too_large")
        return audio, filename, fields

    async def speech(self, request: Request) -> Response:
        raw = await request.body()
        if json_depth(raw) > _MAX_JSON_DEPTH:
            raise ApiError(400, f"the JSON body nests deeper than {_MAX_JSON_DEPTH} levels", code="invalid_json")
        try:
            body = json.loads(raw)
        except ValueError as err:
            raise ApiError(400, f"the body is not valid JSON: {err}", code="invalid_json") from err
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object", code="invalid_json")
        try:
            fields = SpeechFields.model_validate(body)
        except ValidationError as err:
            raise _invalid(err) from err
        if fields.response_format not in self._formats:
            raise ApiError(400, f"response_format {fields.response_format!r} cannot be encoded on this server; "
                                f"available: {', '.join(self._formats)}", param="response_format", code="invalid_value")
        model = self.catalog.find(fields.model, "speech")
        handle = self._tts.options(multiplexed_model_id=model.name, stream=True)
        chunks = handle.synthesize.remote(tts.SpeechRequest(fields.input, fields.voice, fields.speed))
        first = await self._first_chunk(chunks)
        media_type = _MEDIA_TYPES[fields.response_format]
        headers = {"x-sample-rate": str(first.sample_rate)}
        if fields.stream_format == "audio":
            return StreamingResponse(self._stream(first, chunks, fields.response_format), media_type=media_type,
                                     headers=headers)
        pieces = [first] + [chunk async for chunk in chunks]
        samples = np.concatenate([p.samples for p in pieces])
        headers["x-batch-size"] = str(max(p.batch_size for p in pieces))
        return Response(encode_speech(samples, first.sample_rate, fields.response_format), media_type=media_type,
                        headers=headers)

    @staticmethod
    async def _first_chunk(chunks) -> tts.SpeechChunk:
        """The first piece; a rejection of the request comes instead of it, before any byte is sent."""
        first = await chunks.__anext__()
        if isinstance(first, Rejected):
            raise ApiError(400, first.message, param=first.param, code=first.code)
        return first

    @staticmethod
    async def _stream(first: tts.SpeechChunk, chunks, fmt: str) -> AsyncIterator[bytes]:
        """pcm and wav go out piece by piece; other formats are encoded once the text is done."""
        if fmt in ("pcm", "wav"):
            if fmt == "wav":
                yield _streaming_wav_header(first.sample_rate)
            yield _pcm16(first.samples, first.sample_rate)
            async for chunk in chunks:
                yield _pcm16(chunk.samples, chunk.sample_rate)
            return
        pieces = [first.samples] + [chunk.samples async for chunk in chunks]
        yield encode_speech(np.concatenate(pieces), first.sample_rate, fmt)
