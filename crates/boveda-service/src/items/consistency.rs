//! Application-consistent points: pre- and post-snapshot scripts, in the
//! spirit of Azure's Linux snapshot script configuration
//! (`VMSnapshotScriptPluginConfig.json`).
//!
//! | config | meaning |
//! |---|---|
//! | `preScriptLocation`, `postScriptLocation` | executables to run before and after the backup reads the disks |
//! | `preScriptParams`, `postScriptParams` | their arguments |
//! | `preScriptNoOfRetries`, `postScriptNoOfRetries` | extra attempts after a failure |
//! | `timeoutInSeconds` | per attempt, at most 1800; a script that runs longer is killed with its whole process group |
//! | `continueBackupOnFailure` | on a failed pre script, take a crash-consistent point with a warning instead of failing |
//! | `fsFreezeCommand`, `fsThawCommand` | optional commands run around the backup when no pre script is given (`fsfreeze -f` / `-u`) |
//!
//! The post script always runs once the pre script has run, even when the
//! backup fails. A script's output is kept to its last 4 KiB, so a script
//! printing megabytes neither blocks nor bloats the job.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use boveda_vault::Consistency;
use serde::{Deserialize, Serialize};

use crate::error::{Result, ServiceError};

/// The longest a script may run, as in Azure.
pub const MAX_SCRIPT_TIMEOUT_SECS: u64 = 1800;
/// How much of a script's output is kept.
const OUTPUT_TAIL: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistencyConfig {
    #[serde(default)]
    pub pre_script_location: Option<PathBuf>,
    #[serde(default)]
    pub post_script_location: Option<PathBuf>,
    #[serde(default)]
    pub pre_script_params: Vec<String>,
    #[serde(default)]
    pub post_script_params: Vec<String>,
    #[serde(default)]
    pub pre_script_no_of_retries: u32,
    #[serde(default)]
    pub post_script_no_of_retries: u32,
    #[serde(default = "default_timeout")]
    pub timeout_in_seconds: u64,
    #[serde(default)]
    pub continue_backup_on_failure: bool,
    #[serde(default)]
    pub fs_freeze_command: Option<Vec<String>>,
    #[serde(default)]
    pub fs_thaw_command: Option<Vec<String>>,
}

fn default_timeout() -> u64 {
    60
}

impl ConsistencyConfig {
    /// Reads and checks a configuration file.
    ///
    /// # Errors
    /// `Invalid` naming the file and the field at fault.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read(path)
            .map_err(|e| ServiceError::Invalid(format!("consistency config {}: {e}", path.display())))?;
        let cfg: Self = serde_json::from_slice(&text)
            .map_err(|e| ServiceError::Invalid(format!("consistency config {}: {e}", path.display())))?;
        cfg.validate().map_err(|why| ServiceError::Invalid(format!("consistency config {}: {why}", path.display())))?;
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.timeout_in_seconds == 0 || self.timeout_in_seconds > MAX_SCRIPT_TIMEOUT_SECS {
            return Err(format!("timeoutInSeconds must be 1 to {MAX_SCRIPT_TIMEOUT_SECS}"));
        }
        for (field, p) in
            [("preScriptLocation", &self.pre_script_location), ("postScriptLocation", &self.post_script_location)]
        {
            if let Some(p) = p
                && !p.is_file()
            {
                return Err(format!("{field} {} is not a file", p.display()));
            }
        }
        if self.pre_script_location.is_some() != self.post_script_location.is_some() {
            return Err("give both preScriptLocation and postScriptLocation, or neither".into());
        }
        if self.fs_freeze_command.is_some() != self.fs_thaw_command.is_some() {
            return Err("give both fsFreezeCommand and fsThawCommand, or neither".into());
        }
        Ok(())
    }
}

/// How one script run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptResult {
    Succeeded,
    Failed { code: Option<i32>, output: String },
    TimedOut,
    CannotStart(String),
}

/// Runs a program in its own process group; kills the group on timeout.
pub fn run_script(program: &Path, args: &[String], timeout: Duration) -> ScriptResult {
    let mut child = match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return ScriptResult::CannotStart(e.to_string()),
    };
    // drain both pipes in threads, keeping only the tail
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut tail = Vec::new();
            if let Some(mut r) = r {
                let mut buf = [0u8; 8192];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    tail.extend_from_slice(&buf[..n]);
                    if tail.len() > 2 * OUTPUT_TAIL {
                        tail.drain(..tail.len() - OUTPUT_TAIL);
                    }
                }
            }
            tail
        })
    };
    let out = drain(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let start = Instant::now();
    let pgid = child.id() as i32;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if start.elapsed() >= timeout => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break None,
        }
    };
    let Some(status) = status else {
        kill_group(pgid);
        let _ = child.wait();
        return ScriptResult::TimedOut;
    };
    // the script is done; anything it left behind in its group goes too
    kill_group(pgid);
    let mut output = err.join().unwrap_or_default();
    output.extend(out.join().unwrap_or_default());
    if status.success() {
        return ScriptResult::Succeeded;
    }
    let start = output.len().saturating_sub(OUTPUT_TAIL);
    ScriptResult::Failed { code: status.code(), output: String::from_utf8_lossy(&output[start..]).trim().to_string() }
}

fn kill_group(pgid: i32) {
    unsafe extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    // SAFETY: signals the process group this module created for the script.
    unsafe {
        kill(-pgid, 9);
    }
}

fn describe(what: &str, program: &Path, r: &ScriptResult, timeout: u64) -> String {
    match r {
        ScriptResult::Succeeded => format!("{what} {} succeeded", program.display()),
        ScriptResult::Failed { code, output } => format!(
            "{what} {} failed (exit {}){}",
            program.display(),
            code.map_or("by signal".into(), |c| c.to_string()),
            if output.is_empty() { String::new() } else { format!(": {}", output.lines().last().unwrap_or_default()) }
        ),
        ScriptResult::TimedOut => {
            format!("{what} {} exceeded its {timeout} s timeout and was killed", program.display())
        }
        ScriptResult::CannotStart(e) => format!("{what} {} could not start: {e}", program.display()),
    }
}

fn run_with_retries(program: &Path, args: &[String], retries: u32, timeout: u64) -> ScriptResult {
    let mut last = ScriptResult::Succeeded;
    for _ in 0..=retries {
        last = run_script(program, args, Duration::from_secs(timeout));
        if last == ScriptResult::Succeeded {
            break;
        }
    }
    last
}

/// Runs the pre step, `backup`, and the post step; returns the backup's
/// result, the consistency reached and warnings for the point.
///
/// # Errors
/// The backup's error, or `Invalid` when the pre script fails and
/// `continueBackupOnFailure` is off (then nothing is backed up).
pub fn with_consistency<T>(
    cfg: Option<&ConsistencyConfig>,
    backup: impl FnOnce() -> Result<T>,
) -> Result<(T, Consistency, Vec<String>)> {
    let Some(cfg) = cfg else {
        return backup().map(|t| (t, Consistency::CrashConsistent, Vec::new()));
    };
    let timeout = cfg.timeout_in_seconds;
    let mut warnings = Vec::new();
    if let (Some(pre), Some(post)) = (&cfg.pre_script_location, &cfg.post_script_location) {
        let pre_result = run_with_retries(pre, &cfg.pre_script_params, cfg.pre_script_no_of_retries, timeout);
        let pre_ok = pre_result == ScriptResult::Succeeded;
        if !pre_ok && !cfg.continue_backup_on_failure {
            let post_result = run_with_retries(post, &cfg.post_script_params, cfg.post_script_no_of_retries, timeout);
            let mut why = describe("pre-snapshot script", pre, &pre_result, timeout);
            if post_result != ScriptResult::Succeeded {
                why.push_str(&format!("; {}", describe("post-snapshot script", post, &post_result, timeout)));
            }
            return Err(ServiceError::Invalid(format!("{why}; no backup was taken (continueBackupOnFailure is off)")));
        }
        if !pre_ok {
            warnings.push(format!(
                "{}; the point is crash-consistent",
                describe("pre-snapshot script", pre, &pre_result, timeout)
            ));
        }
        let result = backup();
        let post_result = run_with_retries(post, &cfg.post_script_params, cfg.post_script_no_of_retries, timeout);
        if post_result != ScriptResult::Succeeded {
            warnings.push(describe("post-snapshot script", post, &post_result, timeout));
        }
        let consistency = if pre_ok { Consistency::AppConsistent } else { Consistency::CrashConsistent };
        return result.map(|t| (t, consistency, warnings));
    }
    if let (Some(freeze), Some(thaw)) = (&cfg.fs_freeze_command, &cfg.fs_thaw_command)
        && let (Some(fprog), Some(tprog)) = (freeze.first(), thaw.first())
    {
        let frozen = run_script(Path::new(fprog), &freeze[1..], Duration::from_secs(timeout));
        if frozen != ScriptResult::Succeeded {
            warnings.push(format!(
                "{}; the point is crash-consistent",
                describe("fs freeze", Path::new(fprog), &frozen, timeout)
            ));
            return backup().map(|t| (t, Consistency::CrashConsistent, warnings));
        }
        let result = backup();
        let thawed = run_script(Path::new(tprog), &thaw[1..], Duration::from_secs(timeout));
        if thawed != ScriptResult::Succeeded {
            warnings.push(describe("fs thaw", Path::new(tprog), &thawed, timeout));
        }
        return result.map(|t| (t, Consistency::FileSystemConsistent, warnings));
    }
    backup().map(|t| (t, Consistency::CrashConsistent, warnings))
}
