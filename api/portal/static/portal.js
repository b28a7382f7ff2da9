// The tenant portal: vanilla JS over the tenant API (/v1/...), authenticated by the portal
// session cookie. Rule for this file: every string from the server, a receiver or a tenant is
// put in the page with textContent (the el() helper), never innerHTML, so none of it can run.
"use strict";

(function () {
  const state = {
    session: null,
    over: false,
    catalog: null,
    view: "endpoints",
  };

  // ---- DOM helpers -------------------------------------------------------------------------

  /** An element; string children become text nodes, so nothing given here is parsed as HTML. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (value === true) node.setAttribute(key, "");
      else node.setAttribute(key, String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const $ = (id) => document.getElementById(id);
  let uid = 0;
  const nextId = (prefix) => `${prefix}-${++uid}`;

  function field(labelText, input, hint) {
    input.id = input.id || nextId("f");
    const hintNode = hint ? el("div", { class: "hint", id: `${input.id}-hint` }, hint) : null;
    if (hintNode) input.setAttribute("aria-describedby", hintNode.id);
    return el("div", { class: "field" }, el("label", { for: input.id }, labelText), input, hintNode);
  }

  function badge(text, kind) {
    return el("span", { class: `badge ${kind || text}` }, text.replace("_", " "));
  }

  function when(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
  }

  function loading(text) {
    return el("p", { class: "loading", "aria-busy": "true" }, text || "Loading…");
  }

  function emptyState(title, text, action) {
    return el("div", { class: "empty" }, el("strong", {}, title), el("p", {}, text), action || null);
  }

  function errorBox(err, retry) {
    const box = el("div", { class: "error-box", role: "alert" }, el("strong", {}, err.message));
    if (err.fields && err.fields.length) {
      box.append(el("ul", {}, err.fields.map((f) => el("li", {}, `${f.field}: ${f.message}`))));
    }
    if (retry) box.append(" ", el("button", { type: "button", onclick: retry }, "Try again"));
    return box;
  }

  function announce(text, kind) {
    const box = $("status");
    box.replaceChildren();
    if (text && !state.over) box.append(el("div", { class: kind === "error" ? "error-box" : "success-box" }, text));
  }

  function show(...nodes) {
    if (state.over) return; // the session ended: that message stays
    $("view").replaceChildren(...nodes.filter((n) => n !== null && n !== undefined));
  }

  // ---- the API -----------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      const detail = (body && body.error) || {};
      super(detail.message || `The request failed (HTTP ${status}).`);
      this.status = status;
      this.type = detail.type;
      this.fields = detail.errors || [];
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (method !== "GET" && state.session) headers["X-CSRF-Token"] = state.session.csrf_token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "same-origin",
        cache: "no-store",
      });
    } catch (e) {
      throw new ApiError(0, { error: { message: "The server cannot be reached; check your connection." } });
    }
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch (e) {
      data = null;
    }
    if (!response.ok) {
      const err = new ApiError(response.status, data);
      if (response.status === 401 && state.session && !path.startsWith("/portal/")) ended();
      throw err;
    }
    return data;
  }

  const enc = encodeURIComponent;

  // ---- session -----------------------------------------------------------------------------

  async function openSession() {
    const match = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
    if (match) {
      // Out of the address bar and the history before anything else happens.
      window.history.replaceState(null, "", window.location.pathname + window.location.search);
      try {
        return await api("POST", "/portal/session", { token: decodeURIComponent(match[1]) });
      } catch (e) {
        if (e.status !== 401 && e.status !== 422) throw e;
      }
    }
    try {
      return await api("GET", "/portal/session");
    } catch (e) {
      if (e.status === 401) return null;
      throw e;
    }
  }

  function ended() {
    state.session = null;
    state.over = true;
    $("who").hidden = true;
    $("tabs").hidden = true;
    announce("");
    $("view").replaceChildren(
      el(
        "div",
        { class: "card", role: "alert" },
        el("h1", {}, "This portal link is no longer valid"),
        el(
          "p",
          { class: "sub" },
          "Portal links expire, can be opened only once, and can be revoked. " +
            "Open the webhooks page again from your account to get a new link."
        )
      )
    );
  }

  async function signOut() {
    try {
      await api("DELETE", "/portal/session");
    } finally {
      ended();
    }
  }

  // ---- navigation --------------------------------------------------------------------------

  function setTab(view) {
    state.view = view;
    for (const tab of document.querySelectorAll(".tab")) {
      if (tab.dataset.view === view) tab.setAttribute("aria-current", "page");
      else tab.removeAttribute("aria-current");
    }
  }

  function go(render, ...args) {
    announce("");
    return render(...args);
  }

  function focusHeading() {
    const h = $("view").querySelector("h1");
    if (h) {
      h.setAttribute("tabindex", "-1");
      h.focus();
    }
  }

  async function getCatalog() {
    if (!state.catalog) state.catalog = (await api("GET", "/v1/event-types")).data;
    return state.catalog;
  }

  // ---- endpoints list ----------------------------------------------------------------------

  async function renderEndpoints(cursors) {
    setTab("endpoints");
    const stack = cursors || [];
    show(loading("Loading endpoints…"));
    let page;
    try {
      const after = stack.length ? `&starting_after=${enc(stack[stack.length - 1])}` : "";
      page = await api("GET", `/v1/webhooks?limit=20${after}`);
    } catch (e) {
      show(errorBox(e, () => renderEndpoints(stack)));
      return;
    }
    const add = el("button", { type: "button", class: "primary", onclick: () => go(renderForm, null) }, "Add endpoint");
    const head = el(
      "div",
      { class: "spread" },
      el("div", {}, el("h1", {}, "Endpoints"), el("p", { class: "sub" }, "The URLs that receive your events.")),
      add
    );
    if (!page.data.length && !stack.length) {
      show(head, el("div", { class: "card" }, emptyState("No endpoints yet", "Add the URL where your system receives events.", null)));
      return;
    }
    const rows = page.data.map((ep) =>
      el(
        "tr",
        {},
        el(
          "td",
          { class: "url" },
          el("button", { type: "button", class: "link", onclick: () => go(renderEndpoint, ep.id) }, ep.url),
          ep.description ? el("div", { class: "meta" }, ep.description) : null
        ),
        el("td", {}, ep.events.join(", ")),
        el("td", {}, ep.enabled ? badge("enabled") : badge("disabled")),
        el("td", { class: "meta" }, when(ep.created_at))
      )
    );
    const pager = el("div", { class: "pager" });
    if (stack.length) {
      pager.append(el("button", { type: "button", onclick: () => renderEndpoints(stack.slice(0, -1)) }, "Previous page"));
    }
    if (page.has_more) {
      pager.append(el("button", { type: "button", onclick: () => renderEndpoints([...stack, page.next_cursor]) }, "Next page"));
    }
    show(
      head,
      el(
        "div",
        { class: "card" },
        el(
          "table",
          {},
          el("caption", { class: "meta" }, "Your endpoints, newest first"),
          el("thead", {}, el("tr", {}, ["URL", "Events", "State", "Created"].map((h) => el("th", { scope: "col" }, h)))),
          el("tbody", {}, rows)
        ),
        pager
      )
    );
  }

  // ---- create and edit ---------------------------------------------------------------------

  async function renderForm(endpoint) {
    setTab("endpoints");
    show(loading());
    let catalog;
    try {
      catalog = await getCatalog();
    } catch (e) {
      show(errorBox(e, () => renderForm(endpoint)));
      return;
    }
    const editing = Boolean(endpoint);
    const url = el("input", { type: "url", name: "url", required: true, autocomplete: "off", value: editing ? endpoint.url : "" });
    const description = el("input", { type: "text", name: "description", maxlength: 500, value: editing && endpoint.description ? endpoint.description : "" });
    const chosen = new Set(editing ? endpoint.events : ["*"]);
    const boxes = [{ name: "*", description: "Every event type" }, ...catalog].map((t) => {
      const box = el("input", { type: "checkbox", name: "events", value: t.name, checked: chosen.has(t.name) });
      return { box, node: el("label", { class: "inline" }, box, t.name === "*" ? "All events (*)" : t.name) };
    });
    const enabled = el("input", { type: "checkbox", name: "enabled", checked: editing ? endpoint.enabled : true });
    const signing = editing
      ? null
      : el(
          "select",
          { name: "signing" },
          el("option", { value: "hmac" }, "HMAC-SHA256 with a shared secret"),
          el("option", { value: "ed25519" }, "Ed25519 (Standard Webhooks v1a) with a public key")
        );
    const problems = el("div");
    const submit = el("button", { type: "submit", class: "primary" }, editing ? "Save changes" : "Create endpoint");
    const cancel = el("button", { type: "button", onclick: () => (editing ? go(renderEndpoint, endpoint.id) : go(renderEndpoints)) }, "Cancel");
    const form = el(
      "form",
      { class: "card", novalidate: true },
      problems,
      field("Endpoint URL", url, "Where we POST your events, e.g. https://example.com/webhooks."),
      field("Description", description, "Optional; for you only."),
      el("fieldset", {}, el("legend", {}, "Events to send"), el("div", { class: "checks" }, boxes.map((b) => b.node))),
      signing ? field("Signing", signing, "How deliveries are signed; fixed once created.") : null,
      el("div", { class: "field" }, el("label", { class: "inline" }, enabled, "Enabled (receives events)")),
      el("div", { class: "row" }, submit, cancel)
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const events = boxes.filter((b) => b.box.checked).map((b) => b.box.value);
      const body = {
        events: events.includes("*") ? ["*"] : events,
        description: description.value.trim() || null,
        enabled: enabled.checked,
      };
      if (!editing || url.value !== endpoint.url) body.url = url.value.trim();
      if (!editing && body.description === null) delete body.description;
      if (signing) body.signing = signing.value;
      submit.disabled = true;
      problems.replaceChildren();
      try {
        if (editing) {
          await api("PATCH", `/v1/webhooks/${enc(endpoint.id)}`, body);
          await renderEndpoint(endpoint.id);
          announce("Endpoint saved.");
        } else {
          const created = await api("POST", "/v1/webhooks", body);
          await renderEndpoint(created.id);
          showCredential("Endpoint created", created);
        }
      } catch (e) {
        problems.append(errorBox(e));
        submit.disabled = false;
        problems.querySelector("[role=alert]").focus?.();
      }
    });
    show(el("h1", {}, editing ? "Edit endpoint" : "Add an endpoint"), el("p", { class: "sub" }, editing ? endpoint.url : "Events are signed; you get the signing secret once, after creation."), form);
    url.focus();
  }

  // ---- dialogs -----------------------------------------------------------------------------

  function dialog(title, body, buttons) {
    const d = $("dialog");
    $("dialog-title").textContent = title;
    $("dialog-body").replaceChildren(...body);
    $("dialog-actions").replaceChildren(...buttons);
    return new Promise((resolve) => {
      d.addEventListener("close", () => resolve(d.returnValue), { once: true });
      d.returnValue = "";
      d.showModal();
    });
  }

  async function confirmAction(title, text, yes) {
    const answer = await dialog(
      title,
      [el("p", {}, text)],
      [el("button", { value: "no", class: "ghost" }, "Cancel"), el("button", { value: "yes", class: "primary" }, yes)]
    );
    return answer === "yes";
  }

  /** The secret of an hmac endpoint (shown once), or the public key of an ed25519 one. */
  function showCredential(title, answer) {
    const secret = answer.secret || answer.public_key;
    const isKey = !answer.secret;
    const code = el("code", { id: isKey ? "public-key" : "new-secret" }, secret);
    const copied = el("span", { class: "meta", role: "status" });
    const copy = el(
      "button",
      {
        type: "button",
        onclick: async () => {
          try {
            await navigator.clipboard.writeText(secret);
            copied.textContent = "Copied.";
          } catch (e) {
            const range = document.createRange();
            range.selectNodeContents(code);
            window.getSelection().removeAllRanges();
            window.getSelection().addRange(range);
            copied.textContent = "Selected: press Ctrl+C to copy.";
          }
        },
      },
      isKey ? "Copy public key" : "Copy secret"
    );
    const text = isKey
      ? "This endpoint signs with an ed25519 key of ours. Your receiver verifies with this public key (it is not a secret; the endpoint page shows it again)."
      : "This is the endpoint's signing secret. It is shown only now: store it in your receiver's configuration.";
    return dialog(
      title,
      [el("p", {}, text), el("div", { class: "secret" }, code, copy), copied],
      [el("button", { value: "done", class: "primary" }, "I have stored it")]
    );
  }

  // ---- one endpoint ------------------------------------------------------------------------

  async function renderEndpoint(id) {
    setTab("endpoints");
    show(loading("Loading endpoint…"));
    let ep;
    let catalog;
    try {
      [ep, catalog] = await Promise.all([api("GET", `/v1/webhooks/${enc(id)}`), getCatalog()]);
    } catch (e) {
      show(
        el("button", { type: "button", class: "link", onclick: () => go(renderEndpoints) }, "← All endpoints"),
        errorBox(e, () => renderEndpoint(id))
      );
      return;
    }
    const actions = el(
      "div",
      { class: "row" },
      el("button", { type: "button", onclick: () => go(renderForm, ep) }, "Edit"),
      el("button", { type: "button", onclick: () => toggle(ep) }, ep.enabled ? "Disable" : "Enable"),
      el("button", { type: "button", onclick: () => rotate(ep) }, "Rotate secret"),
      el("button", { type: "button", class: "danger", onclick: () => remove(ep) }, "Delete")
    );
    const state_ = ep.enabled ? badge("enabled") : badge("disabled");
    const logBox = el("section", { class: "card", "aria-labelledby": "log-title" });
    show(
      el("button", { type: "button", class: "link", onclick: () => go(renderEndpoints) }, "← All endpoints"),
      el(
        "div",
        { class: "spread" },
        el("div", {}, el("h1", {}, ep.description || "Endpoint"), el("p", { class: "sub" }, ep.url, " ", state_)),
        actions
      ),
      ep.disabled_reason ? el("div", { class: "notice" }, `Disabled: ${ep.disabled_reason}`) : null,
      el(
        "div",
        { class: "card meta" },
        `Events: ${ep.events.join(", ")} · Created ${when(ep.created_at)} · Id `,
        el("code", {}, ep.id),
        el(
          "div",
          {},
          `Signing: ${ep.signing === "ed25519" ? "Ed25519 (webhook-signature v1a)" : "HMAC-SHA256"}`,
          ep.public_key ? el("span", {}, " · Public key ", el("code", { class: "public-key" }, ep.public_key)) : null
        ),
        Object.keys(ep.metadata || {}).length
          ? el("div", {}, "Metadata: ", el("code", { class: "metadata" }, JSON.stringify(ep.metadata)))
          : null
      ),
      logBox,
      el("div", { class: "grid2" }, testPanel(ep, catalog), replayPanel(ep)),
      verifyPanel(ep)
    );
    focusHeading();
    await renderLog(ep, catalog, logBox, { filters: {}, stack: [] });
  }

  async function toggle(ep) {
    try {
      await api("PATCH", `/v1/webhooks/${enc(ep.id)}`, { enabled: !ep.enabled });
      await renderEndpoint(ep.id);
      announce(ep.enabled ? "Endpoint disabled: it receives nothing until enabled." : "Endpoint enabled.");
    } catch (e) {
      announce(e.message, "error");
    }
  }

  async function rotate(ep) {
    const ok = await confirmAction(
      "Rotate the signing secret?",
      ep.signing === "ed25519"
        ? "A new key pair is made now. The old key keeps signing alongside it for 24 hours, so you can update your receiver's public key without losing events."
        : "A new secret is made now. The old one keeps signing alongside it for 24 hours, so you can update your receiver without losing events.",
      "Rotate"
    );
    if (!ok) return;
    try {
      const answer = await api("POST", `/v1/webhooks/${enc(ep.id)}/rotate-secret`, {});
      await showCredential(answer.secret ? "New signing secret" : "New public key", answer);
      await renderEndpoint(ep.id);
      announce("Secret rotated.");
    } catch (e) {
      announce(e.message, "error");
    }
  }

  async function remove(ep) {
    const ok = await confirmAction("Delete this endpoint?", `${ep.url} will receive nothing more; its pending deliveries are cancelled.`, "Delete endpoint");
    if (!ok) return;
    try {
      await api("DELETE", `/v1/webhooks/${enc(ep.id)}`);
      await renderEndpoints();
      announce("Endpoint deleted.");
    } catch (e) {
      announce(e.message, "error");
    }
  }

  // ---- delivery log ------------------------------------------------------------------------

  const STATUSES = ["pending", "in_flight", "succeeded", "dead", "cancelled"];

  function localToIso(value) {
    if (!value) return null;
    const d = new Date(value);
    return Number.isNaN(d.getTime()) ? null : d.toISOString();
  }

  function select(name, options, current) {
    return el(
      "select",
      { name },
      el("option", { value: "" }, "Any"),
      options.map((o) => el("option", { value: o, selected: o === current }, o.replace("_", " ")))
    );
  }

  async function renderLog(ep, catalog, box, view) {
    const f = view.filters;
    const status = select("status", STATUSES, f.status);
    const type = select("event_type", catalog.map((t) => t.name), f.event_type);
    const since = el("input", { type: "datetime-local", name: "since", value: f.sinceLocal || "" });
    const until = el("input", { type: "datetime-local", name: "until", value: f.untilLocal || "" });
    const filters = el(
      "form",
      { class: "filters", role: "search", "aria-label": "Filter deliveries" },
      field("Status", status),
      field("Event type", type),
      field("Created from", since),
      field("Created before", until),
      el("div", { class: "field" }, el("button", { type: "submit" }, "Apply filters")),
      el("div", { class: "field" }, el("button", { type: "button", class: "ghost", onclick: () => renderLog(ep, catalog, box, { filters: {}, stack: [] }) }, "Refresh"))
    );
    filters.addEventListener("submit", (event) => {
      event.preventDefault();
      renderLog(ep, catalog, box, {
        filters: {
          status: status.value,
          event_type: type.value,
          sinceLocal: since.value,
          untilLocal: until.value,
        },
        stack: [],
      });
    });
    const body = el("div", {}, loading("Loading deliveries…"));
    box.replaceChildren(el("h2", { id: "log-title" }, "Delivery log"), filters, body);
    const params = new URLSearchParams({ limit: "20" });
    if (f.status) params.set("status", f.status);
    if (f.event_type) params.set("event_type", f.event_type);
    if (localToIso(f.sinceLocal)) params.set("since", localToIso(f.sinceLocal));
    if (localToIso(f.untilLocal)) params.set("until", localToIso(f.untilLocal));
    if (view.stack.length) params.set("starting_after", view.stack[view.stack.length - 1]);
    let page;
    try {
      page = await api("GET", `/v1/webhooks/${enc(ep.id)}/deliveries?${params}`);
    } catch (e) {
      body.replaceChildren(errorBox(e, () => renderLog(ep, catalog, box, view)));
      return;
    }
    if (!page.data.length) {
      const filtered = f.status || f.event_type || f.sinceLocal || f.untilLocal;
      body.replaceChildren(
        emptyState(
          filtered ? "No delivery matches these filters" : "No deliveries yet",
          filtered ? "Change or clear the filters." : "Events sent to this endpoint appear here. Send a test event to try it."
        )
      );
      return;
    }
    const rows = page.data.map((d) => deliveryRow(d, ep, catalog, box, view));
    const pager = el("div", { class: "pager" });
    if (view.stack.length) {
      pager.append(el("button", { type: "button", onclick: () => renderLog(ep, catalog, box, { filters: f, stack: view.stack.slice(0, -1) }) }, "Newer deliveries"));
    }
    if (page.has_more) {
      pager.append(el("button", { type: "button", onclick: () => renderLog(ep, catalog, box, { filters: f, stack: [...view.stack, page.next_cursor] }) }, "Older deliveries"));
    }
    body.replaceChildren(
      el(
        "table",
        { class: "deliveries" },
        el("thead", {}, el("tr", {}, ["Created", "Event", "Status", "Attempts", "Last answer", ""].map((h) => el("th", { scope: "col" }, h)))),
        rows
      ),
      pager
    );
  }

  function deliveryRow(d, ep, catalog, box, view) {
    const detailId = nextId("attempts");
    const detail = el("tr", { id: detailId, hidden: true, class: "attempt-row" }, el("td", { colspan: 6 }, attemptList(d)));
    const toggleBtn = el(
      "button",
      {
        type: "button",
        "aria-expanded": "false",
        "aria-controls": detailId,
        onclick: () => {
          const open = detail.hidden;
          detail.hidden = !open;
          toggleBtn.setAttribute("aria-expanded", String(open));
          toggleBtn.textContent = open ? "Hide attempts" : "Show attempts";
        },
      },
      "Show attempts"
    );
    const retryBtn = el(
      "button",
      {
        type: "button",
        disabled: d.status === "in_flight",
        onclick: async () => {
          retryBtn.disabled = true;
          try {
            await api("POST", `/v1/deliveries/${enc(d.id)}/retry`, {});
            announce(`Delivery ${d.id} queued again; it is sent now.`);
            await renderLog(ep, catalog, box, view);
          } catch (e) {
            announce(e.message, "error");
            retryBtn.disabled = false;
          }
        },
      },
      "Retry"
    );
    const last = d.last_status_code ? `HTTP ${d.last_status_code}` : d.last_outcome ? d.last_outcome.replace("_", " ") : "—";
    return el(
      "tbody",
      { class: "delivery", "data-id": d.id },
      el(
        "tr",
        {},
        el("td", { class: "meta" }, when(d.created_at)),
        el("td", {}, d.event_type, el("div", { class: "meta" }, d.event_id)),
        el("td", {}, badge(d.status)),
        el("td", {}, String(d.attempt_count)),
        el("td", {}, last),
        el("td", {}, el("div", { class: "row" }, toggleBtn, retryBtn))
      ),
      detail
    );
  }

  function attemptList(d) {
    if (!d.attempts.length) {
      return el("p", { class: "meta" }, d.next_attempt_at ? `No attempt yet; due ${when(d.next_attempt_at)}.` : "No attempt was made.");
    }
    return el(
      "ol",
      { class: "attempts" },
      d.attempts.map((a) =>
        el(
          "li",
          { class: a.outcome === "success" ? "ok" : "fail" },
          el(
            "div",
            {},
            el("strong", {}, `Attempt ${a.attempt}`),
            " · ",
            when(a.started_at),
            " · ",
            a.status_code ? `HTTP ${a.status_code}` : "no HTTP answer",
            " · ",
            `${Math.round(a.duration_ms)} ms`,
            a.error_class ? el("span", {}, " · ", badge(a.error_class, "failed")) : null
          ),
          a.error && a.error !== `HTTP ${a.status_code}` ? el("div", { class: "meta" }, a.error) : null,
          a.response_body ? el("pre", { class: "response", "aria-label": "Response body (first 1 KiB)" }, a.response_body) : null
        )
      )
    );
  }

  // ---- test event, replay ------------------------------------------------------------------

  function testPanel(ep, catalog) {
    const type = el("select", { name: "test_event_type" }, catalog.map((t) => el("option", { value: t.name, selected: t.name === "webhook.test" }, t.name)));
    const outcome = el("div", { "aria-live": "polite" });
    const send = el("button", { type: "submit", class: "primary" }, "Send test event");
    const form = el("form", {}, field("Event type", type), send, outcome);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      send.disabled = true;
      outcome.replaceChildren(loading("Sending…"));
      try {
        const r = await api("POST", `/v1/webhooks/${enc(ep.id)}/test`, { event_type: type.value });
        outcome.replaceChildren(
          el(
            "div",
            { class: r.success ? "success-box test-outcome" : "error-box test-outcome" },
            el("strong", {}, r.success ? "Delivered" : "Failed"),
            ` · ${r.status_code ? `HTTP ${r.status_code}` : r.outcome.replace("_", " ")} · ${Math.round(r.duration_ms)} ms`,
            r.error ? el("div", {}, r.error) : null,
            r.response_body ? el("pre", { class: "response" }, r.response_body) : null
          )
        );
      } catch (e) {
        outcome.replaceChildren(errorBox(e));
      } finally {
        send.disabled = false;
      }
    });
    return el("section", { class: "card", "aria-labelledby": "test-title" }, el("h2", { id: "test-title" }, "Send a test event"), el("p", { class: "meta" }, "Signed like a real delivery, sent once, not retried."), form);
  }

  function replayPanel(ep) {
    const since = el("input", { type: "datetime-local", name: "replay_since" });
    const until = el("input", { type: "datetime-local", name: "replay_until" });
    const scope = el(
      "select",
      { name: "replay_scope" },
      el("option", { value: "dead" }, "Dead letters"),
      el("option", { value: "failed" }, "Every failed delivery")
    );
    const result = el("div", { "aria-live": "polite" });
    const count = el("button", { type: "submit" }, "Count deliveries");
    const form = el("form", {}, el("div", { class: "row" }, field("From", since), field("Before", until)), field("Which", scope), count, result);
    const body = () => {
      const b = { status: scope.value };
      if (localToIso(since.value)) b.since = localToIso(since.value);
      if (localToIso(until.value)) b.until = localToIso(until.value);
      return b;
    };
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      result.replaceChildren(loading("Counting…"));
      const asked = body();
      try {
        const preview = await api("POST", `/v1/webhooks/${enc(ep.id)}/replay`, { ...asked, dry_run: true });
        if (!preview.matching) {
          result.replaceChildren(el("p", { class: "notice" }, "Nothing to replay in this range."));
          return;
        }
        const go_ = el(
          "button",
          {
            type: "button",
            class: "primary",
            onclick: async () => {
              go_.disabled = true;
              try {
                const done = await api("POST", `/v1/webhooks/${enc(ep.id)}/replay`, asked);
                result.replaceChildren(el("p", { class: "success-box" }, `Replayed ${done.replayed} deliveries; they are being sent now.`));
              } catch (e) {
                result.replaceChildren(errorBox(e));
              }
            },
          },
          `Replay ${preview.matching}`
        );
        result.replaceChildren(el("p", { class: "notice replay-count" }, `${preview.matching} ${preview.matching === 1 ? "delivery" : "deliveries"} would be sent again.`), go_);
        go_.focus();
      } catch (e) {
        result.replaceChildren(errorBox(e));
      }
    });
    return el("section", { class: "card", "aria-labelledby": "replay-title" }, el("h2", { id: "replay-title" }, "Replay failed deliveries"), el("p", { class: "meta" }, "Sends them again with the same event id and body."), form);
  }

  // ---- verification code -------------------------------------------------------------------

  function pythonSnippet(header) {
    return [
      "import hashlib",
      "import hmac",
      "import os",
      "import time",
      "",
      `SIGNATURE_HEADER = ${JSON.stringify(header)}`,
      'SECRET = os.environ["WEBHOOK_SECRET"]  # this endpoint\'s signing secret, whsec_...',
      "TOLERANCE_SECONDS = 300",
      "",
      "",
      "def verify(headers, body: bytes) -> bool:",
      '    """headers: the request headers; body: the raw request body, before any parsing."""',
      "    items = [p.split(\"=\", 1) for p in headers.get(SIGNATURE_HEADER, \"\").split(\",\") if \"=\" in p]",
      '    timestamps = [v for k, v in items if k == "t"]',
      '    signatures = [v for k, v in items if k == "v1"]  # one per active secret',
      "    if len(timestamps) != 1 or not timestamps[0].isdigit():",
      "        return False",
      "    if abs(time.time() - int(timestamps[0])) > TOLERANCE_SECONDS:",
      "        return False  # too old: a replayed request",
      '    signed = timestamps[0].encode() + b"." + body',
      "    expected = hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()",
      "    return any(hmac.compare_digest(expected, s) for s in signatures)",
      "",
    ].join("\n");
  }

  function nodeSnippet(header) {
    return [
      'const crypto = require("node:crypto");',
      "",
      `const SIGNATURE_HEADER = ${JSON.stringify(header.toLowerCase())}; // Node lower-cases header names`,
      "const SECRET = process.env.WEBHOOK_SECRET; // this endpoint's signing secret, whsec_...",
      "const TOLERANCE_SECONDS = 300;",
      "",
      "// headers: req.headers; rawBody: the request body as a Buffer, before any JSON parsing",
      "function verify(headers, rawBody) {",
      '  const items = String(headers[SIGNATURE_HEADER] || "").split(",").map((part) => {',
      '    const at = part.indexOf("=");',
      "    return [part.slice(0, at), part.slice(at + 1)];",
      "  });",
      '  const timestamps = items.filter(([k]) => k === "t").map(([, v]) => v);',
      '  const signatures = items.filter(([k]) => k === "v1").map(([, v]) => v); // one per active secret',
      "  if (timestamps.length !== 1 || !/^\\d+$/.test(timestamps[0])) return false;",
      "  if (Math.abs(Date.now() / 1000 - Number(timestamps[0])) > TOLERANCE_SECONDS) return false;",
      "  const expected = Buffer.from(",
      '    crypto.createHmac("sha256", SECRET).update(`${timestamps[0]}.`).update(rawBody).digest("hex")',
      "  );",
      "  return signatures.some(",
      "    (s) => s.length === expected.length && crypto.timingSafeEqual(Buffer.from(s), expected)",
      "  );",
      "}",
      "",
      "module.exports = { verify };",
      "",
    ].join("\n");
  }

  function pythonEd25519Snippet(publicKey) {
    return [
      "import base64",
      "import time",
      "",
      "from cryptography.exceptions import InvalidSignature  # pip install cryptography",
      "from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey",
      "",
      `PUBLIC_KEY = ${JSON.stringify(publicKey)}  # not a secret`,
      "TOLERANCE_SECONDS = 300",
      'KEY = Ed25519PublicKey.from_public_bytes(base64.b64decode(PUBLIC_KEY.removeprefix("whpk_")))',
      "",
      "",
      "def verify(headers, body: bytes) -> bool:",
      '    """headers: the request headers; body: the raw request body, before any parsing."""',
      '    msg_id = headers.get("webhook-id", "")',
      '    timestamp = headers.get("webhook-timestamp", "")',
      "    if not msg_id or not timestamp.isdigit():",
      "        return False",
      "    if abs(time.time() - int(timestamp)) > TOLERANCE_SECONDS:",
      "        return False  # too old: a replayed request",
      '    signed = f"{msg_id}.{timestamp}.".encode() + body',
      '    for entry in headers.get("webhook-signature", "").split(" "):  # one per active key',
      '        version, _, signature = entry.partition(",")',
      '        if version == "v1a":',
      "            try:",
      "                KEY.verify(base64.b64decode(signature), signed)",
      "                return True",
      "            except (InvalidSignature, ValueError):",
      "                continue",
      "    return False",
      "",
    ].join("\n");
  }

  function nodeEd25519Snippet(publicKey) {
    return [
      'const crypto = require("node:crypto");',
      "",
      `const PUBLIC_KEY = ${JSON.stringify(publicKey)}; // not a secret`,
      "const TOLERANCE_SECONDS = 300;",
      "const KEY = crypto.createPublicKey({",
      "  format: \"jwk\",",
      '  key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(PUBLIC_KEY.slice(5), "base64").toString("base64url") },',
      "});",
      "",
      "// headers: req.headers; rawBody: the request body as a Buffer, before any JSON parsing",
      "function verify(headers, rawBody) {",
      '  const id = headers["webhook-id"];',
      '  const timestamp = headers["webhook-timestamp"];',
      '  if (!id || !/^\\d+$/.test(timestamp || "")) return false;',
      "  if (Math.abs(Date.now() / 1000 - Number(timestamp)) > TOLERANCE_SECONDS) return false;",
      "  const signed = Buffer.concat([Buffer.from(`${id}.${timestamp}.`), rawBody]);",
      '  return String(headers["webhook-signature"] || "").split(" ").some((entry) => {',
      '    const [version, signature] = entry.split(",");',
      '    return version === "v1a" && crypto.verify(null, signed, KEY, Buffer.from(signature || "", "base64"));',
      "  });",
      "}",
      "",
      "module.exports = { verify };",
      "",
    ].join("\n");
  }

  function verifyPanel(ep) {
    const header = state.session.signature_header;
    const ed25519 = ep.signing === "ed25519";
    const snippets = ed25519
      ? { Python: pythonEd25519Snippet(ep.public_key), Node: nodeEd25519Snippet(ep.public_key) }
      : { Python: pythonSnippet(header), Node: nodeSnippet(header) };
    const code = el("pre", { id: "verify-code", tabindex: "0", "aria-label": "Verification code" });
    const copied = el("span", { class: "meta", role: "status" });
    const tabs = el("div", { class: "tablist", role: "tablist", "aria-label": "Language" });
    let current = "Python";
    const pick = (name) => {
      current = name;
      code.textContent = snippets[name];
      code.dataset.language = name.toLowerCase();
      for (const t of tabs.children) t.setAttribute("aria-selected", String(t.dataset.lang === name));
    };
    for (const name of Object.keys(snippets)) {
      tabs.append(el("button", { type: "button", role: "tab", "data-lang": name, "aria-controls": "verify-code", onclick: () => pick(name) }, name));
    }
    pick("Python");
    const copy = el(
      "button",
      {
        type: "button",
        onclick: async () => {
          try {
            await navigator.clipboard.writeText(snippets[current]);
            copied.textContent = "Copied.";
          } catch (e) {
            copied.textContent = "Select the code and copy it.";
          }
        },
      },
      "Copy code"
    );
    const headers = ed25519
      ? ["webhook-id", "webhook-timestamp", "webhook-signature", "X-Event-Id", "X-Event-Type", "X-Delivery-Attempt"]
      : [header, "X-Event-Id", "X-Event-Type", "X-Delivery-Attempt", "X-Signature"];
    if (ep.standard_webhooks && !ed25519) headers.push("webhook-id", "webhook-timestamp", "webhook-signature");
    const scheme = ed25519
      ? "Every delivery carries webhook-signature: v1a,<base64 ed25519 signature of \"id.timestamp.body\">, verified with the endpoint's public key. "
      : `Every delivery carries ${header}: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body" keyed by your secret>. `;
    return el(
      "section",
      { class: "card", "aria-labelledby": "verify-title" },
      el("h2", { id: "verify-title" }, "Verify signatures"),
      el(
        "p",
        { class: "meta" },
        scheme +
          "During a rotation it has one signature per active secret or key. Headers sent: " +
          headers.join(", ") +
          "."
      ),
      el("div", { class: "spread" }, tabs, el("div", { class: "row" }, copied, copy)),
      code
    );
  }

  // ---- events: find a mailing's events or one event, with their delivery per endpoint -------

  function renderEvents(query) {
    setTab("events");
    const input = el("input", { type: "text", name: "event_query", value: query || "", autocomplete: "off" });
    const results = el("div", { "aria-live": "polite" });
    const form = el(
      "form",
      { class: "card", role: "search", "aria-label": "Find events" },
      field("Mailing id or event id", input, "A mailing id (ml_...) lists its events, newest first; an event id (evt_...) shows that event."),
      el("button", { type: "submit", class: "primary" }, "Find events"),
      results
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const q = input.value.trim();
      if (!q) return;
      results.replaceChildren(loading("Searching…"));
      try {
        const found = q.startsWith("evt_")
          ? [await api("GET", `/v1/events/${enc(q)}`)]
          : (await api("GET", `/v1/events?limit=50&mailing_id=${enc(q)}`)).data;
        results.replaceChildren(
          found.length ? el("div", {}, found.map(eventCard)) : emptyState("No event found", "Check the id; events are kept for the retention period.")
        );
      } catch (e) {
        results.replaceChildren(e.status === 404 ? emptyState("No event found", "Check the id; events are kept for the retention period.") : errorBox(e));
      }
    });
    show(el("h1", {}, "Events"), el("p", { class: "sub" }, "Each event and where it stands at every endpoint it was sent to."), form);
    input.focus();
  }

  function eventCard(ev) {
    return el(
      "article",
      { class: "catalog-item event", "data-id": ev.event_id },
      el("h2", {}, el("code", {}, ev.event_type), " ", el("span", { class: "meta" }, ev.event_id)),
      el("p", { class: "meta" }, `Occurred ${when(ev.occurred_at)} · accepted ${when(ev.created_at)}`),
      ev.deliveries.length
        ? el(
            "table",
            {},
            el("thead", {}, el("tr", {}, ["Endpoint", "Status", "Attempts", "Last answer"].map((h) => el("th", { scope: "col" }, h)))),
            el(
              "tbody",
              {},
              ev.deliveries.map((d) =>
                el(
                  "tr",
                  {},
                  el("td", {}, el("button", { type: "button", class: "link", onclick: () => go(renderEndpoint, d.endpoint_id) }, d.endpoint_id)),
                  el("td", {}, badge(d.status)),
                  el("td", {}, String(d.attempt_count)),
                  el("td", {}, d.last_status_code ? `HTTP ${d.last_status_code}` : d.last_outcome ? d.last_outcome.replace("_", " ") : "—")
                )
              )
            )
          )
        : el("p", { class: "meta" }, "No endpoint was subscribed to it."),
      el("pre", { tabindex: "0", "aria-label": `Data of ${ev.event_id}` }, JSON.stringify(ev.data, null, 2))
    );
  }

  // ---- event catalog -----------------------------------------------------------------------

  async function renderCatalog() {
    setTab("catalog");
    show(loading("Loading the event catalog…"));
    let catalog;
    try {
      catalog = await getCatalog();
    } catch (e) {
      show(errorBox(e, renderCatalog));
      return;
    }
    show(
      el("h1", {}, "Event catalog"),
      el("p", { class: "sub" }, "Every event type you can subscribe to, with an example body as your endpoint receives it."),
      el(
        "div",
        { class: "card" },
        catalog.length
          ? catalog.map((t) =>
              el(
                "article",
                { class: "catalog-item", "aria-labelledby": `type-${t.name.replace(".", "-")}` },
                el("h2", { id: `type-${t.name.replace(".", "-")}` }, el("code", {}, t.name)),
                el("p", {}, t.description),
                el("pre", { tabindex: "0", "aria-label": `Example body of ${t.name}` }, JSON.stringify(t.example, null, 2))
              )
            )
          : emptyState("No event types", "The catalog is empty.")
      )
    );
  }

  // ---- start -------------------------------------------------------------------------------

  async function start() {
    for (const tab of document.querySelectorAll(".tab")) {
      const views = { endpoints: renderEndpoints, events: renderEvents, catalog: renderCatalog };
      tab.addEventListener("click", () => go(views[tab.dataset.view]));
    }
    $("sign-out").addEventListener("click", signOut);
    let session;
    try {
      session = await openSession();
    } catch (e) {
      show(errorBox(e, () => window.location.reload()));
      return;
    }
    if (!session) {
      ended();
      return;
    }
    state.session = session;
    const env = $("env");
    env.textContent = session.environment;
    env.classList.add(session.environment);
    $("tenant").textContent = session.tenant_id;
    $("expires").textContent = `Session ends ${when(session.expires_at)}`;
    $("who").hidden = false;
    $("tabs").hidden = false;
    await renderEndpoints();
  }

  document.addEventListener("DOMContentLoaded", start);
  // a new link opened in a tab already on the portal changes only the fragment: start over
  window.addEventListener("hashchange", () => {
    if (/(?:^#|&)token=/.test(window.location.hash)) window.location.reload();
  });
})();
