// boveda's portal: jobs (filtered, live), one job with its progress
// against its totals, alerts with their state, and backup reports. Uses
// app.js's helpers.
"use strict";

const OPERATIONS = ["Backup", "Restore", "ConfigureBackup", "DisableBackup", "DeleteBackupData", "Undelete", "Prune", "Verify",
  "Replication", "OfflineSeed", "UpdateKeys", "Repair", "HostContact", "GuardRequest", "GuardApproval", "GuardUse", "VerifyPoint"];
const STATES = ["Queued", "InProgress", "Cancelling", "Completed", "CompletedWithWarnings", "Failed", "Cancelled"];

// the jobs page's filters, kept in the URL so Back and a shared link keep them
function jobFilters(vault, params, items, apply) {
  const select = (id, label, options, value) => {
    const s = h("select", { id, onchange: apply }, h("option", { value: "" }, "any"),
      options.map(([v, l]) => h("option", { value: v, selected: v === value }, l)));
    return [s, h("label", { for: id }, label, s)];
  };
  const [op, opL] = select("filter-operation", "Operation", OPERATIONS.map((o) => [o, words(o)]), params.get("operation") || "");
  const [st, stL] = select("filter-state", "State", STATES.map((s) => [s, words(s)]), params.get("state") || "");
  const [it, itL] = select("filter-item", "Item", items.map((i) => [i.name, i.name]), params.get("item") || "");
  const wantedHost = params.get("host") || "";
  const [on, onL] = select("filter-host", "Ran on", wantedHost ? [[wantedHost, wantedHost]] : [], wantedHost);
  // the machines seen in the jobs: this server and registered hosts
  const setHosts = (hosts) => {
    const keep = on.value;
    on.replaceChildren(h("option", { value: "" }, "any"), ...hosts.map((x) => h("option", { value: x, selected: x === keep }, x)));
  };
  const since = h("input", { type: "date", id: "filter-since", value: params.get("since") || "", onchange: apply });
  const until = h("input", { type: "date", id: "filter-until", value: params.get("until") || "", onchange: apply });
  const values = () => ({ operation: op.value, state: st.value, item: it.value, host: on.value, since: since.value, until: until.value });
  const form = h("form", { class: "filters", onsubmit: (ev) => { ev.preventDefault(); apply(); } },
    opL, stL, itL, onL, h("label", { for: "filter-since" }, "From", since), h("label", { for: "filter-until" }, "To (inclusive)", until));
  return [form, values, setHosts];
}

function matches(j, f) {
  if (f.operation && j.operation !== f.operation) return false;
  if (f.state && j.state !== f.state) return false;
  if (f.item && j.item !== f.item) return false;
  if (f.host && j.host !== f.host) return false;
  const day = new Date(j.start);
  if (f.since && day < new Date(f.since + "T00:00:00")) return false;
  if (f.until && day >= new Date(new Date(f.until + "T00:00:00").getTime() + 86400000)) return false;
  return true;
}

async function jobsPage(vault, params) {
  vaultNav(vault, "/jobs");
  const items = await api("GET", V(vault) + "/items");
  const body = h("div");
  const apply = () => {
    const q = new URLSearchParams(Object.entries(values()).filter(([, v]) => v));
    history.replaceState(null, "", link(vault, "/jobs" + (q.toString() ? "?" + q : "")));
    void draw();
  };
  const [filters, values, setHosts] = jobFilters(vault, params, items, apply);
  let all = [];
  const draw = async () => {
    const f = values();
    const jobs = all.filter((j) => matches(j, f));
    const stop = (j) => running(j) && can(vault, "Operate") ? h("button", { type: "button", class: "danger", onclick: async () => {
      try { await api("POST", V(vault) + "/jobs/" + j.id + "/stop"); toast("Stop requested"); } catch (e) { toast(e.message); }
    } }, "Stop") : "";
    const pointOf = (j) => {
      if (!j.point || !j.item) return "";
      const text = j.operation === "Backup" ? "Restore from it" : "Its point";
      return h("a", { href: link(vault, "/items/" + enc(j.item) + "/restore/" + j.point),
        "aria-label": text + ": the point " + jobTitle(j) + (j.operation === "Backup" ? " made" : " used") }, text);
    };
    body.replaceChildren(
      h("p", { class: "muted", id: "jobs-count" }, jobs.length + " of " + all.length + " jobs" + (jobs.length > 200 ? "; the newest 200 are shown" : "") + "."),
      table(["Job", "State", "Progress", "Started", "Duration", "Ran on", "", ""], jobs.slice(0, 200).map((j) => [
        h("a", { href: link(vault, "/jobs/" + j.id) }, jobTitle(j)), stateCell(j.state), progressBar(j), timeEl(j.start),
        duration(jobSeconds(j)), j.host, pointOf(j), stop(j)]), [3, 5, 6],
        all.length ? "No job matches these filters." : h("p", {}, "No job yet. Jobs appear when something is backed up, restored or changed.")));
  };
  page("Jobs", filters, body);
  await keepFresh(body, async () => {
    all = (await api("GET", V(vault) + "/jobs")).reverse();
    setHosts([...new Set(all.map((j) => j.host))].sort());
    await draw();
  }, 5);
}

async function jobPage(vault, id) {
  vaultNav(vault, "/jobs");
  const shown = state.shown;
  const job = await api("GET", V(vault) + "/jobs/" + enc(id));
  // the user moved on meanwhile: nothing drawn, nothing followed
  if (shown !== state.shown) return;
  const body = h("div");
  const render = (j) => {
    document.querySelector("h1").textContent = jobTitle(j);
    body.replaceChildren(
      h("p", {}, "State: ", h("strong", { id: "job-state" }, words(j.state))),
      h("p", {}, progressBar(j)),
      running(j) && can(vault, "Operate") ? h("button", { type: "button", class: "danger", onclick: async () => {
        try { await api("POST", V(vault) + "/jobs/" + j.id + "/stop"); toast("Stop requested"); } catch (e) { toast(e.message); }
      } }, "Stop") : "",
      j.error ? h("p", { class: "error", role: "alert", id: "job-error" }, j.error) : "",
      h("div", { id: "job-details" }, table(["", ""], [
        ["Operation", words(j.operation)],
        ["Item", j.item ? h("a", { href: link(vault, "/items/" + enc(j.item)) }, j.item) : "-"],
        ["Started", timeEl(j.start)], ["Ended", timeEl(j.end)],
        ...progressLines(j),
        ["What it did", j.details.length ? h("ul", {}, j.details.map((d) => h("li", {}, d))) : "-"],
        ["Warnings", j.warnings.length ? h("ul", {}, j.warnings.map((d) => h("li", {}, d))) : "-"],
        ["Recovery point", j.point && j.item ? h("a", { href: link(vault, "/items/" + enc(j.item) + "/restore/" + j.point) }, "the point this job made or used") : "-"]])));
  };
  page(jobTitle(job), body);
  render(job);
  if (running(job)) follow(vault, id, (j) => render(j));
}

async function alertsPage(vault) {
  vaultNav(vault, "/alerts");
  const body = h("div");
  page("Alerts", h("p", { class: "muted" }, "An alert is Active until a later job of its item succeeds (Resolved) or someone acknowledges it."), body);
  await keepFresh(body, async () => {
    const alerts = await api("GET", V(vault) + "/alerts");
    const ack = (a) => a.state === "Active" && can(vault, "Operate") ? h("button", { type: "button", class: "secondary", onclick: async () => {
      try { await api("POST", V(vault) + "/alerts/" + a.id + "/acknowledge"); toast("Alert acknowledged"); await route(); } catch (e) { toast(e.message); }
    } }, "Acknowledge") : "";
    body.replaceChildren(table(["Time", "State", "Severity", "Item", "What happened", "What to do", ""], alerts.map((a) => [
      timeEl(a.time), h("span", { class: "alert-" + a.state }, a.state + (a.resolved ? " " + when(a.resolved) : a.acknowledged ? " by " + a.acknowledged.by : "")),
      h("span", { class: "severity-" + a.severity }, a.severity), a.item ? h("a", { href: link(vault, "/items/" + enc(a.item)) }, a.item) : "-",
      h("span", {}, a.reason, " ", h("a", { href: link(vault, "/jobs/" + a.job) }, "(the job)")), a.action, ack(a)]), [2, 5],
      h("p", {}, "No alert. Failed backups and restores, deleted backup data and suspicious backups raise one here (and by e-mail or webhook: Properties).")));
  }, 15);
}

async function reportsPage(vault, params) {
  vaultNav(vault, "/reports");
  const days = Number(params.get("days") || 30);
  const r = await api("GET", V(vault) + "/reports?days=" + days);
  const choose = h("select", { id: "report-days", onchange: (ev) => { location.hash = link(vault, "/reports?days=" + ev.target.value); } },
    [7, 30, 90].map((d) => h("option", { value: d, selected: d === days }, "last " + d + " days")));
  const pct = (x) => x === null || x === undefined ? "-" : Math.round(x * 100) + "%";
  const trend = (i) => {
    const pts = i.durations.filter((d) => d.seconds !== null);
    if (!pts.length) return "-";
    const max = Math.max(1, ...pts.map((d) => d.seconds));
    const svg = svgEl("svg", { viewBox: "0 0 120 30", class: "spark", role: "img", "aria-label": "Duration per day, longest " + duration(max) });
    const xs = (k) => 2 + (k / Math.max(1, i.durations.length - 1)) * 116;
    const line = i.durations.map((d, k) => d.seconds === null ? null : xs(k).toFixed(1) + "," + (28 - (d.seconds / max) * 26).toFixed(1)).filter(Boolean);
    svg.append(svgEl("polyline", { points: line.join(" "), class: "spark" }));
    return h("span", {}, svg, " up to " + duration(max));
  };
  page("Backup reports", readAt(),
    h("form", { class: "filters" }, h("label", { for: "report-days" }, "Period", choose),
      h("p", {}, h("a", { id: "report-csv", href: "/api/v1" + V(vault) + "/reports?days=" + days + "&format=csv", download: "boveda-" + vault + "-" + days + "d.csv" }, "Export as CSV"))),
    h("p", { class: "muted" }, "From " + when(r.from) + " to " + when(r.to) + ". Stored growth: what the backups of the period added to the store (compressed, new data), for the points kept now."),
    table(["Item", "Backups", "Succeeded", "Failed", "Success rate", "Average duration", "Duration trend", "Stored growth", "Stored now"], r.items.map((i) => [
      h("a", { href: link(vault, "/items/" + enc(i.item)) }, i.item), String(i.backups), String(i.succeeded), String(i.failed), pct(i.success_rate),
      duration(i.average_seconds), trend(i), bytes(i.stored_added_bytes), bytes(i.stored_bytes)]), [2, 6],
      h("p", {}, "No item yet: reports count the backups of each protected item.")));
}
