"""Options of ``speech embed``: which hidden states become the rows, and the shared audio run."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from speech.options.audio import AudioJobOptions, AudioModelOptions, AudioRun


class EmbeddingOptions(AudioModelOptions):
    """What the embedding rows depend on: the encoder, how it reads the audio, which states."""

    model: str = Field(description="hub id or local checkpoint directory of a wav2vec2-family encoder "
                                   "(AutoModel or AutoModelForCTC)")
    layer: int | Literal["all"] = Field(
        -1, description="hidden state N, transformers' hidden_states[N] (0: the transformer's input; -1: its last "
                        "layer; negative counts from the end), or 'all'")
    pooling: Literal["mean", "none"] = Field(
        "mean", description="mean: one vector per file over its real frames (padding and chunk overlap excluded); "
                            "none: every frame's vector, at the model's frame rate")


class EmbedOptions(AudioJobOptions):
    """Options of ``speech embed``: ``embedding`` decides the rows, ``run`` where and how the
    job runs; see configs/embed.yaml for a commented example (one flat mapping)."""

    embedding: EmbeddingOptions
    run: AudioRun
