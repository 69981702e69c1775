#!/usr/bin/env bash
# Builds the tiny guest the live-VM tests boot in QEMU: Debian's kernel and
# an initramfs with busybox and the QEMU guest agent, all from Debian's
# packages (downloaded once into OUT/debs).
#
#   scripts/test-guest.sh OUT
#
# OUT gets `vmlinuz` and `initrd.img`, and two disks that boot by
# themselves, by BIOS (syslinux) and by UEFI (systemd-boot at the
# removable-media path EFI/BOOT/BOOTX64.EFI), from a FAT file system that
# holds the kernel and initramfs: `boot.img`, and `boot-noagent.img` whose
# guest runs no agent (its kernel command line says `boveda.noagent`); both
# need syslinux, mtools, dosfstools and systemd-boot-efi. The guest loads the virtio modules,
# mounts its first disk (ext4) at /data, writes /data/greeting without
# syncing it (so only a file-system freeze puts it on the disk), starts the
# guest agent on the virtio-serial port org.qemu.guest_agent.0, and prints
# "boveda-guest-ready" on its serial console.
#
# `boot-entry.img` is `boot.img` whose UEFI loader is not at the
# removable-media path but at EFI/boveda/loader.efi, so that UEFI boots it
# only by a boot entry; `boot-entry-vars.fd` is OVMF's 4 MiB variable
# template with that entry (made by virt-fw-vars, from PyPI's
# virt-firmware, installed in OUT/../virt-firmware).
set -euo pipefail
out=$1
mkdir -p "$out/debs"
out=$(cd "$out" && pwd)
# the build's version: a guest built by an older script is built again
version=5
# tests build it at once from several threads: one builds, the others wait
exec 9>"$out/.lock"
flock 9
if [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ] && [ -s "$out/boot-noagent.img" ] && [ -s "$out/boot-entry-vars.fd" ] \
  && [ "$(cat "$out/version" 2>/dev/null)" = "$version" ]; then
  exit 0
fi

debs=$out/debs
kernel_pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
(cd "$debs" && for p in "$kernel_pkg" busybox-static qemu-guest-agent; do
  ls "$debs"/"${p}"_*.deb >/dev/null 2>&1 || apt-get download -q "$p" 2>&1 | grep -v '^W:' || true
done)
for p in "$kernel_pkg" busybox-static qemu-guest-agent; do
  ls "$debs"/"${p}"_*.deb >/dev/null 2>&1 || { echo "scripts/test-guest.sh: cannot download Debian's $p" >&2; exit 2; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for d in "$debs"/*.deb; do dpkg-deb -x "$d" "$work/x"; done
root=$work/root
mkdir -p "$root"/{bin,sbin,dev,proc,sys,data,tmp,run,lib/modules,usr/sbin}
cp "$work/x/bin/busybox" "$root/bin/busybox"
cp "$work/x/usr/sbin/qemu-ga" "$root/usr/sbin/qemu-ga"
# the agent's libraries, as the host has them (the same Debian release)
for lib in $(ldd "$work/x/usr/sbin/qemu-ga" | awk '/=>/ {print $3} /ld-linux/ {print $1}'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
kver=$(ls "$work/x/lib/modules")
mods="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk virtio_console
  crc16 mbcache jbd2 crc32c_generic ext4 failover net_failover virtio_net"
for m in $mods; do
  f=$(find "$work/x/lib/modules/$kver" -name "$m.ko*" | head -1)
  [ -n "$f" ] || { echo "scripts/test-guest.sh: no module $m in $kernel_pkg" >&2; exit 2; }
  cp "$f" "$root/lib/modules/"
done
cp "$work/x/boot/vmlinuz-$kver" "$out/vmlinuz.tmp"

cat > "$root/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(echo $mods); do insmod /lib/modules/\$m.ko* || echo "insmod \$m failed"; done
sleep 1
mount -t ext4 /dev/vda /data || echo "boveda-guest: no ext4 on /dev/vda"
# dirty pages stay in memory until a sync or a freeze writes them
echo 360000 > /proc/sys/vm/dirty_expire_centisecs
echo 0 > /proc/sys/vm/dirty_writeback_centisecs
echo "written by the guest, never synced" > /data/greeting
port=
for p in /sys/class/virtio-ports/*; do
  [ "\$(cat \$p/name 2>/dev/null)" = org.qemu.guest_agent.0 ] && port=/dev/\$(basename \$p)
done
if grep -q boveda.noagent /proc/cmdline; then
  echo "boveda-guest: no guest agent"
elif [ -n "\$port" ]; then
  qemu-ga -m virtio-serial -p "\$port" -t /run &
fi
# with a network card (QEMU's user-mode network): its usual address, and
# a TCP service on port 8080 for the tests' port probe
if [ -e /sys/class/net/eth0 ]; then
  ip link set lo up
  ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up
  (while true; do echo boveda-guest-service | nc -l -p 8080; done) &
fi
echo boveda-guest-ready
while true; do sleep 3600; done
EOF
chmod +x "$root/init"
(cd "$root" && find . | "$root/bin/busybox" cpio -o -H newc 2>/dev/null | gzip -1 > "$out/initrd.img.tmp")
mv "$out/vmlinuz.tmp" "$out/vmlinuz"
mv "$out/initrd.img.tmp" "$out/initrd.img"

# the disks that boot: a FAT file system on the whole disk (no partition
# table), syslinux in its boot sector, the kernel and initramfs as files
boot_disk() {
  local img=$1 append=$2
  rm -f "$img.tmp"
  truncate -s 64M "$img.tmp"
  mkfs.vfat -n BOVEDA "$img.tmp" >/dev/null
  printf '%s\n' 'SERIAL 0 115200' 'DEFAULT linux' 'PROMPT 0' 'TIMEOUT 0' 'LABEL linux' \
    '  KERNEL vmlinuz' "  APPEND initrd=initrd.img console=ttyS0 panic=-1 $append" > "$work/syslinux.cfg"
  # the kernel first: a test finds it by its bytes and damages it
  mcopy -i "$img.tmp" "$out/vmlinuz" ::vmlinuz
  mcopy -i "$img.tmp" "$out/initrd.img" ::initrd.img
  mcopy -i "$img.tmp" "$work/syslinux.cfg" ::syslinux.cfg
  syslinux --install "$img.tmp"
  # UEFI: systemd-boot where firmware looks without boot entries, and the
  # same kernel, initramfs and command line
  printf '%s\n' 'default boveda.conf' 'timeout 0' > "$work/loader.conf"
  printf '%s\n' 'title boveda test guest' 'linux /vmlinuz' 'initrd /initrd.img' \
    "options console=ttyS0 panic=-1 $append" > "$work/boveda.conf"
  mmd -i "$img.tmp" ::EFI ::EFI/BOOT ::loader ::loader/entries
  mcopy -i "$img.tmp" /usr/lib/systemd/boot/efi/systemd-bootx64.efi ::EFI/BOOT/BOOTX64.EFI
  mcopy -i "$img.tmp" "$work/loader.conf" ::loader/loader.conf
  mcopy -i "$img.tmp" "$work/boveda.conf" ::loader/entries/boveda.conf
  mv "$img.tmp" "$img"
}
boot_disk "$out/boot.img" ""
boot_disk "$out/boot-noagent.img" "boveda.noagent"

# a UEFI guest that boots only by its boot entry
cp --sparse=always "$out/boot.img" "$out/boot-entry.img.tmp"
mmd -i "$out/boot-entry.img.tmp" ::EFI/boveda
mcopy -i "$out/boot-entry.img.tmp" /usr/lib/systemd/boot/efi/systemd-bootx64.efi ::EFI/boveda/loader.efi
mdel -i "$out/boot-entry.img.tmp" ::EFI/BOOT/BOOTX64.EFI
mv "$out/boot-entry.img.tmp" "$out/boot-entry.img"
fw=$(dirname "$out")/virt-firmware
if ! "$fw/bin/virt-fw-vars" --help >/dev/null 2>&1; then
  python3 -m venv "$fw"
  "$fw/bin/pip" install --quiet "virt-firmware==26.10" >&2
fi
"$fw/bin/virt-fw-vars" --loglevel warning --input /usr/share/OVMF/OVMF_VARS_4M.fd --output "$out/boot-entry-vars.fd.tmp" \
  --append-boot-filepath '\EFI\boveda\loader.efi'
mv "$out/boot-entry-vars.fd.tmp" "$out/boot-entry-vars.fd"
echo "$version" > "$out/version"
