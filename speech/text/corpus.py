"""Read a text corpus: a plain text file (one utterance a line), JSONL, CSV or Parquet.

Structured inputs need a ``text`` column; ``id``, ``voice`` (or ``speaker``), ``language``,
``seed`` and ``speed`` are optional. Files are opened through fsspec, so any URL with an installed
filesystem works. The result has :data:`CORPUS_SCHEMA`; nothing here judges the text
itself (empty or unsayable rows are the front end's business and get an error there).
"""

from __future__ import annotations

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from speech.inputs import InputError

CORPUS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("text", pa.string()),
        pa.field("voice", pa.string()),
        pa.field("language", pa.string()),
        pa.field("seed", pa.int64()),
        pa.field("speed", pa.float64()),  # speaking rate of the row (vits, kokoro)
    ]
)

_STRUCTURED = (".jsonl", ".json", ".csv", ".parquet")


def read_corpus(path: str) -> pa.Table:
    """All rows of the corpus at ``path``, in file order.

    Without an ``id`` column, ids are the 1-based row numbers, zero-padded to equal width
    (``00001``...), so they sort in file order and make stable file names.

    Raises:
        InputError: the file is missing or unreadable, has no ``text`` column, a column has
            the wrong type, or ids are empty or repeated.
    """
    fs, fs_path = fsspec.core.url_to_fs(path)
    if not fs.exists(fs_path):
        raise InputError(f"input not found: {path}")
    try:
        with fs.open(fs_path, "rb") as f:
            table = _read(path.lower(), f)
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read input {path}: {err}") from err
    if "text" not in table.column_names:
        raise InputError(f"input {path} has no 'text' column (columns: {', '.join(table.column_names)})")
    n = table.num_rows
    width = len(str(n))
    ids = _column(table, "id", path, pa.string())
    if ids is None:
        ids = pa.array([str(i + 1).zfill(width) for i in range(n)], pa.string())
    voice = _column(table, "voice", path, pa.string())
    if voice is None:
        voice = _column(table, "speaker", path, pa.string())
    columns = {
        "id": ids,
        "text": _column(table, "text", path, pa.string()),
        "voice": voice,
        "language": _column(table, "language", path, pa.string()),
        "seed": _column(table, "seed", path, pa.int64()),
        "speed": _column(table, "speed", path, pa.float64()),
    }
    columns = {name: (pa.nulls(n, CORPUS_SCHEMA.field(name).type) if col is None else col) for name, col in columns.items()}
    for name in ("voice", "language"):  # CSV gives "" for a missing value: it means "default"
        column = columns[name]
        columns[name] = pc.if_else(pc.equal(pc.utf8_trim_whitespace(column), ""), pa.scalar(None, pa.string()), column)
    _check_ids(columns["id"].to_pylist(), path)
    return pa.table(columns, schema=CORPUS_SCHEMA)


def _read(lower_path: str, f) -> pa.Table:
    if lower_path.endswith(".parquet"):
        return pq.read_table(f)
    if lower_path.endswith(".csv"):
        return pa_csv.read_csv(f)
    if lower_path.endswith((".jsonl", ".json")):
        return pa_json.read_json(f)
    # Plain text: every line is a row, blank ones included (they become "empty text" errors);
    # only the final newline ends the file rather than starting an empty row.
    lines = f.read().decode("utf-8").splitlines()
    return pa.table({"text": pa.array(lines, pa.string())})


def _column(table: pa.Table, name: str, path: str, kind: pa.DataType) -> pa.ChunkedArray | None:
    if name not in table.column_names:
        return None
    column = table[name]
    if column.type == kind:
        return column
    if kind == pa.string() and not (pa.types.is_integer(column.type) or pa.types.is_string(column.type) or pa.types.is_null(column.type)):
        raise InputError(f"input {path}: column '{name}' must be text, got {column.type}")
    try:
        return pc.cast(column, kind)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise InputError(f"input {path}: column '{name}' must be {kind}, got {column.type}: {err}") from err


def _check_ids(ids: list[str | None], path: str) -> None:
    empty = [row for row, value in enumerate(ids) if value is None or not value.strip()]
    if empty:
        raise InputError(f"input {path}: row {empty[0]}: field 'id' is empty")
    seen: set[str] = set()
    repeated = [value for value in ids if value in seen or seen.add(value)]
    if repeated:
        shown = ", ".join(repr(v) for v in list(dict.fromkeys(repeated))[:5])
        raise InputError(f"input {path}: duplicate ids {shown}; ids must be unique")
