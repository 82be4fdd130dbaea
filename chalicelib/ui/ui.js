// The live queue page (GET /ui): the caller's jobs, live from GET /sdapi/v1/events.
// EventSource cannot send an Authorization header, so the stream is read with fetch(). Every URL is
// relative, so the page also works under a path prefix. No framework, no build step.
"use strict";

const TOKEN_KEY = "a1111-async-token";
const jobs = new Map();  // job_id -> {summary, element}
let streamAbort = null;

function token() { return sessionStorage.getItem(TOKEN_KEY); }

function api(path, options = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + token() }, options.headers || {});
  return fetch(path, Object.assign({}, options, { headers }));
}

function $(selector, root = document) { return root.querySelector(selector); }

function setConnection(text) { $("#connection").textContent = text; }

function start() {
  $("#token-form").hidden = true;
  $("#live").hidden = false;
  $("#sign-out").hidden = false;
  openStream();
  refreshInstances();
  setInterval(refreshInstances, 10000);
}

async function loadJobs() {
  const answer = await api("sdapi/v1/jobs?limit=50");
  if (answer.status === 401) { signOut("that token was refused"); return; }
  if (!answer.ok) return;
  const page = await answer.json();
  for (const summary of page.jobs.slice().reverse()) update(summary, null);
}

async function openStream() {
  if (streamAbort) streamAbort.abort();
  streamAbort = new AbortController();
  setConnection("connecting…");
  try {
    const answer = await api("sdapi/v1/events?previews=true", { signal: streamAbort.signal });
    if (answer.status === 401) { signOut("that token was refused"); return; }
    if (!answer.ok) throw new Error("the stream answered " + answer.status);
    setConnection("live");
    loadJobs();  // after the stream is open: nothing that changes in between is missed
    const reader = answer.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        dispatch(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  } catch (error) {
    if (error.name === "AbortError") return;
  }
  setConnection("reconnecting…");
  setTimeout(openStream, 2000);
}

function dispatch(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") name = value;
    if (field === "data") data.push(value);
  }
  if (data.length) update(JSON.parse(data.join("\n")), name);
}

function update(summary, eventName) {
  let entry = jobs.get(summary.job_id);
  if (entry && entry.summary.version > summary.version) return;  // older than what is shown
  if (!entry) {
    const element = $("#job-template").content.firstElementChild.cloneNode(true);
    $(".cancel", element).addEventListener("click", () => cancel(summary.job_id));
    $("#jobs").prepend(element);
    entry = { summary, element, detail: false };
    jobs.set(summary.job_id, entry);
  }
  entry.summary = summary;
  render(entry, eventName);
}

function render(entry, eventName) {
  const s = entry.summary, e = entry.element;
  e.dataset.jobId = s.job_id;
  e.dataset.status = s.status;
  const status = $(".status", e);
  status.textContent = s.status;
  status.className = "status " + s.status;
  $(".job-id", e).textContent = s.job_id;
  $(".created", e).textContent = new Date(s.created_at).toLocaleString();
  const p = s.progress || {};
  const fraction = s.status === "completed" ? 1 : (p.progress || 0);
  $("progress", e).value = fraction;
  $(".steps", e).textContent = p.steps ? `step ${p.step ?? 0}/${p.steps}` : "";
  $(".eta", e).textContent = s.status === "processing" && p.eta_relative ? `ETA ${Math.ceil(p.eta_relative)} s` : "";
  $(".queue", e).textContent = s.status === "queued" && s.queue_position ? `#${s.queue_position} in queue` : "";
  const error = $(".error", e);
  error.hidden = !s.error;
  error.textContent = s.error ? `${s.error.code}: ${s.error.message}` : "";
  const preview = $(".preview", e);
  if (s.status === "processing" && p.current_image) {
    preview.src = p.current_image.startsWith("data:") ? p.current_image : "data:image/png;base64," + p.current_image;
    preview.hidden = false;
  } else if (s.status !== "processing") {
    preview.hidden = true;
  }
  const finished = ["completed", "error", "cancelled"].includes(s.status);
  $(".cancel", e).hidden = finished;
  // The detail holds the prompt, the instance and the image URLs: read once, then when they change.
  if (!entry.detail || eventName === "job.started" || (finished && eventName && eventName !== "cancel")) {
    loadDetail(entry);
  }
}

async function loadDetail(entry) {
  entry.detail = true;
  const answer = await api(`sdapi/v1/jobs/${encodeURIComponent(entry.summary.job_id)}?images=urls`);
  if (!answer.ok) return;
  const detail = await answer.json();
  const e = entry.element;
  $(".prompt", e).textContent = (detail.request && detail.request.prompt) || "";
  $(".instance", e).textContent = detail.instance ? `on ${detail.instance}` : "";
  const image = $(".image", e);
  if (detail.status === "completed" && detail.image_urls.length && !image.src) {
    const file = await api(detail.image_urls[0].replace(/^\//, ""), { headers: { Accept: "image/png, image/jpeg, image/webp, */*" } });
    if (file.ok) {
      image.src = URL.createObjectURL(await file.blob());
      image.hidden = false;
    }
  }
}

async function cancel(jobId) {
  const answer = await api(`sdapi/v1/jobs/${encodeURIComponent(jobId)}/cancel`, { method: "POST" });
  if (answer.ok) update(await answer.json(), "cancel");
}

async function refreshInstances() {
  const answer = await api("health");
  if (!answer.ok) return;
  const health = await answer.json();
  const list = $("#instances");
  list.replaceChildren();
  for (const instance of health.instances || []) {
    const item = document.createElement("li");
    const state = instance.healthy ? (instance.busy ? "busy" : "idle") : "unreachable";
    item.textContent = `${instance.name}: ${state}` + (instance.loaded_model ? ` · ${instance.loaded_model}` : "");
    list.append(item);
  }
}

function signOut(reason) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (streamAbort) streamAbort.abort();
  location.hash = reason ? "#" + encodeURIComponent(reason) : "";
  location.reload();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim());
    start();
  });
  $("#sign-out").addEventListener("click", () => signOut(""));
  $("#submit-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { prompt: $("#prompt").value, steps: Number($("#steps").value) };
    const answer = await api("sdapi/v1/txt2img", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const message = $("#submit-error");
    message.hidden = answer.ok;
    if (answer.ok) update(await answer.json(), "submit");
    else message.textContent = JSON.stringify(await answer.json());
  });
  if (token()) start();
});
