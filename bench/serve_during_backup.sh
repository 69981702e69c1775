#!/usr/bin/env bash
# How long `boveda serve` takes to answer a request that reads the vault's
# catalog (GET of one job) while a large disk backup runs in the same
# process: every 0.5 s during an N GiB first backup of random data.
#
#   bash bench/serve_during_backup.sh [WORK_DIR] [GIB]
#   bash bench/serve_during_backup.sh /tmp/boveda-serve-backup 8
#
# Needs 2 x GIB of free space in WORK_DIR (the image and the vault).
set -euo pipefail
cd "$(dirname "$0")/.."

work=${1:-/tmp/boveda-serve-backup}
gib=${2:-8}
. bench/own_vault.sh
"$bin" vault create bench --store "$work/vault" >/dev/null
head -c "${gib}G" /dev/urandom >"$work/disk.img"
"$bin" --vault bench item add disk img --path "$work/disk.img" >/dev/null
token=$("$bin" --vault bench token create --role Contributor --description bench 2>/dev/null | grep -o 'bvd_[0-9a-f]*')
port=18$((RANDOM % 900 + 100))
"$bin" serve bench --listen "127.0.0.1:$port" --no-scheduler >"$work/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
api=http://127.0.0.1:$port/api/v1/vaults/bench
for _ in $(seq 50); do curl -sf -o /dev/null -H "Authorization: Bearer $token" "$api" && break; sleep 0.1; done
job=$(curl -sf -X POST -H "Authorization: Bearer $token" -H 'content-type: application/json' -d '{}' \
  "$api/items/img/backup" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
echo "seconds  state  bytes_read"
while :; do
  answer=$(curl -s -m 600 -w ' %{time_total}' -H "Authorization: Bearer $token" "$api/jobs/$job")
  python3 -c 'import json, sys
body, took = sys.argv[1].rsplit(" ", 1)
j = json.loads(body)
print("%7.3f  %s  %d" % (float(took), j["state"], j["progress"]["bytes_read"]))' "$answer"
  case $answer in *'"state":"InProgress"'*) sleep 0.5 ;; *) break ;; esac
done
