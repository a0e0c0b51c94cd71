//! The rule language of Niyet, used by segments, scores and triggers.
//!
//! Pure: no I/O, no clock. Time comes in as `now` (milliseconds since the epoch).
//!
//! - [`ast`]: the syntax tree, whose serde form is the JSON form of a rule.
//! - [`parse`]: the text form, with errors that name line, column and what was expected;
//!   `Display` on [`Rule`] prints it back.
//! - [`value`]: what each test means on property and trait values.
//! - [`compile`]: rules to shared per-profile features and predicates over them.
//! - [`feature`]: the per-profile feature state, updated one event at a time.
//! - [`eval`]: a set of segments over one profile: membership, changes at exact instants,
//!   the next instant time alone can change it.
//! - [`naive`]: the reference evaluator the incremental engine is tested against.

pub mod age;
pub mod ast;
pub mod compile;
pub mod eval;
pub mod feature;
pub mod naive;
pub mod parse;
mod print;
pub mod value;

pub use ast::{
    Agg, Aggregate, Cmp, Dur, Events, Literal, Match, PropTest, Rule, Seen, Sequence, Test,
    TimeTest, TraitTest,
};
pub use compile::{Catalog, CompileError, FeatureId, Pred};
pub use eval::{Change, Membership, SegmentSet, SetError};
pub use feature::{Event, Features};
pub use parse::{parse, ParseError};
pub use value::{Props, Traits, Value};

/// Names of `Trait` tests that read a metric (`clv`, `p_alive`) start with this.
pub const METRIC_PREFIX: &str = "$";
/// The metrics rules can read.
pub const METRICS: [&str; 2] = ["clv", "p_alive"];

/// The metric a `Trait` test's name stands for (`$clv` → `clv`), if it is one.
pub fn metric_of(name: &str) -> Option<&str> {
    name.strip_prefix(METRIC_PREFIX)
        .filter(|m| METRICS.contains(m))
}
/// How often segments reading metrics are evaluated again with time alone (a day).
pub const METRIC_RECHECK_MS: i64 = 86_400_000;
