// The page's behaviour. It talks to the server's public API like any other client:
// /v1/models, /v1/audio/transcriptions, /v1/audio/speech and the /v1/realtime WebSocket.

const RATE = 24000; // microphone audio is captured at the Realtime API's PCM rate
const CHUNK = RATE / 10; // samples per input_audio_buffer.append (100 ms)
const KEY = "speech.apiKey"; // sessionStorage: the key lives as long as the tab

const $ = (id) => document.getElementById(id);

// --- the API -------------------------------------------------------------------------------

function apiKey() {
  return sessionStorage.getItem(KEY) || "";
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (apiKey()) headers.set("Authorization", `Bearer ${apiKey()}`);
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (err) {
    throw new Error(`cannot reach the server (${err.message})`);
  }
  if (!response.ok) throw new Error(await describeError(response));
  return response;
}

// An API error in words: the server's {"error": {"message"}} body, else the status line.
async function describeError(response) {
  let message = `the server answered ${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = `${body.error.message} (HTTP ${response.status})`;
  } catch (_) {
    // not JSON: keep the status line
  }
  return message;
}

function showError(id, err) {
  const element = $(id);
  element.textContent = err ? String(err.message || err) : "";
  element.hidden = !err;
}

function download(blob, name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

// --- models and the API key ------------------------------------------------------------------

const VOICE_HINTS = { vits: "default", kokoro: "e.g. af_heart", chattts: "e.g. seed:42" };
let speechModels = [];

async function loadModels() {
  const status = $("models-status");
  const settings = await (await fetch("/page.json")).json();
  if (settings.api_key_required && !apiKey()) {
    status.textContent = "This server needs an API key: enter it above.";
    return;
  }
  try {
    const { data } = await (await api("/v1/models")).json();
    const asr = data.filter((m) => m.kind === "transcription");
    speechModels = data.filter((m) => m.kind === "speech");
    for (const id of ["asr-model", "live-model"]) fillSelect($(id), asr);
    fillSelect($("tts-model"), speechModels);
    updateVoiceHint();
    status.textContent = `${asr.length} transcription and ${speechModels.length} speech models`;
  } catch (err) {
    status.textContent = `Cannot list the models: ${err.message}`;
  }
}

function fillSelect(select, models) {
  select.replaceChildren(...models.map((m) => new Option(`${m.id} (${m.backend})`, m.id)));
  select.disabled = models.length === 0;
}

function updateVoiceHint() {
  const model = speechModels.find((m) => m.id === $("tts-model").value);
  $("tts-voice").placeholder = (model && VOICE_HINTS[model.backend]) || "model's default";
}

$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(KEY, $("api-key").value.trim());
  $("api-key").value = "";
  loadModels();
});
$("tts-model").addEventListener("change", updateVoiceHint);

// --- microphone ----------------------------------------------------------------------------

// Mono float32 samples at RATE from the microphone, handed to onSamples block by block.
async function startCapture(onSamples) {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 } });
  const context = new AudioContext({ sampleRate: RATE }); // the browser resamples the microphone
  await context.audioWorklet.addModule("/static/capture-worklet.js");
  const source = context.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(context, "capture");
  node.port.onmessage = (e) => onSamples(e.data);
  source.connect(node);
  node.connect(context.destination); // keeps the node rendering; it outputs silence
  return () => {
    node.port.onmessage = null;
    source.disconnect();
    stream.getTracks().forEach((track) => track.stop());
    context.close();
  };
}

function toPcm16(samples) {
  const pcm = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    pcm[i] = s < 0 ? s * 32768 : s * 32767;
  }
  return pcm;
}

function wavFile(samples, rate) {
  const pcm = toPcm16(samples);
  const header = new DataView(new ArrayBuffer(44));
  const text = (offset, s) => [...s].forEach((c, i) => header.setUint8(offset + i, c.charCodeAt(0)));
  text(0, "RIFF");
  header.setUint32(4, 36 + pcm.byteLength, true);
  text(8, "WAVEfmt ");
  header.setUint32(16, 16, true);
  header.setUint16(20, 1, true); // PCM
  header.setUint16(22, 1, true); // mono
  header.setUint32(24, rate, true);
  header.setUint32(28, rate * 2, true);
  header.setUint16(32, 2, true);
  header.setUint16(34, 16, true);
  text(36, "data");
  header.setUint32(40, pcm.byteLength, true);
  return new Blob([header, pcm], { type: "audio/wav" });
}

function concat(blocks) {
  const out = new Float32Array(blocks.reduce((n, b) => n + b.length, 0));
  let offset = 0;
  for (const block of blocks) {
    out.set(block, offset);
    offset += block.length;
  }
  return out;
}

// --- transcribe a recording ----------------------------------------------------------------

let recording = null; // {blob, name} to transcribe
let transcript = null; // the verbose_json answer
let stopRecorder = null;

function useRecording(blob, name) {
  recording = { blob, name };
  transcript = null;
  const audio = $("transcribe-audio");
  audio.src = URL.createObjectURL(blob);
  audio.hidden = false;
  $("transcript").replaceChildren();
  $("downloads").hidden = true;
  $("transcribe-button").disabled = false;
}

$("audio-file").addEventListener("change", (e) => {
  const file = e.target.files[0];
  if (file) useRecording(file, file.name);
});

$("record").addEventListener("click", async () => {
  const button = $("record");
  if (stopRecorder) {
    stopRecorder();
    return;
  }
  const blocks = [];
  try {
    const stop = await startCapture((block) => blocks.push(block));
    button.textContent = "Stop";
    button.classList.add("recording");
    $("record-status").textContent = "recording...";
    stopRecorder = () => {
      stop();
      stopRecorder = null;
      button.textContent = "Record";
      button.classList.remove("recording");
      const samples = concat(blocks);
      $("record-status").textContent = `${(samples.length / RATE).toFixed(1)} s recorded`;
      useRecording(wavFile(samples, RATE), "recording.wav");
    };
  } catch (err) {
    showError("transcribe-error", new Error(`cannot record: ${err.message}`));
  }
});

function transcriptionForm(format) {
  const form = new FormData();
  form.append("file", recording.blob, recording.name);
  form.append("model", $("asr-model").value);
  const language = $("asr-language").value.trim();
  if (language) form.append("language", language);
  form.append("response_format", format);
  if (format === "verbose_json") {
    form.append("timestamp_granularities[]", "word");
    form.append("timestamp_granularities[]", "segment");
  }
  return form;
}

$("transcribe-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  showError("transcribe-error", null);
  const button = $("transcribe-button");
  button.disabled = true;
  try {
    const response = await api("/v1/audio/transcriptions", { method: "POST", body: transcriptionForm("verbose_json") });
    transcript = await response.json();
    showTranscript(transcript);
    $("downloads").hidden = false;
  } catch (err) {
    showError("transcribe-error", err);
  } finally {
    button.disabled = false;
  }
});

// Words with their timings when the model gives them, else segments; each is a span that
// lights up while the audio plays through it and seeks there when clicked.
function showTranscript(result) {
  const pieces = result.words && result.words.length ? result.words.map((w) => ({ ...w, text: w.word }))
    : (result.segments || []).map((s) => ({ ...s, text: s.text.trim() }));
  const spans = pieces.map((piece) => {
    const span = document.createElement("span");
    span.textContent = piece.text;
    span.dataset.start = piece.start;
    span.dataset.end = piece.end;
    span.addEventListener("click", () => {
      const audio = $("transcribe-audio");
      audio.currentTime = piece.start;
      audio.play();
    });
    return span;
  });
  const element = $("transcript");
  element.replaceChildren();
  if (!spans.length) element.textContent = result.text;
  spans.forEach((span, i) => element.append(...(i ? [" ", span] : [span])));
}

function highlight() {
  const audio = $("transcribe-audio");
  const t = audio.currentTime;
  for (const span of $("transcript").querySelectorAll("span")) {
    span.classList.toggle("current", Number(span.dataset.start) <= t && t < Number(span.dataset.end));
  }
  if (!audio.paused) requestAnimationFrame(highlight);
}
$("transcribe-audio").addEventListener("play", highlight);
$("transcribe-audio").addEventListener("seeked", highlight);

$("downloads").addEventListener("click", async (e) => {
  const format = e.target.dataset.format;
  if (!format || !transcript) return;
  showError("transcribe-error", null);
  const stem = recording.name.replace(/\.[^.]*$/, "");
  if (format === "json") {
    download(new Blob([JSON.stringify(transcript, null, 2)], { type: "application/json" }), `${stem}.json`);
    return;
  }
  try {
    // Subtitles are the server's rendering (the same as `speech export` writes), not redone here.
    const response = await api("/v1/audio/transcriptions", { method: "POST", body: transcriptionForm(format) });
    download(new Blob([await response.text()], { type: "text/plain" }), `${stem}.${format}`);
  } catch (err) {
    showError("transcribe-error", err);
  }
});

// --- live transcription --------------------------------------------------------------------

let live = null; // {socket, stop, vad}

function liveTurn(itemId) {
  let item = document.querySelector(`#live-turns li[data-item="${itemId}"]`);
  if (!item) {
    item = document.createElement("li");
    item.dataset.item = itemId;
    item.className = "partial";
    $("live-turns").append(item);
  }
  return item;
}

function onLiveEvent(message) {
  const event = JSON.parse(message.data);
  switch (event.type) {
    case "session.updated":
      $("live-status").textContent = "listening";
      break;
    case "input_audio_buffer.speech_started":
      liveTurn(event.item_id);
      $("live-status").textContent = "hearing speech";
      break;
    case "input_audio_buffer.speech_stopped":
      $("live-status").textContent = "listening";
      break;
    case "conversation.item.input_audio_transcription.delta":
      liveTurn(event.item_id).textContent += event.delta;
      break;
    case "conversation.item.input_audio_transcription.completed": {
      const item = liveTurn(event.item_id);
      item.textContent = event.transcript;
      item.className = "final";
      break;
    }
    case "conversation.item.input_audio_transcription.failed":
      liveTurn(event.item_id).textContent = `(not transcribed: ${event.error.message})`;
      break;
    case "error":
      // Stopping commits whatever turn is open; with server VAD there may be none.
      if (!(message.target.stopping && event.error.code === "input_audio_buffer_commit_empty")) {
        showError("live-error", new Error(event.error.message));
      }
      break;
    default:
      break;
  }
}

function base64(pcm) {
  const bytes = new Uint8Array(pcm.buffer);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

async function startLive() {
  showError("live-error", null);
  const vad = $("live-vad").checked;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  // Browsers cannot set headers on a WebSocket: the key rides in a subprotocol, as OpenAI's does.
  const protocols = apiKey() ? ["realtime", `openai-insecure-api-key.${apiKey()}`] : ["realtime"];
  const socket = new WebSocket(`${scheme}://${location.host}/v1/realtime?intent=transcription`, protocols);
  live = { socket, stop: null, vad };
  socket.addEventListener("message", onLiveEvent);
  socket.addEventListener("close", (e) => {
    if (live && live.socket === socket) stopLive(false);
    if (e.code !== 1000 && e.code !== 1005) $("live-status").textContent = `closed (${e.code})`;
  });
  await new Promise((resolve, reject) => {
    socket.addEventListener("open", resolve, { once: true });
    socket.addEventListener("error", () => reject(new Error("cannot open the live connection")), { once: true });
  });
  socket.send(JSON.stringify({
    type: "session.update",
    session: {
      type: "transcription",
      audio: {
        input: {
          format: { type: "audio/pcm", rate: RATE },
          transcription: { model: $("live-model").value },
          turn_detection: vad ? { type: "server_vad" } : null,
        },
      },
    },
  }));
  let pending = [];
  let count = 0;
  live.stop = await startCapture((block) => {
    pending.push(block);
    count += block.length;
    if (count >= CHUNK && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ type: "input_audio_buffer.append", audio: base64(toPcm16(concat(pending))) }));
      pending = [];
      count = 0;
    }
  });
  $("live-start").textContent = "Stop";
  $("live-commit").disabled = vad;
}

function stopLive(commit = true) {
  if (!live) return;
  const { socket, stop } = live;
  socket.stopping = true;
  if (stop) stop();
  if (commit && socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify({ type: "input_audio_buffer.commit" }));
    setTimeout(() => socket.close(1000), 5000); // time for the last turn's text
  }
  live = null;
  $("live-start").textContent = "Start";
  $("live-commit").disabled = true;
  $("live-status").textContent = "stopped";
}

$("live-start").addEventListener("click", async () => {
  if (live) {
    stopLive();
    return;
  }
  try {
    await startLive();
  } catch (err) {
    stopLive(false);
    showError("live-error", err);
  }
});
$("live-commit").addEventListener("click", () => {
  if (live) live.socket.send(JSON.stringify({ type: "input_audio_buffer.commit" }));
});

// --- speak text ----------------------------------------------------------------------------

$("speak-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  showError("speak-error", null);
  const format = $("tts-format").value;
  const body = { model: $("tts-model").value, input: $("speak-text").value, response_format: format };
  const voice = $("tts-voice").value.trim();
  if (voice) body.voice = voice;
  const button = $("speak-button");
  button.disabled = true;
  $("speak-status").textContent = "synthesizing...";
  try {
    const response = await api("/v1/audio/speech", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const blob = await response.blob();
    const audio = $("speak-audio");
    audio.src = URL.createObjectURL(blob);
    audio.hidden = false;
    const link = $("speak-download");
    link.href = audio.src;
    link.download = `speech.${format}`;
    link.hidden = false;
    audio.addEventListener("loadedmetadata", () => {
      $("speak-status").textContent = `${audio.duration.toFixed(2)} s of audio`;
    }, { once: true });
  } catch (err) {
    $("speak-status").textContent = "";
    showError("speak-error", err);
  } finally {
    button.disabled = false;
  }
});

loadModels();
