#!/usr/bin/env bash
# Live backup of a running VM: a real qemu-system-x86_64 boots the test
# guest (scripts/test-guest.sh: Debian's kernel, busybox, qemu-ga) with the
# shared corpus's 4 GiB ext4 vm.img as its disk; boveda takes a full live
# backup, the disk gets 40 MiB of writes through QEMU (40 x 1 MiB spread
# over the disk), and boveda takes an incremental one. Reports, per backup:
# seconds, bytes read from the snapshot, and the guest's stall (freeze to
# thaw, from the point's freeze_ms).
#
#   bench/live.sh [WORK_DIR] [SCALE]     (defaults: /tmp/boveda-bench-live 1)
#
# Targets (docs/PERFORMANCE.md): the incremental reads at most 2x the
# 40 MiB changed and takes at most a tenth of the full backup's time; the
# stall stays under one second. No peer (restic, borg, kopia) backs up a
# running QEMU VM's disks, so there is no peer column here.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
shared=${SHARED_DIR:-$repo/../shared}
work=${1:-/tmp/boveda-bench-live}
scale=${2:-1}

. "$here/common.sh"
command -v qemu-system-x86_64 >/dev/null || { echo "bench/live.sh: needs qemu-system-x86 (scripts/test.sh installs it)" >&2; exit 2; }
guest=$repo/target/test-tools/guest
bash "$repo/scripts/test-guest.sh" "$guest"
run=$work/run
rm -rf "$run"
mkdir -p "$run"
export BOVEDA_CONFIG_DIR=$run/config BOVEDA_CACHE_DIR=$run/cache BOVEDA_PASSWORD=bench
cp --sparse=always "$work/corpus/vm.img" "$run/vda.img"
truncate -s 1G "$run/vdb.img"
cat > "$run/vm.xml" <<EOF
<domain type='kvm'><name>bench</name><devices>
  <disk type='file' device='disk'><source file='$run/vda.img'/><target dev='vda' bus='virtio'/></disk>
  <disk type='file' device='disk'><source file='$run/vdb.img'/><target dev='vdb' bus='virtio'/></disk>
  <channel type='unix'><source mode='bind' path='$run/qga.sock'/><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
</devices></domain>
EOF
qemu-system-x86_64 -accel tcg -m 256 -nodefaults -display none -no-reboot \
  -kernel "$guest/vmlinuz" -initrd "$guest/initrd.img" -append "console=ttyS0 quiet panic=-1" \
  -serial "file:$run/console.log" \
  -blockdev "driver=file,node-name=f-vda,filename=$run/vda.img" -blockdev driver=raw,node-name=vda,file=f-vda \
  -device virtio-blk-pci,drive=vda,id=disk-vda \
  -blockdev "driver=file,node-name=f-vdb,filename=$run/vdb.img" -blockdev driver=raw,node-name=vdb,file=f-vdb \
  -device virtio-blk-pci,drive=vdb,id=disk-vdb \
  -chardev "socket,path=$run/qga.sock,server=on,wait=off,id=qga0" -device virtio-serial \
  -device virtserialport,chardev=qga0,name=org.qemu.guest_agent.0 \
  -qmp "unix:$run/qmp.sock,server=on,wait=off" -qmp "unix:$run/bench-qmp.sock,server=on,wait=off" \
  > "$run/qemu.log" 2>&1 &
qemu=$!
trap 'kill $qemu 2>/dev/null; wait $qemu 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do grep -q boveda-guest-ready "$run/console.log" 2>/dev/null && break; sleep 0.5; done
grep -q boveda-guest-ready "$run/console.log" || { echo "the guest did not boot"; tail "$run/console.log"; exit 1; }

"$boveda" vault create bench --store "$run/vault" >/dev/null
"$boveda" item add vm bench --domain-xml "$run/vm.xml" --qmp "$run/qmp.sock" >/dev/null

backup() { # label
  local start end
  start=$(date +%s.%N)
  "$boveda" --output json protection backup-now bench > "$run/$1.json"
  end=$(date +%s.%N)
  python3 - "$1" "$start" "$end" "$run/$1.json" <<'EOF'
import json, sys
label, start, end, path = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
p = json.load(open(path))
secs = end - start
print(f"{label:<12} {secs:8.2f} s  read {p['stats']['bytes_read'] / 2**20:8.1f} MiB  "
      f"stall {p.get('freeze_ms', -1):5d} ms  {p['consistency']}")
open(path + ".secs", "w").write(str(secs))
EOF
}

echo "live backup of a running VM: vda $(du -h --apparent-size "$run/vda.img" | cut -f1) ($(du -h "$run/vda.img" | cut -f1) allocated), vdb 1 GiB empty"
backup full
# 40 MiB written by the guest's devices, spread over the disk
python3 - "$run/bench-qmp.sock" <<'EOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rw")
def cmd(c, a=None):
    f.write(json.dumps({"execute": c, "arguments": a or {}}) + "\n"); f.flush()
    while True:
        r = json.loads(f.readline())
        if "return" in r or "error" in r:
            return r
f.readline(); cmd("qmp_capabilities")
for i in range(40):
    off = (i * 97 + 13) % 4000 * (1 << 20)
    r = cmd("human-monitor-command", {"command-line": f'qemu-io -d disk-vda/virtio-backend "write -P {i + 1} {off} 1M"'})
    assert "rror" not in r.get("return", "error"), r
EOF
backup incremental
python3 - "$run/full.json" "$run/incremental.json" <<'EOF'
import json, sys
full, inc = (json.load(open(p)) for p in sys.argv[1:3])
fs, is_ = (float(open(p + ".secs").read()) for p in sys.argv[1:3])
read = inc["stats"]["bytes_read"] / (40 << 20)
print(f"incremental: read {read:.2f}x the 40 MiB changed (target <= 2), "
      f"{is_ / fs:.3f} of the full backup's time (target <= 0.1), "
      f"stall {max(full.get('freeze_ms', 0), inc.get('freeze_ms', 0))} ms (target < 1000)")
EOF
