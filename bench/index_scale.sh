#!/usr/bin/env bash
# What a vault with a huge index costs to open: a vault in a local folder
# with a small real backup, grown by synth_vault to ENTRIES index entries
# (index objects of 200 000 entries, pointing at the vault's real data
# packs, as a prune consolidates them). Reports wall time and peak RSS of
# `vault show` (opens the vault and its index) and of an unchanged backup,
# first with an empty cache (the merged index is built), then warm, then
# without a usable cache folder (every index object merged in memory, as
# before the merged index).
#
#   bench/index_scale.sh [ENTRIES]      (default 10000000)
set -euo pipefail
cd "$(dirname "$0")/.."
ENTRIES=${1:-10000000}
cargo build --release -q
cargo build --release -q -p boveda-vault --example synth_vault
B=$PWD/target/release/boveda
work=$(mktemp -d /tmp/boveda-index-scale.XXXXXX)
trap 'rm -rf "$work"' EXIT
export BOVEDA_CONFIG_DIR=$work/config BOVEDA_CACHE_DIR=$work/cache BOVEDA_PASSWORD=bench BOVEDA_VAULT=big
mkdir -p "$work/src"
for i in $(seq 1 400); do head -c 100000 /dev/urandom >"$work/src/f$i"; done

"$B" vault create big --store "$work/vault" --insecure-fast-kdf >/dev/null
"$B" item add files t --path "$work/src" >/dev/null
"$B" protection backup-now t >/dev/null
start=$(date +%s.%N)
target/release/examples/synth_vault "$work/vault" bench 0 0 "$ENTRIES" >/dev/null
echo "generated $ENTRIES index entries in $(echo "$(date +%s.%N) - $start" | bc) s;" \
  "index objects: $(find "$work/vault/index" -type f | wc -l), $(du -sm "$work/vault/index" | cut -f1) MB"

run() { # LABEL COMMAND...
  local label=$1
  shift
  /usr/bin/time -f "%e %M" -o "$work/time" "$B" "$@" >/dev/null
  read -r secs kb <"$work/time"
  printf '| %s | %s | %.2f s | %d MB |\n' "$label" "$*" "$secs" $((kb / 1024))
}

printf '| state | command | wall time | peak RSS |\n|---|---|---|---|\n'
run "cold cache (merged index built)" vault show
run "warm cache" vault show
run "warm cache, unchanged" protection backup-now t
rm -rf "$work/cache"
run "cold cache, unchanged" protection backup-now t
echo "merged index file: $(du -m "$work"/cache/*/index.merged | cut -f1) MB"
BOVEDA_CACHE_DIR=/dev/null/none run "no cache folder" vault show
BOVEDA_CACHE_DIR=/dev/null/none run "no cache folder, unchanged" protection backup-now t
