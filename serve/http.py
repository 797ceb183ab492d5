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
model replicas are overloaded) with the same shape, and the server keeps serving. Responses
carry ``x-batch-size``: how many requests (ASR) or sentence pieces (TTS, the largest batch
among the answer's pieces) shared the model call that served this one. The wire formats
(errors, request fields, bodies, response encodings) are in :mod:`serve.wire`.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from ray import serve
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve import asr, page, realtime, tts
from serve.replica import Rejected
from serve.wire import (
    MEDIA_TYPES,
    ApiError,
    SpeechFields,
    TranscriptionFields,
    TranslationFields,
    encode_speech,
    form_values,
    invalid,
    json_depth,
    pcm16,
    read_body,
    replayed,
    speech_formats,
    streaming_wav_header,
    transcript_response,
)
from speech.audio import AUDIO_EXTENSIONS
from speech.options import StreamOptions

log = logging.getLogger(__name__)

DEPLOYMENT = "Gateway"
Kind = Literal["transcription", "speech"]

_FORM_OVERHEAD = 64 * 1024  # multipart envelope allowed on top of the upload limit, bytes
_MAX_FORM_FIELDS = 32  # text fields of an upload form (OpenAI's have under 10)
_MAX_JSON_BYTES = 1024 * 1024  # body of /v1/audio/speech
_MAX_JSON_DEPTH = 32  # nesting of arrays and objects in a JSON body (the speech body has 1)


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
    stream_options: StreamOptions = StreamOptions()  # noqa: RUF009 - frozen: one shared instance is safe
    body_timeout_s: float = 60.0  # a request body must arrive whole within this; else 408


# --- the ASGI app --------------------------------------------------------------------------


def create_api(gateway: Gateway) -> FastAPI:
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
                request = replayed(request, body)
            return await handler(request)
        except ApiError as err:
            return err.response()
        except StarletteHTTPException as err:  # Starlette's own request parsing: the client's mistake
            return ApiError(err.status_code, str(err.detail), code="invalid_request").response()
        except (BackPressureError, DeploymentUnavailableError) as err:
            log.warning("%s %s: %s", request.method, request.url.path, err)
            return ApiError(503, "the model replicas are overloaded; retry later", type="server_error",
                            code="overloaded").response()
        except Exception:  # logged with its traceback; the client gets a 500
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
                fields = schema.model_validate(form_values(form))
            except ValidationError as err:
                raise invalid(err) from err
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
            raise invalid(err) from err
        if fields.response_format not in self._formats:
            raise ApiError(400, f"response_format {fields.response_format!r} cannot be encoded on this server; "
                                f"available: {', '.join(self._formats)}", param="response_format", code="invalid_value")
        model = self.catalog.find(fields.model, "speech")
        handle = self._tts.options(multiplexed_model_id=model.name, stream=True)
        chunks = handle.synthesize.remote(tts.SpeechRequest(fields.input, fields.voice, fields.speed))
        first = await self._first_chunk(chunks)
        media_type = MEDIA_TYPES[fields.response_format]
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
                yield streaming_wav_header(first.sample_rate)
            yield pcm16(first.samples, first.sample_rate)
            async for chunk in chunks:
                yield pcm16(chunk.samples, chunk.sample_rate)
            return
        pieces = [first.samples] + [chunk.samples async for chunk in chunks]
        yield encode_speech(np.concatenate(pieces), first.sample_rate, fmt)
