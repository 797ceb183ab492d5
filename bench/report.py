"""What every benchmark report records besides its figures: the machine, its load, the JSON file."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from pathlib import Path


def write_json(report: dict, path: str | Path) -> None:
    """Write ``report`` as indented JSON (the ``--json FILE`` of ``speech bench``)."""
    Path(path).write_text(json.dumps(report, indent=2) + "\n")


def load_average() -> dict:
    """The 1/5/15-minute load averages: how busy the machine was (other work slows every system)."""
    one, five, fifteen = os.getloadavg()
    return {"1min": round(one, 2), "5min": round(five, 2), "15min": round(fifteen, 2)}


def machine() -> dict:
    """CPU model, cores, memory (GiB) and the versions of the libraries that set the figures."""
    import psutil
    import ray
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass  # not Linux: keep platform's answer
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": f"Python {sys.version.split()[0]}",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "ray": ray.__version__,
    }


def machine_line(m: dict) -> str:
    """One line of a printed report: ``m`` (:func:`machine` plus ``load_before``/``load_after``)."""
    return (
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']:.0f} GiB; load average "
        f"{m['load_before']['1min']:.2f} before, {m['load_after']['1min']:.2f} after; {m['python']}, torch {m['torch']}, "
        f"transformers {m['transformers']}, ray {m['ray']}."
    )


def count_parameters(model: str | Path) -> int:
    """Parameters of a checkpoint directory, read from its files: the tensor shapes in every
    ``*.safetensors`` header (no weights loaded) plus every tensor of its ``*.pth`` files."""
    import torch
    from safetensors import safe_open

    total = 0
    for file in sorted(Path(model).rglob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            total += sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())  # noqa: SIM118 - safe_open has no __iter__
    for file in sorted(Path(model).glob("*.pth")):
        total += _numel(torch.load(file, map_location="cpu", weights_only=True))
    return total


def _numel(tree) -> int:
    if isinstance(tree, dict):
        return sum(_numel(v) for v in tree.values())
    return tree.numel()
