#!/usr/bin/env bash
# Compare boveda with restic and borg (Debian's packages) on the shared
# corpus, in one run: initial backup, unchanged re-backup, backup after the
# ~1% change of mutate.py, and full restore. Reports wall time, peak RSS and
# repository size, and checks that every restore equals the source.
#
#   bench/compare.sh [WORK_DIR] [SCALE]      (defaults: /tmp/boveda-bench 1)
#
# Every phase starts with the source in the page cache (it is read once
# before) and no dirty pages (sync), so tools are compared on their own
# work, not on the disk or on each other's writeback.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
shared=${SHARED_DIR:-$repo/../shared}
work=${1:-/tmp/boveda-bench}
scale=${2:-1}

. "$here/common.sh"
need restic restic
need borg borgbackup
if [ -e "$work/run" ]; then
  # deleting an earlier run's trees (hundreds of thousands of files) keeps
  # the file system busy for a while; measured right after, every tool's
  # restore ran two to three times slower
  rm -rf "$work/run"
  sync
  sleep 60
fi
mkdir -p "$work/run"
run=$work/run
cp -a "$work/corpus/tree" "$run/tree"   # mutate.py changes it; the corpus stays pristine
cp --sparse=always "$work/corpus/vm.img" "$run/vm.img"
src=$run/tree
img=$run/vm.img

export BOVEDA_CONFIG_DIR=$run/boveda-config BOVEDA_PASSWORD=bench
export RESTIC_PASSWORD=bench RESTIC_REPOSITORY=$run/restic-repo
export BORG_PASSPHRASE=bench BORG_REPO=$run/borg-repo BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes BORG_BASE_DIR=$run/borg-base

results=$run/results.tsv
: > "$results"
warm() { find "$src" -type f -print0 | xargs -0 cat > /dev/null; }
measure() { # tool phase command...
  local tool=$1 phase=$2; shift 2
  sync   # no tool pays for another's dirty pages
  /usr/bin/time -f "%e %M" -o "$run/time.txt" "$@" > "$run/$tool-$phase.log" 2>&1 \
    || { echo "$tool $phase failed:"; cat "$run/$tool-$phase.log"; exit 1; }
  read -r secs kb < "$run/time.txt"
  printf '%s\t%s\t%s\t%s\n' "$tool" "$phase" "$secs" "$kb" >> "$results"
  printf '%-7s %-10s %8.2f s %8d MB\n' "$tool" "$phase" "$secs" "$((kb / 1024))"
}

"$boveda" vault create bench --store "$run/boveda-vault" >/dev/null
"$boveda" item add files tree --path "$src" >/dev/null
"$boveda" item add disk vm --path "$img" >/dev/null
restic init -q >/dev/null
borg init -e repokey >/dev/null 2>&1

backup() { # phase
  warm; measure boveda "$1" "$boveda" protection backup-now tree
  warm; measure restic "$1" restic backup -q "$src"
  warm; measure borg "$1" borg create "::$1" "$src"
}
backup_disk() { # phase: the 4 GiB sparse vm.img (about 950 MiB allocated)
  cat "$img" > /dev/null
  measure boveda "disk-$1" "$boveda" protection backup-now vm
  measure restic "disk-$1" restic backup -q "$img"
  measure borg "disk-$1" borg create "::disk-$1" "$img"
}
disk_size() { du -sb "$run/boveda-vault" "$run/restic-repo" "$run/borg-repo" | cut -f1 | tr '\n' ' '; }

backup initial
backup unchanged
backup_disk initial
python3 "$shared/bench/mutate.py" "$run" 1   # ~1% of the tree, 40 MiB of vm.img
backup changed
before_disk=$(disk_size)
backup_disk changed
after_disk=$(disk_size)
read -r -a b <<< "$before_disk"; read -r -a a <<< "$after_disk"
echo "vault growth from the disk change (40 MiB written): boveda $(( (a[0]-b[0]) / 1048576 )) MiB, restic $(( (a[1]-b[1]) / 1048576 )) MiB, borg $(( (a[2]-b[2]) / 1048576 )) MiB"
printf 'boveda\tdisk-growth\t%s\t0\nrestic\tdisk-growth\t%s\t0\nborg\tdisk-growth\t%s\t0\n' "$((a[0]-b[0]))" "$((a[1]-b[1]))" "$((a[2]-b[2]))" >> "$results"
echo "boveda bytes read for the disk backups: $(grep -o 'read [0-9.]* [KMG]iB' "$run/boveda-disk-initial.log") (initial), $(grep -o 'read [0-9.]* [KMG]iB' "$run/boveda-disk-changed.log") (changed)"

# Restore times on this machine vary by up to 2x from one run to the next
# (every tool alike), so each tool restores three times, interleaved, into
# fresh targets, and the median counts.
for round in 1 2 3; do
  measure boveda "restore$round" "$boveda" restore tree --target "$run/restore-boveda-$round"
  measure restic "restore$round" restic restore latest --path "$src" --target "$run/restore-restic-$round"
  mkdir -p "$run/restore-borg-$round"
  measure borg "restore$round" sh -c "cd '$run/restore-borg-$round' && borg extract ::changed"
done

# disk restores: to a sparse image file each
measure boveda disk-restore "$boveda" restore vm --target "$run/vm-boveda.img"
measure restic disk-restore restic restore latest --path "$img" --target "$run/vm-restic"
mkdir -p "$run/vm-borg"
measure borg disk-restore sh -c "cd '$run/vm-borg' && borg extract --sparse ::disk-changed"
for pair in "boveda:$run/vm-boveda.img" "restic:$run/vm-restic/${img#/}" "borg:$run/vm-borg/${img#/}"; do
  t=${pair%%:*}; f=${pair#*:}
  if qemu-img compare -q "$img" "$f"; then same=yes; else same=NO; fi
  echo "$t disk restore equals source: $same; allocated $(du -k "$f" | cut -f1) KiB (source $(du -k "$img" | cut -f1) KiB)"
done

for t in boveda restic borg; do
  if diff -r --no-dereference "$src" "$run/restore-$t-1/${src#/}" > /dev/null; then ok=yes; else ok=NO; fi
  echo "$t restore equals source: $ok"
  printf '%s\tidentical\t%s\t0\n' "$t" "$ok" >> "$results"
done
for d in boveda-vault restic-repo borg-repo; do
  size=$(du -sb "$run/$d" | cut -f1)
  echo "$d: $((size / 1048576)) MiB"
  printf '%s\tsize\t%s\t0\n' "${d%%-*}" "$size" >> "$results"
done
echo "raw results: $results"
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
def val(tool, phase, col):
    xs = [float(r[col]) for r in rows if r[0] == tool and (r[1] == phase or (phase == "restore" and r[1].startswith("restore") and r[1] != "restore"))]
    return statistics.median(xs) if xs else float("nan")
tools = ["boveda", "restic", "borg"]
print("\n| phase | " + " | ".join(f"{t} s" for t in tools) + " | " + " | ".join(f"{t} MB" for t in tools) + " |")
print("|---" * (1 + 2 * len(tools)) + "|")
for phase in ["initial", "unchanged", "changed", "restore", "disk-initial", "disk-changed", "disk-restore"]:
    secs = " | ".join(f"{val(t, phase, 2):.2f}" for t in tools)
    mb = " | ".join(f"{val(t, phase, 3) / 1024:.0f}" for t in tools)
    print(f"| {phase} | {secs} | {mb} |")
sizes = {r[0]: int(r[2]) for r in rows if r[1] == "size"}
print("| repository MiB | " + " | ".join(str(sizes.get(t, 0) // 1048576) for t in tools) + " | | | |")
PY
