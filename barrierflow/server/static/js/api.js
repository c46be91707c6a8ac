// The JSON API and its event streams, with the bearer token when the server asks for one.
//
// Event streams are read with fetch() and parsed here rather than with EventSource: EventSource cannot send an
// Authorization header, and the token must never travel in a URL (it would end up in logs and history).

const TOKEN_KEY = "barrierflow.api-token";

export class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

// -- the token: asked once (one dialog however many requests got a 401), kept for this tab ---------------------

let asking = null;

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

function askToken() {
  if (asking) return asking;
  const dialog = document.getElementById("token-dialog");
  const form = document.getElementById("token-form");
  asking = new Promise((resolve) => {
    form.reset();
    const done = (event) => {
      event.preventDefault();
      const value = form.elements.token.value.trim();
      if (!value) return;
      sessionStorage.setItem(TOKEN_KEY, value);
      form.removeEventListener("submit", done);
      dialog.close();
      asking = null;
      document.dispatchEvent(new CustomEvent("token-changed"));
      resolve(value);
    };
    form.addEventListener("submit", done);
    dialog.showModal();
  });
  return asking;
}

function headers(extra = {}) {
  const h = { Accept: "application/json", ...extra };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

async function errorOf(response) {
  const text = await response.text().catch(() => "");
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  const error = body && typeof body === "object" ? body.error : null;
  if (error && typeof error === "object") {
    return new ApiError(response.status, String(error.type || "Error"), String(error.message || response.statusText));
  }
  return new ApiError(response.status, "HTTPError", text.slice(0, 300) || response.statusText || "request failed");
}

/** `await api("POST", "/api/...", body)` -> {status, data}; a non-2xx answer throws an ApiError. */
export async function api(method, path, body) {
  for (let attempt = 0; ; attempt++) {
    const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
    if (body !== undefined) init.body = JSON.stringify(body);
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      throw new ApiError(0, "NetworkError", `the server did not answer (${error.message})`);
    }
    if (response.status === 401 && attempt < 3) {
      await askToken();
      continue;
    }
    if (!response.ok) throw await errorOf(response);
    const text = await response.text();
    return { status: response.status, data: text ? JSON.parse(text) : null };
  }
}

export const get = (path) => api("GET", path).then((r) => r.data);
export const post = (path, body = {}) => api("POST", path, body);

/** A path segment from an id (ids are the user's: "notes/1" must stay one segment). */
export const seg = encodeURIComponent;

// -- Server-Sent Events over fetch ---------------------------------------------------------------------------

/**
 * Follow an event stream until `signal` aborts: `onMessage({id, event, data})` for each message, `onState(s)`
 * with "live", "reconnecting" or "stopped". After a dropped connection it reconnects with `Last-Event-ID` set to
 * the last id received, so the server resumes exactly after it (no gap, no duplicate).
 */
export async function follow(path, { signal, onMessage, onState = () => {}, onError = () => {} }) {
  let lastId = null;
  let delay = 500;
  while (!signal.aborted) {
    try {
      const h = headers({ Accept: "text/event-stream" });
      if (lastId) h["Last-Event-ID"] = lastId;
      const response = await fetch(path, { headers: h, signal, cache: "no-store" });
      if (response.status === 401) {
        await askToken();
        continue;
      }
      if (!response.ok) {
        const error = await errorOf(response);
        onError(error);
        if (response.status >= 400 && response.status < 500) {
          onState("stopped");
          return;
        }
        throw error;
      }
      onState("live");
      delay = 500;
      for await (const message of messages(response.body, signal)) {
        if (message.id) lastId = message.id;
        onMessage(message);
      }
      if (signal.aborted) break;
      onState("reconnecting"); // the server ended the stream: start again after the last id
    } catch (error) {
      if (signal.aborted) break;
      onState("reconnecting");
    }
    await sleep(delay, signal);
    delay = Math.min(delay * 2, 10000);
  }
  onState("stopped");
}

/** The messages of a text/event-stream body (https://html.spec.whatwg.org/#event-stream-interpretation). */
async function* messages(body, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let id = null;
  let event = "";
  let data = [];
  try {
    while (!signal.aborted) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let newline;
      while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
        if (buffer[newline] === "\r" && newline === buffer.length - 1) break; // maybe half of a \r\n
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
        if (line === "") {
          if (data.length) yield { id, event: event || "message", data: data.join("\n") };
          event = "";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue; // a comment: the server's keep-alive
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "data") data.push(text);
        else if (field === "event") event = text;
        else if (field === "id" && !text.includes("\0")) id = text;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}
