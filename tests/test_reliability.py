"""Reliability of the transcription job: resume after a hard kill, actor faults, poison items,
and the bad-input matrix of docs/reliability.md. Real local Ray, tiny real-architecture models."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
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
from conftest import REPO, SAMPLES, kill_session, silent_flac
from fault_injection import faulty_task

from cli import main
from jobs import transcribe
from jobs.output import OutputError, open_output
from speech.audio import decode
from speech.options import TranscribeOptions

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


def test_kill_and_resume_gives_every_id_exactly_once(ray_local, checkpoints, corpus_200, tmp_path, capsys, caplog):
    model = checkpoints["ctc-xlsr"]
    transcribe.run(_options([corpus_200], tmp_path / "ref", model, batch_seconds=2))
    reference = _rows(tmp_path / "ref").set_index("id")["text"]

    out = tmp_path / "out"
    config = tmp_path / "job.yaml"
    config.write_text("torch_threads: 1\nbatch_seconds: 2\n")
    cmd = [sys.executable, "-m", "cli", "transcribe", str(corpus_200), "-o", str(out),
           "--model", str(model), "--config", str(config)]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    second = None
    try:
        # Kill at the first Parquet file, or a few seconds into the pipeline: Ray Data may
        # write the whole (small) corpus as one file, so waiting for output alone can be too late.
        deadline = time.time() + 300
        started = None
        while time.time() < deadline and proc.poll() is None and not list(out.glob("*.parquet")):
            if started is None and (out / "_job.json").exists():
                started = time.time()
                # A second job into the same output, meanwhile, stops at once naming the first.
                second = (main(cmd[3:]), capsys.readouterr().err)
            if started is not None and time.time() - started > 6:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the job finished before it could be killed"
    finally:
        kill_session(proc.pid)
        proc.wait()
    assert second is not None and second[0] == 2, second
    assert f"is in use by another job (host {socket.gethostname()}, pid {proc.pid}, since " in second[1]
    first = _rows(out)["id"].tolist() if all(_readable(p) for p in out.glob("*.parquet")) else None
    assert first is None or len(first) < 200  # it really was interrupted

    # The killed job's lock is left behind; its process is gone, so the rerun takes it over.
    assert (out / "_lock.json").exists()
    with caplog.at_level(logging.WARNING, logger="jobs.lock"):
        summary = transcribe.run(_options([corpus_200], out, model, batch_seconds=2))
    assert f"taking over the stale lock {out}/_lock.json" in caplog.text and f"pid {proc.pid}" in caplog.text
    assert not (out / "_lock.json").exists()  # released at the end
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
    with open_output(str(out), job=job, overwrite=False) as output:
        assert output.done_ids == frozenset()
    pq.write_table(pa.table({"id": ["a", "b"]}), out / "complete.parquet")
    (out / "partial.parquet").write_bytes((out / "complete.parquet").read_bytes()[:-20])  # footer cut off
    with open_output(str(out), job=job, overwrite=False) as resumed:
        assert resumed.done_ids == {"a", "b"}
    assert not (out / "partial.parquet").exists()
    with pytest.raises(OutputError, match="differs in: model"):
        open_output(str(out), job={**job, "model": "other"}, overwrite=False)
    # An option added since _job.json was written resumes while it keeps its default, not otherwise.
    with open_output(str(out), job={**job, "pack": False}, overwrite=False, defaults={"pack": False}) as newer:
        assert newer.done_ids == {"a", "b"}
    with pytest.raises(OutputError, match="differs in: pack"):
        open_output(str(out), job={**job, "pack": True}, overwrite=False, defaults={"pack": False})
    with open_output(str(out), job={**job, "model": "other"}, overwrite=True) as replaced:
        assert replaced.done_ids == frozenset()
    assert sorted(p.name for p in out.iterdir()) == ["_job.json"]


def test_overwrite_never_deletes_what_the_tool_did_not_write(tmp_path, checkpoints, capsys):
    """`speech transcribe decoy -o decoy --overwrite` once deleted the corpus: now nothing is touched."""
    decoy = tmp_path / "decoy"
    (decoy / "sub").mkdir(parents=True)
    sf.write(decoy / "a.wav", np.zeros(1600, np.float32), RATE)
    (decoy / "sub" / "notes.txt").write_text("mine")
    before = {p: p.read_bytes() for p in decoy.rglob("*") if p.is_file()}
    model = str(checkpoints["ctc-xlsr"])
    assert main(["transcribe", str(decoy), "-o", str(decoy), "--model", model, "--overwrite"]) == 2
    assert f"output {decoy} is the input {decoy}" in capsys.readouterr().err
    # An output that holds an input (here through a manifest elsewhere) is refused the same way.
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"path": str(decoy / "a.wav")}) + "\n")
    assert main(["transcribe", str(manifest), "-o", str(decoy), "--model", model, "--overwrite"]) == 2
    assert f"contains the input {decoy / 'a.wav'}" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in decoy.rglob("*") if p.is_file()} == before

    # An output this tool wrote, plus a file of the user's: --overwrite refuses to clear it.
    out = tmp_path / "out"
    job = {"job": "synthesize", "model": "m"}
    with open_output(str(out), job=job, overwrite=False):
        pass
    pq.write_table(pa.table({"id": ["a"]}), out / "part-0.parquet")
    (out / "audio" / "en").mkdir(parents=True)
    (out / "audio" / "en" / "a.flac").write_bytes(b"fLaC")
    (out / "sub").mkdir()
    (out / "sub" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"holds files this tool did not write \(sub\)"):
        open_output(str(out), job=job, overwrite=True)
    assert (out / "sub" / "notes.txt").read_text() == "mine" and (out / "part-0.parquet").exists()
    (out / "sub" / "notes.txt").unlink()
    (out / "sub").rmdir()
    with open_output(str(out), job=job, overwrite=True) as output:  # only its own files: cleared
        assert output.done_ids == frozenset()
    assert sorted(p.name for p in out.iterdir()) == ["_job.json"]


def test_stale_lock_is_taken_over_and_a_live_one_refused(tmp_path, caplog):
    out = tmp_path / "out"
    job = {"job": "transcribe", "model": "m"}
    busy = rf"is in use by another job \(host {socket.gethostname()}, pid {os.getpid()}"
    with open_output(str(out), job=job, overwrite=False), pytest.raises(OutputError, match=busy):
        open_output(str(out), job=job, overwrite=False)
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid of this host whose process has exited: a job killed with -9
    now = time.time()
    owners = {
        "dead pid, this host": ({"host": socket.gethostname(), "pid": gone.pid, "heartbeat": now}, True),
        "old heartbeat, other host": ({"host": "elsewhere", "pid": 1, "heartbeat": now - 3600}, True),
        "fresh heartbeat, other host": ({"host": "elsewhere", "pid": 1, "heartbeat": now}, False),
    }
    for case, (owner, stale) in owners.items():
        (out / "_lock.json").write_text(json.dumps({"run_id": "x", "started": now - 60, **owner}))
        caplog.clear()
        if stale:
            with caplog.at_level(logging.WARNING, logger="jobs.lock"), open_output(str(out), job=job, overwrite=False):
                assert json.loads((out / "_lock.json").read_text())["pid"] == os.getpid(), case
            assert "taking over the stale lock" in caplog.text, case
        else:
            with pytest.raises(OutputError, match="in use by another job \\(host elsewhere, pid 1, since "):
                open_output(str(out), job=job, overwrite=False)
            assert json.loads((out / "_lock.json").read_text())["host"] == "elsewhere", case


def test_dropping_rows_is_crash_safe(tmp_path):
    """Rows leave a Parquet file by a rewrite under a temporary name, then a rename: a crash in
    between leaves the original whole and a temporary file the next run removes."""
    out = tmp_path / "out"
    job = {"job": "transcribe", "model": "m"}
    with open_output(str(out), job=job, overwrite=False):
        pass
    pq.write_table(pa.table({"id": ["a", "b", "c"]}), out / "part-0.parquet")
    pq.write_table(pa.table({"id": ["d"]}), out / "part-1.parquet")
    # A crash after writing the rewritten copy, before renaming it over the original:
    pq.write_table(pa.table({"id": ["a"]}), out / "_rewrite-part-0.parquet.tmp")
    with open_output(str(out), job=job, overwrite=False) as output:
        assert not (out / "_rewrite-part-0.parquet.tmp").exists()
        assert sorted(output.done_ids) == ["a", "b", "c", "d"]
        assert output.drop(["b", "d", "zz"]) == 2
        assert sorted(output.done_ids) == ["a", "c"]
    assert sorted(p.name for p in out.iterdir()) == ["_job.json", "part-0.parquet"]
    assert pq.read_table(out / "part-0.parquet")["id"].to_pylist() == ["a", "c"]


# Both places preparation can run (jobs/fused.py): the faults hit the model stage either way.
@pytest.mark.parametrize("prepare", ["separate", "fused"])
def test_actor_crash_mid_job_loses_nothing(ray_local, checkpoints, corpus_200, tmp_path, prepare):
    marker = tmp_path / "crashed"
    files = sorted(corpus_200.iterdir())[:30]
    options = _options(files, tmp_path / "out", checkpoints["ctc-xlsr"], batch_seconds=2, prepare=prepare)
    task = faulty_task(transcribe.TRANSCRIBE, crash_on_id="utt010.wav", crash_marker=str(marker))
    summary = transcribe.run(options, task=task)
    assert marker.exists()  # the actor really died once
    rows = _rows(tmp_path / "out")
    assert sorted(rows["id"]) == sorted(f.name for f in files)
    assert rows["error"].isna().all() and summary.ok == 30


@pytest.mark.parametrize("prepare", ["separate", "fused"])
def test_poison_item_fails_alone(ray_local, checkpoints, corpus_200, tmp_path, prepare):
    files = sorted(corpus_200.iterdir())[:10]  # < 15 s in all: one unit, one model call
    options = _options(files, tmp_path / "out", checkpoints["ctc-xlsr"], batch_seconds=60, prepare=prepare)
    transcribe.run(options, task=faulty_task(transcribe.TRANSCRIBE, poison_ids=["utt003.wav"]))
    rows = _rows(tmp_path / "out").set_index("id")
    assert len(rows) == 10
    assert "injected model failure" in rows.loc["utt003.wav", "error"]
    mates = rows.drop(index="utt003.wav")
    assert mates["error"].isna().all() and mates["text"].map(lambda t: isinstance(t, str)).all()


def _write_matrix(root: Path, clip: np.ndarray, stalled_url: str) -> dict[str, str | None]:
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
    # Three hours in a FLAC stream whose header gives no length: decoding stops at the limit.
    add("three-hours-no-length.flac", "longer than max_duration_s (3600 s)").write_bytes(
        silent_flac(3 * 3600, with_length=False))
    os.mkfifo(add("fifo.wav", "not a regular file: FIFO"))  # no writer: a plain open would block forever
    manifest = [{"id": name, "path": name} for name in expected]
    manifest.append({"id": "missing.wav", "path": "missing.wav"})
    expected["missing.wav"] = "not found"
    manifest.append({"id": "dev-zero", "path": "/dev/zero"})
    expected["dev-zero"] = "not a regular file: character device"
    manifest.append({"id": "stalled-server", "path": stalled_url})
    expected["stalled-server"] = "took longer than read_timeout_s (2 s)"
    (root / "manifest.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in manifest))
    return expected


def test_bad_input_matrix(ray_local, checkpoints, speech_clips, tmp_path, stalled_url):
    expected = _write_matrix(tmp_path / "matrix", speech_clips[0], stalled_url)
    transcribe.run(_options([tmp_path / "matrix" / "manifest.jsonl"], tmp_path / "out", checkpoints["ctc-xlsr"],
                            max_duration_s=3600, read_timeout_s=2))
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
    from cli import main

    assert main(["transcribe", str(tmp_path / "m.jsonl"), "-o", str(tmp_path / "o"),
                 "--model", str(checkpoints["ctc-xlsr"])]) == 2
    assert not (tmp_path / "o").exists()  # nothing was started or written


def test_busy_output_is_refused_and_a_rerun_follows_changed_inputs(ray_local, checkpoints, tmp_path, capsys):
    """Two jobs into one output: the second exits 2 naming the first, which writes every id once.
    A rerun after inputs changed redoes those rows and drops the rows of removed inputs."""
    corpus = tmp_path / "corpus"
    shutil.copytree(SAMPLES / "en", corpus)
    out = tmp_path / "out"
    options = _options([corpus], out, checkpoints["ctc-xlsr"])
    with transcribe.check(options) as plan:  # the first job holds the output from here to its summary
        assert main(["transcribe", str(corpus), "-o", str(out), "--model", options.model]) == 2
        assert f"is in use by another job (host {socket.gethostname()}, pid {os.getpid()}, since " in capsys.readouterr().err
        first = transcribe.run(options, plan)
    ids = sorted(str(p.relative_to(corpus)) for p in corpus.rglob("*.*"))
    rows = _rows(out)
    assert sorted(rows["id"]) == ids and first.duplicate_ids == 0 and (first.changed_inputs, first.removed_inputs) == (0, 0)
    assert rows.set_index("id").loc["002.flac", "input_size"] == (corpus / "002.flac").stat().st_size

    (corpus / "001.flac").unlink()
    sf.write(corpus / "002.flac", np.zeros(RATE, np.float32), RATE)  # new content: one second of silence
    again = transcribe.run(options)
    rows = _rows(out).set_index("id")
    assert sorted(rows.index) == [i for i in ids if i != "001.flac"]  # every current input once, no stale row
    assert (again.changed_inputs, again.removed_inputs, again.duplicate_ids) == (1, 1, 0)
    assert rows.loc["002.flac", "duration_s"] == pytest.approx(1.0)
    assert rows.loc["002.flac", "input_size"] == (corpus / "002.flac").stat().st_size
    summary = json.loads((out / "_summary.json").read_text())
    assert (summary["changed_inputs"], summary["removed_inputs"], summary["rows"]) == (1, 1, len(ids) - 1)


def _one_line(stderr: str) -> str:
    """The command's error line; fails unless it is the only line of ``speech``'s own and no traceback came."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("speech: error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_user_mistakes_are_one_line_and_exit_2(tmp_path, checkpoints, capsys):
    model = str(checkpoints["ctc-xlsr"])
    taken = tmp_path / "taken"
    taken.write_text("a file")
    assert main(["transcribe", str(SAMPLES), "-o", str(taken), "--model", model]) == 2
    assert _one_line(capsys.readouterr().err) == f"speech: error: output {taken} is a file; give a directory (existing or new)"
    assert main(["-v", "transcribe", str(SAMPLES), "-o", str(taken), "--model", model]) == 2
    verbose = capsys.readouterr().err
    assert "Traceback (most recent call last)" in verbose and verbose.rstrip().endswith("give a directory (existing or new)")
    (tmp_path / "m.jsonl").symlink_to("/dev/urandom")
    assert main(["transcribe", str(tmp_path / "m.jsonl"), "-o", str(tmp_path / "o"), "--model", model]) == 2
    assert "not a regular file: character device" in _one_line(capsys.readouterr().err)
    assert main(["synthesize", "/dev/zero", "-o", str(tmp_path / "o"), "--model", model, "--backend", "vits"]) == 2
    assert "not a regular file: character device" in _one_line(capsys.readouterr().err)


def test_read_only_and_full_disks_are_one_line_and_exit_2(tmp_path, checkpoints):
    """A read-only file system and a full disk, for real: tmpfs mounts in a user namespace
    (`unshare`), no root needed. The full disk is met by Ray Data's Parquet writer in a worker."""
    if subprocess.run(["unshare", "-r", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("unprivileged user namespaces are not available here")
    read_only, tiny = tmp_path / "ro", tmp_path / "tiny"
    read_only.mkdir()
    tiny.mkdir()
    speech = f"{sys.executable} -m cli transcribe {SAMPLES} --model {checkpoints['ctc-xlsr']} --cpus-per-actor 0.5"
    script = (
        f"mount -t tmpfs -o ro,size=16k tmpfs {read_only} && mount -t tmpfs -o size=16k tmpfs {tiny} && "
        f"{speech} -o {read_only}/out 2>{tmp_path}/ro.err; echo $? > {tmp_path}/ro.rc; "
        f"{speech} -o {tiny}/out 2>{tmp_path}/full.err; echo $? > {tmp_path}/full.rc"
    )
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": ""}
    subprocess.run(["unshare", "-r", "-m", "sh", "-c", script], cwd=REPO, env=env, timeout=600, check=True,
                   stdout=subprocess.DEVNULL)
    assert (tmp_path / "ro.rc").read_text().strip() == "2"
    assert _one_line((tmp_path / "ro.err").read_text()) == (
        f"speech: error: cannot use output {read_only}/out: Read-only file system")
    assert (tmp_path / "full.rc").read_text().strip() == "2"
    assert _one_line((tmp_path / "full.err").read_text()) == (
        "speech: error: No space left on device; free some space and rerun the same command: it resumes where it stopped")
