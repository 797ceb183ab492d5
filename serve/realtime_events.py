"""The wire format of OpenAI's Realtime API for transcription sessions: what we read and write.

Client events read (JSON text frames):

* ``session.update`` with ``session.type == "transcription"`` (the GA format) and the older
  ``transcription_session.update``; only the fields present change the session;
* ``input_audio_buffer.append`` (base64 of 16-bit little-endian mono PCM at 24 kHz),
  ``input_audio_buffer.commit``, ``input_audio_buffer.clear``.

Server events written: ``session.created``/``session.updated`` (``transcription_session.updated``
in answer to the older update), ``input_audio_buffer.speech_started``/``speech_stopped``/
``committed``/``cleared``, ``conversation.item.input_audio_transcription.delta``/``completed``/
``failed``, and ``error``, each shaped as the ``openai`` client's own models say (the tests
validate them against those models).

Settings this server cannot honour (another audio format, semantic VAD, noise reduction, a
prompt, log probabilities) are refused with an ``error`` naming the field, never ignored.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from speech.asr.live import TurnDetection

#: The only input format: 16-bit PCM at 24 kHz, as OpenAI's API specifies it.
INPUT_RATE = 24_000
_GA_FORMAT = {"type": "audio/pcm", "rate": INPUT_RATE}
_BETA_FORMAT = "pcm16"


class ProtocolError(Exception):
    """A client event the session answers with an ``error`` event (the connection stays open)."""

    def __init__(self, code: str, message: str, *, param: str | None = None):
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


@dataclass(frozen=True)
class SessionConfig:
    """A transcription session's settings."""

    model: str  # served model name
    language: str | None = None
    # None: the client commits turns.
    turn_detection: TurnDetection | None = TurnDetection()  # noqa: RUF009 - frozen: one shared instance is safe


# --- client events -----------------------------------------------------------------------------


class _Fields(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Transcription(_Fields):
    model: str | None = None
    language: str | None = Field(None, max_length=32)
    prompt: str | None = None


class _ServerVad(_Fields):
    type: Literal["server_vad"] = "server_vad"
    threshold: float = Field(0.5, gt=0, lt=1)
    prefix_padding_ms: int = Field(300, ge=0, le=10_000)
    silence_duration_ms: int = Field(500, ge=0, le=10_000)
    # Conversation sessions only (a transcription session creates no responses): null or false.
    create_response: Literal[False] | None = None
    interrupt_response: Literal[False] | None = None


class _GaInput(_Fields):
    format: dict[str, Any] | None = None
    transcription: _Transcription | None = None
    turn_detection: dict[str, Any] | None = None
    noise_reduction: None = None  # not supported: only null


class _GaAudio(_Fields):
    input: _GaInput | None = None


class _GaSession(_Fields):
    type: str
    audio: _GaAudio | None = None
    include: list[str] | None = None


class _BetaSession(_Fields):
    input_audio_format: str | None = None
    input_audio_transcription: _Transcription | None = None
    turn_detection: dict[str, Any] | None = None
    input_audio_noise_reduction: None = None
    include: list[str] | None = None
    modalities: list[Literal["text"]] | None = None


def session_update(event: dict[str, Any], current: SessionConfig) -> SessionConfig:
    """The settings after a ``session.update`` or ``transcription_session.update`` event.

    Raises ``ProtocolError`` naming the first field this server cannot take; the session's
    settings are then unchanged.
    """
    beta = event.get("type") == "transcription_session.update"
    session = event.get("session")
    if not isinstance(session, dict):
        raise ProtocolError("invalid_value", "session: expected an object", param="session")
    try:
        if beta:
            parsed = _BetaSession.model_validate(session)
            audio_format, transcription = parsed.input_audio_format, parsed.input_audio_transcription
            fields, vad = parsed.model_fields_set, parsed.turn_detection
            has_vad, has_format = "turn_detection" in fields, "input_audio_format" in fields
        else:
            parsed = _GaSession.model_validate(session)
            if parsed.type != "transcription":
                raise ProtocolError("unsupported_session_type", f"session.type {parsed.type!r}: this server offers "
                                    "transcription sessions only ('transcription')", param="session.type")
            audio = parsed.audio.input if parsed.audio and parsed.audio.input else _GaInput()
            audio_format, transcription, vad = audio.format, audio.transcription, audio.turn_detection
            has_vad, has_format = "turn_detection" in audio.model_fields_set, "format" in audio.model_fields_set
    except ValidationError as err:
        raise _invalid(err, "session") from err
    if parsed.include:
        raise ProtocolError("invalid_value", f"include {parsed.include}: log probabilities are not supported by this "
                            "server's models", param="session.include")
    if has_format:
        _check_format(audio_format, beta)
    config = current
    if transcription is not None:
        if transcription.prompt:
            raise ProtocolError("invalid_value", "prompt: not supported by this server's models",
                                param=_path(beta, "transcription.prompt"))
        given = transcription.model_fields_set
        if "model" in given:
            config = replace(config, model=transcription.model or config.model)
        if "language" in given:
            config = replace(config, language=transcription.language or None)
    if has_vad:
        config = replace(config, turn_detection=_turn_detection(vad, _path(beta, "turn_detection")))
    return config


def _check_format(audio_format: Any, beta: bool) -> None:
    expected = _BETA_FORMAT if beta else _GA_FORMAT
    given = (audio_format or _BETA_FORMAT) if beta else {**_GA_FORMAT, **(audio_format or {})}
    if given != expected:
        raise ProtocolError("unsupported_audio_format", f"audio format {audio_format!r} is not supported; send "
                            f"16-bit mono PCM at 24 kHz ({expected!r})", param=_path(beta, "format"))


def _turn_detection(value: dict[str, Any] | None, param: str) -> TurnDetection | None:
    if value is None:
        return None
    if value.get("type", "server_vad") != "server_vad":
        raise ProtocolError("invalid_value", f"turn_detection.type {value.get('type')!r}: only 'server_vad' (or "
                            "turn_detection null, the client commits) is supported", param=f"{param}.type")
    try:
        vad = _ServerVad.model_validate(value)
    except ValidationError as err:
        raise _invalid(err, param) from err
    return TurnDetection(vad.threshold, vad.prefix_padding_ms, vad.silence_duration_ms)


def _path(beta: bool, field: str) -> str:
    if beta:
        return {"transcription.prompt": "session.input_audio_transcription.prompt",
                "turn_detection": "session.turn_detection", "format": "session.input_audio_format"}[field]
    return f"session.audio.input.{field}"


def _invalid(err: ValidationError, prefix: str) -> ProtocolError:
    problems = [f"{'.'.join([prefix, *map(str, e['loc'])])}: {e['msg']}" for e in err.errors()]
    first = err.errors()[0]["loc"] if err.errors() else ()
    return ProtocolError("invalid_value", "; ".join(problems), param=".".join([prefix, *map(str, first)]))


# --- server events -----------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    """An id in OpenAI's style: ``event_...``, ``item_...``."""
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": new_id("event"), **fields}


def error(code: str, message: str, *, param: str | None = None, client_event: str | None = None,
          kind: str = "invalid_request_error") -> dict[str, Any]:
    return event("error", error={"type": kind, "code": code, "message": message, "param": param,
                                 "event_id": client_event})


def session_object(config: SessionConfig) -> dict[str, Any]:
    """The GA transcription session object of ``session.created`` and ``session.updated``."""
    return {
        "type": "transcription",
        "audio": {"input": {
            "format": dict(_GA_FORMAT),
            "transcription": {"model": config.model, "language": config.language},
            "turn_detection": _vad_object(config.turn_detection),
            "noise_reduction": None,
        }},
        "include": None,
    }


def beta_session_object(config: SessionConfig) -> dict[str, Any]:
    """The older transcription session object of ``transcription_session.updated``."""
    return {
        "input_audio_format": _BETA_FORMAT,
        "input_audio_transcription": {"model": config.model, "language": config.language},
        "turn_detection": _vad_object(config.turn_detection),
        "input_audio_noise_reduction": None,
        "modalities": ["text"],
    }


def _vad_object(vad: TurnDetection | None) -> dict[str, Any] | None:
    if vad is None:
        return None
    return {"type": "server_vad", "threshold": vad.threshold, "prefix_padding_ms": vad.prefix_padding_ms,
            "silence_duration_ms": vad.silence_duration_ms}
