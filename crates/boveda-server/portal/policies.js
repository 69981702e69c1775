// boveda's portal: backup policies. The list, one policy's form (create or
// change: daily, weekly or every few hours, in a named time zone, with
// daily/weekly/monthly/yearly retention), what a change does to existing
// points before it is applied, and delete. Uses app.js's helpers.
"use strict";

const DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
const MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];

function describePolicy(p) {
  const s = p.schedule, r = p.retention, parts = [];
  if (r.daily_days) parts.push("every point " + r.daily_days + " days");
  if (r.weekly) parts.push(r.weekly.days.map(words).join("/") + "'s " + r.weekly.weeks + " weeks");
  if (r.monthly) parts.push("monthly (" + r.monthly.on + ") " + r.monthly.months + " months");
  if (r.yearly) parts.push("yearly (" + MONTHS[r.yearly.month - 1] + ", " + r.yearly.on + ") " + r.yearly.years + " years");
  let when;
  if (s.frequency === "hourly" && s.window) when = "every " + s.window.every_hours + " h from " + s.window.start + " for " + s.window.hours + " h (" + s.times.join(", ") + ")";
  else if (s.frequency === "weekly") when = "weekly on " + s.days.map(words).join(", ") + " at " + s.times.join(", ");
  else when = "daily at " + s.times.join(", ");
  return when + " " + s.time_zone + "; keep " + parts.join(", ");
}

// a policy's form; `p` to change one (its name fixed), none to create
function policyForm(vault, p, onDone) {
  const s = p ? p.schedule : { frequency: "daily", times: ["02:00"], days: [], time_zone: ZONE };
  const r = p ? p.retention : { daily_days: 30 };
  const num = (id, value, min, max) => h("input", { id, type: "number", min, max, value: value || 0, "data-field": id.replace("policy-", "") });
  const name = h("input", { id: "policy-name", required: true, value: p ? p.name : "", readonly: p ? true : undefined,
    pattern: "[A-Za-z0-9][A-Za-z0-9._-]{0,99}", title: "1 to 100 letters, digits, hyphens, underscores and dots, starting with a letter or digit", "data-field": "name" });
  const frequency = h("select", { id: "policy-frequency", "data-field": "schedule" },
    [["daily", "Daily"], ["weekly", "Weekly"], ["hourly", "Every few hours (enhanced)"]].map(([v, l]) => h("option", { value: v, selected: s.frequency === v }, l)));
  const time = h("input", { id: "policy-time", type: "time", value: s.frequency !== "hourly" ? s.times[0] : "02:00", "data-field": "schedule.times" });
  const days = DAYS.map((d) => h("label", { class: "inline" }, h("input", { type: "checkbox", value: d, checked: s.days.includes(d) }), words(d)));
  const every = h("select", { id: "policy-every", "data-field": "schedule.window.every_hours" }, [4, 6, 8, 12].map((n) =>
    h("option", { value: n, selected: s.window && s.window.every_hours === n }, "every " + n + " hours")));
  const start = h("input", { id: "policy-window-start", type: "time", value: s.window ? s.window.start : "08:00", "data-field": "schedule.window.start" });
  const hours = num("policy-window-hours", s.window ? s.window.hours : 12, 4, 24);
  const zones = Intl.supportedValuesOf ? Intl.supportedValuesOf("timeZone") : [];
  const zone = h("input", { id: "policy-zone", value: s.time_zone, list: "zones", required: true, "data-field": "schedule.time_zone" });
  const daily = num("policy-daily", r.daily_days, 0, 9999);
  const weekly = num("policy-weekly", r.weekly && r.weekly.weeks, 0, 5163);
  const weeklyOn = h("select", { id: "policy-weekly-on" }, DAYS.map((d) => h("option", { value: d, selected: r.weekly ? r.weekly.days[0] === d : d === "sunday" }, words(d))));
  const monthly = num("policy-monthly", r.monthly && r.monthly.months, 0, 1188);
  const dayChoices = ["last", "1", "15", "28", "first-sun", "first-mon", "last-sun", "last-fri"];
  const monthlyOn = h("select", { id: "policy-monthly-on" }, dayChoices.map((d) => h("option", { value: d, selected: r.monthly ? r.monthly.on === d : d === "last" }, d)));
  const yearly = num("policy-yearly", r.yearly && r.yearly.years, 0, 99);
  const yearlyMonth = h("select", { id: "policy-yearly-month" }, MONTHS.map((m, i) => h("option", { value: i + 1, selected: r.yearly ? r.yearly.month === i + 1 : i === 11 }, m)));
  const yearlyOn = h("select", { id: "policy-yearly-on" }, dayChoices.map((d) => h("option", { value: d, selected: r.yearly ? r.yearly.on === d : d === "last" }, d)));
  const fixed = h("div", {}, h("label", { for: "policy-time" }, "Backup at", time),
    h("fieldset", { class: "weekly-days" }, h("legend", {}, "On (weekly)"), days));
  const windowed = h("div", {}, h("label", { for: "policy-every" }, "Back up", every), h("label", { for: "policy-window-start" }, "From", start),
    h("label", { for: "policy-window-hours" }, "For, hours (the window; 4 to 24)", hours));
  const shape = () => {
    fixed.hidden = frequency.value === "hourly";
    windowed.hidden = frequency.value !== "hourly";
    fixed.querySelector(".weekly-days").hidden = frequency.value !== "weekly";
    daily.closest("label").hidden = frequency.value === "weekly";
  };
  frequency.addEventListener("change", shape);
  const out = h("div", { class: "policy-out" });
  const body = () => {
    const b = { name: name.value, frequency: frequency.value, time_zone: zone.value, drop_rules: [] };
    if (frequency.value === "hourly") { b.every_hours = Number(every.value); b.window_start = start.value; b.window_hours = Number(hours.value); }
    else b.times = [time.value];
    if (frequency.value === "weekly") b.days = days.map((l) => l.querySelector("input")).filter((c) => c.checked).map((c) => c.value);
    const rule = (n, key, extra) => { if (Number(n.value)) Object.assign(b, { [key]: Number(n.value) }, extra); };
    if (frequency.value !== "weekly") rule(daily, "daily_keep", {});
    rule(weekly, "weekly_keep", { weekly_on: [weeklyOn.value] });
    rule(monthly, "monthly_keep", { monthly_on: monthlyOn.value });
    rule(yearly, "yearly_keep", { yearly_month: Number(yearlyMonth.value), yearly_on: yearlyOn.value });
    if (p) {
      if (p.retention.daily_days && (!Number(daily.value) || frequency.value === "weekly")) b.drop_rules.push("daily");
      for (const [rule2, input] of [["weekly", weekly], ["monthly", monthly], ["yearly", yearly]]) if (p.retention[rule2] && !Number(input.value)) b.drop_rules.push(rule2);
    }
    return b;
  };
  const form = h("form", { class: "policy-form", onsubmit: async (ev) => {
    ev.preventDefault();
    form.querySelectorAll("[aria-invalid]").forEach((e) => e.removeAttribute("aria-invalid"));
    try { out.replaceChildren(await onDone(body(), form, out) || ""); } catch (e) { out.replaceChildren(errorBox(e, form)); }
  } },
    h("label", { for: "policy-name" }, "Policy name", name),
    h("label", { for: "policy-frequency" }, "Schedule", frequency), fixed, windowed,
    h("label", { for: "policy-zone" }, "Time zone of the schedule (IANA, such as Europe/Madrid)", zone,
      h("datalist", { id: "zones" }, zones.map((z) => h("option", { value: z })))),
    h("fieldset", {}, h("legend", {}, "Keep (0: not kept by this rule)"),
      h("label", { for: "policy-daily" }, "Every point, days", daily),
      h("label", { for: "policy-weekly" }, "Weekly points, weeks", weekly), h("label", { for: "policy-weekly-on" }, "The point of", weeklyOn),
      h("label", { for: "policy-monthly" }, "Monthly points, months", monthly), h("label", { for: "policy-monthly-on" }, "The point of day", monthlyOn),
      h("label", { for: "policy-yearly" }, "Yearly points, years", yearly), h("label", { for: "policy-yearly-month" }, "In", yearlyMonth),
      h("label", { for: "policy-yearly-on" }, "On day", yearlyOn)),
    out, h("div", { class: "actions" }, h("button", { type: "submit", id: p ? "policy-plan" : "policy-create" }, p ? "Review the change" : "Create policy")));
  shape();
  return form;
}

// what a change does to existing points, then Apply
function changePlan(vault, plan, body) {
  const when2 = (t) => t ? when(t) : "never";
  const rows = [...plan.deleted.map((c) => [c.item, when(c.time), when2(c.before), "expires now: the next prune deletes it"]),
    ...plan.changed.map((c) => [c.item, when(c.time), when2(c.before), when2(c.after)])];
  const out = h("div", { id: "policy-apply-out" });
  return h("div", { id: "policy-plan-result" },
    h("p", {}, rows.length ? rows.length + " recovery point(s) change:" : "No existing point changes: only future backups follow the new rules."),
    rows.length ? table(["Item", "Point", "Expired", "Expires"], rows) : "",
    h("div", { class: "actions" }, h("button", { type: "button", id: "policy-apply", onclick: async () => {
      try {
        await api("PATCH", V(vault) + "/policies/" + enc(plan.policy.name), body);
        toast("Policy " + plan.policy.name + " changed");
        location.hash = link(vault, "/policies");
      } catch (e) { out.replaceChildren(errorBox(e)); }
    } }, "Apply the change")), out);
}

async function policiesPage(vault, name) {
  vaultNav(vault, "/policies");
  const manage = can(vault, "Manage");
  const [list, items] = await Promise.all([api("GET", V(vault) + "/policies"), api("GET", V(vault) + "/items")]);
  const users = (p) => items.filter((i) => i.policy === p.name).map((i) => i.name);
  if (name) {
    const p = list.find((x) => x.name === name);
    if (!p) { page("Policy not found", h("p", {}, "No policy " + name + ". ", h("a", { href: link(vault, "/policies") }, "All policies"))); return; }
    const out = h("div");
    const del = h("button", { type: "button", class: "danger", id: "policy-delete", onclick: async () => {
      if (!confirm("Delete policy " + p.name + "?")) return;
      try { await api("DELETE", V(vault) + "/policies/" + enc(p.name)); toast("Policy " + p.name + " deleted"); location.hash = link(vault, "/policies"); }
      catch (e) { out.replaceChildren(errorBox(e)); }
    } }, "Delete policy");
    page("Policy " + p.name, readAt(),
      h("p", {}, describePolicy(p)),
      h("p", {}, "Protects: ", users(p).length ? users(p).map((i, k) => [k ? ", " : "", h("a", { href: link(vault, "/items/" + enc(i)) }, i)]) : "no item"),
      manage ? [h("h2", {}, "Change it"),
        policyForm(vault, p, async (body) => changePlan(vault, await api("PATCH", V(vault) + "/policies/" + enc(p.name) + "?dry_run=true", body), body)),
        h("h2", {}, "Delete it"),
        users(p).length ? h("p", { class: "muted" }, "A policy that protects items cannot be deleted: change their policy or stop their protection first.") : del, out]
        : noRight(vault, "change policies"));
    return;
  }
  page("Policies", readAt(),
    table(["Policy", "Schedule and retention", "Protects"], list.map((p) => [
      h("a", { href: link(vault, "/policies/" + enc(p.name)) }, p.name), describePolicy(p), users(p).join(", ") || "-"]), [2],
      "No policy yet."),
    h("h2", {}, "Create a policy"),
    manage ? policyForm(vault, null, async (body) => { const p = await api("POST", V(vault) + "/policies", body); toast("Created policy " + p.name); await route(); })
      : noRight(vault, "create policies"));
}
