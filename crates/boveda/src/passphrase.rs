use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, Result, bail};

fn read_file(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = std::fs::read(path).with_context(|| format!("cannot read password file {}", path.display()))?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    Ok(bytes)
}

/// The vault passphrase: --password-file, BOVEDA_PASSWORD, or a prompt.
pub fn passphrase(file: Option<&Path>, confirm: bool) -> Result<Vec<u8>> {
    if let Some(f) = file {
        return read_file(f);
    }
    if let Ok(p) = std::env::var("BOVEDA_PASSWORD") {
        return Ok(p.into_bytes());
    }
    prompt("Vault passphrase: ", confirm)
}

/// A new passphrase for `vault key add`.
pub fn new_passphrase(file: Option<&Path>) -> Result<Vec<u8>> {
    if let Some(f) = file {
        return read_file(f);
    }
    if let Ok(p) = std::env::var("BOVEDA_NEW_PASSWORD") {
        return Ok(p.into_bytes());
    }
    prompt("New passphrase: ", true)
}

fn prompt(label: &str, confirm: bool) -> Result<Vec<u8>> {
    if !std::io::stdin().is_terminal() {
        bail!("no passphrase given: use --password-file, BOVEDA_PASSWORD_FILE or BOVEDA_PASSWORD");
    }
    let first = rpassword::prompt_password(label).context("cannot read the passphrase")?;
    if confirm {
        let again = rpassword::prompt_password("Repeat it: ").context("cannot read the passphrase")?;
        if again != first {
            bail!("the passphrases differ");
        }
    }
    Ok(first.into_bytes())
}
