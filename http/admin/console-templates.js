// The console's Templates section: list, open and create templates; write a new version of a
// language with a live preview of the draft (POST /admin/api/templates/preview: the Templates
// actor checks it as a new version and renders it in its sandbox, storing nothing), its syntax
// and variable errors shown at the field they concern as you type; preview every published
// language too (POST /v1/templates/render); compare two versions line by line; retire a key
// and revive it.
//
// Everything shown goes through textContent (an HTML body is shown as its source, never
// rendered). Uses window.ClarionConsole (console.js).
"use strict";

(() => {
  const C = window.ClarionConsole;
  const { el, td, fill, api, q } = C;
  const PER_PAGE = 20;
  const LIST_EVERY_MS = 10000;
  const PREVIEW_DELAY_MS = 250;
  const DRAFT_DELAY_MS = 350; // after the last keystroke
  // The form's fields, as TemplateIn names them, and their inputs.
  const FIELDS = {
    subject: "tpl-subject", body: "tpl-body", html_body: "tpl-html-body", push_title: "tpl-push-title",
    push_body: "tpl-push-body", sms_body: "tpl-sms-body", description: "tpl-description",
  };
  const OPTIONAL = new Set(["html_body", "push_title", "push_body", "sms_body", "description"]);
  const ANOTHER = "+"; // the language menu's "another language" entry

  const t = {
    page: 1,
    listedAt: 0,
    key: null, // the template open in the editor
    creating: false, // a new key, not yet published
    retired: false, // retired while open: publishing revives it
    languages: {}, // language → its latest version, as GET /v1/templates/{key} answers
    versions: [], // every live version of every language, newest first
    language: null, // the language being edited
    previewRun: 0,
    previewTimer: null,
    draftRun: 0,
    draftTimer: null,
  };

  const $ = (id) => document.getElementById(id);
  const section = $("templates");
  const editor = $("template-editor");

  // -- the list ---------------------------------------------------------------------------

  async function loadList(force) {
    if (!force && Date.now() - t.listedAt < LIST_EVERY_MS) return;
    t.listedAt = Date.now();
    const { data, meta } = await api("GET", `/v1/templates?${q({ page: t.page, limit: PER_PAGE })}`);
    if (data.length === 0 && t.page > Math.max(1, meta.total_pages)) {
      t.page = Math.max(1, meta.total_pages);
      return loadList(true);
    }
    $("templates-summary").textContent =
      `${meta.total} live template${meta.total === 1 ? "" : "s"}`;
    fill($("template-rows"), data.map((k) => {
      const open = el("a", { href: "#templates", className: "mono", title: `open ${k.template_key}` },
        k.template_key);
      open.addEventListener("click", (event) => {
        event.preventDefault();
        openTemplate(k.template_key).catch(showError);
      });
      return el("tr", { "data-template": k.template_key,
        className: k.template_key === t.key ? "selected" : null },
      el("td", { className: "key" }, open),
      td(Object.entries(k.versions || {}).map(([lang, v]) => `${lang} v${v}`).join(" · "), "languages"),
      td(C.clock(k.updated_at), "nowrap"));
    }), 3, "no template yet: create one");
    const pager = $("template-pager");
    pager.querySelector('[data-page="previous"]').disabled = !meta.has_previous;
    pager.querySelector('[data-page="next"]').disabled = !meta.has_next;
    pager.querySelector(".pager-status").textContent =
      `page ${meta.page} of ${Math.max(1, meta.total_pages)}`;
  }

  function refreshList() {
    loadList(true).then(() => C.sectionError("templates"), (err) => C.sectionError("templates", err));
  }

  for (const [step, name] of [[-1, "previous"], [1, "next"]]) {
    $("template-pager").querySelector(`[data-page="${name}"]`).addEventListener("click", () => {
      t.page = Math.max(1, t.page + step);
      refreshList();
    });
  }

  function showError(err) {
    C.sectionError("templates", err);
  }

  // -- opening a template -----------------------------------------------------------------

  async function openTemplate(key, language) {
    const path = `/v1/templates/${encodeURIComponent(key)}`;
    const [{ data: latest }, { data: versions }] = await Promise.all([
      api("GET", path), api("GET", `${path}/versions`)]);
    Object.assign(t, { key, creating: false, retired: false, languages: latest.languages,
      versions });
    const langs = Object.keys(t.languages).sort();
    t.language = langs.includes(language) ? language : (langs.includes("en") ? "en" : langs[0]);
    C.sectionError("templates");
    showEditor();
    fillForm(t.languages[t.language]);
    drawHead();
    drawDiffChoices();
    if ($("tpl-sample").value.trim() === "" || $("tpl-sample").dataset.key !== key) {
      $("tpl-sample").value = sampleFor(t.languages[t.language]);
      $("tpl-sample").dataset.key = key;
    }
    preview();
    previewDraft();
    for (const row of $("template-rows").rows) {
      row.classList.toggle("selected", row.dataset.template === key);
    }
  }

  function startNew() {
    Object.assign(t, { key: null, creating: true, retired: false, languages: {}, versions: [],
      language: "en" });
    showEditor();
    fillForm({ subject: "", body: "" });
    $("tpl-key").value = "";
    $("tpl-sample").value = "{}";
    $("tpl-sample").dataset.key = "";
    drawHead();
    drawDiffChoices();
    $("template-previews").replaceChildren();
    $("template-draft").replaceChildren(el("p", { className: "muted" },
      "Give it a key and its texts: the draft is rendered here as you type."));
    $("tpl-key").focus();
  }

  function showEditor() {
    $("template-placeholder").classList.add("hidden");
    editor.classList.remove("hidden");
    clearErrors();
  }

  function closeEditor() {
    Object.assign(t, { key: null, creating: false, retired: false, languages: {}, versions: [] });
    editor.classList.add("hidden");
    $("template-placeholder").classList.remove("hidden");
    for (const row of $("template-rows").rows) row.classList.remove("selected");
  }

  function latestVersion(language) {
    return Math.max(0, ...t.versions.filter((v) => v.language === language).map((v) => v.version));
  }

  // The editor's head: what is open, in which state, and what publishing will do.
  function drawHead() {
    const key = t.creating ? "New template" : t.key;
    $("template-title").textContent = key;
    $("tpl-key").readOnly = !t.creating;
    const langs = Object.keys(t.languages).sort();
    const menu = $("tpl-language");
    menu.replaceChildren(...langs.map((lang) =>
      el("option", { value: lang }, `${lang} (v${t.languages[lang].version})`)),
    el("option", { value: ANOTHER }, "another language…"));
    const another = t.creating || !langs.includes(t.language);
    menu.value = another ? ANOTHER : t.language;
    menu.closest(".field").classList.toggle("hidden", t.creating);
    $("tpl-new-language-field").classList.toggle("hidden", !another);
    if (another) $("tpl-new-language").value = t.language || "";
    section.querySelector('[data-action="retire-template"]').classList.toggle("hidden",
      t.creating || t.retired);
    const publish = $("template-publish");
    const note = $("template-publish-note");
    if (t.creating) {
      publish.textContent = "Create";
      note.textContent = "version 1 of a new key";
      $("template-state").textContent = "A new template: give it a key, a language and its texts.";
    } else if (t.retired) {
      publish.textContent = "Revive";
      note.textContent = "publishes this language again, under a new version number";
      $("template-state").textContent =
        `Retired: it cannot be sent. Reviving it creates it again, with new version numbers.`;
    } else {
      const lang = currentLanguage();
      const next = latestVersion(lang) + 1;
      publish.textContent = `Publish version ${next}`;
      note.textContent = next === 1 ? `the first version in ${lang}` : `of ${lang}; versions never change`;
      const live = langs.map((l) => `${l} v${t.languages[l].version}`).join(", ");
      const fallback = (t.languages[lang] || {}).fallback_channels;
      $("template-state").textContent = `Live in ${live}.` +
        (fallback && fallback.length ? ` Fallback channels: ${fallback.join(", ")} (kept).` : "");
    }
    section.dataset.state = t.creating ? "new" : t.retired ? "retired" : "live";
  }

  function currentLanguage() {
    const menu = $("tpl-language");
    if (!t.creating && menu.value !== ANOTHER) return menu.value;
    return $("tpl-new-language").value.trim();
  }

  function fillForm(template) {
    $("tpl-key").value = t.key || "";
    for (const [field, id] of Object.entries(FIELDS)) $(id).value = template[field] || "";
    $("tpl-variables").value = (template.variables || []).join(", ");
    clearErrors();
  }

  function sampleFor(template) {
    const names = (template && template.variables) || [];
    return JSON.stringify(Object.fromEntries(names.map((n) => [n, ""])), null, 1)
      .replace(/\n\s*/g, " ");
  }

  $("tpl-language").addEventListener("change", () => {
    const lang = $("tpl-language").value;
    if (lang !== ANOTHER) {
      t.language = lang;
      fillForm(t.languages[lang]);
    } else {
      // Start the new language from the one shown: its texts are there to translate.
      t.language = "";
      $("tpl-new-language").value = "";
    }
    drawHead();
    scheduleDraft();
    if (lang === ANOTHER) $("tpl-new-language").focus();
  });
  $("tpl-new-language").addEventListener("input", () => {
    if (!t.creating) {
      t.language = $("tpl-new-language").value.trim();
      const publish = $("template-publish");
      publish.textContent = t.retired ? "Revive" : `Publish version ${latestVersion(t.language) + 1}`;
    }
  });

  // -- errors at their field --------------------------------------------------------------

  function clearErrors() {
    for (const node of section.querySelectorAll(".field-error[data-error-for]")) {
      node.textContent = "";
      node.classList.add("hidden");
    }
    for (const node of section.querySelectorAll(".field.invalid")) node.classList.remove("invalid");
    generalError(null);
  }

  function fieldError(field, text) {
    const slot = section.querySelector(`.field-error[data-error-for="${field}"]`);
    if (!slot) return false;
    slot.textContent = text;
    slot.classList.remove("hidden");
    const label = section.querySelector(`.field[data-field="${field}"]`);
    if (label) label.classList.add("invalid");
    return true;
  }

  function generalError(text) {
    const node = $("template-error");
    node.textContent = text || "";
    node.classList.toggle("hidden", !text);
  }

  // The API says which field is wrong: a syntax error names it (`data.field`, its message
  // "field: line N: ..."), an undeclared variable lists them by field, a validation error
  // names each field. Whether any was placed.
  function placeFieldErrors(err) {
    const detail = err.detail || {};
    let placed = false;
    if (err.code === "template_syntax_error" && detail.field) {
      let text = String(err.message).replace(/^template_syntax_error: /, "");
      if (text.startsWith(`${detail.field}: `)) text = text.slice(detail.field.length + 2);
      placed = fieldError(detail.field,
        text.startsWith("line ") ? `Syntax error on ${text}` : `Syntax error: ${text}`);
    } else if (err.code === "template_variable_undeclared" && detail.fields) {
      for (const [field, names] of Object.entries(detail.fields)) {
        placed = fieldError(field, `Uses variables it does not declare: ${names.join(", ")}`) || placed;
      }
    } else if (err.code === "validation_error" && Array.isArray(detail.fields)) {
      for (const f of detail.fields) {
        placed = fieldError(String(f.field || "").split(".")[0], String(f.message)) || placed;
      }
    }
    return placed;
  }

  function showPublishError(err) {
    const placed = placeFieldErrors(err);
    generalError(placed ? `Not published: ${err.code}` : `Not published: ${err.message}`);
  }

  // -- publishing -------------------------------------------------------------------------

  function formBody() {
    const body = { template_key: t.creating ? $("tpl-key").value.trim() : t.key,
      language: currentLanguage() };
    for (const [field, id] of Object.entries(FIELDS)) {
      const value = $(id).value;
      if (!OPTIONAL.has(field) || value.trim() !== "") body[field] = value;
    }
    const declared = $("tpl-variables").value.split(",").map((v) => v.trim()).filter(Boolean);
    if (declared.length) body.variables = declared;
    const kept = (t.languages[body.language] || {}).fallback_channels;
    if (kept && kept.length) body.fallback_channels = kept;
    return body;
  }

  $("template-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const publish = $("template-publish");
    if (publish.disabled) return;
    clearErrors();
    const body = formBody();
    const creates = t.creating || t.retired;
    publish.disabled = true;
    try {
      const { data } = creates
        ? await api("POST", "/v1/templates", body)
        : await api("PUT", `/v1/templates/${encodeURIComponent(t.key)}`, body);
      C.flash(`${creates && t.retired ? "Revived" : "Published"} ${data.template_key}: version` +
        ` ${data.version} in ${data.language}.`, "ok");
      await openTemplate(data.template_key, data.language);
      refreshList();
    } catch (err) {
      showPublishError(err);
    } finally {
      publish.disabled = false;
    }
  });

  // -- retiring and reviving --------------------------------------------------------------

  const retire = {
    dialog: $("retire-template"),
    error: $("retire-template-error"),
    confirm: section.querySelector('[data-action="confirm-retire"]'),
  };

  section.querySelector('[data-action="retire-template"]').addEventListener("click", () => {
    if (!t.key || t.creating) return;
    $("retire-template-key").textContent = t.key;
    retire.error.classList.add("hidden");
    retire.confirm.disabled = false;
    retire.dialog.showModal();
  });
  section.querySelector('[data-action="cancel-retire"]')
    .addEventListener("click", () => retire.dialog.close());
  $("retire-template-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (retire.confirm.disabled || !t.key) return;
    retire.confirm.disabled = true;
    try {
      const { data } = await api("DELETE", `/v1/templates/${encodeURIComponent(t.key)}`);
      retire.dialog.close();
      C.flash(`Retired ${data.template_key} (${data.versions_retired} version` +
        `${data.versions_retired === 1 ? "" : "s"}). Publish it again to revive it.`, "ok");
      // The texts stay in the editor: publishing them revives the key.
      t.retired = true;
      t.versions = [];
      drawHead();
      drawDiffChoices();
      $("template-previews").replaceChildren(el("p", { className: "muted" },
        "Retired: nothing renders until it is revived."));
      refreshList();
    } catch (err) {
      retire.error.textContent = `Not retired: ${err.message}`;
      retire.error.classList.remove("hidden");
    } finally {
      retire.confirm.disabled = false;
    }
  });

  section.querySelector('[data-action="new-template"]').addEventListener("click", startNew);
  section.querySelector('[data-action="close-template"]').addEventListener("click", closeEditor);

  // -- previews ---------------------------------------------------------------------------

  function schedulePreview() {
    clearTimeout(t.previewTimer);
    t.previewTimer = setTimeout(preview, PREVIEW_DELAY_MS);
  }

  function sampleData() {
    const slot = $("tpl-sample-error");
    let data;
    try {
      data = JSON.parse($("tpl-sample").value.trim() || "{}");
      if (data === null || typeof data !== "object" || Array.isArray(data)) {
        throw new Error("the sample variables must be a JSON object");
      }
    } catch (err) {
      slot.textContent = `Not previewed: ${err.message}`;
      slot.classList.remove("hidden");
      return null;
    }
    slot.classList.add("hidden");
    return data;
  }

  // Each live language rendered with the sample variables, by the API's renderer. A newer
  // preview supersedes one still on its way.
  async function preview() {
    if (!t.key || t.creating || t.retired) return;
    const data = sampleData();
    if (data === null) return;
    const run = ++t.previewRun;
    const langs = Object.keys(t.languages).sort();
    const results = await Promise.all(langs.map((language) =>
      api("POST", "/v1/templates/render", { template_key: t.key, language, message_data: data })
        .then((answer) => ({ language, rendered: answer.data }), (err) => ({ language, err }))));
    if (run !== t.previewRun) return;
    $("template-previews").replaceChildren(...results.map(previewCard));
  }

  function previewCard({ language, rendered, err }) {
    const card = el("article", { className: "preview", "data-language": language });
    if (err) {
      card.dataset.error = err.code;
      card.append(el("h5", {}, language),
        el("p", { className: "preview-error", "data-error": err.code }, err.message));
      return card;
    }
    card.append(el("h5", {}, `${language} · version ${rendered.version}`,
      rendered.language !== language ? ` (fell back to ${rendered.language})` : ""));
    const segments = rendered.sms_segments || {};
    const rows = [["Subject", rendered.subject, "subject"], ["Text", rendered.body, "body"],
      ["HTML (source)", rendered.html_body, "html_body"], ["Push title", rendered.push_title, "push_title"],
      ["Push body", rendered.push_body, "push_body"],
      ["SMS", rendered.sms_body, "sms_body"],
      ["SMS size", segments.segments !== undefined
        ? `${segments.segments} segment${segments.segments === 1 ? "" : "s"}, ${segments.characters}` +
          ` characters (${segments.encoding})` : null, "sms_segments"]];
    card.append(el("dl", { className: "facts rendered" }, ...rows
      .filter(([, value]) => value !== null && value !== undefined && value !== "")
      .flatMap(([label, value, field]) => [el("dt", {}, label),
        el("dd", { className: `pre ${field}`, "data-field": field }, value)])));
    return card;
  }

  // The draft, as the form holds it now, through the same checks and sandbox as a new
  // version; its problems are shown at their fields as they appear and go.
  async function previewDraft() {
    if (!t.key && !t.creating) return;
    const data = sampleData();
    if (data === null) return;
    const body = { ...formBody(), message_data: data };
    const out = $("template-draft");
    if (!body.template_key) {
      out.replaceChildren(el("p", { className: "muted" },
        "Give it a key and its texts: the draft is rendered here as you type."));
      return;
    }
    const run = ++t.draftRun;
    let rendered = null;
    let failed = null;
    try {
      ({ data: rendered } = await api("POST", "/admin/api/templates/preview", body));
    } catch (err) {
      failed = err;
    }
    if (run !== t.draftRun) return;
    clearErrors();
    if (failed) placeFieldErrors(failed);
    const card = previewCard({ language: body.language, rendered, err: failed });
    card.classList.add("draft");
    card.dataset.draft = "true";
    card.querySelector("h5").textContent = `Draft in ${body.language || "?"}, not published`;
    out.replaceChildren(card);
  }

  function scheduleDraft() {
    clearTimeout(t.draftTimer);
    t.draftTimer = setTimeout(previewDraft, DRAFT_DELAY_MS);
  }

  $("template-form").addEventListener("input", scheduleDraft);
  $("tpl-sample").addEventListener("input", () => {
    schedulePreview();
    scheduleDraft();
  });

  // -- comparing versions -----------------------------------------------------------------

  const DIFF_FIELDS = ["subject", "body", "html_body", "push_title", "push_body", "sms_body",
    "description", "variables", "fallback_channels"];

  function drawDiffChoices() {
    const languages = [...new Set(t.versions.map((v) => v.language))].sort();
    const menu = $("diff-language");
    const keep = languages.includes(menu.value) ? menu.value
      : (languages.includes(t.language) ? t.language : languages[0]);
    menu.replaceChildren(...languages.map((l) => el("option", { value: l }, l)));
    if (keep) menu.value = keep;
    drawVersionChoices();
  }

  function drawVersionChoices() {
    const language = $("diff-language").value;
    const versions = t.versions.filter((v) => v.language === language).map((v) => v.version);
    for (const [id, pick] of [["diff-from", versions[1] ?? versions[0]], ["diff-to", versions[0]]]) {
      $(id).replaceChildren(...versions.map((v) => el("option", { value: v }, `version ${v}`)));
      if (pick !== undefined) $(id).value = String(pick);
    }
    drawDiff();
  }

  function drawDiff() {
    const out = $("template-diff");
    const language = $("diff-language").value;
    const find = (v) => t.versions.find((x) => x.language === language && x.version === Number(v));
    const from = find($("diff-from").value);
    const to = find($("diff-to").value);
    if (!from || !to) {
      out.replaceChildren(el("p", { className: "muted" }, t.retired ? "Retired: no live version."
        : "Nothing to compare yet."));
      return;
    }
    if (from.version === to.version) {
      out.replaceChildren(el("p", { className: "muted" },
        `Only version ${from.version} in ${language}: pick two versions to compare.`));
      return;
    }
    const show = (value) => (Array.isArray(value) ? value.join(", ") : value ?? "");
    const changed = DIFF_FIELDS.filter((f) => show(from[f]) !== show(to[f]));
    if (changed.length === 0) {
      out.replaceChildren(el("p", { className: "muted" },
        `Versions ${from.version} and ${to.version} are the same.`));
      return;
    }
    out.replaceChildren(el("p", { className: "summary" },
      `${language}: version ${from.version} → ${to.version}, ${changed.length} field` +
      `${changed.length === 1 ? "" : "s"} changed`),
    ...changed.map((field) => el("div", { className: "diff-field", "data-field": field },
      el("h5", {}, field),
      el("table", { className: "diff-lines" }, el("tbody", {},
        ...lineDiff(show(from[field]), show(to[field])).map(([sign, line]) => el("tr", {
          className: sign === "+" ? "added" : sign === "-" ? "removed" : "same" },
        el("td", { className: "sign" }, sign), el("td", { className: "line" }, line))))))));
  }

  // A line diff by longest common subsequence: [sign, line] with "-" for a line only in `a`,
  // "+" only in `b`, " " in both. Past a size where the table would be large, the whole of
  // `a` out and the whole of `b` in.
  function lineDiff(a, b) {
    const x = a.split("\n");
    const y = b.split("\n");
    if (x.length * y.length > 4_000_000) {
      return [...x.map((l) => ["-", l]), ...y.map((l) => ["+", l])];
    }
    const n = x.length;
    const m = y.length;
    const common = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        common[i][j] = x[i] === y[j] ? common[i + 1][j + 1] + 1
          : Math.max(common[i + 1][j], common[i][j + 1]);
      }
    }
    const out = [];
    let i = 0;
    let j = 0;
    while (i < n && j < m) {
      if (x[i] === y[j]) {
        out.push([" ", x[i]]);
        i++;
        j++;
      } else if (common[i + 1][j] >= common[i][j + 1]) {
        out.push(["-", x[i++]]);
      } else {
        out.push(["+", y[j++]]);
      }
    }
    while (i < n) out.push(["-", x[i++]]);
    while (j < m) out.push(["+", y[j++]]);
    return out;
  }

  $("diff-language").addEventListener("change", drawVersionChoices);
  $("diff-from").addEventListener("change", drawDiff);
  $("diff-to").addEventListener("change", drawDiff);

  // The list follows the refresh loop, at its own slower pace.
  C.onRefresh(() => loadList(false).then(() => C.sectionError("templates"),
    (err) => C.sectionError("templates", err)));
})();
