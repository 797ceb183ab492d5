"""Options of speech synthesis: the synthesizer's (``TtsOptions``, what the job's rows and the
server's audio depend on) and the ``speech synthesize`` job's."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from speech.files import READ_TIMEOUT_S
from speech.options.base import ActorPool, JobOptions, Options, actor_pool

#: Speaking rates a synthesis takes (1.0 normal; OpenAI's speech API allows the same range).
SPEEDS = (0.25, 4.0)


class TtsOptions(Options):
    """What the synthesized rows depend on: the rows part of ``speech synthesize`` and the
    options of a served TTS model."""

    model: str = Field(description="checkpoint directory (ChatTTS, Kokoro) or VITS hub id / directory")
    backend: Literal["chattts", "kokoro", "vits"] | None = Field(
        None, description="the model's backend (default: detected from the checkpoint)")

    # Defaults for rows whose input gives none.
    voice: str | None = Field(
        None, description="default voice: kokoro pack or blend (af_heart:0.7+am_adam:0.3), chattts seed:N or "
                          "embedding, vits speaker (see `speech voices MODEL`; default: the model's)")
    voices: list[str] | None = Field(
        None, min_length=1, description="voices dealt to rows without one, in corpus order, from a list shuffled "
                                        "with seed (a speaker-diverse dataset, the same on every run)")
    seed: int = Field(0, ge=0, description="default seed of rows without one")
    language: str | None = Field(
        None, description="default language of rows without one; numbers and symbols are read in it (en, ko, zh; "
                          "default: the script of each row)")

    format: Literal["flac", "wav"] = Field("flac", description="audio file format (wav: 16-bit PCM)")
    embed_audio: bool = Field(True, description="also store each file's bytes in the Parquet rows (portable dataset)")

    # Text front end.
    normalize: bool = Field(
        True, description="write out numbers, dates, currencies, units ... (en, ko, zh) before synthesis; "
                          "off: the text is sent as written")
    unknown_chars: Literal["error", "drop", "spell"] = Field(
        "error", description="letters/digits the model cannot say: the row fails (error), they are dropped, or "
                             "replaced by their name (spell)")
    max_text_chars: int = Field(5000, ge=1, description="longer rows are refused with an error")
    max_piece_chars: int | None = Field(
        None, ge=8, description="longest sentence piece given to the model (default: the backend's own limit)")
    sentence_pause_s: float = Field(0.1, ge=0, description="silence between the pieces of a row")
    speed: float | None = Field(
        None, ge=SPEEDS[0], le=SPEEDS[1], description="speaking rate, 1.0 normal, 0.25-4 (vits, kokoro; default: "
                                                      "the model's)")

    # ChatTTS sampling (ignored by other backends).
    refine_text: bool = Field(False, description="ChatTTS: let the GPT add prosody markers first")
    temperature: float = Field(0.3, gt=0, description="ChatTTS: sampling temperature")
    top_p: float = Field(0.7, gt=0, le=1, description="ChatTTS: nucleus sampling mass")
    top_k: int = Field(20, ge=1, description="ChatTTS: sample among this many likeliest tokens")
    max_new_tokens: int = Field(2048, ge=1, description="ChatTTS: audio tokens per piece")

    @field_validator("voices")
    @classmethod
    def _named_voices(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not voice.strip() for voice in value):
            raise ValueError("every voice must be named (an empty entry in the list)")
        return value


class TtsRun(Options):
    """How one TTS model instance runs: the part of the run options a Serve replica takes too."""

    batch_size: int = Field(8, ge=1, description="pieces of similar length per batched model call")
    torch_threads: int | None = Field(None, ge=1, description="intra-op threads of a model "
                                                               "(default: cpus_per_actor rounded up)")


class SynthesizeRun(TtsRun):
    """Where and how ``speech synthesize`` runs, and its verification pass.

    Verification (``verify_with``, ``max_cer``) scores the written rows in a pass of its own: a
    resumed run may add it, and rows scored by an earlier run keep their scores, so it is not
    part of what an output's ``_job.json`` pins.
    """

    input: str = Field(description="text file (one utterance a line), .jsonl, .csv or .parquet with a 'text' column")
    output: str = Field(description="output directory (path or fsspec URL)")
    address: str | None = Field(None, description="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    overwrite: bool = Field(False, description="replace an existing OUTPUT instead of resuming into it")

    rows_per_call: int = Field(16, ge=1, description="rows handed to a model actor at once")
    actors: int | ActorPool = Field(1, description="model actors: N, or MIN:MAX to autoscale")
    cpus_per_actor: float = Field(1.0, gt=0, description="CPUs reserved per model actor")
    gpus_per_actor: float = Field(0.0, ge=0, description="GPUs per model actor; fractions share a GPU, e.g. 0.5")
    front_end_actors: int = Field(1, ge=1, description="CPU actors of the text front end (normalize, split, G2P)")
    cpus_per_front_end: float = Field(0.25, gt=0, description="CPUs reserved per front end actor")
    read_timeout_s: float | None = Field(
        READ_TIMEOUT_S, gt=0, description="reading the input text longer than this stops the job (null: no bound)")

    verify_with: str | None = Field(
        None, description="ASR checkpoint (see speech transcribe --model): transcribe the audio and add asr_text "
                          "and cer")
    max_cer: float | None = Field(None, ge=0, description="with verify_with: rows above this CER get an error")

    @model_validator(mode="after")
    def _verification(self) -> SynthesizeRun:
        if self.max_cer is not None and self.verify_with is None:
            raise ValueError("max_cer needs verify_with (an ASR model to transcribe the audio with)")
        return self

    @property
    def pool(self) -> ActorPool:
        return actor_pool(self.actors)


class SynthesizeOptions(JobOptions):
    """Options of ``speech synthesize``: ``tts`` decides the rows, ``run`` where and how the job
    runs; see configs/synthesize.yaml for a commented example (one flat mapping)."""

    tts: TtsOptions
    run: SynthesizeRun
