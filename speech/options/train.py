"""Options of ``speech finetune``: what decides the trained model, and where training runs."""

from __future__ import annotations

from pydantic import Field

from speech.options.base import JobOptions, Options


class TrainingOptions(Options):
    """What the trained model depends on; a resumed run must agree on these."""

    train: str = Field(description="training manifest (.jsonl/.csv/.parquet) with 'path' and 'text' columns")
    model: str = Field(description="hub id or local directory of a CTC checkpoint (AutoModelForCTC) with its "
                                   "processor")
    eval: str | None = Field(None, description="manifest scored with CER and WER after every epoch "
                                               "(default: no evaluation)")
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate, constant")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    batch_seconds: float = Field(60.0, gt=0, description="padded audio seconds per batch and worker")
    freeze_feature_encoder: bool = Field(
        False, description="train the transformer and head only, not the convolutional feature encoder")
    extend_vocab: bool = Field(
        False, description="add characters of the text that the tokenizer lacks (new output rows) instead of "
                           "refusing them")
    max_duration_s: float | None = Field(30.0, gt=0, description="longer files are left out (null: no limit)")
    seed: int = Field(0, ge=0, description="batch order and new output rows")


class FinetuneRun(Options):
    """Where and how training runs. ``epochs`` is here so that a finished run can be continued
    with more epochs."""

    output: str = Field(description="output directory: checkpoints, _summary.json, final/")
    address: str | None = Field(None, description="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    overwrite: bool = Field(False, description="start fresh instead of resuming from OUTPUT's last checkpoint")
    epochs: int = Field(3, ge=1, description="passes over TRAIN; a rerun may raise it to go on")
    # Ray Train workers: one model replica each, gradients averaged (DDP).
    workers: int = Field(1, ge=1, description="Ray Train workers, one model replica each (DDP)")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved per worker")
    gpus_per_worker: float = Field(0.0, ge=0, description="GPUs per worker; > 0 trains on GPUs (NCCL), "
                                                          "else CPUs (gloo)")
    torch_threads: int | None = Field(None, ge=1, description="intra-op threads per worker "
                                                               "(default: cpus_per_worker rounded up)")


class FinetuneOptions(JobOptions):
    """Options of ``speech finetune``: ``training`` decides the model, ``run`` where and how it
    trains; see configs/finetune.yaml for a commented example (one flat mapping)."""

    training: TrainingOptions
    run: FinetuneRun
