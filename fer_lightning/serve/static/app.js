// fer-serve's page: plain JavaScript, no libraries. A photo (dropped or chosen) or webcam frames go to
// POST /api/predict; each face comes back with its box, emotion and probabilities (and a heat map).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, stream: null, live: false, photoUrl: null, streamId: null, started: 0, history: [] };
const PLOT_SECONDS = 10; // the live plot shows the last seconds of the largest face's smoothed probabilities

function setStatus(text) {
  $("status").textContent = text;
}

function showError(text) {
  $("error").textContent = text || "";
  $("error").hidden = !text;
}

function percent(p) {
  return `${Math.round(p * 100)}%`;
}

async function loadInfo() {
  try {
    const response = await fetch("/api/info");
    state.info = await response.json();
    const heat = state.info.explain ? `heat maps: ${state.info.explain}` : "no heat maps";
    $("model-info").textContent = `model ${state.info.model}, ${state.info.class_names.length} classes, ${heat}`;
    if (!state.info.explain) {
      $("explain").checked = false;
      $("explain").disabled = true;
    }
  } catch (err) {
    $("model-info").textContent = "the server cannot be reached";
  }
}

async function postImage(body, name, time) {
  const explain = $("explain").checked && time === undefined ? "true" : "false";
  let url = `/api/predict?explain=${explain}&name=${encodeURIComponent(name)}`;
  // A webcam frame: the server tracks the faces of this stream and smooths each person's probabilities.
  if (time !== undefined) url += `&stream=${state.streamId}&time=${time.toFixed(3)}`;
  const response = await fetch(url, { method: "POST", body });
  let data = null;
  try {
    data = await response.json();
  } catch (err) {
    data = { error: `the server answered ${response.status} ${response.statusText}` };
  }
  return { ok: response.ok, status: response.status, data };
}

function clearResults() {
  $("boxes").replaceChildren();
  $("faces").replaceChildren();
}

function drawBoxes(records, width, height) {
  const layer = $("boxes");
  records.forEach((record) => {
    const [x, y, w, h] = record.box;
    const box = document.createElement("div");
    box.className = "face-box";
    box.style.left = `${(100 * x) / width}%`;
    box.style.top = `${(100 * y) / height}%`;
    box.style.width = `${(100 * w) / width}%`;
    box.style.height = `${(100 * h) / height}%`;
    const label = document.createElement("span");
    label.className = "face-label";
    label.textContent = shownLabel(record);
    box.append(label);
    layer.append(box);
  });
}

function shownEmotion(record) {
  // A tracked webcam face shows its smoothed emotion and probabilities, a photo its own.
  return record.track_id == null
    ? [record.emotion, record.confidence, record.probs]
    : [record.smoothed_emotion, record.smoothed_probs[record.smoothed_emotion], record.smoothed_probs];
}

function shownLabel(record) {
  const [emotion, confidence] = shownEmotion(record);
  const who = record.track_id == null ? "" : `#${record.track_id} `;
  return `${who}${emotion} ${percent(confidence)}`;
}

function plotHistory(records, time) {
  // The largest face (records come largest first): its smoothed probabilities over the last PLOT_SECONDS.
  const face = records.find((record) => record.track_id != null);
  if (face) state.history.push({ time, track: face.track_id, probs: face.smoothed_probs });
  state.history = state.history.filter((point) => point.time >= time - PLOT_SECONDS);
  const canvas = $("plot");
  canvas.hidden = false;
  const ctx = canvas.getContext("2d");
  const width = canvas.width;
  const height = canvas.height;
  ctx.clearRect(0, 0, width, height);
  const points = face ? state.history.filter((point) => point.track === face.track_id) : [];
  const names = state.info ? state.info.class_names : face ? Object.keys(face.smoothed_probs) : [];
  const colours = ["#d62728", "#8c564b", "#9467bd", "#2ca02c", "#1f77b4", "#ff7f0e", "#7f7f7f", "#e377c2"];
  names.forEach((name, i) => {
    ctx.strokeStyle = colours[i % colours.length];
    ctx.beginPath();
    points.forEach((point, k) => {
      const x = width - ((time - point.time) / PLOT_SECONDS) * width;
      const y = height - point.probs[name] * (height - 14);
      if (k === 0) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    });
    ctx.stroke();
    ctx.fillStyle = colours[i % colours.length];
    ctx.fillText(name, 4 + i * (width / names.length), 10);
  });
  canvas.dataset.points = String(points.length);
  canvas.dataset.track = face ? String(face.track_id) : "";
}

function faceCard(record, explanation) {
  const card = document.createElement("article");
  card.className = "face-card";
  const title = document.createElement("h2");
  const [emotion, confidence, probs] = shownEmotion(record);
  const who = record.track_id == null ? `Face ${record.face + 1}` : `Person #${record.track_id}`;
  title.textContent = `${who}: ${emotion} (${percent(confidence)})`;
  card.append(title);
  if (explanation) {
    const heat = document.createElement("img");
    heat.className = "heatmap";
    heat.src = explanation.image;
    heat.alt = `heat map of face ${record.face + 1} for ${record.emotion}`;
    const note = document.createElement("p");
    note.className = "heatmap-note";
    note.textContent = `what drove "${record.emotion}" (${explanation.method}; red: the most)`;
    card.append(heat, note);
  }
  Object.entries(probs).forEach(([name, p]) => {
    const row = document.createElement("div");
    row.className = name === emotion ? "bar-row top" : "bar-row";
    const label = document.createElement("span");
    label.className = "bar-name";
    label.textContent = name;
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("div");
    fill.className = "bar-fill";
    fill.style.width = percent(p);
    bar.append(fill);
    const value = document.createElement("span");
    value.className = "bar-value";
    value.textContent = percent(p);
    row.append(label, bar, value);
    card.append(row);
  });
  return card;
}

function render(result, live, time) {
  clearResults();
  const data = result.data || {};
  if (live) plotHistory(result.ok ? data.records : [], time);
  if (!result.ok) {
    if (data.code === "no_face") {
      showError(live ? "" : `${data.error}: try a photo with a frontal face.`);
      setStatus(live ? "No face in view." : "");
    } else {
      showError(data.error || `the server answered ${result.status}`);
      setStatus("");
    }
    return;
  }
  showError("");
  drawBoxes(data.records, data.width, data.height);
  const explanations = new Map((data.explanations || []).map((e) => [e.face, e]));
  data.records.forEach((record) => $("faces").append(faceCard(record, explanations.get(record.face))));
  const n = data.records.length;
  setStatus(`${n} face${n === 1 ? "" : "s"} found${live ? "" : ` in ${data.source}`}.`);
}

async function analyseFile(file) {
  if (!file) return;
  stopWebcam();
  clearResults();
  showError("");
  const limit = state.info ? state.info.max_upload_bytes : Infinity;
  if (file.size > limit) {
    showError(`${file.name} is ${(file.size / 2 ** 20).toFixed(1)} MB: the limit is ${limit / 2 ** 20} MB.`);
    return;
  }
  if (state.photoUrl) URL.revokeObjectURL(state.photoUrl);
  state.photoUrl = URL.createObjectURL(file);
  $("photo").src = state.photoUrl;
  $("photo").hidden = false;
  $("video").hidden = true;
  $("stage").hidden = false;
  setStatus(`Analysing ${file.name}\u2026`);
  const form = new FormData();
  form.append("image", file, file.name);
  try {
    render(await postImage(form, file.name), false);
  } catch (err) {
    showError(`The upload failed: ${err.message}`);
    setStatus("");
  }
}

async function startWebcam() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError("This browser gives no webcam access here (it needs https or localhost).");
    return;
  }
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (err) {
    showError(`Cannot open the webcam: ${err.message}`);
    return;
  }
  showError("");
  clearResults();
  const video = $("video");
  video.srcObject = state.stream;
  video.hidden = false;
  $("photo").hidden = true;
  $("stage").hidden = false;
  state.live = true;
  state.streamId = `cam${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
  state.started = performance.now();
  state.history = [];
  $("webcam").textContent = "Stop webcam";
  $("webcam").classList.add("live");
  setStatus("Webcam on.");
  webcamLoop();
}

function stopWebcam() {
  if (!state.stream) return;
  state.live = false;
  state.stream.getTracks().forEach((track) => track.stop());
  state.stream = null;
  $("plot").hidden = true;
  $("video").srcObject = null;
  $("webcam").textContent = "Start webcam";
  $("webcam").classList.remove("live");
  setStatus("Webcam off.");
}

async function webcamLoop() {
  // One frame in flight at a time: the next is sent when the answer to the last has been drawn.
  const video = $("video");
  const canvas = document.createElement("canvas");
  while (state.live) {
    if (video.readyState < 2 || video.videoWidth === 0) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      continue;
    }
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    const frame = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.85));
    try {
      const time = (performance.now() - state.started) / 1000;
      const result = await postImage(frame, "webcam", time);
      if (state.live) render(result, true, time);
    } catch (err) {
      showError(`The server cannot be reached: ${err.message}`);
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
}

function setUp() {
  $("file").addEventListener("change", (event) => analyseFile(event.target.files[0]));
  $("webcam").addEventListener("click", () => (state.live ? stopWebcam() : startWebcam()));
  const drop = $("drop");
  ["dragenter", "dragover"].forEach((type) =>
    drop.addEventListener(type, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    }),
  );
  ["dragleave", "drop"].forEach((type) => drop.addEventListener(type, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    analyseFile(event.dataTransfer.files[0]);
  });
  loadInfo();
}

setUp();
