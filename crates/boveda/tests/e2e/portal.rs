//! The web portal in a real headless Chromium against a real `boveda
//! serve`: the Playwright script `tests/portal/portal.py` drives it
//! (logging in, creating a vault, configuring backup of a folder and a VM,
//! backing up now, following the job, restoring a file and comparing its
//! bytes, a failed backup's alert, phone width, the keyboard).
//!
//! Needs BOVEDA_TEST_PLAYWRIGHT: a Python with Playwright installed
//! (scripts/test.sh sets one up and installs Debian's Chromium).

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
