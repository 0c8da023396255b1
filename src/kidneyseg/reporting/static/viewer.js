// kidneyseg viewer page: plain JavaScript, no build step.  The study is drawn by NiiVue through kviewer.js
// (three planes + 3D, window/level, overlays); volumes come as NIfTI from this same server.
"use strict";
const $ = (id) => document.getElementById(id);
const state = {config: null, study: null, viewer: null, poll: null};

// The server answers only requests with its token: opening the printed address (/?token=...) set it in an
// HttpOnly cookie, which these same-origin requests (NiiVue's volume fetches and the download links) carry.
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
const niftiUrl = (what) => ({url: `/api/studies/${state.study.id}/nifti/${what}.nii`, name: `${what}.nii`});

async function init() {
  state.config = await (await api("/api/config")).json();
  if (state.config.default_models) {
    for (const m of state.config.modalities) { const o = document.createElement("option"); o.value = m; o.textContent = m.toUpperCase(); $("modality").appendChild(o); }
    $("modalityBox").hidden = false;
  }
  const inbox = await (await api("/api/inbox")).json();
  for (const f of inbox.files) { const o = document.createElement("option"); o.value = o.textContent = f; $("inbox").appendChild(o); }
  $("file").addEventListener("change", upload);
  $("open").addEventListener("click", openInbox);
  $("predict").addEventListener("click", predict);
  $("slice").addEventListener("input", () => { if (state.viewer) state.viewer.setSlice(2, +$("slice").value); });
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
  const w = info.window;
  const win = {modality: info.modality_shown, auto_low: w.low, auto_high: w.high};
  if (!state.viewer) state.viewer = new KidneyViewer($("view"), state.config.labels, win);
  else state.viewer.window = win;
  const v = state.viewer;
  await v.open(niftiUrl("image"), info.has_label ? niftiUrl("label") : null,
               info.has_uncertainty ? niftiUrl("uncertainty") : null);
  kidneyViewerControls($("controls"), v, info.has_uncertainty);
  v._emitWindow();
  const n = v.sliceCount(2), s = $("slice");
  s.max = n - 1; s.value = v.sliceIndex(2);
  $("sliceLabel").textContent = `${+s.value + 1} / ${n}`;
  v.listeners.push(() => { s.value = v.sliceIndex(2); $("sliceLabel").textContent = `${+s.value + 1} / ${n}`; });
  $("predict").disabled = !(state.config.model || state.config.default_models);
  showVolumes(info.volumes);
  if (!info.volumes && info.comparison) { const box = $("volumes"); box.textContent = ""; box.appendChild(followupBox(info.comparison)); }
  setDownloads(info.has_label);
  // the study line last: the browser test waits for it, then for NiiVue to have drawn
  $("study").textContent = `${info.name}: ${info.shape.join(" × ")} voxels, ${info.spacing_mm.join(" × ")} mm` +
    (info.modality_shown ? `, ${info.modality_shown}` + (info.modality ? "" : " (from the intensities)") : "");
  $("viewbox").dataset.ready = "image";
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
      state.study = Object.assign(state.study, {has_label: true, volumes: info.volumes, has_uncertainty: info.has_uncertainty});
      await state.viewer.setLabel(niftiUrl("label"));
      if (info.has_uncertainty) { await state.viewer.setUncertainty(niftiUrl("uncertainty")); $("uncBox").hidden = false; }
      showVolumes(info.volumes);
      setDownloads(true);
      $("viewbox").dataset.ready = "label";
      setStatus("prediction done");
    }
  }
}

const f1 = (x) => (typeof x === "number" ? x.toFixed(1) : (x === null || x === undefined ? "–" : x));
function td(text, cls) { const e = document.createElement("td"); e.textContent = text; if (cls) e.className = cls; return e; }
function th(text) { const e = document.createElement("th"); e.textContent = text; return e; }

// RENAL of one tumour: "R1 E1 N? L3 a (R+E+L 5)"; its parts (and why N is not given) in the tooltip
function renalText(r) { return `${r.notation} (R+E+L ${r.score_without_n === null ? "–" : r.score_without_n})`; }
function renalParts(r) {
  const e = r.E.points === null ? "not available (too little parenchyma for an outline)"
    : `${r.E.points} (${Math.round(100 * r.E.exophytic_share)} % outside)`;
  return `R ${r.R.points} (${r.R.max_diameter_cm.toFixed(1)} cm); E ${e}; N not available: ${r.N.reason}; ` +
    `A ${r.A.descriptor}; L ${r.L.points === null ? "not available" : r.L.points} (${r.L.polar_lines_from || ""})`;
}

// one row per structure (kidney per side, each tumour, each cyst): click to jump there; QC and RENAL columns
// when the volumes carry them
function structuresTable(v) {
  const rows = [];
  for (const side of ["right", "left"]) {
    const k = (v.kidneys || {})[side];
    if (!k) continue;
    if (k.centroid_ras_mm) rows.push([`${side} kidney`, k.kidney_ml, null, k.centroid_ras_mm, k.qc, null]);
    for (const t of k.tumors || []) rows.push([`${side} tumour ${t.id}`, t.volume_ml, t.max_diameter_mm, t.centroid_ras_mm, t.qc, t.renal]);
    for (const c of k.cysts || []) rows.push([`${side} cyst ${c.id}`, c.volume_ml, c.max_diameter_mm, c.centroid_ras_mm, c.qc, null]);
  }
  if (!rows.length) return null;
  const hasQc = rows.some((r) => r[4]), hasRenal = rows.some((r) => r[5]);
  const t = document.createElement("table"); t.id = "structuresTable";
  const h = document.createElement("tr");
  for (const x of ["structure (click: show)", "volume (mL)", "max diameter (mm)", "centre RAS (mm)"]
    .concat(hasQc ? ["QC"] : [], hasRenal ? ["RENAL"] : [])) h.appendChild(th(x));
  t.appendChild(h);
  for (const [name, ml, d, mm, qc, renal] of rows) {
    const tr = document.createElement("tr");
    tr.setAttribute("data-mm", mm.join(","));
    tr.append(td(name), td(f1(ml)), td(f1(d)), td(mm.map((x) => x.toFixed(0)).join(", ")));
    if (hasQc) tr.appendChild(qc ? td(`${qc.flag} (${(+qc.score).toFixed(2)})`, "qc-" + qc.flag) : td("–"));
    if (hasRenal) {
      const c = renal ? td(renalText(renal), "renal") : td("–");
      if (renal) c.title = renalParts(renal);
      tr.appendChild(c);
    }
    t.appendChild(tr);
  }
  return t;
}

// notes under the table: the QC rule, RENAL's parts per tumour (or why there is no RENAL score)
function structureNotes(v) {
  const box = document.createElement("div"); box.id = "structureNotes";
  const note = (text, id) => { const p = document.createElement("p"); p.className = "muted"; p.textContent = text; if (id) p.id = id; box.appendChild(p); };
  if (v.qc) note(`QC: ${v.qc.flag_rule} (${v.qc.method}); it cannot flag a structure the model missed.`, "qcRule");
  const renal = v.renal || {};
  if (renal.available) {
    for (const side of ["right", "left"]) for (const t of ((v.kidneys || {})[side] || {}).tumors || [])
      if (t.renal) note(`RENAL ${side} tumour ${t.id}: ${renalParts(t.renal)}`);
  } else if (renal.reason) note(`RENAL nephrometry: not available: ${renal.reason}.`, "renalStatus");
  return box;
}

// the follow-up comparison (NAME_compare.json beside the study in the inbox): changes per tumour, new, vanished
function followupBox(c) {
  const box = document.createElement("div"); box.id = "followup";
  const h = document.createElement("h3"); h.textContent = "Follow-up comparison"; box.appendChild(h);
  const p = document.createElement("p"); p.className = "muted";
  const who = (s) => `${(s || {}).name || "?"} (${(s || {}).study_date || "date unknown"})`;
  p.textContent = `Before: ${who(c.before)}; after: ${who(c.after)}; interval ` +
    (c.interval_days === null || c.interval_days === undefined ? "unknown (no growth per year)" : `${c.interval_days.toFixed(0)} days`) + ".";
  box.appendChild(p);
  const table = (head, rows) => {
    const t = document.createElement("table"); const tr = document.createElement("tr");
    for (const x of head) tr.appendChild(th(x)); t.appendChild(tr);
    for (const r of rows) { const row = document.createElement("tr"); for (const x of r) row.appendChild(td(x)); t.appendChild(row); }
    return t;
  };
  const f = (x, d) => (x === null || x === undefined ? "–" : (+x).toFixed(d));
  const sgn = (x, d) => (x === null || x === undefined ? "–" : ((x > 0 ? "+" : "") + (+x).toFixed(d)));
  const tumours = (c.tumours || []).map((t) => [`${t.side} ${t.before_id} → ${t.after_id}`, f(t.tumour_volume_before_ml, 2),
    f(t.tumour_volume_after_ml, 2), sgn(t.tumour_volume_change_ml, 2), sgn(t.tumour_volume_change_percent, 1) + " %",
    sgn(t.tumour_max_diameter_change_mm, 1), sgn(t.tumour_volume_growth_ml_per_year, 2), f(t.tumour_volume_doubling_time_days, 0)]);
  const t1 = table(["tumour", "before (mL)", "after (mL)", "change (mL)", "change", "diameter change (mm)", "mL / year",
                    "doubling time (days)"], tumours);
  t1.id = "followupTumours"; box.appendChild(t1);
  const lesions = [];
  for (const t of c.new_tumours || []) lesions.push(["new", `${t.side} ${t.after_id}`, f(t.tumour_volume_ml, 2), f(t.tumour_max_diameter_mm, 1)]);
  for (const t of c.vanished_tumours || []) lesions.push(["vanished", `${t.side} ${t.before_id}`, f(t.tumour_volume_ml, 2), f(t.tumour_max_diameter_mm, 1)]);
  if (lesions.length) { const t2 = table(["", "tumour", "volume (mL)", "max diameter (mm)"], lesions); t2.id = "followupLesions"; box.appendChild(t2); }
  return box;
}

function showVolumes(v) {
  const box = $("volumes");
  if (!v) return;
  const keys = [["kidney + masses", "kidney"], ["parenchyma", "parenchyma"], ["tumour", "tumor"], ["cyst", "cyst"]];
  let html;
  if (v.image) {
    html = "<table><tr><th>measure (mm²)</th><th>image</th></tr>" +
      keys.map(([t, k]) => `<tr><td>${t}</td><td>${f1(v.image[k + "_mm2"])}</td></tr>`).join("") + "</table>";
  } else {
    const R = v.kidneys.right, L = v.kidneys.left, T = v.total;
    html = "<table id='volumesTable'><tr><th>measure (mL)</th><th>right kidney</th><th>left kidney</th><th>total</th></tr>" +
      keys.map(([t, k]) => `<tr><td>${t}</td><td>${f1(R[k + "_ml"])}</td><td>${f1(L[k + "_ml"])}</td><td>${f1(T[k + "_ml"])}</td></tr>`).join("") +
      `<tr><td>tumours / cysts</td><td>${R.tumor_count} / ${R.cyst_count}</td><td>${L.tumor_count} / ${L.cyst_count}</td><td>${T.tumor_count} / ${T.cyst_count}</td></tr></table>` +
      "<p class='muted'>Right and left in patient space (from the image affine).</p>";
  }
  box.innerHTML = html; box.className = "";
  if (!v.image) {
    const st = structuresTable(v);
    if (st) { box.appendChild(st); kidneyViewerLinkTable(st, state.viewer); }
    box.appendChild(structureNotes(v));
  }
  if (state.study && state.study.comparison) box.appendChild(followupBox(state.study.comparison));
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
