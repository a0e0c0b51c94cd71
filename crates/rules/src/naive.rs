//! The reference evaluator: every rule recomputed from the full list of events at the
//! moment asked, straight from the syntax tree. Slow and obviously right; tests compare
//! the incremental engine with it.

use crate::ast::{Agg, Events, Match, Rule, TimeTest};
use crate::value::{compare, matches, Props, Traits, Value, SCALE};

/// One stored event.
#[derive(Debug, Clone)]
pub struct NaiveEvent {
    pub id: u64,
    pub name: String,
    pub time_ms: i64,
    pub props: Vec<(String, Value<'static>)>,
}

impl Props for NaiveEvent {
    fn prop(&self, path: &str) -> Value<'_> {
        self.props
            .iter()
            .find(|p| p.0 == path)
            .map_or(Value::Null, |p| p.1.clone())
    }
}

/// Named rules evaluated from scratch.
pub struct Naive<'a> {
    pub segments: &'a [(String, Rule)],
}

fn within(e: &NaiveEvent, window: Option<crate::Dur>, now: i64) -> bool {
    window.is_none_or(|d| e.time_ms > now.saturating_sub(d.0))
}

fn selected<'e>(
    events: &'e [NaiveEvent],
    of: &'e Events,
    now: i64,
) -> impl Iterator<Item = &'e NaiveEvent> + 'e {
    events
        .iter()
        .filter(move |e| matches(&of.event, &e.name, *e) && within(e, of.window, now))
}

impl Naive<'_> {
    /// Whether the profile with these events and traits is in segment `name` at `now`.
    pub fn member(&self, name: &str, events: &[NaiveEvent], traits: &dyn Traits, now: i64) -> bool {
        self.segments
            .iter()
            .find(|s| s.0 == name)
            .is_some_and(|s| self.holds(&s.1, events, traits, now))
    }

    /// Whether `rule` holds at `now`.
    pub fn holds(&self, rule: &Rule, events: &[NaiveEvent], traits: &dyn Traits, now: i64) -> bool {
        match rule {
            Rule::And(rs) => rs.iter().all(|r| self.holds(r, events, traits, now)),
            Rule::Or(rs) => rs.iter().any(|r| self.holds(r, events, traits, now)),
            Rule::Not(r) => !self.holds(r, events, traits, now),
            Rule::Aggregate(a) => {
                let v = match (a.agg, &a.prop) {
                    (Agg::Count, _) => Some(selected(events, &a.of, now).count() as f64),
                    (Agg::Distinct, Some(p)) => {
                        let mut keys: Vec<String> = selected(events, &a.of, now)
                            .filter_map(|e| e.prop(p).distinct_key())
                            .collect();
                        keys.sort();
                        keys.dedup();
                        Some(keys.len() as f64)
                    }
                    (agg, Some(p)) => {
                        let xs: Vec<i64> = selected(events, &a.of, now)
                            .filter_map(|e| e.prop(p).scaled())
                            .collect();
                        let sum: i128 = xs.iter().map(|x| i128::from(*x)).sum();
                        let s = |x: i128| x as f64 / SCALE;
                        match agg {
                            Agg::Sum => Some(s(sum)),
                            _ if xs.is_empty() => None,
                            Agg::Avg => Some(s(sum) / xs.len() as f64),
                            Agg::Min => xs.iter().min().map(|m| s(i128::from(*m))),
                            _ => xs.iter().max().map(|m| s(i128::from(*m))),
                        }
                    }
                    (_, None) => None,
                };
                v.is_some_and(|v| compare(v, a.cmp, a.value))
            }
            Rule::Has(e) => selected(events, e, now).next().is_some(),
            Rule::No(e) => selected(events, e, now).next().is_none(),
            Rule::Sequence(s) => events.iter().any(|a| {
                matches(&s.first, &a.name, a)
                    && within(a, s.window, now)
                    && events.iter().any(|b| {
                        b.id != a.id
                            && matches(&s.then, &b.name, b)
                            && b.time_ms >= a.time_ms
                            && b.time_ms <= a.time_ms.saturating_add(s.within.0)
                    })
            }),
            Rule::Seen(s) => {
                let any = Match {
                    name: "*".into(),
                    filter: vec![],
                };
                let m = s.event.as_ref().unwrap_or(&any);
                let times = events
                    .iter()
                    .filter(|e| matches(m, &e.name, *e))
                    .map(|e| e.time_ms);
                let x = if s.last { times.max() } else { times.min() };
                match (&s.test, x) {
                    (TimeTest::IsNull, x) => x.is_none(),
                    (TimeTest::IsNotNull, x) => x.is_some(),
                    (TimeTest::Ago(c, d), Some(x)) => c.holds(x.cmp(&now.saturating_sub(d.0))),
                    (TimeTest::Ago(..), None) => false,
                }
            }
            Rule::Trait(t) => crate::value::trait_or_metric(traits, &t.name, now).passes(&t.test),
            Rule::Age(t) => crate::age::age(traits, now)
                .map_or(Value::Null, |a| Value::Num(a.0 as f64))
                .passes(t),
            Rule::Segment(n) => self.member(n, events, traits, now),
        }
    }
}

/// Every duration a rule mentions (windows and `ago`), for finding the instants at which
/// membership can change by time.
pub fn durations(rule: &Rule, out: &mut Vec<i64>) {
    match rule {
        Rule::And(rs) | Rule::Or(rs) => rs.iter().for_each(|r| durations(r, out)),
        Rule::Not(r) => durations(r, out),
        Rule::Aggregate(a) => out.extend(a.of.window.map(|d| d.0)),
        Rule::Has(e) | Rule::No(e) => out.extend(e.window.map(|d| d.0)),
        Rule::Sequence(s) => out.extend(s.window.map(|d| d.0)),
        Rule::Seen(s) => {
            if let TimeTest::Ago(_, d) = s.test {
                out.push(d.0)
            }
        }
        _ => {}
    }
}
