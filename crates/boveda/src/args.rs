//! The command line, following `az backup` nouns and verbs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::args_points::{ImageFormat, PointCmd, RestoreArgs};
pub use crate::args_policy::PolicyArgs;

#[derive(Parser)]
#[command(name = "boveda", version, about = "Encrypted, deduplicating backup vaults of recovery points")]
pub struct Cli {
    /// The vault: a name this user's configuration knows, or a store path/URL.
    #[arg(long, global = true, env = "BOVEDA_VAULT")]
    pub vault: Option<String>,
    /// File holding the vault passphrase (else BOVEDA_PASSWORD, else a prompt).
    #[arg(long, global = true, env = "BOVEDA_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value = "table")]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create, list, show and check vaults; manage their passphrases.
    #[command(subcommand)]
    Vault(VaultCmd),
    /// Register and list protected items.
    #[command(subcommand)]
    Item(ItemCmd),
    /// Backup policies: schedule and retention.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Back up protected items.
    #[command(subcommand)]
    Protection(ProtectionCmd),
    /// List, show and browse recovery points.
    #[command(subcommand)]
    Recoverypoint(PointCmd),
    /// Restore a recovery point, or chosen paths of it, into a folder.
    Restore(RestoreArgs),
    /// Jobs: every operation, with state and progress.
    #[command(subcommand)]
    Job(JobCmd),
    /// Alerts raised by failed backups and restores and by deleted data.
    #[command(subcommand)]
    Alert(AlertCmd),
    /// Offline seeding: an item's first backup travels on shipped drives.
    #[command(subcommand)]
    Offline(OfflineCmd),
    /// Delete expired recovery points and reclaim the space nothing uses.
    Prune {
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// How long marked packs wait before deletion (e.g. 24h, 90m, 0s).
        #[arg(long, default_value = "24h")]
        safety_margin: String,
    },
    /// Per item: front-end size, instances, stored bytes, monthly cost.
    Usage {
        /// A price table (JSON); default `prices.json` in the configuration
        /// folder if present, else the documented defaults.
        #[arg(long)]
        prices: Option<PathBuf>,
    },
    /// Backup report per item: backups, success rate, durations, stored growth.
    Report {
        /// The period: 7, 30 or 90 days.
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// Write CSV (for a spreadsheet) instead of a table.
        #[arg(long)]
        csv: bool,
    },
    /// The Backup center: every vault given (default: all this user's
    /// configuration knows), their items' health, jobs of the last 24 hours
    /// and active alerts. One passphrase opens them all.
    Center { vaults: Vec<String> },
    /// Run the scheduler: back up items when their policies say, apply retention.
    Agent(AgentArgs),
    /// Serve the API, the portal, metrics and the scheduler (docs/SERVER.md).
    Serve(ServeArgs),
    /// Multi-user authorization: a guard whose approval critical operations need.
    #[command(subcommand)]
    Guard(crate::args_guard::GuardCmd),
    /// Access tokens for `boveda serve`: a role, optionally some items.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Many hosts, one vault: credentials, registering a host with the
    /// vault's server, and a registered host's backups (docs/FLEET.md).
    #[command(subcommand)]
    Host(HostCmd),
    /// Show an item's recovery points read-only through FUSE, until the
    /// folder is unmounted (`fusermount -u DIR`).
    Mount {
        item: String,
        /// Only this point (id prefix or `latest`), as the folder's root.
        #[arg(long)]
        point: Option<String>,
        dir: std::path::PathBuf,
    },
}

#[derive(Args)]
pub struct AgentArgs {
    /// Vaults to serve (names or paths); default: every vault this user's
    /// configuration knows, or --vault. One passphrase opens them all.
    pub vaults: Vec<String>,
    /// Backups running at once; under `serve`, also the jobs started
    /// through the API that run at once per vault (the others wait, Queued).
    #[arg(long, default_value_t = 2)]
    pub max_jobs: usize,
    /// How long pruned packs wait before deletion.
    #[arg(long, default_value = "24h")]
    pub safety_margin: String,
    /// Seconds between reads of the vaults' items and policies.
    #[arg(long, default_value_t = 30)]
    pub poll_secs: u64,
    /// Stop when the clock reaches this time (RFC 3339; with BOVEDA_FAKE_NOW
    /// the clock is simulated and runs there at once).
    #[arg(long, hide = true)]
    pub until: Option<String>,
}

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub agent: AgentArgs,
    /// The address to listen on; the default is loopback only.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// A folder restores through the API may write into (repeatable);
    /// without one, the API restores nowhere.
    #[arg(long = "restore-root")]
    pub restore_roots: Vec<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Mark the portal's session cookie Secure although this server speaks
    /// HTTP (a reverse proxy in front of it speaks HTTPS); on with --tls-cert.
    #[arg(long)]
    pub secure_cookies: bool,
    /// The address registered hosts reach this server at (https://NAME:PORT),
    /// named in the credentials the API makes; default the address a
    /// credentials request came to.
    #[arg(long)]
    pub public_url: Option<String>,
    /// MiB a registered host may upload in one backup job (what no point
    /// references yet); past it its uploads are refused.
    #[arg(long, default_value_t = 65536)]
    pub host_quota_mib: u64,
    /// Seconds a registered host may stay silent during a backup before
    /// its job fails.
    #[arg(long, default_value_t = 60)]
    pub host_silence_secs: u64,
    /// Registered hosts send everything through this server, never straight
    /// to an S3 or Azure store with create-only grants (for hosts that
    /// cannot reach the store).
    #[arg(long)]
    pub host_uploads_through_server: bool,
    /// Serve without the scheduler (another process runs `boveda agent`).
    #[arg(long)]
    pub no_scheduler: bool,
    /// Vaults created through the API use a fast, weak key derivation
    /// (tests only).
    #[arg(long, hide = true)]
    pub insecure_fast_kdf: bool,
}

#[derive(Subcommand)]
pub enum HostCmd {
    /// (admin) Vault credentials that register one host, once, before they
    /// expire; printed as a file's content (keep it secret).
    Credentials {
        /// The address hosts reach `boveda serve` at (https://NAME:PORT).
        #[arg(long)]
        server: String,
        /// The server's certificate (PEM): hosts trust it alone, by its
        /// SHA-256 fingerprint.
        #[arg(long)]
        tls_cert: PathBuf,
        /// How long they stay valid (e.g. 48h, 30m).
        #[arg(long, default_value = "48h")]
        expires: String,
    },
    /// (on a host) Register this machine with the vault's server. Keeps
    /// the host's identity in /etc/boveda (as root) or the user's config
    /// folder (BOVEDA_HOST_DIR overrides both).
    Register {
        #[arg(long)]
        credentials: PathBuf,
        /// The host's name in the vault; default this machine's name.
        #[arg(long)]
        name: Option<String>,
    },
    /// (admin) The vault's registered hosts.
    List,
    /// (admin) Revoke a host at once and stop protecting its items (their
    /// points are kept).
    Unregister { name: String },
    /// (on a host) This host's items, as its server lists them.
    Items,
    /// (on a host) Run the backups the server asks for (its items' policy
    /// slots, "backup now" from the portal or the API) until stopped; the
    /// systemd unit is in docs/FLEET.md.
    Agent {
        /// A folder restores ordered through the server may write into
        /// (repeatable); without one, this host restores nowhere.
        #[arg(long = "restore-root")]
        restore_roots: Vec<PathBuf>,
    },
    /// (on a host) Back up one of this host's items now, through the server.
    Backup {
        item: String,
        /// Keep the point until this date (YYYY-MM-DD or RFC 3339); default 30 days.
        #[arg(long)]
        retain_until: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create a token; it is printed once, only its hash is kept.
    Create {
        /// Reader, Operator, Contributor or SecurityAdmin (the guard's: approvals only).
        #[arg(long)]
        role: String,
        /// Only these items (repeatable); default all.
        #[arg(long = "item")]
        items: Vec<String>,
        /// When it stops working (a date, the end of that day, or a time).
        #[arg(long)]
        expires: Option<String>,
        /// What it is for.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the vault's tokens (never their secrets).
    List,
    /// Revoke a token by id (or a unique prefix of it).
    Revoke { id: String },
}

#[derive(Subcommand)]
pub enum JobCmd {
    /// List jobs, oldest first.
    List {
        /// InProgress, Completed, CompletedWithWarnings, Failed, Cancelling, Cancelled.
        #[arg(long)]
        status: Option<String>,
        /// ConfigureBackup, Backup, Restore, DisableBackup, DeleteBackupData, Undelete, Prune, Verify,
        /// Replication, OfflineSeed, UpdateKeys.
        #[arg(long)]
        operation: Option<String>,
        #[arg(long)]
        item: Option<String>,
        /// Jobs started at or after this time (YYYY-MM-DD or RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Jobs started at or before this time (a date: its end).
        #[arg(long)]
        until: Option<String>,
        /// Jobs run by this machine (a registered host's name, or this one's).
        #[arg(long)]
        host: Option<String>,
    },
    /// One job in full, with its progress.
    Show { id: String },
    /// Wait for a job to end; the exit code is its outcome (0, 3, 1).
    Wait { id: String },
    /// Ask the process running a job to cancel it.
    Stop { id: String },
}

#[derive(Subcommand)]
pub enum AlertCmd {
    /// List alerts, newest first.
    List {
        /// POST undelivered alerts to the webhook again first.
        #[arg(long)]
        retry: bool,
    },
    /// Acknowledge an alert: seen, being dealt with (it stays listed; a
    /// failed backup's alert resolves by itself when a backup succeeds).
    Ack {
        /// The alert's id, or the start of it.
        id: String,
    },
}

#[derive(Subcommand)]
pub enum VaultCmd {
    /// Create a vault in a store (a local folder by default).
    Create(CreateArgs),
    /// List the vaults this user's configuration knows.
    List,
    /// Show a vault's settings and totals.
    Show,
    /// Change a vault's alert webhook, soft-delete window or store limits.
    Update(UpdateArgs),
    /// Verify the vault's structure; --read-data also reads every chunk.
    Check {
        #[arg(long)]
        read_data: bool,
        /// Verify a geo-redundant vault's copy in its secondary store.
        #[arg(long)]
        secondary: bool,
    },
    /// Drop what the store lost from the index (so the next backup stores
    /// it again) and name every point and file that can no longer be
    /// restored; --read-data also finds chunks whose data is damaged.
    Repair {
        #[arg(long)]
        read_data: bool,
    },
    /// Manage the passphrases (key slots) that open the vault.
    #[command(subcommand)]
    Key(KeyCmd),
    /// A geo-redundant vault's copy in its secondary store.
    #[command(subcommand)]
    Replication(ReplicationCmd),
    /// Alerts by e-mail: the vault's SMTP settings.
    #[command(subcommand)]
    Email(crate::args_email::EmailCmd),
}

#[derive(Subcommand)]
pub enum ReplicationCmd {
    /// How far the secondary store is behind the primary.
    Status,
    /// Copy to the secondary what it lacks now (and delete there what the
    /// primary no longer has).
    Run,
}

#[derive(Args)]
pub struct CreateArgs {
    /// 2-50 characters: letters, digits and hyphens, starting with a letter.
    pub name: String,
    /// Where the vault's objects live: a folder path, file://PATH,
    /// azblob://CONTAINER/PREFIX or s3://BUCKET/PREFIX (credentials come
    /// from the cloud's usual environment variables; see docs/STORES.md).
    #[arg(long)]
    pub store: String,
    /// Create the container or bucket when it does not exist.
    #[arg(long)]
    pub create_container: bool,
    /// A free-form location label.
    #[arg(long, default_value = "local")]
    pub location: String,
    #[arg(long, value_parser = ["lrs", "grs"], default_value = "lrs")]
    pub redundancy: String,
    /// The secondary store for grs redundancy.
    #[arg(long)]
    pub secondary: Option<String>,
    /// Target size of data packs, in MiB.
    #[arg(long, default_value_t = boveda_service::NewVault::DEFAULT_PACK_SIZE_MIB)]
    pub pack_size_mib: u32,
    /// zstd level for chunks (0 = off).
    #[arg(long, default_value_t = boveda_service::VaultSettings::DEFAULT_COMPRESSION)]
    pub compression: i32,
    /// Use minimal key-derivation cost (tests only: weakens the passphrase).
    #[arg(long, hide = true)]
    pub insecure_fast_kdf: bool,
    /// Lock what the vault needs in the store itself past its retention:
    /// S3 Object Lock, or a local folder's immutable attribute (root, ext4/
    /// XFS/Btrfs); docs/SECURITY.md.
    #[arg(long, value_parser = ["compliance", "governance"])]
    pub object_lock: Option<String>,
    /// Days each lock holds past the retention it covers (default 7).
    #[arg(long, requires = "object_lock")]
    pub lock_margin_days: Option<u32>,
}

#[derive(Subcommand)]
pub enum KeyCmd {
    /// Add a passphrase (from --new-password-file, BOVEDA_NEW_PASSWORD or a prompt).
    Add {
        #[arg(long)]
        new_password_file: Option<PathBuf>,
        #[arg(long, default_value = "")]
        label: String,
        #[arg(long, hide = true)]
        insecure_fast_kdf: bool,
    },
    /// List key slots.
    List,
    /// Remove a key slot by id (prefix).
    Remove { id: String },
}

#[derive(Subcommand)]
pub enum ItemCmd {
    /// Register an item.
    #[command(subcommand)]
    Add(ItemAdd),
    /// List items.
    List,
    /// Show one item.
    Show { item: String },
    /// List the libvirt domains defined in a folder, with their disks and
    /// whether each is protected.
    Discover {
        #[arg(long, default_value = "/etc/libvirt/qemu")]
        libvirt_dir: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum ItemAdd {
    /// A virtual machine: a libvirt domain definition and every disk it names.
    Vm {
        name: String,
        #[arg(long)]
        domain_xml: PathBuf,
        /// The QMP socket of the VM's QEMU: backed up while it runs, from a
        /// snapshot (docs/VMS.md); by default the `-qmp unix:PATH` the
        /// definition's <qemu:commandline> passes.
        #[arg(long)]
        qmp: Option<PathBuf>,
        /// The socket of the VM's guest agent channel
        /// (org.qemu.guest_agent.0), which freezes the guest's file systems
        /// for the snapshot; by default the one the definition names.
        #[arg(long, value_name = "SOCKET", requires = "qmp")]
        guest_agent: Option<PathBuf>,
        /// Pre/post snapshot scripts (JSON, see docs/CONSISTENCY.md).
        #[arg(long)]
        consistency_config: Option<PathBuf>,
        /// The registered host the VM runs on (default: this machine); its
        /// paths are the host's, read there when it backs up.
        #[arg(long, conflicts_with = "consistency_config")]
        host: Option<String>,
    },
    /// A disk: a raw or qcow2 image file, or a block device.
    Disk {
        name: String,
        #[arg(long)]
        path: PathBuf,
        /// Pre/post snapshot scripts (JSON, see docs/CONSISTENCY.md).
        #[arg(long)]
        consistency_config: Option<PathBuf>,
        /// The registered host the disk is on (default: this machine).
        #[arg(long, conflicts_with = "consistency_config")]
        host: Option<String>,
    },
    /// A file tree: one or more paths, minus excluded globs.
    Files {
        name: String,
        #[arg(long = "path", required = true)]
        paths: Vec<PathBuf>,
        /// A glob; with a `/` it matches whole paths, else entry names.
        #[arg(long = "exclude")]
        excludes: Vec<String>,
        /// The registered host the files are on (default: this machine).
        #[arg(long)]
        host: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum ProtectionCmd {
    /// Protect an item with a policy (a ConfigureBackup job).
    Enable {
        item: String,
        #[arg(long)]
        policy: String,
    },
    /// Stop protection and keep the data; --delete-data soft-deletes it.
    Disable {
        item: String,
        /// Delete the backup data (recoverable with `undelete` for the
        /// vault's soft-delete days, then purged).
        #[arg(long)]
        delete_data: bool,
    },
    /// Bring soft-deleted backup data back (protection stays stopped).
    Undelete { item: String },
    /// Protect a protected item with another policy (a retention made
    /// shorter: refused by an immutable vault, the guard's on a guarded one).
    ChangePolicy {
        item: String,
        #[arg(long)]
        policy: String,
    },
    /// Protect a stopped item again.
    Resume {
        item: String,
        #[arg(long)]
        policy: String,
    },
    /// Take an ad-hoc recovery point now.
    BackupNow {
        item: String,
        /// Keep the point until this date (YYYY-MM-DD or RFC 3339); default 30 days.
        #[arg(long)]
        retain_until: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Create a policy.
    Create(Box<PolicyArgs>),
    /// List policies.
    List,
    /// Show one policy.
    Show { name: String },
    /// Change a policy's schedule or retention (flags as for create; those
    /// left out keep their values). Existing points are re-evaluated.
    Update {
        #[command(flatten)]
        args: Box<PolicyArgs>,
        /// Proceed even if points would be deleted, without asking.
        #[arg(long)]
        yes: bool,
    },
    /// Delete a policy.
    Delete { name: String },
}

#[derive(Subcommand)]
pub enum OfflineCmd {
    /// Mark a protected item for offline seeding: its next backup is
    /// written to the staging folder, under a new import job.
    Init {
        item: String,
        /// An existing, writable folder with room for the seed.
        #[arg(long)]
        staging: PathBuf,
        /// The import job's name (2 to 50 letters, digits, hyphens).
        #[arg(long)]
        import_job: String,
    },
    /// Copy a staged seed onto drives, sealed under per-drive keys.
    Diskprep {
        /// The staging folder given to `offline init` (or the seed's own
        /// folder inside it).
        #[arg(long)]
        staging: PathBuf,
        /// The import job, when the staging folder holds several seeds.
        #[arg(long)]
        import_job: Option<String>,
        /// A drive: a mounted file system or a folder (repeatable).
        #[arg(long = "drive", required = true)]
        drives: Vec<PathBuf>,
        /// The most each drive may take (such as 500G; default: its free space).
        #[arg(long)]
        capacity: Option<String>,
    },
    /// Record the package that carries the drives.
    Shipping {
        #[arg(long)]
        import_job: String,
        #[arg(long)]
        carrier: String,
        #[arg(long)]
        tracking: String,
    },
    /// Where the store is reachable: check the drives and upload the seed.
    /// Needs the store's credentials and the drive keys, not the passphrase.
    Import {
        #[arg(long)]
        import_job: String,
        #[arg(long = "drive")]
        drives: Vec<PathBuf>,
        /// A drive key given out of band, as DRIVE-ID=KEY (repeatable);
        /// otherwise the key recorded in the import job.
        #[arg(long = "drive-key")]
        drive_keys: Vec<String>,
        /// Import drives that arrived after the two-week deadline.
        #[arg(long)]
        force: bool,
        /// The staging folder that still holds the seed: what no drive
        /// brought (a lost drive, an altered object) is uploaded from it.
        #[arg(long)]
        from_staging: Option<PathBuf>,
    },
    /// Import jobs: state, drives, carrier and tracking, deadline, history.
    Status {
        #[arg(long)]
        import_job: Option<String>,
    },
}

/// `vault update`: `None` (or `false`) leaves a setting as it is.
#[derive(Args)]
pub struct UpdateArgs {
    /// POST alerts as JSON to this http(s) URL.
    #[arg(long, conflicts_with = "no_webhook")]
    pub webhook: Option<String>,
    /// Stop posting alerts.
    #[arg(long)]
    pub no_webhook: bool,
    /// Days deleted backup data stays recoverable (14 to 180).
    #[arg(long)]
    pub soft_delete_days: Option<u32>,
    /// Tries of a failing store call, the first included (1 to 30).
    #[arg(long)]
    pub store_retries: Option<u32>,
    /// The longest wait between two tries of a store call (1s to 10m).
    #[arg(long)]
    pub store_retry_max_wait: Option<String>,
    /// Uploads or downloads at once (1 to 64).
    #[arg(long)]
    pub parallel_requests: Option<u32>,
    /// Alert when the secondary lags longer (30m, 2h; 1m to 7d; default 1h).
    #[arg(long)]
    pub replication_lag_alert: Option<String>,
    /// lrs, or grs with --secondary (only while the vault has no item).
    #[arg(long)]
    pub redundancy: Option<String>,
    /// The secondary store for --redundancy grs (new or empty).
    #[arg(long, requires = "redundancy")]
    pub secondary: Option<String>,
    /// Where drives of offline seeding are shipped (shown by diskprep);
    /// an empty value removes it.
    #[arg(long)]
    pub shipping_address: Option<String>,
    /// grs: copy packs to the secondary while a backup writes them (true),
    /// or in the pass right after it (false, the default).
    #[arg(long)]
    pub replicate_during_backup: Option<bool>,
    /// disabled, enabled (no point deleted before its retention ends) or
    /// locked (for good: give --confirm NAME); docs/SECURITY.md.
    #[arg(long)]
    pub immutability: Option<String>,
    /// Soft delete never shortened nor turned off (give --confirm NAME).
    #[arg(long)]
    pub soft_delete_always_on: bool,
    /// The vault's name, confirming a change that cannot be undone.
    #[arg(long)]
    pub confirm: Option<String>,
}
