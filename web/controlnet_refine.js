// ControlNet Refine: show what the settings mean on the nodes themselves.
// - CNR_ApplyControlResiduals: a timeline of the steps the ControlNet acts on; advanced inputs
//   appear only for the control modes that use them.
// - CNR_PaddedCrop: only the size inputs of the chosen size mode are shown.
// Nodes are selected by the id prefix CNR_ only (the folder name is the user's choice).
import { app } from "../../scripts/app.js";

const PREFIX = "CNR_";
const TIMELINE_STEPS = 20;
const TIMELINE_HEIGHT = 26;

// diffusers' rule: executed step i of n acts unless i/n < start or (i+1)/n > end.
export function activeSteps(start, end, n) {
  const steps = [];
  for (let i = 0; i < n; i++) {
    if (!(i / n < start || (i + 1) / n > end)) steps.push(i);
  }
  return steps;
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
  },
};

function values(node) {
  const out = {};
  for (const w of node.widgets || []) out[w.name] = w.value;
  return out;
}

function setHidden(widget, hidden) {
  if (!!widget.cnrHidden === hidden) return false;
  if (hidden) {
    widget.cnrShown = { type: widget.type, computeSize: widget.computeSize };
    widget.type = "cnr-hidden";
    widget.computeSize = () => [0, -4];
  } else {
    widget.type = widget.cnrShown.type;
    widget.computeSize = widget.cnrShown.computeSize;
  }
  widget.hidden = hidden;
  widget.cnrHidden = hidden;
  return true;
}

function refresh(node) {
  const rules = VISIBILITY[node.comfyClass] || {};
  const v = values(node);
  let changed = false;
  for (const w of node.widgets || []) {
    if (rules[w.name]) changed = setHidden(w, !rules[w.name](v)) || changed;
  }
  if (changed) {
    node.setSize([node.size[0], node.computeSize()[1]]);
    node.setDirtyCanvas?.(true, true);
  }
  return { hidden: (node.widgets || []).filter((w) => w.cnrHidden).map((w) => w.name) };
}

function drawTimeline(node, ctx) {
  const v = values(node);
  const sigma = String(v.window_timing || "").startsWith("model sigma");
  const x0 = 10;
  const width = node.size[0] - 20;
  const y = node.size[1] - TIMELINE_HEIGHT + 6;
  const cell = width / TIMELINE_STEPS;
  const active = new Set(activeSteps(v.start_percent ?? 0, v.end_percent ?? 1, TIMELINE_STEPS));
  ctx.save();
  for (let i = 0; i < TIMELINE_STEPS; i++) {
    const on = sigma ? (i + 0.5) / TIMELINE_STEPS >= v.start_percent && (i + 0.5) / TIMELINE_STEPS <= v.end_percent
                     : active.has(i);
    ctx.fillStyle = on ? "#4caf50" : "#444";
    ctx.fillRect(x0 + i * cell + 1, y, cell - 2, 10);
  }
  ctx.fillStyle = "#aaa";
  ctx.font = "10px sans-serif";
  ctx.fillText(sigma ? "window in model sigma (ComfyUI)" : `acts on ${active.size} of ${TIMELINE_STEPS} executed steps`,
               x0, y + 20);
  ctx.restore();
}

app.registerExtension({
  name: "ControlNetRefine.UI",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.name.startsWith(PREFIX)) return;
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
      this.cnrRefresh = () => refresh(this);
      this.cnrRefresh();
      return r;
    };
    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const r = onConfigure?.apply(this, arguments);
      refresh(this);
      return r;
    };
    if (nodeData.name === "CNR_ApplyControlResiduals") {
      const computeSize = nodeType.prototype.computeSize;
      nodeType.prototype.computeSize = function () {
        // The legacy frontend copies LGraphNode's methods onto the class only after this hook runs.
        const base = computeSize ?? (globalThis.LGraphNode ?? globalThis.LiteGraph?.LGraphNode).prototype.computeSize;
        const size = base.apply(this, arguments);
        size[1] += TIMELINE_HEIGHT;
        return size;
      };
      const onDrawForeground = nodeType.prototype.onDrawForeground;
      nodeType.prototype.onDrawForeground = function (ctx) {
        const r = onDrawForeground?.apply(this, arguments);
        if (!this.flags?.collapsed) drawTimeline(this, ctx);
        return r;
      };
      nodeType.prototype.cnrActiveSteps = function (n = TIMELINE_STEPS) {
        const v = values(this);
        return activeSteps(v.start_percent, v.end_percent, n);
      };
    }
  },
});
