"""Generate the small sample speech corpus committed under ``samples/``.

The corpus is synthetic but real speech: every clip is spoken by espeak-ng, so it can be
rebuilt anywhere the Debian package is installed, with no network and no licensing
question. Usage::

    python -m speech.testing.make_samples OUT_DIR

writes ``OUT_DIR/<lang>/<nnn>.flac`` (16 kHz, mono, 16-bit FLAC), one deliberately awkward
``OUT_DIR/misc/stereo_8k.wav`` (8 kHz, 2 channels, 16-bit PCM) that exercises resampling and
downmixing, ``OUT_DIR/manifest.jsonl`` with one JSON object per line, and ``OUT_DIR/en.jsonl``
listing every English clip, four of them (``en/004..007``) in no other manifest, without
``language`` (the model detects it)::

    {"id": "en/001", "path": "en/001.flac", "text": "...", "language": "en"}

``path`` is relative to the manifest's directory. ``language`` is the ISO 639-1 code.

Mandarin is spoken with espeak-ng's ``cmn-latn-pinyin`` voice: with the plain ``cmn`` voice
(espeak-ng 1.51, Debian) many characters are converted to pinyin and then read letter by
letter as English, tone digits included ("hen3" -> "hen three").
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

#: Sampling rate of the mono FLAC clips, in Hz.
SAMPLE_RATE = 16_000
#: The English clips (the manifest's and ENGLISH_EXTRA), without their language: what `make demo`
#: transcribes with the real Whisper base, which then detects the language.
ENGLISH_MANIFEST = "en.jsonl"
#: Every clip must last this long, in seconds (inclusive bounds).
MIN_SECONDS, MAX_SECONDS = 1.5, 6.0


@dataclass(frozen=True)
class Utterance:
    """One clip of the corpus.

    ``id`` doubles as the file's path without extension; ``voice`` is an espeak-ng voice name.
    """

    id: str
    text: str
    language: str
    voice: str


UTTERANCES: tuple[Utterance, ...] = (
    Utterance("en/001", "The quick brown fox jumps over the lazy dog.", "en", "en"),
    Utterance("en/002", "Please call Stella and ask her to bring these things from the store.", "en", "en"),
    Utterance("en/003", "It is twenty past seven on a rainy Tuesday morning.", "en", "en"),
    Utterance("ko/001", "안녕하세요, 만나서 반갑습니다.", "ko", "ko"),
    Utterance("ko/002", "오늘 날씨가 정말 좋네요.", "ko", "ko"),
    Utterance("ko/003", "저는 매일 아침에 커피를 마십니다.", "ko", "ko"),
    Utterance("zh/001", "你好，很高兴认识你。", "zh", "cmn-latn-pinyin"),
    Utterance("zh/002", "今天天气很好，我们去公园散步吧。", "zh", "cmn-latn-pinyin"),
    Utterance("zh/003", "我每天早上喝一杯咖啡。", "zh", "cmn-latn-pinyin"),
)

#: More English, listed in ``en.jsonl`` only (the tests' multilingual manifest stays as it is).
ENGLISH_EXTRA: tuple[Utterance, ...] = (
    Utterance("en/004", "Please turn off the lights when you leave the room.", "en", "en"),
    Utterance("en/005", "My brother bought a new bicycle last summer.", "en", "en"),
    Utterance("en/006", "The children played football in the park until it got dark.", "en", "en"),
    Utterance("en/007", "We will meet at the train station after lunch.", "en", "en"),
)

#: The stereo clip: same speech in both channels, the right one slightly quieter.
STEREO = Utterance("misc/stereo_8k", "This recording has two channels and a low sample rate.", "en", "en")
STEREO_RATE = 8_000
STEREO_GAINS = (1.0, 0.8)


def require_espeak() -> str:
    """Return the path of the ``espeak-ng`` executable, or exit with install instructions."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SystemExit(
            "espeak-ng is not on PATH; it is needed to synthesize the sample corpus.\n"
            "Install it with: apt-get update && apt-get install -y espeak-ng"
        )
    return exe


def synthesize(text: str, voice: str, *, espeak: str = "espeak-ng") -> tuple[np.ndarray, int]:
    """Speak ``text`` with espeak-ng.

    Returns ``(audio, rate)``: float32 samples in [-1, 1] of shape ``(n,)`` and espeak-ng's
    native sampling rate in Hz (22050 for its usual voices).
    """
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run([espeak, "-v", voice, "-w", str(wav), text], check=True, capture_output=True)
        audio, rate = sf.read(wav, dtype="float32", always_2d=False)
    if audio.ndim != 1 or audio.size == 0:
        raise RuntimeError(f"espeak-ng produced unexpected audio of shape {audio.shape} for {text!r}")
    return audio, rate


def resample(audio: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Resample 1-D float32 ``audio`` from ``rate`` to ``target_rate`` Hz, clipped to [-1, 1]."""
    if rate != target_rate:
        audio = soxr.resample(audio, rate, target_rate, quality="HQ")
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def _check_duration(utt: Utterance, n_samples: int, rate: int) -> None:
    seconds = n_samples / rate
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise RuntimeError(
            f"{utt.id} lasts {seconds:.2f} s, outside [{MIN_SECONDS}, {MAX_SECONDS}] s: shorten or lengthen its text"
        )


def _manifest_row(utt: Utterance, path: str) -> dict[str, str]:
    return {"id": utt.id, "path": path, "text": utt.text, "language": utt.language}


def make_samples(out_dir: str | Path) -> Path:
    """Write the corpus into ``out_dir`` (created if needed) and return the manifest's path.

    Existing clips of the same names are overwritten; other files are left alone.
    """
    espeak = require_espeak()
    out = Path(out_dir)
    rows = [_write_clip(out, utt, espeak) for utt in UTTERANCES]

    audio, rate = synthesize(STEREO.text, STEREO.voice, espeak=espeak)
    audio = resample(audio, rate, STEREO_RATE)
    _check_duration(STEREO, audio.size, STEREO_RATE)
    stereo = np.stack([audio * gain for gain in STEREO_GAINS], axis=1)  # (n, 2)
    rel = f"{STEREO.id}.wav"
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    sf.write(out / rel, stereo, STEREO_RATE, format="WAV", subtype="PCM_16")
    rows.append(_manifest_row(STEREO, rel))

    manifest = out / "manifest.jsonl"
    _write_manifest(manifest, rows)
    extra = [_write_clip(out, utt, espeak) for utt in ENGLISH_EXTRA]
    # Without the language column, so that Whisper detects each file's language (and says how sure it is).
    english = [{k: v for k, v in row.items() if k != "language"} for row in rows + extra if row["language"] == "en"]
    _write_manifest(out / ENGLISH_MANIFEST, english)
    return manifest


def _write_clip(out: Path, utt: Utterance, espeak: str) -> dict[str, str]:
    """One 16 kHz mono FLAC clip; its manifest row."""
    audio, rate = synthesize(utt.text, utt.voice, espeak=espeak)
    audio = resample(audio, rate, SAMPLE_RATE)
    _check_duration(utt, audio.size, SAMPLE_RATE)
    rel = f"{utt.id}.flac"
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    sf.write(out / rel, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return _manifest_row(utt, rel)


def _write_manifest(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m speech.testing.make_samples",
        description="Synthesize the sample speech corpus with espeak-ng.",
    )
    parser.add_argument("out_dir", type=Path, help="directory to write the clips and manifest.jsonl into")
    args = parser.parse_args(argv)
    manifest = make_samples(args.out_dir)
    print(f"wrote {manifest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
