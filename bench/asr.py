"""``speech bench asr``: our transcription job against its peers, on one machine, one corpus, one model.

Systems (each in its own subprocess, see :mod:`bench.systems`):

* ``ours``: the ``speech transcribe`` job on a local Ray;
* ``naive``: transformers' ASR pipeline, one file at a time;
* ``unsorted``: the same pipeline, 16 files per batch in corpus order;
* ``ceiling``: the bare network on pre-decoded, sorted, padded tensors at the best budget;
* ``ours_10x``: our job on the corpus listed 10 times, for its peak memory;
* ``profile``: our job's stages run serially and timed, to show where the time goes;
* with ``engine="onnx"``, ``ours_onnx`` and ``ours_onnx_int8``: our job on the model exported by
  ``speech convert onnx`` (float32, int8), run with onnxruntime (:mod:`bench.onnx_engine`).

``backend="whisper"`` benchmarks a Whisper model instead (see :mod:`bench.whisper`):
``ours``, ``naive``, ``unsorted``, ``faster_whisper`` (faster-whisper's batched pipeline on the
same weights converted for CTranslate2) and ``ceiling`` (encoder + greedy generate on
pre-computed features); no memory run and no profile. With ``real``, the real Whisper base on
English speech, both our engines against faster-whisper and the batched pipeline, with word
error rates (:mod:`bench.whisper_real`).

Absolute times on a shared machine are noise; the ratios between systems measured in one
run are the result. The report records the machine and its load.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from bench import onnx_engine
from bench.corpus import CorpusSpec, build_corpus, repeat_manifest
from bench.harness import TEXTS_FILE, BenchError, Job, best_run, format_paired, paired_ratios, round_order, run_system, schedule
from bench.memory import empty_role
from bench.report import count_parameters, load_average, machine, machine_line

#: Systems timed against each other (every other round in reverse order when repeated).
_SPEED_SYSTEMS = ("ceiling", "ours", "naive", "unsorted")

#: Corpus sizes: the full run is large enough that start-up stays under 10% of our job's run.
FULL_FILES = 120
QUICK_FILES = 12

_LABELS = {
    "ours": "ours: speech transcribe (Ray)",
    "naive": "transformers pipeline, 1 at a time",
    "unsorted": "transformers pipeline, batch 16 unsorted",
    "ceiling": "ceiling: bare forward, sorted, padded",
    "ours_10x": "ours on the corpus x{scale} (memory)",
    "faster_whisper": "faster-whisper batched, same weights (float32)",
}

#: Whisper: report name -> system run (see bench.whisper), in run order.
_WHISPER_SYSTEMS = {
    "ceiling": "whisper_ceiling",
    "ours": "whisper_ours",
    "naive": "naive",
    "unsorted": "unsorted",
    "faster_whisper": "faster_whisper",
}
_LABELS.update(onnx_engine.ASR_LABELS)
_WHISPER_LABELS = {**_LABELS, "ceiling": "ceiling: encoder + greedy generate, batched"}


@dataclass(frozen=True)
class AsrBench:
    """Settings of one ``speech bench asr`` run."""

    cache: Path  # checkpoints and corpora are built here once and reused
    quick: bool = False  # tiny model and corpus: checks the benchmark works (CI), measures nothing
    files: int | None = None  # corpus size; None: FULL_FILES or QUICK_FILES
    model: str | None = None  # a CTC checkpoint directory; None: the generated one
    threads: int = 2  # torch threads of every system
    memory_scale: int = 10  # the memory run's corpus is this many times the main one
    repeat: int = 1  # rounds of the speed systems; each system's best round is reported
    work: Path | None = None  # scratch directory; None: a temporary one, removed afterwards
    backend: str = "ctc"  # "ctc" or "whisper": which model family, and so which systems
    max_new_tokens: int = 48  # whisper: tokens every system generates per 30 s window (greedy)
    engine: str = "torch"  # "onnx": also our job on the model's float32 and int8 ONNX exports (CTC)
    real: bool = False  # whisper: real weights and English speech, both engines, WER (bench.whisper_real)
    prepare: str = "auto"  # ctc: our job's ``prepare`` option (separate prepare actors or fused, jobs/fused.py)
    pack: bool = False  # with real: our job without and with --pack, on 2-8 s files


def run(bench: AsrBench, progress=print) -> dict:
    """Run every system and return the report (see docs/benchmarks.md for its keys)."""
    machine_before = load_average()
    # Absolute, since the manifests the systems read hold these paths.
    bench = replace(bench, cache=Path(bench.cache).resolve())
    if bench.backend not in ("ctc", "whisper"):
        raise ValueError(f"backend {bench.backend!r}: expected 'ctc' or 'whisper'")
    if bench.real:
        from bench import whisper_real

        if bench.backend != "whisper":
            raise ValueError("real weights (--real) exist for the whisper backend only")
        work = Path(bench.work) if bench.work else Path(tempfile.mkdtemp(prefix="speech-bench-asr-"))
        work.mkdir(parents=True, exist_ok=True)
        report = whisper_real.run(bench, work, progress, machine_before)
        if not bench.work:
            shutil.rmtree(work)
        return report
    model = Path(bench.model).resolve() if bench.model else _default_model(bench)
    corpus = build_corpus(bench.cache, CorpusSpec(files=bench.files or (QUICK_FILES if bench.quick else FULL_FILES)))
    work = Path(bench.work) if bench.work else Path(tempfile.mkdtemp(prefix="speech-bench-asr-"))
    work.mkdir(parents=True, exist_ok=True)
    base = Job(system="", model=str(model), manifest=str(corpus.manifest), threads=bench.threads, work_dir="")
    if bench.backend == "whisper" and bench.engine != "torch":
        raise BenchError(f"--engine {bench.engine} runs CTC models only; Whisper's other engine is CTranslate2")
    if bench.backend == "whisper":
        report = _run_whisper(bench, model, corpus, base, work, progress, machine_before)
        if not bench.work:
            shutil.rmtree(work)
        return report
    if bench.engine not in ("torch", "onnx"):
        raise ValueError(f"engine {bench.engine!r}: expected 'torch' or 'onnx'")
    base = replace(base, transcribe_options={"prepare": bench.prepare})
    if bench.quick:
        base = replace(base, budgets_s=[0.0, 10.0], sweep_share=1.0)
    larger = repeat_manifest(corpus, bench.memory_scale, work / "manifest-larger.jsonl")
    models = {name: str(model) for name in _SPEED_SYSTEMS}
    if bench.engine == "onnx":
        converted = onnx_engine.exports(bench.cache, model, int8=True)
        models.update({name: str(converted[q]) for name, q in onnx_engine.ASR_SYSTEMS.items()})
    # The speed systems run `repeat` rounds, every other round in reverse order, and each keeps
    # its best round (load from other work only ever slows a run down); the report also gives
    # the ratios round by round.
    order = [*schedule(list(models), bench.repeat), ("profile", 0), ("ours_10x", 0)]  # last: the longest run
    runs: dict[str, list[dict]] = {}
    started = time.perf_counter()
    for name, round_ in order:
        job = replace(base, manifest=str(larger)) if name == "ours_10x" else replace(base, model=models.get(name, str(model)))
        system = "ours" if name in ("ours_10x", *onnx_engine.ASR_SYSTEMS) else name
        figures = run_system(replace(job, system=system, work_dir=str(work / f"{name}-{round_}")))
        figures["rtfx"] = round(figures["audio_s"] / figures["wall_s"], 3)
        runs.setdefault(name, []).append(figures)
        progress(f"  {name:<10} {figures['audio_s']:8.1f} s audio in {figures['wall_s']:7.1f} s: RTFx {figures['rtfx']:.2f}")
    results = {name: best_run(figures) for name, figures in runs.items()}
    report = _report(bench, model, corpus, results, machine_before, time.perf_counter() - started)
    if bench.engine == "onnx":
        report["onnx"] = onnx_engine.asr_figures(report["rtfx"], work)
        report["settings"]["onnx_models"] = {name: models[name] for name in onnx_engine.ASR_SYSTEMS}
        report["targets"].append(onnx_engine.asr_target(report["onnx"]))
    if not bench.work:
        shutil.rmtree(work)  # on failure it stays: the error names a log inside it
    return report


def _default_model(bench: AsrBench) -> Path:
    if bench.quick:
        from speech.testing.checkpoints import build_fixtures

        return build_fixtures(bench.cache)["whisper" if bench.backend == "whisper" else "ctc-xlsr"]
    if bench.backend == "whisper":
        from bench.whisper import base_whisper

        return base_whisper(bench.cache)
    from bench.checkpoint import base_ctc

    return base_ctc(bench.cache)


def _report(bench: AsrBench, model, corpus, results: dict, load_before: dict, seconds: float) -> dict:
    systems = {k: v for k, v in results.items() if k != "profile"}
    rtfx = {k: v["rtfx"] for k, v in systems.items()}
    ours = rtfx["ours"]
    rss = {k: v["peak_rss_mb"] for k, v in systems.items()}
    pss = {k: v["peak_pss_mb"] for k, v in systems.items()}
    report = {
        "benchmark": "asr",
        "quick": bench.quick,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {**machine(), "load_before": load_before, "load_after": load_average()},
        "settings": {
            "model": str(model),
            "model_parameters": count_parameters(model),
            "torch_threads": bench.threads,
            "prepare": bench.prepare,
            "unsorted_batch_size": Job.batch_size,
            "memory_scale": bench.memory_scale,
            "corpus": corpus.describe(),
        },
        "systems": systems,
        "rtfx": rtfx,
        "ratio_to_ours": {k: round(v / ours, 3) for k, v in rtfx.items()},
        "paired_ratios": paired_ratios(systems, "ours"),
        "ceiling_fraction": round(ours / rtfx["ceiling"], 3),
        "speedup_vs_naive": round(ours / rtfx["naive"], 3),
        "speedup_vs_unsorted": round(ours / rtfx["unsorted"], 3),
        "padding_efficiency": {k: round(v["padding_efficiency"], 4) for k, v in systems.items()},
        "peak_rss_mb": rss,
        "peak_pss_mb": pss,
        "peak_rss_ratio_10x": round(rss["ours_10x"] / rss["ours"], 3),
        "peak_pss_ratio_10x": round(pss["ours_10x"] / pss["ours"], 3),
        # Each process's own peaks, summed per role: where the x10 run's growth sits.
        "memory_by_process": {k: systems[k]["processes"] for k in ("ours", "ours_10x")},
        "startup_share": {k: round(v["startup_s"] / v["wall_s"], 3) for k, v in systems.items()},
        # Our job only: seconds from its start to its first model call (Ray, actors, model load).
        "first_batch_s": {k: round(v["first_batch_s"], 2) for k, v in systems.items() if "first_batch_s" in v},
        "profile": _profile(results["profile"], systems["ours"]),
        "repeat": bench.repeat,
        "bench_seconds": round(seconds, 1),
    }
    report["targets"] = _targets(report)
    return report


def _profile(profile: dict, ours: dict) -> dict:
    """Stage seconds of the serial run, their shares, and what Ray orchestration adds."""
    stages = {k: round(v, 3) for k, v in sorted(profile["stages_s"].items(), key=lambda kv: -kv[1])}
    serial = sum(stages.values())
    return {
        "stages_s": stages,
        "share": {k: round(v / serial, 3) for k, v in stages.items()},
        "serial_s": round(serial, 3),
        "ours_wall_s": round(ours["wall_s"], 3),
        # Positive: Ray start, actor start, scheduling and serialization cost more than
        # running decode and features beside the network saves.
        "orchestration_s": round(ours["wall_s"] - serial, 3),
    }


def _targets(report: dict) -> list[dict]:
    """The issue's goals, each with the measured value and whether it is met."""
    checks = [
        ("ours / ceiling RTFx", report["ceiling_fraction"], 0.85),
        ("ours / unsorted batched pipeline RTFx", report["speedup_vs_unsorted"], 1.3),
        ("ours / naive loop RTFx", report["speedup_vs_naive"], 1.0),
        ("ours padding efficiency", report["padding_efficiency"]["ours"], 0.95),
    ]
    rows = [{"target": name, "value": value, "goal": f">= {goal:g}", "met": value >= goal} for name, value, goal in checks]
    first = report["first_batch_s"]["ours"]
    rows.append({"target": "ours: seconds to the first model call", "value": first, "goal": "<= 6", "met": first <= 6})
    rows.append({
        "target": f"peak PSS, corpus x{report['settings']['memory_scale']} / x1",
        "value": report["peak_pss_ratio_10x"], "goal": "<= 1.25", "met": report["peak_pss_ratio_10x"] <= 1.25,
    })
    return rows


def format_table(report: dict) -> str:
    """The report as the plain-text table ``speech bench asr`` prints (also used in the README)."""
    if report.get("real"):
        from bench import whisper_real

        return whisper_real.format_table(report)
    if report.get("backend") == "whisper":
        return _format_whisper(report)
    scale = report["settings"]["memory_scale"]
    lines = [
        "| system | RTFx | x ours | padding eff. | peak RSS MiB | peak PSS MiB | wall s | start-up s | first batch s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, figures in report["systems"].items():
        label = _LABELS[name].format(scale=scale)
        first = report["first_batch_s"].get(name)
        lines.append(
            f"| {label} | {figures['rtfx']:.2f} | {report['ratio_to_ours'][name]:.2f} | "
            f"{figures['padding_efficiency']:.3f} | {figures['peak_rss_mb']:.0f} | {figures['peak_pss_mb']:.0f} | "
            f"{figures['wall_s']:.1f} | {figures['startup_s']:.1f} | {'' if first is None else f'{first:.1f}'} |"
        )
    lines += ["", "| target | value | goal | met |", "|---|---:|---:|---|"]
    lines += [f"| {t['target']} | {t['value']:.3f} | {t['goal']} | {'yes' if t['met'] else 'NO'} |" for t in report["targets"]]
    lines.append(format_paired(report))
    if "onnx" in report:
        o = report["onnx"]
        lines += ["", f"ONNX Runtime: float32 job / PyTorch ceiling {o['float32_vs_ceiling']:.3f}, int8 job / ceiling "
                      f"{o['int8_vs_ceiling']:.3f}; vs our PyTorch job {o['float32_vs_ours']:.3f} / {o['int8_vs_ours']:.3f}. "
                      f"Mean CER: float32 vs PyTorch {o['float32_cer_vs_pytorch']:.4f}, int8 vs float32 "
                      f"{o['int8_cer_vs_float32']:.4f}, int8 vs PyTorch {o['int8_cer_vs_pytorch']:.4f}."]
    lines += ["", *_format_processes(report), ""]
    profile = report["profile"]
    lines += [f"Profile (our stages run serially in one process, {profile['serial_s']:.1f} s; "
                  f"the Ray job took {profile['ours_wall_s']:.1f} s):", "", "| stage | seconds | share |", "|---|---:|---:|"]
    lines += [f"| {stage} | {s:.2f} | {profile['share'][stage]:.1%} |" for stage, s in profile["stages_s"].items()]
    lines.append(f"| Ray job minus serial sum (orchestration net of overlap) | {profile['orchestration_s']:.2f} | |")
    m, s = report["machine"], report["settings"]
    corpus = s["corpus"]
    lines += [
        "",
        f"Model: {s['model_parameters'] / 1e6:.1f}M parameters ({Path(s['model']).name}); "
        f"corpus: {corpus['files']} files, {corpus['audio_s']:.0f} s of audio "
        f"(mean {corpus['mean_s']:.1f} s, {corpus['min_s']:.1f}-{corpus['max_s']:.1f} s); torch threads: {s['torch_threads']}.",
        machine_line(m),
    ]
    return "\n".join(lines)


def _format_processes(report: dict) -> list[str]:
    """Our job's processes by role: each role's peak PSS and RSS (summed over its processes,
    each at its own peak) in the x1 and the x10 run, largest x10 PSS first, and each role's CPU
    seconds with its share of the tree's."""
    scale = report["settings"]["memory_scale"]
    one, many = report["memory_by_process"]["ours"], report["memory_by_process"]["ours_10x"]
    empty = empty_role()
    cpu_one = sum(r["cpu_s"] for r in one.values()) or 1.0
    cpu_many = sum(r["cpu_s"] for r in many.values()) or 1.0
    lines = [f"Our job's processes, each at its own peak (MiB; x1 corpus / x{scale}), and their CPU seconds:", "",
             f"| process | count | peak PSS x1 | peak PSS x{scale} | growth | peak RSS x1 | peak RSS x{scale} "
             f"| CPU s x1 (share) | CPU s x{scale} (share) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in sorted({*one, *many}, key=lambda n: -many.get(n, empty)["peak_pss_mb"]):
        a, b = one.get(name, empty), many.get(name, empty)
        ca, cb = a["cpu_s"], b["cpu_s"]
        lines.append(f"| {name} | {a['processes']}/{b['processes']} | {a['peak_pss_mb']:.0f} | {b['peak_pss_mb']:.0f} | "
                     f"{b['peak_pss_mb'] - a['peak_pss_mb']:+.0f} | {a['peak_rss_mb']:.0f} | {b['peak_rss_mb']:.0f} | "
                     f"{ca:.1f} ({ca / cpu_one:.1%}) | {cb:.1f} ({cb / cpu_many:.1%}) |")
    return lines


# ---------------------------------------------------------------- Whisper


def _run_whisper(bench: AsrBench, model: Path, corpus, base: Job, work: Path, progress, load_before: dict) -> dict:
    """Run the Whisper systems ``repeat`` rounds (odd rounds reversed, best kept) and build the report."""
    from bench.whisper import ct2_copy, job_options

    ct2 = ct2_copy(bench.cache, model)
    base = replace(base, ct2_model=str(ct2), **job_options(bench.max_new_tokens))
    # Batch sizes of the ceiling sweep, as seconds of 30 s windows: 1, 4, 8 and 16 windows (16:
    # the batch of the two batched peers; 8: our CPU default).
    base = replace(base, budgets_s=[30.0, 120.0], sweep_share=1.0) if bench.quick else replace(
        base, budgets_s=[30.0, 120.0, 240.0, 480.0]
    )
    runs: dict[str, list[dict]] = {}
    started = time.perf_counter()
    for round_ in range(bench.repeat):
        for name in round_order(list(_WHISPER_SYSTEMS), round_):
            system = _WHISPER_SYSTEMS[name]
            figures = run_system(replace(base, system=system, work_dir=str(work / f"{name}-{round_}")))
            figures["rtfx"] = round(figures["audio_s"] / figures["wall_s"], 3)
            runs.setdefault(name, []).append(figures)
            tokens = f", {figures['tokens']} tokens" if "tokens" in figures else ""
            progress(f"  {name:<14} {figures['audio_s']:8.1f} s audio in {figures['wall_s']:7.1f} s: "
                     f"RTFx {figures['rtfx']:.2f}{tokens}")
        # Our job's tokens are not counted (see bench.whisper.whisper_ours): the same
        # greedy text as the naive pipeline's, file by file, means the same tokens.
        same = _texts(work / f"ours-{round_}") == _texts(work / f"naive-{round_}")
        runs["ours"][-1].update(same_text_as_naive=same, tokens=runs["naive"][-1]["tokens"] if same else None)
        progress(f"  ours' transcripts {'equal' if same else 'DIFFER FROM'} the naive pipeline's")
    systems = {name: best_run(figures) for name, figures in runs.items()}
    return _report_whisper(bench, model, ct2, corpus, systems, load_before, time.perf_counter() - started)


def _texts(work: Path) -> list[str]:
    return json.loads((work / TEXTS_FILE).read_text())


def _report_whisper(bench: AsrBench, model: Path, ct2: Path, corpus, systems: dict, load_before: dict,
                    seconds: float) -> dict:
    rtfx = {k: v["rtfx"] for k, v in systems.items()}
    ours = rtfx["ours"]
    tokens = {k: v["tokens"] for k, v in systems.items()}
    report = {
        "benchmark": "asr",
        "backend": "whisper",
        "quick": bench.quick,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {**machine(), "load_before": load_before, "load_after": load_average()},
        "settings": {
            "model": str(model),
            "ct2_model": str(ct2),
            "model_parameters": count_parameters(model),
            "max_new_tokens": bench.max_new_tokens,
            "decoding": "greedy, language en, task transcribe, no timestamps",
            "torch_threads": bench.threads,
            "unsorted_batch_size": Job.batch_size,
            "faster_whisper_batch_size": Job.batch_size,
            "corpus": corpus.describe(),
        },
        "systems": systems,
        "rtfx": rtfx,
        "ratio_to_ours": {k: round(v / ours, 3) for k, v in rtfx.items()},
        "paired_ratios": paired_ratios(systems, "ours"),
        "ceiling_fraction": round(ours / rtfx["ceiling"], 3),
        "speedup_vs_naive": round(ours / rtfx["naive"], 3),
        "speedup_vs_unsorted": round(ours / rtfx["unsorted"], 3),
        "speedup_vs_faster_whisper": round(ours / rtfx["faster_whisper"], 3),
        # Equal work: every system generated the same number of tokens (greedy, same weights);
        # ours: the naive pipeline's count when its transcripts equal the pipeline's.
        "tokens": tokens,
        "tokens_equal": None not in tokens.values() and len(set(tokens.values())) == 1,
        "ours_same_text_as_naive": systems["ours"]["same_text_as_naive"],
        "tokens_per_window_max": bench.max_new_tokens,
        "peak_rss_mb": {k: v["peak_rss_mb"] for k, v in systems.items()},
        "peak_pss_mb": {k: v["peak_pss_mb"] for k, v in systems.items()},
        "startup_share": {k: round(v["startup_s"] / v["wall_s"], 3) for k, v in systems.items()},
        "repeat": bench.repeat,
        "bench_seconds": round(seconds, 1),
    }
    checks = [
        ("ours / faster-whisper batched RTFx", report["speedup_vs_faster_whisper"], 1.0),
        ("ours / ceiling RTFx", report["ceiling_fraction"], 0.85),
        ("ours / naive loop RTFx", report["speedup_vs_naive"], 1.0),
    ]
    report["targets"] = [{"target": n, "value": v, "goal": f">= {g:g}", "met": v >= g} for n, v, g in checks]
    return report


def _format_whisper(report: dict) -> str:
    lines = [
        "| system | RTFx | x ours | tokens | peak RSS MiB | peak PSS MiB | wall s | start-up s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, f in report["systems"].items():
        lines.append(
            f"| {_WHISPER_LABELS[name]} | {f['rtfx']:.2f} | {report['ratio_to_ours'][name]:.2f} | {f['tokens']} | "
            f"{f['peak_rss_mb']:.0f} | {f['peak_pss_mb']:.0f} | {f['wall_s']:.1f} | {f['startup_s']:.1f} |"
        )
    lines += ["", "| target | value | goal | met |", "|---|---:|---:|---|"]
    lines += [f"| {t['target']} | {t['value']:.3f} | {t['goal']} | {'yes' if t['met'] else 'NO'} |" for t in report["targets"]]
    lines.append(format_paired(report))
    m, s = report["machine"], report["settings"]
    corpus = s["corpus"]
    ceiling = report["systems"]["ceiling"]
    sweep = ", ".join(f"{b}: {r['rtfx']:.2f}" for b, r in ceiling["sweep"].items())
    lines += [
        "",
        f"Tokens generated: {'the same for every system' if report['tokens_equal'] else 'NOT the same for every system'} "
        f"(at most {s['max_new_tokens']} per 30 s window; {s['decoding']}; ours: the naive pipeline's count, as its "
        f"transcripts {'equal' if report['ours_same_text_as_naive'] else 'DO NOT equal'} the pipeline's file by file). "
        f"Ceiling: best batch "
        f"{ceiling['best_batch']} windows of the sweep {sweep} RTFx.",
        f"Model: {s['model_parameters'] / 1e6:.1f}M parameters ({Path(s['model']).name}); "
        f"corpus: {corpus['files']} files, {corpus['audio_s']:.0f} s of audio "
        f"(mean {corpus['mean_s']:.1f} s, {corpus['min_s']:.1f}-{corpus['max_s']:.1f} s); threads: {s['torch_threads']}.",
        machine_line(m),
    ]
    return "\n".join(lines)
