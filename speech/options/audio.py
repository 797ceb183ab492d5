"""What the jobs on the audio corpus spine share (``speech transcribe``, ``speech embed``): the
model's input handling that decides their rows, and where and how they run."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from speech.files import READ_TIMEOUT_S
from speech.options.base import ActorPool, JobOptions, Options, actor_pool

Dtype = Literal["float32", "float16", "bfloat16"]

#: Default batch budget (seconds of padded audio per model call) by backend: (CPU, GPU).
#: A CTC model's cost follows the audio, and on a CPU big batches only add cache misses and
#: quadratic attention (docs/benchmarks.md); a GPU wants them large. Every Whisper window costs
#: a 30 s encoder pass whatever it holds, so its budget counts 30 s windows, and its decoder's
#: small steps gain from batching even on a CPU: 16 windows per call, as on a GPU (the job on a
#: 2-core CPU ran 1.04x and 1.11x faster at 16 than at 8 windows, and 8 windows 1.6x faster than 1;
#: docs/benchmarks.md). A large model on a small-memory CPU host may want fewer (batch_seconds).
DEFAULT_BATCH_SECONDS = {"ctc": (10.0, 240.0), "whisper": (480.0, 480.0)}
#: Embedding runs the network of a CTC model without its output layer: the same costs.
DEFAULT_BATCH_SECONDS["embed"] = DEFAULT_BATCH_SECONDS["ctc"]


class AudioModelOptions(Options):
    """How an audio model reads its input: the rows part shared by transcription and embedding."""

    model: str = Field(description="hub id or local checkpoint directory")
    dtype: Dtype = Field("float32", description="precision of transformers models (float16 needs a GPU)")
    strict_padding: bool = Field(
        True, description="models that take no attention mask change their output when padded; with this on, "
                          "they only ever see batches of equal-length inputs")
    chunk_length_s: float = Field(
        30.0, gt=0, description="longer inputs are cut into overlapping chunks of this many seconds, stitched at "
                                "the model's output frames")
    stride_length_s: float | None = Field(None, ge=0, description="overlap on each side of a chunk (default: chunk/6)")
    max_duration_s: float | None = Field(
        None, gt=0, description="longer files get an error row instead of a result (default: no limit), from the "
                                "header where it gives the length, else once decoding passes it")

    @model_validator(mode="after")
    def _chunks(self) -> AudioModelOptions:
        if 2 * self.stride_s >= self.chunk_length_s:
            raise ValueError(
                f"stride_length_s ({self.stride_s}) must be less than half of chunk_length_s ({self.chunk_length_s})"
            )
        return self

    @property
    def stride_s(self) -> float:
        return self.chunk_length_s / 6 if self.stride_length_s is None else self.stride_length_s


class ModelRun(Options):
    """How one model instance runs: the part of the run options a Serve replica takes too."""

    batch_seconds: float | None = Field(
        None, gt=0, description="padded audio seconds per model call (default: by backend and device, CTC 10 on a "
                                "CPU and 240 on a GPU, Whisper 480: 16 windows of 30 s)")
    torch_threads: int | None = Field(
        None, ge=1, description="intra-op threads of a model (also CTranslate2's; default: cpus_per_actor rounded up)")

    def batch_budget_s(self, backend: str, device: str) -> float:
        """Padded audio seconds per model call: ``batch_seconds``, else the default of ``backend``
        (a key of ``DEFAULT_BATCH_SECONDS``) on ``device``."""
        if self.batch_seconds is not None:
            return self.batch_seconds
        cpu, gpu = DEFAULT_BATCH_SECONDS[backend]
        return cpu if device == "cpu" else gpu

    @property
    def threads(self) -> int:
        return self.torch_threads or 1


class AudioRun(ModelRun):
    """Where and how a job on the audio corpus spine runs: inputs and output, the model actors,
    preparation, memory; none of it changes the rows, so a resumed run may change any of it."""

    inputs: list[str] = Field(min_length=1, description="directories, globs, files, URLs or manifests")
    output: str = Field(description="output directory (path or fsspec URL)")
    address: str | None = Field(None, description="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    overwrite: bool = Field(
        False, description="start fresh; by default a rerun into OUTPUT resumes, skipping ids already written")

    actors: int | ActorPool = Field(1, description="model actors: N, or MIN:MAX to autoscale")
    cpus_per_actor: float = Field(1.0, gt=0, description="CPUs reserved per model actor")
    gpus_per_actor: float = Field(0.0, ge=0, description="GPUs per model actor; fractions share a GPU, e.g. 0.5")
    resources_per_actor: dict[str, float] = Field(
        default_factory=dict, description="custom Ray resources per model actor, e.g. model_slots=1: they pin "
                                          "actors to the nodes that declare them, or spread one per node")

    prepare: Literal["auto", "separate", "fused"] = Field(
        "auto",
        description="where files are decoded and featurized: 'separate' CPU actors (prepare_actors x "
        "cpus_per_prepare), or 'fused' into the model actors' processes (a thread beside the model); "
        "'auto' fuses when the model actors use no GPU, the cluster has fewer than 4 CPUs per model "
        "replica and neither prepare_actors nor cpus_per_prepare is given (jobs/fused.py)",
    )
    prepare_actors: int = Field(1, ge=1, description="CPU actors that read, decode and extract features")
    cpus_per_prepare: float = Field(0.5, gt=0, description="CPUs reserved per preparation actor")
    prepare_window: int = Field(64, ge=1, description="files decoded together and bucketed per window")
    object_store_mb: float | None = Field(
        None, gt=0, description="object-store MiB the job's blocks in flight may use; decoding is ~100x faster than "
                                "a CPU model, so without a cap preparation runs ahead and its output waits in "
                                "memory (default: 16 full batches per model actor, at least 128)")
    read_timeout_s: float | None = Field(
        READ_TIMEOUT_S, gt=0, description="reading one file (or a manifest, or a remote file's metadata) that "
                                          "takes longer gives that row an error (null: wait forever)")

    @model_validator(mode="after")
    def _prepare_stage(self) -> AudioRun:
        if self.prepare == "fused" and self.separate_stage_given:
            raise ValueError(f"{', '.join(self.separate_stage_given)}: they size the separate prepare stage, "
                             "but prepare is 'fused' (drop them, or use prepare: separate)")
        return self

    @model_validator(mode="after")
    def _resources(self) -> AudioRun:
        for name, amount in self.resources_per_actor.items():
            if name in ("CPU", "GPU"):
                raise ValueError(f"resources_per_actor: use cpus_per_actor / gpus_per_actor instead of {name!r}")
            if amount <= 0:
                raise ValueError(f"resources_per_actor.{name} must be > 0, got {amount}")
        return self

    @property
    def device(self) -> str:
        return "cuda" if self.gpus_per_actor > 0 else "cpu"

    @property
    def separate_stage_given(self) -> list[str]:
        """The options sizing the separate prepare stage that were given (in a config or on the
        command line), not defaulted: under ``prepare: auto`` they select that stage."""
        return [name for name in ("prepare_actors", "cpus_per_prepare") if name in self.model_fields_set]

    @property
    def threads(self) -> int:
        """Intra-op threads of a model actor: ``torch_threads``, else ``cpus_per_actor`` rounded up."""
        return self.torch_threads or max(1, math.ceil(self.cpus_per_actor))

    def budget_s(self, backend: str) -> float:
        """Padded audio seconds per model call on this job's device (see :meth:`batch_budget_s`)."""
        return self.batch_budget_s(backend, self.device)

    @property
    def pool(self) -> ActorPool:
        return actor_pool(self.actors)

    def object_store_bytes(self, backend: str) -> int:
        """The Ray Data object-store budget of the job in bytes (see ``object_store_mb``)."""
        if self.object_store_mb is not None:
            return int(self.object_store_mb * 2**20)
        # A full batch is budget_s of float32 audio (or features of similar size) at 16 kHz.
        batch_bytes = self.budget_s(backend) * 16_000 * 4
        return int(max(128 * 2**20, 16 * batch_bytes * self.pool.max))


def check_device(dtype: str, gpus: float) -> None:
    """Refuse a precision the device cannot run (ValueError naming the field)."""
    if dtype == "float16" and gpus == 0:
        raise ValueError("dtype float16 needs a GPU (gpus_per_actor > 0); use float32 or bfloat16 on CPU")


class AudioJobOptions(JobOptions):
    """The options of a job on the audio corpus spine (``speech transcribe``, ``speech embed``):
    a rows part holding an :class:`AudioModelOptions`, and ``run: AudioRun``."""

    @model_validator(mode="after")
    def _device(self) -> AudioJobOptions:
        check_device(getattr(self, self.rows_part()).dtype, self.run.gpus_per_actor)
        return self
