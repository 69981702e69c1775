// boveda's portal: a client of the same JSON API the CLI's server offers.
// Pages are built with DOM calls (never from HTML strings), so nothing a
// vault holds can run as script. Routes live in the URL's hash. This file
// holds the helpers every page uses, the session and the routes; the pages
// are in vault.js, items.js, jobs.js, policies.js, configure.js and
// security.js, loaded before it.
"use strict";

// `shown` counts the pages routed to: a page whose data arrives after the
// user moved on draws nothing and keeps no timer
const state = { csrf: sessionStorage.getItem("csrf") || "", vaults: [], streams: [], timers: [], shown: 0 };

// --- small helpers -------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
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
const link = (vault, rest) => "#/v/" + enc(vault) + (rest || "");

function bytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(n < 10 ? 2 : 1) : n) + " " + units[i];
}

// the browser's zone, shown beside every time the browser formats
const ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";

// a time in the browser's zone, the zone named ("5 Dec 2026, 21:30 CET")
function when(t, zone) {
  if (!t) return "-";
  const d = new Date(t);
  if (isNaN(d)) return String(t);
  return d.toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
    timeZone: zone || ZONE, timeZoneName: "short" });
}

// a time as a <time> element, its exact instant in the tooltip
function timeEl(t, zone) {
  if (!t) return "-";
  return h("time", { datetime: t, title: t + " (UTC)" }, when(t, zone));
}

function duration(secs) {
  if (secs === null || secs === undefined || isNaN(secs)) return "-";
  secs = Math.max(0, Math.round(secs));
  if (secs < 60) return secs + " s";
  const m = Math.floor(secs / 60), s = secs % 60;
  if (m < 60) return m + " min " + (s ? s + " s" : "");
  return Math.floor(m / 60) + " h " + (m % 60) + " min";
}

function jobSeconds(j) {
  const end = j.end ? new Date(j.end) : new Date();
  return (end - new Date(j.start)) / 1000;
}

// words for the API's names: "InProgress" -> "In progress"
const WORDS = { InProgress: "In progress", CompletedWithWarnings: "Completed with warnings", ConfigureBackup: "Configure backup",
  DisableBackup: "Stop protection", DeleteBackupData: "Delete backup data", Undelete: "Undelete backup data",
  UpdateKeys: "Passphrase change", HostContact: "Host contact", OfflineSeed: "Offline seed", GuardRequest: "Guard request",
  GuardApproval: "Guard approval", GuardUse: "Guard use", VerifyPoint: "Verification", Verify: "Vault check", NotProtected: "Not protected", "not-protected": "Not protected",
  "protection-stopped": "Protection stopped", "soft-deleted": "Soft deleted" };
function words(s) {
  if (s === null || s === undefined) return "-";
  if (WORDS[s]) return WORDS[s];
  const spaced = String(s).replace(/([a-z])([A-Z])/g, "$1 $2").replace(/-/g, " ");
  return spaced.charAt(0).toUpperCase() + spaced.slice(1).toLowerCase();
}

function stateCell(s) { return h("span", { class: "state state-" + s }, words(s)); }

function healthCell(o) {
  const reason = o.health_reason ? " — " + o.health_reason : "";
  return h("span", { class: "health health-" + o.health, title: o.health_reason || "" }, o.health, h("span", { class: "muted" }, reason));
}

// what a job is, in words: "Backup of docs, 5 Dec 2026, 21:30 CET"
function jobTitle(j) {
  return words(j.operation) + (j.item ? " of " + j.item : "") + ", " + when(j.start);
}

function toast(msg) {
  const t = document.getElementById("toast");
  t.textContent = msg;
  t.classList.add("show");
  setTimeout(() => t.classList.remove("show"), 4000);
}

// an error in words: the field it names is marked on the form, not
// appended to the message
function errorBox(e, form) {
  const field = e.body && e.body.field;
  if (field && form) {
    const input = form.querySelector(`[data-field="${field}"]`) || form.querySelector(`[data-field="${field.split(".")[0]}"]`);
    if (input) { input.setAttribute("aria-invalid", "true"); input.focus(); }
  }
  return h("p", { class: "error", role: "alert" }, e.message || String(e));
}

function page(title, ...content) {
  const main = document.getElementById("main");
  main.replaceChildren(h("h1", {}, title), ...content.flat(Infinity).filter((c) => c !== "" && c !== null && c !== undefined && c !== false));
  document.title = title + " · boveda";
  main.focus({ preventScroll: true });
}

// a table; `empty` is what an empty one says instead (with its next step)
function table(headers, rows, narrow, empty) {
  const hide = (i) => (narrow || []).includes(i) ? "hide-narrow" : undefined;
  if (!rows.length) return h("div", { class: "empty" }, empty || "Nothing here yet.");
  return h("div", { class: "scroll", tabindex: 0, role: "region", "aria-label": "Table, scrolls sideways" }, h("table", {},
    h("thead", {}, h("tr", {}, headers.map((x, i) => h("th", { scope: "col", class: hide(i) }, x)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c, i) => h("td", { class: hide(i) }, c)))))));
}

function closeStreams() {
  for (const s of state.streams) s.close();
  state.streams = [];
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
}

// the role of this token on a vault, and what it may do there
function roleOf(vault) {
  const mine = state.vaults.find((v) => v.name === vault);
  return mine ? mine.role : "Reader";
}
const RANK = { SecurityAdmin: 0, Reader: 1, Operator: 2, Contributor: 3 };
// `need`: "Operate" (back up, restore, stop jobs) or "Manage" (everything else)
function can(vault, need) {
  const r = RANK[roleOf(vault)] || 0;
  return need === "Operate" ? r >= 2 : need === "Manage" ? r >= 3 : r >= 1;
}
function noRight(vault, what) {
  return h("p", { class: "muted no-right" }, "Your role (" + roleOf(vault) + ") cannot " + what + ".");
}

// a list that keeps itself current: `render` runs now and every `secs`
// while the page is shown; the page says when it was read
function keepFresh(into, render, secs) {
  const shown = state.shown;
  const stamp = h("p", { class: "muted fresh", "aria-live": "off" });
  const run = async () => {
    if (shown !== state.shown) return;
    try {
      await render();
      stamp.textContent = "Updated " + new Date().toLocaleTimeString(undefined, { timeZoneName: "short" }) + "; refreshes every " + secs + " s.";
    } catch (e) {
      if (e.status !== 401) stamp.textContent = "Could not refresh: " + e.message;
    }
  };
  // beside the list, not in it: the list is drawn afresh each time
  if (into.parentNode) into.before(stamp); else into.append(stamp);
  state.timers.push(setInterval(run, secs * 1000));
  return run();
}

// for a page that does not refresh itself (it holds forms being filled
// in): when it was read, and a way to read it again
function readAt() {
  return h("p", { class: "muted fresh" }, "Read " + new Date().toLocaleTimeString(undefined, { timeZoneName: "short" }) + ". ",
    h("button", { type: "button", class: "link", onclick: () => route() }, "Read again"));
}

// --- job progress ----------------------------------------------------------

const running = (j) => j.state === "Queued" || j.state === "InProgress" || j.state === "Cancelling";

// how far a job is, 0..1, when its totals say (null: unknown)
function fraction(j) {
  const p = j.progress || {};
  if (!running(j)) return 1;
  if (p.bytes_total) return Math.min(0.99, Math.max(p.bytes_done || 0, p.bytes_read || 0, p.bytes_written || 0) / p.bytes_total);
  if (p.files_total) return Math.min(0.99, p.files / p.files_total);
  return null;
}

// seconds left, from the rate so far
function eta(j) {
  const f = fraction(j);
  const secs = jobSeconds(j);
  if (f === null || f <= 0.01 || secs < 2) return null;
  return secs * (1 - f) / f;
}

function progressBar(j) {
  const f = fraction(j);
  const attrs = { "aria-label": "Progress of " + jobTitle(j), class: "bar-" + j.state };
  if (f !== null) { attrs.max = 1; attrs.value = f.toFixed(3); }
  let label;
  if (!running(j)) label = "";
  else if (f === null) label = bytes(j.progress.bytes_read) + " read";
  else {
    const left = eta(j);
    label = Math.floor(f * 100) + "%" + (j.progress.totals_estimated ? " (estimated)" : "") + (left !== null ? ", about " + duration(left) + " left" : "");
  }
  return h("span", { class: "progress", "data-job": j.id }, h("progress", attrs), " ", h("span", {}, label));
}

// what a job has done, in lines: phase, files and bytes against totals
function progressLines(j) {
  const p = j.progress || {};
  const of = (n, total, fmt) => fmt(n) + (total !== null && total !== undefined ? " of " + (p.totals_estimated && running(j) ? "about " : "") + fmt(total) : "");
  const num = (n) => String(n);
  const rows = running(j) ? [["Phase", p.phase || "starting"]] : [];
  rows.push(["Files", of(p.files, p.files_total, num)]);
  if (j.operation === "Backup" || j.operation === "OfflineSeed") {
    rows.push(["Data processed", of(p.bytes_done || p.bytes_read, p.bytes_total, bytes)]);
    rows.push(["Read from the source", bytes(p.bytes_read)]);
    rows.push(["Stored in the vault (new, compressed)", running(j) ? "known at the end" : bytes(p.bytes_written)]);
  } else if (j.operation === "Restore") {
    rows.push(["Written", of(p.bytes_written, p.bytes_total, bytes)]);
  } else {
    rows.push(["Read", bytes(p.bytes_read)], ["Written", bytes(p.bytes_written)]);
  }
  if (running(j) && eta(j) !== null) rows.push(["Time left", "about " + duration(eta(j))]);
  rows.push(["Duration", duration(jobSeconds(j)) + (running(j) ? " so far" : "")]);
  return rows;
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

// --- charts ----------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";
function svgEl(tag, attrs, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

// a round number at or above `v` (1, 2 or 5 times a power of ten; for
// bytes, of the unit the value is written in), so the scale reads well
function niceCeil(v, inBytes) {
  let unit = 1;
  if (inBytes) while (v / unit >= 1024) unit *= 1024;
  const x = v / unit;
  const p = Math.pow(10, Math.floor(Math.log10(x)));
  const m = x / p;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p * unit;
}

// a bar chart with a scale: `series(d)` gives [[value, class], ...]
// stacked; `fmt` writes values with their unit
function barChart(days, series, fmt, label, legend) {
  const w = 640, hgt = 160, left = 70, bottom = 26, top = 10;
  const total = (d) => series(d).reduce((a, [v]) => a + v, 0);
  const max = niceCeil(Math.max(1, ...days.map(total)), fmt === bytes);
  const bw = (w - left) / days.length;
  const svg = svgEl("svg", { viewBox: `0 0 ${w} ${hgt + bottom + top}`, class: "chart", role: "img", "aria-label": label });
  for (const f of [0, 0.5, 1]) {
    const y = top + hgt - f * hgt;
    svg.append(svgEl("line", { x1: left, x2: w, y1: y, y2: y, class: "grid" }));
    svg.append(svgEl("text", { x: left - 6, y: y + 4, "text-anchor": "end", class: "axis" }, fmt(max * f)));
  }
  days.forEach((d, i) => {
    let base = 0;
    for (const [v, c] of series(d)) {
      const bh = (v / max) * hgt;
      const r = svgEl("rect", { x: left + i * bw + 1, y: top + hgt - bh - (base / max) * hgt, width: Math.max(1, bw - 2), height: bh, class: c });
      r.append(svgEl("title", {}, d.date + ": " + fmt(v)));
      svg.append(r);
      base += v;
    }
    const last = days.length - 1;
    if ((i % 7 === 0 && last - i >= 4) || i === last) {
      svg.append(svgEl("text", { x: left + i * bw + bw / 2, y: top + hgt + 18, "text-anchor": "middle", class: "axis" }, d.date.slice(5)));
    }
  });
  return h("figure", { class: "chart" }, svg, h("figcaption", { class: "muted" }, legend));
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
    if (!r.ok) { form.querySelectorAll(".error").forEach((e) => e.remove()); form.prepend(errorBox(new ApiError(r.status, data))); return; }
    state.csrf = data.csrf;
    sessionStorage.setItem("csrf", data.csrf);
    state.vaults = data.vaults;
    location.hash = "#/";
    route();
  } },
    h("label", { for: "token" }, "Access token", input),
    h("p", { class: "muted" }, "A token from `boveda token create` (or Vault properties → Access tokens); the portal keeps a session cookie, never the token."),
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
  const guard = roleOf(vault) === "SecurityAdmin";
  const links = guard ? [["/security", "Security"]] : [["", "Dashboard"], ["/items", "Items"], ["/configure", "Configure backup"],
    ["/jobs", "Jobs"], ["/alerts", "Alerts"], ["/reports", "Reports"], ["/policies", "Policies"], ["/servers", "Protected servers"],
    ["/imports", "Import jobs"], ["/properties", "Properties"], ["/security", "Security"]];
  document.getElementById("nav").replaceChildren(
    h("a", { href: "#/center", class: "center-link" }, "Backup center"),
    h("span", { class: "vault-name" }, vault + ":"),
    ...links.map(([p, label]) => h("a", { href: link(vault, p), "aria-current": current === p ? "page" : undefined }, label)));
  document.getElementById("logout").hidden = false;
}

// --- routing ---------------------------------------------------------------

async function route() {
  closeStreams();
  state.shown++;
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query || "");
  try {
    if (!state.csrf) {
      const s = await fetch("/api/v1/session", { credentials: "same-origin" });
      if (!s.ok) { showLogin(); return; }
      const data = await s.json();
      state.csrf = data.csrf;
      sessionStorage.setItem("csrf", data.csrf);
    }
    if (!state.vaults.length) state.vaults = await api("GET", "/vaults");
    if (parts[0] === "center") return await centerPage();
    if (parts[0] !== "v" || !parts[1]) return await vaultsPage();
    const [, vault, section, name, sub, point] = parts;
    if (section === "security") return await securityPage(vault);
    // the guard's token sees its requests, nothing else of the vault
    if (roleOf(vault) === "SecurityAdmin") return await securityPage(vault);
    if (!section) return await dashboardPage(vault);
    if (section === "items" && name && sub === "restore" && point) return await restorePage(vault, name, point);
    if (section === "items" && name) return await itemPage(vault, name);
    if (section === "items") return await itemsPage(vault);
    if (section === "configure") return await configurePage(vault, params);
    if (section === "jobs" && name) return await jobPage(vault, name);
    if (section === "jobs") return await jobsPage(vault, params);
    if (section === "alerts") return await alertsPage(vault);
    if (section === "reports") return await reportsPage(vault, params);
    if (section === "policies") return await policiesPage(vault, name);
    if (section === "imports") return await importsPage(vault);
    if (section === "servers") return await serversPage(vault);
    if (section === "properties") return await propertiesPage(vault);
    page("Not found", h("p", {}, "No such page. ", h("a", { href: link(vault) }, "Go to the vault's dashboard.")));
  } catch (e) {
    if (e.status !== 401) page("Something went wrong", errorBox(e), h("p", {}, h("a", { href: "#/" }, "Back to the vaults")));
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
