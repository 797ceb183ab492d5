"""Argument types of the flags: each parses one value or raises ``argparse.ArgumentTypeError``."""

from __future__ import annotations

import argparse


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def formats(text: str) -> list[str]:
    from speech.export import FORMATS

    formats = [f.strip().lower() for f in text.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise argparse.ArgumentTypeError(f"unknown format {text!r}; choose from {', '.join(FORMATS)}")
    return list(dict.fromkeys(formats))


def actors(text: str):
    try:
        if ":" in text:
            low, high = text.split(":", 1)
            return {"min": int(low), "max": int(high)}
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN:MAX, got {text!r}") from None


def layer(text: str):
    if text.strip().lower() == "all":
        return "all"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a layer number or 'all', got {text!r}") from None


def voice_list(text: str) -> list[str]:
    voices = [v.strip() for v in text.split(",")]
    if not all(voices):
        raise argparse.ArgumentTypeError(f"expected voices separated by commas, got {text!r}")
    return voices
