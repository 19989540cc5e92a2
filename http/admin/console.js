// Clarion's admin console: polls the JSON API every two seconds and redraws each section.
//
// Every value from the API reaches the page through textContent or setAttribute (never
// innerHTML), so no notification, user id or error message can become markup. Requests carry
// the session cookie (same origin) and X-Clarion-Console, which the server requires of the
// console's writes: a form on another site cannot send it.
//
// This file holds what every section shares and the operations sections; the templates, the
// test sends, the users and the charts are in console-*.js, loaded after it, and reach these
// helpers through `window.ClarionConsole`.
"use strict";

(() => {
  const root = document.body.dataset.root || "";
  const REFRESH_MS = 2000;
  const HOST_EVERY_MS = 60000;

  const state = {
    search: { id: "", user: "", status: "" },
    suppressions: { channel: "", reason: "", address: "", page: 1 },
    removalsPage: 1,
    removing: null, // the suppression the removal dialog is about
    selected: null, // the notification shown in the detail panel
    hostname: "",
    clockOffsetMs: 0, // server clock minus this browser's: uptimes use the server's clock
    hostFetchedAt: 0,
    timer: null,
  };

  // -- small DOM helpers ------------------------------------------------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "className") node.className = value;
      else if (name === "onClick") node.addEventListener("click", value);
      else node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function td(text, className) {
    return el("td", { className }, text === null || text === undefined || text === "" ? "—" : text);
  }

  function fill(tbody, rows, columns, emptyText) {
    if (rows.length === 0) {
      tbody.replaceChildren(el("tr", { className: "empty" },
        el("td", { colspan: columns }, emptyText)));
    } else {
      tbody.replaceChildren(...rows);
    }
  }

  function badge(text, kind) {
    return el("span", { className: `badge ${kind || text}` }, text);
  }

  function sectionError(sectionId, error) {
    const node = document.querySelector(`#${sectionId} > .error`);
    if (!node) return;
    if (error) {
      node.textContent = `Could not load: ${error.message}`;
      node.classList.remove("hidden");
    } else {
      node.textContent = "";
      node.classList.add("hidden");
    }
  }

  let flashTimer = null;
  function flash(text, kind) {
    const node = document.getElementById("flash");
    node.textContent = text;
    node.className = `flash ${kind || "ok"}`;
    clearTimeout(flashTimer);
    flashTimer = setTimeout(() => node.classList.add("hidden"), 6000);
  }

  // -- time ---------------------------------------------------------------------------------

  const pad = (n) => String(n).padStart(2, "0");

  function toDate(value) {
    if (value === null || value === undefined || value === "") return null;
    if (typeof value === "number") return new Date(value * 1000);
    // PostgreSQL timestamps arrive as "2025-01-02 03:04:05.678901+00:00".
    const iso = String(value).replace(" ", "T").replace(/(\.\d{3})\d+/, "$1");
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? null : date;
  }

  function clock(value) {
    const d = toDate(value);
    if (!d) return "—";
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function timeOfDay(value) {
    const d = toDate(value);
    if (!d) return "—";
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.` +
      String(d.getMilliseconds()).padStart(3, "0");
  }

  function duration(seconds) {
    if (seconds === null || !Number.isFinite(seconds)) return "—";
    let s = Math.max(0, Math.floor(seconds));
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    if (d) return `${d}d ${h}h ${pad(m)}m`;
    if (h) return `${h}h ${pad(m)}m ${pad(s)}s`;
    if (m) return `${m}m ${pad(s)}s`;
    return `${s}s`;
  }

  const serverNow = () => (Date.now() + state.clockOffsetMs) / 1000;

  function ago(value) {
    const d = toDate(value);
    return d ? `${duration(serverNow() - d.getTime() / 1000)} ago` : "—";
  }

  // -- the API --------------------------------------------------------------------------------

  // `code` is the API's stable error code, `detail` its `data` (a syntax error's field, ...).
  class ApiError extends Error {
    constructor(message, code, detail, status) {
      super(message);
      this.code = code || "";
      this.detail = detail === undefined ? null : detail;
      this.status = status || 0;
    }
  }

  async function api(method, path, body, extraHeaders) {
    const headers = { Accept: "application/json", "X-Clarion-Console": "1", ...(extraHeaders || {}) };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(root + path, {
        method,
        credentials: "same-origin",
        cache: "no-store",
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      throw new ApiError("Clarion does not answer");
    }
    if (response.status === 401) {
      // The session expired or was signed out elsewhere: back to the sign-in form.
      window.location.assign(`${root}/admin`);
      throw new ApiError("signed out");
    }
    let answer = null;
    try {
      answer = await response.json();
    } catch (err) {
      throw new ApiError(`HTTP ${response.status}`, `http_${response.status}`, null, response.status);
    }
    if (!answer || !answer.success) {
      const code = answer && answer.error ? answer.error : `http_${response.status}`;
      throw new ApiError(answer && answer.message ? `${code}: ${answer.message}` : code, code,
        answer ? answer.data : null, response.status);
    }
    return answer;
  }

  const q = (params) => {
    const search = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null) search.set(k, v);
    return search.toString();
  };

  // -- sections -------------------------------------------------------------------------------

  async function loadHost() {
    if (Date.now() - state.hostFetchedAt < HOST_EVERY_MS && state.hostname) return;
    const { data } = await api("GET", "/admin/api/host");
    state.hostname = data.hostname;
    state.clockOffsetMs = data.now * 1000 - Date.now();
    state.hostFetchedAt = Date.now();
    document.getElementById("host").textContent = data.hostname;
  }

  function breakerChips(breakers) {
    const entries = Object.entries(breakers || {});
    if (entries.length === 0) return "—";
    const wrap = el("span", { className: "chips inline" });
    for (const [dependency, breakerState] of entries.sort()) {
      wrap.append(el("span", { className: `chip ${breakerState}`, title: `breaker ${breakerState}` },
        `${dependency}: ${breakerState}`));
    }
    return wrap;
  }

  function renderTree(data) {
    const sup = data.supervisor || {};
    document.getElementById("supervisor").textContent =
      `Supervisor ${sup.name || ""} · pid ${sup.pid ?? "—"} · ${state.hostname || "…"}`;

    const deps = document.getElementById("dependencies");
    const observed = Object.entries((data.observations || {}).dependencies || {}).sort();
    deps.replaceChildren(...observed.map(([name, up]) =>
      el("span", { className: `chip ${up ? "up" : "down"}`, "data-dependency": name },
        `${name} ${up ? "up" : "down"}`)));

    const now = serverNow();
    const rows = (data.children || []).map((child) => el("tr", { "data-actor": child.name },
      td(child.name, "name"),
      td(child.class, "class"),
      td(child.node || state.hostname, "host"),
      td(child.pid, "pid num"),
      el("td", { className: "state" }, badge(child.state)),
      td(child.state === "running" && child.started_at ? duration(now - child.started_at) : "—",
        "uptime"),
      td(String(child.restarts ?? 0), "restarts num"),
      td(child.last_exit ? `${clock(child.last_exit)} (${ago(child.last_exit)})` +
        (child.last_exit_reason ? `: ${child.last_exit_reason}` : "") : "never", "last-exit"),
      el("td", { className: "breakers" }, breakerChips(child.breakers)),
    ));
    fill(document.getElementById("actors"), rows, 9, "no actors reported");
  }

  // The previous reading of each queue's depth, to show how fast it fills or drains.
  const lastDepths = new Map();

  function renderQueues(data) {
    const observations = data.observations || {};
    const queues = Object.entries(observations.queues || {}).sort();
    const consumers = observations.consumers || {};
    const now = Date.now() / 1000;
    const rows = queues.map(([name, depth]) => {
      const before = lastDepths.get(name);
      let rate = "—";
      if (before && now > before.at && depth !== before.depth) {
        const perSecond = (depth - before.depth) / (now - before.at);
        rate = `${perSecond > 0 ? "+" : ""}${perSecond.toFixed(1)}/s`;
      } else if (before) {
        rate = "0/s";
      }
      if (!before || before.depth !== depth) lastDepths.set(name, { depth, at: now });
      return el("tr", { "data-queue": name },
        td(name, "name"), td(String(depth), `depth num${depth > 0 ? " busy" : ""}`),
        td(String(consumers[name] ?? "—"), "consumers num"), td(rate, "rate num"));
    });
    fill(document.getElementById("queue-depths"), rows, 4,
      "no observation yet (the monitor reports every few seconds)");
  }

  function renderAlerts(alerts) {
    const active = alerts.active || [];
    const recent = (alerts.recent || []).slice(0, 5); // newest first
    document.getElementById("alerts-summary").textContent =
      active.length ? `${active.length} active` : "all clear";
    fill(document.getElementById("alerts-active"), active.map((a) => el("tr", { "data-alert": a.key },
      el("td", {}, badge(a.severity, `severity-${a.severity}`)),
      td(a.kind), td(a.message, "message"), td(`${clock(a.since)} (${ago(a.since)})`),
    )), 4, "no active alert");
    fill(document.getElementById("alerts-recent"), recent.map((a) => el("tr", {},
      td(a.kind), td(a.message, "message"), td(clock(a.since)),
      td(a.resolved_at ? clock(a.resolved_at) : "still active"),
    )), 4, "none");
  }

  async function loadTree() {
    const { data } = await api("GET", "/v1/system/actors");
    renderTree(data);
    renderQueues(data);
    renderAlerts(data.alerts || { active: [], recent: [] });
  }

  // Every host of the cluster, from the heartbeats each one's Supervisor writes.
  function renderHosts(data) {
    const hosts = data.hosts || [];
    document.getElementById("hosts-summary").textContent =
      `${data.up} up` + (data.down ? `, ${data.down} down or stopped` : "");
    fill(document.getElementById("host-rows"), hosts.map((h) => el("tr", { "data-host": h.node },
      td(h.node + (h.leader ? " (leader)" : ""), "name"),
      el("td", { className: "status" }, badge(h.status)),
      td(h.role || "—"),
      td(h.address ? `${h.address}:${h.admin_port ?? ""}` : "—", "address"),
      td((h.channels || []).join(", ") || "—"),
      td(Object.entries(h.providers || {}).map(([c, p]) => `${c}: ${p}`).join(", ") || "—"),
      td(`${Number(h.heartbeat_age).toFixed(1)} s ago`, "heartbeat num"),
      td((h.actors || []).map((a) => `${a.name} ${a.state}` +
        (a.placed ? ` on ${a.node || "?"}` : "")).join(", ") || "—", "actors"),
    )), 8, "no host has sent a heartbeat yet");
  }

  // Each channel's providers in failover order: the breaker an operator watches in an incident,
  // and how the last hour's attempts were shared (the failover at work).
  function renderProviders(data) {
    const rows = [];
    for (const [channel, providers] of Object.entries(data.channels || {}).sort()) {
      for (const p of providers) {
        rows.push(el("tr", { "data-provider": `${channel}:${p.provider}` },
          td(channel), td(p.order ? `${p.order}. ${p.provider}` : `${p.provider} (no longer configured)`, "name"),
          el("td", { className: "breaker" }, badge(p.breaker, p.breaker)),
          td(String(p.attempts), "attempts num"), td(String(p.sent), "num"),
          td(String(p.failed), `num${p.failed ? " busy" : ""}`),
          td(`${Math.round(p.share * 100)} %`, "share num")));
      }
    }
    fill(document.getElementById("provider-rows"), rows, 7, "no provider");
  }

  async function loadProviders() {
    const { data } = await api("GET", "/v1/system/providers");
    renderProviders(data);
  }

  async function loadHosts() {
    const { data } = await api("GET", "/v1/system/cluster");
    renderHosts(data);
  }

  async function act(button, method, path, done) {
    button.disabled = true;
    try {
      const { data } = await api(method, path);
      flash(done(data), "ok");
    } catch (err) {
      flash(`Failed: ${err.message}`, "bad");
    } finally {
      button.disabled = false;
      refreshSoon();
    }
  }

  async function loadDeadLetters() {
    const { data, meta } = await api("GET", "/v1/dlq?limit=50");
    const total = meta && meta.total !== undefined ? meta.total : data.length;
    document.getElementById("dlq-summary").textContent =
      total ? `${total} waiting for an operator${total > data.length ? `, ${data.length} shown` : ""}`
        : "empty";
    const rows = data.map((d) => {
      const id = d.dead_letter_id;
      const replay = el("button", { type: "button", className: "small replay" }, "Replay");
      replay.addEventListener("click", () => act(replay, "POST", `/v1/dlq/${id}/replay`,
        () => `Dead letter ${id} replayed: notification ${d.notification_id} is queued again.`));
      const discard = el("button", { type: "button", className: "small danger discard" }, "Discard");
      discard.addEventListener("click", () => {
        if (!window.confirm(`Discard dead letter ${id}? It will not be delivered.`)) return;
        act(discard, "DELETE", `/v1/dlq/${id}`, () => `Dead letter ${id} discarded.`);
      });
      return el("tr", { "data-dead-letter": id, "data-notification": d.notification_id },
        td(String(id), "num"),
        el("td", { className: "mono" }, notificationLink(d.notification_id)),
        td(d.channel), td(String(d.attempts), "num"), td(d.error_code, "mono"),
        td(d.error, "message"), td(clock(d.created_at)),
        el("td", { className: "actions" }, replay, discard));
    });
    fill(document.getElementById("dead-letters"), rows, 8, "no dead letter");
  }

  // The first block of a UUID tells rows apart; the full id is in the title and the detail.
  const shortId = (id) => (String(id).length > 13 ? `${String(id).slice(0, 8)}…` : String(id));

  function notificationLink(id, short) {
    const link = el("a", { href: "#notifications", className: "mono", title: `show notification ${id}` },
      short ? shortId(id) : id);
    link.addEventListener("click", (event) => {
      event.preventDefault();
      select(id, true);
    });
    return link;
  }

  async function loadNotifications() {
    const { id, user, status } = state.search;
    let rows;
    let summary;
    if (id) {
      try {
        const { data } = await api("GET", `/v1/notifications/${encodeURIComponent(id)}`);
        rows = [data];
        summary = "1 match";
      } catch (err) {
        if (!String(err.message).startsWith("notification_not_found")) throw err;
        rows = [];
        summary = "no notification with this id";
      }
    } else {
      const body = await api("GET", `/v1/notifications?${q({ user_id: user, status, limit: 25 })}`);
      rows = body.data;
      const total = body.meta ? body.meta.total : rows.length;
      summary = `${total} match${total === 1 ? "" : "es"}${total > rows.length ? `, newest ${rows.length} shown` : ""}`;
    }
    document.getElementById("notifications-summary").textContent = summary;
    fill(document.getElementById("notification-rows"), rows.map((n) => {
      const row = el("tr", { "data-notification": n.notification_id,
        className: n.notification_id === state.selected ? "selected clickable" : "clickable" },
      el("td", { className: "mono id", title: n.notification_id }, shortId(n.notification_id)),
      td(n.user_id), td(n.template_key),
      el("td", { className: "status" }, badge(n.status)), td(clock(n.created_at)));
      row.addEventListener("click", () => select(n.notification_id, false));
      return row;
    }), 5, "no notification matches");
  }

  function kv(label, value, className) {
    const shown = value === null || value === undefined || value === "" ? "—" : value;
    return [el("dt", {}, label), el("dd", { className }, shown)];
  }

  // A notification as the detail panels show it: its facts, a table of its channels and its
  // timeline, hop by hop; `actions` go in its head.
  function notificationView(n, actions) {
    // One row per channel, and under it a line with its error when it has one.
    const channels = Object.entries(n.channels || {}).flatMap(([channel, c]) => {
      const error = c.error_code || c.error ? [c.error_code, c.error].filter(Boolean).join(": ") : "";
      const row = el("tr", { "data-channel": channel, className: error ? "has-sub" : null },
        td(channel, "name"), el("td", { className: "status" }, badge(c.status)),
        td(c.recipient, "mono"), td(c.provider), td(String(c.attempts ?? 0), "num"));
      return error ? [row, el("tr", { className: "sub" }, el("td", { colspan: 5, className: "message" }, error))]
        : [row];
    });
    const hops = (n.hops || []).map((h) => el("tr", { "data-hop": h.hop },
      td(h.hop), td(h.channel), td(timeOfDay(h.at)),
      td(`+${Number(h.ms_since_received).toFixed(1)} ms`, "num")));
    const channelTable = el("table", {},
      el("thead", {}, el("tr", {}, ...["Channel", "Status", "Recipient", "Provider", "Attempts"]
        .map((t) => el("th", {}, t)))),
      el("tbody", {}));
    fill(channelTable.tBodies[0], channels, 5, "no channel");
    const hopTable = el("table", { className: "timeline" },
      el("thead", {}, el("tr", {}, ...["Hop", "Channel", "At", "Since received"]
        .map((t) => el("th", { className: t === "Since received" ? "num" : null }, t)))),
      el("tbody", {}));
    fill(hopTable.tBodies[0], hops, 4, "no hop recorded");
    return [
      el("div", { className: "detail-head" },
        el("h3", {}, "Notification ", el("span", { className: "mono" }, n.notification_id)),
        el("div", { className: "actions" }, ...actions)),
      el("dl", { className: "facts" },
        ...kv("Status", badge(n.status), "status"), ...kv("User", n.user_id),
        ...kv("Template", `${n.template_key} v${n.template_version} (${n.language})`),
        ...kv("Priority", n.priority), ...kv("Request id", n.request_id),
        ...(n.scheduled_for ? kv("Scheduled for", clock(n.scheduled_for)) : []),
        ...kv("Created", clock(n.created_at)), ...kv("Updated", clock(n.updated_at))),
      el("h4", {}, "Channels"), channelTable,
      el("h4", {}, "Timeline"), hopTable,
    ];
  }

  // Fetch notification `id` and show it in `panel`, unless `wanted()` says the panel moved on
  // meanwhile; `actions(n)` makes its head's buttons. The notification, or null.
  async function showNotification(panel, id, wanted, actions) {
    let n;
    try {
      ({ data: n } = await api("GET", `/v1/notifications/${encodeURIComponent(id)}`));
    } catch (err) {
      if (wanted()) {
        panel.replaceChildren(el("p", { className: "error" }, `Could not load ${id}: ${err.message}`));
      }
      return null;
    }
    if (!wanted()) return null; // closed or replaced while this answer was on its way
    panel.replaceChildren(...notificationView(n, actions(n)));
    panel.dataset.notification = n.notification_id;
    return n;
  }

  async function loadDetail() {
    const panel = document.getElementById("notification-detail");
    const id = state.selected;
    if (!id) return;
    await showNotification(panel, id, () => state.selected === id, (n) => {
      const close = el("button", { type: "button", className: "small quiet" }, "Close");
      close.addEventListener("click", () => { state.selected = null; resetDetail(); refreshSoon(); });
      const actions = [close];
      if (n.status === "scheduled") {
        // Held for send_at or quiet hours: it can still be called back.
        const cancel = el("button", { type: "button", className: "small danger", "data-action": "cancel" },
          "Cancel");
        cancel.addEventListener("click", () => act(cancel, "DELETE",
          `/v1/notifications/${encodeURIComponent(n.notification_id)}`,
          (d) => `Cancelled: ${(d.cancelled_channels || []).join(", ") || "nothing was scheduled"}.`));
        actions.unshift(cancel);
      }
      return actions;
    });
  }

  function resetDetail() {
    const panel = document.getElementById("notification-detail");
    delete panel.dataset.notification;
    panel.replaceChildren(el("p", { className: "muted" },
      "Select a notification to see its channels and timeline."));
  }

  function select(id, scroll) {
    state.selected = id;
    if (scroll) document.getElementById("notifications").scrollIntoView({ behavior: "smooth" });
    refreshSoon();
  }

  // -- suppressions -----------------------------------------------------------------------------

  const SUPPRESSIONS_PER_PAGE = 25;
  const REMOVALS_PER_PAGE = 10;

  // A list's pager (static in the page, so a click never lands on a button being redrawn).
  function showPage(pagerId, meta) {
    const pager = document.getElementById(pagerId);
    pager.querySelector('[data-page="previous"]').disabled = !meta.has_previous;
    pager.querySelector('[data-page="next"]').disabled = !meta.has_next;
    pager.querySelector(".pager-status").textContent =
      `page ${meta.page} of ${Math.max(1, meta.total_pages)}`;
  }

  function onPage(pagerId, turn) {
    const pager = document.getElementById(pagerId);
    pager.querySelector('[data-page="previous"]').addEventListener("click", () => turn(-1));
    pager.querySelector('[data-page="next"]').addEventListener("click", () => turn(1));
  }

  function suppressionRows(entries) {
    return entries.flatMap((s) => {
      const remove = el("button", { type: "button", className: "small danger", "data-action": "remove" },
        "Remove");
      remove.addEventListener("click", () => openRemoval(s));
      const source = el("td", { className: "source mono" }, s.source || "—");
      if (s.notification_id) source.append(" ", notificationLink(s.notification_id, true));
      const row = el("tr", { "data-suppression": s.address, className: s.note ? "has-sub" : null },
        td(s.address, "address mono"), td(s.channel, "channel"),
        el("td", { className: "reason" }, badge(s.reason, `reason-${s.reason}`)), source,
        el("td", { className: "when nowrap", title: ago(s.created_at) }, clock(s.created_at)),
        td(s.created_by, "by"), el("td", { className: "actions" }, remove));
      return s.note ? [row, el("tr", { className: "sub", "data-note-for": s.address },
        el("td", { colspan: 7, className: "message note" }, `Note: ${s.note}`))] : [row];
    });
  }

  function removalRows(removals) {
    return removals.map((r) => el("tr", { "data-removal": r.removal_id, "data-address": r.address },
      td(clock(r.removed_at), "when nowrap"), td(r.address, "address mono"), td(r.channel, "channel"),
      el("td", { className: "reason" }, badge(r.reason, `reason-${r.reason}`)),
      td(r.why, "why message"), td(r.removed_by, "removed-by"),
      td(`${clock(r.suppressed_at)} by ${r.suppressed_by}`, "suppressed")));
  }

  // The list with the filters and the removals (of the searched address, or all), a page each.
  async function loadSuppressions() {
    const f = state.suppressions;
    let list;
    let removals;
    try {
      [list, removals] = await Promise.all([
        api("GET", `/v1/suppressions?${q({ channel: f.channel, reason: f.reason, address: f.address,
          page: f.page, limit: SUPPRESSIONS_PER_PAGE })}`),
        api("GET", `/v1/suppressions/removals?${q({ address: f.address, page: state.removalsPage,
          limit: REMOVALS_PER_PAGE })}`),
      ]);
    } catch (err) {
      // A mistyped address is the operator's to fix, not a failure of Clarion's.
      if (!f.address || !String(err.message).startsWith("validation_error")) throw err;
      document.getElementById("suppressions-summary").textContent =
        `"${f.address}" is not an email address or an E.164 number (+ and digits)`;
      fill(document.getElementById("suppression-rows"), [], 7, "no suppression matches");
      fill(document.getElementById("removal-rows"), [], 7, "no removal");
      const none = { page: 1, total_pages: 1, has_next: false, has_previous: false };
      showPage("suppression-pager", none);
      showPage("removal-pager", none);
      return;
    }
    // A page emptied under us (the last entries removed): go to the last page there is.
    if (list.data.length === 0 && f.page > list.meta.total_pages) {
      f.page = Math.max(1, list.meta.total_pages);
      return loadSuppressions();
    }
    if (removals.data.length === 0 && state.removalsPage > removals.meta.total_pages) {
      state.removalsPage = Math.max(1, removals.meta.total_pages);
      return loadSuppressions();
    }
    const total = list.meta.total;
    const filtered = f.channel || f.reason || f.address;
    document.getElementById("suppressions-summary").textContent =
      `${total} ${filtered ? "matching" : "suppressed"} address${total === 1 ? "" : "es"}`;
    fill(document.getElementById("suppression-rows"), suppressionRows(list.data), 7,
      filtered ? "no suppression matches" : "no address is suppressed");
    showPage("suppression-pager", list.meta);

    const removed = removals.meta.total;
    document.getElementById("removals-summary").textContent = f.address
      ? `${removed} removal${removed === 1 ? "" : "s"} of ${f.address}`
      : `${removed} removal${removed === 1 ? "" : "s"}: who took what off the list, when and why`;
    fill(document.getElementById("removal-rows"), removalRows(removals.data), 7,
      f.address ? "this address was never removed" : "nothing was ever removed");
    showPage("removal-pager", removals.meta);
  }

  onPage("suppression-pager", (step) => {
    state.suppressions.page = Math.max(1, state.suppressions.page + step);
    refreshSoon();
  });
  onPage("removal-pager", (step) => {
    state.removalsPage = Math.max(1, state.removalsPage + step);
    refreshSoon();
  });

  const filterForm = document.getElementById("suppression-filter");
  function applyFilter() {
    state.suppressions = {
      channel: document.getElementById("suppression-channel").value,
      reason: document.getElementById("suppression-reason").value,
      address: document.getElementById("suppression-address").value.trim(),
      page: 1,
    };
    state.removalsPage = 1;
    refreshSoon();
  }
  filterForm.addEventListener("submit", (event) => {
    event.preventDefault();
    applyFilter();
  });
  for (const id of ["suppression-channel", "suppression-reason"]) {
    document.getElementById(id).addEventListener("change", applyFilter);
  }
  // After the reset has cleared the fields (it fires before it does).
  filterForm.addEventListener("reset", () => setTimeout(applyFilter));

  // The removal dialog: a reason is required, and the API is the one that says so.
  const removal = {
    dialog: document.getElementById("remove-suppression"),
    form: document.getElementById("remove-suppression-form"),
    reason: document.getElementById("remove-suppression-reason"),
    error: document.getElementById("remove-suppression-error"),
    confirm: document.querySelector('[data-action="confirm-removal"]'),
  };

  function removalError(text) {
    removal.error.textContent = text || "";
    removal.error.classList.toggle("hidden", !text);
  }

  function openRemoval(entry) {
    state.removing = entry;
    document.getElementById("remove-suppression-address").textContent = entry.address;
    document.getElementById("remove-suppression-entry").textContent =
      `${entry.channel}, ${entry.reason}, on the list since ${clock(entry.created_at)}` +
      ` (by ${entry.created_by})`;
    removal.reason.value = "";
    removalError(null);
    removal.confirm.disabled = false;
    removal.dialog.showModal();
    removal.reason.focus();
  }

  removal.dialog.addEventListener("close", () => { state.removing = null; });
  document.querySelector('[data-action="cancel-removal"]')
    .addEventListener("click", () => removal.dialog.close());
  removal.form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const entry = state.removing;
    if (!entry || removal.confirm.disabled) return;
    // An empty reason goes as none at all: the API refuses it (reason_required) and its own
    // message is shown, the rule being the API's, not this page's.
    const why = removal.reason.value.trim();
    const query = q({ reason: why });
    removal.confirm.disabled = true;
    try {
      const { data } = await api("DELETE",
        `/v1/suppressions/${encodeURIComponent(entry.address)}${query ? `?${query}` : ""}`);
      removal.dialog.close();
      flash(`Removed ${data.address} from the suppression list (it was ${data.reason}): ${data.why}`,
        "ok");
    } catch (err) {
      removalError(`Not removed: ${err.message}`);
      removal.reason.focus();
    } finally {
      removal.confirm.disabled = false;
      refreshSoon();
    }
  });

  async function loadOutbox() {
    const { data } = await api("GET", "/v1/outbox?limit=20");
    fill(document.getElementById("outbox-rows"), data.map((m) => el("tr", { "data-outbox": m.outbox_id },
      td(clock(m.created_at), "nowrap"), td(m.channel), td(m.recipient, "mono"), td(m.subject),
      td(m.body, "message clip"), el("td", {}, notificationLink(m.notification_id, true)),
    )), 6, "the outbox is empty (providers may be configured)");
  }

  // -- the refresh loop -----------------------------------------------------------------------

  const SECTIONS = [
    ["tree", loadTree], ["hosts", loadHosts], ["providers", loadProviders], ["dlq", loadDeadLetters],
    ["notifications", loadNotifications], ["suppressions", loadSuppressions],
    ["outbox", loadOutbox],
  ];

  // What the other console-*.js files add to each refresh (a test send's live timeline).
  const extraLoads = [];

  // One refresh at a time: a request for another while one runs is served right after it.
  let running = false;
  let again = false;

  async function refresh() {
    if (running) {
      again = true;
      return;
    }
    running = true;
    clearTimeout(state.timer);
    try {
      await loadHost();
    } catch (err) {
      // The host is cosmetic; every section says what failed on its own.
    }
    const results = await Promise.allSettled([
      ...SECTIONS.map(([id, load]) => load().then(() => sectionError(id), (err) => {
        sectionError(id, err);
        throw err;
      })),
      loadDetail(),
      ...extraLoads.map((load) => load()),
    ]);
    const failed = results.filter((r) => r.status === "rejected").length;
    const updated = document.getElementById("updated");
    updated.textContent = failed
      ? `update failed ${clock(Date.now() / 1000).slice(11)}`
      : `updated ${clock(Date.now() / 1000).slice(11)}`;
    updated.classList.toggle("stale", failed > 0);
    running = false;
    if (again) {
      again = false;
      refresh();
    } else {
      state.timer = setTimeout(refresh, REFRESH_MS);
    }
  }

  const refreshSoon = () => refresh();

  // -- search ---------------------------------------------------------------------------------

  const form = document.getElementById("search");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = document.getElementById("search-id").value.trim();
    state.search = {
      id,
      user: document.getElementById("search-user").value.trim(),
      status: document.getElementById("search-status").value,
    };
    if (id) state.selected = id;
    refreshSoon();
  });
  form.addEventListener("reset", () => {
    state.search = { id: "", user: "", status: "" };
    refreshSoon();
  });

  // What console-*.js use. They run after this file (deferred scripts run in order) and before
  // DOMContentLoaded, when the first refresh starts.
  window.ClarionConsole = Object.freeze({
    root, el, td, fill, badge, kv, flash, clock, timeOfDay, ago, duration, api, ApiError, q,
    sectionError, shortId, notificationLink, select, refreshSoon, showNotification,
    onRefresh: (load) => extraLoads.push(load),
  });
  document.addEventListener("DOMContentLoaded", refresh);
})();
