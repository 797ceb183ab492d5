"""Tests of the HTTP API (serve/): real Ray Serve on loopback, OpenAI's own client, tiny real models.

The app is started once for the module the way a user starts it: ``speech serve`` with the
project's configs/serve.yaml (resources shrunk to fit two cores, an API key added, the models
given as ``--asr-model``/``--tts-model`` flags), connected to the session's local Ray. That
command deploys the config through Ray's own ``serve run``. Answers are compared with the
batch jobs' own classes run on the same files and options.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import openai
import pyarrow as pa
import pytest
import soundfile as sf
import srt
import webvtt
import yaml
from conftest import FIXTURES_DIR, REPO, SAMPLES, describe_deployment, job_texts, serve_test_config, silent_flac, speech_serve
from conftest import TEST_API_KEY as API_KEY

MAX_UPLOAD_MB = 0.2  # 209,715 bytes: above every sample file, below the oversize bodies sent below
BODY_TIMEOUT_S = 5  # a request body must arrive within this (test_slow_body_...)
BATCH_WAIT_S = 0.0  # the config's: batches form when the model frees, no timer
CONCURRENT = 32
SPEECH_TEXT = "Hello there. This is a test of the speech server. It has three sentences."
ASR_OPTIONS = {"max_new_tokens": 8}  # a random-weight Whisper babbles until its token limit: keep it short
TTS_OPTIONS = {"max_piece_chars": 40}  # several sentence pieces per answer, to stream and to batch
SAMPLE_FILES = sorted(SAMPLES.glob("*/*.flac"))


# --- the server ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(checkpoints) -> dict[str, Path]:
    from speech.testing.tts_checkpoints import build_tts_fixtures

    tts = build_tts_fixtures(FIXTURES_DIR)
    return {"ctc-xlsr": checkpoints["ctc-xlsr"], "ctc-base": checkpoints["ctc-base"],
            "whisper": checkpoints["whisper"], "tts-vits": tts["tts-vits"]}


@pytest.fixture(scope="module")
def server(ray_local, models, tmp_path_factory):
    """``speech serve`` running the test config; yields ``(base_url, config path)``."""
    work = tmp_path_factory.mktemp("serve")
    config_path = work / "serve.yaml"
    args = {"max_upload_mb": MAX_UPLOAD_MB, "max_models_per_replica": 2, "body_timeout_s": BODY_TIMEOUT_S,
            "asr_options": ASR_OPTIONS, "tts_options": TTS_OPTIONS}
    serve_test_config(config_path, args, batch_wait_s=BATCH_WAIT_S)
    flags = ["--asr-model", str(models["ctc-xlsr"]), "--asr-model", str(models["ctc-base"]),
             "--asr-model", str(models["whisper"]), "--tts-model", str(models["tts-vits"])]
    with speech_serve(ray_local, config_path, flags, work) as base_url:
        yield base_url, config_path


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    base_url, _ = server
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=API_KEY, max_retries=0, timeout=180)


@pytest.fixture(scope="module")
def http(server) -> httpx.Client:
    base_url, _ = server
    with httpx.Client(base_url=base_url, headers={"authorization": f"Bearer {API_KEY}"}, timeout=180) as c:
        yield c


# --- what the batch jobs make of the same inputs --------------------------------------------


def _server_options(kind: str) -> dict:
    """``asr_options``/``tts_options`` as the test server runs with them."""
    config = yaml.safe_load((REPO / "configs" / "serve.yaml").read_text())
    return {**config["applications"][0]["args"][f"{kind}_options"], **(ASR_OPTIONS if kind == "asr" else TTS_OPTIONS)}


@pytest.fixture(scope="module")
def job_transcripts(models, tmp_path_factory) -> dict[str, dict[str, str]]:
    """``{model: {file name: text}}`` from the transcription job's own stages, in this process."""
    out = {}
    for name in ("ctc-xlsr", "ctc-base"):
        texts = job_texts([str(SAMPLES)], models[name], tmp_path_factory.mktemp("job"), **_server_options("asr"))
        out[name] = {_key(Path(path)): text for path, text in texts.items()}
    return out


def _key(path: Path) -> str:
    return str(path.resolve().relative_to(SAMPLES.resolve()))


@pytest.fixture(scope="module")
def job_speech(models, tmp_path_factory) -> dict[str, bytes]:
    """``{"wav": ..., "flac": ..., "wav@1.5": ..., "wav@0.8": ...}``: the files the synthesis job
    writes for SPEECH_TEXT with the server's tts_options (and a speed), by its own stages in
    this process."""
    from jobs.synthesize import PrepareRows, SynthesizeRows, write_audio
    from speech.options import SynthesizeOptions

    files = {}
    for key, fmt, speed in (("wav", "wav", None), ("flac", "flac", None), ("wav@1.5", "wav", 1.5), ("wav@0.8", "wav", 0.8)):
        options = SynthesizeOptions(input="unused.txt", output=str(tmp_path_factory.mktemp("synth")), format=fmt,
                                    model=str(models["tts-vits"]), cpus_per_actor=0.5, speed=speed,
                                    **_server_options("tts"))
        corpus = pa.table({"id": ["row"], "text": [SPEECH_TEXT], "voice": pa.nulls(1, pa.string()),
                           "language": pa.nulls(1, pa.string()), "seed": pa.nulls(1, pa.int64()),
                           "speed": pa.nulls(1, pa.float64())})
        rows = write_audio(SynthesizeRows(options)(PrepareRows(options)(corpus)), options=options,
                           model=options.model, backend="vits").to_pylist()
        assert rows[0]["error"] is None and rows[0]["pieces"] == 3
        files[key] = rows[0]["audio"]["bytes"]
    return files


# --- the app, its config and its CLI ------------------------------------------------------


def test_config_is_a_serve_config_as_it_stands():
    """configs/serve.yaml unchanged: Serve's own schema, our args, and batches that can fill."""
    from ray.serve.schema import ServeDeploySchema

    from serve.app import IMPORT_PATH, app_args

    config = yaml.safe_load((REPO / "configs" / "serve.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)
    (app,) = schema.applications
    assert app.import_path == IMPORT_PATH
    assert config["http_options"]["host"] == "127.0.0.1"
    args = app_args(config["applications"][0])
    assert args.asr_models and args.tts_models and args.api_key_env is None
    assert {d.name for d in app.deployments} == {"Gateway", "Transcriber", "Synthesizer"}
    for deployment in config["applications"][0]["deployments"]:
        assert deployment["autoscaling_config"]["max_replicas"] > deployment["autoscaling_config"]["min_replicas"]
        if "user_config" in deployment:
            # max_ongoing_requests bounds what a replica sees, so it bounds the batches.
            assert deployment["max_ongoing_requests"] >= 2 * deployment["user_config"]["max_batch_size"]


def test_serving_takes_the_rows_part_without_the_refused_fields():
    from serve import asr, tts
    from speech.options import AsrOptions, TtsOptions

    options, run = asr.transcribe_options("m", {"beam_size": 2, "torch_threads": 3}, task="translate")
    assert isinstance(options, AsrOptions) and (options.model, options.task, options.beam_size) == ("m", "translate", 2)
    assert run.threads == 3
    with pytest.raises(ValueError, match=r"asr_options: model, task cannot be set for serving \(model: .*task: "):
        asr.transcribe_options("m", {"model": "x", "task": "translate"})
    with pytest.raises(ValueError, match=r"asr_options: actors cannot be set"):
        asr.transcribe_options("m", {"actors": 2})
    served, _ = tts.synthesize_options("m", {"seed": 3, "batch_size": 2})
    assert isinstance(served, TtsOptions) and served.seed == 3
    for name in tts.NOT_SERVED:  # refused: each a field of the rows part, with its reason
        assert name in TtsOptions.model_fields
    for name in asr.NOT_SERVED:
        assert name in AsrOptions.model_fields


def test_speech_serve_rejects_a_bad_model_before_starting_ray(tmp_path):
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "cli", "serve", "--asr-model", str(tmp_path / "missing")],
        capture_output=True, text=True, cwd=REPO, timeout=120, env={**os.environ, "RAY_ADDRESS": ""},
    )
    assert result.returncode == 2
    assert "asr_models" in result.stderr and "missing" in result.stderr
    print(f"\n[serve] bad model refused in {time.perf_counter() - started:.1f} s")


def test_speech_serve_refuses_an_unset_api_key_variable_before_starting_ray(tmp_path, models, monkeypatch, capsys):
    from cli import main
    from serve import app
    from serve.app import ConfigError, ServeArgs, build_app

    config = yaml.safe_load((REPO / "configs" / "serve.yaml").read_text())
    config["applications"][0]["args"]["api_key_env"] = "SPEECH_TEST_KEY_NOBODY_SET"
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.delenv("SPEECH_TEST_KEY_NOBODY_SET", raising=False)
    started = []
    monkeypatch.setattr(app, "run", lambda config, **_: started.append(config))  # what would start Ray and deploy
    assert main(["serve", "--config", str(tmp_path / "serve.yaml"), "--asr-model", str(models["ctc-xlsr"])]) == 2
    assert started == []
    assert capsys.readouterr().err == (
        "speech: error: api_key_env names 'SPEECH_TEST_KEY_NOBODY_SET', which is not set (or empty); "
        "set it to the API key, or set api_key_env to null to serve without a key\n")
    # Set in the app's runtime_env, it is found (the replicas get it from there).
    config["applications"][0]["runtime_env"] = {"env_vars": {"SPEECH_TEST_KEY_NOBODY_SET": "k"}}
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(config))
    assert main(["serve", "--config", str(tmp_path / "serve.yaml"), "--asr-model", str(models["ctc-xlsr"])]) == 0
    assert len(started) == 1
    # Serve's own build step (`serve run`/`serve deploy` of the same file) refuses it too.
    with pytest.raises(ConfigError, match="SPEECH_TEST_KEY_NOBODY_SET"):
        build_app(ServeArgs(asr_models=[str(models["ctc-xlsr"])], api_key_env="SPEECH_TEST_KEY_NOBODY_SET"))


def test_decoded_audio_held_by_a_replica_is_bounded_and_the_rest_waits():
    import asyncio

    from serve.replica import HoldLimit

    async def scenario() -> list[str]:
        limit, events = HoldLimit(10.0), []

        async def request(name: str, seconds: float, real: float) -> None:
            async with limit.hold(seconds) as held:
                events.append(f"{name} in, holding {limit.held:g}")
                await held.resize(real)  # decoded: the real length replaces the header's
                await asyncio.sleep(0.05)
            events.append(f"{name} out")

        first = asyncio.create_task(request("a", 8, 6))
        await asyncio.sleep(0.01)
        await asyncio.gather(first, request("b", 4, 4), request("huge", 50, 50))
        assert limit.held == 0
        return events

    events = asyncio.run(scenario())
    # b (4) fits beside a only because a's real length (6) replaced its header's (8); huge, over
    # the whole limit, waits until nothing else is held and then runs alone.
    assert events == ["a in, holding 8", "b in, holding 10", "a out", "b out", "huge in, holding 50", "huge out"]


def test_health_models_and_api_key(server, client):
    base_url, _ = server
    assert httpx.get(f"{base_url}/health").json() == {"status": "ok"}  # no key needed
    listed = {m.id: m for m in client.models.list().data}
    assert set(listed) == {"ctc-xlsr", "ctc-base", "whisper", "tts-vits"}
    assert listed["whisper"].model_dump()["kind"] == "transcription"
    raw = httpx.get(f"{base_url}/v1/models", headers={"authorization": f"Bearer {API_KEY}"}).text
    assert str(FIXTURES_DIR) not in raw and "source" not in raw  # served names only, never server paths
    for headers in ({}, {"authorization": "Bearer wrong"}):
        response = httpx.get(f"{base_url}/v1/models", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"


# --- speech recognition --------------------------------------------------------------------


def test_transcripts_equal_the_batch_job(client, job_transcripts):
    for model in ("ctc-xlsr", "ctc-base"):
        for path in SAMPLE_FILES:
            text = client.audio.transcriptions.create(model=model, file=(path.name, path.read_bytes())).text
            assert text == job_transcripts[model][_key(path)], (model, path)
    # The default model is the first one given.
    path = SAMPLE_FILES[0]
    assert client.audio.transcriptions.create(model=None, file=path.open("rb")).text == job_transcripts["ctc-xlsr"][_key(path)]


def test_response_formats(client, job_transcripts):
    path = SAMPLE_FILES[1]
    expected = job_transcripts["ctc-xlsr"][_key(path)]
    upload = (path.name, path.read_bytes())
    text = client.audio.transcriptions.create(model="ctc-xlsr", file=upload, response_format="text")
    assert text.strip() == expected
    subtitles = list(srt.parse(client.audio.transcriptions.create(model="ctc-xlsr", file=upload, response_format="srt")))
    assert " ".join(s.content for s in subtitles) == expected
    vtt = webvtt.from_string(client.audio.transcriptions.create(model="ctc-xlsr", file=upload, response_format="vtt"))
    assert " ".join(c.text for c in vtt) == expected
    verbose = client.audio.transcriptions.create(
        model="ctc-xlsr", file=upload, response_format="verbose_json", timestamp_granularities=["word", "segment"]
    )
    assert verbose.text == expected and verbose.duration > 0
    assert " ".join(w.word for w in verbose.words) == expected
    assert verbose.words[-1].end <= verbose.duration
    assert verbose.segments and verbose.model_dump()["task"] == "transcribe"
    words_only = client.audio.transcriptions.create(
        model="ctc-xlsr", file=upload, response_format="verbose_json", timestamp_granularities=["word"]
    )
    assert words_only.segments is None and words_only.words


def test_concurrent_requests_are_batched_and_unchanged(client, job_transcripts):
    """32 requests at once, two models: all succeed, share model calls, and keep their transcripts."""
    jobs = [("ctc-xlsr" if i % 2 else "ctc-base", SAMPLE_FILES[i % len(SAMPLE_FILES)]) for i in range(CONCURRENT)]

    def call(job):
        model, path = job
        raw = client.audio.transcriptions.with_raw_response.create(model=model, file=(path.name, path.read_bytes()))
        return raw.parse().text, int(raw.headers["x-batch-size"])

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=CONCURRENT) as pool:
        results = list(pool.map(call, jobs))
    elapsed = time.perf_counter() - started
    for (model, path), (text, _) in zip(jobs, results):
        assert text == job_transcripts[model][_key(path)]
    sizes = [size for _, size in results]
    print(f"\n[serve] {CONCURRENT} concurrent transcriptions in {elapsed:.1f} s; batch sizes {sorted(sizes)}")
    assert max(sizes) > 1
    assert all(1 <= s <= 16 for s in sizes)  # user_config.max_batch_size


def test_batches_form_when_the_model_frees(client):
    """A lone request on the idle replica runs alone, with no timer (batch_wait_timeout_s 0); of
    16 sent at once, each batch takes every request of its model waiting when it formed (the
    replica's own records: nothing left behind, no limit reached with 16 short files)."""
    transcriber = describe_deployment("Transcriber")
    assert transcriber["batching"]["batch_wait_timeout_s"] == 0 and transcriber["waiting"] == 0
    path = SAMPLE_FILES[0]
    raw = client.audio.transcriptions.with_raw_response.create(model="ctc-xlsr", file=(path.name, path.read_bytes()))
    assert int(raw.headers["x-batch-size"]) == 1
    ran = sum(describe_deployment("Transcriber")["batches"]["transcribe"].values())

    def call(path):
        raw = client.audio.transcriptions.with_raw_response.create(model="ctc-xlsr", file=(path.name, path.read_bytes()))
        return int(raw.headers["x-batch-size"])

    with ThreadPoolExecutor(max_workers=16) as pool:
        sizes = list(pool.map(call, [SAMPLE_FILES[i % len(SAMPLE_FILES)] for i in range(16)]))
    after = describe_deployment("Transcriber")
    new = sum(after["batches"]["transcribe"].values()) - ran
    burst = after["recent_batches"][-new:]
    print(f"\n[serve] 16 at once: batches of {[b['size'] for b in burst]}")
    assert sum(b["size"] for b in burst) == 16 and sorted(sizes) == sorted(s for b in burst for s in [b["size"]] * b["size"])
    assert all(b["left"] == 0 and b["queued"] == b["size"] for b in burst), burst
    assert max(sizes) > 1  # requests that arrived while a batch ran met in the next one


def test_translation_needs_a_whisper_model(client):
    path = SAMPLE_FILES[0]
    translated = client.audio.translations.create(model="whisper", file=(path.name, path.read_bytes()))
    assert isinstance(translated.text, str)
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.translations.create(model="ctc-xlsr", file=(path.name, path.read_bytes()))
    assert "cannot translate" in caught.value.response.json()["error"]["message"]
    transcribed = client.audio.transcriptions.create(model="whisper", file=(path.name, path.read_bytes()), language="en")
    assert isinstance(transcribed.text, str)


def test_translation_default_is_the_first_model_that_translates(http):
    files = [("file", (SAMPLE_FILES[0].name, SAMPLE_FILES[0].read_bytes())), ("response_format", (None, "verbose_json"))]
    response = http.post("/v1/audio/translations", files=files)
    assert response.status_code == 200, response.text
    assert response.json()["task"] == "translate"


def test_least_recently_used_models_are_unloaded(client):
    path = SAMPLE_FILES[0]
    for model in ("ctc-xlsr", "ctc-base", "whisper"):
        client.audio.transcriptions.create(model=model, file=(path.name, path.read_bytes()))
    assert describe_deployment("Transcriber")["loaded_models"] == ["ctc-base", "whisper"]  # max_models_per_replica: 2
    # The unloaded model comes back on demand.
    assert client.audio.transcriptions.create(model="ctc-xlsr", file=(path.name, path.read_bytes())).text


# --- speech synthesis ----------------------------------------------------------------------


def test_speech_equals_the_batch_job(client, job_speech):
    started = time.perf_counter()
    wav = client.audio.speech.create(model="tts-vits", voice="default", input=SPEECH_TEXT, response_format="wav").content
    print(f"\n[serve] speech of {len(SPEECH_TEXT)} characters in {time.perf_counter() - started:.2f} s")
    assert wav == job_speech["wav"]  # byte for byte the job's file
    flac = client.audio.speech.create(model="tts-vits", voice="default", input=SPEECH_TEXT, response_format="flac").content
    assert flac == job_speech["flac"]
    samples, rate = sf.read(io.BytesIO(job_speech["wav"]), dtype="int16")
    pcm = client.audio.speech.create(model="tts-vits", voice="default", input=SPEECH_TEXT, response_format="pcm").content
    assert np.array_equal(np.frombuffer(pcm, "<i2"), samples)
    for fmt in ("mp3", "opus"):
        encoded = client.audio.speech.create(model="tts-vits", voice="default", input=SPEECH_TEXT, response_format=fmt)
        decoded, decoded_rate = sf.read(io.BytesIO(encoded.content))
        assert abs(len(decoded) / decoded_rate - len(samples) / rate) < 0.1, fmt


def test_speeds_are_applied_per_request_by_one_loaded_model(client, job_speech):
    """Each speed used to load the model again under its own multiplexed id (2.2-2.5 s a request,
    issue 20): now the speed travels with the request's pieces and one model serves them all."""
    for speed in (1.5, 0.8, 1.5):
        wav = client.audio.speech.create(model="tts-vits", voice="default", input=SPEECH_TEXT, response_format="wav",
                                         speed=speed).content
        assert wav == job_speech[f"wav@{speed}"]  # byte for byte the job's file at that speed
    assert job_speech["wav@1.5"] != job_speech["wav@0.8"] != job_speech["wav"]
    assert describe_deployment("Synthesizer")["loaded_models"] == ["tts-vits"]


def test_speech_streams_piece_by_piece(client, job_speech):
    samples, _ = sf.read(io.BytesIO(job_speech["wav"]), dtype="int16")
    for fmt in ("pcm", "wav"):
        with client.audio.speech.with_streaming_response.create(
            model="tts-vits", voice="default", input=SPEECH_TEXT, response_format=fmt, stream_format="audio"
        ) as response:
            assert "content-length" not in response.headers  # chunked: sent as the pieces are made
            body = b"".join(response.iter_bytes())
        streamed = np.frombuffer(body, "<i2") if fmt == "pcm" else sf.read(io.BytesIO(body), dtype="int16")[0]
        assert np.array_equal(streamed, samples), fmt


def test_concurrent_speech_is_batched(client):
    words = ["one", "two", "three", "four", "five", "six", "seven", "eight"]  # the tiny vocabulary has no digits
    texts = [f"Request {words[i % 8]} of {words[i // 8]}. It says something short." for i in range(CONCURRENT)]

    def call(text):
        raw = client.audio.speech.with_raw_response.create(model="tts-vits", voice="default", input=text,
                                                           response_format="wav")
        return len(raw.parse().content), int(raw.headers["x-batch-size"])

    with ThreadPoolExecutor(max_workers=CONCURRENT) as pool:
        results = list(pool.map(call, texts))
    sizes = [size for _, size in results]
    print(f"\n[serve] {CONCURRENT} concurrent speech requests; largest piece batch per answer {sorted(sizes)}")
    assert all(length > 44 for length, _ in results)
    assert max(sizes) > 1


# --- bad requests --------------------------------------------------------------------------


def _multipart(fields: dict, file: tuple[str, bytes] | None) -> dict:
    """httpx arguments of a multipart/form-data body: text fields, then the file if any."""
    parts = [(name, (None, value)) for name, value in fields.items()]
    return {"files": parts + ([("file", file)] if file else [])}


def _chunked_upload(size: int):
    boundary = "b0undary"
    yield f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'.encode()
    for _ in range(size // 65536 + 1):
        yield b"\0" * 65536
    yield f"\r\n--{boundary}--\r\n".encode()


def _nested_json(depth: int) -> bytes:
    return b'{"input": ' + b"[" * depth + b"]" * depth + b"}"


AUDIO = SAMPLE_FILES[0].read_bytes()
THREE_HOURS = silent_flac(3 * 3600)
THREE_HOURS_NO_LENGTH = silent_flac(3 * 3600, with_length=False)
TRANSCRIBE = "/v1/audio/transcriptions"
SPEECH = "/v1/audio/speech"
OVER = int(MAX_UPLOAD_MB * 1024 * 1024) + 1

BAD_REQUESTS = {
    "missing file": (TRANSCRIBE, _multipart({"model": "ctc-xlsr"}, None), 400, "file"),
    "file given as text": (TRANSCRIBE, _multipart({"file": "abc"}, None), 400, "file"),
    "not multipart": (TRANSCRIBE, {"data": {"model": "ctc-xlsr"}}, 415, None),
    "unreadable audio": (TRANSCRIBE, _multipart({}, ("x.wav", b"RIFF not really a wave file")), 400, "file"),
    "empty file": (TRANSCRIBE, _multipart({}, ("x.flac", b"")), 400, "file"),
    "unsupported format": (TRANSCRIBE, _multipart({}, ("talk.m4a", AUDIO)), 415, "file"),
    "oversize (declared)": (TRANSCRIBE, _multipart({}, ("big.wav", b"\0" * (OVER + 100_000))), 413, None),
    "oversize (file)": (TRANSCRIBE, _multipart({}, ("big.wav", b"\0" * OVER)), 413, "file"),
    "oversize (chunked)": (TRANSCRIBE, {"content": _chunked_upload(OVER + 200_000),
                                        "headers": {"content-type": "multipart/form-data; boundary=b0undary"}}, 413, None),
    "unknown model": (TRANSCRIBE, _multipart({"model": "whisper-1"}, ("a.flac", AUDIO)), 404, "model"),
    "speech model for transcription": (TRANSCRIBE, _multipart({"model": "tts-vits"}, ("a.flac", AUDIO)), 404, "model"),
    "bad response_format": (TRANSCRIBE, _multipart({"response_format": "docx"}, ("a.flac", AUDIO)), 400, "response_format"),
    "bad temperature": (TRANSCRIBE, _multipart({"temperature": "hot"}, ("a.flac", AUDIO)), 400, "temperature"),
    "temperature for a CTC model": (TRANSCRIBE, _multipart({"temperature": "0.5"}, ("a.flac", AUDIO)), 400, "temperature"),
    "prompt for a CTC model": (TRANSCRIBE, _multipart({"prompt": "Stella"}, ("a.flac", AUDIO)), 400, "prompt"),
    "temperature above 1": (TRANSCRIBE, _multipart({"model": "whisper", "temperature": "1.5"}, ("a.flac", AUDIO)), 400,
                            "temperature"),
    "unknown field": (TRANSCRIBE, _multipart({"colour": "blue"}, ("a.flac", AUDIO)), 400, "colour"),
    "granularity without verbose_json": (
        TRANSCRIBE, _multipart({"timestamp_granularities[]": "word"}, ("a.flac", AUDIO)), 400, "timestamp_granularities"),
    "unknown language": (TRANSCRIBE, _multipart({"model": "whisper", "language": "klingon"}, ("a.flac", AUDIO)), 400, "language"),
    "speech: not JSON": (SPEECH, {"content": b"{nope", "headers": {"content-type": "application/json"}}, 400, None),
    "speech: empty input": (SPEECH, {"json": {"input": "", "voice": "default"}}, 400, "input"),
    "speech: nothing to say": (SPEECH, {"json": {"input": "?!", "voice": "default"}}, 400, "input"),
    "speech: unknown voice": (SPEECH, {"json": {"input": "Hello.", "voice": "alloy"}}, 400, "voice"),
    "speech: speed out of range": (SPEECH, {"json": {"input": "Hello.", "speed": 10}}, 400, "speed"),
    "speech: aac": (SPEECH, {"json": {"input": "Hello.", "response_format": "aac"}}, 400, "response_format"),
    "speech: unknown model": (SPEECH, {"json": {"input": "Hello.", "model": "ctc-xlsr"}}, 404, "model"),
    "unknown route": ("/v1/audio/lyrics", {"json": {}}, 404, None),
    # Decompression bombs: refused from the header, or as soon as decoding passes max_duration_s.
    "three hours of silence": (TRANSCRIBE, _multipart({}, ("bomb.flac", THREE_HOURS)), 400, "file"),
    "three hours, no length in the header": (TRANSCRIBE, _multipart({}, ("bomb.flac", THREE_HOURS_NO_LENGTH)), 400, "file"),
    # Malformed multipart bodies (Starlette's own parse errors).
    "two files": (TRANSCRIBE, {"files": [("file", ("a.flac", AUDIO)), ("file", ("b.flac", AUDIO))]}, 400, None),
    "33 fields": (TRANSCRIBE, _multipart({f"f{i}": "x" for i in range(33)}, ("a.flac", AUDIO)), 400, None),
    "no boundary": (TRANSCRIBE, {"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}}, 400, None),
    "body not starting with the boundary": (
        TRANSCRIBE, {"content": b"garbage\r\n--b0undary--\r\n",
                     "headers": {"content-type": "multipart/form-data; boundary=b0undary"}}, 400, None),
    "oversize (100 MB chunked)": (TRANSCRIBE, {"content": None, "headers": {
        "content-type": "multipart/form-data; boundary=b0undary"}}, 413, None),
    "speech: deeply nested JSON": (SPEECH, {"content": _nested_json(100_000), "headers": {"content-type": "application/json"}},
                                   400, None),
    "speech: huge JSON": (SPEECH, {"json": {"input": "a" * (2 * 1024 * 1024)}}, 413, None),
}
BAD_REQUEST_CODES = {
    "three hours of silence": "audio_too_long", "three hours, no length in the header": "audio_too_long",
    "two files": "invalid_multipart", "33 fields": "invalid_multipart", "no boundary": "invalid_multipart",
    "body not starting with the boundary": "invalid_multipart", "speech: deeply nested JSON": "invalid_json",
}


@pytest.fixture(scope="module")
def log_marks(server) -> dict[Path, int]:
    """Every Ray log file of the session (the Serve replicas' included) and its size now."""
    from ray._private.worker import global_worker

    logs = Path(global_worker.node.get_logs_dir_path())
    return {path: path.stat().st_size for path in logs.rglob("*") if path.is_file()}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_its_status_and_the_server_keeps_serving(http, client, log_marks, case):
    path, request, status, param = BAD_REQUESTS[case]
    if case == "oversize (chunked)":
        request = {**request, "content": _chunked_upload(OVER + 200_000)}  # a fresh generator
    if case == "oversize (100 MB chunked)":
        request = {**request, "content": _chunked_upload(100 * 1024 * 1024)}
    response = http.post(path, **request)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"] == "invalid_request_error" and error["param"] == param
    assert error["code"] == BAD_REQUEST_CODES.get(case, error["code"]), error
    if case == "oversize (100 MB chunked)":
        # Refused as the limit was passed: what was read is the limit plus the last message the
        # proxy handed over (uvicorn buffers a few hundred KB between reads), not 100 MB.
        received = int(error["message"].split(" bytes")[0].rsplit(" ", 1)[1])
        print(f"\n[serve] 100 MB chunked upload refused after reading {received} bytes")
        assert received < OVER + 4 * 1024 * 1024, error["message"]
        assert response.headers["connection"] == "close"
    # A good request afterwards still succeeds.
    good = client.audio.transcriptions.create(model="ctc-xlsr", file=(SAMPLE_FILES[0].name, AUDIO))
    assert good.text


def test_slow_body_gets_408_and_the_connection_is_closed(server):
    """A client that declares a body and never sends it holds a connection BODY_TIMEOUT_S, not forever."""
    host, port = server[0].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as connection:
        connection.sendall(
            f"POST {TRANSCRIBE} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {API_KEY}\r\n"
            "Content-Type: multipart/form-data; boundary=b0undary\r\nContent-Length: 100000\r\n\r\n--b0undary\r\n".encode()
        )
        started = time.monotonic()
        answer = b""
        while chunk := connection.recv(65536):  # until the server closes the connection
            answer += chunk
        waited = time.monotonic() - started
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 408 Request Timeout", answer
    assert b"connection: close" in rest.lower() and b'"code":"request_timeout"' in rest
    assert BODY_TIMEOUT_S <= waited < BODY_TIMEOUT_S + 30


def test_client_mistakes_left_no_traceback_in_the_logs(log_marks, http):
    """Every bad request above was answered as the client's mistake: no replica logged a traceback."""
    assert http.get("/health").status_code == 200
    from ray._private.worker import global_worker

    logs = Path(global_worker.node.get_logs_dir_path())
    tracebacks = []
    for path in logs.rglob("*"):
        if path.is_file() and path.stat().st_size > log_marks.get(path, 0):
            with path.open("rb") as f:
                f.seek(log_marks.get(path, 0))
                if b"Traceback (most recent call last)" in f.read():
                    tracebacks.append(path.name)
    assert tracebacks == []


# --- tuning without a redeploy (runs last: it changes the app's batching) ---------------------


def test_batching_is_retuned_without_restarting_replicas(client, server, models):
    """A config with a new user_config, deployed with Ray's `serve run`, reconfigures the live replica."""
    from ray.serve.scripts import cli

    from serve.app import resolve_config

    _, config_path = server
    before = describe_deployment("Transcriber")
    # What `speech serve` deployed (same models, same port), with one user_config value changed.
    config = resolve_config(config_path, port=int(server[0].rsplit(":", 1)[1]),
                            asr_models=[str(models[m]) for m in ("ctc-xlsr", "ctc-base", "whisper")],
                            tts_models=[str(models["tts-vits"])])
    (app,) = config["applications"]
    (transcriber,) = [d for d in app["deployments"] if d["name"] == "Transcriber"]
    transcriber["user_config"] = {**transcriber["user_config"], "max_batch_size": 1}
    retuned = config_path.with_name("retuned.yaml")
    retuned.write_text(yaml.safe_dump(config, sort_keys=False))
    cli.main(args=["run", "--non-blocking", str(retuned)], prog_name="serve", standalone_mode=False)

    deadline = time.monotonic() + 120
    while describe_deployment("Transcriber")["batching"]["max_batch_size"] != 1:
        assert time.monotonic() < deadline, "the new user_config never reached the replica"
        time.sleep(1)
    after = describe_deployment("Transcriber")
    assert after["started"] == before["started"]  # the same replica: reconfigured, not restarted

    def call(path):
        raw = client.audio.transcriptions.with_raw_response.create(model="ctc-xlsr", file=(path.name, path.read_bytes()))
        return int(raw.headers["x-batch-size"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(call, SAMPLE_FILES[:8])) == {1}

