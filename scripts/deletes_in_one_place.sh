#!/usr/bin/env bash
# Fails when a stored object is deleted anywhere but the vault crate's one
# place for it (crates/boveda-vault/src/vault/deletes.rs): a rule about
# deletes must be one check there (docs/ARCHITECTURE.md). Test code and the
# store crate (which implements deletes) are not searched.
set -euo pipefail
cd "$(dirname "$0")/.."
found=$(grep -rnE '\.(delete|discard_upload)\(' \
    crates/boveda-vault/src crates/boveda-engine/src crates/boveda-service/src crates/boveda-server/src crates/boveda/src \
  | grep -v '^crates/boveda-vault/src/vault/deletes.rs:' \
  | grep -vE '^[^:]+:[0-9]+:\s*//' \
  | grep -vE 'vault\.discard_upload\(' || true)
if [ -n "$found" ]; then
  echo "stored objects deleted outside crates/boveda-vault/src/vault/deletes.rs (use Vault::remove with its Removal):"
  echo "$found"
  exit 1
fi
echo "every delete of a stored object goes through crates/boveda-vault/src/vault/deletes.rs"

# No code above the vault crate writes a store itself: the engine, the
# service, the server and the CLI write through the vault crate (a `Vault`,
# or a `StoreSide` where no passphrase is held), so its rules hold for them.
# A registered host's upload store (fleet/client.rs) is a store backend: its
# puts are requests to the server, which writes through Vault::add_host_object.
writes=$(grep -rnE '\.put\(|PutMode::|mark_pending\(' \
    crates/boveda-engine/src crates/boveda-service/src crates/boveda-server/src crates/boveda/src \
  | grep -v '^crates/boveda-service/src/fleet/client.rs:' \
  | grep -vE '^[^:]+:[0-9]+:\s*//' || true)
if [ -n "$writes" ]; then
  echo "stored objects written outside the vault crate (go through boveda_vault: Vault or StoreSide):"
  echo "$writes"
  exit 1
fi
echo "every write of a stored object goes through the vault crate"
