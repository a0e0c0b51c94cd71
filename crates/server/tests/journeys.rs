//! Triggers end to end over real HTTP, in simulated time: the server in this process on a
//! manual clock, a real webhook receiver (HTTP on loopback) and real SMTP servers
//! (Python's standard `smtpd`; aiosmtpd from PyPI for STARTTLS and AUTH) started here.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use niyet_model::ManualClock;
use serde_json::{json, Value};

const T0: i64 = 1_767_225_600_000; // 2026-01-01
const MIN: i64 = 60_000;
const ADMIN: &str = "journey-admin-token";
const KEY: &str = "journey-write-key";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    path: String,
    headers: HeaderMap,
    body: Value,
    raw: Vec<u8>,
}

/// A webhook receiver: records every request; answers 500 to the first `fail` requests
/// (with `Retry-After: 0`), and waits `slow_ms` before answering requests to paths starting
/// with `/slow` (counting how many it answers at once).
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Got>>>,
    fail: Arc<AtomicU32>,
    slow_ms: Arc<AtomicU32>,
    /// Per slow path: requests being answered now, and the most at once.
    in_flight: Arc<Mutex<std::collections::HashMap<String, (u32, u32)>>>,
}

impl Receiver {
    async fn start() -> (Receiver, String) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Receiver::serve(l)
    }

    /// A port held but not listened on: connections to it are refused, and no other
    /// test can take it up while the outage lasts (a port merely let go could be).
    fn down() -> (tokio::net::TcpSocket, String) {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = s.local_addr().unwrap().to_string();
        (s, addr)
    }

    /// A receiver coming up on the port [`Receiver::down`] held, after an outage.
    fn start_at(held: tokio::net::TcpSocket) -> Receiver {
        Receiver::serve(held.listen(1024).unwrap()).0
    }

    fn serve(l: tokio::net::TcpListener) -> (Receiver, String) {
        let r = Receiver::default();
        let state = r.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes| {
                let r = state.clone();
                async move {
                    if uri.path().starts_with("/slow") {
                        let path = uri.path().to_string();
                        {
                            let mut f = r.in_flight.lock().unwrap();
                            let e = f.entry(path.clone()).or_insert((0, 0));
                            e.0 += 1;
                            e.1 = e.1.max(e.0);
                        }
                        let ms = r.slow_ms.load(Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(u64::from(ms))).await;
                        if let Some(e) = r.in_flight.lock().unwrap().get_mut(&path) {
                            e.0 -= 1;
                        }
                    }
                    let poison = poisoned(&body);
                    let poisoned = uri.path() == "/picky" && poison;
                    let refused = uri.path().ends_with("/strict") && poison;
                    let failing = poisoned
                        || r.fail
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                    r.got.lock().unwrap().push(Got {
                        path: uri.path().to_string(),
                        headers,
                        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                        raw: body.to_vec(),
                    });
                    if uri.path() == "/moved" {
                        (StatusCode::FOUND, [("location", "/elsewhere")], "moved").into_response()
                    } else if uri.path() == "/missing" {
                        (
                            StatusCode::NOT_FOUND,
                            [("retry-after", "0")],
                            "no such hook",
                        )
                            .into_response()
                    } else if refused {
                        // What a receiver says of a document it will never take.
                        (StatusCode::UNPROCESSABLE_ENTITY, "bad document").into_response()
                    } else if poisoned {
                        // No `Retry-After`: the sender's own backoff applies.
                        (StatusCode::INTERNAL_SERVER_ERROR, "not this one").into_response()
                    } else if failing {
                        (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            [("retry-after", "0")],
                            "down",
                        )
                            .into_response()
                    } else {
                        (StatusCode::OK, "ok").into_response()
                    }
                }
            },
        );
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await });
        (r, url)
    }

    fn at(&self, path: &str) -> Vec<Got> {
        let g = self.got.lock().unwrap();
        g.iter().filter(|g| g.path == path).cloned().collect()
    }
}

/// Whether a request's body carries a document marked `"poison": true`.
fn poisoned(body: &[u8]) -> bool {
    body.windows(13).any(|w| w == br#""poison":true"#)
}

/// A request's documents one by one (a batch is an array of them).
fn docs(g: &Got) -> Vec<Value> {
    match &g.body {
        Value::Array(a) => a.clone(),
        one => vec![one.clone()],
    }
}

/// Python's standard-library SMTP server, printing what it receives.
struct Smtp {
    child: std::process::Child,
    out: std::path::PathBuf,
    addr: String,
}

impl Smtp {
    fn start(dir: &std::path::Path) -> Smtp {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let out = dir.join("smtp.out");
        let addr = format!("127.0.0.1:{port}");
        let child = std::process::Command::new("python3")
            .args([
                "-u",
                "-W",
                "ignore",
                "-m",
                "smtpd",
                "-n",
                "-c",
                "DebuggingServer",
                &addr,
            ])
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 with the smtpd module (CPython 3.11)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "the SMTP server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Smtp { child, out, addr }
    }

    fn received(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Niyet {
    url: String,
    clock: ManualClock,
    state: Arc<niyet_server::AppState>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    n: u32,
}

impl Niyet {
    async fn start(extra: &str) -> Niyet {
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            r#"
listen = "127.0.0.1:0"
data_dir = "{data}"
admin_token = "{ADMIN}"
[[sources]]
name = "web"
write_key = "{KEY}"
[lifecycle]
enabled = false
{extra}
"#,
            data = dir.path().join("data").display()
        );
        let cfg: niyet_server::Config = toml::from_str(&toml).unwrap();
        let clock = ManualClock::new(T0);
        let server = niyet_server::Server::bind(cfg, Arc::new(clock.clone()))
            .await
            .unwrap();
        let url = format!("http://{}", server.local_addr().unwrap());
        let state = server.state();
        tokio::spawn(server.run(std::future::pending()));
        Niyet {
            url,
            clock,
            state,
            http: reqwest::Client::new(),
            _dir: dir,
            n: 0,
        }
    }

    async fn track(&mut self, user: &str, event: &str, props: Value, traits: Value) {
        self.n += 1;
        let r = self
            .http
            .post(format!("{}/v1/track", self.url))
            .basic_auth(KEY, Some(""))
            .json(&json!({"userId": user, "event": event, "properties": props,
                          "context": {"traits": traits}, "messageId": format!("m{}", self.n)}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        self.processed().await;
    }

    /// Sends `batch` in one request and waits until it is processed.
    async fn batch(&self, batch: Vec<Value>) {
        let r = self
            .http
            .post(format!("{}/v1/batch", self.url))
            .basic_auth(KEY, Some(""))
            .json(&json!({ "batch": batch }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        self.processed().await;
    }

    async fn processed(&self) {
        let st = self.state.clone();
        tokio::task::spawn_blocking(move || {
            st.pipeline
                .wait_processed(st.log.end_offset(), Duration::from_secs(10))
                .unwrap()
        })
        .await
        .unwrap();
    }

    /// Moves the clock to `t` and waits until the timers due by then fired (timers run a
    /// second behind the clock).
    async fn at(&self, t: i64) {
        self.clock.set(t + 1_000);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.state.pipeline.time_reached() < t {
            assert!(Instant::now() < deadline, "timers did not reach {t}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// An admin GET's answer.
    async fn admin_get(&self, path: &str) -> reqwest::Response {
        let r = self.http.get(format!("{}{path}", self.url));
        r.bearer_auth(ADMIN).send().await.unwrap()
    }

    /// An admin GET's body as text.
    async fn text(&self, path: &str) -> String {
        self.admin_get(path).await.text().await.unwrap()
    }

    async fn get(&self, path: &str) -> Value {
        self.admin_get(path).await.json().await.unwrap()
    }

    async fn actions(&self, user: &str) -> Vec<Value> {
        let id = self.profile_id(user);
        self.get(&format!("/v1/actions?profile={id}")).await["actions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn profile_id(&self, user: &str) -> String {
        let q = self.state.pipeline.query();
        q.find("user_id", user).unwrap().unwrap().to_string()
    }
}

async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn cart_config(url: &str, holdout: f64) -> String {
    format!(
        r#"
[[destinations]]
name = "offers"
kind = "webhook"
url = "{url}/offers"
secret = "whsec-test"
backoff_ms = 20
max_backoff_ms = 200

[[destinations]]
name = "meta"
kind = "meta_capi"
url = "{url}/meta"

[[triggers]]
name = "Cart abandoned"
when = {{ event = "Product Added" }}
wait = "30m"
unless = ["Order Completed"]
then = ["offers"]
holdout_percent = {holdout}

[[triggers]]
name = "Purchase feedback"
when = {{ event = "Order Completed" }}
then = ["meta"]

# This shop collects ad consent at checkout and states only refusals.
[privacy.consent]
ads = "opt_out"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cart_abandonment_waits_is_cancelled_by_an_order_and_is_signed() {
    let (rx, url) = Receiver::start().await;
    let mut n = Niyet::start(&cart_config(&url, 0.0)).await;
    n.track(
        "ayse",
        "Product Added",
        json!({"sku": "S1", "price": 120}),
        json!({}),
    )
    .await;
    n.track("mehmet", "Product Added", json!({"sku": "S2"}), json!({}))
        .await;
    // Mehmet orders ten minutes in: his wait is cancelled.
    n.clock.set(T0 + 10 * MIN);
    n.track(
        "mehmet",
        "Order Completed",
        json!({"revenue": 99.5, "currency": "try", "order_id": "o-1"}),
        json!({"email": " Mehmet@Example.com ", "phone": "+90 532 000 11 22"}),
    )
    .await;
    // Nothing leaves before the wait elapses.
    n.at(T0 + 30 * MIN - 1_000).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rx.at("/offers").is_empty(), "sent before the wait elapsed");

    n.at(T0 + 30 * MIN + 10).await;
    let got = eventually("the offer", || rx.at("/offers").pop()).await;
    assert_eq!(got.body["trigger"], "Cart abandoned");
    assert_eq!(got.body["profile"]["id"], n.profile_id("ayse"));
    assert_eq!(got.body["event"]["properties"]["sku"], "S1");
    // Signed: HMAC-SHA256 over "timestamp.body" with the destination's secret.
    let ts: i64 = got.headers["x-niyet-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let sig = got.headers["x-niyet-signature"].to_str().unwrap();
    assert_eq!(
        sig,
        format!(
            "v1={}",
            niyet_actions::payload::signature(b"whsec-test", ts, &got.raw)
        )
    );
    assert_eq!(
        got.headers["idempotency-key"].to_str().unwrap(),
        got.body["id"]
    );

    // The sender records the outcome once the receiver has answered; the
    // simulated clock stays put until then, so the latency is the real one.
    let deadline = Instant::now() + Duration::from_secs(15);
    let a = loop {
        let a = n.actions("ayse").await;
        if a.first().map(|a| a["status"] == "sent") == Some(true) {
            break a;
        }
        assert!(Instant::now() < deadline, "no outcome recorded: {a:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(a[0]["latency_ms"].as_i64().map(|l| l < 5_000), Some(true));

    // Later still, nothing for Mehmet: his order came during the wait.
    n.at(T0 + 90 * MIN).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.at("/offers").len(), 1, "{:?}", rx.at("/offers"));

    // The order went to the ad platform at once, with hashed identifiers.
    let meta = eventually("the conversion feedback", || rx.at("/meta").pop()).await;
    let d = &meta.body["data"][0];
    assert_eq!(
        d["user_data"]["em"][0],
        niyet_actions::payload::sha256_hex("mehmet@example.com")
    );
    assert_eq!(
        d["user_data"]["ph"][0],
        niyet_actions::payload::sha256_hex("905320001122")
    );
    assert_eq!(d["custom_data"]["value"], 99.5);
    assert_eq!(d["custom_data"]["currency"], "TRY");
    assert_eq!(
        d["event_id"],
        meta.headers["idempotency-key"].to_str().unwrap()
    );
    assert_eq!(d["event_time"], (T0 + 10 * MIN) / 1000);

    // Outcomes stay visible per profile.
    let a = n.actions("ayse").await;
    assert_eq!(a[0]["status"], "sent", "{a:?}");
    assert_eq!(a.len(), 1, "{a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_group_is_recorded_not_sent() {
    let (rx, url) = Receiver::start().await;
    let mut n = Niyet::start(&cart_config(&url, 50.0)).await;
    let users: Vec<String> = (0..40).map(|i| format!("u{i}")).collect();
    for u in &users {
        n.track(u, "Product Added", json!({}), json!({})).await;
    }
    n.at(T0 + 31 * MIN).await;
    let mut held = Vec::new();
    for u in &users {
        let id = n.profile_id(u);
        let out = niyet_actions::trigger::held_out("Cart abandoned", &id, 5_000);
        let status = eventually("an outcome", || {
            let d = n.state.delivery.as_ref().unwrap();
            d.recent(Some(&id), 1).pop().map(|s| s.status)
        })
        .await;
        assert_eq!(status, if out { "held_out" } else { "sent" }, "{u}");
        if out {
            held.push(id);
        }
    }
    assert!((8..=32).contains(&held.len()), "{} held out", held.len());
    let sent = eventually("all treated sent", || {
        let s = rx.at("/offers");
        (s.len() == users.len() - held.len()).then_some(s)
    })
    .await;
    assert!(sent
        .iter()
        .all(|g| !held.contains(&g.body["profile"]["id"].as_str().unwrap().to_string())));
    // Uplift report: one held-out and three treated profiles order afterwards.
    n.clock.set(T0 + 40 * MIN);
    let treated: Vec<&String> = users
        .iter()
        .filter(|u| !held.contains(&n.profile_id(u)))
        .take(3)
        .collect();
    let control = users
        .iter()
        .find(|u| held.contains(&n.profile_id(u)))
        .unwrap();
    for u in treated.iter().copied().chain([control]) {
        n.track(u, "Order Completed", json!({"revenue": 10}), json!({}))
            .await;
    }
    let report = n.get("/v1/triggers/Cart%20abandoned/uplift").await;
    let (t, c) = (&report["treated"], &report["held_out"]);
    assert_eq!(t["profiles"], users.len() - held.len(), "{report}");
    assert_eq!(c["profiles"], held.len(), "{report}");
    assert_eq!(t["converted"], 3, "{report}");
    assert_eq!(c["converted"], 1, "{report}");
    let expect = 3.0 / (users.len() - held.len()) as f64 - 1.0 / held.len() as f64;
    assert!(
        (report["uplift"].as_f64().unwrap() - expect).abs() < 1e-12,
        "{report}"
    );
    // Each trigger's decisions, counted from the outbox: in the trigger list, in the
    // metrics and on the status page; asking again counts nothing twice.
    let deadline = Instant::now() + Duration::from_secs(15);
    let list = loop {
        let v = n.get("/v1/triggers").await;
        if v["triggers"][1]["decisions"]["send"] == 4 {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the orders' feedback never decided: {v}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    for v in [list, n.get("/v1/triggers").await] {
        let cart = &v["triggers"][0];
        assert_eq!(cart["name"], "Cart abandoned", "{v}");
        assert_eq!(
            cart["decisions"],
            json!({"send": users.len() - held.len(), "holdout": held.len(), "capped": 0, "not_in_segment": 0}),
            "{v}"
        );
        assert_eq!(v["triggers"][1]["decisions"]["send"], 4, "{v}");
        assert_eq!(v["triggers"][1]["decisions"]["holdout"], 0, "{v}");
    }
    let metrics = n.text("/metrics").await;
    for line in [
        format!(
            "niyet_trigger_decisions_total{{trigger=\"Cart abandoned\",outcome=\"holdout\"}} {}",
            held.len()
        ),
        format!(
            "niyet_trigger_decisions_total{{trigger=\"Cart abandoned\",outcome=\"send\"}} {}",
            users.len() - held.len()
        ),
        "niyet_trigger_decisions_total{trigger=\"Purchase feedback\",outcome=\"send\"} 4".into(),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in {metrics}"
        );
    }
    let page = n.text("/").await;
    let row = format!(
        "<td style=\"padding:.4rem .8rem\">Cart abandoned</td><td style=\"padding:.4rem .8rem\">event Product Added</td><td style=\"padding:.4rem .8rem\">30m</td><td style=\"padding:.4rem .8rem\">{}</td><td style=\"padding:.4rem .8rem\">{}</td>",
        users.len() - held.len(),
        held.len()
    );
    assert!(
        page.contains("<h2>Triggers</h2>") && page.contains(&row),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_is_split_until_only_the_refused_document_is_left() {
    let (rx, url) = Receiver::start().await;
    let extra = format!(
        r#"
[[destinations]]
name = "strict"
kind = "webhook"
url = "{url}/slow/strict"
concurrency = 1
batch_max = 16
backoff_ms = 20
max_backoff_ms = 100

[[destinations]]
name = "gone"
kind = "webhook"
url = "{url}/missing"
concurrency = 1
batch_max = 16

[[triggers]]
name = "Viewed"
when = {{ event = "Product Viewed" }}
then = ["strict", "gone"]
"#
    );
    let mut n = Niyet::start(&extra).await;
    rx.slow_ms.store(300, Ordering::SeqCst);
    // The first goes alone and holds the line; the next 20 wait behind it together.
    n.track("first", "Product Viewed", json!({"n": 100}), json!({}))
        .await;
    let batch: Vec<Value> = (0..20)
        .map(|i| {
            json!({"type": "track", "userId": format!("u{i}"), "event": "Product Viewed",
                   "properties": {"n": i, "poison": i == 13}})
        })
        .collect();
    n.batch(batch).await;
    let d = n.state.delivery.as_ref().unwrap();
    eventually("the refused document a dead letter", || {
        (!d.dead_letters("strict").unwrap().is_empty()).then_some(())
    })
    .await;
    eventually("the other 20 delivered", || {
        let ok: usize = rx
            .at("/slow/strict")
            .iter()
            .filter(|g| !poisoned(&g.raw))
            .map(|g| docs(g).len())
            .sum();
        (ok >= 20).then_some(())
    })
    .await;
    // Time for anything sent twice to arrive as well.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = rx.at("/slow/strict");
    // Only the refused document is a dead letter, after being refused alone.
    let dead = d.dead_letters("strict").unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let letter = &dead[0];
    assert!(
        letter["error"].as_str().unwrap().contains("HTTP 422"),
        "{letter}"
    );
    let refused: Vec<&Got> = got.iter().filter(|g| poisoned(&g.raw)).collect();
    assert!(docs(refused[0]).len() > 1, "the batch was refused first");
    assert_eq!(docs(refused[refused.len() - 1]).len(), 1, "then alone");
    assert_eq!(
        letter["action"]["key"],
        docs(refused[refused.len() - 1])[0]["id"]
    );
    // Every other document arrived once, each part of the split with its own key.
    let delivered: Vec<Value> = got
        .iter()
        .filter(|g| !poisoned(&g.raw))
        .flat_map(docs)
        .collect();
    let ids: std::collections::BTreeSet<&str> = delivered
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(delivered.len(), 20, "each once");
    assert_eq!(ids.len(), 20);
    let keys: std::collections::BTreeSet<String> = got
        .iter()
        .map(|g| g.headers["idempotency-key"].to_str().unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), got.len(), "no request key used twice");
    // A receiver that is not there (404) says nothing of the documents: the batch is
    // not split, each of its actions a dead letter from one answer.
    let gone = eventually("21 dead letters for the missing receiver", || {
        let l = d.dead_letters("gone").unwrap();
        (l.len() >= 21).then_some(l)
    })
    .await;
    assert_eq!(gone.len(), 21);
    let asked = rx.at("/missing");
    assert!(
        asked.len() < 21,
        "fewer requests than actions: {}",
        asked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batching_destination_sends_what_waits_in_one_request() {
    // One request at a time to a slow receiver, so the actions pile up behind it.
    let (rx, url) = Receiver::start().await;
    let (ads, ads_url) = Receiver::start().await;
    let extra = format!(
        r#"
[[destinations]]
name = "hook"
kind = "webhook"
url = "{url}/slow/hook"
secret = "s"
concurrency = 1
batch_max = 50
backoff_ms = 20
max_backoff_ms = 100

[[destinations]]
name = "meta"
kind = "meta_capi"
url = "{ads_url}/slow/meta"
concurrency = 1
batch_max = 50

[[triggers]]
name = "Ordered"
when = {{ event = "Order Completed" }}
then = ["hook", "meta"]

[privacy.consent]
ads = "opt_out"
"#
    );
    let mut n = Niyet::start(&extra).await;
    rx.slow_ms.store(500, Ordering::SeqCst);
    ads.slow_ms.store(500, Ordering::SeqCst);
    // The first request fails once and goes again as it was.
    rx.fail.store(1, Ordering::SeqCst);
    n.track(
        "first",
        "Order Completed",
        json!({"revenue": 10, "order_id": "o-first"}),
        json!({"email": "first@example.com"}),
    )
    .await;
    let batch: Vec<Value> = (0..30)
        .map(|i| {
            json!({"type": "track", "userId": format!("u{i}"), "event": "Order Completed",
                   "messageId": format!("b{i}"),
                   "properties": {"revenue": 20 + i, "order_id": format!("o-{i}")},
                   "context": {"traits": {"email": format!("u{i}@example.com")}}})
        })
        .collect();
    n.batch(batch).await;

    let header = |g: &Got, h: &str| g.headers[h].to_str().unwrap().to_string();
    let got = eventually("31 documents delivered", || {
        let g = rx.at("/slow/hook");
        let n: usize = g.iter().skip(1).map(|g| docs(g).len()).sum();
        (n >= 31).then_some(g)
    })
    .await;
    // The failed attempt and its retry: the same key, the same body.
    assert_eq!(
        header(&got[0], "idempotency-key"),
        header(&got[1], "idempotency-key")
    );
    assert_eq!(got[0].raw, got[1].raw);
    let delivered: Vec<Value> = got.iter().skip(1).flat_map(docs).collect();
    let ids: std::collections::BTreeSet<&str> = delivered
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(delivered.len(), 31, "each action once");
    assert_eq!(ids.len(), 31, "31 distinct keys");
    assert!(
        got.iter().any(|g| docs(g).len() > 1),
        "the actions waiting behind the slow request left together"
    );
    for g in &got {
        let ds = docs(g);
        let ts: i64 = header(g, "x-niyet-timestamp").parse().unwrap();
        assert_eq!(
            header(g, "x-niyet-signature"),
            format!("v1={}", niyet_actions::payload::signature(b"s", ts, &g.raw)),
            "the whole body is signed"
        );
        if let Value::Array(_) = g.body {
            assert_eq!(header(g, "x-niyet-batch"), ds.len().to_string());
            let keys: Vec<&str> = ds.iter().map(|d| d["id"].as_str().unwrap()).collect();
            assert_eq!(
                header(g, "idempotency-key"),
                niyet_delivery::batch_key(&keys)
            );
        } else {
            assert!(!g.headers.contains_key("x-niyet-batch"));
            assert_eq!(header(g, "idempotency-key"), ds[0]["id"]);
        }
    }
    // Meta's Conversions API: one `data` array per request, each event with its own id.
    let conv = eventually("31 conversions", || {
        let g = ads.at("/slow/meta");
        let n: usize = g
            .iter()
            .map(|g| g.body["data"].as_array().unwrap().len())
            .sum();
        (n >= 31).then_some(g)
    })
    .await;
    let events: Vec<&Value> = conv
        .iter()
        .flat_map(|g| g.body["data"].as_array().unwrap())
        .collect();
    assert_eq!(events.len(), 31);
    let event_ids: std::collections::BTreeSet<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    let mut meta_keys = std::collections::BTreeSet::new();
    for who in std::iter::once("first".to_string()).chain((0..30).map(|i| format!("u{i}"))) {
        for a in n.actions(&who).await {
            if a["destination"] == "meta" {
                meta_keys.insert(a["key"].as_str().unwrap().to_string());
            }
        }
    }
    let event_ids: std::collections::BTreeSet<String> =
        event_ids.into_iter().map(String::from).collect();
    assert_eq!(
        event_ids, meta_keys,
        "a conversion's event id is its action's key"
    );
    assert!(conv
        .iter()
        .any(|g| g.body["data"].as_array().unwrap().len() > 1));
    assert!(events.iter().all(|e| e["user_data"]["em"][0]
        .as_str()
        .is_some_and(|h| h.len() == 64)));
    // The receivers have the requests before the sender has their answers.
    let d = n.state.delivery.clone().unwrap();
    eventually("every action recorded as sent", || {
        let st = d.stats();
        (st["destinations"][0]["sent"] == 31 && st["destinations"][1]["sent"] == 31).then_some(())
    })
    .await;
    let stats = n.get("/v1/destinations").await;
    assert_eq!(stats["destinations"][0]["sent"], 31, "{stats}");
    assert_eq!(stats["destinations"][0]["retries"], 1, "{stats}");
    assert_eq!(stats["destinations"][1]["sent"], 31, "{stats}");
    let a = n.actions("u7").await;
    assert!(a.iter().all(|a| a["status"] == "sent"), "{a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_receivers_are_retried_with_one_key_and_others_keep_going() {
    let (rx, url) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let smtp = Smtp::start(dir.path());
    let extra = format!(
        r#"
[[destinations]]
name = "flaky"
kind = "webhook"
url = "{url}/flaky"
backoff_ms = 20
max_backoff_ms = 100

[[destinations]]
name = "mail"
kind = "email"
smtp = "{smtp}"
from = "kampanya@niyet.example"
subject = "Hello {{{{profile.traits.first_name}}}}"
template = "Your code: WELCOME-{{{{profile.id}}}}"

[[triggers]]
name = "Signed up"
when = {{ event = "Signed Up" }}
then = ["flaky", "mail"]
"#,
        smtp = smtp.addr
    );
    let mut n = Niyet::start(&extra).await;
    rx.fail.store(5, Ordering::SeqCst);
    n.track(
        "zeynep",
        "Signed Up",
        json!({}),
        json!({"email": "zeynep@example.com", "first_name": "Zeynep", "consent": {"email": true}}),
    )
    .await;
    n.track(
        "ali",
        "Signed Up",
        json!({}),
        json!({"email": "ali@example.com", "first_name": "Ali", "consent": {"email": "denied"}}),
    )
    .await;
    // The e-mail does not wait for the failing webhook.
    eventually("the e-mail", || {
        smtp.received().contains("Hello Zeynep").then_some(())
    })
    .await;
    // The webhook succeeds after the failures; every attempt carries the same key.
    let got = eventually("two deliveries", || {
        let g = rx.at("/flaky");
        (g.len() >= 7).then_some(g)
    })
    .await;
    // The two actions go out side by side, so the five failures fall on either.
    let key = |g: &Got| g.headers["idempotency-key"].to_str().unwrap().to_string();
    assert_eq!(got.len(), 7, "five failed attempts and two that succeeded");
    for who in ["zeynep", "ali"] {
        let id = n.profile_id(who);
        let attempts: Vec<&Got> = got
            .iter()
            .filter(|g| g.body["profile"]["id"] == id.as_str())
            .collect();
        assert!(!attempts.is_empty(), "{who}");
        assert!(attempts.iter().all(|g| key(g) == key(attempts[0])), "{who}");
    }
    let keys: std::collections::BTreeSet<String> = got.iter().map(key).collect();
    assert_eq!(keys.len(), 2, "one key per action");
    let stats = n.get("/v1/destinations").await;
    let flaky = &stats["destinations"][0];
    assert_eq!(flaky["name"], "flaky");
    assert_eq!(flaky["retries"], 5, "{stats}");
    assert_eq!(flaky["sent"], 2, "{stats}");
    // Ali denied e-mail: blocked, recorded, not sent.
    let mail = eventually("Ali's e-mail outcome", || {
        let d = n.state.delivery.as_ref().unwrap();
        d.recent(Some(&n.profile_id("ali")), 10)
            .into_iter()
            .find(|s| s.destination == "mail")
    })
    .await;
    assert_eq!(mail.status, "blocked");
    assert!(!smtp.received().contains("Hello Ali"));
    let metrics = n.text("/metrics").await;
    assert!(
        metrics.contains("niyet_action_retries_total{destination=\"flaky\"} 5"),
        "{metrics}"
    );
    assert!(metrics.contains("niyet_action_latency_seconds_bucket{destination=\"mail\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failures_become_dead_letters_that_replay() {
    let (rx, url) = Receiver::start().await;
    // A receiver that answers 404 until fixed: permanent, no retries.
    let extra = format!(
        r#"
[[destinations]]
name = "crm"
kind = "crm"
url = "{url}/missing"

[[triggers]]
name = "Hot lead"
when = {{ event = "Demo Requested" }}
then = ["crm"]
"#
    );
    let mut n = Niyet::start(&extra).await;
    let _ = &rx;
    n.track(
        "lead1",
        "Demo Requested",
        json!({}),
        json!({"email": "l@x.co", "company": "Acme"}),
    )
    .await;
    let d = n.state.delivery.as_ref().unwrap().clone();
    eventually("a dead letter", || {
        (d.dead_letters("crm").ok()?.len() == 1).then_some(())
    })
    .await;
    let dead = n.get("/v1/destinations/crm/dead").await;
    assert_eq!(dead["dead_letters"][0]["action"]["trigger"], "Hot lead");
    // Replay queues it again (the receiver still says 404, so it comes back once more).
    let r: Value = n
        .http
        .post(format!("{}/v1/destinations/crm/dead/replay", n.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["requeued"], 1);
    eventually("the replayed letter", || {
        let got = rx.at("/missing");
        (got.len() == 2 && d.dead_letters("crm").ok()?.len() == 1).then_some(got)
    })
    .await;
    let got = rx.at("/missing");
    assert_eq!(
        got[0].headers["idempotency-key"],
        got[1].headers["idempotency-key"]
    );
    assert_eq!(got[0].body["lead"]["company"], "Acme");
    assert_eq!(got[0].body["type"], "lead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_not_followed_and_becomes_a_dead_letter() {
    let (rx, url) = Receiver::start().await;
    let extra = format!(
        r#"
[[destinations]]
name = "hook"
kind = "webhook"
url = "{url}/moved"
secret = "s"

[[triggers]]
name = "Ordered"
when = {{ event = "Order Completed" }}
then = ["hook"]
"#
    );
    let mut n = Niyet::start(&extra).await;
    n.track("r1", "Order Completed", json!({"revenue": 5}), json!({}))
        .await;
    let d = n.state.delivery.as_ref().unwrap().clone();
    let dead = eventually("a dead letter", || {
        let v = d.dead_letters("hook").ok()?;
        (v.len() == 1).then_some(v)
    })
    .await;
    assert!(
        dead[0].to_string().contains("302"),
        "the dead letter says why: {}",
        dead[0]
    );
    assert_eq!(rx.at("/moved").len(), 1, "sent once, not retried");
    assert!(rx.at("/elsewhere").is_empty(), "the redirect was followed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_destination_does_not_delay_the_others() {
    let (rx, url) = Receiver::start().await;
    rx.slow_ms.store(3_000, Ordering::SeqCst);
    let extra = format!(
        r#"
[[destinations]]
name = "slow"
kind = "webhook"
url = "{url}/slow"
timeout_ms = 10000

[[destinations]]
name = "fast"
kind = "webhook"
url = "{url}/fast"

[[triggers]]
name = "Viewed"
when = {{ event = "Product Viewed" }}
then = ["slow", "fast"]
"#
    );
    let mut n = Niyet::start(&extra).await;
    let started = Instant::now();
    for i in 0..5 {
        n.track(&format!("v{i}"), "Product Viewed", json!({}), json!({}))
            .await;
    }
    eventually("five fast deliveries", || {
        (rx.at("/fast").len() == 5).then_some(())
    })
    .await;
    // All five went out while the slow receiver still holds its first request.
    assert!(
        started.elapsed() < Duration::from_millis(2_500),
        "{:?}",
        started.elapsed()
    );
    assert!(rx.at("/slow").len() <= 1);
    // The receiver has the requests before the sender has their answers.
    let d = n.state.delivery.clone().unwrap();
    eventually("five fast ones recorded as sent", || {
        (d.stats()["destinations"][1]["sent"] == 5).then_some(())
    })
    .await;
    let stats = n.get("/v1/destinations").await;
    assert_eq!(stats["destinations"][1]["sent"], 5, "{stats}");
    assert_eq!(stats["destinations"][0]["sent"], 0, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_overlap_up_to_the_concurrency_and_one_keeps_the_order() {
    let (rx, url) = Receiver::start().await;
    rx.slow_ms.store(200, Ordering::SeqCst);
    let extra = format!(
        r#"
[[destinations]]
name = "ordered"
kind = "webhook"
url = "{url}/slow-ordered"
concurrency = 1

[[destinations]]
name = "parallel"
kind = "webhook"
url = "{url}/slow-parallel"
concurrency = 4

[[triggers]]
name = "Viewed"
when = {{ event = "Product Viewed" }}
then = ["ordered", "parallel"]
"#
    );
    let n = Niyet::start(&extra).await;
    // Sent as one batch, so both destinations find them queued in the outbox together.
    // One customer's events, sent as one batch: their actions are in the outbox in the
    // events' order, queued together for both destinations.
    let batch: Vec<Value> = (0..12)
        .map(|i| json!({"type": "track", "userId": "v", "event": "Product Viewed", "properties": {"n": i}}))
        .collect();
    n.batch(batch).await;
    let (ordered, parallel) = eventually("every request at both", || {
        let (o, p) = (rx.at("/slow-ordered"), rx.at("/slow-parallel"));
        (o.len() == 12 && p.len() == 12).then_some((o, p))
    })
    .await;
    let peak = |path: &str| rx.in_flight.lock().unwrap().get(path).map_or(0, |e| e.1);
    assert_eq!(peak("/slow-ordered"), 1);
    let p = peak("/slow-parallel");
    assert!((2..=4).contains(&p), "{p} in flight at once");
    let order = |g: &[Got]| -> Vec<u64> {
        g.iter()
            .map(|g| g.body["event"]["properties"]["n"].as_u64().unwrap_or(99))
            .collect()
    };
    let mut all = order(&parallel);
    all.sort_unstable();
    assert_eq!(all, (0..12).collect::<Vec<u64>>());
    assert_eq!(order(&ordered), all, "one at a time keeps the outbox order");
    // Every action once, with one key each.
    let mut keys: Vec<_> = parallel
        .iter()
        .map(|g| g.headers["idempotency-key"].clone())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_in_retry_holds_back_only_its_own_place() {
    let (rx, url) = Receiver::start().await;
    let extra = format!(
        r#"
[[destinations]]
name = "picky"
kind = "webhook"
url = "{url}/picky"
concurrency = 4
backoff_ms = 1500
max_backoff_ms = 1500
max_attempts = 3

[[triggers]]
name = "Viewed"
when = {{ event = "Product Viewed" }}
then = ["picky"]
"#
    );
    let n = Niyet::start(&extra).await;
    // The first action is refused every time; more than a chunk of the outbox (256
    // records) comes after it.
    let batch: Vec<Value> = (0..400)
        .map(|i| {
            json!({"type": "track", "userId": format!("u{i}"), "event": "Product Viewed",
                   "properties": {"n": i, "poison": i == 0}})
        })
        .collect();
    n.batch(batch).await;
    let got = eventually("every action, the refused one dead", || {
        let g = rx.at("/picky");
        let poison = g
            .iter()
            .filter(|g| g.body["event"]["properties"]["poison"] == true)
            .count();
        (poison == 3 && g.len() == 399 + 3).then_some(g)
    })
    .await;
    // The other 399 arrived while the refused one waited out its backoff (3 attempts,
    // 1.5 s apart), not after it became a dead letter.
    let last_ok = got
        .iter()
        .rposition(|g| g.body["event"]["properties"]["poison"] == false)
        .unwrap();
    let last_poison = got
        .iter()
        .rposition(|g| g.body["event"]["properties"]["poison"] == true)
        .unwrap();
    let poisons: Vec<usize> = got
        .iter()
        .enumerate()
        .filter(|(_, g)| g.body["event"]["properties"]["poison"] == true)
        .map(|(i, _)| i)
        .collect();
    assert!(
        last_ok < last_poison,
        "the queue waited for the retries: {last_ok} {poisons:?}"
    );
    let mut ns: Vec<u64> = got
        .iter()
        .filter_map(|g| g.body["event"]["properties"]["n"].as_u64())
        .filter(|n| *n > 0)
        .collect();
    ns.sort_unstable();
    assert_eq!(ns, (1..400).collect::<Vec<u64>>(), "each once");
    let d = n.state.delivery.as_ref().unwrap();
    eventually("the dead letter", || {
        (d.dead_letters("picky").ok()?.len() == 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_crossing_the_score_threshold_goes_to_sales_once() {
    let (rx, url) = Receiver::start().await;
    let extra = format!(
        r#"
[[destinations]]
name = "sales"
kind = "crm"
url = "{url}/crm"

[[scores]]
name = "lead"
half_life = "7d"
signals = [
  {{ name = "pricing page", event = "Page Viewed", where = {{ path = "/pricing" }}, points = 10 }},
  {{ name = "third pricing visit in 7 days", event = "Page Viewed", where = {{ path = "/pricing" }}, points = 20, nth = 3, within = "7d" }},
  {{ event = "Whitepaper Downloaded", points = 15 }},
  {{ event = "Email Unsubscribed", points = -30 }},
]
thresholds = [{{ name = "Hot Lead", at = 80, hysteresis = 10 }}]

[[triggers]]
name = "Hot lead to sales"
when = {{ score_crossed = "Hot Lead" }}
then = ["sales"]
"#
    );
    let mut n = Niyet::start(&extra).await;
    // The live stream of crossings, read from the start.
    let mut stream = n
        .http
        .get(format!("{}/v1/stream/scores?score=lead", n.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let live = Arc::new(Mutex::new(String::new()));
    let sink = live.clone();
    tokio::spawn(async move {
        while let Ok(Some(c)) = stream.chunk().await {
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&c));
        }
    });
    let crossings = |live: &Mutex<String>| -> Vec<Value> {
        let text = live.lock().unwrap().clone();
        text.split("\n\n")
            .filter(|e| e.contains("event: score crossed"))
            .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    };
    let unknown = n
        .http
        .get(format!("{}/v1/stream/scores?score=nope", n.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let page = |n: &Niyet, path: &str| {
        let body = json!({"userId": "lead", "name": "Pricing", "properties": {"path": path}});
        n.http
            .post(format!("{}/v1/page", n.url))
            .basic_auth(KEY, Some(""))
            .json(&body)
            .send()
    };
    for _ in 0..3 {
        assert_eq!(page(&n, "/pricing").await.unwrap().status(), 200);
    }
    assert_eq!(page(&n, "/blog").await.unwrap().status(), 200);
    n.processed().await;
    // 3 × 10 + 20 for the third visit = 50: not hot yet.
    let id = n.profile_id("lead");
    let s = n.get(&format!("/v1/profiles/{id}/scores")).await;
    assert_eq!(s["scores"][0]["value"], 50.0, "{s}");
    n.track(
        "lead",
        "Whitepaper Downloaded",
        json!({}),
        json!({"email": "cto@acme.example", "company": "Acme"}),
    )
    .await;
    assert!(rx.at("/crm").is_empty());
    n.track("lead", "Whitepaper Downloaded", json!({}), json!({}))
        .await;
    // 80: hot. Sales hears at once, with who the lead is.
    let got = eventually("the hand-off", || rx.at("/crm").pop()).await;
    assert_eq!(got.body["type"], "lead");
    assert_eq!(got.body["lead"]["company"], "Acme");
    assert_eq!(got.body["trigger"], "Hot lead to sales");
    let s = n.get(&format!("/v1/profiles/{id}/scores")).await;
    assert_eq!(s["scores"][0]["above"][0], "Hot Lead", "{s}");
    // Why it is hot: each signal with its points, largest first.
    let why: Vec<(String, f64)> = s["scores"][0]["signals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["signal"].as_str().unwrap().to_string(),
                x["points"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(why.len(), 3, "{s}");
    assert!(why.contains(&("Whitepaper Downloaded".into(), 30.0)), "{s}");
    assert!(why.contains(&("pricing page".into(), 30.0)), "{s}");
    assert_eq!(
        why[2],
        ("third pricing visit in 7 days".into(), 20.0),
        "{s}"
    );
    // More interest while hot is no new crossing.
    n.track("lead", "Whitepaper Downloaded", json!({}), json!({}))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.at("/crm").len(), 1);
    // Three weeks of silence: 95 halves three times, below 70 (the crossing down is
    // recorded at its instant), then new interest makes the lead hot again.
    n.at(T0 + 21 * 86_400_000).await;
    let s = n.get(&format!("/v1/profiles/{id}/scores")).await;
    assert!(
        s["scores"][0]["above"].as_array().unwrap().is_empty(),
        "{s}"
    );
    let down = &s["scores"][0]["crossings"][1];
    assert_eq!(down["direction"], "down", "{s}");
    // 95 · 2^(-t/7d) = 70 at t = 7d · log2(95/70) ≈ 3.08 days.
    let expect = T0 + (7.0 * 86_400_000.0 * (95.0f64 / 70.0).log2()) as i64;
    assert!((down["at_ms"].as_i64().unwrap() - expect).abs() < 5, "{s}");
    for _ in 0..6 {
        n.track("lead", "Whitepaper Downloaded", json!({}), json!({}))
            .await;
    }
    eventually("the second hand-off", || {
        (rx.at("/crm").len() == 2).then_some(())
    })
    .await;
    // The stream saw each crossing as it happened: up, down at its instant, up again.
    let seen = eventually("three crossings on the stream", || {
        let c = crossings(&live);
        (c.len() >= 3).then_some(c)
    })
    .await;
    let dirs: Vec<&str> = seen
        .iter()
        .map(|c| c["direction"].as_str().unwrap())
        .collect();
    assert_eq!(dirs, ["up", "down", "up"], "{seen:?}");
    assert!(seen.iter().all(|c| c["profile"] == id.as_str()
        && c["threshold"] == "Hot Lead"
        && c["score"] == "lead"));
    assert_eq!(
        seen[1]["time"],
        niyet_model::format_rfc3339_millis(down["at_ms"].as_i64().unwrap())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offer_follows_stock_and_history() {
    let (rx, url) = Receiver::start().await;
    let extra = format!(
        r#"
[[destinations]]
name = "offers"
kind = "webhook"
url = "{url}/offers"

[[triggers]]
name = "Cart abandoned"
when = {{ event = "Product Added" }}
wait = "30m"
unless = ["Order Completed"]
then = ["offers"]
offer = true
"#
    );
    let mut n = Niyet::start(&extra).await;
    let r = n
        .http
        .post(format!("{}/v1/catalogue", n.url))
        .bearer_auth(ADMIN)
        .json(&json!([
            {"sku": "SHOE-1", "price": 900.0, "category": "shoes", "stock": 40},
            {"sku": "SHOE-2", "price": 950.0, "category": "shoes", "stock": 40},
            {"sku": "SHOE-3", "price": 880.0, "category": "shoes", "stock": 0},
            {"sku": "SHOE-4", "price": 300.0, "category": "shoes", "stock": 9},
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bad = n
        .http
        .post(format!("{}/v1/catalogue", n.url))
        .bearer_auth(ADMIN)
        .json(&json!([{"sku": "", "price": 1.0}]))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    // The stock feed sells SHOE-2 down to 2 units, through the event stream.
    n.track(
        "erp",
        "Inventory Updated",
        json!({"sku": "SHOE-2", "stock": 2}),
        json!({}),
    )
    .await;
    let shoe2 = n.get("/v1/catalogue/SHOE-2").await;
    assert_eq!(
        shoe2,
        json!({"sku": "SHOE-2", "price": 950.0, "category": "shoes", "stock": 2})
    );
    // A customer who buys with coupons; one who never does; one who spends a lot; and
    // the same cart items.
    for (u, coupon, revenue) in [
        ("hunter", Some("SAVE10"), 100.0),
        ("loyal", None, 100.0),
        ("vip", None, 3000.0),
    ] {
        for k in 0..2 {
            let mut props = json!({"revenue": revenue, "order_id": format!("{u}-{k}")});
            if let Some(c) = coupon {
                props["coupon"] = json!(c);
            }
            n.track(u, "Order Completed", props, json!({})).await;
        }
    }
    // A lifetime-value model is published: the valuable customer is worth more than the
    // `valuable_customer` line (5,000 by default) at the time the offer is made, the
    // others far less.
    let model = niyet_engine::segments::ClvModel {
        version: 1,
        horizon_days: 30.0,
        bgnbd: niyet_analytics::clv::BgNbd {
            r: 2.0,
            alpha: 10.0,
            a: 0.5,
            b: 5.0,
            log_likelihood: 0.0,
            customers: 3,
        },
        gamma_gamma: None,
    };
    let st = n.state.clone();
    let m = model.clone();
    tokio::task::spawn_blocking(move || st.pipeline.publish_clv(&m, T0, Duration::from_secs(10)))
        .await
        .unwrap()
        .unwrap();
    let offer_at = T0 + MIN + 30 * MIN;
    let clv = |user: &str| {
        let id = n.profile_id(user).parse().unwrap();
        n.state
            .pipeline
            .query()
            .lifetime_value(id, offer_at)
            .unwrap()
    };
    let (vip_clv, loyal_clv) = (clv("vip"), clv("loyal"));
    assert!(
        vip_clv > 5_000.0 && loyal_clv < 5_000.0,
        "{vip_clv} {loyal_clv}"
    );
    // The same prediction as the model's own, from the two orders at T0.
    let h = niyet_analytics::clv::History {
        frequency: 1,
        recency: 0.0,
        age: (offer_at - T0) as f64 / 86_400_000.0,
    };
    let want = 3000.0 * model.bgnbd.expected_purchases(&h, 30.0);
    assert!((vip_clv - want).abs() < 1e-6 * want, "{vip_clv} vs {want}");

    n.clock.set(T0 + MIN);
    n.track(
        "hunter",
        "Product Added",
        json!({"sku": "SHOE-1"}),
        json!({}),
    )
    .await;
    n.track("vip", "Product Added", json!({"sku": "SHOE-1"}), json!({}))
        .await;
    n.track(
        "loyal",
        "Product Added",
        json!({"sku": "SHOE-1"}),
        json!({}),
    )
    .await;
    n.track(
        "scarce",
        "Product Added",
        json!({"sku": "SHOE-2"}),
        json!({}),
    )
    .await;
    n.track("gone", "Product Added", json!({"sku": "SHOE-3"}), json!({}))
        .await;
    n.at(T0 + 32 * MIN).await;
    let got = eventually("five offers", || {
        let g = rx.at("/offers");
        (g.len() == 5).then_some(g)
    })
    .await;
    let of = |user: &str| {
        let id = n.profile_id(user);
        got.iter()
            .find(|g| g.body["profile"]["id"] == id.as_str())
            .map(|g| g.body.clone())
            .unwrap()
    };
    let hunter = of("hunter");
    assert_eq!(hunter["offer"]["kind"], "discount", "{hunter}");
    assert_eq!(
        hunter["offer"]["code"],
        niyet_actions::offer::coupon_code("NIYET", hunter["id"].as_str().unwrap())
    );
    assert!(hunter["offer"]["reasons"][0]
        .as_str()
        .unwrap()
        .contains("2 of 2 orders"));
    // 900 in the cart, below the free-shipping line of 500? No: nothing for the loyal one.
    let loyal = of("loyal");
    assert_eq!(loyal["offer"]["kind"], "nothing", "{loyal}");
    // The same cart for the valuable customer: free shipping, for the predicted value.
    let vip = of("vip");
    assert_eq!(vip["offer"]["kind"], "free_shipping", "{vip}");
    assert_eq!(
        vip["offer"]["reasons"][0],
        format!("valuable customer (lifetime value {vip_clv:.0})"),
        "{vip}"
    );
    assert_eq!(
        vip["acted_at"],
        niyet_model::format_rfc3339_millis(offer_at)
    );
    let scarce = of("scarce");
    assert_eq!(scarce["offer"]["kind"], "nothing", "{scarce}");
    assert!(scarce["offer"]["reasons"][0]
        .as_str()
        .unwrap()
        .contains("only 2 left"));
    let gone = of("gone");
    assert_eq!(gone["offer"]["kind"], "alternative", "{gone}");
    // The in-stock shoe closest in price to the 880 one.
    assert_eq!(gone["offer"]["sku"], "SHOE-1", "{gone}");
    assert_eq!(gone["offer"]["instead_of"], "SHOE-3");
    // Codes are single-use: each action its own.
    assert_ne!(hunter["id"], loyal["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_offer_waits_for_email_consent() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = Smtp::start(dir.path());
    let extra = format!(
        r#"
[[destinations]]
name = "mail"
kind = "email"
smtp = "{smtp}"
from = "kampanya@niyet.example"
subject = "Sepetin seni bekliyor {{{{profile.traits.first_name}}}}"
template = "Offer: {{{{offer.kind}}}} for {{{{profile.id}}}}"

[[triggers]]
name = "Cart abandoned"
when = {{ event = "Product Added" }}
wait = "30m"
unless = ["Order Completed"]
then = ["mail"]
offer = true
"#,
        smtp = smtp.addr
    );
    let mut n = Niyet::start(&extra).await;
    // E-mail is opt-in: with nothing said, and then with consent denied, nothing leaves.
    n.track(
        "deniz",
        "Product Added",
        json!({"sku": "S1", "price": 100}),
        json!({"email": "deniz@example.com", "first_name": "Deniz", "consent": {"email": "denied"}}),
    )
    .await;
    n.at(T0 + 31 * MIN).await;
    let id = n.profile_id("deniz");
    let blocked = eventually("the blocked e-mail", || {
        let d = n.state.delivery.as_ref().unwrap();
        d.recent(Some(&id), 10)
            .into_iter()
            .find(|s| s.destination == "mail")
    })
    .await;
    assert_eq!(blocked.status, "blocked");
    assert!(blocked.detail.contains("email"), "{}", blocked.detail);
    // The block is on the profile, with the consent that caused it.
    let profile = n.get(&format!("/v1/profiles/{id}")).await;
    assert_eq!(profile["consent"]["email"]["status"], "denied", "{profile}");
    assert_eq!(profile["consent"]["email"]["allowed"], false);
    let blocks = profile["consent_blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 1, "{profile}");
    assert_eq!(blocks[0]["trigger"], "Cart abandoned");
    assert_eq!(blocks[0]["purpose"], "email");
    assert_eq!(blocks[0]["consent"], "denied");
    assert!(!smtp.received().contains("Deniz"));

    // Consent granted over the admin API (a Consent Updated event with its proof).
    let r = n
        .http
        .post(format!("{}/v1/profiles/{id}/consent", n.url))
        .bearer_auth(ADMIN)
        .json(&json!({"email": "granted"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let c: Value = r.json().await.unwrap();
    assert_eq!(c["purposes"]["email"]["status"], "granted", "{c}");
    assert_eq!(c["purposes"]["email"]["source"], "admin");
    assert!(c["purposes"]["email"]["proof"]["offset"].is_u64(), "{c}");
    let history: Vec<&str> = c["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["purpose"] == "email")
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["denied", "granted"]);
    assert_eq!(c["blocked"].as_array().unwrap().len(), 1);
    // The next abandoned cart is mailed, with its offer.
    n.clock.set(T0 + 40 * MIN);
    n.track(
        "deniz",
        "Product Added",
        json!({"sku": "S2", "price": 80}),
        json!({}),
    )
    .await;
    n.at(T0 + 71 * MIN).await;
    let mail = eventually("the e-mail", || {
        let got = smtp.received();
        got.contains("Deniz").then_some(got)
    })
    .await;
    assert!(mail.contains("Offer: "), "{mail}");
    assert!(mail.contains(&format!("for {id}")), "{mail}");
    let sent: Vec<_> = n
        .state
        .delivery
        .as_ref()
        .unwrap()
        .recent(Some(&id), 10)
        .into_iter()
        .filter(|s| s.destination == "mail")
        .map(|s| s.status)
        .collect();
    assert_eq!(sent, ["sent", "blocked"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_hold_an_offer_until_morning_in_the_customers_time_zone() {
    const H: i64 = 60 * MIN;
    let (rx, url) = Receiver::start().await;
    let mut n = Niyet::start(&format!(
        r#"
[[destinations]]
name = "offers"
kind = "webhook"
url = "{url}/offers"
backoff_ms = 20

[[triggers]]
name = "Cart abandoned"
when = {{ event = "Product Added" }}
wait = "30m"
unless = ["Order Completed"]
then = ["offers"]
quiet_hours = {{ from = "21:00", to = "09:00", timezone = "UTC" }}
"#
    ))
    .await;
    // 20:00 UTC on 1 January: 23:00 in Istanbul (UTC+3), 20:00 for a profile without a
    // time zone (the trigger's default, UTC).
    n.clock.set(T0 + 20 * H);
    n.track(
        "ayse",
        "Product Added",
        json!({"sku": "S1"}),
        json!({"timezone": "Europe/Istanbul"}),
    )
    .await;
    n.track("can", "Product Added", json!({"sku": "S2"}), json!({}))
        .await;
    n.track(
        "deniz",
        "Product Added",
        json!({"sku": "S3"}),
        json!({"timezone": "Europe/Istanbul"}),
    )
    .await;

    // 20:30 UTC: Can's offer leaves (20:30 is not quiet in UTC); Ayşe's and Deniz's are
    // decided (23:30 local) and held back.
    n.at(T0 + 20 * H + 30 * MIN + 10).await;
    let can = eventually("Can's offer", || rx.at("/offers").pop()).await;
    assert_eq!(can.body["profile"]["id"], n.profile_id("can"));
    // Deniz orders at 02:00 local: the held offer is cancelled like a running wait.
    n.clock.set(T0 + 23 * H);
    n.track(
        "deniz",
        "Order Completed",
        json!({"revenue": 50, "order_id": "o-9"}),
        json!({}),
    )
    .await;
    // Nothing more until 09:00 in Istanbul, 06:00 UTC.
    n.at(T0 + 30 * H - 1_000).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.at("/offers").len(), 1, "sent in quiet hours");
    n.at(T0 + 30 * H + 10).await;
    let ayse = eventually("Ayşe's offer", || {
        rx.at("/offers")
            .into_iter()
            .find(|g| g.body["profile"]["id"] == n.profile_id("ayse"))
    })
    .await;
    assert_eq!(ayse.body["acted_at"], "2026-01-02T06:00:00.000Z");
    assert_eq!(ayse.body["event"]["properties"]["sku"], "S1");
    n.at(T0 + 40 * H).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let all = rx.at("/offers");
    assert_eq!(all.len(), 2, "{all:?}");
    // Deniz's was never sent; one key per action.
    assert!(all
        .iter()
        .all(|g| g.body["profile"]["id"] != n.profile_id("deniz")));
    assert_ne!(
        all[0].headers["idempotency-key"],
        all[1].headers["idempotency-key"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_on_a_segment_defined_over_the_api() {
    let (rx, url) = Receiver::start().await;
    let mut n = Niyet::start(&format!(
        r#"
[[destinations]]
name = "crm"
kind = "webhook"
url = "{url}/crm"
backoff_ms = 20

[[triggers]]
name = "Big spender welcome"
when = {{ segment_entered = "Big spenders" }}
then = ["crm"]
"#
    ))
    .await;
    let t = n.get("/v1/triggers").await;
    assert_eq!(
        t["triggers"][0]["undefined_segments"],
        json!(["Big spenders"]),
        "{t}"
    );
    let r = n
        .http
        .post(format!("{}/v1/segments", n.url))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "Big spenders",
                      "rule": "sum(Order Completed.revenue in 365d) > 500"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let t = n.get("/v1/triggers").await;
    assert_eq!(t["triggers"][0]["undefined_segments"], json!([]), "{t}");
    n.track(
        "ece",
        "Order Completed",
        json!({"revenue": 300, "order_id": "o-1"}),
        json!({}),
    )
    .await;
    n.track(
        "ece",
        "Order Completed",
        json!({"revenue": 400, "order_id": "o-2"}),
        json!({}),
    )
    .await;
    let got = eventually("the CRM hand-off", || rx.at("/crm").pop()).await;
    assert_eq!(got.body["trigger"], "Big spender welcome");
    assert_eq!(got.body["profile"]["id"], n.profile_id("ece"));
    // Started by the second order (the entry happened while processing it).
    assert_eq!(got.body["event"]["properties"]["order_id"], "o-2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_read_scores_and_follow_their_decay_to_the_millisecond() {
    const DAY: i64 = 86_400_000;
    let mut n = Niyet::start(
        r#"
[[scores]]
name = "lead"
half_life = "7d"
signals = [{ event = "Pricing Viewed", points = 10 }]

[[segments]]
name = "Warm leads"
rule = 'score("lead") >= 50 and score("lead") < 100'
"#,
    )
    .await;
    let id_of = |n: &Niyet| n.profile_id("lead");
    for _ in 0..5 {
        n.track("lead", "Pricing Viewed", json!({}), json!({}))
            .await;
    }
    let segs = |n: &Niyet| {
        let id = id_of(n).parse().unwrap();
        n.state.pipeline.query().profile_segments(id).unwrap()
    };
    // 50 points: warm, the moment the fifth signal arrives.
    let s = segs(&n);
    assert_eq!(s["segments"][0]["segment"], "Warm leads", "{s}");
    // One more at day 1: 50 · 2^(-1/7) + 10 = 55.1… stays warm, and decay takes it
    // below 50 at day 1 + 7 · log2(55.1…/50) days, with no event.
    n.clock.set(T0 + DAY);
    n.track("lead", "Pricing Viewed", json!({}), json!({}))
        .await;
    let v = 50.0 * 0.5f64.powf(1.0 / 7.0) + 10.0;
    let leave = T0 + DAY + (7.0 * DAY as f64 * (v / 50.0).log2()).floor() as i64 + 1;
    n.at(leave - 2).await;
    assert_eq!(
        segs(&n)["segments"].as_array().unwrap().len(),
        1,
        "left early"
    );
    n.at(leave + 5).await;
    let s = segs(&n);
    assert!(s["segments"].as_array().unwrap().is_empty(), "{s}");
    let exited = s["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["type"] == "segment exited")
        .unwrap()
        .clone();
    assert_eq!(
        exited["time"],
        niyet_model::format_rfc3339_millis(leave),
        "{s}"
    );
    // Enough new interest passes the upper bound: out again, by points this time.
    n.clock.set(leave + 1_000);
    for _ in 0..6 {
        n.track("lead", "Pricing Viewed", json!({}), json!({}))
            .await;
    }
    // 49.99… + 10 enters, the sixth (≈ 100) leaves through the upper bound.
    let s = segs(&n);
    let kinds: Vec<&str> = s["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "segment exited",
            "segment entered",
            "segment exited",
            "segment entered"
        ],
        "{s}"
    );
    // A rule naming a score that does not exist is refused.
    let r = n
        .http
        .post(format!("{}/v1/segments", n.url))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "Nope", "rule": "score(\"nosuch\") > 1"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no score is named `nosuch`"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_a_long_stretch_loses_nothing() {
    // A port nobody listens on: connections are refused until the receiver comes up.
    let (held, down_addr) = Receiver::down();
    let (fast, fast_url) = Receiver::start().await;
    let mut n = Niyet::start(&format!(
        r#"
[[destinations]]
name = "patient"
kind = "webhook"
url = "http://{down_addr}/hook"
backoff_ms = 20
max_backoff_ms = 150
max_attempts = 10000
timeout_ms = 500

[[destinations]]
name = "brief"
kind = "webhook"
url = "http://{down_addr}/hook"
backoff_ms = 20
max_backoff_ms = 50
max_attempts = 3

[[destinations]]
name = "fast"
kind = "webhook"
url = "{fast_url}/fast"

[[triggers]]
name = "Signed up"
when = {{ event = "Signed Up" }}
then = ["patient", "brief", "fast"]
"#
    ))
    .await;
    let users: Vec<String> = (0..20).map(|i| format!("u{i}")).collect();
    let started = Instant::now();
    for u in &users {
        n.track(u, "Signed Up", json!({}), json!({})).await;
    }
    // The working destination is served at once, whatever the others do.
    eventually("the fast destination", || {
        (fast.at("/fast").len() == 20).then_some(())
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    // Three seconds of outage: dozens of refused attempts per action.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = n.get("/v1/destinations").await;
    let dest = |name: &str| {
        stats["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .unwrap()
            .clone()
    };
    let patient = dest("patient");
    assert_eq!(patient["sent"], 0, "{stats}");
    assert_eq!(patient["dead_letters"], 0, "{stats}");
    assert!(patient["retries"].as_u64().unwrap() >= 20, "{stats}");
    assert!(patient["queue_depth"].as_u64().unwrap() > 0, "{stats}");
    // The brief one gave up after three attempts each: dead letters, kept.
    let dead = eventually("20 dead letters", || {
        let d = n.state.delivery.as_ref().unwrap();
        let l = d.dead_letters("brief").unwrap();
        (l.len() == 20).then_some(l)
    })
    .await;
    assert_eq!(dead.len(), 20);

    // The receiver comes back.
    let back = Receiver::start_at(held);
    eventually("every action after the outage", || {
        (back.at("/hook").len() >= 20).then_some(())
    })
    .await;
    // Replaying the dead letters sends the brief destination's actions too.
    let r = n
        .http
        .post(format!("{}/v1/destinations/brief/dead/replay", n.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    eventually("the replayed dead letters", || {
        (back.at("/hook").len() >= 40).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all = back.at("/hook");
    assert_eq!(
        all.len(),
        40,
        "each action once per destination: {}",
        all.len()
    );
    // Every profile's action reached both destinations, with one key per destination.
    let mut keys = std::collections::BTreeMap::<(String, String), Vec<String>>::new();
    for g in &all {
        let k = g.headers["idempotency-key"].to_str().unwrap().to_string();
        keys.entry((
            g.body["profile"]["id"].as_str().unwrap().to_string(),
            g.body["destination"].as_str().unwrap().to_string(),
        ))
        .or_default()
        .push(k);
    }
    assert_eq!(keys.len(), 40, "{keys:?}");
    assert!(keys.values().all(|k| k.len() == 1));
    for u in &users {
        let id = n.profile_id(u);
        assert!(keys.contains_key(&(id.clone(), "patient".into())), "{u}");
        assert!(keys.contains_key(&(id, "brief".into())), "{u}");
    }
    let stats = n.get("/v1/destinations").await;
    let patient = stats["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "patient")
        .unwrap()
        .clone();
    assert_eq!(patient["sent"], 20, "{stats}");
    assert_eq!(patient["queue_depth"], 0, "{stats}");
    // The working destination got each of its actions once (sent straight away, the
    // outbox record passed over), with one key each.
    let fast_got = fast.at("/fast");
    assert_eq!(fast_got.len(), 20);
    let fast_keys: std::collections::BTreeSet<String> = fast_got
        .iter()
        .map(|g| g.headers["idempotency-key"].to_str().unwrap().to_string())
        .collect();
    assert_eq!(fast_keys.len(), 20);
    assert_eq!(dest("fast")["sent"], 20);
}

/// A private CA and a certificate for 127.0.0.1 it signed, made with `openssl`:
/// (ca.pem, cert.pem, key.pem).
fn private_ca(dir: &std::path::Path) -> [std::path::PathBuf; 3] {
    let ext = "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n";
    std::fs::write(dir.join("ext.cnf"), ext).unwrap();
    for step in [
        "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=Test-CA -keyout ca.key -out ca.pem",
        "req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout key.pem -out req.csr",
        "x509 -req -days 1 -set_serial 2 -in req.csr -CA ca.pem -CAkey ca.key -extfile ext.cnf -out cert.pem",
    ] {
        let made = std::process::Command::new("openssl")
            .args(step.split(' '))
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(made.status.success(), "{step}: {}", String::from_utf8_lossy(&made.stderr));
    }
    ["ca.pem", "cert.pem", "key.pem"].map(|f| dir.join(f))
}

/// TLS in front of the plain receiver at `plain` (`host:port`): each connection's
/// handshake with `cert`, then its bytes both ways. Returns the `https://` address.
async fn tls_front(cert: &std::path::Path, key: &std::path::Path, plain: &str) -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let plain = plain.to_string();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (acceptor, plain) = (acceptor.clone(), plain.clone());
            tokio::spawn(async move {
                // A client that does not trust the certificate ends here.
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let mut back = tokio::net::TcpStream::connect(&plain).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut back).await;
            });
        }
    });
    format!("https://{addr}")
}

/// An HTTPS receiver whose certificate a private CA signed gets its signed actions when
/// the destination trusts that CA (`ca_file`); a destination that does not trust it sends
/// nothing, and its action becomes a dead letter saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_receivers_are_reached_only_with_a_trusted_certificate() {
    let (rx, url) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let [ca, cert, key] = private_ca(dir.path());
    let https = tls_front(&cert, &key, url.trim_start_matches("http://")).await;
    let extra = format!(
        r#"
[[destinations]]
name = "trusted"
kind = "webhook"
url = "{https}/secure"
secret = "s"
ca_file = "{ca}"

[[destinations]]
name = "untrusted"
kind = "webhook"
url = "{https}/untrusted"
max_attempts = 1

[[triggers]]
name = "Ordered"
when = {{ event = "Order Completed" }}
then = ["trusted", "untrusted"]
"#,
        ca = ca.display()
    );
    let mut n = Niyet::start(&extra).await;
    n.track("tls1", "Order Completed", json!({"revenue": 7}), json!({}))
        .await;
    let got = eventually("the HTTPS delivery", || {
        let g = rx.at("/secure");
        (!g.is_empty()).then_some(g)
    })
    .await;
    assert_eq!(got.len(), 1);
    let g = &got[0];
    assert_eq!(g.body["event"]["event"], "Order Completed", "{}", g.body);
    let ts = g.headers["x-niyet-timestamp"].to_str().unwrap();
    let expected = niyet_actions::payload::signature(b"s", ts.parse().unwrap(), &g.raw);
    assert_eq!(
        g.headers["x-niyet-signature"].to_str().unwrap(),
        format!("v1={expected}")
    );
    assert!(g.headers.contains_key("idempotency-key"));
    let d = n.state.delivery.as_ref().unwrap().clone();
    let dead = eventually("a dead letter for the untrusted one", || {
        let v = d.dead_letters("untrusted").ok()?;
        (v.len() == 1).then_some(v)
    })
    .await;
    let why = dead[0].to_string();
    assert!(
        why.to_lowercase().contains("certificate"),
        "the dead letter says why: {why}"
    );
    assert!(
        rx.at("/untrusted").is_empty(),
        "nothing got past the handshake"
    );
}

/// The Python with aiosmtpd: `NIYET_TEST_PYTHON`, or the venv `scripts/sdk-setup.sh` makes.
fn python_with_aiosmtpd() -> std::path::PathBuf {
    let p = std::env::var_os("NIYET_TEST_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv-sdk/bin/python")
        });
    let ok = std::process::Command::new(&p)
        .args(["-c", "import aiosmtpd"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{} cannot import aiosmtpd: run `bash scripts/sdk-setup.sh` (or set NIYET_TEST_PYTHON)",
        p.display()
    );
    p
}

/// E-mail to a server that takes mail only after STARTTLS and AUTH: sent when the
/// destination upgrades, trusts the server's CA and logs in; a wrong password is a dead
/// letter with the server's answer, and nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_mail_goes_over_starttls_with_a_login() {
    let dir = tempfile::tempdir().unwrap();
    let [ca, cert, key] = private_ca(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = dir.path().join("mail.out");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_tls_server.py");
    let mut server = std::process::Command::new(python_with_aiosmtpd())
        .arg(&script)
        .arg(port.to_string())
        .args([&cert, &key])
        .args(["niyet", "s3cret"])
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the SMTP server");
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.as_mut().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready.trim(), "ready");
    let extra = format!(
        r#"
[[destinations]]
name = "mail"
kind = "email"
smtp = "127.0.0.1:{port}"
smtp_tls = "starttls"
ca_file = "{ca}"
username = "niyet"
password = "s3cret"
from = "kampanya@niyet.example"
subject = "Hello {{{{profile.traits.first_name}}}}"
template = "Your code: WELCOME"

[[destinations]]
name = "wrong"
kind = "email"
smtp = "127.0.0.1:{port}"
smtp_tls = "starttls"
ca_file = "{ca}"
username = "niyet"
password = "guess"
from = "kampanya@niyet.example"
subject = "Not sent"
template = "-"

[[triggers]]
name = "Signed up"
when = {{ event = "Signed Up" }}
then = ["mail", "wrong"]
"#,
        ca = ca.display()
    );
    let mut n = Niyet::start(&extra).await;
    n.track(
        "selin",
        "Signed Up",
        json!({}),
        json!({"email": "selin@example.com", "first_name": "Selin", "consent": {"email": true}}),
    )
    .await;
    let got = eventually("the e-mail", || {
        let s = std::fs::read_to_string(&out).unwrap_or_default();
        s.contains("Hello Selin").then_some(s)
    })
    .await;
    assert!(got.contains("LOGIN niyet TLS True"), "{got}");
    assert!(got.contains("To: <selin@example.com>"), "{got}");
    let d = n.state.delivery.as_ref().unwrap().clone();
    let dead = eventually("a dead letter for the wrong password", || {
        let v = d.dead_letters("wrong").ok()?;
        (v.len() == 1).then_some(v)
    })
    .await;
    let why = dead[0].to_string();
    assert!(why.contains("535"), "the server's answer: {why}");
    let _ = server.kill();
    let _ = server.wait();
    let s = std::fs::read_to_string(&out).unwrap();
    assert!(!s.contains("Not sent"), "{s}");
    assert_eq!(s.matches("\n--\n").count(), 1, "one message: {s}");
}
