#!/usr/bin/env bash
# Restore speed, boveda beside restic, in one run: the corpus tree (about
# 40 000 files, 1.1 GiB at scale 1) backed up by both, then ROUNDS rounds of
# a warm restore and a cold one, the two tools in turn, each restore into a
# fresh folder compared with the source. Every run starts with the page
# cache dropped (so no run pays for reclaiming what earlier runs left);
# a warm run then reads its repository once, so it is in the page cache,
# a cold one does not. Prints every run and the medians with the ratio
# boveda / restic.
#
#   bench/restore.sh [WORK_DIR] [SCALE] [ROUNDS]   (defaults: /tmp/boveda-restore 1 5)
#
# Needs root for the cold runs (it writes /proc/sys/vm/drop_caches).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
shared=${SHARED_DIR:-$repo/../shared}
work=${1:-/tmp/boveda-restore}
scale=${2:-1}
rounds=${3:-5}

need() { command -v "$1" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }; }
need restic restic
[ -x /usr/bin/time ] || need /usr/bin/time time
(cd "$repo" && cargo build --release -q -p boveda)
boveda=$repo/target/release/boveda

mkdir -p "$work"
if [ ! -e "$work/tree.done" ]; then
  rm -rf "$work/tree"
  python3 "$shared/bench/gen_tree.py" "$work/tree" --scale "$scale" --seed 1 >/dev/null
  touch "$work/tree.done"
fi
src=$work/tree
run=$work/run
rm -rf "$run"; mkdir -p "$run"
export BOVEDA_CONFIG_DIR=$run/boveda-config BOVEDA_PASSWORD=bench RESTIC_PASSWORD=bench RESTIC_REPOSITORY=$run/restic-repo
"$boveda" vault create bench --store "$run/boveda-vault" >/dev/null
"$boveda" item add files tree --path "$src" >/dev/null
"$boveda" protection backup-now tree >/dev/null
restic init -q >/dev/null
restic backup -q "$src" >/dev/null
files=$(find "$src" -type f | wc -l)
echo "restoring $files files ($(du -sh --apparent-size "$src" | cut -f1)), $rounds rounds"

results=$run/results.tsv
: > "$results"
one() { # tool kind round
  # a fresh folder each time: deleting a restored tree right before a run
  # keeps the file system busy and made the next restore (either tool's)
  # two to three times slower; they are all deleted at the end
  local tool=$1 kind=$2 n=$3 target=$run/out-$1-$2-$3
  sync
  echo 3 > /proc/sys/vm/drop_caches
  if [ "$kind" = warm ]; then
    case $tool in
      boveda) find "$run/boveda-vault" -type f -print0 | xargs -0 cat > /dev/null ;;
      restic) find "$RESTIC_REPOSITORY" -type f -print0 | xargs -0 cat > /dev/null ;;
    esac
  fi
  case $tool in
    boveda) cmd=("$boveda" restore tree --target "$target") ;;
    restic) cmd=(restic restore latest -q --target "$target") ;;
  esac
  /usr/bin/time -f "%e %U %S %M" -o "$run/time.txt" "${cmd[@]}" > "$run/$tool.log" 2>&1 \
    || { echo "$tool restore failed:"; cat "$run/$tool.log"; exit 1; }
  read -r secs user sys kb < "$run/time.txt"
  diff -r "$src" "$target$src" > /dev/null || { echo "$tool: the restore differs from the source"; exit 1; }
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$kind" "$n" "$secs" "$user" "$sys" "$kb" >> "$results"
  printf '%-7s %-5s round %d: %6.2f s (user %5.2f, sys %5.2f) %5d MB\n' "$tool" "$kind" "$n" "$secs" "$user" "$sys" "$((kb / 1024))"
}
# warm the repositories once
one boveda warm 0 >/dev/null; one restic warm 0 >/dev/null
for n in $(seq 1 "$rounds"); do
  # the order alternates, so neither tool always runs on the other's writeback
  if [ $((n % 2)) = 1 ]; then order="boveda restic"; else order="restic boveda"; fi
  for kind in warm cold; do
    for tool in $order; do one "$tool" "$kind" "$n"; done
  done
done
rm -rf "$run"/out-*
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]) if l.strip()]
med = lambda tool, kind, col: statistics.median(float(r[col]) for r in rows if r[0] == tool and r[1] == kind and r[2] != "0")
for kind in ("warm", "cold"):
    b, r = med("boveda", kind, 3), med("restic", kind, 3)
    print(f"{kind}: boveda {b:.2f} s (sys {med('boveda', kind, 5):.2f}), restic {r:.2f} s (sys {med('restic', kind, 5):.2f}): {b / r:.2f}x")
PY
