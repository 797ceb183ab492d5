"""The benchmarked systems: one function each, every one run in a fresh subprocess.

Each system reads the same corpus manifest, loads the same checkpoint with the same number
of torch threads, and returns its figures as a dict: ``audio_s`` (seconds of audio it
transcribed), ``wall_s`` (its whole run: model load, Ray start and I/O included unless the
system is defined without them), ``startup_s`` (the part of ``wall_s`` before the first file
is processed, where the system has such a phase) and system-specific extras.

:func:`bench.harness.run_system` runs one of them: ``python -m bench.systems JOB.json RESULT.json``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.harness import BenchError, Job, decoded_audio, job_paths, write_texts

# ---------------------------------------------------------------- the systems (run in the child)


def ours(job: Job) -> dict:
    """System 1: this project's ``speech transcribe`` job (``jobs.transcribe``) on a local Ray.

    One model actor with ``torch_threads = threads``; Ray is started here, on all the
    machine's CPUs, as ``speech transcribe`` starts it, and its start counts in ``wall_s``.
    ``first_batch_s``: from the start to the job's first model call (the actors record it, see
    jobs.runtime.record_first_call).
    """
    import os

    import ray

    from jobs import transcribe
    from jobs.runtime import FIRST_CALL_FILE_ENV, start_local_ray
    from speech.options import TranscribeOptions

    started, started_at = time.perf_counter(), time.time()
    first_calls = Path(job.work_dir) / "first-model-calls.txt"
    first_calls.unlink(missing_ok=True)
    os.environ[FIRST_CALL_FILE_ENV] = str(first_calls)  # before Ray starts: its workers inherit it
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
    start_local_ray()
    try:
        ray_started = time.perf_counter()
        summary = transcribe.run(options, plan)
    finally:
        ray.shutdown()
    wall = time.perf_counter() - started
    if summary.errors or summary.rows != plan.inputs.num_rows:
        raise BenchError(f"ours: {summary.rows} rows for {plan.inputs.num_rows} inputs, {summary.errors} errors")
    if not first_calls.exists():
        raise BenchError(f"ours: no model actor recorded its first model call in {first_calls}")
    return {
        "files": summary.rows,
        "audio_s": summary.audio_seconds,
        "wall_s": wall,
        "startup_s": ray_started - started,
        "first_batch_s": min(float(t) for t in first_calls.read_text().split()) - started_at,
        "pipeline_s": summary.wall_seconds,
        "padding_efficiency": summary.padding_efficiency,
        "batch_seconds": options.budget_s(plan.kind.backend),
    }


def naive(job: Job) -> dict:
    """System 2: transformers ``pipeline("automatic-speech-recognition")``, one file at a time."""
    pipe, rate, loaded, started = _pipeline(job)
    texts = [pipe({"raw": audio, "sampling_rate": rate})["text"] for audio in decoded_audio(job, rate)]
    return _pipeline_figures(job, texts, rate, started, loaded, batch_size=1, model=pipe.model)


def unsorted(job: Job) -> dict:
    """System 3: the same pipeline with ``batch_size`` files per call, in corpus order (no sorting).

    Files stream in from a generator, as a user would feed a dataset; the pipeline pads
    each batch to its longest file.
    """
    pipe, rate, loaded, started = _pipeline(job)
    inputs = ({"raw": audio, "sampling_rate": rate} for audio in decoded_audio(job, rate))
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
    features = [w.features for p in job_paths(job) for w in front_end.windows(decode(p, rate))]
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

    front_end = timed("load model", load_front_end, job.model, options.asr)
    recognizer = timed("load model", load_recognizer, job.model, options.asr, "cpu", None, options.run)
    forward_s = _hook_forward_time(recognizer.network.model)
    rate = front_end.sample_rate
    paths = job_paths(job)
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


def _lengths(job: Job, rate: int) -> list[int]:
    from speech.audio import probe

    return [round(probe(p).duration_s * rate) for p in job_paths(job)]


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
        from bench.whisper import count_generated_tokens

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
    """Child entry point: ``python -m bench.systems JOB.json RESULT.json``."""
    job = Job(**json.loads(Path(argv[0]).read_text()))
    if job.system in SYSTEMS:
        figures = SYSTEMS[job.system](job)
    else:
        from bench.whisper import WHISPER_SYSTEMS

        figures = WHISPER_SYSTEMS[job.system](job)
    Path(argv[1]).write_text(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
