#!/usr/bin/env bash
# Proving points, measured in one run:
#  1. boot verification of a VM point (the test guest's disk that boots by
#     itself: BIOS, syslinux, Debian's kernel, an initramfs with the guest
#     agent, 13 MiB of data on a 64 MiB disk, and a second disk of 256 MiB
#     of random data the boot never reads) from a local folder vault,
#     ROUNDS times: the seconds until the guest agent answered, the whole
#     command, and the bytes read from the vault against the disks' size;
#     under TCG (software emulation) unless ACCEL=kvm;
#  2. four verifications at once against one alone;
#  3. a restore drill of the corpus tree (every chunk compared) beside
#     restic's `restore --verify` (it reads every restored file back and
#     checks it) on the same data.
#
#   bench/verify.sh [WORK_DIR] [SCALE] [ROUNDS]   (defaults: /tmp/boveda-verify 0.25 5)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
shared=${SHARED_DIR:-$repo/../shared}
work=${1:-/tmp/boveda-verify}
scale=${2:-0.25}
rounds=${3:-5}
accel=${ACCEL:-tcg}
. "$here/common.sh"
need restic restic
bash "$repo/scripts/test-guest.sh" "$repo/target/test-tools/guest" >/dev/null
guest=$repo/target/test-tools/guest

export BOVEDA_CONFIG_DIR=$work/config BOVEDA_CACHE_DIR=$work/cache BOVEDA_PASSWORD=bench RESTIC_PASSWORD=bench
rm -rf "$work/config" "$work/cache" "$work/vault" "$work/vms" "$work/restic" "$work/tmp"
mkdir -p "$work/vms" "$work/tmp"
export TMPDIR=$work/tmp
$boveda vault create bench --store "$work/vault" >/dev/null
# vm1 has a second disk of 256 MiB of data its boot never reads
head -c $((256 << 20)) /dev/urandom > "$work/vms/data.img"
for n in 1 2 3 4; do
  cp --sparse=always "$guest/boot.img" "$work/vms/vm$n.img"
  extra=
  [ "$n" = 1 ] && extra="<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='$work/vms/data.img'/><target dev='vdb' bus='virtio'/></disk>"
  cat > "$work/vms/vm$n.xml" <<XML
<domain type='kvm'><name>vm$n</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>
<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='$work/vms/vm$n.img'/><target dev='vda' bus='virtio'/></disk>
$extra
</devices></domain>
XML
  $boveda item add vm "vm$n" --domain-xml "$work/vms/vm$n.xml" >/dev/null
  $boveda protection backup-now "vm$n" >/dev/null
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
field() { python3 -c "import json,sys; v=json.load(sys.stdin); print(' '.join(str(eval('x'+sys.argv[1], {'x': x})) for x in v))" "$1"; }

echo "== 1. one VM point booted ($accel), $rounds rounds"
: > "$work/one.txt"
for r in $(seq 1 "$rounds"); do
  start=$(date +%s.%N)
  out=$($boveda --output json recoverypoint verify vm1 --accel "$accel")
  end=$(date +%s.%N)
  answer=$(echo "$out" | field "['boot']['seconds_to_answer']")
  read_b=$(echo "$out" | field "['bytes_read']")
  disk_b=$(echo "$out" | field "['disk_bytes']")
  whole=$(echo "$start $end" | awk '{printf "%.2f", $2 - $1}')
  echo "round $r: agent answered after ${answer} s; command ${whole} s; read ${read_b} of ${disk_b} bytes"
  echo "$answer $whole $read_b $disk_b" >> "$work/one.txt"
done
echo "median agent answer: $(awk '{print $1}' "$work/one.txt" | median) s; median command: $(awk '{print $2}' "$work/one.txt" | median) s"
awk 'NR==1 {printf "read from the vault during a boot: %.1f MiB of a %.1f MiB disk (%.1f%%)\n", $3/1048576, $4/1048576, 100*$3/$4}' "$work/one.txt"

echo "== 2. four at once ($accel)"
start=$(date +%s.%N)
out=$($boveda --output json recoverypoint verify vm1 vm2 vm3 vm4 --accel "$accel" --max-memory-mib 256)
end=$(date +%s.%N)
echo "four verifications at once: $(echo "$start $end" | awk '{printf "%.2f", $2 - $1}') s wall; agent answers: $(echo "$out" | field "['boot']['seconds_to_answer']")"

echo "== 3. restore drill of the corpus (scale $scale) beside restic restore --verify"
src=$work/corpus/tree
$boveda item add files corpus --path "$src" >/dev/null
$boveda protection backup-now corpus >/dev/null
restic init -q -r "$work/restic"
restic -q -r "$work/restic" backup "$src" >/dev/null
: > "$work/drill.txt"
for r in $(seq 1 "$rounds"); do
  start=$(date +%s.%N)
  $boveda recoverypoint verify corpus --scratch "$work/tmp" >/dev/null
  mid=$(date +%s.%N)
  rm -rf "$work/restic-out"
  restic -q -r "$work/restic" restore latest --target "$work/restic-out" --verify >/dev/null
  end=$(date +%s.%N)
  rm -rf "$work/restic-out"
  echo "$start $mid $end" | awk -v r="$r" '{printf "round %s: boveda drill %.2f s, restic restore --verify %.2f s\n", r, $2-$1, $3-$2; print $2-$1, $3-$2 > "/dev/stderr"}' 2>> "$work/drill.txt"
done
b=$(awk '{print $1}' "$work/drill.txt" | median)
p=$(awk '{print $2}' "$work/drill.txt" | median)
echo "median: boveda drill $b s, restic restore --verify $p s (ratio $(echo "$b $p" | awk '{printf "%.2f", $1/$2}'))"
