//! The processing pipeline: everything derived from the log.
//!
//! ```text
//!  log ──read in order──▶ router thread ──Apply/Take/Put──▶ partition workers (one owner each)
//!                         parse · identifiers · identity graph · intern names
//! ```
//!
//! * The **router** reads the log from the last processed offset, resolves each event's
//!   identifiers in the [`niyet_identity::Graph`] (the only writer of the graph), prepares
//!   an [`niyet_engine::Update`] and sends it to the partition owning the profile
//!   (`profile id % partitions`). A merge moves the merged-away profile's state to the
//!   survivor's partition through the two owners' queues, so every event is applied after
//!   the state it builds on.
//! * Each **partition worker** owns its profiles and is the only thread that changes them;
//!   readers (the admin API) take short read locks.
//! * **Snapshots** (see [`snapshot`]) are written every `snapshot_every` records and on
//!   close; on open the newest valid snapshot is restored and the log tail replayed.
//!   Processing is deterministic (event time and log offsets decide everything), so a
//!   replay from offset 0 gives the same state as live processing.
//! * Admin actions that change derived state (un-merge) are written to the log as
//!   `niyet.*` records and applied by the router like events, so they replay too.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod analytics;
mod catalogue;
mod erase;
mod metrics;
mod preview;
mod priority;
mod render;
mod sizes;
mod snapshot;

pub use analytics::{Activity, ItemHistory, JourneyQuery, JourneyTable, Timeline};
use niyet_engine::extract::{self, IdentityConfig, Kind};
use niyet_engine::segments::{seg_event, SegEvent, SegState, Segments};
use niyet_engine::{Profile, Symbols, Update};
use niyet_identity::probable::{MatchConfig, Matcher};
use niyet_identity::{FastMap, Graph, Ident, ProfileId, Rules};
use niyet_log::{Log, LogError, NewRecord};
use niyet_model::Clock;
use niyet_rules::{Change, Rule};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use niyet_engine::CommerceNames;
pub use render::{PlainProfile, ProfileQuery};

/// Errors of the pipeline.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PipelineError {
    /// File trouble (snapshots).
    #[error("{0}")]
    Io(String),
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Something asked of the pipeline is not possible.
    #[error("{0}")]
    Invalid(String),
    /// The pipeline is stopped.
    #[error("the processing pipeline is stopped")]
    Stopped,
    /// Waiting for processing took too long.
    #[error("processing did not reach offset {0} in time")]
    Timeout(u64),
}

/// How the pipeline runs.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Where snapshots are kept.
    pub state_dir: PathBuf,
    /// Number of profile partitions (each with its own worker thread).
    pub partitions: usize,
    /// Write a snapshot after this many log records.
    pub snapshot_every: u64,
    /// Profiles (per partition owner) and graph nodes (router) encoded for a snapshot
    /// in one piece; pieces follow each other for up to `snapshot_step` at a time.
    pub snapshot_chunk: usize,
    /// Longest stretch a thread encodes a snapshot before it looks at its queue again
    /// (zero: one piece at a time).
    pub snapshot_step: Duration,
    /// Share of each thread's time a snapshot taken while work goes on may use (0–1):
    /// the rest stays with the work, so a snapshot takes longer but never lets a queue
    /// build up behind it. A snapshot someone waits for (an erasure's) goes at full speed.
    pub snapshot_share: f64,
    /// Merge rules.
    pub rules: Rules,
    /// How identifiers are read.
    pub identity: IdentityConfig,
    /// Commerce event names.
    pub commerce: CommerceNames,
    /// Probabilistic matching (off by default).
    pub matching: MatchConfig,
    /// Segments (name, rule), in definition order.
    pub segments: Vec<(String, Rule)>,
    /// Processing time for timers while no events arrive.
    pub clock: SharedClock,
    /// Timers fire this long behind the clock, so records received just before a tick
    /// are processed first (and replay gives the same result).
    pub timer_lag_ms: i64,
    /// While processing is far behind the log, its threads (router, partition owners
    /// and the threads they start) run this many nice steps below the rest of the
    /// process, so that acknowledging writes comes first (see [`priority`]).
    pub nice: i32,
    /// Records behind the log at which processing is lowered, and at which it is back.
    pub nice_behind: (u64, u64),
    /// Told of every segment entry and exit (for live streams); called on the partition
    /// owners' threads, so it must be quick.
    pub on_change: Option<ChangeHook>,
    /// Told of every score crossing, up and down (for live streams).
    pub on_crossing: Option<CrossingHook>,
    /// Segment sizes are sampled once per this much processing time (see [`sizes`]).
    pub size_sample_ms: i64,
    /// Samples of segment sizes kept (the oldest are dropped).
    pub size_samples_kept: usize,
    /// Triggers (see [`niyet_actions::trigger`]).
    pub triggers: Vec<niyet_actions::TriggerDef>,
    /// Intent scores (see [`niyet_actions::score`]).
    pub scores: Vec<niyet_actions::ScoreDef>,
    /// Receives the actions triggers take; `sync` must return once every action sent so
    /// far is durable (a snapshot is written only after it, so a crash never loses one).
    pub on_action: Option<ActionHook>,
    /// Actions older than this (processing time against the clock) are not sent: a
    /// replay of old records re-derives journeys without acting on them again.
    pub action_max_age_ms: i64,
    /// Events that update the product catalogue (see [`catalogue`]).
    pub catalogue_events: Vec<String>,
}

/// Receives actions from the partition owners (so `send` must be quick). The flag says
/// the action is *live*: started by a record appended after this pipeline started, not
/// re-derived by a replay, so it may go out before it is durable (a crash replays its
/// record and it goes again with the same key).
#[derive(Clone)]
pub struct ActionHook {
    pub send: Arc<dyn Fn(niyet_actions::Action, bool) + Send + Sync>,
    pub sync: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for ActionHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ActionHook")
    }
}

/// Properties of an event for score signal filters: `properties`, and for pages also
/// `context.page` (where `path`, `url`, `title` often are). Each object is split into its
/// entries only when a filter first asks, and values are compared as they stand in the
/// stored JSON, without building a tree.
struct SignalProps<'a> {
    raw: (
        Option<&'a serde_json::value::RawValue>,
        Option<&'a serde_json::value::RawValue>,
    ),
    top: std::cell::OnceCell<(extract::Entries<'a>, extract::Entries<'a>)>,
}

impl<'a> SignalProps<'a> {
    fn new(view: &'a extract::EventView<'_>) -> Self {
        SignalProps {
            raw: (view.properties, view.context.page),
            top: std::cell::OnceCell::new(),
        }
    }
}

/// The value at a dotted path under an object's entries (array items by index).
fn raw_at<'a>(top: &extract::Entries<'a>, path: &str) -> Option<&'a serde_json::value::RawValue> {
    let mut parts = path.split('.').filter(|p| !p.is_empty());
    let mut cur = top.get(parts.next()?)?;
    for part in parts {
        let t = cur.get().trim_start();
        cur = if t.starts_with('[') {
            let items: Vec<&serde_json::value::RawValue> = serde_json::from_str(t).ok()?;
            *items.get(part.parse::<usize>().ok()?)?
        } else {
            serde_json::from_str::<extract::Entries<'a>>(cur.get())
                .ok()?
                .get(part)?
        };
    }
    Some(cur)
}

/// Whether a stored JSON value equals a filter's value (numbers by value).
fn raw_equals(raw: &str, want: &serde_json::Value) -> bool {
    use niyet_rules::value::Value as V;
    match want {
        serde_json::Value::String(w) => {
            matches!(niyet_engine::segments::json_value(raw), V::Str(s) if s == w.as_str())
        }
        serde_json::Value::Number(n) => {
            matches!(niyet_engine::segments::json_value(raw), V::Num(x) if Some(x) == n.as_f64())
        }
        serde_json::Value::Bool(b) => {
            matches!(niyet_engine::segments::json_value(raw), V::Bool(x) if x == *b)
        }
        serde_json::Value::Null => raw.trim() == "null",
        _ => serde_json::from_str::<serde_json::Value>(raw).is_ok_and(|v| &v == want),
    }
}

impl<'a> niyet_actions::score::EventProps for SignalProps<'a> {
    fn equals(&self, path: &str, want: &serde_json::Value) -> bool {
        let (props, page) = self.top.get_or_init(|| {
            let entries = |r: Option<&'a serde_json::value::RawValue>| {
                r.and_then(|r| serde_json::from_str(r.get()).ok())
                    .unwrap_or_default()
            };
            (entries(self.raw.0), entries(self.raw.1))
        });
        raw_at(props, path)
            .or_else(|| raw_at(page, path))
            .is_some_and(|r| raw_equals(r.get(), want))
    }
}

/// Origins of trigger runs started by time (a segment entered as time passed, or at a
/// merge) rather than by a record: the instant with this bit set.
pub const TIME_ORIGIN: u64 = 1 << 63;

/// The compiled triggers with the names of the events they read, by symbol.
pub(crate) struct Journeys {
    t: niyet_actions::Triggers,
    scores: niyet_actions::Scores,
    names: niyet_model::hash::FastMap<u32, Box<str>>,
    /// The `timezone` trait, read for quiet hours (`None`: no trigger has them).
    timezone: Option<niyet_engine::Sym>,
}

impl Journeys {
    fn active(&self) -> bool {
        !self.t.is_empty() || !self.scores.is_empty()
    }
}

/// A profile entered or left a segment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SegmentChange {
    pub profile: String,
    pub segment: String,
    pub entered: bool,
    pub time: String,
}

/// A profile's intent score crossed one of its thresholds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScoreCrossing {
    pub profile: String,
    pub score: String,
    pub threshold: String,
    /// `up` or `down`.
    pub direction: &'static str,
    pub time: String,
}

/// Receives changes as they happen (segment entries and exits, score crossings):
/// `listening` says whether anyone wants them now (so nothing is built for nobody), `send`
/// takes one. Called on the partition owners' threads, so it must be quick.
pub struct Hook<T> {
    pub listening: Arc<dyn Fn() -> bool + Send + Sync>,
    pub send: Arc<dyn Fn(T) + Send + Sync>,
}

impl<T> Clone for Hook<T> {
    fn clone(&self) -> Self {
        Hook {
            listening: self.listening.clone(),
            send: self.send.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Hook<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hook")
    }
}

/// Receives segment changes.
pub type ChangeHook = Hook<SegmentChange>;
/// Receives score crossings.
pub type CrossingHook = Hook<ScoreCrossing>;

/// A segment defined through the admin API (kept in the log and in snapshots).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ApiSegment {
    pub name: String,
    /// The rule's text form.
    pub rule: String,
    pub description: String,
}

/// A clock shared by the pipeline's threads.
#[derive(Clone)]
pub struct SharedClock(pub Arc<dyn Clock>);

impl std::fmt::Debug for SharedClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.0.now_ms())
    }
}

impl PipelineConfig {
    /// Paces one thread's share (`share` of its time) of a snapshot taken from now on.
    fn pacer(&self, share: f64) -> snapshot::Pacer {
        snapshot::Pacer::new(share, self.snapshot_step)
    }

    /// Defaults for a state directory.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            partitions: 2,
            snapshot_every: 5_000_000,
            snapshot_chunk: 64,
            snapshot_step: Duration::from_micros(250),
            snapshot_share: 0.05,
            rules: Rules::default(),
            identity: IdentityConfig::default(),
            commerce: CommerceNames::default(),
            matching: MatchConfig::default(),
            segments: Vec::new(),
            clock: SharedClock(Arc::new(niyet_model::SystemClock)),
            timer_lag_ms: 1_000,
            nice: 0,
            nice_behind: (50_000, 5_000),
            on_change: None,
            on_crossing: None,
            size_sample_ms: 60_000,
            size_samples_kept: 7 * 24 * 60,
            triggers: Vec::new(),
            scores: Vec::new(),
            on_action: None,
            action_max_age_ms: 3_600_000,
            catalogue_events: vec!["Product Updated".into(), "Inventory Updated".into()],
        }
    }

    /// Hash of everything that shapes derived state.
    fn fingerprint(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
            self.rules,
            self.identity.calling_code,
            self.identity.trait_ids,
            self.commerce,
            self.matching,
            self.segments,
            self.triggers,
            self.scores,
            self.catalogue_events
        )
        .hash(&mut h);
        h.finish()
    }
}

/// Counters of the pipeline.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PipelineStats {
    /// Every log offset below this is reflected in the state.
    pub processed_offset: u64,
    /// The log's end.
    pub log_end_offset: u64,
    /// Live profiles.
    pub profiles: usize,
    /// Identifiers held.
    pub identifiers: usize,
    /// Merges done since start.
    pub merges: u64,
    /// Merges refused by a rule since start.
    pub conflicts: u64,
    /// Merges by probabilistic matching since start.
    pub probable_merges: u64,
    /// Suggested links (below the merge threshold) since start.
    pub suggestions: u64,
    /// Records that could not be read as events (kept in the log, skipped here).
    pub unreadable: u64,
    /// Events with no usable identifier.
    pub unresolved: u64,
    /// Events dropped because they carry an identifier on the suppression list.
    pub suppressed: u64,
    /// Snapshots written since start.
    pub snapshots: u64,
    /// Offset of the snapshot restored at start (None: rebuilt from the log).
    pub restored_from: Option<u64>,
    /// Milliseconds spent restoring the snapshot at start.
    pub restore_ms: u64,
}

/// A partition's profiles (boxed: the map's slots stay small, so its spare capacity
/// costs little).
pub(crate) type Partition = FastMap<u64, Box<Profile>>;

/// Every profile of `part` in id order. Ids are handed out in turn, so this is about the
/// order in which the profiles and their state were allocated: a walk over all of them
/// (a redefinition) goes through memory mostly forwards instead of at random, as the
/// map's own order would.
fn by_id(part: &mut Partition) -> Vec<(u64, &mut Profile)> {
    let mut all: Vec<(u64, &mut Profile)> =
        part.iter_mut().map(|(id, p)| (*id, &mut **p)).collect();
    all.sort_unstable_by_key(|e| e.0);
    all
}

/// (log offset, profile id) of every event the given partitions' profiles hold, unsorted.
pub(crate) fn event_owners<P: std::ops::Deref<Target = Partition>>(
    parts: impl IntoIterator<Item = P>,
) -> Vec<(u64, u64)> {
    let mut owner = Vec::new();
    for part in parts {
        for (id, p) in part.iter() {
            owner.extend(p.events.iter().map(|o| (o, *id)));
        }
    }
    owner
}

enum Op {
    /// Fold an event into a profile.
    Apply(ProfileId, Update),
    /// Remove a profile and hand it back.
    Take(ProfileId, SyncSender<Option<Box<Profile>>>),
    /// A profile merged away in another partition, to absorb into this one (create it if
    /// missing), at processing time `i64`. Always announced by an `Expect` first.
    Put(ProfileId, Box<Profile>, i64, u64),
    /// Give back a profile the router took (an un-merge that could not be done).
    Restore(ProfileId, Box<Profile>, i64),
    /// Merge: remove `from` and send it as a `Put` to the owner of `into`. Absorbing is
    /// order-independent, so events for `into` may be applied before or after it arrives.
    MoveTo(ProfileId, ProfileId, i64, u64),
    /// A merge within this partition whose target was waiting: the source profile, taken
    /// out at the merge (processing time `i64`), to absorb into the target in its turn.
    Absorb(ProfileId, Option<Box<Profile>>, i64, u64),
    /// A profile merged in another partition is on its way to this one (as a `Put`):
    /// hold this profile's later operations until it arrives.
    Expect(ProfileId, u64),
    /// Processing time moved on with no event: fire the timers due by then.
    Tick(i64),
    /// A profile's held operations are done: take its timers due by the partition's
    /// time (they were passed over while it waited).
    CatchUp(u64),
    /// New segment definitions in force from processing time `i64`: carry every profile
    /// over to them (see [`niyet_rules::Redefined`]).
    Redefine(
        Arc<Segments>,
        Arc<Vec<AtomicI64>>,
        Arc<niyet_rules::eval::Redefined>,
        i64,
    ),
    /// Past events (log offset, event time, what features read) for the listed new
    /// features, to fill them for the profiles holding those events.
    Backfill(
        Arc<Vec<(u64, i64, SegEvent)>>,
        Arc<Vec<niyet_rules::FeatureId>>,
    ),
    /// Evaluate every profile's segments at processing time `i64` (after a backfill).
    Refresh(i64),
    /// Progress marker travelling the ring of workers twice (see [`worker`]).
    Mark(u64, usize),
    Barrier(SyncSender<()>),
    /// Encode the partition for a snapshot.
    /// (Its profiles spill to the file at the path as they are encoded; every profile of
    /// the moment has an id below the `u64`.)
    /// The `f64` is the share of the owner's time it may use (see [`PipelineConfig`]).
    Encode(
        SyncSender<Result<snapshot::Section, PipelineError>>,
        PathBuf,
        u64,
        f64,
    ),
    Stop,
}

/// Sending side of a worker's queue (operations travel in batches).
type Outbox = Sender<Vec<Op>>;
/// Receiving side of a worker's queue.
type Inbox = Receiver<Vec<Op>>;

/// Most operations queued for one worker before the router waits.
const MAX_QUEUED: usize = 16_384;

pub(crate) struct Shared {
    /// The log's end when the pipeline started: records before it are replayed.
    pub live_from: u64,
    pub graph: RwLock<Graph>,
    pub symbols: RwLock<Symbols>,
    pub matcher: RwLock<Matcher>,
    pub partitions: Vec<RwLock<Partition>>,
    /// The segments in force.
    pub segments: RwLock<Arc<Segments>>,
    /// The triggers and scores.
    pub(crate) journeys: Arc<Journeys>,
    /// Members per segment (by index in the set in force).
    pub sizes: RwLock<Arc<Vec<AtomicI64>>>,
    /// Segments defined through the admin API (after those of the configuration).
    pub api_segments: RwLock<Vec<ApiSegment>>,
    /// Products (see [`catalogue`]).
    pub catalogue: RwLock<catalogue::Catalogue>,
    /// Segment sizes over time.
    pub(crate) size_history: Mutex<sizes::SizeHistory>,
    processed: AtomicU64,
    /// Processing time each partition's timers have fired up to.
    reached: Vec<AtomicI64>,
    queued: Vec<AtomicUsize>,
    /// Readers waiting for each partition (see [`Shared::read_partition`]).
    readers_waiting: Vec<AtomicUsize>,
    progress: (Mutex<()>, Condvar),
    stats: Mutex<PipelineStats>,
    outcomes: Mutex<BTreeMap<u64, Result<serde_json::Value, String>>>,
    /// Identifiers of erased customers whose events are dropped.
    pub(crate) suppressed: erase::Suppression,
    pub log: Arc<Log>,
    pub cfg: PipelineConfig,
    stop: AtomicBool,
    priority: priority::Priority,
    failed: Mutex<Option<String>>,
}

impl Shared {
    /// Partition `idx` for reading. The owner holds it for writing while it works
    /// through a batch of operations, and lets waiting readers in between two of them
    /// (an action's document, rendered from the profile, does not wait for the rest of
    /// the batch).
    pub(crate) fn read_partition(
        &self,
        idx: usize,
    ) -> Option<std::sync::RwLockReadGuard<'_, Partition>> {
        let waiting = &self.readers_waiting[idx];
        waiting.fetch_add(1, Ordering::SeqCst);
        let part = self.partitions[idx].read();
        waiting.fetch_sub(1, Ordering::SeqCst);
        part.ok()
    }

    /// The owner's side of [`Self::read_partition`], between two operations: when
    /// readers wait for partition `idx`, releases it, waits briefly for them to take it
    /// (the state between two operations is what they would see between two batches)
    /// and takes it back. Returns the guard and whether readers were let in; `None` if
    /// the lock is poisoned.
    fn let_readers_in<'a>(
        &'a self,
        idx: usize,
        part: std::sync::RwLockWriteGuard<'a, Partition>,
    ) -> Option<(std::sync::RwLockWriteGuard<'a, Partition>, bool)> {
        let waiting = &self.readers_waiting[idx];
        if waiting.load(Ordering::SeqCst) == 0 {
            return Some((part, false));
        }
        drop(part);
        // A reader already running takes the lock within a few spins. One still to be
        // woken needs a processor, perhaps this one: the owner gives its place instead of
        // spinning on it (reading the clock all the while, which cost more than the wait).
        let mut spins = 0u32;
        let mut since: Option<Instant> = None;
        while waiting.load(Ordering::SeqCst) > 0 {
            if spins < 64 {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            let t = *since.get_or_insert_with(Instant::now);
            if t.elapsed() >= Duration::from_micros(200) {
                break;
            }
            std::thread::yield_now();
        }
        Some((self.partitions[idx].write().ok()?, true))
    }

    pub(crate) fn partition_of(&self, id: ProfileId) -> usize {
        (id.0 % self.partitions.len() as u64) as usize
    }

    fn processed(&self) -> u64 {
        self.processed.load(Ordering::Acquire)
    }
}

/// The running pipeline.
pub struct Pipeline {
    shared: Arc<Shared>,
    router: Mutex<Option<JoinHandle<()>>>,
}

impl Pipeline {
    /// Restores the newest snapshot (or starts empty) and starts processing the log.
    pub fn start(log: Arc<Log>, cfg: PipelineConfig) -> Result<Pipeline, PipelineError> {
        let parts = cfg.partitions.clamp(1, 256);
        let started = Instant::now();
        let mut skipped = Vec::new();
        let loaded = snapshot::load_latest(
            &cfg.state_dir,
            cfg.fingerprint(),
            &cfg.rules,
            parts,
            &mut skipped,
        );
        for s in &skipped {
            tracing::warn!(snapshot = %s, "snapshot ignored; state is rebuilt from the log");
        }
        let (graph, symbols, matcher, (api_segments, products), partitions, offset, restored_from) =
            match loaded {
                Some(r) => {
                    tracing::info!(path = %r.path.display(), offset = r.offset, "snapshot restored");
                    (
                        r.graph,
                        r.symbols,
                        r.matcher,
                        (r.api_segments, r.catalogue),
                        r.partitions,
                        r.offset,
                        Some(r.offset),
                    )
                }
                None => (
                    Graph::new(cfg.rules.clone()),
                    Symbols::default(),
                    Matcher::default(),
                    (Vec::new(), catalogue::Catalogue::new()),
                    (0..parts).map(|_| Partition::default()).collect(),
                    0,
                    None,
                ),
            };
        let offset = offset.max(log.stats().start_offset);
        let mut symbols = symbols;
        let mut all = cfg.segments.clone();
        all.extend(
            api_segments
                .iter()
                .filter_map(|a| Some((a.name.clone(), niyet_rules::parse(&a.rule).ok()?))),
        );
        let mut segments =
            Segments::new(&all, &mut symbols).map_err(|e| PipelineError::Invalid(e.to_string()))?;
        let scores =
            niyet_actions::Scores::new(cfg.scores.clone()).map_err(PipelineError::Invalid)?;
        segments.scores = Arc::new(scores.clone());
        if let Some((seg, score)) = segments.unknown_scores().into_iter().next() {
            return Err(PipelineError::Invalid(format!(
                "segment `{seg}`: no score is named `{score}`"
            )));
        }
        // The lifetime-value model published before the restored state (a later one is
        // published again by the replay).
        if let Some(m) = metrics::load(&cfg.state_dir, offset) {
            if let Ok(mut slot) = segments.clv.write() {
                *slot = Some(Arc::new(m));
            }
        }
        // A trigger may name a segment defined later over the API: it acts once a segment
        // of that name exists (until then its `when` never happens and its `if` fails).
        let triggers =
            niyet_actions::Triggers::new(cfg.triggers.clone(), |name| !name.trim().is_empty())
                .map_err(|e| PipelineError::Invalid(e.to_string()))?;
        for (t, s) in triggers.segment_names() {
            if segments.set.index(s).is_none() {
                tracing::warn!(
                    trigger = t,
                    segment = s,
                    "the trigger names a segment that is not defined (yet); it acts once a segment of that name is defined"
                );
            }
        }
        let mut names = niyet_model::hash::FastMap::default();
        for d in triggers.defs() {
            let read = d.unless.iter().chain(match &d.when {
                niyet_actions::When::Event(e) => Some(e),
                niyet_actions::When::SegmentEntered(_) | niyet_actions::When::ScoreCrossed(_) => {
                    None
                }
            });
            for n in read {
                names.insert(symbols.intern(n).0, n.as_str().into());
            }
        }
        for d in triggers.defs() {
            if let niyet_actions::When::ScoreCrossed(th) = &d.when {
                if !scores
                    .defs()
                    .any(|s| s.thresholds.iter().any(|t| &t.name == th))
                {
                    return Err(PipelineError::Invalid(format!(
                        "trigger `{}`: when: no score has a threshold named `{th}`",
                        d.name
                    )));
                }
            }
        }
        let timezone = triggers
            .has_quiet_hours()
            .then(|| symbols.intern("timezone"));
        let journeys = Arc::new(Journeys {
            t: triggers,
            scores,
            names,
            timezone,
        });
        let sizes: Vec<AtomicI64> = (0..segments.set.len()).map(|_| AtomicI64::new(0)).collect();
        for part in &partitions {
            for p in part.values() {
                for (i, _) in p.segments.iter().flat_map(|s| s.m.member.iter()) {
                    if let Some(c) = sizes.get(*i as usize) {
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        let stats = PipelineStats {
            restored_from,
            restore_ms: started.elapsed().as_millis() as u64,
            ..Default::default()
        };
        let shared = Arc::new(Shared {
            live_from: log.end_offset(),
            graph: RwLock::new(graph),
            symbols: RwLock::new(symbols),
            matcher: RwLock::new(matcher),
            partitions: partitions.into_iter().map(RwLock::new).collect(),
            segments: RwLock::new(Arc::new(segments)),
            journeys,
            sizes: RwLock::new(Arc::new(sizes)),
            api_segments: RwLock::new(api_segments),
            catalogue: RwLock::new(products),
            size_history: Mutex::new(sizes::SizeHistory::open(
                cfg.state_dir.join("segment-sizes.ndjson"),
                cfg.size_sample_ms,
                cfg.size_samples_kept,
            )),
            processed: AtomicU64::new(offset),
            reached: (0..parts).map(|_| AtomicI64::new(i64::MIN)).collect(),
            queued: (0..parts).map(|_| AtomicUsize::new(0)).collect(),
            readers_waiting: (0..parts).map(|_| AtomicUsize::new(0)).collect(),
            progress: (Mutex::new(()), Condvar::new()),
            stats: Mutex::new(stats),
            outcomes: Mutex::new(BTreeMap::new()),
            suppressed: erase::Suppression::open(cfg.state_dir.join("suppressed.bin")),
            log,
            priority: priority::Priority::new(cfg.nice, cfg.nice_behind),
            cfg,
            stop: AtomicBool::new(false),
            failed: Mutex::new(None),
        });
        let (senders, receivers): (Vec<Outbox>, Vec<Inbox>) =
            (0..parts).map(|_| mpsc::channel::<Vec<Op>>()).unzip();
        let mut workers = Vec::with_capacity(parts);
        for (i, rx) in receivers.into_iter().enumerate() {
            let sh = shared.clone();
            let peers = senders.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("niyet-part-{i}"))
                    .spawn(move || {
                        sh.priority.register();
                        worker(sh, i, rx, peers)
                    })
                    .map_err(|e| PipelineError::Io(format!("spawning a worker: {e}")))?,
            );
        }
        let sh = shared.clone();
        let router = std::thread::Builder::new()
            .name("niyet-router".into())
            .spawn(move || {
                sh.priority.register();
                let syms = sh.symbols.read().map(|s| s.clone()).unwrap_or_default();
                let mut r = Router {
                    published_names: syms.len(),
                    syms,
                    sh,
                    senders,
                    next: offset,
                    since_snapshot: 0,
                    moved_into: Default::default(),
                    snapshot_writer: None,
                    taking: None,
                    outbox: (0..parts).map(|_| Vec::new()).collect(),
                    ticked: i64::MIN,
                    now: i64::MIN,
                    merges: 0,
                    to_erase: Vec::new(),
                };
                r.run();
                r.finish_snapshot_write();
                r.flush();
                for s in &r.senders {
                    let _ = s.send(vec![Op::Stop]);
                }
                for w in workers {
                    let _ = w.join();
                }
            })
            .map_err(|e| PipelineError::Io(format!("spawning the router: {e}")))?;
        Ok(Pipeline {
            shared,
            router: Mutex::new(Some(router)),
        })
    }

    /// Waits until every record below `offset` is processed.
    pub fn wait_processed(&self, offset: u64, timeout: Duration) -> Result<(), PipelineError> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &self.shared.progress;
        let mut g = lock.lock().map_err(|_| PipelineError::Stopped)?;
        loop {
            if self.shared.processed() >= offset {
                return Ok(());
            }
            if let Some(why) = self.failure() {
                return Err(PipelineError::Invalid(why));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(PipelineError::Timeout(offset));
            }
            g = cv
                .wait_timeout(g, (deadline - now).min(Duration::from_millis(50)))
                .map_err(|_| PipelineError::Stopped)?
                .0;
        }
    }

    /// Every log record below this offset has been applied to profiles.
    pub fn processed_offset(&self) -> u64 {
        self.shared.processed()
    }

    /// Processing time up to which every partition has fired its segment timers.
    pub fn time_reached(&self) -> i64 {
        self.shared
            .reached
            .iter()
            .map(|r| r.load(Ordering::Acquire))
            .min()
            .unwrap_or(i64::MIN)
    }

    /// Why processing stopped, if it did.
    pub fn failure(&self) -> Option<String> {
        self.shared.failed.lock().ok().and_then(|f| f.clone())
    }

    /// Current counters.
    pub fn stats(&self) -> PipelineStats {
        let mut s = self
            .shared
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        s.processed_offset = self.shared.processed();
        s.log_end_offset = self.shared.log.end_offset();
        if let Ok(g) = self.shared.graph.read() {
            s.profiles = g.profiles();
            s.identifiers = g.identifiers();
        }
        s
    }

    /// Read access for queries.
    pub fn query(&self) -> ProfileQuery<'_> {
        ProfileQuery::new(&self.shared)
    }

    /// Splits identifier `kind`:`value` off profile `id` (un-merge). The action is written
    /// to the log, so it is durable and replays; this returns once it is applied.
    pub fn unmerge(
        &self,
        id: ProfileId,
        kind: &str,
        value: &str,
        now_ms: i64,
        timeout: Duration,
    ) -> Result<serde_json::Value, PipelineError> {
        let q = self.query();
        let ident = q.parse_identifier(kind, value)?;
        let canonical = q
            .canonical(id)
            .ok_or_else(|| PipelineError::Invalid(format!("profile {id} does not exist")))?;
        {
            let g = self
                .shared
                .graph
                .read()
                .map_err(|_| PipelineError::Stopped)?;
            if g.lookup(&ident) != Some(canonical) {
                return Err(PipelineError::Invalid(format!(
                    "{kind}:{} does not belong to profile {canonical}",
                    ident.value
                )));
            }
        }
        let payload = serde_json::json!({
            "type": "niyet.unmerge",
            "profile": canonical.to_string(),
            "identifier": {"type": kind, "value": &*ident.value},
            "timestamp": niyet_model::format_rfc3339_millis(now_ms),
            "source": "admin",
        });
        let rec = NewRecord {
            time_ms: now_ms,
            key: 0,
            payload: serde_json::to_vec(&payload)
                .map_err(|e| PipelineError::Invalid(e.to_string()))?,
        };
        let at = match self.shared.log.append_blocking(vec![rec])?.first() {
            Some(niyet_log::Appended::At(o)) => *o,
            _ => return Err(PipelineError::Invalid("the action was not written".into())),
        };
        self.wait_processed(at + 1, timeout)?;
        let outcome = self
            .shared
            .outcomes
            .lock()
            .ok()
            .and_then(|o| o.get(&at).cloned());
        match outcome {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(PipelineError::Invalid(e)),
            None => Err(PipelineError::Invalid(
                "the action's outcome is unknown".into(),
            )),
        }
    }

    /// Creates or replaces the API-defined segment `name`; it is backfilled from the log
    /// before this returns. The definition is written to the log, so it replays.
    pub fn put_segment(
        &self,
        name: &str,
        rule: &Rule,
        description: &str,
        now_ms: i64,
        timeout: Duration,
    ) -> Result<serde_json::Value, PipelineError> {
        self.act(
            serde_json::json!({
                "type": "niyet.segment", "action": "put", "name": name,
                "rule": rule.to_string(), "description": description,
            }),
            now_ms,
            timeout,
        )
    }

    /// Deletes the API-defined segment `name`.
    pub fn delete_segment(
        &self,
        name: &str,
        now_ms: i64,
        timeout: Duration,
    ) -> Result<serde_json::Value, PipelineError> {
        self.act(
            serde_json::json!({"type": "niyet.segment", "action": "delete", "name": name}),
            now_ms,
            timeout,
        )
    }

    /// Writes an admin action to the log and waits for its outcome.
    fn act(
        &self,
        mut payload: serde_json::Value,
        now_ms: i64,
        timeout: Duration,
    ) -> Result<serde_json::Value, PipelineError> {
        payload["timestamp"] = serde_json::json!(niyet_model::format_rfc3339_millis(now_ms));
        payload["source"] = serde_json::json!("admin");
        let rec = NewRecord {
            time_ms: now_ms,
            key: 0,
            payload: serde_json::to_vec(&payload)
                .map_err(|e| PipelineError::Invalid(e.to_string()))?,
        };
        let at = match self.shared.log.append_blocking(vec![rec])?.first() {
            Some(niyet_log::Appended::At(o)) => *o,
            _ => return Err(PipelineError::Invalid("the action was not written".into())),
        };
        self.wait_processed(at + 1, timeout)?;
        let outcome = self
            .shared
            .outcomes
            .lock()
            .ok()
            .and_then(|o| o.get(&at).cloned());
        match outcome {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(PipelineError::Invalid(e)),
            None => Err(PipelineError::Invalid(
                "the action's outcome is unknown".into(),
            )),
        }
    }

    /// Stops processing after the records already in the log, writes a final snapshot.
    pub fn close(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let h = self.router.lock().ok().and_then(|mut r| r.take());
        if let Some(h) = h {
            let _ = h.join();
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.close();
    }
}

/// A partition's owner: the only thread that changes its profiles.
///
/// Progress: the router sends `Mark(offset, hops)` to worker 0 after a chunk of records;
/// each worker passes it on to the next, around the ring twice. Every `Put` a worker
/// forwards for a merge is queued before that worker passes the first round on, so by
/// the end of the second round every forwarded `Put` has been absorbed; only then is
/// `offset` published as processed.
fn worker(sh: Arc<Shared>, idx: usize, rx: Inbox, peers: Vec<Outbox>) {
    let n = peers.len();
    let mut seg = SegWork {
        segs: match sh.segments.read() {
            Ok(s) => s.clone(),
            Err(_) => return,
        },
        sizes: match sh.sizes.read() {
            Ok(s) => s.clone(),
            Err(_) => return,
        },
        reached: &sh.reached[idx],
        timers: Timers::default(),
        changes: Vec::new(),
        backfill_index: BackfillIndex::None,
        backfill_pos: 0,
        backfill_time: Duration::ZERO,
        changed: None,
        hook: sh.cfg.on_change.clone(),
        crossing_hook: sh.cfg.on_crossing.clone(),
        crossings: Vec::new(),
        journeys: sh.journeys.clone(),
        fires: Vec::new(),
        cause: None,
        actions: sh.cfg.on_action.clone(),
        clock: sh.cfg.clock.clone(),
        action_max_age_ms: sh.cfg.action_max_age_ms,
        live_from: sh.live_from,
        enc: None,
        pace: sh.cfg.pacer(sh.cfg.snapshot_share),
    };
    // Whether the last turn of the loop was a snapshot step (the next one looks at the
    // queue first).
    let mut stepped = false;
    // Profiles waiting for merged profiles from other partitions: how many, and the
    // operations held until they arrive.
    let mut awaiting: niyet_model::hash::FastMap<u64, Awaiting> = Default::default();
    // Merged profiles that arrived before their `Expect`, in arrival order.
    let mut early: niyet_model::hash::FastMap<(u64, u64), (Box<Profile>, i64)> = Default::default();
    if let Ok(part) = sh.partitions[idx].read() {
        for (id, p) in part.iter() {
            if let Some(st) = &p.segments {
                seg.timers.schedule(*id, st.due);
            }
        }
    }
    loop {
        let ops = if seg.enc.is_some() {
            // A snapshot section is being taken: a step whenever its share of the time
            // is due, the queue in between.
            let wait = seg.pace.wait();
            if wait.is_zero() && !stepped {
                stepped = true;
                let Ok(part) = sh.partitions[idx].read() else {
                    return;
                };
                let chunk = sh.cfg.snapshot_chunk.max(1);
                let SegWork { enc, pace, .. } = &mut seg;
                if enc
                    .as_mut()
                    .is_some_and(|e| pace.step(|| e.step(&part, chunk)))
                {
                    seg.finish_encoding(&part);
                }
                continue;
            }
            stepped = false;
            // A zero wait takes what is queued without waiting.
            match rx.recv_timeout(wait) {
                Ok(ops) => ops,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match rx.recv() {
                Ok(ops) => ops,
                Err(_) => return,
            }
        };
        let Ok(mut part) = sh.partitions[idx].write() else {
            return;
        };
        sh.queued[idx].fetch_sub(ops.len(), Ordering::Relaxed);
        let mut queue: VecDeque<Op> = ops.into();
        // Operations since readers were last let in.
        let mut since_readers = 16u32;
        while let Some(o) = queue.pop_front() {
            if since_readers >= 16 {
                part = match sh.let_readers_in(idx, part) {
                    Some((p, let_in)) => {
                        if let_in {
                            since_readers = 0;
                        }
                        p
                    }
                    None => return,
                };
            }
            since_readers += 1;
            // A profile waiting for a merged profile from another partition takes its
            // later operations only after that arrives, so each profile sees its
            // operations in log order whatever the partition count.
            let subject = match &o {
                Op::Apply(id, _) | Op::Take(id, _) | Op::Expect(id, _) | Op::Absorb(id, ..) => {
                    Some(id.0)
                }
                Op::CatchUp(id) => Some(*id),
                Op::MoveTo(from, into, ..) => {
                    if sh.partition_of(*into) == idx && awaiting.contains_key(&into.0) {
                        Some(into.0)
                    } else {
                        Some(from.0)
                    }
                }
                _ => None,
            };
            if subject.is_some_and(|id| awaiting.contains_key(&id)) {
                // A catch-up waits for the profile's last held operation: the release
                // queues a new one after them (run among them, it would bring the
                // profile to the partition's time before its earlier events).
                if matches!(o, Op::CatchUp(_)) {
                    continue;
                }
                let o = match o {
                    // A merge held back under its target: the source leaves now, as it
                    // would have with no wait, so timers of later records never age it
                    // past the merge (a window would lose events the merged profile
                    // still counts).
                    Op::MoveTo(from, into, now, seq)
                        if subject == Some(into.0) && !awaiting.contains_key(&from.0) =>
                    {
                        seg.fire(&mut part, now, &awaiting);
                        seg.touch(&part, from.0);
                        Op::Absorb(into, part.remove(&from.0), now, seq)
                    }
                    o => o,
                };
                // A merge held back under its source holds back its target too.
                let into_here = match &o {
                    Op::MoveTo(from, into, _, seq)
                        if sh.partition_of(*into) == idx && subject == Some(from.0) =>
                    {
                        Some((into.0, *seq))
                    }
                    _ => None,
                };
                let Some(w) = subject.and_then(|id| awaiting.get_mut(&id)) else {
                    continue;
                };
                w.held.push(o);
                if let Some((into, seq)) = into_here {
                    awaiting.entry(into).or_default().expected.push(seq);
                }
                continue;
            }
            match o {
                Op::Apply(id, u) => {
                    // Held while it waited for a merge, the profile may have had timers
                    // due by the event passed over (the partition's time went on): they
                    // are taken before the event changes it. Otherwise `fire` took them.
                    let behind = u.now_ms <= seg.timers.now;
                    seg.fire(&mut part, u.now_ms, &awaiting);
                    if behind {
                        seg.catch_up(&mut part, id.0, u.now_ms);
                    }
                    seg.touch(&part, id.0);
                    let p = part.entry(id.0).or_default();
                    p.apply(&u);
                    seg.event(id.0, p, &u);
                }
                Op::Take(id, reply) => {
                    seg.touch(&part, id.0);
                    let p = part.remove(&id.0);
                    if let Some(p) = &p {
                        seg.gone(p);
                    }
                    let _ = reply.send(p);
                }
                Op::Restore(id, p, now) => {
                    seg.touch(&part, id.0);
                    seg.put(&mut part, id.0, p, now)
                }
                Op::Expect(id, seq) => {
                    awaiting.entry(id.0).or_default().expected.push(seq);
                    if let Some((p, now)) = early.remove(&(id.0, seq)) {
                        queue.push_front(Op::Put(id, p, now, seq));
                    }
                }
                Op::Put(id, p, now, seq) => {
                    if !awaiting
                        .get(&id.0)
                        .is_some_and(|w| w.expected.contains(&seq))
                    {
                        // Arrived before its announcement: it waits for it, so the
                        // profile's earlier operations come first.
                        early.insert((id.0, seq), (p, now));
                        continue;
                    }
                    if !p.events.is_empty() || p.segments.is_some() {
                        seg.touch(&part, id.0);
                        seg.put(&mut part, id.0, p, now);
                    }
                    arrived(&mut awaiting, &mut queue, id.0, seq);
                }
                Op::Absorb(into, p, now, seq) => {
                    if let Some(p) = p {
                        seg.touch(&part, into.0);
                        seg.put(&mut part, into.0, p, now);
                    }
                    if awaiting.contains_key(&into.0) {
                        arrived(&mut awaiting, &mut queue, into.0, seq);
                    }
                }
                Op::MoveTo(from, into, now, seq) => {
                    seg.fire(&mut part, now, &awaiting);
                    seg.touch(&part, from.0);
                    let p = part.remove(&from.0);
                    let to = sh.partition_of(into);
                    if to == idx {
                        if let Some(p) = p {
                            seg.touch(&part, into.0);
                            seg.put(&mut part, into.0, p, now);
                        }
                        if awaiting.contains_key(&into.0) {
                            arrived(&mut awaiting, &mut queue, into.0, seq);
                        }
                    } else {
                        // Always sent: the owner of `into` is waiting for it.
                        sh.queued[to].fetch_add(1, Ordering::Relaxed);
                        let p = p.unwrap_or_default();
                        let _ = peers[to].send(vec![Op::Put(into, p, now, seq)]);
                    }
                }
                Op::Tick(now) => seg.fire(&mut part, now, &awaiting),
                Op::CatchUp(id) => {
                    let now = seg.timers.now;
                    seg.catch_up(&mut part, id, now)
                }
                Op::Redefine(segs, sizes, r, now) => {
                    seg.finish_encoding(&part);
                    let t = Instant::now();
                    // Every offset a profile holds is below the log's end.
                    seg.redefine(&mut part, segs, sizes, &r, now, sh.log.end_offset());
                    tracing::debug!(
                        partition = idx,
                        ms = t.elapsed().as_millis() as u64,
                        "profiles carried over to new segment definitions"
                    );
                }
                Op::Backfill(events, ids) => {
                    seg.finish_encoding(&part);
                    let t = Instant::now();
                    seg.backfill(&mut part, &events, &ids);
                    seg.backfill_time += t.elapsed();
                }
                Op::Refresh(now) => {
                    seg.finish_encoding(&part);
                    let t = Instant::now();
                    let filled = std::mem::take(&mut seg.backfill_time);
                    seg.refresh(&mut part, now);
                    tracing::debug!(
                        partition = idx,
                        ms = t.elapsed().as_millis() as u64,
                        backfill_ms = filled.as_millis() as u64,
                        "profiles evaluated anew"
                    );
                }
                Op::Mark(off, hops) => {
                    if hops == 0 {
                        sh.processed.store(off, Ordering::Release);
                        let (lock, cv) = &sh.progress;
                        drop(lock.lock());
                        cv.notify_all();
                    } else {
                        let next = (idx + 1) % n;
                        sh.queued[next].fetch_add(1, Ordering::Relaxed);
                        let _ = peers[next].send(vec![Op::Mark(off, hops - 1)]);
                    }
                }
                Op::Barrier(reply) => {
                    let _ = reply.send(());
                }
                Op::Encode(reply, spill, end, share) => {
                    // Taken while work goes on: profiles are encoded before they change
                    // and a chunk at a time between batches.
                    seg.finish_encoding(&part);
                    seg.enc = Some(snapshot::PartitionEncoder::start(
                        (idx as u64, n as u64),
                        end,
                        spill,
                        reply,
                    ));
                    seg.pace = sh.cfg.pacer(share);
                }
                Op::Stop => {
                    seg.finish_encoding(&part);
                    return;
                }
            }
        }
    }
}

/// One awaited merge into `id` is done: when none is left, its held operations go to the
/// front of the queue, in order.
fn arrived(
    awaiting: &mut niyet_model::hash::FastMap<u64, Awaiting>,
    queue: &mut VecDeque<Op>,
    id: u64,
    seq: u64,
) {
    let Some(w) = awaiting.get_mut(&id) else {
        return;
    };
    w.expected.retain(|s| *s != seq);
    if w.expected.is_empty() {
        let held = awaiting.remove(&id).map(|w| w.held).unwrap_or_default();
        // Its timers passed over while it waited are taken after every operation of it
        // now queued (the held ones go first; later ones may be held again).
        queue.push_back(Op::CatchUp(id));
        for op in held.into_iter().rev() {
            queue.push_front(op);
        }
    }
}

/// A profile in this partition waiting for profiles merged into it elsewhere.
#[derive(Default)]
struct Awaiting {
    /// Merges (by number) announced whose profile has not been absorbed yet.
    expected: Vec<u64>,
    /// The profile's later operations, in order.
    held: Vec<Op>,
}

/// Threads reading the log for a backfill (see `Router::backfill`).
const BACKFILL_READERS: usize = 4;

/// A partition's timers: `(due, profile)`. A profile given another due time has its old
/// entry removed; entries of profiles since merged away are skipped when they come up.
#[derive(Default)]
struct Timers {
    due: BTreeSet<(i64, u64)>,
    /// Processing time reached by this partition.
    now: i64,
    /// While every profile is evaluated anew: the entries, built into `due` at the end
    /// (far cheaper than as many inserts).
    bulk: Option<Vec<(i64, u64)>>,
}

impl Timers {
    fn schedule(&mut self, id: u64, due: i64) {
        if due != i64::MAX {
            match self.bulk.as_mut() {
                Some(b) => b.push((due, id)),
                None => {
                    self.due.insert((due, id));
                }
            }
        }
    }
}

/// The profile holding each event of a partition, by log offset, sorted: built for a
/// backfill when segment definitions change (see `SegWork::redefine`).
enum BackfillIndex {
    None,
    /// `(offset - base) << 32 | position in ids`: 8 bytes an event (the index of a
    /// million profiles' events is tens of megabytes, all of it fresh memory).
    Narrow {
        base: u64,
        keys: Vec<u64>,
        ids: Vec<u64>,
    },
    /// `(offset, profile)`: for a log spanning 2^32 offsets or more.
    Wide(Vec<(u64, u64)>),
}

impl BackfillIndex {
    /// Adds the events of profile `id`.
    fn add(&mut self, id: u64, events: impl Iterator<Item = u64>) {
        match self {
            Self::None => {}
            Self::Narrow { base, keys, ids } => {
                let at = ids.len() as u64;
                ids.push(id);
                // `base` is the lowest offset of the partition's profiles.
                let base = *base;
                keys.extend(events.map(|o| (o - base) << 32 | at));
            }
            Self::Wide(v) => v.extend(events.map(|o| (o, id))),
        }
    }

    /// Sorts by offset (offsets are unique: the order of the profiles does not matter).
    fn sort(&mut self) {
        match self {
            Self::None => {}
            Self::Narrow { keys, .. } => keys.sort_unstable(),
            Self::Wide(v) => v.sort_unstable_by_key(|e| e.0),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::None => 0,
            Self::Narrow { keys, .. } => keys.len(),
            Self::Wide(v) => v.len(),
        }
    }

    /// The offset of entry `k`.
    fn offset(&self, k: usize) -> Option<u64> {
        match self {
            Self::None => None,
            Self::Narrow { base, keys, .. } => keys.get(k).map(|x| base + (x >> 32)),
            Self::Wide(v) => v.get(k).map(|e| e.0),
        }
    }

    /// The profile of entry `k`.
    fn profile(&self, k: usize) -> Option<u64> {
        match self {
            Self::None => None,
            Self::Narrow { keys, ids, .. } => keys
                .get(k)
                .and_then(|x| ids.get((x & 0xffff_ffff) as usize).copied()),
            Self::Wide(v) => v.get(k).map(|e| e.1),
        }
    }
}

/// Segment work of a partition owner for one batch of operations.
struct SegWork<'a> {
    segs: Arc<Segments>,
    sizes: Arc<Vec<AtomicI64>>,
    reached: &'a AtomicI64,
    timers: Timers,
    changes: Vec<Change>,
    /// While new features are filled from history: the profile of every event in this
    /// partition, by log offset.
    backfill_index: BackfillIndex,
    /// How far the backfill has walked `backfill_index`.
    backfill_pos: usize,
    /// Time spent filling new features from history since the last evaluation.
    backfill_time: Duration,
    /// After a redefinition, the segments the next refresh evaluates (the others keep
    /// their carried-over memberships).
    changed: Option<Vec<usize>>,
    hook: Option<ChangeHook>,
    crossing_hook: Option<CrossingHook>,
    /// Score crossings of the profile being worked on, for `crossing_hook`.
    crossings: Vec<niyet_actions::Crossing>,
    journeys: Arc<Journeys>,
    /// Trigger runs due to act for the profile being worked on.
    fires: Vec<niyet_actions::Fire>,
    /// The log offset of the record being applied (`None`: time or a merge moved on).
    cause: Option<u64>,
    actions: Option<ActionHook>,
    clock: SharedClock,
    action_max_age_ms: i64,
    /// Records from this offset on were appended after the pipeline started.
    live_from: u64,
    /// The snapshot section being taken while work goes on (see
    /// [`snapshot::PartitionEncoder`]).
    enc: Option<snapshot::PartitionEncoder>,
    /// When its next piece is due.
    pace: snapshot::Pacer,
}

impl SegWork<'_> {
    fn active(&self) -> bool {
        !self.segs.set.is_empty() || self.journeys.active()
    }

    /// Profile `id` is about to change: a snapshot being taken keeps it as it stood.
    fn touch(&mut self, part: &Partition, id: u64) {
        if let Some(e) = self.enc.as_mut() {
            e.before_change(part, id);
        }
    }

    /// Finishes the snapshot section being taken (before work that changes every profile).
    fn finish_encoding(&mut self, part: &Partition) {
        if let Some(e) = self.enc.take() {
            e.finish(part);
        }
    }

    /// Starts the triggers of upward crossings.
    fn crossed(&mut self, st: &mut SegState, crossings: &[niyet_actions::Crossing]) {
        if self.crossing_hook.as_ref().is_some_and(|h| (h.listening)()) {
            self.crossings.extend_from_slice(crossings);
        }
        let j = self.journeys.clone();
        for c in crossings.iter().filter(|c| c.up) {
            let name = &j.scores.def(c.score).thresholds[c.threshold].name;
            let origin = self.cause.unwrap_or(TIME_ORIGIN | c.at as u64);
            j.t.on_crossing(&mut st.journeys, name, origin, c.at, &mut self.fires);
        }
    }

    /// Starts the triggers the changes just recorded start, and takes the actions of
    /// every trigger run due (decided on the memberships now).
    fn act(&mut self, id: u64, p: &Profile, st: &mut SegState) {
        let t = &self.journeys.t;
        if t.is_empty() {
            self.fires.clear();
            return;
        }
        for c in &self.changes {
            if c.entered {
                let origin = self.cause.unwrap_or(TIME_ORIGIN | c.at_ms as u64);
                let name = self.segs.set.name(c.segment);
                t.on_entry(&mut st.journeys, name, origin, c.at_ms, &mut self.fires);
            }
        }
        if self.fires.is_empty() {
            return;
        }
        let profile = ProfileId(id).to_string();
        let oldest = self.clock.0.now_ms().saturating_sub(self.action_max_age_ms);
        for f in std::mem::take(&mut self.fires) {
            let set = &self.segs.set;
            let outcome = t.decide(&mut st.journeys, &f, &profile, |name| {
                set.index(name).is_some_and(|i| st.m.is_member(i))
            });
            if outcome == niyet_actions::Outcome::Send {
                let tz = self
                    .journeys
                    .timezone
                    .and_then(|k| p.trait_value(k))
                    .and_then(|v| serde_json::from_str::<String>(v.value).ok());
                // In quiet hours: held back, it fires again (deferred) when they end.
                if t.hold_for_quiet_hours(&mut st.journeys, &f, tz.as_deref())
                    .is_some()
                {
                    continue;
                }
            }
            let Some(hook) = self.actions.as_ref().filter(|_| f.at >= oldest) else {
                continue;
            };
            let def = t.def(f.trigger);
            let live = f.origin & TIME_ORIGIN == 0 && f.origin >= self.live_from;
            for d in &def.then {
                (hook.send)(
                    niyet_actions::Action {
                        key: niyet_actions::idempotency_key(&def.name, &profile, f.origin, d),
                        trigger: def.name.clone(),
                        destination: d.clone(),
                        profile: profile.clone(),
                        origin: f.origin,
                        at_ms: f.at,
                        outcome,
                    },
                    live,
                );
            }
        }
    }

    /// Counts the changes into the segment sizes and the profile's history, and sets the
    /// profile's next timer.
    fn count_sizes(&self) {
        for c in &self.changes {
            if let Some(n) = self.sizes.get(c.segment) {
                n.fetch_add(if c.entered { 1 } else { -1 }, Ordering::Relaxed);
            }
        }
    }

    /// Records the changes and sets the timer, from a full computation of the profile's
    /// next change.
    fn finish(&mut self, id: u64, p: &Profile, st: &mut SegState) {
        self.finish_with(id, p, st, None);
    }

    /// [`Self::finish`]; with `due`, the next change is already known.
    fn finish_with(&mut self, id: u64, p: &Profile, st: &mut SegState, due: Option<i64>) {
        self.count_sizes();
        if let Some(h) = self.hook.as_ref().filter(|h| (h.listening)()) {
            for c in &self.changes {
                (h.send)(SegmentChange {
                    profile: ProfileId(id).to_string(),
                    segment: self.segs.set.name(c.segment).to_string(),
                    entered: c.entered,
                    time: niyet_model::format_rfc3339_millis(c.at_ms),
                });
            }
        }
        if let Some(h) = &self.crossing_hook {
            let scores = &self.journeys.scores;
            for c in self.crossings.drain(..) {
                let def = scores.def(c.score);
                (h.send)(ScoreCrossing {
                    profile: ProfileId(id).to_string(),
                    score: def.name.clone(),
                    threshold: def.thresholds[c.threshold].name.clone(),
                    direction: if c.up { "up" } else { "down" },
                    time: niyet_model::format_rfc3339_millis(c.at),
                });
            }
        }
        self.act(id, p, st);
        st.record(&self.changes);
        self.changes.clear();
        let due = match due {
            Some(d) => d,
            None => {
                let traits = self.segs.traits_scored(p, &st.journeys.scores);
                self.segs
                    .set
                    .next_change(&st.m, &traits, st.at)
                    .unwrap_or(i64::MAX)
            }
        };
        let due = niyet_actions::Triggers::next_due(&st.journeys).map_or(due, |j| j.min(due));
        let due = self
            .journeys
            .scores
            .next_due(&st.journeys.scores)
            .map_or(due, |j| j.min(due));
        if due != st.due {
            // The old entry goes, so the timer set holds one entry per profile rather
            // than one per restarted wait.
            if st.due != i64::MAX {
                self.timers.due.remove(&(st.due, id));
            }
            st.due = due;
            self.timers.schedule(id, due);
        }
    }

    /// Brings a profile's segments to `now`, each change at its instant.
    fn advance(&mut self, p: &Profile, st: &mut SegState, now: i64) {
        if now > st.at {
            let traits = self.segs.traits_scored(p, &st.journeys.scores);
            self.segs
                .set
                .advance(&mut st.m, &traits, st.at, now, &mut self.changes);
            st.at = now;
        }
        niyet_actions::Triggers::advance(&mut st.journeys, now, &mut self.fires);
        if !self.journeys.scores.is_empty() {
            let mut crossed = Vec::new();
            let j = self.journeys.clone();
            j.scores.advance(&mut st.journeys.scores, now, &mut crossed);
            self.crossed(st, &crossed);
        }
    }

    /// Fires every timer due by `now`, except for profiles waiting for a merge (they
    /// catch up when it arrives, in log order).
    fn fire(
        &mut self,
        part: &mut Partition,
        now: i64,
        awaiting: &niyet_model::hash::FastMap<u64, Awaiting>,
    ) {
        if !self.active() || now <= self.timers.now {
            return;
        }
        self.timers.now = now;
        let mut later = Vec::new();
        while let Some(&(due, id)) = self.timers.due.first() {
            if due > now {
                break;
            }
            self.timers.due.pop_first();
            if awaiting.contains_key(&id) {
                later.push((due, id));
                continue;
            }
            self.touch(part, id);
            let Some(p) = part.get_mut(&id) else {
                continue;
            };
            let Some(mut st) = p.segments.take() else {
                continue;
            };
            if st.due == due {
                self.advance(p, &mut st, now);
                self.finish(id, p, &mut st);
            }
            p.segments = Some(st);
        }
        self.timers.due.extend(later);
        self.reached.store(now, Ordering::Release);
    }

    /// Brings profile `id` to `now` if a timer of it is due by then: timers passed over
    /// while it waited for a merge (the partition's time may be ahead of its operations).
    fn catch_up(&mut self, part: &mut Partition, id: u64, now: i64) {
        let due = part
            .get(&id)
            .and_then(|p| p.segments.as_ref())
            .is_some_and(|st| st.due <= now);
        if !due {
            return;
        }
        self.touch(part, id);
        let Some(p) = part.get_mut(&id) else {
            return;
        };
        let Some(mut st) = p.segments.take() else {
            return;
        };
        self.advance(p, &mut st, now);
        self.finish(id, p, &mut st);
        p.segments = Some(st);
    }

    /// An event was applied to profile `id`.
    fn event(&mut self, id: u64, p: &mut Profile, u: &Update) {
        if !self.active() {
            return;
        }
        // A new profile is evaluated once, after its first event.
        let fresh = p.segments.is_none();
        let mut st = match p.segments.take() {
            Some(mut st) => {
                self.advance(p, &mut st, u.now_ms);
                st
            }
            None => Box::new(SegState {
                at: u.now_ms,
                due: i64::MAX,
                ..Default::default()
            }),
        };
        let now = st.at;
        self.cause = Some(u.offset);
        // Signals first: segments reading scores see the new values.
        if !u.signals.is_empty() {
            let mut crossed = Vec::new();
            let j = self.journeys.clone();
            j.scores
                .on_signals(&mut st.journeys.scores, &u.signals, now, &mut crossed);
            self.crossed(&mut st, &crossed);
        }
        let traits = self.segs.traits_scored(p, &st.journeys.scores);
        // A purchase changes the lifetime-value metrics segments may read, a signal the
        // scores.
        let traits_changed = !u.traits.is_empty()
            || (self.segs.set.reads_metrics()
                && (u.order.is_some() || u.refund.is_some() || !u.signals.is_empty()));
        // The profile's next change by time is still ahead and exact; an event that sets
        // no traits can only bring it forward (by the instants its own entries add).
        let due = (!fresh && !traits_changed && st.due > now).then(|| {
            let ev = u
                .seg
                .as_ref()
                .and_then(|e| self.segs.set.event_due(&e.name, u.time_ms, now));
            ev.map_or(st.due, |e| e.min(st.due))
        });
        let set = &self.segs.set;
        let ev = u.seg.as_ref().map(|e| niyet_rules::Event {
            id: u.offset,
            name: &e.name,
            time_ms: u.time_ms,
            props: &**e,
        });
        match &ev {
            _ if fresh => {
                set.on_first_event(&mut st.m, ev.as_ref(), &traits, now, &mut self.changes)
            }
            Some(ev) => set.on_event(
                &mut st.m,
                ev,
                &traits,
                traits_changed,
                now,
                &mut self.changes,
            ),
            None if traits_changed => set.on_traits(&mut st.m, &traits, now, &mut self.changes),
            None => {}
        }
        drop(traits);
        if let Some(name) = u.name.and_then(|n| self.journeys.names.get(&n.0)) {
            let journeys = self.journeys.clone();
            journeys
                .t
                .on_event(&mut st.journeys, name, u.offset, now, &mut self.fires);
        }
        // Runs the event starts act with it as their origin.
        let due = due.map(|d| {
            let d = niyet_actions::Triggers::next_due(&st.journeys).map_or(d, |j| j.min(d));
            self.journeys
                .scores
                .next_due(&st.journeys.scores)
                .map_or(d, |j| j.min(d))
        });
        self.finish_with(id, p, &mut st, due);
        self.cause = None;
        p.segments = Some(st);
    }

    /// Carries every profile over to new definitions: features renumbered, unchanged
    /// segments kept (with their entry times), sizes counted again.
    fn redefine(
        &mut self,
        part: &mut Partition,
        segs: Arc<Segments>,
        sizes: Arc<Vec<AtomicI64>>,
        r: &niyet_rules::eval::Redefined,
        now: i64,
        log_end: u64,
    ) {
        self.segs = segs;
        self.sizes = sizes;
        self.backfill_pos = 0;
        self.changed = Some(self.segs.set.changed_by(r));
        let index = !r.new_features.is_empty();
        self.backfill_index = BackfillIndex::None;
        if index {
            let (n, base) = part.values().fold((0, u64::MAX), |(n, base), p| {
                (
                    n + p.events.len(),
                    base.min(p.events.iter().next().unwrap_or(u64::MAX)),
                )
            });
            // The compact form holds offsets up to 2^32 past the lowest.
            let narrow = log_end.saturating_sub(base) < 1 << 32 && part.len() < 1 << 32;
            self.backfill_index = match narrow {
                true => BackfillIndex::Narrow {
                    base,
                    keys: Vec::with_capacity(n),
                    ids: Vec::with_capacity(part.len()),
                },
                false => BackfillIndex::Wide(Vec::with_capacity(n)),
            };
        }
        let t = Instant::now();
        let mut counted = vec![0i64; self.sizes.len()];
        for (id, p) in by_id(part) {
            let st = p.segments.get_or_insert_with(|| {
                Box::new(SegState {
                    at: now,
                    due: i64::MAX,
                    ..Default::default()
                })
            });
            self.segs.set.carry_over(&mut st.m, r);
            if !r.segments_kept {
                st.history = st
                    .history
                    .iter()
                    .filter_map(|(i, e, t)| {
                        Some((r.segments.get(*i as usize).copied()?? as u32, *e, *t))
                    })
                    .collect();
            }
            // Counted here, added once: the sizes are shared with the other owners.
            for (i, _) in &st.m.member {
                if let Some(n) = counted.get_mut(*i as usize) {
                    *n += 1;
                }
            }
            self.backfill_index.add(id, p.events.iter());
        }
        for (n, c) in self.sizes.iter().zip(counted) {
            n.fetch_add(c, Ordering::Relaxed);
        }
        let walked = t.elapsed();
        self.backfill_index.sort();
        tracing::debug!(
            walk_ms = walked.as_millis() as u64,
            sort_ms = (t.elapsed() - walked).as_millis() as u64,
            events = self.backfill_index.len(),
            "profiles walked for the backfill index"
        );
    }

    /// Fills new features from past events of this partition's profiles.
    fn backfill(
        &mut self,
        part: &mut Partition,
        events: &[(u64, i64, SegEvent)],
        ids: &[niyet_rules::FeatureId],
    ) {
        // Events come in log order and the index is sorted: it is walked once, front to
        // back, over the whole backfill.
        let idx = &self.backfill_index;
        for (offset, time_ms, e) in events {
            let mut k = self.backfill_pos;
            while idx.offset(k).is_some_and(|o| o < *offset) {
                k += 1;
            }
            self.backfill_pos = k;
            let Some(id) = idx.profile(k).filter(|_| idx.offset(k) == Some(*offset)) else {
                continue;
            };
            let Some(st) = part.get_mut(&id).and_then(|p| p.segments.as_mut()) else {
                continue;
            };
            let ev = niyet_rules::Event {
                id: *offset,
                name: &e.name,
                time_ms: *time_ms,
                props: e,
            };
            let at = st.at;
            st.m.features
                .observe_only(self.segs.set.catalog(), ids, &ev, at);
        }
    }

    /// Evaluates every profile at `now` and sets its timer.
    fn refresh(&mut self, part: &mut Partition, now: i64) {
        self.backfill_index = BackfillIndex::None;
        self.timers.due.clear();
        // Every profile's timer is set anew: gathered, then built into the set at once.
        self.timers.bulk = Some(Vec::with_capacity(part.len()));
        let changed = self.changed.take();
        for (id, p) in by_id(part) {
            let Some(mut st) = p.segments.take() else {
                continue;
            };
            // Nothing the segments kept can change by time before `now` when their next
            // instant is later; the new ones are evaluated at `now` below.
            let kept_due = changed.is_some() && st.due > now;
            if kept_due {
                st.at = st.at.max(now);
            } else {
                self.advance(p, &mut st, now);
            }
            let traits = self.segs.traits_scored(p, &st.journeys.scores);
            match &changed {
                Some(c) => {
                    self.segs
                        .set
                        .refresh_changed(&mut st.m, &traits, st.at, c, &mut self.changes)
                }
                None => self
                    .segs
                    .set
                    .refresh(&mut st.m, &traits, st.at, &mut self.changes),
            }
            // Every timer was dropped above: schedule this profile's again, changed or not.
            let before = std::mem::replace(&mut st.due, i64::MAX);
            let due = changed.as_ref().filter(|_| kept_due).map(|c| {
                let traits = self.segs.traits_scored(p, &st.journeys.scores);
                self.segs
                    .set
                    .next_change_of(&st.m, &traits, st.at, c)
                    .map_or(before, |t| t.min(before))
            });
            self.finish_with(id, p, &mut st, due);
            p.segments = Some(st);
        }
        if let Some(b) = self.timers.bulk.take() {
            self.timers.due = b.into_iter().collect();
        }
    }

    /// A profile left this partition for good (taken apart by an un-merge).
    fn gone(&mut self, p: &Profile) {
        for (i, _) in p.segments.iter().flat_map(|s| s.m.member.iter()) {
            if let Some(n) = self.sizes.get(*i as usize) {
                n.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Absorbs profile `p` into `id` (a merge), creating `id` if missing.
    fn put(&mut self, part: &mut Partition, id: u64, mut p: Box<Profile>, now: i64) {
        let theirs = p.segments.take();
        let mut theirs = theirs.map(|mut st| {
            self.advance(&p, &mut st, now);
            st
        });
        // The absorbed profile's last changes count; then its memberships end with it.
        self.count_sizes();
        self.changes.clear();
        if let Some(st) = &theirs {
            for (i, _) in &st.m.member {
                if let Some(n) = self.sizes.get(*i as usize) {
                    n.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        let target = match part.get_mut(&id) {
            Some(existing) => {
                // The target's own time runs to the merge first, with its own traits (a
                // target that waited for this merge had its timers held).
                let mine = existing.segments.take().map(|mut st| {
                    if self.active() {
                        self.advance(existing, &mut st, now);
                    }
                    st
                });
                existing.absorb(*p);
                existing.segments = mine;
                existing
            }
            None => {
                // Nothing to merge with: the profile moves with its memberships.
                let target = part.entry(id).or_insert(p);
                if let Some(mut st) = theirs.take() {
                    for (i, _) in &st.m.member {
                        if let Some(n) = self.sizes.get(*i as usize) {
                            n.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    self.finish(id, target, &mut st);
                    target.segments = Some(st);
                    return;
                }
                target
            }
        };
        if !self.active() {
            return;
        }
        let mut st = match target.segments.take() {
            Some(st) => st,
            None => Box::new(SegState {
                at: now,
                due: i64::MAX,
                ..Default::default()
            }),
        };
        let now = st.at;
        let other = theirs.take().map(|t| *t).unwrap_or_default();
        // Scores add up first: segments of the merged profile read the sum.
        niyet_actions::Triggers::absorb(&mut st.journeys, &other.journeys);
        if !self.journeys.scores.is_empty() {
            let mut crossed = Vec::new();
            let j = self.journeys.clone();
            j.scores.absorb(
                &mut st.journeys.scores,
                &other.journeys.scores,
                now,
                &mut crossed,
            );
            self.crossed(&mut st, &crossed);
        }
        let traits = self.segs.traits_scored(target, &st.journeys.scores);
        self.segs
            .set
            .on_merge(&mut st.m, &other.m, &traits, now, &mut self.changes);
        let mut history = other.history;
        history.extend_from_slice(&st.history);
        history.sort_by_key(|h| h.2);
        st.history = history;
        self.finish(id, target, &mut st);
        target.segments = Some(st);
    }
}

/// A snapshot being taken: the sections encoded at its start (names, matcher, API state),
/// the partition owners' sections to come, and the offset it stands at.
struct Taking {
    sections: Vec<snapshot::Section>,
    waits: Vec<mpsc::Receiver<Result<snapshot::Section, PipelineError>>>,
    offset: u64,
    started: Instant,
    /// When the graph's next piece is due.
    pace: snapshot::Pacer,
}

struct Router {
    sh: Arc<Shared>,
    senders: Vec<Outbox>,
    /// The name table; [`Shared::symbols`] is a copy that follows it (see
    /// [`Router::publish_names`]).
    syms: Symbols,
    /// How many of `syms` the shared table has.
    published_names: usize,
    /// Operations not yet sent, per partition (sent in batches to spare wake-ups).
    outbox: Vec<Vec<Op>>,
    next: u64,
    since_snapshot: u64,
    /// Profiles a `Put` was forwarded to since the last flush.
    moved_into: niyet_model::hash::FastSet<u64>,
    /// The thread writing the latest snapshot file.
    snapshot_writer: Option<JoinHandle<()>>,
    /// The snapshot being taken (see [`Router::snapshot`]).
    taking: Option<Taking>,
    /// The last processing time sent as a `Tick`.
    ticked: i64,
    /// Processing time: the latest receive time read from the log.
    now: i64,
    /// Merges sent so far (numbers them).
    merges: u64,
    /// Offsets of suppressed events to erase from the log.
    to_erase: Vec<u64>,
}

impl Router {
    fn run(&mut self) {
        loop {
            let stopping = self.sh.stop.load(Ordering::SeqCst);
            let end = self.sh.log.end_offset();
            if stopping && self.next >= end {
                break;
            }
            if self.next >= end {
                self.tick();
                let wait = self
                    .taking
                    .as_ref()
                    .map_or(Duration::from_millis(100), |t| t.pace.wait());
                if wait.is_zero() {
                    // Idle: a step of the snapshot's graph when one is due.
                    self.snapshot_step();
                } else {
                    self.sh
                        .log
                        .wait_for(self.next, wait.min(Duration::from_millis(100)));
                }
                continue;
            }
            let recs = match self.sh.log.read(self.next, 512) {
                Ok(r) => r,
                Err(LogError::BeforeStart { start, .. }) => {
                    tracing::warn!(
                        from = self.next,
                        start,
                        "log records removed by retention were never processed"
                    );
                    self.next = start;
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "reading the log failed; processing stops");
                    if let Ok(mut f) = self.sh.failed.lock() {
                        *f = Some(e.to_string());
                    }
                    break;
                }
            };
            for r in &recs {
                // Processing time never goes back, even where the log's receive times
                // do by a few milliseconds (requests stamped in one order, stored in
                // another).
                self.now = self.now.max(r.time_ms);
                self.process(r.offset, self.now, &r.payload);
                self.next = r.offset + 1;
            }
            self.since_snapshot += recs.len() as u64;
            self.erase_suppressed();
            // Every partition takes its timers due by the chunk's processing time, also
            // those that had no event in it: the state after a record never depends on
            // how profiles are spread over partitions.
            if self.timers_on() {
                for i in 0..self.senders.len() {
                    self.send_to(i, Op::Tick(self.now));
                }
            }
            self.sh
                .priority
                .behind(self.sh.log.end_offset().saturating_sub(self.next));
            // Everything for this chunk must be queued before the marker starts its round.
            self.ship_all();
            self.sample_sizes();
            self.send_to(0, Op::Mark(self.next, 2 * self.senders.len() - 1));
            self.ship(0);
            if self
                .taking
                .as_ref()
                .is_some_and(|t| t.pace.wait().is_zero())
            {
                self.snapshot_step();
            }
            // One snapshot at a time: the next waits until the last is written.
            if self.since_snapshot >= self.sh.cfg.snapshot_every
                && self.taking.is_none()
                && self
                    .snapshot_writer
                    .as_ref()
                    .is_none_or(|h| h.is_finished())
            {
                self.snapshot();
            }
        }
        if self.since_snapshot > 0 {
            self.snapshot();
        }
    }

    /// Adds the names interned since the last call to the shared table the API and the
    /// action documents read. The router is the only thread that interns names and does
    /// it in its own table, so it takes the shared table's write lock only when a name is
    /// new (rare once the names of a workload are known): a reader rendering a profile
    /// never stops the router, and the router never waits for one. A name is shared
    /// before any update carrying its symbol leaves the router.
    fn publish_names(&mut self) {
        if self.syms.len() == self.published_names {
            return;
        }
        if let Ok(mut shared) = self.sh.symbols.write() {
            shared.catch_up(&self.syms);
        }
        self.published_names = self.syms.len();
    }

    /// Takes a sample of the segment sizes when one is due at the processing time.
    fn sample_sizes(&mut self) {
        let now = self.now.max(self.ticked);
        let Ok(mut h) = self.sh.size_history.lock() else {
            return;
        };
        if !h.due(now) {
            return;
        }
        let (Ok(segs), Ok(sizes)) = (self.sh.segments.read(), self.sh.sizes.read()) else {
            return;
        };
        if segs.set.is_empty() {
            return;
        }
        let names = Arc::new(
            (0..segs.set.len())
                .map(|i| segs.set.name(i).to_string())
                .collect(),
        );
        let n = sizes
            .iter()
            .map(|a| a.load(Ordering::Relaxed).max(0))
            .collect();
        h.record(now, names, n);
    }

    /// While the log is idle, lets timers fire up to the clock (less the lag).
    fn timers_on(&self) -> bool {
        self.sh
            .segments
            .read()
            .map(|s| !s.set.is_empty())
            .unwrap_or(false)
            || self.sh.journeys.active()
    }

    fn tick(&mut self) {
        if !self.timers_on() {
            return;
        }
        let t = self.sh.cfg.clock.0.now_ms() - self.sh.cfg.timer_lag_ms;
        if t <= self.ticked || t <= self.now {
            return;
        }
        self.ticked = t;
        self.now = t;
        for i in 0..self.senders.len() {
            self.send_to(i, Op::Tick(t));
        }
        self.ship_all();
        self.sample_sizes();
    }

    fn send_to(&mut self, part: usize, op: Op) {
        self.outbox[part].push(op);
        // Batches of 256 keep wake-ups rare under load; a worker with nothing queued gets
        // work sooner (an event reaches its profile without waiting for the whole chunk).
        let n = self.outbox[part].len();
        if n >= 256 || (n >= 32 && self.sh.queued[part].load(Ordering::Relaxed) == 0) {
            self.ship(part);
        }
    }

    fn ship(&mut self, part: usize) {
        if self.outbox[part].is_empty() {
            return;
        }
        // Back-pressure: never queue without bound ahead of a slow worker.
        let mut spins = 0u32;
        while self.sh.queued[part].load(Ordering::Relaxed) >= MAX_QUEUED {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        let ops = std::mem::take(&mut self.outbox[part]);
        self.sh.queued[part].fetch_add(ops.len(), Ordering::Relaxed);
        let _ = self.senders[part].send(ops);
    }

    fn ship_all(&mut self) {
        for p in 0..self.outbox.len() {
            self.ship(p);
        }
    }

    fn send(&mut self, id: ProfileId, op: Op) {
        self.send_to(self.sh.partition_of(id), op);
    }

    /// Waits until every operation sent so far, and every `Put` forwarded because of one,
    /// is applied.
    fn flush(&mut self) {
        self.moved_into.clear();
        for _ in 0..2 {
            let mut waits = Vec::new();
            for i in 0..self.senders.len() {
                let (tx, rx) = mpsc::sync_channel(1);
                self.send_to(i, Op::Barrier(tx));
                waits.push(rx);
            }
            self.ship_all();
            for w in waits {
                let _ = w.recv();
            }
        }
    }

    fn take(&mut self, id: ProfileId) -> Option<Box<Profile>> {
        self.flush();
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(id, Op::Take(id, tx));
        self.ship_all();
        rx.recv().ok().flatten()
    }

    fn bump(&self, f: impl FnOnce(&mut PipelineStats)) {
        if let Ok(mut s) = self.sh.stats.lock() {
            f(&mut s);
        }
    }

    fn process(&mut self, offset: u64, now_ms: i64, payload: &[u8]) {
        let view = match extract::parse(payload) {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(offset, error = %e, "record skipped by profiles");
                self.bump(|s| s.unreadable += 1);
                return;
            }
        };
        match view.kind {
            Kind::Control => return self.control(offset, now_ms, payload, &view),
            Kind::Other => return,
            Kind::Track => self.catalogue_event(&view),
            _ => {}
        }
        let res = {
            let Ok(mut g) = self.sh.graph.write() else {
                return;
            };
            let (ids, explicit) = view.identifiers(&self.sh.cfg.identity, &mut g);
            if self.sh.suppressed.any_of(ids.iter().map(Ident::key)) {
                None
            } else {
                Some(g.resolve(&ids, offset, view.time_ms, explicit))
            }
        };
        let Some(res) = res else {
            return self.skip_suppressed(offset);
        };
        let Some(mut pid) = res.profile else {
            self.bump(|s| s.unresolved += 1);
            return;
        };
        if !res.merged.is_empty() || res.conflicts > 0 {
            self.bump(|s| {
                s.merges += res.merged.len() as u64;
                s.conflicts += res.conflicts as u64;
            });
        }
        for (from, into) in &res.merged {
            self.move_profile(*from, *into, now_ms);
        }
        if self.sh.cfg.matching.enabled {
            pid = self.match_probable(pid, offset, now_ms, &view);
        }
        if let Some(u) = self.update(&view, offset, now_ms) {
            self.send(pid, Op::Apply(pid, u));
        }
    }

    /// A product event (by name, see [`catalogue`]) updates the catalogue; it also goes
    /// to the profile that sent it like any other event.
    fn catalogue_event(&self, view: &extract::EventView<'_>) {
        let events = &self.sh.cfg.catalogue_events;
        let Some(name) = view.name.as_deref() else {
            return;
        };
        if !events.iter().any(|e| e == name) {
            return;
        }
        let props: serde_json::Value = view
            .properties
            .and_then(|r| serde_json::from_str(r.get()).ok())
            .unwrap_or_default();
        if let Ok(mut c) = self.sh.catalogue.write() {
            if !catalogue::apply_event(&mut c, &props) {
                tracing::debug!(event = name, "a product event without sku or product_id");
            }
        }
    }

    /// The update of an event for its profile, with what segment features read of it.
    fn update(
        &mut self,
        view: &extract::EventView<'_>,
        offset: u64,
        now_ms: i64,
    ) -> Option<Update> {
        let mut u = Update::from_view(view, offset, &mut self.syms, &self.sh.cfg.commerce)?;
        self.publish_names();
        u.now_ms = now_ms;
        let j = &self.sh.journeys;
        if !j.scores.is_empty() {
            if let Some(name) = niyet_engine::segments::event_name(view) {
                // Names no signal reads are one hash lookup and no allocation.
                u.signals = j.scores.matches(&name, &SignalProps::new(view));
            }
        }
        if let Ok(segs) = self.sh.segments.read() {
            if !segs.set.is_empty() {
                u.seg = seg_event(&segs, view);
            }
        }
        Some(u)
    }

    /// Probabilistic matching for the event's profile; returns the profile the event
    /// belongs to afterwards (it may have been merged into another).
    fn match_probable(
        &mut self,
        pid: ProfileId,
        offset: u64,
        now_ms: i64,
        view: &extract::EventView<'_>,
    ) -> ProfileId {
        let signals = view.signals();
        if signals.is_empty() {
            return pid;
        }
        let cfg = self.sh.cfg.matching.clone();
        let candidates = match (self.sh.matcher.write(), self.sh.graph.read()) {
            (Ok(mut m), Ok(g)) => m.observe(&cfg, &g, pid, &signals, view.time_ms),
            _ => return pid,
        };
        let mut current = pid;
        for c in candidates {
            let linked = if c.probability >= cfg.merge_threshold {
                match self.sh.graph.write() {
                    Ok(mut g) => g.link(current, c.other, offset, view.time_ms, c.probability),
                    Err(_) => return current,
                }
            } else {
                Err(String::new())
            };
            match linked {
                Ok((from, into)) => {
                    self.move_profile(from, into, now_ms);
                    current = into;
                    self.bump(|s| {
                        s.merges += 1;
                        s.probable_merges += 1;
                    });
                }
                Err(_) => {
                    if let Ok(mut m) = self.sh.matcher.write() {
                        m.suggest(current, &c, offset);
                    }
                    self.bump(|s| s.suggestions += 1);
                }
            }
        }
        current
    }

    fn move_profile(&mut self, from: ProfileId, into: ProfileId, now_ms: i64) {
        // A profile that is the target of a forwarded `Put` still on its way must not
        // move before that `Put` arrives (it would land on a profile that no longer
        // exists): wait for the queues to drain first. Rare: it takes two merges of one
        // profile in a short time.
        if self.moved_into.contains(&from.0) {
            self.flush();
        }
        if self.sh.partition_of(from) != self.sh.partition_of(into) {
            self.moved_into.insert(into.0);
            self.send(into, Op::Expect(into, self.merges));
        }
        self.send(from, Op::MoveTo(from, into, now_ms, self.merges));
        self.merges += 1;
    }

    fn control(&mut self, offset: u64, now_ms: i64, payload: &[u8], view: &extract::EventView<'_>) {
        let outcome = match &*view.type_name {
            "niyet.unmerge" => self.unmerge(offset, view),
            "niyet.erase" => self.erase(payload),
            "niyet.clv_model" => self.publish_clv(offset, payload, now_ms),
            // An erased record: nothing left to do.
            "niyet.erased" => return,
            "niyet.segment" => self.define(payload, now_ms),
            "niyet.catalogue" => match self.sh.catalogue.write() {
                Ok(mut c) => catalogue::apply_admin(&mut c, payload),
                Err(_) => Err("stopped".into()),
            },
            other => Err(format!("unknown admin action `{other}`")),
        };
        if let Ok(mut o) = self.sh.outcomes.lock() {
            o.insert(offset, outcome);
            while o.len() > 1024 {
                o.pop_first();
            }
        }
    }

    /// Applies a segment definition from the log: the new set is compiled, every profile
    /// carried over, new features filled from the whole log, and every profile evaluated.
    fn define(&mut self, payload: &[u8], now_ms: i64) -> Result<serde_json::Value, String> {
        #[derive(serde::Deserialize)]
        struct Action {
            action: String,
            name: String,
            #[serde(default)]
            rule: String,
            #[serde(default)]
            description: String,
        }
        let a: Action = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
        if self.sh.cfg.segments.iter().any(|(n, _)| *n == a.name) {
            return Err(format!(
                "segment `{}` is defined in the configuration file; change it there",
                a.name
            ));
        }
        let mut api = self.sh.api_segments.read().map_err(|_| "stopped")?.clone();
        let existing = api.iter().position(|s| s.name == a.name);
        match (a.action.as_str(), existing) {
            ("put", Some(i)) => {
                api[i].rule = a.rule.clone();
                api[i].description = a.description.clone();
            }
            ("put", None) => api.push(ApiSegment {
                name: a.name.clone(),
                rule: a.rule.clone(),
                description: a.description.clone(),
            }),
            ("delete", Some(i)) => {
                api.remove(i);
            }
            ("delete", None) => return Err(format!("no segment named `{}`", a.name)),
            (other, _) => return Err(format!("unknown segment action `{other}`")),
        }
        let mut defs = self.sh.cfg.segments.clone();
        for s in &api {
            let rule =
                niyet_rules::parse(&s.rule).map_err(|e| format!("segment `{}`: {e}", s.name))?;
            defs.push((s.name.clone(), rule));
        }
        let started = Instant::now();
        let old = self.sh.segments.read().map_err(|_| "stopped")?.clone();
        let (set, r) = old.set.redefine(&defs).map_err(|e| e.to_string())?;
        self.flush();
        let segs = {
            let mut segs = Segments::with_set(set, &mut self.syms);
            self.publish_names();
            segs.scores = old.scores.clone();
            if let Some((seg, score)) = segs.unknown_scores().into_iter().next() {
                return Err(format!("segment `{seg}`: no score is named `{score}`"));
            }
            let model = old.clv.read().ok().and_then(|m| m.clone());
            if let Ok(mut m) = segs.clv.write() {
                *m = model;
            }
            Arc::new(segs)
        };
        let sizes: Arc<Vec<AtomicI64>> =
            Arc::new((0..segs.set.len()).map(|_| AtomicI64::new(0)).collect());
        let r = Arc::new(r);
        for i in 0..self.senders.len() {
            self.send_to(
                i,
                Op::Redefine(segs.clone(), sizes.clone(), r.clone(), now_ms),
            );
        }
        let events = if r.new_features.is_empty() {
            0
        } else {
            self.backfill(&segs, Arc::new(r.new_features.clone()))?
        };
        let read_ms = started.elapsed().as_millis() as u64;
        for i in 0..self.senders.len() {
            self.send_to(i, Op::Refresh(now_ms));
        }
        self.flush();
        tracing::info!(
            segment = %a.name,
            backfilled_events = events,
            read_ms,
            took_ms = started.elapsed().as_millis() as u64,
            "segments redefined"
        );
        *self.sh.segments.write().map_err(|_| "stopped")? = segs;
        *self.sh.sizes.write().map_err(|_| "stopped")? = sizes;
        *self.sh.api_segments.write().map_err(|_| "stopped")? = api;
        Ok(serde_json::json!({
            "segment": a.name,
            "action": a.action,
            "backfilled_events": events,
            "took_ms": started.elapsed().as_millis() as u64,
        }))
    }

    /// Sends every past event that new features read to the partition owners, in log
    /// order; returns how many.
    fn backfill(
        &mut self,
        segs: &Segments,
        ids: Arc<Vec<niyet_rules::FeatureId>>,
    ) -> Result<u64, String> {
        let log = self.sh.log.clone();
        let (start, end) = (log.stats().start_offset, self.next);
        let mut count = 0u64;
        scan_in_parallel(&log, segs, &ids, start, end, |chunk| {
            count += chunk.len() as u64;
            self.backfill_chunk(chunk, &ids);
        })?;
        Ok(count)
    }

    fn backfill_chunk(
        &mut self,
        chunk: Vec<(u64, i64, SegEvent)>,
        ids: &Arc<Vec<niyet_rules::FeatureId>>,
    ) {
        if chunk.is_empty() {
            return;
        }
        let chunk = Arc::new(chunk);
        for i in 0..self.senders.len() {
            self.send_to(i, Op::Backfill(chunk.clone(), ids.clone()));
        }
        self.ship_all();
    }

    fn unmerge(
        &mut self,
        offset: u64,
        view: &extract::EventView<'_>,
    ) -> Result<serde_json::Value, String> {
        #[derive(serde::Deserialize)]
        struct Action {
            profile: String,
            identifier: Id,
        }
        #[derive(serde::Deserialize)]
        struct Id {
            #[serde(rename = "type")]
            kind: String,
            value: String,
        }
        let raw = self
            .sh
            .log
            .read(offset, 1)
            .map_err(|e| e.to_string())?
            .pop()
            .ok_or("the action is not in the log")?;
        let a: Action = serde_json::from_slice(&raw.payload).map_err(|e| e.to_string())?;
        let id: ProfileId = a
            .profile
            .parse()
            .map_err(|_| format!("`{}` is not a profile id", a.profile))?;
        let (ident, id) = {
            let g = self.sh.graph.read().map_err(|_| "stopped")?;
            let kind = g
                .kinds()
                .get(&a.identifier.kind)
                .ok_or_else(|| format!("unknown identifier type `{}`", a.identifier.kind))?;
            let ident = Ident::new(kind, a.identifier.value.as_str());
            let id = g
                .canonical(id)
                .ok_or_else(|| format!("profile {id} does not exist"))?;
            if g.lookup(&ident) != Some(id) {
                return Err(format!(
                    "{}:{} does not belong to profile {id}",
                    a.identifier.kind, a.identifier.value
                ));
            }
            (ident, id)
        };
        let profile = self.take(id).unwrap_or_default();
        let start = self.sh.log.stats().start_offset;
        let offsets: Vec<u64> = profile.events.iter().collect();
        if offsets.first().is_some_and(|o| *o < start) {
            self.send(id, Op::Restore(id, profile, view.time_ms));
            return Err("part of the profile's history is no longer in the log (retention); it cannot be split".into());
        }
        let mut payloads = Vec::with_capacity(offsets.len());
        for o in &offsets {
            match self.sh.log.read(*o, 1) {
                Ok(mut r) if !r.is_empty() => payloads.push((*o, r.remove(0).payload)),
                _ => {
                    self.send(id, Op::Restore(id, profile, view.time_ms));
                    return Err(format!("event {o} could not be read back"));
                }
            }
        }
        let plan = {
            let Ok(mut g) = self.sh.graph.write() else {
                return Err("stopped".into());
            };
            let mut events = Vec::with_capacity(payloads.len());
            for (o, p) in &payloads {
                if let Ok(v) = extract::parse(p) {
                    let (ids, _) = v.identifiers(&self.sh.cfg.identity, &mut g);
                    events.push((*o, ids));
                }
            }
            match g.split(id, &ident, &events, offset, view.time_ms) {
                Ok(plan) => plan,
                Err(e) => {
                    drop(g);
                    self.send(id, Op::Restore(id, profile, view.time_ms));
                    return Err(e.to_string());
                }
            }
        };
        let by_offset: BTreeMap<u64, &Vec<u8>> = payloads.iter().map(|(o, p)| (*o, p)).collect();
        // Each part is rebuilt from its events through the owner's usual path, so its
        // segment features and memberships are rebuilt too (at the time of the split).
        let mut groups = Vec::new();
        for (pid, offs) in &plan.groups {
            for o in offs {
                let Some(bytes) = by_offset.get(o) else {
                    continue;
                };
                if let Ok(v) = extract::parse(bytes) {
                    if let Some(u) = self.update(&v, *o, view.time_ms) {
                        self.send(*pid, Op::Apply(*pid, u));
                    }
                }
            }
            groups.push(serde_json::json!({"profile": pid.to_string(), "events": offs.len()}));
        }
        Ok(serde_json::json!({
            "profile": plan.original.to_string(),
            "new_profile": plan.new.to_string(),
            "profiles": groups,
        }))
    }

    /// Starts a snapshot of the state after the records read so far, without stopping:
    /// the partition owners and the graph are encoded a piece at a time as work goes on
    /// (each profile and node before it first changes), the names, matcher, API segments
    /// and catalogue at once; the file is written by a thread of its own once every piece
    /// is in. One snapshot at a time.
    fn snapshot(&mut self) {
        self.snapshot_at(self.sh.cfg.snapshot_share);
    }

    /// Starts a snapshot whose encoding may use `share` of each thread's time.
    fn snapshot_at(&mut self, share: f64) {
        self.finish_snapshot_write();
        // Let every worker finish what it was sent (no merge in flight between two
        // partitions), and the actions it took be durable.
        self.flush();
        if let Some(h) = &self.sh.cfg.on_action {
            (h.sync)();
        }
        let started = Instant::now();
        let mut waits = Vec::new();
        // Every profile of this moment has an id below it.
        let Ok(end) = self.sh.graph.read().map(|g| g.next_id()) else {
            return tracing::error!("the identity graph is unusable; no snapshot");
        };
        for i in 0..self.senders.len() {
            let (tx, rx) = mpsc::sync_channel(1);
            let spill = snapshot::spill_path(&self.sh.cfg.state_dir, self.next, i);
            self.send_to(i, Op::Encode(tx, spill, end, share));
            waits.push(rx);
        }
        self.ship_all();
        let rest = (|| {
            self.sh
                .graph
                .write()
                .map_err(|_| PipelineError::Stopped)?
                .begin_capture();
            let syms = &self.syms;
            let m = self.sh.matcher.read().map_err(|_| PipelineError::Stopped)?;
            let api = self
                .sh
                .api_segments
                .read()
                .map_err(|_| PipelineError::Stopped)?;
            let cat = self
                .sh
                .catalogue
                .read()
                .map_err(|_| PipelineError::Stopped)?;
            Ok::<_, PipelineError>(vec![
                snapshot::Section::Memory(vec![snapshot::encode(syms.names())?]),
                snapshot::Section::Memory(vec![snapshot::encode(&*m)?]),
                snapshot::Section::Memory(vec![snapshot::encode(&(&*api, &*cat))?]),
            ])
        })();
        // Not fatal either way: the log still holds everything; the next interval retries.
        self.since_snapshot = 0;
        match rest {
            Ok(sections) => {
                tracing::info!(
                    offset = self.next,
                    paused_ms = started.elapsed().as_millis() as u64,
                    "snapshot started"
                );
                self.taking = Some(Taking {
                    sections,
                    waits,
                    offset: self.next,
                    started,
                    pace: self.sh.cfg.pacer(share),
                });
            }
            Err(e) => {
                if let Ok(mut g) = self.sh.graph.write() {
                    let _ = g.finish_capture();
                }
                tracing::error!(error = %e, "encoding a snapshot failed");
            }
        }
    }

    /// Encodes one step's worth of the graph for the snapshot being taken (see
    /// [`snapshot::Pacer`]).
    fn snapshot_step(&mut self) {
        let Some(t) = self.taking.as_mut() else {
            return;
        };
        let chunk = self.sh.cfg.snapshot_chunk.max(1);
        let graph = &self.sh.graph;
        let mut done = None;
        t.pace.step(|| match graph.write() {
            Ok(mut g) => {
                done = g.capture_step(chunk);
                done.is_some()
            }
            Err(_) => true,
        });
        self.snapshot_capture_done(done);
    }

    /// Encodes the rest of the graph for the snapshot being taken at once.
    fn snapshot_finish_capture(&mut self) {
        if self.taking.is_none() {
            return;
        }
        let done = match self.sh.graph.write() {
            Ok(mut g) => g.capture_step(usize::MAX),
            Err(_) => return,
        };
        self.snapshot_capture_done(done);
    }

    /// Once the graph is in, hands everything to the thread that writes the file.
    fn snapshot_capture_done(&mut self, done: Option<Result<niyet_identity::Captured, String>>) {
        let Some(graph) = done else { return };
        let Some(t) = self.taking.take() else { return };
        let graph = match graph {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "encoding a snapshot failed");
                return;
            }
        };
        let (dir, fp) = (self.sh.cfg.state_dir.clone(), self.sh.cfg.fingerprint());
        let sh = self.sh.clone();
        let spawned = std::thread::Builder::new()
            .name("niyet-snapshot".into())
            .spawn(move || {
                let Taking {
                    sections: rest,
                    waits,
                    offset,
                    started,
                    ..
                } = t;
                // The graph's redirects are sorted here, not on the router.
                let graph = match graph.into_pieces() {
                    Ok(g) => g,
                    Err(e) => return tracing::error!(error = %e, "encoding a snapshot failed"),
                };
                let mut sections = vec![snapshot::Section::Memory(graph)];
                sections.extend(rest);
                for w in waits {
                    match w.recv() {
                        Ok(Ok(sec)) => sections.push(sec),
                        Ok(Err(e)) => {
                            return tracing::error!(error = %e, "encoding a snapshot failed")
                        }
                        Err(_) => return tracing::error!("a partition stopped during a snapshot"),
                    }
                }
                let encoded_ms = started.elapsed().as_millis() as u64;
                match snapshot::write(&dir, fp, offset, &sections) {
                    Ok(bytes) => {
                        if let Ok(mut s) = sh.stats.lock() {
                            s.snapshots += 1;
                        }
                        tracing::info!(
                            offset,
                            bytes,
                            encoded_ms,
                            ms = started.elapsed().as_millis() as u64,
                            "snapshot written"
                        );
                    }
                    Err(e) => tracing::error!(error = %e, "writing a snapshot failed"),
                }
            });
        match spawned {
            Ok(h) => self.snapshot_writer = Some(h),
            Err(e) => tracing::error!(error = %e, "starting the snapshot writer failed"),
        }
    }

    /// Finishes the snapshot being taken, if any, and waits until it is written.
    fn finish_snapshot_write(&mut self) {
        self.snapshot_finish_capture();
        if let Some(h) = self.snapshot_writer.take() {
            let _ = h.join();
        }
    }
}

/// [`scan_for_features`] over `start..end` with several readers: the log is cut into
/// ranges, each read on a thread of its own, and `each` gets their chunks on the calling
/// thread in log order (a range's after those of the ranges before it). Past records may
/// come from the device (the log is written with direct I/O), which answers several reads
/// at once much faster than one. No reader waits for `each`: while it is busy, the events
/// read wait in memory. Returns how many events were handed on.
pub(crate) fn scan_in_parallel(
    log: &Log,
    segs: &Segments,
    ids: &[niyet_rules::FeatureId],
    start: u64,
    end: u64,
    mut each: impl FnMut(Vec<(u64, i64, SegEvent)>),
) -> Result<u64, String> {
    let n = BACKFILL_READERS as u64;
    let span = end.saturating_sub(start);
    let bounds: Vec<u64> = (0..=n).map(|k| start + span * k / n).collect();
    std::thread::scope(|scope| {
        let mut readers = Vec::new();
        for w in bounds.windows(2) {
            let (from, to) = (w[0], w[1]);
            let (tx, rx) = std::sync::mpsc::channel();
            let h = std::thread::Builder::new()
                .name("niyet-backfill".into())
                .spawn_scoped(scope, move || {
                    scan_for_features(log, segs, ids, from, to, |c| {
                        // The receiver goes away only when an earlier range failed.
                        let _ = tx.send(c);
                    })
                })
                .map_err(|e| format!("starting a log reader: {e}"))?;
            readers.push((h, rx));
        }
        let t = Instant::now();
        let mut count = 0u64;
        for (h, rx) in readers {
            for chunk in rx {
                count += chunk.len() as u64;
                each(chunk);
            }
            h.join().map_err(|_| "a log reader failed".to_string())??;
        }
        tracing::debug!(
            all_ms = t.elapsed().as_millis() as u64,
            events = count,
            "log read in parallel for new features"
        );
        Ok(count)
    })
}

/// Reads the log from `start` to `end` for the events the features `ids` read, handing
/// them on in log order in chunks; returns how many.
pub(crate) fn scan_for_features(
    log: &Log,
    segs: &Segments,
    ids: &[niyet_rules::FeatureId],
    start: u64,
    end: u64,
    mut each: impl FnMut(Vec<(u64, i64, SegEvent)>),
) -> Result<u64, String> {
    // Names the features read; events whose stored form cannot hold one of them are
    // skipped without being parsed. Of each name, only the property paths the new
    // features read are taken (`*`: features of every event).
    type Paths = Box<[Box<str>]>;
    let paths_for = |name: &str| -> Paths {
        let read = segs.set.props_for_features(name, ids);
        read.into_iter().map(Box::from).collect()
    };
    let mut any = false;
    let mut needles: Vec<Vec<u8>> = Vec::new();
    let mut wanted: Vec<(Box<str>, Paths)> = Vec::new();
    for id in ids.iter() {
        let d = &segs.set.catalog().defs()[*id as usize];
        let mut names = vec![d.event.name.as_str()];
        if let niyet_rules::compile::FeatureKind::Sequence { then, .. } = &d.kind {
            names.push(then.name.as_str());
        }
        for n in names {
            if n == "*" {
                any = true;
                continue;
            }
            if wanted.iter().any(|(w, _)| &**w == n) {
                continue;
            }
            wanted.push((n.into(), paths_for(n)));
            // Calls other than `track` go by their type.
            let call = match n {
                "Page Viewed" => Some("page"),
                "Screen Viewed" => Some("screen"),
                "Identify" => Some("identify"),
                "Group" => Some("group"),
                "Alias" => Some("alias"),
                _ => None,
            };
            if let Some(c) = call {
                needles.push(format!("\"{c}\"").into_bytes());
            }
            needles.push(serde_json::to_vec(n).map_err(|e| e.to_string())?);
        }
    }
    let finders: Vec<memchr::memmem::Finder<'_>> =
        needles.iter().map(memchr::memmem::Finder::new).collect();
    let any_paths = any.then(|| paths_for(""));
    let mut at = start;
    let mut count = 0u64;
    // Chunks are allocated at their full size and handed on when full: no chunk grows
    // (copying itself into fresh memory) while the log is read.
    const CHUNK: usize = 1024;
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut full = Vec::new();
    while at < end {
        let max = (end - at).min(4096) as usize;
        // Records are looked at where they lie in the reader's buffer: most are passed
        // over, and none is copied.
        let n = log
            .scan(at, max, |r| {
                at = r.offset + 1;
                if !any && !finders.iter().any(|f| f.find(r.payload).is_some()) {
                    return;
                }
                let Ok(view) = extract::parse_for_features(r.payload) else {
                    return;
                };
                let Some(name) = niyet_engine::segments::event_name(&view) else {
                    return;
                };
                let paths = match wanted.iter().find(|(w, _)| **w == *name) {
                    Some((_, p)) => Some(p),
                    None => any_paths.as_ref(),
                };
                if let Some(paths) = paths {
                    let e = niyet_engine::segments::seg_event_with(&view, name, paths);
                    chunk.push((r.offset, view.time_ms, e));
                    if chunk.len() == CHUNK {
                        full.push(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)));
                    }
                }
            })
            .map_err(|e| format!("reading the log for the backfill: {e}"))?;
        // Handed on outside the scan, which may hold the log's in-memory tail.
        for c in full.drain(..) {
            count += c.len() as u64;
            each(c);
        }
        if n == 0 {
            break;
        }
    }
    if !chunk.is_empty() {
        count += chunk.len() as u64;
        each(chunk);
    }
    Ok(count)
}

#[cfg(test)]
mod backfill_index_tests {
    use super::BackfillIndex;
    use proptest::prelude::*;

    proptest! {
        /// The compact index answers as the wide one: the same offsets in order, each
        /// with its profile.
        #[test]
        fn compact_and_wide_agree(
            profiles in prop::collection::btree_map(any::<u64>(), prop::collection::btree_set(0u64..100_000, 0..20), 0..50),
        ) {
            // Each offset belongs to one profile.
            let mut seen = std::collections::BTreeSet::new();
            let profiles: Vec<(u64, Vec<u64>)> = profiles
                .into_iter()
                .map(|(id, offs)| (id, offs.into_iter().map(|o| o + 900_000_000_000).filter(|o| seen.insert(*o)).collect()))
                .collect();
            // The lowest offset held, as the owner takes it.
            let base = seen.first().copied().unwrap_or(u64::MAX);
            let mut narrow = BackfillIndex::Narrow { base, keys: Vec::new(), ids: Vec::new() };
            let mut wide = BackfillIndex::Wide(Vec::new());
            for (id, offs) in &profiles {
                narrow.add(*id, offs.iter().copied());
                wide.add(*id, offs.iter().copied());
            }
            narrow.sort();
            wide.sort();
            let from_wide: Vec<(u64, u64)> = (0..wide.len())
                .filter_map(|k| Some((wide.offset(k)?, wide.profile(k)?)))
                .collect();
            let from_narrow: Vec<(u64, u64)> = (0..narrow.len())
                .filter_map(|k| Some((narrow.offset(k)?, narrow.profile(k)?)))
                .collect();
            prop_assert!(from_wide.windows(2).all(|w| w[0].0 < w[1].0));
            prop_assert_eq!(from_narrow, from_wide);
        }
    }
}

#[cfg(test)]
mod signal_props_tests {
    use super::{raw_at, raw_equals};
    use niyet_actions::score::EventProps;
    use serde_json::json;

    /// Filters matched on the stored text agree with matching on a parsed tree.
    #[test]
    fn raw_filter_matching_agrees_with_the_parsed_tree() {
        let docs = [
            r#"{"sku":"K-1","price":10,"n":10.0,"ok":true,"none":null,"esc":"a\"b","u":"\u0130zmir","deep":{"x":{"y":"z"}},"items":[{"sku":"A"},{"sku":"B"}],"obj":{"a":1}}"#,
            r#"{"sku":"K-2","price":"10","ok":"true"}"#,
            r#"{}"#,
        ];
        let wants = [
            json!("K-1"),
            json!("K-2"),
            json!(10),
            json!(10.0),
            json!("10"),
            json!(true),
            json!("true"),
            json!(null),
            json!("a\"b"),
            json!("İzmir"),
            json!("z"),
            json!("B"),
            json!({"a": 1}),
            json!([1]),
        ];
        let paths = [
            "sku",
            "price",
            "n",
            "ok",
            "none",
            "esc",
            "u",
            "deep.x.y",
            "items.1.sku",
            "obj",
            "missing",
            "deep.x",
        ];
        let mut agreed = 0;
        for d in docs {
            let tree: serde_json::Value = serde_json::from_str(d).unwrap();
            let top: niyet_engine::extract::Entries<'_> = serde_json::from_str(d).unwrap();
            for p in paths {
                for w in &wants {
                    let fast = raw_at(&top, p).is_some_and(|r| raw_equals(r.get(), w));
                    assert_eq!(fast, tree.equals(p, w), "{d} {p} {w}");
                    agreed += usize::from(fast);
                }
            }
        }
        // Some pairs match (the comparison is not trivially false).
        assert!(agreed >= 12, "{agreed}");
    }
}
