"""What every benchmark report records besides its figures: the machine, its load, the JSON file."""

from __future__ import annotations

import json
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
