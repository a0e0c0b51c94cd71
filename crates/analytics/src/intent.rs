//! Predictive intent: L2-regularised logistic regression of "purchased within N days" on
//! behaviour features, the area under the ROC curve on a held-out split, and the weight of
//! each signal.
//!
//! Features are standardised with the training set's mean and standard deviation, so the
//! weights compare signals with each other: a weight is the change in log-odds of a
//! purchase for one standard deviation more of the signal. The fit minimises the mean log
//! loss plus `λ/2 · ‖w‖²` (the intercept is not penalised) with BFGS.

use serde::{Deserialize, Serialize};

use crate::optimize::bfgs;

/// A fitted model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Logistic {
    /// Feature names, in column order.
    pub features: Vec<String>,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    /// Weights on standardised features.
    pub weights: Vec<f64>,
    pub intercept: f64,
    pub lambda: f64,
}

/// Why a model could not be trained.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TrainError {
    #[error("training needs examples of both outcomes (got {positives} positive of {examples})")]
    OneClass { examples: usize, positives: usize },
    #[error("every example needs {0} features")]
    Shape(usize),
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

impl Logistic {
    /// Trains on rows `x` (each `features.len()` long) with outcomes `y`.
    pub fn train(
        features: Vec<String>,
        x: &[Vec<f64>],
        y: &[bool],
        lambda: f64,
    ) -> Result<Logistic, TrainError> {
        let d = features.len();
        if x.iter().any(|r| r.len() != d) || x.len() != y.len() {
            return Err(TrainError::Shape(d));
        }
        let positives = y.iter().filter(|v| **v).count();
        if positives == 0 || positives == y.len() {
            return Err(TrainError::OneClass {
                examples: y.len(),
                positives,
            });
        }
        let n = x.len() as f64;
        let mut mean = vec![0.0; d];
        for r in x {
            for j in 0..d {
                mean[j] += r[j] / n;
            }
        }
        let mut std = vec![0.0; d];
        for r in x {
            for j in 0..d {
                std[j] += (r[j] - mean[j]).powi(2) / n;
            }
        }
        for s in &mut std {
            *s = if *s > 1e-24 { s.sqrt() } else { 1.0 };
        }
        let z: Vec<Vec<f64>> = x
            .iter()
            .map(|r| (0..d).map(|j| (r[j] - mean[j]) / std[j]).collect())
            .collect();
        // Parameters: [intercept, w…].
        let m = bfgs(
            |p, g| {
                g.iter_mut().for_each(|v| *v = 0.0);
                let mut loss = 0.0;
                for (r, &yi) in z.iter().zip(y) {
                    let s = p[0] + r.iter().zip(&p[1..]).map(|(a, b)| a * b).sum::<f64>();
                    // log(1 + e^s) − y·s, stably.
                    loss += if s > 0.0 {
                        s + (-s).exp().ln_1p()
                    } else {
                        s.exp().ln_1p()
                    } - if yi { s } else { 0.0 };
                    let e = sigmoid(s) - if yi { 1.0 } else { 0.0 };
                    g[0] += e;
                    for j in 0..d {
                        g[j + 1] += e * r[j];
                    }
                }
                for v in g.iter_mut() {
                    *v /= n;
                }
                loss /= n;
                for j in 0..d {
                    loss += 0.5 * lambda * p[j + 1] * p[j + 1];
                    g[j + 1] += lambda * p[j + 1];
                }
                loss
            },
            &vec![0.0; d + 1],
            1e-8,
            1000,
        );
        Ok(Logistic {
            features,
            mean,
            std,
            intercept: m.x[0],
            weights: m.x[1..].to_vec(),
            lambda,
        })
    }

    /// Probability of the outcome for one row of raw features.
    pub fn score(&self, x: &[f64]) -> f64 {
        sigmoid(self.intercept + self.contributions(x).iter().sum::<f64>())
    }

    /// Each feature's term in the log-odds for one row (weight × standardised value):
    /// why a profile scores as it does.
    pub fn contributions(&self, x: &[f64]) -> Vec<f64> {
        (0..self.weights.len())
            .map(|j| {
                self.weights[j] * (x.get(j).copied().unwrap_or(0.0) - self.mean[j]) / self.std[j]
            })
            .collect()
    }
}

/// Area under the ROC curve: the probability that a random positive scores above a random
/// negative (ties count half). None without both outcomes.
pub fn auc(scores: &[f64], y: &[bool]) -> Option<f64> {
    let mut v: Vec<(f64, bool)> = scores.iter().copied().zip(y.iter().copied()).collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let pos = v.iter().filter(|p| p.1).count() as f64;
    let neg = v.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return None;
    }
    // Mann-Whitney U with mid-ranks.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j < v.len() && v[j].0 == v[i].0 {
            j += 1;
        }
        let mid = (i + j + 1) as f64 / 2.0;
        rank_sum += mid * v[i..j].iter().filter(|p| p.1).count() as f64;
        i = j;
    }
    Some((rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg))
}

/// One event of a profile for the intent features.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Behaviour {
    pub time_ms: i64,
    /// Index of the event's name in the vocabulary (`u32::MAX`: none of them).
    pub name: u32,
    /// Whether it is an order, and its amount.
    pub order: bool,
    pub amount: f64,
}

const DAY: i64 = 86_400_000;

/// The signal names for a vocabulary of event names, in column order.
pub fn signal_names(vocabulary: &[String]) -> Vec<String> {
    let mut v: Vec<String> = vocabulary.iter().map(|n| format!("{n} in 30d")).collect();
    v.extend(
        [
            "events in 7d",
            "days since last event",
            "orders before",
            "revenue before",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    v
}

/// The signals of a profile at time `t` from its events (sorted by time) before `t`; None
/// when it had none. Counts and amounts enter as ln(1 + x); days since the last event are
/// capped at 365.
pub fn signals(events: &[Behaviour], t: i64, vocabulary: usize) -> Option<Vec<f64>> {
    let before = events.partition_point(|e| e.time_ms < t);
    if before == 0 {
        return None;
    }
    let mut counts = vec![0.0f64; vocabulary];
    let (mut week, mut orders, mut revenue) = (0.0f64, 0.0f64, 0.0f64);
    for e in &events[..before] {
        let age = t - e.time_ms;
        if age <= 30 * DAY && (e.name as usize) < vocabulary {
            counts[e.name as usize] += 1.0;
        }
        if age <= 7 * DAY {
            week += 1.0;
        }
        if e.order {
            orders += 1.0;
            revenue += e.amount.max(0.0);
        }
    }
    let since = ((t - events[before - 1].time_ms) as f64 / DAY as f64).min(365.0);
    let mut v: Vec<f64> = counts.into_iter().map(f64::ln_1p).collect();
    v.extend([week.ln_1p(), since.ln_1p(), orders.ln_1p(), revenue.ln_1p()]);
    Some(v)
}

/// Whether the profile ordered in [t, t + horizon).
pub fn purchased(events: &[Behaviour], t: i64, horizon_ms: i64) -> bool {
    events
        .iter()
        .any(|e| e.order && e.time_ms >= t && e.time_ms < t + horizon_ms)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn auc_counts_the_pairs_ranked_right(v in prop::collection::vec((0u8..6, any::<bool>()), 2..40)) {
            let scores: Vec<f64> = v.iter().map(|p| f64::from(p.0)).collect();
            let y: Vec<bool> = v.iter().map(|p| p.1).collect();
            let mut pairs = 0.0;
            let mut right = 0.0;
            for (i, a) in v.iter().enumerate() {
                for b in &v[..] {
                    if a.1 && !b.1 { pairs += 1.0; right += if a.0 > b.0 { 1.0 } else if a.0 == b.0 { 0.5 } else { 0.0 }; }
                }
                let _ = i;
            }
            match auc(&scores, &y) {
                None => prop_assert_eq!(pairs, 0.0),
                Some(a) => prop_assert!((a - right / pairs).abs() < 1e-12),
            }
        }
    }

    #[test]
    fn signals_look_only_before_the_cut() {
        let ev = [
            Behaviour {
                time_ms: 0,
                name: 0,
                order: false,
                amount: 0.0,
            },
            Behaviour {
                time_ms: 25 * DAY,
                name: 1,
                order: true,
                amount: 99.0,
            },
            Behaviour {
                time_ms: 40 * DAY,
                name: 0,
                order: true,
                amount: 10.0,
            },
        ];
        assert_eq!(signals(&ev, 0, 2), None);
        let s = signals(&ev, 31 * DAY, 2).unwrap();
        // name 0 at day 0 is 31 days old: out of the 30-day window.
        assert_eq!(s[..2], [0.0, 1f64.ln_1p()]);
        assert_eq!(s[2], 1f64.ln_1p()); // one event in 7 days
        assert!((s[3] - 6f64.ln_1p()).abs() < 1e-12);
        assert_eq!((s[4], s[5]), (1f64.ln_1p(), 99f64.ln_1p()));
        assert!(purchased(&ev, 31 * DAY, 10 * DAY) && !purchased(&ev, 41 * DAY, 10 * DAY));
        assert_eq!(signal_names(&["A".into(), "B".into()]).len(), 6);
    }

    #[test]
    fn training_recovers_which_signal_predicts() {
        // Outcome driven by the first feature; the second is noise.
        let mut s: u64 = 99;
        let mut u = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64) / (1u64 << 53) as f64
        };
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..4000 {
            let a = u() * 4.0;
            let b = u() * 4.0;
            let p = 1.0 / (1.0 + (-(2.0 * a - 4.0)).exp());
            x.push(vec![a, b]);
            y.push(u() < p);
        }
        let m = Logistic::train(vec!["a".into(), "b".into()], &x, &y, 1e-4).unwrap();
        assert!(m.weights[0] > 1.5 && m.weights[1].abs() < 0.2, "{m:?}");
        // Raw-scale slope ≈ 2: weight / std.
        assert!((m.weights[0] / m.std[0] - 2.0).abs() < 0.3, "{m:?}");
        let scores: Vec<f64> = x.iter().map(|r| m.score(r)).collect();
        assert!(auc(&scores, &y).unwrap() > 0.8);
        assert!(matches!(
            Logistic::train(vec!["a".into()], &[vec![1.0]], &[true], 0.0),
            Err(TrainError::OneClass { .. })
        ));
    }
}
