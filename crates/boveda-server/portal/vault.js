// boveda's portal: the vault as a whole. The vault list, the Backup center
// (items, jobs and alerts of every vault the token sees), a vault's
// dashboard, its properties (redundancy, soft delete, notifications by
// webhook and e-mail, access tokens, prices), its protected servers and
// its offline-seeding import jobs. Uses app.js's helpers.
"use strict";

async function vaultsPage() {
  document.getElementById("nav").replaceChildren(h("a", { href: "#/center" }, "Backup center"));
  document.getElementById("logout").hidden = false;
  const list = await api("GET", "/vaults");
  state.vaults = list;
  const manages = list.some((v) => v.role === "Contributor");
  const name = h("input", { name: "name", required: true, pattern: "[A-Za-z][A-Za-z0-9-]{1,49}", id: "vault-name", "data-field": "name" });
  const store = h("input", { name: "store", required: true, id: "vault-store", placeholder: "/srv/backups/vault1", "data-field": "store" });
  const redundancy = h("select", { name: "redundancy", id: "vault-redundancy", "data-field": "redundancy" },
    h("option", { value: "lrs" }, "Locally redundant (lrs)"), h("option", { value: "grs" }, "Geo-redundant (grs)"));
  const secondary = h("input", { name: "secondary", id: "vault-secondary", placeholder: "only for grs", "data-field": "secondary" });
  const out = h("div");
  const form = h("form", { onsubmit: async (ev) => {
    ev.preventDefault();
    const body = { name: name.value, store: store.value, redundancy: redundancy.value };
    if (secondary.value) body.secondary = secondary.value;
    try {
      await api("POST", "/vaults", body);
      state.vaults = await api("GET", "/vaults");
      location.hash = link(name.value);
    } catch (e) { out.replaceChildren(errorBox(e, form)); }
  } },
    h("label", { for: "vault-name" }, "Name (letters, digits and hyphens, 2-50, starting with a letter)", name),
    h("label", { for: "vault-store" }, "Store: a folder, s3://bucket/prefix or azblob://container/prefix", store),
    h("label", { for: "vault-redundancy" }, "Storage replication (chosen before anything is protected)", redundancy),
    h("label", { for: "vault-secondary" }, "Secondary store", secondary),
    out, h("div", { class: "actions" }, h("button", { type: "submit" }, "Create vault")));
  page("Vaults",
    table(["Vault", "Your role", "Items you see"], list.map((v) => [
      h("a", { href: link(v.name) }, v.name), v.role, v.items.length ? v.items.join(", ") : "all"]), [],
      "This token sees no vault. Ask the vault's admin for a token of the vault."),
    h("h2", {}, "Create a vault"),
    manages ? form : h("p", { class: "muted" }, "Creating a vault needs the Contributor role on a vault this token sees."));
}

// every vault the token sees, in one view: items, jobs, alerts
async function centerPage() {
  document.getElementById("nav").replaceChildren(h("a", { href: "#/", "aria-current": undefined }, "Vaults"),
    h("a", { href: "#/center", "aria-current": "page" }, "Backup center"));
  document.getElementById("logout").hidden = false;
  const body = h("div");
  page("Backup center", h("p", { class: "muted" }, "Every vault this token sees, in one place."), body);
  await keepFresh(body, async () => {
    const c = await api("GET", "/center");
    const failing = c.items.filter((i) => i.health === "Critical" || i.health === "Warning").length;
    body.replaceChildren(
      h("div", { class: "tiles" },
        h("div", { class: "tile" }, h("div", {}, "Vaults"), h("div", { class: "big" }, String(c.vaults.length))),
        h("div", { class: "tile" }, h("div", {}, "Items"), h("div", { class: "big" }, String(c.items.length))),
        h("div", { class: "tile" }, h("div", {}, "Items needing attention"), h("div", { class: "big", id: "center-attention" }, String(failing))),
        h("div", { class: "tile" }, h("div", {}, "Active alerts"), h("div", { class: "big" }, String(c.alerts.filter((a) => a.state === "Active").length)))),
      c.unreadable.length ? h("p", { class: "error", role: "alert" }, "Not read: " + c.unreadable.join("; ")) : "",
      h("h2", {}, "Items"),
      table(["Vault", "Item", "Health", "Protection", "Last backup", "Points"], c.items.map((i) => [
        h("a", { href: link(i.vault) }, i.vault), h("a", { href: link(i.vault, "/items/" + enc(i.name)) }, i.name), healthCell(i),
        words(i.protection), h("span", {}, stateCell(i.last_backup_status), " ", timeEl(i.last_backup)), String(i.recovery_points)]), [3, 5],
        "No vault this token sees protects anything yet. Open a vault and choose Configure backup."),
      h("h2", {}, "Jobs, last 24 hours"),
      table(["Vault", "Job", "State", "Duration"], c.jobs.map((j) => [h("a", { href: link(j.vault) }, j.vault),
        h("a", { href: link(j.vault, "/jobs/" + j.id) }, jobTitle(j)), stateCell(j.state), duration(jobSeconds(j))]), [3],
        "No job ran in the last 24 hours."),
      h("h2", {}, "Alerts"),
      table(["Vault", "Time", "State", "Item", "Reason"], c.alerts.map((a) => [h("a", { href: link(a.vault, "/alerts") }, a.vault),
        timeEl(a.time), stateCell(a.state), a.item || "-", a.reason]), [1], "No alert in any vault."));
  }, 15);
}

async function dashboardPage(vault) {
  vaultNav(vault, "");
  const body = h("div");
  page("Vault " + vault, body);
  await keepFresh(body, async () => {
    const [d, u] = await Promise.all([api("GET", V(vault) + "/dashboard"), can(vault, "Read") ? api("GET", V(vault) + "/usage").catch(() => null) : null]);
    const list = (obj, to) => {
      const entries = Object.entries(obj);
      return entries.length ? h("ul", {}, entries.map(([k, v]) => h("li", {}, to ? h("a", { href: to(k) }, words(k) + ": " + v) : words(k) + ": " + v)))
        : h("p", { class: "muted" }, "none");
    };
    const jobsOf = (day) => Object.values(day.jobs).reduce((a, b) => a + b, 0);
    const health = d.items_by_health || {};
    body.replaceChildren(
      h("div", { class: "tiles" },
        h("div", { class: "tile", id: "tile-health" }, h("div", {}, "Items by health"), list(health, () => link(vault, "/items")),
          !Object.keys(health).length ? h("p", {}, h("a", { href: link(vault, "/configure") }, "Configure backup")) : ""),
        h("div", { class: "tile", id: "tile-items" }, h("div", {}, "Items by protection state"), list(d.items_by_state),
          d.initial_backup_pending ? h("p", { class: "state-CompletedWithWarnings" }, d.initial_backup_pending + " with no recovery point yet") : ""),
        h("div", { class: "tile", id: "tile-jobs" }, h("div", {}, "Jobs, last 24 h"), list(d.jobs_last_24h, (s) => link(vault, "/jobs?state=" + s))),
        h("div", { class: "tile", id: "tile-alerts" }, h("div", {}, "Active alerts"),
          h("a", { class: "big", href: link(vault, "/alerts") }, String(d.active_alerts)),
          h("div", { class: "muted" }, d.alerts_last_24h + " raised in the last 24 h")),
        h("div", { class: "tile", id: "tile-storage" }, h("div", {}, "Stored in the vault"), h("div", { class: "big" }, bytes(d.stored_bytes)),
          h("div", {}, "about " + d.monthly_cost.toFixed(2) + " " + d.currency + " a month"),
          h("a", { href: "#cost" }, "How the cost is worked out"))),
      h("h2", {}, "Stored bytes, last 30 days"),
      barChart(d.days, (x) => [[x.stored_bytes, "bytes"]], bytes, "Stored bytes per day, last 30 days",
        "Bytes the points kept now had added to the store by the end of each day (UTC)."),
      h("h2", {}, "Jobs per day, last 30 days"),
      barChart(d.days, (x) => {
        const bad = (x.jobs.Failed || 0) + (x.jobs.Cancelled || 0);
        return [[jobsOf(x) - bad, "ok"], [bad, "bad"]];
      }, (n) => String(Math.round(n)), "Jobs per day, failed or stopped in red", "Green: completed; red: failed or stopped. Days in UTC."),
      u ? usageSection(vault, u) : "",
      d.warnings && d.warnings.length ? h("p", { class: "error" }, "Not counted: " + d.warnings.join("; ")) : "");
  }, 15);
}

// per-item usage and what the monthly cost is made of
function usageSection(vault, u) {
  const p = u.prices;
  return h("section", { id: "cost" },
    h("h2", {}, "Usage and cost by item"),
    table(["Item", "Front-end size", "Instances", "Points", "Stored", "Monthly cost"], u.items.map((i) => [
      h("a", { href: link(vault, "/items/" + enc(i.item)) }, i.item), bytes(i.front_end_bytes) + " (" + i.band + ")", String(i.instances),
      String(i.recovery_points), bytes(i.stored_bytes), i.monthly_cost.toFixed(2) + " " + p.currency]), [2, 3], "No item yet."),
    h("p", { class: "muted" }, "The cost is an estimate, as Azure Backup bills: each protected item is an instance (up to 50 GB front-end: " +
      p.small_instance + " " + p.currency + " a month; over 50 GB: " + p.instance_per_500_gb + " " + p.currency + " per started 500 GB), plus the bytes stored, per GB a month: " +
      p.lrs_per_gb + " " + p.currency + " locally redundant, " + p.grs_per_gb + " " + p.currency + " geo-redundant. An item's stored bytes count the chunks it shares with others; the vault total counts them once. " +
      "Prices come from prices.json in boveda's configuration folder, or these defaults."));
}

async function propertiesPage(vault) {
  vaultNav(vault, "/properties");
  const manage = can(vault, "Manage");
  const s = await api("GET", V(vault));
  const out = h("div", { id: "properties-out" });
  const save = async (body, form) => {
    try { await api("PATCH", V(vault) + "/settings", body); toast("Settings saved"); await route(); }
    catch (e) { out.replaceChildren(errorBox(e, form)); }
  };
  const webhook = h("input", { id: "webhook", type: "url", value: s.webhook || "", placeholder: "https://alerts.example/hook", "data-field": "webhook" });
  const webhookForm = h("form", { onsubmit: (ev) => { ev.preventDefault(); save({ webhook: webhook.value || null }, webhookForm); } },
    h("label", { for: "webhook" }, "Webhook: alerts are POSTed to it as JSON (empty: none)", webhook),
    h("div", { class: "actions" }, h("button", { type: "submit", disabled: !manage }, "Save webhook")));
  page("Vault properties", readAt(),
    table(["", ""], [["Store", s.store], ["Storage replication", s.redundancy === "grs" ? "Geo-redundant (grs), secondary " + (s.secondary || "-") : "Locally redundant (lrs)"],
      ["Soft delete", s.soft_delete_days + " days" + (s.soft_delete_always_on ? ", always on" : "")],
      ["Immutability", words(s.immutability) + (s.object_lock ? "; store lock " + s.object_lock : "")],
      ["Items", String(s.items)], ["Recovery points", String(s.recovery_points)], ["Stored", bytes(s.stored_bytes)],
      ["Created", timeEl(s.created)]]),
    h("p", {}, "Soft delete, immutability and the guard are changed on the ", h("a", { href: link(vault, "/security") }, "Security"), " page."),
    h("h2", {}, "Notifications"),
    manage ? [webhookForm, await emailSection(vault, manage)]
      : [h("p", { id: "webhook-state" }, "Webhook: " + (s.webhook ? "set" : "none") + "."), noRight(vault, "see or change the webhook and e-mail settings")],
    out,
    h("h2", {}, "Access tokens"), manage ? await tokensSection(vault) : noRight(vault, "see or create access tokens"),
    await pricesSection(vault));
}

// the price table the cost estimates use
async function pricesSection(vault) {
  const u = await api("GET", V(vault) + "/usage").catch(() => null);
  if (!u) return "";
  const p = u.prices;
  return h("section", { id: "prices" }, h("h2", {}, "Prices"),
    table(["", "A month, " + p.currency], [["A protected instance up to 50 GB", String(p.small_instance)],
      ["A protected instance over 50 GB, per started 500 GB", String(p.instance_per_500_gb)],
      ["A GB stored, locally redundant", String(p.lrs_per_gb)], ["A GB stored, geo-redundant", String(p.grs_per_gb)]]),
    h("p", { class: "muted" }, "Change them in prices.json in boveda's configuration folder on the server (docs/SERVER.md)."));
}

async function emailSection(vault, manage) {
  const cur = (await api("GET", V(vault) + "/notifications/email").catch(() => null)) || {};
  const f = (id, label, attrs) => {
    const input = h("input", Object.assign({ id, "data-field": id.replace("smtp-", "") }, attrs));
    return [input, h("label", { for: id }, label, input)];
  };
  const [server, serverL] = f("smtp-server", "SMTP server", { value: cur.server || "", placeholder: "smtp.example.com" });
  const [port, portL] = f("smtp-port", "Port", { type: "number", min: 1, max: 65535, value: cur.port || 587 });
  const security = h("select", { id: "smtp-security", "data-field": "security" }, ["starttls", "tls", "none"].map((v) =>
    h("option", { value: v, selected: (cur.security || "starttls") === v }, { starttls: "STARTTLS (port 587)", tls: "TLS from the start (port 465)", none: "None (a relay on this machine only)" }[v])));
  const [user, userL] = f("smtp-username", "User name (empty: no login)", { value: cur.username || "", autocomplete: "off" });
  const [pass, passL] = f("smtp-password", cur.password_set ? "Password (kept while server, port, security, user and CA stay the same; type to change)" : "Password", { type: "password", autocomplete: "new-password" });
  const [from, fromL] = f("smtp-from", "From", { value: cur.from || "", placeholder: "boveda@example.com" });
  const [to, toL] = f("smtp-to", "Recipients, comma-separated", { value: (cur.to || []).join(", "), placeholder: "ops@example.com" });
  const ca = h("textarea", { id: "smtp-ca", rows: 3, "data-field": "ca_certificate", placeholder: "-----BEGIN CERTIFICATE-----" }, cur.ca_certificate || "");
  const caL = h("label", { for: "smtp-ca" }, "Private CA certificate (PEM; only when the server's certificate is not from a public CA)", ca);
  const out = h("div", { id: "email-out" });
  const body = () => {
    const b = { server: server.value, port: Number(port.value), security: security.value, username: user.value || null, from: from.value,
      to: to.value.split(",").map((x) => x.trim()).filter(Boolean) };
    if (pass.value) b.password = pass.value;
    if (ca.value.trim()) b.ca_certificate = ca.value.trim() + "\n";
    return b;
  };
  const form = h("form", { onsubmit: async (ev) => {
    ev.preventDefault();
    try { await api("PUT", V(vault) + "/notifications/email", body()); out.replaceChildren(h("p", {}, "E-mail notifications saved: one message per alert.")); }
    catch (e) { out.replaceChildren(errorBox(e, form)); }
  } },
    h("p", { class: "muted" }, "Each alert is sent as one message saying what happened and what to do."),
    serverL, portL, h("label", { for: "smtp-security" }, "Connection security", security), userL, passL, fromL, toL, caL, out,
    h("div", { class: "actions" },
      h("button", { type: "submit", disabled: !manage }, "Save e-mail settings"),
      h("button", { type: "button", class: "secondary", disabled: !manage, onclick: async () => {
        try { const r = await api("POST", V(vault) + "/notifications/email/test"); out.replaceChildren(h("p", {}, "Test message sent to " + r.to.join(", ") + ".")); }
        catch (e) { out.replaceChildren(errorBox(e, form)); }
      } }, "Send a test message"),
      cur.server ? h("button", { type: "button", class: "secondary", disabled: !manage, onclick: async () => {
        try { await api("DELETE", V(vault) + "/notifications/email"); toast("E-mail notifications off"); await route(); }
        catch (e) { out.replaceChildren(errorBox(e, form)); }
      } }, "Stop e-mails") : ""));
  return h("section", {}, h("h3", {}, "E-mail"), form);
}

async function tokensSection(vault) {
  const out = h("div", { id: "token-out" });
  const role = h("select", { id: "token-role", "data-field": "role" }, ["Reader", "Operator", "Contributor", "SecurityAdmin"].map((r) => h("option", { value: r }, r)));
  const items = h("input", { id: "token-items", placeholder: "all items", "data-field": "items" });
  const expires = h("input", { id: "token-expires", type: "date", "data-field": "expires" });
  const description = h("input", { id: "token-description", "data-field": "description" });
  const form = h("form", { onsubmit: async (ev) => {
    ev.preventDefault();
    const body = { role: role.value, description: description.value, items: items.value.split(",").map((x) => x.trim()).filter(Boolean) };
    if (expires.value) body.expires = expires.value;
    try {
      const t = await api("POST", V(vault) + "/tokens", body);
      out.replaceChildren(h("p", {}, "The new token, shown this once: copy it now."), h("pre", { id: "token-secret", tabindex: 0 }, t.secret));
      await refresh();
    } catch (e) { out.replaceChildren(errorBox(e, form)); }
  } },
    h("label", { for: "token-role" }, "Role (Reader sees; Operator also backs up and restores; Contributor manages; SecurityAdmin only approves for the guard)", role),
    h("label", { for: "token-items" }, "Only these items (comma-separated; empty: all)", items),
    h("label", { for: "token-expires" }, "Expires at the end of (empty: never)", expires),
    h("label", { for: "token-description" }, "What it is for", description),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Create token")));
  const list = h("div");
  const refresh = async () => {
    const all = await api("GET", V(vault) + "/tokens");
    list.replaceChildren(table(["Token", "Role", "Items", "Description", "Created", "Expires", "State", ""], all.map((t) => [
      t.id.slice(0, 8), t.role, t.items.length ? t.items.map((i) => i.name || i).join(", ") : "all", t.description || "-", timeEl(t.created),
      t.expires ? timeEl(t.expires) : "never", t.revoked ? "Revoked " + when(t.revoked) : "Valid",
      t.revoked ? "" : h("button", { type: "button", class: "danger", onclick: async () => {
        if (!confirm("Revoke the token " + (t.description || t.id.slice(0, 8)) + "? Whoever holds it is refused within seconds.")) return;
        try { await api("DELETE", V(vault) + "/tokens/" + t.id); toast("Token revoked"); await refresh(); } catch (e) { out.replaceChildren(errorBox(e)); }
      } }, "Revoke")]), [2, 4], "No token yet."));
  };
  await refresh();
  return h("section", {}, list, h("h3", {}, "Create a token"), form, out);
}

async function importsPage(vault) {
  vaultNav(vault, "/imports");
  const jobs = await api("GET", V(vault) + "/imports");
  page("Import jobs", table(["Import job", "State", "Estimated", "Drives", "Carrier", "Deadline"], jobs.map((j) => [
    j.name, words(j.state), bytes(j.estimated_bytes), (j.drives || []).map((d) => d.id + " (" + d.state + ")").join(", ") || "-",
    j.carrier ? j.carrier + (j.tracking ? " " + j.tracking : "") : "-", timeEl(j.deadline)]), [2, 4],
    h("p", {}, "No offline seeding. A huge first backup can travel on shipped drives: `boveda offline` (docs/OFFLINE-SEEDING.md).")));
}

// registered hosts: list, add (single-use credentials), unregister
async function serversPage(vault) {
  vaultNav(vault, "/servers");
  const manage = can(vault, "Manage");
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
        h("p", {}, "Credentials for one server, valid until " + when(creds.expires) + ", shown this once. " +
          "Copy them to the server and run, as root: boveda host register --credentials host.creds"),
        h("pre", { id: "credentials-text", tabindex: 0 }, text),
        h("p", {}, h("a", { href: file, download: "host.creds" }, "Download host.creds")));
    } catch (e) { out.replaceChildren(errorBox(e, add)); }
  } },
    h("label", { for: "server-address" }, "Address servers reach this vault's server at", address),
    h("label", { for: "server-hours" }, "Valid for, hours", hours),
    h("div", { class: "actions" }, h("button", { type: "submit", id: "add-server" }, "Add a server")));
  const unregister = (name) => async (ev) => {
    if (!confirm("Unregister " + name + "? Its backups stop at once; its recovery points are kept.")) return;
    ev.target.disabled = true;
    try { await api("DELETE", V(vault) + "/hosts/" + enc(name)); toast("Unregistered " + name); await route(); }
    catch (e) { out.replaceChildren(errorBox(e)); ev.target.disabled = false; }
  };
  const rows = hosts.map((o) => [o.name, words(o.state), o.os, o.version, timeEl(o.registered), timeEl(o.last_contact),
    o.items.length ? o.items.map((i) => h("a", { href: link(vault, "/items/" + enc(i)) }, i)) : "-",
    o.unregistered || !manage ? "-" : h("button", { type: "button", class: "secondary", onclick: unregister(o.name) }, "Unregister")]);
  page("Protected servers", readAt(),
    table(["Name", "State", "OS", "boveda", "Registered", "Last contact", "Items", ""], rows, [2, 3, 4],
      h("p", {}, "No server is registered with this vault yet." + (manage ? " Add one below: it gets single-use credentials." : ""))),
    h("h2", {}, "Add a server"), manage ? [add, out] : noRight(vault, "add servers"));
}
