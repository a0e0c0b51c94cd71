#!/usr/bin/env bash
# Installs the real tracking SDKs that tests/sdk drives against the server:
#   * a Python venv in .venv-sdk/ with the pinned packages of tests/sdk/requirements.txt
#     (segment-analytics-python, rudder-sdk-python, pytest, requests);
#   * tests/sdk/node_modules/ from tests/sdk/package.json + package-lock.json
#     (@segment/analytics-node, @rudderstack/rudder-sdk-node).
# Idempotent: a step is skipped when what it installs matches the pinned files already.
# Needs python3 (3.9+, with venv or pip) and node 20+ with npm.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
SDK_DIR="$ROOT/tests/sdk"
VENV="$ROOT/.venv-sdk"

log() { printf 'sdk-setup: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

hash_of() { python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"; }

# ---------------------------------------------------------------- Python
PY=""
for cand in python3.11 python3.12 python3.13 python3; do
  if command -v "$cand" >/dev/null 2>&1 &&
     "$cand" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' 2>/dev/null; then
    PY="$cand"; break
  fi
done
[ -n "$PY" ] || die "python3 (3.9 or newer) is required"

if [ -e "$VENV" ] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
  log "removing broken venv $VENV"
  rm -rf "$VENV"
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating venv $VENV with $PY"
  if ! "$PY" -m venv "$VENV" >/dev/null 2>&1; then
    # No ensurepip (e.g. python3-venv not installed): a venv without pip, filled by the
    # system pip through --python.
    rm -rf "$VENV"
    "$PY" -m venv --without-pip "$VENV" || die "cannot create a venv with $PY"
  fi
fi

REQ="$SDK_DIR/requirements.txt"
REQ_STAMP="$VENV/.niyet-requirements.sha256"
req_hash="$(hash_of "$REQ")"
if [ "$(cat "$REQ_STAMP" 2>/dev/null || true)" != "$req_hash" ]; then
  log "installing Python packages from tests/sdk/requirements.txt"
  PIP_FLAGS=(--disable-pip-version-check --no-input -q)
  if "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install "${PIP_FLAGS[@]}" -r "$REQ"
  else
    "$PY" -m pip --python "$VENV/bin/python" install "${PIP_FLAGS[@]}" -r "$REQ" ||
      die "no pip available for the venv (install python3-venv or pip)"
  fi
  echo "$req_hash" > "$REQ_STAMP"
else
  log "Python packages up to date"
fi

# ---------------------------------------------------------------- Node
command -v node >/dev/null 2>&1 || die "node (20 or newer) is required"
command -v npm >/dev/null 2>&1 || die "npm is required"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' ||
  die "node 20 or newer is required (found $(node --version))"

LOCK="$SDK_DIR/package-lock.json"
NODE_STAMP="$SDK_DIR/node_modules/.niyet-install.sha256"
if [ -f "$LOCK" ]; then
  node_hash="$( (hash_of "$SDK_DIR/package.json"; hash_of "$LOCK") | tr -d '\n')"
else
  node_hash="$(hash_of "$SDK_DIR/package.json")"
fi

if [ "$(cat "$NODE_STAMP" 2>/dev/null || true)" != "$node_hash" ] ||
   [ ! -d "$SDK_DIR/node_modules/@segment/analytics-node" ] ||
   [ ! -d "$SDK_DIR/node_modules/@rudderstack/rudder-sdk-node" ]; then
  # Optional dependencies are only rudder-sdk-node's Redis-backed persistent queue (bull,
  # ioredis, native msgpack); the tests don't use it, so they and install scripts are skipped.
  NPM_FLAGS=(--omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error)
  cd "$SDK_DIR"
  if [ -f "$LOCK" ]; then
    log "installing Node packages with npm ci"
    if ! npm ci "${NPM_FLAGS[@]}"; then
      # npm ci refuses a lock it considers out of sync; install the same pinned versions
      # with npm install and leave the committed lock as it was.
      log "npm ci failed; falling back to npm install (lock file kept unchanged)"
      backup="$(mktemp)"
      cp "$LOCK" "$backup"
      status=0
      npm install "${NPM_FLAGS[@]}" || status=$?
      cp "$backup" "$LOCK"
      rm -f "$backup"
      [ "$status" -eq 0 ] || die "npm install failed"
    fi
  else
    log "no package-lock.json; installing Node packages with npm install"
    npm install "${NPM_FLAGS[@]}"
  fi
  cd "$ROOT"
  echo "$node_hash" > "$NODE_STAMP"
else
  log "Node packages up to date"
fi

log "ready: .venv-sdk/bin/pytest tests/sdk"
