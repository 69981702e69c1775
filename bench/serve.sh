#!/usr/bin/env bash
# Load on `boveda serve`: concurrent API clients listing jobs and items
# while two backups run, at several client counts; reports p50/p99 latency
# (wrk) and the server's peak RSS at each count.
#
#   bash bench/serve.sh [WORK_DIR] [SECONDS] [CLIENT_COUNTS...]
#   bash bench/serve.sh /tmp/boveda-serve-bench 30 20 200
#
# The vault holds 40 file items with one point each (their 40 backup jobs
# make the job list) and two 1 GiB disk items of random data; a loop keeps
# a backup of each disk item running throughout (the image is touched
# first, so each backup reads it whole). Client, server and backups share the machine's cores.
set -euo pipefail
cd "$(dirname "$0")/.."

work=${1:-/tmp/boveda-serve-bench}
secs=${2:-30}
shift 2 || true
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(20 200)

command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null || { echo "bench/serve.sh: install wrk" >&2; exit 2; }; }
. bench/own_vault.sh
mkdir -p "$work/src"
export BOVEDA_JOB_HEARTBEAT_MS=1000
"$bin" vault create bench --store "$work/vault" >/dev/null
for i in $(seq 1 40); do
  mkdir -p "$work/src/f$i"
  for j in 1 2 3; do head -c 20000 /dev/urandom >"$work/src/f$i/file$j"; done
  "$bin" --vault bench item add files "f$i" --path "$work/src/f$i" >/dev/null
  "$bin" --vault bench protection backup-now "f$i" >/dev/null
done
for d in d1 d2; do
  head -c 1G /dev/urandom >"$work/$d.img"
  "$bin" --vault bench item add disk "$d" --path "$work/$d.img" >/dev/null
done
token=$("$bin" --vault bench token create --role Operator --description bench)

"$bin" serve bench --listen 127.0.0.1:0 --no-scheduler 2>"$work/serve.log" &
server=$!
keeper=
cleanup() {
  [ -n "$keeper" ] && kill "$keeper" 2>/dev/null
  kill "$server" 2>/dev/null
  wait "$server" 2>/dev/null || true
}
trap cleanup EXIT
url=
for _ in $(seq 1 100); do
  url=$(grep -o 'http://[0-9.:]*' "$work/serve.log" | head -1 || true)
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { echo "bench/serve.sh: boveda serve did not start" >&2; cat "$work/serve.log" >&2; exit 1; }
auth="Authorization: Bearer $token"

# keep one backup of each disk item running
(
  while true; do
    for d in d1 d2; do
      running=$(curl -s -H "$auth" "$url/api/v1/vaults/bench/jobs?item=$d&state=InProgress")
      if [ "$running" = "[]" ]; then
        # a new time stamp: the image is read whole again, as a changed one
        touch "$work/$d.img"
        curl -s -o /dev/null -H "$auth" -H 'Content-Type: application/json' -d '{}' "$url/api/v1/vaults/bench/items/$d/backup"
      fi
    done
    sleep 0.5
  done
) &
keeper=$!
# the first backup of each image writes its 1 GiB into the vault; measure
# once both are in, while later ones (reads and deduplication) run
for _ in $(seq 1 600); do
  done_count=$(curl -s -H "$auth" "$url/api/v1/vaults/bench/jobs?operation=Backup&state=Completed" | { grep -o '"item":"d[12]"' || true; } | sort -u | wc -l)
  [ "$done_count" -ge 2 ] && break
  sleep 0.5
done

cat >"$work/list.lua" <<'EOF'
local paths = { "/api/v1/vaults/bench/jobs", "/api/v1/vaults/bench/items" }
local n = 0
local auth = os.getenv("AUTH")
request = function()
  n = n + 1
  return wrk.format("GET", paths[(n % 2) + 1], { ["Authorization"] = auth })
end
EOF

rss() { awk '/VmRSS/ {print $2}' "/proc/$server/status"; }
echo "clients | requests/s | p50 ms | p99 ms | errors | server RSS before MiB | peak RSS MiB"
for c in "${counts[@]}"; do
  before=$(rss)
  peak=$before
  (
    while kill -0 "$server" 2>/dev/null; do
      r=$(rss)
      p=$(cat "$work/peak" 2>/dev/null || true)
      if [ -n "$r" ] && [ "$r" -gt "${p:-0}" ]; then echo "$r" >"$work/peak"; fi
      sleep 0.2
    done
  ) &
  sampler=$!
  echo "$before" >"$work/peak"
  out=$(AUTH="Bearer $token" wrk -t2 -c"$c" -d"${secs}s" --timeout 10s --latency -s "$work/list.lua" "$url")
  kill "$sampler" 2>/dev/null || true
  peak=$(cat "$work/peak")
  echo "$out" >"$work/wrk-$c.txt"
  p50=$(awk '/^ +50%/ {print $2}' <<<"$out")
  p99=$(awk '/^ +99%/ {print $2}' <<<"$out")
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
  printf '%s | %s | %s | %s | %s | %s | %s\n' "$c" "$rps" "$p50" "$p99" "${errors:-0}" $((before / 1024)) $((peak / 1024))
done
echo "(each row: $secs s of wrk -t2 with that many connections, half GET jobs, half GET items, while a backup of each 1 GiB disk item runs)"
backups=$(curl -s -H "$auth" "$url/api/v1/vaults/bench/jobs?operation=Backup&state=Completed" | { grep -o "\"item\":\"d[12]\"" || true; } | wc -l)
echo "disk backups completed during the run: $backups"
