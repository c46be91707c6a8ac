// Building the DOM from server data without ever parsing it as HTML: every text goes through textContent,
// every attribute through setAttribute. Nothing in the page parses a string as HTML, so an output that holds
// "<img onerror=...>" is shown as those characters, never run.

/** el("div", {class: "x", dataset: {id: "1"}, onclick: f}, child, "text", ...) */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "text") node.textContent = String(value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

export function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  return node;
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace a node's children. */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

export const $ = (selector, root = document) => root.querySelector(selector);

/** A JSON value as indented text (for a <pre>), strings shown as they are. */
export function pretty(value) {
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

/** "12 s ago", "3 min ago", ...; the absolute time goes in the element's title. */
export function ago(iso) {
  if (!iso) return "—";
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return String(iso);
  const s = Math.max(0, Math.round((Date.now() - then) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function timeText(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}

/** A status or run state as a coloured badge ("idle_with_pending_requests" -> "waiting for answers"). */
const STATUS_LABELS = {
  idle_with_pending_requests: "waiting for answers",
  in_progress: "in progress",
};

export function badge(status) {
  const value = status || "unknown";
  return el("span", { class: `badge badge-${value}`, title: value, text: STATUS_LABELS[value] || value });
}

export function shortId(id, length = 12) {
  if (!id) return "";
  return id.length > length + 1 ? `${id.slice(0, length)}…` : id;
}

/** A checkpoint or run id without its instance part ("<instance>@<hex>" -> "<hex>"), shortened. */
export function localId(id, length = 12) {
  if (!id) return "";
  return shortId(id.includes("@") ? id.slice(id.lastIndexOf("@") + 1) : id, length);
}

/** How many items a field holds, whether it is a count, a list or a mapping. */
export function countOf(value) {
  if (value === null || value === undefined) return 0;
  if (typeof value === "number") return value;
  if (Array.isArray(value)) return value.length;
  if (typeof value === "object") return Object.keys(value).length;
  return 0;
}

// -- notices: errors and confirmations at the top of the page ------------------------------------------------

export function notify(message, { kind = "error", title = "", timeout = kind === "error" ? 0 : 4000 } = {}) {
  const box = $("#notices");
  const note = el(
    "div",
    { class: `notice notice-${kind}` },
    title ? el("strong", { text: title }) : null,
    el("span", { text: message }),
    el("button", { type: "button", class: "notice-close", "aria-label": "dismiss", text: "×", onclick: () => note.remove() }),
  );
  box.append(note);
  while (box.children.length > 4) box.firstElementChild.remove();
  if (timeout) setTimeout(() => note.remove(), timeout);
  return note;
}

/** Remove the notices (a new view starts without the errors of the last one). */
export function clearNotices() {
  $("#notices").replaceChildren();
}

/** Show an API error ({"error": {"type", "message"}}) or any thrown error. */
export function notifyError(error, context = "") {
  const type = error && error.type ? error.type : error && error.name ? error.name : "Error";
  const status = error && error.status ? ` (${error.status})` : "";
  const message = error && error.message ? error.message : String(error);
  return notify(message, { title: `${context ? `${context}: ` : ""}${type}${status}` });
}

/** Parse a JSON text field; an empty one is `undefined`. Throws an error that names the field. */
export function parseJsonField(text, name) {
  const trimmed = text.trim();
  if (!trimmed) return undefined;
  try {
    return JSON.parse(trimmed);
  } catch (error) {
    const e = new Error(`${name} is not valid JSON (${error.message}). A text is written in quotes: "release notes".`);
    e.type = "InvalidJSON";
    throw e;
  }
}
