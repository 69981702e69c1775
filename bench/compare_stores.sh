#!/usr/bin/env bash
# boveda beside restic on object stores, in one run: back up the shared
# corpus's tree into Azurite and into the moto S3 server, then restore it,
# each tool into its own container or bucket. restic speaks S3 itself and
# reaches Azurite through its rclone backend (rclone from Debian), since
# its own Azure backend cannot be pointed at Azurite's endpoint. Reports
# wall time and, for boveda, the requests made per GB written and read
# (BOVEDA_STORE_METRICS); every restore is compared with the source.
#
#   bench/compare_stores.sh [WORK_DIR] [SCALE]     (defaults: /tmp/boveda-bench-stores 1)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
shared=${SHARED_DIR:-$repo/../shared}
work=${1:-/tmp/boveda-bench-stores}
scale=${2:-1}

. "$here/common.sh"
need restic restic
need rclone rclone
src=$work/corpus/tree
run=$work/run
rm -rf "$run"
mkdir -p "$run/stores"
cleanup() { "$repo/scripts/stores.sh" stop "$run/stores"; }
trap cleanup EXIT
# Azurite on its usual port: Debian's rclone (1.60) reaches an emulator only there
export AZURITE_PORT=10000
eval "$("$repo/scripts/stores.sh" start "$run/stores")"

export BOVEDA_CONFIG_DIR=$run/boveda-config BOVEDA_CACHE_DIR=$run/boveda-cache BOVEDA_PASSWORD=bench
export RESTIC_PASSWORD=bench
# rclone's view of Azurite, for restic's rclone backend
export RCLONE_CONFIG_AZURITE_TYPE=azureblob RCLONE_CONFIG_AZURITE_USE_EMULATOR=true

bytes=$(du -sb "$src" | cut -f1)
results=$run/results.tsv
: > "$results"
warm() { find "$src" -type f -print0 | xargs -0 cat > /dev/null; }
# busy and total jiffies of the whole machine (every core), from /proc/stat
jiffies() { awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }
measure() { # store tool phase command...
  local store=$1 tool=$2 phase=$3; shift 3
  sync
  local b0 t0 b1 t1
  read -r b0 t0 < <(jiffies)
  BOVEDA_STORE_METRICS=1 /usr/bin/time -f "%e %M %P" -o "$run/time.txt" "$@" > "$run/$store-$tool-$phase.log" 2>&1 \
    || { echo "$store $tool $phase failed:"; tail -5 "$run/$store-$tool-$phase.log"; exit 1; }
  read -r b1 t1 < <(jiffies)
  read -r secs kb cpu < "$run/time.txt"
  # the tool and the store server together: are both cores busy?
  local machine=$(( 100 * $(nproc) * (b1 - b0) / (t1 - t0 > 0 ? t1 - t0 : 1) ))
  local requests
  requests=$(sed -n 's/^boveda: store: \([0-9]*\) requests.*/\1/p' "$run/$store-$tool-$phase.log" | tail -1)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$store" "$tool" "$phase" "$secs" "$kb" "${requests:-}" "$cpu" "$machine%" >> "$results"
  printf '%-7s %-7s %-8s %8.2f s %6d MB CPU %s, machine %s%% %s\n' "$store" "$tool" "$phase" "$secs" "$((kb / 1024))" "$cpu" "$machine" "${requests:+$requests requests}"
}

for store in s3 azblob; do
  "$boveda" vault create "bench-$store" --store "$store://boveda-bench/vault" --create-container >/dev/null
  "$boveda" item add files tree --path "$src" --vault "bench-$store" >/dev/null
  if [ "$store" = s3 ]; then
    export RESTIC_REPOSITORY=s3:$BOVEDA_TEST_S3/restic-bench/repo
  else
    export RESTIC_REPOSITORY=rclone:azurite:restic-bench/repo
  fi
  tools=boveda
  if timeout 120 restic init -q >/dev/null 2>"$run/$store-restic-init.log"; then
    tools="boveda restic"
  else
    echo "$store: restic could not open its repository (see $run/$store-restic-init.log); boveda alone"
  fi
  warm; measure "$store" boveda backup "$boveda" --vault "bench-$store" protection backup-now tree
  if [ "$tools" != boveda ]; then warm; measure "$store" restic backup restic backup -q "$src"; fi
  measure "$store" boveda restore "$boveda" --vault "bench-$store" restore tree --target "$run/restore-boveda-$store"
  if [ "$tools" != boveda ]; then measure "$store" restic restore restic restore latest --target "$run/restore-restic-$store"; fi
  for t in $tools; do
    if diff -r --no-dereference "$src" "$run/restore-$t-$store/${src#/}" > /dev/null; then ok=yes; else ok=NO; fi
    echo "$store $t restore equals source: $ok"
    rm -rf "$run/restore-$t-$store"
  done
done
# The same backup into S3 with 50 ms added to every request (the fault
# layer's latency, under the retry layer): does a backup keep both cores
# busy when the store is far away?
"$boveda" vault create bench-far --store "s3://boveda-bench/far" >/dev/null
"$boveda" item add files tree --path "$src" --vault bench-far >/dev/null
warm
BOVEDA_STORE_FAULTS=latency=50ms measure far boveda backup "$boveda" --vault bench-far protection backup-now tree
python3 - "$results" "$bytes" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
gb = int(sys.argv[2]) / 1e9
get = lambda s, t, p, c: next((r[c] for r in rows if r[:3] == [s, t, p]), "")
print(f"\ncorpus tree: {gb:.2f} GB\n")
print("| store | phase | boveda s | restic s | boveda/restic | boveda MB | restic MB | boveda requests per GB | boveda CPU | machine CPU (boveda run) |")
print("|---|---|---|---|---|---|---|---|---|---|")
for s, name in [("azblob", "Azurite"), ("s3", "S3 (moto)"), ("far", "S3, 50 ms a request")]:
    for p in ["backup", "restore"]:
        if not get(s, "boveda", p, 3):
            continue
        b, r = get(s, "boveda", p, 3), get(s, "restic", p, 3)
        req = get(s, "boveda", p, 5)
        per_gb = f"{int(req) / gb:.0f}" if req else "-"
        ratio = f"{float(b) / float(r):.2f}" if r else "-"
        rmb = str(int(get(s, "restic", p, 4)) // 1024) if r else "-"
        cpu, machine = get(s, "boveda", p, 6), get(s, "boveda", p, 7)
        print(f"| {name} | {p} | {float(b):.2f} | {r or '-'} | {ratio} | {int(get(s, 'boveda', p, 4)) // 1024} | {rmb} | {per_gb} | {cpu} | {machine} |")
PY
