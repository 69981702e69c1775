#!/usr/bin/env bash
# Restore of many small files, boveda beside restic, in one run, at the
# default open-file limit (ulimit -n 1024): backup, then full restore, with
# wall time and peak RSS, and a byte-for-byte comparison of each restore.
#
#   bench/small_files.sh [WORK_DIR] [FILES]     (defaults: /tmp/boveda-small 200000)
#
# FILES files of 20 to 2000 bytes, in folders of 1000 (one folder holds
# them all when FILES <= 5000).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
work=${1:-/tmp/boveda-small}
files=${2:-200000}

need() { command -v "$1" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }; }
need restic restic
[ -x /usr/bin/time ] || need /usr/bin/time time
(cd "$repo" && cargo build --release -q)
boveda=$repo/target/release/boveda

rm -rf "$work"; mkdir -p "$work"
src=$work/src
python3 - "$src" "$files" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(7)
per = n if n <= 5000 else 1000
for i in range(n):
    d = os.path.join(root, f"d{i // per:04d}")
    if i % per == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:07d}.txt"), "wb") as f:
        f.write(rnd.randbytes(rnd.randint(10, 1000)).hex().encode())
PY
ulimit -n 1024
export BOVEDA_CONFIG_DIR=$work/boveda-config BOVEDA_PASSWORD=bench RESTIC_PASSWORD=bench RESTIC_REPOSITORY=$work/restic-repo
measure() { # tool phase command...
  local tool=$1 phase=$2; shift 2
  sync
  /usr/bin/time -f "%e %M" -o "$work/time.txt" "$@" > "$work/$tool-$phase.log" 2>&1 \
    || { echo "$tool $phase failed:"; tail -5 "$work/$tool-$phase.log"; exit 1; }
  read -r secs kb < "$work/time.txt"
  printf '%-7s %-8s %8.2f s %8d MB\n' "$tool" "$phase" "$secs" "$((kb / 1024))"
}
echo "$files small files, ulimit -n $(ulimit -n), $(nproc) cores"
"$boveda" vault create small-bench --store "$work/boveda-vault" > /dev/null
"$boveda" item add files small --path "$src" > /dev/null
measure boveda backup "$boveda" protection backup-now small
restic init -q
measure restic backup restic backup -q "$src"
measure boveda restore "$boveda" restore small --target "$work/out-boveda"
measure restic restore restic restore latest --target "$work/out-restic"
diff -r "$src" "$work/out-boveda$src" > /dev/null && echo "boveda restore equals the source"
diff -r "$src" "$work/out-restic$src" > /dev/null && echo "restic restore equals the source"
