"""CTC fine-tuning on Ray Train: ``speech finetune TRAIN -o OUTPUT --model MODEL``.

The driver checks everything that can be wrong before Ray starts (:func:`check`: the model has
a CTC head and a processor, the manifests have ``path`` and ``text``, the vocabulary covers the
text, the output is this job's), then runs a ``TorchTrainer``: ``workers`` data-parallel
replicas (DDP; gloo on CPUs, NCCL on GPUs), each decoding its own share of every epoch's
duration-bucketed batches. After each epoch every worker evaluates its share of EVAL, the
figures are summed over workers, and rank 0 reports them to Ray Train with a checkpoint (model,
processor, optimizer, history). Ray Train keeps checkpoints under ``OUTPUT/_train/``; a rerun
into the same OUTPUT finds them (same ``RunConfig`` name and storage path) and
``ray.train.get_checkpoint()`` hands the last one to the workers, which continue with the next
epoch. At the end the driver copies the last checkpoint's model and processor to ``OUTPUT/final/``
and writes ``OUTPUT/_summary.json``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import fsspec
import ray.train
import torch
from ray.train.torch import TorchConfig, TorchTrainer, get_device, prepare_model

from jobs.output import FINAL_DIR, TRAIN_DIR, Output, open_output, write_summary
from speech.options import FinetuneOptions
from speech.train.data import Example, Skipped, epoch_batches, read_examples
from speech.train.loop import evaluate, train_epoch
from speech.train.model import TrainingError, check_ctc_model, load_for_training, save_for_inference
from speech.train.vocab import describe_unknown, unknown_characters

log = logging.getLogger(__name__)

_RUN_NAME = "run"  # fixed, so a rerun into the same OUTPUT is the same Ray Train run and resumes
_STATE_FILE = "train_state.json"  # in each checkpoint: epochs done and their figures
_OPTIMIZER_FILE = "optimizer.pt"
_KEEP_CHECKPOINTS = 2


@dataclass(frozen=True)
class Plan:
    """What the run will train on, checked before Ray starts. Holds the output's lease: use it
    as a context manager (``run`` does) so the lease is released however the run ends."""

    train: list[Example]
    eval: list[Example]
    skipped: list[Skipped]  # rows of TRAIN or EVAL left out, with the reason
    new_characters: list[str]  # added to the vocabulary (--extend-vocab)
    output: Output

    def __enter__(self) -> Plan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.output.release()


@dataclass(frozen=True)
class Summary:
    """As written to ``OUTPUT/_summary.json``."""

    epochs: list[dict]  # [{epoch, train_loss, eval_cer, eval_wer, seconds}], every run's epochs
    final_model: str  # OUTPUT/final
    workers: int
    model: str  # the checkpoint training started from
    train_rows: int
    eval_rows: int
    skipped: list[dict]  # [{id, reason}]
    new_characters: list[str]
    output: str


def check(options: FinetuneOptions) -> Plan:
    """Everything that can fail before Ray starts; raises TrainingError, InputError or OutputError."""
    processor = check_ctc_model(options.model)
    train, skipped = read_examples(options.train, max_duration_s=options.max_duration_s)
    if not train:
        first = f" (first: {skipped[0].id}: {skipped[0].reason})" if skipped else ""
        raise TrainingError(f"no usable training rows in {options.train}: {len(skipped)} rows, all left out{first}")
    evaluation: list[Example] = []
    if options.eval:
        evaluation, eval_skipped = read_examples(options.eval, max_duration_s=options.max_duration_s)
        if not evaluation:
            raise TrainingError(f"no usable rows in the eval manifest {options.eval}")
        skipped += eval_skipped
    unknown = unknown_characters(processor.tokenizer, (e.text for e in train))
    if unknown and not options.extend_vocab:
        raise TrainingError(
            f"{options.train}: {describe_unknown(unknown)}; pass --extend-vocab to add them, or remove them from the text"
        )
    for row in skipped:
        log.warning("left out %s: %s", row.id, row.reason)
    job = {"job": "finetune", **options.result_options()}
    manifests = [options.train, *([options.eval] if options.eval else [])]
    output = open_output(options.output, job=job, overwrite=options.overwrite,
                         inputs=[*manifests, *(e.path for e in [*train, *evaluation])], defaults=options.result_defaults())
    return Plan(train, evaluation, skipped, sorted(unknown), output)


def run(options: FinetuneOptions, plan: Plan | None = None) -> Summary:
    """Train on a Ray that is already initialized (resuming from OUTPUT's last checkpoint)."""
    with plan or check(options) as plan:
        return _train(options, plan)


def _train(options: FinetuneOptions, plan: Plan) -> Summary:
    """The training run itself, with the output's lease held by the caller."""
    if os.path.isdir(options.model):  # workers run in directories of their own
        options = options.model_copy(update={"model": os.path.abspath(options.model)})
    use_gpu = options.gpus_per_worker > 0
    resources = {"CPU": options.cpus_per_worker, **({"GPU": options.gpus_per_worker} if use_gpu else {})}
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"options": options, "train": plan.train, "eval": plan.eval, "new_characters": plan.new_characters},
        scaling_config=ray.train.ScalingConfig(num_workers=options.workers, use_gpu=use_gpu, resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=ray.train.RunConfig(
            name=_RUN_NAME,
            storage_path=_storage_path(options.output),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=_KEEP_CHECKPOINTS),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training reported no checkpoint (run directory {result.path})")
    final = f"{options.output.rstrip('/')}/{FINAL_DIR}"
    with result.checkpoint.as_directory() as directory:
        history = json.loads((Path(directory) / _STATE_FILE).read_text())["history"]
        _publish(Path(directory), final)
    summary = Summary(
        epochs=history,
        final_model=final,
        workers=options.workers,
        model=options.model,
        train_rows=len(plan.train),
        eval_rows=len(plan.eval),
        skipped=[asdict(row) for row in plan.skipped],
        new_characters=plan.new_characters,
        output=options.output,
    )
    return write_summary(options.output, summary)


def train_loop(config: dict) -> None:
    """What each Ray Train worker runs."""
    options: FinetuneOptions = config["options"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(options.torch_threads or max(1, math.ceil(options.cpus_per_worker)))
    device = get_device()

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # a rerun: go on from the last finished epoch
        with checkpoint.as_directory() as directory:
            model, processor = load_for_training(directory)
            state = json.loads((Path(directory) / _STATE_FILE).read_text())
            optimizer_state = torch.load(Path(directory) / _OPTIMIZER_FILE, map_location="cpu")
        log.info("resuming after epoch %d", state["epoch"])
    else:
        torch.manual_seed(options.seed)
        model, processor = load_for_training(options.model, new_characters=config["new_characters"], seed=options.seed)
        state, optimizer_state = {"epoch": 0, "history": []}, None
    if options.freeze_feature_encoder:
        model.freeze_feature_encoder()
    # To the device, wrapped in DDP when there are several workers. LayerDrop skips whole layers
    # at random and SpecAugment's mask embedding is unused when no frame is masked, so some
    # parameters get no gradient in some steps: DDP must look for them.
    model = prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True})
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=options.lr, weight_decay=options.weight_decay
    )
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)

    for epoch in range(state["epoch"] + 1, options.epochs + 1):
        started = time.perf_counter()
        torch.manual_seed(options.seed * 1_000_003 + epoch * 101 + rank)  # SpecAugment masks, dropout
        batches = epoch_batches(config["train"], options.batch_seconds, epoch=epoch, seed=options.seed, rank=rank, world=world)
        trained = train_epoch(model, optimizer, batches, processor, device)
        for row in trained.skipped:
            log.warning("epoch %d: %s failed to decode and was left out of its batch: %s", epoch, row.id, row.reason)
        record = {"epoch": epoch, "train_loss": round(trained.loss, 6), "eval_cer": None, "eval_wer": None}
        if config["eval"]:
            shard = config["eval"][rank::world]
            scores = evaluate(model, epoch_batches(shard, options.batch_seconds, epoch=0, seed=0), processor, device)
            record.update(eval_cer=round(scores.cer, 6), eval_wer=round(scores.wer, 6))
        record["seconds"] = round(time.perf_counter() - started, 3)
        state = {"epoch": epoch, "history": [*state["history"], record]}
        _report(model, processor, optimizer, state, rank)
        if rank == 0:
            # Not print(): Ray Train routes print through its logger as well, which doubles the line.
            sys.stdout.write(_progress_line(record, options.epochs) + "\n")
            sys.stdout.flush()


def _report(model, processor, optimizer, state: dict, rank: int) -> None:
    """Every worker reports the epoch's figures; rank 0 adds the checkpoint (all ranks hold the same weights)."""
    metrics = {key: value for key, value in state["history"][-1].items() if value is not None}
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if rank == 0:
            save_for_inference(getattr(model, "module", model), processor, directory)
            torch.save(optimizer.state_dict(), Path(directory) / _OPTIMIZER_FILE)
            (Path(directory) / _STATE_FILE).write_text(json.dumps(state, indent=2))
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=f"epoch-{state['epoch']:04d}")


def _progress_line(record: dict, epochs: int) -> str:
    scores = "" if record["eval_cer"] is None else f", eval CER {record['eval_cer']:.4f}, WER {record['eval_wer']:.4f}"
    return f"epoch {record['epoch']}/{epochs}: train loss {record['train_loss']:.4f}{scores} ({record['seconds']:.1f} s)"


def _storage_path(output: str) -> str:
    """Where Ray Train keeps the run: under OUTPUT (absolute for a local path, as Ray requires)."""
    root = output if "://" in output else os.path.abspath(output)
    return f"{root.rstrip('/')}/{TRAIN_DIR}"


def _publish(checkpoint: Path, url: str) -> None:
    """Copy a checkpoint's model and processor files (not the training state) to ``url``."""
    fs, root = fsspec.core.url_to_fs(url)
    if fs.exists(root):
        fs.rm(root, recursive=True)
    fs.makedirs(root, exist_ok=True)
    for path in sorted(checkpoint.iterdir()):
        if path.is_file() and path.name not in (_STATE_FILE, _OPTIMIZER_FILE):
            fs.put_file(str(path), f"{root}/{path.name}")

