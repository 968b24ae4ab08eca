// Streamo label mode: annotate one's own video in the raw format (docs/data.md) that
// `streamo convert --strict` reads, import a raw file to review or edit it, and overlay a
// predictions JSONL on the truth second by second. Everything stays in the page.
"use strict";

const $ = (id) => document.getElementById(id);
const EPS = 1e-9;
const FPS = 1;  // the raw format's rules at streamo convert's default rate
const KNOWN = ["video_name", "video_path", "source", "task_type", "question", "response", "duration"];
const SIGNS = { silence: "·", standby: "…", response: "!" };
const COLUMN_NAMES = { time: "time", st_time: "start", end_time: "end" };  // the table header's words

const label = {
  samples: [],       // raw samples, as exported
  current: 0,
  pendingStart: null,
  predictions: null, // rows of the loaded predictions JSONL
  videoName: "",
};

function showMessage(text) {
  $("message").textContent = text;
  $("message").hidden = !text;
}

function newSample() {
  const name = label.videoName || "clip.mp4";
  return {
    video_name: name, video_path: `videos/${name}`, source: $("source-name").value.trim() || "my-videos",
    task_type: $("task-type").value.trim() || "Narration", question: [], response: [],
    duration: roundTenth($("video").duration) || "",
  };
}

function sample() {
  if (!label.samples.length) label.samples.push(newSample());
  return label.samples[label.current];
}

function roundTenth(seconds) {
  return Number.isFinite(seconds) ? Math.round(seconds * 10) / 10 : null;
}

function now() {
  return roundTenth($("video").currentTime) || 0;
}

function number(text) {
  const value = String(text).trim();
  return value === "" ? "" : Number(value);
}

// ----------------------------------------------------------------------------- marking

function addQuestion() {
  const item = { content: "", time: Math.max(now(), 0) };
  sample().question.push(item);
  render(item);
}

function markStart() {
  label.pendingStart = now();
  showMessage(`An event started at ${label.pendingStart} s: press E where it ends.`);
}

function markEnd() {
  if (label.pendingStart === null) {
    showMessage("Press S where the event starts first (or A for an instant answer).");
    return;
  }
  const end = now();
  if (end < label.pendingStart) {
    showMessage(`The end (${end} s) is before the start (${label.pendingStart} s): move forward and press E again.`);
    return;
  }
  const item = { content: "", st_time: label.pendingStart, end_time: end, time: "" };
  label.pendingStart = null;
  showMessage("");
  sample().response.push(item);
  render(item);
}

function addInstant() {
  const item = { content: "", st_time: "", end_time: "", time: now() };
  sample().response.push(item);
  render(item);
}

// Fields that take typed keys; on any other element (the player, a file chooser, a button) the
// marking keys work, and Space and Enter still press a focused button.
const TYPING = "input:not([type=file], [type=checkbox], [type=radio], [type=button]), select, textarea, [contenteditable]";

function onKey(event) {
  const target = event.target;
  if (target.matches(TYPING) || event.ctrlKey || event.metaKey || event.altKey) return;
  if (target.matches("button") && (event.key === " " || event.key === "Enter")) return;
  const video = $("video");
  if (target === video && event.key === " ") return;  // the focused player plays or pauses itself (on key up)
  const actions = {
    q: addQuestion, s: markStart, e: markEnd, a: addInstant,
    " ": () => (video.paused ? video.play() : video.pause()),
    ArrowLeft: () => { video.currentTime = Math.max(0, video.currentTime - 1); },
    ArrowRight: () => { video.currentTime = video.currentTime + 1; },
  };
  const action = actions[event.key.length === 1 ? event.key.toLowerCase() : event.key];
  if (!action) return;
  event.preventDefault();
  action();
}

// ----------------------------------------------------------------------------- the table

function render(focusItem) {
  const current = sample();
  $("sample-select").replaceChildren(...label.samples.map((raw, index) =>
    new Option(`${index}: ${raw.task_type || "?"} · ${raw.video_name || raw.video_path}`, index)));
  $("sample-select").value = label.current;
  $("video-path").value = current.video_path;
  $("task-type").value = current.task_type || "";
  $("source-name").value = current.source || "";
  $("duration").value = current.duration;
  const rows = [
    ...current.question.map((item) => ["question", item]),
    ...current.response.map((item) => ["answer", item]),
  ].sort((a, b) => at(a[1]) - at(b[1]));
  const body = $("items").tBodies[0];
  body.replaceChildren();
  for (const [kind, item] of rows) {
    const row = body.insertRow();
    row.className = kind;
    row.insertCell().textContent = kind === "question" ? "question" : (item.st_time !== "" ? "event" : "instant");
    for (const field of ["time", "st_time", "end_time"]) {
      const cell = row.insertCell();
      cell.dataset.label = COLUMN_NAMES[field];  // shown beside the box where the table header is hidden
      if (kind === "question" && field !== "time") continue;
      const input = document.createElement("input");
      input.type = "number";
      input.min = "0";
      input.step = "0.1";
      input.className = `f-${field}`;
      input.value = item[field];
      input.setAttribute("aria-label", `${kind} ${field}`);
      input.onchange = () => { item[field] = number(input.value); showSameSecond(); renderReview(); };
      cell.append(input);
    }
    const text = document.createElement("input");
    text.type = "text";
    text.className = "content";
    text.value = item.content;
    text.placeholder = kind === "question" ? "the question asked here" : "the answer given here";
    text.setAttribute("aria-label", `${kind} text`);
    text.oninput = () => { item.content = text.value; };
    // Enter hands the keys back to marking (the page, not the player: Enter there would play).
    text.onkeydown = (key) => { if (key.key === "Enter") { key.preventDefault(); text.blur(); } };
    row.insertCell().append(text);
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Delete";
    remove.onclick = () => {
      const list = kind === "question" ? current.question : current.response;
      list.splice(list.indexOf(item), 1);
      render();
    };
    row.insertCell().append(remove);
    if (item === focusItem) text.focus();
  }
  showSameSecond();
  renderReview();
}

function showSameSecond() {
  const shared = sameSecondWarning(sample());
  $("items-warning").textContent = shared
    ? `${shared}: streamo convert joins them into one answer. Move one to another second if they are separate answers.`
    : "";
  $("items-warning").hidden = !shared;
}

function at(item) {
  for (const value of [item.time, item.end_time, item.st_time]) if (value !== "" && value !== undefined) return value;
  return 0;
}

// ----------------------------------------------------------------------------- import and export

function exported(raw, index) {
  const problems = [];
  const where = `sample ${index}`;
  if (!String(raw.video_path || "").trim()) problems.push(`${where}: video_path is empty`);
  if (!(raw.duration > 0)) problems.push(`${where}: duration must be a positive number of seconds`);
  raw.question.forEach((item, i) => {
    if (!item.content.trim()) problems.push(`${where}: question[${i}] has no text`);
  });
  raw.response.forEach((item, i) => {
    if (!item.content.trim()) problems.push(`${where}: response[${i}] has no text`);
    const interval = item.st_time !== "" || item.end_time !== "";
    if (interval && (item.st_time === "" || item.end_time === "")) problems.push(`${where}: response[${i}] needs both start and end`);
    if (interval && item.end_time < item.st_time) problems.push(`${where}: response[${i}] ends before it starts`);
    if (!interval && item.time === "") problems.push(`${where}: response[${i}] has no time`);
  });
  const out = {};
  for (const key of KNOWN) out[key] = raw[key];
  out.question = raw.question.map((item) => ({ ...item, content: item.content.trim() }));
  out.response = raw.response.map((item) => ({ ...item, content: item.content.trim() }));
  for (const [key, value] of Object.entries(raw)) if (!(key in out)) out[key] = value;
  return { out, problems };
}

function exportRaw() {
  const results = label.samples.map(exported);
  const problems = results.flatMap((result) => result.problems);
  if (!label.samples.length || problems.length) {
    showMessage(problems.length ? `Not exported: ${problems.join("; ")}.` : "Nothing to export yet.");
    return;
  }
  showMessage("");
  const text = JSON.stringify(results.map((result) => result.out), null, 2) + "\n";
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], { type: "application/json" }));
  link.download = "raw_data.json";
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

function blank(value) {
  return value === null || value === undefined ? "" : value;
}

async function importRaw(file) {
  let data;
  try {
    data = JSON.parse(await file.text());
  } catch (error) {
    showMessage(`${file.name}: not JSON (${error.message}).`);
    return;
  }
  if (!Array.isArray(data) || data.some((raw) => typeof raw !== "object" || raw === null || Array.isArray(raw))) {
    showMessage(`${file.name}: expected a list of raw samples (objects).`);
    return;
  }
  label.samples = data.map((raw) => ({
    ...raw,
    video_name: blank(raw.video_name), video_path: blank(raw.video_path), source: blank(raw.source),
    task_type: blank(raw.task_type), duration: blank(raw.duration),
    question: (raw.question || []).map((item) => ({ ...item, content: blank(item.content), time: blank(item.time) })),
    response: (raw.response || []).map((item) => ({
      ...item, content: blank(item.content), st_time: blank(item.st_time), end_time: blank(item.end_time), time: blank(item.time),
    })),
  }));
  label.current = 0;
  showMessage(`${file.name}: ${data.length} sample${data.length === 1 ? "" : "s"} imported.`);
  render();
}

// ----------------------------------------------------------------------------- review

function turnOf(moment) {
  return Math.max(Math.ceil(moment * FPS - EPS) - 1, 0);
}

function answerTurns(raw, turns) {
  // streamo convert's rules (streamo/convert.py): an event's answer the turn after its end's, an
  // instant answer at its turn; answers beyond the last turn are left out. Turn -> response indices.
  const placed = new Map();
  raw.response.forEach((item, index) => {
    let answer;
    if (item.st_time !== "" && item.end_time !== "") {
      if (item.end_time < item.st_time) return;
      answer = turnOf(item.end_time) + 1;
    } else if (item.time !== "") {
      answer = turnOf(item.time);
    } else return;
    if (answer >= turns) return;
    placed.set(answer, [...(placed.get(answer) || []), index]);
  });
  return placed;
}

function turnCount(raw) {
  return Math.max(Math.floor(Number(raw.duration) * FPS + EPS), 0) || 0;
}

function truthStates(raw) {
  // Standby from an event's start turn through its end's; Response beats Standby.
  const turns = turnCount(raw);
  const states = new Array(turns).fill("silence");
  for (const item of raw.response) {
    if (item.st_time === "" || item.end_time === "" || item.end_time < item.st_time) continue;
    if (turnOf(item.end_time) + 1 >= turns) continue;
    for (let turn = turnOf(item.st_time); turn <= turnOf(item.end_time); turn++) {
      if (states[turn] === "silence") states[turn] = "standby";
    }
  }
  for (const turn of answerTurns(raw, turns).keys()) states[turn] = "response";
  return states;
}

function sameSecondWarning(raw) {
  // streamo convert joins answers that land in one second into one answer (with a warning): say so here.
  const shared = [...answerTurns(raw, turnCount(raw) || Infinity)].filter(([, indices]) => indices.length > 1)
    .sort((a, b) => a[0] - b[0]);
  return shared.map(([turn, indices]) => `${indices.map((index) => `response[${index}]`).join(" and ")} ` +
    `answer in the same second (${turn}s-${turn + 1}s)`).join("; ");
}

function predictionRows(index) {
  const raw = label.samples[index];
  return label.predictions.filter((row) => (row.sample === undefined && label.samples.length === 1) ||
    row.sample === index || (raw.id !== undefined && row.sample === raw.id));
}

function predictedStates(rows, turns) {
  const states = new Array(turns).fill(null);
  for (const row of rows) {
    const turn = Math.floor(Number(row.t) * FPS + EPS);
    if (turn >= 0 && turn < turns) states[turn] = row.state;
  }
  return states;
}

function unmatched(rows, turns) {
  // Why predictions cannot be compared with this sample, or "" when they can.
  const raw = sample();
  const id = raw.id !== undefined ? raw.id : label.current;
  if (!rows.length) {
    const others = [...new Set(label.predictions.map((row) => row.sample === undefined ? "(none given)" : JSON.stringify(row.sample)))];
    if (!others.length) return "The predictions file has no rows.";
    return `No predictions for sample ${id}: the file has predictions for sample ${others.join(", ")} only. ` +
      "Pick that sample, or download the predictions again with this sample's id.";
  }
  const last = Math.max(...rows.map((row) => Math.floor(Number(row.t) * FPS + EPS)));
  if (last >= turns) {
    return `The predictions for sample ${id} run to ${last + 1} s, but the sample is ${turns} s long: ` +
      "they are not for this sample's video.";
  }
  return "";
}

function renderReview() {
  const box = $("review");
  box.replaceChildren();
  if (!label.predictions || !label.samples.length) return;
  const truth = truthStates(sample());
  const rows = predictionRows(label.current);
  const problem = unmatched(rows, truth.length);
  if (problem) {
    $("review-summary").textContent = problem;
    return;
  }
  const predicted = predictedStates(rows, truth.length);
  const mismatches = [];
  const rowOf = (name, states) => {
    const row = document.createElement("div");
    row.className = `review-row ${name}`;
    const title = document.createElement("span");
    title.className = "minute-label";
    title.textContent = name;
    row.append(title);
    states.forEach((state, turn) => {
      const cell = document.createElement("span");
      cell.className = `cell ${state || "dropped"}`;
      cell.textContent = state ? SIGNS[state] : "×";
      cell.dataset.turn = turn;
      cell.dataset.state = state || "none";
      cell.title = `${turn}s-${turn + 1}s · ${name}: ${state || "no prediction"} · truth: ${truth[turn]}`;
      if (state !== truth[turn]) cell.classList.add("mismatch");
      row.append(cell);
    });
    return row;
  };
  truth.forEach((state, turn) => { if (predicted[turn] !== state) mismatches.push(turn); });
  box.append(rowOf("truth", truth), rowOf("predicted", predicted));
  $("review-summary").textContent = mismatches.length
    ? `${mismatches.length} of ${truth.length} seconds differ: ${mismatches.map((turn) => `${turn}s-${turn + 1}s`).join(", ")}.`
    : `All ${truth.length} seconds agree.`;
}

async function loadPredictions(file) {
  const rows = [];
  const lines = (await file.text()).split("\n");
  for (const [number, line] of lines.entries()) {
    if (!line.trim()) continue;
    try {
      rows.push(JSON.parse(line));
    } catch (error) {
      showMessage(`${file.name}: line ${number + 1} is not JSON (${error.message}).`);
      return;
    }
  }
  label.predictions = rows;
  showMessage("");
  renderReview();
}

// ----------------------------------------------------------------------------- wiring

function init() {
  const video = $("video");
  $("file").onchange = () => {
    const file = $("file").files[0];
    if (!file) return;
    label.videoName = file.name;
    video.src = URL.createObjectURL(file);
    video.focus();  // the keys mark the video at once (Space on the chooser would reopen it)
  };
  video.onloadedmetadata = () => {
    const raw = sample();
    if (raw.duration === "" || raw.duration === null) raw.duration = roundTenth(video.duration);
    if (!raw.question.length && !raw.response.length && label.videoName) {
      raw.video_name = label.videoName;
      raw.video_path = `videos/${label.videoName}`;
    }
    render();
  };
  video.onerror = () => showMessage("This browser cannot play this video (its codec or container). Convert it to H.264 MP4.");
  video.ontimeupdate = () => { $("clock").textContent = `${now().toFixed(1)} s (turn ${turnOf(now())}s-${turnOf(now()) + 1}s)`; };
  document.addEventListener("keydown", onKey);
  $("sample-select").onchange = () => { label.current = Number($("sample-select").value); label.pendingStart = null; render(); };
  $("new-sample").onclick = () => { label.samples.push(newSample()); label.current = label.samples.length - 1; render(); };
  $("delete-sample").onclick = () => {
    label.samples.splice(label.current, 1);
    label.current = Math.max(0, Math.min(label.current, label.samples.length - 1));
    render();
  };
  const field = (id, key, parse = (value) => value) => {
    $(id).onchange = () => { sample()[key] = parse($(id).value); render(); };
  };
  field("video-path", "video_path", (value) => value.trim());
  field("task-type", "task_type", (value) => value.trim());
  field("source-name", "source", (value) => value.trim());
  field("duration", "duration", number);
  $("import").onchange = () => { if ($("import").files[0]) importRaw($("import").files[0]); };
  $("predictions").onchange = () => { if ($("predictions").files[0]) loadPredictions($("predictions").files[0]); };
  $("export").onclick = exportRaw;
  render();
}

document.addEventListener("DOMContentLoaded", init);
