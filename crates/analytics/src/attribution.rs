//! Attribution: how much of each conversion, and of its revenue, each channel earned.
//!
//! A [`Journey`] is the touchpoints of one profile that led up to one conversion (or, for
//! a journey that has not converted, up to now), oldest first. Every journey counts
//! `count` times (path tables group equal journeys); its `value` is the revenue of one
//! conversion.
//!
//! Models ([`Model`]):
//! - **first touch**, **last touch**: all credit to the first or the last touchpoint;
//!   **last non-direct**: to the last touchpoint that is not the direct channel (direct
//!   only when nothing else was touched).
//! - **linear**: equal shares to every touchpoint.
//! - **time decay**: shares ∝ 2^(−h / half-life), h the hours from the touch to the
//!   conversion.
//! - **position based**: 40 % to the first, 40 % to the last touch and 20 % spread over the
//!   ones between; 50/50 with two touches, everything with one.
//! - **Markov**: a first-order Markov chain over (start) → channels → (conversion) or
//!   (null), estimated from all journeys, converted or not (a repeated channel is one
//!   state: self-transitions are dropped). A channel's **removal effect** is the share of
//!   conversions lost when it is removed (its incoming transitions go to (null)):
//!   `1 − P(conversion without it) / P(conversion)`, computed exactly by solving the
//!   absorbing chain. Removal effects do not sum to one; two normalisations are offered:
//!   - [`Normalisation::Global`] (as the `ChannelAttribution` package): channel `c` gets
//!     `RE_c / Σ RE` of all conversions and of all revenue;
//!   - [`Normalisation::PerJourney`] (as `marketing-attribution-models`): weights
//!     `w_c = RE_c / Σ RE`, and each converted journey's conversion and revenue are split
//!     over its touchpoints in proportion to their channels' weights.
//! - **Shapley**: the cooperative game whose worth `v(S)` of a set of channels is the
//!   conversions (revenue) of journeys that touched only channels in `S`. Its Shapley value
//!   is exact and, since `v` is a sum of the worths of each exact channel set (the
//!   Harsanyi dividends), equals each converted journey split equally over the *distinct*
//!   channels it touched (Zhao et al. 2018, "Shapley value methods for attribution
//!   modeling in online advertising"); the tests check it against the definition over
//!   all orderings of the players.

use serde::Serialize;

/// One touchpoint of a journey.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Touch {
    /// Channel index (0-based, below the number of channels).
    pub channel: u32,
    /// Hours from the touch to the conversion (or to the end of the journey).
    pub hours_before: f64,
}

/// The touchpoints before one conversion, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Journey {
    pub touches: Vec<Touch>,
    pub converted: bool,
    /// Revenue of one conversion (0 when not converted).
    pub value: f64,
    /// How many journeys this row stands for.
    pub count: f64,
}

/// How Markov removal effects become credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalisation {
    Global,
    PerJourney,
}

/// An attribution model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    FirstTouch,
    LastTouch,
    LastNonDirect { direct: u32 },
    Linear,
    TimeDecay { half_life_hours: f64 },
    PositionBased,
    Markov(Normalisation),
    Shapley,
}

/// What one channel earned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Credit {
    pub conversions: f64,
    pub value: f64,
}

/// Credit per channel (index = channel) under `model`, over `channels` channels. Touches
/// of channels at or above `channels` are ignored.
pub fn attribute(journeys: &[Journey], channels: usize, model: Model) -> Vec<Credit> {
    let mut out = vec![Credit::default(); channels];
    let mut shares: Vec<f64> = Vec::new();
    let weights = match model {
        Model::Markov(norm) => {
            let m = markov(journeys, channels);
            let sum: f64 = m.removal_effects.iter().sum();
            let w: Vec<f64> = m
                .removal_effects
                .iter()
                .map(|re| if sum > 0.0 { re / sum } else { 0.0 })
                .collect();
            if norm == Normalisation::Global {
                let (conv, value) = journeys
                    .iter()
                    .filter(|j| j.converted && !j.touches.is_empty())
                    .fold((0.0, 0.0), |(c, v), j| (c + j.count, v + j.count * j.value));
                for (c, wc) in out.iter_mut().zip(&w) {
                    c.conversions = conv * wc;
                    c.value = value * wc;
                }
                return out;
            }
            w
        }
        _ => Vec::new(),
    };
    for j in journeys {
        let touches: Vec<Touch> = j
            .touches
            .iter()
            .copied()
            .filter(|t| (t.channel as usize) < channels)
            .collect();
        if !j.converted || touches.is_empty() {
            continue;
        }
        let n = touches.len();
        shares.clear();
        match model {
            Model::FirstTouch => {
                shares.resize(n, 0.0);
                shares[0] = 1.0;
            }
            Model::LastTouch => {
                shares.resize(n, 0.0);
                shares[n - 1] = 1.0;
            }
            Model::LastNonDirect { direct } => {
                shares.resize(n, 0.0);
                let i = touches
                    .iter()
                    .rposition(|t| t.channel != direct)
                    .unwrap_or(n - 1);
                shares[i] = 1.0;
            }
            Model::Linear => shares.resize(n, 1.0 / n as f64),
            Model::TimeDecay { half_life_hours } => {
                shares.extend(
                    touches
                        .iter()
                        .map(|t| 0.5f64.powf(t.hours_before / half_life_hours)),
                );
            }
            Model::PositionBased => {
                shares.extend((0..n).map(|i| match n {
                    1 => 1.0,
                    2 => 0.5,
                    _ if i == 0 || i == n - 1 => 0.4,
                    _ => 0.2 / (n - 2) as f64,
                }));
            }
            Model::Markov(_) => shares.extend(touches.iter().map(|t| weights[t.channel as usize])),
            Model::Shapley => {
                let mut distinct: Vec<u32> = touches.iter().map(|t| t.channel).collect();
                distinct.sort_unstable();
                distinct.dedup();
                let each = 1.0 / distinct.len() as f64;
                for c in distinct {
                    out[c as usize].conversions += j.count * each;
                    out[c as usize].value += j.count * j.value * each;
                }
                continue;
            }
        }
        let total: f64 = shares.iter().sum();
        if total.is_nan() || total <= 0.0 {
            continue;
        }
        for (t, s) in touches.iter().zip(&shares) {
            let s = s / total;
            out[t.channel as usize].conversions += j.count * s;
            out[t.channel as usize].value += j.count * j.value * s;
        }
    }
    out
}

/// The Markov chain of a set of journeys and what removing each channel does to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Markov {
    /// P(conversion) from (start).
    pub conversion_probability: f64,
    /// Removal effect per channel, in [0, 1].
    pub removal_effects: Vec<f64>,
    /// Transition probabilities: rows and columns are (start), channels…, (null),
    /// (conversion).
    pub transitions: Vec<Vec<f64>>,
}

/// Estimates the chain and every channel's removal effect.
pub fn markov(journeys: &[Journey], channels: usize) -> Markov {
    let k = channels;
    let (null, conv) = (k + 1, k + 2);
    let size = k + 3;
    let mut counts = vec![0.0f64; size * size];
    for j in journeys {
        let mut from = 0usize;
        let mut any = false;
        for t in &j.touches {
            if t.channel as usize >= k {
                continue;
            }
            let to = t.channel as usize + 1;
            if to != from {
                counts[from * size + to] += j.count;
            }
            from = to;
            any = true;
        }
        if any {
            counts[from * size + if j.converted { conv } else { null }] += j.count;
        }
    }
    let mut p = vec![vec![0.0; size]; size];
    for (i, row) in p.iter_mut().enumerate() {
        let sum: f64 = counts[i * size..(i + 1) * size].iter().sum();
        if sum > 0.0 {
            for (j, v) in row.iter_mut().enumerate() {
                *v = counts[i * size + j] / sum;
            }
        }
    }
    p[null][null] = 1.0;
    p[conv][conv] = 1.0;
    let base = absorb(&p, k, None);
    let removal_effects = (0..k)
        .map(|c| {
            if base > 0.0 {
                (1.0 - absorb(&p, k, Some(c + 1)) / base).clamp(0.0, 1.0)
            } else {
                0.0
            }
        })
        .collect();
    Markov {
        conversion_probability: base,
        removal_effects,
        transitions: p,
    }
}

/// P(reaching conversion from start), with state `removed` made a dead end (null).
/// Solves (I − Q) x = R over the transient states 0..=k by Gaussian elimination.
fn absorb(p: &[Vec<f64>], k: usize, removed: Option<usize>) -> f64 {
    let n = k + 1;
    let conv = k + 2;
    let mut a = vec![0.0f64; n * (n + 1)];
    for i in 0..n {
        let row = &mut a[i * (n + 1)..(i + 1) * (n + 1)];
        row[i] = 1.0;
        if Some(i) == removed {
            continue; // x_i = 0
        }
        for (j, v) in row.iter_mut().enumerate().take(n) {
            if Some(j) != removed {
                *v -= p[i][j];
            }
        }
        row[n] = p[i][conv];
    }
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|x, y| {
                a[x * (n + 1) + col]
                    .abs()
                    .total_cmp(&a[y * (n + 1) + col].abs())
            })
            .unwrap_or(col);
        if a[pivot * (n + 1) + col].abs() < 1e-300 {
            continue;
        }
        if pivot != col {
            for j in 0..=n {
                a.swap(col * (n + 1) + j, pivot * (n + 1) + j);
            }
        }
        let d = a[col * (n + 1) + col];
        for j in col..=n {
            a[col * (n + 1) + j] /= d;
        }
        for i in 0..n {
            if i == col {
                continue;
            }
            let f = a[i * (n + 1) + col];
            if f != 0.0 {
                for j in col..=n {
                    a[i * (n + 1) + j] -= f * a[col * (n + 1) + j];
                }
            }
        }
    }
    a[n]
}

/// Journeys of one profile: each conversion takes the touchpoints since the previous
/// conversion that fall within `lookback_ms` before it; touchpoints after the last
/// conversion form one journey that has not converted. Times in ms; `touches` and
/// `conversions` (time, value) need not be sorted.
pub fn journeys_of(
    touches: &[(i64, u32)],
    conversions: &[(i64, f64)],
    lookback_ms: i64,
) -> Vec<Journey> {
    let mut touches = touches.to_vec();
    touches.sort_unstable_by_key(|t| t.0);
    let mut conversions = conversions.to_vec();
    conversions.sort_by_key(|c| c.0);
    let mut out = Vec::new();
    let mut next = 0usize;
    for &(at, value) in &conversions {
        let start = next;
        while next < touches.len() && touches[next].0 <= at {
            next += 1;
        }
        let list: Vec<Touch> = touches[start..next]
            .iter()
            .filter(|t| at - t.0 <= lookback_ms)
            .map(|t| Touch {
                channel: t.1,
                hours_before: (at - t.0) as f64 / 3_600_000.0,
            })
            .collect();
        out.push(Journey {
            touches: list,
            converted: true,
            value,
            count: 1.0,
        });
    }
    if next < touches.len() {
        let end = touches[touches.len() - 1].0;
        out.push(Journey {
            touches: touches[next..]
                .iter()
                .map(|t| Touch {
                    channel: t.1,
                    hours_before: (end - t.0) as f64 / 3_600_000.0,
                })
                .collect(),
            converted: false,
            value: 0.0,
            count: 1.0,
        });
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn j(chs: &[u32], converted: bool, value: f64) -> Journey {
        Journey {
            touches: chs
                .iter()
                .enumerate()
                .map(|(i, c)| Touch {
                    channel: *c,
                    hours_before: (chs.len() - i) as f64 * 10.0,
                })
                .collect(),
            converted,
            value,
            count: 1.0,
        }
    }

    /// The Shapley value by its definition: the mean marginal worth over every ordering.
    fn shapley_by_orderings(journeys: &[Journey], n: usize) -> Vec<f64> {
        let worth = |set: u32| -> f64 {
            journeys
                .iter()
                .filter(|j| j.converted && !j.touches.is_empty())
                .filter(|j| j.touches.iter().all(|t| set & (1 << t.channel) != 0))
                .map(|j| j.count)
                .sum()
        };
        fn orderings(rest: &mut Vec<usize>, cur: &mut Vec<usize>, all: &mut Vec<Vec<usize>>) {
            if rest.is_empty() {
                all.push(cur.clone());
                return;
            }
            for i in 0..rest.len() {
                let x = rest.remove(i);
                cur.push(x);
                orderings(rest, cur, all);
                cur.pop();
                rest.insert(i, x);
            }
        }
        let mut all = Vec::new();
        orderings(&mut (0..n).collect(), &mut Vec::new(), &mut all);
        let mut phi = vec![0.0; n];
        for o in &all {
            let mut set = 0u32;
            for &p in o {
                let before = worth(set);
                set |= 1 << p;
                phi[p] += worth(set) - before;
            }
        }
        phi.iter().map(|v| v / all.len() as f64).collect()
    }

    proptest! {
        #[test]
        fn shapley_equals_the_definition(paths in prop::collection::vec(
            (prop::collection::vec(0u32..4, 1..5), any::<bool>()), 1..12)) {
            let journeys: Vec<Journey> = paths.iter().map(|(p, c)| j(p, *c, 1.0)).collect();
            let fast = attribute(&journeys, 4, Model::Shapley);
            let slow = shapley_by_orderings(&journeys, 4);
            for (f, s) in fast.iter().zip(&slow) {
                prop_assert!((f.conversions - s).abs() < 1e-9, "{fast:?} vs {slow:?}");
            }
        }

        #[test]
        fn every_model_hands_out_exactly_the_conversions(paths in prop::collection::vec(
            (prop::collection::vec(0u32..5, 1..6), any::<bool>(), 1.0f64..100.0), 1..30)) {
            let journeys: Vec<Journey> = paths.iter().map(|(p, c, v)| j(p, *c, *v)).collect();
            let conv: f64 = journeys.iter().filter(|j| j.converted).count() as f64;
            let value: f64 = journeys.iter().filter(|j| j.converted).map(|j| j.value).sum();
            let markov_ok = markov(&journeys, 5).conversion_probability > 0.0;
            for m in [Model::FirstTouch, Model::LastTouch, Model::LastNonDirect { direct: 0 },
                      Model::Linear, Model::TimeDecay { half_life_hours: 24.0 },
                      Model::PositionBased, Model::Shapley,
                      Model::Markov(Normalisation::Global), Model::Markov(Normalisation::PerJourney)] {
                if matches!(m, Model::Markov(_)) && !markov_ok { continue; }
                let c = attribute(&journeys, 5, m);
                let (sc, sv) = c.iter().fold((0.0, 0.0), |(a, b), x| (a + x.conversions, b + x.value));
                prop_assert!((sc - conv).abs() < 1e-6, "{m:?}: {sc} vs {conv}");
                prop_assert!((sv - value).abs() < 1e-6 * value.max(1.0), "{m:?}: {sv} vs {value}");
            }
        }
    }

    #[test]
    fn heuristics_split_as_documented() {
        let js = [j(&[0, 1, 2, 3], true, 100.0)];
        let pb = attribute(&js, 4, Model::PositionBased);
        let got: Vec<f64> = pb.iter().map(|c| c.value).collect();
        assert_eq!(got, vec![40.0, 10.0, 10.0, 40.0]);
        let lnd = attribute(
            &[j(&[1, 2, 0], true, 1.0)],
            3,
            Model::LastNonDirect { direct: 0 },
        );
        assert_eq!(lnd[2].conversions, 1.0);
        let only_direct = attribute(
            &[j(&[0, 0], true, 1.0)],
            3,
            Model::LastNonDirect { direct: 0 },
        );
        assert_eq!(only_direct[0].conversions, 1.0);
        // Time decay: a touch one half-life earlier gets half the weight.
        let td = attribute(
            &[j(&[0, 1], true, 3.0)],
            2,
            Model::TimeDecay {
                half_life_hours: 10.0,
            },
        );
        assert!((td[0].value - 1.0).abs() < 1e-12 && (td[1].value - 2.0).abs() < 1e-12);
    }

    #[test]
    fn removal_effects_of_a_chain_with_a_known_answer() {
        // a → conv twice, b → null twice, a → b → conv once.
        let js = [
            j(&[0], true, 1.0),
            j(&[0], true, 1.0),
            j(&[1], false, 0.0),
            j(&[1], false, 0.0),
            j(&[0, 1], true, 1.0),
        ];
        let m = markov(&js, 2);
        // start: a 3/5, b 2/5. a: conv 2/3, b 1/3. b: conv 1/3, null 2/3.
        let pb = 1.0 / 3.0;
        let pa = 2.0 / 3.0 + pb / 3.0;
        let base = 0.6 * pa + 0.4 * pb;
        assert!((m.conversion_probability - base).abs() < 1e-12);
        let without_a = 0.4 * pb;
        let without_b = 0.6 * (2.0 / 3.0);
        assert!((m.removal_effects[0] - (1.0 - without_a / base)).abs() < 1e-12);
        assert!((m.removal_effects[1] - (1.0 - without_b / base)).abs() < 1e-12);
    }

    #[test]
    fn journeys_end_at_each_conversion_and_respect_the_lookback() {
        let h = 3_600_000;
        let touches = [(0, 1), (5 * h, 2), (30 * h, 3), (40 * h, 4)];
        let convs = [(10 * h, 50.0), (35 * h, 20.0)];
        let js = journeys_of(&touches, &convs, 8 * h);
        assert_eq!(js.len(), 3);
        assert_eq!(
            js[0].touches.iter().map(|t| t.channel).collect::<Vec<_>>(),
            vec![2]
        );
        assert_eq!(js[0].touches[0].hours_before, 5.0);
        assert_eq!(
            js[1].touches.iter().map(|t| t.channel).collect::<Vec<_>>(),
            vec![3]
        );
        assert!(!js[2].converted && js[2].touches[0].channel == 4);
    }
}
