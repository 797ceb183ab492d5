"""Typed job options, validated once, with errors that name the field.

A YAML file from ``configs/`` gives the base values; command-line flags override
them; :func:`load_options` validates the merge. Everything downstream receives a
frozen options object and never re-parses strings.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from speech.files import READ_TIMEOUT_S

Dtype = Literal["float32", "float16", "bfloat16"]

#: Default batch budget (seconds of padded audio per model call) by backend: (CPU, GPU).
#: A CTC model's cost follows the audio, and on a CPU big batches only add cache misses and
#: quadratic attention (docs/benchmarks.md); a GPU wants them large. Every Whisper window costs
#: a 30 s encoder pass whatever it holds, so its budget counts 30 s windows, and its decoder's
#: small steps gain from batching even on a CPU (8 windows ran 1.6x faster than 1, see docs).
DEFAULT_BATCH_SECONDS = {"ctc": (10.0, 240.0), "whisper": (240.0, 480.0)}
#: Embedding runs the network of a CTC model without its output layer: the same costs.
DEFAULT_BATCH_SECONDS["embed"] = DEFAULT_BATCH_SECONDS["ctc"]

#: Speaking rates a synthesis takes (1.0 normal; OpenAI's speech API allows the same range).
SPEEDS = (0.25, 4.0)


class OptionsError(ValueError):
    """Invalid options; the message names the field and what is allowed."""


class _Options(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ActorPool(_Options):
    """A fixed (``min == max``) or autoscaling pool of model actors."""

    min: int = Field(1, ge=1)
    max: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> ActorPool:
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) must be >= min ({self.min})")
        return self


#: faster-whisper's and openai-whisper's temperature schedule: greedy first, then sampling ever
#: hotter for the windows whose output fails the thresholds.
DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)

#: Compute types of the CTranslate2 engine (on a CPU, float16 is refused by CTranslate2).
ComputeType = Literal["float32", "float16", "int8", "int8_float32"]


class DecodingOptions(_Options):
    """How Whisper decodes a 30 s window; the same for both engines, the job and the server.

    Defaults are faster-whisper's (``WhisperModel.transcribe``), except two: ``beam_size`` is
    1 (greedy; faster-whisper's is 5) because this project decodes greedily unless told
    otherwise, and ``condition_on_previous_text`` is False (faster-whisper's is True) because
    windows of different files share batches; see docs/whisper.md.
    """

    beam_size: int = Field(1, ge=1)  # 1: greedy search
    best_of: int = Field(5, ge=1)  # samples drawn per window at a temperature above 0; the likeliest is kept
    # Tried in order: a window is decoded at the first, and again at the next one while its
    # output compresses too well (a loop) or is too unlikely.
    temperature: tuple[float, ...] = DEFAULT_TEMPERATURES
    compression_ratio_threshold: float | None = Field(2.4, gt=0)  # gzip ratio of the text above it: retry hotter
    logprob_threshold: float | None = -1.0  # mean token log-probability below it: retry hotter
    # No-speech probability above it, with the mean log-probability below logprob_threshold:
    # the window is silence and gives no text.
    no_speech_threshold: float | None = Field(0.6, ge=0, le=1)
    initial_prompt: str | None = None  # text "before" each file's first window (spelling, names, style)
    hotwords: str | None = None  # text before every window, to favour these words
    # Window k+1 of a file is decoded after window k, prompted with its text (long-form
    # coherence, at the price of one batch per window index).
    condition_on_previous_text: bool = False

    @field_validator("temperature", mode="before")
    @classmethod
    def _temperatures(cls, value: Any) -> Any:
        """``0.2``, ``"0,0.2,0.4"`` or a list; each in [0, 1], strictly increasing."""
        if isinstance(value, str):
            try:
                value = [float(part) for part in value.split(",") if part.strip()]
            except ValueError:
                raise ValueError(f"expected numbers separated by commas, got {value!r}") from None
        if isinstance(value, (int, float)):
            value = [value]
        if isinstance(value, (list, tuple)):
            if not value:
                raise ValueError("give at least one temperature")
            if any(not 0 <= float(t) <= 1 for t in value) or any(b <= a for a, b in itertools.pairwise(value)):
                raise ValueError(f"temperatures must lie in [0, 1] and increase, got {list(value)}")
        return value

    @field_validator("compression_ratio_threshold", "logprob_threshold", "no_speech_threshold", mode="before")
    @classmethod
    def _none_disables(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip().lower() in ("none", "off") else value

    @field_validator("initial_prompt", "hotwords")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    def decoding(self) -> DecodingOptions:
        """Just these fields (also of a subclass such as TranscribeOptions)."""
        return DecodingOptions(**{name: getattr(self, name) for name in DecodingOptions.model_fields})


#: Fields of the corpus-job options that affect where and how fast a job runs, not its rows.
_RUNTIME_ONLY = {
    "inputs", "output", "address", "overwrite", "batch_seconds", "actors", "cpus_per_actor",
    "gpus_per_actor", "resources_per_actor", "torch_threads", "prepare", "prepare_actors", "cpus_per_prepare",
    "prepare_window", "object_store_mb", "read_timeout_s",
}


class AudioJobOptions(_Options):
    """What every job on the audio corpus spine shares (``speech transcribe``, ``speech embed``):
    inputs and output, batching, the model actors, preparation and chunking."""

    inputs: list[str] = Field(min_length=1)  # directories, globs, URLs or manifest files
    output: str  # output directory (local path or fsspec URL)
    model: str  # hub id or local checkpoint directory
    address: str | None = None  # Ray cluster address; None starts a local Ray
    overwrite: bool = False  # start fresh instead of resuming into an existing output

    # Batching: the budget is padded audio seconds per model call.
    batch_seconds: float | None = Field(None, gt=0)  # None: by backend and device, DEFAULT_BATCH_SECONDS
    # Models that take no attention mask change their output when padded; with this on,
    # they only ever see batches of equal-length inputs.
    strict_padding: bool = True

    # Model actors (the network runs here).
    actors: int | ActorPool = 1
    cpus_per_actor: float = Field(1.0, gt=0)
    gpus_per_actor: float = Field(0.0, ge=0)  # fractions share a GPU between actors
    # Custom Ray resources per model actor, e.g. {"model_slots": 1}: they pin actors to the
    # nodes that declare them, or spread one per node, the way GPUs do.
    resources_per_actor: dict[str, float] = Field(default_factory=dict)
    dtype: Dtype = "float32"  # transformers models
    torch_threads: int | None = Field(None, ge=1)  # None: cpus_per_actor rounded up (also CTranslate2's threads)

    # CPU preparation stage (read, decode, resample, features).
    prepare: Literal["auto", "separate", "fused"] = Field(
        "auto",
        description="Where files are decoded and featurized: 'separate' CPU actors (prepare_actors x "
        "cpus_per_prepare), or 'fused' into the model actors' processes (a thread beside the model); "
        "'auto' fuses when the model actors use no GPU and the cluster has fewer than 4 CPUs per model "
        "replica (jobs/fused.py).",
    )
    prepare_actors: int = Field(1, ge=1)
    cpus_per_prepare: float = Field(0.5, gt=0)
    prepare_window: int = Field(64, ge=1)  # files decoded together and bucketed per window
    # Object-store memory (MiB) the job's blocks in flight may use. Decoding is ~100x faster
    # than a CPU model, so without a cap preparation runs through the whole corpus and its
    # output waits in memory; None: 16 full batches per model actor, at least 128 MiB.
    object_store_mb: float | None = Field(None, gt=0)

    # Long inputs are cut into overlapping chunks and stitched at the model's output frames.
    chunk_length_s: float = Field(30.0, gt=0)
    stride_length_s: float | None = Field(None, ge=0)  # None: chunk_length_s / 6 each side

    # Longer files get an error row instead of a result (None: no limit), from the header
    # where it gives the length, else as soon as decoding passes it. A guard against absurd
    # inputs; without it, long files are chunked and streamed through.
    max_duration_s: float | None = Field(None, gt=0)
    # Reading one file (or a manifest, or a remote file's metadata) that takes longer gives
    # that row an error instead of hanging the job (None: wait forever).
    read_timeout_s: float | None = Field(READ_TIMEOUT_S, gt=0)


    def result_options(self) -> dict:
        """The options that decide what the output rows contain.

        A resumed run must agree with the earlier runs on these; where and how fast
        the job runs (inputs, resources, batching) may change between runs.
        """
        return self.model_dump(mode="json", exclude=_RUNTIME_ONLY)

    @model_validator(mode="after")
    def _consistent(self) -> AudioJobOptions:
        if self.dtype == "float16" and self.gpus_per_actor == 0:
            raise ValueError("dtype float16 needs a GPU (gpus_per_actor > 0); use float32 or bfloat16 on CPU")
        for name, amount in self.resources_per_actor.items():
            if name in ("CPU", "GPU"):
                raise ValueError(f"resources_per_actor: use cpus_per_actor / gpus_per_actor instead of {name!r}")
            if amount <= 0:
                raise ValueError(f"resources_per_actor.{name} must be > 0, got {amount}")
        if 2 * self.stride_s >= self.chunk_length_s:
            raise ValueError(
                f"stride_length_s ({self.stride_s}) must be less than half of chunk_length_s ({self.chunk_length_s})"
            )
        return self

    @property
    def threads(self) -> int:
        """Intra-op threads of a model actor: ``torch_threads``, else ``cpus_per_actor`` rounded up."""
        return self.torch_threads or max(1, math.ceil(self.cpus_per_actor))

    @property
    def stride_s(self) -> float:
        return self.chunk_length_s / 6 if self.stride_length_s is None else self.stride_length_s

    def budget_s(self, backend: str) -> float:
        """Padded audio seconds per model call: ``batch_seconds``, else the default of
        ``backend`` (a key of ``DEFAULT_BATCH_SECONDS``) on this job's device."""
        if self.batch_seconds is not None:
            return self.batch_seconds
        cpu, gpu = DEFAULT_BATCH_SECONDS[backend]
        return gpu if self.gpus_per_actor > 0 else cpu

    @property
    def pool(self) -> ActorPool:
        return self.actors if isinstance(self.actors, ActorPool) else ActorPool(min=self.actors, max=self.actors)

    def object_store_bytes(self, backend: str) -> int:
        """The Ray Data object-store budget of the job in bytes (see ``object_store_mb``)."""
        if self.object_store_mb is not None:
            return int(self.object_store_mb * 2**20)
        # A full batch is budget_s of float32 audio (or features of similar size) at 16 kHz.
        batch_bytes = self.budget_s(backend) * 16_000 * 4
        return int(max(128 * 2**20, 16 * batch_bytes * self.pool.max))


class TranscribeOptions(AudioJobOptions, DecodingOptions):
    """Options of ``speech transcribe``; see configs/transcribe.yaml for a commented example.

    Whisper's decoding options are the fields of :class:`DecodingOptions` (inherited, so a
    config file and the command line set them flat, like every other option).
    """

    # CTranslate2 models (a model.bin) only: None is the stored precision where the device
    # runs it, else float32 (on a CPU, float16 weights run as float32).
    compute_type: ComputeType | None = None

    # A row's manifest language wins, then this one; None (or "auto") lets Whisper detect
    # each file's language from its first window. CTC models only record it.
    language: str | None = None

    # Sequence models (Whisper); CTC models refuse translate.
    task: Literal["transcribe", "translate"] = "transcribe"  # translate: English text
    timestamps: Literal["none", "segment", "word"] = "segment"  # word: alignment-head timings
    # Silero VAD: Whisper packs speech into 30 s windows; CTC skips silence and splits
    # long speech at pauses instead of fixed overlapping chunks.
    vad: bool = False
    max_new_tokens: int | None = Field(None, ge=1)  # per 30 s window; None: the model's half context
    pack: bool = Field(False, description=(
        "Whisper: pack short files (one window each, in duration order) into shared 30 s windows, 1 s of "
        "silence apart, decode with timestamps and split the text back to each file by time; languages are "
        "known or detected per file first. Off by default: see docs/benchmarks.md for its speed and WER."))

    @field_validator("language")
    @classmethod
    def _auto_is_none(cls, value: str | None) -> str | None:
        return None if value is None or value.strip().lower() in ("", "auto") else value.strip()


class EmbedOptions(AudioJobOptions):
    """Options of ``speech embed``; see configs/embed.yaml for a commented example."""

    # Which hidden state: N is transformers' ``hidden_states[N]`` (0: the transformer's input,
    # num_hidden_layers: its last layer; negative counts from the end), "all": every one.
    layer: int | Literal["all"] = -1
    # mean: one vector per file, averaged over its real frames (padding and chunk overlap
    # excluded); none: every frame's vector, at the model's frame rate.
    pooling: Literal["mean", "none"] = "mean"  # the --pool flag ("pool" names the actor pool)


#: FinetuneOptions fields that affect where and how fast training runs, not the model it makes.
#: ``epochs`` is among them so that a finished run can be continued with more epochs.
_TRAIN_RUNTIME_ONLY = {"output", "address", "overwrite", "epochs", "workers", "cpus_per_worker", "gpus_per_worker", "torch_threads"}


class FinetuneOptions(_Options):
    """Options of ``speech finetune``; see configs/finetune.yaml for a commented example."""

    train: str  # manifest (.jsonl/.csv/.parquet) with 'path' and 'text' columns
    output: str  # output directory: checkpoints, _summary.json, final/
    model: str  # hub id or local directory of a CTC checkpoint (AutoModelForCTC) with its processor
    eval: str | None = None  # manifest scored (CER, WER) after every epoch; None: no evaluation
    address: str | None = None  # Ray cluster address; None starts a local Ray
    overwrite: bool = False  # start fresh instead of resuming from OUTPUT's last checkpoint

    epochs: int = Field(3, ge=1)
    lr: float = Field(1e-4, gt=0)  # AdamW learning rate, constant
    weight_decay: float = Field(0.0, ge=0)
    batch_seconds: float = Field(60.0, gt=0)  # padded audio seconds per batch and worker
    freeze_feature_encoder: bool = False  # keep the convolutional feature encoder's weights
    extend_vocab: bool = False  # add characters the tokenizer lacks (and rows to the output layer)
    max_duration_s: float | None = Field(30.0, gt=0)  # longer files are left out (None: no limit)
    seed: int = Field(0, ge=0)  # batch order and new output rows

    # Ray Train workers: one model replica each, gradients averaged (DDP).
    workers: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)  # > 0: train on GPUs (NCCL), else CPUs (gloo)
    torch_threads: int | None = Field(None, ge=1)  # None: cpus_per_worker rounded up

    def result_options(self) -> dict:
        """The options that decide the trained model; a resumed run must agree on them."""
        return self.model_dump(mode="json", exclude=_TRAIN_RUNTIME_ONLY)


class SynthesizeOptions(_Options):
    """Options of ``speech synthesize``; see configs/synthesize.yaml for a commented example."""

    input: str  # text file (one utterance a line), .jsonl, .csv or .parquet with a 'text' column
    output: str  # output directory (local path or fsspec URL)
    model: str  # checkpoint directory (or hub id for vits)
    backend: Literal["chattts", "kokoro", "vits"] | None = None  # None: detected from the checkpoint
    address: str | None = None  # Ray cluster address; None starts a local Ray
    overwrite: bool = False

    # Defaults for rows whose input gives none.
    voice: str | None = None  # None: the model's default voice; kokoro blends: "af_heart:0.7+am_adam:0.3"
    # Voices dealt to the rows without one of their own, in corpus order, from a list shuffled
    # with `seed` (a speaker-diverse dataset, the same on every run); None: `voice` for all.
    voices: list[str] | None = Field(None, min_length=1)
    seed: int = Field(0, ge=0)
    language: str | None = None  # also the language numbers and symbols are read in (en, ko, zh)

    format: Literal["flac", "wav"] = "flac"
    embed_audio: bool = True  # also store each file's bytes in the Parquet rows (portable dataset)

    # Text front end.
    normalize: bool = True  # write out numbers, dates, currencies, units ... (en, ko, zh) before synthesis
    unknown_chars: Literal["error", "drop", "spell"] = "error"  # letters/digits the model cannot say
    max_text_chars: int = Field(5000, ge=1)  # longer rows are refused with an error
    max_piece_chars: int | None = Field(None, ge=8)  # None: the backend's own limit
    sentence_pause_s: float = Field(0.1, ge=0)  # silence between the pieces of a row
    speed: float | None = Field(None, ge=SPEEDS[0], le=SPEEDS[1])  # speaking rate (vits, kokoro), 1.0 normal; None: the model's

    # ChatTTS sampling (ignored by other backends).
    refine_text: bool = False  # let the GPT add prosody markers first
    temperature: float = Field(0.3, gt=0)
    top_p: float = Field(0.7, gt=0, le=1)
    top_k: int = Field(20, ge=1)
    max_new_tokens: int = Field(2048, ge=1)  # audio tokens per piece

    # Model actors. Backends that batch take up to batch_size pieces of similar length per call.
    batch_size: int = Field(8, ge=1)
    rows_per_call: int = Field(16, ge=1)  # rows handed to a model actor at once
    actors: int | ActorPool = 1
    cpus_per_actor: float = Field(1.0, gt=0)
    gpus_per_actor: float = Field(0.0, ge=0)
    torch_threads: int | None = Field(None, ge=1)  # None: cpus_per_actor rounded up

    # CPU front end stage (normalize, validate, split, G2P / tokenize).
    front_end_actors: int = Field(1, ge=1)
    cpus_per_front_end: float = Field(0.25, gt=0)

    read_timeout_s: float | None = Field(READ_TIMEOUT_S, gt=0)  # reading the input text; None: no bound

    # Round-trip quality gate: transcribe the audio and score it against the text.
    verify_with: str | None = None  # ASR checkpoint (see speech transcribe --model)
    max_cer: float | None = Field(None, ge=0)  # rows above it get an error

    @field_validator("voices")
    @classmethod
    def _named_voices(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not voice.strip() for voice in value):
            raise ValueError("every voice must be named (an empty entry in the list)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SynthesizeOptions:
        if self.max_cer is not None and self.verify_with is None:
            raise ValueError("max_cer needs verify_with (an ASR model to transcribe the audio with)")
        return self

    @property
    def pool(self) -> ActorPool:
        return self.actors if isinstance(self.actors, ActorPool) else ActorPool(min=self.actors, max=self.actors)


class StreamOptions(_Options):
    """Live transcription (``speech serve``'s ``stream_options``; see speech.asr.live).

    CTC models decode a turn incrementally: each step runs the network on ``ctc_step_s`` or
    more of new audio plus ``ctc_context_s`` before it, and emits the frames that have
    ``ctc_lookahead_s`` of audio after them. A step therefore costs about
    ``(context + step + lookahead) / step`` times the audio it adds, whatever the turn's length.
    Whisper re-decodes the open turn for partial text and decodes it once more when it closes.
    """

    ctc_context_s: float = Field(1.0, ge=0)  # audio before the new audio that each step re-reads
    ctc_lookahead_s: float = Field(0.2, ge=0)  # frames are emitted once this much audio follows them
    ctc_step_s: float = Field(0.2, gt=0)  # a step waits until it can emit this much more audio (a turn's first: any)
    # CTC: the completed text comes from one more pass over the whole turn (its text then equals
    # the offline transcript of the turn's audio, whose normalization is the whole turn's);
    # false: it is the streamed frames' text (no extra pass, per-window normalization).
    final_pass: bool = True
    # Whisper: re-decode the open turn for partial text at most once per this much new audio;
    # None: no partials, only the text of each closed turn.
    partial_interval_s: float | None = Field(1.0, gt=0)
    max_turn_s: float = Field(30.0, gt=0)  # a turn this long is closed (committed) there
    max_session_s: float = Field(3600.0, gt=0)  # audio one session may send; more is refused

    @model_validator(mode="after")
    def _consistent(self) -> StreamOptions:
        if self.max_turn_s > self.max_session_s:
            raise ValueError(f"max_turn_s ({self.max_turn_s}) must not exceed max_session_s ({self.max_session_s})")
        return self


def read_config(path: str | Path) -> dict[str, Any]:
    """A YAML config file as a mapping (no validation yet)."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise OptionsError(f"cannot read config {path}: {err.strerror}") from err
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise OptionsError(f"config {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise OptionsError(f"config {path} must be a mapping of option names to values")
    return data


def load_options(cls: type[_Options], config: str | Path | None, overrides: Mapping[str, Any]) -> Any:
    """Validate ``config`` (YAML path) overlaid with non-None ``overrides`` into ``cls``."""
    values = read_config(config) if config else {}
    values.update({key: value for key, value in overrides.items() if value is not None})
    try:
        return cls.model_validate(values)
    except ValidationError as err:
        raise OptionsError(_describe(err, source=str(config) if config else None)) from err


def _describe(err: ValidationError, source: str | None) -> str:
    where = f" in {source}" if source else ""
    problems = []
    for error in err.errors():
        field = ".".join(str(part) for part in error["loc"]) or "options"
        problems.append(f"{field}: {error['msg']}")
    return f"invalid options{where}: " + "; ".join(problems)
