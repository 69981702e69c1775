// boveda's portal: protected items. The item list with each item's
// health, an item's page (what it protects, its protection and policy,
// backup now, its recovery points), and the restore page (restore into an
// allowed folder, or download chosen files). Uses app.js's helpers.
"use strict";

// what an item protects, in words
function protects(item) {
  const s = item.source || {};
  if (s.type === "files") return s.paths.join(", ") + (s.excludes && s.excludes.length ? " (excluding " + s.excludes.join(", ") + ")" : "");
  if (s.type === "disk") return "the disk image " + s.path;
  if (s.type === "vm") return "the VM " + s.domain + " (" + s.domain_xml + ")" + (s.disks && s.disks.length ? ": " + s.disks.map((d) => d[0] + " " + d[1]).join(", ") : "");
  return "-";
}

async function itemsPage(vault) {
  vaultNav(vault, "/items");
  const body = h("div");
  page("Items",
    can(vault, "Manage") ? h("p", {}, h("a", { href: link(vault, "/configure") }, "Configure backup for more items")) : "",
    body);
  await keepFresh(body, async () => {
    const items = await api("GET", V(vault) + "/items");
    body.replaceChildren(table(["Item", "Health", "On", "Kind", "Protection", "Policy", "Last backup", "Next backup", "Points"], items.map((i) => [
      h("a", { href: link(vault, "/items/" + enc(i.name)) }, i.name), healthCell(i), i.host || "this server", words(i.kind), i.protection,
      i.policy ? h("a", { href: link(vault, "/policies/" + enc(i.policy)) }, i.policy) : "-",
      h("span", {}, stateCell(i.last_backup_status), " ", timeEl(i.last_backup)), timeEl(i.next_backup), String(i.recovery_points)]),
    [2, 3, 5, 7],
    h("p", {}, "No item is protected yet. ", can(vault, "Manage") ? h("a", { href: link(vault, "/configure") }, "Configure backup") : "Ask a Contributor to configure backup", ": pick files, a disk or a VM and a policy.")));
  }, 10);
}

function inDays(n) {
  const d = new Date(Date.now() + n * 86400000);
  return d.toISOString().slice(0, 10);
}

// stop, resume, change policy, undelete: what the item's state allows
function protectionActions(vault, item, policies, out) {
  const base = V(vault) + "/items/" + enc(item.name);
  const st = item.item.protection.state;
  const act = async (method, path, body, done) => {
    try { await api(method, base + path, body); toast(done); await route(); }
    catch (e) { out.replaceChildren(errorBox(e)); }
  };
  const choose = (id) => h("select", { id }, policies.map((p) => h("option", { value: p.name, selected: p.name === item.policy }, p.name + " — " + describePolicy(p))));
  const forms = [];
  if (st === "protected") {
    const sel = choose("change-policy");
    forms.push(h("form", { onsubmit: (ev) => { ev.preventDefault(); act("PUT", "/protection", { policy: sel.value }, "Policy changed to " + sel.value); } },
      h("label", { for: "change-policy" }, "Policy", sel),
      h("div", { class: "actions" }, h("button", { type: "submit" }, "Change policy"))));
    forms.push(h("div", { class: "actions" },
      h("button", { type: "button", class: "secondary", id: "stop-keep", onclick: () => {
        if (confirm("Stop protecting " + item.name + "? No more scheduled backups; its recovery points are kept until you delete them.")) {
          act("DELETE", "/protection", undefined, "Protection stopped; the data is kept");
        }
      } }, "Stop protection, keep data"),
      h("button", { type: "button", class: "danger", id: "stop-delete", onclick: () => {
        const typed = prompt("Stop protecting " + item.name + " and delete its backup data? It is soft deleted: recoverable for the vault's soft-delete days, then purged. Type the item's name to confirm.");
        if (typed === item.name) act("DELETE", "/protection?delete_data=true", undefined, "Backup data soft deleted");
        else if (typed !== null) out.replaceChildren(h("p", { class: "error", role: "alert" }, "The name typed is not " + item.name + ": nothing was deleted."));
      } }, "Stop protection, delete data")));
  } else if (st === "stopped") {
    const sel = choose("resume-policy");
    forms.push(h("form", { onsubmit: (ev) => { ev.preventDefault(); act("POST", "/protection/resume", { policy: sel.value }, "Protection resumed"); } },
      h("label", { for: "resume-policy" }, "Resume with policy", sel),
      h("div", { class: "actions" }, h("button", { type: "submit", id: "resume" }, "Resume protection"))));
    forms.push(h("div", { class: "actions" }, h("button", { type: "button", class: "danger", id: "stop-delete", onclick: () => {
      const typed = prompt("Delete " + item.name + "'s backup data? It is soft deleted first. Type the item's name to confirm.");
      if (typed === item.name) act("DELETE", "/protection?delete_data=true", undefined, "Backup data soft deleted");
    } }, "Delete backup data")));
  } else if (st === "soft-deleted") {
    forms.push(h("p", {}, "Its backup data is soft deleted" + (item.item.protection.purge_after ? " and is purged after " + when(item.item.protection.purge_after) : "") + "."),
      h("div", { class: "actions" }, h("button", { type: "button", id: "undelete", onclick: () => act("POST", "/protection/undelete", undefined, "Backup data undeleted; protection stays stopped") }, "Undelete")));
  } else {
    const sel = choose("protect-policy");
    forms.push(h("form", { onsubmit: (ev) => { ev.preventDefault(); act("POST", "/protection", { policy: sel.value }, "Protected with " + sel.value); } },
      h("label", { for: "protect-policy" }, "Protect with policy", sel),
      h("div", { class: "actions" }, h("button", { type: "submit", id: "protect" }, "Protect"))));
  }
  return forms;
}

// a point's verification in words: "booted in 8 s" / "a full restore
// takes 2 min" / "FAILED: why"
function about(secs) { return secs < 1 ? "under a second" : duration(secs); }

function verifiedText(v) {
  if (!v) return "-";
  if (!v.passed) return "Failed: " + (v.reason || "see the job");
  if (v.boot) return "Booted: the " + v.boot.answered_by + " answered after " + about(v.boot.seconds_to_answer);
  if (v.drill) return "Restored and compared; a full restore takes " + about(v.drill.full_restore_seconds);
  return "Verified";
}

function verifyTile(item) {
  const v = item.last_verification;
  return h("div", { class: "tile wide" }, h("div", {}, "Last verified"), h("div", { id: "item-verified" },
    v ? [h("span", { class: "state state-" + (v.passed ? "Completed" : "Failed") }, v.passed ? "Passed" : "Failed"), " ", timeEl(v.verified_at),
      h("div", { class: "muted" }, verifiedText(v))]
      : [h("span", {}, "Never"), h("div", { class: "muted" }, "Verify now proves a point: " +
        (item.item.source.type === "vm" ? "the VM boots from the vault." : "its files restore, byte for byte, and how long that takes."))]));
}

function verifyForm(vault, base, out) {
  return h("form", { onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const job = await api("POST", base + "/verify", {});
      location.hash = link(vault, "/jobs/" + job.id);
    } catch (e) { out.replaceChildren(errorBox(e)); }
  } }, h("p", { class: "muted" }, "Boots a VM's newest point in an isolated VM with no network, or restores a file or disk item's to a scratch folder and compares every byte; the result is kept on the point."),
  h("div", { class: "actions" }, h("button", { type: "submit", id: "verify-now" }, "Verify now")));
}

// what an item's page shows that changes by itself: health, tiles and
// recovery points (redrawn every 10 s; the forms below stay as typed)
async function itemState(vault, name, status, points) {
  const base = V(vault) + "/items/" + enc(name);
  const [item, pts, policies, usage] = await Promise.all([api("GET", base), api("GET", base + "/points"), api("GET", V(vault) + "/policies"),
    api("GET", V(vault) + "/usage").then((u) => {
      const mine = u.items.find((i) => i.item === name);
      return mine ? { ...mine, currency: u.prices.currency } : null;
    }).catch(() => null)]);
  // redrawn only when something changed, and not under the user's hands
  // (a focused link or a table scrolled sideways stays as it is)
  const seen = JSON.stringify([item, pts, policies, usage]);
  if (status.dataset.seen === seen) return;
  if (status.dataset.seen && (status.contains(document.activeElement) || points.contains(document.activeElement))) return;
  const policy = policies.find((p) => p.name === item.policy);
  const next = item.next_backup
    ? [timeEl(item.next_backup), policy && policy.schedule.time_zone !== ZONE ? h("div", { class: "muted" }, when(item.next_backup, policy.schedule.time_zone) + " in the policy's zone") : ""]
    : "-";
  const rows = pts.points.slice().reverse().map((p) => {
    const t = p.point.time;
    const restore = can(vault, "Operate") ? h("a", { href: link(vault, "/items/" + enc(name) + "/restore/" + p.point.id), "aria-label": "Restore the point of " + when(t) }, "Restore") : "";
    // one expiry per row, in the browser's zone: the rule's own wording
    // ("ad-hoc until <UTC time>") would repeat it in another zone
    const keptBy = p.kept_by.replace(/^ad-hoc until .*/, "ad-hoc (Backup now, kept until the date chosen)");
    return [timeEl(t), words(p.point.consistency), p.expires ? timeEl(p.expires) : "never", keptBy +
      (p.suspicious ? " (suspicious: held for review)" : "") + (p.held_for_review_of ? " (held for review)" : ""),
    bytes(p.point.stats.bytes), h("span", { class: "verified" }, p.verification ? [words(p.verification.passed ? "Passed" : "Failed"), " ", timeEl(p.verification.verified_at), h("div", { class: "muted" }, verifiedText(p.verification))] : "-"), restore];
  });
  status.replaceChildren(
    item.health !== "Healthy" ? h("p", { class: "banner health-" + item.health, role: "status", id: "health" },
      h("strong", {}, item.health + ": "), (item.health_reason || "").replace(/\.?$/, "."),
      item.health === "Critical" ? " Fix the cause, then Backup now; the item turns healthy when a backup succeeds." : "")
      : h("p", { class: "banner health-Healthy", id: "health" }, h("strong", {}, "Healthy: "), "the last backup succeeded."),
    h("div", { class: "tiles" },
      h("div", { class: "tile wide" }, h("div", {}, "Protects"), h("div", { id: "item-protects" }, protects(item.item))),
      h("div", { class: "tile" }, h("div", {}, "On"), h("div", { id: "item-host" }, item.host || "this server")),
      h("div", { class: "tile" }, h("div", {}, "Protection"), h("div", { id: "protection" }, item.protection)),
      h("div", { class: "tile" }, h("div", {}, "Policy"), h("div", { id: "item-policy" },
        policy ? [h("a", { href: link(vault, "/policies/" + enc(policy.name)) }, policy.name), h("div", { class: "muted" }, describePolicy(policy))] : "-")),
      h("div", { class: "tile" }, h("div", {}, "Last backup"), h("div", { id: "item-last-backup" }, stateCell(item.last_backup_status), " ", timeEl(item.last_backup))),
      h("div", { class: "tile" }, h("div", {}, "Next backup"), h("div", {}, next)),
      usage ? h("div", { class: "tile" }, h("div", {}, "Stored"), h("div", { id: "item-stored" }, bytes(usage.stored_bytes)),
        h("div", { class: "muted" }, "about " + usage.monthly_cost.toFixed(2) + " " + usage.currency + " a month")) : "",
      verifyTile(item)));
  const scrolled = points.querySelector(".scroll");
  const left = scrolled ? scrolled.scrollLeft : 0;
  points.replaceChildren(
    pts.note ? h("p", { class: "muted" }, pts.note) : "",
    table(["Time", "Consistency", "Expires", "Kept by", "Size", "Verified", ""], rows, [1, 3, 4],
      h("p", {}, "No recovery point yet. " + (item.next_backup ? "The first one is taken at " + when(item.next_backup) + ", or now with Backup now." : "Take one with Backup now."))));
  const again = points.querySelector(".scroll");
  if (again) again.scrollLeft = left;
  // marked drawn only once it was: a draw that failed is tried again
  status.dataset.seen = seen;
}

async function itemPage(vault, name) {
  vaultNav(vault, "/items");
  const shown = state.shown;
  const base = V(vault) + "/items/" + enc(name);
  const [item, policies] = await Promise.all([api("GET", base), api("GET", V(vault) + "/policies")]);
  if (shown !== state.shown) return;
  const out = h("div", { id: "item-out" });
  const until = h("input", { type: "date", id: "retain-until", min: inDays(1), value: inDays(30), required: true, "data-field": "retain_until" });
  const form = h("form", { onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const job = await api("POST", base + "/backup", { retain_until: until.value });
      location.hash = link(vault, "/jobs/" + job.id);
    } catch (e) { out.replaceChildren(errorBox(e, form)); }
  } },
    h("label", { for: "retain-until" }, "Keep this recovery point until (the end of that day)", until),
    h("div", { class: "actions" }, h("button", { type: "submit", id: "backup-now" }, "Backup now")));
  const status = h("div", { id: "item-status" });
  const points = h("div", { id: "item-points" });
  page("Item " + item.name, status,
    h("h2", {}, "Back up now"), can(vault, "Operate") ? form : noRight(vault, "back up"),
    h("h2", {}, "Verify"), can(vault, "Operate") ? verifyForm(vault, base, out) : noRight(vault, "verify points"),
    h("h2", {}, "Protection"), can(vault, "Manage") ? protectionActions(vault, item, policies, out) : noRight(vault, "change protection"),
    out,
    h("h2", {}, "Recovery points"), points);
  await keepFresh(status, () => itemState(vault, name, status, points), 10);
}

async function restorePage(vault, name, point) {
  vaultNav(vault, "/items");
  const shown = state.shown;
  const base = V(vault) + "/items/" + enc(name);
  const [p, where, item] = await Promise.all([api("GET", base + "/points/" + enc(point)), api("GET", base + "/restore"), api("GET", base)]);
  if (shown !== state.shown) return;
  const files = item.item.source.type === "files";
  const picked = new Set();
  const listing = h("div", { id: "browse" });
  const here = h("p", { class: "muted" });
  const out = h("div");
  const downloadLink = h("a", { id: "download", class: "button secondary", href: "#", "aria-disabled": "true",
    onclick: (ev) => { if (downloadLink.getAttribute("aria-disabled") === "true") { ev.preventDefault(); out.replaceChildren(h("p", { class: "error", role: "alert" }, "Choose Files and folders I pick, then pick what to download.")); } } },
  "Download the picked files (.tar)");
  const refreshDownload = () => {
    const q = [...picked].map((x) => "path=" + enc(x)).join("&");
    const url = "/api/v1" + base + "/points/" + enc(point) + "/download" + (q ? "?" + q : "");
    downloadLink.href = picked.size || !files ? url : "#";
    downloadLink.setAttribute("aria-disabled", picked.size || !files ? "false" : "true");
    downloadLink.textContent = picked.size ? "Download " + picked.size + " picked (.tar)" : files ? "Pick files to download them" : "Download the whole point (.tar)";
    if (picked.size || !files) downloadLink.setAttribute("download", name + ".tar"); else downloadLink.removeAttribute("download");
  };
  async function show(path) {
    here.textContent = "Inside the point: " + path;
    try {
      const entries = await api("GET", base + "/points/" + enc(point) + "/browse?path=" + enc(path));
      const up = path !== "/" ? h("button", { type: "button", class: "secondary", onclick: () => show(path.replace(/\/[^/]+\/?$/, "") || "/") }, "Up") : "";
      listing.replaceChildren(up, table(["", "Name", "Kind", "Size"], entries.map((e) => {
        const full = (path === "/" ? "" : path.replace(/\/$/, "")) + "/" + e.name;
        const box = h("input", { type: "checkbox", "aria-label": "Restore " + full, checked: picked.has(full),
          onchange: (ev) => { if (ev.target.checked) picked.add(full); else picked.delete(full); refreshDownload(); } });
        const nameCell = e.kind === "Dir" ? h("button", { type: "button", class: "secondary", onclick: () => show(full) }, e.name + "/") : e.name;
        return [box, nameCell, words(e.kind), e.kind === "Dir" ? "" : bytes(e.size)];
      }), [], "This folder is empty."));
    } catch (e) { listing.replaceChildren(errorBox(e)); }
  }
  const whole = h("input", { type: "radio", name: "what", value: "whole", checked: true, id: "what-whole", onchange: () => listing.replaceChildren() });
  const some = h("input", { type: "radio", name: "what", value: "some", id: "what-some", onchange: () => show("/") });
  const imageFile = where.target === "image file";
  const target = h("input", { id: "restore-target", required: true, "data-field": "target",
    list: where.roots.length ? "restore-roots" : undefined,
    value: where.roots.length === 1 ? where.roots[0] + "/" + (imageFile ? name + ".img" : "restore-" + new Date().toISOString().slice(0, 10)) : "" });
  const roots = where.host
    ? h("p", { id: "restore-roots-note" }, "The restore runs on " + where.host + ", into a folder its agent allows (`boveda host agent --restore-root`).")
    : where.roots.length
      ? h("div", { id: "restore-roots-note" }, h("p", {}, "This server restores only below: "), h("ul", {}, where.roots.map((r) => h("li", {}, h("code", {}, r)))),
        h("datalist", { id: "restore-roots" }, where.roots.map((r) => h("option", { value: r + "/" }))))
      : h("p", { class: "error", id: "restore-roots-note" }, "This server restores nowhere: it was started without --restore-root. Download files instead, or ask its admin.");
  const format = h("select", { id: "restore-format", "data-field": "format" }, h("option", { value: "raw" }, "raw"), h("option", { value: "qcow2" }, "qcow2"));
  // a VM: Azure's three options
  const isVm = item.item.source.type === "vm";
  const vmName = h("input", { id: "vm-name", "data-field": "name", value: name + "-restored" });
  const vmStart = h("input", { type: "checkbox", id: "vm-start" });
  const vmConfirm = h("input", { id: "vm-confirm", "data-field": "confirm", placeholder: "only if it runs" });
  const vmAs = h("select", { id: "vm-as", "data-field": "as", onchange: () => showVmAs() },
    h("option", { value: "disks" }, "Restore the disks and a definition into a folder"),
    h("option", { value: "new_vm" }, "Create a new VM (defined in libvirt on the server)"),
    h("option", { value: "replace_disks" }, "Replace the disks of the existing VM"));
  const vmNew = h("div", { id: "vm-new", hidden: true }, h("label", { for: "vm-name" }, "Name of the new VM (new UUID and MAC addresses)", vmName),
    h("label", { class: "inline", for: "vm-start" }, vmStart, "Start it once defined"));
  const vmReplace = h("div", { id: "vm-replace", hidden: true }, h("p", { class: "muted" },
    "The VM's current disks are kept beside as safety copies; its definition is kept. A running VM is shut off only if you type its name."),
    h("label", { for: "vm-confirm" }, "Type the VM's name to shut it off if it runs", vmConfirm));
  const targetLabel = h("label", { for: "restore-target" }, imageFile ? "Restore into (the image file to write; picked files: a folder)" : "Restore into (a folder; paths are recreated below it)", target);
  function showVmAs() {
    vmNew.hidden = vmAs.value !== "new_vm";
    vmReplace.hidden = vmAs.value !== "replace_disks";
    targetLabel.hidden = vmAs.value === "replace_disks";
    target.required = vmAs.value !== "replace_disks";
  }
  const form = h("form", { onsubmit: async (ev) => {
    ev.preventDefault();
    const body = { point, target: target.value, paths: some.checked ? [...picked] : [] };
    if (!files && !body.paths.length) body.format = format.value;
    if (isVm && !body.paths.length && vmAs.value === "new_vm") body.vm = { as: "new_vm", name: vmName.value, start: vmStart.checked };
    if (isVm && !body.paths.length && vmAs.value === "replace_disks") {
      body.vm = { as: "replace_disks", confirm: vmConfirm.value || null };
      body.target = where.roots[0] || "/";
    }
    if (some.checked && !picked.size) { out.replaceChildren(h("p", { class: "error", role: "alert" }, "Pick at least one file or folder.")); return; }
    try {
      const job = await api("POST", base + "/restore", body);
      location.hash = link(vault, "/jobs/" + job.id);
    } catch (e) { out.replaceChildren(errorBox(e, form)); }
  } },
    h("fieldset", {}, h("legend", {}, "What to restore"),
      h("label", { class: "inline", for: "what-whole" }, whole, files ? "The whole item" : imageFile ? "The whole disk, as an image file" : "The whole VM: its disks and definition"),
      h("label", { class: "inline", for: "what-some" }, some, "Files and folders I pick")),
    here, listing,
    roots,
    isVm ? h("label", { for: "vm-as" }, "Restore the VM as", vmAs) : "", isVm ? vmNew : "", isVm ? vmReplace : "",
    targetLabel,
    !files ? h("label", { for: "restore-format" }, "Disk format", format) : "",
    out, h("div", { class: "actions" }, h("button", { type: "submit", id: "restore-start" }, "Restore"), downloadLink));
  refreshDownload();
  page("Restore " + name + " from the point of " + when(p.point.time),
    h("p", { class: "muted" }, "Point taken " + when(p.point.time) + " (" + words(p.point.consistency) + ", " + bytes(p.point.stats.bytes) + "). " +
      "Restore writes on the server; Download streams the files to this browser as a tar archive."),
    form);
}
