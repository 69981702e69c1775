//! `boveda recoverypoint`: an item's points, and the review of a
//! suspicious one; `boveda restore`.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImageFormat {
    Raw,
    Qcow2,
}

#[derive(Subcommand)]
pub enum PointCmd {
    /// An item's recovery points.
    List {
        item: String,
        /// Those in a geo-redundant vault's secondary store.
        #[arg(long)]
        from_secondary: bool,
    },
    /// One recovery point in full.
    Show { item: String, point: String },
    /// Browse a recovery point's files.
    Ls {
        item: String,
        point: String,
        #[arg(default_value = "/")]
        path: String,
    },
    /// Prove points: a VM's boots in an isolated QEMU until its guest
    /// agent (or console marker) answers; a file or disk item's restores
    /// to a scratch folder and every byte is compared. The result is
    /// recorded on the point; a failure raises an alert.
    Verify(crate::args_verify::VerifyArgs),
    /// The disks replaces kept beside (`restore --replace-disks`), or
    /// --remove one of them.
    SafetyCopies {
        #[arg(long, value_name = "PATH")]
        remove: Option<PathBuf>,
    },
    /// Review a point flagged suspicious (a backup that looked like an
    /// attack): --clean ends the hold on the point before it, --confirm
    /// keeps it (restore from it). Without a verdict: the suspicious points.
    Review {
        item: String,
        /// The suspicious point (its id or the start of it).
        #[arg(long, requires = "verdict")]
        point: Option<String>,
        /// An ordinary change after all.
        #[arg(long, group = "verdict")]
        clean: bool,
        /// An attack: keep the point before it held.
        #[arg(long, group = "verdict")]
        confirm: bool,
    },
}

#[derive(Args)]
pub struct RestoreArgs {
    pub item: String,
    /// A point id (prefix) or `latest`.
    #[arg(long, default_value = "latest")]
    pub point: String,
    /// File items: the folder to restore into (paths are recreated below
    /// it). Disk items: the image file or block device to write. VM items:
    /// the folder for the disks and the new definition.
    #[arg(long, required_unless_present_any = ["serve_nbd", "tar", "replace_disks"])]
    pub target: Option<PathBuf>,
    /// VM items: restore as a new VM defined in libvirt under this name
    /// (new UUID and MAC addresses), its disks in --target.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["replace_disks", "paths", "serve_nbd", "tar"])]
    pub as_new_vm: Option<String>,
    /// With --as-new-vm: start the new VM.
    #[arg(long, requires = "as_new_vm")]
    pub start: bool,
    /// VM items: replace the disks of the existing VM with the point's,
    /// keeping its current disks beside as safety copies and its
    /// definition; the VM must be shut off, or --confirm NAME shuts it off.
    #[arg(long, conflicts_with_all = ["target", "paths", "serve_nbd", "tar"])]
    pub replace_disks: bool,
    /// With --replace-disks: the VM's name, to shut it off if it runs.
    #[arg(long, value_name = "NAME", requires = "replace_disks")]
    pub confirm: Option<String>,
    /// Instead of restoring, write the point (or its --path picks, of a
    /// file item) as a tar archive to this file; `-` for standard output
    /// (what the portal's Download gives).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["target", "format", "serve_nbd"])]
    pub tar: Option<PathBuf>,
    /// Only these paths of the point (repeatable; file items).
    #[arg(long = "path")]
    pub paths: Vec<String>,
    /// For disk and VM items: the image format of the restored disks.
    #[arg(long, value_enum, default_value = "raw")]
    pub format: ImageFormat,
    /// Restore from a geo-redundant vault's secondary store (cross-region
    /// restore, when the primary is unreachable).
    #[arg(long)]
    pub from_secondary: bool,
    /// Instant restore of disk and VM items: instead of writing the disks,
    /// export them read-only over NBD on this UNIX socket (each under its
    /// name: `disk`, `vda`, ...) until interrupted; a VM boots from them
    /// at once through a qcow2 overlay.
    #[arg(long, value_name = "SOCKET", conflicts_with_all = ["target", "paths", "format"])]
    pub serve_nbd: Option<PathBuf>,
}
