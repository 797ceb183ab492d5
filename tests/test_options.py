"""Options in two parts, one flat mapping, flags generated from the fields (speech.options, cli.flags)."""

from __future__ import annotations

from pathlib import Path

import pytest

import cli
from cli.flags import option_values
from speech.options import (
    AsrOptions,
    EmbedOptions,
    FinetuneOptions,
    OptionsError,
    SynthesizeOptions,
    TranscribeOptions,
    load_options,
)

REPO = Path(__file__).resolve().parents[1]
JOBS = {"transcribe": TranscribeOptions, "embed": EmbedOptions, "synthesize": SynthesizeOptions,
        "finetune": FinetuneOptions}
#: What each configs/*.yaml is for; every file there must be listed (a new one fails this test).
CONFIGS = {"transcribe.yaml": TranscribeOptions, "transcribe-gpu.yaml": TranscribeOptions,
           "embed.yaml": EmbedOptions, "synthesize.yaml": SynthesizeOptions, "finetune.yaml": FinetuneOptions,
           "serve.yaml": None}
#: The fields a job must be given that the configs leave to the command line.
REQUIRED = {"inputs": ["x.wav"], "input": "x.txt", "train": "train.jsonl", "output": "out"}


def _commands() -> dict:
    return cli._parser()._subparsers._group_actions[0].choices


@pytest.mark.parametrize("job", JOBS.values(), ids=JOBS)
def test_parts_are_disjoint_and_cover_the_job(job):
    rows, run = job.parts().values()
    assert not set(rows.model_fields) & set(run.model_fields)
    assert list(job.fields()) == [*rows.model_fields, *run.model_fields]
    assert all(field.description for field in job.fields().values())  # every flag gets its help


def test_every_config_loads_flat():
    assert {p.name for p in (REPO / "configs").glob("*.yaml")} == set(CONFIGS)
    for name, job in CONFIGS.items():
        if job is None:
            continue
        extra = {k: v for k, v in REQUIRED.items() if k in job.fields()}
        options = load_options(job, REPO / "configs" / name, extra)
        assert options.output == "out"


def test_a_flat_mapping_splits_into_the_parts_and_reads_flat():
    options = TranscribeOptions(inputs=["a.wav"], output="o", model="m", beam_size=3, actors={"min": 1, "max": 2}, vad=True)
    assert options.asr == AsrOptions(model="m", beam_size=3, vad=True)
    assert (options.run.inputs, options.run.pool.max) == (["a.wav"], 2)
    assert (options.model, options.beam_size, options.pool.max) == ("m", 3, 2)  # flat reads
    assert options.decoding().beam_size == 3  # a part's method
    # _job.json is the rows part: a resume may change where and how the job runs, not this.
    assert options.result_options() == AsrOptions(model="m", beam_size=3, vad=True).model_dump(mode="json")
    assert options.model_copy(update={"actors": 4, "language": "ko"}).run.actors == 4
    assert options.model_copy(update={"language": "ko"}).asr.language == "ko"


def test_errors_name_the_flat_key():
    transcribe = {"inputs": ["x.wav"], "output": "o", "model": "m"}
    with pytest.raises(OptionsError, match=r"^invalid options: beam_sise: Extra inputs are not permitted$"):
        load_options(TranscribeOptions, None, {**transcribe, "beam_sise": 2})
    with pytest.raises(OptionsError, match=r"^invalid options: prepare_actors: Input should be greater than or equal to 1$"):
        load_options(TranscribeOptions, None, {**transcribe, "prepare_actors": 0})
    with pytest.raises(OptionsError, match=r"float16 needs a GPU"):  # a check across both parts
        load_options(TranscribeOptions, None, {**transcribe, "dtype": "float16"})
    with pytest.raises(OptionsError, match=r"max_cer needs verify_with"):
        load_options(SynthesizeOptions, None, {"input": "t.txt", "output": "o", "model": "m", "max_cer": 0.1})


@pytest.mark.parametrize("command", JOBS)
def test_every_field_has_a_flag_and_every_flag_a_field(command):
    parser = _commands()[command]
    parser.add_flags()  # done on first use
    dests = {a.dest for a in parser._actions} - {"help", "config"}
    assert dests == set(JOBS[command].fields())


def test_generated_flags_parse_to_the_options():
    parser = cli._parser()
    args = parser.parse_args([
        "transcribe", "a.wav", "b.wav", "-o", "out", "--model", "m", "--actors", "1:3", "--vad", "--no-strict-padding",
        "--timestamps", "word", "--temperature", "0,0.5", "--logprob-threshold", "none", "--resources-per-actor",
        "model_slots=1", "--batch-seconds", "20",
    ])
    options = load_options(TranscribeOptions, None, option_values(args, TranscribeOptions))
    assert options.run.pool.max == 3 and options.run.resources_per_actor == {"model_slots": 1.0}
    assert (options.vad, options.strict_padding, options.timestamps) == (True, False, "word")
    assert (options.temperature, options.logprob_threshold, options.batch_seconds) == ((0.0, 0.5), None, 20.0)
    assert options.run.inputs == ["a.wav", "b.wav"]
    # Flags not given stay None, so a config's values stand.
    assert option_values(args, TranscribeOptions)["language"] is None
    # Flag names from before the flags were generated.
    embed = parser.parse_args(["embed", "a.wav", "-o", "o", "--pool", "none", "--layer", "all"])
    assert (embed.pooling, embed.layer) == ("none", "all")
    synth = parser.parse_args(["synthesize", "t.txt", "-o", "o", "--no-normalize", "--voices", "a,b"])
    assert (synth.normalize, synth.voices) == (False, ["a", "b"])
    with pytest.raises(SystemExit):
        parser.parse_args(["synthesize", "t.txt", "-o", "o", "--format", "mp3"])  # Literal -> choices
