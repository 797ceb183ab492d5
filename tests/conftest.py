"""Session-wide fixtures: one local Ray, offline checkpoints built once and cached."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
# Built once per machine and reused: the builders are deterministic and versioned.
FIXTURES_DIR = Path(os.environ.get("SPEECH_FIXTURES_DIR", REPO / ".cache" / "fixtures"))

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # no token files for a throwaway local Ray
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may reach the hub in tests


@pytest.fixture(scope="session")
def checkpoints() -> dict[str, Path]:
    """``{name: directory}`` of the tiny offline checkpoints (see speech.testing.checkpoints)."""
    from speech.testing.checkpoints import build_fixtures

    return build_fixtures(FIXTURES_DIR)


@pytest.fixture(scope="session")
def real_whisper() -> dict[str, Path]:
    """``{"whisper-base-ct2": dir, "whisper-base": dir}``: the real Whisper base from the
    ``real`` extra, joined and converted once (see speech.testing.real_whisper)."""
    from speech.testing.real_whisper import build_real_whisper

    return build_real_whisper(FIXTURES_DIR)


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray for the whole session (starting one takes seconds)."""
    import ray

    # address="local": always a Ray of this session's own, never a cluster that `ray start`
    # left running on the machine (another checkout's tests, tests/test_cluster.py).
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def run_bench(out: Path, *args: str) -> tuple[dict, str]:
    """``speech bench ARGS --json --cache --work`` in this process, writing under ``out``:
    ``(report from the JSON file, printed table)``; the command must exit 0."""
    from speech.cli import main

    path = out / "bench.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["bench", *args, "--json", str(path), "--cache", str(FIXTURES_DIR), "--work", str(out / "work")]) == 0
    return json.loads(path.read_text()), printed.getvalue()
