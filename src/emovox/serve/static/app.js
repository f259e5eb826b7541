/* emovox page: record or upload speech, show its emotion; guided sessions.
 * Plain JavaScript, no build step and no external resources (works offline).
 * Settings can be overridden before this script loads with
 *   <script>window.EMOVOX_CONFIG = {sessionSeconds: 3, sessionPrompts: [...]}</script>
 */
"use strict";

const CONFIG = Object.assign({
  /** Speakers of a timeline: "auto" separates the voices (per-speaker summary), a number
   *  or a range such as "2-4" bounds how many, "" never. */
  timelineSpeakers: "auto",
  /** Voice encoder that tells the speakers apart ("campplus", "ge2e"); "": the server's default. */
  timelineVoices: "",
  /** Sample rate of the WAV files the page makes from recordings. */
  wavSampleRate: 16000,
  /** Longest microphone recording (s); the server's own limit applies too. */
  maxRecordSeconds: 300,
  /** Guided session: seconds recorded per prompt, pause before each, and the prompts. */
  sessionSeconds: 4,
  sessionPause: 1.5,
  sessionPrompts: [
    "🎉 You just won a trip around the world!",
    "🕷️ There is a huge spider on your shoulder.",
    "🌧️ It has rained for three weeks without a break.",
    "😤 Someone cut in front of you in a long queue.",
    "☕ Describe your morning coffee.",
    "🐶 A puppy runs up to you, wagging its tail.",
  ],
}, window.EMOVOX_CONFIG || {});

/** The timeline request's query: its speakers and their voice encoder, as configured. */
function timelineQuery() {
  if (!CONFIG.timelineSpeakers) return "";
  const params = new URLSearchParams({speakers: CONFIG.timelineSpeakers});
  if (CONFIG.timelineVoices) params.set("voices", CONFIG.timelineVoices);
  return `?${params}`;
}

/** Emoji and colour of the canonical emotions; other classes get a palette colour. */
const EMOTIONS = {
  neutral: { emoji: "😐", color: "#8a94a6" },
  calm: { emoji: "😌", color: "#2fb3a6" },
  happy: { emoji: "😄", color: "#f2b01e" },
  sad: { emoji: "😢", color: "#4a7fd6" },
  angry: { emoji: "😠", color: "#e5484d" },
  fearful: { emoji: "😨", color: "#8e5cd9" },
  disgust: { emoji: "🤢", color: "#46a758" },
  surprised: { emoji: "😲", color: "#f76b15" },
  boredom: { emoji: "🥱", color: "#a0856b" },
  positive: { emoji: "🙂", color: "#46a758" },
  negative: { emoji: "🙁", color: "#e5484d" },
};
const PALETTE = ["#5b5bd6", "#e5484d", "#46a758", "#f2b01e", "#8e5cd9", "#2fb3a6", "#f76b15", "#4a7fd6"];

const $ = (id) => document.getElementById(id);
const state = { model: null, recording: null, session: null };

class UserError extends Error {}

// ---------------------------------------------------------------------------- helpers
function emotionStyle(name) {
  const key = String(name).toLowerCase();
  if (EMOTIONS[key]) return EMOTIONS[key];
  const last = key.split(/[_\-\s]/).pop(); // e.g. "male_angry"
  if (EMOTIONS[last]) return EMOTIONS[last];
  const classes = (state.model && state.model.classes) || [];
  const index = Math.max(0, classes.indexOf(name));
  return { emoji: "🎙️", color: PALETTE[index % PALETTE.length] };
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "style") node.style.cssText = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

const pct = (p) => `${(100 * p).toFixed(p >= 0.995 || p < 0.001 ? 0 : 1)}%`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function formatTime(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function showAlert(message) {
  $("alert-text").textContent = message;
  $("alert").hidden = false;
}
function clearAlert() { $("alert").hidden = true; }

// ---------------------------------------------------------------------------- API
async function postAudio(url, blob, filename) {
  const form = new FormData();
  form.append("file", blob, filename);
  let response;
  try {
    response = await fetch(url, { method: "POST", body: form });
  } catch (error) {
    throw Object.assign(new Error("The emovox server cannot be reached. Is it still running?"), { status: 0 });
  }
  let body = null;
  try { body = await response.json(); } catch (error) { body = null; }
  if (!response.ok) {
    const detail = body && body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail))
      : `${response.status} ${response.statusText}`;
    throw Object.assign(new Error(detail), { status: response.status });
  }
  return body;
}

async function loadModel() {
  try {
    const response = await fetch("/api/model");
    if (!response.ok) throw new Error(`${response.status}`);
    state.model = await response.json();
  } catch (error) {
    $("model-badge").textContent = "model unavailable";
    showAlert("Could not load the model description from the server.");
    return;
  }
  const m = state.model;
  const labelName = (m.labels && m.labels.name) || "custom";
  const featureName = (m.features && m.features.name) || "features";
  $("model-badge").textContent = `${labelName} · ${m.classes.length} emotions · ${featureName}${m.engine === "onnx" ? " · ONNX" : ""}`;
  const mb = m.limits ? m.limits.max_upload_bytes / 1048576 : 20;
  $("upload-hint").textContent = `WAV, FLAC, OGG, MP3 · up to ${mb >= 1 ? Math.round(mb) : mb.toFixed(1)} MB`;
  renderModelTab(m);
}

// ---------------------------------------------------------------------------- audio
function encodeWav(samples, sampleRate) {
  const buffer = new ArrayBuffer(44 + samples.length * 2);
  const view = new DataView(buffer);
  const text = (offset, s) => { for (let i = 0; i < s.length; i++) view.setUint8(offset + i, s.charCodeAt(i)); };
  text(0, "RIFF"); view.setUint32(4, 36 + samples.length * 2, true); text(8, "WAVE");
  text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, sampleRate, true); view.setUint32(28, sampleRate * 2, true);
  view.setUint16(32, 2, true); view.setUint16(34, 16, true);
  text(36, "data"); view.setUint32(40, samples.length * 2, true);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    view.setInt16(44 + 2 * i, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
  return new Blob([buffer], { type: "audio/wav" });
}

/** Decode any recording the browser can play into mono 16-bit WAV at CONFIG.wavSampleRate. */
async function toWav(blob) {
  const Ctx = window.AudioContext || window.webkitAudioContext;
  if (!Ctx || !window.OfflineAudioContext) throw new UserError("This browser cannot convert audio to WAV.");
  const data = await blob.arrayBuffer();
  const context = new Ctx();
  let decoded;
  try {
    decoded = await context.decodeAudioData(data);
  } catch (error) {
    throw new UserError("The browser could not decode this audio.");
  } finally {
    context.close();
  }
  const rate = CONFIG.wavSampleRate;
  const length = Math.max(1, Math.ceil(decoded.duration * rate));
  const offline = new OfflineAudioContext(1, length, rate); // down-mixes to mono
  const source = offline.createBufferSource();
  source.buffer = decoded;
  source.connect(offline.destination);
  source.start();
  const rendered = await offline.startRendering();
  return encodeWav(rendered.getChannelData(0), rate);
}

async function getMicrophone() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new UserError("Recording is not available here: the browser needs a secure page (https, or this server opened as localhost). You can still upload a file.");
  }
  try {
    return await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
  } catch (error) {
    const name = error && error.name;
    if (name === "NotFoundError" || name === "OverconstrainedError" || name === "DevicesNotFoundError") {
      throw new UserError("No microphone was found. Connect one (or enable it in your system settings) and try again, or upload a file instead.");
    }
    if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError") {
      throw new UserError("Microphone access was blocked. Allow it for this page (the icon in the address bar) and try again.");
    }
    if (name === "NotReadableError" || name === "AbortError") {
      throw new UserError("The microphone is busy or could not be started; another application may be using it.");
    }
    throw new UserError(`The microphone could not be opened (${name || error}).`);
  }
}

/**
 * Start recording a stream; `stop()` resolves to a WAV blob. MediaRecorder's container
 * (WebM/Opus in Chromium, Ogg in Firefox, MP4 in Safari) is decoded and re-encoded as
 * WAV, which every server-side reader accepts. Without MediaRecorder, PCM is captured
 * directly with a ScriptProcessor.
 */
function startRecorder(stream) {
  if (window.MediaRecorder) {
    const chunks = [];
    const recorder = new MediaRecorder(stream);
    const stopped = new Promise((resolve, reject) => {
      recorder.ondataavailable = (event) => { if (event.data && event.data.size) chunks.push(event.data); };
      recorder.onstop = () => resolve(new Blob(chunks, { type: recorder.mimeType || "audio/webm" }));
      recorder.onerror = (event) => reject(event.error || new Error("recording failed"));
    });
    recorder.start(250);
    return {
      async stop() {
        if (recorder.state !== "inactive") recorder.stop();
        const recorded = await stopped;
        if (!recorded.size) throw new UserError("Nothing was recorded. Check the microphone and try again.");
        return /wav/.test(recorded.type) ? recorded : toWav(recorded);
      },
    };
  }
  const Ctx = window.AudioContext || window.webkitAudioContext;
  const context = new Ctx();
  const source = context.createMediaStreamSource(stream);
  const processor = context.createScriptProcessor(4096, 1, 1);
  const parts = [];
  processor.onaudioprocess = (event) => parts.push(new Float32Array(event.inputBuffer.getChannelData(0)));
  source.connect(processor);
  processor.connect(context.destination);
  return {
    async stop() {
      source.disconnect(); processor.disconnect();
      const total = parts.reduce((n, p) => n + p.length, 0);
      const samples = new Float32Array(total);
      let offset = 0;
      for (const part of parts) { samples.set(part, offset); offset += part.length; }
      const rate = context.sampleRate;
      await context.close();
      return encodeWav(samples, rate);
    },
  };
}

/** A level meter on a stream: calls onLevel(0..1) on every animation frame until stopped. */
function levelMeter(stream, onLevel) {
  const Ctx = window.AudioContext || window.webkitAudioContext;
  if (!Ctx) return () => {};
  const context = new Ctx();
  const analyser = context.createAnalyser();
  analyser.fftSize = 512;
  context.createMediaStreamSource(stream).connect(analyser);
  const data = new Uint8Array(analyser.fftSize);
  let running = true;
  const tick = () => {
    if (!running) return;
    analyser.getByteTimeDomainData(data);
    let peak = 0;
    for (const v of data) peak = Math.max(peak, Math.abs(v - 128) / 128);
    onLevel(peak);
    requestAnimationFrame(tick);
  };
  tick();
  return () => { running = false; context.close(); };
}

// ---------------------------------------------------------------------------- results
function renderBars(container, probabilities, classes) {
  container.replaceChildren();
  const order = [...classes].sort((a, b) => probabilities[b] - probabilities[a]);
  order.forEach((name, i) => {
    const p = probabilities[name];
    const style = emotionStyle(name);
    const fill = el("div", { class: "bar-fill", style: `background:${style.color}` });
    const row = el("div", { class: `bar${i === 0 ? " top-row" : ""}`, "data-class": name },
      el("span", { class: "bar-label", title: name }, el("span", { class: "emo", text: style.emoji }), el("span", { text: name })),
      el("div", { class: "bar-track" }, fill),
      el("span", { class: "bar-value", text: pct(p) }));
    container.append(row);
    requestAnimationFrame(() => { fill.style.width = `${(100 * p).toFixed(2)}%`; });
  });
}

function renderResult(result) {
  const style = emotionStyle(result.emotion);
  $("result").dataset.emotion = result.emotion;
  $("top-emoji").textContent = style.emoji;
  $("top-emotion").textContent = result.emotion;
  $("top-emotion").style.color = style.color;
  // "basis" says what the answer covers: the whole recording, or the mean of the
  // speech windows of a long one (the same windows as its timeline).
  const basis = result.basis && result.basis !== "whole recording" ? ` · ${result.basis}` : "";
  $("top-meta").textContent = `${pct(result.confidence)} confident · ${result.duration.toFixed(1)} s of audio${basis}`;
  renderBars($("bars"), result.probabilities, result.classes);
  $("result-empty").hidden = true;
  $("result").hidden = false;
}

function setBusy(busy, text) {
  $("busy").hidden = !busy;
  if (text) $("busy-text").textContent = text;
  if (busy) { $("result").hidden = true; $("result-empty").hidden = true; }
}

function niceStep(span) {
  const raw = span / 8;
  const base = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (raw <= m * base) return m * base;
  return 10 * base;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

/** Probability of each class over time (lines) and the top emotion per segment (strip). */
function renderTimeline(data) {
  const segments = data.segments || [];
  const box = $("timeline");
  box.replaceChildren();
  $("timeline-legend").replaceChildren();
  if (!segments.length) { $("timeline-card").hidden = true; return; }
  const turns = data.speaker_turns || [];
  const W = 900, H = turns.length ? 272 : 250, L = 40, R = 12, T = 12, strip = 16, B = turns.length ? 68 : 46;
  const plotH = H - T - B;
  const end = Math.max(data.duration || 0, ...segments.map((s) => s.end));
  const x = (t) => L + (t / end) * (W - L - R);
  const y = (p) => T + (1 - p) * plotH;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Emotion probabilities over time" });
  for (const p of [0, 0.25, 0.5, 0.75, 1]) {
    root.append(svg("line", { x1: L, x2: W - R, y1: y(p), y2: y(p), class: "grid-line" }));
    const label = svg("text", { x: L - 8, y: y(p) + 4, "text-anchor": "end", class: "axis" });
    label.textContent = `${Math.round(p * 100)}%`;
    root.append(label);
  }
  const step = niceStep(end);
  for (let t = 0; t <= end + 1e-9; t += step) {
    const label = svg("text", { x: x(t), y: H - 6, "text-anchor": "middle", class: "axis" });
    label.textContent = end >= 120 ? formatTime(t) : `${+t.toFixed(1)} s`;
    root.append(label);
  }
  const has = (s, c) => s.probabilities && s.probabilities[c] != null;
  const classes = data.classes.filter((c) => segments.some((s) => has(s, c)));
  for (const name of classes) {
    const style = emotionStyle(name);
    // One line per run of segments with speech; windows without speech leave a gap.
    let run = [];
    const flush = () => {
      if (run.length === 1) run.unshift([x(run[0][2]), run[0][1]]);
      if (run.length) {
        root.append(svg("polyline", {
          points: run.map((p) => `${p[0].toFixed(1)},${p[1].toFixed(1)}`).join(" "), fill: "none",
          stroke: style.color, "stroke-width": 2.2, "stroke-linejoin": "round", "stroke-linecap": "round", opacity: 0.9,
        }));
      }
      run = [];
    };
    for (const s of segments) {
      if (has(s, name)) run.push([x((s.start + s.end) / 2), y(s.probabilities[name]), s.start]);
      else flush();
    }
    flush();
  }
  if (!classes.length) {
    const note = svg("text", { x: (L + W - R) / 2, y: T + plotH / 2, "text-anchor": "middle", class: "axis" });
    note.textContent = "No speech detected in this recording";
    root.append(note);
  }
  const stripY = T + plotH + 8;
  // Overlapping windows: each one owns the stretch nearest to its centre, and
  // neighbours with the same emotion are drawn as one run.
  const mids = segments.map((s) => (s.start + s.end) / 2);
  const runs = [];
  segments.forEach((s, i) => {
    const from = i === 0 ? s.start : (mids[i - 1] + mids[i]) / 2;
    const to = i === segments.length - 1 ? s.end : (mids[i] + mids[i + 1]) / 2;
    const last = runs[runs.length - 1];
    if (last && last.emotion === s.emotion) {
      last.to = to;
      last.confidences.push(s.confidence || 0);
    } else {
      runs.push({ emotion: s.emotion, from, to, confidences: [s.confidence || 0] });
    }
  });
  for (const run of runs) {
    const speech = run.emotion != null;
    const rect = svg("rect", {
      x: x(run.from), y: stripY, width: Math.max(1, x(run.to) - x(run.from)), height: strip,
      fill: speech ? emotionStyle(run.emotion).color : "#c9cdd9", opacity: speech ? 1 : 0.5,
    });
    const title = svg("title");
    const mean = run.confidences.reduce((a, b) => a + b, 0) / run.confidences.length;
    title.textContent = `${run.from.toFixed(1)}–${run.to.toFixed(1)} s: ${speech ? `${run.emotion} (mean confidence ${pct(mean)})` : "no speech"}`;
    rect.append(title);
    root.append(rect);
  }
  // A conversation: who spoke when, one colour per speaker, under the emotions.
  const speakerColours = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"];
  const speakerNames = (data.speakers || []).map((s) => s.speaker);
  for (const turn of turns) {
    const rect = svg("rect", {
      x: x(turn.start), y: stripY + strip + 4, width: Math.max(1, x(turn.end) - x(turn.start)), height: strip,
      fill: speakerColours[Math.max(0, speakerNames.indexOf(turn.speaker)) % speakerColours.length],
    });
    const title = svg("title");
    title.textContent = `${turn.start.toFixed(1)}–${turn.end.toFixed(1)} s: ${turn.speaker}`;
    rect.append(title);
    root.append(rect);
  }
  box.append(root);
  (data.speakers || []).forEach((s, i) => {
    const top = Object.entries(s.emotions).filter(([e]) => e !== "unclassified")
      .sort((a, b) => b[1] - a[1]).slice(0, 3).map(([e, v]) => `${e} ${pct(v)}`).join(", ");
    $("timeline-legend").append(el("span", { class: "speaker" },
      el("i", { style: `background:${speakerColours[i % speakerColours.length]}` }),
      el("span", { text: `${s.speaker}: ${s.speech_seconds.toFixed(0)} s of speech (${pct(s.speech_share)}) — ${top}` })));
  });
  for (const name of classes) {
    const style = emotionStyle(name);
    $("timeline-legend").append(el("span", {}, el("i", { style: `background:${style.color}` }),
      el("span", { class: "emo", text: style.emoji }), el("span", { text: name })));
  }
  $("timeline-meta").textContent = `${segments.length} segments · ${end.toFixed(1)} s`;
  $("timeline-card").hidden = false;
}

/** Predict a recording or file, then add a timeline for long audio. */
async function analyse(blob, filename) {
  clearAlert();
  $("timeline-card").hidden = true;
  $("clip").hidden = false;
  $("clip-name").textContent = filename;
  const player = $("player");
  if (player.dataset.url) URL.revokeObjectURL(player.dataset.url);
  player.dataset.url = URL.createObjectURL(blob);
  player.src = player.dataset.url;
  setBusy(true, "Listening to the recording…");
  let sent = blob;
  let name = filename;
  let result = null;
  try {
    try {
      result = await postAudio("/api/predict", sent, name);
    } catch (error) {
      if (error.status !== 415) throw error;
      // The server cannot read this container: let the browser decode it and send WAV.
      setBusy(true, "Converting the audio in the browser…");
      try {
        sent = await toWav(blob);
      } catch (conversion) {
        throw new UserError(`${error.message} — and the browser could not decode it either; try a WAV or FLAC file.`);
      }
      name = `${filename.replace(/\.[^.]*$/, "")}.wav`;
      result = await postAudio("/api/predict", sent, name);
    }
    renderResult(result);
  } catch (error) {
    setBusy(false);
    $("result-empty").hidden = false;
    showAlert(error.message);
    return;
  } finally {
    $("busy").hidden = true;
  }
  // A recording answered from its windows (basis other than the whole recording)
  // gets its timeline: the headline above is the mean of the same windows.
  if (state.model && state.model.timeline && result.basis && result.basis !== "whole recording") {
    try {
      renderTimeline(await postAudio(`/api/timeline${timelineQuery()}`, sent, name));
    } catch (error) {
      showAlert(`Timeline: ${error.message}`);
    }
  }
}

// ---------------------------------------------------------------------------- record tab
async function toggleRecording() {
  const button = $("record-btn");
  if (state.recording) {
    const { recorder, stream, stopMeter, timer } = state.recording;
    state.recording = null;
    clearInterval(timer);
    stopMeter();
    button.classList.remove("recording");
    button.setAttribute("aria-label", "Start recording");
    $("record-label").textContent = "Tap to record";
    $("level-ring").style.transform = "scale(1)";
    try {
      const wav = await recorder.stop();
      await analyse(wav, `recording-${new Date().toISOString().slice(11, 19).replace(/:/g, "")}.wav`);
    } catch (error) {
      showAlert(error.message);
    } finally {
      stream.getTracks().forEach((t) => t.stop());
    }
    return;
  }
  clearAlert();
  let stream;
  try {
    stream = await getMicrophone();
  } catch (error) {
    showAlert(error.message);
    return;
  }
  const recorder = startRecorder(stream);
  const started = performance.now();
  const limit = Math.min(CONFIG.maxRecordSeconds, (state.model && state.model.limits && state.model.limits.max_seconds) || Infinity);
  const timer = setInterval(() => {
    const elapsed = (performance.now() - started) / 1000;
    $("record-timer").textContent = formatTime(elapsed);
    if (elapsed >= limit && state.recording) toggleRecording();
  }, 200);
  const stopMeter = levelMeter(stream, (level) => { $("level-ring").style.transform = `scale(${1 + Math.min(0.35, level * 0.6)})`; });
  state.recording = { recorder, stream, stopMeter, timer };
  button.classList.add("recording");
  button.setAttribute("aria-label", "Stop recording");
  $("record-label").textContent = "Recording… tap to stop";
  $("record-timer").textContent = "0:00";
}

function setupUpload() {
  const input = $("file-input");
  input.addEventListener("change", () => {
    const file = input.files && input.files[0];
    if (file) analyse(file, file.name);
    input.value = "";
  });
  const zone = $("dropzone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const file = event.dataTransfer.files && event.dataTransfer.files[0];
    if (file) analyse(file, file.name);
  });
}

// ---------------------------------------------------------------------------- guided session
const EMOJI_PREFIX = /^((?:\p{Extended_Pictographic}|\p{Emoji_Modifier}|\u200d|\ufe0f)+)\s*(.*)$/u;

function parsePrompt(line) {
  const match = line.match(EMOJI_PREFIX);
  return match ? { emoji: match[1], text: match[2] } : { emoji: "", text: line };
}

function sessionSettings() {
  const prompts = $("session-prompts").value.split("\n").map((l) => l.trim()).filter(Boolean).map(parsePrompt);
  const seconds = Math.min(30, Math.max(1, Number($("session-seconds").value) || CONFIG.sessionSeconds));
  const pause = Math.min(10, Math.max(0, Number($("session-pause").value) || 0));
  return { prompts, seconds, pause };
}

async function animateProgress(bar, seconds, session) {
  const started = performance.now();
  while (!session.cancelled) {
    const done = Math.min(1, (performance.now() - started) / (seconds * 1000));
    bar.style.width = `${(done * 100).toFixed(1)}%`;
    if (done >= 1) return;
    await sleep(50);
  }
}

async function runSession() {
  clearAlert();
  const { prompts, seconds, pause } = sessionSettings();
  if (!prompts.length) { showAlert("Write at least one prompt, one per line."); return; }
  let stream;
  try {
    stream = await getMicrophone();
  } catch (error) {
    showAlert(error.message);
    return;
  }
  const session = { cancelled: false, items: [] };
  state.session = session;
  $("session-setup").hidden = true;
  $("session-results-card").hidden = true;
  $("session-stage").hidden = false;
  const status = $("stage-status");
  const bar = $("stage-progress");
  try {
    for (let i = 0; i < prompts.length && !session.cancelled; i++) {
      const prompt = prompts[i];
      $("stage-count").textContent = `Prompt ${i + 1} of ${prompts.length}`;
      $("stage-emoji").textContent = prompt.emoji;
      $("stage-text").textContent = prompt.text;
      status.classList.remove("live");
      bar.classList.remove("live");
      bar.style.width = "0%";
      if (pause > 0) {
        status.textContent = "Get ready…";
        await animateProgress(bar, pause, session);
        if (session.cancelled) break;
      }
      status.textContent = `🎙️ Speak now: react out loud for ${seconds} s`;
      status.classList.add("live");
      bar.classList.add("live");
      bar.style.width = "0%";
      const recorder = startRecorder(stream);
      await animateProgress(bar, seconds, session);
      const item = { prompt, index: i };
      item.wav = recorder.stop();
      item.result = item.wav.then((wav) => postAudio("/api/predict", wav, `prompt-${i + 1}.wav`))
        .then((r) => ({ ok: true, data: r }), (error) => ({ ok: false, error: error.message }));
      session.items.push(item);
    }
  } finally {
    stream.getTracks().forEach((t) => t.stop());
  }
  status.classList.remove("live");
  status.textContent = "Analysing your reactions…";
  bar.classList.remove("live");
  const outcomes = await Promise.all(session.items.map(async (item) => ({
    item, outcome: await item.result, wav: await item.wav.catch(() => null),
  })));
  $("session-stage").hidden = true;
  $("session-setup").hidden = false;
  state.session = null;
  if (outcomes.length) renderSession(outcomes, prompts.length);
}

function renderSession(outcomes, planned) {
  const list = $("session-results");
  list.replaceChildren();
  const counts = {};
  for (const { item, outcome, wav } of outcomes) {
    const card = el("div", { class: "session-result", "data-index": String(item.index) },
      el("div", { class: "session-prompt" },
        item.prompt.emoji ? el("span", { class: "p-emoji emo", text: item.prompt.emoji }) : null,
        el("span", { text: item.prompt.text || `Prompt ${item.index + 1}` })));
    if (outcome.ok) {
      const r = outcome.data;
      const style = emotionStyle(r.emotion);
      counts[r.emotion] = (counts[r.emotion] || 0) + 1;
      card.dataset.emotion = r.emotion;
      card.append(el("div", { class: "session-emotion" },
        el("span", { class: "chip", style: `background:${style.color}22;color:${style.color}` },
          el("span", { class: "emo", text: style.emoji }), el("span", { class: "emotion-name", text: r.emotion })),
        el("span", { class: "muted small", text: pct(r.confidence) })));
      const bars = el("div", { class: "bars" });
      renderBars(bars, r.probabilities, r.classes);
      card.append(bars);
    } else {
      card.dataset.error = outcome.error;
      card.append(el("div", { class: "session-error", text: outcome.error }));
    }
    if (wav) {
      const audio = el("audio", { controls: "", preload: "none" });
      audio.src = URL.createObjectURL(wav);
      card.append(audio);
    }
    list.append(card);
  }
  const ranked = Object.entries(counts).sort((a, b) => b[1] - a[1]);
  const summary = ranked.length ? `Most often heard: ${ranked[0][0]} (${ranked[0][1]} of ${outcomes.length}).` : "";
  const stopped = outcomes.length < planned ? ` Stopped after ${outcomes.length} of ${planned} prompts.` : "";
  $("session-summary").textContent = summary + stopped;
  $("session-results-card").hidden = false;
}

// ---------------------------------------------------------------------------- model tab
function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

/** A small Markdown subset (headings, paragraphs, lists, tables, `code`, **bold**). */
function renderMarkdown(markdown) {
  const inline = (s) => escapeHtml(s).replace(/`([^`]+)`/g, "<code>$1</code>").replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>");
  const lines = markdown.split("\n");
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (/^#{1,6}\s/.test(line)) {
      const level = Math.min(3, line.match(/^#+/)[0].length);
      out.push(`<h${level}>${inline(line.replace(/^#+\s*/, ""))}</h${level}>`);
      i++;
    } else if (/^\s*[-*]\s/.test(line)) {
      const items = [];
      while (i < lines.length && /^\s*[-*]\s/.test(lines[i])) items.push(`<li>${inline(lines[i++].replace(/^\s*[-*]\s/, ""))}</li>`);
      out.push(`<ul>${items.join("")}</ul>`);
    } else if (/^\|/.test(line)) {
      const rows = [];
      while (i < lines.length && /^\|/.test(lines[i])) rows.push(lines[i++]);
      const cells = (row) => row.replace(/^\||\|$/g, "").split("|").map((c) => c.trim());
      const body = rows.filter((r, k) => !(k === 1 && /^\|[\s:|-]+\|?$/.test(r)));
      const html = body.map((r, k) => `<tr>${cells(r).map((c) => (k === 0 ? `<th>${inline(c)}</th>` : `<td>${inline(c)}</td>`)).join("")}</tr>`);
      out.push(`<table>${html.join("")}</table>`);
    } else if (line.trim()) {
      const para = [];
      while (i < lines.length && lines[i].trim() && !/^(#|\||\s*[-*]\s)/.test(lines[i])) para.push(lines[i++]);
      out.push(`<p>${inline(para.join(" "))}</p>`);
    } else {
      i++;
    }
  }
  return out.join("\n");
}

function renderModelTab(m) {
  const facts = $("model-facts");
  facts.replaceChildren();
  const add = (term, value) => { if (value) facts.append(el("dt", { text: term }), el("dd", { text: value })); };
  const t = m.training || {};
  const ev = t.evaluation || null;
  add("Emotions", m.classes.join(", "));
  add("Label set", m.labels ? `${m.labels.name}${m.labels.description ? ` (${m.labels.description})` : ""}` : "");
  add("Features", m.features ? Object.entries(m.features).filter(([k, v]) => k !== "name" && v != null).reduce((s, [k, v]) => `${s} ${k}=${JSON.stringify(v)}`, m.features.name) : "");
  add("Classifier", t.model ? `${t.model.name}${t.model.params && Object.keys(t.model.params).length ? ` ${JSON.stringify(t.model.params)}` : ""}` : "");
  add("Training data", t.corpora ? `${t.corpora.join(", ")}: ${t.utterances} utterances, ${t.speakers} speakers` : "");
  if (ev && ev.mean) add("Evaluation", `${ev.protocol}: UAR ${ev.mean.uar.toFixed(3)}, WA ${ev.mean.wa.toFixed(3)}, macro-F1 ${ev.mean.macro_f1.toFixed(3)}`);
  add("Engine", m.engine === "onnx" ? "ONNX Runtime" : "native (scikit-learn / PyTorch)");
  if (m.limits) add("Limits", `${(m.limits.max_upload_bytes / 1048576).toFixed(0)} MB per upload, ${m.limits.max_seconds} s per recording`);
  add("Timeline", m.timeline ? "available for long recordings" : "not available with this server");
  $("model-card").innerHTML = m.card ? renderMarkdown(m.card) : "<p class='muted'>This model has no card.</p>";
}

// ---------------------------------------------------------------------------- wiring
function selectTab(name) {
  for (const tab of document.querySelectorAll(".tab")) {
    const selected = tab.dataset.tab === name;
    tab.setAttribute("aria-selected", String(selected));
    $(`tab-${tab.dataset.tab}`).hidden = !selected;
  }
}

function init() {
  for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => selectTab(tab.dataset.tab));
  $("alert-close").addEventListener("click", clearAlert);
  $("record-btn").addEventListener("click", toggleRecording);
  setupUpload();
  $("session-prompts").value = CONFIG.sessionPrompts.join("\n");
  $("session-seconds").value = CONFIG.sessionSeconds;
  $("session-pause").value = CONFIG.sessionPause;
  $("session-start").addEventListener("click", runSession);
  $("session-stop").addEventListener("click", () => { if (state.session) state.session.cancelled = true; });
  $("session-again").addEventListener("click", () => { $("session-results-card").hidden = true; });
  const start = new URLSearchParams(location.search).get("tab");
  if (start && $(`tab-${start}`)) selectTab(start);
  loadModel();
}

init();
