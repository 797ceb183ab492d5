"""Typed options, validated once, with errors that name the field.

Every job's options come in two parts (:class:`~speech.options.base.JobOptions`):

* ``speech transcribe``: ``asr: AsrOptions`` (also each served ASR model's options) and
  ``run: AudioRun``;
* ``speech embed``: ``embedding: EmbeddingOptions`` and ``run: AudioRun``;
* ``speech synthesize``: ``tts: TtsOptions`` (also each served TTS model's options) and
  ``run: SynthesizeRun``;
* ``speech finetune``: ``training: TrainingOptions`` and ``run: FinetuneRun``.

The first part decides the output rows (it is the output's ``_job.json``), the second says
where and how the job runs.

A YAML file from ``configs/`` gives the base values as ONE flat mapping; command-line flags
override them; :func:`load_options` validates the merge, each key going to the part that
declares it. Everything downstream receives a frozen options object, reads it flat
(``options.model``, ``options.actors``) or by part (``options.asr``), and never re-parses
strings. A resumed run must agree with the earlier ones on the rows part; Serve builds its
models from the rows part alone.

Adding an option is one edit: declare the field, with its type, default and
``Field(description=...)``, in the part it belongs to (does it change what a row contains? the
rows part; else the run part). Then the config loader accepts it, ``_job.json`` (rows part) or
not (run part) records it, Serve accepts it in ``asr_options``/``tts_options`` (rows part;
the few a server cannot take are listed, each with its reason, in ``NOT_SERVED`` of
serve/asr.py and serve/tts.py), and the command gets a flag ``--the-field-name`` whose type,
choices and help come from the field (:mod:`cli.flags`; a new kind of annotation needs a parser
there). Document it in the job's ``configs/*.yaml``. A field's name must be unique across the
job's two parts (checked when the class is defined).
"""

from speech.options.asr import DEFAULT_TEMPERATURES, AsrOptions, ComputeType, DecodingOptions, TranscribeOptions
from speech.options.audio import (
    DEFAULT_BATCH_SECONDS,
    AudioJobOptions,
    AudioModelOptions,
    AudioRun,
    Dtype,
    ModelRun,
    check_device,
)
from speech.options.base import (
    ActorPool,
    JobOptions,
    Options,
    OptionsError,
    actor_pool,
    describe,
    load_options,
    read_config,
)
from speech.options.embed import EmbeddingOptions, EmbedOptions
from speech.options.stream import StreamOptions
from speech.options.train import FinetuneOptions, FinetuneRun, TrainingOptions
from speech.options.tts import SPEEDS, SynthesizeOptions, SynthesizeRun, TtsOptions, TtsRun

__all__ = [
    "DEFAULT_BATCH_SECONDS",
    "DEFAULT_TEMPERATURES",
    "SPEEDS",
    "ActorPool",
    "AsrOptions",
    "AudioJobOptions",
    "AudioModelOptions",
    "AudioRun",
    "ComputeType",
    "DecodingOptions",
    "Dtype",
    "EmbedOptions",
    "EmbeddingOptions",
    "FinetuneOptions",
    "FinetuneRun",
    "JobOptions",
    "ModelRun",
    "Options",
    "OptionsError",
    "StreamOptions",
    "SynthesizeOptions",
    "SynthesizeRun",
    "TrainingOptions",
    "TranscribeOptions",
    "TtsOptions",
    "TtsRun",
    "actor_pool",
    "check_device",
    "describe",
    "load_options",
    "read_config",
]
