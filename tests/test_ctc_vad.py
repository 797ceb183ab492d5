"""VAD for the CTC backend: silence skipped, words on the file's timeline, spans decoded apart."""

import json

import numpy as np
import pytest
from conftest import SAMPLES

from speech.asr.ctc import CtcFrontEnd, CtcRecognizer
from speech.audio import decode

RATE = 16000


@pytest.fixture(scope="module")
def models(checkpoints):
    path = str(checkpoints["ctc-xlsr"])
    return CtcFrontEnd(path, vad=True), CtcFrontEnd(path), CtcRecognizer(path)


def test_vad_windows_skip_silence_and_map_words_back(models):
    vad_front, _plain_front, recognizer = models
    rows = [json.loads(line) for line in (SAMPLES / "manifest.jsonl").read_text().splitlines()]
    a, b = (decode(str(SAMPLES / rows[i]["path"]), RATE) for i in (0, 3))
    silence = lambda s: np.zeros(int(s * RATE), np.float32)  # noqa: E731 - a one-line local helper
    audio = np.concatenate([silence(1.0), a, silence(2.0), b, silence(1.0)])
    b_start = (RATE + len(a) + 2 * RATE) / RATE

    windows = vad_front.windows(audio)
    assert len(windows) == 2
    assert abs(windows[0].offset / RATE - 1.0) < 0.5 and abs(windows[1].offset / RATE - b_start) < 0.5
    transcript = recognizer.transcribe([windows])[0]

    # Each span decoded on its own gives the same words: the delimiter keeps spans apart.
    alone = [recognizer.transcribe([[w]])[0] for w in windows]
    assert transcript.text == " ".join(t.text for t in alone if t.text)
    # Word times sit on the file's timeline, inside the speech, never in the 2 s pause.
    gap = ((RATE + len(a)) / RATE + 0.3, b_start - 0.3)
    for word in transcript.words:
        assert 0.5 <= word.start < word.end <= len(audio) / RATE
        assert not (gap[0] < word.start < gap[1]), word
    # The model ran on speech only, not on the 4 s of silence.
    assert transcript.computed_samples < len(audio) - 3 * RATE


def test_vad_on_silence_gives_no_windows_and_empty_text(models):
    vad_front, _, recognizer = models
    windows = vad_front.windows(np.zeros(3 * RATE, np.float32))
    assert windows == []
    assert recognizer.transcribe([windows])[0].text == ""
