"""ONNX exports of the test fixtures (``speech convert onnx``), built once and cached.

An export is a function of the converter's code as much as of the checkpoint, so the cache
version is a digest of both: a changed converter (or a rebuilt fixture) exports again, an
unchanged one reuses the directory. The tests and ``speech bench --quick`` share them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import speech
from speech.testing.checkpoints import build_cached

#: The code an export depends on, relative to the ``speech`` package, by kind of source.
_COMMON = ("convert/onnx_export.py", "onnx_model.py")
_CONVERTER_FILES = {
    "ctc": (*_COMMON, "convert/onnx_ctc.py", "asr/ctc_onnx.py"),
    "kokoro": (*_COMMON, "convert/onnx_kokoro.py", "tts/kokoro_onnx.py"),  # the export checks itself with the engine
}


def onnx_export(root: str | Path, source: Path, *, quantize: str | None = None) -> Path:
    """``root/<source name>-onnx[-int8]``: ``source`` (a fixture directory, or for int8 its float32
    export) converted by ``speech convert onnx``, rebuilt when the converter or the source changes."""
    from speech.convert.onnx_export import convert_onnx

    suffix = "-int8" if quantize else "-onnx"
    name = source.name + suffix
    return build_cached(Path(root), name, lambda out: convert_onnx(str(source), out, quantize=quantize),
                        _version(source))


def _version(source: Path) -> str:
    digest = hashlib.sha256()
    package = Path(speech.__file__).parent
    kind = "kokoro" if (source / "voices").is_dir() else "ctc"
    for name in _CONVERTER_FILES[kind]:
        digest.update((package / name).read_bytes())
    for marker in (".complete", "onnx_manifest.json"):  # the source's own build
        if (source / marker).is_file():
            digest.update((source / marker).read_bytes())
    return "onnx-" + digest.hexdigest()[:16]
