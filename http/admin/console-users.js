// The console's Users section: find a user by id or email address (GET /v1/users/{id},
// GET /v1/users?email=) and show the profile, the preferences, the devices (push tokens) and
// the last 50 notifications (GET /v1/notifications?user_id=). Read-only: the console never
// writes users. Uses window.ClarionConsole (console.js).
"use strict";

(() => {
  const C = window.ClarionConsole;
  const { el, td, fill, kv, api, q } = C;
  const $ = (id) => document.getElementById(id);
  const LAST = 50;
  const AGAIN_MS = 5000; // the user on show is read again this often

  const u = { shown: null, at: 0 }; // the user on show (their user_id), and when it was read

  function show(text, error) {
    $("users-summary").textContent = text;
    C.sectionError("users", error || null);
  }

  // A user id, or an email address (any query with an "@": user ids may not hold one).
  async function find(query) {
    if (query.includes("@")) {
      const { data } = await api("GET", `/v1/users?${q({ email: query, limit: 1 })}`);
      return data[0] || null;
    }
    try {
      const { data } = await api("GET", `/v1/users/${encodeURIComponent(query)}`);
      return data;
    } catch (err) {
      if (err.code === "user_not_found") return null;
      throw err;
    }
  }

  function onOff(value) {
    if (value === true) return "on";
    if (value === false) return "off";
    return value;
  }

  function preferenceRows(preferences) {
    const p = preferences || {};
    const quiet = p.quiet_hours
      ? `${p.quiet_hours.start}–${p.quiet_hours.end} (${p.quiet_hours.timezone})` : "none";
    const known = new Set(["email_enabled", "push_enabled", "sms_enabled", "quiet_hours", "opt_outs"]);
    return [
      ...kv("Email", onOff(p.email_enabled ?? true), "pref-email"),
      ...kv("Push", onOff(p.push_enabled ?? true), "pref-push"),
      ...kv("SMS", onOff(p.sms_enabled ?? true), "pref-sms"),
      ...kv("Quiet hours", quiet, "pref-quiet"),
      ...kv("Opted out of", (p.opt_outs || []).join(", ") || "nothing", "pref-opt-outs"),
      // Whatever else is stored is shown as it is.
      ...Object.entries(p).filter(([k]) => !known.has(k))
        .flatMap(([k, v]) => kv(k, typeof v === "object" ? JSON.stringify(v) : String(v))),
    ];
  }

  async function showUser(user) {
    u.shown = user.user_id;
    u.at = Date.now();
    const { data: rows, meta } = await api("GET",
      `/v1/notifications?${q({ user_id: user.user_id, limit: LAST })}`);
    if (u.shown !== user.user_id) return;
    $("user-id").textContent = user.user_id;
    $("user-detail").dataset.user = user.user_id;
    $("user-profile").replaceChildren(
      ...kv("Email address", user.email_address, "email mono"),
      ...kv("Phone number", user.phone_number, "phone mono"),
      ...kv("Language", user.preferred_language, "language"));
    $("user-preferences").replaceChildren(...preferenceRows(user.preferences));
    fill($("user-devices"), (user.push_tokens || []).map((token) => el("tr", { "data-token": token },
      el("td", { className: "mono token", title: token }, token))), 1, "no device");
    const total = meta ? meta.total : rows.length;
    $("user-notifications-summary").textContent = total > rows.length
      ? `${total} in all, the newest ${rows.length} shown` : `${total} in all`;
    fill($("user-notifications"), rows.map((n) => {
      const row = el("tr", { "data-notification": n.notification_id, className: "clickable" },
        el("td", {}, C.notificationLink(n.notification_id, true)), td(`${n.template_key} v${n.template_version}`),
        td(n.language), el("td", { className: "status" }, C.badge(n.status)),
        td(C.clock(n.created_at), "nowrap"));
      row.addEventListener("click", () => C.select(n.notification_id, true));
      return row;
    }), 5, "no notification yet");
    $("user-detail").classList.remove("hidden");
    show(`user ${user.user_id}`);
  }

  $("user-search").addEventListener("submit", async (event) => {
    event.preventDefault();
    const query = $("user-query").value.trim();
    if (!query) return;
    try {
      const user = await find(query);
      if (!user) {
        u.shown = null;
        $("user-detail").classList.add("hidden");
        show(`no user with ${query.includes("@") ? "the email address" : "the id"} "${query}"`);
        return;
      }
      await showUser(user);
    } catch (err) {
      show("search by user id or email address", err);
    }
  });

  // While a user is on show, their notifications keep coming in (a test send, say).
  C.onRefresh(async () => {
    if (!u.shown || Date.now() - u.at < AGAIN_MS) return;
    const id = u.shown;
    const user = await find(id);
    if (user && u.shown === id) await showUser(user);
  });

  document.querySelector('#users [data-action="send-to-user"]').addEventListener("click", () => {
    if (u.shown) {
      document.dispatchEvent(new CustomEvent("clarion:send-to", { detail: { userId: u.shown } }));
    }
  });
})();
