#!/usr/bin/env bash
# Runs every check and test of Niyet: formatting, lints, the Rust test suite (unit,
# property and integration tests against the real binary), and the tracking-SDK tests
# (real Segment and RudderStack SDKs from PyPI and npm against the real server).
# Installs what it needs where it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "formatting"
cargo fmt --all -- --check

step "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi

step "tracking SDKs (Python and Node) against the real server"
cargo build --locked -p niyet
bash scripts/sdk-setup.sh
NIYET_BIN="$PWD/target/debug/niyet" .venv-sdk/bin/python -m pytest tests/sdk -q -p no:cacheprovider
