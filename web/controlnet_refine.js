// ControlNet Refine: show what the settings mean on the nodes themselves.
// - CNR_ApplyControlResiduals: a timeline of the steps the ControlNet acts on, with the count as text,
//   one cell per step the sampler its MODEL output reaches executes (20 assumed when none is found or
//   several disagree), the strength keyframes chained into its keyframes input (cell brightness = keyframe
//   strength, a mark where a keyframe takes over) and, with reuse_every > 1, the steps that reuse residuals
//   (light cells);
//   advanced inputs appear only for the control modes that use them.
// - CNR_PaddedCrop: only the size inputs of the chosen size mode and the pre-resize bounds its mode
//   uses are shown (its crop preview, every crop box drawn, is the node's image output, which every
//   frontend shows itself).
// - CNR_PaddedPaste: the seam ring width only while seam harmony is on.
// Nodes are selected by the id prefix CNR_ only (the folder name is the user's choice).
//
// Only APIs that the 2024 LiteGraph frontend, the classic canvas of current frontends and Nodes 2.0
// (the Vue renderer, which never calls onDrawForeground) all honour: the timeline is a DOM widget,
// and hidden widgets are marked through `widget.hidden` and `widget.options.hidden`.
import { app } from "../../scripts/app.js";

const PREFIX = "CNR_";
const APPLY_NODE = "CNR_ApplyControlResiduals";
// Drawn, and said so, when the step count of the sampler the MODEL reaches is not known.
const ASSUMED_STEPS = 20;
const TIMELINE_WIDGET = "cnr_timeline";
// The canvas renderers place a DOM widget 10 px inside its row on every side.
const TIMELINE_ROW_HEIGHT = 52;
const ON_COLOUR = "#4caf50";
const REUSED_COLOUR = "#a5d6a7";
const OFF_COLOUR = "#444";
const KEYFRAME_NODE = "CNR_StrengthKeyframe";

// diffusers' rule: executed step i of n acts unless i/n < start or (i+1)/n > end.
export function activeSteps(start, end, n) {
  const steps = [];
  for (let i = 0; i < n; i++) {
    if (!(i / n < start || (i + 1) / n > end)) steps.push(i);
  }
  return steps;
}

// The keyframes chained into an Apply node's keyframes input, first to last as chained.
function chainedKeyframes(node) {
  const frames = [];
  // A node not yet in a graph has no links; newer LiteGraphs throw when asked for them.
  if (!node.graph) return frames;
  let slot = node.inputs?.findIndex((i) => i.name === "keyframes") ?? -1;
  let source = slot >= 0 ? node.getInputNode?.(slot) : null;
  while (source && source.comfyClass === KEYFRAME_NODE) {
    const v = values(source);
    frames.unshift({ start: v.start_percent ?? 0, strength: v.strength ?? 1, guarantee: v.guarantee_steps ?? 1,
                     linear: v.interpolation === "linear" });
    slot = source.inputs?.findIndex((i) => i.name === "prev_keyframes") ?? -1;
    source = slot >= 0 && source.graph ? source.getInputNode?.(slot) : null;
  }
  return frames;
}

// ACN's keyframe walk over n executed steps (controlnet_core/injection/keyframes.py): the default keyframe
// first, stable order by start; a keyframe stays for its guarantee_steps (none when it starts at 0).
export function keyframeSteps(frames, n) {
  const all = [{ start: 0, strength: 1, guarantee: 0, linear: false }];
  for (const f of frames) all.splice(all.filter((k) => k.start <= f.start).length, 0, f);
  const guarantee = (k) => (all[k].start <= 0 ? 0 : all[k].guarantee);
  const chosen = [];
  let current = -1;
  let used = 0;
  for (let i = 0; i < n; i++) {
    if (current < 0 || used >= guarantee(current)) {
      for (let k = current + 1; k < all.length && !(i / n < all[k].start); k++) {
        current = k;
        used = 0;
        if (guarantee(k) > 0) break;
      }
    }
    used++;
    chosen.push(current);
  }
  return chosen.map((k, i) => {
    const first = chosen.indexOf(k);
    const next = chosen.find((j) => j > k);
    if (!all[k].linear || next === undefined) return { keyframe: k, strength: all[k].strength };
    const span = chosen.indexOf(next) - first;
    const strength = all[k].strength + (all[next].strength - all[k].strength) * (i - first) / span;
    return { keyframe: k, strength };
  });
}

// The sampler a MODEL reaches: through nodes that pass a MODEL on (another Apply, ModelSampling*, LoRA
// loaders) or turn it into a GUIDER (CFGGuider, for SamplerCustomAdvanced), and the legacy Reroute node.
const PASSED_ON_TYPES = new Set(["MODEL", "GUIDER", "*"]);
// ModelSampling nodes that give a model flow-matching (CONST) sampling; others set another parameterisation.
const FLOW_MATCHING_SAMPLING = new Set(["ModelSamplingAuraFlow", "ModelSamplingSD3", "ModelSamplingFlux"]);

function graphLink(graph, id) {
  const links = graph?.links;
  if (!links) return null;
  return links instanceof Map ? links.get(id) : links[id];
}

// The nodes fed by an output slot, with the input slot each is fed on.
function outputTargets(node, slot) {
  const targets = [];
  for (const id of node.outputs?.[slot]?.links || []) {
    const link = graphLink(node.graph, id);
    const target = link ? node.graph.getNodeById(link.target_id) : null;
    if (target) targets.push({ node: target, slot: link.target_slot });
  }
  return targets;
}

function inputSource(node, name) {
  const slot = node.inputs?.findIndex((i) => i.name === name) ?? -1;
  return slot >= 0 && node.graph ? node.getInputNode?.(slot) ?? null : null;
}

// Python's round(): halves to even, as int(round(n * s)) of the round rule.
function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

// Whether the model reaching `node` samples by flow matching, as far as the graph says: the first ModelSampling
// node upstream of its model input decides; a model loaded without one counts as not flow matching.
function flowMatchingUpstream(node) {
  const seen = new Set();
  let source = inputSource(node, "model");
  while (source && !seen.has(source)) {
    seen.add(source);
    // A node type this server lacks still has its type name (a placeholder node).
    const type = String(source.comfyClass || source.type || "");
    if (FLOW_MATCHING_SAMPLING.has(type)) return true;
    if (type.startsWith("ModelSampling")) return false;
    const slot = source.inputs?.findIndex((i) => i.type === "MODEL" || i.type === "*") ?? -1;
    source = slot >= 0 ? source.getInputNode?.(slot) : null;
  }
  return false;
}

// Executed steps of a SIGMAS source (nodes/sampling_nodes.py, controlnet_core/refine/schedule.py, ComfyUI's
// BasicScheduler); null when the node's rule is unknown here.
function sigmasSteps(node, seen = new Set()) {
  if (!node || seen.has(node)) return null;
  seen.add(node);
  const v = values(node);
  if (node.comfyClass === "CNR_Img2ImgStrength") {
    const n = v.steps;
    const s = v.strength;
    if (typeof n !== "number" || typeof s !== "number") return null;
    if (String(v.rule).startsWith("comfyui")) return s <= 0 ? 0 : n;
    if (String(v.rule).startsWith("round")) return roundHalfEven(n * s);
    if (flowMatchingUpstream(node)) return n - Math.trunc(Math.max(n - Math.min(n * s, n), 0));
    return Math.min(Math.trunc(n * s), n);
  }
  if (node.comfyClass === "BasicScheduler") return typeof v.steps === "number" ? (v.denoise <= 0 ? 0 : v.steps) : null;
  if (node.type === "Reroute") return sigmasSteps(node.getInputNode?.(0), seen);
  // Karras, exponential, polyexponential, beta, ... schedulers: `steps` steps; those with a denoise have rules
  // of their own.
  if (/Scheduler$/.test(node.comfyClass || "") && typeof v.steps === "number" && !("denoise" in v)) return v.steps;
  return null;
}

// Executed steps of a sampler node; undefined for a node that is no sampler, null for one whose count is
// not known here.
function samplerSteps(node) {
  const v = values(node);
  switch (node.comfyClass) {
    case "KSampler":
      return typeof v.steps === "number" ? (v.denoise <= 0 ? 0 : v.steps) : null;
    case "KSamplerAdvanced":
      // ComfyUI's KSampler.sample: the schedule up to end_at_step, from start_at_step.
      if (typeof v.steps !== "number") return null;
      return Math.max(0, Math.min(v.end_at_step ?? v.steps, v.steps) - (v.start_at_step ?? 0));
    case "SamplerCustom":
    case "SamplerCustomAdvanced":
      return sigmasSteps(inputSource(node, "sigmas"));
    default:
      return undefined;
  }
}

// How many steps the timeline shows: the executed steps of every sampler the Apply node's MODEL reaches,
// when there is one count; otherwise ASSUMED_STEPS, `assumed` set.
export function samplerStepCount(node) {
  const counts = new Set();
  const seen = new Set([node]);
  const queue = node.graph ? [node] : [];
  while (queue.length) {
    const current = queue.shift();
    (current.outputs || []).forEach((output, slot) => {
      if (current !== node && !PASSED_ON_TYPES.has(output.type)) return;
      if (current === node && output.type !== "MODEL") return;
      for (const { node: target, slot: input } of outputTargets(current, slot)) {
        if (!PASSED_ON_TYPES.has(target.inputs?.[input]?.type) || seen.has(target)) continue;
        seen.add(target);
        const steps = samplerSteps(target);
        if (steps === undefined) queue.push(target);
        else counts.add(steps);
      }
    });
  }
  if (counts.size !== 1 || counts.has(null)) return { n: ASSUMED_STEPS, assumed: true };
  return { n: [...counts][0], assumed: false };
}

const VISIBILITY = {
  CNR_ApplyControlResiduals: {
    soft_base: (v) => v.control_mode !== "balanced",
    uncond_multiplier: (v) => v.control_mode !== "controlnet is more important",
  },
  CNR_PaddedCrop: {
    width: (v) => v.size_mode === "width x height",
    height: (v) => v.size_mode === "width x height",
    long_side: (v) => v.size_mode === "long side",
    preresize_min_width: (v) => String(v.preresize || "").includes("minimum"),
    preresize_min_height: (v) => String(v.preresize || "").includes("minimum"),
    preresize_max_width: (v) => String(v.preresize || "").includes("maximum"),
    preresize_max_height: (v) => String(v.preresize || "").includes("maximum"),
  },
  CNR_PaddedPaste: {
    harmony_ring: (v) => (v.harmony ?? "off") !== "off",
  },
};

function values(node) {
  const out = {};
  for (const w of node.widgets || []) out[w.name] = w.value;
  return out;
}

// Every renderer reads `hidden` (Nodes 2.0 through `options.hidden`), but canvases before ~2025 still give a
// hidden widget its row: it also takes no height. The 2024 LiteGraph even draws it: there it also takes an
// unknown type, drawn as nothing. Frontends that skip hidden widgets when drawing have isWidgetVisible.
function setHidden(node, widget, hidden) {
  if (!!widget.cnrHidden === hidden) return false;
  const legacy = typeof node.isWidgetVisible !== "function";
  if (hidden) {
    widget.cnrShown = { type: widget.type, computeSize: widget.computeSize };
    widget.computeSize = () => [0, -4];
    if (legacy) widget.type = "cnr-hidden";
  } else {
    widget.computeSize = widget.cnrShown.computeSize;
    if (legacy) widget.type = widget.cnrShown.type;
  }
  widget.cnrHidden = hidden;
  widget.hidden = hidden;
  if (widget.options) widget.options.hidden = hidden;
  return true;
}

function timelineState(node) {
  const v = values(node);
  const start = v.start_percent ?? 0;
  const end = v.end_percent ?? 1;
  const { n, assumed } = samplerStepCount(node);
  const frames = chainedKeyframes(node);
  const steps = keyframeSteps(frames, n);
  const notes = [];
  if (frames.length) notes.push(`${frames.length} keyframe${frames.length > 1 ? "s" : ""}`);
  let on;
  let label;
  let count;
  if (String(v.window_timing || "").startsWith("model sigma")) {
    on = [];
    for (let i = 0; i < n; i++) {
      const middle = (i + 0.5) / n;
      on.push(middle >= start && middle <= end);
    }
    label = "window in model sigma (ComfyUI)";
  } else {
    const active = new Set(activeSteps(start, end, n));
    on = Array.from({ length: n }, (_, i) => active.has(i));
    count = active.size;
    label = `acts on ${count} of ${n} executed steps`;
  }
  if (assumed) label += ` (assumed ${n} steps)`;
  on = on.map((active, i) => active && steps[i].strength > 0);
  // Reuse restarts at the window start and at every keyframe change (nodes/sampler_wrapper.py).
  const every = v.reuse_every ?? 1;
  const reused = on.map(() => false);
  let last = null;
  on.forEach((active, i) => {
    if (!active || every <= 1) return;
    if (last !== null && steps[i].keyframe === steps[last].keyframe && i - last < every) reused[i] = true;
    else last = i;
  });
  if (every > 1) notes.push(`ControlNet runs on ${on.filter((a, i) => a && !reused[i]).length}`);
  else if ((v.reuse_threshold ?? 0) > 0) notes.push("adaptive reuse");
  if (notes.length) label += `; ${notes.join(", ")}`;
  return { on, reused, steps, label, count, n, assumed };
}

function timelineCell() {
  const cell = document.createElement("span");
  cell.className = "cnr-timeline-step";
  Object.assign(cell.style, { flex: "1 1 0", borderRadius: "2px", background: OFF_COLOUR });
  return cell;
}

function addTimeline(node) {
  const element = document.createElement("div");
  element.className = "cnr-timeline";
  Object.assign(element.style, { display: "flex", flexDirection: "column", gap: "4px", boxSizing: "border-box",
                                 padding: "2px 0", minHeight: `${TIMELINE_ROW_HEIGHT - 20}px` });
  const cells = document.createElement("div");
  cells.className = "cnr-timeline-steps";
  Object.assign(cells.style, { display: "flex", gap: "2px", height: "10px" });
  const label = document.createElement("div");
  label.className = "cnr-timeline-label";
  Object.assign(label.style, { font: "11px sans-serif", color: "#aaa", whiteSpace: "nowrap", overflow: "hidden",
                               textOverflow: "ellipsis" });
  element.append(cells, label);
  const widget = node.addDOMWidget(TIMELINE_WIDGET, "cnr-timeline", element, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => TIMELINE_ROW_HEIGHT,
    getMaxHeight: () => TIMELINE_ROW_HEIGHT,
  });
  widget.serialize = false;
  return widget;
}

function updateTimeline(node) {
  const widget = node.widgets?.find((w) => w.name === TIMELINE_WIDGET);
  if (!widget) return;
  const { on, reused, steps, label, count, n, assumed } = timelineState(node);
  const row = widget.element.querySelector(".cnr-timeline-steps");
  while (row.children.length > n) row.lastChild.remove();
  while (row.children.length < n) row.append(timelineCell());
  const cells = row.children;
  on.forEach((active, i) => {
    const changes = i > 0 && steps[i].keyframe !== steps[i - 1].keyframe;
    cells[i].style.background = active ? (reused[i] ? REUSED_COLOUR : ON_COLOUR) : OFF_COLOUR;
    cells[i].style.opacity = active ? String(0.35 + 0.65 * Math.min(1, steps[i].strength)) : "1";
    cells[i].style.boxShadow = changes ? "inset 2px 0 #fff" : "none";
    cells[i].dataset.active = String(active);
    cells[i].dataset.reused = String(reused[i]);
    cells[i].dataset.strength = String(Math.round(steps[i].strength * 1000) / 1000);
    cells[i].dataset.keyframeStart = String(changes);
  });
  widget.element.querySelector(".cnr-timeline-label").textContent = label;
  widget.element.dataset.activeSteps = count === undefined ? "" : String(count);
  widget.element.dataset.steps = String(n);
  widget.element.dataset.stepsAssumed = String(assumed);
}

function graphNodes() {
  return app.graph?._nodes || app.graph?.nodes || [];
}

function refreshTimelines() {
  for (const node of graphNodes()) if (node.comfyClass === APPLY_NODE) node.cnrRefresh?.();
}

function refresh(node) {
  // Keyframes and CNR_Img2ImgStrength change what the timelines show.
  if (node.comfyClass !== APPLY_NODE) refreshTimelines();
  const rules = VISIBILITY[node.comfyClass] || {};
  const v = values(node);
  let changed = false;
  for (const w of node.widgets || []) {
    if (rules[w.name]) changed = setHidden(node, w, !rules[w.name](v)) || changed;
  }
  updateTimeline(node);
  if (changed) {
    node.setSize([node.size[0], node.computeSize()[1]]);
    node.setDirtyCanvas?.(true, true);
  }
  return { hidden: (node.widgets || []).filter((w) => w.cnrHidden).map((w) => w.name) };
}

// Widgets of other nodes that set a sampler's step count (KSampler, KSamplerAdvanced, BasicScheduler, ...).
const STEP_WIDGETS = new Set(["steps", "denoise", "start_at_step", "end_at_step"]);

// Samplers and the nodes between them and an Apply node are ComfyUI's: their step widgets and any link
// change redraw the timelines.
function watchForTimelines(nodeType) {
  const onNodeCreated = nodeType.prototype.onNodeCreated;
  nodeType.prototype.onNodeCreated = function () {
    const r = onNodeCreated?.apply(this, arguments);
    for (const w of this.widgets || []) {
      if (!STEP_WIDGETS.has(w.name)) continue;
      const callback = w.callback;
      w.callback = (...args) => {
        const out = callback?.apply(w, args);
        refreshTimelines();
        return out;
      };
    }
    return r;
  };
  for (const hook of ["onConnectionsChange", "onConfigure"]) {
    const original = nodeType.prototype[hook];
    nodeType.prototype[hook] = function () {
      const r = original?.apply(this, arguments);
      refreshTimelines();
      return r;
    };
  }
}

app.registerExtension({
  name: "ControlNetRefine.UI",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.name.startsWith(PREFIX)) {
      watchForTimelines(nodeType);
      return;
    }
    const withTimeline = nodeData.name === APPLY_NODE;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      for (const w of this.widgets || []) {
        const callback = w.callback;
        w.callback = (...args) => {
          const out = callback?.apply(w, args);
          refresh(this);
          return out;
        };
      }
      if (withTimeline) addTimeline(this);
      this.cnrRefresh = () => refresh(this);
      this.cnrRefresh();
      return r;
    };
    const onConnectionsChange = nodeType.prototype.onConnectionsChange;
    nodeType.prototype.onConnectionsChange = function () {
      const r = onConnectionsChange?.apply(this, arguments);
      refresh(this);
      // An Apply node's MODEL may be what another Apply's MODEL reaches its sampler through.
      if (withTimeline) refreshTimelines();
      return r;
    };
    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const r = onConfigure?.apply(this, arguments);
      refresh(this);
      return r;
    };
    if (withTimeline) {
      const onSerialize = nodeType.prototype.onSerialize;
      nodeType.prototype.onSerialize = function (data) {
        const r = onSerialize?.apply(this, arguments);
        // The 2024 LiteGraph saves a value for every widget, even one marked serialize: false; the
        // timeline has none, and saved workflows keep the layout newer frontends write.
        const index = this.widgets?.findIndex((w) => w.name === TIMELINE_WIDGET) ?? -1;
        if (index >= 0 && data.widgets_values?.length === this.widgets.length) data.widgets_values.splice(index, 1);
        return r;
      };
      nodeType.prototype.cnrActiveSteps = function (n = samplerStepCount(this).n) {
        const v = values(this);
        return activeSteps(v.start_percent, v.end_percent, n);
      };
    }
  },
  // Nodes are configured one by one: a sampler after an Apply node has its values only now.
  async afterConfigureGraph() {
    refreshTimelines();
  },
});
