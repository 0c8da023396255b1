// kidneyseg's NiiVue viewer, shared by `kidneyseg serve` (viewer.js) and the HTML report (`--viewer`).
// Plain JavaScript over the NiiVue UMD bundle (static/niivue/niivue.umd.js, global `niivue`); no network:
// volumes come from same-origin URLs (the viewer's token cookie goes with them) or from ArrayBuffers
// (the report embeds them).  Volume 0 is the image; the label map and the uncertainty map are overlays.
"use strict";
(function (global) {
  // Window presets (HU).  abdomen: the soft-tissue window W400/L40 of the report's tiles; kidney:
  // W500/L150, wide enough for enhancing parenchyma (150-250 HU) against tumour and cyst; bone W1800/L400.
  const CT_PRESETS = {abdomen: [400, 40], kidney: [500, 150], bone: [1800, 400]};
  const LAYOUTS = ["multiplanar", "axial", "coronal", "sagittal", "render"];

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  class KidneyViewer {
    // canvas: a <canvas> inside a sized box; labels: {value: {name, color: [r, g, b]}};
    // window: {low, high, modality} (the window the report's tiles use; "auto" for MR/US).
    constructor(canvas, labels, window) {
      const nv = global.niivue;
      this.labels = labels;
      this.window = window;
      this.enabled = {};
      for (const v of Object.keys(labels)) this.enabled[v] = true;
      this.labelOpacity = 0.5;
      this.uncOpacity = 0.5;
      this.uncOn = true;
      this.image = this.label = this.unc = null;
      this.listeners = [];
      this.nv = new nv.Niivue({
        backColor: [0, 0, 0, 1], isRadiologicalConvention: true, sagittalNoseLeft: true,
        showAllOrientationMarkers: true, isOrientationTextVisible: true, multiplanarShowRender: nv.SHOW_RENDER.ALWAYS,
        isNearestInterpolation: false, dragAndDropEnabled: false, crosshairWidth: 1, crosshairGap: 8, crosshairColor: [1, 0.9, 0, 0.6],
        show3Dcrosshair: true, logLevel: "error", loadingText: "", fontMinPx: 14,
        mouseEventConfig: {leftButton: {primary: nv.DRAG_MODE.crosshair, withShift: nv.DRAG_MODE.pan,
                                        withCtrl: nv.DRAG_MODE.windowing},
                           rightButton: nv.DRAG_MODE.windowing, centerButton: nv.DRAG_MODE.pan},
      });
      this.nv.attachToCanvas(canvas);
      this.nv.onLocationChange = (loc) => { for (const f of this.listeners) f(loc); };
      this.nv.onIntensityChange = () => this._emitWindow();
      this.onWindow = null;
    }

    // sources: {url, name} (same origin) or {buffer: ArrayBuffer, name}; label and uncertainty may be null.
    async open(image, label, uncertainty) {
      for (const vol of this.nv.volumes.slice()) this.nv.removeVolume(vol);
      this.label = this.unc = null;
      this.image = await this._add(image, {colormap: "gray"});
      if (label) await this.setLabel(label);
      if (uncertainty) await this.setUncertainty(uncertainty);
      this.setLayout("multiplanar");
      const w = this.window;
      if (w && w.modality === "ct") this.preset("abdomen");
      else this.preset("auto");
      this.nv.createOnLocationChange();
    }

    async _add(source, opts) {
      const vol = await global.niivue.NVImage.loadFromUrl(Object.assign({}, source, opts));
      this.nv.addVolume(vol);
      return vol;
    }

    async setLabel(source) {
      if (this.label) this.nv.removeVolume(this.label);
      this.label = await this._add(source, {opacity: this.labelOpacity});
      this._applyLut();
      if (this.unc) { this.nv.removeVolume(this.unc); this.nv.addVolume(this.unc); }  // uncertainty stays on top
      this._applyOpacity();
    }

    async setUncertainty(source) {
      if (this.unc) this.nv.removeVolume(this.unc);
      this.unc = await this._add(source, {colormap: "warm", cal_min: 0.1, cal_max: 1.0, opacity: this.uncOpacity});
      this._applyOpacity();
    }

    _applyLut() {
      if (!this.label) return;
      const values = Object.keys(this.labels).map(Number);
      const top = Math.max(0, ...values);
      const cm = {R: [], G: [], B: [], A: [], I: [], labels: []};
      for (let i = 0; i <= top; i++) {
        const info = this.labels[String(i)];
        const c = info ? info.color : [0, 0, 0];
        cm.I.push(i); cm.R.push(c[0]); cm.G.push(c[1]); cm.B.push(c[2]);
        cm.A.push(i > 0 && info && this.enabled[String(i)] ? 255 : 0);
        cm.labels.push(info ? info.name : (i === 0 ? "background" : "label " + i));
      }
      this.label.setColormapLabel(cm);
      this.nv.updateGLVolume();
    }

    _applyOpacity() {
      if (this.label) this.label.opacity = this.labelOpacity;
      if (this.unc) this.unc.opacity = this.uncOn ? this.uncOpacity : 0;
      this.nv.updateGLVolume();
    }

    setLabelOpacity(a) { this.labelOpacity = a; this._applyOpacity(); }
    setUncertaintyOpacity(a) { this.uncOpacity = a; this._applyOpacity(); }
    showUncertainty(on) { this.uncOn = on; this._applyOpacity(); }
    toggleLabel(value, on) { this.enabled[String(value)] = on; this._applyLut(); }

    // window in the image's units (HU for CT)
    setWindow(width, level) {
      if (!this.image) return;
      width = Math.max(1e-3, +width);
      this.image.cal_min = level - width / 2;
      this.image.cal_max = level + width / 2;
      this.nv.updateGLVolume();
      this._emitWindow();
    }
    getWindow() {
      if (!this.image) return null;
      const lo = this.image.cal_min, hi = this.image.cal_max;
      return {width: hi - lo, level: (hi + lo) / 2, low: lo, high: hi};
    }
    _emitWindow() { if (this.onWindow) this.onWindow(this.getWindow()); }
    // "abdomen", "kidney", "bone" (CT, HU) or "auto" (the 1st..99th percentile window, for MR and US)
    preset(name) {
      if (CT_PRESETS[name]) { const [w, l] = CT_PRESETS[name]; this.setWindow(w, l); return; }
      const w = this.window;
      if (w && w.auto_low !== undefined) this.setWindow(w.auto_high - w.auto_low, (w.auto_high + w.auto_low) / 2);
      else if (this.image) this.setWindow(this.image.robust_max - this.image.robust_min,
                                          (this.image.robust_max + this.image.robust_min) / 2);
    }

    setLayout(name) {
      const nv = this.nv, st = global.niivue.SLICE_TYPE;
      const map = {axial: st.AXIAL, coronal: st.CORONAL, sagittal: st.SAGITTAL, render: st.RENDER,
                   multiplanar: st.MULTIPLANAR};
      nv.opts.multiplanarShowRender = global.niivue.SHOW_RENDER.ALWAYS;
      nv.setSliceType(map[name] === undefined ? st.MULTIPLANAR : map[name]);
    }
    zoom(factor) {
      const p = this.nv.scene.pan2Dxyzmm;
      this.nv.setPan2Dxyzmm([p[0], p[1], p[2], Math.min(16, Math.max(0.25, p[3] * factor))]);
    }
    resetView() { this.nv.setPan2Dxyzmm([0, 0, 0, 1]); this.nv.setRenderAzimuthElevation(110, 10); }
    // move the crosshair to a point in world mm (RAS+, the NIfTI's own space)
    jumpTo(mm) {
      const frac = this.nv.mm2frac([mm[0], mm[1], mm[2]]);
      this.nv.scene.crosshairPos = [frac[0], frac[1], frac[2]];
      this.nv.drawScene();
      this.nv.createOnLocationChange();
    }
    // slice position along one RAS axis (0 sagittal, 1 coronal, 2 axial) as an index of the RAS grid
    sliceCount(axis) { return this.image ? this.image.dimsRAS[axis + 1] : 1; }
    sliceIndex(axis) { return Math.floor(this.nv.scene.crosshairPos[axis] * this.sliceCount(axis)); }
    setSlice(axis, index) {
      const n = this.sliceCount(axis), pos = Array.from(this.nv.scene.crosshairPos);
      pos[axis] = (Math.min(n - 1, Math.max(0, index)) + 0.5) / n;
      this.nv.scene.crosshairPos = pos;
      this.nv.drawScene();
      this.nv.createOnLocationChange();
    }
  }

  // The controls panel (same ids in the viewer page and the report): layout, window, overlays, zoom, location.
  function buildControls(box, viewer, hasUncertainty) {
    box.innerHTML = "";
    const layout = el("select", {id: "layout"});
    for (const n of LAYOUTS) layout.appendChild(el("option", {value: n}, n === "multiplanar" ? "3 planes + 3D" :
                                                                           n === "render" ? "3D render" : n));
    layout.addEventListener("change", () => viewer.setLayout(layout.value));
    const l1 = el("label", {class: "block"}, "Layout "); l1.appendChild(layout); box.appendChild(l1);

    const preset = el("select", {id: "wlPreset"});
    const ct = viewer.window && viewer.window.modality === "ct";
    const opts = ct ? [["abdomen", "abdomen W400/L40"], ["kidney", "kidney W500/L150"], ["bone", "bone W1800/L400"],
                       ["auto", "auto (1st-99th percentile)"]] : [["auto", "auto (1st-99th percentile)"]];
    for (const [v, t] of opts) preset.appendChild(el("option", {value: v}, t));
    preset.appendChild(el("option", {value: "custom"}, "custom"));
    const l2 = el("label", {class: "block"}, "Window "); l2.appendChild(preset); box.appendChild(l2);
    const wl = el("div", {class: "row"});
    const width = el("input", {id: "wlWidth", type: "number", step: "any", title: "window width"});
    const level = el("input", {id: "wlLevel", type: "number", step: "any", title: "window level (centre)"});
    wl.append("W", width, "L", level);
    box.appendChild(wl);
    const wtext = el("div", {id: "wlText", class: "muted"});
    box.appendChild(wtext);
    const unit = ct ? " HU" : "";
    viewer.onWindow = (w) => {
      if (!w) return;
      width.value = w.width.toFixed(0); level.value = w.level.toFixed(0);
      wtext.textContent = `window ${w.low.toFixed(0)}..${w.high.toFixed(0)}${unit} (W${w.width.toFixed(0)}/L${w.level.toFixed(0)})`;
    };
    preset.addEventListener("change", () => { if (preset.value !== "custom") viewer.preset(preset.value); });
    const manual = () => { preset.value = "custom"; viewer.setWindow(+width.value, +level.value); };
    width.addEventListener("change", manual); level.addEventListener("change", manual);
    preset.value = ct ? "abdomen" : "auto";

    const op = el("label", {class: "block"}, "Overlay opacity ");
    const opLabel = el("span", {id: "opacityLabel"}, Math.round(100 * viewer.labelOpacity) + "%");
    const opacity = el("input", {id: "opacity", type: "range", min: "0", max: "100",
                                 value: String(Math.round(100 * viewer.labelOpacity))});
    opacity.addEventListener("input", () => { opLabel.textContent = opacity.value + "%"; viewer.setLabelOpacity(+opacity.value / 100); });
    op.append(opLabel, opacity); box.appendChild(op);
    const toggles = el("div", {id: "toggles"});
    for (const [v, info] of Object.entries(viewer.labels)) {
      const l = el("label");
      const cb = el("input", {type: "checkbox", "data-label": v}); cb.checked = viewer.enabled[v] !== false;
      cb.addEventListener("change", () => viewer.toggleLabel(v, cb.checked));
      const sw = el("i", {class: "sw", style: `background:rgb(${info.color.join(",")})`});
      l.append(cb, sw, `${info.name} (${v})`);
      toggles.appendChild(l);
    }
    box.appendChild(toggles);
    const ub = el("div", {id: "uncBox"});
    if (!hasUncertainty) ub.hidden = true;
    const ul = el("label", {class: "block"});
    const ucb = el("input", {type: "checkbox", id: "uncToggle"}); ucb.checked = viewer.uncOn;
    ucb.addEventListener("change", () => viewer.showUncertainty(ucb.checked));
    const uop = el("input", {id: "uncOpacity", type: "range", min: "0", max: "100", value: String(Math.round(100 * viewer.uncOpacity))});
    uop.addEventListener("input", () => viewer.setUncertaintyOpacity(+uop.value / 100));
    ul.append(ucb, " uncertainty map (0..1, shown from 0.1)");
    ub.append(ul, uop);
    box.appendChild(ub);

    const zoom = el("div", {class: "row"});
    for (const [id, text, f] of [["zoomIn", "zoom +", () => viewer.zoom(1.25)], ["zoomOut", "zoom −", () => viewer.zoom(0.8)],
                                 ["zoomReset", "reset", () => viewer.resetView()]]) {
      const b = el("button", {id, type: "button"}, text); b.addEventListener("click", f); zoom.appendChild(b);
    }
    box.appendChild(zoom);
    box.appendChild(el("div", {class: "muted"}, "click: crosshair; wheel: slice; shift-drag or middle-drag: pan; " +
                                                "right-drag: window"));
    const where = el("div", {id: "location", class: "mono"});
    box.appendChild(where);
    viewer.listeners.push((loc) => {
      const mm = loc.mm, v = loc.values && loc.values[0] ? loc.values[0].value : null;
      where.textContent = `RAS ${mm[0].toFixed(1)}, ${mm[1].toFixed(1)}, ${mm[2].toFixed(1)} mm` +
        (v === null || v === undefined ? "" : ` · ${(+v).toFixed(0)}${unit}`);
    });
    return {layout, preset, width, level, opacity, toggles, uncBox: ub};
  }

  // Click on a row of a volumes table (rows with data-mm="x,y,z") jumps the viewer to that structure.
  function linkTable(table, viewer) {
    for (const tr of table.querySelectorAll("tr[data-mm]")) {
      tr.classList.add("jump");
      tr.title = "show in the viewer";
      tr.addEventListener("click", () => viewer.jumpTo(tr.getAttribute("data-mm").split(",").map(Number)));
    }
  }

  function base64ToBuffer(b64) {
    const bin = atob(b64), out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }

  global.KidneyViewer = KidneyViewer;
  global.kidneyViewerControls = buildControls;
  global.kidneyViewerLinkTable = linkTable;
  global.kidneyViewerBuffer = base64ToBuffer;
})(window);
