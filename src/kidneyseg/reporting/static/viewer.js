// kidneyseg viewer: plain JavaScript, no build step.  Slices come from the server in radiological
// display order (rows top->bottom, columns left->right) as grey bytes followed by label bytes.
"use strict";
const $ = (id) => document.getElementById(id);
const EDGES = {axial: ["R", "L", "anterior at the top"], coronal: ["R", "L", "superior at the top"],
               sagittal: ["A", "P", "superior at the top"], image: ["", "", "image as stored"]};
const state = {config: null, study: null, plane: "axial", slice: null, enabled: {}, poll: null};

// The server answers only requests with its token: opening the printed address (/?token=...) set it in an
// HttpOnly cookie, which these same-origin requests (and the download links) carry.
async function api(path, opts) {
  const r = await fetch(path, Object.assign({credentials: "same-origin"}, opts));
  if (!r.ok) {
    let msg = r.status + " " + r.statusText;
    try { msg = (await r.json()).detail || msg; } catch (e) { /* not JSON */ }
    throw new Error(msg);
  }
  return r;
}
function setStatus(text, isError) { const s = $("status"); s.textContent = text; s.className = isError ? "error" : "muted"; }

async function init() {
  state.config = await (await api("/api/config")).json();
  if (state.config.default_models) {
    for (const m of state.config.modalities) { const o = document.createElement("option"); o.value = m; o.textContent = m.toUpperCase(); $("modality").appendChild(o); }
    $("modalityBox").hidden = false;
  }
  const t = $("toggles");
  for (const [v, info] of Object.entries(state.config.labels)) {
    state.enabled[v] = true;
    const l = document.createElement("label");
    l.innerHTML = `<input type="checkbox" data-label="${v}" checked><i class="sw" style="background:rgb(${info.color.join(",")})"></i>${info.name} (${v})`;
    l.querySelector("input").addEventListener("change", (e) => { state.enabled[v] = e.target.checked; draw(); });
    t.appendChild(l);
  }
  const inbox = await (await api("/api/inbox")).json();
  for (const f of inbox.files) { const o = document.createElement("option"); o.value = o.textContent = f; $("inbox").appendChild(o); }
  $("file").addEventListener("change", upload);
  $("open").addEventListener("click", openInbox);
  $("predict").addEventListener("click", predict);
  $("plane").addEventListener("change", () => { state.plane = $("plane").value; resetSlider(); loadSlice(); });
  $("slice").addEventListener("input", loadSlice);
  $("opacity").addEventListener("input", () => { $("opacityLabel").textContent = $("opacity").value + "%"; draw(); });
  // last: the model line appearing means the page is ready (controls wired), which the browser test waits for
  $("model").textContent = state.config.model ? "model: " + state.config.model
                                               : "model: built-in default for the study's modality";
}

async function upload() {
  const f = $("file").files[0];
  if (!f) return;
  if (f.size > state.config.max_upload_bytes) { setStatus(`${f.name} is larger than the upload limit`, true); return; }
  setStatus("uploading " + f.name + " …");
  try {
    const r = await api("/api/upload?name=" + encodeURIComponent(f.name), {method: "POST", body: f});
    await showStudy(await r.json());
    setStatus("opened " + f.name);
  } catch (e) { setStatus(e.message, true); }
}
async function openInbox() {
  const name = $("inbox").value;
  if (!name) return;
  try { await showStudy(await (await api("/api/open?name=" + encodeURIComponent(name), {method: "POST"})).json()); setStatus("opened " + name); }
  catch (e) { setStatus(e.message, true); }
}

async function showStudy(info) {
  state.study = info;
  $("study").textContent = `${info.name}: ${info.shape.join(" × ")} voxels, ${info.spacing_mm.join(" × ")} mm` + (info.modality ? `, ${info.modality}` : "");
  const p = $("plane"); p.innerHTML = "";
  for (const name of Object.keys(info.planes)) { const o = document.createElement("option"); o.value = o.textContent = name; p.appendChild(o); }
  state.plane = Object.keys(info.planes)[0];
  p.value = state.plane;
  $("predict").disabled = !(state.config.model || state.config.default_models);
  resetSlider();
  await loadSlice();
  showVolumes(info.volumes);
  setDownloads(info.has_label);
}
function resetSlider() {
  const n = state.study.planes[state.plane];
  const s = $("slice"); s.max = n - 1; s.value = Math.floor((n - 1) / 2);
}
async function loadSlice() {
  if (!state.study) return;
  const idx = +$("slice").value;
  $("sliceLabel").textContent = `${idx + 1} / ${state.study.planes[state.plane]}`;
  const r = await api(`/api/studies/${state.study.id}/slice?plane=${state.plane}&index=${idx}`);
  const rows = +r.headers.get("X-Rows"), cols = +r.headers.get("X-Cols");
  const rowMm = +r.headers.get("X-Row-Mm"), colMm = +r.headers.get("X-Col-Mm");
  const buf = new Uint8Array(await r.arrayBuffer());
  if (+$("slice").value !== idx) return;  // a newer request is on its way
  state.slice = {rows, cols, rowMm, colMm, grey: buf.subarray(0, rows * cols), label: buf.subarray(rows * cols)};
  draw();
}
function draw() {
  const s = state.slice;
  if (!s) return;
  const c = $("view");
  if (c.width !== s.cols || c.height !== s.rows) { c.width = s.cols; c.height = s.rows; }
  // true proportions: scale so the longer side is about 560 CSS pixels
  const wmm = s.cols * s.colMm, hmm = s.rows * s.rowMm, k = 560 / Math.max(wmm, hmm);
  c.style.width = Math.round(wmm * k) + "px"; c.style.height = Math.round(hmm * k) + "px";
  const ctx = c.getContext("2d");
  const img = ctx.createImageData(s.cols, s.rows);
  const a = +$("opacity").value / 100, colours = {};
  for (const [v, info] of Object.entries(state.config.labels)) if (state.enabled[v]) colours[v] = info.color;
  for (let i = 0; i < s.rows * s.cols; i++) {
    const g = s.grey[i], col = colours[s.label[i]];
    let r = g, gg = g, b = g;
    if (col) { r = (1 - a) * g + a * col[0]; gg = (1 - a) * g + a * col[1]; b = (1 - a) * g + a * col[2]; }
    img.data[4 * i] = r; img.data[4 * i + 1] = gg; img.data[4 * i + 2] = b; img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  const e = EDGES[state.plane] || ["", "", ""];
  $("edgeL").textContent = e[0]; $("edgeR").textContent = e[1];
  $("edgeTB").textContent = `${state.plane}: radiological convention, ${e[2]}`;
}

async function predict() {
  $("predict").disabled = true;
  try {
    const m = $("modality").value;  // "" = guessed by the server (DICOM modality, 2D = US, HU = CT)
    await api(`/api/studies/${state.study.id}/predict` + (m ? "?modality=" + encodeURIComponent(m) : ""), {method: "POST"});
    state.poll = setInterval(pollJob, 300);
  } catch (e) { setStatus(e.message, true); $("predict").disabled = false; }
}
async function pollJob() {
  const info = await (await api(`/api/studies/${state.study.id}`)).json();
  $("progress").value = info.job.progress;
  setStatus(`${info.job.message} (${Math.round(100 * info.job.progress)}%)`, info.job.state === "error");
  if (info.job.state === "done" || info.job.state === "error") {
    clearInterval(state.poll);
    $("predict").disabled = false;
    if (info.job.state === "done") {
      state.study = Object.assign(state.study, {has_label: true, volumes: info.volumes});
      await loadSlice();
      showVolumes(info.volumes);
      setDownloads(true);
      setStatus("prediction done");
    }
  }
}

function showVolumes(v) {
  const box = $("volumes");
  if (!v) return;
  const keys = [["kidney + masses", "kidney"], ["parenchyma", "parenchyma"], ["tumour", "tumor"], ["cyst", "cyst"]];
  const f = (x) => (typeof x === "number" ? x.toFixed(1) : x);
  let html;
  if (v.image) {
    html = "<table><tr><th>measure (mm²)</th><th>image</th></tr>" +
      keys.map(([t, k]) => `<tr><td>${t}</td><td>${f(v.image[k + "_mm2"])}</td></tr>`).join("") + "</table>";
  } else {
    const R = v.kidneys.right, L = v.kidneys.left, T = v.total;
    html = "<table id='volumesTable'><tr><th>measure (mL)</th><th>right kidney</th><th>left kidney</th><th>total</th></tr>" +
      keys.map(([t, k]) => `<tr><td>${t}</td><td>${f(R[k + "_ml"])}</td><td>${f(L[k + "_ml"])}</td><td>${f(T[k + "_ml"])}</td></tr>`).join("") +
      `<tr><td>tumours / cysts</td><td>${R.tumor_count} / ${R.cyst_count}</td><td>${L.tumor_count} / ${L.cyst_count}</td><td>${T.tumor_count} / ${T.cyst_count}</td></tr></table>` +
      "<p class='muted'>Right and left in patient space (from the image affine).</p>";
  }
  box.innerHTML = html; box.className = "";
  for (const w of (v.warnings || [])) {  // text, never HTML
    const p = document.createElement("p"); p.className = "error warning"; p.textContent = "Warning: " + w;
    box.insertBefore(p, box.firstChild);
  }
}
function setDownloads(has) {
  for (const [id, what] of [["dlLabel", "label"], ["dlReport", "report"]]) {
    const a = $(id);
    a.href = has ? `/api/studies/${state.study.id}/${what}` : "#";
    a.classList.toggle("disabled", !has);
  }
}
init().catch((e) => setStatus(e.message, true));
