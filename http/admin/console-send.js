// The console's "Send a test" section: pick a template, a user and variables, send one
// notification (POST /v1/notifications, recorded as this console session's), and watch its
// channels and timeline fill in beside the form, in the same view as the Notifications detail.
//
// A session opened with the internal secret cannot send (the secret never sends): the form
// says so instead. Uses window.ClarionConsole (console.js).
"use strict";

(() => {
  const C = window.ClarionConsole;
  const { el, api } = C;
  const $ = (id) => document.getElementById(id);
  const TEMPLATES_EVERY_MS = 15000;
  const FOLLOW_MS = 400; // how often a fresh send is read while it is on its way
  const FOLLOW_FOR_MS = 30000;
  const UNDER_WAY = new Set(["queued", "retrying"]);

  const s = {
    sent: null, // the notification shown beside the form
    followUntil: 0,
    followTimer: null,
    listedAt: 0,
    prefilled: "", // the variables this page wrote into the form (replaced on a template change)
  };
  const form = $("send-form");
  const panel = $("send-detail");

  function sendError(text) {
    $("send-error").textContent = text || "";
    $("send-error").classList.toggle("hidden", !text);
  }

  if ($("who").textContent.trim() === "internal") {
    for (const node of form.elements) node.disabled = true;
    $("send-summary").textContent = "signed in with the internal secret, which never sends" +
      " notifications: sign in with an admin API key to send a test";
  }

  // -- the template's keys and variables --------------------------------------------------

  async function loadTemplateChoices() {
    if (Date.now() - s.listedAt < TEMPLATES_EVERY_MS) return;
    s.listedAt = Date.now();
    const { data, meta } = await api("GET", "/v1/templates?limit=100");
    $("send-templates").replaceChildren(...data.map((k) => el("option", { value: k.template_key },
      `${Object.entries(k.versions || {}).map(([l, v]) => `${l} v${v}`).join(", ")}`)));
    if (meta.total > data.length) {
      $("send-template-note").textContent = `the first ${data.length} of ${meta.total} keys are` +
        " suggested; type any key";
    }
  }

  // Offer the chosen template's declared variables, unless the operator wrote their own.
  async function templateChosen() {
    const key = $("send-template").value.trim();
    const note = $("send-template-note");
    if (!key) return;
    let found;
    try {
      ({ data: found } = await api("GET", `/v1/templates/${encodeURIComponent(key)}`));
    } catch (err) {
      note.textContent = err.code === "template_not_found" ? `no live template '${key}'` : err.message;
      return;
    }
    const languages = Object.values(found.languages || {});
    note.textContent = `in ${languages.map((l) => `${l.language} (v${l.version})`).join(", ")}`;
    const names = [...new Set(languages.flatMap((l) => l.variables || []))].sort();
    const data = $("send-data");
    if (names.length && (data.value.trim() === "{}" || data.value === s.prefilled)) {
      s.prefilled = JSON.stringify(Object.fromEntries(names.map((n) => [n, ""])), null, 2);
      data.value = s.prefilled;
    }
  }

  $("send-template").addEventListener("change", templateChosen);

  // Another section asks to send to someone (the Users section's button).
  document.addEventListener("clarion:send-to", (event) => {
    $("send-user").value = event.detail.userId;
    $("send").scrollIntoView({ behavior: "smooth" });
    $("send-template").focus({ preventScroll: true });
  });

  // -- sending ----------------------------------------------------------------------------

  function idempotencyKey() {
    // One per click: a double submission or a retry of the same click is answered once.
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return `console-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
  }

  function requestBody() {
    const body = { user_id: $("send-user").value.trim(), template_key: $("send-template").value.trim() };
    const channels = [...form.querySelectorAll('input[name="channel"]:checked')].map((c) => c.value);
    if (channels.length === 0) throw new Error("pick at least one channel");
    if (channels.length < 3) body.channels = channels;
    const language = $("send-language").value.trim();
    if (language) body.language = language;
    let data;
    try {
      data = JSON.parse($("send-data").value.trim() || "{}");
    } catch (err) {
      throw new Error(`the variables are not JSON: ${err.message}`);
    }
    if (data === null || typeof data !== "object" || Array.isArray(data)) {
      throw new Error("the variables must be a JSON object");
    }
    body.message_data = data;
    return body;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = $("send-button");
    if (button.disabled) return;
    sendError(null);
    let body;
    try {
      body = requestBody();
    } catch (err) {
      sendError(err.message);
      return;
    }
    button.disabled = true;
    try {
      const { data } = await api("POST", "/v1/notifications", body,
        { "X-Idempotency-Key": idempotencyKey() });
      const channels = Object.entries(data.channels || {}).map(([c, status]) => `${c} ${status}`);
      C.flash(`Sent: notification ${data.notification_id} is ${data.status}` +
        ` (${channels.join(", ") || "no channel"}).`, "ok");
      s.sent = data.notification_id;
      s.followUntil = Date.now() + FOLLOW_FOR_MS;
      await follow();
    } catch (err) {
      sendError(`Not sent: ${err.message}`);
    } finally {
      button.disabled = false;
    }
  });

  // -- watching it go ---------------------------------------------------------------------

  async function showSent() {
    const id = s.sent;
    if (!id) return null;
    return C.showNotification(panel, id, () => s.sent === id, (n) => {
      const open = el("button", { type: "button", className: "small quiet" }, "Open in Notifications");
      open.addEventListener("click", () => C.select(n.notification_id, true));
      const close = el("button", { type: "button", className: "small quiet" }, "Close");
      close.addEventListener("click", () => {
        s.sent = null;
        clearTimeout(s.followTimer);
        delete panel.dataset.notification;
        panel.replaceChildren(el("p", { className: "muted" },
          "The notification you send shows here, its timeline filling in as it goes."));
      });
      return [open, close];
    });
  }

  // Read the fresh send often until every channel is past the queue (or half a minute went
  // by); after that the console's refresh keeps it current.
  async function follow() {
    clearTimeout(s.followTimer);
    const n = await showSent();
    if (!n || s.sent !== n.notification_id || Date.now() > s.followUntil) return;
    const moving = UNDER_WAY.has(n.status) ||
      Object.values(n.channels || {}).some((c) => UNDER_WAY.has(c.status));
    if (moving) s.followTimer = setTimeout(follow, FOLLOW_MS);
  }

  C.onRefresh(async () => {
    try {
      await loadTemplateChoices();
    } catch (err) {
      $("send-template-note").textContent = `no suggestions: ${err.message}`;
    }
    if (s.sent && Date.now() > s.followUntil) await showSent();
  });
})();
