// boveda's portal: the Security page. Immutability and soft delete (a
// Contributor changes them), the vault's guard and its requests, and the
// guard's approval, signed here in the browser with the key the guard's
// passphrase derives (WebCrypto: PBKDF2-HMAC-SHA256, Ed25519); the
// passphrase never leaves the page. See docs/SECURITY.md.
"use strict";

const GUARD_ROUNDS = 600000;

function hexOf(buf) {
  return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
}

function b64url(hex) {
  const bin = String.fromCharCode(...hex.match(/../g).map((x) => parseInt(x, 16)));
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// SHA-256 of the operation's fields, each after its length (u64 LE): what
// the vault compares, worked out here from what the page shows
async function operationDigest(op) {
  const te = new TextEncoder();
  const parts = [op.action, op.target, op.detail].map((p) => te.encode(p));
  const out = new Uint8Array(parts.reduce((n, p) => n + 8 + p.length, 0));
  let at = 0;
  for (const p of parts) {
    new DataView(out.buffer).setBigUint64(at, BigInt(p.length), true);
    out.set(p, at + 8);
    at += 8 + p.length;
  }
  return hexOf(await crypto.subtle.digest("SHA-256", out));
}

// the guard's Ed25519 key, from its passphrase; refused when it is not the
// bound guard's
async function guardKey(passphrase, guard) {
  const base = await crypto.subtle.importKey("raw", new TextEncoder().encode(passphrase), "PBKDF2", false, ["deriveBits"]);
  const salt = new TextEncoder().encode("boveda guard " + guard.id);
  const seed = hexOf(await crypto.subtle.deriveBits({ name: "PBKDF2", hash: "SHA-256", salt, iterations: GUARD_ROUNDS }, base, 256));
  const pkcs8 = "302e020100300506032b657004220420" + seed;
  const key = await crypto.subtle.importKey("pkcs8", new Uint8Array(pkcs8.match(/../g).map((x) => parseInt(x, 16))),
    { name: "Ed25519" }, true, ["sign"]);
  const jwk = await crypto.subtle.exportKey("jwk", key);
  if (jwk.x !== b64url(guard.public_key)) throw new Error("wrong passphrase for guard " + guard.name);
  return key;
}

async function signApproval(view, request, passphrase, hours) {
  const digest = await operationDigest(request.operation);
  if (digest !== request.digest) throw new Error("the request's operation does not match its digest: not approved");
  const key = await guardKey(passphrase, view.guard);
  const expires = Math.floor(Date.now() / 1000) + Math.round(hours * 3600);
  const message = "boveda guard approval v1\nvault " + view.vault + "\nrequest " + request.id + "\noperation " + digest +
    "\nexpires " + expires + "\n";
  const sig = await crypto.subtle.sign({ name: "Ed25519" }, key, new TextEncoder().encode(message));
  return { expires: new Date(expires * 1000).toISOString(), signature: hexOf(sig) };
}

function settingsForm(vault, summary, out) {
  const immutability = h("select", { id: "immutability" },
    ["disabled", "enabled", "locked"].map((v) => h("option", { value: v, selected: summary.immutability === v }, v)));
  const days = h("input", { id: "soft-delete-days", type: "number", min: 14, max: 180, value: summary.soft_delete_days });
  const always = h("input", { id: "soft-delete-always-on", type: "checkbox", checked: summary.soft_delete_always_on,
    disabled: summary.soft_delete_always_on });
  return h("form", { onsubmit: async (ev) => {
    ev.preventDefault();
    const body = { soft_delete_days: Number(days.value) };
    if (immutability.value !== summary.immutability) body.immutability = immutability.value;
    if (always.checked && !summary.soft_delete_always_on) body.soft_delete_always_on = true;
    if (body.immutability === "locked" || body.soft_delete_always_on) {
      const typed = prompt("Locked immutability and always-on soft delete cannot be undone, by anyone, with any " +
        "credential. Type the vault's name (" + vault + ") to confirm.");
      if (typed !== vault) return;
      body.confirm = typed;
    }
    try { await api("PATCH", V(vault) + "/settings", body); toast("Settings saved"); await route(); }
    catch (e) { out.replaceChildren(requestBox(vault, e)); }
  } },
    h("label", { for: "immutability" }, "Immutability (no point deleted before its retention ends)", immutability),
    h("label", { for: "soft-delete-days" }, "Soft delete, days deleted backup data stays recoverable (14 to 180)", days),
    h("label", { for: "soft-delete-always-on" }, always, " Soft delete always on (cannot be turned off or shortened)"),
    h("div", { class: "actions" }, h("button", { type: "submit", id: "save-security" }, "Save")));
}

// an error; a refusal that waits for the guard links to its request
function requestBox(vault, e) {
  const remedy = e.body && e.body.remedy;
  if (remedy && remedy.action === "ask-guard") {
    return h("p", { class: "error", role: "alert", id: "approval-needed" }, e.message + " ",
      h("a", { href: "#/v/" + enc(vault) + "/security" }, "See the request"));
  }
  return errorBox(e);
}

function approveForm(vault, view, r, out) {
  const pass = h("input", { type: "password", id: "guard-pass-" + r.id.slice(0, 8), autocomplete: "off", required: true,
    "aria-label": "Guard passphrase" });
  const hours = h("input", { type: "number", min: 1, max: 24, value: 4, id: "guard-hours-" + r.id.slice(0, 8),
    "aria-label": "Valid for, hours" });
  const go = (path, body) => api("POST", V(vault) + "/guard/requests/" + r.id + path, body);
  return h("form", { class: "inline", onsubmit: async (ev) => {
    ev.preventDefault();
    const button = ev.submitter;
    if (button) button.disabled = true;
    try {
      if (button && button.value === "reject") await go("/reject");
      else await go("/approve", await signApproval(view, r, pass.value, Number(hours.value)));
      toast(button && button.value === "reject" ? "Rejected" : "Approved");
      await route();
    } catch (e) { out.replaceChildren(errorBox(e)); if (button) button.disabled = false; }
  } }, pass, " for ", hours, " h ",
    h("button", { type: "submit", value: "approve", id: "approve-" + r.id.slice(0, 8) }, "Approve"), " ",
    h("button", { type: "submit", value: "reject", class: "secondary" }, "Reject"));
}

async function securityPage(vault) {
  vaultNav(vault, "/security");
  if (!state.vaults.length) state.vaults = await api("GET", "/vaults");
  const role = (state.vaults.find((v) => v.name === vault) || {}).role;
  const out = h("div", { id: "security-out" });
  const view = await api("GET", V(vault) + "/guard");
  const parts = [];
  if (role !== "SecurityAdmin") {
    const summary = await api("GET", V(vault));
    parts.push(h("h2", {}, "Immutability and soft delete"));
    parts.push(role === "Contributor" ? settingsForm(vault, summary, out)
      : h("p", {}, "Immutability " + summary.immutability + "; soft delete " + summary.soft_delete_days + " days" +
        (summary.soft_delete_always_on ? ", always on" : "")));
  }
  parts.push(h("h2", {}, "Guard (multi-user authorization)"));
  const g = view.guard;
  parts.push(g ? h("p", { id: "guard-bound" }, "Bound to guard " + g.name + " since " + when(g.bound) + ". Disabling " +
    "immutability, shortening soft delete, changing the secondary, reducing a retention, deleting backup data, removing " +
    "a key and unbinding need its approval.")
    : h("p", { id: "guard-bound" }, "No guard: a Contributor token or the vault passphrase alone can weaken what protects points."));
  if (role === "Contributor" && !g) {
    const identity = h("input", { id: "guard-identity", required: true, placeholder: "bvg_..." });
    const name = h("input", { id: "guard-name", required: true });
    parts.push(h("form", { onsubmit: async (ev) => {
      ev.preventDefault();
      try { await api("PUT", V(vault) + "/guard", { guard: identity.value.trim(), name: name.value }); await route(); }
      catch (e) { out.replaceChildren(errorBox(e)); }
    } },
      h("label", { for: "guard-identity" }, "The guard's identity (from `boveda guard create`, run by the guard)", identity),
      h("label", { for: "guard-name" }, "Its name", name),
      h("div", { class: "actions" }, h("button", { type: "submit", id: "bind-guard" }, "Bind the guard"))));
  } else if (role === "Contributor") {
    parts.push(h("button", { type: "button", class: "secondary", id: "unbind-guard", onclick: async () => {
      try { await api("DELETE", V(vault) + "/guard"); await route(); } catch (e) { out.replaceChildren(requestBox(vault, e)); }
    } }, "Unbind the guard"));
  }
  const rows = view.requests.map((r) => [r.id.slice(0, 8), stateCell(r.state), r.description, r.requested_by, when(r.requested),
    r.state === "Pending" && role === "SecurityAdmin" ? approveForm(vault, view, r, out)
      : r.approval ? "approved by " + r.approval.approved_by + ", until " + when(r.approval.expires) : "-"]);
  parts.push(h("h3", {}, "Requests"), table(["Request", "State", "Operation", "Asked by", "When", ""], rows, [3, 4],
    h("p", { id: "no-requests" }, g ? "No request yet. One appears here when someone asks for a change the guard must approve (such as disabling immutability); " +
      "the guard approves it with its passphrase." : "No request: requests need a guard bound to the vault.")));
  if (role === "SecurityAdmin") {
    parts.push(h("p", { class: "muted" }, "Approving here signs in this browser with the key your passphrase derives; " +
      "the page comes from the vault's server. To trust nothing of it, approve with `boveda guard approve CODE` on your " +
      "own machine (the code: `boveda guard show`)."));
  }
  page("Security", readAt(), out, ...parts);
}
