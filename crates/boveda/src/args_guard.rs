//! `boveda guard`: multi-user authorization (docs/SECURITY.md).

use clap::Subcommand;

#[derive(Subcommand)]
pub enum GuardCmd {
    /// (guard) Make a new guard from its passphrase (BOVEDA_GUARD_PASSPHRASE
    /// or a prompt; at least 12 characters); prints its identity, which
    /// vaults are bound to. Nothing is stored: the passphrase is the guard.
    Create,
    /// (admin) Bind the vault to a guard: from then on, critical operations
    /// need its approval (unbinding too).
    Bind {
        /// The guard's identity (bvg_..., from `boveda guard create`).
        identity: String,
        /// A name for it, shown in every request.
        #[arg(long)]
        name: String,
    },
    /// (admin) Unbind the vault's guard; needs the guard's approval.
    Unbind,
    /// The vault's guard and its requests, newest first.
    Requests,
    /// One request, with the code the guard approves.
    Show {
        /// The request's id (or the start of it).
        request: String,
    },
    /// (guard) Approve a request, from its code, with the guard's passphrase;
    /// prints the approval code for the vault's admin. Needs no vault.
    Approve {
        /// The request's code (`boveda guard show`, or the portal).
        code: String,
        /// The guard's identity (bvg_...).
        #[arg(long)]
        guard: String,
        /// How long the approval lasts (at most 24h).
        #[arg(long, default_value = "4h")]
        valid_for: String,
    },
    /// (admin) Record the guard's approval code; then run the operation again.
    Accept {
        /// The code `boveda guard approve` printed.
        approval: String,
    },
    /// Reject a pending request.
    Reject { request: String },
}
