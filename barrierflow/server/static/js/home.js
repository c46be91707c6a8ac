// The home view: the workflows (graph, signature, a form to submit a run) and the instances, refreshed.

import { get, post, seg } from "./api.js";
import { $, ago, badge, countOf, el, fill, notifyError, parseJsonField, shortId, timeText } from "./dom.js";
import { drawWorkflowGraph } from "./graphs.js";

const REFRESH_MS = 2000;

let workflowsLoaded = false;
let timer = null;

export function showHome() {
  if (!workflowsLoaded) loadWorkflows();
  refreshInstances();
  clearInterval(timer);
  timer = setInterval(() => {
    if (!document.hidden) refreshInstances();
  }, REFRESH_MS);
}

export function leaveHome() {
  clearInterval(timer);
  timer = null;
}

export function setUpHome() {
  const filters = $("#instance-filters");
  filters.addEventListener("change", () => refreshInstances());
  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = filters.elements.open.value.trim();
    if (id) location.hash = `#/instances/${encodeURIComponent(id)}`;
  });
}

// -- workflows ---------------------------------------------------------------------------------------------------

async function loadWorkflows() {
  let workflows;
  try {
    workflows = await get("/api/workflows");
  } catch (error) {
    notifyError(error, "Loading the workflows");
    return;
  }
  workflowsLoaded = true;
  const grid = $("#workflows");
  $("#workflows-count").textContent = `${workflows.length} imported by the server`;
  if (!workflows.length) {
    fill(grid, el("p", { class: "empty", text: "The server imported no workflow: start it with --import MODULE." }));
  } else {
    fill(grid, ...workflows.map(workflowCard));
  }
  const select = $("#instance-filters").elements.workflow;
  fill(select, el("option", { value: "", text: "all" }), ...workflows.map((w) => el("option", { value: w.name, text: w.name })));
  for (const card of grid.querySelectorAll(".workflow-card")) {
    drawWorkflowGraph(card.querySelector(".graph"), card.workflow.mermaid);
  }
}

function workflowCard(workflow) {
  const result = el("div", { class: "form-result", "aria-live": "polite" });
  const form = el(
    "form",
    { class: "stack submit-form", "aria-label": `Submit a run of ${workflow.name}` },
    el("label", {},
      "Input (JSON)",
      el("textarea", { name: "input", rows: 2, spellcheck: "false", placeholder: 'e.g. "release notes" or {"key": 1}' })),
    el("label", {},
      "Instance id ",
      el("span", { class: "muted", text: "(optional: empty starts a new instance)" }),
      el("input", { name: "instance_id", autocomplete: "off", spellcheck: "false" })),
    el("div", { class: "row" }, el("button", { type: "submit", class: "button primary", text: "Submit run" })),
    result,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submitRun(workflow.name, form, result);
  });
  const card = el(
    "article",
    { class: "card workflow-card", dataset: { workflow: workflow.name } },
    el("header", { class: "card-head" },
      el("h3", { text: workflow.name }),
      el("code", { class: "signature", title: `graph signature ${workflow.signature}`, text: shortId(workflow.signature, 10) })),
    el("div", { class: "graph", role: "img", "aria-label": `graph of ${workflow.name}` }),
    el("p", { class: "executors" },
      el("span", { class: "muted", text: "Executors: " }),
      ...(workflow.executors || []).map((name) =>
        el("span", { class: name === workflow.start_executor ? "chip chip-start" : "chip", title: name === workflow.start_executor ? "start executor" : "", text: name }))),
    el("details", { class: "submit" }, el("summary", { text: "Submit a run" }), form),
  );
  card.workflow = workflow;
  return card;
}

async function submitRun(name, form, result) {
  const button = form.querySelector("button[type=submit]");
  fill(result);
  const body = {};
  try {
    const input = parseJsonField(form.elements.input.value, "the input");
    if (input !== undefined) body.input = input;
  } catch (error) {
    notifyError(error, `Submitting ${name}`);
    return;
  }
  const instance = form.elements.instance_id.value.trim();
  if (instance) body.instance_id = instance;
  button.disabled = true;
  try {
    const { data } = await post(`/api/workflows/${seg(name)}/runs`, body);
    location.hash = `#/instances/${encodeURIComponent(data.instance_id)}`;
  } catch (error) {
    notifyError(error, `Submitting ${name}`);
  } finally {
    button.disabled = false;
  }
}

// -- instances ---------------------------------------------------------------------------------------------------

let refreshing = false;

async function refreshInstances() {
  if (refreshing) return;
  refreshing = true;
  const filters = $("#instance-filters").elements;
  const query = new URLSearchParams({ limit: "50" });
  if (filters.workflow.value) query.set("workflow", filters.workflow.value);
  if (filters.status.value) query.set("status", filters.status.value);
  try {
    const instances = await get(`/api/instances?${query}`);
    fill($("#instances"), ...instances.map(instanceRow));
    $("#instances-empty").hidden = instances.length > 0;
    $("#instances-refreshed").textContent = `refreshed ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    if (!document.querySelector(".notice-error")) notifyError(error, "Listing the instances");
  } finally {
    refreshing = false;
  }
}

function instanceRow(instance) {
  const href = `#/instances/${encodeURIComponent(instance.instance_id)}`;
  const run = instance.active_run_id || (instance.queued_run_ids || [])[0];
  const pending = countOf(instance.pending_requests);
  return el(
    "tr",
    { dataset: { instance: instance.instance_id } },
    el("td", {}, el("a", { href, class: "mono", title: instance.instance_id, text: shortId(instance.instance_id, 22) })),
    el("td", { text: instance.workflow_name || "—" }),
    el("td", {}, badge(instance.status)),
    el("td", { class: "num", text: instance.superstep ?? "" }),
    el("td", { class: "num" }, pending ? el("span", { class: "pill-warn", text: String(pending) }) : "0"),
    el("td", { class: "mono muted", title: run || "", text: run ? (instance.active_run_id ? "running" : "queued") : "—" }),
    el("td", { title: timeText(instance.updated_at), text: ago(instance.updated_at) }),
  );
}
