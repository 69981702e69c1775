// The "configure backup" wizard: server, goal, policy, items, review. Each
// step is checked when it is left (the items step asks the server to check
// the item without adding it: POST items?dry_run=true); the steps are
// links back to those reached; the step is in the URL and what was entered
// is kept in the tab's session storage, so the browser's Back and Forward
// keep it. What a registered host holds is found by asking its agent
// (POST hosts/{host}/discover): the server cannot see a host's files.
// Names a host sends are shown as text, never as markup. Uses app.js's
// helpers and policies.js's policy form.
"use strict";

const STEPS = ["Server", "Backup goal", "Policy", "Items", "Review and enable"];
const GOALS = [["files", "Files and folders"], ["vm", "Virtual machines (QEMU/KVM, libvirt)"], ["disk", "A disk image or block device"]];

function loadFlow(vault) {
  try { return JSON.parse(sessionStorage.getItem("configure:" + vault)) || null; } catch (_) { return null; }
}
function saveFlow(vault, flow) { sessionStorage.setItem("configure:" + vault, JSON.stringify(flow)); }

async function configurePage(vault, params) {
  vaultNav(vault, "/configure");
  if (!can(vault, "Manage")) { page("Configure backup", noRight(vault, "configure backup")); return; }
  const asked = Number(params.get("step"));
  // the navigation's link (no step) starts afresh; a step in the URL
  // (Back, Forward, a step's link) continues what was entered
  let flow = params.has("step") ? loadFlow(vault) : null;
  if (!flow) flow = { host: null, goal: "files", policy: null, items: [], draft: { name: "", paths: "", excludes: "" }, reached: 0 };
  const n = params.has("step") ? Math.min(Math.max(0, asked), flow.reached) : 0;
  saveFlow(vault, flow);
  const go = (step) => {
    flow.reached = Math.max(flow.reached, step);
    saveFlow(vault, flow);
    location.hash = link(vault, "/configure?step=" + step);
  };
  const where = () => (flow.host ? "on " + flow.host : "on this server");
  const box = h("div");
  const stepList = h("ol", { class: "steps" }, STEPS.map((s, i) => h("li", { class: i === n ? "now" : undefined },
    i <= flow.reached && i !== n ? h("a", { href: link(vault, "/configure?step=" + i) }, (i + 1) + ". " + s)
      : h("span", { "aria-current": i === n ? "step" : undefined }, (i + 1) + ". " + s))));
  const nav = (next, label) => h("div", { class: "actions" },
    n > 0 ? h("button", { type: "button", class: "secondary", onclick: () => history.back() }, "Back") : "",
    h("button", { type: "submit" }, label || "Next"));
  const show = (content) => {
    box.replaceChildren(content);
    const first = box.querySelector("input:not([type=radio]), select, input:checked, button[type=submit]");
    if (first) first.focus();
  };
  page("Configure backup", stepList, box);
  const steps = [serverStep, goalStep, policyStep, itemsStep, reviewStep];
  await steps[n]();

  async function serverStep() {
    const hosts = (await api("GET", V(vault) + "/hosts")).filter((o) => !o.unregistered);
    const select = h("select", { id: "choose-server" }, h("option", { value: "" }, "This server (where boveda serve runs)"),
      hosts.map((o) => h("option", { value: o.name, selected: flow.host === o.name }, o.name + " — " + words(o.state))));
    show(h("form", { onsubmit: (ev) => {
      ev.preventDefault();
      if ((select.value || null) !== flow.host) { flow.items = []; flow.draft = { name: flow.draft.name, paths: "", excludes: "" }; }
      flow.host = select.value || null;
      go(1);
    } },
      h("label", { for: "choose-server" }, "Back up what is on", select),
      hosts.length ? null : h("p", { class: "muted" }, "No other server is registered with this vault: add one under Protected servers."),
      nav()));
  }

  function goalStep() {
    show(h("form", { onsubmit: (ev) => {
      ev.preventDefault();
      const goal = new FormData(ev.target).get("goal");
      if (goal !== flow.goal) flow.items = [];
      flow.goal = goal;
      go(2);
    } },
      h("fieldset", {}, h("legend", {}, "What do you want to back up " + where() + "?"),
        GOALS.map(([v, label]) => h("label", { class: "inline" }, h("input", { type: "radio", name: "goal", value: v, checked: flow.goal === v }), label))),
      nav()));
  }

  async function policyStep() {
    const policies = await api("GET", V(vault) + "/policies");
    const out = h("div");
    const select = h("select", { id: "choose-policy" }, policies.map((p) => h("option", { value: p.name, selected: flow.policy === p.name }, p.name + " — " + describePolicy(p))));
    show(h("div", {},
      h("form", { onsubmit: (ev) => {
        ev.preventDefault();
        if (!select.value) { out.replaceChildren(h("p", { class: "error", role: "alert" }, "Choose a policy, or create one below.")); return; }
        flow.policy = select.value;
        go(3);
      } },
        h("label", { for: "choose-policy" }, "Use a policy", select), out, nav()),
      h("h2", {}, "Or create one"),
      policyForm(vault, null, async (body) => { const p = await api("POST", V(vault) + "/policies", body); flow.policy = p.name; go(3); })));
  }

  // asks the host's agent what `order` shows (a folder, libvirt definitions)
  function ask(order) { return api("POST", V(vault) + "/hosts/" + enc(flow.host) + "/discover", order); }

  // a folder of the host, listed by its agent: folders open, entries are
  // picked with `pick(path, checked, entry)`; `picked(path)` says which are
  function hostFolder(pick, picked) {
    const path = h("input", { id: "host-folder", value: "/", required: true });
    const list = h("div", { id: "host-entries" });
    const open = async (dir) => {
      path.value = dir;
      list.replaceChildren(h("p", { class: "muted" }, "Asking " + flow.host + "…"));
      try {
        const found = await ask({ path: dir });
        const join = (name) => (dir.endsWith("/") ? dir : dir + "/") + name;
        const up = dir.replace(/\/[^/]+\/?$/, "") || "/";
        const rows = found.entries.map((e) => [
          e.kind === "dir" || e.kind === "file" ? h("input", { type: "checkbox", "aria-label": "Protect " + join(e.name),
            checked: picked(join(e.name)), onchange: (ev) => pick(join(e.name), ev.target.checked, e) }) : "",
          e.kind === "dir" ? h("button", { type: "button", class: "secondary", onclick: () => open(join(e.name)) }, e.name + "/") : e.name,
          e.kind === "dir" ? "folder" : e.disk_image ? "disk image" : e.kind === "link" ? "link (not followed)" : e.kind,
          e.kind === "file" ? bytes(e.size) : ""]);
        list.replaceChildren(
          found.error ? h("p", { class: "error", role: "alert" }, found.error) : "",
          dir !== "/" ? h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", onclick: () => open(up) }, "Up to " + up)) : "",
          table(["", "Name", "Kind", "Size"], rows, [3], "This folder is empty."),
          found.truncated ? h("p", { class: "muted" }, "Only the first 1000 entries by name are shown.") : "");
      } catch (e) { list.replaceChildren(errorBox(e)); }
    };
    return [h("label", { for: "host-folder" }, "Folder on " + flow.host, path),
      h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", id: "browse", onclick: () => open(path.value) }, "Browse")),
      list];
  }

  function vmsForm(out) {
    const dir = h("input", { id: "discover-dir", required: true, value: flow.draft.dir || "/etc/libvirt/qemu" });
    const found = h("div", { id: "discovered" });
    const chosen = new Set(flow.items.map((i) => i.name));
    const discover = async () => {
      flow.draft.dir = dir.value;
      try {
        let vms;
        if (flow.host) {
          const d = await ask({ path: dir.value, libvirt_dir: dir.value });
          if (d.vms_error) throw new Error(d.vms_error);
          vms = d.vms;
        } else vms = await api("GET", V(vault) + "/discover?dir=" + enc(dir.value));
        found.replaceChildren(table(["", "VM", "Disks", "Note"], vms.map((vm) => [
          vm.item || vm.problem ? "" : h("input", { type: "checkbox", "aria-label": "Protect " + vm.domain, checked: chosen.has(vm.domain),
            value: JSON.stringify({ kind: "vm", name: vm.domain, definition: vm.definition, host: flow.host || undefined }) }),
          vm.domain, vm.disks.map((d) => d[0]).join(", "), vm.item ? "protected as " + vm.item : (vm.problem || "")]), [], "No VM definition in this folder."));
      } catch (e) { found.replaceChildren(errorBox(e)); }
    };
    if (flow.items.length) void discover();
    return h("form", { onsubmit: async (ev) => {
      ev.preventDefault();
      const checked = [...found.querySelectorAll("input:checked")].map((b) => JSON.parse(b.value));
      if (!checked.length) { out.replaceChildren(h("p", { class: "error", role: "alert" }, "Select at least one VM (Discover VMs lists them).")); return; }
      for (const item of checked) {
        try { await api("POST", V(vault) + "/items?dry_run=true", item); }
        catch (e) { out.replaceChildren(h("p", { class: "error", role: "alert" }, item.name + ": " + e.message)); return; }
      }
      flow.items = checked;
      go(4);
    } },
      h("label", { for: "discover-dir" }, "Folder of VM definitions (libvirt XML) " + where(), dir),
      h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", id: "discover", onclick: discover }, "Discover VMs")),
      found, out, nav());
  }

  function pathsForm(out) {
    const files = flow.goal === "files";
    const name = h("input", { id: "item-name", required: true, value: flow.draft.name, "data-field": "name",
      pattern: "[A-Za-z0-9][A-Za-z0-9._-]{0,99}", title: "1 to 100 letters, digits, hyphens, underscores and dots, starting with a letter or digit" });
    const path = files ? h("textarea", { id: "item-paths", rows: 3, required: true, placeholder: "one folder or file per line", "data-field": "paths" }, flow.draft.paths)
      : h("input", { id: "item-paths", required: true, placeholder: "/var/lib/images/disk.img", value: flow.draft.paths, "data-field": "paths" });
    const excludes = h("textarea", { id: "item-excludes", rows: 2, placeholder: "*.tmp\n/home/*/.cache", "data-field": "excludes" }, flow.draft.excludes);
    const lines = (t) => t.value.split("\n").map((s) => s.trim()).filter(Boolean);
    const pick = (p, on, entry) => {
      if (!files) { if (on && entry.kind === "file") path.value = p; return; }
      const rest = lines(path).filter((x) => x !== p);
      path.value = (on ? [...rest, p] : rest).join("\n");
    };
    const keep = () => { flow.draft = { ...flow.draft, name: name.value, paths: path.value, excludes: files ? excludes.value : "" }; saveFlow(vault, flow); };
    for (const el of [name, path, excludes]) el.addEventListener("input", keep);
    const form = h("form", { onsubmit: async (ev) => {
      ev.preventDefault();
      keep();
      form.querySelectorAll("[aria-invalid]").forEach((e) => e.removeAttribute("aria-invalid"));
      const paths = lines(path);
      const relative = paths.find((p) => !p.startsWith("/"));
      if (relative) { path.setAttribute("aria-invalid", "true"); out.replaceChildren(h("p", { class: "error", role: "alert" }, relative + " is not an absolute path " + where() + ": start it with /.")); return; }
      const host = flow.host || undefined;
      const item = files ? { kind: "files", name: name.value, paths, excludes: lines(excludes), host } : { kind: "disk", name: name.value, path: paths[0], host };
      try {
        await api("POST", V(vault) + "/items?dry_run=true", item);
      } catch (e) { out.replaceChildren(errorBox(e, form)); return; }
      flow.items = [item];
      go(4);
    } },
      h("label", { for: "item-name" }, "Item name", name),
      flow.host ? hostFolder(pick, (p) => lines(path).includes(p)) : null,
      h("label", { for: "item-paths" }, (files ? "Folders and files " : "Image file or block device ") + where(), path),
      files ? h("label", { for: "item-excludes" }, "Leave out (globs, one per line; optional)", excludes) : "",
      out, nav());
    return form;
  }

  function itemsStep() {
    const out = h("div");
    show(flow.goal === "vm" ? vmsForm(out) : pathsForm(out));
  }

  async function reviewStep() {
    const policies = await api("GET", V(vault) + "/policies");
    const policy = policies.find((p) => p.name === flow.policy);
    const out = h("div", { id: "enable-result" });
    const what = (i) => i.kind === "files" ? i.paths.join(", ") + (i.excludes && i.excludes.length ? "; leaving out " + i.excludes.join(", ") : "")
      : i.kind === "disk" ? i.path : "VM " + i.name + " (" + i.definition + ")";
    const enable = h("button", { type: "submit", id: "enable" }, "Enable backup");
    show(h("form", { onsubmit: async (ev) => {
      ev.preventDefault();
      enable.disabled = true;
      const rows = [];
      for (const item of flow.items) {
        try {
          await api("POST", V(vault) + "/items", item);
          await api("POST", V(vault) + "/items/" + enc(item.name) + "/protection", { policy: flow.policy });
          const o = await api("GET", V(vault) + "/items/" + enc(item.name));
          rows.push([h("a", { href: link(vault, "/items/" + enc(item.name)) }, item.name), o.protection,
            o.next_backup ? "first backup " + when(o.next_backup) : "-"]);
        } catch (e) { rows.push([item.name, errorBox(e), ""]); }
      }
      sessionStorage.removeItem("configure:" + vault);
      out.replaceChildren(table(["Item", "Protection", "Next"], rows));
    } },
      h("p", {}, "Protect " + flow.items.map((i) => i.name).join(", ") + " " + where() + " with policy " + flow.policy + "."),
      table(["", ""], [["Server", flow.host || "this server"], ["Goal", (GOALS.find(([v]) => v === flow.goal) || [])[1]],
        ...flow.items.map((i) => ["Item " + i.name, what(i)]),
        ["Policy", flow.policy], ["Schedule and retention", policy ? describePolicy(policy) : "-"]]),
      out, nav(null, "Enable backup")));
    box.querySelector("button[type=submit]").replaceWith(enable);
  }
}
