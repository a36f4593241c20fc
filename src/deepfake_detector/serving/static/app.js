// The page talks to the same REST API as every other client and shows what it answers: no build
// step, no framework. Everything taken from a response is set as text, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "deepfake-detector-api-key";
let model = null; // GET /v1/model, for the model line
// The domains a checkpoint's domain probe tells apart, as the page words them (others as named).
const DOMAIN_NAMES = { face: "face", general: "general image" };

function apiHeaders() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { "X-API-Key": key } : {};
}

async function callApi(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...apiHeaders(), ...(options.headers || {}) } });
  const isJson = (response.headers.get("content-type") || "").includes("application/json");
  const body = isJson ? await response.json() : null;
  if (!response.ok) {
    const error = body && body.error ? body.error : { code: `http_${response.status}`, message: response.statusText };
    if (error.code === "missing_api_key" || error.code === "invalid_api_key") $("key-panel").hidden = false;
    throw Object.assign(new Error(error.message), { code: error.code, status: response.status });
  }
  return body;
}

async function loadModel() {
  try {
    model = await callApi("/v1/model");
    const revision = model.revision ? ` @ ${model.revision.slice(0, 12)}` : "";
    const labels = Object.values(model.id2label).join(" / ");
    const weights = model.weights_sha256 ? `weights ${model.weights_sha256.slice(0, 12)}…` : "ONNX weights";
    $("model-line").textContent = `Model ${model.model}${revision} (${labels}), ${weights}, package ${model.version}`;
    const faces = Boolean(model.features && model.features.faces);
    $("find-faces").disabled = !faces;
    $("find-faces").checked = faces;
    $("find-faces").parentElement.title = faces ? "" : "face detection is not installed on this server";
  } catch (error) {
    $("model-line").textContent = `Model description unavailable: ${error.message}`;
  }
}

function showStatus(text) {
  $("result").hidden = false;
  $("status").textContent = text;
}

function showError(error) {
  $("error").hidden = false;
  $("error").textContent = error.code ? `${error.message} (${error.code})` : error.message;
  $("verdict").dataset.state = "error";
}

function resetResult() {
  for (const id of ["error", "answer", "preview-figure", "heatmap-figure", "timeline", "video-preview"]) {
    $(id).hidden = true;
  }
  $("preview").hidden = false;
  $("faces").replaceChildren();
  $("timeline-chart").replaceChildren();
  $("provenance").hidden = true;
  $("provenance-evidence").replaceChildren();
  $("verdict").textContent = "";
  $("verdict").dataset.state = "pending";
  $("verdict").removeAttribute("data-verdict");
  $("verdict").removeAttribute("data-fake-score");
  $("score-text").removeAttribute("data-rule-domain");
  $("domain-text").textContent = "";
  $("domain-text").removeAttribute("data-domain");
  $("domain-text").removeAttribute("data-detector");
}

// A score or threshold as people read it: 3 significant digits, the rule of the package's
// format_number (the JSON keeps full precision).
const threeDigits = (value) => String(Number(value.toPrecision(3)));

// The rule that decided a result, as the record itself says (``threshold``, ``uncertain_from``,
// ``threshold_from``): the page never re-derives it. ``whose`` words whose threshold it is ("model's
// video", "general images'"), empty for the model's one image rule; ``domain`` is set for a domain's
// image rule. Null without a threshold.
const WHOSE = { video: "model's video", caller: "server's own" };
function ruleOf(record) {
  if (typeof record.threshold !== "number") return null;
  const real = typeof record.uncertain_from === "number" ? record.uncertain_from : record.threshold;
  const domain = record.threshold_from === "image" && record.domain ? record.domain : null;
  const whose = WHOSE[record.threshold_from] || (domain ? `${DOMAIN_NAMES[domain] || domain}s'` : "");
  return { thresholds: { real, fake: record.threshold }, domain, whose };
}

function describeRule(rule) {
  const { real, fake } = rule.thresholds;
  const text =
    real === fake
      ? `fake at or above ${threeDigits(fake)}`
      : `real below ${threeDigits(real)}, fake at or above ${threeDigits(fake)}`;
  if (!rule.whose) return text;
  return `${text}, ${rule.domain ? "" : "the "}${rule.whose} threshold`;
}

function showVerdict(record) {
  const verdict = $("verdict");
  verdict.textContent = record.verdict.toUpperCase();
  verdict.className = `verdict-${record.verdict}`;
  verdict.dataset.verdict = record.verdict;
  verdict.dataset.fakeScore = String(record.fake_score);
  const rule = ruleOf(record);
  $("score-text").textContent = `Fake score ${threeDigits(record.fake_score)}` + (rule ? ` (${describeRule(rule)})` : "");
  $("score-text").dataset.ruleDomain = rule && rule.domain ? rule.domain : "";
  showDomain(record);
  $("score-fill").style.width = `${(record.fake_score * 100).toFixed(1)}%`;
  $("score-fill").className = `fill-${record.verdict}`;
  if (rule) {
    const { real, fake } = rule.thresholds;
    const whose = rule.whose ? ` (${rule.whose} threshold)` : "";
    $("threshold-real").style.left = `${real * 100}%`;
    $("threshold-fake").style.left = `${fake * 100}%`;
    $("threshold-real").hidden = real === fake;
    $("threshold-real").title = `real below ${threeDigits(real)}${whose}`;
    $("threshold-fake").title = `fake at or above ${threeDigits(fake)}${whose}`;
  }
  showProvenance(record);
  $("answer").hidden = false;
  verdict.dataset.state = "done";
}

// What the model saw (the domain its probe chose) and which head scored it; a checkpoint without a
// domain probe scores everything with one head and says so.
function showDomain(record) {
  const line = $("domain-text");
  line.dataset.domain = record.domain || "";
  line.dataset.detector = record.detector || "";
  const detector = record.detector ? ` (${record.detector})` : "";
  line.textContent = record.domain
    ? `Judged as: ${DOMAIN_NAMES[record.domain] || record.domain}${detector}`
    : `Judged as: no domain${detector}; this model can't tell faces from general images, one head scores all`;
}

function describeFrameDomains(frames) {
  const counts = new Map();
  for (const frame of frames) if (frame.domain) counts.set(frame.domain, (counts.get(frame.domain) || 0) + 1);
  const parts = [...counts].map(([domain, count]) => `${DOMAIN_NAMES[domain] || domain} in ${count}`);
  return parts.length ? `; judged as ${parts.join(", ")} frames` : "";
}

// What the file declares about its origin (C2PA, metadata, watermark), beside the model's score.
// Evidence is the uploader's own text: it goes in as textContent, never as markup.
function showProvenance(record) {
  const provenance = record.provenance;
  if (!provenance) return;
  const box = $("provenance");
  box.dataset.aiDeclared = String(provenance.ai_declared);
  box.dataset.decidedBy = record.decided_by || "";
  const c2pa = provenance.c2pa ? ` C2PA manifest: ${provenance.c2pa.state}.` : "";
  $("provenance-summary").textContent =
    (record.decided_by === "provenance"
      ? "Verdict set by provenance: the file declares AI generation (a valid C2PA manifest or the Stable Diffusion watermark); the model's score is shown as it is."
      : provenance.evidence.length
        ? "Evidence shown for information; metadata never changes the verdict."
        : `Nothing found (checked: ${provenance.checks.join(", ") || "none"}).`) + c2pa;
  for (const finding of provenance.evidence) {
    const item = document.createElement("li");
    item.className = `finding finding-${finding.check}`;
    item.textContent = `${finding.check} · ${finding.name}: ${finding.detail}`;
    $("provenance-evidence").append(item);
  }
  box.hidden = false;
}

// Face boxes, when the API returns them: [{box: [x0, y0, x1, y1], fake_score, verdict}] in image pixels.
function showFaces(record) {
  const faces = Array.isArray(record.faces) ? record.faces : [];
  const image = $("preview");
  const draw = () => {
    $("faces").replaceChildren();
    const scaleX = image.clientWidth / image.naturalWidth;
    const scaleY = image.clientHeight / image.naturalHeight;
    for (const face of faces) {
      const box = face.box || face.bbox;
      if (!Array.isArray(box) || box.length !== 4) continue;
      const div = document.createElement("div");
      div.className = `face face-${face.verdict || "unknown"}`;
      div.style.left = `${box[0] * scaleX}px`;
      div.style.top = `${box[1] * scaleY}px`;
      div.style.width = `${(box[2] - box[0]) * scaleX}px`;
      div.style.height = `${(box[3] - box[1]) * scaleY}px`;
      if (typeof face.fake_score === "number") div.textContent = threeDigits(face.fake_score);
      $("faces").append(div);
    }
  };
  if (faces.length) (image.complete ? draw() : image.addEventListener("load", draw, { once: true }));
}

function describeFaces(record) {
  if (!Array.isArray(record.faces)) return "";
  if (record.faces.length === 0) return "; no face found, so the whole image was scored";
  return `; ${record.faces.length} face${record.faces.length > 1 ? "s" : ""} found, the most-fake one decides`;
}

// A per-frame timeline, when the video API returns one: [{timestamp_s, fake_score, domain}]; the dashed
// line is the fake threshold that decided the clip (the model's video threshold, where it has one).
function showTimeline(record) {
  const frames = record.frames;
  if (!Array.isArray(frames) || frames.length === 0) return;
  const svg = $("timeline-chart");
  const ns = "http://www.w3.org/2000/svg";
  const end = Math.max(...frames.map((frame) => frame.timestamp_s), 1e-6);
  const points = frames.map((frame) => `${(frame.timestamp_s / end) * 600},${120 - frame.fake_score * 120}`);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points.join(" "));
  line.setAttribute("class", "timeline-line");
  svg.replaceChildren(line);
  const rule = ruleOf(record);
  if (rule) {
    const threshold = document.createElementNS(ns, "line");
    const y = 120 - rule.thresholds.fake * 120;
    for (const [name, value] of [["x1", 0], ["x2", 600], ["y1", y], ["y2", y]]) threshold.setAttribute(name, value);
    threshold.setAttribute("class", "timeline-threshold");
    svg.append(threshold);
  }
  const highest = Math.max(...frames.map((frame) => frame.fake_score));
  $("timeline-caption").textContent =
    `${frames.length} frames from 0 to ${end.toFixed(1)} s (left to right); score 0 at the bottom, 1 at the top; ` +
    `highest ${threeDigits(highest)}` + describeFrameDomains(frames) +
    (rule ? `; dashed line: the ${rule.whose ? `${rule.whose} ` : ""}fake threshold ${threeDigits(rule.thresholds.fake)}` : "");
  $("timeline").hidden = false;
}

async function showHeatmap(file) {
  const form = new FormData();
  form.append("image", file);
  form.append("faces", $("find-faces").checked ? "true" : "false"); // a map per face crop, boxes drawn
  $("heatmap-figure").hidden = false;
  $("heatmap").hidden = true;
  $("heatmap-caption").textContent = "Computing the heatmap…";
  try {
    const answer = await callApi("/v1/explain?format=json", { method: "POST", body: form });
    $("heatmap").src = `data:image/png;base64,${answer.overlay_png_base64}`;
    $("heatmap").hidden = false;
    const peak = answer.explanation.peak_xy;
    const faces = answer.explanation.faces;
    const where = !faces ? "" : faces.length ? "; one map per face crop (boxed)" : "; no face found: whole image";
    $("heatmap-caption").textContent =
      `Heatmap (${answer.explanation.method}): red is where the model looks most` +
      (peak ? `; peak at x=${peak[0]}, y=${peak[1]}` : "") + where;
  } catch (error) {
    $("heatmap-caption").textContent = `No heatmap: ${error.message}`;
  }
}

async function analyseImage(file) {
  $("preview").src = URL.createObjectURL(file);
  $("preview-figure").hidden = false;
  $("caption").textContent = file.name;
  const form = new FormData();
  form.append("images", file);
  form.append("faces", $("find-faces").checked ? "true" : "false");
  showStatus(`Scoring ${file.name}…`);
  const answer = await callApi("/v1/predict", { method: "POST", body: form });
  const record = answer.predictions[0];
  if (record.error) throw Object.assign(new Error(record.error), { code: record.error_code });
  showVerdict(record);
  showFaces(record);
  showStatus(`${file.name}: scored by ${record.model}` + describeFaces(record));
  await showHeatmap(file);
}

async function analyseVideo(file) {
  const video = $("video-preview");
  video.src = URL.createObjectURL(file);
  video.hidden = false;
  $("preview").hidden = true;
  $("preview-figure").hidden = false;
  $("caption").textContent = file.name;
  const form = new FormData();
  form.append("video", file);
  form.append("faces", $("find-faces").checked ? "true" : "false");
  showStatus(`Scoring ${file.name}…`);
  const record = await callApi("/v1/predict/video", { method: "POST", body: form });
  if (record.verdict) showVerdict(record);
  showTimeline(record);
  const stopped = record.stopped_at_s != null ? `; the stream ends early at ${record.stopped_at_s.toFixed(1)} s` : "";
  showStatus(`${file.name}: ${record.num_frames} frames scored by ${record.model}${stopped}`);
}

async function analyse(file) {
  if (!file) return;
  resetResult();
  try {
    await (file.type.startsWith("video/") ? analyseVideo(file) : analyseImage(file));
  } catch (error) {
    showStatus(`${file.name}: not scored`);
    showError(error);
  }
}

function setUp() {
  const zone = $("drop-zone");
  $("file-input").addEventListener("change", (event) => analyse(event.target.files[0]));
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    analyse(event.dataTransfer.files[0]);
  });
  $("key-save").addEventListener("click", () => {
    sessionStorage.setItem(KEY_STORAGE, $("api-key").value);
    $("key-panel").hidden = true;
    loadModel();
  });
  loadModel();
}

document.addEventListener("DOMContentLoaded", setUp);
