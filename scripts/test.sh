#!/usr/bin/env bash
# Runs boveda's whole test suite against real stores: installs (once) and
# starts Azurite and the moto S3 server on loopback, runs `cargo test`
# with them, and stops them by PID, also when the tests fail.
#
#   scripts/test.sh [cargo test arguments...]
#
# Installs the Debian packages the tests need when run as root (else names
# them in one line); Azurite and moto are fetched from npm and PyPI into
# target/test-tools the first time.
set -euo pipefail
cd "$(dirname "$0")/.."

# The tests use setpriv (util-linux) to run boveda as an unprivileged user,
# mount/umount a small tmpfs to fill a disk, qemu-img (qemu-utils) to make,
# convert and compare disk images, and mkfs.ext4/e2fsck (e2fsprogs) to build
# and check the file systems inside them, debugfs (e2fsprogs) for file-level
# restore from them, and fusermount (fuse) to unmount `boveda mount`: all
# from Debian's packages.
missing=()
command -v setpriv >/dev/null || missing+=(util-linux)
command -v mount >/dev/null || missing+=(mount)
command -v qemu-img >/dev/null || missing+=(qemu-utils)
# QEMU itself (qemu-system-x86) runs the VMs of the live-backup tests. Debian
# builds it against its own qemu-utils, so both are installed at one version
# (a newer, backported qemu-utils is replaced).
qemu_system=
command -v qemu-system-x86_64 >/dev/null || qemu_system=qemu-system-x86
# libvirt runs a VM in the libvirt test: its daemon (started below) and virsh.
command -v libvirtd >/dev/null || missing+=(libvirt-daemon libvirt-daemon-driver-qemu)
command -v virsh >/dev/null || missing+=(libvirt-clients)
command -v mkfs.ext4 >/dev/null && command -v debugfs >/dev/null || missing+=(e2fsprogs)
command -v fusermount >/dev/null || command -v fusermount3 >/dev/null || missing+=(fuse3)
# The object-store tests run Azurite (from npm, on Node.js) and the moto S3
# server (from PyPI, in a Python venv); scripts/stores.sh fetches both.
command -v npm >/dev/null || missing+=(npm)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
command -v curl >/dev/null || missing+=(curl)
# The portal test drives Debian's Chromium with Playwright (from PyPI,
# in a venv below; Playwright's own browser download is not used).
command -v chromium >/dev/null || missing+=(chromium)
# The test guest's disks that boot by themselves (scripts/test-guest.sh):
# syslinux in a FAT file system that mtools writes and mkfs.vfat makes.
command -v syslinux >/dev/null || missing+=(syslinux syslinux-common)
command -v mcopy >/dev/null || missing+=(mtools)
command -v mkfs.vfat >/dev/null || missing+=(dosfstools)
# ...and by UEFI: systemd-boot on the same disk, OVMF the firmware QEMU
# boots a UEFI guest's verification with
[ -f /usr/lib/systemd/boot/efi/systemd-bootx64.efi ] || missing+=(systemd-boot-efi)
[ -f /usr/share/OVMF/OVMF_CODE_4M.fd ] || [ -f /usr/share/OVMF/OVMF_CODE.fd ] || missing+=(ovmf)
command -v flock >/dev/null || missing+=(util-linux)
# script (bsdutils) gives a test a real terminal.
command -v script >/dev/null || missing+=(bsdutils)
if [ ${#missing[@]} -gt 0 ] || [ -n "$qemu_system" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    if [ -n "$qemu_system" ]; then
      v=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --allow-downgrades \
        "qemu-system-x86=$v" "qemu-utils=$v"
    fi
    if [ ${#missing[@]} -gt 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
  else
    echo "scripts/test.sh: the tests need these Debian packages: ${missing[*]} $qemu_system (run as root to install them, or install them first)" >&2
    exit 2
  fi
fi

state=$(mktemp -d /tmp/boveda-stores.XXXXXX)
# The exit status stays the tests' own: a server that is slow to go away
# must not turn a passing run into a failing one.
cleanup() {
  local status=$?
  scripts/libvirt.sh stop "$state" || true
  scripts/stores.sh stop "$state" || true
  rm -rf "$state" || echo "scripts/test.sh: could not remove $state" >&2
  exit "$status"
}
trap cleanup EXIT
eval "$(scripts/stores.sh start "$state")"
# Playwright for the portal test and aiosmtpd (the SMTP server of the
# e-mail tests), once, in target/test-tools; axe-core (from npm) for the
# portal's accessibility check
tools=${BOVEDA_TOOLS_DIR:-$PWD/target/test-tools}
if [ ! -x "$tools/playwright/bin/python" ] || ! "$tools/playwright/bin/python" -c 'import playwright, aiosmtpd' 2>/dev/null; then
  [ -x "$tools/playwright/bin/python" ] || python3 -m venv "$tools/playwright"
  "$tools/playwright/bin/pip" install --quiet "playwright==1.65.2" "aiosmtpd==1.4.6" >&2
fi
if [ ! -f "$tools/axe/node_modules/axe-core/axe.min.js" ]; then
  npm install --silent --no-audit --no-fund --prefix "$tools/axe" axe-core@4.14.1 >&2
fi
export BOVEDA_TEST_PLAYWRIGHT="$tools/playwright/bin/python" CHROMIUM=$(command -v chromium)
export BOVEDA_TEST_AXE="$tools/axe/node_modules/axe-core/axe.min.js"
scripts/libvirt.sh start "$state"
cargo test --workspace "$@"
