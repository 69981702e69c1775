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
