// ntkprior explore: the page. It holds the state, draws what the server computed, and turns mouse
// gestures into training points. It computes nothing about kernels: every number plotted or
// printed comes from a response of the server (which calls ntkprior); the script only maps
// slider positions to values (t = 10^position) and pixels to plot coordinates.
"use strict";

const $ = (id) => document.getElementById(id);
const PLOT_CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
const KINDS = [
  { key: "nngp", show: "nngp", label: "NNGP", color: "31,119,180" },
  { key: "ntkgp", show: "ntkgp", label: "NTK-GP", color: "44,160,44" },
  { key: "gd-ensemble", show: "gd", label: "GD ensemble", color: "214,39,40" },
];
const GRID_1D = 200, GRID_2D = 30, PICK_PIXELS = 10;

// ------------------------------------------------------------------ state (mirrored in the URL)
const S = {
  dim: 1, data: { x: [], y: [] }, selected: -1,
  arch: { depth: 3, activation: "relu", weight_std: 1.5, bias_std: 0.05, parameterization: "ntk", spec: null },
  diag_reg: 0, low: -4, high: 4,
  logT: 4, converged: false, logLr: Math.log10(0.05),
  show: { nngp: true, ntkgp: true, gd: true }, heatKind: "gd-ensemble",
  eigenKernel: "ntk", eigenK: 4, mouse: "points", newLabel: 1,
  candidate: null,
  train: { width: 256, steps: 1000, ensemble: 8 },
};
let OPTIONS = null;
const last = { posterior: null, eigen: null, candidate: null, training: null, spec: null };
let trained = null;              // the finished training run drawn over the posterior
let inflight = 0, pending = false, version = 0, polling = null, drag = null;

function t() { return S.converged ? null : Number((10 ** S.logT).toPrecision(4)); }
function lr() { return Number((10 ** S.logLr).toPrecision(4)); }
function fmt(v) { return typeof v === "number" ? String(Number(v.toPrecision(4))) : String(v); }

function saveState() {
  const { selected, ...kept } = S;
  history.replaceState(null, "", "#" + encodeURIComponent(JSON.stringify(kept)));
}

function loadState() {
  if (location.hash.length < 2) return false;
  try {
    const saved = JSON.parse(decodeURIComponent(location.hash.slice(1)));
    for (const k of Object.keys(saved)) if (k in S) S[k] = saved[k];
    return true;
  } catch (e) {
    showError("the link's page state could not be read (" + e.message + "); starting from the defaults");
    return false;
  }
}

// ------------------------------------------------------------------ talking to the server
class ApiError extends Error {}

async function api(path, body, method) {
  const init = { method: method || (body ? "POST" : "GET"), headers: { "content-type": "application/json" } };
  if (body) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  let payload;
  try { payload = await response.json(); } catch (e) { payload = { error: `${response.status} ${response.statusText}` }; }
  if (!response.ok) throw new ApiError(payload.error || `${response.status} ${response.statusText}`);
  return payload;
}

function archBody() { return { ...S.arch, spec: S.arch.spec || null }; }

function problem() {
  return { data: S.data, arch: archBody(), diag_reg: S.diag_reg,
           grid: { low: S.low, high: S.high, n: S.dim === 1 ? GRID_1D : GRID_2D } };
}

function showError(message) {
  const box = $("error");
  box.hidden = !message;
  box.textContent = message || "";
  const spec = $("spec-error");
  const isSpec = !!message && message.startsWith("arch:");
  spec.hidden = !isSpec;
  spec.textContent = isSpec ? message : "";
}

function showWarnings(list) {
  const box = $("warnings");
  box.hidden = !list.length;
  box.textContent = list.map((w) => "warning: " + w).join("\n");
}

function setBusy(delta) {
  inflight += delta;
  $("busy").hidden = inflight === 0;
}

// Latest wins: while a refresh is in flight, further changes only mark it pending; when it ends,
// one more refresh runs with the state as it is then (dragging stays smooth, nothing queues up).
async function refresh() {
  saveState();
  if (inflight) { pending = true; return; }
  if (!S.data.x.length) { drawEmpty(); return; }
  setBusy(1);
  try {
    const body = problem();
    const calls = [api("/api/posterior", { ...body, t: t(), learning_rate: lr() }),
                   api("/api/eigen", { ...body, k: S.eigenK, kernel: S.eigenKernel })];
    if (S.candidate) calls.push(api("/api/candidate", { ...body, kernel: S.eigenKernel, x_star: S.candidate.x, y_star: S.candidate.y }));
    const [posterior, eigen, candidate] = await Promise.all(calls);
    last.posterior = posterior; last.eigen = eigen; last.candidate = candidate || null;
    showError(null);
    showWarnings([...new Set([...posterior.warnings, ...eigen.warnings, ...(candidate ? candidate.warnings : [])])]);
    if (!S.arch.spec) $("spec").value = posterior.spec;
    draw();
  } catch (e) {
    showError(e instanceof ApiError ? e.message : "the server could not be reached: " + e.message);
  } finally {
    setBusy(-1);
    version += 1;
    if (pending) { pending = false; refresh(); }
  }
}

// ------------------------------------------------------------------ drawing
function baseLayout(title, extra) {
  return Object.assign({ title: { text: title, font: { size: 13 } }, margin: { l: 50, r: 10, t: 30, b: 36 },
                         dragmode: false, hovermode: "closest", showlegend: true,
                         legend: { orientation: "h", y: -0.16, font: { size: 11 } } }, extra || {});
}

function drawEmpty() {
  last.posterior = null;
  Plotly.react($("posterior"), [], baseLayout("add training points: click on the plot",
    { xaxis: { range: [S.low, S.high] }, yaxis: { range: [-2, 2] } }), PLOT_CONFIG);
  version += 1;
}

function draw() {
  $("posterior").hidden = S.dim !== 1;
  $("heat").hidden = S.dim !== 2;
  $("heat-row").hidden = S.dim !== 2;
  $("new-label-row").hidden = S.dim !== 2;
  if (S.dim === 1) drawPosterior(); else drawHeatmaps();
  drawEigen();
  drawCandidate();
  drawLearningRate();
  $("npoints").textContent = `${S.data.x.length} training points`;
}

function pointTrace() {
  const colors = S.data.y.map((_, i) => (i === S.selected ? "#ff7f0e" : "#000"));
  if (S.dim === 1) {
    return { x: S.data.x.map((p) => p[0]), y: S.data.y, mode: "markers", type: "scatter", name: "training points",
             marker: { size: 10, color: colors, line: { color: "#fff", width: 1 } }, hovertemplate: "x=%{x:.4g}, y=%{y:.4g}<extra></extra>" };
  }
  return { x: S.data.x.map((p) => p[0]), y: S.data.x.map((p) => p[1]), mode: "markers+text", type: "scatter",
           name: "training points", text: S.data.y.map((v) => fmt(v)), textposition: "top center",
           marker: { size: 10, color: colors, line: { color: "#fff", width: 1 } }, showlegend: false };
}

function drawPosterior() {
  const p = last.posterior, x = p.x_test.map((r) => r[0]), traces = [];
  for (const kind of KINDS) {
    if (!S.show[kind.show]) continue;
    const k = p[kind.key], name = kind.key === "gd-ensemble" ? `${kind.label} at t=${t() === null ? "∞" : fmt(t())}` : kind.label;
    traces.push({ x, y: k.upper, mode: "lines", line: { width: 0 }, showlegend: false, hoverinfo: "skip", meta: kind.key + " upper" });
    traces.push({ x, y: k.lower, mode: "lines", line: { width: 0 }, fill: "tonexty", fillcolor: `rgba(${kind.color},0.15)`,
                  name: name + " ± 2 std", hoverinfo: "skip", meta: kind.key + " lower" });
    traces.push({ x, y: k.mean, mode: "lines", line: { color: `rgb(${kind.color})`, width: 2 }, name: name + " mean", meta: kind.key + " mean" });
  }
  if (trained) traces.push(...trainedTraces());
  if (S.candidate && last.candidate) traces.push(...candidateTraces());
  traces.push(pointTrace());
  Plotly.react($("posterior"), traces, baseLayout("posterior mean ± 2 std given the training points (black)",
    { xaxis: { range: [S.low, S.high], title: { text: "x" } }, yaxis: { range: labelRange(), title: { text: "f(x)" } } }),
    PLOT_CONFIG);
}

// The vertical range follows the labels (not the curves), so that a click lands where the labels are
// even when a posterior shoots off; it changes only when the labels do, and not while dragging.
let yRange = null;
function labelRange() {
  if (drag && yRange) return yRange;
  const labels = S.data.y.concat(S.candidate ? [S.candidate.y] : []);
  yRange = [Math.min(-1, ...labels) - 1, Math.max(1, ...labels) + 1];
  return yRange;
}

function trainedTraces() {
  const x = trained.x_test.map((r) => r[0]), r = trained.result, out = [];
  r.members.forEach((m, i) => out.push({ x, y: m, mode: "lines", line: { color: "rgba(90,90,90,0.45)", width: 1 },
    name: "trained networks", legendgroup: "trained", showlegend: i === 0, hoverinfo: "skip", meta: "trained member" }));
  out.push({ x, y: r.mean, mode: "lines", line: { color: "#000", width: 2, dash: "dash" },
             name: `mean of ${r.ensemble} trained networks (t=${r.steps})`, meta: "trained mean" });
  return out;
}

function candidateTraces() {
  const c = last.candidate;
  return [{ x: [c.x_star[0], c.x_star[0]], y: [c.lower, c.upper], mode: "lines+markers", name: `μ* ± 2σ* at x*`,
            line: { color: "#9467bd", width: 3 }, marker: { symbol: "line-ew", size: 14, line: { width: 2, color: "#9467bd" } }, meta: "candidate band" },
          { x: [c.x_star[0]], y: [c.y_star], mode: "markers", name: "candidate y*", meta: "candidate",
            marker: { symbol: "star", size: 16, color: "#9467bd", line: { color: "#fff", width: 1 } } }];
}

function drawHeatmaps() {
  const p = last.posterior, k = p[S.heatKind], axis = p.axis;
  const common = { xaxis: { title: { text: "x1" }, range: [S.low, S.high], constrain: "domain" },
                   yaxis: { title: { text: "x2" }, range: [S.low, S.high], scaleanchor: "x", constrain: "domain" },
                   showlegend: false, uirevision: "heat" };
  const label = KINDS.find((kk) => kk.key === S.heatKind).label;
  Plotly.react($("heat-mean"), [{ type: "heatmap", x: axis, y: axis, z: k.mean_image, colorscale: "RdBu", reversescale: true, zmid: 0, name: "mean", meta: "heat mean" }, pointTrace()],
    baseLayout(`${label} posterior mean`, common), PLOT_CONFIG);
  Plotly.react($("heat-std"), [{ type: "heatmap", x: axis, y: axis, z: k.std_image, colorscale: "Viridis", name: "std", meta: "heat std" }, pointTrace()],
    baseLayout(`${label} posterior std`, common), PLOT_CONFIG);
}

function drawEigen() {
  const e = last.eigen, modes = e.eigenvalues.map((_, i) => i + 1);
  Plotly.react($("spectrum"), [{ x: modes, y: e.eigenvalues, mode: "markers+lines", name: "λ_i", meta: "eigenvalues" }],
    baseLayout(`spectrum of the ${e.kernel.toUpperCase()} on the data`, { yaxis: { type: "log", title: { text: "eigenvalue" } },
      xaxis: { title: { text: "mode i" }, dtick: 1 }, showlegend: false }), PLOT_CONFIG);
  if (S.dim === 1) {
    const fx = e.x_test.map((r) => r[0]);
    Plotly.react($("functions"), e.functions.map((f, i) => ({ x: fx, y: f, mode: "lines", name: `φ${i + 1}`, meta: "eigenfunction" })),
      baseLayout(`first ${e.functions.length} eigenfunctions (Nyström)`,
        { margin: { l: 50, r: 10, t: 30, b: 50 }, legend: { orientation: "h", y: -0.18 } }), PLOT_CONFIG);
  } else {                        // on the plane: the last of the first k, so the k box flips through them
    const k = e.function_images.length;
    Plotly.react($("functions"), [{ type: "heatmap", x: e.axis, y: e.axis, z: e.function_images[k - 1], colorscale: "RdBu",
                                    zmid: 0, meta: "eigenfunction image" }, pointTrace()],
      baseLayout(`eigenfunction φ${k} (Nyström; "first" picks which)`, { showlegend: false,
        xaxis: { constrain: "domain" }, yaxis: { scaleanchor: "x", constrain: "domain" } }), PLOT_CONFIG);
  }
  Plotly.react($("weights"), [{ x: modes, y: e.contribution, type: "bar", name: "(v_i·y)²/λ_i", meta: "contribution",
      customdata: e.projection.map((p, i) => [p, e.cumulative[i]]),
      hovertemplate: "mode %{x}: (v·y)²/λ = %{y:.4g}<br>v·y = %{customdata[0]:.4g}, cumulative share %{customdata[1]:.3f}<extra></extra>" }],
    baseLayout(`labels' cost per mode: yᵀH⁻¹y = ${fmt(e.rkhs_norm2)}`, { yaxis: { type: "log", title: { text: "(v_i·y)² / λ_i" } },
      xaxis: { title: { text: "mode i" }, dtick: 1 }, showlegend: false }), PLOT_CONFIG);
}

function drawCandidate() {
  const box = $("candidate"), c = last.candidate;
  box.hidden = !S.candidate || !c;
  if (box.hidden) return;
  box.innerHTML = `<h3>candidate label y* = ${fmt(c.y_star)} at x* = (${c.x_star.map(fmt).join(", ")}) under the ${c.kernel.toUpperCase()} prior</h3>
  <ul><li><b>log p(y* | data) = ${fmt(c.conditional_log_prob)}</b>; the kernel predicts μ* = ${fmt(c.mean)}, σ* = ${fmt(c.std)} there,
  so y* lies z = (y* − μ*)/σ* = <b>${fmt(c.z)}</b> standard deviations away: quantile ${fmt(c.quantile)} of the predictive distribution.</li>
  <li>joint log p(Y, y*) = ${fmt(c.joint_log_prob)} = log p(Y) (${fmt(c.marginal_log_prob)}) + log p(y* | Y). Over y* at this x*,
  log p(y* | Y) is at most −½ log 2πσ*² = ${fmt(c.peak_log_prob)}, reached at y* = μ*.</li>
  <li><i>The seed's "y = 3" puzzle:</i> pushing a test label up looked more and more probable "until y = 3" because the most probable label at a
  test input is exactly the kernel's prediction μ*: log p(y* | Y) is a parabola in y* that peaks at μ*. And a label at <i>another</i> input looked
  "by far the most likely" because joint densities at different inputs have different ceilings (−½ log 2πσ*² depends on x*): compare labels at
  different inputs by z, not by the joint density. Click elsewhere to move x*, y*.</li></ul>`;
}

function drawLearningRate() {
  const p = last.posterior;
  if (!p) return;
  const limit = p.max_stable_learning_rate;
  $("lr-max").textContent = fmt(limit);
  const slider = $("log-lr"), lo = Number(slider.min), hi = Number(slider.max);
  const mark = $("lr-limit");
  const position = typeof limit === "number" ? Math.log10(limit) : Infinity;
  mark.hidden = !(position >= lo && position <= hi);
  if (!mark.hidden) mark.style.left = `calc(${(100 * (position - lo)) / (hi - lo)}% - 1px)`;
  $("lr-warn").hidden = !(typeof limit === "number" && lr() >= limit);
}

// ------------------------------------------------------------------ mouse: add, drag, remove, pick
// Pixels relative to each axis's own origin (_offset): with a square (constrained) plot the axes
// do not start at the plot margin.
function plotCoordinates(gd, ev) {
  const { xaxis, yaxis } = gd._fullLayout, box = gd.getBoundingClientRect();
  const px = ev.clientX - box.left - xaxis._offset, py = ev.clientY - box.top - yaxis._offset;
  const inside = px >= 0 && py >= 0 && px <= xaxis._length && py <= yaxis._length;
  return { x: xaxis.p2l(px), y: yaxis.p2l(py), px, py, inside };
}

function pointPixels(gd, i) {
  const layout = gd._fullLayout, p = S.data.x[i];
  const vertical = S.dim === 1 ? S.data.y[i] : p[1];
  return [layout.xaxis.l2p(p[0]), layout.yaxis.l2p(vertical)];
}

function nearestPoint(gd, at) {
  let best = -1, bestDistance = PICK_PIXELS;
  S.data.x.forEach((_, i) => {
    const [px, py] = pointPixels(gd, i), d = Math.hypot(px - at.px, py - at.py);
    if (d < bestDistance) { best = i; bestDistance = d; }
  });
  return best;
}

function placePoint(i, at) {
  if (S.dim === 1) { S.data.x[i] = [at.x]; S.data.y[i] = at.y; } else { S.data.x[i] = [at.x, at.y]; }
}

function dataChanged() { trained = null; $("verdict").hidden = true; refresh(); }

function onMouseDown(ev) {
  const gd = ev.currentTarget;
  if (!gd._fullLayout || ev.button !== 0) return;
  const at = plotCoordinates(gd, ev);
  if (!at.inside) return;
  ev.preventDefault();
  ev.stopPropagation();
  if (S.mouse === "candidate") {
    S.candidate = S.dim === 1 ? { x: [at.x], y: at.y } : { x: [at.x, at.y], y: S.newLabel };
    refresh();
    return;
  }
  const hit = nearestPoint(gd, at);
  if (hit >= 0) {
    S.selected = hit;
    drag = { gd, i: hit };
  } else {
    S.data.x.push([]); S.data.y.push(S.newLabel);
    S.selected = S.data.x.length - 1;
    placePoint(S.selected, at);
    dataChanged();
  }
}

function onMouseMove(ev) {
  if (!drag) return;
  placePoint(drag.i, plotCoordinates(drag.gd, ev));
  dataChanged();
}

function onMouseUp() { drag = null; }

function onContextMenu(ev) {
  const gd = ev.currentTarget;
  if (!gd._fullLayout) return;
  ev.preventDefault();
  const hit = nearestPoint(gd, plotCoordinates(gd, ev));
  if (hit >= 0) removePoint(hit);
}

function removePoint(i) {
  if (i < 0 || i >= S.data.x.length) return;
  S.data.x.splice(i, 1); S.data.y.splice(i, 1);
  S.selected = -1;
  dataChanged();
}

for (const id of ["posterior", "heat-mean", "heat-std"]) {
  const gd = $(id);
  gd.addEventListener("mousedown", onMouseDown, true);
  gd.addEventListener("contextmenu", onContextMenu, true);
}
document.addEventListener("mousemove", onMouseMove);
document.addEventListener("mouseup", onMouseUp);
document.addEventListener("keydown", (ev) => {
  if ((ev.key === "Delete" || ev.key === "Backspace") && ev.target === document.body) removePoint(S.selected);
});

// ------------------------------------------------------------------ controls
function syncControls() {
  $("dim").value = String(S.dim);
  $("depth").value = S.arch.depth; $("activation").value = S.arch.activation;
  $("weight-std").value = S.arch.weight_std; $("bias-std").value = S.arch.bias_std;
  $("param").value = S.arch.parameterization;
  if (S.arch.spec) $("spec").value = S.arch.spec;
  $("diag-reg").value = S.diag_reg; $("low").value = S.low; $("high").value = S.high;
  $("log-t").value = S.logT; $("converged").checked = S.converged; $("log-lr").value = S.logLr;
  $("show-nngp").checked = S.show.nngp; $("show-ntkgp").checked = S.show.ntkgp; $("show-gd").checked = S.show.gd;
  $("heat-kind").value = S.heatKind; $("eigen-kernel").value = S.eigenKernel; $("eigen-k").value = S.eigenK;
  $("mouse").value = S.mouse; $("new-label").value = S.newLabel;
  $("width").value = S.train.width; $("steps").value = S.train.steps; $("ensemble").value = S.train.ensemble;
  syncSliders();
  for (const id of ["depth", "activation", "weight-std", "bias-std", "param"]) $(id).disabled = !!S.arch.spec;
}

function syncSliders() {
  $("t-value").textContent = t() === null ? "∞" : fmt(t());
  $("log-t").disabled = S.converged;
  $("lr-value").textContent = fmt(lr());
}

function number(id) { return Number($(id).value); }

function bind(id, event, update, then) {
  $(id).addEventListener(event, () => { update(); syncControls(); (then || refresh)(); });
}

bind("depth", "change", () => { S.arch.depth = number("depth"); }, dataChanged);
bind("activation", "change", () => { S.arch.activation = $("activation").value; }, dataChanged);
bind("weight-std", "change", () => { S.arch.weight_std = number("weight-std"); }, dataChanged);
bind("bias-std", "change", () => { S.arch.bias_std = number("bias-std"); }, dataChanged);
bind("param", "change", () => { S.arch.parameterization = $("param").value; }, dataChanged);
bind("use-spec", "click", () => { S.arch.spec = $("spec").value.trim() || null; }, dataChanged);
bind("use-controls", "click", () => { S.arch.spec = null; }, dataChanged);
bind("diag-reg", "change", () => { S.diag_reg = number("diag-reg"); }, dataChanged);
bind("low", "change", () => { S.low = number("low"); });
bind("high", "change", () => { S.high = number("high"); });
bind("log-t", "input", () => { S.logT = number("log-t"); });
bind("converged", "change", () => { S.converged = $("converged").checked; });
bind("log-lr", "input", () => { S.logLr = number("log-lr"); });
bind("show-nngp", "change", () => { S.show.nngp = $("show-nngp").checked; });
bind("show-ntkgp", "change", () => { S.show.ntkgp = $("show-ntkgp").checked; });
bind("show-gd", "change", () => { S.show.gd = $("show-gd").checked; });
bind("heat-kind", "change", () => { S.heatKind = $("heat-kind").value; });
bind("eigen-kernel", "change", () => { S.eigenKernel = $("eigen-kernel").value; });
bind("eigen-k", "change", () => { S.eigenK = number("eigen-k"); });
bind("mouse", "change", () => { S.mouse = $("mouse").value; if (S.mouse === "points") S.candidate = null; });
bind("new-label", "change", () => { S.newLabel = number("new-label"); }, saveState);
bind("width", "change", () => { S.train.width = number("width"); }, saveState);
bind("steps", "change", () => { S.train.steps = number("steps"); }, saveState);
bind("ensemble", "change", () => { S.train.ensemble = number("ensemble"); }, saveState);
bind("delete", "click", () => {}, () => removePoint(S.selected));
bind("clear", "click", () => { S.data = { x: [], y: [] }; S.selected = -1; S.candidate = null; }, dataChanged);
bind("dim", "change", () => {
  S.dim = number("dim"); S.candidate = null; S.selected = -1;
  S.data = S.dim === 1 ? copyPreset("sin") : { x: [[-2, -2], [2, 2], [-2, 2], [2, -2]], y: [1, 1, -1, -1] };
}, dataChanged);
bind("preset", "change", () => {
  if (!$("preset").value) return;
  S.dim = 1; S.candidate = null; S.selected = -1; S.data = copyPreset($("preset").value);
  $("preset").value = "";
}, dataChanged);

let specTimer = null;
$("spec").addEventListener("input", () => {       // the grammar's caret message while typing
  clearTimeout(specTimer);
  specTimer = setTimeout(async () => {
    try { last.spec = await api("/api/spec", { arch: { ...S.arch, spec: $("spec").value } }); showError(null); }
    catch (e) { showError(e.message); }
  }, 300);
});

$("csv").addEventListener("change", async () => {
  const file = $("csv").files[0];
  if (!file) return;
  try {
    const data = await api("/api/csv", { text: await file.text() });
    S.dim = data.x[0].length; S.data = data; S.candidate = null; S.selected = -1;
    syncControls(); dataChanged();
  } catch (e) { showError(e.message); }
  $("csv").value = "";
});

function copyPreset(name) {
  const p = OPTIONS.presets[name];
  return { x: p.x.map((r) => r.slice()), y: p.y.slice() };
}

// ------------------------------------------------------------------ training real networks
$("train").addEventListener("click", async () => {
  try {
    await api("/api/train", { ...problem(), ...S.train, learning_rate: lr() });
    $("cancel").disabled = false; $("train").disabled = true; $("progress").hidden = false;
    $("train-state").textContent = "starting…";
    clearInterval(polling);
    polling = setInterval(pollTraining, 400);
  } catch (e) { showError(e.message); }
});

$("cancel").addEventListener("click", async () => {
  try { await api("/api/train", null, "DELETE"); } catch (e) { showError(e.message); }
  pollTraining();
});

async function pollTraining() {
  let status;
  try { status = await api("/api/train"); } catch (e) { showError(e.message); return; }
  last.training = status;
  $("progress").max = status.total || 1; $("progress").value = status.done || 0;
  $("train-state").textContent = `${status.state}: ${status.done || 0}/${status.total || 0} steps, ${fmt(status.elapsed || 0)} s`;
  if (status.state === "running") return;
  clearInterval(polling);
  $("cancel").disabled = true; $("train").disabled = false;
  if (status.state === "done") {
    trained = status;
    drawVerdict(status.result);
    if (last.posterior) draw();
  } else if (status.error) {
    $("train-state").textContent = `${status.state}: ${status.error}`;
  }
  $("train-state").dataset.state = status.state;
}

function drawVerdict(r) {
  const box = $("verdict");
  box.hidden = false;
  const rows = r.checks.map((c) => `<li><span class="${c.passed ? "good" : "bad"}">${c.passed ? "ok" : "FAIL"}</span> <b>${c.name}</b>: ${escapeHtml(c.sentence)}</li>`).join("");
  const notes = r.notes.map((n) => `<li>note: ${escapeHtml(n)}</li>`).join("");
  const warns = r.warnings.map((n) => `<li class="bad">warning: ${escapeHtml(n)}</li>`).join("");
  const [headline, ...others] = r.answers;          // the library's answers: does it match now? converged? will it stay?
  const answers = others.map((a) => `<li><b>${escapeHtml(a)}</b></li>`).join("");
  box.innerHTML = `<h3>diagnose: ${r.ensemble} networks, ${r.steps} steps, η = ${fmt(r.learning_rate)} —
    <span class="${r.verdicts.matches_kernel ? "good" : "bad"}">${escapeHtml(headline)}</span></h3>
    <ul>${answers}${rows}${notes}${warns}</ul>`;
}

function escapeHtml(s) { return String(s).replace(/[&<>]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;" }[c])); }

// ------------------------------------------------------------------ share
function mainPlot() { return S.dim === 1 ? $("posterior") : $("heat-mean"); }
$("png").addEventListener("click", () => Plotly.downloadImage(mainPlot(), { format: "png", filename: "ntkprior-explore", width: 1000, height: 500 }));
$("svg").addEventListener("click", () => Plotly.downloadImage(mainPlot(), { format: "svg", filename: "ntkprior-explore", width: 1000, height: 500 }));
$("json").addEventListener("click", () => {
  const blob = new Blob([JSON.stringify({ state: S, posterior: last.posterior, eigen: last.eigen, candidate: last.candidate,
                                          training: trained && trained.result }, null, 1)], { type: "application/json" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob); a.download = "ntkprior-explore.json"; a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
});
$("link").addEventListener("click", async () => {
  saveState();
  try { await navigator.clipboard.writeText(location.href); $("link").textContent = "copied"; }
  catch (e) { $("link").textContent = "in the address bar"; }
  setTimeout(() => { $("link").textContent = "copy link"; }, 1500);
});

// ------------------------------------------------------------------ start
window.explore = { state: S, last, idle: () => inflight === 0 && !pending, version: () => version,
                   trained: () => trained, refresh };

(async function start() {
  try { OPTIONS = await api("/api/options"); } catch (e) { showError(e.message); return; }
  $("activation").innerHTML = OPTIONS.activations.map((a) => `<option>${a}</option>`).join("");
  for (const [id, limit] of Object.entries(OPTIONS.limits)) $(id).max = limit;   // the server's bounds
  $("preset").innerHTML = `<option value="">choose…</option>` +
    Object.entries(OPTIONS.presets).map(([k, p]) => `<option value="${k}">${escapeHtml(p.label)}</option>`).join("");
  if (!loadState()) S.data = copyPreset("sin");
  syncControls();
  refresh();
  resumeTraining();
})();

// After a reload, follow a training run this client started before (the server remembers it).
async function resumeTraining() {
  try {
    if ((await api("/api/train")).state !== "running") return;
  } catch (e) { return; }
  $("cancel").disabled = false; $("train").disabled = true; $("progress").hidden = false;
  polling = setInterval(pollTraining, 400);
}
