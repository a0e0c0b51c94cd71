//! `niyet.toml`: one serde tree, unknown keys refused, every problem reported at once.
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! data_dir = "./niyet-data"
//! admin_token = "…"            # or NIYET_ADMIN_TOKEN; generated on first start if absent
//!
//! [tls]                          # optional: HTTPS on the listener
//! cert = "/etc/niyet/cert.pem"
//! key = "/etc/niyet/key.pem"
//!
//! [log]
//! segment_mb = 128
//! dedup_window_hours = 24
//! dedup_max_keys = 4000000
//! retention_days = 395           # raw events kept ~13 months; omit to keep forever
//! retention_max_gb = 100
//! quarantine_retention_days = 30
//! [log.retention_by_event]       # shorter retention for some events (days)
//! "Page Viewed" = 90
//!
//! [limits]
//! max_batch_bytes = 512000       # per request, after decompression (Segment: 500 KB)
//! max_message_bytes = 32768      # per message (Segment: 32 KB)
//! max_pending_requests = 2048    # beyond this many requests waiting for the log: 429
//! header_timeout_ms = 10000      # slow clients still sending headers are cut off
//! body_timeout_ms = 30000        # … and still sending the body get 408
//! max_admin_body_bytes = 67108864
//!
//! [[sources]]
//! name = "web"
//! write_key = "…"
//! [sources.minimise]               # data minimisation, before anything is stored
//! ip = "truncate"                # keep | drop | truncate (IPv4 /24, IPv6 /48)
//! drop_properties = ["card_number"]
//! hash_identifiers = ["email", "phone"]   # stored as SHA-256 of the normalised value
//! [sources.tracking_plan]
//! unplanned = "accept"           # accept | quarantine | reject
//! invalid = "quarantine"
//! [sources.tracking_plan.events."Order Completed"]
//! type = "object"
//! required = ["revenue"]
//! properties = { revenue = { type = "number", minimum = 0 } }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use niyet_ingest::{PlanAction, TrackingPlan};
use serde::Deserialize;

/// A configuration that cannot be used, with every problem found.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {message}")]
    Read {
        /// Which file.
        path: String,
        /// Why.
        message: String,
    },
    /// The TOML is malformed or has unknown keys.
    #[error("{path}: {message}")]
    Parse {
        /// Which file.
        path: String,
        /// What and where.
        message: String,
    },
    /// Values that do not fit together.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where all data lives.
    pub data_dir: PathBuf,
    /// Token for the admin API (`Authorization: Bearer …`).
    pub admin_token: Option<String>,
    /// TLS for the listener (`[tls] cert`, `key`: PEM files); none: plain HTTP.
    pub tls: Option<TlsSection>,
    /// Event log settings.
    pub log: LogSection,
    /// Request limits.
    pub limits: Limits,
    /// Rate limits of keys.
    pub access: AccessSection,
    /// Sources and their write keys.
    pub sources: Vec<SourceConfig>,
    /// Identity resolution.
    pub identity: IdentitySection,
    /// Profile processing.
    pub profiles: ProfilesSection,
    /// Segments defined here (`[[segments]]`).
    pub segments: Vec<SegmentConfig>,
    /// The built-in lifecycle and behaviour segments (`[lifecycle]`).
    pub lifecycle: LifecycleSection,
    /// Attribution and lifetime value (`[analytics]`).
    pub analytics: AnalyticsSection,
    /// Triggers and journeys (`[[triggers]]`).
    pub triggers: Vec<niyet_actions::TriggerDef>,
    /// Where actions go (`[[destinations]]`).
    pub destinations: Vec<niyet_delivery::DestinationConfig>,
    /// Intent scores (`[[scores]]`).
    pub scores: Vec<niyet_actions::ScoreDef>,
    /// How cart offers are chosen (`[offers]`).
    pub offers: niyet_actions::offer::Policy,
    /// Consent and erasure (`[privacy]`).
    pub privacy: PrivacySection,
}

/// `[tls]`: serve HTTPS with this certificate chain and private key (PEM).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// `[privacy]`.
///
/// ```toml
/// [privacy]
/// erasure = "suppress"      # or "delete": erase without dropping later events
/// [privacy.consent]         # purpose = default policy: opt_in (denied until granted)
/// email = "opt_in"          # or opt_out (allowed until denied)
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacySection {
    /// `suppress` (default) or `delete`.
    pub erasure: ErasureMode,
    /// Default policy per purpose; purposes not listed are opt-in.
    pub consent: BTreeMap<String, ConsentDefault>,
}

/// What an erasure does to later events of the person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErasureMode {
    /// Their identifiers go on the suppression list: later events are dropped.
    Suppress,
    /// Only what is held now is erased.
    Delete,
}

/// A purpose's policy when the customer said nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentDefault {
    /// Denied until granted (KVKK and GDPR for marketing messages).
    OptIn,
    /// Allowed until denied.
    OptOut,
}

impl Default for PrivacySection {
    fn default() -> Self {
        Self {
            erasure: ErasureMode::Suppress,
            consent: BTreeMap::new(),
        }
    }
}

/// Purposes known without configuration, with their default policies.
pub const PURPOSES: [(&str, ConsentDefault); 6] = [
    ("email", ConsentDefault::OptIn),
    ("sms", ConsentDefault::OptIn),
    ("push", ConsentDefault::OptIn),
    ("ads", ConsentDefault::OptIn),
    ("analytics", ConsentDefault::OptOut),
    ("personalization", ConsentDefault::OptOut),
];

impl PrivacySection {
    /// The policy of a purpose: configured, else built in, else opt-in.
    pub fn policy(&self, purpose: &str) -> ConsentDefault {
        self.consent.get(purpose).copied().unwrap_or_else(|| {
            PURPOSES
                .iter()
                .find(|(p, _)| *p == purpose)
                .map_or(ConsentDefault::OptIn, |(_, d)| *d)
        })
    }

    /// Every purpose with a policy (built in and configured; a name may come twice).
    pub fn purposes(&self) -> impl Iterator<Item = &str> {
        PURPOSES
            .iter()
            .map(|(p, _)| *p)
            .chain(self.consent.keys().map(String::as_str))
    }
}

/// `[analytics]`: defaults of the attribution and lifetime-value reports (each can be
/// overridden per request).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsSection {
    /// The conversion event; empty means `profiles.order_event`.
    pub conversion_event: String,
    /// Touchpoints up to this many days before a conversion count.
    pub lookback_days: u32,
    /// Minutes of inactivity that end a visit (a visit without campaign data or referrer
    /// is a direct touchpoint).
    pub session_gap_minutes: u32,
    /// Half-life of the time-decay model, in hours.
    pub time_decay_half_life_hours: f64,
    /// Days ahead the predicted lifetime value covers.
    pub clv_horizon_days: u32,
    /// The intent model's label: an order within this many days.
    pub intent_horizon_days: u32,
    /// Retrain the intent model every this many hours (0: only on request).
    pub intent_retrain_hours: u32,
    /// Refit and publish the lifetime-value model rules read (`clv`, `p_alive`) every
    /// this many hours, the first time a minute after start (0: only on request).
    pub clv_refit_hours: u32,
    /// Channel rules tried before the built-in classification, in order
    /// (`[[analytics.channel_rules]]` with `source`, `medium` and/or `campaign_prefix`, and
    /// `channel`).
    pub channel_rules: Vec<niyet_analytics::channel::Rule>,
}

impl Default for AnalyticsSection {
    fn default() -> Self {
        Self {
            conversion_event: String::new(),
            lookback_days: 30,
            session_gap_minutes: 30,
            time_decay_half_life_hours: 168.0,
            clv_horizon_days: 365,
            intent_horizon_days: 7,
            intent_retrain_hours: 24,
            clv_refit_hours: 24,
            channel_rules: Vec::new(),
        }
    }
}

/// `[[segments]]`: a segment in the rule language.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentConfig {
    /// Unique name.
    pub name: String,
    /// The rule, e.g. `count(Order Completed in 90d) >= 2`.
    pub rule: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
}

/// `[lifecycle]`: thresholds of the built-in segments. Orders are the `profiles.order_event`
/// events; money is their `revenue` property.
///
/// - **New**: first order within the last `new_days`.
/// - **Active**: at least `active_orders` orders within the last `active_days`.
/// - **At-Risk**: a regular buyer (at least `regular_orders` orders ever) with no order in
///   the last `at_risk_days`, not yet Lost.
/// - **Lost**: was active (at least `active_orders` orders ever), no order in `lost_days`.
/// - **VIP**: spent over `vip_spend` within `vip_days` with an average basket over
///   `vip_average_basket` in that window.
/// - **Undecided**: viewed a product and added one to the cart within `undecided_days`
///   but ordered nothing in that time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleSection {
    /// Whether the built-in segments exist.
    pub enabled: bool,
    pub new_days: u32,
    pub active_orders: u32,
    pub active_days: u32,
    pub regular_orders: u32,
    pub at_risk_days: u32,
    pub lost_days: u32,
    pub vip_spend: f64,
    pub vip_average_basket: f64,
    pub vip_days: u32,
    pub undecided_days: u32,
}

impl Default for LifecycleSection {
    fn default() -> Self {
        Self {
            enabled: true,
            new_days: 30,
            active_orders: 2,
            active_days: 90,
            regular_orders: 3,
            at_risk_days: 60,
            lost_days: 180,
            vip_spend: 10_000.0,
            vip_average_basket: 500.0,
            vip_days: 365,
            undecided_days: 30,
        }
    }
}

impl LifecycleSection {
    /// The built-in segments as rule texts, for order events named `order`.
    pub fn rules(&self, order: &str) -> Vec<(String, String)> {
        if !self.enabled {
            return Vec::new();
        }
        let o = format!("{order:?}");
        let l = self;
        vec![
            (
                "New".into(),
                format!("first_seen({o}) > {}d ago", l.new_days),
            ),
            (
                "Active".into(),
                format!("count({o} in {}d) >= {}", l.active_days, l.active_orders),
            ),
            (
                "Lost".into(),
                format!(
                    "count({o}) >= {} and no {o} in {}d",
                    l.active_orders, l.lost_days
                ),
            ),
            (
                "At-Risk".into(),
                format!(
                    "count({o}) >= {} and no {o} in {}d and not segment(\"Lost\")",
                    l.regular_orders, l.at_risk_days
                ),
            ),
            (
                "VIP".into(),
                format!(
                    "sum({o}.revenue in {d}d) > {} and avg({o}.revenue in {d}d) > {}",
                    l.vip_spend,
                    l.vip_average_basket,
                    d = l.vip_days
                ),
            ),
            (
                "Undecided".into(),
                format!(
                    "\"Product Viewed\" in {d}d and \"Product Added\" in {d}d and no {o} in {d}d",
                    d = l.undecided_days
                ),
            ),
        ]
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./niyet-data"),
            admin_token: None,
            tls: None,
            log: LogSection::default(),
            limits: Limits::default(),
            access: AccessSection::default(),
            sources: Vec::new(),
            identity: IdentitySection::default(),
            profiles: ProfilesSection::default(),
            segments: Vec::new(),
            lifecycle: LifecycleSection::default(),
            analytics: AnalyticsSection::default(),
            triggers: Vec::new(),
            destinations: Vec::new(),
            scores: Vec::new(),
            offers: Default::default(),
            privacy: Default::default(),
        }
    }
}

/// `[identity]`: how events are resolved to profiles.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentitySection {
    /// Country of phone numbers written without a country code (ISO 3166, e.g. `TR`).
    pub default_country: String,
    /// Most identifiers of one type per profile, e.g. `{ user_id = 1, email = 3 }`.
    pub limits: BTreeMap<String, u32>,
    /// Identifier types from highest to lowest priority; `*` stands for external ids.
    pub priority: Vec<String>,
    /// Values never used as identifiers (case-insensitive).
    pub blocked_values: Vec<String>,
    /// Trait names whose values are external ids of that name (e.g. `loyalty_card`).
    pub external_id_traits: Vec<String>,
    /// Probabilistic matching.
    pub matching: MatchingSection,
}

/// `[identity.matching]`: probabilistic matching (see `niyet_identity::probable`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchingSection {
    /// Off by default.
    pub enabled: bool,
    /// Merge at or above this probability.
    pub merge_threshold: f64,
    /// Keep as a suggestion at or above this probability.
    pub suggest_threshold: f64,
    /// IP address and user agent count as one device within this many minutes.
    pub window_minutes: u64,
}

impl Default for MatchingSection {
    fn default() -> Self {
        let d = niyet_identity::probable::MatchConfig::default();
        Self {
            enabled: d.enabled,
            merge_threshold: d.merge_threshold,
            suggest_threshold: d.suggest_threshold,
            window_minutes: (d.window_ms / 60_000) as u64,
        }
    }
}

impl Default for IdentitySection {
    fn default() -> Self {
        let r = niyet_identity::Rules::default();
        Self {
            default_country: "TR".into(),
            limits: r.limits.into_iter().collect(),
            priority: r.priority,
            blocked_values: r.blocked_values,
            external_id_traits: Vec::new(),
            matching: MatchingSection::default(),
        }
    }
}

/// `[profiles]`: profile processing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfilesSection {
    /// Profile partitions, each owned by one worker thread.
    pub partitions: usize,
    /// Write a state snapshot after this many log records (and on shutdown).
    pub snapshot_every: u64,
    /// Share of each processing thread's time a snapshot may use while work goes on
    /// (more than 0, at most 1). Lower keeps event-to-segment latency lower while a
    /// snapshot is taken, which then takes longer (11 s per million profiles at the
    /// default under load on two cores). An erasure's snapshot always goes at full speed.
    pub snapshot_share: f64,
    /// Event name of completed orders.
    pub order_event: String,
    /// Event name of refunds.
    pub refund_event: String,
    /// Segment sizes are sampled once per this many seconds of processing time (the
    /// history behind `GET /v1/segments/{name}/sizes`; a week of samples is kept).
    pub segment_size_sample_seconds: u32,
    /// Timers (segment changes by time, trigger waits, score decay) fire this long
    /// behind the clock, so an event received just before a timer's instant is
    /// processed first, live and on replay alike. Lower values act sooner; keep it above
    /// the log's commit latency.
    pub timer_lag_ms: u32,
    /// While processing (identity, profiles, segments, scores, triggers) is more than
    /// 50,000 records behind the log, it runs this many nice steps below ingest, so that
    /// writes are still acknowledged promptly; back at 5,000 it shares the processor
    /// evenly again (0–19; 0 never lowers it). Used only where the process may raise
    /// its threads back (root, or `RLIMIT_NICE` permitting); otherwise a warning says so.
    pub nice: u8,
    /// Events that update the product catalogue offers read (their `sku` or
    /// `product_id`, `price`, `category`, `stock` or `inventory`).
    pub catalogue_events: Vec<String>,
}

impl Default for ProfilesSection {
    fn default() -> Self {
        Self {
            partitions: 2,
            snapshot_every: 5_000_000,
            snapshot_share: 0.05,
            order_event: "Order Completed".into(),
            refund_event: "Order Refunded".into(),
            segment_size_sample_seconds: 60,
            timer_lag_ms: 1_000,
            nice: 5,
            catalogue_events: vec!["Product Updated".into(), "Inventory Updated".into()],
        }
    }
}

impl Config {
    /// The pipeline settings this config describes (call after `validate`).
    pub fn pipeline(&self) -> niyet_pipeline::PipelineConfig {
        let mut c = niyet_pipeline::PipelineConfig::new(self.data_dir.join("state"));
        c.partitions = self.profiles.partitions;
        c.timer_lag_ms = i64::from(self.profiles.timer_lag_ms);
        c.nice = i32::from(self.profiles.nice);
        c.snapshot_every = self.profiles.snapshot_every;
        c.snapshot_share = self.profiles.snapshot_share;
        let every = i64::from(self.profiles.segment_size_sample_seconds.max(1));
        c.size_sample_ms = every * 1_000;
        c.size_samples_kept = (7 * 86_400 / every) as usize;
        c.rules = niyet_identity::Rules {
            limits: self.identity.limits.clone().into_iter().collect(),
            priority: self.identity.priority.clone(),
            blocked_values: self.identity.blocked_values.clone(),
        };
        c.identity.calling_code =
            niyet_identity::normalize::calling_code(&self.identity.default_country)
                .unwrap_or("90")
                .to_string();
        c.identity.trait_ids = self.identity.external_id_traits.clone();
        let m = &self.identity.matching;
        c.matching = niyet_identity::probable::MatchConfig {
            enabled: m.enabled,
            merge_threshold: m.merge_threshold,
            suggest_threshold: m.suggest_threshold,
            window_ms: (m.window_minutes * 60_000) as i64,
            ..Default::default()
        };
        c.commerce = niyet_pipeline::CommerceNames {
            order: self.profiles.order_event.clone(),
            refund: self.profiles.refund_event.clone(),
        };
        c.segments = self
            .segment_rules()
            .into_iter()
            .filter_map(|(n, r)| Some((n, niyet_rules::parse(&r).ok()?)))
            .collect();
        c.triggers = self.triggers.clone();
        c.scores = self.scores.clone();
        c.catalogue_events = self.profiles.catalogue_events.clone();
        c
    }

    /// Every segment in the file, built-ins first, as (name, rule text).
    pub fn segment_rules(&self) -> Vec<(String, String)> {
        let mut v = self.lifecycle.rules(&self.profiles.order_event);
        v.extend(
            self.segments
                .iter()
                .map(|s| (s.name.clone(), s.rule.clone())),
        );
        v
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// Segment size in MiB.
    pub segment_mb: u64,
    /// How long a messageId is remembered for deduplication.
    pub dedup_window_hours: u64,
    /// How many messageIds are remembered at most.
    pub dedup_max_keys: usize,
    /// Keep raw events this many days (none: forever).
    pub retention_days: Option<u64>,
    /// Keep at most this many GiB of raw events (none: no limit).
    pub retention_max_gb: Option<f64>,
    /// Days to keep events of these names (`"Page Viewed" = 90`); shorter than the
    /// global retention, they are erased from the log as they age.
    pub retention_by_event: BTreeMap<String, u64>,
    /// Days to keep quarantined messages.
    pub quarantine_retention_days: Option<u64>,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            segment_mb: 128,
            dedup_window_hours: 24,
            dedup_max_keys: 4_000_000,
            retention_days: None,
            retention_max_gb: None,
            retention_by_event: BTreeMap::new(),
            quarantine_retention_days: Some(30),
        }
    }
}

/// `[access]`: default rate limits per key (requests per second, burst twice that; 0 =
/// unlimited). A key created with its own `rate_per_s` uses that.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessSection {
    /// Admin tokens.
    pub admin_rate_per_s: f64,
    /// Write keys.
    pub write_rate_per_s: f64,
}

impl Default for AccessSection {
    fn default() -> Self {
        Self {
            admin_rate_per_s: 100.0,
            write_rate_per_s: 0.0,
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body, after decompression.
    pub max_batch_bytes: usize,
    /// Largest single-message request body.
    pub max_message_bytes: usize,
    /// Requests waiting for the log before new ones get 429.
    pub max_pending_requests: usize,
    /// A client still sending its request headers after this long is cut off.
    pub header_timeout_ms: u64,
    /// A client still sending its request body after this long gets 408.
    pub body_timeout_ms: u64,
    /// Largest body of an admin API request.
    pub max_admin_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_batch_bytes: 500 * 1024,
            max_message_bytes: niyet_ingest::MAX_MESSAGE_BYTES,
            max_pending_requests: 2048,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            max_admin_body_bytes: 64 << 20,
        }
    }
}

/// `[[sources]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Name, stored with each event as `source`.
    pub name: String,
    /// The key SDKs send (HTTP Basic user, or `writeKey` in the body).
    pub write_key: String,
    /// Optional tracking plan.
    #[serde(default)]
    pub tracking_plan: Option<PlanConfig>,
    /// Data minimisation: IP addresses, dropped fields, hashed identifiers.
    #[serde(default)]
    pub minimise: niyet_ingest::Minimise,
}

/// `[sources.tracking_plan]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    /// What to do with track events that have no schema.
    #[serde(default = "accept")]
    pub unplanned: PlanAction,
    /// What to do with events that fail their schema.
    #[serde(default)]
    pub invalid: PlanAction,
    /// JSON Schema for the properties of each event.
    #[serde(default)]
    pub events: HashMap<String, serde_json::Value>,
}

fn accept() -> PlanAction {
    PlanAction::Accept
}

impl Config {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Parses TOML text (`origin` names it in errors).
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })
    }

    /// Applies `NIYET_*` environment overrides (`NIYET_LISTEN`, `NIYET_DATA_DIR`,
    /// `NIYET_ADMIN_TOKEN`, `NIYET_WRITE_KEY` for a source named `default`).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = get("NIYET_LISTEN") {
            self.listen = v
                .parse()
                .map_err(|e| ConfigError::Invalid(vec![format!("NIYET_LISTEN '{v}': {e}")]))?;
        }
        if let Some(v) = get("NIYET_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get("NIYET_ADMIN_TOKEN") {
            self.admin_token = Some(v);
        }
        if let Some(v) = get("NIYET_WRITE_KEY") {
            match self.sources.iter_mut().find(|s| s.name == "default") {
                Some(s) => s.write_key = v,
                None => self.sources.push(SourceConfig {
                    name: "default".into(),
                    write_key: v,
                    tracking_plan: None,
                    minimise: Default::default(),
                }),
            }
        }
        Ok(())
    }

    /// Checks everything and reports every problem at once; compiles tracking plans.
    pub fn validate(&self) -> Result<HashMap<String, TrackingPlan>, ConfigError> {
        let mut problems = Vec::new();
        let mut plans = HashMap::new();
        for d in &self.destinations {
            if let Err(e) = d.validate() {
                problems.push(e.to_string());
            }
        }
        for t in &self.triggers {
            for d in &t.then {
                if !self.destinations.iter().any(|x| &x.name == d) {
                    problems.push(format!(
                        "trigger `{}`: then: no destination is named `{d}`",
                        t.name
                    ));
                }
            }
        }
        if let Err(e) = niyet_actions::Scores::new(self.scores.clone()) {
            problems.push(e);
        }
        // Segments named by triggers may be defined over the API later (the pipeline warns
        // at start about those not defined yet).
        if let Err(e) =
            niyet_actions::Triggers::new(self.triggers.clone(), |n| !n.trim().is_empty())
        {
            problems.push(e.to_string());
        }
        let mut names = std::collections::HashSet::new();
        let mut keys = std::collections::HashSet::new();
        for (i, s) in self.sources.iter().enumerate() {
            if s.name.trim().is_empty() {
                problems.push(format!("sources[{i}].name is empty"));
            }
            if !names.insert(&s.name) {
                problems.push(format!("sources[{i}].name '{}' is used twice", s.name));
            }
            if s.write_key.len() < 8 {
                problems.push(format!(
                    "sources[{i}].write_key is shorter than 8 characters"
                ));
            }
            if !keys.insert(&s.write_key) {
                problems.push(format!("sources[{i}].write_key is used by another source"));
            }
            problems.extend(
                s.minimise
                    .problems()
                    .into_iter()
                    .map(|e| format!("sources[{i}] ('{}') minimise.{e}", s.name)),
            );
            if let Some(p) = &s.tracking_plan {
                match TrackingPlan::new(&p.events, p.unplanned, p.invalid) {
                    Ok(plan) => {
                        plans.insert(s.name.clone(), plan);
                    }
                    Err(errs) => problems.extend(
                        errs.into_iter()
                            .map(|e| format!("sources[{i}] ('{}') tracking_plan: {e}", s.name)),
                    ),
                }
            }
        }
        let defs: Vec<(String, String)> = self.segment_rules();
        let mut parsed = Vec::new();
        for (name, text) in &defs {
            match niyet_rules::parse(text) {
                Ok(r) => parsed.push((name.clone(), r)),
                Err(e) => problems.push(format!("segment '{name}': {e}")),
            }
        }
        if parsed.len() == defs.len() {
            if let Err(e) = niyet_rules::SegmentSet::new(&parsed) {
                problems.push(e.to_string());
            }
        }
        if niyet_identity::normalize::calling_code(&self.identity.default_country).is_none() {
            problems.push(format!(
                "identity.default_country '{}' is not one of {}",
                self.identity.default_country,
                niyet_identity::normalize::known_countries()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let rules = niyet_identity::Rules {
            limits: self.identity.limits.clone().into_iter().collect(),
            priority: self.identity.priority.clone(),
            blocked_values: self.identity.blocked_values.clone(),
        };
        problems.extend(rules.validate());
        let m = &self.identity.matching;
        if !(m.merge_threshold > 0.0 && m.merge_threshold <= 1.0) {
            problems.push("identity.matching.merge_threshold must be in (0, 1]".into());
        }
        if !(m.suggest_threshold > 0.0 && m.suggest_threshold <= m.merge_threshold) {
            problems
                .push("identity.matching.suggest_threshold must be in (0, merge_threshold]".into());
        }
        if self.profiles.partitions == 0 || self.profiles.partitions > 256 {
            problems.push("profiles.partitions must be between 1 and 256".into());
        }
        if !(self.profiles.snapshot_share > 0.0 && self.profiles.snapshot_share <= 1.0) {
            problems.push("profiles.snapshot_share must be more than 0 and at most 1".into());
        }
        if self.profiles.snapshot_every == 0 {
            problems.push("profiles.snapshot_every must be at least 1".into());
        }
        if self.profiles.nice > 19 {
            problems.push("profiles.nice must be between 0 and 19".into());
        }
        if let Some(t) = &self.admin_token {
            if t.len() < 12 {
                problems.push("admin_token is shorter than 12 characters".into());
            }
            if self.sources.iter().any(|s| &s.write_key == t) {
                problems.push("admin_token must differ from every write key".into());
            }
        }
        if self.log.segment_mb == 0 || self.log.segment_mb > 4096 {
            problems.push("log.segment_mb must be between 1 and 4096".into());
        }
        if self.limits.max_batch_bytes < 1024 {
            problems.push("limits.max_batch_bytes must be at least 1024".into());
        }
        if self.limits.max_pending_requests == 0 {
            problems.push("limits.max_pending_requests must be at least 1".into());
        }
        if problems.is_empty() {
            Ok(plans)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_has_sensible_defaults() {
        let c = Config::from_toml("", "test").expect("parses");
        assert_eq!(c.listen.port(), 8080);
        assert_eq!(c.limits.max_batch_bytes, 512_000);
        assert!(c.validate().is_ok());
        assert_eq!(c.pipeline().nice, 5, "processing runs below ingest");
    }

    #[test]
    fn a_nice_value_out_of_range_is_refused() {
        let c = Config::from_toml("[profiles]\nnice = 20", "t").expect("parses");
        let ConfigError::Invalid(p) = c.validate().expect_err("invalid") else {
            panic!("wrong error")
        };
        assert!(p.iter().any(|m| m.contains("profiles.nice")), "{p:?}");
        let c = Config::from_toml("[profiles]\nnice = 0", "t").expect("parses");
        assert_eq!(c.pipeline().nice, 0);
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let e = Config::from_toml("lsiten = \"x\"", "niyet.toml").expect_err("typo");
        assert!(e.to_string().contains("lsiten"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
            admin_token = "short"
            [[sources]]
            name = "web"
            write_key = "k"
            [[sources]]
            name = "web"
            write_key = "k"
            [sources.tracking_plan.events."Order Completed"]
            type = "strng"
        "#;
        let c = Config::from_toml(text, "t").expect("parses");
        let ConfigError::Invalid(p) = c.validate().expect_err("invalid") else {
            panic!("wrong error")
        };
        assert!(p.len() >= 5, "{p:?}");
        assert!(p.iter().any(|m| m.contains("strng")));
    }

    #[test]
    fn env_overrides_win() {
        let mut c = Config::default();
        c.apply_env(|k| match k {
            "NIYET_LISTEN" => Some("127.0.0.1:9999".into()),
            "NIYET_WRITE_KEY" => Some("from-env-key".into()),
            _ => None,
        })
        .expect("env");
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.sources[0].write_key, "from-env-key");
    }
}
