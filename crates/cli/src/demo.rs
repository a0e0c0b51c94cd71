//! `niyet demo`: the server on embedded storage, fed by a synthetic shop through the
//! public HTTP API, with a live summary; an intent score and three triggers act into the
//! shop's own webhook receiver, which runs in this process and checks every signature.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use niyet_model::{Clock, SystemClock};
use niyet_server::{Config, Server};

use crate::client::IngestClient;
use crate::shop::Shop;

/// Arguments of `niyet demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address to listen on (another free port is used if it is taken).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Data directory of the demo.
    #[arg(long, default_value = "./niyet-demo-data")]
    data_dir: PathBuf,
    /// Visitors per second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration: Option<u64>,
    /// Seed of the synthetic traffic (default: 42 on an empty data directory; on one
    /// with events, a seed taken from how many there are, so a second run brings new
    /// visitors instead of the first run's again, which would be dropped as duplicates).
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Default)]
struct Sent {
    visits: AtomicU64,
    messages: AtomicU64,
    failed_requests: AtomicU64,
}

/// The shop's marketing endpoint, as a demo stands it up: what it was sent, by trigger.
#[derive(Default)]
struct Received {
    by_trigger: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    bad_signatures: AtomicU64,
}

const DEMO_SECRET: &str = "demo-webhook-secret";

/// What the demo acts on: a purchase-intent score with a "Hot shopper" threshold, cart
/// abandonment with an offer (after 20 s here; 30 min in a real shop), hot shoppers and
/// order feedback, all into the receiver at `hook`.
fn demo_config(hook: &str) -> String {
    format!(
        r#"
[[scores]]
name = "purchase intent"
half_life = "1d"
signals = [
  {{ event = "Product Viewed", points = 5 }},
  {{ event = "Product Added", points = 15 }},
  {{ event = "Checkout Started", points = 20 }},
  {{ event = "Order Completed", points = -40 }},
]
thresholds = [{{ name = "Hot shopper", at = 40, hysteresis = 10 }}]

[[triggers]]
name = "Cart abandoned"
when = {{ event = "Product Added" }}
wait = "20s"
unless = ["Order Completed"]
then = ["shop"]
offer = true
holdout_percent = 10

[[triggers]]
name = "Hot shopper"
when = {{ score_crossed = "Hot shopper" }}
then = ["shop"]

[[triggers]]
name = "Order feedback"
when = {{ event = "Order Completed" }}
then = ["shop"]

[[destinations]]
name = "shop"
kind = "webhook"
url = "{hook}"
secret = "{DEMO_SECRET}"
"#
    )
}

/// Starts the receiver; returns its address.
async fn receiver(got: Arc<Received>) -> anyhow::Result<String> {
    let app = axum::Router::new().route(
        "/hooks/niyet",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let got = got.clone();
                async move {
                    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
                    let signed = header("x-niyet-timestamp")
                        .and_then(|t| t.parse::<i64>().ok())
                        .zip(header("x-niyet-signature"))
                        .is_some_and(|(ts, sig)| {
                            let want = niyet_actions::payload::signature(
                                DEMO_SECRET.as_bytes(),
                                ts,
                                &body,
                            );
                            sig.strip_prefix("v1=") == Some(want.as_str())
                        });
                    if !signed {
                        got.bad_signatures.fetch_add(1, Ordering::Relaxed);
                        return axum::http::StatusCode::UNAUTHORIZED;
                    }
                    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let trigger = doc["trigger"].as_str().unwrap_or("?").to_string();
                    if let Ok(mut m) = got.by_trigger.lock() {
                        *m.entry(trigger).or_default() += 1;
                    }
                    axum::http::StatusCode::OK
                }
            },
        ),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hooks/niyet", l.local_addr()?);
    tokio::spawn(async move { axum::serve(l, app).await });
    Ok(url)
}

pub async fn run(a: DemoArgs) -> anyhow::Result<()> {
    let got = Arc::new(Received::default());
    let hook = receiver(got.clone()).await?;
    let acting = Config::from_toml(&demo_config(&hook), "the demo's configuration")?;
    let mk = |listen| Config {
        listen,
        data_dir: a.data_dir.clone(),
        ..acting.clone()
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let server = match Server::bind(mk(a.listen), clock.clone()).await {
        Ok(s) => s,
        Err(niyet_server::ServerError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::AddrInUse =>
        {
            eprintln!("{} is taken; using a free port instead", a.listen);
            Server::bind(mk(SocketAddr::from(([127, 0, 0, 1], 0))), clock.clone()).await?
        }
        Err(e) => return Err(e.into()),
    };
    let addr = server.local_addr()?;
    let state = server.state();
    let token = server.admin_token.clone();
    let (_, write_key) = server
        .write_keys
        .first()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no write key"))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (server_stop_tx, server_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server_task = tokio::spawn(server.run(async move {
        let _ = server_stop_rx.await;
    }));

    let base = format!("http://{addr}");
    println!("Niyet demo — a synthetic shop is sending traffic to a real server.\n");
    println!("  status page   {base}/");
    println!("  metrics       {base}/metrics");
    println!(
        "  latest events curl -s -H 'Authorization: Bearer {token}' '{base}/v1/events?limit=5'"
    );
    println!("  orders only   curl -s -H 'Authorization: Bearer {token}' '{base}/v1/events?event=Order%20Completed&limit=5'");
    println!("  quarantine    curl -s -H 'Authorization: Bearer {token}' '{base}/v1/quarantine'");
    println!(
        "  profiles      curl -s -H 'Authorization: Bearer {token}' '{base}/v1/profiles?limit=5'"
    );
    println!("  one customer  niyet profile show musteri1@example-mail.com --url {base} --admin-token {token}");
    println!("  pipeline      curl -s -H 'Authorization: Bearer {token}' '{base}/v1/pipeline'");
    println!("  segments      curl -s -H 'Authorization: Bearer {token}' '{base}/v1/segments'");
    println!("  RFM           curl -s -H 'Authorization: Bearer {token}' '{base}/v1/rfm'");
    println!("  attribution   curl -s -H 'Authorization: Bearer {token}' '{base}/v1/attribution?model=markov'");
    println!("  funnel        curl -s -H 'Authorization: Bearer {token}' '{base}/v1/funnel?steps=Product%20Viewed,Product%20Added,Order%20Completed&breakdown=channel'");
    println!("  lifetime val. curl -s -H 'Authorization: Bearer {token}' '{base}/v1/clv'");
    println!(
        "  live changes  curl -sN -H 'Authorization: Bearer {token}' '{base}/v1/stream/segments'"
    );
    println!("  actions       cart abandonment (an offer after 20 s), hot shoppers and order feedback, signed, to the shop's receiver at {hook}");
    println!("  triggers      curl -s -H 'Authorization: Bearer {token}' '{base}/v1/triggers'");
    println!("  send your own curl -s -u '{write_key}:' {base}/v1/track -d '{{\"userId\":\"u1\",\"event\":\"Signed Up\"}}'");
    println!("  data          {}\n", a.data_dir.display());

    let client = IngestClient::new(&base, &write_key)?;
    let sent = Arc::new(Sent::default());
    let traffic = {
        let sent = sent.clone();
        let clock = clock.clone();
        let mut stop = stop_rx.clone();
        let rate = a.rate.max(0.1);
        let seed = a.seed.unwrap_or(match state.log.end_offset() {
            0 => 42,
            n => 42 ^ n.rotate_left(17),
        });
        tokio::spawn(async move {
            let mut shop = Shop::new(seed, clock.now_ms());
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            let inflight = Arc::new(tokio::sync::Semaphore::new(32));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                shop.set_time(clock.now_ms());
                let visit = shop.visit();
                let body = serde_json::to_vec(&serde_json::json!({"batch": visit, "sentAt": niyet_model::format_rfc3339_millis(clock.now_ms())}))
                    .unwrap_or_default();
                let n = visit.len() as u64;
                let Ok(permit) = inflight.clone().acquire_owned().await else {
                    break;
                };
                let client = client.clone();
                let sent = sent.clone();
                tokio::spawn(async move {
                    let _p = permit;
                    match client.batch_with_retry(body, 5).await {
                        Ok(_) => {
                            sent.visits.fetch_add(1, Ordering::Relaxed);
                            sent.messages.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(_) => {
                            sent.failed_requests.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
            // Wait for the requests still in flight.
            let _ = inflight.acquire_many(32).await;
        })
    };

    let started = Instant::now();
    let deadline = a.duration.map(|d| started + Duration::from_secs(d));
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut ctrl_c = Box::pin(crate::serve::shutdown_signal());
    let mut last_msgs = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut ctrl_c => break,
        }
        let s = state.log.stats();
        let m = &state.metrics;
        let msgs = sent.messages.load(Ordering::Relaxed);
        let p = state.pipeline.stats();
        let acted: u64 = got.by_trigger.lock().map(|m| m.values().sum()).unwrap_or(0);
        println!(
            "{:>5.0}s  visits {:>6}  events sent {:>7} ({:>5.0}/s)  stored {:>7}  quarantined {:>3}  duplicates {:>3}  log {:>7.1} KiB  fsyncs {:>6}  profiles {:>6}  merges {:>5}  blocked {:>4}  actions received {:>5}",
            started.elapsed().as_secs_f64(),
            sent.visits.load(Ordering::Relaxed),
            msgs,
            (msgs - last_msgs) as f64 / 2.0,
            s.end_offset - s.start_offset,
            state.quarantine.pending(),
            m.events_duplicate.load(Ordering::Relaxed),
            s.total_bytes as f64 / 1024.0,
            s.commits,
            p.profiles,
            p.merges,
            p.conflicts,
            acted,
        );
        last_msgs = msgs;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    let _ = stop_tx.send(true);
    let _ = traffic.await;
    let _ = server_stop_tx.send(());
    server_task.await??;
    let failed = sent.failed_requests.load(Ordering::Relaxed);
    println!(
        "\nstopped: {} visits, {} events sent, {} requests failed; data kept in {}",
        sent.visits.load(Ordering::Relaxed),
        sent.messages.load(Ordering::Relaxed),
        failed,
        a.data_dir.display()
    );
    let by_trigger = got.by_trigger.lock().map(|m| m.clone()).unwrap_or_default();
    let acted: Vec<String> = by_trigger.iter().map(|(t, n)| format!("{t} {n}")).collect();
    println!(
        "actions received by the shop: {} ({} with a bad signature)",
        if acted.is_empty() {
            "none".to_string()
        } else {
            acted.join(", ")
        },
        got.bad_signatures.load(Ordering::Relaxed)
    );
    if failed > 0 {
        anyhow::bail!("{failed} requests failed");
    }
    Ok(())
}
