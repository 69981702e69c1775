#!/usr/bin/env bash
# Which pack size suits an object store: backs up and restores the shared
# corpus's tree into the moto S3 server with data packs of 4, 8, 16 and
# 32 MiB, with the store as near as loopback and with 50 ms added to every
# request (the fault layer's latency, as a store across a WAN). Reports
# wall time, peak RSS and requests; every restore is compared with the
# source.
#
#   bench/pack_size.sh [WORK_DIR] [SCALE] [SIZES]   (defaults: /tmp/boveda-bench-packs 0.5 "4 8 16 32")
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
shared=${SHARED_DIR:-$repo/../shared}
work=${1:-/tmp/boveda-bench-packs}
scale=${2:-0.5}
sizes=${3:-4 8 16 32}
. "$here/common.sh"
src=$work/corpus/tree
run=$work/run
rm -rf "$run"
mkdir -p "$run/stores"
trap '"$repo/scripts/stores.sh" stop "$run/stores"' EXIT
eval "$("$repo/scripts/stores.sh" start "$run/stores")"
export BOVEDA_CONFIG_DIR=$run/config BOVEDA_CACHE_DIR=$run/cache BOVEDA_PASSWORD=bench
echo "corpus tree: $(du -sm "$src" | cut -f1) MB, $(find "$src" -type f | wc -l) files"

measure() { # LABEL COMMAND...: prints "secs MB requests"
  local label=$1
  shift
  sync
  BOVEDA_STORE_METRICS=1 /usr/bin/time -f "%e %M" -o "$run/time" "$@" >"$run/$label.log" 2>&1 \
    || { echo "$label failed:" >&2; tail -5 "$run/$label.log" >&2; exit 1; }
  read -r secs kb <"$run/time"
  echo "$secs $((kb / 1024)) $(sed -n 's/^boveda: store: \([0-9]*\) requests.*/\1/p' "$run/$label.log" | tail -1)"
}

printf '| latency | pack size | backup s | backup MB | backup requests | restore s | restore MB | restore requests |\n'
printf '|---|---|---|---|---|---|---|---|\n'
for latency in 0ms 50ms; do
  for size in $sizes; do
    v=p$size-$latency
    "$boveda" vault create "$v" --store "s3://boveda-packs/$v" --create-container --pack-size-mib "$size" >/dev/null
    "$boveda" item add files tree --path "$src" --vault "$v" >/dev/null
    find "$src" -type f -print0 | xargs -0 cat >/dev/null
    export BOVEDA_STORE_FAULTS=latency=$latency
    read -r bs bm br < <(measure "$v-backup" "$boveda" --vault "$v" protection backup-now tree)
    read -r rs rm rr < <(measure "$v-restore" "$boveda" --vault "$v" restore tree --target "$run/restore")
    unset BOVEDA_STORE_FAULTS
    diff -r --no-dereference "$src" "$run/restore/${src#/}" >/dev/null || { echo "$v: restore differs from the source" >&2; exit 1; }
    rm -rf "$run/restore"
    printf '| %s | %s MiB | %.2f | %s | %s | %.2f | %s | %s |\n' "$latency" "$size" "$bs" "$bm" "$br" "$rs" "$rm" "$rr"
  done
done
