//! Values that rules test, and what each test means. Shared by the incremental engine and
//! the reference evaluator: this is the definition of the language, not an optimisation.

use crate::ast::{Cmp, Literal, Test};
use std::borrow::Cow;
use std::cmp::Ordering;

/// A property or trait value as a rule sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// Absent or JSON `null` (objects and arrays are also seen as null).
    Null,
    Bool(bool),
    Num(f64),
    Str(Cow<'a, str>),
}

/// Looks up event properties (`path` or dotted `a.b`).
pub trait Props {
    /// The value at `path`, `Value::Null` when absent.
    fn prop(&self, path: &str) -> Value<'_>;
}

/// Looks up a profile's current traits.
pub trait Traits {
    /// The trait at `path`, `Value::Null` when absent.
    fn get(&self, path: &str) -> Value<'_>;

    /// The age at `now` and the next instant it changes ([`crate::age::age`]). A reader
    /// that serves many rules may remember it: every rule reading the age asks again.
    fn age_at(&self, now: i64) -> Option<(i64, Option<i64>)> {
        crate::age::age(self, now)
    }

    /// A metric computed from the profile at `now` (`clv`, `p_alive`), `Value::Null` when
    /// there is none (no model yet, or no orders).
    fn metric(&self, _name: &str, _now: i64) -> Value<'_> {
        Value::Null
    }

    /// An instant after `now` at which `test` on metric `name` can change by time alone
    /// (it is also looked at a millisecond later); `None`: never. By default a daily
    /// look: lifetime-value metrics drift slowly. A decaying score knows the instant its
    /// value crosses the test's bound.
    fn metric_changes_at(&self, _name: &str, _test: &crate::Test, now: i64) -> Option<i64> {
        Some(now.saturating_add(crate::METRIC_RECHECK_MS))
    }
}

/// The value a `Trait` test reads: a trait, or a metric when the name starts with `$`.
pub fn trait_or_metric<'a>(traits: &'a dyn Traits, name: &str, now: i64) -> Value<'a> {
    match crate::metric_of(name) {
        Some(m) => traits.metric(m, now),
        None => traits.get(name),
    }
}

/// No properties or traits at all.
pub struct Empty;

impl Props for Empty {
    fn prop(&self, _: &str) -> Value<'_> {
        Value::Null
    }
}

impl Traits for Empty {
    fn get(&self, _: &str) -> Value<'_> {
        Value::Null
    }
}

/// Numbers inside aggregates are kept as integers in units of 1/10,000, so sums are exact
/// and never depend on the order events arrive in.
pub const SCALE: f64 = 10_000.0;

impl Value<'_> {
    /// The number this value stands for: a number, or a string holding one (`"249.90"`).
    pub fn as_num(&self) -> Option<f64> {
        match self {
            Value::Num(n) if n.is_finite() => Some(*n),
            Value::Str(s) => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
            _ => None,
        }
    }

    /// The value in 1/10,000 units for sums, averages, minima and maxima (rounded to the
    /// nearest unit; values beyond ±9.2e14 are clamped).
    pub fn scaled(&self) -> Option<i64> {
        self.as_num().map(|n| (n * SCALE).round() as i64)
    }

    /// The key distinct values are counted by (`None` for null).
    pub fn distinct_key(&self) -> Option<String> {
        match self {
            Value::Null => None,
            Value::Bool(b) => Some(if *b { "true" } else { "false" }.to_string()),
            Value::Num(n) => Some(format!("#{n}")),
            Value::Str(s) => Some(format!("\"{s}")),
        }
    }

    fn equals(&self, l: &Literal) -> bool {
        match (self, l) {
            (Value::Bool(a), Literal::Bool(b)) => a == b,
            (Value::Str(a), Literal::Str(b)) => a == b,
            (v, Literal::Num(b)) => v.as_num() == Some(*b),
            _ => false,
        }
    }

    fn order(&self, l: &Literal) -> Option<Ordering> {
        match (self, l) {
            (Value::Str(a), Literal::Str(b)) => Some(a.as_ref().cmp(b.as_str())),
            (v, Literal::Num(b)) => v.as_num().and_then(|a| a.partial_cmp(b)),
            _ => None,
        }
    }

    /// Whether the value passes the test. `=`/`in` compare like with like (a numeric
    /// string equals the number); `!=`/`not in` are their negations, so they hold for
    /// null; ordering holds only between numbers or between strings; `contains` and
    /// `starts_with` are case-sensitive and only for strings.
    pub fn passes(&self, t: &Test) -> bool {
        match t {
            Test::Cmp(Cmp::Eq, l) => self.equals(l),
            Test::Cmp(Cmp::Ne, l) => !self.equals(l),
            Test::Cmp(c, l) => self.order(l).is_some_and(|o| c.holds(o)),
            Test::In(ls) => ls.iter().any(|l| self.equals(l)),
            Test::NotIn(ls) => !ls.iter().any(|l| self.equals(l)),
            Test::Contains(s) => matches!(self, Value::Str(v) if v.contains(s.as_str())),
            Test::StartsWith(s) => matches!(self, Value::Str(v) if v.starts_with(s.as_str())),
            Test::Between(a, b) => self.as_num().is_some_and(|n| *a <= n && n <= *b),
            Test::IsNull => *self == Value::Null,
            Test::IsNotNull => *self != Value::Null,
        }
    }
}

/// Whether an event matches a [`crate::Match`]: the name (or `*`) and every filter.
pub fn matches(m: &crate::Match, name: &str, props: &dyn Props) -> bool {
    (m.name == "*" || m.name == name)
        && m.filter.iter().all(|f| props.prop(&f.prop).passes(&f.test))
}

/// Compares a count, sum or other aggregate (as f64) with the rule's value.
pub fn compare(v: f64, c: Cmp, x: f64) -> bool {
    v.partial_cmp(&x).is_some_and(|o| c.holds(o))
}
