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

/// Metric names of intent scores start with this (`$score:lead`, written
/// `score("lead")`).
pub const SCORE_METRIC: &str = "score:";

/// The metric a `Trait` test's name stands for (`$clv` → `clv`, `$score:lead` →
/// `score:lead`), if it is one.
pub fn metric_of(name: &str) -> Option<&str> {
    name.strip_prefix(METRIC_PREFIX).filter(|m| {
        METRICS.contains(m) || m.strip_prefix(SCORE_METRIC).is_some_and(|s| !s.is_empty())
    })
}

/// The score a metric name reads (`score:lead` → `lead`), if it is a score.
pub fn score_of(metric: &str) -> Option<&str> {
    metric.strip_prefix(SCORE_METRIC)
}

/// Every metric a rule reads (`clv`, `score:lead`), once each.
pub fn metrics_read(rule: &Rule) -> Vec<String> {
    fn walk(r: &Rule, out: &mut Vec<String>) {
        match r {
            Rule::And(rs) | Rule::Or(rs) => rs.iter().for_each(|r| walk(r, out)),
            Rule::Not(r) => walk(r, out),
            Rule::Trait(t) => {
                if let Some(m) = metric_of(&t.name) {
                    if !out.iter().any(|x| x == m) {
                        out.push(m.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(rule, &mut out);
    out
}

/// Every score a rule reads, by name.
pub fn scores_read(rule: &Rule) -> Vec<String> {
    metrics_read(rule)
        .iter()
        .filter_map(|m| score_of(m).map(str::to_string))
        .collect()
}
/// How often segments reading metrics are evaluated again with time alone (a day).
pub const METRIC_RECHECK_MS: i64 = 86_400_000;
