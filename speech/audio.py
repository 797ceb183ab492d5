"""Audio I/O: the one place bytes become samples.

Every path in the project (batch jobs, HTTP serving, tests) reads audio through
:func:`probe` (header only, cheap) and :func:`decode` (full decode to mono float32
at the model's rate). Files are opened through :mod:`speech.files` (local regular files
only, reads bounded by ``timeout_s``) and fsspec, so ``s3://``, ``gs://`` and other URLs work
wherever the matching fsspec implementation is installed.

Decoding is bounded: with ``max_seconds`` set, a file whose header gives a longer length is
refused before any sample is allocated, and a file whose header gives no length (a FLAC
stream written without its sample count) is decoded block by block and refused as soon as
it passes the bound. A few hundred kilobytes of FLAC can hold hours of silence, so this is
what keeps an upload from turning into gigabytes of samples.

Live audio (a realtime session's raw PCM chunks) goes through :func:`pcm16_samples` and a
:class:`StreamResampler`, whose output equals :func:`prepare_samples` of the whole stream.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from speech.files import READ_TIMEOUT_S, InputFileError, open_input, read_bytes, with_deadline

#: soxr's quality for every resampling in the project (its "high quality" preset).
_QUALITY = "HQ"

#: File extensions treated as audio when a directory or glob is expanded.
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au"})

_UNKNOWN_FRAMES = 2**63 - 1  # libsndfile's SF_COUNT_MAX: "the header does not say"
_BLOCK_FRAMES = 1 << 16  # frames decoded per read


class AudioDecodeError(ValueError):
    """The input is not audio this project can use; the message says why, for the user."""


class AudioTooLong(AudioDecodeError):
    """The audio is longer than the caller's ``max_seconds``; raised before it is all decoded."""

    def __init__(self, seconds: float | None, limit: float):
        length = "longer than" if seconds is None else f"{seconds:.1f} s long, over"
        super().__init__(f"audio is {length} max_duration_s ({limit:g} s)")
        self.seconds, self.limit = seconds, limit


@dataclass(frozen=True)
class AudioInfo:
    """What a file header says, without decoding the samples."""

    sample_rate: int  # Hz
    channels: int
    num_frames: int | None  # samples per channel; None when the header does not say

    @property
    def duration_s(self) -> float | None:
        """Seconds, or None when the header gives no length."""
        return None if self.num_frames is None else self.num_frames / self.sample_rate


def probe(source: bytes | str, timeout_s: float | None = READ_TIMEOUT_S) -> AudioInfo:
    """Read only the header of ``source``: file bytes, or a local path or fsspec URL.

    Raises:
        AudioDecodeError: empty file, a header libsndfile cannot parse, not a regular file,
            or a read that took longer than ``timeout_s`` seconds.
        OSError: the file cannot be opened at all (missing, no permission).
    """
    if isinstance(source, bytes):
        return _info(io.BytesIO(source))

    def read() -> AudioInfo:
        # soundfile seeks around the header; fsspec file objects support that without
        # reading the whole object from remote storage.
        with open_input(source) as f:
            return _info(f)

    try:
        return with_deadline(read, timeout_s, source)
    except InputFileError as err:
        raise AudioDecodeError(str(err)) from err


def decode(
    data: bytes | str, sample_rate: int, *, max_seconds: float | None = None, timeout_s: float | None = READ_TIMEOUT_S
) -> np.ndarray:
    """Decode an encoded file to mono float32 at ``sample_rate``.

    Args:
        data: the encoded file's bytes, or a path/URL to read them from (within ``timeout_s``).
        sample_rate: target rate in Hz; other rates are resampled with soxr (HQ).
        max_seconds: refuse longer audio (:class:`AudioTooLong`) without decoding more than
            this much of it; None decodes any length.
        timeout_s: bound on reading a path (seconds); None waits as long as the read takes.

    Returns:
        1-D float32 array of shape ``[num_samples]`` in [-1, 1]. Memory used on the way:
        the mono samples at the file's rate plus the result (channels are averaged block by
        block, never held all at once).

    Raises:
        AudioDecodeError: empty, truncated or non-audio input, zero samples, NaN/infinite
            sample values, too long (:class:`AudioTooLong`), not a regular file, read timeout.
    """
    if isinstance(data, str):
        try:
            data = read_bytes(data, timeout_s)
        except InputFileError as err:
            raise AudioDecodeError(str(err)) from err
    if not data:
        raise AudioDecodeError("empty file (0 bytes)")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            mono = _read_mono(f, max_seconds)
            source_rate = f.samplerate
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioDecodeError(f"cannot decode audio: {_reason(err)}") from err
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


def _read_mono(f: sf.SoundFile, max_seconds: float | None) -> np.ndarray:
    """All frames of ``f`` as mono float32 ``[frames]`` at its own rate, within ``max_seconds``."""
    limit = None if max_seconds is None else int(max_seconds * f.samplerate)
    if f.frames == _UNKNOWN_FRAMES:
        return _read_unknown_length(f, limit, max_seconds)
    if limit is not None and f.frames > limit:
        raise AudioTooLong(f.frames / f.samplerate, max_seconds)
    out = np.empty(f.frames, np.float32)
    filled = 0
    while filled < f.frames:
        block = f.read(min(_BLOCK_FRAMES, f.frames - filled), dtype="float32", always_2d=True)
        if len(block) == 0:  # the header promised more than the file holds
            break
        out[filled : filled + len(block)] = _mono(block)
        filled += len(block)
    return out[:filled]


def _read_unknown_length(f: sf.SoundFile, limit: int | None, max_seconds: float | None) -> np.ndarray:
    """Block-decode a stream whose header gives no length, stopping once past ``limit`` frames.

    soundfile's ``read`` seeks to its new position after every block, and libsndfile refuses
    that seek at the end of such a stream, losing the last block; the C read underneath
    (``sf_readf_float``, which soundfile itself calls) needs no seek.
    """
    buffer = np.empty((_BLOCK_FRAMES, f.channels), np.float32)
    pointer = sf._ffi.cast("float *", buffer.ctypes.data)
    blocks, total = [], 0
    while True:
        count = sf._snd.sf_readf_float(f._file, pointer, _BLOCK_FRAMES)
        sf._error_check(f._errorcode)
        if count <= 0:
            break
        total += count
        if limit is not None and total > limit:
            raise AudioTooLong(None, max_seconds)
        blocks.append(_mono(buffer[:count]))
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def _mono(block: np.ndarray) -> np.ndarray:
    """``[frames, channels]`` -> ``[frames]``: averaging keeps the level of correlated channels."""
    return block.mean(axis=1) if block.shape[1] > 1 else block[:, 0].copy()


def _info(file: io.IOBase) -> AudioInfo:
    try:
        info = sf.info(file)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        if _is_empty(file):
            raise AudioDecodeError("empty file (0 bytes)") from err
        raise AudioDecodeError(f"cannot read audio header: {_reason(err)}") from err
    frames = None if info.frames == _UNKNOWN_FRAMES else int(info.frames)
    return AudioInfo(sample_rate=int(info.samplerate), channels=int(info.channels), num_frames=frames)


def _reason(err: Exception) -> str:
    """libsndfile's own message ("Format not recognised."), without the file object's repr
    and memory address that soundfile puts in front of it: errors must read the same every run."""
    return getattr(err, "error_string", None) or str(err)


def _is_empty(file: io.IOBase) -> bool:
    file.seek(0, io.SEEK_END)
    return file.tell() == 0


def encode_audio(samples: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """Mono float32 ``[n]`` -> 16-bit FLAC or WAV file bytes (samples clipped to [-1, 1])."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(samples, -1.0, 1.0), sample_rate, format=fmt.upper(), subtype="PCM_16")
    return buffer.getvalue()
