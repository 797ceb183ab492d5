"""What a live transcription emits and takes: its events, its protocol error, server VAD settings.

The vocabulary shared by :class:`speech.asr.live.LiveTranscription` (which produces the events)
and its callers (``serve/realtime.py`` turns them into OpenAI realtime events). Event times are
seconds of the session, from its first sample.
"""

from __future__ import annotations

from dataclasses import dataclass

#: A client's commit needs at least this much audio (OpenAI's own minimum), seconds.
MIN_COMMIT_S = 0.1


class LiveError(ValueError):
    """A request the stream cannot take; ``code`` names the reason for protocol error events."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class TurnDetection:
    """Server VAD settings, OpenAI's names and defaults."""

    threshold: float = 0.5  # speech starts at this probability and ends below threshold - 0.15
    prefix_padding_ms: int = 300  # audio kept before the first speech frame
    silence_duration_ms: int = 500  # quiet that ends a turn (part of the turn)


# --- events (times in seconds of the stream, from its first sample) ---------------------------


@dataclass(frozen=True)
class SpeechStarted:
    turn: int
    start_s: float  # where the turn starts, prefix padding included


@dataclass(frozen=True)
class SpeechStopped:
    turn: int
    end_s: float  # where the turn ends, the closing silence included


@dataclass(frozen=True)
class Committed:
    turn: int  # closed: its completed text follows


@dataclass(frozen=True)
class Delta:
    turn: int
    text: str  # partial text to append to the turn's earlier deltas


@dataclass(frozen=True)
class Completed:
    turn: int
    text: str
    audio_s: float  # the turn's length


@dataclass(frozen=True)
class Failed:
    turn: int  # its completed text could not be computed (the model call failed)


Event = SpeechStarted | SpeechStopped | Committed | Delta | Completed | Failed
