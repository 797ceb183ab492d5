"""The benchmark corpus: generated mono FLAC files with log-normal durations, cached on disk.

Real corpora mix many short utterances with a few long ones; a log-normal (clipped to
``[min_s, max_s]``) has that shape. The signal is noise under a syllable-rate envelope with
pauses: for a random-weight model the content changes no compute, but it makes FLAC work
like it does on speech (compressible silences) and gives the CTC head varied output.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from speech.testing.checkpoints import build_cached

_VERSION = "1"
MANIFEST = "manifest.jsonl"


@dataclass(frozen=True)
class CorpusSpec:
    """What to generate. Durations are in seconds, the rate in Hz."""

    files: int
    mean_s: float = 6.0  # mean of the log-normal before clipping
    sigma: float = 0.8  # spread of log(duration)
    min_s: float = 0.5
    max_s: float = 30.0  # no longer than the default chunk, so no system chunks a file
    sample_rate: int = 16_000
    seed: int = 0

    @property
    def name(self) -> str:
        digest = hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]
        return f"bench-corpus-{self.files}-{digest}"


@dataclass(frozen=True)
class Corpus:
    """A generated corpus: ``paths[i]`` lasts ``durations_s[i]`` seconds; ``manifest`` lists them in order."""

    directory: Path
    manifest: Path
    paths: list[str]
    durations_s: list[float]
    sample_rate: int

    @property
    def audio_s(self) -> float:
        return float(sum(self.durations_s))

    def describe(self) -> dict:
        d = np.asarray(self.durations_s)
        return {
            "files": len(d),
            "audio_s": round(float(d.sum()), 2),
            "mean_s": round(float(d.mean()), 2),
            "median_s": round(float(np.median(d)), 2),
            "min_s": round(float(d.min()), 2),
            "max_s": round(float(d.max()), 2),
            "sample_rate": self.sample_rate,
            "format": "FLAC, 16-bit, mono",
        }


def durations(spec: CorpusSpec) -> np.ndarray:
    """Seconds per file, float64 ``[files]``, in corpus order (not sorted), whole samples."""
    rng = np.random.default_rng(spec.seed)
    # A log-normal's mean is exp(mu + sigma^2 / 2); solve for mu.
    mu = math.log(spec.mean_s) - spec.sigma**2 / 2
    seconds = np.clip(rng.lognormal(mu, spec.sigma, spec.files), spec.min_s, spec.max_s)
    return np.round(seconds * spec.sample_rate) / spec.sample_rate


def build_corpus(cache: Path, spec: CorpusSpec) -> Corpus:
    """Generate the corpus under ``cache/<spec.name>`` (reused when already there) and return it."""
    directory = build_cached(Path(cache), spec.name, lambda out: _write(out, spec), _VERSION)
    return load_corpus(directory)


def load_corpus(directory: Path) -> Corpus:
    """Read a corpus back from its manifest."""
    rows = [json.loads(line) for line in (directory / MANIFEST).read_text().splitlines()]
    rate = {row["sample_rate"] for row in rows}
    if len(rate) != 1:
        raise ValueError(f"{directory / MANIFEST}: expected one sample rate, found {sorted(rate)}")
    return Corpus(
        directory=directory,
        manifest=directory / MANIFEST,
        paths=[str(directory / row["path"]) for row in rows],
        durations_s=[row["duration_s"] for row in rows],
        sample_rate=rate.pop(),
    )


def repeat_manifest(corpus: Corpus, times: int, path: Path) -> Path:
    """Write a manifest listing the corpus ``times`` over (ids ``r<k>/<n>``), for memory tests.

    The same files are read again, so the larger run costs no disk, and its length
    distribution is exactly the original's.
    """
    with path.open("w") as f:
        for k in range(times):
            for n, file in enumerate(corpus.paths):
                f.write(json.dumps({"id": f"r{k}/{n:06d}", "path": file}) + "\n")
    return path


def _write(out: Path, spec: CorpusSpec) -> None:
    rng = np.random.default_rng(spec.seed + 1)
    lines = []
    for n, seconds in enumerate(durations(spec)):
        name = f"{n:06d}.flac"
        samples = int(round(seconds * spec.sample_rate))
        sf.write(out / name, _speechlike(samples, spec.sample_rate, rng), spec.sample_rate, subtype="PCM_16")
        lines.append(json.dumps({"id": f"{n:06d}", "path": name, "duration_s": samples / spec.sample_rate,
                                 "sample_rate": spec.sample_rate}))
    (out / MANIFEST).write_text("\n".join(lines) + "\n")


def _speechlike(samples: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Float32 ``[samples]``: low-passed noise, 4 Hz syllable envelope, pauses of ~30% of the time."""
    noise = rng.standard_normal(samples).astype(np.float32)
    noise = np.convolve(noise, np.ones(4, np.float32) / 4, mode="same")  # soften the top octave
    t = np.arange(samples) / rate
    envelope = 0.5 * (1 - np.cos(2 * np.pi * 4.0 * t + rng.uniform(0, 2 * np.pi)))
    # Pauses: 250 ms blocks switched off at random.
    block = rate // 4
    gate = np.repeat(rng.random(samples // block + 1) > 0.3, block)[:samples]
    return (0.2 * noise * envelope * gate).astype(np.float32)
