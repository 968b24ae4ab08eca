// The Streamo live page: one client of the public session protocol (streamo/live/messages.py).
// Frames are captured from the <video> element, one per turn, by the same rule streamo uses
// everywhere: the frame for turn k is the first frame presented at or after k/fps seconds.
"use strict";

const PROTOCOL = "streamo.v1";
const STATES = { silence: "·", standby: "…", response: "!" };
const EPS = 1e-6;
// The WebSocket close codes this page tells apart (CLOSE_* in streamo/live/server.py).
const CLOSE = { unauthorized: 4401, server_full: 1013, idle: 4408 };
const $ = (id) => document.getElementById(id);

const page = {
  socket: null,
  ready: null,
  source: "file",
  capturing: false,
  nextTurn: 0,
  lastTurn: -1,
  turns: Infinity,
  cameraStream: null,
  events: [],          // every decided second, in order
  cells: new Map(),    // turn -> cell element
  selected: -1,
  dropped: 0,
  latencies: [],
  decidedAt: [],
  closedCleanly: false,
  fileUrl: null,
  queued: [],          // questions asked before the session started
  annotated: [],       // raw samples on the server's videos (GET /v1/sources)
  sampleTyped: false,  // the sample id was typed: never replaced
  stopping: false,
};

function showMessage(text) {
  const box = $("message");
  box.textContent = text;
  box.hidden = !text;
}

function setRunning(running) {
  $("start").disabled = running;
  $("stop").disabled = !running || page.stopping;
  $("stop").textContent = running && page.stopping ? "Stopping…" : "Stop";
  $("threshold").disabled = !running || !$("use-threshold").checked;
  $("use-threshold").disabled = !running;
  for (const input of document.querySelectorAll("input[name=source], #file, #key, #server-source")) {
    input.disabled = running;
  }
  const hasData = page.events.length > 0;
  $("download-predictions").disabled = !hasData;
  $("download-png").disabled = !hasData;
}

function base64url(text) {
  const bytes = new TextEncoder().encode(text);
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/v1/stream`;
}

function apiKey() {
  return $("key").value.trim();
}

// ----------------------------------------------------------------------------- session

function start() {
  showMessage("");
  $("retry").hidden = true;
  const key = apiKey();
  if (key) sessionStorage.setItem("streamo-key", key); else sessionStorage.removeItem("streamo-key");
  if (page.source === "file" && !$("file").files.length) {
    showMessage("Choose a video file first (or pick the webcam or a server video).");
    return;
  }
  if (page.source === "server" && !$("server-source").value) {
    showMessage("List the server's videos and pick one first.");
    return;
  }
  resetTimeline();
  // "Type a question and press Start": a question left in the box goes with the first frame, as Ask would.
  const typed = $("question").value.trim();
  if (typed) {
    page.queued.push(typed);
    $("question").value = "";
  }
  nameSample();
  if (page.queued.length) {
    $("detail").textContent = `${page.queued.length === 1 ? "The question goes" : `${page.queued.length} questions go`} to the server with the first frame.`;
  }
  page.closedCleanly = false;
  page.stopping = false;
  const protocols = [PROTOCOL];
  if (key) protocols.push("key." + base64url(key));
  let socket;
  try {
    socket = new WebSocket(socketUrl(), protocols);
  } catch (error) {
    showMessage(`Cannot open a connection to the server: ${error.message}`);
    return;
  }
  socket.binaryType = "arraybuffer";
  page.socket = socket;
  socket.onmessage = (message) => onServerMessage(JSON.parse(message.data));
  socket.onclose = (close) => onSocketClosed(close);
  setRunning(true);
}

function stop() {
  stopCapture();
  page.stopping = true;
  setRunning(true);
  showStopping();
  sending.then(() => send({ type: "close" }));
}

function showStopping() {
  // Frames already sent are still decided before the session closes: say how many are left.
  const left = Math.max(0, page.nextTurn - page.lastTurn - 1);
  $("detail").textContent = left
    ? `Stopping: the server decides the ${left} frame${left === 1 ? "" : "s"} already sent, then closes the session…`
    : "Stopping: closing the session…";
}

function send(message) {
  if (page.socket && page.socket.readyState === WebSocket.OPEN) page.socket.send(JSON.stringify(message));
}

function onServerMessage(message) {
  switch (message.type) {
    case "ready": return onReady(message);
    case "event": return onEvent(message);
    case "error": return onError(message);
    case "source_ended": return send({ type: "close" });
    case "closed": return onClosed(message);
  }
}

function onReady(ready) {
  page.ready = ready;
  const window = ready.window === null ? "whole stream" : `${ready.window} s window`;
  $("model").textContent = `Model ${ready.model} · ${ready.fps} frame/s · ${window} · session ${ready.session.slice(0, 8)}`;
  if (ready.response_threshold !== null) {
    $("use-threshold").checked = true;
    $("threshold").value = ready.response_threshold;
    $("threshold-value").textContent = Number(ready.response_threshold).toFixed(2);
  }
  setRunning(true);
  for (const text of page.queued.splice(0)) send({ type: "ask", text });
  if (page.source === "server") {
    const path = $("server-source").value;
    send({ type: "source", path, realtime: true });
    showServerVideo(path).catch((error) => showMessage(`The server's video cannot be shown in the player: ${error.message}`));
  } else {
    startCapture().catch((error) => {
      showMessage(error.message);
      stop();
    });
  }
}

const ERROR_HELP = {
  unauthorized: "The server refused the API key. Enter the key it was started with (STREAMO_API_KEY) and start again.",
  server_full: "The server is full: every session slot is taken. Try again in a minute.",
  idle_timeout: "The session was closed after a long time with nothing to do. Start again.",
  source_refused: "The server will not play that source.",
  source_failed: "The server could not decode that video.",
};

function onError(error) {
  const help = ERROR_HELP[error.code];
  showMessage(help ? `${help} (${error.message})` : `Server: ${error.message} [${error.code}]`);
  if (error.code === "unauthorized") page.refusal = "unauthorized";
  if (error.code === "server_full") page.refusal = "server_full";
}

function onClosed(closed) {
  page.stopping = false;
  page.closedCleanly = closed.reason !== "shutdown";
  const latency = closed.latency_ms ? `, latency mean ${closed.latency_ms.mean.toFixed(1)} ms, p95 ${closed.latency_ms.p95.toFixed(1)} ms` : "";
  $("detail").textContent = `Session closed (${closed.reason}): ${closed.frames} seconds decided, ${closed.responses} answers, ${closed.dropped} dropped${latency}.`;
}

function onSocketClosed(close) {
  stopCapture();
  page.socket = null;
  page.stopping = false;
  setRunning(false);
  if (close.code === CLOSE.unauthorized || page.refusal === "unauthorized") {
    showMessage(ERROR_HELP.unauthorized);
  } else if (close.code === CLOSE.server_full || page.refusal === "server_full") {
    showMessage(ERROR_HELP.server_full);
  } else if (!page.closedCleanly && close.code !== CLOSE.idle) {
    showMessage("The connection to the server was lost. Check that streamo serve is running, then retry.");
    $("retry").hidden = false;
  }
  page.refusal = null;
}

// ----------------------------------------------------------------------------- capture

async function startCapture() {
  const video = $("video");
  page.nextTurn = 0;
  page.turns = Infinity;
  if (page.source === "camera") {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error("This browser gives no camera to this page (a camera needs https or localhost).");
    }
    try {
      page.cameraStream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    } catch (error) {
      if (error.name === "NotAllowedError" || error.name === "SecurityError") {
        throw new Error("Camera permission was denied. Allow the camera for this page in the browser's site settings, or open a video file instead.");
      }
      throw new Error(`No camera could be opened (${error.name}: ${error.message}).`);
    }
    video.srcObject = page.cameraStream;
  } else {
    video.srcObject = null;
    if (page.fileUrl) URL.revokeObjectURL(page.fileUrl);
    page.fileUrl = URL.createObjectURL($("file").files[0]);
    video.src = page.fileUrl;
    await new Promise((resolve, reject) => {
      video.onloadedmetadata = resolve;
      video.onerror = () => reject(new Error("This browser cannot play this video (its codec or container). Convert it to H.264 MP4, or use a server video."));
    });
    page.turns = Math.floor(video.duration * page.ready.fps + EPS);
    video.currentTime = 0;
  }
  page.capturing = true;
  page.clockStart = null;
  video.requestVideoFrameCallback(onVideoFrame);
  video.onended = () => { if (page.source === "file") finishCapture(); };
  await video.play();
}

async function showServerVideo(path) {
  // A <video> cannot send the key, and the key never goes in a URL: the server grants a
  // short-lived token URL for this one file (POST /v1/media), served with range requests.
  const headers = { "Content-Type": "application/json" };
  if (apiKey()) headers.Authorization = `Bearer ${apiKey()}`;
  const response = await fetch("/v1/media", { method: "POST", headers, body: JSON.stringify({ path }) });
  if (!response.ok) throw new Error(`the server answered ${response.status}`);
  const { url } = await response.json();
  const video = $("video");
  video.srcObject = null;
  video.src = url;
  await video.play();
}

function followServerVideo(t) {
  // The server plays the source by the wall clock; the player follows its decisions, so the
  // picture on screen is the second just decided (re-aligned when it drifts by over a second).
  const video = $("video");
  if (!video.src || video.readyState < 1) return;
  if (Math.abs(video.currentTime - t) > 1) video.currentTime = t;
  if (video.paused && !video.ended && page.socket) video.play().catch(() => {});
}

function onVideoFrame(now, metadata) {
  if (!page.capturing) return;
  const video = $("video");
  const fps = page.ready.fps;
  // Files: the frame's own time; the camera: the wall clock since the first frame.
  let moment;
  if (page.source === "camera") {
    if (page.clockStart === null) page.clockStart = now;
    moment = (now - page.clockStart) / 1000;
  } else {
    moment = metadata.mediaTime;
  }
  let picture = null;
  while (page.nextTurn < page.turns && moment >= page.nextTurn / fps - EPS) {
    picture = picture || grab(video);
    sendFrame(picture, page.nextTurn / fps);
    page.nextTurn += 1;
  }
  if (page.nextTurn >= page.turns) {
    finishCapture();
    return;
  }
  video.requestVideoFrameCallback(onVideoFrame);
}

function grab(video) {
  const limit = page.ready.limits.max_frame_side;
  let width = video.videoWidth, height = video.videoHeight;
  if (Math.max(width, height) > limit) {
    const scale = limit / Math.max(width, height);
    width = Math.floor(width * scale);
    height = Math.floor(height * scale);
  }
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  canvas.getContext("2d").drawImage(video, 0, 0, width, height);
  // Lossless from a file (the same pixels each time); JPEG from the camera (smaller).
  const type = page.source === "camera" ? "image/jpeg" : "image/png";
  return new Promise((resolve) => canvas.toBlob((blob) => resolve(blob.arrayBuffer()), type, 0.9));
}

let sending = Promise.resolve();

function sendFrame(picture, t) {
  // Frames go out in turn order even though encoding is asynchronous.
  sending = sending.then(async () => {
    const bytes = await picture;
    if (!page.socket || page.socket.readyState !== WebSocket.OPEN) return;
    send({ type: "frame", t });
    page.socket.send(bytes);
  });
}

function finishCapture() {
  if (!page.capturing) return;
  page.capturing = false;
  sending.then(() => send({ type: "close" }));
}

function stopCapture() {
  page.capturing = false;
  const video = $("video");
  video.pause();
  if (page.cameraStream) {
    for (const track of page.cameraStream.getTracks()) track.stop();
    page.cameraStream = null;
  }
}

// ----------------------------------------------------------------------------- timeline

function resetTimeline() {
  page.events = [];
  page.cells = new Map();
  page.selected = -1;
  page.dropped = 0;
  page.latencies = [];
  page.decidedAt = [];
  page.lastTurn = -1;
  $("timeline").replaceChildren();
  $("answers").replaceChildren();
  $("detail").textContent = "Hover a cell, or focus the timeline and use the arrow keys.";
  updateStatus(null);
}

function rowFor(turn) {
  const fps = page.ready.fps;
  const perRow = Math.round(60 * fps);
  const index = Math.floor(turn / perRow);
  let row = document.getElementById(`minute-${index}`);
  if (!row) {
    row = document.createElement("div");
    row.className = "minute";
    row.id = `minute-${index}`;
    const label = document.createElement("span");
    label.className = "minute-label";
    label.textContent = `${Math.floor(index * perRow / fps / 60)}:00`;
    row.append(label);
    $("timeline").append(row);
  }
  return row;
}

function addCell(turn, state, title) {
  const cell = document.createElement("span");
  cell.className = `cell ${state}`;
  cell.textContent = state === "dropped" ? "×" : STATES[state];
  cell.dataset.turn = turn;
  cell.dataset.state = state;
  cell.title = title;
  cell.onmouseenter = () => select(turn);
  rowFor(turn).append(cell);
  page.cells.set(turn, cell);
  return cell;
}

function timeTag(turn) {
  const fps = page.ready.fps;
  const fmt = (x) => Number.isInteger(x) ? `${x}` : x.toFixed(2).replace(/0+$/, "").replace(/\.$/, "");
  return `${fmt(turn / fps)}s-${fmt((turn + 1) / fps)}s`;
}

function onEvent(event) {
  const timeline = $("timeline");
  const atBottom = timeline.scrollTop + timeline.clientHeight >= timeline.scrollHeight - 30;
  for (let turn = page.lastTurn + 1; turn < event.turn; turn++) {
    addCell(turn, "dropped", `${timeTag(turn)} · dropped (the model was busy)`);
  }
  page.lastTurn = event.turn;
  page.events.push(event);
  page.dropped += event.dropped;
  page.latencies.push(event.latency_ms);
  if (page.latencies.length > 200) page.latencies.shift();
  page.decidedAt.push(performance.now());
  const p = event.probabilities;
  const title = `${timeTag(event.turn)} · ${event.state} · P(silence) ${p.silence.toFixed(2)}, P(standby) ${p.standby.toFixed(2)}, ` +
    `P(response) ${p.response.toFixed(2)} · latency ${event.latency_ms.toFixed(0)} ms`;
  const cell = addCell(event.turn, event.state, title);
  for (const question of event.questions) {
    cell.classList.add("has-question");
    addAnswer(event.turn, question, "question");
  }
  if (event.state === "response") addAnswer(event.turn, event.text, "answer");
  if (atBottom) timeline.scrollTop = timeline.scrollHeight;
  if (page.source === "server" && !page.stopping) followServerVideo(event.t);
  if (page.stopping) showStopping();
  updateStatus(event);
  $("download-predictions").disabled = false;
  $("download-png").disabled = false;
}

function addAnswer(turn, text, kind) {
  const item = document.createElement("li");
  item.className = kind;
  item.dataset.turn = turn;
  const time = document.createElement("span");
  time.className = "time";
  time.textContent = `<${timeTag(turn)}>`;
  const body = document.createElement("span");
  body.textContent = kind === "question" ? `Q: ${text}` : text;
  item.append(time, body);
  $("answers").append(item);
  item.scrollIntoView({ block: "nearest" });
}

function updateStatus(event) {
  if (!event) {
    $("status").textContent = "decisions/s – · latency p95 – · waiting 0 · dropped 0 · window –";
    return;
  }
  const now = performance.now();
  const recent = page.decidedAt.filter((at) => now - at <= 10000);
  page.decidedAt = recent;
  const span = recent.length > 1 ? (recent[recent.length - 1] - recent[0]) / 1000 : 0;
  const rate = span > 0 ? ((recent.length - 1) / span).toFixed(2) : "–";
  const sorted = [...page.latencies].sort((a, b) => a - b);
  const p95 = sorted[Math.floor(0.95 * (sorted.length - 1))];
  const window = page.ready.window === null ? "whole stream" : `${page.ready.window} s`;
  $("status").textContent = `decisions/s ${rate} · latency p95 ${p95.toFixed(0)} ms · waiting ${event.waiting} · ` +
    `dropped ${page.dropped} · window ${window}`;
}

function select(turn) {
  const previous = page.cells.get(page.selected);
  if (previous) previous.classList.remove("selected");
  const cell = page.cells.get(turn);
  if (!cell) return;
  page.selected = turn;
  cell.classList.add("selected");
  $("detail").textContent = cell.title;
}

function onTimelineKey(key) {
  if (!page.cells.size) return;
  const turns = [...page.cells.keys()];
  const last = turns[turns.length - 1];
  const perRow = Math.round(60 * (page.ready ? page.ready.fps : 1));
  const moves = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -perRow, ArrowDown: perRow };
  let turn;
  if (key === "Home") turn = turns[0];
  else if (key === "End") turn = last;
  else if (key in moves) turn = page.selected < 0 ? last : page.selected + moves[key];
  else return false;
  turn = Math.max(turns[0], Math.min(last, turn));
  select(turn);
  page.cells.get(turn).scrollIntoView({ block: "nearest" });
  return true;
}

// ----------------------------------------------------------------------------- downloads

function download(blob, name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

function predictionsJsonl() {
  const raw = $("sample").value.trim();
  const sample = /^\d+$/.test(raw) ? Number(raw) : raw;
  return page.events.map((event) => JSON.stringify({
    sample, t: event.t, state: event.state, text: event.text, latency_ms: event.latency_ms,
  })).join("\n") + "\n";
}

function wrapText(ctx, parts, width) {
  // Lines that each fit `width` pixels in the context's font: whole parts joined by " · " where
  // they fit, a longer part broken at spaces, a longer word at any character.
  const fits = (text) => ctx.measureText(text).width <= width;
  const pieces = [];  // [text, index of its part]
  parts.forEach((part, index) => {
    if (fits(part)) return pieces.push([part, index]);
    for (const word of part.split(" ").filter(Boolean)) {
      let chunk = "";
      for (const character of word) {
        if (chunk && !fits(chunk + character)) { pieces.push([chunk, index]); chunk = ""; }
        chunk += character;
      }
      pieces.push([chunk, index]);
    }
  });
  const lines = [];
  let line = "", previous = -1;
  for (const [text, index] of pieces) {
    const joined = line ? line + (index === previous ? " " : " · ") + text : text;
    if (line && !fits(joined)) {
      lines.push(line);
      line = text;
    } else {
      line = joined;
    }
    previous = index;
  }
  if (line) lines.push(line);
  return lines;
}

const PNG_FONT = "12px sans-serif", PNG_LINE = 16, PNG_MARGIN = 4;

function timelinePng() {
  // The header (the model's description can be long) wraps onto as many lines as it needs.
  const fps = page.ready.fps;
  const perRow = Math.round(60 * fps);
  const cell = 14, gap = 1, left = 44;
  const rows = Math.floor(page.lastTurn / perRow) + 1;
  const canvas = document.createElement("canvas");
  canvas.width = left + perRow * (cell + gap) + 8;
  let ctx = canvas.getContext("2d");
  ctx.font = PNG_FONT;
  const header = wrapText(ctx, ["Streamo", page.ready.model, `${page.events.length} seconds`,
    "· silence  … standby  ! response  × dropped"], canvas.width - 2 * PNG_MARGIN);
  const top = header.length * PNG_LINE + 12;
  canvas.height = top + rows * (cell + 6) + 8;
  ctx = canvas.getContext("2d");  // resizing the canvas resets its state
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.font = PNG_FONT;
  ctx.fillStyle = "#000";
  header.forEach((line, index) => ctx.fillText(line, PNG_MARGIN, 16 + index * PNG_LINE));
  const colours = { silence: "#bbbbbb", standby: "#e69f00", response: "#0072b2", dropped: "#ffffff" };
  for (const [turn, element] of page.cells) {
    const state = element.dataset.state;
    const row = Math.floor(turn / perRow), column = turn % perRow;
    const x = left + column * (cell + gap), y = top + row * (cell + 6);
    ctx.fillStyle = colours[state];
    ctx.fillRect(x, y, cell, cell);
    ctx.fillStyle = state === "response" ? "#fff" : "#000";
    ctx.fillText(state === "dropped" ? "×" : STATES[state], x + 4, y + 11);
    if (column === 0) {
      ctx.fillStyle = "#555";
      ctx.fillText(`${Math.floor(turn / fps / 60)}:00`, 4, y + 11);
    }
  }
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

// ----------------------------------------------------------------------------- server sources

async function loadSources() {
  const headers = apiKey() ? { Authorization: `Bearer ${apiKey()}` } : {};
  let response;
  try {
    response = await fetch("/v1/sources", { headers });
  } catch (error) {
    showMessage(`Cannot reach the server: ${error.message}`);
    return;
  }
  if (response.status === 401) {
    showMessage(ERROR_HELP.unauthorized);
    return;
  }
  const { sources, samples } = await response.json();
  page.annotated = samples || [];
  const select = $("server-source");
  select.replaceChildren(...sources.map((name) => new Option(name, name)));
  showMessage(sources.length ? "" : "The server offers no videos (start it with --sources DIR).");
  nameSample();
}

function nameSample() {
  // The sample id for downloads, from the raw_data.json the server has beside its videos: the
  // one sample on the chosen video, or the one among several whose first question is the one asked.
  if (page.sampleTyped || page.socket) return;
  const note = $("sample-note");
  note.textContent = "";
  if (page.source !== "server") return;
  const path = $("server-source").value;
  const onVideo = page.annotated.filter((sample) => sample.source === path);
  if (!onVideo.length) return;
  const asked = page.queued[0] || $("question").value.trim();
  const matching = onVideo.length === 1 ? onVideo
    : onVideo.filter((sample) => asked && sample.questions[0] === asked);
  if (matching.length === 1) {
    $("sample").value = matching[0].sample;
    note.textContent = `from the server's raw_data.json: sample ${matching[0].sample} (${matching[0].task_type || "?"}) on ${path}`;
  } else {
    note.textContent = `${onVideo.length} samples in the server's raw_data.json are on ${path}` +
      ` (${onVideo.map((sample) => sample.sample).join(", ")}); type the question to pick one, or set the id`;
  }
}

// ----------------------------------------------------------------------------- wiring

function init() {
  $("key").value = sessionStorage.getItem("streamo-key") || "";
  for (const radio of document.querySelectorAll("input[name=source]")) {
    radio.onchange = () => {
      page.source = radio.value;
      nameSample();
      $("file-row").hidden = page.source !== "file";
      $("server-row").hidden = page.source !== "server";
    };
  }
  $("start").onclick = start;
  $("retry").onclick = start;
  $("stop").onclick = stop;
  $("load-sources").onclick = loadSources;
  $("server-source").onchange = nameSample;
  $("question").oninput = nameSample;
  $("sample").oninput = () => { page.sampleTyped = true; $("sample-note").textContent = ""; };
  $("ask-form").onsubmit = (submit) => {
    submit.preventDefault();
    const text = $("question").value.trim();
    if (!text) {
      showMessage("Type a question first, then press Ask.");
      $("question").focus();
      return;
    }
    showMessage("");
    $("question").value = "";
    if (!page.socket) {
      page.queued.push(text);
      nameSample();
      $("detail").textContent = `Question kept for the start (${page.queued.length}): it is shown with the first frame.`;
      return;
    }
    // In capture order: the question goes out before the next captured frame, after the earlier ones.
    sending = sending.then(() => send({ type: "ask", text }));
  };
  const applyThreshold = () => {
    const on = $("use-threshold").checked;
    $("threshold").disabled = !on || !page.socket;
    $("threshold-value").textContent = on ? Number($("threshold").value).toFixed(2) : "off";
    send({ type: "config", response_threshold: on ? Number($("threshold").value) : null });
  };
  $("use-threshold").onchange = applyThreshold;
  $("threshold").oninput = applyThreshold;
  $("threshold-value").textContent = "off";
  $("timeline").onkeydown = (key) => { if (onTimelineKey(key.key)) key.preventDefault(); };
  $("download-predictions").onclick = () => download(new Blob([predictionsJsonl()], { type: "application/jsonl" }), "predictions.jsonl");
  $("download-png").onclick = async () => download(await timelinePng(), "timeline.png");
  $("video").onerror = () => {
    if (page.source === "file" && $("video").src) {
      showMessage("This browser cannot play this video (its codec or container). Convert it to H.264 MP4, or use a server video.");
    }
  };
  setRunning(false);
}

document.addEventListener("DOMContentLoaded", init);
