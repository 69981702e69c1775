// The "configure backup" flow: server, goal, policy, items, enable. What a
// registered host holds is found by asking its agent (POST
// hosts/{host}/discover): the server cannot see a host's files. Names a
// host sends are shown as text, never as markup. Uses app.js's helpers.
"use strict";

async function configurePage(vault) {
  vaultNav(vault, "/configure");
  const steps = ["Server", "Backup goal", "Policy", "Items", "Enable"];
  const flow = { host: null, goal: "files", policy: null, items: [] };
  const where = () => (flow.host ? "on " + flow.host : "on this server");
  const box = h("div");
  const stepList = h("ol", { class: "steps" });
  const show = (n, content) => {
    stepList.replaceChildren(...steps.map((s, i) => h("li", { class: i === n ? "now" : undefined, "aria-current": i === n ? "step" : undefined }, (i + 1) + ". " + s)));
    box.replaceChildren(content);
    const first = box.querySelector("input, select, button");
    if (first) first.focus();
  };
  const serverStep = async () => {
    const hosts = (await api("GET", V(vault) + "/hosts")).filter((o) => !o.unregistered);
    const select = h("select", { id: "choose-server" }, h("option", { value: "" }, "This server (where boveda serve runs)"),
      hosts.map((o) => h("option", { value: o.name }, o.name + " — " + o.state)));
    show(0, h("form", { onsubmit: (ev) => { ev.preventDefault(); flow.host = select.value || null; goalStep(); } },
      h("label", { for: "choose-server" }, "Back up what is on", select),
      hosts.length ? null : h("p", { class: "muted" }, "No other server is registered with this vault: add one under Protected servers."),
      h("div", { class: "actions" }, h("button", { type: "submit" }, "Next"))));
  };
  const goalStep = () => {
    const goals = [["files", "Files and folders"], ["vm", "Virtual machines (QEMU/KVM, libvirt)"], ["disk", "A disk image or block device"]];
    show(1, h("form", { onsubmit: (ev) => { ev.preventDefault(); flow.goal = new FormData(ev.target).get("goal"); policyStep(); } },
      h("fieldset", {}, h("legend", {}, "What do you want to back up " + where() + "?"),
        goals.map(([v, label], i) => h("label", { class: "inline" }, h("input", { type: "radio", name: "goal", value: v, checked: i === 0 }), label))),
      h("div", { class: "actions" }, h("button", { type: "submit" }, "Next"))));
  };
  const policyStep = async () => {
    const policies = await api("GET", V(vault) + "/policies");
    const select = h("select", { id: "choose-policy" }, policies.map((p) => h("option", { value: p.name }, p.name + " — " + describePolicy(p))));
    show(2, h("div", {},
      h("form", { onsubmit: (ev) => { ev.preventDefault(); flow.policy = select.value; itemsStep(); } },
        h("label", { for: "choose-policy" }, "Use a policy", select),
        h("div", { class: "actions" }, h("button", { type: "submit" }, "Next"))),
      h("h2", {}, "Or create one"),
      policyForm(async (body) => { const p = await api("POST", V(vault) + "/policies", body); flow.policy = p.name; itemsStep(); return p; })));
  };
  // asks the host's agent what `order` shows (a folder, libvirt definitions)
  const ask = (order) => api("POST", V(vault) + "/hosts/" + enc(flow.host) + "/discover", order);
  // a folder of the host, listed by its agent: folders open, entries are
  // picked with `pick(path, checked, entry)`; `picked(path)` says which are
  const hostFolder = (pick, picked) => {
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
          table(["", "Name", "Kind", "Size"], rows, [3]),
          found.truncated ? h("p", { class: "muted" }, "Only the first 1000 entries by name are shown.") : "");
      } catch (e) { list.replaceChildren(errorBox(e)); }
    };
    return [h("label", { for: "host-folder" }, "Folder on " + flow.host, path),
      h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", id: "browse", onclick: () => open(path.value) }, "Browse")),
      list];
  };
  const vmsForm = (out) => {
    const dir = h("input", { id: "discover-dir", required: true, value: "/etc/libvirt/qemu" });
    const found = h("div", { id: "discovered" });
    const discover = async () => {
      try {
        let vms;
        if (flow.host) {
          const d = await ask({ path: dir.value, libvirt_dir: dir.value });
          if (d.vms_error) throw new Error(d.vms_error);
          vms = d.vms;
        } else vms = await api("GET", V(vault) + "/discover?dir=" + enc(dir.value));
        found.replaceChildren(table(["", "VM", "Disks", "Note"], vms.map((vm) => [
          vm.item || vm.problem ? "" : h("input", { type: "checkbox", "aria-label": "Protect " + vm.domain,
            value: JSON.stringify({ kind: "vm", name: vm.domain, definition: vm.definition, host: flow.host || undefined }) }),
          vm.domain, vm.disks.map((d) => d[0]).join(", "), vm.item ? "protected as " + vm.item : (vm.problem || "")])));
      } catch (e) { found.replaceChildren(errorBox(e)); }
    };
    return h("form", { onsubmit: (ev) => {
      ev.preventDefault();
      const checked = [...found.querySelectorAll("input:checked")].map((b) => JSON.parse(b.value));
      if (!checked.length) { out.replaceChildren(h("p", { class: "error", role: "alert" }, "Select at least one VM.")); return; }
      flow.items = checked;
      enableStep();
    } },
      h("label", { for: "discover-dir" }, "Folder of VM definitions (libvirt XML) " + where(), dir),
      h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", id: "discover", onclick: discover }, "Discover VMs")),
      found, out, h("div", { class: "actions" }, h("button", { type: "submit" }, "Next")));
  };
  const pathsForm = (out) => {
    const files = flow.goal === "files";
    const name = h("input", { id: "item-name", required: true });
    const path = files ? h("textarea", { id: "item-paths", rows: 3, required: true, placeholder: "one folder or file per line" })
      : h("input", { id: "item-paths", required: true, placeholder: "/var/lib/images/disk.img" });
    const lines = () => path.value.split("\n").map((s) => s.trim()).filter(Boolean);
    const pick = (p, on, entry) => {
      if (!files) { if (on && entry.kind === "file") path.value = p; return; }
      const rest = lines().filter((x) => x !== p);
      path.value = (on ? [...rest, p] : rest).join("\n");
    };
    return h("form", { onsubmit: (ev) => {
      ev.preventDefault();
      const paths = lines();
      const relative = paths.find((p) => !p.startsWith("/"));
      if (relative) { out.replaceChildren(h("p", { class: "error", role: "alert" }, relative + " is not an absolute path " + where())); return; }
      const host = flow.host || undefined;
      flow.items = [files ? { kind: "files", name: name.value, paths, host } : { kind: "disk", name: name.value, path: paths[0], host }];
      enableStep();
    } },
      h("label", { for: "item-name" }, "Item name", name),
      flow.host ? hostFolder(pick, (p) => lines().includes(p)) : null,
      h("label", { for: "item-paths" }, (files ? "Folders and files " : "Image file or block device ") + where(), path),
      out, h("div", { class: "actions" }, h("button", { type: "submit" }, "Next")));
  };
  const itemsStep = () => {
    const out = h("div");
    show(3, flow.goal === "vm" ? vmsForm(out) : pathsForm(out));
  };
  const enableStep = () => {
    const out = h("div", { id: "enable-result" });
    show(4, h("div", {},
      h("p", {}, "Protect " + flow.items.map((i) => i.name).join(", ") + " " + where() + " with policy " + flow.policy + "."),
      h("div", { class: "actions" }, h("button", { type: "button", id: "enable", onclick: async (ev) => {
        ev.target.disabled = true;
        const rows = [];
        for (const item of flow.items) {
          try {
            await api("POST", V(vault) + "/items", item);
            await api("POST", V(vault) + "/items/" + enc(item.name) + "/protection", { policy: flow.policy });
            const o = await api("GET", V(vault) + "/items/" + enc(item.name));
            rows.push([h("a", { href: "#/v/" + enc(vault) + "/items/" + enc(item.name) }, item.name), o.protection]);
          } catch (e) { rows.push([item.name, errorBox(e)]); }
        }
        out.replaceChildren(table(["Item", "Protection"], rows));
      } }, "Enable backup")), out));
  };
  page("Configure backup", stepList, box);
  await serverStep();
}
