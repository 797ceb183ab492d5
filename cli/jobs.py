"""The job commands: ``transcribe``, ``embed``, ``finetune``, ``synthesize`` (Ray jobs writing
an output directory) and the ones reading models or outputs (``voices``, ``export``)."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Callable, Sequence
from typing import Any

from cli import values
from cli.errors import CliError, quiet_ray_user_errors


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
        "--vad", action="store_true", default=None,
        help="only the speech Silero VAD finds: Whisper packs it into 30 s windows; CTC skips silence and "
             "splits long files at pauses instead of fixed overlapping chunks",
    )
    p.add_argument("--max-new-tokens", type=int, help="Whisper: bound on tokens per 30 s window")
    p.add_argument(
        "--pack", action="store_true", default=None,
        help="Whisper: pack short files into shared 30 s windows (1 s apart) and split the text back by timestamps",
    )
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
    p.add_argument("--actors", type=values.actors, help="model actors: N, or MIN:MAX to autoscale")
    p.add_argument("--cpus-per-actor", type=float)
    p.add_argument("--gpus-per-actor", type=float, help="fractions share a GPU, e.g. 0.5")
    p.add_argument("--dtype", help=dtype)
    p.add_argument("--chunk-length-s", type=float, help="files longer than this are chunked (default 30)")
    p.add_argument("--stride-length-s", type=float, help="overlap on each side of a chunk (default chunk/6)")
    p.add_argument("--prepare-actors", type=int, help="CPU actors that decode and extract features")
    p.add_argument("--prepare", choices=("auto", "separate", "fused"),
                   help="decode and extract features in separate CPU actors or fused into the model actors "
                        "(default auto: fused without GPUs and with under 4 cluster CPUs per model actor)")
    p.add_argument(
        "--overwrite", action="store_true", default=None,
        help="start fresh; by default a rerun into OUTPUT resumes, skipping ids already written",
    )


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
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("-o", "--output", required=True, help="output directory (path or fsspec URL)")
    p.add_argument("--model", help="hub id or local checkpoint directory of a wav2vec2-family encoder")
    p.add_argument("--layer", type=values.layer, help="hidden state N (0: transformer input; -1, the default: last layer) or 'all'")
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
    )
    p.add_argument("train", metavar="TRAIN", help="training manifest with 'path' and 'text' columns")
    p.add_argument("-o", "--output", required=True, help="output directory (path or fsspec URL)")
    p.add_argument("--model", help="hub id or local directory of a CTC checkpoint")
    p.add_argument("--eval", metavar="EVAL", help="manifest scored with CER and WER after every epoch")
    p.add_argument("--epochs", type=values.positive, help="passes over TRAIN (default 3); a rerun may raise it to go on")
    p.add_argument("--workers", type=values.positive, help="Ray Train workers, one model replica each (default 1)")
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
    )
    p.add_argument("input", metavar="INPUT")
    p.add_argument("-o", "--output", required=True, help="output directory (path or fsspec URL)")
    p.add_argument("--model", help="checkpoint directory (ChatTTS, Kokoro) or VITS hub id / directory")
    p.add_argument("--backend", help="chattts | kokoro | vits (default: detected from the checkpoint)")
    p.add_argument("--voice", help="default voice: kokoro pack or blend (af_heart:0.7+am_adam:0.3), chattts seed:N or "
                                   "embedding, vits speaker (see `speech voices MODEL`)")
    p.add_argument("--voices", type=values.voice_list, metavar="V1,V2,...",
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
    p.add_argument("--actors", type=values.actors, help="model actors: N, or MIN:MAX to autoscale")
    p.add_argument("--cpus-per-actor", type=float)
    p.add_argument("--gpus-per-actor", type=float, help="fractions share a GPU, e.g. 0.5")
    p.add_argument("--batch-size", type=int, help="pieces per batched model call (default 8)")
    p.add_argument("--max-piece-chars", type=int, help="longest sentence piece given to the model")
    p.add_argument("--verify-with", metavar="ASR_MODEL", help="transcribe the audio and add asr_text and cer")
    p.add_argument("--max-cer", type=float, help="with --verify-with: rows above this CER get an error")
    p.add_argument("--overwrite", action="store_true", default=None, help="replace an existing OUTPUT")
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

    fields = (
        "inputs", "output", "model", "address", "batch_seconds", "actors", "cpus_per_actor",
        "gpus_per_actor", "dtype", "chunk_length_s", "stride_length_s", "language", "prepare", "prepare_actors", "overwrite",
        "task", "timestamps", "vad", "max_new_tokens", "compute_type", "beam_size", "best_of", "temperature",
        "compression_ratio_threshold", "logprob_threshold", "no_speech_threshold", "initial_prompt", "hotwords",
        "condition_on_previous_text", "pack",
    )
    return _run_job(args, TranscribeOptions, fields, transcribe.run, check=transcribe.check, errors=(ModelError,))


def _embed(args: argparse.Namespace) -> int:
    from jobs import embed
    from speech.asr import ModelError
    from speech.options import EmbedOptions

    fields = (
        "inputs", "output", "model", "layer", "pooling", "address", "batch_seconds", "actors", "cpus_per_actor",
        "gpus_per_actor", "dtype", "chunk_length_s", "stride_length_s", "prepare", "prepare_actors", "overwrite",
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
                quiet_ray_user_errors(quiet=not args.verbose)
                summary = run(options, plan)
    except (OptionsError, InputError, OutputError, *errors) as err:
        raise CliError(str(err)) from err
    print(json.dumps(summary.__dict__, indent=2))
    return 0


def _voices(args: argparse.Namespace) -> int:
    from speech.options import OptionsError, SynthesizeOptions, load_options
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


def _export(args: argparse.Namespace) -> int:
    from speech.export import ExportError, export

    try:
        summary = export(args.output, args.directory, args.formats)
    except ExportError as err:
        raise CliError(str(err)) from err
    print(summary.describe(args.directory, args.formats))
    return 0
