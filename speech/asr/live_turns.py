"""One turn of a live stream: its state, and how its partial text grows.

Partial text is append-only: a :class:`Delta` extends what the turn released before.
CTC steps give the turn's text so far and the part extending the released text is the delta
(:func:`release`); Whisper re-decodes the open turn and releases the words two consecutive
decodes agree on (:func:`agree`, the LocalAgreement-2 policy of Macháček et al., 2023,
"Turning Whisper into Real-Time Transcription System").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from speech.asr.live_events import Delta, Event


@dataclass
class Turn:
    """A turn's place in the stream (stream samples at the model's rate) and its text so far."""

    id: int
    start: int  # stream sample of its first sample
    end: int | None = None  # one past its last; None while open
    stepped_to: int = 0  # turn samples its last partial step could emit (CTC) or decoded (Whisper)
    text: str = ""  # partial text released so far (its deltas joined)
    # CTC incremental decoding
    path: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # greedy ids emitted
    keep_from: int = 0  # turn sample where the next window starts
    # Whisper partials (LocalAgreement)
    hypothesis: list[str] | None = None  # words of the last decode
    released: list[str] = field(default_factory=list)  # words released as deltas
    final_asked: bool = False



def release(turn: Turn, text: str) -> list[Event]:
    """CTC: ``text`` is the turn's text so far; what extends the released text is a delta."""
    if len(text) > len(turn.text) and text.startswith(turn.text):
        delta, turn.text = text[len(turn.text) :], text
        return [Delta(turn.id, delta)]
    return []


def agree(turn: Turn, text: str) -> list[Event]:
    """Whisper: release the words this decode (``text``) and the previous one agree on (LocalAgreement-2)."""
    words, previous, turn.hypothesis = text.split(), turn.hypothesis, text.split()
    if previous is None:
        return []
    agreed = 0
    while agreed < min(len(words), len(previous)) and words[agreed] == previous[agreed]:
        agreed += 1
    done = len(turn.released)
    if agreed <= done or words[:done] != turn.released:
        return []
    delta = (" " if done else "") + " ".join(words[done:agreed])
    turn.released, turn.text = words[:agreed], turn.text + delta
    return [Delta(turn.id, delta)]
