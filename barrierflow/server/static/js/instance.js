// One instance: its summary, live events (SSE), outputs, pending requests with answer forms, checkpoint
// timeline with lineage, and the buttons that steer it (cancel, reset, restore, run again).

import { follow, get, post, seg } from "./api.js";
import {
  $, ago, badge, countOf, el, fill, localId, notify, notifyError, parseJsonField, pretty, shortId, timeText,
} from "./dom.js";
import { lineageCell, lineageRows } from "./graphs.js";

const MAX_EVENTS_SHOWN = 300;
const POLL_MS = 5000; // besides the events: a change made elsewhere (another tab, the CLI) shows up too

// Events after which the summary, requests and checkpoints may have changed.
const REFRESHING_EVENTS = new Set([
  "run_ended", "checkpoint_created", "request_info", "status", "superstep_completed", "failed", "started",
]);

let current = null; // {id, info, stream: AbortController, poll, refreshTimer}

export function setUpInstance() {
  $("#inst-cancel").addEventListener("click", cancelRun);
  $("#inst-reset").addEventListener("click", resetInstance);
  $("#inst-submit").addEventListener("submit", (event) => {
    event.preventDefault();
    runAgain(event.target);
  });
}

export function showInstance(id) {
  if (current && current.id === id) return;
  leaveInstance();
  current = { id, info: null, stream: new AbortController(), poll: null, refreshTimer: null, outputs: 0, events: 0 };
  $("#inst-id").textContent = id;
  fill($("#inst-summary"));
  for (const list of ["#events", "#outputs", "#requests", "#checkpoints"]) fill($(list));
  for (const empty of ["#events-empty", "#outputs-empty", "#requests-empty", "#checkpoints-empty"]) $(empty).hidden = false;
  for (const count of ["#outputs-count", "#requests-count", "#checkpoints-count"]) $(count).textContent = "";
  $("#inst-submit").reset();
  $("#inst-error").hidden = true;
  refresh();
  followEvents(current);
  const mine = current;
  current.poll = setInterval(() => {
    if (!document.hidden && mine === current) refresh();
  }, POLL_MS);
}

export function leaveInstance() {
  if (!current) return;
  current.stream.abort();
  clearInterval(current.poll);
  clearTimeout(current.refreshTimer);
  current = null;
}

const path = (suffix = "") => `/api/instances/${seg(current.id)}${suffix}`;

// -- summary, requests, checkpoints ------------------------------------------------------------------------------

function refreshSoon() {
  if (!current || current.refreshTimer) return;
  const mine = current;
  mine.refreshTimer = setTimeout(() => {
    mine.refreshTimer = null;
    if (mine === current) refresh();
  }, 150);
}

async function refresh() {
  const mine = current;
  let info;
  let checkpoints;
  try {
    [info, checkpoints] = await Promise.all([get(path()), get(path("/checkpoints"))]);
  } catch (error) {
    if (mine !== current) return;
    if (error.status === 404) {
      // a submitted run that no coordinator started yet has no checkpoint; its events will tell when it does
      fill($("#inst-summary"), term("Status", el("span", { class: "muted", text: "not found yet (no run or checkpoint here)" })));
      return;
    }
    if (!document.querySelector(".notice-error")) notifyError(error, "Loading the instance");
    return;
  }
  if (mine !== current) return;
  current.info = info;
  showSummary(info);
  showRequests(info);
  showCheckpoints(checkpoints, info);
}

function term(name, ...value) {
  return el("div", {}, el("dt", { text: name }), el("dd", {}, ...value));
}

function showSummary(info) {
  const queued = info.queued_run_ids || [];
  fill(
    $("#inst-summary"),
    term("Workflow", info.workflow_name || "—"),
    term("Status", badge(info.status)),
    term("Superstep", String(info.superstep ?? "—")),
    term("Checkpoint", el("code", { title: info.checkpoint_id || "", text: localId(info.checkpoint_id, 16) || "—" })),
    term("Run", info.active_run_id
      ? el("code", { title: info.active_run_id, text: `${localId(info.active_run_id, 16)} running` })
      : "—"),
    term("Queued", String(queued.length)),
    term("Held by", info.holder ? `${info.holder.host || "?"} pid ${info.holder.pid ?? "?"}` : "nobody"),
    term("Last activity", el("span", { title: timeText(info.updated_at), text: ago(info.updated_at) })),
  );
  const run = info.active_run_id || queued[0];
  const cancel = $("#inst-cancel");
  cancel.disabled = !run;
  cancel.title = run ? `POST /api/runs/${run}/cancel` : "no queued or running run";
  $("#inst-reset").disabled = Boolean(info.active_run_id);
}

function requestList(pending) {
  if (!pending) return [];
  if (Array.isArray(pending)) return pending;
  return Object.entries(pending).map(([id, r]) => ({ ...r, request_id: (r && r.request_id) || id }));
}

function showRequests(info) {
  const requests = requestList(info.pending_requests);
  const box = $("#requests");
  // keep a form the user is typing in: only rebuild when the set of requests changed
  const key = requests.map((r) => r.request_id).join(",");
  if (box.dataset.key === key) return;
  box.dataset.key = key;
  fill(box, ...requests.map(requestCard));
  $("#requests-empty").hidden = requests.length > 0;
  $("#requests-count").textContent = requests.length ? String(requests.length) : "";
}

function requestCard(request) {
  const type = request.response_type || "any JSON";
  const answer = el("input", { name: "answer", class: "mono", autocomplete: "off", spellcheck: "false", placeholder: type === "bool" ? "true or false" : `JSON of type ${type}`, "aria-label": `answer to ${request.request_id}` });
  const form = el(
    "form",
    { class: "answer-form" },
    el("label", {}, el("span", { class: "muted", text: `Answer (JSON, ${type})` }), answer),
    el("div", { class: "row" },
      type === "bool" ? el("button", { type: "button", class: "button", text: "true", onclick: () => answerRequest(request, true, form) }) : null,
      type === "bool" ? el("button", { type: "button", class: "button", text: "false", onclick: () => answerRequest(request, false, form) }) : null,
      el("button", { type: "submit", class: "button primary", text: "Send answer" })),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    let value;
    try {
      value = parseJsonField(answer.value, "the answer");
    } catch (error) {
      notifyError(error, "Answering");
      return;
    }
    if (value === undefined) {
      notify("Write an answer first (JSON).", { title: "Answering" });
      return;
    }
    answerRequest(request, value, form);
  });
  return el(
    "article",
    { class: "card request", dataset: { request: request.request_id } },
    el("header", { class: "card-head" },
      el("strong", { text: request.executor_id || "request" }),
      el("code", { class: "muted", title: request.request_id, text: shortId(request.request_id, 16) })),
    el("pre", { class: "payload", text: pretty(request.data) }),
    form,
  );
}

async function answerRequest(request, value, form) {
  const buttons = form.querySelectorAll("button");
  buttons.forEach((b) => { b.disabled = true; });
  try {
    const { data } = await post(path("/responses"), { [request.request_id]: value });
    const card = form.closest(".request");
    card.classList.add("answered");
    fill(form, el("p", { class: "ok", text: `Answered: ${JSON.stringify(value)} — run ${shortId((data && data.run_id) || "", 40)} ${data && data.state ? data.state : ""}` }));
  } catch (error) {
    notifyError(error, "Answering");
    buttons.forEach((b) => { b.disabled = false; });
  }
}

function showCheckpoints(checkpoints, info) {
  const box = $("#checkpoints");
  const key = `${checkpoints.map((c) => c.checkpoint_id).join(",")}|${info.checkpoint_id}|${Boolean(info.active_run_id)}`;
  if (box.dataset.key === key) return;
  box.dataset.key = key;
  const { rows, width } = lineageRows(checkpoints);
  fill(box, ...rows.map((row, n) => checkpointRow(row, width, rows[n + 1], info)));
  $("#checkpoints-empty").hidden = checkpoints.length > 0;
  $("#checkpoints-count").textContent = checkpoints.length ? String(checkpoints.length) : "";
}

function checkpointRow(row, width, older, info) {
  const cp = row.cp;
  const isCurrent = cp.checkpoint_id === info.checkpoint_id;
  const prev = cp.previous_checkpoint_id;
  const branch = prev && (!older || older.cp.checkpoint_id !== prev);
  const queued = countOf(cp.queued);
  const pending = countOf(cp.pending);
  return el(
    "div",
    { class: isCurrent ? "cp cp-current" : "cp", dataset: { checkpoint: cp.checkpoint_id } },
    lineageCell(row, width, { current: isCurrent }),
    el("div", { class: "cp-body" },
      el("div", { class: "cp-line" },
        el("span", { class: "cp-step", text: `superstep ${cp.superstep}` }),
        el("code", { title: cp.checkpoint_id, text: localId(cp.checkpoint_id, 16) }),
        isCurrent ? el("span", { class: "tag tag-current", text: "current" }) : null,
        branch ? el("span", { class: "tag", title: prev, text: `from ${localId(prev, 8)}` }) : null),
      el("div", { class: "cp-line muted" },
        el("span", { title: timeText(cp.created_at), text: ago(cp.created_at) }),
        el("span", { text: ` · ${queued} queued message${queued === 1 ? "" : "s"}` }),
        pending ? el("span", { class: "warn", text: ` · ${pending} pending request${pending === 1 ? "" : "s"}` }) : null)),
    el("button", {
      type: "button",
      class: "button small",
      disabled: isCurrent || Boolean(info.active_run_id),
      title: isCurrent ? "this is the current checkpoint" : "make this checkpoint the instance's current state",
      text: "Restore",
      onclick: (event) => restore(cp.checkpoint_id, event.target),
    }),
  );
}

// -- live events ---------------------------------------------------------------------------------------------

function followEvents(state) {
  const label = $("#events-state");
  follow(`/api/instances/${seg(state.id)}/events`, {
    signal: state.stream.signal,
    onState: (s) => {
      if (state !== current) return;
      label.textContent = s === "live" ? "● live" : s;
      label.className = `stream-state stream-${s}`;
    },
    onError: (error) => {
      if (state === current) notifyError(error, "Following the events");
    },
    onMessage: (message) => {
      if (state !== current) return;
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        event = { type: message.event, data: message.data };
      }
      showEvent(event, message.id);
    },
  });
}

function showEvent(event, id) {
  const list = $("#events");
  $("#events-empty").hidden = true;
  current.events += 1;
  const type = event.type || "message";
  const where = [event.executor_id, event.superstep !== undefined ? `step ${event.superstep}` : null].filter(Boolean).join(" · ");
  const item = el(
    "li",
    { class: `event event-${type}`, dataset: { eventId: id || "", type } },
    el("span", { class: "event-type", text: type }),
    el("span", { class: "event-where muted", text: where }),
    el("span", { class: "event-id muted mono", title: event.run_id ? `run ${event.run_id}` : "", text: id || "" }),
    summaryOf(event),
  );
  list.prepend(item);
  while (list.children.length > MAX_EVENTS_SHOWN) list.lastElementChild.remove();
  if (type === "output") showOutput(event);
  if (type === "run_ended") showRunError(event);
  if (REFRESHING_EVENTS.has(type)) refreshSoon();
}

function summaryOf(event) {
  if (event.type === "run_ended" && event.data) {
    const d = event.data;
    const text = [d.state, d.status].filter(Boolean).join(" · ") + (d.error ? ` — ${d.error.type || ""}: ${d.error.message || ""}` : "");
    return el("span", { class: "event-data", text });
  }
  if (event.data === undefined || event.data === null) return null;
  const text = pretty(event.data);
  return el("span", { class: "event-data mono", title: text.length > 160 ? text : "", text: text.length > 160 ? `${text.slice(0, 160)}…` : text });
}

/** The error of the instance's last run, if it failed (events arrive oldest first: the last one wins). */
function showRunError(event) {
  const error = event.data && event.data.error;
  const box = $("#inst-error");
  box.hidden = !error;
  if (error) {
    const where = error.executor_id ? ` in ${error.executor_id}` : "";
    box.textContent = `Last run ${event.data.state || "failed"}${where}: ${error.type || "Error"}: ${error.message || ""}`;
  }
}

function showOutput(event) {
  current.outputs += 1;
  $("#outputs-empty").hidden = true;
  $("#outputs-count").textContent = String(current.outputs);
  $("#outputs").prepend(
    el("li", { class: "output" },
      el("div", { class: "muted" },
        `from ${event.executor_id || "?"}`,
        event.superstep !== undefined ? ` · superstep ${event.superstep}` : "",
        event.run_id ? ` · run ${localId(event.run_id, 8)}` : ""),
      el("pre", { class: "payload", text: pretty(event.data) })),
  );
}

// -- steering ------------------------------------------------------------------------------------------------

async function cancelRun() {
  const info = current && current.info;
  const run = info && (info.active_run_id || (info.queued_run_ids || [])[0]);
  if (!run) return;
  try {
    const { data } = await post(`/api/runs/${seg(run)}/cancel`);
    notify(data && data.cancelled ? `Run ${run} cancelled.` : `Run ${run} had already ended.`, { kind: "ok" });
  } catch (error) {
    notifyError(error, "Cancelling");
  }
  refreshSoon();
}

async function resetInstance() {
  if (!current) return;
  if (!confirm(`Reset instance ${current.id}? Its queued work and pending requests are dropped.`)) return;
  try {
    await post(path("/reset"));
    notify(`Instance ${current.id} reset.`, { kind: "ok" });
  } catch (error) {
    notifyError(error, "Resetting");
  }
  refresh();
}

async function restore(checkpointId, button) {
  if (!current) return;
  button.disabled = true;
  try {
    await post(path("/restore"), { checkpoint_id: checkpointId });
    notify(`Restored to checkpoint ${checkpointId}.`, { kind: "ok" });
  } catch (error) {
    notifyError(error, "Restoring");
    button.disabled = false;
  }
  refresh();
}

async function runAgain(form) {
  if (!current) return;
  const workflow = current.info && current.info.workflow_name;
  if (!workflow) {
    notify("The instance's workflow is not known yet.", { title: "Run again" });
    return;
  }
  const body = { instance_id: current.id };
  try {
    const input = parseJsonField(form.elements.input.value, "the input");
    if (input !== undefined) body.input = input;
    const { data } = await post(`/api/workflows/${seg(workflow)}/runs`, body);
    notify(`Run ${data.run_id} ${data.state}.`, { kind: "ok" });
    form.reset();
  } catch (error) {
    notifyError(error, "Run again");
  }
}
