//! The web portal in a real headless Chromium against a real `boveda
//! serve`: the Playwright script `tests/portal/portal.py` drives one
//! scenario per task (its docstring lists them), checks every page with
//! axe-core and at phone width, and saves screenshots (BOVEDA_SHOTS:
//! `docs/screenshots` to refresh the docs' pictures).
//!
//! Needs BOVEDA_TEST_PLAYWRIGHT (a Python with Playwright and aiosmtpd) and
//! BOVEDA_TEST_AXE (axe-core's axe.min.js): scripts/test.sh sets both up
//! and installs Debian's Chromium.

use std::process::Command;

#[test]
fn the_portal_works_in_a_real_browser() {
    let Some(python) = std::env::var_os("BOVEDA_TEST_PLAYWRIGHT") else {
        panic!(
            "BOVEDA_TEST_PLAYWRIGHT is not set: run the tests with scripts/test.sh, which installs Chromium and Playwright"
        );
    };
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/portal/portal.py");
    let out = Command::new(python)
        .arg(&script)
        .env("BOVEDA_BIN", env!("CARGO_BIN_EXE_boveda"))
        .env_remove("BOVEDA_VAULT")
        .output()
        .expect("run the portal script");
    assert!(
        out.status.success(),
        "the portal test failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
