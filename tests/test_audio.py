import os
import threading
import time
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
from conftest import silent_flac

from speech.audio import AudioDecodeError, AudioTooLong, decode, probe

RATE = 16000


def tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize(
    "suffix, fmt, subtype, rate",
    [
        (".wav", "WAV", "PCM_16", 16000),
        (".wav", "WAV", "PCM_U8", 8000),
        (".wav", "WAV", "PCM_32", 44100),
        (".wav", "WAV", "FLOAT", 22050),
        (".flac", "FLAC", "PCM_24", 48000),
        (".ogg", "OGG", "VORBIS", 32000),
        (".mp3", "MP3", "MPEG_LAYER_III", 24000),
    ],
)
def test_formats_decode_to_mono_at_target_rate(tmp_path, suffix, fmt, subtype, rate):
    path = tmp_path / f"a{suffix}"
    sf.write(path, tone(1.0, rate), rate, format=fmt, subtype=subtype)
    info = probe(str(path))
    assert info.sample_rate == rate
    audio = decode(str(path), RATE)
    assert audio.dtype == np.float32 and audio.ndim == 1
    # mp3/vorbis encoders add priming samples; PCM is exact.
    assert abs(len(audio) - RATE) <= (0.1 * RATE if fmt in ("MP3", "OGG") else 1)
    # A real resampler keeps the tone's level (naive decimation would alias or drop it).
    assert 0.3 < np.abs(audio[RATE // 4 : RATE // 2]).max() < 0.6


def test_multichannel_is_downmixed(tmp_path):
    left = tone(0.5, RATE)
    six = np.stack([left] * 3 + [np.zeros_like(left)] * 3, axis=1)
    sf.write(tmp_path / "six.wav", six, RATE)
    assert probe(str(tmp_path / "six.wav")).channels == 6
    audio = decode(str(tmp_path / "six.wav"), RATE)
    np.testing.assert_allclose(audio, left / 2, atol=1e-4)


def test_resampling_preserves_frequency(tmp_path):
    sf.write(tmp_path / "a.wav", tone(1.0, 44100, freq=1000.0), 44100)
    audio = decode(str(tmp_path / "a.wav"), RATE)
    spectrum = np.abs(np.fft.rfft(audio))
    peak_hz = np.argmax(spectrum) * RATE / len(audio)
    assert abs(peak_hz - 1000.0) < 2.0


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty file"),
        (b"this is not audio at all" * 10, "cannot"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "cannot"),  # truncated header
    ],
)
def test_bad_bytes_raise_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioDecodeError, match=message):
        decode(str(path), RATE)
    with pytest.raises(AudioDecodeError, match=message):
        probe(str(path))


def test_zero_samples(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), RATE)
    with pytest.raises(AudioDecodeError, match="no samples"):
        decode(str(tmp_path / "empty.wav"), RATE)


def test_nan_samples_are_rejected(tmp_path):
    data = tone(0.1, RATE)
    data[10] = np.nan
    sf.write(tmp_path / "nan.wav", data, RATE, subtype="FLOAT")
    with pytest.raises(AudioDecodeError, match="NaN"):
        decode(str(tmp_path / "nan.wav"), RATE)


def test_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        probe(str(tmp_path / "nope.wav"))


# --- bounded decoding, and files that are not audio files --------------------------------


def _peak_bytes(call) -> tuple[BaseException | None, int]:
    """Run ``call()`` under tracemalloc: (what it raised, peak bytes allocated meanwhile)."""
    tracemalloc.start()
    try:
        call()
        raised = None
    except Exception as err:  # noqa: BLE001 - returned to the test to check
        raised = err
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return raised, peak


def test_decoding_stops_at_max_seconds_before_allocating_the_audio():
    """Three hours of silence in 35 KB: refused from the header with nothing allocated, and
    block by block (never more than the bound) when the header gives no length."""
    bomb = silent_flac(3 * 3600)
    assert len(bomb) < 100_000 and probe(bomb).duration_s == 3 * 3600
    full_decode = 3 * 3600 * RATE * 4  # float32 at the model rate: 691 MB
    raised, peak = _peak_bytes(lambda: decode(bomb, RATE, max_seconds=7200))
    assert isinstance(raised, AudioTooLong) and "10800.0 s long, over max_duration_s (7200 s)" in str(raised)
    assert peak < 1_000_000, peak  # nothing decoded

    streamed = silent_flac(3 * 3600, with_length=False)
    assert probe(streamed).duration_s is None
    raised, peak = _peak_bytes(lambda: decode(streamed, RATE, max_seconds=60))
    assert isinstance(raised, AudioTooLong) and "longer than max_duration_s (60 s)" in str(raised)
    bound = 60 * 1000 * 4  # 60 s of float32 at the file's 1 kHz
    assert peak < 4 * bound + 2_000_000 < full_decode / 100, peak
    # Within the bound, a stream without a length decodes whole.
    short = silent_flac(600, with_length=False)
    assert len(decode(short, 1000, max_seconds=700)) == 600 * 1000


def _finishes(call, seconds: float = 20):
    """``call()`` in a thread; its result or exception, or a test failure if it does not return in time."""
    outcome = {}

    def run():
        try:
            outcome["value"] = call()
        except Exception as err:  # noqa: BLE001 - returned to the test to check
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still blocked after {seconds} s"
    return outcome.get("error", outcome.get("value"))


def test_fifos_devices_and_stalled_reads_are_errors_not_hangs(tmp_path, stalled_url):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)  # no writer: an ordinary open() would block forever
    for read in (probe, lambda p: decode(p, RATE)):
        error = _finishes(lambda read=read: read(str(fifo)))
        assert isinstance(error, AudioDecodeError) and str(error) == "not a regular file: FIFO"
        error = _finishes(lambda read=read: read("/dev/zero"))  # endless zeros, not an empty file
        assert isinstance(error, AudioDecodeError) and str(error) == "not a regular file: character device"
    started = time.monotonic()
    error = _finishes(lambda: probe(stalled_url, timeout_s=1))
    assert isinstance(error, AudioDecodeError) and "took longer than read_timeout_s (1 s)" in str(error)
    error = _finishes(lambda: decode(stalled_url, RATE, timeout_s=1))
    assert isinstance(error, AudioDecodeError) and "took longer than read_timeout_s (1 s)" in str(error)
    assert time.monotonic() - started < 10
