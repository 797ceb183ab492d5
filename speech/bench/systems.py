"""The benchmarked systems: one function each, every one run in a fresh subprocess.

Each system reads the same corpus manifest, loads the same checkpoint with the same number
of torch threads, and returns its figures as a dict: ``audio_s`` (seconds of audio it
transcribed), ``wall_s`` (its whole run: model load, Ray start and I/O included unless the
system is defined without them), ``startup_s`` (the part of ``wall_s`` before the first file
is processed, where the system has such a phase) and system-specific extras.

:func:`run_system` starts ``python -m speech.bench.systems`` for one system, samples the
memory of its whole process tree meanwhile (:class:`~speech.bench.memory.TreeMemory`) and
returns the child's figures plus ``peak_rss_mb`` / ``peak_pss_mb``. A fresh process per
system keeps peak memory per system and stops one system's caches from warming another's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import psutil

from speech.bench.memory import TreeMemory

_LOG_TAIL = 3000  # characters of a failed system's log shown in the error


class BenchError(RuntimeError):
    """A system failed or gave an incomplete result; the message says which and why."""


@dataclass(frozen=True)
class Job:
    """What one system run gets (JSON-serialized to the subprocess)."""

    system: str  # a key of SYSTEMS
    model: str  # checkpoint directory
    manifest: str  # JSONL with 'id' and 'path' per file
    threads: int  # torch intra-op threads, the same for every system
    work_dir: str  # scratch space of this run (outputs, logs)
    batch_size: int = 16  # the unsorted batched pipeline's batch size
    batch_seconds: float | None = None  # our job's budget; None: its default for the device
    budgets_s: list[float] = field(default_factory=lambda: [0.0, 10.0, 20.0])  # ceiling sweep; 0: one at a time
    sweep_share: float = 0.25  # share of the corpus the ceiling sweep runs on (1: sweep is the result)
    # Whisper (speech.bench.whisper): what makes every system do the same decoding work.
    transcribe_options: dict = field(default_factory=dict)  # extra TranscribeOptions of our job
    generate_kwargs: dict = field(default_factory=dict)  # the pipelines' generate_kwargs
    max_new_tokens: int | None = None  # tokens per 30 s window for the Whisper-only systems; None: until end of text
    ct2_model: str = ""  # the model converted for CTranslate2 (faster-whisper)
    compute_type: str = "float32"  # faster-whisper's CTranslate2 compute type
    # faster-whisper: pad each file's audio to 30 s first, so its features equal transformers'
    # (the random-weight bench compares with our transformers engine; see faster_whisper()).
    pad_to_window: bool = True


TEXTS_FILE = "texts.json"


def run_system(job: Job, timeout_s: float = 7200, module: str = "speech.bench.systems") -> dict:
    """Run ``job.system`` in a subprocess and return its figures plus peak tree memory (MiB).

    ``module`` is the child's entry point (``python -m MODULE JOB.json RESULT.json``); other
    benchmarks pass their own module and job dataclass (with ``system``, ``threads``, ``work_dir``).
    """
    work = Path(job.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    spec, result, log_path = work / "job.json", work / "result.json", work / "log.txt"
    spec.write_text(json.dumps(asdict(job)))
    result.unlink(missing_ok=True)
    env = _child_env(job.threads)
    with log_path.open("w") as log:
        # A session of its own, so a timeout can stop the child with all it started.
        child = subprocess.Popen(
            [sys.executable, "-m", module, str(spec), str(result)],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        with TreeMemory(child.pid) as memory:
            try:
                code = child.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _stop_tree(child)
                raise BenchError(f"{job.system}: no result after {timeout_s:.0f} s; log: {log_path}") from None
    if code != 0 or not result.exists():
        tail = log_path.read_text(errors="replace")[-_LOG_TAIL:]
        raise BenchError(f"{job.system} failed (exit {code}); end of {log_path}:\n{tail}")
    figures = json.loads(result.read_text())
    figures.update(
        peak_rss_mb=round(memory.peak_rss_mb, 1),
        peak_pss_mb=round(memory.peak_pss_mb, 1),
        peak_processes=memory.peak_processes,
    )
    return figures


def _child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    # Every system starts its own local Ray (if any); never join a cluster found in the environment.
    env.pop("RAY_ADDRESS", None)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(threads)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def _stop_tree(child: subprocess.Popen) -> None:
    """Stop the child and every process it started (only those: we list them first)."""
    try:
        tree = [psutil.Process(child.pid), *psutil.Process(child.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in tree:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    child.wait()


# ---------------------------------------------------------------- the systems (run in the child)


def ours(job: Job) -> dict:
    """System 1: this project's ``speech transcribe`` job (``jobs.transcribe``) on a local Ray.

    One model actor with ``torch_threads = threads``; Ray is started here, on all the
    machine's CPUs, and its start counts in ``wall_s``.
    """
    import logging

    import ray

    from jobs import transcribe
    from speech.options import TranscribeOptions

    started = time.perf_counter()
    options = TranscribeOptions(
        inputs=[job.manifest],
        output=str(Path(job.work_dir) / "output"),
        model=job.model,
        overwrite=True,
        torch_threads=job.threads,
        batch_seconds=job.batch_seconds,
        **job.transcribe_options,
    )
    plan = transcribe.check(options)
    # "local": a Ray of our own even when `ray start` left a cluster on this machine.
    ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
    try:
        ray_started = time.perf_counter()
        summary = transcribe.run(options, plan)
    finally:
        ray.shutdown()
    wall = time.perf_counter() - started
    if summary.errors or summary.rows != plan.inputs.num_rows:
        raise BenchError(f"ours: {summary.rows} rows for {plan.inputs.num_rows} inputs, {summary.errors} errors")
    return {
        "files": summary.rows,
        "audio_s": summary.audio_seconds,
        "wall_s": wall,
        "startup_s": ray_started - started,
        "pipeline_s": summary.wall_seconds,
        "padding_efficiency": summary.padding_efficiency,
        "batch_seconds": options.budget_s(plan.kind.backend),
    }


def naive(job: Job) -> dict:
    """System 2: transformers ``pipeline("automatic-speech-recognition")``, one file at a time."""
    pipe, rate, loaded, started = _pipeline(job)
    texts = [pipe({"raw": audio, "sampling_rate": rate})["text"] for audio in _decoded(job, rate)]
    return _pipeline_figures(job, texts, rate, started, loaded, batch_size=1, model=pipe.model)


def unsorted(job: Job) -> dict:
    """System 3: the same pipeline with ``batch_size`` files per call, in corpus order (no sorting).

    Files stream in from a generator, as a user would feed a dataset; the pipeline pads
    each batch to its longest file.
    """
    pipe, rate, loaded, started = _pipeline(job)
    inputs = ({"raw": audio, "sampling_rate": rate} for audio in _decoded(job, rate))
    texts = [out["text"] for out in pipe(inputs, batch_size=job.batch_size)]
    return _pipeline_figures(job, texts, rate, started, loaded, batch_size=job.batch_size, model=pipe.model)


def ceiling(job: Job) -> dict:
    """System 5: the bare network on pre-decoded, pre-sorted, pre-padded tensors, no I/O.

    Sweeps ``budgets_s`` (padded seconds per forward; 0 = one file at a time) on an even
    ``sweep_share`` of the length-sorted corpus, then times the best budget on the whole
    corpus. ``wall_s`` is the forward passes (plus argmax) only.
    """
    import torch
    from transformers import AutoFeatureExtractor, AutoModelForCTC

    from speech.asr.ctc import CtcFrontEnd
    from speech.audio import decode

    torch.set_num_threads(job.threads)
    front_end = CtcFrontEnd(job.model)
    rate = front_end.sample_rate
    features = [w.features for p in _paths(job) for w in front_end.windows(decode(p, rate))]
    extractor = AutoFeatureExtractor.from_pretrained(job.model)
    model = AutoModelForCTC.from_pretrained(job.model).eval()
    mask = bool(extractor.return_attention_mask)
    order = sorted(range(len(features)), key=lambda i: len(features[i]))
    step = max(1, round(1 / job.sweep_share))
    subset = [features[i] for i in order[::step]]
    sweep = {}
    for budget in job.budgets_s:
        seconds, efficiency = _timed_forward(model, subset, budget, rate, extractor.padding_value, mask)
        sweep[budget] = {"rtfx": sum(map(len, subset)) / rate / seconds, "padding_efficiency": efficiency}
    best = max(sweep, key=lambda b: sweep[b]["rtfx"])
    if step == 1:
        seconds, efficiency = sum(map(len, subset)) / rate / sweep[best]["rtfx"], sweep[best]["padding_efficiency"]
    else:
        seconds, efficiency = _timed_forward(model, features, best, rate, extractor.padding_value, mask)
    return {
        "files": len(features),
        "audio_s": sum(map(len, features)) / rate,
        "wall_s": seconds,
        "startup_s": 0.0,
        "padding_efficiency": efficiency,
        "best_budget_s": best,
        "sweep": {f"{b:g}": {k: round(v, 4) for k, v in r.items()} for b, r in sweep.items()},
        "sweep_files": len(subset),
    }


def profile(job: Job) -> dict:
    """Where our job's time goes: each of its stages run serially in one process, timed.

    The same library pieces the Ray job runs (probe, decode, front end, recognizer, output
    schema and Parquet writer) in the same batches; the network's share is measured with
    forward hooks on the model. The gap between this serial sum and the Ray job's wall time
    is orchestration (Ray start, actor start, scheduling, serialization) net of the overlap
    of CPU stages with the network.
    """
    import pyarrow.parquet as pq
    import torch

    import speech.asr.ctc  # noqa: F401 - imported before the clock, as the other systems' libraries are
    from speech.asr import load_front_end, load_recognizer
    from speech.audio import decode, probe
    from speech.batching import plan_batches
    from speech.options import TranscribeOptions
    from speech.schema import TranscriptRow, transcripts_table

    torch.set_num_threads(job.threads)
    options = TranscribeOptions(inputs=[job.manifest], output=job.work_dir, model=job.model, torch_threads=job.threads,
                                batch_seconds=job.batch_seconds)
    stages: dict[str, float] = {}

    def timed(stage: str, fn: Callable, *args):
        t = time.perf_counter()
        value = fn(*args)
        stages[stage] = stages.get(stage, 0.0) + time.perf_counter() - t
        return value

    front_end = timed("load model", load_front_end, job.model, options)
    recognizer = timed("load model", load_recognizer, job.model, options, "cpu")
    forward_s = _hook_forward_time(recognizer.network.model)
    rate = front_end.sample_rate
    paths = _paths(job)
    durations = [timed("probe headers", lambda p: probe(p).duration_s, p) for p in paths]
    order = sorted(range(len(paths)), key=lambda i: durations[i])
    audio = {i: timed("read + decode + resample", decode, paths[i], rate) for i in order}
    windows = {i: timed("features + chunking", front_end.windows, audio[i]) for i in order}
    budget = int(options.budget_s("ctc") * rate)
    batches = plan_batches([sum(w.num_samples for w in windows[i]) for i in order], budget)
    rows = []
    for batch in batches:
        ids = [order[j] for j in batch]
        for i, transcript in zip(ids, timed("recognize", recognizer.transcribe, [windows[i] for i in ids])):
            rows.append(TranscriptRow(id=str(i), path=paths[i], duration_s=len(audio[i]) / rate, text=transcript.text,
                                      confidence=transcript.confidence, words=transcript.words,
                                      computed_s=transcript.computed_samples / rate, model=job.model,
                                      backend=recognizer.backend, engine=recognizer.engine))
    timed("write parquet", lambda: pq.write_table(transcripts_table(rows), Path(job.work_dir) / "profile.parquet"))
    stages["network forward"] = forward_s[0]
    stages["pad + CTC decode + words"] = stages.pop("recognize") - forward_s[0]
    return {"files": len(paths), "audio_s": sum(len(a) for a in audio.values()) / rate, "stages_s": stages,
            "wall_s": sum(stages.values()), "startup_s": stages["load model"]}


SYSTEMS: dict[str, Callable[[Job], dict]] = {
    "ours": ours,
    "naive": naive,
    "unsorted": unsorted,
    "ceiling": ceiling,
    "profile": profile,
}


# ---------------------------------------------------------------- helpers of the systems


def _paths(job: Job) -> list[str]:
    from speech.inputs import read_manifest

    return read_manifest(job.manifest)["path"].to_pylist()


def _decoded(job: Job, rate: int):
    """Each file of the corpus, decoded by the project's one decoder (the same for all systems)."""
    from speech.audio import decode

    for path in _paths(job):
        yield decode(path, rate)


def _lengths(job: Job, rate: int) -> list[int]:
    from speech.audio import probe

    return [round(probe(p).duration_s * rate) for p in _paths(job)]


def _pipeline(job: Job):
    """``(pipe, sample_rate, load_seconds, started)`` for the transformers ASR pipeline."""
    import torch
    from transformers import pipeline

    torch.set_num_threads(job.threads)
    started = time.perf_counter()
    # float32 as every system (transformers 5 would keep a float16 checkpoint's dtype).
    extra = {"generate_kwargs": job.generate_kwargs} if job.generate_kwargs else {}
    pipe = pipeline("automatic-speech-recognition", model=job.model, device="cpu", dtype=torch.float32, **extra)
    if job.generate_kwargs:
        from speech.bench.whisper import count_generated_tokens

        count_generated_tokens(pipe.model)
        if pipe.tokenizer.pad_token is None:  # hub Whisper tokenizers pad with <|endoftext|>; batching needs one
            pipe.tokenizer.pad_token = pipe.tokenizer.eos_token
    return pipe, int(pipe.feature_extractor.sampling_rate), time.perf_counter() - started, started


def _pipeline_figures(job: Job, texts: list[str], rate: int, started: float, loaded: float, batch_size: int,
                      model=None) -> dict:
    """Figures of a pipeline run that started at ``started``; the clock stops here.

    A Whisper run (``job.generate_kwargs``) also reports the tokens ``model`` generated.
    """
    wall = time.perf_counter() - started
    lengths = _lengths(job, rate)
    if len(texts) != len(lengths):
        raise BenchError(f"{job.system}: {len(texts)} transcripts for {len(lengths)} files")
    batches = [list(range(i, min(i + batch_size, len(lengths)))) for i in range(0, len(lengths), batch_size)]
    figures = {"files": len(texts), "audio_s": sum(lengths) / rate, "wall_s": wall, "startup_s": loaded,
               "padding_efficiency": _padding_efficiency(lengths, batches)}
    if job.generate_kwargs:
        figures["tokens"] = model.generated_tokens[0]
        write_texts(job, texts)
    return figures


def write_texts(job: Job, texts: list[str]) -> None:
    """A Whisper run's transcripts, in manifest order, as ``WORK_DIR/texts.json`` (compared by the report)."""
    (Path(job.work_dir) / TEXTS_FILE).write_text(json.dumps([text.strip() for text in texts]))


def _padding_efficiency(lengths: list[int], batches: list[list[int]]) -> float:
    """Real samples / computed samples when each batch is padded to its longest member."""
    computed = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return sum(lengths) / computed


def _timed_forward(model, features: list, budget_s: float, rate: int, padding_value: float, mask: bool) -> tuple[float, float]:
    """Seconds of forward + argmax over ``features`` batched by ``budget_s``; and padding efficiency.

    Tensors are built (sorted, padded, masked) before the clock starts; one warm-up batch runs first.
    """
    import torch

    from speech.batching import pad, plan_batches

    lengths = [len(f) for f in features]
    batches = plan_batches(lengths, max(1, int(budget_s * rate)))
    tensors = []
    for batch in batches:
        padded, lens = pad([features[i] for i in batch], padding_value)
        inputs = torch.from_numpy(padded)
        attention = (torch.arange(padded.shape[1])[None, :] < torch.from_numpy(lens)[:, None]).long() if mask else None
        tensors.append((inputs, attention))
    with torch.inference_mode():
        model(tensors[0][0][:, : rate], attention_mask=None if tensors[0][1] is None else tensors[0][1][:, : rate])
        t = time.perf_counter()
        for inputs, attention in tensors:
            model(inputs, attention_mask=attention).logits.argmax(dim=-1)
        seconds = time.perf_counter() - t
    return seconds, _padding_efficiency(lengths, batches)


def _hook_forward_time(model) -> list[float]:
    """Accumulate the model's forward seconds into the returned one-element list."""
    total = [0.0]
    start = [0.0]
    model.register_forward_pre_hook(lambda *_: start.__setitem__(0, time.perf_counter()))
    model.register_forward_hook(lambda *_: total.__setitem__(0, total[0] + time.perf_counter() - start[0]))
    return total


def main(argv: list[str]) -> int:
    """Child entry point: ``python -m speech.bench.systems JOB.json RESULT.json``."""
    job = Job(**json.loads(Path(argv[0]).read_text()))
    if job.system in SYSTEMS:
        figures = SYSTEMS[job.system](job)
    else:
        from speech.bench.whisper import WHISPER_SYSTEMS

        figures = WHISPER_SYSTEMS[job.system](job)
    Path(argv[1]).write_text(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
