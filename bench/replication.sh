#!/usr/bin/env bash
# What geo-redundancy costs a backup, in one run on the shared corpus's
# tree: the same backups (a first full one, then one after mutate.py's ~1%
# change) into a locally redundant folder vault and into geo-redundant ones
# whose secondary is a second folder or the S3 server, with packs copied
# after the backup (the default) or while it writes them. Reports the
# backup's critical path (its job's duration: until the point is
# committed on the primary) and the command's wall time (the replication
# pass after it included), and what the copiers moved while the backup ran.
#
# Then the catch-up after an outage: a backup while the secondary is down
# (BOVEDA_SECONDARY_FAULTS=fail=1), then `vault replication run` with 1 and
# with 8 requests at once, timed.
#
#   bench/replication.sh [WORK_DIR] [SCALE]     (defaults: /tmp/boveda-bench-grs 1)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
shared=${SHARED_DIR:-$repo/../shared}
work=${1:-/tmp/boveda-bench-grs}
scale=${2:-1}

. "$here/common.sh"
src=$work/corpus/tree
run=$work/run
rm -rf "$run"
mkdir -p "$run/stores"
cleanup() {
  "$repo/scripts/stores.sh" stop "$run/stores"
  # the corpus stays for the next run; the mutated copy does not
  rm -rf "$work/mut"
}
trap cleanup EXIT
eval "$("$repo/scripts/stores.sh" start "$run/stores")"
export BOVEDA_CONFIG_DIR=$run/config BOVEDA_CACHE_DIR=$run/cache BOVEDA_PASSWORD=bench

# a copy of the tree that mutate.py may change
rm -rf "$work/mut" && mkdir -p "$work/mut" && cp -a "$src" "$work/mut/tree"
tree=$work/mut/tree
warm() { find "$tree" -type f -print0 | xargs -0 cat > /dev/null; }

# duration in seconds of the vault's newest job of an operation
job_secs() {
  "$boveda" --vault "$1" --output json job list --operation "$2" | python3 -c '
import json, sys
from datetime import datetime
jobs = json.load(sys.stdin)
j = jobs[-1]
t = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))
print("%.2f" % (t(j["end"]) - t(j["start"])).total_seconds())'
}

printf '%-18s %-6s %12s %10s %12s\n' VAULT ROUND "CRITICAL(s)" "WALL(s)" "BEHIND AFTER"
results=$run/results.tsv
: > "$results"
backup() { # vault round
  warm
  sync
  /usr/bin/time -f "%e" -o "$run/time.txt" "$boveda" --vault "$1" protection backup-now tree > "$run/$1-$2.log" 2>&1
  local wall critical behind="-"
  wall=$(cat "$run/time.txt")
  critical=$(job_secs "$1" Backup)
  if [ "$1" != lrs ]; then
    behind=$("$boveda" --vault "$1" --output json vault replication status | python3 -c 'import json,sys; print(json.load(sys.stdin)["objects_behind"])')
  fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$critical" "$wall" "$behind" >> "$results"
  printf '%-18s %-6s %12s %10s %12s\n' "$1" "$2" "$critical" "$wall" "$behind"
}

# grs-*: packs copied in the pass after the backup (the default);
# grs-*-during: copied while the backup writes them (--replicate-during-backup)
vaults="lrs grs-folder grs-folder-during grs-s3 grs-s3-during"
"$boveda" vault create lrs --store "$run/lrs" > /dev/null
for kind in folder s3; do
  for v in "grs-$kind" "grs-$kind-during"; do
    if [ "$kind" = folder ]; then secondary=$run/$v-secondary; else secondary=s3://boveda-bench-$v/vault; fi
    "$boveda" vault create "$v" --store "$run/$v" --redundancy grs --secondary "$secondary" --create-container > /dev/null
  done
  "$boveda" --vault "grs-$kind-during" vault update --replicate-during-backup true > /dev/null
done
for v in $vaults; do
  "$boveda" --vault "$v" item add files tree --path "$tree" > /dev/null
done
for round in 1 2; do
  if [ "$round" = 2 ]; then python3 "$shared/bench/mutate.py" "$work/mut" 1 > /dev/null; fi
  for v in $vaults; do backup "$v" "$round"; done
done

echo
echo "catch-up after an outage of the secondary (S3), one full backup behind:"
"$boveda" vault create outage --store "$run/outage" --redundancy grs --secondary s3://boveda-bench-outage/vault --create-container > /dev/null
"$boveda" --vault outage item add files tree --path "$tree" > /dev/null
# while the secondary is down, every command that opens the vault fails its
# pass (and would otherwise catch up at once): the outage lasts until the
# timed catch-up
down() { BOVEDA_SECONDARY_FAULTS=fail=1 "$@"; }
down "$boveda" --vault outage protection backup-now tree > "$run/outage-backup.log" 2>&1
down "$boveda" vault create outage2 --store "$run/outage2" --redundancy grs --secondary s3://boveda-bench-outage2/vault --create-container > /dev/null
down "$boveda" --vault outage2 item add files tree --path "$tree" > /dev/null
down "$boveda" --vault outage2 protection backup-now tree > "$run/outage2-backup.log" 2>&1
down "$boveda" --vault outage vault update --parallel-requests 1 > /dev/null
down "$boveda" --vault outage2 vault update --parallel-requests 8 > /dev/null
for v in outage outage2; do
  /usr/bin/time -f "%e" -o "$run/time.txt" "$boveda" --vault "$v" vault replication run > "$run/$v-catchup.log" 2>&1
  behind=$(sed -n 's/^job [0-9a-f]*: copied \(.*\) to the secondary.*/\1/p' "$run/$v-catchup.log")
  parallel=$("$boveda" --vault "$v" --output json vault show | python3 -c 'import json,sys; print(json.load(sys.stdin)["parallel_requests"])')
  printf 'parallel %-3s copied %-28s in %s s\n' "$parallel" "$behind" "$(cat "$run/time.txt")"
  printf 'catchup\t%s\t%s\t%s\n' "$parallel" "$behind" "$(cat "$run/time.txt")" >> "$results"
done
echo "results: $results"
