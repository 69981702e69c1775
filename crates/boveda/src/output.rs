//! Tables, sizes, times and progress bars for the terminal.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use boveda_service::{BackupProgress, RestoreProgress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use jiff::Timestamp;
use jiff::tz::TimeZone;

pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

pub fn time(t: Timestamp) -> String {
    t.to_zoned(TimeZone::system()).strftime("%Y-%m-%d %H:%M:%S %Z").to_string()
}

pub fn opt_time(t: Option<Timestamp>) -> String {
    t.map(time).unwrap_or_else(|| "-".into())
}

fn bar(len: Option<u64>, template: &str) -> ProgressBar {
    let bar = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    if std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(5));
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(200));
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar
}

/// A backup's live progress on a terminal; nothing when piped.
pub struct BackupBar {
    bar: ProgressBar,
    files: AtomicU64,
    bytes: AtomicU64,
}

impl BackupBar {
    pub fn new() -> Self {
        Self { bar: bar(None, "{spinner} {elapsed_precise} {msg}"), files: AtomicU64::new(0), bytes: AtomicU64::new(0) }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    fn update(&self) {
        let files = self.files.load(Ordering::Relaxed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        let secs = self.bar.elapsed().as_secs_f64().max(0.001);
        self.bar.set_message(format!("{files} files, {} read, {}/s", size(bytes), size((bytes as f64 / secs) as u64)));
    }
}

impl BackupProgress for BackupBar {
    fn file_done(&self, _path: &Path, _size: u64, _reused: bool) {
        self.files.fetch_add(1, Ordering::Relaxed);
        self.update();
    }
    fn bytes_read(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }
    fn warning(&self, message: &str) {
        self.bar.suspend(|| eprintln!("warning: {message}"));
    }
}

/// A restore's live progress on a terminal; nothing when piped.
pub struct RestoreBar {
    bar: ProgressBar,
}

impl RestoreBar {
    pub fn new() -> Self {
        Self { bar: bar(Some(0), "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}") }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl RestoreProgress for RestoreBar {
    fn planned(&self, _files: u64, bytes: u64) {
        self.bar.set_length(bytes);
    }
    fn bytes_written(&self, n: u64) {
        self.bar.inc(n);
    }
}

/// Asks a yes/no question on a terminal; `false` when not on one.
///
/// # Errors
/// Reading the answer failed.
pub fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// The line that says what a backup made.
pub fn backup_summary(point: &str, item: &str, s: &boveda_service::PointStats, secs: f64, job: &str) -> String {
    format!(
        "recovery point {point} of item {item}: {} files, {} dirs, {}; read {} ({} files unchanged); added {} to the vault ({} new chunks) in {secs:.1}s (job {job})",
        s.files,
        s.dirs,
        size(s.bytes),
        size(s.bytes_read),
        s.files_unchanged,
        size(s.bytes_stored),
        s.chunks_new,
    )
}
