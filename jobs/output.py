"""A job's output directory: one job at a time, resume, overwrite, read back, summary.

Jobs write Parquet files straight into OUTPUT. A rerun into the same OUTPUT resumes:
rows already written are skipped, so every input ends up in the output exactly once
even when a run was killed. Parquet writes its footer last, so a file cut short by
a kill does not parse, and such partial files are removed before resuming; a file
that parses is complete.

:func:`open_output` makes the directory safe to use before anything is written:

* it refuses an OUTPUT that is a file, that cannot be created, or that equals or contains
  one of the job's inputs;
* it takes the output's lease (:mod:`jobs.lock`), so a second job into the same OUTPUT stops
  at once, naming the first;
* ``overwrite`` removes only what this tool wrote (:func:`own_entries`) and refuses an
  OUTPUT that holds anything else: it never deletes a file it did not write.

A resumed job may drop rows whose inputs changed or went away (:meth:`Output.drop`). Each
Parquet file concerned is rewritten under a temporary name and then renamed over the
original, so at every moment a row is in exactly one file (a crash leaves the original and a
temporary file that the next :func:`open_output` removes).

Every job summarizes a run the same way: :func:`count_rows` reads every run's rows back
and counts them, the job adds its own figures, and :func:`write_summary` writes the result
as ``OUTPUT/_summary.json``. The jobs over audio inputs (transcribe, embed) share the figures
of :class:`Summary` and add theirs in a subclass.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Self, TypeVar

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.lock import LOCK_FILE, Lease, LockHeld
from speech.dataset import parquet_files, read_columns, read_output
from speech.files import is_local

log = logging.getLogger(__name__)

S = TypeVar("S")

SUMMARY_FILE = "_summary.json"
JOB_FILE = "_job.json"  # what wrote this output; a resume must be the same job
AUDIO_DIR = "audio"  # synthesis: OUTPUT/audio/<id>.<fmt>
VERIFY_DIR = "_verify"  # synthesis: the round-trip transcription's work directory
FINAL_DIR = "final"  # fine-tuning: the trained model, save_pretrained layout
TRAIN_DIR = "_train"  # fine-tuning: Ray Train's run directory (checkpoints, its state)
_REWRITE_PREFIX = "_rewrite-"  # a Parquet file being rewritten without some rows

#: Directories a job of each kind (the "job" of its _job.json) writes under OUTPUT, with the
#: file endings allowed in them (None: anything, it is the job's own work directory).
JOB_DIRS: Mapping[str, Mapping[str, tuple[str, ...] | None]] = {
    "synthesize": {AUDIO_DIR: (".flac", ".wav"), VERIFY_DIR: None},
    "finetune": {FINAL_DIR: None, TRAIN_DIR: None},
}


class OutputError(ValueError):
    """The output location cannot be used; the message says why and what to do."""


class Output:
    """An output directory opened for a run, holding its lease until :meth:`release`.

    Use it as a context manager (or call :meth:`release`) so the lease is given back when
    the run ends, however it ends.
    """

    def __init__(self, url: str, fs: fsspec.AbstractFileSystem, root: str, done: pa.Table, lease: Lease):
        self.url, self.fs, self.root = url, fs, root
        self.done = done  # rows earlier runs wrote: "id" and the columns open_output was asked for
        self.lease = lease

    @property
    def done_ids(self) -> frozenset[str]:
        """Ids already written by earlier runs."""
        return frozenset(self.done["id"].to_pylist())

    def drop(self, ids: Sequence[str]) -> int:
        """Remove the rows with these ids from the Parquet files, crash-safely; returns rows removed."""
        if not ids:
            return 0
        value_set = pa.array(sorted(set(ids)), pa.string())
        removed = 0
        for path in parquet_files(self.fs, self.root):
            table = pq.read_table(path, filesystem=self.fs)
            keep = pc.invert(pc.is_in(table["id"], value_set=value_set))
            kept = table.filter(keep)
            if kept.num_rows == table.num_rows:
                continue
            removed += table.num_rows - kept.num_rows
            if kept.num_rows == 0:
                self.fs.rm(path)
            else:
                replace_table(self.fs, path, kept)
        self.done = self.done.filter(pc.invert(pc.is_in(self.done["id"], value_set=value_set)))
        return removed

    def release(self) -> None:
        """Give the output's lease back (safe to call twice)."""
        self.lease.release()

    def __enter__(self) -> Output:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def open_output(url: str, *, job: Mapping[str, Any], overwrite: bool, inputs: Sequence[str] = (),
                schema: pa.Schema | None = None, columns: Sequence[str] = ("id",),
                defaults: Mapping[str, Any] | None = None) -> Output:
    """Prepare ``url`` for a run of ``job`` (a JSON-able description: model, backend, ...).

    Fresh or ``overwrite``: start empty (``overwrite`` removes this tool's files only).
    Otherwise resume: refuse if an earlier run was a different job, drop partial Parquet
    files, and return the rows already written (``columns`` of ``schema``; columns an older
    file lacks are null). ``inputs`` are the job's input paths or URLs: none may be OUTPUT
    or inside it. ``defaults``: each option's default (JSON), so an option added since an
    earlier run wrote ``_job.json`` counts as unchanged while it keeps its default. The returned
    output holds the lease; release it when the run ends.

    Raises:
        OutputError: with a one-line reason (a file, not writable, an input inside it,
            another job running into it, a different job's results, files of others in it).
    """
    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/") or "/"
    _check_outside_inputs(url, fs, root, inputs)
    try:
        if fs.isfile(root):
            raise OutputError(f"output {url} is a file; give a directory (existing or new)")
        if fs.exists(root) and not fs.exists(f"{root}/{JOB_FILE}") and _foreign(fs, root, None):
            raise OutputError(f"output {url} is not empty and was not written by this tool; choose another output")
        fs.makedirs(root, exist_ok=True)
        lease = Lease(fs, root).acquire()
    except LockHeld as err:
        raise OutputError(f"output {url} is {err}; wait for it to finish, or choose another output") from None
    except OSError as err:
        raise OutputError(f"cannot use output {url}: {err.strerror or err}") from err
    try:
        done = _prepare(url, fs, root, job, overwrite, schema, columns, defaults or {})
    except BaseException:
        lease.release()
        raise
    return Output(url, fs, root, done, lease)


def _prepare(url: str, fs, root: str, job: Mapping[str, Any], overwrite: bool, schema: pa.Schema | None,
             columns: Sequence[str], defaults: Mapping[str, Any]) -> pa.Table:
    """Under the lease: check or write ``_job.json``, clear the output if asked, read what is done."""
    job_path = f"{root}/{JOB_FILE}"
    previous = None
    if fs.exists(job_path):
        with fs.open(job_path, "r") as f:
            previous = json.load(f)
    foreign = _foreign(fs, root, previous)
    if foreign and (previous is None or overwrite):
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise OutputError(f"output {url} holds files this tool did not write ({shown}); it is never cleared "
                          "while it does: choose another output, or move them away")
    if overwrite and previous is not None:
        _clear(fs, root, previous)
        previous = None
    # An option the earlier run's version did not have yet ran at its default there.
    recorded = previous if previous is None else {**{k: v for k, v in defaults.items() if k in job}, **previous}
    if recorded is not None and recorded != dict(job):
        changed = sorted(k for k in set(recorded) | set(job) if recorded.get(k) != job.get(k))
        raise OutputError(
            f"output {url} holds a different job's results (differs in: {', '.join(changed)}); "
            "pass --overwrite to replace them, or choose another output"
        )
    try:
        if previous is None:
            with fs.open(job_path, "w") as f:
                json.dump(dict(job), f, indent=2)
        for leftover in fs.ls(root, detail=False):
            if posixpath.basename(leftover).startswith(_REWRITE_PREFIX):  # a rewrite cut short: the original holds
                fs.rm(leftover)
    except OSError as err:
        raise OutputError(f"cannot write to output {url}: {err.strerror or err}") from err
    return _done_rows(fs, root, schema, columns)


def _done_rows(fs, root: str, schema: pa.Schema | None, columns: Sequence[str]) -> pa.Table:
    types = {name: (schema.field(name).type if schema is not None else pa.string()) for name in columns}
    wanted = pa.schema([(name, types[name]) for name in columns])
    tables = []
    for path in parquet_files(fs, root):
        try:
            tables.append(read_columns(fs, path, wanted))
        except (pa.ArrowInvalid, OSError) as err:
            log.warning("removing partial output file %s (%s)", path, err)
            fs.rm(path)
    return pa.concat_tables(tables) if tables else wanted.empty_table()


# --- what this tool wrote ------------------------------------------------------------------


def own_entries(fs, root: str, previous_job: Mapping[str, Any] | None) -> tuple[list[str], list[str]]:
    """``(own, foreign)`` top-level entries of output ``root`` (paths).

    Own: the lease and its temporary files, always; and where ``_job.json`` exists
    (``previous_job``), ``_job.json``, ``_summary.json``, the Parquet files, interrupted
    rewrites, and the directories of :data:`JOB_DIRS` of its job kind holding only files with
    the allowed endings. Everything else is foreign.
    """
    own, foreign = [], []
    dirs = JOB_DIRS.get(previous_job.get("job"), {}) if previous_job is not None else {}
    for entry in fs.ls(root, detail=True):
        path = entry["name"].rstrip("/")
        name = posixpath.basename(path)
        if name == LOCK_FILE or name.startswith(f"{LOCK_FILE}."):
            mine = entry["type"] != "directory"
        elif previous_job is None:
            mine = False
        elif entry["type"] == "directory":
            mine = name in dirs and _only_endings(fs, path, dirs[name])
        else:
            mine = name in (JOB_FILE, SUMMARY_FILE) or name.endswith(".parquet") or name.startswith(_REWRITE_PREFIX)
        (own if mine else foreign).append(path)
    return own, foreign


def _foreign(fs, root: str, previous_job: Mapping[str, Any] | None) -> list[str]:
    return [posixpath.relpath(p, root) for p in own_entries(fs, root, previous_job)[1]]


def _only_endings(fs, directory: str, endings: tuple[str, ...] | None) -> bool:
    if endings is None:
        return True
    return all(p.lower().endswith(endings) for p in fs.find(directory))


def _clear(fs, root: str, previous_job: Mapping[str, Any]) -> None:
    """Remove this tool's files from ``root`` (the caller checked that nothing else is there)."""
    for path in own_entries(fs, root, previous_job)[0]:
        name = posixpath.basename(path)
        if name == LOCK_FILE or name.startswith(f"{LOCK_FILE}."):
            continue  # the lease of this very run, and its heartbeat's temporary file
        fs.rm(path, recursive=True)


def _check_outside_inputs(url: str, fs, root: str, inputs: Sequence[str]) -> None:
    """OutputError if an input is ``root`` or lies inside it (``--overwrite`` would delete it,
    and a resumed run would read its own output as input). Local paths are compared with
    their directories' symlinks resolved."""
    protocol = _protocol(fs)
    roots = {root, os.path.realpath(root)} if is_local(fs) else {posixpath.normpath(root)}
    real_dirs: dict[str, str] = {}
    for item in inputs:
        item_fs, item_path = fsspec.core.url_to_fs(item)
        if _protocol(item_fs) != protocol or any(c in item_path for c in "*?["):
            continue
        if is_local(item_fs):
            absolute = os.path.abspath(item_path)
            parent, name = os.path.split(absolute)
            if parent not in real_dirs:
                real_dirs[parent] = os.path.realpath(parent)
            candidates = {absolute, os.path.join(real_dirs[parent], name)}
        else:
            candidates = {posixpath.normpath(item_path)}
        for candidate in candidates:
            for out in roots:
                if candidate == out or candidate.startswith(out.rstrip("/") + "/"):
                    relation = "is" if candidate == out else "contains"
                    raise OutputError(f"output {url} {relation} the input {item}; choose an output outside the inputs")


def _protocol(fs) -> str:
    return fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]


# --- reading and writing rows --------------------------------------------------------------


def replace_table(fs: fsspec.AbstractFileSystem, path: str, table: pa.Table) -> None:
    """Write ``table`` over the Parquet file ``path`` all at once: to a temporary name beside
    it first (which :func:`open_output` removes if a crash leaves it), then renamed over it."""
    directory, name = posixpath.split(path)
    temp = f"{directory}/{_REWRITE_PREFIX}{name}.tmp"
    pq.write_table(table, temp, filesystem=fs)
    fs.mv(temp, path)


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


@dataclass(frozen=True)
class Summary:
    """Figures of one run of a job over audio inputs (transcribe, embed), as written to
    ``OUTPUT/_summary.json``; each job's subclass adds its own after these."""

    rows: int
    ok: int
    errors: int
    duplicate_ids: int  # always 0 unless something is badly wrong; checked, not assumed
    changed_inputs: int  # this run: rows redone because their input's size, time or path changed
    removed_inputs: int  # this run: rows dropped because their id is no longer among the inputs
    audio_seconds: float  # decoded audio of the ok rows (those that got a transcript or an embedding)
    wall_seconds: float  # this run's pipeline time, input listing to summary (Ray start excluded)
    rtfx: float  # audio_seconds / wall_seconds
    model: str
    output: str

    @classmethod
    def of(cls, counts: RowCounts, *, model: str, output: str, wall_seconds: float, changed: int, removed: int,
           **figures: Any) -> Self:
        """The summary of a run whose whole output is ``counts`` (summed over ``duration_s``, the
        ok rows' audio); ``figures`` are the subclass's own fields."""
        if counts.duplicate_ids:
            log.error("output %s has %d duplicate ids", output, counts.duplicate_ids)
        audio = counts.sums["duration_s"]
        return cls(
            rows=counts.rows,
            ok=counts.ok,
            errors=counts.errors,
            duplicate_ids=counts.duplicate_ids,
            changed_inputs=changed,
            removed_inputs=removed,
            audio_seconds=round(audio, 3),
            wall_seconds=round(wall_seconds, 3),
            rtfx=round(audio / wall_seconds, 3) if wall_seconds > 0 else 0.0,
            model=model,
            output=output,
            **figures,
        )


def write_summary(url: str, summary: S) -> S:
    """Write a job's summary (a dataclass) as ``_summary.json`` in output ``url``; returns it."""
    with fsspec.open(f"{url.rstrip('/')}/{SUMMARY_FILE}", "w") as f:
        json.dump(asdict(summary), f, indent=2)
    return summary
