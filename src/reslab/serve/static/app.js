// The page of `reslab serve`: no framework, no CDN. Sends the image to /predict and
// /explain, draws the top-k bars and the Grad-CAM overlay, and shows the model card.
"use strict";

const $ = (id) => document.getElementById(id);

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function headers() {
  const key = $("api-key").value;
  return key ? { "X-API-Key": key } : {};
}

async function errorText(resp) {
  try { return (await resp.json()).error || resp.statusText; } catch (e) { return resp.statusText; }
}

function drawBars(topk) {
  const bars = $("bars");
  bars.replaceChildren();
  for (const item of topk) {
    const row = document.createElement("div");
    row.className = "bar";
    row.dataset.label = item.label;
    const name = document.createElement("span");
    name.className = "label";
    name.textContent = item.label;
    const track = document.createElement("div");
    track.className = "track";
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = (100 * item.prob).toFixed(1) + "%";
    track.appendChild(fill);
    const pct = document.createElement("span");
    pct.className = "prob";
    pct.textContent = (100 * item.prob).toFixed(1) + "%";
    row.append(name, track, pct);
    bars.appendChild(row);
  }
}

async function send(file) {
  setStatus("asking the model…", false);
  $("preview").src = URL.createObjectURL(file);
  const form = () => { const f = new FormData(); f.append("image", file); return f; };
  const resp = await fetch("/predict?topk=5", { method: "POST", body: form(), headers: headers() });
  if (!resp.ok) { setStatus("error " + resp.status + ": " + (await errorText(resp)), true); return; }
  const result = await resp.json();
  $("result").hidden = false;
  drawBars(result.topk);
  setStatus("predicted: " + result.label + " (" + (100 * result.prob).toFixed(1) + "%)", false);
  if (!window.reslabCard || !window.reslabCard.explain) {
    $("gradcam-caption").textContent = "Grad-CAM is not available for an export folder";
    return;
  }
  const cam = await fetch("/explain", { method: "POST", body: form(), headers: headers() });
  if (cam.ok) {
    $("gradcam").src = URL.createObjectURL(await cam.blob());
    $("gradcam").dataset.ready = "1";
  } else {
    $("gradcam-caption").textContent = "Grad-CAM failed: " + (await errorText(cam));
  }
}

function addRow(list, term, value) {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  dd.textContent = value;
  list.append(dt, dd);
}

async function loadCard() {
  const card = await (await fetch("/card")).json();
  window.reslabCard = card;
  $("model-name").textContent = card.name;
  $("key-row").hidden = !card.api_key_required;
  const list = $("card-list");
  addRow(list, "architecture", card.name);
  addRow(list, "input size", card.input_size.join(" × "));
  addRow(list, "classes (" + card.classes.length + ")", card.classes.join(", "));
  const acc = Object.entries(card.accuracy).map(([k, v]) => k + " " + (100 * v).toFixed(2) + "%");
  addRow(list, "accuracy", acc.length ? acc.join(", ") : "not recorded");
  addRow(list, "runtime", card.runtime);
}

function wire() {
  const drop = $("drop");
  const go = (file) => send(file).catch((e) => setStatus("request failed: " + e, true));
  $("file").addEventListener("change", (e) => { if (e.target.files[0]) go(e.target.files[0]); });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) go(e.dataTransfer.files[0]);
  });
  loadCard().catch((e) => setStatus("could not load the model card: " + e, true));
}

wire();
