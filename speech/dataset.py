"""A job's output as a dataset: its Parquet files read back as one table.

The output directories themselves (lease, resume, overwrite, summary) belong to ``jobs.output``;
reading what a job wrote is library work, shared by the jobs, ``speech export`` and tests.
"""

from __future__ import annotations

import posixpath

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq


def read_output(url: str, schema: pa.Schema, columns: list[str] | None = None) -> pa.Table:
    """Every Parquet file under ``url`` as one table with ``schema`` (or its ``columns``);
    columns a file lacks (written by an older version) are null."""
    fs, root = fsspec.core.url_to_fs(url)
    wanted = schema if columns is None else pa.schema([schema.field(c) for c in columns])
    tables = [read_columns(fs, p, wanted) for p in parquet_files(fs, root.rstrip("/"))]
    return pa.concat_tables(tables) if tables else wanted.empty_table()


def parquet_files(fs: fsspec.AbstractFileSystem, root: str) -> list[str]:
    """The Parquet files of output ``root`` (top level: where the jobs write them), sorted."""
    if not fs.exists(root):
        return []
    return sorted(p for p in fs.ls(root, detail=False) if posixpath.basename(p).endswith(".parquet"))


def read_columns(fs, path: str, wanted: pa.Schema) -> pa.Table:
    """``wanted`` columns of one Parquet file; those it lacks (written by an older version) are null."""
    present = set(pq.read_schema(path, filesystem=fs).names)
    table = pq.read_table(path, columns=[n for n in wanted.names if n in present], filesystem=fs)
    return pa.table({field.name: table[field.name].cast(field.type) if field.name in present
                     else pa.nulls(table.num_rows, field.type) for field in wanted}, schema=wanted)
