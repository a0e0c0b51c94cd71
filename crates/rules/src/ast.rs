//! The syntax tree of a rule. Its serde form is the rule's JSON form for the API.
//!
//! Text and JSON are two spellings of the same tree: `parse(&rule.to_string())` gives
//! back `rule` for every tree (see `print.rs` and the round-trip property test).

use serde::{Deserialize, Serialize};

/// A duration in milliseconds. Written `45s`, `30m`, `1h`, `90d`, `2w` in text; as the
/// same string in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dur(pub i64);

/// Milliseconds per unit, largest first (the printer picks the largest that divides).
pub const UNITS: [(char, i64); 5] = [
    ('w', 7 * 86_400_000),
    ('d', 86_400_000),
    ('h', 3_600_000),
    ('m', 60_000),
    ('s', 1_000),
];

/// A rule: a boolean condition on one profile at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// All of them (two or more).
    And(Vec<Rule>),
    /// Any of them (two or more).
    Or(Vec<Rule>),
    /// `not <rule>`.
    Not(Box<Rule>),
    /// `count(E in 90d) >= 2`, `sum(E.revenue in 365d) > 10000`, `distinct(E.category in 30d) >= 3`.
    Aggregate(Aggregate),
    /// `E in 1h`: at least one matching event in the window (all time without a window).
    Has(Events),
    /// `no E in 1h`: no matching event in the window.
    No(Events),
    /// `A then B within 30m [in 7d]`: an A event followed by a *different* B event at most
    /// `within` later (B's time ≥ A's time); with `in`, the A event is inside that window.
    Sequence(Sequence),
    /// `first_seen`, `last_seen`, `first_seen(E)`, `last_seen(E)` compared with `<D> ago`
    /// or tested for null.
    Seen(Seen),
    /// `trait.city = "İzmir"`, `trait.gender in ["f", "m"]`, `trait.phone is null`.
    Trait(TraitTest),
    /// `age between 25 and 34`: age in whole years, from the `birthday` trait
    /// (`YYYY-MM-DD`), else `birth_year` / `birthYear`, else a numeric `age` trait.
    Age(Test),
    /// `segment("VIP")`: the profile is in that segment now.
    Segment(String),
}

/// Which aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Agg {
    /// Number of matching events (no property).
    Count,
    /// Sum of a numeric property.
    Sum,
    /// Mean of a numeric property.
    Avg,
    /// Smallest value of a numeric property.
    Min,
    /// Largest value of a numeric property.
    Max,
    /// Number of distinct values of a property.
    Distinct,
}

/// `agg(events[.prop]) cmp value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    pub agg: Agg,
    pub of: Events,
    /// The property aggregated: required for every aggregate but `count`, absent for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prop: Option<String>,
    pub cmp: Cmp,
    pub value: f64,
}

/// Matching events, optionally within a window ending now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Events {
    pub event: Match,
    /// `in 90d`; absent means all time.
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub window: Option<Dur>,
}

/// An event name and property filters (all must hold).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Match {
    /// The event name (`Order Completed`, `Page Viewed`); `*` is any event.
    pub name: String,
    /// `where path = "/pricing"`, or `where (a = 1 and b > 2)` for several.
    #[serde(default, rename = "where", skip_serializing_if = "Vec::is_empty")]
    pub filter: Vec<PropTest>,
}

/// A test of one event property (`path`, or a dotted path such as `product.category`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PropTest {
    pub prop: String,
    pub test: Test,
}

/// A test of one trait.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraitTest {
    /// Trait name (`city`, or dotted `address.city`).
    pub name: String,
    pub test: Test,
}

/// `A then B within W [in D]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sequence {
    pub first: Match,
    pub then: Match,
    pub within: Dur,
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub window: Option<Dur>,
}

/// `first_seen[(E)]` / `last_seen[(E)]` and a time test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    /// `last_seen` when true, `first_seen` when false.
    pub last: bool,
    /// The events looked at; absent means any event of the profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Match>,
    pub test: TimeTest,
}

/// A test of a point in time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeTest {
    /// `< 60d ago`: the time compared with `now - D` (`<` means longer ago than D).
    Ago(Cmp, Dur),
    /// `is null`: never happened.
    IsNull,
    /// `is not null`.
    IsNotNull,
}

/// A test of a value (trait, property or age).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Test {
    /// `= "x"`, `!= 3`, `> 2.5`, `<= 10` (ordering only between numbers or between strings).
    Cmp(Cmp, Literal),
    /// `in ["f", "m"]`.
    In(Vec<Literal>),
    /// `not in [...]`.
    NotIn(Vec<Literal>),
    /// `contains "x"` (strings only).
    Contains(String),
    /// `starts_with "x"` (strings only).
    StartsWith(String),
    /// `between 25 and 34` (numbers, both ends included).
    Between(f64, f64),
    /// `is null` (absent or JSON null).
    IsNull,
    /// `is not null`.
    IsNotNull,
}

/// A literal value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Literal {
    Bool(bool),
    Num(f64),
    Str(String),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Cmp {
    #[serde(rename = "=")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
}

impl Cmp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Cmp::Eq => "=",
            Cmp::Ne => "!=",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
        }
    }

    /// Applies the operator to an ordering of left against right.
    pub fn holds(self, o: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Cmp::Eq => o == Equal,
            Cmp::Ne => o != Equal,
            Cmp::Lt => o == Less,
            Cmp::Le => o != Greater,
            Cmp::Gt => o == Greater,
            Cmp::Ge => o != Less,
        }
    }
}

impl std::fmt::Display for Dur {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (u, ms) in UNITS {
            if self.0 != 0 && self.0 % ms == 0 {
                return write!(f, "{}{u}", self.0 / ms);
            }
        }
        write!(f, "{}ms", self.0)
    }
}

impl std::str::FromStr for Dur {
    type Err = String;

    /// `90d`, `30m`, `1h`, `45s`, `2w`, `500ms`; a positive whole number and a unit.
    fn from_str(s: &str) -> Result<Self, String> {
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        let (n, unit) = s.split_at(digits);
        let n: i64 = n
            .parse()
            .map_err(|_| format!("`{s}` is not a duration such as 30d"))?;
        let ms = if unit == "ms" {
            1
        } else {
            let mut c = unit.chars();
            match (c.next(), c.next()) {
                (Some(u), None) => UNITS
                    .iter()
                    .find(|(x, _)| *x == u)
                    .map(|(_, ms)| *ms)
                    .ok_or_else(|| format!("unknown unit in `{s}` (use s, m, h, d or w)"))?,
                _ => return Err(format!("unknown unit in `{s}` (use s, m, h, d or w)")),
            }
        };
        match n.checked_mul(ms) {
            Some(v) if v > 0 && v <= MAX_DUR_MS => Ok(Dur(v)),
            _ => Err(format!("duration `{s}` is out of range (1ms to 100 years)")),
        }
    }
}

/// The longest duration accepted: 100 years.
pub const MAX_DUR_MS: i64 = 100 * 366 * 86_400_000;

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
