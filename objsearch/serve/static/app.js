// objsearch search page: plain JS, no build step, nothing loaded from outside this server.
// The query lives in the URL (?q=, ?object=, label, min, one, where), so a search can be shared
// and the back button works; a search by an uploaded photo lives in the session's history only.
"use strict";

const API = "/api/v1";
const PAGE_SIZE = 24;
const MODES = ["vector", "keyword", "hybrid"]; // how a text query ranks objects (the API's "mode")
const $ = (id) => document.getElementById(id);

const state = {
  query: null,          // {text | object | upload, label, min, perImage, where}
  hits: [],
  nextOffset: null,
  loading: null,        // the query whose page is being fetched
  generation: null,
  token: sessionStorage.getItem("objsearch-token"),
  uploads: new Map(),   // history id -> {dataUrl, box, name}
  info: null,
};

// ---------------------------------------------------------------- API
class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

let tokenPrompt = null;
function askToken() {
  if (!tokenPrompt) {
    tokenPrompt = new Promise((resolve) => {
      const dialog = $("token-dialog");
      $("token-form").onsubmit = () => {
        state.token = $("token").value.trim();
        sessionStorage.setItem("objsearch-token", state.token);
        tokenPrompt = null;
        resolve();
      };
      dialog.showModal();
    });
  }
  return tokenPrompt;
}

function authHeaders(extra = {}) {
  return state.token ? { ...extra, Authorization: "Bearer " + state.token } : extra;
}

// A call of the JSON API; ``as: "blob"`` gives a successful response's body as a Blob (a file).
async function api(path, options = {}) {
  const { as, ...request } = options;
  const response = await fetch(API + path, { ...request, headers: authHeaders(request.headers) });
  if (response.status === 401) {
    await askToken();
    return api(path, options);
  }
  if (as === "blob" && response.ok) return response.blob();
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) {
    throw new ApiError(body && body.error ? body.error : `${response.status} ${response.statusText}`, response.status);
  }
  return body;
}

// Pictures: a plain URL, or with a token a fetch that sends it (an <img> cannot send headers).
function showPicture(img, url) {
  if (!state.token) { img.src = url; return; }
  fetch(url, { headers: authHeaders() })
    .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(String(r.status)))))
    .then((blob) => {
      const local = URL.createObjectURL(blob);
      img.addEventListener("load", () => URL.revokeObjectURL(local), { once: true });
      img.src = local;
    })
    .catch(() => { img.alt = "picture not available"; });
}

// ---------------------------------------------------------------- query <-> URL
function queryFromUrl() {
  const p = new URLSearchParams(location.search);
  const query = {
    label: p.get("label") || "",
    min: p.get("min") || "",
    perImage: p.get("one") === "1",
    where: p.get("where") || "",
    mode: MODES.includes(p.get("mode")) ? p.get("mode") : "vector",
    dedup: p.get("dedup") === "1",
  };
  if (p.get("object")) query.object = p.get("object");
  else if (p.get("q")) query.text = p.get("q");
  else if (p.get("photo") && history.state && state.uploads.has(history.state.upload)) query.upload = history.state.upload;
  else if (p.get("photo")) query.lostUpload = p.get("photo");
  return query;
}

function urlOf(query) {
  const p = new URLSearchParams();
  if (query.text) p.set("q", query.text);
  if (query.object) p.set("object", query.object);
  if (query.upload) p.set("photo", state.uploads.get(query.upload).name);
  if (query.label) p.set("label", query.label);
  if (query.min !== "") p.set("min", query.min);
  if (query.perImage) p.set("one", "1");
  if (query.where) p.set("where", query.where);
  if (query.mode && query.mode !== "vector") p.set("mode", query.mode);
  if (query.dedup) p.set("dedup", "1");
  const text = p.toString();
  return text ? "?" + text : location.pathname;
}

function filtersOf(query) {
  return { ...query, label: $("label-filter").value, min: $("min-similarity").value.trim(),
           perImage: $("per-image").checked, where: $("where").value.trim(), mode: $("mode").value,
           dedup: $("dedup").checked };
}

function showFilters(query) {
  $("q").value = query.text || "";
  $("min-similarity").value = query.min;
  $("per-image").checked = query.perImage;
  $("where").value = query.where;
  $("mode").value = query.mode || "vector";
  $("dedup").checked = Boolean(query.dedup);
  $("min-similarity").disabled = usesWords(query); // a similarity floor applies to vector search only
  ensureLabelOption(query.label);
  $("label-filter").value = query.label;
}

function sqlString(text) { return "'" + text.replace(/'/g, "''") + "'"; }

function combinedWhere(query) {
  const parts = [];
  if (query.label) parts.push(`label = ${sqlString(query.label)}`);
  if (query.where) parts.push(`(${query.where})`);
  return parts.join(" AND ");
}

// ---------------------------------------------------------------- searching
// The options of a search request (POST /search and /export bodies, GET /search parameters).
function searchOptions(query) {
  const options = { per_image: query.perImage };
  const where = combinedWhere(query);
  if (where) options.where = where;
  if (query.min !== "" && !usesWords(query)) options.min_similarity = Number(query.min);
  if (usesWords(query)) options.mode = query.mode;
  if (query.dedup) options.dedup = true;
  return options;
}

// What a POST body searches for: the text, the object, or the uploaded photo (and its box).
function searchSubject(query) {
  if (query.upload) {
    const upload = state.uploads.get(query.upload);
    return upload.box ? { image: upload.dataUrl, box: upload.box } : { image: upload.dataUrl };
  }
  return query.text ? { text: query.text } : { object_id: Number(query.object) };
}

function postJson(body) {
  return { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
}

function search(query, { push = true } = {}) {
  if (push) {
    const historyState = query.upload ? { upload: query.upload } : null;
    history.pushState(historyState, "", urlOf(query));
  }
  state.query = query;
  state.hits = [];
  state.nextOffset = null;
  $("results").replaceChildren();
  $("download").disabled = true;
  showFilters(query);
  describeQuery(query);
  if (query.lostUpload) {
    showMessage(`The photo "${query.lostUpload}" is not kept across page loads: pick it again with “Search by photo…”.`);
    return;
  }
  if (!query.text && !query.object && !query.upload) {
    hideMessage();
    if (state.info && state.info.objects === 0) showEmptyIndex();
    return;
  }
  fetchPage(0);
}

function describeQuery(query) {
  let what = "";
  if (query.text) what = `“${query.text}”`;
  else if (query.object) what = `objects like object ${query.object}`;
  else if (query.upload) what = `objects like a region of ${state.uploads.get(query.upload).name}`;
  $("query-line").textContent = what ? "Results for " + what : "";
}

async function fetchPage(offset) {
  const query = state.query;
  if (!query || state.loading === query) return; // a newer query's first page never waits for an older one's
  state.loading = query;
  $("more").disabled = true;
  if (offset === 0) showMessage("Searching…");
  const options = { k: PAGE_SIZE, offset, ...searchOptions(query) };
  const where = options.where;
  try {
    let response;
    if (query.upload) {
      response = await api("/search", postJson({ ...options, ...searchSubject(query) }));
    } else {
      const params = new URLSearchParams(Object.entries(options).map(([k, v]) => [k, String(v)]));
      if (query.text) params.set("text", query.text); else params.set("object_id", query.object);
      response = await api("/search?" + params.toString());
    }
    if (query !== state.query) return; // a newer search started meanwhile
    state.hits.push(...response.hits);
    state.nextOffset = response.next_offset;
    response.hits.forEach((hit) => $("results").appendChild(card(hit)));
    $("download").disabled = state.hits.length === 0;
    if (state.hits.length === 0) {
      if (state.info && state.info.objects === 0) showEmptyIndex();
      else showMessage(where || query.min !== "" ? "No results. Try removing a filter." : "No results.");
    } else {
      hideMessage();
    }
    if (response.generation !== state.generation) loadInfo();
  } catch (error) {
    if (query === state.query) showError(error);
  } finally {
    if (state.loading === query) {
      state.loading = null;
      $("more").disabled = false;
      $("more").hidden = state.nextOffset === null;
    }
  }
}

function showError(error) {
  let text = error.message;
  if (error.status === 400 && /predicate|SQL/i.test(text)) text = "Bad filter: " + text;
  else if (error.status === 503) text = "The index is not available: " + text;
  else if (error.status === 504) text = "The search took too long: " + text;
  else if (!(error instanceof ApiError)) text = "The server cannot be reached (" + text + ").";
  showMessage(text, true);
}

function showMessage(text, isError = false) {
  const message = $("message");
  message.textContent = text;
  message.classList.toggle("error", isError);
  message.hidden = false;
}

function hideMessage() { $("message").hidden = true; }

function showEmptyIndex() {
  showMessage(`This index has no objects yet. Run "objsearch index YOUR_PHOTOS --index ${state.info.index}"; ` +
              "this page finds what it adds without a restart.");
}

function formatSimilarity(value) { return value.toFixed(3); }

// The score a hit is ranked by, as [text, what it is]: a hybrid hit's fused score (with the two it
// fuses), a keyword hit's BM25 score, or a vector hit's similarity.
function rankingScore(hit) {
  if (hit.fused_score !== null && hit.fused_score !== undefined) {
    const parts = [];
    if (hit.similarity !== null) parts.push(`similarity ${formatSimilarity(hit.similarity)}`);
    if (hit.keyword_score !== null) parts.push(`keyword score ${formatSimilarity(hit.keyword_score)}`);
    return [hit.fused_score.toFixed(4), `fused score (reciprocal rank fusion of ${parts.join(" and ") || "nothing"})`];
  }
  if (hit.similarity === null) return [formatSimilarity(hit.keyword_score), "keyword score (BM25)"];
  return [formatSimilarity(hit.similarity), "similarity"];
}

// A text query in keyword or hybrid mode: ranked (also) by its words; other queries search by vector.
function usesWords(query) { return Boolean(query.text) && query.mode !== undefined && query.mode !== "vector"; }

function card(hit) {
  const element = document.createElement("article");
  element.className = "card";
  element.dataset.objectId = hit.object_id;
  element.dataset.imageId = hit.image_id;
  element.dataset.label = hit.label;
  element.dataset.path = hit.path;
  element.dataset.box = hit.box.map((v) => Math.round(v)).join(",");
  const thumb = document.createElement("button");
  thumb.className = "thumb";
  thumb.title = "Show on the photo";
  const img = document.createElement("img");
  img.loading = "lazy";
  img.alt = hit.caption || hit.label;
  showPicture(img, hit.crop_url);
  thumb.appendChild(img);
  thumb.onclick = () => openDetail(hit.object_id, hit.similarity);
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.innerHTML = '<div class="row"><span class="label"></span><span class="sim"></span></div><div class="caption"></div>';
  meta.querySelector(".label").textContent = hit.label;
  const [score, scoreName] = rankingScore(hit);
  meta.querySelector(".sim").textContent = score;
  meta.querySelector(".sim").title = scoreName;
  meta.querySelector(".caption").textContent = hit.caption || "";
  meta.querySelector(".caption").title = hit.path;
  meta.appendChild(likeButton(hit.object_id, { className: "like" }));
  element.append(thumb, meta);
  return element;
}

function likeButton(objectId, attributes) {
  const button = Object.assign(document.createElement("button"), attributes);
  button.textContent = "More like this";
  button.onclick = () => moreLike(objectId);
  return button;
}

function moreLike(objectId) {
  closeDialogs();
  search({ ...filtersOf({}), object: String(objectId), label: "" });
}

// ---------------------------------------------------------------- one object on its photo
async function openDetail(objectId, similarity) {
  const dialog = $("detail");
  try {
    const object = await api(`/objects/${objectId}`);
    const image = await api(`/images/${object.image_id}`);
    const svg = $("detail-boxes");
    svg.setAttribute("viewBox", `0 0 ${image.width} ${image.height}`);
    svg.replaceChildren();
    const select = (id) => {
      svg.querySelectorAll("rect").forEach((r) => r.setAttribute("class", Number(r.dataset.objectId) === id ? "selected" : "other"));
      const chosen = image.objects.find((o) => o.object_id === id) || object;
      describeObject(chosen, id === objectId ? similarity : null, image);
      const selected = svg.querySelector("rect.selected");
      if (selected) svg.appendChild(selected); // drawn on top
    };
    for (const o of image.objects) {
      const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
      const [x1, y1, x2, y2] = o.box;
      Object.entries({ x: x1, y: y1, width: Math.max(x2 - x1, 1), height: Math.max(y2 - y1, 1) })
        .forEach(([k, v]) => rect.setAttribute(k, v));
      rect.dataset.objectId = o.object_id;
      rect.dataset.label = o.label;
      const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
      title.textContent = o.caption || o.label;
      rect.appendChild(title);
      rect.addEventListener("click", () => select(o.object_id));
      svg.appendChild(rect);
    }
    $("detail-title").textContent = image.path.split("/").pop();
    showPicture($("detail-image"), `${image.image_url}?size=1600`);
    select(objectId);
    if (!dialog.open) dialog.showModal();
  } catch (error) {
    showError(error);
  }
}

function describeObject(object, similarity, image) {
  const meta = $("detail-meta");
  meta.replaceChildren();
  const list = document.createElement("dl");
  const rows = [
    ["label", object.label],
    ["caption", object.caption || "—"],
    ...(similarity !== null && similarity !== undefined ? [["similarity", formatSimilarity(similarity)]] : []),
    ["detector score", object.det_score.toFixed(3)],
    ["box", object.box.map((v) => Math.round(v)).join(", ") + " px"],
    ["photo", `${image.path} (${image.width} × ${image.height})`],
    ["object id", String(object.object_id)],
  ];
  for (const [name, value] of rows) {
    const dt = document.createElement("dt"); dt.textContent = name;
    const dd = document.createElement("dd"); dd.textContent = value;
    list.append(dt, dd);
  }
  const actions = document.createElement("div");
  actions.className = "actions";
  actions.appendChild(likeButton(object.object_id, { id: "detail-like" }));
  meta.append(list, actions);
  meta.dataset.objectId = object.object_id;
}

// ---------------------------------------------------------------- search by a region of a photo
const region = { dataUrl: null, name: null, box: null, start: null };

function loadUpload(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) {
    $("region-status").textContent = `${file.name} is not an image.`;
    return;
  }
  const reader = new FileReader();
  reader.onload = () => {
    region.dataUrl = reader.result;
    region.name = file.name;
    region.box = null;
    $("region-box").hidden = true;
    $("region-image").src = reader.result;
    $("region-photo").hidden = false;
    $("drop-zone").hidden = true;
    $("region-search").disabled = false;
    $("region-status").textContent = "Drag a box around the object, or search the whole photo.";
  };
  reader.readAsDataURL(file);
}

function regionPoint(event) {
  const rect = $("region-image").getBoundingClientRect();
  return {
    x: Math.min(Math.max(event.clientX - rect.left, 0), rect.width),
    y: Math.min(Math.max(event.clientY - rect.top, 0), rect.height),
  };
}

function drawRegion(a, b) {
  const box = $("region-box");
  Object.assign(box.style, {
    left: Math.min(a.x, b.x) + "px", top: Math.min(a.y, b.y) + "px",
    width: Math.abs(b.x - a.x) + "px", height: Math.abs(b.y - a.y) + "px",
  });
  box.hidden = false;
}

function setupRegion() {
  const photo = $("region-photo");
  photo.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    region.start = regionPoint(event);
    photo.setPointerCapture(event.pointerId);
  });
  photo.addEventListener("pointermove", (event) => {
    if (region.start) drawRegion(region.start, regionPoint(event));
  });
  photo.addEventListener("pointerup", (event) => {
    if (!region.start) return;
    const end = regionPoint(event);
    const image = $("region-image");
    const scale = image.naturalWidth / image.getBoundingClientRect().width;
    const [x1, x2] = [region.start.x, end.x].sort((a, b) => a - b).map((v) => v * scale);
    const [y1, y2] = [region.start.y, end.y].sort((a, b) => a - b).map((v) => v * scale);
    region.start = null;
    if (x2 - x1 < 4 || y2 - y1 < 4) {
      region.box = null;
      $("region-box").hidden = true;
      $("region-status").textContent = "No box: the whole photo will be searched.";
      return;
    }
    region.box = [x1, y1, x2, y2].map((v) => Math.round(v));
    $("region-status").textContent = `Box ${region.box.join(", ")} px.`;
  });
  const zone = $("drop-zone");
  ["dragenter", "dragover"].forEach((name) => zone.addEventListener(name, (e) => { e.preventDefault(); zone.classList.add("over"); }));
  ["dragleave", "drop"].forEach((name) => zone.addEventListener(name, (e) => { e.preventDefault(); zone.classList.remove("over"); }));
  zone.addEventListener("drop", (e) => loadUpload(e.dataTransfer.files[0]));
  $("upload").addEventListener("change", (e) => loadUpload(e.target.files[0]));
  $("region-search").addEventListener("click", () => {
    const id = "u" + (state.uploads.size + 1);
    state.uploads.set(id, { dataUrl: region.dataUrl, box: region.box, name: region.name });
    closeDialogs();
    search({ ...filtersOf({}), upload: id, label: $("label-filter").value });
  });
  $("photo-button").addEventListener("click", () => {
    $("drop-zone").hidden = false;
    $("region-photo").hidden = true;
    $("region-search").disabled = true;
    $("region-status").textContent = "";
    $("region").showModal();
  });
}

// ---------------------------------------------------------------- index information and facets
async function loadInfo() {
  try {
    const info = await api("/info");
    state.info = info;
    state.generation = info.generation;
    const model = info.model ? info.model.name : "";
    $("index-info").textContent = `${info.objects.toLocaleString()} objects in ${info.images.toLocaleString()} photos · ${model}`;
    const labels = await api("/labels");
    const select = $("label-filter");
    const chosen = select.value;
    select.replaceChildren(new Option("all labels", ""));
    labels.forEach((l) => select.appendChild(new Option(`${l.label} (${l.count.toLocaleString()})`, l.label)));
    ensureLabelOption(chosen);
    select.value = chosen;
    if (info.objects === 0 && (!state.query || (!state.query.text && !state.query.object && !state.query.upload))) showEmptyIndex();
  } catch (error) {
    showError(error);
  }
}

function ensureLabelOption(label) {
  const select = $("label-filter");
  if (label && ![...select.options].some((o) => o.value === label)) select.appendChild(new Option(label, label));
}

// ---------------------------------------------------------------- wiring
function closeDialogs() {
  document.querySelectorAll("dialog[open]").forEach((d) => d.close());
}

// The results shown, as JSON (what the page holds), or as CSV or a COCO detection file (made by
// the server's /export from the same search, as deep as the results shown).
async function download() {
  const format = $("download-format").value;
  if (format === "json") {
    const body = JSON.stringify({ query: { ...state.query, upload: undefined }, hits: state.hits }, null, 2);
    save(new Blob([body], { type: "application/json" }), "objsearch-results.json");
    return;
  }
  const query = state.query;
  try {
    const file = await api("/export", { ...postJson({ ...searchOptions(query), ...searchSubject(query), k: state.hits.length, format }), as: "blob" });
    save(file, format === "csv" ? "objsearch-results.csv" : "objsearch-results.coco.json");
  } catch (error) {
    showError(error);
  }
}

function save(blob, name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

function setup() {
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("q").value.trim();
    if (text) search({ ...filtersOf({}), text });
  });
  const refilter = () => { if (state.query && (state.query.text || state.query.object || state.query.upload)) search(filtersOf(state.query)); };
  $("label-filter").addEventListener("change", refilter);
  $("per-image").addEventListener("change", refilter);
  $("min-similarity").addEventListener("change", refilter);
  $("mode").addEventListener("change", refilter);
  $("dedup").addEventListener("change", refilter);
  $("where").addEventListener("keydown", (event) => { if (event.key === "Enter") refilter(); });
  $("more").addEventListener("click", () => fetchPage(state.nextOffset));
  $("download").addEventListener("click", download);
  document.querySelectorAll("[data-close]").forEach((b) => b.addEventListener("click", closeDialogs));
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting) && state.nextOffset !== null && state.loading === null) fetchPage(state.nextOffset);
  }, { rootMargin: "400px" }).observe($("sentinel"));
  window.addEventListener("popstate", () => { closeDialogs(); search(queryFromUrl(), { push: false }); });
  setupRegion();
  search(queryFromUrl(), { push: false }); // before anything is typed: it fills the search box from the URL
  loadInfo();
}

setup();
