"""Fixtures for the tracking-SDK tests: the real niyet server and a reader for its admin API.

The server binary comes from $NIYET_BIN (default: <repo>/target/debug/niyet) and is started
once per session as

    NIYET_BIN serve --listen 127.0.0.1:<free port> --data-dir <tmp dir>

with NIYET_WRITE_KEY / NIYET_ADMIN_TOKEN set to the keys below.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

SDK_DIR = Path(__file__).resolve().parent
REPO_ROOT = SDK_DIR.parent.parent
WRITE_KEY = "sdk-test-key"
ADMIN_TOKEN = "sdk-admin-token"
STARTUP_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 60) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


@dataclass
class Server:
    base_url: str
    log_path: Path
    proc: subprocess.Popen
    write_key: str = WRITE_KEY
    admin_token: str = ADMIN_TOKEN

    def log_tail(self, n: int = 60) -> str:
        return _tail(self.log_path, n)


@pytest.fixture(scope="session")
def niyet_server():
    binary = Path(os.environ.get("NIYET_BIN") or REPO_ROOT / "target" / "debug" / "niyet")
    if not binary.is_file() or not os.access(binary, os.X_OK):
        pytest.fail(
            f"niyet binary not found at {binary}: build it (cargo build -p niyet) "
            "or point NIYET_BIN at it",
            pytrace=False,
        )
    tmp = Path(tempfile.mkdtemp(prefix="niyet-sdk-"))
    data_dir = tmp / "data"
    data_dir.mkdir()
    log_path = tmp / "server.log"
    port = free_port()
    env = dict(os.environ, NIYET_WRITE_KEY=WRITE_KEY, NIYET_ADMIN_TOKEN=ADMIN_TOKEN)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(binary), "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp,
        )
    server = Server(base_url=f"http://127.0.0.1:{port}", log_path=log_path, proc=proc)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"niyet exited with status {proc.returncode} during startup:\n{server.log_tail()}",
                    pytrace=False,
                )
            try:
                if requests.get(f"{server.base_url}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"niyet did not answer 200 on /healthz within {STARTUP_TIMEOUT_S:.0f} s:\n"
                    f"{server.log_tail()}",
                    pytrace=False,
                )
            time.sleep(0.1)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class EventLog:
    """Reads the server's event log through GET /v1/events, remembering what it has read."""

    server: Server
    offset: int = 0
    events: list = field(default_factory=list)  # items as returned: {offset, received_at, event}

    def _get(self, path: str, **params):
        r = requests.get(
            f"{self.server.base_url}{path}",
            params=params,
            headers={"Authorization": f"Bearer {self.server.admin_token}"},
            timeout=10,
        )
        r.raise_for_status()
        return r.json()

    def read_new(self) -> None:
        """Pages from the last offset read to the end of the log."""
        while True:
            page = self._get("/v1/events", offset=self.offset, limit=1000)
            self.events.extend(page["events"])
            nxt = int(page["next_offset"])
            end = int(page["end_offset"])
            if nxt <= self.offset and not page["events"]:
                break  # no progress
            self.offset = nxt
            if self.offset >= end:
                break

    def matching(self, pred) -> list:
        return [item for item in self.events if pred(item["event"])]

    def wait_for(self, pred, count: int, timeout: float = 20.0, settle: float = 0.3) -> list:
        """Polls until at least `count` stored events satisfy `pred` (or the timeout passes),
        then reads once more after `settle` seconds so late duplicates are seen too."""
        deadline = time.monotonic() + timeout
        while True:
            self.read_new()
            if len(self.matching(pred)) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        time.sleep(settle)
        self.read_new()
        return [item["event"] for item in self.matching(pred)]

    def quarantine_summary(self, limit: int = 20) -> str:
        """The newest quarantined messages, for failure messages (best effort)."""
        try:
            r = requests.get(
                f"{self.server.base_url}/v1/quarantine",
                params={"limit": limit},
                headers={"Authorization": f"Bearer {self.server.admin_token}"},
                timeout=5,
            )
            return f"{r.status_code} {r.text[:4000]}"
        except requests.RequestException as e:  # pragma: no cover - diagnostics only
            return f"(quarantine not readable: {e})"


@pytest.fixture(scope="session")
def event_log(niyet_server) -> EventLog:
    return EventLog(niyet_server)


@pytest.fixture(scope="session")
def node_bin() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (run scripts/sdk-setup.sh)", pytrace=False)
    for pkg in ("@segment/analytics-node", "@rudderstack/rudder-sdk-node"):
        if not (SDK_DIR / "node_modules" / pkg / "package.json").is_file():
            pytest.fail(
                f"{pkg} is not installed in tests/sdk/node_modules (run bash scripts/sdk-setup.sh)",
                pytrace=False,
            )
    return node
