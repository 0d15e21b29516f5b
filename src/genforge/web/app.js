// genforge's browser UI: plain ES module, no build step. It talks only to the public HTTP API, with
// relative URLs (so it works under a reverse proxy's path prefix), and never inserts prompts or model
// output as HTML: every piece of user or model text goes in with textContent (see h() below).

const KEY_STORE = "genforge.apiKey"; // sessionStorage: this tab only
const PAGE_SIZE = 24;
const TYPES = ["text", "image", "speech", "transcript"];
const STATUSES = ["pending", "running", "succeeded", "failed", "cancelled"];

// --- DOM: one builder, text only ---------------------------------------------------------------------
// h("a", {href: "#/x", class: "c"}, "text", child): strings become text nodes, never markup.
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k in el && typeof v !== "string") el[k] = v; // properties such as value, checked, max
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, ...children);
  return el;
}

function append(el, ...children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function field(label, input, note) {
  const id = input.id || `f-${label.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  input.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), input, note ? h("small", {}, note) : null);
}

function option(value, label, selected, disabled) {
  return h("option", { value, selected: !!selected, disabled: !!disabled }, label);
}

function select(name, options, value) {
  return h("select", { name }, options.map(([v, l, dis]) => option(v, l, v === value, dis)));
}

const fmtBytes = (n) =>
  n == null ? "—" : n < 1024 ? `${n} B` : n < 1 << 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / (1 << 20)).toFixed(1)} MiB`;
const fmtMs = (ms) => (ms == null ? "—" : ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`);
const fmtTime = (iso) => (iso ? new Date(iso).toLocaleString() : "—");
const recordHref = (id) => `#/content/${encodeURIComponent(id)}`;

// --- the page's lifetime: timers, blob URLs and requests end when the route changes -----------------------
let page = null;
class Page {
  constructor() {
    this.timers = [];
    this.urls = [];
    this.aborts = new AbortController();
  }
  every(ms, fn) {
    this.timers.push(setInterval(fn, ms));
  }
  blobUrl(blob) {
    const url = URL.createObjectURL(blob);
    this.urls.push(url);
    return url;
  }
  dispose() {
    this.timers.forEach(clearInterval);
    this.urls.forEach((u) => URL.revokeObjectURL(u));
    this.aborts.abort();
  }
}

// --- HTTP: every call carries the tab's API key; a 401 asks for one and retries ----------------------------
class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || `http_${status}`;
    this.hint = err.hint || null;
    this.contentId = err.content_id || null;
  }
}

let keyWaiters = [];
function askForKey(reason) {
  const form = document.getElementById("key-form");
  document.getElementById("key-reason").textContent = reason;
  form.hidden = false;
  document.getElementById("api-key").focus();
  return new Promise((resolve) => keyWaiters.push(resolve));
}

function setupKeyForm() {
  const form = document.getElementById("key-form");
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = document.getElementById("api-key");
    sessionStorage.setItem(KEY_STORE, input.value.trim());
    input.value = "";
    form.hidden = true;
    renderAccess();
    const waiters = keyWaiters;
    keyWaiters = [];
    waiters.forEach((resolve) => resolve());
  });
  renderAccess();
}

function renderAccess() {
  const box = document.getElementById("access");
  box.replaceChildren();
  if (sessionStorage.getItem(KEY_STORE)) {
    append(
      box,
      h("span", {}, "API key set for this tab "),
      h("button", {
        type: "button",
        class: "link",
        onclick: () => {
          sessionStorage.removeItem(KEY_STORE);
          renderAccess();
        },
      }, "Forget key"),
    );
  }
}

async function api(path, opts = {}) {
  for (;;) {
    const headers = new Headers(opts.headers || {});
    const key = sessionStorage.getItem(KEY_STORE);
    if (key) headers.set("Authorization", `Bearer ${key}`);
    // FormData (an audio upload) sets its own multipart Content-Type
    if (opts.body && !(opts.body instanceof FormData) && !headers.has("Content-Type")) headers.set("Content-Type", "application/json");
    const resp = await fetch(path, { ...opts, headers, signal: opts.signal || page?.aborts.signal });
    if (resp.status !== 401) return resp;
    const body = await resp.json().catch(() => null);
    const why = body?.error?.message || "this server needs an API key";
    await askForKey(key ? `The API key was refused: ${why}. Enter another.` : `An API key is needed: ${why}.`);
  }
}

async function json(path, opts) {
  const resp = await api(path, opts);
  const body = await resp.json().catch(() => null);
  if (!resp.ok) throw new ApiError(resp.status, body);
  return body;
}

async function fileUrl(id) {
  const resp = await api(`api/v1/content/${encodeURIComponent(id)}/file`);
  if (!resp.ok) throw new ApiError(resp.status, await resp.json().catch(() => null));
  return page.blobUrl(await resp.blob());
}

// A failure as people need it: code, message, hint, and the failed record.
function errorBox(err) {
  const id = err.contentId || err.content_id;
  return h(
    "div",
    { class: "error", role: "alert" },
    h("p", {}, h("strong", { class: "code" }, err.code || "error"), " ", err.message || String(err)),
    err.hint ? h("p", { class: "hint" }, "Hint: ", err.hint) : null,
    id ? h("p", {}, h("a", { href: recordHref(id) }, `Failed record ${id}`)) : null,
  );
}

// Server-Sent Events from a fetch() body: `event:` and `data:` lines, blocks split by a blank line.
async function* sseEvents(resp) {
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
    }
  }
}

// --- content shown safely --------------------------------------------------------------------------------
async function mediaFor(rec, { thumb = false } = {}) {
  if (!rec.artifact) return null;
  if (rec.content_type === "image") {
    const img = h("img", { alt: `image ${rec.id}`, class: thumb ? "thumb" : "full" });
    fileUrl(rec.id).then((u) => (img.src = u), () => (img.alt = "the file could not be loaded"));
    return img;
  }
  if (rec.content_type === "speech") {
    const audio = h("audio", { controls: true, preload: "metadata", "aria-label": `speech ${rec.id}` });
    fileUrl(rec.id).then((u) => (audio.src = u), () => audio.replaceWith(h("p", {}, "the file could not be loaded")));
    if (rec.listen_back) {
      const lb = rec.listen_back;
      return h("div", {}, audio, h("p", { class: "note" }, `listen-back: WER ${lb.wer} (threshold ${lb.threshold}), heard “${lb.heard}”`));
    }
    return audio;
  }
  if (rec.content_type === "transcript") {
    const box = h("div", { class: "transcript", "aria-label": `transcript ${rec.id}` });
    if (rec.no_speech) box.append(h("p", { class: "note" }, "No speech was found in the audio: the transcript is empty."));
    if (thumb) {
      box.append(h("pre", { class: "excerpt" }, firstLines(rec.text || "")));
      return box;
    }
    // the segments with their timings, from the stored JSON (text only, never markup)
    api(`api/v1/content/${encodeURIComponent(rec.id)}/file`)
      .then((r) => (r.ok ? r.json() : Promise.reject(new Error(String(r.status)))))
      .then((doc) => {
        const list = h("ol", { class: "segments" });
        for (const s of doc.segments || []) {
          const words = (s.words || []).map((w) => `${w.word} ${w.start.toFixed(2)}–${w.end.toFixed(2)}`).join(" · ");
          list.append(h("li", {}, h("span", { class: "time" }, `${s.start.toFixed(2)}–${s.end.toFixed(2)} s `), s.text, words ? h("small", { class: "note" }, ` (${words})`) : null));
        }
        box.append(h("p", {}, `${doc.language} · ${doc.duration} s`), list);
      })
      .catch(() => box.append(h("p", {}, "the file could not be loaded")));
    return box;
  }
  return null;
}

function firstLines(text, lines = 3, chars = 240) {
  const cut = (text || "").split("\n").slice(0, lines).join("\n");
  return cut.length > chars ? `${cut.slice(0, chars)}…` : cut;
}

const statusBadge = (s) => h("span", { class: `badge ${s}` }, s);

// --- Generate --------------------------------------------------------------------------------------------
async function renderGenerate(view) {
  let models = [];
  try {
    models = (await json("api/v1/models")).items;
  } catch (err) {
    view.append(errorBox(err));
  }
  const type = select("content_type", TYPES.map((t) => [t, t]), "text");
  const prompt = h("textarea", { name: "prompt", rows: 4, required: true });
  const model = h("select", { name: "model" });
  const quality = select("quality", [["draft", "draft"], ["standard", "standard"], ["high", "high"]], "standard");
  const seed = h("input", { name: "seed", type: "number", min: 0, step: 1, placeholder: "random" });
  const maxTokens = h("input", { name: "max_tokens", type: "number", min: 1, step: 1, placeholder: "preset" });
  const temperature = h("input", { name: "temperature", type: "number", min: 0, max: 2, step: 0.05, placeholder: "preset" });
  const size = select("size", [["", "model default"], ["256", "256 × 256"], ["512", "512 × 512"], ["768", "768 × 768"], ["1024", "1024 × 1024"]], "");
  const steps = h("input", { name: "steps", type: "number", min: 1, step: 1, placeholder: "default" });
  const initImage = h("input", { name: "init_image", type: "file", accept: "image/png,image/jpeg,image/webp" });
  const strength = h("input", { name: "strength", type: "number", min: 0.05, max: 1, step: 0.05, placeholder: "0.75 (inpainting 1)" });
  const mask = h("input", { name: "mask", type: "file", accept: "image/png,image/jpeg,image/webp" });
  const lora = h("select", { name: "lora" });
  const loraWeight = h("input", { name: "lora_weight", type: "number", min: -4, max: 4, step: 0.05, value: "1" });
  const voice = h("input", { name: "voice", type: "text", placeholder: "the voice's default" });
  const speed = h("input", { name: "speed", type: "number", min: 0.25, max: 4, step: 0.05, value: "1" });
  const listenBack = h("input", { name: "listen_back", type: "checkbox" });
  const audioFile = h("input", { name: "file", type: "file", accept: "audio/*,.wav,.mp3,.ogg,.flac,.m4a" });
  const language = h("input", { name: "language", type: "text", placeholder: "detected", pattern: "[a-z]{2,3}" });

  const groups = {
    text: h("fieldset", {}, h("legend", {}, "Text"), field("Quality", quality), field("Max tokens", maxTokens), field("Temperature", temperature)),
    image: h(
      "fieldset",
      {},
      h("legend", {}, "Image"),
      field("Image size", size),
      field("Steps", steps),
      field("Start from a picture (img2img)", initImage, h("small", { class: "note" }, "uploaded first; diffusers models")),
      field("Strength", strength),
      field("Mask (white = repaint)", mask),
      field("LoRA", lora),
      field("LoRA weight", loraWeight),
    ),
    speech: h("fieldset", {}, h("legend", {}, "Speech"), field("Voice", voice), field("Speed", speed), field("Listen back", listenBack)),
    transcript: h("fieldset", {}, h("legend", {}, "Transcript"), field("Audio file", audioFile), field("Language", language)),
  };
  const modelNote = h("small", { class: "note" });

  lora.replaceChildren(option("", "none"), ...models.filter((m) => m.type === "lora" && m.installed).map((m) => option(m.name, m.name)));
  function fillModels() {
    const t = type.value;
    const mine = models.filter((m) => m.type === t);
    model.replaceChildren(
      option("", t === "text" ? "default for the quality" : "default"),
      ...mine.map((m) =>
        option(m.name, `${m.name}${m.prompt_conditioned === false ? " (ignores the prompt)" : ""}${m.installed ? "" : " (not installed)"}`, false, !m.installed),
      ),
    );
    sync();
  }
  function sync() {
    for (const [t, g] of Object.entries(groups)) g.hidden = t !== type.value;
    prompt.required = type.value !== "transcript"; // a transcript's prompt is only its label
    const chosen = models.find((m) => m.name === model.value);
    const portrait = chosen?.engine === "portrait";
    for (const input of [steps, initImage, strength, mask, lora, loraWeight]) input.closest(".field").hidden = portrait;
    modelNote.textContent = chosen
      ? `${chosen.engine}${chosen.prompt_conditioned === false ? " · ignores the prompt: the output depends on the seed only" : ""} · licence: ${chosen.license}`
      : "";
  }
  type.addEventListener("change", fillModels);
  model.addEventListener("change", sync);

  const output = h("div", { id: "output", class: "output", "aria-live": "polite", role: "log", "aria-label": "Output" });
  const state = h("p", { class: "state", role: "status" });
  const submit = h("button", { type: "submit" }, "Generate");
  const stop = h("button", { type: "button", hidden: true }, "Stop");

  const form = h(
    "form",
    { class: "generate" },
    field("Content type", type),
    field("Prompt", prompt),
    field("Model", model, modelNote),
    field("Seed", seed),
    groups.text,
    groups.image,
    groups.speech,
    groups.transcript,
    h("div", { class: "actions" }, submit, stop),
  );
  view.append(h("h1", {}, "Generate"), form, state, output);
  fillModels();

  const num = (input, int) => {
    if (input.value === "") return undefined;
    const v = Number(input.value);
    return int ? Math.trunc(v) : v;
  };
  async function uploaded(input) {
    const file = input.files && input.files[0];
    if (!file || input.closest(".field").hidden) return undefined;
    const form = new FormData();
    form.append("file", file);
    return (await json("api/v1/uploads", { method: "POST", body: form })).id;
  }
  async function body() {
    const t = type.value;
    const params = { seed: num(seed, true) };
    if (t === "text") Object.assign(params, { max_tokens: num(maxTokens, true), temperature: num(temperature) });
    if (t === "image") Object.assign(params, { width: size.value ? Number(size.value) : undefined, height: size.value ? Number(size.value) : undefined });
    if (t === "image" && !steps.closest(".field").hidden) {
      params.steps = num(steps, true);
      params.init_image = await uploaded(initImage);
      params.mask = params.init_image ? await uploaded(mask) : undefined;
      if (params.init_image) params.strength = num(strength);
      if (lora.value) params.loras = [{ name: lora.value, weight: num(loraWeight) ?? 1 }];
    }
    if (t === "speech") Object.assign(params, { voice: voice.value.trim() || undefined, speed: num(speed), listen_back: listenBack.checked || undefined });
    if (t === "transcript") {
      delete params.seed;
      Object.assign(params, { language: language.value.trim() || undefined });
    }
    const b = { content_type: t, prompt: prompt.value, params: JSON.parse(JSON.stringify(params)), stream: true };
    if (model.value) b.model = model.value;
    if (t === "text") b.quality = quality.value;
    return b;
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const controller = new AbortController();
    stop.hidden = false;
    submit.disabled = true;
    stop.onclick = () => controller.abort();
    try {
      let b;
      try {
        b = await body(); // uploads the picture and the mask first
        if (b.content_type === "transcript") {
          // the audio goes up first (POST api/v1/uploads); the transcript names the upload
          if (!audioFile.files.length) throw new ApiError(422, { error: { code: "invalid_request", message: "choose an audio file to transcribe" } });
          const upload = new FormData();
          upload.append("file", audioFile.files[0]);
          const up = await json("api/v1/uploads", { method: "POST", body: upload });
          b.params.upload = up.id;
          if (!prompt.value.trim()) b.prompt = `transcription of ${audioFile.files[0].name}`;
        }
      } catch (err) {
        output.replaceChildren(errorBox(err.code ? err : { code: "error", message: String(err) }));
        return;
      }
      await runStream(b, output, state, controller.signal);
    } finally {
      stop.hidden = true;
      submit.disabled = false;
    }
  });
}

// One streamed generation into `output`; it shows `done` only for a `done` event with a succeeded record.
async function runStream(body, output, state, signal) {
  output.replaceChildren();
  output.classList.remove("complete", "incomplete");
  state.textContent = "Sending…";
  const textOut = h("pre", { class: "text-out" });
  const bar = h("progress", { max: 1, value: 0, "aria-label": "Progress" });
  let contentId = null;
  let final = null;
  try {
    const resp = await api("api/v1/content/generate", { method: "POST", body: JSON.stringify(body), signal });
    contentId = resp.headers.get("X-Genforge-Content-Id");
    if (!resp.ok || !(resp.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
      const b = await resp.json().catch(() => null);
      throw new ApiError(resp.status, b);
    }
    state.textContent = "Running…";
    output.append(body.content_type === "text" ? textOut : bar);
    for await (const { event, data } of sseEvents(resp)) {
      if (event === "token") textOut.append(document.createTextNode(data.text));
      else if (event === "progress") {
        bar.max = data.total || 1;
        bar.value = data.step;
        state.textContent = data.stage
          ? `${data.stage[0].toUpperCase()}${data.stage.slice(1)} the model: ${data.step} of ${data.total}`
          : `Step ${data.step} of ${data.total}`;
      } else if (event === "done" || event === "failed") {
        final = { event, record: data };
        break;
      }
    }
  } catch (err) {
    if (err.name === "AbortError") {
      output.classList.add("incomplete");
      state.textContent = "Stopped: the generation was cancelled; nothing was stored as a result.";
    } else {
      output.classList.add("incomplete");
      state.textContent = "Failed.";
      output.append(errorBox(err.code ? err : { code: "network_error", message: String(err), contentId }));
    }
    return;
  }
  if (!final) {
    output.classList.add("incomplete");
    state.textContent = "The stream ended before the generation finished: this output is NOT complete.";
    if (contentId) output.append(h("p", {}, h("a", { href: recordHref(contentId) }, `See record ${contentId}`)));
    return;
  }
  const rec = final.record;
  if (final.event === "failed" || rec.status !== "succeeded") {
    output.classList.add("incomplete");
    state.textContent = `${rec.status}.`;
    output.append(errorBox({ ...(rec.error || { code: rec.status, message: "no result" }), content_id: rec.id }));
    return;
  }
  output.classList.add("complete");
  if (rec.content_type === "text") textOut.textContent = rec.text; // the stored text, exactly
  else {
    bar.value = bar.max;
    output.append(await mediaFor(rec));
  }
  state.replaceChildren(
    `Done: ${rec.model.name} · ${fmtMs(rec.timings.total_ms)}`,
    rec.usage ? ` · ${rec.usage.completion_tokens} tokens` : "",
    rec.finish_reason === "length" ? " (cut at Max tokens)" : "",
    " · ",
    h("a", { href: recordHref(rec.id) }, `record ${rec.id}`),
  );
  for (const w of rec.warnings || []) output.append(h("p", { class: "warning" }, `Warning: ${w}`));
}

// --- History ---------------------------------------------------------------------------------------------
async function renderHistory(view, params) {
  const f = Object.fromEntries(params);
  const offset = Math.max(0, Number(f.offset) || 0);
  let models = [];
  try {
    models = (await json("api/v1/models")).items;
  } catch {
    models = []; // the filter lists no models; the records below still load or show their error
  }
  const search = h("input", { name: "q", type: "search", value: f.q || "", placeholder: 'words, "a phrase", prefix*' });
  const type = select("content_type", [["", "any"], ...TYPES.map((t) => [t, t])], f.content_type || "");
  const status = select("status", [["", "any"], ...STATUSES.map((s) => [s, s])], f.status || "");
  const model = select("model", [["", "any"], ...models.map((m) => [m.name, m.name])], f.model || "");
  const from = h("input", { name: "from", type: "date", value: f.from || "" });
  const to = h("input", { name: "to", type: "date", value: f.to || "" });
  const form = h(
    "form",
    { class: "filters", role: "search" },
    field("Search", search),
    field("Type", type),
    field("Status", status),
    field("Model", model),
    field("From", from),
    field("To", to),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Find")),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const p = new URLSearchParams();
    for (const [k, el] of Object.entries({ q: search, content_type: type, status, model, from, to })) {
      if (el.value) p.set(k, el.value);
    }
    location.hash = `#/history?${p}`;
  });
  const list = h("div", { class: "gallery", "aria-label": "Records" });
  const summary = h("p", { class: "state", role: "status" });
  const pager = h("nav", { class: "pager", "aria-label": "Pages of records" });
  view.append(h("h1", {}, "History"), form, summary, list, pager);

  const query = new URLSearchParams({ limit: PAGE_SIZE, offset });
  for (const k of ["q", "content_type", "status", "model"]) if (f[k]) query.set(k, f[k]);
  if (f.from) query.set("created_after", new Date(`${f.from}T00:00`).toISOString());
  if (f.to) query.set("created_before", new Date(new Date(`${f.to}T00:00`).getTime() + 86400000).toISOString());
  let result;
  try {
    result = await json(`api/v1/content?${query}`);
  } catch (err) {
    summary.textContent = "";
    list.append(errorBox(err));
    return;
  }
  const { items, total } = result;
  summary.textContent = total
    ? `${total} record${total === 1 ? "" : "s"}${f.q ? ` matching “${f.q}”` : ""}, newest first; ${offset + 1}–${offset + items.length} shown`
    : "No records match.";
  for (const rec of items) list.append(await historyCard(rec));

  const go = (o) => {
    const p = new URLSearchParams(params);
    p.set("offset", String(o));
    return `#/history?${p}`;
  };
  if (offset > 0) pager.append(h("a", { href: go(Math.max(0, offset - PAGE_SIZE)) }, "Previous page"));
  if (offset + items.length < total) pager.append(h("a", { href: go(offset + PAGE_SIZE) }, "Next page"));
}

async function historyCard(rec) {
  const card = h("article", { class: `card ${rec.status}` });
  const title = rec.content_type === "text" ? rec.prompt : `${rec.content_type}: ${rec.prompt}`;
  card.append(
    h("a", { href: recordHref(rec.id), class: "title" }, firstLines(title, 2, 120)),
    h("p", { class: "meta" }, statusBadge(rec.status), ` ${rec.model.name || "no model"} · ${fmtTime(rec.created_at)}`),
  );
  if (rec.content_type === "text" && rec.text) card.append(h("pre", { class: "excerpt" }, firstLines(rec.text)));
  const media = await mediaFor(rec, { thumb: true });
  if (media) card.append(media);
  if (rec.error) card.append(h("p", { class: "error-line" }, `${rec.error.code}: ${rec.error.message}`));
  if (rec.status === "pending" || rec.status === "running") followJob(card, rec);
  return card;
}

// Queued and running jobs: their state and queue position, live, and a way to cancel them.
function followJob(card, rec, onDone) {
  const live = h("p", { class: "job", role: "status" });
  const cancel = h("button", { type: "button" }, "Cancel");
  card.append(live, cancel);
  const show = (r) => {
    live.textContent = r.status === "pending" ? `Queued, position ${r.queue_position ?? "?"}` : r.status === "running" ? "Running…" : `Now ${r.status}`;
    if (r.status !== "pending" && r.status !== "running") {
      cancel.remove();
      card.className = `card ${r.status}`;
    }
  };
  show(rec);
  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      show(await json(`api/v1/content/${encodeURIComponent(rec.id)}/cancel`, { method: "POST" }));
    } catch (err) {
      card.append(errorBox(err));
    }
  });
  const timer = setInterval(async () => {
    try {
      const r = await json(`api/v1/content/${encodeURIComponent(rec.id)}`);
      show(r);
      if (r.status !== "pending" && r.status !== "running") {
        clearInterval(timer);
        if (onDone) onDone(r);
      }
    } catch {
      clearInterval(timer); // gone (deleted) or the page left: stop polling
    }
  }, 1500);
  page.timers.push(timer);
}

// --- Record ----------------------------------------------------------------------------------------------
function dl(rows) {
  return h("dl", { class: "facts" }, rows.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "—")]));
}

// A record's params are complete and exactly what a client can send again; its chat (messages) and raw
// continuation are recorded beside them.
function rerunBody(rec) {
  const b = { content_type: rec.content_type, prompt: rec.prompt, params: { ...(rec.params || {}) } };
  if (rec.model?.name) b.model = rec.model.name;
  if (rec.content_type === "text") b.quality = rec.quality;
  if (rec.system) b.system = rec.system;
  if (rec.messages) b.messages = rec.messages;
  if (rec.raw) b.raw = true;
  return b;
}

async function renderRecord(view, id) {
  let rec;
  try {
    rec = await json(`api/v1/content/${encodeURIComponent(id)}`);
  } catch (err) {
    view.append(h("h1", {}, "Record"), errorBox(err));
    return;
  }
  const p = rec.params || {};
  const m = rec.model || {};
  const a = rec.artifact;
  view.append(
    h("h1", {}, `${rec.content_type} record `, statusBadge(rec.status)),
    h("p", { class: "id" }, "id ", h("code", {}, rec.id)),
    h("h2", {}, "Provenance"),
    dl([
      ["Model", m.name],
      ["Model file sha256", m.file_sha256 ? h("code", {}, m.file_sha256) : null],
      ["Engine", m.engine ? `${m.engine} ${m.engine_version || ""}` : null],
      ["Seed", p.seed ?? (rec.content_type === "speech" ? "none (not deterministic)" : null)],
      ["Quality", rec.quality],
      ["Parameters", h("pre", {}, JSON.stringify(p, null, 2))],
      ["Timings", `load ${fmtMs(rec.timings?.load_ms)} · generate ${fmtMs(rec.timings?.generate_ms)} · total ${fmtMs(rec.timings?.total_ms)}`],
      rec.usage ? ["Tokens", `${rec.usage.prompt_tokens ?? "—"} prompt · ${rec.usage.completion_tokens ?? "—"} completion`] : null,
      rec.finish_reason ? ["Finish reason", rec.finish_reason] : null,
      rec.width ? ["Image", `${rec.width} × ${rec.height}${rec.steps ? `, ${rec.steps} steps` : ""}`] : null,
      rec.duration_s ? ["Audio", `${rec.duration_s.toFixed(2)} s at ${rec.sample_rate} Hz${rec.voice ? `, voice ${rec.voice}` : ""}${rec.deterministic === false ? ", not deterministic" : ""}`] : null,
      ["Artifact sha256", a ? h("code", {}, a.sha256) : null],
      ["Artifact size", a ? `${fmtBytes(a.size_bytes)} (${a.size_bytes} bytes, ${a.media_type})` : null],
      ["Created", fmtTime(rec.created_at)],
      ["Finished", fmtTime(rec.finished_at)],
    ]),
  );
  for (const w of rec.warnings || []) view.append(h("p", { class: "warning" }, `Warning: ${w}`));
  if (rec.error) view.append(errorBox({ ...rec.error, content_id: null }));

  const result = h("section", { class: "result" }, h("h2", {}, "Content"));
  if (rec.content_type === "text" && rec.text != null) result.append(h("pre", { class: "text-out" }, rec.text));
  const media = await mediaFor(rec);
  if (media) result.append(media);
  if (!a) result.append(h("p", {}, "No artifact: this record did not succeed."));
  view.append(result, h("h2", {}, "Prompt"), h("pre", { class: "prompt" }, rec.prompt));
  if (rec.system) view.append(h("h2", {}, "System prompt"), h("pre", { class: "prompt" }, rec.system));

  const msg = h("div", { class: "action-result", role: "status" });
  const actions = h("div", { class: "actions" });
  if (a) {
    const download = h("button", { type: "button" }, "Download");
    download.addEventListener("click", async () => {
      try {
        const link = h("a", { href: await fileUrl(rec.id), download: `${rec.id}${{ "text/plain": ".txt", "image/png": ".png", "audio/wav": ".wav" }[a.media_type] || ""}` });
        document.body.append(link);
        link.click();
        link.remove();
      } catch (err) {
        msg.replaceChildren(errorBox(err));
      }
    });
    const verify = h("button", { type: "button" }, "Verify");
    verify.addEventListener("click", async () => {
      msg.replaceChildren("Re-hashing the stored file…");
      try {
        const v = await json(`api/v1/content/${encodeURIComponent(rec.id)}/verify`, { method: "POST" });
        msg.replaceChildren(
          h("p", { class: v.intact ? "ok" : "error" }, v.intact ? "Intact: " : "NOT intact: ", v.detail),
          dl([["sha256 now", v.sha256 || "—"], ["recorded", v.expected_sha256], ["size now", v.size_bytes ?? "—"]]),
        );
      } catch (err) {
        msg.replaceChildren(errorBox(err));
      }
    });
    actions.append(download, verify);
  }
  const rerun = h("button", { type: "button" }, "Re-run");
  rerun.addEventListener("click", async () => {
    rerun.disabled = true;
    msg.replaceChildren("Running the same request again as a new record…");
    try {
      const fresh = await json("api/v1/content/generate", { method: "POST", body: JSON.stringify(rerunBody(rec)) });
      const same = a && fresh.artifact && fresh.artifact.sha256 === a.sha256;
      msg.replaceChildren(
        h("p", { class: same ? "ok" : "" }, same ? "Byte-identical output" : a ? "The output differs from this record's" : "New output", ` (sha256 ${fresh.artifact?.sha256?.slice(0, 16)}…). `, h("a", { href: recordHref(fresh.id) }, `New record ${fresh.id}`)),
      );
    } catch (err) {
      msg.replaceChildren(errorBox(err));
    } finally {
      rerun.disabled = false;
    }
  });
  actions.append(rerun);
  if (rec.status === "pending" || rec.status === "running") {
    const card = h("div", {});
    actions.append(card);
    followJob(card, rec, route); // finished: show the final record
  }
  const del = h("button", { type: "button", class: "danger" }, "Delete");
  del.addEventListener("click", () => {
    const yes = h("button", { type: "button", class: "danger" }, "Yes, delete it");
    const no = h("button", { type: "button" }, "Keep it");
    const ask = h("div", { class: "confirm", role: "alertdialog", "aria-label": "Confirm deletion" }, h("p", {}, "Delete this record and its file? This cannot be undone."), yes, no);
    no.addEventListener("click", () => ask.remove());
    yes.addEventListener("click", async () => {
      try {
        const resp = await api(`api/v1/content/${encodeURIComponent(rec.id)}`, { method: "DELETE" });
        if (!resp.ok) throw new ApiError(resp.status, await resp.json().catch(() => null));
        location.hash = "#/history";
      } catch (err) {
        ask.replaceChildren(errorBox(err));
      }
    });
    msg.replaceChildren(ask);
    yes.focus();
  });
  actions.append(del);
  view.append(h("h2", {}, "Actions"), actions, msg);
  view.append(h("details", {}, h("summary", {}, "The whole record (JSON)"), h("pre", {}, JSON.stringify(rec, null, 2))));
}

// --- Models and System -----------------------------------------------------------------------------------
async function renderModels(view) {
  view.append(h("h1", {}, "Models"));
  let data;
  try {
    data = await json("api/v1/models");
  } catch (err) {
    view.append(errorBox(err));
    return;
  }
  const cols = ["Name", "Type", "Engine", "Size", "sha256", "Licence", "Installed"];
  view.append(
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c)))),
      h(
        "tbody",
        {},
        data.items.map((m) =>
          h(
            "tr",
            {},
            h("td", {}, m.name, m.name === data.default_text_model ? " (default)" : "", m.prompt_conditioned === false ? " — ignores the prompt" : ""),
            h("td", {}, m.type),
            h("td", {}, m.engine),
            h("td", {}, fmtBytes(m.size_bytes)),
            h("td", {}, h("code", {}, (m.sha256 || "—").slice(0, 12))),
            h("td", {}, m.license || "—"),
            h("td", {}, m.installed ? "yes" : `no${m.package ? ` — genforge models pull ${m.name}` : ""}`),
          ),
        ),
      ),
    ),
  );
}

async function renderSystem(view) {
  const box = h("div", {});
  view.append(h("h1", {}, "System"), box);
  async function load() {
    let ready;
    try {
      const resp = await api("readyz");
      ready = await resp.json();
    } catch (err) {
      box.replaceChildren(errorBox(err.code ? err : { code: "unreachable", message: String(err) }));
      return;
    }
    const c = ready.checks || {};
    box.replaceChildren(
      h("p", { class: ready.ready ? "ok" : "error" }, ready.ready ? "Ready" : "Not ready"),
      dl([
        ["Queue depth", c.queue?.depth],
        ["Running jobs", c.queue?.running],
        ["Engine worker restarts", c.engine_worker?.restarts],
        ["Engine worker pid", c.engine_worker?.pid ?? "not started"],
      ]),
      h(
        "table",
        {},
        h("thead", {}, h("tr", {}, ["Check", "OK", "Detail"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, Object.entries(c).map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, v.ok ? "yes" : "NO"), h("td", {}, v.detail || "")))),
      ),
    );
  }
  await load();
  page.every(3000, load);
}

// --- routing (#/page, #/content/ID, #/history?filters) --------------------------------------------------------
async function route() {
  if (page) page.dispose();
  page = new Page();
  const view = document.getElementById("view");
  view.replaceChildren();
  const [path, qs] = (location.hash.replace(/^#\/?/, "") || "generate").split("?");
  const params = new URLSearchParams(qs || "");
  const [name, id] = path.split("/");
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === (name === "content" ? "history" : name)) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const pages = { generate: renderGenerate, history: renderHistory, models: renderModels, system: renderSystem };
  try {
    if (name === "content" && id) await renderRecord(view, decodeURIComponent(id));
    else await (pages[name] || renderGenerate)(view, params);
  } catch (err) {
    if (err.name !== "AbortError") view.append(errorBox(err.code ? err : { code: "ui_error", message: String(err) }));
  }
}

setupKeyForm();
window.addEventListener("hashchange", route);
route();
