#!/usr/bin/env bash
# The warning when a backup looks like an attack, on the benchmark corpus
# (../shared/bench/make_corpus.sh; its tree only): a first backup, ROUNDS
# rounds of ordinary change (../shared/bench/mutate.py, ~1% each) each
# backed up, then an attack (a third of the files encrypted with
# `openssl enc`) backed up. Reports how many ordinary points were flagged
# (want 0), whether the attack was (want yes), and what the check cost
# next to the backups' own CPU time (want under 2%).
#
#   bash bench/suspicion.sh [WORK_DIR] [SCALE] [ROUNDS]
#   bash bench/suspicion.sh /tmp/boveda-suspicion 0.25 30
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/boveda-suspicion}
scale=${2:-0.25}
rounds=${3:-30}
shared=$(cd .. && pwd)/shared/bench

cargo build --release -q -p boveda
bin=$PWD/target/release/boveda
rm -rf "$work/vault" "$work/config" "$work/cache"
mkdir -p "$work"
bash "$shared/make_corpus.sh" "$work/corpus" "$scale" >/dev/null
rm -rf "$work/m" && mkdir -p "$work/m" && cp -a "$work/corpus/tree" "$work/m/tree"
data=$work/m/tree
export BOVEDA_CONFIG_DIR=$work/config BOVEDA_CACHE_DIR=$work/cache BOVEDA_PASSWORD=bench BOVEDA_TIMINGS=1
unset BOVEDA_VAULT BOVEDA_PASSWORD_FILE
"$bin" vault create bench --store "$work/vault" >/dev/null
"$bin" item add files data --path "$data" >/dev/null

cpu=0 check=0
backup() {
  local out
  out=$( { /usr/bin/time -f "cpu %U %S" "$bin" protection backup-now data >/dev/null; } 2>&1 )
  cpu=$(echo "$out" | awk -v c="$cpu" '/^cpu/ {c += $2 + $3} END {print c}')
  check=$(echo "$out" | awk -v c="$check" '/suspicion check/ {c += $4} END {print c}')
}
backup
files=$(find "$data" -type f | wc -l)
for r in $(seq 1 "$rounds"); do
  python3 "$shared/mutate.py" "$work/m" "$r" >/dev/null
  backup
done
flagged=$("$bin" --output json recoverypoint review data | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
# the attack: every third file encrypted in place
i=0
while IFS= read -r f; do
  i=$((i + 1))
  [ $((i % 3)) -eq 0 ] || continue
  openssl enc -aes-256-cbc -pbkdf2 -pass pass:ransom -in "$f" -out "$f.enc" 2>/dev/null && mv "$f.enc" "$f"
done < <(find "$data" -type f | sort)
backup
after=$("$bin" --output json recoverypoint review data | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
echo "corpus: $files files (scale $scale); $rounds rounds of ordinary change"
echo "ordinary points flagged: $flagged (want 0)"
echo "attack flagged: $([ "$after" -gt "$flagged" ] && echo yes || echo NO)"
"$bin" recoverypoint review data | tail -n +1
python3 - "$cpu" "$check" <<'PY'
import sys
cpu, check_us = float(sys.argv[1]), float(sys.argv[2])
print(f"backups' CPU: {cpu:.2f} s; suspicion checks: {check_us/1e6:.4f} s ({100*check_us/1e6/max(cpu,1e-9):.3f}% of it)")
PY
