// The run inspector's entry point: routes (#/ and #/instances/<id>), the Redis health light, the token button.

import { forgetToken, get, token } from "./api.js";
import { $, clearNotices } from "./dom.js";
import { leaveHome, setUpHome, showHome } from "./home.js";
import { leaveInstance, setUpInstance, showInstance } from "./instance.js";

const HEALTH_MS = 10000;

function route() {
  const match = location.hash.match(/^#\/instances\/(.+)$/);
  const home = $("#view-home");
  const instance = $("#view-instance");
  if (match) {
    leaveHome();
    home.hidden = true;
    instance.hidden = false;
    showInstance(decodeURIComponent(match[1]));
  } else {
    leaveInstance();
    instance.hidden = true;
    home.hidden = false;
    showHome();
  }
  window.scrollTo(0, 0);
}

async function health() {
  const light = $("#health");
  try {
    const answer = await get("/api/health");
    light.textContent = `Redis ${answer.redis}`;
    light.className = "health health-ok";
  } catch (error) {
    light.textContent = error.status === 503 ? "Redis unreachable" : `API: ${error.type}`;
    light.className = "health health-bad";
    light.title = error.message;
  }
}

function showTokenButton() {
  $("#forget-token").hidden = !token();
}

setUpHome();
setUpInstance();
$("#forget-token").addEventListener("click", () => {
  forgetToken();
  showTokenButton();
});
document.addEventListener("token-changed", showTokenButton);
window.addEventListener("hashchange", () => {
  clearNotices();
  route();
});
route();
health();
showTokenButton();
setInterval(() => {
  if (!document.hidden) health();
}, HEALTH_MS);
document.documentElement.dataset.ready = "true";
