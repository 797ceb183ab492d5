"""Turn what the user typed (directories, globs, URLs, manifests) into input rows.

The result is a table with ``schema.INPUT_SCHEMA``: one row per audio file with a
stable unique ``id``. Only paths and ids are listed here; no audio is read.
"""

from __future__ import annotations

import posixpath
from typing import Sequence

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from speech.audio import AUDIO_EXTENSIONS
from speech.schema import INPUT_SCHEMA

MANIFEST_EXTENSIONS = (".parquet", ".jsonl", ".json", ".csv")
_GLOB_CHARS = frozenset("*?[")


class InputError(ValueError):
    """The inputs cannot be resolved; the message names the input, row or field."""


def resolve_inputs(inputs: Sequence[str]) -> pa.Table:
    """Expand every input into rows and check that ids are unique across all of them."""
    tables = [_resolve_one(item) for item in inputs]
    table = pa.concat_tables(tables) if tables else INPUT_SCHEMA.empty_table()
    if table.num_rows == 0:
        raise InputError(f"no audio files found in {', '.join(inputs)}")
    _check_unique_ids(table)
    return table


def _resolve_one(item: str) -> pa.Table:
    if item.lower().endswith(MANIFEST_EXTENSIONS):
        return read_manifest(item)
    fs, root = fsspec.core.url_to_fs(item)
    if _GLOB_CHARS & set(root):
        paths = sorted(fs.glob(root))
        base = root[: min(root.find(c) for c in _GLOB_CHARS if c in root)].rsplit("/", 1)[0]
    elif fs.isdir(root):
        paths = sorted(fs.find(root))
        base = root
    elif fs.exists(root):
        paths = [root]
        base = posixpath.dirname(root)
    else:
        raise InputError(f"input not found: {item}")
    paths = [p for p in paths if posixpath.splitext(p)[1].lower() in AUDIO_EXTENSIONS]
    ids = [posixpath.relpath(p, base) if base else p for p in paths]
    urls = [_unstrip(fs, p) for p in paths]
    return pa.table(
        {"id": ids, "path": urls, "reference": [None] * len(ids), "language": [None] * len(ids)},
        schema=INPUT_SCHEMA,
    )


def read_manifest(path: str, *, required: Sequence[str] = ("path",)) -> pa.Table:
    """Read a Parquet, JSONL or CSV manifest with a ``path`` column (and the ``required`` ones).

    Optional columns: ``id`` (defaults to ``path`` as written), ``text`` (reference transcript),
    ``language``. Relative paths are taken relative to the manifest's directory.
    """
    fs, fs_path = fsspec.core.url_to_fs(path)
    if not fs.exists(fs_path):
        raise InputError(f"manifest not found: {path}")
    try:
        with fs.open(fs_path, "rb") as f:
            if path.lower().endswith(".parquet"):
                table = pq.read_table(f)
            elif path.lower().endswith(".csv"):
                table = pa_csv.read_csv(f)
            else:
                table = pa_json.read_json(f)
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(f"cannot read manifest {path}: {err}") from err
    for column in dict.fromkeys(("path", *required)):
        if column not in table.column_names:
            raise InputError(f"manifest {path} has no '{column}' column (columns: {', '.join(table.column_names)})")

    raw_paths = table["path"].to_pylist()
    paths = [_manifest_path(path, fs, fs_path, value, row) for row, value in enumerate(raw_paths)]
    # Without an id column, the path as written in the manifest is the id.
    ids = _string_column(table, "id", path) or raw_paths
    missing = [row for row, value in enumerate(ids) if value is None or value == ""]
    if missing:
        raise InputError(f"manifest {path}: row {missing[0]}: field 'id' is empty")
    return pa.table(
        {
            "id": ids,
            "path": paths,
            "reference": _string_column(table, "text", path) or [None] * len(paths),
            "language": _string_column(table, "language", path) or [None] * len(paths),
        },
        schema=INPUT_SCHEMA,
    )


def _manifest_path(manifest: str, fs, fs_path: str, value, row: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"manifest {manifest}: row {row}: field 'path' is empty")
    if "://" in value or posixpath.isabs(value):
        return value
    return _unstrip(fs, posixpath.join(posixpath.dirname(fs_path), value))


def _string_column(table: pa.Table, name: str, manifest: str) -> list[str | None] | None:
    if name not in table.column_names:
        return None
    column = table[name]
    if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        try:
            column = pc.cast(column, pa.string())
        except pa.ArrowInvalid as err:
            raise InputError(f"manifest {manifest}: field '{name}' must be text, got {column.type}") from err
    return column.to_pylist()


def _check_unique_ids(table: pa.Table) -> None:
    counts = pc.value_counts(table["id"])
    duplicated = [entry["values"].as_py() for entry in counts if entry["counts"].as_py() > 1]
    if duplicated:
        shown = ", ".join(repr(d) for d in duplicated[:5])
        more = f" and {len(duplicated) - 5} more" if len(duplicated) > 5 else ""
        raise InputError(f"duplicate ids in the inputs: {shown}{more}; ids must be unique")


def _unstrip(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A path as the user would write it: bare for local files, a URL otherwise."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return path if protocol in ("file", "local") else fs.unstrip_protocol(path)
