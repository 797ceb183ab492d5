"""English speech with known text, spoken by espeak-ng: what real-weight checks are scored on.

The sentences are Harvard sentences (IEEE Recommended Practice for Speech Quality
Measurements, 1969; public domain): phonetically balanced, 7-10 words each. espeak-ng's
``en-us`` voice speaks one in 2-3.5 s. Whisper base transcribes this voice with a word error
rate around 0.2-0.3 (its robotic prosody is far from Whisper's training data), which is why
checks compare it with another system on the same audio rather than with zero.

``python -m speech.testing.english OUT_DIR [COUNT]`` writes a corpus (see :func:`write_corpus`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from speech.testing.make_samples import SAMPLE_RATE, require_espeak, resample, synthesize

VOICE = "en-us"

SENTENCES: tuple[str, ...] = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
    "The small pup gnawed a hole in the sock.",
    "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.",
    "The swan dive was far short of perfect.",
    "The beauty of the view stunned the young boy.",
    "Two blue fish swam in the tank.",
    "Her purse was full of useless trash.",
    "The colt reared and threw the tall rider.",
    "It snowed, rained, and hailed the same morning.",
    "Read verse out loud for pleasure.",
    "Hoist the load to your left shoulder.",
    "Take the winding path to reach the lake.",
    "Note closely the size of the gas tank.",
    "Wipe the grease off his dirty face.",
    "Mend the coat before you go out.",
    "The wrist was badly strained and hung limp.",
    "The stray cat gave birth to kittens.",
    "The young girl gave no clear response.",
    "The meal was cooked before the bell rang.",
    "What joy there is in living.",
)


def speak(text: str, voice: str = VOICE) -> np.ndarray:
    """``text`` spoken by espeak-ng: float32 ``[n]`` at 16 kHz."""
    audio, rate = synthesize(text, voice, espeak=require_espeak())
    return resample(audio, rate, SAMPLE_RATE)


def join(clips: list[np.ndarray], pause_s: float = 0.4) -> np.ndarray:
    """Clips one after another with ``pause_s`` of silence between them (float32, 16 kHz)."""
    pause = np.zeros(int(pause_s * SAMPLE_RATE), np.float32)
    pieces = [piece for clip in clips for piece in (clip, pause)][:-1]
    return np.concatenate(pieces).astype(np.float32)


def write_corpus(out: str | Path, count: int, *, per_file: int | Sequence[int] = 1, voice: str = VOICE) -> Path:
    """Write ``count`` FLAC files of consecutive sentences (cycling through :data:`SENTENCES`)
    and ``manifest.jsonl`` (``id``, ``path``, ``text``, ``language``, ``duration_s``,
    ``sample_rate``); returns the manifest. 16 kHz mono 16-bit, like the committed samples.

    ``per_file``: sentences per file, or a sequence of counts used in turn (varied lengths).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = [per_file] if isinstance(per_file, int) else list(per_file)
    rows, next_sentence = [], 0
    for n in range(count):
        size = counts[n % len(counts)]
        texts = [SENTENCES[(next_sentence + k) % len(SENTENCES)] for k in range(size)]
        next_sentence += size
        name = f"{n:04d}.flac"
        audio = join([speak(t, voice) for t in texts])
        sf.write(out / name, audio, SAMPLE_RATE, subtype="PCM_16")
        rows.append({"id": f"{n:04d}", "path": name, "text": " ".join(texts), "language": "en",
                     "duration_s": len(audio) / SAMPLE_RATE, "sample_rate": SAMPLE_RATE})
    manifest = out / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return manifest


if __name__ == "__main__":
    print(write_corpus(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else len(SENTENCES)))
