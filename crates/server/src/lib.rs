//! Niyet's HTTP server: Segment-compatible ingest, the admin API, health and metrics.
//!
//! Request path of an ingest call: size limit → transport decoding (`niyet_ingest::body`)
//! → envelope and write key → per-message validation and normalisation → one append to
//! the event log (group commit, acknowledged only once durable) and, for invalid
//! messages, one append to the quarantine log → `200 {"success":true}`.

pub mod access;
mod actions;
pub mod admin;
mod analytics;
pub mod catalogue;
pub mod config;
pub mod credentials;
pub mod ingest;
mod intent;
pub mod metrics;
pub mod openapi;
pub mod position;
mod privacy;
pub mod profiles;
pub mod quarantine;
mod segments;
pub mod spend;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use niyet_ingest::TrackingPlan;
use niyet_log::{Appended, Log, LogConfig, LogError, NewRecord};
use niyet_model::Clock;
use serde::Serialize;
use tokio::sync::Semaphore;

pub use config::{Config, ConfigError};
pub use quarantine::Quarantine;

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The log could not be opened.
    #[error("event log: {0}")]
    Log(#[from] LogError),
    /// Profile state could not be restored.
    #[error("profiles: {0}")]
    Pipeline(#[from] niyet_pipeline::PipelineError),
    /// Network or file trouble.
    #[error("{context}: {source}")]
    Io {
        /// What Niyet was doing.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

/// A source as the server knows it.
#[derive(Debug, Clone)]
pub struct Source {
    /// Its name.
    pub name: String,
    /// Its tracking plan.
    pub plan: Option<Arc<TrackingPlan>>,
    /// What it keeps of each message (none: everything).
    pub minimise: Option<Arc<niyet_ingest::Minimise>>,
}

/// Everything a request handler needs.
pub struct AppState {
    /// The event log.
    pub log: Arc<Log>,
    /// Identity and profiles derived from the log.
    pub pipeline: Arc<niyet_pipeline::Pipeline>,
    /// Quarantined messages.
    pub quarantine: Arc<Quarantine>,
    /// Write keys and admin tokens, their rate limits and the audit log.
    pub keys: access::Keys,
    /// Source name → source.
    pub sources_by_name: HashMap<String, Source>,
    /// Processing time.
    pub clock: Arc<dyn Clock>,
    /// Counters.
    pub metrics: metrics::Metrics,
    /// Bounds requests waiting for the log.
    pub pending: Semaphore,
    /// Request numbering (for generated message ids).
    pub seq: AtomicU64,
    /// Limits from the config.
    pub limits: config::Limits,
    /// Marketing spend for ROI and cost per acquisition.
    pub spend: spend::Spend,
    /// The latest intent model and the number of the next one.
    pub intent: std::sync::Mutex<Option<Arc<intent::IntentModel>>>,
    pub intent_versions: AtomicU64,
    /// Report defaults (`[analytics]`, the conversion event filled in).
    pub analytics: config::AnalyticsSection,
    /// Segment entries and exits as they happen (for the live stream).
    pub segment_changes: segments::Live<niyet_pipeline::SegmentChange>,
    /// Live score crossings (`GET /v1/stream/scores`).
    pub score_crossings: segments::Live<niyet_pipeline::ScoreCrossing>,
    /// The outbox and destinations (none configured: `None`).
    pub delivery: Option<niyet_delivery::Delivery>,
    /// The triggers in force.
    pub triggers: Vec<niyet_actions::TriggerDef>,
    /// The configured intent scores.
    pub scores: Vec<niyet_actions::ScoreDef>,
    /// Products, prices and stock for offers.
    pub catalogue: Arc<catalogue::Catalogue>,
    /// Consent policies and the erasure mode.
    pub privacy: config::PrivacySection,
}

/// An API error: HTTP status plus `{"code","message"}`.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: &'static str,
    /// For people.
    pub message: String,
    /// Seconds for `Retry-After`, on 429 and 503.
    pub retry_after: Option<u64>,
    /// More about the error (e.g. where a rule fails to parse), as `details`.
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    /// Builds one.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            details: None,
        }
    }

    /// Adds `details` to the error body.
    pub fn with_details(mut self, d: serde_json::Value) -> Self {
        self.details = Some(d);
        self
    }

    pub(crate) fn from_log(e: &LogError) -> Self {
        tracing::error!(error = %e, "event log failure");
        let mut err = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            format!("events could not be stored durably: {e}"),
        );
        err.retry_after = Some(5);
        err
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a serde_json::Value>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&ErrorBody {
            code: self.code,
            message: &self.message,
            details: self.details.as_ref(),
        })
        .unwrap_or_default();
        let mut r = (
            self.status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = axum::http::HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        r
    }
}

/// Replaces `path` with `bytes` durably: written to a temporary file, synced, renamed.
pub fn write_synced(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Appends to a log and waits (without blocking the runtime) until durable.
pub async fn append(log: &Log, records: Vec<NewRecord>) -> Result<Vec<Appended>, LogError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    log.append(
        records,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    rx.await.unwrap_or(Err(LogError::Closed))
}

/// A bound, ready-to-run server.
pub struct Server {
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    /// The admin token in force (generated ones included).
    pub admin_token: String,
    /// Write keys in force: (source name, key).
    pub write_keys: Vec<(String, String)>,
    retention_every: Duration,
    retention_by_event: BTreeMap<String, u64>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Server {
    /// Opens storage and binds the listener.
    pub async fn bind(cfg: Config, clock: Arc<dyn Clock>) -> Result<Server, ServerError> {
        let plans = cfg.validate()?;
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| ServerError::Io {
            context: format!("creating data directory {}", cfg.data_dir.display()),
            source: e,
        })?;
        let creds = credentials::resolve(&cfg, &cfg.data_dir)?;
        let now = clock.now_ms();
        let mut lc = LogConfig::new(cfg.data_dir.join("events"));
        lc.segment_bytes = cfg.log.segment_mb << 20;
        lc.dedup_window_ms = (cfg.log.dedup_window_hours * 3_600_000) as i64;
        lc.dedup_max_keys = cfg.log.dedup_max_keys;
        lc.retention_max_age_ms = cfg.log.retention_days.map(|d| (d * 86_400_000) as i64);
        lc.retention_max_bytes = cfg
            .log
            .retention_max_gb
            .map(|g| (g * (1u64 << 30) as f64) as u64);
        let data_dir = cfg.data_dir.clone();
        let quarantine_days = cfg.log.quarantine_retention_days;
        let mut pcfg = cfg.pipeline();
        pcfg.clock = niyet_pipeline::SharedClock(clock.clone());
        let segment_changes = segments::Live::new(8192);
        pcfg.on_change = Some(niyet_pipeline::ChangeHook {
            listening: Arc::new(segment_changes.listening()),
            send: Arc::new(segment_changes.sender()),
        });
        let score_crossings = segments::Live::new(8192);
        pcfg.on_crossing = Some(niyet_pipeline::CrossingHook {
            listening: Arc::new(score_crossings.listening()),
            send: Arc::new(score_crossings.sender()),
        });
        let dests = cfg.destinations.clone();
        let delivery_dir = cfg.data_dir.join("delivery");
        let dclock = clock.clone();
        let catalogue = Arc::new(catalogue::Catalogue::new(&cfg.data_dir));
        let offers = actions::Offers {
            triggers: cfg
                .triggers
                .iter()
                .filter(|t| t.offer)
                .map(|t| t.name.clone())
                .collect(),
            policy: cfg.offers.clone(),
            catalogue: catalogue.clone(),
            order_event: cfg.profiles.order_event.clone(),
            cart_event: "Product Added".into(),
            privacy: cfg.privacy.clone(),
        };
        let cat = catalogue.clone();
        let (log, qlog, pipeline, delivery) = tokio::task::spawn_blocking(move || {
            let log = Arc::new(Log::open(lc, now)?);
            // Actions need the pipeline to compose their documents, and the pipeline
            // hands its actions to the outbox: the pipeline is filled in once started.
            let started: Arc<std::sync::OnceLock<Arc<niyet_pipeline::Pipeline>>> =
                Default::default();
            let delivery = if dests.is_empty() && pcfg.triggers.is_empty() {
                None
            } else {
                let d = niyet_delivery::Delivery::open(
                    &delivery_dir,
                    dests,
                    dclock,
                    actions::composer(started.clone(), log.clone(), offers),
                )
                .map_err(|e| ServerError::Io {
                    context: "opening the outbox".into(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                let (a, b) = (d.clone(), d.clone());
                pcfg.on_action = Some(niyet_pipeline::ActionHook {
                    send: Arc::new(move |x, live| a.emit(x, live)),
                    sync: Arc::new(move || b.sync()),
                });
                Some(d)
            };
            let mut qc = LogConfig::new(data_dir.join("quarantine"));
            qc.segment_bytes = 16 << 20;
            qc.dedup_max_keys = 0;
            qc.retention_max_age_ms = quarantine_days.map(|d| (d * 86_400_000) as i64);
            let q = Quarantine::open(Log::open(qc, now)?)?;
            let p = Arc::new(niyet_pipeline::Pipeline::start(log.clone(), pcfg)?);
            let _ = started.set(p.clone());
            cat.attach(p.clone(), now).map_err(|e| ServerError::Io {
                context: "importing catalogue.json".into(),
                source: e,
            })?;
            Ok::<_, ServerError>((log, q, p, delivery))
        })
        .await
        .map_err(|e| ServerError::Io {
            context: "opening storage".into(),
            source: std::io::Error::other(e.to_string()),
        })??;
        let mut by_name = HashMap::new();
        let mut configured = vec![(
            "admin".to_string(),
            access::KeyKind::Admin,
            None,
            creds.admin_token.clone(),
        )];
        for (name, key) in &creds.write_keys {
            let s = Source {
                name: name.clone(),
                plan: plans.get(name).cloned().map(Arc::new),
                minimise: cfg
                    .sources
                    .iter()
                    .find(|c| c.name == *name)
                    .map(|c| c.minimise.clone())
                    .filter(niyet_ingest::Minimise::is_active)
                    .map(Arc::new),
            };
            configured.push((
                name.clone(),
                access::KeyKind::Write,
                Some(name.clone()),
                key.clone(),
            ));
            by_name.insert(name.clone(), s);
        }
        let keys = access::Keys::open(
            &cfg.data_dir,
            configured,
            cfg.access.admin_rate_per_s,
            cfg.access.write_rate_per_s,
        )
        .map_err(|e| ServerError::Io {
            context: "opening the keys".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let state = Arc::new(AppState {
            segment_changes,
            score_crossings,
            log,
            pipeline,
            delivery,
            triggers: cfg.triggers.clone(),
            scores: cfg.scores.clone(),
            catalogue,
            privacy: cfg.privacy.clone(),
            quarantine: Arc::new(qlog),
            keys,
            sources_by_name: by_name,
            clock,
            metrics: metrics::Metrics::default(),
            pending: Semaphore::new(cfg.limits.max_pending_requests),
            seq: AtomicU64::new(0),
            limits: cfg.limits.clone(),
            intent: std::sync::Mutex::new(None),
            spend: spend::Spend::open(&cfg.data_dir),
            intent_versions: AtomicU64::new(0),
            analytics: {
                let mut a = cfg.analytics.clone();
                if a.conversion_event.is_empty() {
                    a.conversion_event = cfg.profiles.order_event.clone();
                }
                a
            },
        });
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| ServerError::Io {
                context: format!("listening on {}", cfg.listen),
                source: e,
            })?;
        Ok(Server {
            listener,
            state,
            admin_token: creds.admin_token,
            write_keys: creds.write_keys,
            retention_every: Duration::from_secs(60),
            retention_by_event: cfg.log.retention_by_event.clone(),
            tls: cfg.tls.as_ref().map(tls_acceptor).transpose()?,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        self.listener.local_addr().map_err(|e| ServerError::Io {
            context: "reading the bound address".into(),
            source: e,
        })
    }

    /// Shared state (for in-process tools such as the demo).
    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves until `shutdown` resolves, then finishes queued appends and closes the log.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let state = self.state.clone();
        if let Some(d) = &state.delivery {
            d.start().map_err(|source| ServerError::Io {
                context: "starting the sending threads".into(),
                source,
            })?;
        }
        let retention = tokio::spawn(retention_loop(
            state.clone(),
            self.retention_every,
            self.retention_by_event.clone(),
        ));
        let retrain = tokio::spawn(intent::retrain_loop(state.clone()));
        let refit = tokio::spawn(analytics::refit_loop(state.clone()));
        let app = router(state.clone());
        let result = serve(self.listener, app, &state.limits, self.tls, shutdown).await;
        retention.abort();
        retrain.abort();
        refit.abort();
        let st = state.clone();
        let _ = tokio::task::spawn_blocking(move || {
            st.pipeline.close();
            if let Some(d) = &st.delivery {
                d.close();
            }
            st.log.close();
            st.quarantine.log().close();
        })
        .await;
        result
    }
}

/// Builds the TLS acceptor of `[tls]`.
fn tls_acceptor(t: &config::TlsSection) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let fail = |context: String, e: &dyn std::fmt::Display| ServerError::Io {
        context,
        source: std::io::Error::other(e.to_string()),
    };
    let reading_cert = || format!("reading the TLS certificate {}", t.cert.display());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&t.cert)
        .map_err(|e| fail(reading_cert(), &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| fail(reading_cert(), &e))?;
    if certs.is_empty() {
        return Err(fail(reading_cert(), &"no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(&t.key)
        .map_err(|e| fail(format!("reading the TLS key {}", t.key.display()), &e))?;
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| fail("setting up TLS".into(), &e))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| fail("the TLS certificate and key do not fit together".into(), &e))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Accepts connections until `shutdown`, each served by hyper with a deadline for the
/// request headers (slow clients are cut off; with TLS the handshake counts against it);
/// then lets open requests finish (at most 5 s).
async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: &config::Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let header_timeout = Duration::from_millis(limits.header_timeout_ms.max(1));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let svc = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_buf_size(256 * 1024);
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => {
                    let _ = watcher
                        .watch(b.serve_connection(TokioIo::new(stream), svc))
                        .await;
                }
                Some(acceptor) => {
                    let Ok(Ok(s)) =
                        tokio::time::timeout(header_timeout, acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    let _ = watcher
                        .watch(b.serve_connection(TokioIo::new(s), svc))
                        .await;
                }
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(5)) => {}
    }
    Ok(())
}

/// What one retention pass removed.
#[derive(Debug, Default, Clone, Copy)]
pub struct RetentionPass {
    /// Events in whole segments past the global limits.
    pub events_removed: u64,
    /// Quarantined messages past theirs.
    pub quarantined_removed: u64,
    /// Events erased by the per-event-type limits.
    pub events_expired: u64,
}

/// Runs retention once at the clock's time: the global limits of the log and the
/// quarantine, then each `retention_by_event` rule from its cursor (one per rule, kept by
/// the caller between passes).
pub fn retention_pass(
    st: &AppState,
    by_event: &BTreeMap<String, u64>,
    cursors: &mut Vec<u64>,
) -> RetentionPass {
    let now = st.clock.now_ms();
    cursors.resize(by_event.len(), 0);
    let mut out = RetentionPass::default();
    match st.log.enforce_retention(now) {
        Ok(r) => out.events_removed = r.records_removed,
        Err(e) => tracing::warn!(error = %e, "retention pass failed"),
    }
    match st.quarantine.enforce_retention(now) {
        Ok(n) => out.quarantined_removed = n,
        Err(e) => tracing::warn!(error = %e, "quarantine retention failed"),
    }
    for ((name, days), cursor) in by_event.iter().zip(cursors.iter_mut()) {
        let before = now - (*days as i64) * 86_400_000;
        match st.pipeline.expire_events(name, before, *cursor) {
            Ok((next, n)) => {
                *cursor = next;
                out.events_expired += n;
            }
            Err(e) => tracing::warn!(event = %name, error = %e, "event retention failed"),
        }
    }
    out
}

async fn retention_loop(state: Arc<AppState>, every: Duration, by_event: BTreeMap<String, u64>) {
    let mut tick = tokio::time::interval(every);
    let mut cursors = Vec::new();
    loop {
        tick.tick().await;
        let (st, rules, mut c) = (
            state.clone(),
            by_event.clone(),
            std::mem::take(&mut cursors),
        );
        let Ok((r, c)) = tokio::task::spawn_blocking(move || {
            let r = retention_pass(&st, &rules, &mut c);
            (r, c)
        })
        .await
        else {
            continue;
        };
        cursors = c;
        if r.events_removed + r.quarantined_removed + r.events_expired > 0 {
            tracing::info!(
                events = r.events_removed,
                quarantined = r.quarantined_removed,
                expired_by_event = r.events_expired,
                "retention removed old data"
            );
        }
    }
}

/// All routes.
pub fn router(state: Arc<AppState>) -> Router {
    ingest::routes()
        .merge(admin::routes())
        .merge(profiles::routes())
        .merge(segments::routes())
        .merge(analytics::routes())
        .merge(intent::routes())
        .merge(spend::routes())
        .merge(actions::routes())
        .merge(catalogue::routes())
        .merge(access::routes())
        .merge(privacy::routes())
        .fallback(openapi::no_route)
        .method_not_allowed_fallback(openapi::wrong_method)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::layer,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(
            state.limits.max_admin_body_bytes,
        ))
        .with_state(state)
}
