"""CTranslate2's binary model file (``model.bin``): read its header and its variables.

The layout (CTranslate2 ``python/ctranslate2/specs/model_spec.py`` writes it, ``src/models/
model.cc`` reads it), all integers little-endian, every string a ``uint16`` byte count that
includes a terminating NUL, then the bytes and the NUL:

* ``uint32`` binary version (1-6 are known; this reader takes 4-6, every file written by
  CTranslate2 2.x and later);
* string spec name (e.g. ``WhisperSpec``) and ``uint32`` spec revision;
* ``uint32`` number of variables, then per variable: string name, ``uint8`` rank,
  ``rank x uint32`` dimensions, ``uint8`` dtype id (0 float32, 1 int8, 2 int16, 3 int32,
  4 float16, 5 bfloat16), ``uint32`` byte count and the raw row-major data;
* ``uint32`` number of aliases, then per alias: string alias, string name of the variable
  it stands for (a tied weight is stored once, e.g. Whisper's output projection).

:func:`read_model` scans the header (seeking over the data, so a 1.5 GB file is indexed in
milliseconds) and checks every size against the file, so a truncated or foreign file fails
with one line naming what is wrong instead of a crash inside CTranslate2.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

MODEL_FILE = "model.bin"

#: Binary versions this reader understands (4 introduced explicit dtype ids, 6 is current).
SUPPORTED_VERSIONS = range(4, 7)

#: dtype id -> numpy dtype name; bfloat16 has no numpy dtype and is widened on read.
_DTYPES = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}
_ITEM_SIZE = {"float32": 4, "int8": 1, "int16": 2, "int32": 4, "float16": 2, "bfloat16": 2}


class Ct2FormatError(ValueError):
    """``model.bin`` is not a CTranslate2 model file this reader can use; one line says why."""


@dataclass(frozen=True)
class Variable:
    """One stored tensor: where its bytes are in the file."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # a key of _ITEM_SIZE
    offset: int  # byte offset of the data in the file
    nbytes: int


@dataclass(frozen=True)
class Ct2Model:
    """The index of a ``model.bin``: spec, variables and aliases (no tensor data loaded)."""

    path: Path
    binary_version: int
    spec: str
    revision: int
    variables: dict[str, Variable]
    aliases: dict[str, str]  # alias -> name of the stored variable

    def resolve(self, name: str) -> str:
        """The stored variable ``name`` refers to (itself, or what its alias points at)."""
        return self.aliases.get(name, name)

    def array(self, name: str) -> np.ndarray:
        """The tensor ``name`` (or an alias of one) as a numpy array of its stored dtype
        (bfloat16 is returned as float32), shape as stored."""
        variable = self.variables[self.resolve(name)]
        stored = "uint16" if variable.dtype == "bfloat16" else variable.dtype
        count = variable.nbytes // _ITEM_SIZE[variable.dtype]
        data = np.fromfile(self.path, dtype=np.dtype(stored).newbyteorder("<"), count=count, offset=variable.offset)
        if variable.dtype == "bfloat16":  # the top half of a float32
            data = (data.astype(np.uint32) << 16).view(np.float32)
        return data.reshape(variable.shape)

    def scalar(self, name: str) -> int | float:
        """A rank-0 variable's value (CTranslate2 stores flags and head counts this way)."""
        value = self.array(name)
        if value.shape != ():
            raise Ct2FormatError(f"{self.path}: variable {name} should be a scalar, has shape {value.shape}")
        return value.item()


def read_model(path: str | Path) -> Ct2Model:
    """Index ``path`` (a ``model.bin`` or the directory holding one).

    Raises:
        Ct2FormatError: missing file, unknown version, truncated file or trailing bytes.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            return _read(f, path, size)
    except FileNotFoundError:
        raise Ct2FormatError(f"{path}: no such file") from None
    except OSError as err:
        raise Ct2FormatError(f"{path}: cannot read: {err.strerror}") from err


def _read(f: BinaryIO, path: Path, size: int) -> Ct2Model:
    reader = _Reader(f, path, size)
    version = reader.u32("binary version")
    if version not in SUPPORTED_VERSIONS:
        raise Ct2FormatError(
            f"{path}: binary version {version} is not a CTranslate2 model version this reader knows "
            f"({SUPPORTED_VERSIONS.start}-{SUPPORTED_VERSIONS.stop - 1}); is it a CTranslate2 model.bin?"
        )
    spec = reader.string("spec name")
    revision = reader.u32("spec revision")
    variables = {}
    for _ in range(reader.u32("variable count")):
        name = reader.string("variable name")
        rank = reader.u8(f"rank of {name}")
        shape = tuple(reader.u32(f"dimension of {name}") for _ in range(rank))
        type_id = reader.u8(f"dtype of {name}")
        if type_id not in _DTYPES:
            raise Ct2FormatError(f"{path}: variable {name} has unknown dtype id {type_id}")
        dtype = _DTYPES[type_id]
        nbytes = reader.u32(f"byte count of {name}")
        expected = int(np.prod(shape, dtype=np.int64)) * _ITEM_SIZE[dtype]
        if nbytes != expected:
            raise Ct2FormatError(f"{path}: variable {name} {shape} {dtype} should hold {expected} bytes, header says {nbytes}")
        variables[name] = Variable(name, shape, dtype, reader.skip(nbytes, f"data of {name}"), nbytes)
    aliases = {}
    for _ in range(reader.u32("alias count")):
        alias = reader.string("alias")
        target = reader.string(f"target of alias {alias}")
        if target not in variables:
            raise Ct2FormatError(f"{path}: alias {alias} points at {target}, which is not stored")
        aliases[alias] = target
    if reader.position != size:
        raise Ct2FormatError(f"{path}: {size - reader.position} unexpected bytes after the last alias")
    return Ct2Model(path, version, spec, revision, variables, aliases)


class _Reader:
    """Sequential reads with the position checked against the file size (truncation is named)."""

    def __init__(self, f: BinaryIO, path: Path, size: int):
        self.f, self.path, self.size = f, path, size
        self.position = 0

    def _take(self, n: int, what: str) -> bytes:
        if self.position + n > self.size:
            raise Ct2FormatError(
                f"{self.path} is truncated: {self.size} bytes, but the {what} at byte {self.position} needs {n} more"
            )
        data = self.f.read(n)
        self.position += n
        return data

    def u8(self, what: str) -> int:
        return self._take(1, what)[0]

    def u32(self, what: str) -> int:
        return struct.unpack("<I", self._take(4, what))[0]

    def string(self, what: str) -> str:
        length = struct.unpack("<H", self._take(2, what))[0]
        raw = self._take(length, what)
        if not raw.endswith(b"\0"):
            raise Ct2FormatError(f"{self.path}: the {what} at byte {self.position - length} is not NUL-terminated")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise Ct2FormatError(f"{self.path}: the {what} at byte {self.position - length} is not UTF-8") from None

    def skip(self, n: int, what: str) -> int:
        """Seek over ``n`` bytes; returns where they start."""
        start = self.position
        if start + n > self.size:
            raise Ct2FormatError(f"{self.path} is truncated: {self.size} bytes, but the {what} ends at byte {start + n}")
        self.f.seek(n, 1)
        self.position += n
        return start
