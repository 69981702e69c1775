#!/usr/bin/env bash
# Starts libvirt's daemon for the tests that run a VM under libvirt, unless
# one already answers on qemu:///system, and stops it by the PID it
# recorded. Needs root and Debian's libvirt-daemon, libvirt-daemon-driver-qemu
# and libvirt-clients (scripts/test.sh installs them).
#
#   scripts/libvirt.sh start STATE_DIR
#   scripts/libvirt.sh stop STATE_DIR
#
# On a machine without libvirt's own setup (no libvirt-daemon-system), it
# adds the libvirt-qemu user the QEMU driver expects, and a qemu.conf that
# runs QEMU as root and logs its output to files (no virtlogd).
set -euo pipefail
cmd=${1:?usage: libvirt.sh start|stop STATE_DIR}
state=${2:?usage: libvirt.sh start|stop STATE_DIR}

answers() { virsh -c qemu:///system uri >/dev/null 2>&1; }

case $cmd in
start)
  if answers; then
    exit 0
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "scripts/libvirt.sh: starting libvirtd needs root; the libvirt test will fail" >&2
    exit 0
  fi
  getent passwd libvirt-qemu >/dev/null || useradd --system --no-create-home --shell /usr/sbin/nologin libvirt-qemu
  if [ ! -e /etc/libvirt/qemu.conf ]; then
    mkdir -p /etc/libvirt
    printf '%s\n' 'user = "root"' 'group = "root"' 'stdio_handler = "file"' > /etc/libvirt/qemu.conf
  fi
  mkdir -p /var/log/libvirt /run/libvirt
  libvirtd > "$state/libvirtd.log" 2>&1 &
  echo $! > "$state/libvirtd.pid"
  for _ in $(seq 1 100); do
    answers && exit 0
    sleep 0.2
  done
  echo "scripts/libvirt.sh: libvirtd did not start:" >&2
  tail -5 "$state/libvirtd.log" >&2
  exit 1
  ;;
stop)
  [ -f "$state/libvirtd.pid" ] || exit 0
  pid=$(cat "$state/libvirtd.pid")
  kill "$pid" 2>/dev/null || exit 0
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || exit 0
    sleep 0.2
  done
  kill -9 "$pid" 2>/dev/null || true
  ;;
esac
