"""Argument types of the flags: each parses one value or raises ``argparse.ArgumentTypeError``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


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


def comma_list(text: str) -> list[str]:
    items = [v.strip() for v in text.split(",")]
    if not all(items):
        raise argparse.ArgumentTypeError(f"expected values separated by commas, got {text!r}")
    return items


def resources(text: str) -> dict[str, float]:
    """``NAME=AMOUNT[,NAME=AMOUNT...]``, e.g. ``model_slots=1``."""
    result = {}
    for item in comma_list(text):
        name, sep, amount = item.partition("=")
        try:
            result[name.strip()] = float(amount)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise argparse.ArgumentTypeError(f"expected NAME=AMOUNT[,NAME=AMOUNT...], got {text!r}")
    return result


def number_or_none(kind: type) -> Callable[[str], Any]:
    """A number of ``kind``, or 'none'/'off' (passed on as 'none': the option's validator decides)."""
    def parse(text: str) -> Any:
        if text.strip().lower() in ("none", "off"):
            return "none"
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None

    parse.__name__ = kind.__name__  # argparse names the type in its errors
    return parse
