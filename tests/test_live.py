"""Live transcription (``/v1/realtime``) and the page (``/``): the real app, OpenAI's own client, headless Chromium.

One app for the module, started as a user starts it (``speech serve``, see conftest.speech_serve)
with the tiny CTC and Whisper checkpoints and the tiny VITS, and an API key. Sessions stream
clips as a microphone would: 24 kHz 16-bit PCM in 100 ms appends, in real time. Every server
event is validated against the ``openai`` client's own pydantic models. Transcripts are compared
with the transcription job's own stages run on a WAV file of exactly the streamed PCM: the
offline transcript of the same audio.
"""

from __future__ import annotations

import asyncio
import base64
import json
import tempfile
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf
import yaml
from conftest import FIXTURES_DIR, REPO, SAMPLES, TEST_API_KEY, describe_deployment, job_texts, serve_test_config, speech_serve
from openai.types.beta.realtime.transcription_session import InputAudioTranscription, TurnDetection
from openai.types.realtime import RealtimeServerEvent
from rapidfuzz.distance import Levenshtein

from speech.asr.vad import speech_spans
from speech.audio import decode

RATE = 24_000  # the Realtime API's PCM rate
CHUNK = RATE // 10  # samples per append: 100 ms
# A random-weight Whisper babbles until its token limit: keep it short. It also fails every
# fallback threshold, and the hotter retries sample: one temperature keeps decoding greedy, so
# the streamed and the offline text can be compared.
ASR_OPTIONS = {"max_new_tokens": 8, "temperature": 0.0}
SERVER_ASR_OPTIONS = {**yaml.safe_load((REPO / "configs" / "serve.yaml").read_text())["applications"][0]["args"][
    "asr_options"], **ASR_OPTIONS}  # what the server's models run with
MAX_SESSION_S = 30.0  # the test server's per-session audio limit (stream_options.max_session_s)
BATCH_WAIT_S = 0.0  # configs/serve.yaml's own: a batch forms when the model frees, no timer
SESSION_TIMEOUT_S = 120  # a session's events must all have arrived by then
CONCURRENT = 16
CLIP = SAMPLES / "en" / "002.flac"
ENGLISH = sorted((SAMPLES / "en").glob("*.flac"))


# --- the server ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(checkpoints) -> dict[str, Path]:
    from speech.testing.tts_checkpoints import build_tts_fixtures

    tts = build_tts_fixtures(FIXTURES_DIR)
    return {"ctc-xlsr": checkpoints["ctc-xlsr"], "whisper": checkpoints["whisper"], "tts-vits": tts["tts-vits"]}


@pytest.fixture(scope="module")
def server(ray_local, models, tmp_path_factory) -> str:
    work = tmp_path_factory.mktemp("live")
    config_path = work / "serve.yaml"
    args = {"asr_options": ASR_OPTIONS, "stream_options": {"max_session_s": MAX_SESSION_S}}
    serve_test_config(config_path, args, batch_wait_s=BATCH_WAIT_S)
    flags = ["--asr-model", str(models["ctc-xlsr"]), "--asr-model", str(models["whisper"]),
             "--tts-model", str(models["tts-vits"])]
    with speech_serve(ray_local, config_path, flags, work) as base_url:
        yield base_url


def _client(base_url: str, api_key: str = TEST_API_KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{base_url}/v1", websocket_base_url=f"{base_url.replace('http', 'ws')}/v1",
                              api_key=api_key, max_retries=0)


# --- audio as it is streamed, and what the offline job makes of it -------------------------------


def pcm16(path: Path, *, silence_s: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The clip at 24 kHz as int16 samples, with silence before and after (seconds)."""
    samples = np.concatenate([np.zeros(round(silence_s[0] * RATE), np.float32), decode(str(path), RATE),
                              np.zeros(round(silence_s[1] * RATE), np.float32)])
    return np.round(np.clip(samples, -1, 1) * 32767).astype("<i2")


@pytest.fixture(scope="module")
def offline(models, tmp_path_factory):
    """``offline(model, pcm) -> text``: the job's transcript of a WAV file holding exactly ``pcm``."""
    work = tmp_path_factory.mktemp("offline")
    cache: dict[tuple[str, bytes], str] = {}

    def transcribe(model: str, pcm: np.ndarray) -> str:
        key = (model, pcm.tobytes())
        if key not in cache:
            path = Path(tempfile.mkdtemp(dir=work)) / "streamed.wav"
            sf.write(path, pcm, RATE, subtype="PCM_16")
            (text,) = job_texts([str(path)], models[model], path.parent / "out", **SERVER_ASR_OPTIONS).values()
            cache[key] = text
        return cache[key]

    return transcribe


def cer(text: str, reference: str) -> float:
    return Levenshtein.distance(text, reference) / max(1, len(reference))


# --- sessions ------------------------------------------------------------------------------

_GA_EVENTS = {typing.get_args(m.model_fields["type"].annotation)[0]: m
              for m in typing.get_args(typing.get_args(RealtimeServerEvent)[0])}


def validated(raw: bytes | str) -> dict:
    """The event as JSON, after validating it against the openai client's model of its type."""
    event = json.loads(raw)
    if event["type"] == "transcription_session.updated":
        # The older format. The client's model requires client_secret, which OpenAI does not send
        # over the WebSocket (its own docstring says so), and lists OpenAI's model names only:
        # validate the rest.
        transcription = dict(event["session"]["input_audio_transcription"])
        assert isinstance(transcription.pop("model"), str)
        InputAudioTranscription.model_validate(transcription, strict=True)
        if event["session"]["turn_detection"] is not None:
            TurnDetection.model_validate(event["session"]["turn_detection"], strict=True)
        assert event["event_id"] and event["session"]["input_audio_format"] == "pcm16"
    else:
        _GA_EVENTS[event["type"]].model_validate(event, strict=True)
    return event


@dataclass
class Record:
    """What one session sent and received, with times (time.perf_counter)."""

    sent: list[float] = field(default_factory=list)  # when each append went out
    events: list[tuple[float, dict]] = field(default_factory=list)

    def of(self, kind: str) -> list[dict]:
        return [e for _, e in self.events if e["type"] == kind]

    def transcripts(self) -> list[str]:
        return [e["transcript"] for e in self.of("conversation.item.input_audio_transcription.completed")]

    def first(self, kind: str) -> float:
        return next(t for t, e in self.events if e["type"] == kind and e.get("delta", True))


def transcription_session(model: str, turn_detection: dict | None) -> dict:
    return {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": RATE},
        "transcription": {"model": model},
        "turn_detection": turn_detection,
    }}}


async def receive(connection, record: Record, turns: int) -> None:
    """Read events until ``turns`` transcripts (completed or failed) have come."""
    done = 0
    while done < turns:
        event = validated(await connection.recv_bytes())
        record.events.append((time.perf_counter(), event))
        done += event["type"].startswith("conversation.item.input_audio_transcription.") and not event["type"].endswith("delta")


async def stream(base_url: str, pcm: np.ndarray, *, model: str = "ctc-xlsr", turn_detection: dict | None = None,
                 turns: int = 1) -> Record:
    """One session: configure it, stream ``pcm`` in real time, commit (without turn detection),
    and collect events until ``turns`` transcripts arrived."""
    record = Record()
    async with _client(base_url).realtime.connect(extra_query={"intent": "transcription"}) as connection:
        await connection.session.update(session=transcription_session(model, turn_detection))
        receiver = asyncio.create_task(receive(connection, record, turns))
        start = time.perf_counter()
        for i in range(0, len(pcm), CHUNK):
            await connection.input_audio_buffer.append(audio=base64.b64encode(pcm[i : i + CHUNK].tobytes()).decode())
            record.sent.append(time.perf_counter())
            await asyncio.sleep(max(0.0, start + (i // CHUNK + 1) * 0.1 - time.perf_counter()))
        if turn_detection is None:
            await connection.input_audio_buffer.commit()
        await asyncio.wait_for(receiver, SESSION_TIMEOUT_S)
    return record


@pytest.fixture(scope="module")
def sessions(server) -> dict:
    """Three sessions at once, in real time: CTC and Whisper committed by the client, CTC with
    server VAD over two utterances with silence around them."""
    vad_pcm = pcm16(CLIP, silence_s=(1.0, 1.0))
    vad_pcm = np.concatenate([vad_pcm, pcm16(ENGLISH[0], silence_s=(0.0, 1.0))])

    async def run():
        return await asyncio.gather(
            stream(server, pcm16(CLIP)),
            stream(server, pcm16(CLIP), model="whisper"),
            stream(server, vad_pcm, turn_detection={"type": "server_vad"}, turns=2),
        )

    ctc, whisper, vad = asyncio.run(run())
    return {"ctc": ctc, "whisper": whisper, "vad": vad, "vad_pcm": vad_pcm}


# --- streaming -------------------------------------------------------------------------------


def test_session_events_follow_the_protocol(sessions):
    record = sessions["ctc"]
    kinds = [e["type"] for _, e in record.events]
    assert kinds[:2] == ["session.created", "session.updated"]
    updated = record.of("session.updated")[0]["session"]["audio"]["input"]
    assert updated["transcription"]["model"] == "ctc-xlsr" and updated["turn_detection"] is None
    (committed,) = record.of("input_audio_buffer.committed")
    (completed,) = record.of("conversation.item.input_audio_transcription.completed")
    deltas = record.of("conversation.item.input_audio_transcription.delta")
    assert deltas and all(d["item_id"] == committed["item_id"] for d in deltas)
    assert completed["item_id"] == committed["item_id"] and committed["previous_item_id"] is None
    assert kinds.index("input_audio_buffer.committed") < kinds.index("conversation.item.input_audio_transcription.completed")
    assert completed["usage"]["seconds"] == pytest.approx(len(pcm16(CLIP)) / RATE, abs=0.01)
    assert not record.of("error")


def test_completed_text_equals_the_offline_transcript_of_the_same_audio(sessions, offline):
    ctc, whisper = sessions["ctc"].transcripts(), sessions["whisper"].transcripts()
    expected = offline("ctc-xlsr", pcm16(CLIP))
    assert len(ctc) == 1 and cer(ctc[0], expected) <= 0.02, (ctc, expected)
    # Whisper decodes the closed turn as the offline path decodes the file: the same text.
    assert whisper == [offline("whisper", pcm16(CLIP))]
    print(f"\n[live] CTC CER vs offline {cer(ctc[0], expected):.3f}")


def test_first_partial_within_a_second_of_the_first_speech(server):
    # A session of its own: the latency of the CTC model's steps, not of other sessions' decodes.
    record = asyncio.run(stream(server, pcm16(CLIP)))
    audio = pcm16(CLIP).astype(np.float32) / 32768
    onset = speech_spans(audio, RATE, pad_s=0.0)[0].start  # first speech sample, as Silero finds it offline
    spoken = record.sent[onset // CHUNK]  # when the append holding it went out
    latency = record.first("conversation.item.input_audio_transcription.delta") - spoken
    print(f"\n[live] first partial {1000 * latency:.0f} ms after the first speech chunk")
    assert latency <= 1.0


def test_server_vad_turns_cover_the_speech(sessions):
    record, pcm = sessions["vad"], sessions["vad_pcm"]
    starts = record.of("input_audio_buffer.speech_started")
    stops = record.of("input_audio_buffer.speech_stopped")
    committed = record.of("input_audio_buffer.committed")
    completed = record.of("conversation.item.input_audio_transcription.completed")
    assert len(starts) == len(stops) == len(committed) == len(completed) == 2
    spans = speech_spans(pcm.astype(np.float32) / 32768, RATE, pad_s=0.0)
    assert len(spans) == 2
    previous = None
    for span, start, stop, commit, done in zip(spans, starts, stops, committed, completed):
        item = start["item_id"]
        assert stop["item_id"] == commit["item_id"] == done["item_id"] == item
        assert commit["previous_item_id"] == previous
        previous = item
        # The turn holds the utterance; it begins up to 300 ms of padding (plus a 32 ms VAD frame)
        # before it and ends after 500 ms of silence.
        assert span.start / RATE - 0.35 <= start["audio_start_ms"] / 1000 <= span.start / RATE + 0.1
        assert span.end / RATE + 0.3 <= stop["audio_end_ms"] / 1000 <= span.end / RATE + 1.0
        assert done["transcript"]
    kinds = [e["type"] for _, e in record.events]
    assert kinds.index("input_audio_buffer.speech_stopped") < kinds.index("input_audio_buffer.committed")


def test_sixteen_concurrent_sessions_all_complete_and_share_batches(server, offline):
    clips = [ENGLISH[i % len(ENGLISH)] for i in range(CONCURRENT)]
    before = _stream_batches()

    async def run():
        return await asyncio.gather(*(stream(server, pcm16(clip)) for clip in clips))

    started = time.perf_counter()
    records = asyncio.run(asyncio.wait_for(run(), SESSION_TIMEOUT_S))
    print(f"\n[live] {CONCURRENT} sessions of {sum(len(pcm16(c)) for c in clips) / RATE:.0f} s of audio "
          f"in {time.perf_counter() - started:.1f} s")
    for clip, record in zip(clips, records):
        (text,) = record.transcripts()
        assert cer(text, offline("ctc-xlsr", pcm16(clip))) <= 0.02, clip
    after = _stream_batches()
    grown = {size: after.get(size, 0) - before.get(size, 0) for size in after}
    print(f"[live] stream steps by batch size: {grown}")
    assert max(size for size, count in grown.items() if count) > 1  # sessions' steps shared model calls


def _stream_batches() -> dict[int, int]:
    return {int(k): v for k, v in describe_deployment("Transcriber")["stream_batches"].items()}


def test_the_older_transcription_session_update_is_accepted(server, offline):
    async def run():
        record = Record()
        client = openai.AsyncOpenAI(base_url=f"{server}/v1", websocket_base_url=f"{server.replace('http', 'ws')}/v1",
                                    api_key=TEST_API_KEY, max_retries=0)
        async with client.beta.realtime.connect(model="ctc-xlsr", extra_query={"intent": "transcription"}) as conn:
            await conn.transcription_session.update(session={
                "input_audio_format": "pcm16", "input_audio_transcription": {"model": "ctc-xlsr"},
                "turn_detection": None})
            pcm = pcm16(ENGLISH[0])
            for i in range(0, len(pcm), CHUNK):  # as fast as it goes: no pacing needed here
                await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i : i + CHUNK].tobytes()).decode())
            await conn.input_audio_buffer.commit()
            await asyncio.wait_for(receive(conn, record, 1), SESSION_TIMEOUT_S)
        return record

    record = asyncio.run(run())
    (updated,) = record.of("transcription_session.updated")
    assert updated["session"]["turn_detection"] is None
    assert record.transcripts() and cer(record.transcripts()[0], offline("ctc-xlsr", pcm16(ENGLISH[0]))) <= 0.02


def test_a_session_update_changes_only_what_it_names():
    from dataclasses import replace

    from serve.realtime_events import SessionConfig, session_update
    from speech.asr.live import TurnDetection as Vad

    config = SessionConfig(model="a", language="en", turn_detection=Vad())

    def update(session: dict, kind: str = "session.update") -> SessionConfig:
        return session_update({"type": kind, "session": session}, config)

    def ga(**audio_input) -> dict:
        return {"type": "transcription", "audio": {"input": audio_input}}

    assert update({"type": "transcription"}) == config
    assert update(ga(transcription={"model": "b"})) == replace(config, model="b")
    assert update(ga(transcription={"language": None})) == replace(config, language=None)
    assert update(ga(turn_detection=None)) == replace(config, turn_detection=None)
    assert update(ga(turn_detection={"type": "server_vad", "silence_duration_ms": 200})).turn_detection == Vad(
        silence_duration_ms=200)
    assert update(ga(format={"type": "audio/pcm"})) == config  # the rate defaults to 24 kHz
    older = update({"input_audio_format": "pcm16", "input_audio_transcription": {"language": "ko"}},
                   "transcription_session.update")
    assert older == replace(config, language="ko")


# --- bad input -----------------------------------------------------------------------------

GOOD_AUDIO = base64.b64encode(pcm16(ENGLISH[0]).tobytes()).decode()

BAD_EVENTS = {
    "bad base64": ({"type": "input_audio_buffer.append", "audio": "not base64!"}, "invalid_base64", "audio"),
    "odd PCM bytes": ({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"abc").decode()},
                      "invalid_audio", "audio"),
    "audio not a string": ({"type": "input_audio_buffer.append", "audio": 12}, "invalid_value", "audio"),
    "mu-law": ({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcmu"}}}}}, "unsupported_audio_format", "session.audio.input.format"),
    "16 kHz PCM": ({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": 16000}}}}}, "unsupported_audio_format", "session.audio.input.format"),
    "unknown model": ({"type": "session.update", "session": transcription_session("whisper-1", None)},
                      "model_not_found", "session.audio.input.transcription.model"),
    "speech model": ({"type": "session.update", "session": transcription_session("tts-vits", None)},
                     "model_not_found", "session.audio.input.transcription.model"),
    "realtime session": ({"type": "session.update", "session": {"type": "realtime"}}, "unsupported_session_type",
                         "session.type"),
    "semantic VAD": ({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "turn_detection": {"type": "semantic_vad"}}}}}, "invalid_value", "session.audio.input.turn_detection.type"),
    "VAD threshold": ({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "turn_detection": {"type": "server_vad", "threshold": 2}}}}}, "invalid_value",
        "session.audio.input.turn_detection.threshold"),
    "unknown language": ({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "transcription": {"model": "whisper", "language": "klingon"}}}}}, "invalid_value",
        "session.audio.input.transcription.language"),
    "prompt": ({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "transcription": {"prompt": "names"}}}}}, "invalid_value", "session.audio.input.transcription.prompt"),
    "log probabilities": ({"type": "session.update", "session": {
        "type": "transcription", "include": ["item.input_audio_transcription.logprobs"]}}, "invalid_value",
        "session.include"),
    "unknown field": ({"type": "session.update", "session": {"type": "transcription", "voice": "alloy"}},
                      "invalid_value", "session.voice"),
    "unknown event": ({"type": "response.create"}, "unknown_event", "type"),
    "empty commit": ({"type": "input_audio_buffer.commit"}, "input_audio_buffer_commit_empty", None),
    "over the session limit": ({"type": "input_audio_buffer.append", "audio": base64.b64encode(
        b"\0\0" * int((MAX_SESSION_S + 1) * RATE)).decode()}, "session_audio_limit", None),
}


def test_bad_events_get_an_error_and_the_session_goes_on(server, offline):
    async def run():
        record = Record()
        async with _client(server).realtime.connect(extra_query={"intent": "transcription"}) as conn:
            await conn.session.update(session=transcription_session("ctc-xlsr", None))
            for case, (bad, code, param) in BAD_EVENTS.items():
                await conn.send_raw(json.dumps({**bad, "event_id": f"client_{case}"}))
                error = await _next_error(conn, record)
                assert (error["code"], error["param"], error["event_id"]) == (code, param, f"client_{case}"), case
                assert error["type"] == "invalid_request_error" and error["message"], case
            await conn.send_raw("{not json")
            assert (await _next_error(conn, record))["code"] == "invalid_json"
            # Still serving: a good turn gets its transcript.
            await conn.input_audio_buffer.append(audio=GOOD_AUDIO)
            await conn.input_audio_buffer.commit()
            await asyncio.wait_for(receive(conn, record, 1), SESSION_TIMEOUT_S)
        return record

    record = asyncio.run(run())
    (text,) = record.transcripts()
    assert cer(text, offline("ctc-xlsr", pcm16(ENGLISH[0]))) <= 0.02


async def _next_error(connection, record: Record) -> dict:
    while True:
        event = validated(await asyncio.wait_for(connection.recv_bytes(), SESSION_TIMEOUT_S))
        record.events.append((time.perf_counter(), event))
        if event["type"] == "error":
            return event["error"]


@pytest.mark.parametrize("api_key, query, code", [
    ("wrong-key", {"intent": "transcription"}, "invalid_api_key"),
    (TEST_API_KEY, {}, "invalid_intent"),
    (TEST_API_KEY, {"intent": "conversation"}, "invalid_intent"),
])
def test_a_refused_connection_is_told_why_and_closed(server, api_key, query, code):
    from websockets.exceptions import ConnectionClosed

    async def run():
        async with _client(server, api_key).realtime.connect(extra_query=query) as conn:
            event = validated(await conn.recv_bytes())
            with pytest.raises(ConnectionClosed) as closed:
                await conn.recv_bytes()
            return event, closed.value.rcvd.code

    event, close_code = asyncio.run(run())
    assert event["type"] == "error" and event["error"]["code"] == code
    assert close_code == 1008


# --- the page ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Debian's headless Chromium through chromedriver (given explicitly: Selenium Manager never
    runs), with a fake microphone that plays a sample clip."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    microphone = tmp_path_factory.mktemp("microphone") / "clip.wav"
    sf.write(microphone, pcm16(CLIP, silence_s=(0.5, 1.5)), RATE, subtype="PCM_16")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1000", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-audio-capture={microphone}%noloop", "--autoplay-policy=no-user-gesture-required",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def _wait(driver, condition, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def _severe(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_the_page_transcribes_speaks_and_streams(server, browser, tmp_path_factory):
    from selenium.webdriver.common.by import By

    driver = browser
    out = tmp_path_factory.mktemp("page")
    driver.get(server)
    _wait(driver, lambda d: "API key" in d.find_element(By.ID, "models-status").text)
    driver.find_element(By.ID, "api-key").send_keys(TEST_API_KEY)
    driver.find_element(By.CSS_SELECTOR, "#key-form button").click()
    _wait(driver, lambda d: "transcription" in d.find_element(By.ID, "models-status").text)
    asr_models = [o.get_attribute("value") for o in driver.find_elements(By.CSS_SELECTOR, "#asr-model option")]
    assert asr_models == ["ctc-xlsr", "whisper"]

    # Upload a WAV file: the transcript is the API's, and its words are timed spans.
    wav = out / "en-002.wav"
    sf.write(wav, pcm16(CLIP), RATE, subtype="PCM_16")
    driver.find_element(By.ID, "audio-file").send_keys(str(wav))
    driver.find_element(By.ID, "transcribe-button").click()
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#transcript span"))
    expected = httpx.post(f"{server}/v1/audio/transcriptions", headers={"authorization": f"Bearer {TEST_API_KEY}"},
                          files={"file": (wav.name, wav.read_bytes())}, data={"model": "ctc-xlsr"}, timeout=120)
    assert driver.find_element(By.ID, "transcript").text == expected.json()["text"]
    assert not driver.find_element(By.ID, "downloads").get_attribute("hidden")
    # Playing lights up the word under the playhead.
    driver.execute_script("const a = document.getElementById('transcribe-audio'); a.muted = true; a.currentTime = 1.0;"
                          " a.play();")
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#transcript span.current"), timeout=20)

    # Speak: the answer is playable audio whose duration the page reads back.
    driver.find_element(By.ID, "speak-button").click()
    _wait(driver, lambda d: "s of audio" in d.find_element(By.ID, "speak-status").text)
    duration = driver.execute_script("return document.getElementById('speak-audio').duration")
    assert duration > 0

    # Live: the fake microphone plays the clip through the WebSocket; a turn completes.
    driver.find_element(By.ID, "live-start").click()
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#live-turns li.final"), timeout=60)
    driver.find_element(By.ID, "live-start").click()
    assert driver.find_element(By.CSS_SELECTOR, "#live-turns li.final").text

    assert _severe(driver) == []  # nothing went wrong on the happy paths
    driver.save_screenshot(str(out / "page.png"))
    print(f"\n[page] screenshot: {out / 'page.png'}")

    # An API error is shown in words.
    driver.find_element(By.ID, "tts-voice").send_keys("alloy")
    driver.find_element(By.ID, "speak-button").click()
    _wait(driver, lambda d: d.find_element(By.ID, "speak-error").is_displayed())
    assert "unknown voice 'alloy'" in driver.find_element(By.ID, "speak-error").text


# --- real weights (Whisper base) --------------------------------------------------------------


@pytest.fixture(scope="module")
def real_whisper_dir(real_whisper) -> Path:
    """The transformers checkpoint of the real Whisper base weights (conftest.real_whisper)."""
    from speech.testing.real_whisper import HF_NAME

    return real_whisper[HF_NAME]


def test_real_whisper_streamed_words_equal_the_offline_words(real_whisper_dir, tmp_path):
    """On real weights, a streamed English clip (24 kHz PCM, 100 ms chunks, committed at the end)
    completes with the words the transcription job writes for a WAV file of the same audio."""
    from speech.asr import load_front_end, load_recognizer
    from speech.asr.live import Completed
    from speech.asr.live_local import transcribe_live
    from speech.asr.streaming import StreamingModel
    from speech.asr.vad import default_vad
    from speech.audio import StreamResampler
    from speech.options import StreamOptions, TranscribeOptions

    options = TranscribeOptions(inputs=["unused"], output="unused", model=str(real_whisper_dir), language="en")
    front_end = load_front_end(options.model, options.asr)
    model = StreamingModel(front_end, load_recognizer(options.model, options.asr, "cpu", run=options.run), default_vad(), StreamOptions())
    for clip in ENGLISH[:3]:  # each clip is a real-weights job and a stream: three keep CI short
        pcm = pcm16(clip)
        resampler = StreamResampler(RATE, front_end.sample_rate)
        audio = np.concatenate([resampler.push(pcm.astype(np.float32) / 32768), resampler.flush()])
        events = transcribe_live(model, "whisper", audio, StreamOptions(), language="en")
        (streamed,) = [e.text for e in events if isinstance(e, Completed)]
        path = tmp_path / f"{clip.stem}.wav"
        sf.write(path, pcm, RATE, subtype="PCM_16")
        (expected,) = job_texts([str(path)], real_whisper_dir, tmp_path / f"{clip.stem}-out", language="en").values()
        assert _words(streamed) == _words(expected), clip


def _words(text: str) -> list[str]:
    return "".join(c for c in text.lower() if c.isalnum() or c.isspace()).split()
