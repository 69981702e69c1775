#!/usr/bin/env bash
# Installs (once) and starts the real object stores the tests use, on
# loopback: Azurite (Azure Blob emulator, from npm) and the moto S3 server
# (from PyPI). Stops them by the PIDs it recorded.
#
#   scripts/stores.sh start STATE_DIR   # prints `export ...` lines for the tests
#   scripts/stores.sh stop STATE_DIR
#
# Tools are kept in $BOVEDA_TOOLS_DIR (default: target/test-tools), so a
# second run starts at once. Ports are free ones picked at start, unless
# AZURITE_PORT or S3_PORT name them.
set -euo pipefail
cd "$(dirname "$0")/.."

AZURITE_VERSION=3.35.0
MOTO_VERSION=5.2.5
TOOLS=${BOVEDA_TOOLS_DIR:-$PWD/target/test-tools}

need() { command -v "$1" >/dev/null || { echo "scripts/stores.sh: $1 is missing ($2)" >&2; exit 2; }; }

install_tools() {
  mkdir -p "$TOOLS"
  if [ ! -x "$TOOLS/azurite/node_modules/.bin/azurite-blob" ]; then
    need npm "install Node.js 20 and npm"
    npm install --silent --no-audit --no-fund --prefix "$TOOLS/azurite" "azurite@$AZURITE_VERSION" >&2
  fi
  if [ ! -x "$TOOLS/moto/bin/moto_server" ]; then
    need python3 "install Python 3 with venv"
    python3 -m venv "$TOOLS/moto"
    "$TOOLS/moto/bin/pip" install --quiet "moto[server]==$MOTO_VERSION" >&2
  fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_for() { # URL NAME
  for _ in $(seq 1 100); do
    if curl -s -o /dev/null "$1"; then return 0; fi
    sleep 0.2
  done
  echo "scripts/stores.sh: $2 did not answer at $1" >&2
  exit 1
}

start() {
  local state=$1
  install_tools
  mkdir -p "$state/azurite-data"
  local az_port s3_port
  az_port=${AZURITE_PORT:-$(free_port)}
  s3_port=${S3_PORT:-$(free_port)}
  "$TOOLS/azurite/node_modules/.bin/azurite-blob" --silent --location "$state/azurite-data" \
    --blobHost 127.0.0.1 --blobPort "$az_port" --skipApiVersionCheck --disableTelemetry \
    >"$state/azurite.log" 2>&1 &
  echo $! >"$state/azurite.pid"
  "$TOOLS/moto/bin/moto_server" -H 127.0.0.1 -p "$s3_port" >"$state/moto.log" 2>&1 &
  echo $! >"$state/moto.pid"
  wait_for "http://127.0.0.1:$az_port/devstoreaccount1?comp=list" Azurite
  wait_for "http://127.0.0.1:$s3_port/" "the moto S3 server"
  # Azurite's well-known development account; moto accepts any key
  local key=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==
  echo "export BOVEDA_TEST_AZURITE=http://127.0.0.1:$az_port/devstoreaccount1"
  echo "export BOVEDA_TEST_S3=http://127.0.0.1:$s3_port"
  echo "export AZURE_STORAGE_CONNECTION_STRING='DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=$key;BlobEndpoint=http://127.0.0.1:$az_port/devstoreaccount1;'"
  echo "export AWS_ACCESS_KEY_ID=boveda-test AWS_SECRET_ACCESS_KEY=boveda-test AWS_REGION=us-east-1"
  echo "export AWS_ENDPOINT_URL=http://127.0.0.1:$s3_port"
  # boto3 (moto's own dependency): what tests attack a locked bucket with,
  # holding the bucket's credentials
  echo "export BOVEDA_TEST_S3_PYTHON=$TOOLS/moto/bin/python"
}

# Stops a server by PID and waits until it is gone (at most 10 s, then
# SIGKILL), so that its data folder can be removed right after.
stop_pid() { # PID
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 1 50); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.2
  done
  kill -9 "$1" 2>/dev/null || true
  while kill -0 "$1" 2>/dev/null; do sleep 0.1; done
}

stop() {
  local state=$1
  for name in azurite moto; do
    if [ -f "$state/$name.pid" ]; then
      stop_pid "$(cat "$state/$name.pid")"
      rm -f "$state/$name.pid"
    fi
  done
}

case "${1:-}" in
  start) start "${2:?state folder}" ;;
  stop) stop "${2:?state folder}" ;;
  *) echo "usage: scripts/stores.sh start|stop STATE_DIR" >&2; exit 2 ;;
esac
