"""The job commands: ``transcribe``, ``embed``, ``finetune``, ``synthesize`` (Ray jobs writing
an output directory) and the ones reading models or outputs (``voices``, ``export``)."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cli import values
from cli.errors import CliError, quiet_ray_user_errors
from cli.flags import option_values

if TYPE_CHECKING:
    from speech.options import JobOptions


def add_transcribe(commands) -> None:
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
        options="TranscribeOptions", positional="inputs", metavar="INPUT",
    )
    _config_flag(p, "transcribe")
    p.set_defaults(handler=_transcribe)


def _config_flag(p: argparse.ArgumentParser, command: str) -> None:
    p.add_argument("--config", help=f"YAML options file (one flat mapping of option names), e.g. configs/{command}.yaml")


def add_embed(commands) -> None:
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
        # --pool: the flag's name before flags were generated ("pool" also names the actor pool).
        options="EmbedOptions", positional="inputs", metavar="INPUT", flag_aliases={"pooling": ["--pool"]},
    )
    _config_flag(p, "embed")
    p.set_defaults(handler=_embed)


def add_finetune(commands) -> None:
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
        options="FinetuneOptions", positional="train", metavar="TRAIN",
    )
    _config_flag(p, "finetune")
    p.set_defaults(handler=_finetune)


def add_synthesize(commands) -> None:
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
        options="SynthesizeOptions", positional="input", metavar="INPUT",
    )
    _config_flag(p, "synthesize")
    p.set_defaults(handler=_synthesize)


def add_voices(commands) -> None:
    p = commands.add_parser(
        "voices",
        help="list the voices of a speech synthesis model",
        description="List the voices MODEL offers (what --voice, --voices and a corpus 'voice' column take) with their language.",
        epilog="example: speech voices checkpoints/Kokoro-82M",
    )
    p.add_argument("model", metavar="MODEL", help="checkpoint directory (ChatTTS, Kokoro) or VITS hub id / directory")
    p.add_argument("--backend", choices=("chattts", "kokoro", "vits"), help="default: detected from the checkpoint")
    p.set_defaults(handler=_voices)


def add_export(commands) -> None:
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
        type=values.formats,
        help="srt | vtt | txt | json, or several: srt,vtt",
    )
    p.add_argument("-o", "--directory", required=True, metavar="DIR", help="where to write the files")
    p.set_defaults(handler=_export)


def _transcribe(args: argparse.Namespace) -> int:
    from jobs import transcribe
    from speech.asr import ModelError
    from speech.options import TranscribeOptions

    return _run_job(args, TranscribeOptions, transcribe.run, check=transcribe.check, errors=(ModelError,))


def _embed(args: argparse.Namespace) -> int:
    from jobs import embed
    from speech.asr import ModelError
    from speech.options import EmbedOptions

    return _run_job(args, EmbedOptions, embed.run, check=embed.check, errors=(ModelError,))


def _finetune(args: argparse.Namespace) -> int:
    from jobs import finetune
    from speech.options import FinetuneOptions
    from speech.train import TrainingError

    return _run_job(args, FinetuneOptions, finetune.run, check=finetune.check, errors=(TrainingError,))


def _synthesize(args: argparse.Namespace) -> int:
    from jobs import synthesize
    from speech.asr import ModelError as AsrModelError
    from speech.options import SynthesizeOptions
    from speech.tts import ModelError, check_options

    # The model and the options it cannot honour are checked before Ray starts; the job checks
    # its input and output itself, at the start of its run.
    return _run_job(args, SynthesizeOptions, lambda options, _plan: synthesize.run(options),
                    check=lambda options: check_options(options.tts), errors=(ModelError, AsrModelError))


def _run_job(
    args: argparse.Namespace,
    options_type: type[JobOptions],
    run: Callable[[Any, Any], Any],
    *,
    check: Callable[[Any], Any] | None = None,
    errors: tuple[type[Exception], ...] = (),
) -> int:
    """A job command: options from ``--config`` with the flags given over them,
    ``plan = check(options)`` (entered when it is a context manager: a plan holding the
    output's lease releases it however the command ends), then ``run(options, plan)`` in a
    Ray session; prints the returned summary (a dataclass) as JSON.

    Bad options, inputs or output, and the job's own ``errors``, become a :class:`CliError`.
    """
    from jobs.output import OutputError
    from jobs.runtime import ray_session
    from speech.inputs import InputError
    from speech.options import OptionsError, load_options

    overrides = option_values(args, options_type)
    try:
        options = load_options(options_type, args.config, overrides)
        with contextlib.ExitStack() as stack:
            plan = check(options) if check is not None else None  # before Ray starts: bad input fails in a second
            if isinstance(plan, contextlib.AbstractContextManager):
                stack.enter_context(plan)  # e.g. the output's lease, released however the run ends
            with ray_session(options.address):
                quiet_ray_user_errors(quiet=not args.verbose)
                summary = run(options, plan)
    except (OptionsError, InputError, OutputError, *errors) as err:
        raise CliError(str(err)) from err
    print(json.dumps(summary.__dict__, indent=2))
    return 0


def _voices(args: argparse.Namespace) -> int:
    from speech.options import OptionsError, TtsOptions, load_options
    from speech.tts import ModelError, load_front_end

    try:
        options = load_options(TtsOptions, None, {"model": args.model, "backend": args.backend})
        voices = load_front_end(options).voices()
    except (OptionsError, ModelError) as err:
        raise CliError(str(err)) from err
    width = max(len(v.name) for v in voices)
    for voice in voices:
        print(f"{voice.name:<{width}}  {voice.language}" + (f"  ({voice.note})" if voice.note else ""))
    return 0


def _export(args: argparse.Namespace) -> int:
    from speech.export import ExportError, export

    try:
        summary = export(args.output, args.directory, args.formats)
    except ExportError as err:
        raise CliError(str(err)) from err
    print(summary.describe(args.directory, args.formats))
    return 0
