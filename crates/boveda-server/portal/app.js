// boveda's portal: a client of the same JSON API the CLI's server offers.
// Pages are built with DOM calls (never from HTML strings), so nothing a
// vault holds can run as script. Routes live in the URL's hash.
"use strict";

const state = { csrf: sessionStorage.getItem("csrf") || "", vaults: [], streams: [] };

// --- small helpers -------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : "HTTP " + status);
    this.status = status;
    this.body = body || {};
  }
}

async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (method !== "GET") opts.headers["x-csrf-token"] = state.csrf;
  if (body !== undefined) {
    opts.headers["content-type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch("/api/v1" + path, opts);
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (r.status === 401) { showLogin(data && data.message); throw new ApiError(401, data); }
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

const enc = encodeURIComponent;
const V = (vault) => "/vaults/" + enc(vault);

function bytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function when(t) {
  if (!t) return "-";
  const d = new Date(t);
  return isNaN(d) ? t : d.toLocaleString();
}

function stateCell(s) { return h("span", { class: "state-" + s }, s); }

function toast(msg) {
  const t = document.getElementById("toast");
  t.textContent = msg;
  t.classList.add("show");
  setTimeout(() => t.classList.remove("show"), 3500);
}

function errorBox(e) {
  const field = e.body && e.body.field ? " (" + e.body.field + ")" : "";
  return h("p", { class: "error", role: "alert" }, (e.message || String(e)) + field);
}

function page(title, ...content) {
  const main = document.getElementById("main");
  main.replaceChildren(h("h1", {}, title), ...content);
  document.title = title + " · boveda";
  main.focus({ preventScroll: true });
}

function table(headers, rows, narrow) {
  const hide = (i) => (narrow || []).includes(i) ? "hide-narrow" : undefined;
  return h("div", { class: "scroll" }, h("table", {},
    h("thead", {}, h("tr", {}, headers.map((x, i) => h("th", { scope: "col", class: hide(i) }, x)))),
    h("tbody", {}, rows.length ? rows.map((r) => h("tr", {}, r.map((c, i) => h("td", { class: hide(i) }, c))))
      : h("tr", {}, h("td", { colspan: headers.length, class: "muted" }, "Nothing yet.")))));
}

function closeStreams() {
  for (const s of state.streams) s.close();
  state.streams = [];
}

function progressBar(job) {
  const p = job.progress || {};
  const running = job.state === "Queued" || job.state === "InProgress" || job.state === "Cancelling";
  const attrs = { "aria-label": "Progress of job " + job.id.slice(0, 8) };
  if (!running) { attrs.max = 1; attrs.value = 1; }
  else if (p.bytes_total) { attrs.max = p.bytes_total; attrs.value = Math.min(p.bytes_read, p.bytes_total); }
  const label = running ? bytes(p.bytes_read) + (p.bytes_total ? " of " + bytes(p.bytes_total) : "") : job.state;
  return h("span", { class: "progress", "data-job": job.id }, h("progress", attrs), " ", h("span", {}, label));
}

// follows a running job over Server-Sent Events, calling `update(job)`
function follow(vault, id, update) {
  const es = new EventSource("/api/v1" + V(vault) + "/jobs/" + enc(id) + "/events");
  const on = (ev) => { try { update(JSON.parse(ev.data), ev.type === "end"); } catch (_) { /* ignore */ } };
  es.addEventListener("progress", on);
  es.addEventListener("end", (ev) => { on(ev); es.close(); });
  es.onerror = () => es.close();
  state.streams.push(es);
}

// --- session ---------------------------------------------------------------

function showLogin(message) {
  closeStreams();
  document.getElementById("nav").replaceChildren();
  document.getElementById("logout").hidden = true;
  const input = h("input", { type: "password", name: "token", autocomplete: "current-password", required: true, id: "token" });
  const form = h("form", { onsubmit: async (ev) => {
    ev.preventDefault();
    const r = await fetch("/api/v1/login", { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ token: input.value.trim() }), credentials: "same-origin" });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) { form.replaceChildren(...form.children); form.prepend(errorBox(new ApiError(r.status, data))); return; }
    state.csrf = data.csrf;
    sessionStorage.setItem("csrf", data.csrf);
    state.vaults = data.vaults;
    location.hash = "#/";
    route();
  } },
    h("label", { for: "token" }, "Access token", input),
    h("p", { class: "muted" }, "A token from `boveda token create`; the portal keeps a session cookie, never the token."),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Log in")));
  page("Log in", message ? h("p", { class: "error" }, message) : "", form);
  input.focus();
}

async function logout() {
  await fetch("/api/v1/logout", { method: "POST", credentials: "same-origin" });
  sessionStorage.removeItem("csrf");
  state.csrf = "";
  showLogin();
}

function vaultNav(vault, current) {
  const mine = state.vaults.find((v) => v.name === vault);
  const guard = mine && mine.role === "SecurityAdmin";
  const links = guard ? [["/security", "Security"]] : [["", "Dashboard"], ["/items", "Items"], ["/configure", "Configure backup"], ["/jobs", "Jobs"],
    ["/alerts", "Alerts"], ["/policies", "Policies"], ["/servers", "Protected servers"], ["/imports", "Import jobs"],
    ["/security", "Security"]];
  document.getElementById("nav").replaceChildren(...links.map(([p, label]) =>
    h("a", { href: "#/v/" + enc(vault) + p, "aria-current": current === p ? "page" : undefined }, label)));
  document.getElementById("logout").hidden = false;
}

// --- pages -----------------------------------------------------------------

async function vaultsPage() {
  document.getElementById("nav").replaceChildren();
  document.getElementById("logout").hidden = false;
  const list = await api("GET", "/vaults");
  state.vaults = list;
  const name = h("input", { name: "name", required: true, pattern: "[A-Za-z][A-Za-z0-9-]{1,49}", id: "vault-name" });
  const store = h("input", { name: "store", required: true, id: "vault-store", placeholder: "/srv/backups/vault1" });
  const redundancy = h("select", { name: "redundancy", id: "vault-redundancy" },
    h("option", { value: "lrs" }, "Locally redundant (lrs)"), h("option", { value: "grs" }, "Geo-redundant (grs)"));
  const secondary = h("input", { name: "secondary", id: "vault-secondary", placeholder: "only for grs" });
  const out = h("div");
  const form = h("form", { onsubmit: async (ev) => {
    ev.preventDefault();
    const body = { name: name.value, store: store.value, redundancy: redundancy.value };
    if (secondary.value) body.secondary = secondary.value;
    try {
      await api("POST", "/vaults", body);
      location.hash = "#/v/" + enc(name.value);
    } catch (e) { out.replaceChildren(errorBox(e)); }
  } },
    h("label", { for: "vault-name" }, "Name (letters, digits and hyphens, 2-50, starting with a letter)", name),
    h("label", { for: "vault-store" }, "Store: a folder, s3://bucket/prefix or azblob://container/prefix", store),
    h("label", { for: "vault-redundancy" }, "Storage replication (chosen before anything is protected)", redundancy),
    h("label", { for: "vault-secondary" }, "Secondary store", secondary),
    out, h("div", { class: "actions" }, h("button", { type: "submit" }, "Create vault")));
  page("Vaults",
    table(["Vault", "Your role", "Items you see"], list.map((v) => [
      h("a", { href: "#/v/" + enc(v.name) }, v.name), v.role, v.items.length ? v.items.join(", ") : "all"])),
    h("h2", {}, "Create a vault"), form);
}

function barChart(days, value, cls, label) {
  const w = 600, hgt = 140, pad = 18;
  const max = Math.max(1, ...days.map(value));
  const bw = (w - pad) / days.length;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${hgt + pad}`);
  svg.setAttribute("class", "chart");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  days.forEach((d, i) => {
    for (const [v, c, base] of cls(d, value)) {
      const r = document.createElementNS(svg.namespaceURI, "rect");
      const bh = (v / max) * hgt;
      r.setAttribute("x", pad + i * bw + 1);
      r.setAttribute("y", hgt - bh - (base / max) * hgt);
      r.setAttribute("width", Math.max(1, bw - 2));
      r.setAttribute("height", bh);
      r.setAttribute("class", c);
      const t = document.createElementNS(svg.namespaceURI, "title");
      t.textContent = d.date + ": " + v;
      r.append(t);
      svg.append(r);
    }
    if (i % 5 === 0) {
      const t = document.createElementNS(svg.namespaceURI, "text");
      t.setAttribute("x", pad + i * bw);
      t.setAttribute("y", hgt + pad - 4);
      t.textContent = d.date.slice(5);
      svg.append(t);
    }
  });
  return svg;
}

async function dashboardPage(vault) {
  vaultNav(vault, "");
  const d = await api("GET", V(vault) + "/dashboard");
  const list = (obj) => h("ul", {}, Object.entries(obj).map(([k, v]) => h("li", {}, k + ": " + v)));
  const jobsPerDay = (day) => Object.values(day.jobs).reduce((a, b) => a + b, 0);
  page("Vault " + vault,
    h("div", { class: "tiles" },
      h("div", { class: "tile", id: "tile-items" }, h("div", {}, "Items by protection state"), list(d.items_by_state),
        d.initial_backup_pending ? h("p", { class: "state-CompletedWithWarnings" }, d.initial_backup_pending + " with initial backup pending") : ""),
      h("div", { class: "tile", id: "tile-jobs" }, h("div", {}, "Jobs, last 24 h"), list(d.jobs_last_24h)),
      h("div", { class: "tile", id: "tile-alerts" }, h("div", {}, "Alerts, last 24 h"),
        h("a", { class: "big", href: "#/v/" + enc(vault) + "/alerts" }, String(d.alerts_last_24h))),
      h("div", { class: "tile", id: "tile-storage" }, h("div", {}, "Stored"), h("div", { class: "big" }, bytes(d.stored_bytes)),
        h("div", {}, "about " + d.monthly_cost.toFixed(2) + " " + d.currency + " a month"))),
    h("h2", {}, "Stored bytes, last 30 days"),
    barChart(d.days, (x) => x.stored_bytes, (x, f) => [[f(x), "bytes", 0]], "Stored bytes per day"),
    h("h2", {}, "Jobs per day, last 30 days"),
    barChart(d.days, jobsPerDay, (x) => {
      const bad = (x.jobs.Failed || 0) + (x.jobs.Cancelled || 0);
      const ok = jobsPerDay(x) - bad;
      return [[ok, "ok", 0], [bad, "bad", ok]];
    }, "Jobs per day, failed in red"));
}

async function itemsPage(vault) {
  vaultNav(vault, "/items");
  const items = await api("GET", V(vault) + "/items");
  page("Items",
    h("p", {}, h("a", { href: "#/v/" + enc(vault) + "/configure" }, "Configure backup for more items")),
    table(["Item", "On", "Kind", "Protection", "Policy", "Last backup", "Next backup", "Points"], items.map((i) => [
      h("a", { href: "#/v/" + enc(vault) + "/items/" + enc(i.name) }, i.name), i.host || "this server", i.kind, i.protection,
      i.policy || "-", h("span", {}, stateCell(i.last_backup_status), " ", when(i.last_backup)), when(i.next_backup),
      String(i.recovery_points)]),
    [1, 2, 4, 6]));
}

function inDays(n) {
  const d = new Date(Date.now() + n * 86400000);
  return d.toISOString().slice(0, 10);
}

async function itemPage(vault, name) {
  vaultNav(vault, "/items");
  const base = V(vault) + "/items/" + enc(name);
  const [item, pts] = await Promise.all([api("GET", base), api("GET", base + "/points")]);
  const until = h("input", { type: "date", id: "retain-until", min: inDays(1), value: inDays(30), required: true });
  const out = h("div");
  const form = h("form", { onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const job = await api("POST", base + "/backup", { retain_until: until.value });
      location.hash = "#/v/" + enc(vault) + "/jobs/" + job.id;
    } catch (e) { out.replaceChildren(errorBox(e)); }
  } },
    h("label", { for: "retain-until" }, "Keep this recovery point until", until), out,
    h("div", { class: "actions" }, h("button", { type: "submit", id: "backup-now" }, "Backup now")));
  const protect = item.item.protection.state;
  page("Item " + item.name,
    h("div", { class: "tiles" },
      h("div", { class: "tile" }, h("div", {}, "On"), h("div", { id: "item-host" }, item.host || "this server")),
      h("div", { class: "tile" }, h("div", {}, "Protection"), h("div", { id: "protection" }, item.protection)),
      h("div", { class: "tile" }, h("div", {}, "Policy"), h("div", {}, item.policy || "-")),
      h("div", { class: "tile" }, h("div", {}, "Last backup"), h("div", {}, stateCell(item.last_backup_status), " ", when(item.last_backup))),
      h("div", { class: "tile" }, h("div", {}, "Next backup"), h("div", {}, when(item.next_backup)))),
    h("h2", {}, "Back up now"), form,
    protect === "not-protected" ? h("p", {}, h("a", { href: "#/v/" + enc(vault) + "/configure?item=" + enc(name) }, "Protect it with a policy")) : "",
    h("h2", {}, "Recovery points"),
    table(["Time", "Consistency", "Expires", "Kept by", "Size", ""], pts.points.slice().reverse().map((p) => [
      when(p.point.time), p.point.consistency, p.expires ? when(p.expires) : "never", p.kept_by, bytes(p.point.stats.bytes),
      h("a", { href: "#/v/" + enc(vault) + "/items/" + enc(name) + "/restore/" + p.point.id }, "Restore")]), [3, 4]));
}

async function restorePage(vault, name, point) {
  vaultNav(vault, "/items");
  const base = V(vault) + "/items/" + enc(name);
  const picked = new Set();
  const listing = h("div", { id: "browse" });
  const here = h("p", { class: "muted" });
  async function show(path) {
    here.textContent = "Inside the point: " + path;
    try {
      const entries = await api("GET", base + "/points/" + enc(point) + "/browse?path=" + enc(path));
      const up = path !== "/" ? h("button", { type: "button", class: "secondary", onclick: () => show(path.replace(/\/[^/]+\/?$/, "") || "/") }, "Up") : "";
      listing.replaceChildren(up, table(["", "Name", "Kind", "Size"], entries.map((e) => {
        const full = (path === "/" ? "" : path.replace(/\/$/, "")) + "/" + e.name;
        const box = h("input", { type: "checkbox", "aria-label": "Restore " + full, checked: picked.has(full),
          onchange: (ev) => { if (ev.target.checked) picked.add(full); else picked.delete(full); } });
        const nameCell = e.kind === "Dir"
          ? h("button", { type: "button", class: "secondary", onclick: () => show(full) }, e.name + "/")
          : e.name;
        return [box, nameCell, e.kind, bytes(e.size)];
      })));
    } catch (e) { listing.replaceChildren(errorBox(e)); }
  }
  const whole = h("input", { type: "radio", name: "what", value: "whole", checked: true, id: "what-whole" });
  const some = h("input", { type: "radio", name: "what", value: "some", id: "what-some",
    onchange: () => show("/") });
  const target = h("input", { id: "restore-target", required: true, placeholder: "a folder the server restores to" });
  const out = h("div");
  const form = h("form", { onsubmit: async (ev) => {
    ev.preventDefault();
    const body = { point, target: target.value, paths: some.checked ? [...picked] : [] };
    if (some.checked && !picked.size) { out.replaceChildren(h("p", { class: "error" }, "Pick at least one file or folder.")); return; }
    try {
      const job = await api("POST", base + "/restore", body);
      location.hash = "#/v/" + enc(vault) + "/jobs/" + job.id;
    } catch (e) { out.replaceChildren(errorBox(e)); }
  } },
    h("fieldset", {}, h("legend", {}, "What to restore"),
      h("label", { class: "inline", for: "what-whole" }, whole, "The whole item"),
      h("label", { class: "inline", for: "what-some" }, some, "Files and folders I pick")),
    here, listing,
    h("label", { for: "restore-target" }, "Restore into (paths are recreated below it)", target),
    out, h("div", { class: "actions" }, h("button", { type: "submit", id: "restore-start" }, "Restore")));
  page("Restore " + name + " from point " + point.slice(0, 8), form);
}

async function jobsPage(vault) {
  vaultNav(vault, "/jobs");
  const jobs = (await api("GET", V(vault) + "/jobs")).reverse();
  const rows = jobs.slice(0, 200).map((j) => {
    const running = j.state === "InProgress" || j.state === "Queued";
    const stop = running ? h("button", { type: "button", class: "danger", onclick: async () => {
      try { await api("POST", V(vault) + "/jobs/" + j.id + "/stop"); toast("Stop requested"); } catch (e) { toast(e.message); }
    } }, "Stop") : "";
    return [h("a", { href: "#/v/" + enc(vault) + "/jobs/" + j.id }, j.id.slice(0, 8)), j.operation, j.item || "-",
      stateCell(j.state), when(j.start), progressBar(j), stop];
  });
  page("Jobs", table(["Job", "Operation", "Item", "State", "Started", "Progress", ""], rows, [4]));
  for (const j of jobs.filter((j) => j.state === "InProgress" || j.state === "Queued")) {
    follow(vault, j.id, (job, end) => {
      const bar = document.querySelector(`[data-job="${job.id}"]`);
      if (bar) bar.replaceWith(progressBar(job));
      if (end) jobsPage(vault);
    });
  }
}

async function jobPage(vault, id) {
  vaultNav(vault, "/jobs");
  const job = await api("GET", V(vault) + "/jobs/" + enc(id));
  const body = h("div");
  const render = (j) => {
    const running = j.state === "InProgress" || j.state === "Queued";
    body.replaceChildren(
      h("p", {}, "State: ", h("strong", { id: "job-state" }, stateCell(j.state))),
      h("p", {}, progressBar(j)),
      running ? h("button", { type: "button", class: "danger", onclick: async () => {
        try { await api("POST", V(vault) + "/jobs/" + j.id + "/stop"); toast("Stop requested"); } catch (e) { toast(e.message); }
      } }, "Stop") : "",
      table(["", ""], [["Operation", j.operation], ["Item", j.item || "-"], ["Started", when(j.start)], ["Ended", when(j.end)],
        ["Phase", j.progress.phase || "-"], ["Files", String(j.progress.files)], ["Bytes read", bytes(j.progress.bytes_read)],
        ["Bytes written", bytes(j.progress.bytes_written)], ["Error", j.error || "-"],
        ["Warnings", j.warnings.join("; ") || "-"], ["Details", j.details.join("; ") || "-"]]),
      j.item ? h("p", {}, h("a", { href: "#/v/" + enc(vault) + "/items/" + enc(j.item) }, "Item " + j.item)) : "");
  };
  render(job);
  page(job.operation + " job " + id.slice(0, 8), body);
  if (job.state === "Queued" || job.state === "InProgress" || job.state === "Cancelling") follow(vault, id, (j) => render(j));
}

async function alertsPage(vault) {
  vaultNav(vault, "/alerts");
  const alerts = (await api("GET", V(vault) + "/alerts")).reverse();
  page("Alerts", table(["Time", "Severity", "Item", "Operation", "Reason", "Job"], alerts.map((a) => [
    when(a.time), a.severity, a.item || "-", a.operation, a.reason,
    h("a", { href: "#/v/" + enc(vault) + "/jobs/" + a.job }, a.job.slice(0, 8))]), [3]));
}

function policyForm(onDone) {
  const name = h("input", { id: "policy-name", required: true });
  const time = h("input", { id: "policy-time", type: "time", value: "02:00", required: true });
  const daily = h("input", { id: "policy-daily", type: "number", min: 1, max: 9999, value: 30 });
  const weekly = h("input", { id: "policy-weekly", type: "number", min: 0, max: 5163, value: 0 });
  const monthly = h("input", { id: "policy-monthly", type: "number", min: 0, max: 1188, value: 0 });
  const yearly = h("input", { id: "policy-yearly", type: "number", min: 0, max: 99, value: 0 });
  const out = h("div");
  return h("form", { onsubmit: async (ev) => {
    ev.preventDefault();
    const body = { name: name.value, times: [time.value], daily_keep: Number(daily.value) };
    if (Number(weekly.value)) { body.weekly_keep = Number(weekly.value); body.weekly_on = ["sunday"]; }
    if (Number(monthly.value)) { body.monthly_keep = Number(monthly.value); body.monthly_on = "last"; }
    if (Number(yearly.value)) { body.yearly_keep = Number(yearly.value); body.yearly_month = 12; body.yearly_on = "last"; }
    try { const p = await onDone(body); out.replaceChildren(h("p", {}, "Created policy " + p.name)); } catch (e) { out.replaceChildren(errorBox(e)); }
  } },
    h("label", { for: "policy-name" }, "Policy name", name),
    h("label", { for: "policy-time" }, "Daily backup at", time),
    h("fieldset", {}, h("legend", {}, "Keep"),
      h("label", { for: "policy-daily" }, "Daily points, days", daily),
      h("label", { for: "policy-weekly" }, "Weekly points (Sunday), weeks (0: none)", weekly),
      h("label", { for: "policy-monthly" }, "Monthly points (last day), months (0: none)", monthly),
      h("label", { for: "policy-yearly" }, "Yearly points (31 December), years (0: none)", yearly)),
    out, h("div", { class: "actions" }, h("button", { type: "submit" }, "Create policy")));
}

function describePolicy(p) {
  const r = p.retention, parts = [];
  if (r.daily_days) parts.push("daily " + r.daily_days + " d");
  if (r.weekly) parts.push("weekly " + r.weekly.weeks + " w");
  if (r.monthly) parts.push("monthly " + r.monthly.months + " m");
  if (r.yearly) parts.push("yearly " + r.yearly.years + " y");
  return p.schedule.frequency + " at " + p.schedule.times.join(", ") + "; keep " + parts.join(", ");
}

async function policiesPage(vault) {
  vaultNav(vault, "/policies");
  const list = await api("GET", V(vault) + "/policies");
  page("Policies", table(["Policy", "Schedule and retention"], list.map((p) => [p.name, describePolicy(p)])),
    h("h2", {}, "Create a policy"),
    policyForm(async (body) => { const p = await api("POST", V(vault) + "/policies", body); policiesPage(vault); return p; }));
}

async function importsPage(vault) {
  vaultNav(vault, "/imports");
  const jobs = await api("GET", V(vault) + "/imports");
  page("Import jobs", table(["Import job", "State", "Estimated", "Drives", "Carrier", "Deadline"], jobs.map((j) => [
    j.name, j.state, bytes(j.estimated_bytes), (j.drives || []).map((d) => d.id + " (" + d.state + ")").join(", ") || "-",
    j.carrier ? j.carrier + (j.tracking ? " " + j.tracking : "") : "-", when(j.deadline)])));
}

// registered hosts: list, add (single-use credentials), unregister
async function serversPage(vault) {
  vaultNav(vault, "/servers");
  const hosts = await api("GET", V(vault) + "/hosts");
  const out = h("div", { id: "credentials" });
  const address = h("input", { id: "server-address", value: location.origin.replace(/^http:/, "https:"), required: true });
  const hours = h("input", { id: "server-hours", type: "number", min: 1, max: 720, value: 48 });
  const add = h("form", { onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const creds = await api("POST", V(vault) + "/hosts", { server: address.value, expires_hours: Number(hours.value) });
      const text = JSON.stringify(creds, null, 2);
      const file = URL.createObjectURL(new Blob([text + "\n"], { type: "application/json" }));
      out.replaceChildren(
        h("p", {}, "Credentials for one server, valid until " + when(creds.expires) + " (" + creds.expires + "), shown this once. " +
          "Copy them to the server and run, as root: boveda host register --credentials host.creds"),
        h("pre", { id: "credentials-text", tabindex: 0 }, text),
        h("p", {}, h("a", { href: file, download: "host.creds" }, "Download host.creds")));
    } catch (e) { out.replaceChildren(errorBox(e)); }
  } },
    h("label", { for: "server-address" }, "Address servers reach this vault's server at", address),
    h("label", { for: "server-hours" }, "Valid for, hours", hours),
    h("div", { class: "actions" }, h("button", { type: "submit", id: "add-server" }, "Add a server")));
  const unregister = (name) => async (ev) => {
    if (!confirm("Unregister " + name + "? Its backups stop at once; its recovery points are kept.")) return;
    ev.target.disabled = true;
    try { await api("DELETE", V(vault) + "/hosts/" + enc(name)); toast("Unregistered " + name); await serversPage(vault); }
    catch (e) { out.replaceChildren(errorBox(e)); ev.target.disabled = false; }
  };
  const rows = hosts.map((o) => [o.name, o.state, o.os, o.version, when(o.registered) , when(o.last_contact),
    o.items.length ? o.items.map((i) => h("a", { href: "#/v/" + enc(vault) + "/items/" + enc(i) }, i)) : "-",
    o.unregistered ? "-" : h("button", { type: "button", class: "secondary", onclick: unregister(o.name) }, "Unregister")]);
  page("Protected servers",
    hosts.length ? table(["Name", "State", "OS", "boveda", "Registered", "Last contact", "Items", ""], rows, [2, 3, 4])
      : h("p", {}, "No server is registered with this vault yet."),
    h("h2", {}, "Add a server"), add, out);
}

// --- routing ---------------------------------------------------------------

async function route() {
  closeStreams();
  const parts = location.hash.replace(/^#\/?/, "").split("?")[0].split("/").filter(Boolean).map(decodeURIComponent);
  try {
    if (!state.csrf) {
      const s = await fetch("/api/v1/session", { credentials: "same-origin" });
      if (!s.ok) { showLogin(); return; }
      const data = await s.json();
      state.csrf = data.csrf;
      sessionStorage.setItem("csrf", data.csrf);
    }
    if (parts[0] !== "v" || !parts[1]) return await vaultsPage();
    const [, vault, section, name, sub, point] = parts;
    if (section === "security") return await securityPage(vault);
    // the guard's token sees its requests, nothing else of the vault
    const mine = state.vaults.find((v) => v.name === vault);
    if (mine && mine.role === "SecurityAdmin") return await securityPage(vault);
    if (!section) return await dashboardPage(vault);
    if (section === "items" && name && sub === "restore" && point) return await restorePage(vault, name, point);
    if (section === "items" && name) return await itemPage(vault, name);
    if (section === "items") return await itemsPage(vault);
    if (section === "configure") return await configurePage(vault);
    if (section === "jobs" && name) return await jobPage(vault, name);
    if (section === "jobs") return await jobsPage(vault);
    if (section === "alerts") return await alertsPage(vault);
    if (section === "policies") return await policiesPage(vault);
    if (section === "imports") return await importsPage(vault);
    if (section === "servers") return await serversPage(vault);
    page("Not found", h("p", {}, "No such page."));
  } catch (e) {
    if (e.status !== 401) page("Error", errorBox(e));
  }
}

window.addEventListener("hashchange", route);
// a link to the page shown starts it afresh (a new "configure backup")
document.addEventListener("click", (ev) => {
  const a = ev.target.closest && ev.target.closest("a[href^='#']");
  if (a && a.getAttribute("href") === location.hash) route();
});
document.getElementById("logout").addEventListener("click", logout);
route();
