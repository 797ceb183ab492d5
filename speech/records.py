"""Tabular input files, read the same way for every job: CSV, JSON Lines and Parquet.

Transcription manifests (:mod:`speech.inputs`) and text corpora (:mod:`speech.text.corpus`)
are both read by :func:`read_records`. Values are taken as written: a CSV or JSON Lines
column is text unless the caller asks for a number, with no guessing of types or of
missing values, so ``001``, ``1e2`` and ``0042`` stay themselves, ``NA``, ``null`` and
``N/A`` are text, and an empty CSV cell is an empty string. JSON numbers in a text column
become their JSON text (``1`` -> ``"1"``). Parquet columns keep their types; integer ones
are accepted as text.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from speech.files import READ_TIMEOUT_S, InputFileError, read_bytes

#: File name endings read as tables (anything else is the caller's business).
TABLE_EXTENSIONS = (".parquet", ".jsonl", ".json", ".csv")


class InputError(ValueError):
    """The inputs cannot be resolved; the message names the input, row or field."""


def read_records(path: str, columns: Mapping[str, pa.DataType], *, required: Sequence[str] = (),
                 kind: str = "manifest", timeout_s: float | None = READ_TIMEOUT_S) -> pa.Table:
    """The ``columns`` that the table file at ``path`` has, each as its type (``pa.string()``,
    ``pa.int64()`` or ``pa.float64()``); other columns are ignored. ``kind`` names the file in errors.

    Raises:
        InputError: missing, not a regular file, unreadable or malformed file, a ``required``
            column missing, or a value that is not of its column's type (naming the row and field).
    """
    data = read_input(path, kind=kind, timeout_s=timeout_s)
    lower = path.lower()
    try:
        if lower.endswith(".parquet"):
            table = pq.read_table(io.BytesIO(data))
        elif lower.endswith(".csv"):
            table = _read_csv(data)
        else:
            table = _read_json_lines(data, path, kind)
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read {kind} {path}: {err}") from err
    for name in required:
        if name not in table.column_names:
            raise InputError(f"{kind} {path} has no '{name}' column (columns: {', '.join(table.column_names)})")
    present = [name for name in columns if name in table.column_names]
    return pa.table({name: _convert(table[name], columns[name], name, path, kind) for name in present},
                    schema=pa.schema([(name, columns[name]) for name in present]))


def read_input(path: str, *, kind: str, timeout_s: float | None = READ_TIMEOUT_S) -> bytes:
    """All bytes of the input file ``path`` (a regular file, read within ``timeout_s``), or InputError."""
    try:
        return read_bytes(path, timeout_s)
    except FileNotFoundError as err:
        raise InputError(f"{kind} not found: {path}") from err
    except InputFileError as err:
        raise InputError(f"cannot read {kind} {path}: {err}") from err
    except OSError as err:
        raise InputError(f"cannot read {kind} {path}: {err.strerror or err}") from err


def _read_csv(data: bytes) -> pa.Table:
    # The header names the columns; every one of them is then read as text, nothing as null.
    names = pa_csv.open_csv(io.BytesIO(data)).schema.names
    options = pa_csv.ConvertOptions(column_types={name: pa.string() for name in names}, strings_can_be_null=False,
                                    quoted_strings_can_be_null=False)
    return pa_csv.read_csv(io.BytesIO(data), convert_options=options)


def _read_json_lines(data: bytes, path: str, kind: str) -> pa.Table:
    """One JSON object a line (blank lines skipped); numbers kept as their JSON text."""
    records: list[dict[str, Any]] = []
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line, parse_int=str, parse_float=str, parse_constant=str)
        except json.JSONDecodeError as err:
            raise InputError(f"cannot read {kind} {path}: line {number}: {err.msg} (column {err.colno})") from err
        if not isinstance(record, dict):
            raise InputError(f"cannot read {kind} {path}: line {number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    names = list(dict.fromkeys(name for record in records for name in record))
    columns = {}
    for name in names:
        values = [record.get(name) for record in records]
        for row, value in enumerate(values):
            if value is not None and not isinstance(value, str):
                shown = json.dumps(value)[:40]
                raise InputError(f"{kind} {path}: row {row}: field '{name}' must be text or a number, got {shown}")
        columns[name] = pa.array(values, pa.string())
    return pa.table(columns) if columns else pa.table({})


def _convert(column: pa.ChunkedArray, kind_type: pa.DataType, name: str, path: str, kind: str) -> pa.ChunkedArray:
    """``column`` as ``kind_type`` (text, int64 or float64), or InputError naming the field and row."""
    if column.type == kind_type:
        return column
    if pa.types.is_null(column.type):
        return pa.chunked_array([pa.nulls(len(column), kind_type)])
    if kind_type == pa.string():
        if pa.types.is_integer(column.type) or pa.types.is_large_string(column.type):
            return pc.cast(column, pa.string())
        raise InputError(f"{kind} {path}: field '{name}' must be text, got {column.type}")
    if pa.types.is_string(column.type):  # numbers written as text: "" is "not given"
        parse, what = (int, "an integer") if pa.types.is_integer(kind_type) else (float, "a number")
        values = []
        for row, value in enumerate(column.to_pylist()):
            try:
                values.append(None if value is None or not value.strip() else parse(value))
            except ValueError:
                raise InputError(f"{kind} {path}: row {row}: field '{name}' must be {what}, got {value!r}") from None
        return pa.chunked_array([pa.array(values, kind_type)])
    try:
        return pc.cast(column, kind_type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise InputError(f"{kind} {path}: field '{name}' must be {kind_type}, got {column.type}: {err}") from err
