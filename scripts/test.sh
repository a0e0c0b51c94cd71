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

step "test tools (tracking SDKs, aiosmtpd)"
# Before the Rust tests: the e-mail tests start aiosmtpd from .venv-sdk/.
bash scripts/sdk-setup.sh

step "Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi

step "fuzzing the rule parser (30 s)"
# cargo fuzz passes nightly-only compiler flags; RUSTC_BOOTSTRAP=1 lets the stable
# toolchain accept them. libFuzzer is built from source, so a C++ compiler is needed.
# A crash (panic, or a rule that does not print back to itself) fails the suite; its
# input is saved under crates/rules/fuzz/artifacts/parse/.
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
(
  cd crates/rules/fuzz
  mkdir -p corpus/parse
  RUSTC_BOOTSTRAP=1 cargo fuzz run parse corpus/parse seeds/parse -- \
    -dict=parse.dict -max_total_time=30
)

step "fuzzing the ingest decoder (30 s)"
# Arbitrary bodies, content encodings, content types and endpoints through the server's
# sequence of niyet-ingest calls (decode, depth check, envelope, validation). A crash
# (panic, or a broken invariant such as a decoded body over its limit or an invalid
# message without a code) fails the suite; its input is saved under
# crates/ingest/fuzz/artifacts/decode/.
(
  cd crates/ingest/fuzz
  mkdir -p corpus/decode
  RUSTC_BOOTSTRAP=1 cargo fuzz run decode corpus/decode seeds/decode -- \
    -dict=decode.dict -max_total_time=30
)

step "tracking SDKs (Python and Node) against the real server"
cargo build --locked -p niyet
NIYET_BIN="$PWD/target/debug/niyet" .venv-sdk/bin/python -m pytest tests/sdk -q -p no:cacheprovider
