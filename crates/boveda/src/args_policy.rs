//! `boveda policy create|update`: a policy's flags.

use clap::Args;

#[derive(Args)]
pub struct PolicyArgs {
    pub name: String,
    /// daily (the default), weekly, or hourly (Azure's "Enhanced": every
    /// --every-hours within a daily window).
    #[arg(long, value_parser = ["daily", "weekly", "hourly"])]
    pub schedule: Option<String>,
    /// (hourly) Every 4, 6, 8 or 12 hours.
    #[arg(long)]
    pub every_hours: Option<u32>,
    /// (hourly) The window's start, HH:MM (default 00:00).
    #[arg(long)]
    pub window_start: Option<String>,
    /// (hourly) The window's length in hours (default 24).
    #[arg(long)]
    pub window_hours: Option<u32>,
    /// Days of a weekly schedule (repeatable): mon, tue, ...
    #[arg(long = "day")]
    pub days: Vec<String>,
    /// Times of day, HH:MM (repeatable).
    #[arg(long = "time")]
    pub times: Vec<String>,
    /// IANA time zone of the times (default: this machine's).
    #[arg(long)]
    pub time_zone: Option<String>,
    /// Keep daily points this many days (1-9999).
    #[arg(long)]
    pub daily_keep: Option<u32>,
    /// Keep weekly points this many weeks (1-5163).
    #[arg(long)]
    pub weekly_keep: Option<u32>,
    /// The day(s) whose point is kept weekly (repeatable).
    #[arg(long)]
    pub weekly_on: Vec<String>,
    /// Keep monthly points this many months (1-1188).
    #[arg(long)]
    pub monthly_keep: Option<u32>,
    /// The day kept monthly: 1-28, last, first-<day> or last-<day>.
    #[arg(long)]
    pub monthly_on: Option<String>,
    /// Keep yearly points this many years (1-99).
    #[arg(long)]
    pub yearly_keep: Option<u32>,
    /// The month of the yearly point (1-12).
    #[arg(long)]
    pub yearly_month: Option<u8>,
    /// The day kept yearly in that month: 1-28, last, first-<day> or last-<day>.
    #[arg(long)]
    pub yearly_on: Option<String>,
    /// (update) Remove a retention rule: daily, weekly, monthly or yearly.
    #[arg(long, value_parser = ["daily", "weekly", "monthly", "yearly"])]
    pub drop_rule: Vec<String>,
    /// Verify the newest point of each item every N days, right after a
    /// backup made it (a VM's booted, files and disks restored and
    /// compared; `boveda recoverypoint verify`); 0 stops it.
    #[arg(long, value_name = "N")]
    pub verify_every_days: Option<u32>,
}
