"""``speech bench asr --backend whisper --real``: both engines on real weights, with word error rates.

The model is the real OpenAI Whisper base (``speech fixtures --real``: its CTranslate2 directory
and this project's transformers conversion of the same weights), or ``--model``, a CTranslate2
Whisper directory (its transformers twin is converted into the cache). The corpus is English
speech with known text (espeak-ng ``en-us``, Harvard sentences, 1-4 sentences a file), so each
system's word error rate is reported beside its RTFx.

Systems (each in its own subprocess, ``repeat`` rounds with every odd round reversed, best round kept):

* ``ours_ct2_int8``, ``ours_ct2_float32``: our job, CTranslate2 engine, at that compute type;
* ``ours_transformers``: our job, transformers engine (float32);
* ``faster_whisper_int8``, ``faster_whisper_float32``: faster-whisper's ``BatchedInferencePipeline``
  (batch 16) on the same CTranslate2 weights and compute type;
* ``pipeline_batch16``: transformers' ASR pipeline, 16 files per batch, corpus order.

Equal decoding: greedy, English, transcribe, no timestamps, one temperature (no fallback), each
window until its end-of-text (at most 224 tokens). The targets: our CTranslate2 engine at least
as fast as faster-whisper at the same compute type, its WER within 0.01 of faster-whisper's.

With ``pack`` (``--pack``): our job only, each engine without and with ``--pack``
(:data:`PACK_SYSTEMS`), on short files (1 or 2 sentences: 2-8 s, Common Voice style). The
targets: packed throughput (audio / pipeline seconds, Ray's start excluded: packing does not
change it) at least 2.5x unpacked, WER at most 0.02 above unpacked.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from bench.harness import TEXTS_FILE, Job, best_run, format_paired, paired_ratios, run_system, schedule
from bench.report import count_parameters, load_average, machine, machine_line

#: Report name -> (system of bench.systems / bench.whisper, model, compute type).
SYSTEMS = {
    "ours_ct2_int8": ("whisper_ours", "ct2", "int8"),
    "ours_ct2_float32": ("whisper_ours", "ct2", "float32"),
    "ours_transformers": ("whisper_ours", "transformers", None),
    "faster_whisper_int8": ("faster_whisper", "ct2", "int8"),
    "faster_whisper_float32": ("faster_whisper", "ct2", "float32"),
    "pipeline_batch16": ("unsorted", "transformers", None),
}
LABELS = {
    "ours_ct2_int8": "ours: speech transcribe, CTranslate2 int8",
    "ours_ct2_float32": "ours: speech transcribe, CTranslate2 float32",
    "ours_transformers": "ours: speech transcribe, transformers float32",
    "faster_whisper_int8": "faster-whisper batched (16), int8",
    "faster_whisper_float32": "faster-whisper batched (16), float32",
    "pipeline_batch16": "transformers pipeline, batch 16",
}
#: ``--pack``: report name -> (system, model, compute type, packed).
PACK_SYSTEMS = {
    "ours_ct2_int8": ("whisper_ours", "ct2", "int8", False),
    "ours_ct2_int8_packed": ("whisper_ours", "ct2", "int8", True),
    "ours_ct2_float32": ("whisper_ours", "ct2", "float32", False),
    "ours_ct2_float32_packed": ("whisper_ours", "ct2", "float32", True),
    "ours_transformers": ("whisper_ours", "transformers", None, False),
    "ours_transformers_packed": ("whisper_ours", "transformers", None, True),
}
LABELS.update({f"{name}_packed": f"{LABELS[name]}, --pack" for name in ("ours_ct2_int8", "ours_ct2_float32", "ours_transformers")})
#: Sentences per file of the --pack corpus, in turn: 2-8 s files.
SHORT_FILE_SENTENCES = (1, 2)
#: --pack targets: packed / unpacked throughput, packed - unpacked WER.
PACK_SPEEDUP, PACK_WER_GAP = 2.5, 0.02
#: Corpus sizes (files of 1-4 sentences, ~6 s on average).
FULL_FILES = 120
QUICK_FILES = 3
#: Bump when the corpus builder changes.
CORPUS_VERSION = "1"


def models(cache: Path, model: str | None) -> tuple[Path, Path]:
    """``(CTranslate2 directory, transformers checkpoint)`` of the same weights."""
    from speech.testing.checkpoints import build_cached
    from speech.testing.real_whisper import VERSION, build_real_whisper

    if model is None:
        built = build_real_whisper(cache)
        return built["whisper-base-ct2"], built["whisper-base"]
    from speech.convert import ct2_whisper

    ct2 = Path(model).resolve()
    ct2_whisper.check_whisper(ct2)
    twin = build_cached(cache, f"{ct2.name}-transformers", lambda out: ct2_whisper.convert(ct2, out), f"{VERSION}/{ct2}")
    return ct2, twin


def english_corpus(cache: Path, files: int, per_file: tuple[int, ...] = (1, 2, 3, 4)):
    """The espeak-ng English corpus of ``files`` files of ``per_file`` sentences in turn, under
    ``cache``, built once."""
    from bench.corpus import load_corpus
    from speech.testing import english
    from speech.testing.checkpoints import build_cached

    name = f"bench-english-{files}" if per_file == (1, 2, 3, 4) else f"bench-english-{'-'.join(map(str, per_file))}-{files}"
    directory = build_cached(cache, name, lambda out: english.write_corpus(out, files, per_file=per_file), CORPUS_VERSION)
    return load_corpus(directory)


def run(bench, work: Path, progress, load_before: dict) -> dict:
    """Run every system ``bench.repeat`` times (see :func:`bench.harness.schedule`); the report (see :func:`format_table`)."""
    cache = Path(bench.cache)
    ct2, twin = models(cache, bench.model)
    files = bench.files or (QUICK_FILES if bench.quick else FULL_FILES)
    pack = bench.pack
    corpus = english_corpus(cache, files, SHORT_FILE_SENTENCES) if pack else english_corpus(cache, files)
    systems = PACK_SYSTEMS if pack else {name: (*spec, False) for name, spec in SYSTEMS.items()}
    decoding = {"language": "en", "task": "transcribe", "timestamps": "none", "temperature": [0.0]}
    base = Job(system="", model=str(twin), manifest=str(corpus.manifest), threads=bench.threads, work_dir="",
               ct2_model=str(ct2), pad_to_window=False,
               generate_kwargs={"language": "en", "task": "transcribe", "num_beams": 1, "do_sample": False,
                                "max_new_tokens": 224})
    runs: dict[str, list[dict]] = {}
    started = time.perf_counter()
    for name, round_ in schedule(list(systems), bench.repeat):
        system, kind, compute, packed = systems[name]
        options = {**decoding, **({"compute_type": compute} if kind == "ct2" else {}), **({"pack": True} if packed else {})}
        job = replace(base, system=system, work_dir=str(work / f"{name}-{round_}"), transcribe_options=options,
                      model=str(ct2 if kind == "ct2" and system == "whisper_ours" else twin),
                      compute_type=compute or "float32")
        figures = run_system(job)
        figures["rtfx"] = round(figures["audio_s"] / figures["wall_s"], 3)
        if "pipeline_s" in figures:  # our job: its time without Ray's start
            figures["pipeline_rtfx"] = round(figures["audio_s"] / figures["pipeline_s"], 3)
        figures["wer"] = round(_wer(corpus.manifest, Path(job.work_dir)), 4)
        runs.setdefault(name, []).append(figures)
        progress(f"  {name:<22} {figures['audio_s']:7.1f} s audio in {figures['wall_s']:7.1f} s: "
                 f"RTFx {figures['rtfx']:.2f}, WER {figures['wer']:.3f}")
    systems = {name: best_run(r) for name, r in runs.items()}
    return _report(bench, ct2, twin, corpus, systems, load_before, time.perf_counter() - started, pack)


def _wer(manifest: Path, work: Path) -> float:
    from speech.inputs import read_manifest
    from speech.text.score import english_word_error_rate

    references = read_manifest(str(manifest))["reference"].to_pylist()
    return english_word_error_rate(references, json.loads((work / TEXTS_FILE).read_text()))


def _report(bench, ct2: Path, twin: Path, corpus, systems: dict, load_before: dict, seconds: float, pack: bool) -> dict:
    rtfx = {k: v["rtfx"] for k, v in systems.items()}
    wer = {k: v["wer"] for k, v in systems.items()}
    report = {
        "benchmark": "asr",
        "backend": "whisper",
        "real": True,
        "pack": pack,
        "quick": bench.quick,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {**machine(), "load_before": load_before, "load_after": load_average()},
        "settings": {
            "model": str(ct2),
            "transformers_model": str(twin),
            "model_parameters": count_parameters(twin),
            "decoding": "greedy, language en, task transcribe, no timestamps, temperature 0 only, until end of text",
            "torch_threads": bench.threads,
            "corpus": corpus.describe(),
        },
        "systems": systems,
        "rtfx": rtfx,
        "wer": wer,
        "peak_rss_mb": {k: v["peak_rss_mb"] for k, v in systems.items()},
        "paired_ratios": paired_ratios(systems, "ours_ct2_int8"),
        "repeat": bench.repeat,
        "bench_seconds": round(seconds, 1),
    }
    report["targets"] = _pack_targets(systems) if pack else _targets(rtfx, wer)
    return report


def _pack_targets(systems: dict) -> list[dict]:
    """Per engine: packed / unpacked throughput (pipeline seconds) and the WER change."""
    targets = []
    for name in (n for n in systems if not n.endswith("_packed")):
        plain, packed = systems[name], systems[f"{name}_packed"]
        speed = round(packed["pipeline_rtfx"] / plain["pipeline_rtfx"], 3)
        gap = round(packed["wer"] - plain["wer"], 4)
        targets.append({"target": f"{LABELS[name]}: packed / unpacked throughput", "value": speed,
                        "goal": f">= {PACK_SPEEDUP}", "met": speed >= PACK_SPEEDUP})
        targets.append({"target": f"{LABELS[name]}: packed - unpacked WER", "value": gap,
                        "goal": f"<= {PACK_WER_GAP}", "met": gap <= PACK_WER_GAP})
    return targets


def _targets(rtfx: dict, wer: dict) -> list[dict]:
    targets = []
    for compute in ("int8", "float32"):
        ours, theirs = f"ours_ct2_{compute}", f"faster_whisper_{compute}"
        speed = round(rtfx[ours] / rtfx[theirs], 3)
        gap = round(wer[ours] - wer[theirs], 4)
        targets.append({"target": f"ours CTranslate2 / faster-whisper batched RTFx, {compute}", "value": speed,
                        "goal": ">= 1", "met": speed >= 1.0})
        targets.append({"target": f"ours CTranslate2 WER - faster-whisper WER, {compute}", "value": gap,
                        "goal": "<= 0.01", "met": gap <= 0.01})
    return targets


def format_table(report: dict) -> str:
    """The report as ``speech bench asr --backend whisper --real`` prints it."""
    lines = ["| system | RTFx | pipeline RTFx | WER | padding efficiency | peak RSS MiB | wall s | start-up s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, f in report["systems"].items():
        pipeline, efficiency = f.get("pipeline_rtfx"), f.get("padding_efficiency")
        lines.append(f"| {LABELS[name]} | {f['rtfx']:.2f} | {'-' if pipeline is None else f'{pipeline:.2f}'} | {f['wer']:.3f} | "
                     f"{'-' if efficiency is None else f'{efficiency:.2f}'} | {f['peak_rss_mb']:.0f} | {f['wall_s']:.1f} | "
                     f"{f['startup_s']:.1f} |")
    lines += ["", "| target | value | goal | met |", "|---|---:|---:|---|"]
    lines += [f"| {t['target']} | {t['value']:.3f} | {t['goal']} | {'yes' if t['met'] else 'NO'} |" for t in report["targets"]]
    s = report["settings"]
    corpus = s["corpus"]
    lines += [
        "",
        f"Model: {s['model_parameters'] / 1e6:.1f}M parameters ({Path(s['model']).name}); {s['decoding']}; corpus: "
        f"{corpus['files']} espeak-ng English files, {corpus['audio_s']:.0f} s of audio (mean {corpus['mean_s']:.1f} s, "
        f"{corpus['min_s']:.1f}-{corpus['max_s']:.1f} s); threads: {s['torch_threads']}.",
        machine_line(report["machine"]),
        format_paired(report, "ours_ct2_int8"),
    ]
    return "\n".join(lines)
