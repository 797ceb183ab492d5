"""Audio I/O: the one place bytes become samples.

Every path in the project (batch jobs, HTTP serving, tests) reads audio through
:func:`probe` (header only, cheap) and :func:`decode` (full decode to mono float32
at the model's rate). Files are opened through fsspec, so ``s3://``, ``gs://`` and
other URLs work wherever the matching fsspec implementation is installed.

Live audio (a realtime session's raw PCM chunks) goes through :func:`pcm16_samples` and a
:class:`StreamResampler`, whose output equals :func:`prepare_samples` of the whole stream.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import fsspec
import numpy as np
import soundfile as sf
import soxr

#: soxr's quality for every resampling in the project (its "high quality" preset).
_QUALITY = "HQ"

#: File extensions treated as audio when a directory or glob is expanded.
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au"})


class AudioDecodeError(ValueError):
    """The input is not audio this project can use; the message says why, for the user."""


@dataclass(frozen=True)
class AudioInfo:
    """What a file header says, without decoding the samples."""

    sample_rate: int  # Hz
    channels: int
    num_frames: int  # samples per channel

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.sample_rate


def read_bytes(path: str) -> bytes:
    """All bytes of a local path or fsspec URL."""
    with fsspec.open(path, "rb") as f:
        return f.read()


def probe(path: str) -> AudioInfo:
    """Read only the header of ``path`` (local or fsspec URL).

    Raises:
        AudioDecodeError: empty file, or a header libsndfile cannot parse.
        OSError: the file cannot be opened at all (missing, no permission).
    """
    with fsspec.open(path, "rb") as f:
        # soundfile seeks around the header; fsspec file objects support that
        # without reading the whole object from remote storage.
        return _info(f)


def decode(data: bytes | str, sample_rate: int) -> np.ndarray:
    """Decode an encoded file to mono float32 at ``sample_rate``.

    Args:
        data: the encoded file's bytes, or a path/URL to read them from.
        sample_rate: target rate in Hz; other rates are resampled with soxr (HQ).

    Returns:
        1-D float32 array of shape ``[num_samples]`` in [-1, 1].

    Raises:
        AudioDecodeError: empty, truncated or non-audio input, zero samples, or
            NaN/infinite sample values.
    """
    if isinstance(data, str):
        data = read_bytes(data)
    if not data:
        raise AudioDecodeError("empty file (0 bytes)")
    try:
        samples, source_rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioDecodeError(f"cannot decode audio: {_reason(err)}") from err
    # [frames, channels] -> [frames]: averaging keeps the level of correlated channels.
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    return prepare_samples(mono, source_rate, sample_rate)


def prepare_samples(samples: np.ndarray, source_rate: int, sample_rate: int) -> np.ndarray:
    """Validate mono samples and resample them from ``source_rate`` to ``sample_rate`` (Hz).

    Shared by :func:`decode` and by callers that already hold a waveform.
    """
    if samples.ndim != 1:
        raise AudioDecodeError(f"expected mono samples of shape [n], got shape {samples.shape}")
    if samples.size == 0:
        raise AudioDecodeError("audio has no samples (0 frames)")
    if not np.isfinite(samples).all():
        raise AudioDecodeError("audio contains NaN or infinite sample values")
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if source_rate != sample_rate:
        samples = soxr.resample(samples, source_rate, sample_rate, quality=_QUALITY).astype(np.float32)
    return samples


def pcm16_samples(data: bytes) -> np.ndarray:
    """Raw 16-bit little-endian mono PCM -> float32 ``[len(data) // 2]`` in [-1, 1).

    Scaled by 1/32768, as :func:`decode` reads 16-bit files, so raw chunks and a WAV file of
    the same bytes give the same samples.

    Raises:
        AudioDecodeError: an odd number of bytes (not whole 16-bit samples).
    """
    if len(data) % 2:
        raise AudioDecodeError(f"16-bit PCM needs whole 2-byte samples, got {len(data)} bytes")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


class StreamResampler:
    """Resamples a stream that arrives in chunks, from ``source_rate`` to ``target_rate`` (Hz).

    The samples that :meth:`push` returns, followed by :meth:`flush`'s, equal
    :func:`prepare_samples` of the whole stream at once (soxr's streaming resampler, same
    quality). Output lags input by the filter's delay (a few ms); :meth:`flush` returns the
    rest and starts a new stream.
    """

    def __init__(self, source_rate: int, target_rate: int):
        self.source_rate, self.target_rate = int(source_rate), int(target_rate)
        self._stream = self._new()

    def _new(self) -> soxr.ResampleStream | None:
        if self.source_rate == self.target_rate:
            return None
        return soxr.ResampleStream(self.source_rate, self.target_rate, 1, dtype="float32", quality=_QUALITY)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Mono float32 ``[n]`` at ``source_rate`` -> what is ready of it at ``target_rate``."""
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        if self._stream is None:
            return samples
        return self._stream.resample_chunk(samples, last=False)

    def flush(self) -> np.ndarray:
        """The samples still inside the filter; the next :meth:`push` starts a new stream."""
        if self._stream is None:
            return np.zeros(0, np.float32)
        tail = self._stream.resample_chunk(np.zeros(0, np.float32), last=True)
        self._stream = self._new()
        return tail


def _info(file: io.IOBase) -> AudioInfo:
    try:
        info = sf.info(file)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        if _is_empty(file):
            raise AudioDecodeError("empty file (0 bytes)") from err
        raise AudioDecodeError(f"cannot read audio header: {_reason(err)}") from err
    return AudioInfo(sample_rate=int(info.samplerate), channels=int(info.channels), num_frames=int(info.frames))


def _reason(err: Exception) -> str:
    """libsndfile's own message ("Format not recognised."), without the file object's repr
    and memory address that soundfile puts in front of it: errors must read the same every run."""
    return getattr(err, "error_string", None) or str(err)


def _is_empty(file: io.IOBase) -> bool:
    file.seek(0, io.SEEK_END)
    return file.tell() == 0
