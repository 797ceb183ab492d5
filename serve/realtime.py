"""``/v1/realtime?intent=transcription``: live transcription over a WebSocket, OpenAI's Realtime API.

One :class:`RealtimeSession` per connection, on the Gateway replica that accepted it. It reads
client events (:mod:`serve.realtime_events`), turns the 24 kHz PCM chunks into the model's rate
(:class:`speech.audio.StreamResampler`) and feeds a :class:`speech.asr.live.LiveTranscription`,
the session's state machine. A worker task sends the steps that state machine asks for to the
Transcriber deployment (``Transcriber.stream``, batched with other sessions' steps on the same
model replicas as ``/v1/audio/transcriptions``) one at a time, and writes the events each answer
brings. Audio keeps being read while a step runs; the next step takes all of it.

The API key (when the server has one) comes as ``Authorization: Bearer <key>``, or, from a
browser that cannot set headers, as the WebSocket subprotocol ``openai-insecure-api-key.<key>``
next to ``realtime`` (OpenAI's convention). A client mistake gets an ``error`` event and the
session goes on; only a missing key or another intent than transcription closes it (code 1008).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from ray.serve.handle import DeploymentHandle
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from serve import asr
from serve.realtime_events import (
    INPUT_RATE,
    ProtocolError,
    SessionConfig,
    beta_session_object,
    error,
    event,
    new_id,
    session_object,
    session_update,
)
from serve.replica import Rejected
from speech.asr.live import Committed, Completed, Delta, Event, Failed, LiveError, LiveTranscription, SpeechStarted, SpeechStopped
from speech.audio import AudioDecodeError, StreamResampler, pcm16_samples
from speech.options import StreamOptions

log = logging.getLogger(__name__)

_KEY_PROTOCOL = "openai-insecure-api-key."
_POLICY_VIOLATION = 1008  # WebSocket close code
_RETRY_AFTER_FAILURE_S = 1.0  # pause after a failed model call, so a broken replica is not hammered


@dataclass(frozen=True)
class RealtimeServer:
    """What every session of one Gateway replica shares."""

    models: dict[str, str]  # what a session may call a transcription model (name or source) -> its name
    default: str | None  # the default model's name; None: no transcription models
    transcriber: DeploymentHandle | None
    api_key: str | None
    options: StreamOptions

    def model(self, requested: str) -> str:
        """The served name of ``requested``, or a ProtocolError listing the names."""
        if requested in self.models:
            return self.models[requested]
        names = ", ".join(sorted(set(self.models.values())))
        raise ProtocolError("model_not_found", f"model {requested!r} is not a transcription model of this server; "
                            f"choose from: {names}", param="session.audio.input.transcription.model")


async def serve_session(websocket: WebSocket, server: RealtimeServer) -> None:
    """Accept the connection, check it, and run its session until the client leaves."""
    offered = list(websocket.scope.get("subprotocols") or [])
    await websocket.accept(subprotocol="realtime" if "realtime" in offered else None)
    refusal = _refusal(websocket, offered, server)
    if refusal is not None:
        await websocket.send_text(json.dumps(refusal))
        await websocket.close(code=_POLICY_VIOLATION)
        return
    await RealtimeSession(websocket, server).run()


def _refusal(websocket: WebSocket, offered: list[str], server: RealtimeServer) -> dict[str, Any] | None:
    """The error event a connection is closed with, or None to go on."""
    if server.api_key is not None:
        scheme, _, key = websocket.headers.get("authorization", "").partition(" ")
        key = key.strip() if scheme.lower() == "bearer" else ""
        key = key or next((p[len(_KEY_PROTOCOL):] for p in offered if p.startswith(_KEY_PROTOCOL)), "")
        if not hmac.compare_digest(key.encode(), server.api_key.encode()):
            return error("invalid_api_key", "missing or invalid API key (send 'Authorization: Bearer <key>', or from a "
                         "browser the subprotocol 'openai-insecure-api-key.<key>')")
    intent = websocket.query_params.get("intent")
    if intent != "transcription":
        return error("invalid_intent", f"intent {intent!r}: this server offers transcription sessions only; connect to "
                     "/v1/realtime?intent=transcription", param="intent")
    if server.transcriber is None or server.default is None:
        return error("model_not_found", "this server has no transcription models", param="model")
    return None


class RealtimeSession:
    """One connection's transcription session (see the module docstring)."""

    def __init__(self, websocket: WebSocket, server: RealtimeServer):
        self.ws, self.server = websocket, server
        self.config = SessionConfig(model=server.default)
        self.live: LiveTranscription | None = None  # opened on the first audio or update
        self.resampler: StreamResampler | None = None
        self.streamed_s = 0.0  # audio of earlier LiveTranscriptions (a model change starts a new one)
        self.items: dict[int, str] = {}  # turn -> item id
        self.previous_item: str | None = None
        self._wake = asyncio.Event()
        self._send_lock = asyncio.Lock()

    async def run(self) -> None:
        await self.send([event("session.created", session=session_object(self.config))])
        worker = asyncio.create_task(self._work())
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                await self._handle(message)
        except WebSocketDisconnect:
            pass  # the client left
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)

    # -- client events ---------------------------------------------------------------------

    async def _handle(self, message: dict[str, Any]) -> None:
        client_event = None
        try:
            if message.get("text") is None:
                raise ProtocolError("invalid_event", "expected JSON text frames; binary frames are not read")
            try:
                data = json.loads(message["text"])
            except ValueError as err:
                raise ProtocolError("invalid_json", f"the event is not valid JSON: {err}") from err
            if not isinstance(data, dict) or not isinstance(data.get("type"), str):
                raise ProtocolError("invalid_event", "an event must be a JSON object with a string 'type'", param="type")
            client_event = data.get("event_id") if isinstance(data.get("event_id"), str) else None
            await self._dispatch(data)
        except ProtocolError as err:
            await self.send([error(err.code, err.message, param=err.param, client_event=client_event)])
        except LiveError as err:
            await self.send([error(err.code, str(err), client_event=client_event)])
        except WebSocketDisconnect:
            raise
        except Exception:  # logged with its traceback; the client gets a server_error and goes on
            log.exception("realtime event failed")
            await self.send([error("server_error", "the server failed to handle the event; see its logs",
                                   client_event=client_event, kind="server_error")])

    async def _dispatch(self, data: dict[str, Any]) -> None:
        kind = data["type"]
        if kind in ("session.update", "transcription_session.update"):
            await self._update(session_update(data, self.config), beta=kind != "session.update")
        elif kind == "input_audio_buffer.append":
            await self._append(data.get("audio"))
        elif kind == "input_audio_buffer.commit":
            live = await self._open()
            events = live.append(self.resampler.flush())  # the turn gets the resampler's last samples
            await self.send(self._events(events + live.commit()))
            self._wake.set()
        elif kind == "input_audio_buffer.clear":
            if self.live is not None:
                self.live.clear()
                self.resampler.flush()  # its samples belonged to the dropped audio
            await self.send([event("input_audio_buffer.cleared")])
        else:
            raise ProtocolError("unknown_event", f"unsupported event type {kind!r}; a transcription session takes "
                                "session.update, input_audio_buffer.append, .commit and .clear", param="type")

    async def _update(self, config: SessionConfig, *, beta: bool) -> None:
        config = replace(config, model=self.server.model(config.model))
        if config != self.config or self.live is None:
            if self.live is not None and self.live.busy:
                raise ProtocolError("session_busy", "the session cannot change its model, language or turn detection "
                                    "while a turn is open or being transcribed; commit or clear first", param="session")
            await self._open(config)
        if beta:
            await self.send([event("transcription_session.updated", session=beta_session_object(self.config))])
        else:
            await self.send([event("session.updated", session=session_object(self.config))])

    async def _open(self, config: SessionConfig | None = None) -> LiveTranscription:
        """The session's live transcription; a new one for ``config`` (checked with the model's replica)."""
        if config is None:
            if self.live is not None:
                return self.live
            config = self.config
        answer = await self._handle_for(config.model).open_stream.remote(config.language)
        if isinstance(answer, Rejected):
            raise ProtocolError("invalid_value", answer.message, param="session.audio.input.transcription.language")
        if self.live is not None:
            self.streamed_s = self.live.stream_s
        self.config = config
        self.live = LiveTranscription(answer.backend, answer.sample_rate, self.server.options,
                                      turn_detection=config.turn_detection, language=config.language,
                                      start_s=self.streamed_s)
        self.resampler = StreamResampler(INPUT_RATE, answer.sample_rate)
        return self.live

    async def _append(self, audio: Any) -> None:
        if not isinstance(audio, str):
            raise ProtocolError("invalid_value", "audio: expected a base64 string", param="audio")
        try:
            pcm = base64.b64decode(audio, validate=True)
            samples = pcm16_samples(pcm)
        except binascii.Error as err:
            raise ProtocolError("invalid_base64", f"audio is not valid base64: {err}", param="audio") from err
        except AudioDecodeError as err:
            raise ProtocolError("invalid_audio", f"audio: {err}", param="audio") from err
        live = await self._open()
        live.check_room(len(samples) / INPUT_RATE)  # before the resampler takes any of it
        await self.send(self._events(live.append(self.resampler.push(samples))))
        self._wake.set()

    # -- model steps -------------------------------------------------------------------------

    async def _work(self) -> None:
        """Send the live transcription's steps to the Transcriber, one at a time, and their events out."""
        while True:
            live = self.live
            work = live.next_work() if live is not None else None
            if work is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                output = await self._handle_for(self.config.model).stream.remote(work)
                events = self._events(live.apply(output))
            except Exception as err:  # the session goes on; the client is told
                log.warning("live transcription step failed: %s: %s", type(err).__name__, err, exc_info=True)
                events = self._events(live.abandon())
                await self.send([error("server_error", f"a transcription step failed ({type(err).__name__}); "
                                       "the session goes on with the next audio", kind="server_error"), *events])
                await asyncio.sleep(_RETRY_AFTER_FAILURE_S)
                continue
            await self.send(events)

    def _handle_for(self, model: str) -> DeploymentHandle:
        return self.server.transcriber.options(multiplexed_model_id=asr.model_key(model, "transcribe"))

    # -- server events -----------------------------------------------------------------------

    def _events(self, events: Iterable[Event]) -> list[dict[str, Any]]:
        """Live transcription events as Realtime API server events."""
        out = []
        for e in events:
            item = self._item(e.turn)
            if isinstance(e, SpeechStarted):
                out.append(event("input_audio_buffer.speech_started", audio_start_ms=round(1000 * e.start_s), item_id=item))
            elif isinstance(e, SpeechStopped):
                out.append(event("input_audio_buffer.speech_stopped", audio_end_ms=round(1000 * e.end_s), item_id=item))
            elif isinstance(e, Committed):
                out.append(event("input_audio_buffer.committed", item_id=item, previous_item_id=self.previous_item))
                self.previous_item = item
            elif isinstance(e, Delta):
                out.append(event("conversation.item.input_audio_transcription.delta", item_id=item, content_index=0,
                                 delta=e.text))
            elif isinstance(e, Completed):
                out.append(event("conversation.item.input_audio_transcription.completed", item_id=item, content_index=0,
                                 transcript=e.text, usage={"type": "duration", "seconds": round(e.audio_s, 3)}))
                del self.items[e.turn]
            elif isinstance(e, Failed):
                out.append(event("conversation.item.input_audio_transcription.failed", item_id=item, content_index=0,
                                 error={"type": "server_error", "code": "transcription_failed",
                                        "message": "the model call for this turn failed; see the server's logs"}))
                del self.items[e.turn]
        return out

    def _item(self, turn: int) -> str:
        if turn not in self.items:
            self.items[turn] = new_id("item")
        return self.items[turn]

    async def send(self, events: list[dict[str, Any]]) -> None:
        async with self._send_lock:
            for e in events:
                if self.ws.application_state != WebSocketState.CONNECTED:
                    return
                await self.ws.send_text(json.dumps(e))
