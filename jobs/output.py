"""A job's output directory: resume, overwrite, read back, summary.

Jobs write Parquet files straight into OUTPUT. A rerun into the same OUTPUT resumes:
rows already written are skipped, so every input ends up in the output exactly once
even when a run was killed. Parquet writes its footer last, so a file cut short by
a kill does not parse, and such partial files are removed before resuming; a file
that parses is complete.

Both jobs summarize a run the same way: :func:`count_rows` reads every run's rows back
and counts them, the job adds its own figures, and :func:`write_summary` writes the result
as ``OUTPUT/_summary.json``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Mapping, TypeVar

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

S = TypeVar("S")

SUMMARY_FILE = "_summary.json"
JOB_FILE = "_job.json"  # what wrote this output; a resume must be the same job


class OutputError(ValueError):
    """The output location cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class Output:
    """An output directory opened for a run."""

    url: str
    done_ids: frozenset[str]  # ids already written by earlier runs


def open_output(url: str, *, job: Mapping[str, Any], overwrite: bool) -> Output:
    """Prepare ``url`` for a run of ``job`` (a JSON-able description: model, backend, ...).

    Fresh or ``overwrite``: start empty. Otherwise resume: refuse if an earlier run was a
    different job, drop partial Parquet files, and return the ids already written.
    """
    fs, root = fsspec.core.url_to_fs(url)
    if overwrite and fs.exists(root):
        fs.rm(root, recursive=True)
    fs.makedirs(root, exist_ok=True)
    job_path = f"{root.rstrip('/')}/{JOB_FILE}"
    if fs.exists(job_path):
        with fs.open(job_path, "r") as f:
            previous = json.load(f)
        if previous != dict(job):
            changed = sorted(k for k in set(previous) | set(job) if previous.get(k) != job.get(k))
            raise OutputError(
                f"output {url} holds a different job's results (differs in: {', '.join(changed)}); "
                "pass --overwrite to replace them, or choose another output"
            )
    elif fs.ls(root):
        raise OutputError(f"output {url} is not empty and was not written by this tool; choose another output")
    else:
        with fs.open(job_path, "w") as f:
            json.dump(dict(job), f, indent=2)

    done: set[str] = set()
    for path in _parquet_files(fs, root):
        try:
            ids = pq.read_table(path, columns=["id"], filesystem=fs)["id"].to_pylist()
        except (pa.ArrowInvalid, OSError) as err:
            log.warning("removing partial output file %s (%s)", path, err)
            fs.rm(path)
            continue
        done.update(ids)
    return Output(url, frozenset(done))


def read_output(url: str, schema: pa.Schema, columns: list[str] | None = None) -> pa.Table:
    """Every Parquet file under ``url`` as one table with ``schema`` (or its ``columns``)."""
    fs, root = fsspec.core.url_to_fs(url)
    tables = [pq.read_table(p, columns=columns, filesystem=fs) for p in _parquet_files(fs, root)]
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    return pa.concat_tables([t.cast(schema) for t in tables]) if tables else schema.empty_table()


@dataclass(frozen=True)
class RowCounts:
    """A job's whole output (every run into it), counted for the job's summary."""

    rows: int
    ok: int  # rows without an error
    errors: int
    duplicate_ids: int  # rows whose id an earlier row has: 0 unless something is badly wrong
    sums: Mapping[str, float]  # each summed column, over the ok rows (nulls and NaN skipped)


def count_rows(url: str, schema: pa.Schema, sum_columns: Sequence[str] = ()) -> RowCounts:
    """Read every run's rows under ``url`` (``schema``'s ``id``, ``error`` and ``sum_columns``) and count them."""
    table = read_output(url, schema, columns=["id", "error", *sum_columns])
    ok = table.filter(pc.is_null(table["error"]))
    sums = {column: float(np.nansum(ok[column].to_numpy(zero_copy_only=False))) for column in sum_columns}
    duplicates = table.num_rows - len(pc.unique(table["id"]))
    return RowCounts(rows=table.num_rows, ok=ok.num_rows, errors=table.num_rows - ok.num_rows,
                     duplicate_ids=duplicates, sums=sums)


def write_summary(url: str, summary: S) -> S:
    """Write a job's summary (a dataclass) as ``_summary.json`` in output ``url``; returns it."""
    with fsspec.open(f"{url.rstrip('/')}/{SUMMARY_FILE}", "w") as f:
        json.dump(asdict(summary), f, indent=2)
    return summary


def _parquet_files(fs: fsspec.AbstractFileSystem, root: str) -> list[str]:
    if not fs.exists(root):
        return []
    return sorted(p for p in fs.find(root) if p.endswith(".parquet"))
