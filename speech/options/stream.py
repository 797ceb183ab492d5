"""Options of live transcription (``speech serve``'s ``stream_options``)."""

from __future__ import annotations

from pydantic import Field, model_validator

from speech.options.base import Options


class StreamOptions(Options):
    """Live transcription (``speech serve``'s ``stream_options``; see speech.asr.live).

    CTC models decode a turn incrementally: each step runs the network on ``ctc_step_s`` or
    more of new audio plus ``ctc_context_s`` before it, and emits the frames that have
    ``ctc_lookahead_s`` of audio after them. A step therefore costs about
    ``(context + step + lookahead) / step`` times the audio it adds, whatever the turn's length.
    Whisper re-decodes the open turn for partial text and decodes it once more when it closes.
    """

    ctc_context_s: float = Field(1.0, ge=0)  # audio before the new audio that each step re-reads
    ctc_lookahead_s: float = Field(0.2, ge=0)  # frames are emitted once this much audio follows them
    ctc_step_s: float = Field(0.2, gt=0)  # a step waits until it can emit this much more audio (a turn's first: any)
    # CTC: the completed text comes from one more pass over the whole turn (its text then equals
    # the offline transcript of the turn's audio, whose normalization is the whole turn's);
    # false: it is the streamed frames' text (no extra pass, per-window normalization).
    final_pass: bool = True
    # Whisper: re-decode the open turn for partial text at most once per this much new audio;
    # None: no partials, only the text of each closed turn.
    partial_interval_s: float | None = Field(1.0, gt=0)
    max_turn_s: float = Field(30.0, gt=0)  # a turn this long is closed (committed) there
    max_session_s: float = Field(3600.0, gt=0)  # audio one session may send; more is refused

    @model_validator(mode="after")
    def _consistent(self) -> StreamOptions:
        if self.max_turn_s > self.max_session_s:
            raise ValueError(f"max_turn_s ({self.max_turn_s}) must not exceed max_session_s ({self.max_session_s})")
        return self
