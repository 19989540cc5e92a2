// Clarion's admin console: polls the JSON API every two seconds and redraws each section.
//
// Every value from the API reaches the page through textContent or setAttribute (never
// innerHTML), so no notification, user id or error message can become markup. Requests carry
// the session cookie (same origin) and X-Clarion-Console, which the server requires of the
// console's writes: a form on another site cannot send it.
"use strict";

(() => {
  const root = document.body.dataset.root || "";
  const REFRESH_MS = 2000;
  const HOST_EVERY_MS = 60000;

  const state = {
    search: { id: "", user: "", status: "" },
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

  class ApiError extends Error {}

  async function api(method, path) {
    let response;
    try {
      response = await fetch(root + path, {
        method,
        credentials: "same-origin",
        cache: "no-store",
        headers: { Accept: "application/json", "X-Clarion-Console": "1" },
      });
    } catch (err) {
      throw new ApiError("Clarion does not answer");
    }
    if (response.status === 401) {
      // The session expired or was signed out elsewhere: back to the sign-in form.
      window.location.assign(`${root}/admin`);
      throw new ApiError("signed out");
    }
    let body = null;
    try {
      body = await response.json();
    } catch (err) {
      throw new ApiError(`HTTP ${response.status}`);
    }
    if (!body || !body.success) {
      const code = body && body.error ? body.error : `http_${response.status}`;
      throw new ApiError(body && body.message ? `${code}: ${body.message}` : code);
    }
    return body;
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

  async function loadDetail() {
    const panel = document.getElementById("notification-detail");
    const id = state.selected;
    if (!id) return;
    let n;
    try {
      ({ data: n } = await api("GET", `/v1/notifications/${encodeURIComponent(id)}`));
    } catch (err) {
      if (state.selected === id) {
        panel.replaceChildren(el("p", { className: "error" }, `Could not load ${id}: ${err.message}`));
      }
      return;
    }
    if (state.selected !== id) return; // closed or replaced while this answer was on its way
    // One row per channel, and under it a line with its error when it has one.
    const channels = Object.entries(n.channels || {}).flatMap(([channel, c]) => {
      const error = c.error_code || c.error ? [c.error_code, c.error].filter(Boolean).join(": ") : "";
      const row = el("tr", { "data-channel": channel, className: error ? "has-sub" : null },
        td(channel, "name"), el("td", { className: "status" }, badge(c.status)),
        td(c.recipient, "mono"), td(c.provider), td(String(c.attempts ?? 0), "num"));
      return error ? [row, el("tr", { className: "sub" }, el("td", { colspan: 5, className: "message" }, error))]
        : [row];
    });
    const hops = (n.hops || []).map((h) => el("tr", {},
      td(h.hop), td(h.channel), td(timeOfDay(h.at)),
      td(`+${Number(h.ms_since_received).toFixed(1)} ms`, "num")));
    const channelTable = el("table", {},
      el("thead", {}, el("tr", {}, ...["Channel", "Status", "Recipient", "Provider", "Attempts"]
        .map((t) => el("th", {}, t)))),
      el("tbody", {}));
    fill(channelTable.tBodies[0], channels, 5, "no channel");
    const hopTable = el("table", {},
      el("thead", {}, el("tr", {}, ...["Hop", "Channel", "At", "Since received"]
        .map((t) => el("th", { className: t === "Since received" ? "num" : null }, t)))),
      el("tbody", {}));
    fill(hopTable.tBodies[0], hops, 4, "no hop recorded");
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
    panel.replaceChildren(
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
      el("h4", {}, "Timeline"), hopTable);
    panel.dataset.notification = n.notification_id;
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
    ["notifications", loadNotifications],
    ["outbox", loadOutbox],
  ];

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

  refresh();
})();
