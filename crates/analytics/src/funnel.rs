//! Funnels, cohort retention and conversion rate over time, over per-profile event
//! timelines.
//!
//! **Funnel.** Steps are taken in order, each after the previous one and all within the
//! conversion window from the first step. A profile's progress is the deepest step any of
//! its attempts reaches (an attempt starts at an occurrence of the first step and takes the
//! earliest matching occurrence of each next step); ties go to the earliest attempt, whose
//! step times give the time between steps. Profiles are counted once per step reached.
//!
//! **Retention.** A profile's cohort is the period (week or month, UTC; weeks start on
//! Monday) of its first qualifying event (first seen, or first purchase); it is retained in
//! period k when it is active (any event, or a purchase) in the k-th period after.
//!
//! **Conversion rate over time.** Per period: the profiles active in it and how many of
//! them converted in it.

use std::collections::BTreeMap;

use niyet_model::{civil_from_days, days_from_civil};
use serde::Serialize;

/// One step's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// Profiles that reached this step.
    pub profiles: u64,
    /// Share of the profiles that entered the funnel.
    pub of_first: f64,
    /// Share of the profiles that reached the step before (1 for the first step).
    pub of_previous: f64,
    /// Profiles lost between the step before and this one.
    pub dropped: u64,
    /// Median time from the step before, in seconds (None for the first step or when
    /// nobody got here).
    pub median_seconds_from_previous: Option<f64>,
}

/// Deepest progress of one timeline: the step times of the best attempt.
/// `events`: (time, step index) sorted by time; an event may match several steps by
/// appearing once per step.
pub fn progress(events: &[(i64, usize)], steps: usize, window_ms: i64) -> Vec<i64> {
    let mut best: Vec<i64> = Vec::new();
    for (i, &(t0, s)) in events.iter().enumerate() {
        if s != 0 {
            continue;
        }
        let mut times = vec![t0];
        let mut at = t0;
        for &(t, s) in &events[i + 1..] {
            if times.len() == steps || t - t0 > window_ms {
                break;
            }
            if s == times.len() && t >= at {
                times.push(t);
                at = t;
            }
        }
        if times.len() > best.len() {
            best = times;
            if best.len() == steps {
                break;
            }
        }
    }
    best
}

/// The funnel over many timelines (each sorted by time).
pub fn funnel<'a>(
    timelines: impl IntoIterator<Item = &'a [(i64, usize)]>,
    steps: usize,
    window_ms: i64,
) -> Vec<Step> {
    let mut reached = vec![0u64; steps];
    let mut gaps: Vec<Vec<i64>> = vec![Vec::new(); steps];
    for tl in timelines {
        let p = progress(tl, steps, window_ms);
        for (k, t) in p.iter().enumerate() {
            reached[k] += 1;
            if k > 0 {
                gaps[k].push(t - p[k - 1]);
            }
        }
    }
    (0..steps)
        .map(|k| {
            let prev = if k == 0 { reached[0] } else { reached[k - 1] };
            let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
            Step {
                profiles: reached[k],
                of_first: ratio(reached[k], reached[0]),
                of_previous: if k == 0 { 1.0 } else { ratio(reached[k], prev) },
                dropped: prev - reached[k],
                median_seconds_from_previous: (k > 0)
                    .then(|| median_ms(&mut gaps[k]))
                    .flatten()
                    .map(|m| m / 1000.0),
            }
        })
        .collect()
}

fn median_ms(v: &mut [i64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2] as f64
    } else {
        (v[n / 2 - 1] as f64 + v[n / 2] as f64) / 2.0
    })
}

/// Calendar periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    Week,
    Month,
}

impl Period {
    /// Index of the period holding `t` (ms since the epoch, UTC): days since the epoch,
    /// weeks since Monday 1969-12-29, or months since January 1970.
    pub fn index(self, t: i64) -> i64 {
        let day = t.div_euclid(86_400_000);
        match self {
            Period::Day => day,
            // 1970-01-01 was a Thursday: Monday-based weeks begin 3 days earlier.
            Period::Week => (day + 3).div_euclid(7),
            Period::Month => {
                let (y, m, _) = civil_from_days(day);
                (y - 1970) * 12 + i64::from(m) - 1
            }
        }
    }

    /// Start of period `i` (ms).
    pub fn start(self, i: i64) -> i64 {
        let day = match self {
            Period::Day => i,
            Period::Week => i * 7 - 3,
            Period::Month => {
                days_from_civil(1970 + i.div_euclid(12), (i.rem_euclid(12) + 1) as u32, 1)
            }
        };
        day * 86_400_000
    }
}

/// One cohort's row: its size and how many were retained in each period after.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cohort {
    /// Start of the cohort's period (ms).
    pub start_ms: i64,
    pub size: u64,
    /// `retained[k]`: active in the k-th period after the cohort's (k = 0 is the cohort's
    /// own period, always the whole cohort).
    pub retained: Vec<u64>,
}

/// Retention table. Each profile: (time of its cohort event, times it was active).
/// `until_ms` ends the table (later periods are left out, not counted as lost).
pub fn retention<'a>(
    profiles: impl IntoIterator<Item = (i64, &'a [i64])>,
    period: Period,
    until_ms: i64,
) -> Vec<Cohort> {
    let last = period.index(until_ms);
    let mut rows: BTreeMap<i64, (u64, Vec<u64>)> = BTreeMap::new();
    for (start, active) in profiles {
        let c = period.index(start);
        if c > last {
            continue;
        }
        let row = rows
            .entry(c)
            .or_insert_with(|| (0, vec![0; (last - c + 1) as usize]));
        row.0 += 1;
        let mut seen = vec![false; row.1.len()];
        seen[0] = true;
        for &t in active {
            let k = period.index(t) - c;
            if k >= 0 && (k as usize) < seen.len() {
                seen[k as usize] = true;
            }
        }
        for (k, s) in seen.iter().enumerate() {
            if *s {
                row.1[k] += 1;
            }
        }
    }
    rows.into_iter()
        .map(|(c, (size, retained))| Cohort {
            start_ms: period.start(c),
            size,
            retained,
        })
        .collect()
}

/// Conversion rate of one period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rate {
    pub start_ms: i64,
    /// Profiles with any event in the period.
    pub active: u64,
    /// Of them, those that converted in it.
    pub converted: u64,
    pub rate: f64,
}

/// Conversion rate per period. Each profile: (times active, times converted).
pub fn conversion_over_time<'a>(
    profiles: impl IntoIterator<Item = (&'a [i64], &'a [i64])>,
    period: Period,
) -> Vec<Rate> {
    let mut per: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    for (active, converted) in profiles {
        let mut a: Vec<i64> = active
            .iter()
            .chain(converted)
            .map(|t| period.index(*t))
            .collect();
        a.sort_unstable();
        a.dedup();
        let mut c: Vec<i64> = converted.iter().map(|t| period.index(*t)).collect();
        c.sort_unstable();
        c.dedup();
        for p in a {
            per.entry(p).or_default().0 += 1;
        }
        for p in c {
            per.entry(p).or_default().1 += 1;
        }
    }
    per.into_iter()
        .map(|(p, (a, c))| Rate {
            start_ms: period.start(p),
            active: a,
            converted: c,
            rate: if a == 0 { 0.0 } else { c as f64 / a as f64 },
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: i64 = 3_600_000;

    /// The deepest progress by trying every choice of step occurrences.
    fn deepest_by_search(events: &[(i64, usize)], steps: usize, window: i64) -> usize {
        fn go(
            ev: &[(i64, usize)],
            from: usize,
            step: usize,
            steps: usize,
            t0: i64,
            last: i64,
            w: i64,
        ) -> usize {
            if step == steps {
                return step;
            }
            let mut best = step;
            for i in from..ev.len() {
                let (t, s) = ev[i];
                if s == step && t >= last && t - t0 <= w {
                    best = best.max(go(ev, i + 1, step + 1, steps, t0, t, w));
                }
            }
            best
        }
        let mut best = 0;
        for (i, &(t, s)) in events.iter().enumerate() {
            if s == 0 {
                best = best.max(go(events, i + 1, 1, steps, t, t, window));
            }
        }
        best
    }

    proptest! {
        #[test]
        fn progress_is_the_deepest_possible(mut ev in prop::collection::vec((0i64..50, 0usize..3), 0..12)) {
            ev.sort();
            let fast = progress(&ev.iter().map(|(t, s)| (t * H, *s)).collect::<Vec<_>>(), 3, 10 * H);
            let slow = deepest_by_search(&ev.iter().map(|(t, s)| (t * H, *s)).collect::<Vec<_>>(), 3, 10 * H);
            prop_assert_eq!(fast.len(), slow);
        }
    }

    #[test]
    fn a_funnel_counts_each_profile_once_per_step() {
        let a = [(0, 0), (H, 1), (3 * H, 2)];
        let b = [(0, 0), (2 * H, 1)];
        let c = [(0, 0), (30 * H, 1)]; // outside the window
        let d = [(0, 1), (H, 0)]; // step 1 before step 0 does not count
        let f = funnel([&a[..], &b[..], &c[..], &d[..]], 3, 24 * H);
        let n: Vec<u64> = f.iter().map(|s| s.profiles).collect();
        assert_eq!(n, vec![4, 2, 1]);
        assert_eq!(f[1].dropped, 2);
        assert_eq!(f[1].median_seconds_from_previous, Some(1.5 * 3600.0));
        assert_eq!(f[2].median_seconds_from_previous, Some(2.0 * 3600.0));
        assert!((f[2].of_first - 0.25).abs() < 1e-12 && (f[2].of_previous - 0.5).abs() < 1e-12);
    }

    #[test]
    fn periods_follow_the_calendar() {
        // 2026-03-02 is a Monday; 2026-03-01 a Sunday.
        let mon = days_from_civil(2026, 3, 2) * 86_400_000;
        assert_eq!(
            Period::Week.index(mon),
            Period::Week.index(mon + 6 * 86_400_000)
        );
        assert_eq!(Period::Week.index(mon) - 1, Period::Week.index(mon - 1));
        assert_eq!(Period::Week.start(Period::Week.index(mon + 5 * H)), mon);
        let m = Period::Month.index(mon);
        assert_eq!(
            Period::Month.start(m),
            days_from_civil(2026, 3, 1) * 86_400_000
        );
        assert_eq!(Period::Month.index(Period::Month.start(m) - 1), m - 1);
        for d in [-1000, 0, 59, 365, 20_000] {
            let (y, mo, da) = civil_from_days(d);
            assert_eq!(days_from_civil(y, mo, da), d);
        }
    }

    #[test]
    fn retention_and_conversion_rates() {
        let w = 7 * 86_400_000;
        let mon = days_from_civil(2026, 3, 2) * 86_400_000;
        let a = [mon + w, mon + 2 * w];
        let b = [mon + 2 * w];
        let c: [i64; 0] = [];
        let rows = retention(
            [(mon, &a[..]), (mon + H, &b[..]), (mon + w, &c[..])],
            Period::Week,
            mon + 2 * w,
        );
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].size, rows[0].retained.clone()), (2, vec![2, 1, 2]));
        assert_eq!((rows[1].size, rows[1].retained.clone()), (1, vec![1, 0]));
        let r = conversion_over_time([(&a[..], &b[..]), (&b[..], &c[..])], Period::Week);
        assert_eq!(r.len(), 2);
        assert_eq!((r[1].active, r[1].converted), (2, 1));
    }
}
