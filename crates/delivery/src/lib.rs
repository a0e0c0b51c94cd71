//! Delivery of actions: a durable outbox and one queue per destination.
//!
//! The pipeline's partition owners hand actions to [`Delivery::emit`]; a writer thread
//! appends them to the outbox (a `niyet-log` with each action's idempotency key as the
//! record key, so an action derived again on replay is kept once) and
//! [`Delivery::sync`] returns once all handed over are durable — the pipeline calls it
//! before each snapshot, so no action derived from an acknowledged event is lost.
//!
//! Each destination reads the outbox from its own cursor (kept in a file), so a slow or
//! failing destination delays nobody else. Failed attempts are retried with exponential
//! backoff and jitter, honouring `Retry-After`; what cannot be delivered goes to the
//! destination's dead letters, which can be replayed.

pub mod send;
pub mod shape;
mod tally;

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use niyet_actions::{Action, Outcome};
use niyet_log::{Appended, Log, LogConfig, NewRecord};
use niyet_model::Clock;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use send::{Failure, Signed};
use shape::Shaped;
pub use tally::Decisions;

/// Kinds of destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The action document as JSON, signed.
    Webhook,
    /// A mobile-push shaped JSON body (`to`, `notification`, `data`) to a push gateway.
    Push,
    /// A lead hand-off for a CRM.
    Crm,
    /// Meta Conversions API shaped conversion feedback.
    MetaCapi,
    /// Google Ads enhanced-conversions shaped feedback.
    GoogleAds,
    /// An e-mail over SMTP.
    Email,
}

/// A destination (`[[destinations]]` in `niyet.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    pub name: String,
    pub kind: Kind,
    /// Where HTTP kinds POST to.
    #[serde(default)]
    pub url: Option<String>,
    /// PEM file of certificates trusted for this destination's HTTPS besides the
    /// system's roots (a private CA, or a receiver's self-signed certificate).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// HMAC-SHA256 key of the `x-niyet-signature` header.
    #[serde(default)]
    pub secret: Option<String>,
    /// `host:port` of the SMTP server (e-mail).
    #[serde(default)]
    pub smtp: Option<String>,
    /// TLS to the SMTP server (e-mail): `none` (default, as to a local relay),
    /// `starttls` (upgrade after the greeting, usually port 587) or `tls` (TLS from the
    /// start, usually port 465). Certificates are checked as for HTTPS (`ca_file`).
    #[serde(default)]
    pub smtp_tls: SmtpTls,
    /// SMTP AUTH user name (e-mail; needs `password` and TLS).
    #[serde(default)]
    pub username: Option<String>,
    /// SMTP AUTH password (e-mail).
    #[serde(default)]
    pub password: Option<String>,
    /// Sender address (e-mail).
    #[serde(default)]
    pub from: Option<String>,
    /// Recipient template (e-mail; default `{{profile.traits.email}}`).
    #[serde(default)]
    pub to: Option<String>,
    /// Subject template (e-mail).
    #[serde(default)]
    pub subject: Option<String>,
    /// Title template (push).
    #[serde(default)]
    pub title: Option<String>,
    /// Body template (e-mail, push); `{{path}}` reads the action document.
    #[serde(default)]
    pub template: Option<String>,
    /// Consent purpose the destination needs (default by kind: e-mail `email`, push
    /// `push`, ad platforms `ads`, others none).
    #[serde(default)]
    pub purpose: Option<String>,
    /// Time allowed for one attempt.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Attempts before an action becomes a dead letter.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// First retry delay; doubles each attempt up to `max_backoff_ms`.
    #[serde(default = "default_backoff")]
    pub backoff_ms: u64,
    #[serde(default = "default_max_backoff")]
    pub max_backoff_ms: u64,
    /// Requests in flight at once (default 8; e-mail 1). Actions start in outbox order;
    /// with more than one, a later one can arrive before an earlier one still waiting for
    /// its answer or a retry. 1 keeps the order strictly.
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// Most actions one request may carry (default 1: a request per action). Above 1,
    /// a request takes the actions waiting when it starts, up to this many (and 1 MiB of
    /// webhook documents, [`BATCH_BYTES`]), and never waits for more: alone, an action
    /// leaves as soon as it would have; under load, requests carry many. A webhook then receives a JSON array of the documents it
    /// would have received one by one, Meta's Conversions API one `data` array, Google
    /// Ads one `conversions` array. Each document keeps its own key (`id`, the `event_id`
    /// of a conversion); the request's `idempotency-key` is derived from the keys it
    /// carries and `x-niyet-batch` says how many. A batch refused for what it carries
    /// (400, 413, 422) is split in halves until only refused documents are left, which
    /// become dead letters. Webhook, `meta_capi` and `google_ads` destinations only; at
    /// most 1,000 (Meta's limit per request).
    #[serde(default)]
    pub batch_max: Option<u32>,
}

/// TLS to an SMTP server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    #[default]
    None,
    Starttls,
    Tls,
}

/// Most actions a request may carry (Meta's Conversions API takes up to 1,000 events).
pub const MAX_BATCH: u32 = 1_000;

/// Most bytes of webhook documents a batch carries (a larger document goes alone).
pub const BATCH_BYTES: usize = 1 << 20;

fn default_timeout() -> u64 {
    5_000
}
fn default_attempts() -> u32 {
    12
}
fn default_backoff() -> u64 {
    500
}
fn default_max_backoff() -> u64 {
    60_000
}

impl DestinationConfig {
    /// Requests in flight at once.
    pub fn in_flight(&self) -> usize {
        match (self.concurrency, &self.kind) {
            (Some(n), _) => n.clamp(1, 256) as usize,
            (None, Kind::Email) => 1,
            (None, _) => 8,
        }
    }

    /// Most actions one request carries.
    pub fn batch(&self) -> usize {
        self.batch_max.map_or(1, |n| n.clamp(1, MAX_BATCH) as usize)
    }

    /// The consent purpose in force.
    pub fn purpose(&self) -> Option<&str> {
        self.purpose.as_deref().or(match self.kind {
            Kind::Email => Some("email"),
            Kind::Push => Some("push"),
            Kind::MetaCapi | Kind::GoogleAds => Some("ads"),
            Kind::Webhook | Kind::Crm => None,
        })
    }

    /// Checks the fields its kind needs.
    pub fn validate(&self) -> Result<(), DeliveryError> {
        let bad = |m: &str| {
            Err(DeliveryError::Config(format!(
                "destination `{}`: {m}",
                self.name
            )))
        };
        if self.name.trim().is_empty() {
            return Err(DeliveryError::Config("a destination has no name".into()));
        }
        match self.kind {
            Kind::Email => {
                if self.smtp.is_none() || self.from.is_none() {
                    return bad("e-mail needs `smtp` (host:port) and `from`");
                }
            }
            _ => match &self.url {
                Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
                    if let Err(e) = reqwest::Url::parse(u) {
                        return bad(&format!("`url` `{u}` is not a valid address: {e}"));
                    }
                }
                Some(u) => return bad(&format!("`url` must be http(s), got `{u}`")),
                None => return bad("needs a `url`"),
            },
        }
        if self.kind == Kind::Email {
            if self.username.is_some() != self.password.is_some() {
                return bad("SMTP AUTH needs both `username` and `password`");
            }
            if self.smtp_tls == SmtpTls::None {
                if self.username.is_some() {
                    return bad("`username` and `password` would go in clear: set `smtp_tls` to `starttls` or `tls`");
                }
                if self.ca_file.is_some() {
                    return bad("`ca_file` needs `smtp_tls` (`starttls` or `tls`)");
                }
            }
        } else if self.smtp_tls != SmtpTls::None
            || self.username.is_some()
            || self.password.is_some()
        {
            return bad("`smtp_tls`, `username` and `password` are for e-mail destinations");
        }
        if self.max_attempts == 0 {
            return bad("`max_attempts` must be at least 1");
        }
        match self.batch_max {
            Some(0) => return bad("`batch_max` must be at least 1"),
            Some(n) if n > MAX_BATCH => {
                return bad(&format!("`batch_max` can be at most {MAX_BATCH}, got {n}"))
            }
            Some(n)
                if n > 1
                    && !matches!(self.kind, Kind::Webhook | Kind::MetaCapi | Kind::GoogleAds) =>
            {
                return bad("`batch_max` above 1 is for `webhook`, `meta_capi` and `google_ads` destinations")
            }
            _ => {}
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("{0}")]
    Config(String),
    #[error("outbox: {0}")]
    Log(#[from] niyet_log::LogError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no destination is named `{0}`")]
    UnknownDestination(String),
}

/// Builds the action document (profile, starting event, …) an action is sent with.
pub type Compose = Arc<dyn Fn(&Action) -> Document + Send + Sync>;

/// The document an action is sent with, as the composer built it. Its small members are
/// values; the profile and the event that started the action come as JSON text, so a
/// webhook's body is written from them as they are, and only destinations that reshape
/// the document (or fill templates from it) parse them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Document {
    /// Every member but the two below: `id`, `trigger`, `consent`, `offer`,
    /// `event_time_ms`, the `profile_pending` / `profile_missing` flags, and `profile`
    /// itself while it is not there as text.
    pub head: serde_json::Map<String, Value>,
    /// `profile`: a JSON object.
    pub profile: Option<Vec<u8>>,
    /// `event`: a JSON object (the stored record of the starting event).
    pub event: Option<Vec<u8>>,
}

static NULL: Value = Value::Null;

impl std::ops::Index<&str> for Document {
    type Output = Value;

    /// A member of the head (`Null` if there is none).
    fn index(&self, key: &str) -> &Value {
        self.head.get(key).unwrap_or(&NULL)
    }
}

impl Document {
    /// The whole document as a value (the texts parsed).
    pub fn to_value(&self) -> Value {
        let mut m = self.head.clone();
        for (k, text) in [("profile", &self.profile), ("event", &self.event)] {
            if let Some(t) = text {
                m.insert(k.into(), serde_json::from_slice(t).unwrap_or(Value::Null));
            }
        }
        Value::Object(m)
    }

    /// The whole document as JSON text, the texts copied in as they are.
    pub fn to_json(&self) -> Vec<u8> {
        let extra =
            self.profile.as_ref().map_or(0, Vec::len) + self.event.as_ref().map_or(0, Vec::len);
        let mut out = Vec::with_capacity(extra + 512);
        out.push(b'{');
        let mut first = true;
        let mut key = |out: &mut Vec<u8>, k: &str| {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            // Writing to a Vec does not fail.
            let _ = serde_json::to_writer(&mut *out, k);
            out.push(b':');
        };
        for (k, v) in &self.head {
            if (k == "profile" && self.profile.is_some()) || (k == "event" && self.event.is_some())
            {
                continue;
            }
            key(&mut out, k);
            let _ = serde_json::to_writer(&mut out, v);
        }
        for (k, text) in [("profile", &self.profile), ("event", &self.event)] {
            if let Some(t) = text {
                key(&mut out, k);
                out.extend_from_slice(t);
            }
        }
        out.push(b'}');
        out
    }
}

/// What became of one action at one destination.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub key: String,
    pub trigger: String,
    pub destination: String,
    pub profile: String,
    /// `sent`, `held_out`, `capped`, `not_in_segment`, `blocked` (no consent),
    /// `unsendable`, `dead`.
    pub status: &'static str,
    pub attempts: u32,
    pub detail: String,
    pub acted_at: String,
    /// From the trigger acting to the request leaving (sent ones).
    pub latency_ms: Option<i64>,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    retries: AtomicU64,
    dead: AtomicU64,
    blocked: AtomicU64,
    held_out: AtomicU64,
    /// Latency histogram (ms upper bounds in [`BUCKETS`]; the last one is +Inf).
    latency: [AtomicU64; BUCKETS.len() + 1],
    latency_sum_ms: AtomicU64,
    /// Outbox offset this destination has handled up to.
    cursor: AtomicU64,
    /// Actions of this destination handed to the outbox writer and not yet written.
    waiting: AtomicU64,
    /// One past the outbox offset of this destination's newest record (0: none).
    last_own: AtomicU64,
    /// The destination's task has reached the end of the outbox since the start (until
    /// then, records from before a restart may still be ahead of it).
    caught_up: std::sync::atomic::AtomicBool,
}

impl Counters {
    /// Nothing of this destination is waiting: none handed over and unwritten, none in
    /// the outbox ahead of its cursor. A live action can then go straight to it without
    /// passing an earlier one.
    fn idle(&self) -> bool {
        self.caught_up.load(Ordering::SeqCst)
            && self.waiting.load(Ordering::SeqCst) == 0
            && self.cursor.load(Ordering::SeqCst) >= self.last_own.load(Ordering::SeqCst)
    }
}

/// Upper bounds (ms) of the latency histogram.
pub const BUCKETS: [u64; 12] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 5_000, 30_000];

struct Dest {
    cfg: DestinationConfig,
    url: Option<reqwest::Url>,
    /// Its own client (HTTP kinds), with its own connections: those are driven on the
    /// destination's own thread, and trust its `ca_file` too.
    client: Option<reqwest::Client>,
    /// TLS to its SMTP server (e-mail with `smtp_tls`).
    smtp_tls: Option<tokio_rustls::TlsConnector>,
    counters: Counters,
    /// Live actions handed straight to an idle destination while the outbox write is in
    /// flight (see [`Delivery::emit`]); the receiver is the destination's task.
    fast: tokio::sync::mpsc::UnboundedSender<Action>,
    fast_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Action>>>,
    /// Keys of actions sent from the fast lane whose outbox record is still to come.
    early: Mutex<std::collections::HashSet<String>>,
}

struct Shared {
    log: Arc<Log>,
    dir: PathBuf,
    clock: Arc<dyn Clock>,
    dests: Vec<Dest>,
    compose: Compose,
    /// Actions handed over / made durable (or found already there).
    emitted: AtomicU64,
    durable: Mutex<u64>,
    durable_cv: Condvar,
    /// To the outbox writer: each action, and whether it went by the fast lane.
    tx: std::sync::RwLock<Option<std::sync::mpsc::Sender<(Action, bool)>>>,
    /// The outbox's end after the latest append.
    appended: tokio::sync::watch::Sender<u64>,
    recent: Mutex<VecDeque<Status>>,
    /// Decisions per trigger, read from the outbox on demand.
    tally: Mutex<tally::Tally>,
}

/// The outbox and its destinations.
#[derive(Clone)]
pub struct Delivery {
    sh: Arc<Shared>,
    /// The sending threads (see [`Delivery::start`]) and what stops them (dropped with
    /// the last clone: stop).
    sending: Arc<std::sync::Mutex<Option<Sending>>>,
}

/// How far below the server's other threads (in nice values) the outbox writer and the
/// sending threads run. Where the processor is short, they give way to acknowledging and
/// processing events, whose latency decides how soon an action starts at all; they still
/// get about a third of the time of a thread at normal priority, and all of it when the
/// processor is free. (Lowering a thread's priority needs no privilege; it is never raised
/// back.)
pub const SEND_NICE: i32 = 5;

/// Lowers the calling thread's priority by [`SEND_NICE`] (Linux sets it per thread).
fn below_processing() {
    let now = rustix::process::getpriority_process(None).unwrap_or(0);
    if let Err(e) = rustix::process::setpriority_process(None, (now + SEND_NICE).min(19)) {
        tracing::warn!(error = %e, "the sending threads run at the priority of the others");
    }
}

/// The destinations' sending threads.
struct Sending {
    stop: tokio::sync::watch::Sender<()>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

const RECENT: usize = 10_000;

impl Delivery {
    /// Opens the outbox in `dir` (created if missing) and starts its writer thread; call
    /// [`Delivery::start`] within a tokio runtime to start sending.
    pub fn open(
        dir: &Path,
        dests: Vec<DestinationConfig>,
        clock: Arc<dyn Clock>,
        compose: Compose,
    ) -> Result<Delivery, DeliveryError> {
        for (i, d) in dests.iter().enumerate() {
            d.validate()?;
            if dests[..i].iter().any(|o| o.name == d.name) {
                return Err(DeliveryError::Config(format!(
                    "destination `{}` is defined twice",
                    d.name
                )));
            }
        }
        std::fs::create_dir_all(dir.join("cursors"))?;
        std::fs::create_dir_all(dir.join("dead"))?;
        let mut lc = LogConfig::new(dir.join("outbox"));
        lc.segment_bytes = 32 << 20;
        // Destinations read each action back right after it is written: through the page
        // cache that is a copy, while a direct write would leave it to be read from disk.
        lc.direct_io = false;
        // Keys are remembered long enough for any replay that still acts (actions older
        // than an hour are not taken again).
        lc.dedup_window_ms = 48 * 3_600_000;
        let log = Arc::new(Log::open(lc, clock.now_ms())?);
        let end = log.end_offset();
        let (tx, rx) = std::sync::mpsc::channel::<(Action, bool)>();
        let mut clients = Vec::with_capacity(dests.len());
        for d in &dests {
            let extra = match &d.ca_file {
                Some(f) => trusted(&d.name, f)?,
                None => Vec::new(),
            };
            clients.push(if d.kind == Kind::Email {
                let tls = (d.smtp_tls != SmtpTls::None).then(|| smtp_connector(&extra));
                (None, tls)
            } else {
                // Each its own connections, driven on its own thread (see `start`).
                (Some(http_client(&extra)?), None)
            });
        }
        let dests: Vec<Dest> = dests
            .into_iter()
            .zip(clients)
            .map(|(cfg, (client, smtp_tls))| {
                let counters = Counters::default();
                counters.cursor.store(
                    read_cursor(&dir.join("cursors"), &cfg.name),
                    Ordering::Relaxed,
                );
                let (fast, fast_rx) = tokio::sync::mpsc::unbounded_channel();
                Dest {
                    // Parsed once here rather than for every request.
                    url: cfg.url.as_deref().and_then(|u| reqwest::Url::parse(u).ok()),
                    client,
                    smtp_tls,
                    cfg,
                    counters,
                    fast,
                    fast_rx: Mutex::new(Some(fast_rx)),
                    early: Mutex::new(Default::default()),
                }
            })
            .collect();
        let sh = Arc::new(Shared {
            log,
            dir: dir.to_path_buf(),
            clock,
            dests,
            compose,
            emitted: AtomicU64::new(0),
            durable: Mutex::new(0),
            durable_cv: Condvar::new(),
            tx: std::sync::RwLock::new(Some(tx)),
            appended: tokio::sync::watch::channel(end).0,
            recent: Mutex::new(VecDeque::new()),
            tally: Mutex::new(tally::Tally::default()),
        });
        let w = sh.clone();
        std::thread::Builder::new()
            .name("niyet-outbox".into())
            .spawn(move || {
                below_processing();
                writer(&w, rx)
            })?;
        Ok(Delivery {
            sh,
            sending: Arc::default(),
        })
    }

    /// Hands an action over (quick; from any thread). A `live` action to send, for a
    /// destination with nothing of its own waiting (other destinations' queues do not
    /// count), also goes straight to it, so the request leaves while the outbox write is
    /// in flight; its outbox record is then passed over. (A crash before that write
    /// replays the starting record: the action goes again, with the same key, like any
    /// action sent and not yet acknowledged in the cursor.)
    pub fn emit(&self, a: Action, live: bool) {
        let dest = self.sh.dests.iter().find(|d| d.cfg.name == a.destination);
        let fast = live
            && a.outcome == Outcome::Send
            && dest.is_some_and(|d| d.counters.idle() && d.fast.send(a.clone()).is_ok());
        if let (false, Some(d)) = (fast, dest) {
            d.counters.waiting.fetch_add(1, Ordering::SeqCst);
        }
        self.sh.emitted.fetch_add(1, Ordering::SeqCst);
        let sent = self
            .sh
            .tx
            .read()
            .ok()
            .and_then(|t| t.as_ref().map(|t| t.send((a, fast)).is_ok()));
        if sent != Some(true) {
            if let (false, Some(d)) = (fast, dest) {
                d.counters.waiting.fetch_sub(1, Ordering::SeqCst);
            }
            // Closed: count it as settled so `sync` does not wait for it.
            tracing::error!("action handed over after the outbox closed");
            self.settle(1);
        }
    }

    fn settle(&self, n: u64) {
        if let Ok(mut d) = self.sh.durable.lock() {
            *d += n;
            self.sh.durable_cv.notify_all();
        }
    }

    /// Returns once every action handed over so far is in the outbox (or 30 s passed,
    /// which is logged).
    pub fn sync(&self) {
        let target = self.sh.emitted.load(Ordering::SeqCst);
        let Ok(mut d) = self.sh.durable.lock() else {
            return;
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while *d < target {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                tracing::error!(
                    waiting = target - *d,
                    "actions not durable after 30 s; the snapshot goes ahead"
                );
                return;
            }
            d = match self.sh.durable_cv.wait_timeout(d, left) {
                Ok((g, _)) => g,
                Err(_) => return,
            };
        }
    }

    /// Starts sending: each destination on a thread of its own (`niyet-send`) with a
    /// single-threaded runtime of its own; they run until [`Delivery::close`] or until
    /// this is dropped.
    ///
    /// Composing a request's documents runs without a pause (up to a batch of them), so
    /// on the server's runtime it would hold a runtime thread while requests to acknowledge
    /// wait behind it, and on a thread shared by destinations it would hold back another
    /// destination's live action; on threads of their own the operating system shares the
    /// processor between them. A destination's task, its connections and the bytes its
    /// reader keeps (see `niyet_log`) stay on one thread, with no wake-ups across threads.
    pub fn start(&self) -> std::io::Result<()> {
        let Ok(mut sending) = self.sending.lock() else {
            return Ok(());
        };
        if sending.is_some() {
            return Ok(());
        }
        let (stop, stopped) = tokio::sync::watch::channel(());
        let mut threads = Vec::with_capacity(self.sh.dests.len());
        for i in 0..self.sh.dests.len() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_start(below_processing)
                .build()?;
            let (sh, mut stopped) = (self.sh.clone(), stopped.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("niyet-send".into())
                    .spawn(move || {
                        below_processing();
                        rt.block_on(async move {
                            tokio::select! {
                                () = worker(sh, i) => {}
                                // Stopped, or the handle dropped.
                                _ = stopped.changed() => {}
                            }
                        });
                        // Requests still out are dropped; their actions go again after a
                        // restart (the cursor stays before them), with the same keys.
                        rt.shutdown_timeout(Duration::from_secs(5));
                    })?,
            );
        }
        *sending = Some(Sending { stop, threads });
        Ok(())
    }

    /// Stops sending, stops taking actions and waits for the outbox writer to finish what
    /// it has.
    pub fn close(&self) {
        self.stop_sending();
        if let Ok(mut t) = self.sh.tx.write() {
            t.take();
        }
        self.sync();
        self.sh.log.close();
    }

    fn stop_sending(&self) {
        let s = self.sending.lock().ok().and_then(|mut s| s.take());
        if let Some(s) = s {
            let _ = s.stop.send(());
            for t in s.threads {
                if t.join().is_err() {
                    tracing::error!("a sending thread panicked");
                }
            }
        }
    }

    /// Actions blocked for want of consent for a profile (kept in
    /// `consent-blocks.ndjson`), oldest first.
    pub fn blocked(&self, profile: &str) -> Vec<Value> {
        std::fs::read_to_string(blocked_path(&self.sh.dir))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["profile"] == profile)
            .collect()
    }

    /// Forgets erased profiles: their dead letters, consent blocks and recent outcomes.
    /// Returns how many records went.
    pub fn forget(&self, profiles: &[String]) -> std::io::Result<usize> {
        if profiles.is_empty() {
            return Ok(0);
        }
        let of = |v: &Value, at: &str| {
            let p = v.pointer(at).and_then(Value::as_str).unwrap_or("");
            !profiles.iter().any(|x| x == p)
        };
        let mut gone = filter_lines(&blocked_path(&self.sh.dir), |v| of(v, "/profile"))?;
        for d in &self.sh.dests {
            gone += filter_lines(&dead_path(&self.sh.dir, &d.cfg.name), |v| {
                of(v, "/action/profile")
            })?;
        }
        if let Ok(mut r) = self.sh.recent.lock() {
            let before = r.len();
            r.retain(|s| !profiles.contains(&s.profile));
            gone += before - r.len();
        }
        Ok(gone)
    }

    /// Recent outcomes, newest first, optionally of one profile.
    pub fn recent(&self, profile: Option<&str>, limit: usize) -> Vec<Status> {
        self.sh
            .recent
            .lock()
            .map(|r| {
                r.iter()
                    .rev()
                    .filter(|s| profile.is_none_or(|p| s.profile == p))
                    .take(limit)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Per destination: counters, queue depth (outbox records not yet handled) and dead
    /// letters waiting.
    pub fn stats(&self) -> Value {
        let end = self.sh.log.end_offset();
        let dests: Vec<Value> = self
            .sh
            .dests
            .iter()
            .map(|d| {
                let c = &d.counters;
                json!({
                    "name": d.cfg.name,
                    "kind": d.cfg.kind,
                    "sent": c.sent.load(Ordering::Relaxed),
                    "retries": c.retries.load(Ordering::Relaxed),
                    "dead_letters": c.dead.load(Ordering::Relaxed),
                    "blocked_by_consent": c.blocked.load(Ordering::Relaxed),
                    "held_out": c.held_out.load(Ordering::Relaxed),
                    "queue_depth": end.saturating_sub(c.cursor.load(Ordering::Relaxed)),
                    "dead_letters_waiting": self.dead_letters(&d.cfg.name).map(|v| v.len()).unwrap_or(0),
                })
            })
            .collect();
        json!({"outbox_records": end, "destinations": dests})
    }

    /// Prometheus text of the delivery metrics.
    pub fn metrics(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let end = self.sh.log.end_offset();
        for (name, help) in [
            (
                "niyet_actions_sent_total",
                "Actions delivered, by destination.",
            ),
            ("niyet_action_retries_total", "Failed attempts retried."),
            ("niyet_action_dead_letters_total", "Actions given up on."),
            (
                "niyet_action_queue_depth",
                "Outbox records a destination has not handled yet.",
            ),
        ] {
            let _ = writeln!(s, "# HELP {name} {help}");
            let kind = if name.ends_with("depth") {
                "gauge"
            } else {
                "counter"
            };
            let _ = writeln!(s, "# TYPE {name} {kind}");
            for d in &self.sh.dests {
                let c = &d.counters;
                let v = match name {
                    "niyet_actions_sent_total" => c.sent.load(Ordering::Relaxed),
                    "niyet_action_retries_total" => c.retries.load(Ordering::Relaxed),
                    "niyet_action_dead_letters_total" => c.dead.load(Ordering::Relaxed),
                    _ => end.saturating_sub(c.cursor.load(Ordering::Relaxed)),
                };
                let _ = writeln!(s, "{name}{{destination=\"{}\"}} {v}", d.cfg.name);
            }
        }
        let h = "niyet_action_latency_seconds";
        let _ = writeln!(
            s,
            "# HELP {h} From a trigger acting to its request leaving."
        );
        let _ = writeln!(s, "# TYPE {h} histogram");
        for d in &self.sh.dests {
            let c = &d.counters;
            let mut acc = 0;
            for (i, b) in BUCKETS.iter().enumerate() {
                acc += c.latency[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    s,
                    "{h}_bucket{{destination=\"{}\",le=\"{}\"}} {acc}",
                    d.cfg.name,
                    *b as f64 / 1000.0
                );
            }
            acc += c.latency[BUCKETS.len()].load(Ordering::Relaxed);
            let _ = writeln!(
                s,
                "{h}_bucket{{destination=\"{}\",le=\"+Inf\"}} {acc}",
                d.cfg.name
            );
            let _ = writeln!(
                s,
                "{h}_sum{{destination=\"{}\"}} {}",
                d.cfg.name,
                c.latency_sum_ms.load(Ordering::Relaxed) as f64 / 1000.0
            );
            let _ = writeln!(s, "{h}_count{{destination=\"{}\"}} {acc}", d.cfg.name);
        }
        s
    }

    /// Every action in the outbox (each key once, replays of dead letters included once),
    /// in outbox order.
    pub fn actions(&self) -> Result<Vec<Action>, DeliveryError> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut at = self.sh.log.stats().start_offset;
        let end = self.sh.log.end_offset();
        while at < end {
            let recs = self.sh.log.read(at, 4_096)?;
            let Some(last) = recs.last() else {
                break;
            };
            at = last.offset + 1;
            for r in recs {
                if let Ok(a) = serde_json::from_slice::<Action>(&r.payload) {
                    if seen.insert(a.key.clone()) {
                        out.push(a);
                    }
                }
            }
        }
        Ok(out)
    }

    /// What each trigger decided, per destination, over the outbox (`(trigger,
    /// destination)` → counts). Reads only the records appended since the last call.
    pub fn decisions(
        &self,
    ) -> Result<std::collections::BTreeMap<(String, String), Decisions>, DeliveryError> {
        // Counts only: a panic elsewhere while it was held leaves them usable.
        let mut t = self.sh.tally.lock().unwrap_or_else(|e| e.into_inner());
        Ok(t.update(&self.sh.log)?.clone())
    }

    /// The configured destinations.
    pub fn destinations(&self) -> impl Iterator<Item = &DestinationConfig> {
        self.sh.dests.iter().map(|d| &d.cfg)
    }

    fn dest(&self, name: &str) -> Result<&Dest, DeliveryError> {
        self.sh
            .dests
            .iter()
            .find(|d| d.cfg.name == name)
            .ok_or_else(|| DeliveryError::UnknownDestination(name.into()))
    }

    /// The destination's dead letters: `{"action", "error", "at"}` each.
    pub fn dead_letters(&self, name: &str) -> Result<Vec<Value>, DeliveryError> {
        self.dest(name)?;
        let path = dead_path(&self.sh.dir, name);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    /// Queues the destination's dead letters again (same idempotency keys) and empties
    /// the list; returns how many.
    pub fn replay_dead(&self, name: &str) -> Result<usize, DeliveryError> {
        let letters = self.dead_letters(name)?;
        let now = self.sh.clock.now_ms();
        let recs: Vec<NewRecord> = letters
            .iter()
            .filter_map(|l| serde_json::to_vec(&l["action"]).ok())
            .map(|payload| NewRecord {
                time_ms: now,
                // No dedup key: the same action is meant to be queued again.
                key: 0,
                payload,
            })
            .collect();
        let n = recs.len();
        // The file is emptied before the letters are queued again: a requeued action that
        // fails once more is written back to it, and must not be cleared afterwards.
        let path = dead_path(&self.sh.dir, name);
        if path.exists() {
            std::fs::write(&path, b"")?;
        }
        if n > 0 {
            if let Err(e) = self.sh.log.append_blocking(recs) {
                // Not queued: the letters go back where they were.
                for l in &letters {
                    let _ = append_line(&path, l);
                }
                return Err(e.into());
            }
            let _ = self.sh.appended.send(self.sh.log.end_offset());
        }
        Ok(n)
    }
}

/// Appends one JSON line to a file, synced.
fn append_line(path: &Path, line: &Value) -> std::io::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(format!("{line}\n").as_bytes())?;
    f.sync_data()
}

/// Keeps the lines of an ndjson file that `keep` accepts; returns how many went.
fn filter_lines(path: &Path, keep: impl Fn(&Value) -> bool) -> std::io::Result<usize> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut out = String::with_capacity(text.len());
    let mut gone = 0;
    for l in text.lines() {
        let v: Value = serde_json::from_str(l).unwrap_or(Value::Null);
        if keep(&v) {
            out.push_str(l);
            out.push('\n');
        } else {
            gone += 1;
        }
    }
    if gone > 0 {
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(out.as_bytes())?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)?;
    }
    Ok(gone)
}

fn blocked_path(dir: &Path) -> PathBuf {
    dir.join("consent-blocks.ndjson")
}

fn dead_path(dir: &Path, dest: &str) -> PathBuf {
    dir.join("dead").join(format!("{}.ndjson", file_name(dest)))
}

/// A file name for a destination name (any text): readable part plus a hash.
fn file_name(dest: &str) -> String {
    let safe: String = dest
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(40)
        .collect();
    format!(
        "{safe}-{:08x}",
        xxhash_rust::xxh3::xxh3_64(dest.as_bytes()) as u32
    )
}

fn read_cursor(dir: &Path, dest: &str) -> u64 {
    std::fs::read_to_string(dir.join(file_name(dest)))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn write_cursor(dir: &Path, dest: &str, offset: u64) -> std::io::Result<()> {
    let path = dir.join("cursors").join(file_name(dest));
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(offset.to_string().as_bytes())?;
    f.sync_data()?;
    std::fs::rename(&tmp, &path)
}

fn key_of(hex: &str) -> u128 {
    u128::from_str_radix(hex, 16).unwrap_or_else(|_| xxhash_rust::xxh3::xxh3_128(hex.as_bytes()))
        | 1
}

/// How long the outbox writer gathers actions after the first before it commits them:
/// a trickle of actions shares one `fdatasync` instead of paying one each. Live actions
/// are not held up by it (they go out while their outbox write is in flight).
const OUTBOX_LINGER: Duration = Duration::from_millis(2);

/// The outbox writer: appends what is handed over, in batches, and tells `sync`.
fn writer(sh: &Shared, rx: std::sync::mpsc::Receiver<(Action, bool)>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        // Real time: this paces disk work only.
        let until = std::time::Instant::now() + OUTBOX_LINGER;
        while batch.len() < 4_096 {
            let left = until.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(a) => batch.push(a),
                Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        let now = sh.clock.now_ms();
        let dest_of = |a: &Action| sh.dests.iter().find(|d| d.cfg.name == a.destination);
        let (recs, written): (Vec<NewRecord>, Vec<&Action>) = batch
            .iter()
            .filter_map(|(a, _)| {
                let rec = NewRecord {
                    time_ms: now,
                    key: key_of(&a.key),
                    payload: serde_json::to_vec(a).ok()?,
                };
                Some((rec, a))
            })
            .unzip();
        match sh.log.append_blocking(recs) {
            Ok(out) => {
                let fresh = out.iter().filter(|o| matches!(o, Appended::At(_))).count();
                tracing::debug!(
                    fresh,
                    duplicates = out.len() - fresh,
                    "actions in the outbox"
                );
                // Raised before `waiting` goes down (and `idle` reads `waiting` first), so
                // an emit in between sees the action in one or the other.
                for (a, o) in written.iter().zip(&out) {
                    if let (Appended::At(off), Some(d)) = (o, dest_of(a)) {
                        d.counters.last_own.fetch_max(off + 1, Ordering::SeqCst);
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "writing actions to the outbox failed"),
        }
        for (a, fast) in &batch {
            if let (false, Some(d)) = (*fast, dest_of(a)) {
                d.counters.waiting.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _ = sh.appended.send(sh.log.end_offset());
        if let Ok(mut d) = sh.durable.lock() {
            *d += n;
            sh.durable_cv.notify_all();
        }
    }
}

/// The next action of a destination's fast lane (never, without one).
async fn recv_fast(
    fast: &mut Option<tokio::sync::mpsc::UnboundedReceiver<Action>>,
) -> Option<Action> {
    match fast {
        Some(f) => f.recv().await,
        None => std::future::pending().await,
    }
}

/// Sends one destination's actions, in outbox order (live ones as they come while it has
/// nothing of its own waiting).
///
/// Up to `in_flight` actions are sent at once, started in outbox order, and reading goes
/// on while some are still out (a retry waiting out its backoff holds back only its own
/// place): the cursor is the lowest outbox offset not yet settled, and reading stays
/// within [`WINDOW`] records of it. After a crash what was past the cursor goes again,
/// with the same keys.
async fn worker(sh: Arc<Shared>, i: usize) {
    use futures_util::StreamExt;
    let d = &sh.dests[i];
    let limit = d.cfg.in_flight();
    let batch = d.cfg.batch();
    let mut fast = d.fast_rx.lock().ok().and_then(|mut f| f.take());
    let mut changed = sh.appended.subscribe();
    let mut cursor = d.counters.cursor.load(Ordering::Relaxed);
    let (mut saved, mut saved_at) = (cursor, sh.clock.now_ms());
    // When the cursor file was last written (real time: it paces disk work only).
    let mut written = tokio::time::Instant::now();
    // The next outbox offset to read.
    let mut read_to = cursor;
    // Own actions read and not started: their outbox offsets (none for a live action that
    // came by the fast lane, whose record may not be written yet).
    let mut queued: VecDeque<(Option<u64>, Action)> = VecDeque::new();
    let mut running = futures_util::stream::FuturesUnordered::new();
    // Offsets started and not settled, and how many actions out came by the fast lane:
    // while any of those is out the cursor stays where it is, as their records may be
    // behind it already (passed over as early).
    let mut open = std::collections::BTreeSet::new();
    let mut fast_out = 0usize;
    loop {
        // The cursor file is written (and synced) on a blocking thread, once the queue is
        // empty (at most every `CURSOR_IDLE_SAVE`) or a second after the last write: never
        // on the hot path of a send. After a crash at most that much of the actions goes
        // again, with the same keys.
        let end = sh.log.end_offset();
        let idle = cursor >= end;
        if cursor != saved
            && ((idle && written.elapsed() >= CURSOR_IDLE_SAVE)
                || sh.clock.now_ms() - saved_at >= CURSOR_SAVE_MS)
        {
            let (dir, name) = (sh.dir.clone(), d.cfg.name.clone());
            match tokio::task::spawn_blocking(move || write_cursor(&dir, &name, cursor)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, destination = %d.cfg.name, "saving the outbox cursor failed")
                }
                Err(e) => tracing::error!(error = %e, "saving the outbox cursor failed"),
            }
            (saved, saved_at) = (cursor, sh.clock.now_ms());
            written = tokio::time::Instant::now();
        }
        while running.len() < limit && !queued.is_empty() {
            // What is waiting now, up to the batch size: a request never waits for more.
            let take = queued.len().min(batch);
            let group: Vec<(Option<u64>, Action)> = queued.drain(..take).collect();
            open.extend(group.iter().filter_map(|(o, _)| *o));
            fast_out += group.iter().filter(|(o, _)| o.is_none()).count();
            let sh = &sh;
            running.push(async move {
                handle(sh, d, &group).await;
                group.into_iter().map(|(o, _)| o).collect::<Vec<_>>()
            });
        }
        if running.is_empty() && queued.is_empty() && read_to >= end {
            // Everything read is settled.
            cursor = cursor.max(read_to);
            d.counters.cursor.store(cursor, Ordering::SeqCst);
            d.counters.caught_up.store(true, Ordering::SeqCst);
            // A cursor not yet saved is saved once the pause between writes is over.
            let nap = if cursor != saved {
                CURSOR_IDLE_SAVE.saturating_sub(written.elapsed())
            } else {
                Duration::from_secs(1)
            };
            // Woken by a live action or by appends; a timeout covers a missed wake-up.
            tokio::select! {
                biased;
                // Started with the others: one in retry does not hold the rest.
                Some(a) = recv_fast(&mut fast) => queued.push_back(live(d, a)),
                _ = changed.changed() => {}
                () = tokio::time::sleep(nap) => {}
            }
            continue;
        }
        let mut read_any = false;
        if queued.is_empty() && read_to < end && read_to - cursor < WINDOW {
            // Records are looked at where they lie in the reader's buffer (briefly: the
            // log's newest records are lent under its lock): only this destination's,
            // not already started by the fast lane, are copied out and parsed in full.
            // (Only this worker takes keys out of `early`: one marked early now is still
            // marked when the fast lane has been drained below.)
            let early = |key: &str| d.early.lock().map(|mut e| e.remove(key)).unwrap_or(false);
            let mut mine: Vec<(u64, Vec<u8>)> = Vec::new();
            let mut last = None;
            let read = sh.log.scan(read_to, 256, |r| {
                last = Some(r.offset);
                let Ok(h) = serde_json::from_slice::<Head<'_>>(r.payload) else {
                    return;
                };
                if h.destination == d.cfg.name && !early(&h.key) {
                    mine.push((r.offset, r.payload.to_vec()));
                }
            });
            match read {
                Ok(_) => {}
                Err(niyet_log::LogError::BeforeStart { start, .. }) => {
                    // Records before `start` are gone (retention): nothing to send.
                    read_to = start;
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, destination = %d.cfg.name, "reading the outbox failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
            if let Some(last) = last {
                read_any = true;
                // Live actions that came by the fast lane while this destination had
                // nothing of its own waiting (other destinations' records still ahead of
                // it) start first. Taken after the read: the fast lane gets an action
                // before its record is handed to the writer, so each record just read that
                // came by the fast lane is marked early by then and passed over.
                if let Some(f) = fast.as_mut() {
                    while let Ok(a) = f.try_recv() {
                        queued.push_back(live(d, a));
                    }
                }
                for (o, payload) in mine {
                    match serde_json::from_slice::<Action>(&payload) {
                        Ok(a) if !early(&a.key) => queued.push_back((Some(o), a)),
                        _ => {}
                    }
                }
                read_to = last + 1;
            }
        }
        if !read_any {
            // Nothing to read now (window full, or nothing new): wait for a request to
            // settle, a live action or an append.
            let more = queued.is_empty() && read_to >= end;
            tokio::select! {
                biased;
                Some(offs) = running.next(), if !running.is_empty() => {
                    settled(&mut open, &mut fast_out, offs);
                }
                Some(a) = recv_fast(&mut fast), if more => queued.push_back(live(d, a)),
                _ = changed.changed(), if more => {}
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            // Others settled meanwhile are taken too.
            while let Some(Some(offs)) = futures_util::FutureExt::now_or_never(running.next()) {
                settled(&mut open, &mut fast_out, offs);
            }
        }
        if fast_out == 0 {
            let lowest = open
                .first()
                .copied()
                .into_iter()
                .chain(queued.iter().filter_map(|(o, _)| *o))
                .fold(read_to, u64::min);
            cursor = cursor.max(lowest);
            d.counters.cursor.store(cursor, Ordering::SeqCst);
        }
    }
}

/// The actions of a request are settled: their offsets are no longer open.
fn settled(
    open: &mut std::collections::BTreeSet<u64>,
    fast_out: &mut usize,
    offs: Vec<Option<u64>>,
) {
    for o in offs {
        match o {
            Some(o) => {
                open.remove(&o);
            }
            None => *fast_out -= 1,
        }
    }
}

/// A live action from the fast lane, marked early (its outbox record is passed over),
/// to be started like the destination's others.
fn live(d: &Dest, a: Action) -> (Option<u64>, Action) {
    if let Ok(mut e) = d.early.lock() {
        e.insert(a.key.clone());
    }
    (None, a)
}

/// The HTTP client of destinations, trusting `extra` besides the system's roots.
fn http_client(extra: &[CertificateDer<'static>]) -> Result<reqwest::Client, DeliveryError> {
    let mut b = reqwest::Client::builder()
        // Room for every request a destination has in flight.
        .pool_max_idle_per_host(256)
        // A signed action goes to the address configured and nowhere else: an answer
        // of 3xx is a failure (kept as a dead letter), not a redirect.
        .redirect(reqwest::redirect::Policy::none());
    for c in extra {
        let c = reqwest::Certificate::from_der(c)
            .map_err(|e| DeliveryError::Config(format!("a trusted certificate: {e}")))?;
        b = b.add_root_certificate(c);
    }
    b.build()
        .map_err(|e| DeliveryError::Config(format!("HTTP client: {e}")))
}

/// The certificates of a destination's `ca_file`.
fn trusted(name: &str, file: &str) -> Result<Vec<CertificateDer<'static>>, DeliveryError> {
    use rustls::pki_types::pem::PemObject;
    let bad = |m: String| DeliveryError::Config(format!("destination `{name}`: `ca_file` {m}"));
    let pem = std::fs::read(file).map_err(|e| bad(format!("`{file}` cannot be read: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("`{file}` is not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad(format!("`{file}` holds no certificate")));
    }
    Ok(certs)
}

/// TLS for SMTP: the system's roots (those it can read) and `extra`, rustls with ring.
fn smtp_connector(extra: &[CertificateDer<'static>]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!(error = %e, "reading the system's trusted certificates");
    }
    roots.add_parsable_certificates(native.certs);
    roots.add_parsable_certificates(extra.iter().cloned());
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// How far a destination reads ahead of its cursor (outbox records).
const WINDOW: u64 = 4_096;

/// A destination's cursor is saved at least this often while it is busy (ms).
const CURSOR_SAVE_MS: i64 = 1_000;

/// An idle destination's cursor is saved at most this often: a trickle of single
/// actions costs a few file writes a second, not one per action.
const CURSOR_IDLE_SAVE: Duration = Duration::from_millis(100);

fn record(
    sh: &Shared,
    a: &Action,
    status: &'static str,
    attempts: u32,
    detail: String,
    latency: Option<i64>,
) {
    if let Ok(mut r) = sh.recent.lock() {
        if r.len() >= RECENT {
            r.pop_front();
        }
        r.push_back(Status {
            key: a.key.clone(),
            trigger: a.trigger.clone(),
            destination: a.destination.clone(),
            profile: a.profile.clone(),
            status,
            attempts,
            detail,
            acted_at: niyet_model::format_rfc3339_millis(a.at_ms),
            latency_ms: latency,
        });
    }
}

/// What the outbox reader looks at first in an action's record: whose it is.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    key: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    destination: std::borrow::Cow<'a, str>,
}

/// An action that is to leave, with what its destination sends for it.
struct Ready<'a> {
    a: &'a Action,
    shaped: Shaped,
    /// The document as JSON text (plain webhooks).
    doc: Vec<u8>,
}

/// Settles what needs no request (held out, capped, blocked by consent, …) and shapes the
/// rest: `None` once the action is settled.
async fn prepare<'a>(sh: &Shared, d: &Dest, a: &'a Action) -> Option<Ready<'a>> {
    let c = &d.counters;
    match a.outcome {
        Outcome::Send => {}
        Outcome::Holdout => {
            c.held_out.fetch_add(1, Ordering::Relaxed);
            record(sh, a, "held_out", 0, "control group".into(), None);
            return None;
        }
        Outcome::Capped => {
            record(sh, a, "capped", 0, "frequency cap".into(), None);
            return None;
        }
        Outcome::NotInSegment => {
            let why = "`if` segment did not hold".into();
            record(sh, a, "not_in_segment", 0, why, None);
            return None;
        }
    }
    let mut doc = (sh.compose)(a);
    // After a restart the profile may still be on its way back (replay): wait a while.
    for _ in 0..300 {
        if doc["profile_pending"] != true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        doc = (sh.compose)(a);
    }
    if doc["profile_missing"] == true {
        let why = "the profile no longer exists (erased)".into();
        record(sh, a, "no_profile", 0, why, None);
        return None;
    }
    if let Some(p) = d.cfg.purpose() {
        if !shape::consented(&doc, p) {
            c.blocked.fetch_add(1, Ordering::Relaxed);
            let status = doc["consent"][p]["status"].as_str().unwrap_or("unknown");
            let why = format!("no consent for `{p}` ({status})");
            let line = json!({"key": a.key, "trigger": a.trigger, "destination": a.destination,
                "profile": a.profile, "purpose": p, "consent": status, "detail": why,
                "acted_at": niyet_model::format_rfc3339_millis(a.at_ms),
                "at": niyet_model::format_rfc3339_millis(sh.clock.now_ms())});
            if let Err(e) = append_line(&blocked_path(&sh.dir), &line) {
                tracing::error!(error = %e, "recording a consent block failed");
            }
            record(sh, a, "blocked", 0, why, None);
            return None;
        }
    }
    let now = sh.clock.now_ms();
    // A plain webhook sends the document as it is: only other kinds read it as values.
    let shaped = if d.cfg.kind == Kind::Webhook {
        Shaped::Document
    } else {
        shape::shape(&d.cfg, &doc.to_value(), &a.key, &|| google_time(now))
    };
    let doc = match &shaped {
        Shaped::Unsendable(why) => {
            dead(sh, d, a, 0, why.clone());
            return None;
        }
        Shaped::Document => doc.to_json(),
        _ => Vec::new(),
    };
    Some(Ready { a, shaped, doc })
}

/// The key and body of one request carrying `ready` (one action, or a batch of them) to a
/// destination of `kind`. A lone action's document is moved into the body (it is sent
/// once, retried as it is); a batch's are copied, as a refused batch is split and its
/// halves are built again from them.
fn request_body(kind: Kind, ready: &mut [Ready<'_>]) -> (String, Vec<u8>) {
    if let [one] = ready {
        let body = match &one.shaped {
            Shaped::Json(v) => serde_json::to_vec(v).unwrap_or_default(),
            _ => std::mem::take(&mut one.doc),
        };
        return (one.a.key.clone(), body);
    }
    let keys: Vec<&str> = ready.iter().map(|r| r.a.key.as_str()).collect();
    let key = batch_key(&keys);
    let body = match kind {
        Kind::MetaCapi => {
            let data: Vec<Value> = ready.iter().map(|r| first_of(r, "data")).collect();
            serde_json::to_vec(&json!({ "data": data })).unwrap_or_default()
        }
        Kind::GoogleAds => {
            let conv: Vec<Value> = ready.iter().map(|r| first_of(r, "conversions")).collect();
            serde_json::to_vec(&json!({ "conversions": conv, "partialFailure": true }))
                .unwrap_or_default()
        }
        _ => {
            // The documents as they are, in a JSON array.
            let len = ready.iter().map(|r| r.doc.len() + 1).sum::<usize>() + 1;
            let mut body = Vec::with_capacity(len);
            body.push(b'[');
            for (i, r) in ready.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(&r.doc);
            }
            body.push(b']');
            body
        }
    };
    (key, body)
}

/// The one item of a shaped single-action body's `field` array.
fn first_of(r: &Ready<'_>, field: &str) -> Value {
    match &r.shaped {
        Shaped::Json(v) => v[field][0].clone(),
        _ => Value::Null,
    }
}

/// The idempotency key of a request carrying several actions: derived from theirs, so
/// the same batch retried carries the same key.
pub fn batch_key(keys: &[&str]) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for k in keys {
        h.update(k.as_bytes());
        h.update(b"\n");
    }
    format!("batch-{:032x}", h.digest128())
}

/// Sends the actions of `group` to `d`: those that are to leave go in one request (a
/// batch when there are several; webhook documents in requests of up to `BATCH_BYTES`).
async fn handle(sh: &Shared, d: &Dest, group: &[(Option<u64>, Action)]) {
    let mut ready = Vec::with_capacity(group.len());
    for (_, a) in group {
        if let Some(r) = prepare(sh, d, a).await {
            ready.push(r);
        }
    }
    let lens: Vec<usize> = ready.iter().map(|r| r.doc.len()).collect();
    for part in by_bytes(&lens, BATCH_BYTES) {
        send_request(sh, d, &mut ready[part]).await;
    }
}

/// Cuts items of these lengths, in order, into runs of at most `limit` bytes in all; an
/// item longer than that is a run of its own.
fn by_bytes(lens: &[usize], limit: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut from = 0;
    while from < lens.len() {
        let (mut to, mut bytes) = (from + 1, lens[from]);
        while to < lens.len() && bytes + lens[to] <= limit {
            bytes += lens[to];
            to += 1;
        }
        out.push(from..to);
        from = to;
    }
    out
}

/// Sends one request carrying `ready` (one action, or a batch of them), retried as one
/// until it succeeds or gives up, and settles its actions.
async fn send_request(sh: &Shared, d: &Dest, ready: &mut [Ready<'_>]) {
    let c = &d.counters;
    let (key, body) = request_body(d.cfg.kind, ready);
    let n = ready.len();
    let timeout = Duration::from_millis(d.cfg.timeout_ms);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let now = sh.clock.now_ms();
        let result = match (&ready[0].shaped, &d.client) {
            (Shaped::Mail(m), _) => send::smtp(
                &send::SmtpServer {
                    addr: d.cfg.smtp.as_deref().unwrap_or_default(),
                    tls: d.cfg.smtp_tls,
                    connector: d.smtp_tls.as_ref(),
                    auth: d.cfg.username.as_deref().zip(d.cfg.password.as_deref()),
                },
                d.cfg.from.as_deref().unwrap_or_default(),
                m,
                &key,
                &niyet_model::format_rfc3339_millis(now),
                timeout,
            )
            .await
            .map(|_| 250),
            // Every kind but e-mail has its client (see `open`).
            (_, None) => Err(Failure::Permanent(
                "no HTTP client for this destination".into(),
            )),
            (_, Some(client)) => {
                let ts = now.div_euclid(1000);
                let sig = d
                    .cfg
                    .secret
                    .as_ref()
                    .map(|s| niyet_actions::payload::signature(s.as_bytes(), ts, &body));
                send::post(
                    client,
                    d.url.clone(),
                    body.clone(),
                    Signed {
                        key: &key,
                        timestamp_s: ts,
                        signature: sig,
                        batch: (n > 1).then_some(n),
                    },
                    timeout,
                )
                .await
            }
        };
        match result {
            Ok(code) => {
                let done = sh.clock.now_ms();
                let detail = match n {
                    1 => format!("answered {code}"),
                    _ => format!("answered {code} (a request of {n})"),
                };
                c.sent.fetch_add(n as u64, Ordering::Relaxed);
                for r in ready.iter() {
                    let lat = done.saturating_sub(r.a.at_ms).max(0);
                    let b = BUCKETS
                        .iter()
                        .position(|b| lat as u64 <= *b)
                        .unwrap_or(BUCKETS.len());
                    c.latency[b].fetch_add(1, Ordering::Relaxed);
                    c.latency_sum_ms.fetch_add(lat as u64, Ordering::Relaxed);
                    record(sh, r.a, "sent", attempt, detail.clone(), Some(lat));
                }
                return;
            }
            Err(Failure::Refused(why)) if n > 1 => {
                // One document a receiver will not take must not take the rest of its
                // batch with it: each half goes on its own (its own key, its own
                // retries), down to the documents refused alone, which become dead
                // letters.
                tracing::debug!(destination = %d.cfg.name, actions = n, error = %why, "a batch refused: split");
                let (a, b) = ready.split_at_mut(n / 2);
                Box::pin(send_request(sh, d, a)).await;
                Box::pin(send_request(sh, d, b)).await;
                return;
            }
            Err(Failure::Permanent(why) | Failure::Refused(why)) => {
                for r in ready.iter() {
                    dead(sh, d, r.a, attempt, why.clone());
                }
                return;
            }
            Err(Failure::Retry(why, after)) => {
                if attempt >= d.cfg.max_attempts {
                    let why = format!("gave up after {attempt} attempts: {why}");
                    for r in ready.iter() {
                        dead(sh, d, r.a, attempt, why.clone());
                    }
                    return;
                }
                c.retries.fetch_add(1, Ordering::Relaxed);
                let delay = backoff(&d.cfg, &key, attempt, after);
                tracing::debug!(destination = %d.cfg.name, attempt, actions = n, error = %why, ?delay, "retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// The delay before attempt `attempt + 1`: exponential with "equal jitter" (half fixed,
/// half spread by a hash of the key, so replays wait alike), at least what `Retry-After`
/// asked for (up to an hour).
pub fn backoff(
    cfg: &DestinationConfig,
    key: &str,
    attempt: u32,
    after: Option<Duration>,
) -> Duration {
    let exp = cfg
        .backoff_ms
        .saturating_mul(1u64 << (attempt - 1).min(30))
        .min(cfg.max_backoff_ms)
        .max(1);
    let spread =
        xxhash_rust::xxh3::xxh3_64(format!("{key}/{attempt}").as_bytes()) % exp.div_ceil(2).max(1);
    let d = Duration::from_millis(exp / 2 + spread);
    match after {
        Some(a) => d.max(a.min(Duration::from_secs(3_600))),
        None => d,
    }
}

fn dead(sh: &Shared, d: &Dest, a: &Action, attempts: u32, why: String) {
    d.counters.dead.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(destination = %d.cfg.name, key = %a.key, error = %why, "action is a dead letter");
    let line = json!({"action": a, "error": why, "attempts": attempts,
                      "at": niyet_model::format_rfc3339_millis(sh.clock.now_ms())});
    if let Err(e) = append_line(&dead_path(&sh.dir, &d.cfg.name), &line) {
        tracing::error!(error = %e, "writing a dead letter failed");
    }
    record(sh, a, "dead", attempts, why, None);
}

/// `yyyy-mm-dd hh:mm:ss+00:00`, as Google Ads wants conversion times.
fn google_time(ms: i64) -> String {
    let s = niyet_model::format_rfc3339_millis(ms);
    // 2023-11-14T22:13:20.000Z → 2023-11-14 22:13:20+00:00
    format!("{} {}+00:00", &s[..10], &s[11..19])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_written_as_text_is_the_document_as_values() {
        let mut d = Document::default();
        d.head.insert("id".into(), json!("k1"));
        d.head
            .insert("consent".into(), json!({"email": {"allowed": true}}));
        d.head.insert("profile".into(), json!({"id": "p1"}));
        // Without texts, the head is the whole document.
        let v: Value = serde_json::from_slice(&d.to_json()).unwrap();
        assert_eq!(v, d.to_value());
        assert_eq!(v["profile"]["id"], "p1");
        // The texts take the place of a `profile` in the head and go in as they are.
        d.profile = Some(br#"{"id":"p2","traits":{"name":"Ay\"\u015fe"}}"#.to_vec());
        d.event = Some(br#"{"type":"niyet.erased"}   "#.to_vec());
        let text = d.to_json();
        let v: Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(v, d.to_value());
        assert_eq!(v["profile"]["traits"]["name"], "Ay\"şe");
        assert_eq!(v["event"]["type"], "niyet.erased");
        assert_eq!(d["consent"]["email"]["allowed"], true);
        assert_eq!(d["missing"], Value::Null);
        assert!(shape::consented(&d, "email") && !shape::consented(&d, "ads"));
    }

    #[test]
    fn backoff_grows_with_jitter_and_honours_retry_after() {
        let cfg: DestinationConfig = serde_json::from_value(
            json!({"name": "w", "kind": "webhook", "url": "http://x", "backoff_ms": 100, "max_backoff_ms": 1000}),
        )
        .unwrap();
        let d1 = backoff(&cfg, "k", 1, None);
        let d3 = backoff(&cfg, "k", 3, None);
        assert!(
            d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100),
            "{d1:?}"
        );
        assert!(
            d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400),
            "{d3:?}"
        );
        assert!(backoff(&cfg, "k", 20, None) <= Duration::from_millis(1000));
        assert_eq!(backoff(&cfg, "k", 3, None), d3, "deterministic");
        assert_eq!(
            backoff(&cfg, "k", 1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(google_time(1_700_000_000_000), "2023-11-14 22:13:20+00:00");
    }

    #[test]
    fn destinations_are_validated() {
        let bad: DestinationConfig =
            serde_json::from_value(json!({"name": "m", "kind": "email"})).unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("smtp"));
        let bad: DestinationConfig =
            serde_json::from_value(json!({"name": "w", "kind": "webhook", "url": "ftp://x"}))
                .unwrap();
        assert!(bad.validate().is_err());
        assert_eq!(bad.purpose(), None);
        let bad: DestinationConfig = serde_json::from_value(
            json!({"name": "w", "kind": "webhook", "url": "http://exa mple.com/hook"}),
        )
        .unwrap();
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("not a valid address"), "{e}");
        let with_batch = |kind: &str, n: u32| {
            let d: DestinationConfig = serde_json::from_value(
                json!({"name": "b", "kind": kind, "url": "http://x", "batch_max": n}),
            )
            .unwrap();
            d.validate().map(|()| d.batch()).map_err(|e| e.to_string())
        };
        assert_eq!(with_batch("webhook", 100), Ok(100));
        assert_eq!(with_batch("meta_capi", 1000), Ok(1000));
        assert_eq!(with_batch("google_ads", 1), Ok(1));
        assert_eq!(with_batch("push", 1), Ok(1));
        assert!(with_batch("push", 2)
            .unwrap_err()
            .contains("`batch_max` above 1 is for"));
        assert!(with_batch("crm", 10).is_err());
        assert!(with_batch("webhook", 0).unwrap_err().contains("at least 1"));
        assert!(with_batch("webhook", 1001)
            .unwrap_err()
            .contains("at most 1000"));
    }

    #[test]
    fn batches_are_cut_by_bytes_in_order() {
        assert_eq!(by_bytes(&[], 10), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(by_bytes(&[3, 3, 3, 3], 10), vec![0..3, 3..4]);
        assert_eq!(by_bytes(&[5, 5, 5], 10), vec![0..2, 2..3]);
        assert_eq!(by_bytes(&[12, 1, 1, 20], 10), vec![0..1, 1..3, 3..4]);
        // Conversions carry no document: one run, whatever their count.
        assert_eq!(by_bytes(&[0; 1000], 10), vec![0..1000]);
    }

    #[test]
    fn a_batch_body_is_built_again_alike_for_its_halves() {
        let actions: Vec<Action> = (0..4)
            .map(|i| Action {
                key: format!("k{i}"),
                trigger: "t".into(),
                destination: "d".into(),
                profile: format!("p{i}"),
                origin: i,
                at_ms: 0,
                outcome: Outcome::Send,
            })
            .collect();
        let ready = |kind: Kind| -> Vec<Ready<'_>> {
            actions
                .iter()
                .map(|a| Ready {
                    a,
                    shaped: match kind {
                        Kind::MetaCapi => {
                            Shaped::Json(json!({"data": [{"event_id": a.key.clone()}]}))
                        }
                        _ => Shaped::Document,
                    },
                    doc: format!(r#"{{"id":"{}"}}"#, a.key).into_bytes(),
                })
                .collect()
        };
        for kind in [Kind::MetaCapi, Kind::Webhook] {
            let mut all = ready(kind);
            let (key, whole) = request_body(kind, &mut all);
            assert_eq!(key, batch_key(&["k0", "k1", "k2", "k3"]));
            // A refused batch is split: its halves are built from the same items.
            let (half, b) = request_body(kind, &mut all[..2]);
            assert_eq!(half, batch_key(&["k0", "k1"]));
            let (_, again) = request_body(kind, &mut all);
            assert_eq!(again, whole, "{kind:?}");
            let text = String::from_utf8(b).unwrap();
            assert!(text.contains("k0") && text.contains("k1") && !text.contains("k2"));
            // A lone action's body is its document (or its shaped body) as it is.
            let (one_key, one) = request_body(kind, &mut all[3..]);
            assert_eq!(one_key, "k3");
            assert!(String::from_utf8(one).unwrap().contains("k3"));
        }
    }

    #[test]
    fn a_batch_key_follows_the_keys_it_carries() {
        let k = batch_key(&["a1", "b2"]);
        assert_eq!(k, batch_key(&["a1", "b2"]));
        assert!(k.starts_with("batch-") && k.len() == 6 + 32, "{k}");
        assert_ne!(k, batch_key(&["b2", "a1"]));
        assert_ne!(k, batch_key(&["a1", "b2", "c3"]));
        assert_ne!(batch_key(&["a", "b1"]), batch_key(&["ab", "1"]));
    }

    #[test]
    fn a_ca_file_that_is_missing_or_not_pem_stops_the_opening() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let missing = dir.path().join("missing.pem");
        for (file, says) in [(&missing, "cannot be read"), (&junk, "no certificate")] {
            let cfg: DestinationConfig = serde_json::from_value(json!({
                "name": "hook", "kind": "webhook", "url": "https://127.0.0.1:9/x",
                "ca_file": file.display().to_string(),
            }))
            .unwrap();
            let e = match Delivery::open(
                &dir.path().join("outbox"),
                vec![cfg],
                Arc::new(niyet_model::ManualClock::new(0)),
                Arc::new(|_: &Action| Document::default()),
            ) {
                Ok(_) => panic!("opened with a bad `ca_file`"),
                Err(e) => e.to_string(),
            };
            assert!(e.contains("destination `hook`") && e.contains(says), "{e}");
        }
        let mail: DestinationConfig = serde_json::from_value(json!({
            "name": "m", "kind": "email", "smtp": "127.0.0.1:25", "from": "a@b.c", "ca_file": "x.pem",
        }))
        .unwrap();
        assert!(mail.validate().unwrap_err().to_string().contains("ca_file"));
    }

    #[test]
    fn an_smtp_login_needs_tls_and_both_halves() {
        let mail = |extra: Value| {
            let mut v =
                json!({"name": "m", "kind": "email", "smtp": "127.0.0.1:587", "from": "a@b.c"});
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            serde_json::from_value::<DestinationConfig>(v)
                .unwrap()
                .validate()
                .map_err(|e| e.to_string())
        };
        let login = json!({"username": "u", "password": "p"});
        assert!(mail(login.clone()).unwrap_err().contains("in clear"));
        for tls in ["starttls", "tls"] {
            let mut ok = login.clone();
            ok["smtp_tls"] = json!(tls);
            assert_eq!(mail(ok), Ok(()));
        }
        let half = json!({"smtp_tls": "starttls", "username": "u"});
        assert!(mail(half).unwrap_err().contains("both"));
        let hook: DestinationConfig = serde_json::from_value(json!({
            "name": "w", "kind": "webhook", "url": "http://127.0.0.1:9/x", "smtp_tls": "tls",
        }))
        .unwrap();
        let e = hook.validate().unwrap_err().to_string();
        assert!(e.contains("for e-mail destinations"), "{e}");
        assert!(serde_json::from_value::<DestinationConfig>(
            json!({"name": "m", "kind": "email", "smtp_tls": "ssl"})
        )
        .is_err());
    }

    /// Nice values of this process's threads named `name` (Linux answers `getpriority`
    /// for a thread id with that thread's).
    fn nice_of(name: &str) -> Vec<i64> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name)
            })
            .filter_map(|t| t.file_name().to_str()?.parse::<i32>().ok())
            .filter_map(|tid| {
                let pid = rustix::process::Pid::from_raw(tid)?;
                rustix::process::getpriority_process(Some(pid)).ok()
            })
            .map(i64::from)
            .collect()
    }

    #[test]
    fn sending_and_the_outbox_writer_run_below_the_other_threads() {
        let dir = tempfile::tempdir().unwrap();
        let cfg: DestinationConfig = serde_json::from_value(
            json!({"name": "hook", "kind": "webhook", "url": "http://127.0.0.1:9/x"}),
        )
        .unwrap();
        let base = rustix::process::getpriority_process(None).unwrap() as i64;
        let d = Delivery::open(
            &dir.path().join("outbox"),
            vec![
                cfg.clone(),
                DestinationConfig {
                    name: "other".into(),
                    ..cfg
                },
            ],
            Arc::new(niyet_model::ManualClock::new(0)),
            Arc::new(|_: &Action| Document::default()),
        )
        .unwrap();
        d.start().unwrap();
        let want = (base + SEND_NICE as i64).min(19);
        // The threads set their own priority as they start.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (send, outbox) = (nice_of("niyet-send"), nice_of("niyet-outbox"));
            if send.len() == 2
                && send.iter().chain(&outbox).all(|&n| n == want)
                && !outbox.is_empty()
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "send {send:?}, outbox {outbox:?}, want {want}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // This thread (and so the server's others) keeps its priority.
        assert_eq!(
            rustix::process::getpriority_process(None).unwrap() as i64,
            base
        );
        d.close();
        assert!(
            nice_of("niyet-send").is_empty(),
            "the sending threads stopped"
        );
    }
}
