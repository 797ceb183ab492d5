"""Typed job options, validated once, with errors that name the field.

A YAML file from ``configs/`` gives the base values; command-line flags override
them; :func:`load_options` validates the merge. Everything downstream receives a
frozen options object and never re-parses strings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Dtype = Literal["float32", "float16", "bfloat16"]

#: Default batch budget (seconds of padded audio) by device. On a CPU big batches
#: only hurt (cache, quadratic attention: see docs); a GPU wants them large.
CPU_BATCH_SECONDS = 10.0
GPU_BATCH_SECONDS = 240.0


class OptionsError(ValueError):
    """Invalid options; the message names the field and what is allowed."""


class _Options(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ActorPool(_Options):
    """A fixed (``min == max``) or autoscaling pool of model actors."""

    min: int = Field(1, ge=1)
    max: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "ActorPool":
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) must be >= min ({self.min})")
        return self


class TranscribeOptions(_Options):
    """Options of ``speech transcribe``; see configs/transcribe.yaml for a commented example."""

    inputs: list[str] = Field(min_length=1)  # directories, globs, URLs or manifest files
    output: str  # output directory (local path or fsspec URL)
    model: str  # hub id or local checkpoint directory
    address: str | None = None  # Ray cluster address; None starts a local Ray
    overwrite: bool = False  # replace an existing output instead of refusing to touch it

    # Batching: the budget is padded audio seconds per model call.
    batch_seconds: float | None = Field(None, gt=0)  # None: by device, see CPU/GPU_BATCH_SECONDS
    # Models that take no attention mask change their output when padded; with this on,
    # they only ever see batches of equal-length inputs.
    strict_padding: bool = True

    # Model actors (the network runs here).
    actors: int | ActorPool = 1
    cpus_per_actor: float = Field(1.0, gt=0)
    gpus_per_actor: float = Field(0.0, ge=0)  # fractions share a GPU between actors
    dtype: Dtype = "float32"
    torch_threads: int | None = Field(None, ge=1)  # None: cpus_per_actor rounded up

    # CPU preparation stage (read, decode, resample, features).
    prepare_actors: int = Field(1, ge=1)
    cpus_per_prepare: float = Field(0.5, gt=0)
    prepare_window: int = Field(64, ge=1)  # files decoded together and bucketed per window

    # Long inputs are cut into overlapping chunks and stitched at the logits.
    chunk_length_s: float = Field(30.0, gt=0)
    stride_length_s: float | None = Field(None, ge=0)  # None: chunk_length_s / 6 each side

    language: str | None = None  # recorded on rows whose manifest gives none

    @model_validator(mode="after")
    def _consistent(self) -> "TranscribeOptions":
        if self.dtype == "float16" and self.gpus_per_actor == 0:
            raise ValueError("dtype float16 needs a GPU (gpus_per_actor > 0); use float32 or bfloat16 on CPU")
        if 2 * self.stride_s >= self.chunk_length_s:
            raise ValueError(
                f"stride_length_s ({self.stride_s}) must be less than half of chunk_length_s ({self.chunk_length_s})"
            )
        return self

    @property
    def stride_s(self) -> float:
        return self.chunk_length_s / 6 if self.stride_length_s is None else self.stride_length_s

    @property
    def budget_s(self) -> float:
        if self.batch_seconds is not None:
            return self.batch_seconds
        return GPU_BATCH_SECONDS if self.gpus_per_actor > 0 else CPU_BATCH_SECONDS

    @property
    def pool(self) -> ActorPool:
        return self.actors if isinstance(self.actors, ActorPool) else ActorPool(min=self.actors, max=self.actors)


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
