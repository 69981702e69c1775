#!/usr/bin/env bash
# Runs boveda's whole test suite against real stores: installs (once) and
# starts Azurite and the moto S3 server on loopback, runs `cargo test`
# with them, and stops them by PID, also when the tests fail.
#
#   scripts/test.sh [cargo test arguments...]
#
# Needs Node.js with npm and Python 3 with venv (for the two servers);
# they are fetched from npm and PyPI into target/test-tools the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
state=$(mktemp -d /tmp/boveda-stores.XXXXXX)
# The exit status stays the tests' own: a server that is slow to go away
# must not turn a passing run into a failing one.
cleanup() {
  local status=$?
  scripts/stores.sh stop "$state" || true
  rm -rf "$state" || echo "scripts/test.sh: could not remove $state" >&2
  exit "$status"
}
trap cleanup EXIT
eval "$(scripts/stores.sh start "$state")"
cargo test --workspace "$@"
