"""The portal in a real headless Chromium, against a real `boveda serve`.

Run by crates/boveda/tests/portal.rs with:
  BOVEDA_BIN      the boveda binary
  BOVEDA_SHOTS    where to save screenshots (docs/screenshots to refresh them)
  CHROMIUM        the browser (Debian's /usr/bin/chromium)

Logs in, creates a vault, runs the configure-backup flow on a real folder
and on a VM definition, backs up now with a retain-until date, watches the
job's progress bar reach Completed, browses the point, restores a file and
compares its bytes, makes a backup fail and sees the alert; adds a
protected server (its credentials registering a real `boveda host
register`), configures backup on it through its real agent, backs it up
and restores onto it, and unregisters it; binds a guard on the Security
page, and its SecurityAdmin approves a request with the guard's passphrase
signed in the browser; checks phone width and the keyboard alone.
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

BIN = os.environ["BOVEDA_BIN"]
SHOTS = Path(os.environ.get("BOVEDA_SHOTS") or tempfile.mkdtemp(prefix="boveda-shots-"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
TIMEOUT = 60_000
GUARD_PASS = "the guard's own long passphrase"


def run(env, *args):
    out = subprocess.run([BIN, *args], env=env, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        sys.exit(f"boveda {' '.join(args)} failed: {out.stderr}")
    return out.stdout


def start_server(env, work):
    """Over HTTPS, with a certificate of its own (registered servers pin it)."""
    cert, key = work / "cert.pem", work / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "1", "-subj", "/CN=portal-test", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    log = open(work / "serve.log", "w+")
    proc = subprocess.Popen(
        [BIN, "serve", "first", "--listen", "127.0.0.1:0", "--restore-root", str(work / "restores"),
         "--poll-secs", "1", "--insecure-fast-kdf", "--tls-cert", str(cert), "--tls-key", str(key)],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(300):
        log.seek(0)
        m = re.search(r"listening on (https://\S+)", log.read())
        if m:
            return proc, m.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    log.seek(0)
    sys.exit(f"boveda serve did not start: {log.read()}")


def visit(page, url):
    """Opens a page of the portal afresh (a link to the page shown does
    not change the URL, so the page is loaded again)."""
    page.goto(url)
    page.reload()


def shot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def main():
    work = Path(tempfile.mkdtemp(prefix="boveda-portal-"))
    env = dict(os.environ, BOVEDA_CONFIG_DIR=str(work / "config"), BOVEDA_CACHE_DIR=str(work / "cache"),
               BOVEDA_PASSWORD="portal test passphrase", BOVEDA_JOB_HEARTBEAT_MS="300")
    (work / "restores").mkdir()
    docs = work / "docs"
    (docs / "reports").mkdir(parents=True)
    (docs / "readme.txt").write_text("hello from the portal test\n")
    payload = bytes((i * 7919) % 251 for i in range(3_000_000))
    (docs / "reports" / "q3.bin").write_bytes(payload)
    # a VM definition with a raw disk, for discovery
    vms = work / "vms"
    vms.mkdir()
    disk = work / "web01.raw"
    with open(disk, "wb") as f:
        f.truncate(8 << 20)
        f.seek(1 << 20)
        f.write(b"disk data" * 1000)
    (vms / "web01.xml").write_text(f"""<domain type='kvm'><name>web01</name><memory>65536</memory>
<os><type arch='x86_64'>hvm</type></os><devices>
<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{disk}'/><target dev='vda' bus='virtio'/></disk>
</devices></domain>""")

    run(env, "vault", "create", "first", "--store", str(work / "first"), "--insecure-fast-kdf")
    token = run(env, "--vault", "first", "token", "create", "--role", "Contributor", "--description", "portal test").strip()
    # the guard: its own passphrase and a SecurityAdmin token
    (work / "guard.id").write_text(run(dict(env, BOVEDA_GUARD_PASSPHRASE=GUARD_PASS), "guard", "create").strip())
    (work / "sec.token").write_text(
        run(env, "--vault", "first", "token", "create", "--role", "SecurityAdmin", "--description", "the guard").strip())
    proc, base = start_server(env, work)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            context = browser.new_context(viewport={"width": 1280, "height": 900}, ignore_https_errors=True)
            page = context.new_page()
            page.set_default_timeout(TIMEOUT)
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            try:
                flows(page, browser, base, work, docs, vms, payload, token, errors)
            except Exception:
                shot(page, "failure")
                print("the page showed:\n" + page.inner_text("body"), file=sys.stderr)
                raise
            browser.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            sys.exit("boveda serve did not stop on SIGTERM")
    print(f"portal test passed; screenshots in {SHOTS}")


def configure(page, V, server, goal, policy):
    """Configure backup up to its items step: the server ("" for this
    one), the backup goal, a policy of the vault."""
    visit(page, V + "/configure")
    page.get_by_label("Back up what is on").select_option(server)
    page.get_by_role("button", name="Next").click()
    expect(page.get_by_text("What do you want to back up on " + (server or "this server") + "?")).to_be_visible()
    page.get_by_label(goal).check()
    page.get_by_role("button", name="Next").click()
    page.get_by_label("Use a policy").select_option(policy)
    page.get_by_role("button", name="Next").first.click()


def on_a_registered_server(page, V, work, host_env):
    """Configure backup on a registered server: chosen first, its folder
    browsed through its agent (a hostile file name shown as text), backed
    up now on it, a file restored onto it and compared."""
    data = work / "web9-data"
    (data / "etc").mkdir(parents=True)
    config = bytes((i * 31) % 256 for i in range(200_000))
    (data / "etc" / "app.conf").write_bytes(config)
    (data / "<img src=x onerror=alert(9)>.txt").write_text("hostile name\n")
    roots = work / "web9" / "restores"
    roots.mkdir(parents=True)
    agent = subprocess.Popen([BIN, "host", "agent", "--restore-root", str(roots)], env=host_env,
                             stdout=subprocess.DEVNULL, stderr=open(work / "web9-agent.log", "w"))
    try:
        configure(page, V, "web9", "Files and folders", "nightly")
        page.get_by_label("Item name").fill("web9-data")
        page.get_by_label("Folder on web9").fill(str(work))
        page.get_by_role("button", name="Browse").click()
        page.get_by_role("button", name="web9-data/").click()
        expect(page.get_by_role("cell", name="<img src=x onerror=alert(9)>.txt", exact=True)).to_be_visible()
        page.get_by_role("button", name="Up to " + str(work)).click()
        page.get_by_label("Protect " + str(data), exact=True).check()
        expect(page.get_by_label("Folders and files on web9")).to_have_value(str(data))
        shot(page, "configure-on-a-server")
        page.get_by_role("button", name="Next", exact=True).click()
        expect(page.get_by_text("Protect web9-data on web9 with policy nightly.")).to_be_visible()
        page.get_by_role("button", name="Enable backup").click()
        expect(page.locator("#enable-result")).to_contain_text("Protected - Warning (initial backup pending)")

        # backed up now, on web9, by its agent
        visit(page, V + "/items/web9-data")
        page.get_by_role("button", name="Backup now").click()
        expect(page.locator("#job-state")).to_have_text("Completed", timeout=TIMEOUT)

        # one file restored onto web9, into its restore root
        visit(page, V + "/items/web9-data")
        page.get_by_role("link", name="Restore").first.click()
        page.get_by_label("Files and folders I pick").check()
        for part in [p for p in str(data).split("/") if p] + ["etc"]:
            page.get_by_role("button", name=part + "/").click()
        page.get_by_label("Restore " + str(data / "etc" / "app.conf")).check()
        page.get_by_label("Restore into").fill(str(roots / "r1"))
        page.get_by_role("button", name="Restore", exact=True).click()
        expect(page.locator("#job-state")).to_have_text("Completed", timeout=TIMEOUT)
        restored = roots / "r1" / str(data / "etc" / "app.conf").lstrip("/")
        assert restored.read_bytes() == config, "the file restored onto web9 differs"

        # a VM web9 defines, found by its agent, protected on it
        libvirt = work / "web9-libvirt"
        libvirt.mkdir()
        xml = (work / "vms" / "web01.xml").read_text().replace("<name>web01</name>", "<name>app01</name>")
        (libvirt / "app01.xml").write_text(xml)
        configure(page, V, "web9", "Virtual machines", "nightly")
        page.get_by_label("Folder of VM definitions (libvirt XML) on web9").fill(str(libvirt))
        page.get_by_role("button", name="Discover VMs").click()
        page.get_by_label("Protect app01").check()
        page.get_by_role("button", name="Next", exact=True).click()
        page.get_by_role("button", name="Enable backup").click()
        expect(page.locator("#enable-result")).to_contain_text("Protected - Warning (initial backup pending)")
        visit(page, V + "/items/app01")
        expect(page.locator("#item-host")).to_have_text("web9")
    finally:
        agent.terminate()
        agent.wait(timeout=30)


def guarded(page, browser, base, work):
    """The Security page: a Contributor binds a guard and makes the vault
    immutable; disabling it waits for the guard, who logs in with a
    SecurityAdmin token (seeing nothing else), approves in the browser with
    the guard's passphrase (a wrong one refused), and the change goes
    through once."""
    F = base + "/#/v/first"
    visit(page, F + "/security")
    expect(page.locator("#guard-bound")).to_contain_text("No guard")
    page.get_by_label("The guard's identity").fill((work / "guard.id").read_text())
    page.get_by_label("Its name").fill("sec-team")
    page.get_by_role("button", name="Bind the guard").click()
    expect(page.locator("#guard-bound")).to_contain_text("Bound to guard sec-team")
    page.get_by_label("Immutability (no point").select_option("enabled")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#toast")).to_contain_text("Settings saved")
    visit(page, F + "/security")
    page.get_by_label("Immutability (no point").select_option("disabled")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#approval-needed")).to_contain_text("needs the approval of guard sec-team")
    shot(page, "security-request")

    guard = browser.new_context(viewport={"width": 1280, "height": 900}, ignore_https_errors=True).new_page()
    guard.set_default_timeout(TIMEOUT)
    guard.goto(base + "/")
    guard.get_by_label("Access token").fill((work / "sec.token").read_text().strip())
    guard.keyboard.press("Enter")
    guard.get_by_role("link", name="first").click()
    expect(guard.get_by_role("heading", name="Security")).to_be_visible()
    # nothing else of the vault: one link in the navigation
    expect(guard.locator("#nav a")).to_have_count(1)
    row = guard.get_by_role("row", name=re.compile("Pending"))
    expect(row).to_contain_text("immutability enabled to disabled")
    row.get_by_label("Guard passphrase").fill("not the guard's passphrase")
    row.get_by_role("button", name="Approve").click()
    expect(guard.locator("#security-out")).to_contain_text("wrong passphrase for guard sec-team")
    row.get_by_label("Guard passphrase").fill(GUARD_PASS)
    row.get_by_role("button", name="Approve").click()
    expect(guard.get_by_role("row", name=re.compile("Approved"))).to_be_visible()
    shot(guard, "security-approved")
    guard.context.close()

    visit(page, F + "/security")
    page.get_by_label("Immutability (no point").select_option("disabled")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#toast")).to_contain_text("Settings saved")
    visit(page, F + "/security")
    expect(page.get_by_label("Immutability (no point")).to_have_value("disabled")
    expect(page.get_by_role("row", name=re.compile("Used"))).to_be_visible()


def flows(page, browser, base, work, docs, vms, payload, token, errors):
    if True:
        if True:

            # log in with the keyboard alone
            page.goto(base + "/")
            expect(page.get_by_role("heading", name="Log in")).to_be_visible()
            shot(page, "login")
            page.keyboard.type(token)  # the token field has the focus
            page.keyboard.press("Enter")
            expect(page.get_by_role("heading", name="Vaults")).to_be_visible()
            expect(page.get_by_role("link", name="first")).to_be_visible()

            # create a vault: name rules, replication chosen first
            page.get_by_label("Name (letters").fill("bad name")
            page.get_by_label("Store:").fill(str(work / "portal-vault"))
            page.get_by_role("button", name="Create vault").click()
            # the browser refuses the name by its pattern; the server by its rules
            page.get_by_label("Name (letters").fill("portal")
            page.get_by_label("Storage replication").select_option("lrs")
            page.get_by_role("button", name="Create vault").click()
            expect(page.get_by_role("heading", name="Vault portal")).to_be_visible()
            V = base + "/#/v/portal"

            # configure backup: a folder
            visit(page, V + "/configure")
            expect(page.get_by_label("Back up what is on")).to_have_value("")  # this server, first
            page.get_by_role("button", name="Next").click()
            page.get_by_label("Files and folders").check()
            page.get_by_role("button", name="Next").click()
            page.get_by_label("Policy name").fill("nightly")
            page.get_by_label("Daily backup at").fill("01:30")
            page.get_by_label("Daily points, days").fill("14")
            page.get_by_label("Weekly points (Sunday)").fill("8")
            page.get_by_role("button", name="Create policy").click()
            page.get_by_label("Item name").fill("docs")
            page.get_by_label("Folders and files").fill(str(docs))
            page.get_by_role("button", name="Next").click()
            shot(page, "configure-backup")
            page.get_by_role("button", name="Enable backup").click()
            expect(page.locator("#enable-result")).to_contain_text("Protected - Warning (initial backup pending)")

            # configure backup: a VM found by discovery
            configure(page, V, "", "Virtual machines", "nightly")
            page.get_by_label("Folder of VM definitions").fill(str(vms))
            page.get_by_role("button", name="Discover VMs").click()
            page.get_by_label("Protect web01").check()
            page.get_by_role("button", name="Next").click()
            page.get_by_role("button", name="Enable backup").click()
            expect(page.locator("#enable-result")).to_contain_text("Protected - Warning (initial backup pending)")

            # back up now with a retain-until date from the calendar
            visit(page, V + "/items/docs")
            expect(page.locator("#protection")).to_contain_text("initial backup pending")
            until = page.get_by_label("Keep this recovery point until")
            until.fill(time.strftime("%Y-%m-%d", time.localtime(time.time() + 45 * 86400)))
            shot(page, "item")
            page.get_by_role("button", name="Backup now").click()
            expect(page.locator("#job-state")).to_have_text("Completed", timeout=TIMEOUT)
            bar = page.locator("progress").first
            expect(bar).to_have_attribute("value", "1")
            shot(page, "job")

            # the point, its expiry, then restore one file by browsing
            visit(page, V + "/items/docs")
            expect(page.locator("#protection")).to_have_text("Protected")
            expect(page.get_by_role("link", name="Restore")).to_have_count(1)
            expect(page.get_by_role("cell", name=re.compile("^ad-hoc until"))).to_be_visible()
            page.get_by_role("link", name="Restore").first.click()
            page.get_by_label("Files and folders I pick").check()
            for part in [p for p in str(docs).split("/") if p] + ["reports"]:
                page.get_by_role("button", name=part + "/").click()
            page.get_by_label("Restore " + str(docs / "reports" / "q3.bin")).check()
            shot(page, "restore")
            page.get_by_label("Restore into").fill(str(work / "restores" / "r1"))
            page.get_by_role("button", name="Restore", exact=True).click()
            expect(page.locator("#job-state")).to_have_text("Completed", timeout=TIMEOUT)
            restored = work / "restores" / "r1" / str(docs / "reports" / "q3.bin").lstrip("/")
            assert restored.read_bytes() == payload, "restored bytes differ"
            assert not (work / "restores" / "r1" / str(docs / "readme.txt").lstrip("/")).exists()

            # a restore outside the allowed folders is refused, with the field named
            visit(page, V + "/items/docs")
            page.get_by_role("link", name="Restore").first.click()
            page.get_by_label("Restore into").fill(str(work / "elsewhere"))
            page.get_by_role("button", name="Restore", exact=True).click()
            expect(page.get_by_role("alert")).to_contain_text("(target)")
            assert not (work / "elsewhere").exists()

            # a backup that fails raises an alert
            docs.rename(work / "docs-moved")
            visit(page, V + "/items/docs")
            page.get_by_role("button", name="Backup now").click()
            expect(page.locator("#job-state")).to_have_text("Failed", timeout=TIMEOUT)
            visit(page, V + "/alerts")
            expect(page.get_by_role("cell", name="docs", exact=True)).to_be_visible()
            shot(page, "alerts")

            # jobs with their progress bars, the dashboard and its charts
            visit(page, V + "/jobs")
            expect(page.get_by_role("cell", name="Backup").first).to_be_visible()
            shot(page, "jobs")
            visit(page, V)
            expect(page.locator("#tile-jobs")).to_contain_text("Failed: 1")
            expect(page.locator("svg.chart")).to_have_count(2)
            shot(page, "dashboard")
            visit(page, V + "/policies")
            expect(page.get_by_role("cell", name="nightly")).to_be_visible()
            shot(page, "policies")

            # protected servers: one added with single-use credentials,
            # registered from its own folder, then unregistered
            visit(page, V + "/servers")
            expect(page.get_by_role("heading", name="Protected servers")).to_be_visible()
            page.get_by_label("Address servers reach").fill(base)
            page.get_by_role("button", name="Add a server").click()
            creds = page.locator("#credentials-text").inner_text()
            (work / "web9.creds").write_text(creds)

            def register_env(name):
                return {"PATH": os.environ["PATH"], "HOME": str(work / name), "BOVEDA_HOST_DIR": str(work / name / "boveda")}

            def register(name):
                return subprocess.run([BIN, "host", "register", "--credentials", str(work / "web9.creds"),
                                       "--name", name], env=register_env(name), capture_output=True, text=True,
                                      timeout=60)
            out = register("web9")
            assert out.returncode == 0, out.stderr
            visit(page, V + "/servers")
            row = page.get_by_role("row", name=re.compile("web9"))
            expect(row).to_contain_text("Online")
            shot(page, "servers")
            on_a_registered_server(page, V, work, register_env("web9"))
            visit(page, V + "/servers")
            row = page.get_by_role("row", name=re.compile("^web9 "))
            expect(row.get_by_role("link", name="web9-data")).to_be_visible()
            page.once("dialog", lambda d: d.accept())
            row.get_by_role("button", name="Unregister").click()
            expect(page.get_by_role("row", name=re.compile("web9"))).to_contain_text("Unregistered")
            out = register("web10")
            assert out.returncode != 0 and "used already" in out.stderr, out.stderr

            guarded(page, browser, base, work)

            # phone width: nothing wider than the screen
            phone = page.context.new_page()
            phone.set_viewport_size({"width": 390, "height": 844})
            phone.set_default_timeout(TIMEOUT)
            visit(phone, base + "/#/v/portal/items")  # the session cookie is shared
            expect(phone.get_by_role("heading", name="Items")).to_be_visible()
            width = phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"the items page is {width} px wide at phone width"
            visit(phone, base + "/#/v/portal")
            expect(phone.locator("#tile-storage")).to_be_visible()
            width = phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"the dashboard is {width} px wide at phone width"
            shot(phone, "dashboard-phone")

            # no script error on any page
            assert not errors, errors


if __name__ == "__main__":
    main()
