# Sourced by the bench scripts that make a vault of their own in $work:
# builds boveda in release ($bin), empties $work, and points boveda's
# configuration, cache and passphrase there.
cargo build --release -q -p boveda
bin=$PWD/target/release/boveda
rm -rf "$work"
mkdir -p "$work"
export BOVEDA_CONFIG_DIR=$work/config BOVEDA_CACHE_DIR=$work/cache BOVEDA_PASSWORD=bench
unset BOVEDA_VAULT BOVEDA_PASSWORD_FILE
