#!/usr/bin/env bash
# Requests per command on a vault with a long history (1 000 points and
# 5 000 packs, one index object each as backups write them), in Azurite and
# in the S3 server: each command run with an empty local cache (what every
# command cost before the cache: one GET per index object and per
# manifest) and again with the cache warm; then the same after a prune has
# merged the small index objects.
#
#   bench/requests.sh [POINTS] [PACKS]      (defaults 1000 5000)
set -euo pipefail
cd "$(dirname "$0")/.."
POINTS=${1:-1000}
PACKS=${2:-5000}
cargo build --release -q
cargo build --release -q -p boveda-vault --example synth_vault
B=$PWD/target/release/boveda
SYNTH=$PWD/target/release/examples/synth_vault
work=$(mktemp -d /tmp/boveda-requests.XXXXXX)
cleanup() { scripts/stores.sh stop "$work/stores"; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/stores" "$work/src"
eval "$(scripts/stores.sh start "$work/stores")"
export BOVEDA_CONFIG_DIR=$work/config BOVEDA_CACHE_DIR=$work/cache BOVEDA_PASSWORD=bench
for i in $(seq 1 200); do head -c 20000 /dev/urandom >"$work/src/f$i"; done

count() { # prints "requests gets" of one command
  BOVEDA_STORE_METRICS=1 "$B" "$@" 2>&1 >/dev/null | sed -n 's/^boveda: store: \([0-9]*\) requests (get \([0-9]*\),.*/\1 \2/p' | tail -1
}

printf '| store | command | index | requests, cold cache (GETs) | requests, warm cache (GETs) |\n|---|---|---|---|---|\n'
for kind in azblob s3; do
  url="$kind://bench-$kind/vault"
  "$B" vault create "v-$kind" --store "$url" --create-container --insecure-fast-kdf >/dev/null
  export BOVEDA_VAULT="v-$kind"
  "$B" item add files t --path "$work/src" >/dev/null
  "$B" protection backup-now t >/dev/null
  "$SYNTH" "$url" bench "$POINTS" "$PACKS" >/dev/null
  for state in "one per pack" "after prune"; do
    if [ "$state" = "after prune" ]; then
      "$B" prune --safety-margin 24h >/dev/null
    fi
    for cmd in "vault show" "recoverypoint list t" "protection backup-now t" "job list"; do
      rm -rf "$BOVEDA_CACHE_DIR"
      # shellcheck disable=SC2086
      read -r cold cold_gets < <(count $cmd)
      # shellcheck disable=SC2086
      read -r warm warm_gets < <(count $cmd)
      printf '| %s | `%s` | %s | %s (%s) | %s (%s) |\n' "$kind" "$cmd" "$state" "$cold" "$cold_gets" "$warm" "$warm_gets"
    done
  done
done
