/* lehnz dashboard: a client of the lehnz HTTP API (same endpoints, same envelope as any client).
 *
 * No framework and no build step: a hash router, a tiny DOM builder (every value goes in as text,
 * never as HTML), and one function per page. The session is an HttpOnly cookie this script cannot
 * read; state-changing requests send the CSRF token from the readable `lehnz_csrf` cookie.
 * docs/dashboard.md describes the pages and the session.
 */
"use strict";

(() => {
  const root = document.getElementById("app");
  const state = { org: null, strategies: null, flash: null, newKeys: null };
  let renderSeq = 0;
  let cleanups = [];

  // --- DOM -------------------------------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "text") el.textContent = value;
      else if (key === "style") el.style.cssText = value; // through CSSOM: the CSP allows no inline style attributes
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (key === "value" || key === "checked" || key === "disabled" || key === "selected") el[key] = value;
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function clear(el, ...children) {
    el.replaceChildren();
    return append(el, children);
  }

  const SVG = "http://www.w3.org/2000/svg";
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
    for (const child of children.flat()) if (child) el.append(child instanceof Node ? child : document.createTextNode(child));
    return el;
  }

  // --- formatting ------------------------------------------------------------------------------
  const numberFormat = new Intl.NumberFormat();
  const fmt = (n) => (n === null || n === undefined ? "–" : numberFormat.format(n));
  const pct = (x) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(1)}%`);
  const money = (x) => (x === null || x === undefined ? "–" : x.toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 }));
  function when(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString();
  }
  function ago(iso) {
    if (!iso) return "never";
    const seconds = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
    if (seconds < 90) return "just now";
    if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
    if (seconds < 129600) return `${Math.round(seconds / 3600)} h ago`;
    return `${Math.round(seconds / 86400)} days ago`;
  }
  const shortId = (id) => (id && id.length > 13 ? `${id.slice(0, 8)}…` : id);

  // --- the API -----------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, message, detail) {
      super(message);
      this.status = status;
      this.detail = detail;
    }
  }

  function cookie(name) {
    const found = document.cookie.split("; ").find((part) => part.startsWith(`${name}=`));
    return found ? decodeURIComponent(found.slice(name.length + 1)) : "";
  }

  async function api(method, path, { body, query } = {}) {
    let url = path;
    if (query) {
      const params = new URLSearchParams();
      for (const [key, value] of Object.entries(query)) {
        if (value !== null && value !== undefined && value !== "") params.set(key, value);
      }
      if ([...params].length) url += `?${params}`;
    }
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET") headers["X-CSRF-Token"] = cookie("lehnz_csrf");
    let response;
    const started = performance.now();
    try {
      response = await fetch(url, {
        method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      throw new ApiError(0, `The server cannot be reached (${err.message}). Is lehnz running?`);
    }
    let payload = null;
    try { payload = await response.json(); } catch (_) { payload = null; }
    if (!response.ok || !payload || payload.success !== true) {
      const message = (payload && payload.message) || `HTTP ${response.status}`;
      if (response.status === 401 && !path.startsWith("/auth/")) sessionEnded();
      throw new ApiError(response.status, message, payload && payload.error);
    }
    return { data: payload.data, headers: response.headers, ms: performance.now() - started };
  }

  function sessionEnded() {
    if (state.org) state.flash = { kind: "warn", text: "Your session ended. Sign in again." };
    state.org = null;
    go("#/signin");
  }

  // --- small components ----------------------------------------------------------------------------
  const loading = (text = "Loading…") => h("div", { class: "loading", "data-test": "loading" }, h("span", { class: "spinner" }), text);

  function errorBox(err) {
    const detail = err && Array.isArray(err.detail) ? err.detail : null;
    return h("div", { class: "alert error", role: "alert", "data-test": "error" },
      h("strong", { text: err && err.status ? `Error ${err.status}: ` : "Error: " }),
      (err && err.message) || String(err),
      detail && h("ul", {}, detail.map((e) => h("li", {}, h("code", { text: e.field }), ` ${e.issue}`))));
  }

  async function copyText(text) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch (_) {
      const area = h("textarea", { style: "position:fixed;opacity:0" });
      area.value = text;
      document.body.append(area);
      area.select();
      const done = document.execCommand("copy");
      area.remove();
      return done;
    }
  }

  function copyButton(text, label = "Copy") {
    const button = h("button", { class: "secondary small", type: "button", "data-test": "copy" }, label);
    button.addEventListener("click", async () => {
      const done = await copyText(typeof text === "function" ? text() : text);
      button.textContent = done ? "Copied" : "Select and copy";
      setTimeout(() => { button.textContent = label; }, 1500);
    });
    return button;
  }

  function codeBlock(text, testName) {
    return h("div", { class: "code-wrap" }, h("pre", { class: "code", "data-test": testName || "code" }, text), copyButton(text));
  }

  function secretLine(label, value, testName) {
    return h("div", {}, h("label", { text: label }),
      h("div", { class: "secret" }, h("code", { "data-test": testName, text: value }), copyButton(value)));
  }

  function tabs(entries) {
    const body = h("div");
    const bar = h("div", { class: "tabs", role: "tablist" });
    const show = (index) => {
      [...bar.children].forEach((b, i) => b.classList.toggle("active", i === index));
      clear(body, entries[index].render());
    };
    entries.forEach((entry, i) => bar.append(h("button", { type: "button", role: "tab", onclick: () => show(i) }, entry.label)));
    show(0);
    return h("div", {}, bar, body);
  }

  function stat(label, value, sub, testName) {
    return h("div", { class: "stat", "data-test": testName }, h("div", { class: "label", text: label }),
      h("div", { class: "value", text: value }), sub ? h("div", { class: "sub" }, sub) : null);
  }

  function confirmDialog(title, text, confirmLabel) {
    return new Promise((resolve) => {
      const dialog = h("dialog", { "data-test": "confirm-dialog" },
        h("h2", { text: title }), h("p", { text }),
        h("div", { class: "actions" },
          h("button", { class: "danger", type: "button", "data-test": "confirm", onclick: () => done(true) }, confirmLabel),
          h("button", { class: "secondary", type: "button", "data-test": "cancel", onclick: () => done(false) }, "Cancel")));
      const done = (answer) => { dialog.close(); dialog.remove(); resolve(answer); };
      dialog.addEventListener("cancel", () => done(false));
      document.body.append(dialog);
      dialog.showModal();
    });
  }

  function busy(button, text) {
    const label = button.textContent;
    button.disabled = true;
    button.textContent = text;
    return () => { button.disabled = false; button.textContent = label; };
  }

  function debounce(fn, ms) {
    let timer = null;
    return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
  }

  // --- snippets (the org's own base URL) --------------------------------------------------------------
  const base = () => window.location.origin;
  const PK = () => (state.newKeys && state.newKeys.publishable_key) || "lehnz_pk_...";
  const SK = () => (state.newKeys && state.newKeys.secret_key) || "lehnz_sk_...";

  function snippetTabs() {
    return tabs([
      { label: "curl", render: () => codeBlock(
        `# catalog (secret key, server side)\ncurl -s ${base()}/v1/ingest/items/upsert -H "X-API-KEY: ${SK()}" \\\n` +
        `  -H 'Content-Type: application/json' \\\n` +
        `  -d '[{"item_id": "sku-1", "item_type": "product", "status": "active", "attributes": {"title": "Canvas tote", "category": "bags", "price": 24}}]'\n\n` +
        `# an event (publishable key, safe in the browser)\ncurl -s ${base()}/v1/ingest/events/ingest -H "X-API-KEY: ${PK()}" \\\n` +
        `  -H 'Content-Type: application/json' \\\n` +
        `  -d '{"user_id": "shopper-1", "event_family": "engagement", "event_name": "view", "item_id": "sku-1"}'\n\n` +
        `# recommendations (publishable key)\ncurl -s ${base()}/v1/recommend -H "X-API-KEY: ${PK()}" \\\n` +
        `  -H 'Content-Type: application/json' -d '{"strategy": "personalized", "user_id": "shopper-1", "limit": 5}'`,
        "snippet-curl") },
      { label: "Browser (fetch)", render: () => codeBlock(
        `// In your storefront: the publishable key only.\nconst LEHNZ = "${base()}";\nconst PK = "${PK()}";\n\n` +
        `fetch(\`\${LEHNZ}/v1/ingest/events/ingest\`, {\n  method: "POST",\n  headers: { "X-API-KEY": PK, "Content-Type": "application/json" },\n` +
        `  body: JSON.stringify({ user_id: visitorId, event_family: "engagement", event_name: "view", item_id: "sku-1" }),\n});\n\n` +
        `const res = await fetch(\`\${LEHNZ}/v1/recommend\`, {\n  method: "POST",\n  headers: { "X-API-KEY": PK, "Content-Type": "application/json" },\n` +
        `  body: JSON.stringify({ strategy: "similar", context_item_id: "sku-1", limit: 8 }),\n});\nconst { data } = await res.json();\nconsole.log(data.results);`,
        "snippet-fetch") },
      { label: "Server (Python)", render: () => codeBlock(
        `# On your server: the secret key never leaves it.\nimport httpx\n\nLEHNZ = "${base()}"\nSK = "${SK()}"  # e.g. os.environ["LEHNZ_SECRET_KEY"]\n\n` +
        `items = [{"item_id": "sku-1", "item_type": "product", "status": "active",\n          "attributes": {"title": "Canvas tote", "category": "bags", "price": 24}}]\n` +
        `r = httpx.post(f"{LEHNZ}/v1/ingest/items/upsert", json=items, headers={"X-API-KEY": SK})\nr.raise_for_status()\n\n` +
        `httpx.post(f"{LEHNZ}/v1/models/train", headers={"X-API-KEY": SK})\nprint(httpx.get(f"{LEHNZ}/v1/models/status", headers={"X-API-KEY": SK}).json()["data"])`,
        "snippet-python") },
      { label: "Server (Node.js)", render: () => codeBlock(
        `// On your server: the secret key never leaves it.\nconst LEHNZ = "${base()}";\nconst SK = process.env.LEHNZ_SECRET_KEY ?? "${SK()}";\n\n` +
        `await fetch(\`\${LEHNZ}/v1/ingest/users/upsert\`, {\n  method: "POST",\n  headers: { "X-API-KEY": SK, "Content-Type": "application/json" },\n` +
        `  body: JSON.stringify([{ user_id: "shopper-1", status: "active", created_at: new Date().toISOString() }]),\n});`,
        "snippet-node") },
    ]);
  }

  // --- router ------------------------------------------------------------------------------------------
  function go(hash) {
    if (window.location.hash === hash) render();
    else window.location.hash = hash;
  }

  function parseHash() {
    const raw = window.location.hash.replace(/^#\/?/, "");
    const [path, query = ""] = raw.split("?");
    const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
    return { page: parts[0] || "overview", parts: parts.slice(1), params: new URLSearchParams(query) };
  }

  const PAGES = [
    ["overview", "Overview"],
    ["keys", "Developer Access"],
    ["playground", "Playground"],
    ["catalog", "Catalog & users"],
    ["analytics", "Analytics"],
    ["settings", "Settings"],
  ];

  async function render() {
    const seq = ++renderSeq;
    const alive = () => seq === renderSeq;
    cleanups.forEach((fn) => fn());
    cleanups = [];
    const route = parseHash();
    if (route.page === "signin" || route.page === "signup") {
      (route.page === "signin" ? signInPage : signUpPage)(route, alive);
      return;
    }
    if (!state.org) {
      clear(root, h("p", { class: "boot" }, loading("Checking your session…")));
      try {
        state.org = (await api("GET", "/v1/org")).data;
      } catch (err) {
        if (!alive()) return;
        if (err.status === 401) { go("#/signin"); return; }
        clear(root, h("div", { class: "main" }, errorBox(err), h("button", { onclick: () => render() }, "Try again")));
        return;
      }
      if (!alive()) return;
    }
    const page = PAGES.some(([name]) => name === route.page) ? route.page : "overview";
    const main = h("main", { class: "main", "data-page": page });
    clear(root, h("div", { class: "shell" }, sidebar(page), main));
    if (state.flash) { main.append(h("div", { class: `alert ${state.flash.kind}` }, state.flash.text)); state.flash = null; }
    const content = h("div");
    main.append(content);
    const renderers = { overview: overviewPage, keys: keysPage, playground: playgroundPage, catalog: catalogPage,
      analytics: analyticsPage, settings: settingsPage };
    try {
      await renderers[page](content, route, alive);
    } catch (err) {
      if (alive() && err.status !== 401) content.append(errorBox(err));
    }
  }

  function sidebar(page) {
    const signOut = h("button", { class: "ghost small signout", type: "button", "data-test": "sign-out" }, "Sign out");
    signOut.addEventListener("click", async () => {
      const restore = busy(signOut, "Signing out…");
      try {
        await api("POST", "/auth/logout");
      } catch (err) {
        restore();
        if (err.status !== 401) { alert(err.message); return; }
      }
      state.org = null;
      state.newKeys = null;
      state.flash = { kind: "ok", text: "You are signed out." };
      go("#/signin");
    });
    return h("aside", { class: "sidebar" },
      h("div", { class: "brand" }, h("span", { class: "dot" }), "lehnz"),
      h("div", { class: "org-name", title: state.org.tenant_id, text: state.org.name }),
      h("nav", { class: "nav" }, PAGES.map(([name, label]) =>
        h("a", { href: `#/${name}`, class: name === page ? "active" : "", "data-nav": name }, label))),
      h("div", { class: "spacer" }),
      h("div", { class: "account", text: state.org.account ? state.org.account.email : "" }),
      signOut);
  }

  function pageHead(title, subtitle, ...actions) {
    return h("div", { class: "page-head" }, h("div", {}, h("h1", { text: title }), subtitle ? h("p", {}, subtitle) : null),
      actions.length ? h("div", { class: "actions" }, actions) : null);
  }

  // --- sign in / sign up -----------------------------------------------------------------------------------
  function authCard(wide, ...children) {
    clear(root, h("div", { class: "auth" }, h("div", { class: `card${wide ? " wide" : ""}` },
      h("div", { class: "brand" }, h("span", { class: "dot" }), "lehnz"), children)));
  }

  function signInPage() {
    const error = h("div");
    const email = h("input", { type: "email", name: "email", autocomplete: "username", required: true, "data-test": "email" });
    const password = h("input", { type: "password", name: "password", autocomplete: "current-password", required: true, "data-test": "password" });
    const submit = h("button", { type: "submit", "data-test": "sign-in" }, "Sign in");
    const flash = state.flash;
    state.flash = null;
    const form = h("form", {},
      h("div", { class: "field" }, h("label", { text: "Email" }), email),
      h("div", { class: "field" }, h("label", { text: "Password" }), password),
      h("div", { class: "actions" }, submit));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const restore = busy(submit, "Signing in…");
      clear(error);
      try {
        await signIn(email.value, password.value);
        go("#/overview");
      } catch (err) {
        restore();
        clear(error, errorBox(err));
      }
    });
    authCard(false, h("h1", { text: "Sign in" }), h("p", { class: "muted" }, "Your recommendation engine: keys, data, models and results."),
      flash ? h("div", { class: `alert ${flash.kind}`, "data-test": "flash" }, flash.text) : null, error, form,
      h("p", { class: "small muted" }, "No account yet? ", h("a", { href: "#/signup", "data-test": "to-signup" }, "Create one")));
    email.focus();
  }

  async function signIn(email, password) {
    await api("POST", "/auth/login", { body: { email, password, session: "cookie" } });
    state.org = null;
  }

  function signUpPage() {
    const error = h("div");
    const email = h("input", { type: "email", autocomplete: "username", required: true, "data-test": "email" });
    const password = h("input", { type: "password", autocomplete: "new-password", minlength: 10, required: true, "data-test": "password" });
    const orgName = h("input", { type: "text", required: true, maxlength: 200, placeholder: "Glow Beauty", "data-test": "org-name" });
    const domain = h("select", { "data-test": "domain" }, ["commerce", "content", "media"].map((d) => h("option", { value: d }, d)));
    const submit = h("button", { type: "submit", "data-test": "create-account" }, "Create account");
    const form = h("form", {},
      h("div", { class: "field" }, h("label", { text: "Work email" }), email),
      h("div", { class: "field" }, h("label", { text: "Password (at least 10 characters)" }), password),
      h("div", { class: "row" },
        h("div", { class: "field" }, h("label", { text: "Organisation" }), orgName),
        h("div", { class: "field" }, h("label", { text: "Domain" }), domain)),
      h("div", { class: "actions" }, submit));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const restore = busy(submit, "Creating…");
      clear(error);
      try {
        const created = (await api("POST", "/auth/register", {
          body: { email: email.value, password: password.value, org_name: orgName.value, domain: domain.value },
        })).data;
        await signIn(email.value, password.value);
        state.newKeys = created;
        firstKeys(created);
      } catch (err) {
        restore();
        clear(error, errorBox(err));
      }
    });
    authCard(false, h("h1", { text: "Create your account" }),
      h("p", { class: "muted" }, "An organisation, its first API keys and a dashboard, in one step."), error, form,
      h("p", { class: "small muted" }, "Already have an account? ", h("a", { href: "#/signin" }, "Sign in")));
    email.focus();
  }

  function firstKeys(created) {
    authCard(true,
      h("h1", { text: `Welcome, ${created.tenant_id}` }),
      h("div", { class: "alert warn", "data-test": "secret-warning" },
        h("strong", { text: "The secret key is shown only now. " }),
        "Copy it to your server's configuration before you continue; it is stored only as a hash."),
      secretLine("Publishable key: browsers and apps (events, recommendations)", created.publishable_key, "publishable-key"),
      secretLine("Secret key: your servers only (catalog, users, training, analytics)", created.secret_key, "secret-key"),
      h("p", { class: "small muted" }, `Tenant id ${created.tenant_id} · key pair ${created.key_id}`),
      h("h2", { text: "Send your first data" }),
      snippetTabs(),
      h("div", { class: "actions", style: "margin-top:1rem" },
        h("button", { type: "button", "data-test": "continue", onclick: () => go("#/overview") }, "I saved the secret key: continue"),
        h("button", { class: "secondary", type: "button", onclick: () => go("#/keys") }, "Developer Access")));
  }

  // --- overview ------------------------------------------------------------------------------------------
  async function overviewPage(content, route, alive) {
    const trainButton = h("button", { type: "button", "data-test": "train-now" }, "Train now");
    const progress = h("div", { "data-test": "train-progress" });
    content.append(pageHead("Overview", `${state.org.tenant_id} · ${state.org.domain}`, trainButton), progress);
    const body = h("div", {}, loading());
    content.append(body);

    const [status, overview] = await Promise.all([api("GET", "/v1/models/status"), api("GET", "/v1/overview")]);
    if (!alive()) return;
    drawOverview(body, status.data, overview.data);
    trainButton.addEventListener("click", () => trainNow(trainButton, progress, body, status.data, alive));
  }

  function drawOverview(body, status, overview) {
    const catalog = overview.catalog;
    const model = status.model;
    const empty = status.stored.items === 0 && status.stored.events === 0 && status.queue_depth === 0;
    const chartHolder = h("div");
    const showChart = (which) => {
      const data = which === "hourly"
        ? overview.events.hourly.map((b) => ({ label: new Date(b.hour).getHours().toString().padStart(2, "0") + "h", value: b.events, title: when(b.hour) }))
        : overview.events.daily.map((b) => ({ label: b.day.slice(5), value: b.events, title: b.day }));
      clear(chartHolder, barChart(data));
    };
    const modelRows = model ? [
      ["Version", h("code", { "data-test": "model-version", text: model.version })],
      ["Trained", when(model.trained_at)],
      ["Duration", `${(model.duration_ms / 1000).toFixed(1)} s`],
      ["Items", fmt(model.items)],
      ["Users", fmt(model.users)],
      ["Interactions", fmt(model.interactions)],
      ...Object.entries(model).filter(([k]) => !["version", "trained_at", "duration_ms", "items", "users", "interactions"].includes(k))
        .map(([k, v]) => [k.replace(/_/g, " "), typeof v === "object" ? JSON.stringify(v) : String(v)]),
      ...qualityRows(status.quality),
      ["Serving now", overview.serving_model_version === model.version
        ? h("span", { class: "badge ok" }, "yes") : h("span", { class: "badge warn" }, overview.serving_model_version || "loading")],
    ] : null;
    clear(body,
      status.last_error ? h("div", { class: "alert error" }, h("strong", { text: "The last training failed: " }), status.last_error) : null,
      empty ? h("div", { class: "panel", "data-test": "empty-overview" },
        h("h2", { text: "No data yet: three steps to your first recommendations" }),
        h("ol", {},
          h("li", {}, "Send your catalog with the secret key (items with a title, a category, a price, an image URL…)."),
          h("li", {}, "Send events from your storefront with the publishable key (views, add to carts, purchases)."),
          h("li", {}, "Press ", h("b", { text: "Train now" }), ", then try every strategy in the ", h("a", { href: "#/playground" }, "Playground"), ".")),
        h("p", { class: "small muted" }, "Your keys are on ", h("a", { href: "#/keys" }, "Developer Access"), "."),
        snippetTabs()) : null,
      h("div", { class: "grid" },
        stat("Catalog", fmt(catalog.active), `active · ${fmt(catalog.inactive)} inactive · ${fmt(catalog.deleted)} deleted`, "stat-catalog"),
        stat("Users", fmt(status.stored.users), `upserted · ${model ? fmt(model.users) : 0} in the model`, "stat-users"),
        stat("Events, 24 h", fmt(overview.events.last_24h), `${fmt(status.stored.events)} stored in all`, "stat-events-24h"),
        stat("Events, 7 days", fmt(overview.events.last_7d), null, "stat-events-7d"),
        stat("Ingest queue", fmt(status.queue_depth), "jobs not persisted yet", "stat-queue"),
        stat("Dead letters", fmt(overview.dead_letters), overview.dead_letters ? h("span", { class: "badge bad" }, "needs an operator: lehnz dead-letter") : "none parked", "stat-dead")),
      h("div", { class: "two" },
        h("div", { class: "panel" },
          h("div", { class: "page-head", style: "margin-bottom:.5rem" }, h("h2", { text: "Events" }),
            tabsInline([["24 hours", () => showChart("hourly")], ["7 days", () => showChart("daily")]])),
          chartHolder),
        h("div", { class: "panel", "data-test": "model-panel" },
          h("h2", { text: "Serving model" }),
          model ? h("dl", { class: "kv" }, modelRows.map(([k, v]) => [h("dt", { text: k }), h("dd", {}, v)]))
            : h("div", { class: "empty" }, h("h3", { text: "No model yet" }),
              h("p", {}, "Recommendations fall back to popularity and new arrivals until the first training. ",
                "Send a few events, then press Train now.")),
          h("p", { class: "small muted" }, status.training ? h("span", { class: "badge accent" }, "training now") : "Retrains on its own when new events arrive."))));
    showChart("hourly");
  }

  // The model search's findings, when the training run recorded them (GET /v1/models/status `quality`).
  function qualityRows(quality) {
    if (!quality || !quality.chosen) return [];
    const rows = [["Model", `${quality.chosen.model}${quality.chosen.ndcg_at_10 != null ? ` · ${quality.metric || "ndcg@10"} ${quality.chosen.ndcg_at_10.toFixed(3)}` : ""}`]];
    if (quality.personalized_vs_popular != null) rows.push(["vs popular", `${quality.personalized_vs_popular.toFixed(2)}×`]);
    return rows;
  }

  function tabsInline(entries) {
    const bar = h("div", { class: "actions" });
    entries.forEach(([label, fn], i) => {
      const b = h("button", { type: "button", class: `small ${i === 0 ? "" : "secondary"}` }, label);
      b.addEventListener("click", () => { [...bar.children].forEach((x) => x.classList.add("secondary")); b.classList.remove("secondary"); fn(); });
      bar.append(b);
    });
    return bar;
  }

  async function trainNow(button, progress, body, before, alive) {
    const previous = before.model ? before.model.version : null;
    const restore = busy(button, "Training…");
    const started = Date.now();
    const steps = ["Queued", "Training", "Trained", "Serving"];
    let reached = 0;
    let seenTraining = false;
    const draw = (note, failed) => clear(progress, h("div", { class: "panel" },
      h("h3", { text: "Training" }),
      h("ol", { class: "steps" }, steps.map((label, i) => h("li", {
        class: failed && i === reached ? "failed" : i < reached || (i === reached && i === steps.length - 1 && !failed && note === "done") ? "done" : i === reached ? "now" : "",
        "data-step": label.toLowerCase(),
      }, label))),
      h("p", { class: "small muted", "data-test": "train-note" }, note === "done" ? `Done in ${((Date.now() - started) / 1000).toFixed(1)} s.` : note)));
    try {
      await api("POST", "/v1/models/train");
    } catch (err) {
      restore();
      clear(progress, errorBox(err));
      return;
    }
    draw("Waiting for a worker…");
    let stopped = false;
    cleanups.push(() => { stopped = true; });
    while (!stopped && alive()) {
      await new Promise((resolve) => setTimeout(resolve, 700));
      if (stopped || !alive()) return;
      let status;
      let overview;
      try {
        [status, overview] = (await Promise.all([api("GET", "/v1/models/status"), api("GET", "/v1/overview")])).map((r) => r.data);
      } catch (err) {
        clear(progress, errorBox(err));
        restore();
        return;
      }
      if (!alive()) return;
      const version = status.model ? status.model.version : null;
      const elapsed = `${((Date.now() - started) / 1000).toFixed(0)} s`;
      if (status.training) { seenTraining = true; reached = Math.max(reached, 1); }
      if (version && version !== previous) {
        reached = Math.max(reached, 2);
        // null: this api process has not loaded the org yet; its first request loads the new version.
        if (overview.serving_model_version === version || overview.serving_model_version === null) {
          reached = 3;
          draw("done");
          restore();
          drawOverview(body, status, overview);
          return;
        }
        draw(`Model ${version} trained; waiting for the api to serve it (${elapsed})…`);
      } else if (status.last_error && seenTraining && !status.training) {
        draw(`Training failed: ${status.last_error}`, true);
        restore();
        return;
      } else {
        draw(reached === 1 ? `Training on your events (${elapsed})…` : `Waiting for a worker (${elapsed})…`);
      }
    }
    restore();
  }

  function barChart(data) {
    const width = 640;
    const height = 200;
    const pad = { left: 40, right: 8, top: 10, bottom: 24 };
    const max = Math.max(1, ...data.map((d) => d.value));
    const niceMax = 4 * Math.max(1, niceCeil(max / 4)); // counts: whole-number ticks
    const innerW = width - pad.left - pad.right;
    const innerH = height - pad.top - pad.bottom;
    const step = innerW / Math.max(1, data.length);
    const barW = Math.max(2, step * 0.7);
    const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": "events chart", "data-test": "chart" });
    for (let i = 0; i <= 4; i++) {
      const y = pad.top + innerH - (innerH * i) / 4;
      svg.append(s("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y, class: "grid-line" }));
      svg.append(s("text", { x: pad.left - 6, y: y + 4, "text-anchor": "end" }, compact((niceMax * i) / 4)));
    }
    const labelEvery = Math.ceil(data.length / 12);
    data.forEach((d, i) => {
      const barH = (innerH * d.value) / niceMax;
      const x = pad.left + i * step + (step - barW) / 2;
      svg.append(s("rect", { x, y: pad.top + innerH - barH, width: barW, height: Math.max(0, barH), rx: 2, class: "bar" },
        s("title", {}, `${d.title || d.label}: ${fmt(d.value)}`)));
      if (i % labelEvery === 0) svg.append(s("text", { x: x + barW / 2, y: height - 6, "text-anchor": "middle" }, d.label));
    });
    svg.append(s("line", { x1: pad.left, x2: width - pad.right, y1: pad.top + innerH, y2: pad.top + innerH, class: "axis" }));
    return svg;
  }

  const COLORS = ["#4f46e5", "#0f9d58", "#db2777", "#f59e0b", "#0891b2", "#7c3aed", "#dc2626", "#65a30d", "#2563eb", "#ea580c", "#0d9488", "#9333ea", "#be123c", "#475569"];

  function lineChart(labels, series) {
    const width = 640;
    const height = 220;
    const pad = { left: 46, right: 10, top: 10, bottom: 24 };
    const max = Math.max(1e-9, ...series.flatMap((x) => x.values));
    const niceMax = niceCeil(max);
    const innerW = width - pad.left - pad.right;
    const innerH = height - pad.top - pad.bottom;
    const xAt = (i) => pad.left + (labels.length <= 1 ? innerW / 2 : (innerW * i) / (labels.length - 1));
    const yAt = (v) => pad.top + innerH - (innerH * v) / niceMax;
    const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": "analytics chart", "data-test": "chart" });
    for (let i = 0; i <= 4; i++) {
      const y = pad.top + innerH - (innerH * i) / 4;
      svg.append(s("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y, class: "grid-line" }));
      svg.append(s("text", { x: pad.left - 6, y: y + 4, "text-anchor": "end" }, compact((niceMax * i) / 4)));
    }
    const labelEvery = Math.ceil(labels.length / 10);
    labels.forEach((label, i) => {
      if (i % labelEvery === 0) svg.append(s("text", { x: xAt(i), y: height - 6, "text-anchor": "middle" }, label.slice(5)));
    });
    series.forEach((line) => {
      const points = line.values.map((v, i) => `${xAt(i).toFixed(1)},${yAt(v).toFixed(1)}`).join(" ");
      svg.append(s("polyline", { points, class: "line", stroke: line.color }, s("title", {}, line.name)));
      line.values.forEach((v, i) => svg.append(s("circle", { cx: xAt(i), cy: yAt(v), r: 2.5, fill: line.color },
        s("title", {}, `${line.name} ${labels[i]}: ${fmt(v)}`))));
    });
    svg.append(s("line", { x1: pad.left, x2: width - pad.right, y1: pad.top + innerH, y2: pad.top + innerH, class: "axis" }));
    return svg;
  }

  function niceCeil(value) {
    if (value <= 0) return 1;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * power >= value) return m * power;
    return 10 * power;
  }

  function compact(value) {
    if (value >= 1e6) return `${+(value / 1e6).toFixed(1)}M`;
    if (value >= 1e3) return `${+(value / 1e3).toFixed(1)}k`;
    return `${+value.toFixed(value < 10 && value % 1 ? 1 : 0)}`;
  }

  // --- developer access ---------------------------------------------------------------------------------------
  async function keysPage(content, route, alive) {
    const createButton = h("button", { type: "button", "data-test": "create-key" }, "Create key pair");
    const fresh = h("div", { "data-test": "new-keys" });
    const table = h("div", {}, loading());
    content.append(
      pageHead("Developer Access", "Publishable keys (lehnz_pk_…) go in browsers and apps: events and recommendations. " +
        "Secret keys (lehnz_sk_…) stay on your servers: catalog, users, training, analytics.", createButton),
      fresh,
      h("div", { class: "panel" }, h("h2", { text: "Key pairs" }), table),
      h("div", { class: "panel" }, h("h2", { text: "Snippets for " + base() }),
        h("p", { class: "small muted" }, state.newKeys ? "With the key pair you created last." : "Replace the placeholders with your keys."),
        snippetTabs()));

    const showFresh = (pair, note) => {
      state.newKeys = pair;
      clear(fresh, h("div", { class: "panel" },
        h("div", { class: "alert warn", "data-test": "secret-warning" }, h("strong", { text: note }), " Copy the secret key now: it is shown only once."),
        secretLine("Publishable key", pair.publishable_key, "publishable-key"),
        secretLine("Secret key", pair.secret_key, "secret-key")));
    };

    const load = async () => {
      const pairs = (await api("GET", "/v1/keys")).data;
      if (!alive()) return;
      const live = pairs.filter((p) => !p.revoked_at);
      clear(table, pairs.length === 0 ? h("div", { class: "empty" }, "No key pairs.") : h("div", { class: "table-wrap" }, h("table", {},
        h("thead", {}, h("tr", {}, ["Key pair", "Publishable key", "Created", "Last used", "Status", ""].map((t) => h("th", { text: t })))),
        h("tbody", { "data-test": "key-rows" }, pairs.map((pair) => {
          const revoke = h("button", { class: "danger small", type: "button", "data-test": "revoke" }, "Revoke");
          const rotate = h("button", { class: "secondary small", type: "button", "data-test": "rotate" }, "Rotate");
          revoke.addEventListener("click", async () => {
            const sure = await confirmDialog("Revoke this key pair?",
              `Both keys of ${pair.publishable_key_prefix}… stop working within a second: storefronts and servers using them get 401.` +
              (live.length === 1 ? " It is your only live pair: create another first if anything uses it." : ""), "Revoke");
            if (!sure) return;
            busy(revoke, "Revoking…");
            try {
              await api("DELETE", `/v1/keys/${pair.key_id}`);
            } catch (err) {
              table.prepend(errorBox(err));
            }
            await load();
          });
          rotate.addEventListener("click", async () => {
            const sure = await confirmDialog("Rotate this key pair?",
              "A new pair is created and shown once; then this pair is revoked and stops working within a second. " +
              "Deploy the new keys first if you need a gap.", "Rotate");
            if (!sure) return;
            busy(rotate, "Rotating…");
            try {
              const created = (await api("POST", "/v1/keys")).data;
              showFresh(created, "Rotated.");
              await api("DELETE", `/v1/keys/${pair.key_id}`);
            } catch (err) {
              table.prepend(errorBox(err));
            }
            await load();
          });
          return h("tr", { "data-key-id": pair.key_id },
            h("td", { class: "mono", title: pair.key_id, text: shortId(pair.key_id) }),
            h("td", { class: "mono", text: `${pair.publishable_key_prefix}…` }),
            h("td", { class: "nowrap", text: when(pair.created_at) }),
            h("td", { class: "nowrap", text: ago(pair.last_used_at), title: pair.last_used_at || "" }),
            h("td", {}, pair.revoked_at ? h("span", { class: "badge bad", title: when(pair.revoked_at) }, "revoked")
              : h("span", { class: "badge ok" }, "active")),
            h("td", {}, pair.revoked_at ? null : h("div", { class: "actions" }, rotate, revoke)));
        })))));
    };
    createButton.addEventListener("click", async () => {
      const restore = busy(createButton, "Creating…");
      try {
        showFresh((await api("POST", "/v1/keys")).data, "Created.");
        await load();
      } catch (err) {
        fresh.prepend(errorBox(err));
      }
      restore();
    });
    await load();
  }

  // --- playground ---------------------------------------------------------------------------------------------------
  async function strategies() {
    if (!state.strategies) state.strategies = (await api("GET", "/v1/strategies")).data;
    return state.strategies;
  }

  const IMAGE_KEYS = ["image_url", "image", "imageUrl", "image_link", "thumbnail", "thumbnail_url", "picture"];
  const TITLE_KEYS = ["title", "name", "product_name"];
  function imageOf(attributes) {
    for (const key of IMAGE_KEYS) {
      const value = attributes && attributes[key];
      if (typeof value === "string" && /^(https?:\/\/|\/|data:image\/)/.test(value)) return value;
    }
    return null;
  }
  function titleOf(attributes, fallback) {
    for (const key of TITLE_KEYS) if (attributes && typeof attributes[key] === "string") return attributes[key];
    return fallback;
  }

  function searchField({ placeholder, testName, search, describe, value }) {
    const input = h("input", { type: "text", placeholder, value: value || "", autocomplete: "off", "data-test": testName });
    const list = h("ul", { class: "hidden", role: "listbox" });
    const wrap = h("div", { class: "suggest" }, input, list);
    const close = () => list.classList.add("hidden");
    const lookup = debounce(async () => {
      let rows = [];
      try { rows = await search(input.value.trim()); } catch (_) { rows = []; }
      clear(list, rows.map((row) => {
        const { id, label, image } = describe(row);
        const li = h("li", { role: "option", "data-value": id },
          image ? h("img", { class: "thumb", src: image, alt: "", style: "width:28px;height:28px" }) : null,
          h("span", {}, label, label !== id ? h("span", { class: "muted small" }, ` ${id}`) : null));
        li.addEventListener("mousedown", (event) => { event.preventDefault(); input.value = id; close(); });
        return li;
      }));
      list.classList.toggle("hidden", rows.length === 0 || document.activeElement !== input);
    }, 180);
    input.addEventListener("input", lookup);
    input.addEventListener("focus", lookup);
    input.addEventListener("blur", () => setTimeout(close, 120));
    input.addEventListener("keydown", (event) => { if (event.key === "Escape") close(); });
    return { wrap, input };
  }

  const FILTER_EXAMPLES = [
    ["category", { category: "bags" }],
    ["price range", { price: { gte: 10, lt: 100 } }],
    ["brands", { brand: ["Sony", "Bose"] }],
    ["hide bought", { exclude_interacted: ["purchase"] }],
  ];

  async function playgroundPage(content, route, alive) {
    const list = await strategies();
    const [users, items] = await Promise.all([
      api("GET", "/v1/users", { query: { limit: 6 } }), api("GET", "/v1/items", { query: { limit: 6, status: "active" } }),
    ]);
    if (!alive()) return;
    const p = route.params;
    const strategy = h("select", { "data-test": "strategy" }, list.map((x) => h("option", { value: x.name }, x.name)));
    const wanted = list.find((x) => x.name === p.get("strategy")) || list.find((x) => x.default) || list[0];
    strategy.value = wanted.name;
    const hint = h("p", { class: "small muted", "data-test": "strategy-hint" });
    const user = searchField({
      placeholder: "user id", testName: "user-id", value: p.get("user_id"),
      search: async (q) => (await api("GET", "/v1/users", { query: { q, limit: 8 } })).data.users,
      describe: (u) => ({ id: u.user_id, label: u.user_id }),
    });
    const item = searchField({
      placeholder: "search the catalog by id or title", testName: "context-item", value: p.get("context_item_id"),
      search: async (q) => (await api("GET", "/v1/items", { query: { q, limit: 8, status: "active" } })).data.items,
      describe: (it) => ({ id: it.item_id, label: titleOf(it.attributes, it.item_id), image: imageOf(it.attributes) }),
    });
    const filters = h("textarea", { placeholder: '{"category": "bags", "price": {"lt": 50}}', "data-test": "filters", value: p.get("filters") || "" });
    const limit = h("input", { type: "number", min: 1, max: 100, value: p.get("limit") || 10, "data-test": "limit" });
    const page = h("input", { type: "number", min: 1, value: p.get("page") || 1, "data-test": "page" });
    const run = h("button", { type: "submit", "data-test": "run" }, "Get recommendations");
    const output = h("div", { "data-test": "playground-output" });
    const chips = (rows, field, key) => rows.length ? h("div", { class: "small muted", style: "margin-top:.35rem" }, "Try: ",
      rows.map((row) => [h("a", { href: "#", "data-test": `pick-${field}`, onclick: (e) => { e.preventDefault(); (field === "user" ? user : item).input.value = row[key]; } }, row[key]), " "])) : null;
    const describe = () => {
      const chosen = list.find((x) => x.name === strategy.value);
      clear(hint, chosen.summary, ". ", h("b", { text: chosen.requires ? `Needs ${chosen.requires}` : "Needs no input" }),
        chosen.fallback ? ` · falls back to ${chosen.fallback}` : "", ` · mode ${chosen.mode}`);
    };
    strategy.addEventListener("change", describe);
    describe();
    const form = h("form", { class: "panel" },
      h("div", { class: "row" },
        h("div", { class: "field", style: "flex:1 1 240px" }, h("label", { text: "Strategy (14)" }), strategy, hint),
        h("div", { class: "field" }, h("label", { text: "user_id" }), user.wrap, chips(users.data.users, "user", "user_id")),
        h("div", { class: "field", style: "flex:1 1 240px" }, h("label", { text: "context_item_id" }), item.wrap, chips(items.data.items, "item", "item_id"))),
      h("div", { class: "row" },
        h("div", { class: "field", style: "flex:3 1 280px" }, h("label", {}, "filters (JSON) ",
          FILTER_EXAMPLES.map(([label, value]) => [" · ", h("a", { href: "#", onclick: (e) => { e.preventDefault(); filters.value = JSON.stringify(value); } }, label)])), filters),
        h("div", { class: "field", style: "flex:0 1 110px" }, h("label", { text: "limit" }), limit),
        h("div", { class: "field", style: "flex:0 1 110px" }, h("label", { text: "page" }), page)),
      h("div", { class: "actions" }, run,
        h("span", { class: "small muted", style: "align-self:center" }, "Runs POST /v1/recommend as your organisation, like your storefront with its publishable key.")));
    content.append(pageHead("Playground", "Every strategy, on your own data, with the exact request."), form, output);

    const submit = async (event) => {
      if (event) event.preventDefault();
      const body = { strategy: strategy.value };
      if (user.input.value.trim()) body.user_id = user.input.value.trim();
      if (item.input.value.trim()) body.context_item_id = item.input.value.trim();
      if (filters.value.trim()) {
        try { body.filters = JSON.parse(filters.value); } catch (err) {
          clear(output, errorBox(new ApiError(0, `filters is not valid JSON: ${err.message}`)));
          return;
        }
      }
      body.limit = Number(limit.value) || 10;
      body.page = Number(page.value) || 1;
      const restore = busy(run, "Running…");
      clear(output, loading("Asking the recommender…"));
      try {
        const response = await api("POST", "/v1/recommend", { body });
        if (!alive()) return;
        drawResults(output, body, response, (next) => { page.value = next; submit(); });
      } catch (err) {
        if (alive()) clear(output, errorBox(err), curlPanel(body));
      } finally {
        restore();
      }
    };
    form.addEventListener("submit", submit);
    if (p.get("run")) submit();
  }

  function curlPanel(body) {
    const text = `curl -s ${base()}/v1/recommend \\\n  -H "X-API-KEY: $LEHNZ_PUBLISHABLE_KEY" \\\n  -H 'Content-Type: application/json' \\\n  -d '${JSON.stringify(body).replace(/'/g, "'\\''")}'`;
    return h("div", { class: "panel" }, h("h2", { text: "This request as curl" }),
      h("p", { class: "small muted" }, "The playground signs the request with your session; your storefront sends its publishable key instead."),
      codeBlock(text, "curl"));
  }

  function drawResults(output, body, response, goToPage) {
    const data = response.data;
    const pagination = data.pagination;
    const results = data.results;
    const modeClass = data.mode === "fallback" ? "warn" : data.mode === "popularity" ? "" : "ok";
    clear(output,
      h("div", { class: "panel" },
        h("div", { class: "summary-bar", "data-test": "result-summary" },
          h("span", {}, "mode ", h("span", { class: `badge ${modeClass}`, "data-test": "mode", text: data.mode })),
          h("span", {}, "strategy ", h("b", { "data-test": "answered-strategy", text: data.strategy })),
          h("span", {}, "latency ", h("b", { "data-test": "latency", text: `${data.latency_ms} ms` }), h("span", { class: "muted" }, ` (server) · ${response.ms.toFixed(0)} ms round trip`)),
          h("span", {}, "model ", h("code", { text: data.model_version || "none yet" })),
          h("span", {}, `${fmt(pagination.total_count)} results · page ${pagination.page}`),
          h("span", { class: "small muted mono", title: "recommendation_id: send it with click and purchase events for attribution" }, data.recommendation_id)),
        results.length === 0 ? h("div", { class: "empty", "data-test": "no-results" }, h("h3", { text: "No results" }),
          h("p", {}, "Nothing in the catalog passes these filters, or the catalog is empty. Upsert active items, then try again."))
          : h("div", { class: "results", "data-test": "results" }, results.map((r, i) => resultCard(r, (pagination.page - 1) * pagination.limit + i + 1))),
        h("div", { class: "pager" },
          pagination.page > 1 ? h("button", { class: "secondary small", type: "button", onclick: () => goToPage(pagination.page - 1) }, "← Previous page") : null,
          pagination.has_next ? h("button", { class: "secondary small", type: "button", "data-test": "next-page", onclick: () => goToPage(pagination.page + 1) }, "Next page →") : null)),
      curlPanel(body));
  }

  function resultCard(result, rank) {
    const attributes = result.metadata || {};
    const image = imageOf(attributes);
    const title = titleOf(attributes, result.item_id);
    const shown = Object.entries(attributes).filter(([k]) => !IMAGE_KEYS.includes(k) && !TITLE_KEYS.includes(k)).slice(0, 8);
    return h("div", { class: "result", "data-test": "result", "data-item-id": result.item_id },
      h("div", { class: "img" }, image ? h("img", { src: image, alt: "", loading: "lazy", referrerpolicy: "no-referrer" }) : "◇"),
      h("div", { class: "body" },
        h("div", { class: "rank", text: `#${rank} · ${result.reason}` }),
        h("a", { class: "title", href: `#/catalog/item/${encodeURIComponent(result.item_id)}`, text: title }),
        h("div", { class: "mono small muted", text: result.item_id }),
        h("div", { class: "scorebar", title: `score ${result.score}` }, h("span", { style: `width:${Math.round(result.score * 100)}%` })),
        h("div", { class: "small" }, "score ", h("b", { "data-test": "score", text: result.score.toFixed(3) })),
        shown.length ? h("div", { class: "meta" }, shown.map(([k, v]) => [h("b", { text: k }), `: ${typeof v === "object" ? JSON.stringify(v) : v}`, h("br")])) : null));
  }

  // --- catalog and users ---------------------------------------------------------------------------------------------
  async function catalogPage(content, route, alive) {
    const [view, id] = route.parts;
    if (view === "item" && id) return itemDetail(content, id, alive);
    if (view === "user" && id) return userDetail(content, id, alive);
    const usersTab = view === "users";
    content.append(pageHead("Catalog & users", "Search and page through everything your organisation has sent."),
      h("div", { class: "tabs" },
        h("button", { type: "button", class: usersTab ? "" : "active", onclick: () => go("#/catalog") }, "Items"),
        h("button", { type: "button", class: usersTab ? "active" : "", "data-test": "users-tab", onclick: () => go("#/catalog/users") }, "Users")));
    return usersTab ? usersList(content, route, alive) : itemsList(content, route, alive);
  }

  function pagedTable({ content, alive, controls, fetchPage, columns, rowOf, empty }) {
    const holder = h("div", {}, loading());
    const pager = h("div", { class: "pager" });
    content.append(h("div", { class: "panel" }, controls, holder, pager));
    let cursors = [null];
    const load = async () => {
      clear(holder, loading());
      clear(pager);
      let page;
      try {
        page = await fetchPage(cursors[cursors.length - 1]);
      } catch (err) {
        if (alive()) clear(holder, errorBox(err));
        return;
      }
      if (!alive()) return;
      clear(holder, page.rows.length === 0 ? empty() : h("div", { class: "table-wrap" }, h("table", {},
        h("thead", {}, h("tr", {}, columns.map((c) => h("th", { text: c, class: c === "Events" ? "num" : "" })))),
        h("tbody", {}, page.rows.map(rowOf)))));
      if (cursors.length > 1) pager.append(h("button", { class: "secondary small", type: "button", onclick: () => { cursors.pop(); load(); } }, "← Previous"));
      if (page.pagination.has_next) pager.append(h("button", { class: "secondary small", type: "button", "data-test": "next", onclick: () => { cursors.push(page.pagination.next_after); load(); } }, "Next →"));
    };
    return { reload: () => { cursors = [null]; load(); } };
  }

  function itemsList(content, route, alive) {
    const q = h("input", { type: "search", placeholder: "Search by id or title", "data-test": "item-search", value: route.params.get("q") || "" });
    const status = h("select", { "data-test": "status-filter" }, ["", "active", "inactive", "deleted"].map((x) => h("option", { value: x }, x || "any status")));
    const table = pagedTable({
      content, alive,
      controls: h("div", { class: "row", style: "margin-bottom:.5rem" }, h("div", { class: "field" }, q), h("div", { class: "field", style: "flex:0 1 180px" }, status)),
      fetchPage: async (after) => {
        const data = (await api("GET", "/v1/items", { query: { q: q.value.trim(), status: status.value, after, limit: 20 } })).data;
        return { rows: data.items, pagination: data.pagination };
      },
      columns: ["", "Item", "Title", "Type", "Status", "Updated"],
      rowOf: (it) => h("tr", { class: "clickable", "data-test": "item-row", onclick: () => go(`#/catalog/item/${encodeURIComponent(it.item_id)}`) },
        h("td", {}, imageOf(it.attributes) ? h("img", { class: "thumb", src: imageOf(it.attributes), alt: "", loading: "lazy" }) : null),
        h("td", { class: "mono", text: it.item_id }),
        h("td", { text: titleOf(it.attributes, "") }),
        h("td", { text: it.item_type }),
        h("td", {}, h("span", { class: `badge ${it.status === "active" ? "ok" : it.status === "deleted" ? "bad" : "warn"}`, text: it.status })),
        h("td", { class: "nowrap", text: when(it.updated_at) })),
      empty: () => q.value || status.value ? h("div", { class: "empty" }, "No item matches.") : h("div", { class: "empty", "data-test": "empty-catalog" },
        h("h3", { text: "Your catalog is empty" }), h("p", {}, "Upsert items with your secret key:"), snippetTabs()),
    });
    q.addEventListener("input", debounce(table.reload, 250));
    status.addEventListener("change", table.reload);
    table.reload();
  }

  function usersList(content, route, alive) {
    const q = h("input", { type: "search", placeholder: "User id starts with…", "data-test": "user-search" });
    const table = pagedTable({
      content, alive,
      controls: h("div", { class: "row", style: "margin-bottom:.5rem" }, h("div", { class: "field" }, q)),
      fetchPage: async (after) => {
        const data = (await api("GET", "/v1/users", { query: { q: q.value.trim(), after, limit: 20 } })).data;
        return { rows: data.users, pagination: data.pagination };
      },
      columns: ["User", "Status", "Events", "Last event"],
      rowOf: (u) => h("tr", { class: "clickable", "data-test": "user-row", onclick: () => go(`#/catalog/user/${encodeURIComponent(u.user_id)}`) },
        h("td", { class: "mono", text: u.user_id }),
        h("td", {}, u.upserted ? h("span", { class: `badge ${u.status === "active" ? "ok" : "warn"}`, text: u.status }) : h("span", { class: "badge", title: "seen in events, never upserted" }, "events only")),
        h("td", { class: "num", text: fmt(u.events) }),
        h("td", { class: "nowrap", text: when(u.last_event_at) })),
      empty: () => q.value ? h("div", { class: "empty" }, "No user id starts with that.") : h("div", { class: "empty" },
        h("h3", { text: "No users yet" }), h("p", {}, "Users appear here when events name them or when you upsert them."), snippetTabs()),
    });
    q.addEventListener("input", debounce(table.reload, 250));
    table.reload();
  }

  async function recommendPanel(title, body, testName) {
    const holder = h("div", { class: "panel", "data-test": testName }, h("h2", { text: title }), loading());
    (async () => {
      try {
        const data = (await api("POST", "/v1/recommend", { body })).data;
        holder.lastChild.remove();
        holder.append(h("p", { class: "small muted" }, `mode ${data.mode} · ${data.latency_ms} ms · `,
          h("a", { href: `#/playground?${new URLSearchParams({ ...Object.fromEntries(Object.entries(body).filter(([k]) => k !== "limit")), run: 1 })}` }, "open in the playground")),
        data.results.length ? h("div", { class: "results" }, data.results.map((r, i) => resultCard(r, i + 1))) : h("div", { class: "empty" }, "No results yet."));
      } catch (err) {
        holder.lastChild.remove();
        holder.append(errorBox(err));
      }
    })();
    return holder;
  }

  async function itemDetail(content, itemId, alive) {
    content.append(h("p", {}, h("a", { href: "#/catalog" }, "← Catalog")));
    let it;
    try {
      it = (await api("GET", `/v1/items/${encodeURIComponent(itemId)}`)).data;
    } catch (err) {
      content.append(errorBox(err));
      return;
    }
    if (!alive()) return;
    const image = imageOf(it.attributes);
    content.append(
      pageHead(titleOf(it.attributes, it.item_id), h("span", { class: "mono" }, it.item_id)),
      h("div", { class: "two" },
        h("div", { class: "panel" },
          image ? h("img", { src: image, alt: "", style: "max-width:100%;max-height:240px;border-radius:8px;margin-bottom:.75rem" }) : null,
          h("dl", { class: "kv" },
            h("dt", { text: "Status" }), h("dd", {}, h("span", { class: `badge ${it.status === "active" ? "ok" : "warn"}`, text: it.status })),
            h("dt", { text: "Type" }), h("dd", { text: it.item_type }),
            h("dt", { text: "Created" }), h("dd", { text: when(it.created_at) }),
            h("dt", { text: "Updated" }), h("dd", { text: when(it.updated_at) }))),
        h("div", { class: "panel" }, h("h2", { text: "Attributes" }), h("pre", { class: "code", "data-test": "attributes" }, JSON.stringify(it.attributes, null, 2)))),
      await recommendPanel("Similar items", { strategy: "similar", context_item_id: it.item_id, limit: 6 }, "similar"),
      await recommendPanel("Frequently bought together", { strategy: "frequently-bought-together", context_item_id: it.item_id, limit: 6 }, "fbt"));
  }

  async function userDetail(content, userId, alive) {
    content.append(h("p", {}, h("a", { href: "#/catalog/users" }, "← Users")));
    const data = (await api("GET", `/v1/users/${encodeURIComponent(userId)}`, { query: { limit: 50 } })).data;
    if (!alive()) return;
    const u = data.user;
    content.append(
      pageHead(userId, u.upserted ? `${u.status} · created ${when(u.created_at)}` : "seen in events, never upserted"),
      h("div", { class: "grid" },
        stat("Events", fmt(u.events), null, "user-events"),
        stat("Last event", u.last_event_at ? ago(u.last_event_at) : "–", when(u.last_event_at)),
        stat("Identity", data.canonical_id === userId ? "own id" : "stitched", data.canonical_id !== userId ? `into ${data.canonical_id}` : `${data.aliases.length} alias(es)`)),
      await recommendPanel("Personalized for this user", { strategy: "personalized", user_id: data.canonical_id, limit: 6 }, "personalized"),
      h("div", { class: "two" },
        h("div", { class: "panel" }, h("h2", { text: "Real-time activity" }),
          h("p", { class: "small muted" }, "What the session strategies read right now (newest first)."),
          data.recent.length ? h("ul", {}, data.recent.slice(0, 15).map((a) => h("li", {}, h("b", { text: a.event_name }), " ", h("span", { class: "mono", text: a.item_id }), h("span", { class: "muted small" }, ` ${ago(a.timestamp)}`))))
            : h("div", { class: "empty" }, "No recent activity.")),
        h("div", { class: "panel" }, h("h2", { text: "Attributes" }), h("pre", { class: "code" }, JSON.stringify(u.attributes || {}, null, 2)),
          data.aliases.length ? h("p", { class: "small" }, "Aliases: ", data.aliases.join(", ")) : null)),
      h("div", { class: "panel" }, h("h2", { text: "Events" }), data.events.length === 0 ? h("div", { class: "empty" }, "No stored events.") :
        h("div", { class: "table-wrap" }, h("table", { "data-test": "user-events-table" },
          h("thead", {}, h("tr", {}, ["When", "Event", "Item", "Family", "Recommendation"].map((t) => h("th", { text: t })))),
          h("tbody", {}, data.events.map((e) => h("tr", {},
            h("td", { class: "nowrap", text: when(e.timestamp) }), h("td", { text: e.event_name }),
            h("td", {}, e.item_id ? h("a", { class: "mono", href: `#/catalog/item/${encodeURIComponent(e.item_id)}`, text: e.item_id }) : "–"),
            h("td", { text: e.event_family }), h("td", { class: "mono small", text: e.recommendation_id ? shortId(e.recommendation_id) : "–" }))))))));
  }

  // --- analytics -----------------------------------------------------------------------------------------------------------
  const isoDay = (d) => d.toISOString().slice(0, 10);

  async function analyticsPage(content, route, alive) {
    const today = new Date();
    const since = h("input", { type: "date", "data-test": "since", value: route.params.get("since") || isoDay(new Date(today.getTime() - 29 * 864e5)) });
    const until = h("input", { type: "date", "data-test": "until", value: route.params.get("until") || isoDay(today) });
    const apply = h("button", { type: "button", "data-test": "apply-range" }, "Apply");
    const preset = (days) => h("button", { type: "button", class: "secondary small", onclick: () => {
      since.value = isoDay(new Date(Date.now() - (days - 1) * 864e5)); until.value = isoDay(new Date()); load();
    } }, `${days} days`);
    const body = h("div");
    content.append(pageHead("Analytics", "Served recommendations and what they led to, per strategy and day (UTC)."),
      h("div", { class: "panel" }, h("div", { class: "row" },
        h("div", { class: "field", style: "flex:0 1 170px" }, h("label", { text: "From" }), since),
        h("div", { class: "field", style: "flex:0 1 170px" }, h("label", { text: "To (inclusive)" }), until),
        h("div", { class: "field actions", style: "flex:1 1 auto" }, apply, preset(7), preset(30), preset(90)))),
      body);
    const load = async () => {
      clear(body, loading());
      const restore = busy(apply, "Loading…");
      try {
        const end = new Date(`${until.value}T00:00:00Z`);
        end.setUTCDate(end.getUTCDate() + 1);
        const data = (await api("GET", "/v1/analytics/recommendations", { query: { since: `${since.value}T00:00:00Z`, until: end.toISOString() } })).data;
        if (alive()) drawAnalytics(body, data, since.value, until.value);
      } catch (err) {
        if (alive()) clear(body, errorBox(err));
      } finally {
        restore();
      }
    };
    apply.addEventListener("click", load);
    await load();
  }

  function drawAnalytics(body, data, sinceDay, untilDay) {
    const t = data.totals;
    if (data.strategies.length === 0) {
      clear(body, h("div", { class: "panel empty", "data-test": "empty-analytics" }, h("h3", { text: "No recommendations served in this range" }),
        h("p", {}, "Every POST /v1/recommend response to your keys is counted here (the dashboard's own answers are not). Send click and purchase events with its recommendation_id to attribute them:"),
        codeBlock(`{"user_id": "shopper-1", "event_family": "engagement", "event_name": "click", "item_id": "sku-1",\n "recommendation_id": "<data.recommendation_id of the response>"}`)));
      return;
    }
    const days = [];
    for (let d = new Date(`${sinceDay}T00:00:00Z`); isoDay(d) <= untilDay; d.setUTCDate(d.getUTCDate() + 1)) days.push(isoDay(d));
    const metric = h("select", { "data-test": "metric" }, [["served", "Served"], ["clicks", "Clicks"], ["conversions", "Conversions"], ["revenue", "Revenue"], ["ctr", "CTR"]]
      .map(([v, l]) => h("option", { value: v }, l)));
    const chart = h("div");
    const legend = h("div", { class: "legend" });
    const drawChart = () => {
      const series = data.strategies.map((st, i) => {
        const byDay = Object.fromEntries(st.days.map((d) => [d.day, d[metric.value] || 0]));
        return { name: st.strategy, color: COLORS[i % COLORS.length], values: days.map((d) => byDay[d] || 0) };
      });
      clear(chart, lineChart(days, series));
      clear(legend, series.map((x) => h("span", { style: `--c:${x.color}`, text: x.name })));
    };
    metric.addEventListener("change", drawChart);
    clear(body,
      h("div", { class: "grid" },
        stat("Served", fmt(t.served), null, "total-served"), stat("Clicks", fmt(t.clicks), `${fmt(t.exposures)} exposures`),
        stat("CTR", pct(t.ctr)), stat("Conversions", fmt(t.conversions)), stat("Conversion rate", pct(t.conversion_rate)),
        stat("Revenue", money(t.revenue))),
      h("div", { class: "panel" }, h("div", { class: "page-head", style: "margin-bottom:.5rem" }, h("h2", { text: "Per day" }), metric), chart, legend),
      h("div", { class: "panel" }, h("h2", { text: "Per strategy" }), h("div", { class: "table-wrap" }, h("table", { "data-test": "analytics-table" },
        h("thead", {}, h("tr", {}, ["Strategy", "Served", "Exposures", "Clicks", "CTR", "Conversions", "Conv. rate", "Revenue"].map((x, i) => h("th", { class: i ? "num" : "", text: x })))),
        h("tbody", {}, data.strategies.map((st) => h("tr", {},
          h("td", { text: st.strategy }), h("td", { class: "num", text: fmt(st.served) }), h("td", { class: "num", text: fmt(st.exposures) }),
          h("td", { class: "num", text: fmt(st.clicks) }), h("td", { class: "num", text: pct(st.ctr) }), h("td", { class: "num", text: fmt(st.conversions) }),
          h("td", { class: "num", text: pct(st.conversion_rate) }), h("td", { class: "num", text: money(st.revenue) }))))))));
    drawChart();
  }

  // --- settings -------------------------------------------------------------------------------------------------------------
  async function settingsPage(content, route, alive) {
    const org = (await api("GET", "/v1/org")).data;
    if (!alive()) return;
    state.org = org;
    const rl = org.rate_limit;
    const share = rl.used === null ? 0 : Math.min(100, (100 * rl.used) / rl.requests);
    content.append(pageHead("Settings", "Your organisation, its limits and your account."),
      h("div", { class: "two" },
        h("div", { class: "panel" }, h("h2", { text: "Organisation" }), h("dl", { class: "kv" },
          h("dt", { text: "Name" }), h("dd", { text: org.name }),
          h("dt", { text: "Tenant id" }), h("dd", {}, h("code", { "data-test": "tenant-id", text: org.tenant_id }), " ", copyButton(org.tenant_id)),
          h("dt", { text: "Domain" }), h("dd", { text: org.domain }),
          h("dt", { text: "Organisation id" }), h("dd", { class: "mono small", text: org.org_id }),
          h("dt", { text: "Created" }), h("dd", { text: when(org.created_at) }))),
        h("div", { class: "panel", "data-test": "rate-limit" }, h("h2", { text: "Rate limit" }),
          h("p", {}, h("b", { text: `${fmt(rl.requests)} requests per ${rl.window_s >= 60 ? `${rl.window_s / 60} minutes` : `${rl.window_s} s`}` }),
            h("span", { class: "muted" }, ` (${rl.limit}, ${rl.source === "org" ? "set for this organisation" : "the deployment default"})`)),
          h("div", { class: "usage" }, h("span", { style: `width:${share}%` })),
          h("p", { class: "small muted", "data-test": "usage" }, rl.used === null ? "Usage is unknown right now (the limiter cannot reach Redis)."
            : `${fmt(rl.used)} used in this window, ${fmt(rl.remaining)} left; the window resets in ${rl.reset_s} s.`),
          h("p", { class: "small muted" }, "Shared by every key of the organisation and by this dashboard. An operator changes it with ",
            h("code", { text: `lehnz org set-limit --org ${org.tenant_id} --limit 5000/15minutes` }), "."))),
      h("div", { class: "panel" }, h("h2", { text: "Account" }), h("dl", { class: "kv" },
        h("dt", { text: "Email" }), h("dd", { "data-test": "account-email", text: org.account ? org.account.email : "–" }),
        h("dt", { text: "Session" }), h("dd", { text: "A cookie only this site's requests carry; signing out ends it on the server too." }))));
  }

  window.addEventListener("hashchange", render);
  render();
})();
