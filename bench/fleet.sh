#!/usr/bin/env bash
# Many hosts, one vault: HOSTS registered hosts (processes with identities
# of their own, on loopback) back up at once into one vault through one
# `boveda serve`. Reports, in one run:
#   - the first backup of one host alone, and the same data backed up by
#     the server's machine itself (`protection backup-now`): per-host speed;
#   - the other hosts all at once: aggregate throughput against one host;
#   - the server's CPU time and peak RSS over the whole run;
#   - the bytes the hosts sent through the server against those they
#     sent straight to the store with the server's create-only grants.
#
#   bash bench/fleet.sh [WORK_DIR] [HOSTS] [MIB_PER_HOST] [folder|s3|azure]
#   bash bench/fleet.sh /tmp/boveda-fleet-bench 50 16 s3
#
# s3 and azure need the S3 server and Azurite of scripts/stores.sh (its
# environment sourced).
# Every host's data is its own random files (nothing to deduplicate
# between hosts: each host's chunk ids are keyed by its own key anyway).
set -euo pipefail
cd "$(dirname "$0")/.."

work=${1:-/tmp/boveda-fleet-bench}
hosts=${2:-50}
mib=${3:-16}
kind=${4:-folder}

. bench/own_vault.sh
case $kind in
  folder) store=$work/vault ;;
  s3)
    [ -n "${BOVEDA_TEST_S3:-}" ] || { echo "bench/fleet.sh: start the S3 server: . <(scripts/stores.sh start DIR)" >&2; exit 2; }
    store=s3://fleet-bench-$$/vault ;;
  azure)
    [ -n "${BOVEDA_TEST_AZURITE:-}" ] || { echo "bench/fleet.sh: start Azurite: . <(scripts/stores.sh start DIR)" >&2; exit 2; }
    store=azblob://fleet-bench-$$/vault ;;
  *) echo "bench/fleet.sh: folder, s3 or azure" >&2; exit 2 ;;
esac
"$bin" vault create fleet --store "$store" --create-container >/dev/null 2>&1 || "$bin" vault create fleet --store "$store" >/dev/null

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=bench \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" serve fleet --listen "127.0.0.1:$port" --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" \
  --no-scheduler 2>"$work/serve.log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do grep -q listening "$work/serve.log" && break; sleep 0.1; done
url=https://127.0.0.1:$port
cpu() { awk '{print $14 + $15}' "/proc/$server/stat"; }
cpu0=$(cpu)

host() { # N args...: a command as host N runs it
  local n=$1; shift
  env -i PATH="$PATH" HOME="$work/h$n" BOVEDA_HOST_DIR="$work/h$n/boveda" "$bin" "$@"
}
echo "registering $hosts hosts, $mib MiB of files each"
for n in $(seq 1 "$hosts"); do
  mkdir -p "$work/h$n/data"
  for f in $(seq 1 "$mib"); do head -c 1M /dev/urandom > "$work/h$n/data/f$f"; done
  "$bin" --vault fleet host credentials --server "$url" --tls-cert "$work/cert.pem" > "$work/h$n.creds" 2>/dev/null
  host "$n" host register --credentials "$work/h$n.creds" --name "h$n" >/dev/null
  "$bin" --vault fleet item add files "h$n-data" --path "$work/h$n/data" --host "h$n" >/dev/null
done
# the same data as host 1's, backed up by the server's machine itself
cp -a "$work/h1/data" "$work/local-data"
"$bin" --vault fleet item add files local-data --path "$work/local-data" >/dev/null

now() { date +%s.%N; }
since() { python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$1" "$(now)"; }
# the local command opens the vault with its passphrase (the key
# derivation, a few hundred ms) before it backs up: that part is measured
# apart, with a command that opens the vault and reads its catalog
t=$(now); "$bin" --vault fleet item show local-data >/dev/null; open_s=$(since "$t")
cputime() { /usr/bin/time -o "$1" -f "%U %S" "${@:2}"; }
t=$(now); cputime "$work/local.cpu" "$bin" --vault fleet protection backup-now local-data >/dev/null; local_s=$(since "$t")
local_s=$(python3 -c "import sys; print(max(0.001, float(sys.argv[1]) - float(sys.argv[2])))" "$local_s" "$open_s")
t=$(now); cputime "$work/host.cpu" env -i PATH="$PATH" HOME="$work/h1" BOVEDA_HOST_DIR="$work/h1/boveda" \
  "$bin" host backup h1-data >/dev/null; one_s=$(since "$t")

t=$(now)
pids=()
for n in $(seq 2 "$hosts"); do host "$n" --output json host backup "h$n-data" > "$work/h$n.json" 2>"$work/h$n.err" & pids+=($!); done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
all_s=$(since "$t")
cpu1=$(cpu)
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$server/status")
sent=0 direct=0
for n in $(seq 2 "$hosts"); do
  if [ -s "$work/h$n.json" ]; then
    read -r s d < <(python3 -c 'import json,sys; o=json.load(open(sys.argv[1])); print(o["bytes_through_server"], o["bytes_direct"])' "$work/h$n.json")
    sent=$((sent + s)) direct=$((direct + d))
  fi
done
tck=$(getconf CLK_TCK)
others=$((hosts - 1))
python3 - "$mib" "$local_s" "$one_s" "$all_s" "$others" "$failed" "$cpu0" "$cpu1" "$tck" "$hwm" "$sent" "$kind" "$direct" <<'EOF'
import sys
mib, local_s, one_s, all_s = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
others, failed, cpu0, cpu1, tck, hwm, sent, kind = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8]), int(sys.argv[9]), int(sys.argv[10]), int(sys.argv[11]), sys.argv[12]
print(f"store: {kind}; {mib:.0f} MiB of files per host")
print(f"the server's machine alone (backup-now, less opening the vault): {local_s:6.2f} s  {mib/local_s:7.1f} MiB/s")
print(f"one registered host alone (host backup): {one_s:6.2f} s  {mib/one_s:7.1f} MiB/s  ({one_s/local_s:.2f}x the time)")
print(f"{others} hosts at once: {all_s:6.2f} s  {others*mib/all_s:7.1f} MiB/s aggregate ({others*mib/all_s/(mib/one_s):.2f}x one host); {failed} failed")
print(f"server: {(cpu1-cpu0)/tck:.1f} s of CPU over the run, peak RSS {hwm/1024:.0f} MiB")
direct = int(sys.argv[13])
total = max(1, sent + direct)
print(f"bytes the hosts sent through the server: {sent/2**20:.2f} MiB = {100*sent/total:.2f}% of what they uploaded; straight to the store: {direct/2**20:.1f} MiB")
EOF
read -r lu ls < "$work/local.cpu"; read -r hu hs < "$work/host.cpu"
echo "CPU of the backup process: the server's machine's $(python3 -c "print(round($lu + $ls, 2))") s, the host's $(python3 -c "print(round($hu + $hs, 2))") s"
