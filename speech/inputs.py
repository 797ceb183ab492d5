"""Turn what the user typed (directories, globs, URLs, manifests) into input rows.

The result is a table with ``schema.INPUT_SCHEMA``: one row per audio file with a
stable unique ``id``, and each file's size and modification time as listed (what a resumed
job compares to find inputs that changed). No audio is read here.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

import fsspec
import pyarrow as pa
import pyarrow.compute as pc

from speech.audio import AUDIO_EXTENSIONS
from speech.files import READ_TIMEOUT_S, fingerprints
from speech.records import TABLE_EXTENSIONS, InputError, read_records
from speech.schema import INPUT_SCHEMA

MANIFEST_EXTENSIONS = TABLE_EXTENSIONS
_GLOB_CHARS = frozenset("*?[")
#: Manifest columns and their types; anything else in a manifest is ignored.
_MANIFEST_COLUMNS = {"id": pa.string(), "path": pa.string(), "text": pa.string(), "language": pa.string()}

__all__ = ["MANIFEST_EXTENSIONS", "InputError", "read_manifest", "resolve_inputs"]


def resolve_inputs(inputs: Sequence[str], *, timeout_s: float | None = READ_TIMEOUT_S) -> pa.Table:
    """Expand every input into rows and check that ids are unique across all of them.

    ``timeout_s`` bounds each manifest read and each remote file's metadata lookup.
    """
    tables = [_resolve_one(item, timeout_s) for item in inputs]
    table = pa.concat_tables(tables) if tables else INPUT_SCHEMA.empty_table()
    if table.num_rows == 0:
        raise InputError(f"no audio files found in {', '.join(inputs)}")
    _check_unique_ids(table)
    sizes, mtimes = zip(*fingerprints(table["path"].to_pylist(), timeout_s))
    return (
        table.set_column(table.schema.get_field_index("input_size"), "input_size", pa.array(sizes, pa.int64()))
        .set_column(table.schema.get_field_index("input_mtime"), "input_mtime",
                    pa.array(mtimes, INPUT_SCHEMA.field("input_mtime").type))
    )


def _resolve_one(item: str, timeout_s: float | None) -> pa.Table:
    if item.lower().endswith(MANIFEST_EXTENSIONS):
        return read_manifest(item, timeout_s=timeout_s)
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
    return _input_table(ids, urls, [None] * len(ids), [None] * len(ids))


def read_manifest(path: str, *, required: Sequence[str] = ("path",),
                  timeout_s: float | None = READ_TIMEOUT_S) -> pa.Table:
    """Read a Parquet, JSONL or CSV manifest with a ``path`` column (and the ``required`` ones),
    every value as text.

    Optional columns: ``id`` (defaults to ``path`` as written), ``text`` (reference transcript),
    ``language``. Relative paths are taken relative to the manifest's directory.
    """
    table = read_records(path, _MANIFEST_COLUMNS, required=list(dict.fromkeys(("path", *required))), kind="manifest",
                         timeout_s=timeout_s)
    fs, fs_path = fsspec.core.url_to_fs(path)
    raw_paths = table["path"].to_pylist()
    paths = [_manifest_path(path, fs, fs_path, value, row) for row, value in enumerate(raw_paths)]
    # Without an id column, the path as written in the manifest is the id.
    ids = table["id"].to_pylist() if "id" in table.column_names else raw_paths
    missing = [row for row, value in enumerate(ids) if value is None or value == ""]
    if missing:
        raise InputError(f"manifest {path}: row {missing[0]}: field 'id' is empty")
    nothing = [None] * len(paths)
    reference = table["text"].to_pylist() if "text" in table.column_names else nothing
    language = table["language"].to_pylist() if "language" in table.column_names else nothing
    return _input_table(ids, paths, reference, language)


def _input_table(ids: list, paths: list, reference: list, language: list) -> pa.Table:
    """Rows of ``INPUT_SCHEMA``; sizes and times are filled in once all inputs are listed."""
    unknown = [None] * len(ids)
    return pa.table({"id": ids, "path": paths, "reference": reference, "language": language,
                     "input_size": unknown, "input_mtime": unknown}, schema=INPUT_SCHEMA)


def _manifest_path(manifest: str, fs, fs_path: str, value, row: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"manifest {manifest}: row {row}: field 'path' is empty")
    if "://" in value or posixpath.isabs(value):
        return value
    return _unstrip(fs, posixpath.join(posixpath.dirname(fs_path), value))


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
