"""OpenAI's audio API on the wire: errors, request fields and bodies, response encodings.

What :mod:`serve.http`'s routes read and write, without the routes: an :class:`ApiError` is
answered as OpenAI's ``{"error": {"message", "type", "param", "code"}}``; request fields are
pydantic models that forbid unknown fields; bodies are read whole within a size limit and a
deadline; transcripts are rendered as ``speech export`` writes them, speech encoded as asked.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import struct
from dataclasses import asdict
from typing import Any, Literal

import numpy as np
import soundfile as sf
from fastapi import Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.types import Message

from serve import asr
from speech.audio import encode_audio, prepare_samples
from speech.export import render

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


def invalid(err: ValidationError) -> ApiError:
    """A field validation failure -> 400 naming the fields (the first one as ``param``)."""
    problems = []
    for error in err.errors():
        field = ".".join(str(part) for part in error["loc"]) or "body"
        problems.append(f"{field}: {error['msg']}")
    first = err.errors()[0]["loc"] if err.errors() else ()
    return ApiError(400, "; ".join(problems), param=str(first[0]) if first else None, code="invalid_value")


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


def form_values(form: FormData) -> dict[str, Any]:
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


MEDIA_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg; codecs=opus", "wav": "audio/wav", "flac": "audio/flac", "pcm": "audio/pcm"}
_LIBSNDFILE = {"mp3": ("MP3", "MPEG_LAYER_III"), "opus": ("OGG", "OPUS")}


def speech_formats() -> list[str]:
    """The speech ``response_format`` values this machine's libsndfile can encode."""
    available = sf.available_formats()
    return [f for f in MEDIA_TYPES if f not in _LIBSNDFILE or _LIBSNDFILE[f][0] in available]


def encode_speech(samples: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """Mono float32 ``[n]`` -> the bytes of a ``fmt`` file.

    wav and flac are the synthesis job's own 16-bit files (same bytes); pcm is the same
    16-bit samples, little-endian, without a header; mp3 and opus are libsndfile's LAME and
    Opus encoders (opus at 48 kHz when the model's rate is not one Opus takes).
    """
    if fmt in ("wav", "flac"):
        return encode_audio(samples, sample_rate, fmt)
    if fmt == "pcm":
        return pcm16(samples, sample_rate)
    clipped = np.clip(samples, -1.0, 1.0)
    container, subtype = _LIBSNDFILE[fmt]
    if fmt == "opus" and sample_rate not in _OPUS_RATES:
        clipped, sample_rate = np.clip(prepare_samples(clipped, sample_rate, 48_000), -1.0, 1.0), 48_000
    buffer = io.BytesIO()
    sf.write(buffer, clipped, sample_rate, format=container, subtype=subtype)
    return buffer.getvalue()


def pcm16(samples: np.ndarray, sample_rate: int) -> bytes:
    """16-bit little-endian samples, quantized as the job's 16-bit files are (elementwise, so
    pieces quantized one by one join into exactly the whole answer's samples)."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(samples, -1.0, 1.0), sample_rate, format="RAW", subtype="PCM_16", endian="LITTLE")
    return buffer.getvalue()


def streaming_wav_header(sample_rate: int) -> bytes:
    """A 16-bit mono WAV header whose sizes say "unknown" (0xFFFFFFFF), for a stream of PCM after it."""
    unknown = 0xFFFFFFFF
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, sample_rate * 2, 2, 16)
    return (b"RIFF" + struct.pack("<I", unknown) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"data" + struct.pack("<I", unknown))


# --- request bodies ------------------------------------------------------------------------


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


def replayed(request: Request, body: bytes) -> Request:
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
