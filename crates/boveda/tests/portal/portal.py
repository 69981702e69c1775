"""The portal in a real headless Chromium, against a real `boveda serve`.

Run by crates/boveda/tests/e2e/portal.rs with:
  BOVEDA_BIN      the boveda binary
  BOVEDA_SHOTS    where to save screenshots (docs/screenshots to refresh them)
  BOVEDA_TEST_AXE axe-core's axe.min.js (every page is checked with it)
  CHROMIUM        the browser (Debian's /usr/bin/chromium)

One scenario per task a user does, each asserting what the page shows and
what happened on disk: logging in with the keyboard; creating a vault; the
configure-backup wizard checking each step, keeping entries across Back and
Forward and reviewing before it enables; backing up now and following the
job's progress to its real totals; a backup watched while it runs (phase,
files of the previous point's total, a percentage and the time left);
restoring a file (and being refused outside the allowed folders) and
downloading files, compared byte for byte; a disk restored as an image file;
policies created (hourly too), changed after seeing what the change does,
deleted; an item's policy changed, its protection stopped, resumed, its
data deleted and undeleted; e-mail settings, a test message and an alert
received by a real SMTP server; the webhook set and cleared; a token made
for one item with an expiry, and one for a Reader, whose view has no
button or form it may not use, then revoked; a failed backup turning the
open item page red by itself, then the dashboard, its alert acknowledged, then resolved by a backup
that succeeds; jobs filtered, and a new job appearing without a reload;
reports and their CSV; the Backup center; a protected server added,
configured through its agent, backed up and restored onto, unregistered;
the guard's approval signed in the browser; every page at phone width with
nothing wider than the screen, and every page checked by axe-core with no
serious or critical violation. Screenshots at 1366 and 390 px.
"""

import io
import os
import re
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

BIN = os.environ["BOVEDA_BIN"]
SHOTS = Path(os.environ.get("BOVEDA_SHOTS") or tempfile.mkdtemp(prefix="boveda-shots-"))
AXE = os.environ.get("BOVEDA_TEST_AXE") or sys.exit("BOVEDA_TEST_AXE is not set: scripts/test.sh installs axe-core from npm")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
TIMEOUT = 60_000
GUARD_PASS = "the guard's own long passphrase"
SMTP_PASS = "smtp secret"
WIDE = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}


def run(env, *args):
    out = subprocess.run([BIN, *args], env=env, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        sys.exit(f"boveda {' '.join(args)} failed: {out.stderr}")
    return out.stdout


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def certificates(work):
    """A private CA, and a certificate for 127.0.0.1 it signed (the SMTP
    server's); the portal's server gets a self-signed one."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-days", "1", "-subj", "/CN=portal-test", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(work / "key.pem"), "-out", str(work / "cert.pem"))
    openssl("req", "-x509", *ec, "-days", "1", "-subj", "/CN=test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign", "-keyout", str(work / "ca.key"), "-out", str(work / "ca.pem"))
    openssl("req", *ec, "-subj", "/CN=127.0.0.1", "-keyout", str(work / "smtp.key"), "-out", str(work / "smtp.csr"))
    (work / "smtp.ext").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-days", "1", "-in", str(work / "smtp.csr"), "-CA", str(work / "ca.pem"), "-CAkey",
            str(work / "ca.key"), "-CAcreateserial", "-extfile", str(work / "smtp.ext"), "-out", str(work / "smtp.pem"))


def start_server(env, work):
    """Over HTTPS, with a certificate of its own (registered servers pin it)."""
    log = open(work / "serve.log", "w+")
    proc = subprocess.Popen(
        [BIN, "serve", "first", "--listen", "127.0.0.1:0", "--restore-root", str(work / "restores"),
         "--poll-secs", "1", "--insecure-fast-kdf", "--tls-cert", str(work / "cert.pem"), "--tls-key", str(work / "key.pem")],
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


def start_smtp(work):
    """aiosmtpd with STARTTLS and a login (tests/smtp/smtp_server.py)."""
    script = Path(__file__).parent.parent / "smtp" / "smtp_server.py"
    proc = subprocess.Popen([sys.executable, str(script), str(work / "mail"), str(work / "smtp.pem"), str(work / "smtp.key"),
                             "alerts", SMTP_PASS], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.match(r"ready (\d+)", line)
    if not m:
        sys.exit(f"the SMTP server did not start: {line}")
    return proc, int(m.group(1))


def mails(work, n, wait=20):
    """The messages the SMTP server kept, oldest first, waiting for `n`."""
    deadline = time.time() + wait
    while True:
        found = sorted((work / "mail").glob("*.eml"), key=lambda p: int(p.stem)) if (work / "mail").exists() else []
        if len(found) >= n or time.time() > deadline:
            return [p.read_text() for p in found]
        time.sleep(0.2)


class Checks:
    """Screenshots, and axe-core run on every page the test shows."""

    def __init__(self):
        self.violations = []
        self.pages = 0

    def shot(self, page, name):
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def axe(self, page, name):
        page.wait_for_timeout(300)
        if not page.evaluate("typeof axe !== 'undefined'"):
            page.add_script_tag(path=AXE)
        found = page.evaluate("""async () => (await axe.run(document, { resultTypes: ['violations'] })).violations
            .filter((v) => v.impact === 'serious' || v.impact === 'critical')
            .map((v) => v.impact + ' ' + v.id + ': ' + v.help + ' at ' + v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', '))""")
        self.pages += 1
        self.violations += [f"{name}: {v}" for v in found]

    def look(self, page, name, phone=None):
        """Checks the page with axe, saves it at 1366 px; with `phone`, the
        same page at 390 px, nothing wider than the screen."""
        self.axe(page, name)
        self.shot(page, name)
        if phone is not None:
            # the same tab state (the wizard keeps its entries in the tab's
            # session storage): the phone shows the same step, not step 1
            stored = page.evaluate("JSON.stringify(Object.assign({}, sessionStorage))")
            phone.goto(page.url)
            phone.evaluate("(s) => { for (const [k, v] of Object.entries(JSON.parse(s))) sessionStorage.setItem(k, v); }", stored)
            phone.reload()
            expect(phone.locator("h1")).to_have_text(page.locator("h1").inner_text())
            phone.wait_for_timeout(700)
            self.fits(phone, name)
            self.axe(phone, name + " (phone)")
            self.shot(phone, name + "-phone")

    @staticmethod
    def fits(pg, name):
        width = pg.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{name} is {width} px wide at phone width"

    def narrow(self, pg, name):
        """A page as it is (another browser context's: a Reader's, the
        guard's) at 390 px too, then back at its own width."""
        before = pg.viewport_size
        pg.set_viewport_size(PHONE)
        pg.wait_for_timeout(700)
        self.fits(pg, name)
        self.axe(pg, name + " (phone)")
        self.shot(pg, name + "-phone")
        pg.set_viewport_size(before)


def visit(page, url):
    """Opens a page of the portal afresh (a link to the page shown does
    not change the URL, so the page is loaded again)."""
    page.goto(url)
    page.reload()
    expect(page.locator("h1")).to_be_visible()


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
    (docs / "cache.tmp").write_text("left out\n")
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
    certificates(work)

    run(env, "vault", "create", "first", "--store", str(work / "first"), "--insecure-fast-kdf")
    token = run(env, "--vault", "first", "token", "create", "--role", "Contributor", "--description", "portal test").strip()
    (work / "guard.id").write_text(run(dict(env, BOVEDA_GUARD_PASSPHRASE=GUARD_PASS), "guard", "create").strip())
    (work / "sec.token").write_text(
        run(env, "--vault", "first", "token", "create", "--role", "SecurityAdmin", "--description", "the guard").strip())
    # the vault "first" protects things too: a folder whose backups started
    # by the server are paced (BOVEDA_TEST_BACKUP_PACE), to watch one run,
    # and a disk image, to restore as an image file
    paced = work / "paced"
    paced.mkdir()
    for i in range(20):
        (paced / f"f{i:02}.txt").write_text(f"paced file {i}\n" * 100)
    image = work / "img.raw"
    with open(image, "wb") as f:
        f.truncate(16 << 20)
        f.seek(4 << 20)
        f.write(bytes((i * 131) % 256 for i in range(1 << 20)))
    for args in (["item", "add", "files", "paced", "--path", str(paced)], ["protection", "backup-now", "paced"],
                 ["item", "add", "disk", "img", "--path", str(image)], ["protection", "backup-now", "img"]):
        run(env, "--vault", "first", *args)
    env["BOVEDA_TEST_BACKUP_PACE"] = "paced:400"
    proc, base = start_server(env, work)
    smtp, smtp_port = start_smtp(work)
    checks = Checks()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            context = browser.new_context(viewport=WIDE, ignore_https_errors=True, bypass_csp=True, accept_downloads=True)
            page = context.new_page()
            page.set_default_timeout(TIMEOUT)
            phone = context.new_page()
            phone.set_viewport_size(PHONE)
            phone.set_default_timeout(TIMEOUT)
            errors = []
            for pg in (page, phone):
                pg.on("pageerror", lambda e: errors.append(str(e)))
            t = Test(page, phone, browser, base, work, docs, vms, payload, token, checks, smtp_port)
            try:
                t.all()
            except Exception:
                checks.shot(page, "failure")
                print("the page showed:\n" + page.inner_text("body"), file=sys.stderr)
                raise
            assert not errors, errors
            browser.close()
    finally:
        smtp.terminate()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            sys.exit("boveda serve did not stop on SIGTERM")
    assert not checks.violations, "axe-core found serious or critical violations:\n" + "\n".join(checks.violations)
    print(f"portal test passed; {checks.pages} page views checked by axe-core; screenshots in {SHOTS}")


class Test:
    def __init__(self, page, phone, browser, base, work, docs, vms, payload, token, checks, smtp_port):
        self.page, self.phone, self.browser, self.base, self.work = page, phone, browser, base, work
        self.docs, self.vms, self.payload, self.token, self.checks, self.smtp_port = docs, vms, payload, token, checks, smtp_port
        self.V = base + "/#/v/portal"

    def all(self):
        self.login_and_create_a_vault()
        self.the_wizard_checks_each_step_and_keeps_entries()
        self.backup_now_shows_honest_progress()
        self.a_running_backup_shows_how_far_it_is()
        self.restore_says_where_and_downloads_compare()
        self.a_disk_restores_as_an_image_file()
        self.verify_now_proves_a_point()
        self.a_vm_restores_as_a_new_vm()
        self.policies_are_created_changed_and_deleted()
        self.an_item_changes_policy_stops_resumes_deletes_and_undeletes()
        self.email_settings_and_a_test_message()
        self.a_reader_sees_no_button_it_may_not_use()
        self.a_failure_turns_red_then_green()
        self.jobs_filter_and_update_live()
        self.reports_and_the_backup_center()
        self.protected_servers()
        self.guarded()
        self.every_page_at_both_widths()

    def saved(self, button, then):
        """Clicks a settings form's button, sees it saved, opens `then`."""
        self.page.get_by_role("button", name=button, exact=True).click()
        expect(self.page.locator("#toast")).to_contain_text("Settings saved")
        visit(self.page, then)

    # --- scenarios ------------------------------------------------------

    def login_and_create_a_vault(self):
        page = self.page
        page.goto(self.base + "/")
        expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        self.checks.look(page, "login")
        self.phone.goto(self.base + "/")
        expect(self.phone.get_by_role("heading", name="Log in")).to_be_visible()
        self.checks.narrow(self.phone, "login")
        page.keyboard.type(self.token)  # the token field has the focus
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name="Vaults")).to_be_visible()
        expect(page.get_by_role("link", name="first")).to_be_visible()
        page.get_by_label("Name (letters").fill("bad name")
        page.get_by_label("Store:").fill(str(self.work / "portal-vault"))
        page.get_by_role("button", name="Create vault").click()
        # the browser refuses the name by its pattern: still on the page
        expect(page.get_by_role("heading", name="Vaults")).to_be_visible()
        page.get_by_label("Name (letters").fill("portal")
        page.get_by_label("Storage replication").select_option("lrs")
        page.get_by_role("button", name="Create vault").click()
        expect(page.get_by_role("heading", name="Vault portal")).to_be_visible()
        # an empty vault says what to do next
        expect(page.locator("#tile-health")).to_contain_text("Configure backup")

    def the_wizard_checks_each_step_and_keeps_entries(self):
        page, V, docs = self.page, self.V, self.docs
        visit(page, V + "/configure")
        expect(page.get_by_label("Back up what is on")).to_have_value("")
        page.get_by_role("button", name="Next").click()
        self.checks.axe(page, "configure (goal)")
        page.get_by_label("Files and folders").check()
        page.get_by_role("button", name="Next").click()
        self.checks.axe(page, "configure (policy)")
        page.get_by_label("Policy name").fill("nightly")
        page.get_by_label("Backup at").fill("01:30")
        page.get_by_label("Every point, days").fill("14")
        page.get_by_label("Weekly points, weeks").fill("8")
        page.get_by_role("button", name="Create policy").click()
        # the items step refuses a relative path, then a missing one, there
        page.get_by_label("Item name").fill("docs")
        page.get_by_label("Folders and files").fill("docs")
        page.get_by_role("button", name="Next").click()
        expect(page.get_by_role("alert")).to_contain_text("docs is not an absolute path on this server")
        page.get_by_label("Folders and files").fill(str(self.work / "no-such-folder"))
        page.get_by_role("button", name="Next").click()
        expect(page.get_by_role("alert")).to_contain_text("does not exist")
        expect(page.get_by_label("Folders and files")).to_have_attribute("aria-invalid", "true")
        page.get_by_label("Folders and files").fill(str(docs))
        page.get_by_label("Leave out").fill("*.tmp")
        # the browser's Back and Forward keep what was entered
        page.go_back()
        expect(page.get_by_label("Use a policy")).to_have_value("nightly")
        page.go_forward()
        expect(page.get_by_label("Item name")).to_have_value("docs")
        expect(page.get_by_label("Folders and files")).to_have_value(str(docs))
        expect(page.get_by_label("Leave out")).to_have_value("*.tmp")
        self.checks.look(page, "configure-items", self.phone)
        expect(self.phone.get_by_label("Folders and files")).to_have_value(str(docs))
        page.get_by_role("button", name="Next").click()
        # the review: paths, excludes, schedule
        review = page.locator("main")
        expect(review).to_contain_text(str(docs))
        expect(review).to_contain_text("leaving out *.tmp")
        expect(review).to_contain_text("daily at 01:30")
        self.checks.look(page, "configure-backup", self.phone)
        expect(self.phone.locator("main")).to_contain_text("leaving out *.tmp")
        # the steps reached are links back
        expect(page.get_by_role("link", name="3. Policy")).to_be_visible()
        page.get_by_role("button", name="Enable backup").click()
        expect(page.locator("#enable-result")).to_contain_text("Protected - Warning (initial backup pending)")
        enable = page.get_by_role("button", name="Enable backup")
        expect(enable).to_be_disabled()
        # and looks it (it looked enabled): not the accent colour
        look = enable.evaluate("(b) => getComputedStyle(b).backgroundColor + ' ' + getComputedStyle(b).cursor")
        assert look == "rgb(228, 233, 238) not-allowed", look

        # a VM found by discovery
        visit(page, V + "/configure")
        page.get_by_role("button", name="Next").click()
        page.get_by_label("Virtual machines").check()
        page.get_by_role("button", name="Next").click()
        page.get_by_label("Use a policy").select_option("nightly")
        page.get_by_role("button", name="Next").first.click()
        page.get_by_role("button", name="Next", exact=True).click()
        expect(page.get_by_role("alert")).to_contain_text("Select at least one VM")
        page.get_by_label("Folder of VM definitions").fill(str(self.vms))
        page.get_by_role("button", name="Discover VMs").click()
        page.get_by_label("Protect web01").check()
        page.get_by_role("button", name="Next", exact=True).click()
        expect(page.locator("main")).to_contain_text("VM web01")
        page.get_by_role("button", name="Enable backup").click()
        expect(page.locator("#enable-result")).to_contain_text("Protected - Warning (initial backup pending)")

    def backup_now_shows_honest_progress(self):
        page, V = self.page, self.V
        visit(page, V + "/items/docs")
        expect(page.locator("#item-protects")).to_contain_text(str(self.docs))
        expect(page.locator("#item-protects")).to_contain_text("excluding *.tmp")
        expect(page.locator("#health")).to_contain_text("initial backup pending")
        until = page.get_by_label("Keep this recovery point until")
        until.fill(time.strftime("%Y-%m-%d", time.localtime(time.time() + 45 * 86400)))
        self.checks.look(page, "item", self.phone)
        page.get_by_role("button", name="Backup now").click()
        expect(page.locator("#job-state")).to_have_text("Completed", timeout=TIMEOUT)
        expect(page.locator("h1")).to_contain_text("Backup of docs")
        details = page.locator("#job-details")
        # the regression: a finished backup said "Bytes written 0 B" and
        # "Files 0"; now its real totals and what it stored
        expect(details.get_by_role("row", name=re.compile("^Files"))).to_contain_text("2 of 2")
        stored = details.get_by_role("row", name=re.compile("^Stored in the vault")).inner_text()
        assert re.search(r"[1-9][0-9.]* (KiB|MiB)", stored), stored
        expect(page.locator("progress").first).to_have_attribute("value", "1.000")
        self.checks.look(page, "job", self.phone)

    def a_running_backup_shows_how_far_it_is(self):
        """A backup watched while it runs (the regression: "0 B, Files 0,
        Phase -" and an indeterminate bar until it jumped to Completed):
        its phase, files against the previous point's totals, a percentage
        and the time left, then the real totals. The server paces this
        item's files (400 ms each), so the run takes about 8 s."""
        page = self.page
        F = self.base + "/#/v/first"
        visit(page, F + "/items/paced")
        page.get_by_role("button", name="Backup now").click()
        expect(page.locator("#job-state")).to_have_text("In progress")
        details = page.locator("#job-details")
        expect(details.get_by_role("row", name=re.compile("^Phase"))).to_contain_text("backing up")
        # files done against the totals the last point had, while it runs
        expect(details.get_by_role("row", name=re.compile("^Files"))).to_contain_text(re.compile(r"^Files\s*[1-9][0-9]? of about 20"))
        label = page.locator(".progress span").first
        expect(label).to_have_text(re.compile(r"^[0-9]{1,2}% \(estimated\), about [0-9]+ s left$"))
        value = float(page.locator("progress").first.get_attribute("value"))
        assert 0 < value < 1, value
        expect(details.get_by_role("row", name=re.compile("^Time left"))).to_contain_text("about")
        self.checks.shot(page, "job-running")
        expect(page.locator("#job-state")).to_have_text("Completed", timeout=TIMEOUT)
        expect(details.get_by_role("row", name=re.compile("^Files"))).to_contain_text("20 of 20")
        expect(page.locator("progress").first).to_have_attribute("value", "1.000")

    def restore_says_where_and_downloads_compare(self):
        page, V, docs, work = self.page, self.V, self.docs, self.work
        visit(page, V + "/items/docs")
        expect(page.locator("#protection")).to_have_text("Protected")
        expect(page.locator("#health")).to_contain_text("Healthy")
        expect(page.get_by_role("link", name=re.compile("^Restore"))).to_have_count(1)
        visit(self.phone, V + "/items/docs")
        restore = self.phone.get_by_role("link", name=re.compile("^Restore"))
        expect(restore).to_have_text("Restore")
        box = restore.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], f"Restore is cut at phone width: {box}"
        # one expiry per row, with its zone (the regression: two times in two zones)
        row = page.locator("tbody tr").first
        expect(row.get_by_role("cell", name=re.compile("^ad-hoc"))).to_be_visible()
        assert len(re.findall(r"\b(UTC|GMT|[A-Z]{3,4})\b", row.inner_text())) == 2, row.inner_text()
        page.get_by_role("link", name=re.compile("^Restore")).first.click()
        # the folders the server restores into are shown before anything
        expect(page.locator("#restore-roots-note")).to_contain_text(str(work / "restores"))
        page.get_by_label("Files and folders I pick").check()
        for part in [p for p in str(docs).split("/") if p] + ["reports"]:
            page.get_by_role("button", name=part + "/").click()
        page.get_by_label("Restore " + str(docs / "reports" / "q3.bin")).check()
        self.checks.look(page, "restore", self.phone)
        # downloaded to the browser, byte for byte
        with page.expect_download() as got:
            page.locator("#download").click()
        data = Path(got.value.path()).read_bytes()
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            names = [m.name for m in tar.getmembers() if m.isfile()]
            assert len(names) == 1 and names[0].endswith("reports/q3.bin"), names
            assert tar.extractfile(names[0]).read() == self.payload, "downloaded bytes differ"
        # restored on the server, and the job says where
        target = work / "restores" / "r1"
        page.get_by_label("Restore into").fill(str(target))
        page.get_by_role("button", name="Restore", exact=True).click()
        expect(page.locator("#job-state")).to_have_text("Completed", timeout=TIMEOUT)
        expect(page.locator("#job-details")).to_contain_text("into " + str(target))
        expect(page.locator("#job-details").get_by_role("row", name=re.compile("^Files"))).to_contain_text("1 of 1")
        restored = target / str(docs / "reports" / "q3.bin").lstrip("/")
        assert restored.read_bytes() == self.payload, "restored bytes differ"
        assert not (target / str(docs / "readme.txt").lstrip("/")).exists()
        # outside the allowed folders: refused in words, the field marked
        visit(page, V + "/items/docs")
        page.get_by_role("link", name=re.compile("^Restore")).first.click()
        page.get_by_label("Restore into").fill(str(work / "elsewhere"))
        page.get_by_role("button", name="Restore", exact=True).click()
        expect(page.get_by_role("alert")).to_contain_text("restore")
        expect(page.get_by_role("alert")).not_to_contain_text("(target)")
        expect(page.get_by_label("Restore into")).to_have_attribute("aria-invalid", "true")
        assert not (work / "elsewhere").exists()

    def a_disk_restores_as_an_image_file(self):
        """A disk's restore target is the image file to write (the
        regression: a field labelled as a folder made a file `disk-whole`
        in it); the file written holds the disk's bytes."""
        page, work = self.page, self.work
        F = self.base + "/#/v/first"
        visit(page, F + "/items/img")
        page.get_by_role("link", name=re.compile("^Restore")).first.click()
        target = page.get_by_label("Restore into (the image file to write")
        expect(target).to_have_value(str(work / "restores" / "img.img"))
        target.fill(str(work / "restores" / "img-restored.raw"))
        page.get_by_role("button", name="Restore", exact=True).click()
        expect(page.locator("#job-state")).to_have_text("Completed", timeout=TIMEOUT)
        expect(page.locator("#job-details")).to_contain_text("as the image file " + str(work / "restores" / "img-restored.raw"))
        restored = work / "restores" / "img-restored.raw"
        assert restored.is_file(), list((work / "restores").rglob("*"))
        assert restored.read_bytes() == (work / "img.raw").read_bytes(), "the restored image differs from the disk"

    def verify_now_proves_a_point(self):
        page, V = self.page, self.V
        visit(page, V + "/items/docs")
        expect(page.locator("#item-verified")).to_contain_text("Never")
        page.get_by_role("button", name="Verify now").click()
        expect(page.locator("#job-state")).to_have_text("Completed", timeout=TIMEOUT)
        expect(page.locator("h1")).to_contain_text("Verification of docs")
        expect(page.locator("#job-details")).to_contain_text("a full restore takes about")
        visit(page, V + "/items/docs")
        expect(page.locator("#item-verified")).to_contain_text("Passed")
        expect(page.locator("#item-verified")).to_contain_text("a full restore takes under a second")
        expect(page.locator("tbody tr").first.locator(".verified")).to_contain_text("Passed")
        self.checks.look(page, "item-verified", self.phone)

    def a_vm_restores_as_a_new_vm(self):
        page, V, work = self.page, self.V, self.work
        name = "web01-portal-%d" % os.getpid()
        try:
            visit(page, V + "/items/web01")
            page.get_by_role("button", name="Backup now").click()
            expect(page.locator("#job-state")).to_have_text("Completed", timeout=TIMEOUT)
            visit(page, V + "/items/web01")
            page.get_by_role("link", name=re.compile("^Restore")).first.click()
            # replacing the disks hides the target: they go where the VM has them
            page.get_by_label("Restore the VM as").select_option("replace_disks")
            expect(page.get_by_label("Restore into")).to_be_hidden()
            expect(page.get_by_label("Type the VM's name")).to_be_visible()
            page.get_by_label("Restore the VM as").select_option("new_vm")
            page.get_by_label("Name of the new VM").fill(name)
            page.get_by_label("Restore into").fill(str(work / "restores" / "vm"))
            self.checks.look(page, "restore-vm", self.phone)
            page.get_by_role("button", name="Restore", exact=True).click()
            expect(page.locator("#job-state")).to_have_text("Completed", timeout=TIMEOUT)
            expect(page.locator("#job-details")).to_contain_text("new VM " + name + " defined in libvirt")
            uuid = subprocess.run(["virsh", "domuuid", name], capture_output=True, text=True, check=True).stdout.strip()
            assert len(uuid) == 36, uuid
            assert (work / "restores" / "vm" / (name + "-vda.img")).exists()
        finally:
            subprocess.run(["virsh", "undefine", name], capture_output=True)

    def policies_are_created_changed_and_deleted(self):
        page, V = self.page, self.V
        visit(page, V + "/policies")
        # several backups a day, in the policy's own zone
        page.get_by_label("Policy name").fill("enhanced")
        page.locator("#policy-frequency").select_option("hourly")
        page.locator("#policy-every").select_option("6")
        page.locator("#policy-window-start").fill("06:00")
        page.get_by_label("For, hours").fill("18")
        page.get_by_label("Time zone of the schedule").fill("Europe/Madrid")
        page.get_by_label("Every point, days").fill("7")
        page.get_by_role("button", name="Create policy").click()
        row = page.get_by_role("row", name=re.compile("^enhanced"))
        expect(row).to_contain_text("every 6 h from 06:00 for 18 h (06:00, 12:00, 18:00)")
        expect(row).to_contain_text("Europe/Madrid")
        # a bad name is called a policy name (the browser's own check taken
        # away, so the server's answer shows)
        page.get_by_label("Policy name").evaluate("(i) => i.removeAttribute('pattern')")
        page.get_by_label("Policy name").fill("bad name")
        page.get_by_role("button", name="Create policy").click()
        expect(page.get_by_role("alert")).to_contain_text("invalid policy name")
        expect(page.get_by_role("alert")).not_to_contain_text("item name")
        expect(page.get_by_label("Policy name")).to_have_attribute("aria-invalid", "true")
        page.get_by_label("Policy name").fill("spare")
        page.get_by_role("button", name="Create policy").click()
        expect(page.get_by_role("row", name=re.compile("^spare"))).to_be_visible()
        self.checks.look(page, "policies", self.phone)
        # changed: what it does to existing points first, then applied
        page.get_by_role("link", name="nightly").click()
        expect(page.get_by_role("heading", name="Policy nightly")).to_be_visible()
        page.get_by_label("Every point, days").fill("7")
        page.get_by_role("button", name="Review the change").click()
        expect(page.locator("#policy-plan-result")).to_contain_text(re.compile("point"))
        self.checks.look(page, "policy-change", self.phone)
        page.get_by_role("button", name="Apply the change").click()
        expect(page.get_by_role("row", name=re.compile("^nightly"))).to_contain_text("every point 7 days")
        # deleted; one that protects items cannot be
        page.get_by_role("link", name="spare").click()
        expect(page.get_by_role("heading", name="Policy spare")).to_be_visible()
        page.once("dialog", lambda d: d.accept())
        page.get_by_role("button", name="Delete policy").click()
        expect(page.get_by_role("heading", name="Policies")).to_be_visible()
        expect(page.get_by_role("row", name=re.compile("^spare"))).to_have_count(0)
        page.get_by_role("link", name="nightly").click()
        expect(page.locator("main")).to_contain_text("cannot be deleted")

    def an_item_changes_policy_stops_resumes_deletes_and_undeletes(self):
        page, V = self.page, self.V
        visit(page, V + "/items/docs")
        page.locator("#change-policy").select_option("enhanced")
        page.get_by_role("button", name="Change policy").click()
        expect(page.locator("#toast")).to_contain_text("Policy changed to enhanced")
        expect(page.locator("#item-policy")).to_contain_text("enhanced")
        # the next backup in the browser's zone, and in the policy's
        expect(page.locator("main")).to_contain_text("in the policy's zone")
        page.once("dialog", lambda d: d.accept())
        page.get_by_role("button", name="Stop protection, keep data").click()
        expect(page.locator("#protection")).to_have_text("Protection stopped, data retained")
        page.get_by_label("Resume with policy").select_option("nightly")
        page.get_by_role("button", name="Resume protection").click()
        expect(page.locator("#protection")).to_have_text("Protected")
        page.once("dialog", lambda d: d.accept("docs"))
        page.get_by_role("button", name="Stop protection, delete data").click()
        expect(page.locator("#protection")).to_have_text("Soft deleted")
        self.checks.look(page, "item-soft-deleted")
        page.get_by_role("button", name="Undelete").click()
        expect(page.locator("#protection")).to_have_text("Protection stopped, data retained")
        page.get_by_label("Resume with policy").select_option("nightly")
        page.get_by_role("button", name="Resume protection").click()
        expect(page.locator("#protection")).to_have_text("Protected")

    def email_settings_and_a_test_message(self):
        page, V = self.page, self.V
        visit(page, V + "/properties")
        expect(page.locator("main")).to_contain_text("Locally redundant (lrs)")
        expect(page.locator("#prices")).to_contain_text("A GB stored, locally redundant")
        expect(page.locator("#prices")).to_contain_text("A protected instance up to 50 GB")
        expect(page.locator(".fresh")).to_contain_text("Read ")
        # a webhook saved, read back, and taken away again
        page.get_by_label("Webhook").fill("https://alerts.example/hook")
        self.saved("Save webhook", V + "/properties")
        expect(page.get_by_label("Webhook")).to_have_value("https://alerts.example/hook")
        page.get_by_label("Webhook").fill("")
        self.saved("Save webhook", V + "/properties")
        expect(page.get_by_label("Webhook")).to_have_value("")
        page.get_by_label("SMTP server").fill("127.0.0.1")
        page.locator("#smtp-port").fill(str(self.smtp_port))
        page.get_by_label("Connection security").select_option("starttls")
        page.get_by_label("User name").fill("alerts")
        page.locator("#smtp-password").fill(SMTP_PASS)
        page.locator("#smtp-from").fill("boveda@example.com")
        page.get_by_label("Recipients").fill("ops@example.com")
        page.get_by_label("Private CA certificate").fill((self.work / "ca.pem").read_text())
        page.get_by_role("button", name="Save e-mail settings").click()
        expect(page.locator("#email-out")).to_contain_text("E-mail notifications saved")
        page.get_by_role("button", name="Send a test message").click()
        expect(page.locator("#email-out")).to_contain_text("Test message sent to ops@example.com")
        got = mails(self.work, 1)
        assert len(got) == 1 and "Subject: [boveda] Test message (vault portal)" in got[0], got
        # the password is never shown again
        visit(page, V + "/properties")
        expect(page.locator("#smtp-password")).to_have_value("")
        expect(page.locator("label[for=smtp-password]")).to_contain_text("kept")
        self.checks.look(page, "properties", self.phone)
        # the data deleted a moment ago raised an alert before e-mail was set:
        # nothing else was sent
        assert len(mails(self.work, 2, wait=1)) == 1

    def a_reader_sees_no_button_it_may_not_use(self):
        page, V = self.page, self.V
        visit(page, V + "/properties")
        # a token for one item, that expires
        page.get_by_label("Role (Reader sees").select_option("Operator")
        page.get_by_label("Only these items").fill("docs")
        expires = time.strftime("%Y-%m-%d", time.localtime(time.time() + 10 * 86400))
        page.get_by_label("Expires at the end of").fill(expires)
        page.get_by_label("What it is for").fill("docs operator")
        page.get_by_role("button", name="Create token").click()
        assert page.locator("#token-secret").inner_text().strip().startswith("bvd_")
        row = page.get_by_role("row", name=re.compile("docs operator"))
        expect(row).to_contain_text("Operator")
        expect(row).to_contain_text(re.compile(r"Operator\s*docs\s*docs operator"))
        expect(row).not_to_contain_text("never")
        expect(row).to_contain_text("Valid")
        visit(page, V + "/properties")
        page.get_by_label("Role (Reader sees").select_option("Reader")
        page.get_by_label("What it is for").fill("auditor")
        page.get_by_role("button", name="Create token").click()
        secret = page.locator("#token-secret").inner_text().strip()
        assert secret.startswith("bvd_"), secret
        reader = self.browser.new_context(viewport=WIDE, ignore_https_errors=True, bypass_csp=True).new_page()
        reader.set_default_timeout(TIMEOUT)
        reader.goto(self.base + "/")
        reader.get_by_label("Access token").fill(secret)
        reader.keyboard.press("Enter")
        expect(reader.get_by_role("heading", name="Vaults")).to_be_visible()
        expect(reader.get_by_role("button", name="Create vault")).to_have_count(0)
        visit(reader, V + "/items/docs")
        expect(reader.get_by_role("button", name="Backup now")).to_have_count(0)
        expect(reader.locator("main")).to_contain_text("Your role (Reader) cannot back up")
        expect(reader.get_by_role("link", name=re.compile("^Restore"))).to_have_count(0)
        expect(reader.get_by_role("button", name="Verify now")).to_have_count(0)
        expect(reader.locator("main")).to_contain_text("Your role (Reader) cannot verify points")
        visit(reader, V + "/configure")
        expect(reader.locator("main")).to_contain_text("Your role (Reader) cannot configure backup")
        visit(reader, V + "/policies")
        expect(reader.get_by_role("button", name="Create policy")).to_have_count(0)
        self.checks.look(reader, "reader-policies")
        self.checks.narrow(reader, "reader-policies")
        # properties: no form it may not use, nothing that looks switched off
        visit(reader, V + "/properties")
        expect(reader.get_by_role("button", name="Save webhook")).to_have_count(0)
        expect(reader.get_by_role("button", name="Save e-mail settings")).to_have_count(0)
        expect(reader.locator("main")).to_contain_text("Your role (Reader) cannot see or change the webhook and e-mail settings")
        self.checks.look(reader, "reader-properties")
        # revoked: the reader's next request is refused
        visit(page, V + "/properties")
        page.once("dialog", lambda d: d.accept())
        page.get_by_role("row", name=re.compile("auditor")).get_by_role("button", name="Revoke").click()
        expect(page.get_by_role("row", name=re.compile("auditor"))).to_contain_text("Revoked")
        time.sleep(2.5)  # tokens are read again within 2 s
        visit(reader, V + "/items")
        expect(reader.get_by_role("heading", name="Log in")).to_be_visible()
        reader.context.close()

    def a_failure_turns_red_then_green(self):
        page, V, docs, work = self.page, self.V, self.docs, self.work
        docs.rename(work / "docs-moved")
        # the item's page open while a backup fails elsewhere: it turns red
        # by itself (it refreshes every 10 s and says when it read)
        visit(page, V + "/items/docs")
        expect(page.locator("#health")).to_contain_text("Healthy")
        expect(page.locator(".fresh")).to_contain_text("Updated")
        other = page.context.new_page()
        visit(other, V + "/items/docs")
        other.get_by_role("button", name="Backup now").click()
        expect(other.locator("#job-state")).to_have_text("Failed", timeout=TIMEOUT)
        other.close()
        expect(page.locator("#health")).to_contain_text("Critical", timeout=15_000)
        expect(page.locator("#item-last-backup")).to_contain_text("Failed")
        for _ in range(1):
            visit(page, V + "/items/docs")
            page.get_by_role("button", name="Backup now").click()
            expect(page.locator("#job-state")).to_have_text("Failed", timeout=TIMEOUT)
        expect(page.locator("#job-error")).to_contain_text("does not exist")
        expect(page.locator("progress.bar-Failed")).to_have_count(1)
        visit(page, V + "/items/docs")
        expect(page.locator("#health")).to_contain_text("Critical")
        expect(page.locator("#health")).to_contain_text("the last backup failed")
        self.checks.look(page, "item-critical", self.phone)
        visit(page, V)
        expect(page.locator("#tile-health")).to_contain_text("Critical: 1")
        # the two failures, and the data deleted before
        expect(page.locator("#tile-alerts .big")).to_have_text("3")
        self.checks.look(page, "dashboard-critical")
        # one message per alert, what happened and what to do
        got = mails(work, 3)
        assert len(got) == 3, len(got)
        assert "Critical: Backup of docs (vault portal)" in got[1] and "What to do:" in got[1], got[1]
        visit(page, V + "/alerts")
        rows = page.get_by_role("row", name=re.compile("Active Critical"))
        expect(rows).to_have_count(2)
        expect(rows.first).to_contain_text("Backup now")
        rows.first.get_by_role("button", name="Acknowledge").click()
        expect(page.get_by_role("row", name=re.compile("Acknowledged"))).to_have_count(1)
        self.checks.look(page, "alerts", self.phone)
        # the source back, a backup succeeds: resolved, healthy
        (work / "docs-moved").rename(docs)
        visit(page, V + "/items/docs")
        page.get_by_role("button", name="Backup now").click()
        expect(page.locator("#job-state")).to_have_text("Completed", timeout=TIMEOUT)
        visit(page, V + "/alerts")
        expect(page.get_by_role("row", name=re.compile("Resolved"))).to_have_count(2)
        # the deletion's alert stays until someone says it was meant
        deleted = page.get_by_role("row", name=re.compile("Active Warning"))
        expect(deleted).to_contain_text("undelete it")
        deleted.get_by_role("button", name="Acknowledge").click()
        expect(page.get_by_role("row", name=re.compile("Active"))).to_have_count(0)
        visit(page, V + "/items")
        expect(page.get_by_role("row", name=re.compile("^docs"))).to_contain_text("Healthy")
        visit(page, V)
        expect(page.locator("#tile-health")).not_to_contain_text("Critical")
        expect(page.locator("#tile-alerts .big")).to_have_text("0")

    def jobs_filter_and_update_live(self):
        page, V = self.page, self.V
        visit(page, V + "/jobs")
        page.get_by_label("Operation").select_option("Backup")
        page.get_by_label("State").select_option("Failed")
        expect(page.locator("#jobs-count")).to_contain_text("2 of")
        assert "operation=Backup" in page.url and "state=Failed" in page.url, page.url
        expect(page.get_by_role("link", name=re.compile("^Backup of docs"))).to_have_count(2)
        self.checks.look(page, "jobs-filtered")
        # by item, and by a time range: none started tomorrow or later
        page.get_by_label("State").select_option("Completed")
        page.get_by_label("Item").select_option("web01")
        assert "item=web01" in page.url, page.url
        rows = page.locator("tbody tr")
        expect(rows.first).to_contain_text("Backup of web01")
        for text in rows.all_inner_texts():
            assert "web01" in text, text
        # each row its duration, and the point a backup made, restorable
        expect(rows.first.get_by_role("cell", name=re.compile(r"^[0-9]+ s$")).first).to_be_visible()
        # the day it started, and the next, in the browser's zone (the
        # filters' own), from the job itself: a run may cross midnight
        started = rows.first.locator("time").first.get_attribute("datetime")
        local_day = """(a) => { const d = new Date(a[0]); d.setDate(d.getDate() + a[1]);
            return d.getFullYear() + '-' + String(d.getMonth() + 1).padStart(2, '0') + '-' + String(d.getDate()).padStart(2, '0'); }"""
        day, next_day = page.evaluate(local_day, [started, 0]), page.evaluate(local_day, [started, 1])
        rows.first.get_by_role("link", name=re.compile("^Restore from it: the point Backup of web01")).click()
        expect(page.locator("h1")).to_contain_text("Restore web01 from the point of")
        visit(page, V + "/jobs?item=web01&state=Completed")
        expect(page.get_by_label("Item")).to_have_value("web01")
        page.locator("#filter-since").fill(next_day)
        expect(page.locator("main")).to_contain_text("No job matches these filters.")
        page.locator("#filter-since").fill(day)
        page.locator("#filter-until").fill(day)
        expect(page.get_by_role("link", name=re.compile("^Backup of web01"))).to_have_count(1)
        visit(page, V + "/jobs")
        page.get_by_label("Operation").select_option("Backup")
        page.get_by_label("State").select_option("Failed")
        # a new job shows without a reload
        page.get_by_label("State").select_option("")
        before = page.locator("tbody tr").count()
        other = page.context.new_page()
        visit(other, V + "/items/docs")
        other.get_by_role("button", name="Backup now").click()
        expect(other.locator("#job-state")).to_have_text("Completed", timeout=TIMEOUT)
        other.close()
        expect(page.locator("tbody tr")).to_have_count(before + 1, timeout=15_000)
        expect(page.locator(".fresh")).to_contain_text("Updated")
        self.checks.look(page, "jobs", self.phone)
        # at phone width the State and Progress columns stay on the screen
        for name in ("State", "Progress"):
            box = self.phone.get_by_role("columnheader", name=name).bounding_box()
            assert box and box["x"] + box["width"] <= PHONE["width"], f"{name} is off the screen at phone width: {box}"

    def reports_and_the_backup_center(self):
        page, V = self.page, self.V
        visit(page, V + "/reports")
        row = page.get_by_role("row", name=re.compile("^docs"))
        expect(row).to_contain_text("%")
        # the duration trend drawn, the stored growth in bytes
        expect(row.locator("svg.spark")).to_have_count(1)
        expect(row.locator("svg.spark")).to_have_attribute("aria-label", re.compile("^Duration per day, longest"))
        expect(row).to_contain_text(re.compile(r"[0-9.]+ (B|KiB|MiB)\s*[0-9.]+ (B|KiB|MiB)$"))
        self.checks.look(page, "reports", self.phone)
        for days in ("7", "90"):
            page.get_by_label("Period").select_option(days)
            expect(page).to_have_url(re.compile("days=" + days))
            expect(page.locator("main")).to_contain_text(re.compile("From .* to "))
            expect(page.get_by_role("row", name=re.compile("^docs"))).to_contain_text("%")
            expect(page.get_by_role("link", name="Export as CSV")).to_have_attribute("href", re.compile("days=" + days + "&format=csv"))
        with page.expect_download() as got:
            page.get_by_role("link", name="Export as CSV").click()
        csv = Path(got.value.path()).read_text()
        assert csv.startswith("item,backups,succeeded,failed"), csv
        assert re.search(r"^docs,[0-9]+,[0-9]+,2,", csv, re.M), csv
        visit(page, self.base + "/#/center")
        expect(page.get_by_role("heading", name="Backup center")).to_be_visible()
        expect(page.get_by_role("row", name=re.compile("^portal docs"))).to_be_visible()
        # every vault the token sees: the other vault's items too
        expect(page.get_by_role("row", name=re.compile("^first paced"))).to_contain_text("Healthy")
        expect(page.get_by_role("row", name=re.compile("^first img"))).to_be_visible()
        self.checks.look(page, "center", self.phone)

    def protected_servers(self):
        page, V, base, work = self.page, self.V, self.base, self.work
        visit(page, V + "/servers")
        page.get_by_label("Address servers reach").fill(base)
        page.get_by_role("button", name="Add a server").click()
        creds = page.locator("#credentials-text").inner_text()
        (work / "web9.creds").write_text(creds)

        def register_env(name):
            return {"PATH": os.environ["PATH"], "HOME": str(work / name), "BOVEDA_HOST_DIR": str(work / name / "boveda")}

        def register(name):
            return subprocess.run([BIN, "host", "register", "--credentials", str(work / "web9.creds"), "--name", name],
                                  env=register_env(name), capture_output=True, text=True, timeout=60)
        out = register("web9")
        assert out.returncode == 0, out.stderr
        visit(page, V + "/servers")
        expect(page.get_by_role("row", name=re.compile("web9"))).to_contain_text("Online")
        self.checks.look(page, "servers", self.phone)
        self.on_a_registered_server(register_env("web9"))
        # the jobs web9 ran, by the machine that ran them
        visit(page, V + "/jobs")
        page.get_by_label("Ran on").select_option("web9")
        expect(page.locator("#jobs-count")).to_contain_text("2 of")
        for text in page.locator("tbody tr").all_inner_texts():
            assert "web9-data" in text, text
        visit(page, V + "/servers")
        row = page.get_by_role("row", name=re.compile("^web9 "))
        expect(row.get_by_role("link", name="web9-data")).to_be_visible()
        page.once("dialog", lambda d: d.accept())
        row.get_by_role("button", name="Unregister").click()
        expect(page.get_by_role("row", name=re.compile("web9"))).to_contain_text("Unregistered")
        out = register("web10")
        assert out.returncode != 0 and "used already" in out.stderr, out.stderr

    def configure_on(self, server, goal, policy):
        page = self.page
        visit(page, self.V + "/configure")
        page.get_by_label("Back up what is on").select_option(server)
        page.get_by_role("button", name="Next").click()
        expect(page.get_by_text("What do you want to back up on " + (server or "this server") + "?")).to_be_visible()
        page.get_by_label(goal).check()
        page.get_by_role("button", name="Next").click()
        page.get_by_label("Use a policy").select_option(policy)
        page.get_by_role("button", name="Next").first.click()

    def on_a_registered_server(self, host_env):
        """Configure backup on a registered server: its folder browsed
        through its agent (a hostile file name shown as text), backed up
        now on it, a file restored onto it and compared."""
        page, V, work = self.page, self.V, self.work
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
            self.configure_on("web9", "Files and folders", "nightly")
            page.get_by_label("Item name").fill("web9-data")
            page.get_by_label("Folder on web9").fill(str(work))
            page.get_by_role("button", name="Browse").click()
            page.get_by_role("button", name="web9-data/").click()
            expect(page.get_by_role("cell", name="<img src=x onerror=alert(9)>.txt", exact=True)).to_be_visible()
            page.get_by_role("button", name="Up to " + str(work)).click()
            page.get_by_label("Protect " + str(data), exact=True).check()
            expect(page.get_by_label("Folders and files on web9")).to_have_value(str(data))
            self.checks.look(page, "configure-on-a-server")
            page.get_by_role("button", name="Next", exact=True).click()
            expect(page.get_by_text("Protect web9-data on web9 with policy nightly.")).to_be_visible()
            page.get_by_role("button", name="Enable backup").click()
            expect(page.locator("#enable-result")).to_contain_text("Protected - Warning (initial backup pending)")

            visit(page, V + "/items/web9-data")
            page.get_by_role("button", name="Backup now").click()
            expect(page.locator("#job-state")).to_have_text("Completed", timeout=TIMEOUT)

            visit(page, V + "/items/web9-data")
            page.get_by_role("link", name=re.compile("^Restore")).first.click()
            expect(page.locator("#restore-roots-note")).to_contain_text("runs on web9")
            page.get_by_label("Files and folders I pick").check()
            for part in [p for p in str(data).split("/") if p] + ["etc"]:
                page.get_by_role("button", name=part + "/").click()
            page.get_by_label("Restore " + str(data / "etc" / "app.conf")).check()
            page.get_by_label("Restore into").fill(str(roots / "r1"))
            page.get_by_role("button", name="Restore", exact=True).click()
            expect(page.locator("#job-state")).to_have_text("Completed", timeout=TIMEOUT)
            restored = roots / "r1" / str(data / "etc" / "app.conf").lstrip("/")
            assert restored.read_bytes() == config, "the file restored onto web9 differs"

            libvirt = work / "web9-libvirt"
            libvirt.mkdir()
            xml = (self.vms / "web01.xml").read_text().replace("<name>web01</name>", "<name>app01</name>")
            (libvirt / "app01.xml").write_text(xml)
            self.configure_on("web9", "Virtual machines", "nightly")
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

    def guarded(self):
        """The Security page: a Contributor binds a guard and makes the vault
        immutable; disabling it waits for the guard, who logs in with a
        SecurityAdmin token (seeing nothing else), approves in the browser
        with the guard's passphrase (a wrong one refused), and the change
        goes through once."""
        page, work = self.page, self.work
        F = self.base + "/#/v/first"
        visit(page, F + "/security")
        expect(page.locator("#guard-bound")).to_contain_text("No guard")
        expect(page.locator("#no-requests")).to_contain_text("requests need a guard")
        # soft delete made longer: no approval needed, shown in the properties
        page.get_by_label("Soft delete, days").fill("21")
        self.saved("Save", F + "/properties")
        expect(page.get_by_role("row", name=re.compile("^Soft delete"))).to_contain_text("21 days")
        visit(page, F + "/security")
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
        self.checks.look(page, "security-request")

        guard = self.browser.new_context(viewport=WIDE, ignore_https_errors=True, bypass_csp=True).new_page()
        guard.set_default_timeout(TIMEOUT)
        guard.goto(self.base + "/")
        guard.get_by_label("Access token").fill((work / "sec.token").read_text().strip())
        guard.keyboard.press("Enter")
        guard.get_by_role("link", name="first").click()
        expect(guard.get_by_role("heading", name="Security")).to_be_visible()
        # nothing else of the vault: one link of the vault in the navigation
        expect(guard.locator("#nav a:not(.center-link)")).to_have_count(1)
        row = guard.get_by_role("row", name=re.compile("Pending"))
        expect(row).to_contain_text("immutability enabled to disabled")
        row.get_by_label("Guard passphrase").fill("not the guard's passphrase")
        row.get_by_role("button", name="Approve").click()
        expect(guard.locator("#security-out")).to_contain_text("wrong passphrase for guard sec-team")
        row.get_by_label("Guard passphrase").fill(GUARD_PASS)
        row.get_by_role("button", name="Approve").click()
        expect(guard.get_by_role("row", name=re.compile("Approved"))).to_be_visible()
        self.checks.look(guard, "security-approved")
        self.checks.narrow(guard, "security-approved")
        guard.context.close()

        visit(page, F + "/security")
        page.get_by_label("Immutability (no point").select_option("disabled")
        page.get_by_role("button", name="Save").click()
        expect(page.locator("#toast")).to_contain_text("Settings saved")
        visit(page, F + "/security")
        expect(page.get_by_label("Immutability (no point")).to_have_value("disabled")
        expect(page.get_by_role("row", name=re.compile("Used"))).to_be_visible()

    def every_page_at_both_widths(self):
        """The pages not yet looked at, at 1366 and 390 px, checked by axe."""
        page, V = self.page, self.V
        for path, name in [("", "dashboard"), ("/items", "items"), ("/imports", "imports"), ("/security", "security"),
                           ("/configure", "configure")]:
            visit(page, V + path)
            self.checks.look(page, name, self.phone)
        visit(page, self.base + "/#/")
        self.checks.look(page, "vaults", self.phone)
        # charts have a scale, with units; the cost is explained, per item
        visit(page, V)
        expect(page.locator("#cost")).to_contain_text("The cost is an estimate")
        expect(page.locator("#cost").get_by_role("row", name=re.compile("^docs"))).to_contain_text("USD")
        expect(page.locator("svg.chart text.axis").first).to_be_visible()
        expect(page.locator("figure.chart").first).to_contain_text("Bytes the points kept")
        labels = page.locator("svg.chart").first.locator("text.axis").all_text_contents()
        assert any(re.search(r"(B|KiB|MiB)$", t) for t in labels), labels
        # chart labels readable at phone width (they were about 5 px)
        visit(self.phone, V)
        heights = self.phone.locator("svg.chart text.axis").evaluate_all("(ts) => ts.map((t) => t.getBoundingClientRect().height)")
        assert heights and min(heights) >= 11, f"chart labels at phone width: {heights}"
        # times say their zone
        visit(page, V + "/items/docs")
        assert re.search(r"\b(UTC|GMT|[A-Z]{3,4})\b", page.locator("time").first.inner_text()), page.locator("time").first.inner_text()


if __name__ == "__main__":
    main()
