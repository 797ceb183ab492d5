"""A live transcription driven in this process: the stream's model work run on a local model.

What ``serve/realtime.py`` does over a Serve replica, without Ray: the tests' and notebooks'
way to watch a stream's events for a clip.
"""

from __future__ import annotations

import numpy as np

from speech.asr.live import LiveTranscription
from speech.asr.live_events import Event, TurnDetection
from speech.asr.streaming import StreamingModel
from speech.options import StreamOptions


def transcribe_live(model: StreamingModel, backend: str, audio: np.ndarray, options: StreamOptions, *,
                    chunk_s: float = 0.1, turn_detection: TurnDetection | None = None,
                    language: str | None = None) -> list[Event]:
    """Stream ``audio`` (mono float32 at ``model.sample_rate``) through a live transcription
    in ``chunk_s`` pieces, doing the work in this process; the events in order.

    Each piece's work runs before the next piece is appended (a model faster than real time);
    at the end an open turn is committed, as a client would.
    """
    live = LiveTranscription(backend, model.sample_rate, options, turn_detection=turn_detection, language=language)
    chunk = max(1, round(chunk_s * model.sample_rate))
    events: list[Event] = []
    for start in range(0, len(audio), chunk):
        events += live.append(audio[start : start + chunk])
        events += _drain(live, model)
    events += live.finish()
    return events + _drain(live, model)


def _drain(live: LiveTranscription, model: StreamingModel) -> list[Event]:
    events: list[Event] = []
    while (work := live.next_work()) is not None:
        events += live.apply(model.run([work])[0])
    return events
