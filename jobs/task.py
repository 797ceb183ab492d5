"""What a job on the audio corpus spine computes.

The spine (jobs/transcribe.py: inputs, probing, sorting, prepare units, model actors, per-row
errors, resume, summary) is the same for every job that turns audio files into one row each;
a :class:`Task` names the parts that differ. ``speech transcribe`` is ``transcribe.TRANSCRIBE``,
``speech embed`` is ``embed.EMBED``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from speech.asr import ModelKind
from speech.asr.base import FrontEnd
from speech.options import AudioJobOptions


@dataclass(frozen=True)
class Task:
    name: str  # recorded in OUTPUT/_job.json, so a resume refuses another task's output
    # The model's backend (a DEFAULT_BATCH_SECONDS key) and engine, from configs alone, before
    # Ray starts; raises speech.asr.ModelError for a model or options the task cannot use.
    detect: Callable[[AudioJobOptions], ModelKind]
    # (options, kind) -> the CPU front end of the prepare actors (pickled to them by Ray); kind
    # is what detect returned in the driver, so actors never detect again.
    front_end: Callable[[AudioJobOptions, ModelKind], FrontEnd]
    # Ray Data callable class taking (options, kind): packed units (jobs.units) -> a table of
    # output rows (jobs.transcribe.RecognizeUnits or a subclass).
    model_stage: type
    # Of the output rows; it has the columns a resume compares (id, path, input_size, input_mtime).
    schema: Callable[[AudioJobOptions], pa.Schema]
    # (options, ModelKind, wall seconds, changed=, removed=) -> the run's summary dataclass, also
    # written to OUTPUT; changed and removed: the rows this run redid and dropped.
    summarize: Callable[..., Any]
