// Drawings: a workflow's graph (its mermaid text, drawn by the vendored mermaid) and the checkpoint lineage.

import { el, fill, svg } from "./dom.js";

let mermaidReady = false;
let drawing = Promise.resolve();

function setUpMermaid() {
  if (mermaidReady) return true;
  const mermaid = window.mermaid;
  if (!mermaid) return false;
  mermaid.initialize({
    startOnLoad: false,
    // strict: labels are text, never HTML; no click handlers or links from the diagram source
    securityLevel: "strict",
    htmlLabels: false,
    flowchart: { htmlLabels: false, curve: "basis", padding: 12, nodeSpacing: 40, rankSpacing: 44 },
    theme: "base",
    themeVariables: {
      fontFamily: "ui-sans-serif, system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
      fontSize: "14px",
      primaryColor: "#eef2ff",
      primaryBorderColor: "#6366f1",
      primaryTextColor: "#1e1b4b",
      lineColor: "#64748b",
      secondaryColor: "#f1f5f9",
      tertiaryColor: "#f8fafc",
      clusterBkg: "#f8fafc",
      clusterBorder: "#cbd5e1",
      edgeLabelBackground: "#ffffff",
    },
  });
  mermaidReady = true;
  return true;
}

/** Draw the mermaid text in `container`; without mermaid, or when it fails, show the text itself. */
export function drawWorkflowGraph(container, text) {
  const source = el("pre", { class: "mermaid", text });
  fill(container, source);
  if (!setUpMermaid()) {
    source.className = "graph-source";
    return Promise.resolve(false);
  }
  // one drawing at a time: mermaid measures text in a shared scratch element
  drawing = drawing.then(() =>
    window.mermaid.run({ nodes: [source] }).then(
      () => {
        container.dataset.drawn = "true";
        return true;
      },
      (error) => {
        fill(container, el("p", { class: "error", text: `could not draw the graph: ${error.message || error}` }),
          el("pre", { class: "graph-source", text }));
        return false;
      },
    ),
  );
  return drawing;
}

// -- checkpoint lineage ----------------------------------------------------------------------------------------

const LANE = 16;
const ROW = 52;

/**
 * Assign each checkpoint (newest first) a lane, git-log style: a checkpoint continues the lane that waits for
 * it (the lane of a newer checkpoint whose previous_checkpoint_id it is). Two newer checkpoints with the same
 * previous one (a restore, then new runs) make a fork: their lanes join at it.
 */
export function lineageRows(checkpoints) {
  const lanes = []; // per lane: the checkpoint id it waits for, or null when free
  const rows = [];
  for (const cp of checkpoints) {
    const id = cp.checkpoint_id;
    const before = lanes.slice();
    let lane = lanes.indexOf(id);
    const joining = [];
    if (lane < 0) {
      lane = lanes.indexOf(null);
      if (lane < 0) lane = lanes.push(null) - 1;
    }
    lanes.forEach((waiting, i) => {
      if (waiting === id && i !== lane) {
        joining.push(i);
        lanes[i] = null;
      }
    });
    lanes[lane] = cp.previous_checkpoint_id || null;
    while (lanes.length && lanes[lanes.length - 1] === null) lanes.pop();
    rows.push({ cp, lane, before, joining, after: lanes.slice() });
  }
  const width = Math.max(1, ...rows.map((r) => Math.max(r.before.length, r.after.length, r.lane + 1)));
  return { rows, width };
}

/** The lineage column of one row: lanes passing through, the joins, and this checkpoint's dot. */
export function lineageCell(row, width, { current = false } = {}) {
  const x = (i) => 10 + i * LANE;
  const mid = ROW / 2;
  const cell = svg("svg", {
    class: "lineage",
    width: 20 + (width - 1) * LANE,
    height: ROW,
    viewBox: `0 0 ${20 + (width - 1) * LANE} ${ROW}`,
    "aria-hidden": "true",
  });
  const line = (x1, y1, x2, y2, lane) =>
    cell.append(svg("path", { d: `M${x1} ${y1} L${x2} ${y2}`, class: `lane lane-${lane % 6}` }));
  const id = row.cp.checkpoint_id;
  row.before.forEach((waiting, i) => {
    if (waiting === null) return;
    if (waiting === id) line(x(i), 0, x(row.lane), mid, i === row.lane ? row.lane : i);
    else line(x(i), 0, x(i), ROW, i);
  });
  if (row.after[row.lane]) line(x(row.lane), mid, x(row.lane), ROW, row.lane);
  cell.append(svg("circle", { cx: x(row.lane), cy: mid, r: current ? 6 : 5, class: current ? "dot dot-current" : "dot" }));
  return cell;
}
