"""Read a text corpus: a plain text file (one utterance a line), JSONL, CSV or Parquet.

Structured inputs need a ``text`` column; ``id``, ``voice`` (or ``speaker``), ``language``,
``seed`` and ``speed`` are optional. Files are opened through fsspec, so any URL with an installed
filesystem works. The result has :data:`CORPUS_SCHEMA`; nothing here judges the text
itself (empty or unsayable rows are the front end's business and get an error there).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from speech.files import READ_TIMEOUT_S
from speech.records import TABLE_EXTENSIONS, InputError, read_input, read_records

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

#: Columns read from a structured corpus ("speaker" is another name for "voice").
_COLUMNS = {"id": pa.string(), "text": pa.string(), "voice": pa.string(), "speaker": pa.string(),
            "language": pa.string(), "seed": pa.int64(), "speed": pa.float64()}


def read_corpus(path: str, *, timeout_s: float | None = READ_TIMEOUT_S) -> pa.Table:
    """All rows of the corpus at ``path``, in file order, every value as written (see
    :mod:`speech.records`: ids such as ``001`` stay text).

    Without an ``id`` column, ids are the 1-based row numbers, zero-padded to equal width
    (``00001``...), so they sort in file order and make stable file names.

    Raises:
        InputError: the file is missing, not a regular file, unreadable or read for longer than
            ``timeout_s``; has no ``text`` column, a column has the wrong type, or ids are empty
            or repeated.
    """
    if path.lower().endswith(TABLE_EXTENSIONS):
        table = read_records(path, _COLUMNS, required=["text"], kind="input", timeout_s=timeout_s)
    else:
        table = _read_lines(path, timeout_s)
    n = table.num_rows
    width = len(str(n))
    columns = {name: table[name] if name in table.column_names else None for name in CORPUS_SCHEMA.names}
    if columns["id"] is None:
        columns["id"] = pa.array([str(i + 1).zfill(width) for i in range(n)], pa.string())
    if columns["voice"] is None and "speaker" in table.column_names:
        columns["voice"] = table["speaker"]
    columns = {name: (pa.nulls(n, CORPUS_SCHEMA.field(name).type) if col is None else col) for name, col in columns.items()}
    for name in ("voice", "language"):  # CSV gives "" for a missing value: it means "default"
        column = columns[name]
        columns[name] = pc.if_else(pc.equal(pc.utf8_trim_whitespace(column), ""), pa.scalar(None, pa.string()), column)
    _check_ids(columns["id"].to_pylist(), path)
    return pa.table(columns, schema=CORPUS_SCHEMA)


def _read_lines(path: str, timeout_s: float | None) -> pa.Table:
    """Plain text: every line is a row, blank ones included (they become "empty text" errors);
    only the final newline ends the file rather than starting an empty row."""
    try:
        lines = read_input(path, kind="input", timeout_s=timeout_s).decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise InputError(f"cannot read input {path}: {err}") from err
    return pa.table({"text": pa.array(lines, pa.string())})


def _check_ids(ids: list[str | None], path: str) -> None:
    empty = [row for row, value in enumerate(ids) if value is None or not value.strip()]
    if empty:
        raise InputError(f"input {path}: row {empty[0]}: field 'id' is empty")
    seen: set[str] = set()
    repeated = [value for value in ids if value in seen or seen.add(value)]
    if repeated:
        shown = ", ".join(repr(v) for v in list(dict.fromkeys(repeated))[:5])
        raise InputError(f"input {path}: duplicate ids {shown}; ids must be unique")
