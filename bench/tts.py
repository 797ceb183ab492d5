"""``speech bench tts``: batched ``speech synthesize`` vs a one-utterance-at-a-time loop, same backend.

Systems (each in its own subprocess, see :mod:`bench.tts_systems`):

* ``ours``: the ``speech synthesize`` job on a local Ray;
* ``loop``: the same backend class loaded once in one process, one utterance per model call,
  writing the same files;
* ``ceiling``: the backend's model calls alone (one batched call over the whole corpus, no I/O);
* with ``engine="onnx"`` (Kokoro), ``ceiling_onnx`` and ``ours_onnx``: the same two on the model
  exported by ``speech convert onnx``, run with onnxruntime (:mod:`bench.onnx_engine`).

What batching can win depends on the backend: ChatTTS batches its DVAE decoder and Vocos but
samples its GPT one utterance at a time; VITS and Kokoro run one utterance per forward, so
against the loop our job can only gain from running the front end and the writes beside the
model. Absolute times on a shared machine are noise; the ratios measured in one run are the
result. The report records the machine and its load.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bench import onnx_engine
from bench.harness import BenchError, best_run, format_paired, paired_ratios, run_system, schedule
from bench.report import count_parameters, load_average, machine, machine_line
from bench.tts_systems import TtsJob

BACKENDS = ("chattts", "vits", "kokoro")

#: Corpus sizes (rows).
FULL_UTTERANCES = 24
QUICK_UTTERANCES = 6

#: The full run's ChatTTS: the released model's sizes (GPT width 768, DVAE decoder, Vocos
#: mel-24khz at 13.5M parameters) except the GPT's depth, cut from 20 layers so that a run
#: fits in minutes on 2 CPU cores. The GPT is the same code in every system, so its depth
#: moves every system's time alike; it does change how much of the run batching can touch.
FULL_CHATTTS_GPT_LAYERS = 4

#: ChatTTS sampling for random weights. With the released top_k=20 a random GPT samples its
#: end-of-audio token after a few tokens; sampling from all 626 audio tokens at temperature 1
#: ends after ~150 tokens (~3 s of audio) on average, the length of a real short sentence.
#: Lengths are set by the seeds, not by the text (the weights are random).
_CHATTTS_SAMPLING = {"temperature": 1.0, "top_p": 1.0, "top_k": 626}
_MAX_NEW_TOKENS = {False: 384, True: 24}  # full, quick: audio tokens per piece (~21 ms each)

#: Systems timed against each other (every other round in reverse order when repeated).
_SYSTEMS = ("ceiling", "ours", "loop")

_LABELS = {
    "ours": "ours: speech synthesize (Ray, batched)",
    "loop": "loop: same backend, 1 utterance per call",
    "ceiling": "ceiling: model calls only, batched, no I/O",
    **onnx_engine.TTS_LABELS,
}

#: Words of the generated corpus: common English words in lower-case ASCII, which every
#: backend's front end (ChatTTS normalizer, the VITS fixture's a-z vocabulary, espeak G2P) accepts.
_WORDS = (
    "the of and to in is was that for on are with as his they be at one have this from by hot word but what some "
    "we can out other were all there when up use your how said an each she which do their time if will way about "
    "many then them write would like so these her long make thing see him two has look more day could go come did "
    "number sound most people over know water than call first who may down side been now find any new work part "
    "take get place made live where after back little only round man year came show every good me give our under "
    "name very through just form sentence great think say help low line differ turn cause much mean before move "
    "right boy old too same tell does set three want air well also play small end put home read hand port large "
    "spell add even land here must big high such follow act why ask men change went light kind off need house "
    "picture try us again animal point mother world near build self earth father head stand own page should "
    "country found answer school grow study still learn plant cover food sun four between state keep eye never "
    "last let thought city tree cross farm hard start might story saw far sea draw left late run while press close "
    "night real life few north open seem together next white children begin got walk example ease paper group "
    "always music those both mark often letter until mile river car feet care second book carry took science eat "
    "room friend began idea fish mountain stop once base hear horse cut sure watch color face wood main enough "
    "plain girl usual young ready above ever red list though feel talk bird soon body dog family direct pose leave "
    "song measure door product black short numeral class wind question happen complete ship area half rock order "
    "fire south problem piece told knew pass since top whole king space heard best hour better true during hundred "
    "five remember step early hold west ground interest reach fast verb sing listen six table travel less morning"
).split()


@dataclass(frozen=True)
class TtsBench:
    """Settings of one ``speech bench tts`` run."""

    cache: Path  # checkpoints are built here once and reused
    quick: bool = False  # tiny model and corpus: checks the benchmark works (CI), measures nothing
    backend: str = "chattts"  # one of BACKENDS; chattts is the one whose model batches
    model: str | None = None  # a checkpoint directory of that backend; None: the generated one
    utterances: int | None = None  # corpus rows; None: FULL_UTTERANCES or QUICK_UTTERANCES
    threads: int = 2  # torch threads of every system
    repeat: int = 1  # rounds of the systems (odd rounds reversed); each system's best round is reported
    work: Path | None = None  # scratch directory; None: a temporary one, removed afterwards
    engine: str = "torch"  # "onnx" (kokoro): also the model calls and our job on its ONNX export


def run(bench: TtsBench, progress=print) -> dict:
    """Run every system and return the report (see docs/benchmarks.md, "TTS", for its keys)."""
    if bench.backend not in BACKENDS:
        raise BenchError(f"unknown backend {bench.backend!r}; expected one of {', '.join(BACKENDS)}")
    load_before = load_average()
    bench = replace(bench, cache=Path(bench.cache).resolve())
    model = Path(bench.model).resolve() if bench.model else _default_model(bench)
    work = Path(bench.work) if bench.work else Path(tempfile.mkdtemp(prefix="speech-bench-tts-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = write_corpus(work / "corpus.jsonl", bench.utterances or (QUICK_UTTERANCES if bench.quick else FULL_UTTERANCES))
    options = {"model": str(model), "backend": bench.backend}
    if bench.backend == "chattts":
        options.update(_CHATTTS_SAMPLING, max_new_tokens=_MAX_NEW_TOKENS[bench.quick])
    base = TtsJob(system="", corpus=str(corpus["path"]), threads=bench.threads, work_dir="", options=options)
    systems = dict.fromkeys(_SYSTEMS, options)
    if bench.engine == "onnx":
        if bench.backend != "kokoro":
            raise BenchError(f"--engine onnx runs Kokoro only, not {bench.backend}")
        exported = {**options, "model": str(onnx_engine.exports(bench.cache, model, int8=False)[None])}
        systems.update(dict.fromkeys(onnx_engine.TTS_SYSTEMS, exported))
    # `repeat` rounds, every other one in reverse order, each system keeping its best (load from
    # other work only ever slows a run down); the report also gives the ratios round by round.
    runs: dict[str, list[dict]] = {}
    started = time.perf_counter()
    for name, round_ in schedule(list(systems), bench.repeat):
        job = replace(base, system=name.removesuffix("_onnx"), work_dir=str(work / f"{name}-{round_}"), options=systems[name])
        figures = run_system(job, module="bench.tts_systems")
        figures["rtfx"] = round(figures["audio_s"] / figures["wall_s"], 3)
        runs.setdefault(name, []).append(figures)
        progress(f"  {name:<8} {figures['audio_s']:7.1f} s audio in {figures['wall_s']:7.1f} s: RTFx {figures['rtfx']:.3f}")
    results = {name: best_run(figures) for name, figures in runs.items()}
    checks = _checks(results)
    report = _report(bench, model, corpus, options, results, checks, load_before, time.perf_counter() - started)
    if bench.engine == "onnx":
        report["onnx_vs_torch"] = onnx_engine.tts_figures(report["rtfx"])
        report["settings"]["onnx_model"] = systems["ours_onnx"]["model"]
    if not bench.work:
        shutil.rmtree(work)  # on failure it stays: the error names a log inside it
    return report


def write_corpus(path: Path, rows: int, seed: int = 0, mean_words: float = 12.0, sigma: float = 0.6) -> dict:
    """Write a JSONL text corpus (``id``, ``text``) of ``rows`` generated sentences; returns its stats.

    Word counts are log-normal (mean ``mean_words`` before clipping to 2..48, spread ``sigma``
    of log(words)), so most rows are short and a few long, as in a real corpus; rows over 20
    words are two sentences, so they reach the model as two pieces for every backend.
    Words are drawn uniformly from a fixed list; everything is a function of ``seed``.
    """
    rng = np.random.default_rng(seed)
    mu = math.log(mean_words) - sigma**2 / 2  # a log-normal's mean is exp(mu + sigma^2 / 2)
    counts = np.clip(np.round(rng.lognormal(mu, sigma, rows)), 2, 48).astype(int)
    texts = []
    for count in counts:
        words = [str(w) for w in rng.choice(_WORDS, size=count)]
        sentences = [words[: count // 2], words[count // 2 :]] if count > 20 else [words]
        texts.append(" ".join(" ".join(s).capitalize() + "." for s in sentences))
    width = len(str(rows))
    with path.open("w") as f:
        for n, text in enumerate(texts):
            f.write(json.dumps({"id": str(n + 1).zfill(width), "text": text}) + "\n")
    return {
        "path": str(path),
        "rows": rows,
        "characters": sum(len(t) for t in texts),
        "words_mean": round(float(counts.mean()), 2),
        "words_min": int(counts.min()),
        "words_max": int(counts.max()),
        "two_sentence_rows": int((counts > 20).sum()),
        "seed": seed,
    }


def _default_model(bench: TtsBench) -> Path:
    from speech.testing.checkpoints import build_cached
    from speech.testing.tts_checkpoints import (
        TTS_FIXTURES_VERSION,
        build_chattts_checkpoint,
        build_kokoro_fixture,
        build_tts_fixtures,
    )

    if bench.backend == "kokoro":
        return build_kokoro_fixture(bench.cache)  # 59M parameters: near Kokoro-82M's size already
    if bench.backend == "vits" or bench.quick:
        return build_tts_fixtures(bench.cache)[{"vits": "tts-vits", "chattts": "tts-chattts"}[bench.backend]]
    layers = FULL_CHATTTS_GPT_LAYERS
    sizes = {"gpt": {"num_hidden_layers": layers}}
    return build_cached(Path(bench.cache), f"bench-tts-chattts-{layers}l",
                        lambda out: build_chattts_checkpoint(out, sizes=sizes), TTS_FIXTURES_VERSION)


def _checks(results: dict) -> dict:
    """Every system produced one audio per row, of the same length (all backends here are seeded).

    A different row set is a failed run (:class:`BenchError`); differing lengths are reported.
    """
    ids = {name: set(figures["samples"]) for name, figures in results.items()}
    reference = ids["loop"]
    for name, got in ids.items():
        if got != reference:
            missing, extra = sorted(reference - got)[:5], sorted(got - reference)[:5]
            raise BenchError(f"{name} produced {len(got)} rows, loop {len(reference)} (missing {missing}, extra {extra})")
    loop = results["loop"]["samples"]
    mismatches = {
        name: sorted(i for i in loop if figures["samples"][i] != loop[i])
        for name, figures in results.items() if name != "loop"
    }
    return {
        "rows": {name: figures["rows"] for name, figures in results.items()},
        "pieces": {name: figures["pieces"] for name, figures in results.items()},
        "rows_equal": True,
        "length_mismatches": {name: len(m) for name, m in mismatches.items()},
        "mismatched_ids": {name: m[:10] for name, m in mismatches.items() if m},
        "lengths_equal": not any(mismatches.values()),
    }


def _report(bench: TtsBench, model: Path, corpus: dict, options: dict, results: dict, checks: dict,
            load_before: dict, seconds: float) -> dict:
    characters = corpus["characters"]
    systems = {}
    for name in results:
        figures = {k: v for k, v in results[name].items() if k != "samples"}
        figures["chars_per_s"] = round(characters / figures["wall_s"], 2)
        systems[name] = figures
    rtfx = {k: v["rtfx"] for k, v in systems.items()}
    loop = systems["loop"]
    loop_model_rtfx = loop["audio_s"] / loop["model_s"]
    report = {
        "benchmark": "tts",
        "quick": bench.quick,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {**machine(), "load_before": load_before, "load_after": load_average()},
        "settings": {
            "backend": bench.backend,
            "model": str(model),
            "model_parameters": count_parameters(model),
            "torch_threads": bench.threads,
            "options": {k: v for k, v in options.items() if k != "model"},
            "corpus": {k: v for k, v in corpus.items() if k != "path"},
        },
        "systems": systems,
        "rtfx": rtfx,
        "chars_per_s": {k: v["chars_per_s"] for k, v in systems.items()},
        "speedup_vs_loop": round(rtfx["ours"] / rtfx["loop"], 3),
        "ceiling_fraction": round(rtfx["ours"] / rtfx["ceiling"], 3),
        # Batched model calls vs the loop's one-utterance model calls, both without I/O:
        # what batching alone buys for this backend.
        "batching_gain": round(rtfx["ceiling"] / loop_model_rtfx, 3),
        "loop_model_share": round(loop["model_s"] / loop["wall_s"], 3),
        "startup_share": {k: round(v["startup_s"] / v["wall_s"], 3) for k, v in systems.items()},
        "peak_rss_mb": {k: v["peak_rss_mb"] for k, v in systems.items()},
        "peak_pss_mb": {k: v["peak_pss_mb"] for k, v in systems.items()},
        "checks": checks,
        "paired_ratios": paired_ratios(systems, "ours"),
        "repeat": bench.repeat,
        "bench_seconds": round(seconds, 1),
    }
    return report


def format_table(report: dict) -> str:
    """The report as the plain-text (Markdown) table ``speech bench tts`` prints."""
    lines = [
        "| system | RTFx | x loop | chars/s | audio s | wall s | start-up s | peak RSS MiB | peak PSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    loop_rtfx = report["rtfx"]["loop"]
    for name, f in report["systems"].items():
        lines.append(
            f"| {_LABELS[name]} | {f['rtfx']:.3f} | {f['rtfx'] / loop_rtfx:.2f} | {f['chars_per_s']:.1f} | "
            f"{f['audio_s']:.1f} | {f['wall_s']:.1f} | {f['startup_s']:.1f} | {f['peak_rss_mb']:.0f} | {f['peak_pss_mb']:.0f} |"
        )
    checks, s, m = report["checks"], report["settings"], report["machine"]
    corpus = s["corpus"]
    mismatches = sum(checks["length_mismatches"].values())
    lines += [
        "",
        f"speedup_vs_loop (ours / loop RTFx): {report['speedup_vs_loop']:.3f}; ceiling_fraction (ours / ceiling): "
        f"{report['ceiling_fraction']:.3f}; batching_gain (ceiling / loop's model calls alone): {report['batching_gain']:.3f}; "
        f"loop's time in model calls: {report['loop_model_share']:.1%}.",
        f"Checks: every system wrote {checks['rows']['loop']} rows ({checks['pieces']['loop']} pieces); "
        + ("audio lengths equal row by row." if checks["lengths_equal"]
           else f"{mismatches} row lengths DIFFER: {checks['mismatched_ids']}."),
        *([f"ONNX Runtime / PyTorch RTFx: model calls {report['onnx_vs_torch']['ceiling']:.3f}, "
           f"our job {report['onnx_vs_torch']['ours']:.3f}."] if "onnx_vs_torch" in report else []),
        "",
        f"Backend: {s['backend']}, {s['model_parameters'] / 1e6:.1f}M parameters ({Path(s['model']).name}); options "
        f"{json.dumps(s['options'])}; corpus: {corpus['rows']} rows, {corpus['characters']} characters, "
        f"{corpus['words_mean']:.1f} words per row ({corpus['words_min']}-{corpus['words_max']}); torch threads: {s['torch_threads']}.",
        machine_line(m),
        format_paired(report),
    ]
    return "\n".join(lines)
