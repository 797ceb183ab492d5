"""Reliability of the transcription job: resume after a hard kill, actor faults, poison items,
and the bad-input matrix of docs/reliability.md. Real local Ray, tiny real-architecture models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from conftest import SAMPLES, kill_session
from jobs import transcribe
from jobs.output import OutputError, open_output
from speech.audio import decode
from speech.options import Faults, TranscribeOptions

RATE = 16000


@pytest.fixture(scope="module")
def speech_clips():
    rows = [json.loads(line) for line in (SAMPLES / "manifest.jsonl").read_text().splitlines()]
    return [decode(str(SAMPLES / r["path"]), RATE) for r in rows]


@pytest.fixture(scope="module")
def corpus_200(tmp_path_factory, speech_clips):
    """200 short real-speech files (0.3-1.5 s)."""
    root = tmp_path_factory.mktemp("c200")
    rng = np.random.default_rng(3)
    for i in range(200):
        clip = speech_clips[i % len(speech_clips)]
        n = int(rng.uniform(0.3, 1.5) * RATE)
        start = int(rng.integers(0, max(1, len(clip) - n)))
        sf.write(root / f"utt{i:03d}.wav", clip[start : start + n], RATE)
    return root


def _options(inputs, out, model, **kw) -> TranscribeOptions:
    return TranscribeOptions(inputs=[str(i) for i in inputs], output=str(out), model=str(model), torch_threads=1, **kw)


def _rows(out) -> pd.DataFrame:
    return transcribe.read_output(str(out)).to_pandas()


def test_kill_and_resume_gives_every_id_exactly_once(ray_local, checkpoints, corpus_200, tmp_path):
    model = checkpoints["ctc-xlsr"]
    transcribe.run(_options([corpus_200], tmp_path / "ref", model, batch_seconds=2))
    reference = _rows(tmp_path / "ref").set_index("id")["text"]

    out = tmp_path / "out"
    config = tmp_path / "job.yaml"
    config.write_text("torch_threads: 1\nbatch_seconds: 2\n")
    cmd = [sys.executable, "-m", "speech.cli", "transcribe", str(corpus_200), "-o", str(out),
           "--model", str(model), "--config", str(config)]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    try:
        # Kill at the first Parquet file, or a few seconds into the pipeline: Ray Data may
        # write the whole (small) corpus as one file, so waiting for output alone can be too late.
        deadline = time.time() + 300
        started = None
        while time.time() < deadline and proc.poll() is None and not list(out.glob("*.parquet")):
            if started is None and (out / "_job.json").exists():
                started = time.time()
            if started is not None and time.time() - started > 6:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the job finished before it could be killed"
    finally:
        kill_session(proc.pid)
        proc.wait()
    first = _rows(out)["id"].tolist() if all(_readable(p) for p in out.glob("*.parquet")) else None
    assert first is None or len(first) < 200  # it really was interrupted

    summary = transcribe.run(_options([corpus_200], out, model, batch_seconds=2))
    rows = _rows(out)
    assert sorted(rows["id"]) == sorted(reference.index)  # every id exactly once
    assert summary.rows == 200 and summary.duplicate_ids == 0
    assert (rows.set_index("id")["text"].sort_index() == reference.sort_index()).all()


def _readable(path: Path) -> bool:
    try:
        pq.read_metadata(path)
        return True
    except (pa.ArrowInvalid, OSError):
        return False


def test_resume_drops_partial_files_and_refuses_a_different_job(tmp_path):
    out = tmp_path / "out"
    job = {"job": "transcribe", "model": "m"}
    assert open_output(str(out), job=job, overwrite=False).done_ids == frozenset()
    pq.write_table(pa.table({"id": ["a", "b"]}), out / "complete.parquet")
    (out / "partial.parquet").write_bytes((out / "complete.parquet").read_bytes()[:-20])  # footer cut off
    resumed = open_output(str(out), job=job, overwrite=False)
    assert resumed.done_ids == {"a", "b"}
    assert not (out / "partial.parquet").exists()
    with pytest.raises(OutputError, match="differs in: model"):
        open_output(str(out), job={**job, "model": "other"}, overwrite=False)
    assert open_output(str(out), job={**job, "model": "other"}, overwrite=True).done_ids == frozenset()


def test_actor_crash_mid_job_loses_nothing(ray_local, checkpoints, corpus_200, tmp_path):
    marker = tmp_path / "crashed"
    files = sorted(corpus_200.iterdir())[:30]
    options = _options(files, tmp_path / "out", checkpoints["ctc-xlsr"], batch_seconds=2,
                       faults=Faults(crash_on_id="utt010.wav", crash_marker=str(marker)))
    summary = transcribe.run(options)
    assert marker.exists()  # the actor really died once
    rows = _rows(tmp_path / "out")
    assert sorted(rows["id"]) == sorted(f.name for f in files)
    assert rows["error"].isna().all() and summary.ok == 30


def test_poison_item_fails_alone(ray_local, checkpoints, corpus_200, tmp_path):
    files = sorted(corpus_200.iterdir())[:10]  # < 15 s in all: one unit, one model call
    options = _options(files, tmp_path / "out", checkpoints["ctc-xlsr"], batch_seconds=60,
                       faults=Faults(poison_ids=["utt003.wav"]))
    transcribe.run(options)
    rows = _rows(tmp_path / "out").set_index("id")
    assert len(rows) == 10
    assert "injected model failure" in rows.loc["utt003.wav", "error"]
    mates = rows.drop(index="utt003.wav")
    assert mates["error"].isna().all() and mates["text"].map(lambda t: isinstance(t, str)).all()


def _write_matrix(root: Path, clip: np.ndarray) -> dict[str, str | None]:
    """Every kind of input of docs/reliability.md; returns id -> expected error substring (None: ok)."""
    root.mkdir()
    expected: dict[str, str | None] = {}

    def add(name: str, error: str | None) -> Path:
        expected[name] = error
        return root / name

    add("zero-byte.wav", "empty file").write_bytes(b"")
    sf.write(root / "full.wav", clip, RATE)
    add("truncated.wav", "cannot").write_bytes((root / "full.wav").read_bytes()[:40])
    (root / "full.wav").unlink()
    sf.write(add("flac-named.wav", None), clip, RATE, format="FLAC")  # wrong extension: content decides
    add("text-bytes.wav", "cannot").write_bytes(b"hello, I am not audio\n" * 50)
    nan = clip.copy()
    nan[100] = np.nan
    sf.write(add("nan.wav", "NaN"), nan, RATE, subtype="FLOAT")
    sf.write(add("zero-samples.wav", "no samples"), np.zeros(0, np.float32), RATE)
    sf.write(add("8k-8bit.wav", None), clip[::2], 8000, subtype="PCM_U8")
    sf.write(add("six-channel.wav", None), np.stack([clip] * 6, axis=1), RATE)
    sf.write(add("ünï cødé name.flac", None), clip, RATE)
    # Three hours of 8 kHz 8-bit audio (86 MB); max_duration_s below rejects it from its header.
    with sf.SoundFile(add("three-hours.wav", "over max_duration_s"), "w", 8000, 1, subtype="PCM_U8") as f:
        for _ in range(3 * 60):  # one minute at a time
            f.write(np.zeros(60 * 8000, np.float32))
    manifest = [{"id": name, "path": name} for name in expected]
    manifest.append({"id": "missing.wav", "path": "missing.wav"})
    expected["missing.wav"] = "not found"
    (root / "manifest.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in manifest))
    return expected


def test_bad_input_matrix(ray_local, checkpoints, speech_clips, tmp_path):
    expected = _write_matrix(tmp_path / "matrix", speech_clips[0])
    transcribe.run(_options([tmp_path / "matrix" / "manifest.jsonl"], tmp_path / "out", checkpoints["ctc-xlsr"],
                            max_duration_s=3600))
    rows = _rows(tmp_path / "out").set_index("id")
    assert sorted(rows.index) == sorted(expected)
    for name, error in expected.items():
        if error is None:
            assert pd.isna(rows.loc[name, "error"]), (name, rows.loc[name, "error"])
            assert isinstance(rows.loc[name, "text"], str)
        else:
            assert error in rows.loc[name, "error"], (name, rows.loc[name, "error"])
            assert pd.isna(rows.loc[name, "text"])


def test_duplicate_ids_fail_before_the_job_starts(tmp_path, checkpoints):
    (tmp_path / "m.jsonl").write_text('{"id": "a", "path": "1.wav"}\n{"id": "a", "path": "2.wav"}\n')
    from speech.cli import main

    assert main(["transcribe", str(tmp_path / "m.jsonl"), "-o", str(tmp_path / "o"),
                 "--model", str(checkpoints["ctc-xlsr"])]) == 2
    assert not (tmp_path / "o").exists()  # nothing was started or written
