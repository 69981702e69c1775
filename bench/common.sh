# Sourced by the bench scripts: installs a missing peer from Debian
# (`need COMMAND PACKAGE`), builds boveda in release ($boveda) and the
# shared corpus in $work/corpus at $scale. Expects $repo, $shared, $work
# and $scale to be set.
need() { command -v "$1" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }; }
[ -x /usr/bin/time ] || need /usr/bin/time time
(cd "$repo" && cargo build --release -q)
boveda=$repo/target/release/boveda
mkdir -p "$work"
bash "$shared/bench/make_corpus.sh" "$work/corpus" "$scale" >/dev/null
