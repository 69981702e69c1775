#!/usr/bin/env bash
# Offline seeding's two copies against plain ones, on the shared corpus's
# tree, in one run:
# - diskprep (read, check, seal and write every staged object onto a drive,
#   with its journal) against `cp -r` of the same staging folder onto the
#   same disk, each followed by `sync`;
# - import (open, check and upload every object of the drive to the S3
#   server) against `rclone copy` of the staging folder to the same server.
#
#   bench/offline.sh [WORK_DIR] [SCALE]     (defaults: /tmp/boveda-bench-offline 1)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
shared=${SHARED_DIR:-$repo/../shared}
work=${1:-/tmp/boveda-bench-offline}
scale=${2:-1}

. "$here/common.sh"
need rclone rclone
# every step at the default open-file limit (the tree has ~40k files)
ulimit -n 1024
src=$work/corpus/tree
run=$work/run
rm -rf "$run"
mkdir -p "$run/stores" "$run/staging"
cleanup() { "$repo/scripts/stores.sh" stop "$run/stores"; }
trap cleanup EXIT
eval "$("$repo/scripts/stores.sh" start "$run/stores")"
export BOVEDA_CONFIG_DIR=$run/config BOVEDA_CACHE_DIR=$run/cache BOVEDA_PASSWORD=bench
# rclone's view of the S3 server
export RCLONE_CONFIG_MOTO_TYPE=s3 RCLONE_CONFIG_MOTO_PROVIDER=Other RCLONE_CONFIG_MOTO_ENDPOINT=$BOVEDA_TEST_S3
export RCLONE_CONFIG_MOTO_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY

timed() { # label bytes command...
  local label=$1 bytes=$2; shift 2
  sync
  /usr/bin/time -f "%e" -o "$run/time.txt" "$@" > "$run/$label.log" 2>&1 || { echo "$label failed:"; tail -5 "$run/$label.log"; exit 1; }
  local secs
  secs=$(cat "$run/time.txt")
  printf '%-10s %8.2f s %8.1f MB/s\n' "$label" "$secs" "$(python3 -c "print($bytes / 1e6 / max($secs, 0.01))")"
  echo "$secs"> "$run/$label.secs"
}

"$boveda" vault create seed --store s3://boveda-bench-offline/vault --create-container > /dev/null
"$boveda" item add files tree --path "$src" > /dev/null
"$boveda" protection enable tree --policy DefaultPolicy > /dev/null
"$boveda" offline init tree --staging "$run/staging" --import-job seed-1 > /dev/null
"$boveda" protection backup-now tree > "$run/seed.log"
staged=$run/staging/seed-1
bytes=$(du -sb --exclude=drives "$staged" | cut -f1)
echo "seed staged: $((bytes / 1048576)) MiB in $(find "$staged" -type f | wc -l) files"

timed cp "$bytes" sh -c "cp -r '$staged' '$run/cp-drive' && sync"
timed diskprep "$bytes" sh -c "'$boveda' offline diskprep --staging '$run/staging' --drive '$run/drive1' && sync"
"$boveda" offline shipping --import-job seed-1 --carrier bench --tracking bench-1 > /dev/null
timed rclone "$bytes" env -u AWS_CA_BUNDLE rclone copy --exclude 'drives/**' --exclude seed-journal.json "$staged" moto:boveda-bench-plain
timed import "$bytes" "$boveda" offline import --import-job seed-1 --drive "$run/drive1"
python3 - "$run" <<'EOF'
import sys
run = sys.argv[1]
t = {k: float(open(f"{run}/{k}.secs").read()) for k in ("cp", "diskprep", "rclone", "import")}
print(f"diskprep throughput: {100 * t['cp'] / t['diskprep']:.0f}% of cp -r (target: at least 80%)")
print(f"import throughput:   {100 * t['rclone'] / t['import']:.0f}% of rclone copy (target: at least 80%)")
EOF
"$boveda" vault check --read-data > "$run/check.log" && echo "vault check --read-data: no problems"
