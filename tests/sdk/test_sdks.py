"""The real Segment and RudderStack tracking SDKs, unmodified, against the real niyet server.

Each of the four SDKs sends the six call types (identify, track, page, screen, group, alias)
with gzip on and with gzip off; the test then reads the event log through the admin API and
checks that every message was stored exactly once, with the right content.

How each SDK is configured (see the README for the wire details):

* segment-analytics-python: `Client(write_key, host=..., gzip=bool)`; gzip defaults to False.
  Flushed with `client.shutdown()` (flush() + join()).
* rudder-sdk-python: `Client(write_key, host=..., gzip=bool)`; gzip defaults to True.
  Flushed with `client.shutdown()`. Its identify() puts traits in `context.traits` only (no
  top-level `traits`), so identify traits are looked up in either place.
* @rudderstack/rudder-sdk-node: option `gzip` (default true), `dataPlaneUrl`; flushed with
  `await flush()` until its queue is empty (send_node.mjs).
* @segment/analytics-node: has no compression option and always sends plain JSON. gzip=off
  is the SDK as it is; gzip=on goes through the SDK's public `httpClient` hook with a fetch
  wrapper that gzips the body (send_node.mjs). Flushed with `await closeAndFlush()`.

All four send `POST <host>/v1/batch` with HTTP Basic auth (write key as user, empty
password). The alias call's previous id travels as `previousId` (the Segment spec's name)
in every SDK; the stored event may keep it as `previousId` or `previousUserId`.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from conftest import SDK_DIR, WRITE_KEY

PY_SDKS = ["segment-python", "rudder-python"]
NODE_SDKS = ["segment-node", "rudder-node"]
SDKS = PY_SDKS + NODE_SDKS
GZIP = ["on", "off"]

LIBRARY_NAME = {
    "segment-python": "analytics-python",
    "rudder-python": "analytics-python",
    "segment-node": "@segment/analytics-node",
    "rudder-node": "analytics-node",
}

ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")
WAIT_TIMEOUT_S = 20.0
NODE_TIMEOUT_S = 90


def make_ids(sdk: str, gzip: str, run_id: str) -> dict:
    """Same derivation as send_node.mjs."""
    tag = f"{sdk}-gzip{gzip}-{run_id}"
    return {"userId": f"u-{tag}", "previousId": f"prev-{tag}", "groupId": f"g-{tag}", "tag": tag}


def expected_messages(ids: dict) -> dict:
    """What each of the six calls carries, by type (mirrors the calls in send_node.mjs)."""
    u = ids["userId"]
    return {
        "identify": {"traits": {"email": f"{u}@example.com", "name": "Ayşe Yılmaz", "plan": "pro"}},
        "track": {
            "event": "Order Completed",
            "properties": {"revenue": 349.9, "currency": "TRY", "orderId": f"o-{ids['tag']}"},
        },
        "page": {"name": "Pricing", "properties": {"path": "/pricing", "title": "Pricing"}},
        "screen": {"name": "Home Screen", "properties": {"variant": "a"}},
        "group": {"groupId": ids["groupId"], "traits": {"name": "Acme", "plan": "enterprise"}},
        "alias": {"previousId": ids["previousId"]},
    }


# ------------------------------------------------------------------------------ senders


def send_python(sdk: str, host: str, gzip: str, ids: dict) -> dict:
    if sdk == "segment-python":
        from segment.analytics import Client
    else:
        from rudderstack.analytics import Client

    errors: list[str] = []
    client = Client(
        WRITE_KEY,
        host=host,
        gzip=(gzip == "on"),
        max_retries=3,
        timeout=10,
        upload_interval=0.1,
        on_error=lambda e, batch: errors.append(f"{type(e).__name__}: {e}"),
    )
    exp = expected_messages(ids)
    u = ids["userId"]
    results = [
        client.identify(user_id=u, traits=dict(exp["identify"]["traits"])),
        client.track(user_id=u, event=exp["track"]["event"], properties=dict(exp["track"]["properties"])),
        client.page(user_id=u, name=exp["page"]["name"], properties=dict(exp["page"]["properties"])),
        client.screen(user_id=u, name=exp["screen"]["name"], properties=dict(exp["screen"]["properties"])),
        client.group(user_id=u, group_id=ids["groupId"], traits=dict(exp["group"]["traits"])),
        client.alias(previous_id=ids["previousId"], user_id=u),
    ]
    client.shutdown()  # flush() blocks until the queue is sent, join() stops the thread
    sent = []
    for queued, msg in results:
        if not queued:
            errors.append(f"{msg['type']}: not queued")
        sent.append({"type": msg["type"], "messageId": msg.get("messageId")})
    return {"sent": sent, "errors": errors}


def send_node(node: str, sdk: str, host: str, gzip: str, run_id: str) -> dict:
    proc = subprocess.run(
        [node, str(SDK_DIR / "send_node.mjs"), sdk, host, WRITE_KEY, gzip, run_id],
        cwd=SDK_DIR,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        pytest.fail(
            f"send_node.mjs {sdk} gzip={gzip} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}",
            pytrace=False,
        )
    out = json.loads(lines[-1])
    if proc.stderr.strip():
        out.setdefault("stderr", proc.stderr[-4000:])
    return out


# ------------------------------------------------------------------------------ checks


def _parse_ts(value) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def check_stored(sdk: str, ids: dict, sent: list, stored: list, started: datetime) -> list[str]:
    """Returns a list of problems (empty when everything is as expected)."""
    problems: list[str] = []
    exp = expected_messages(ids)
    u = ids["userId"]

    sent_types = sorted(s["type"] for s in sent)
    if sent_types != sorted(exp):
        problems.append(f"the SDK reported sending {sent_types}, expected the six call types")

    # Exactly one stored event per sent message: by messageId where the SDK exposed it,
    # otherwise by type (every call of a test has its own userId).
    if len(stored) != len(exp):
        problems.append(f"{len(stored)} stored events for userId {u}, expected {len(exp)}")
    by_type: dict[str, dict] = {}
    for s in sent:
        mid = s.get("messageId")
        if mid:
            hits = [e for e in stored if e.get("messageId") == mid]
        else:
            hits = [e for e in stored if e.get("type") == s["type"]]
        if len(hits) != 1:
            problems.append(f"{s['type']} (messageId {mid}): stored {len(hits)} times, expected once")
            continue
        by_type[s["type"]] = hits[0]

    window_lo = started - timedelta(minutes=5)
    window_hi = datetime.now(timezone.utc) + timedelta(minutes=5)

    for typ, want in exp.items():
        ev = by_type.get(typ)
        if ev is None:
            continue
        where = f"{typ}: "
        if ev.get("type") != typ:
            problems.append(where + f"type is {ev.get('type')!r}")
        if ev.get("userId") != u:
            problems.append(where + f"userId is {ev.get('userId')!r}")
        if not isinstance(ev.get("messageId"), str) or not ev["messageId"]:
            problems.append(where + f"messageId is {ev.get('messageId')!r}")
        # Timestamps: the SDKs stamp "now" (as timestamp or originalTimestamp); the stored
        # timestamp is normalised to UTC with a Z.
        ts = ev.get("timestamp")
        if not (isinstance(ts, str) and ISO_Z.match(ts)):
            problems.append(where + f"timestamp {ts!r} is not a UTC ISO-8601 string ending in Z")
        else:
            t = _parse_ts(ts)
            if t is None or not (window_lo <= t <= window_hi):
                problems.append(where + f"timestamp {ts!r} is not close to the time of sending")
        for key in ("receivedAt", "sentAt"):
            v = ev.get(key)
            if not isinstance(v, str) or _parse_ts(v) is None:
                problems.append(where + f"{key} is {v!r}, expected an ISO-8601 string")
        if sdk == "rudder-node" and not isinstance(ev.get("originalTimestamp"), str):
            problems.append(where + "originalTimestamp (sent by rudder-sdk-node) was not kept")
        lib = ((ev.get("context") or {}).get("library") or {}).get("name")
        if lib != LIBRARY_NAME[sdk]:
            problems.append(where + f"context.library.name is {lib!r}, expected {LIBRARY_NAME[sdk]!r}")

        if typ == "track" and ev.get("event") != want["event"]:
            problems.append(where + f"event is {ev.get('event')!r}")
        if typ in ("page", "screen") and ev.get("name") != want["name"]:
            problems.append(where + f"name is {ev.get('name')!r}")
        if "properties" in want:
            props = ev.get("properties") or {}
            for k, v in want["properties"].items():
                if props.get(k) != v:
                    problems.append(where + f"properties.{k} is {props.get(k)!r}, expected {v!r}")
        if "traits" in want:
            traits = ev.get("traits") or {}
            if typ == "identify" and not traits:
                # rudder-sdk-python sends identify traits in context.traits only.
                traits = (ev.get("context") or {}).get("traits") or {}
            for k, v in want["traits"].items():
                if traits.get(k) != v:
                    problems.append(where + f"traits.{k} is {traits.get(k)!r}, expected {v!r}")
        if typ == "group" and ev.get("groupId") != want["groupId"]:
            problems.append(where + f"groupId is {ev.get('groupId')!r}")
        if typ == "alias":
            prev = ev.get("previousId", ev.get("previousUserId"))
            if prev != want["previousId"]:
                problems.append(where + f"previousId/previousUserId is {prev!r}, expected {want['previousId']!r}")
    return problems


# ------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("gzip", GZIP, ids=lambda g: f"gzip-{g}")
@pytest.mark.parametrize("sdk", SDKS)
def test_six_call_types_arrive_once(sdk, gzip, niyet_server, event_log, request):
    run_id = uuid.uuid4().hex[:12]
    ids = make_ids(sdk, gzip, run_id)
    started = datetime.now(timezone.utc)

    if sdk in PY_SDKS:
        out = send_python(sdk, niyet_server.base_url, gzip, ids)
    else:
        node = request.getfixturevalue("node_bin")
        out = send_node(node, sdk, niyet_server.base_url, gzip, run_id)
        assert out.get("userId") == ids["userId"], f"send_node.mjs used other ids: {out}"

    stored = event_log.wait_for(
        lambda e: e.get("userId") == ids["userId"], count=6, timeout=WAIT_TIMEOUT_S
    )
    problems = []
    if out.get("errors"):
        problems.append(f"the SDK reported errors: {out['errors']}")
    problems += check_stored(sdk, ids, out["sent"], stored, started)
    if problems:
        detail = [
            f"{sdk} gzip={gzip} userId={ids['userId']}",
            *(f"  - {p}" for p in problems),
            "sent: " + json.dumps(out.get("sent")),
            "stored: " + json.dumps(stored, ensure_ascii=False)[:6000],
            "quarantine: " + event_log.quarantine_summary(),
            "server log tail:\n" + niyet_server.log_tail(30),
        ]
        if out.get("stderr"):
            detail.append("node stderr:\n" + out["stderr"])
        pytest.fail("\n".join(detail), pytrace=False)


@pytest.mark.parametrize("sdk", PY_SDKS)
def test_explicit_timestamps_are_normalised_to_utc(sdk, niyet_server, event_log):
    """The Python SDKs send a given datetime as isoformat() with a numeric offset (segment:
    milliseconds; rudder: microseconds, or no fraction at all when it is zero); the stored
    timestamp is the same instant in UTC, ending in Z."""
    if sdk == "segment-python":
        from segment.analytics import Client
    else:
        from rudderstack.analytics import Client

    run_id = uuid.uuid4().hex[:12]
    user = f"u-{sdk}-ts-{run_id}"
    plus3 = timezone(timedelta(hours=3))
    cases = {
        "ts-millis": datetime(2025, 11, 22, 13, 15, 30, 123000, tzinfo=plus3),
        "ts-whole-second": datetime(2025, 11, 22, 13, 15, 31, 0, tzinfo=plus3),
        "ts-utc": datetime(2025, 11, 22, 10, 15, 32, 500000, tzinfo=timezone.utc),
    }
    errors: list[str] = []
    client = Client(
        WRITE_KEY,
        host=niyet_server.base_url,
        gzip=False,
        max_retries=3,
        timeout=10,
        upload_interval=0.1,
        on_error=lambda e, batch: errors.append(str(e)),
    )
    for name, ts in cases.items():
        client.track(user_id=user, event=name, timestamp=ts)
    client.shutdown()
    assert not errors, errors

    stored = event_log.wait_for(lambda e: e.get("userId") == user, count=len(cases))
    by_event = {}
    for e in stored:
        by_event.setdefault(e.get("event"), []).append(e)
    for name, ts in cases.items():
        got = by_event.get(name, [])
        assert len(got) == 1, f"{name}: stored {len(got)} times: {stored}"
        value = got[0].get("timestamp")
        assert isinstance(value, str) and ISO_Z.match(value), f"{name}: timestamp {value!r}"
        assert _parse_ts(value) == ts.astimezone(timezone.utc), f"{name}: {value!r} != {ts.isoformat()}"
