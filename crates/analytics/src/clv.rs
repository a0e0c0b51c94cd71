//! Customer lifetime value: the BG/NBD model of purchase frequency and dropout (Fader,
//! Hardie & Lee 2005, "Counting your customers the easy way") and the Gamma-Gamma model of
//! spend per purchase (Fader, Hardie & Lee 2005, "RFM and CLV"), both fitted by maximum
//! likelihood.
//!
//! **Inputs** follow the usual convention: for each customer, `frequency` is the number of
//! *repeat* purchases (all purchases less the first), `recency` the time from the first to
//! the last purchase, `age` the time from the first purchase to the end of the observation,
//! in any one time unit (Niyet uses days); `monetary` is the mean value of the repeat
//! purchases.
//!
//! **Fitting** maximises the mean log-likelihood over the customers with BFGS in log
//! space (analytic gradients). Customers with the same history are counted once with a
//! weight, and the terms that depend only on the frequency are computed once per distinct
//! frequency, so a fit over a million customers takes a few hundred milliseconds. Times
//! are scaled so the longest age is 10 during the fit (as the `lifetimes` package does);
//! α and the predictions are in the caller's unit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::optimize::{bfgs_from, Minimum};
use crate::special::{digamma, hyp2f1, ln_gamma};

/// One customer's purchase history.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct History {
    /// Repeat purchases.
    pub frequency: u32,
    /// Time from the first to the last purchase.
    pub recency: f64,
    /// Time from the first purchase to the end of the observation.
    pub age: f64,
}

/// Why a model could not be fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    /// Nothing to fit on.
    #[error("no customers to fit the model on")]
    Empty,
    /// An input that cannot be a history.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The optimiser did not reach a maximum.
    #[error("the fit did not converge after {0} iterations")]
    NoConvergence(usize),
}

/// Fitted BG/NBD parameters: purchase rates are Gamma(r, α) across customers, dropout
/// probabilities after each purchase Beta(a, b).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BgNbd {
    pub r: f64,
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
    /// Mean log-likelihood per customer at the fitted parameters.
    pub log_likelihood: f64,
    /// Customers the model was fitted on.
    pub customers: u64,
}

/// Fitted Gamma-Gamma parameters: spend per purchase is Gamma(p, ν) with ν ~ Gamma(q, v)
/// across customers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GammaGamma {
    pub p: f64,
    pub q: f64,
    pub v: f64,
    /// Mean log-likelihood per customer at the fitted parameters.
    pub log_likelihood: f64,
    /// Repeat customers the model was fitted on.
    pub customers: u64,
}

/// Rows of one frequency: (a, b, weight) of distinct histories.
struct ByFrequency {
    x: f64,
    rows: Vec<(f64, f64, f64)>,
}

/// Groups weighted rows by frequency, merging equal ones.
fn group(rows: impl Iterator<Item = (u32, f64, f64)>) -> (Vec<ByFrequency>, f64) {
    let mut all: Vec<(u32, u64, u64)> = rows
        .map(|(x, a, b)| (x, a.to_bits(), b.to_bits()))
        .collect();
    all.sort_unstable();
    let mut groups: Vec<ByFrequency> = Vec::new();
    let mut total = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j < all.len() && all[j] == all[i] {
            j += 1;
        }
        let (x, a, b) = all[i];
        let w = (j - i) as f64;
        total += w;
        match groups.last_mut() {
            Some(g) if g.x == f64::from(x) => {
                g.rows.push((f64::from_bits(a), f64::from_bits(b), w))
            }
            _ => groups.push(ByFrequency {
                x: f64::from(x),
                rows: vec![(f64::from_bits(a), f64::from_bits(b), w)],
            }),
        }
        i = j;
    }
    (groups, total)
}

impl BgNbd {
    /// Fits the model by maximum likelihood.
    pub fn fit(customers: &[History]) -> Result<BgNbd, FitError> {
        if customers.is_empty() {
            return Err(FitError::Empty);
        }
        let mut max_age = 0.0f64;
        for h in customers {
            if !(h.age.is_finite() && h.recency.is_finite())
                || h.recency < 0.0
                || h.recency > h.age
                || (h.frequency == 0 && h.recency != 0.0)
            {
                return Err(FitError::Invalid(format!(
                    "a history needs 0 ≤ recency ≤ age and recency 0 without repeat purchases: {h:?}"
                )));
            }
            max_age = max_age.max(h.age);
        }
        if max_age <= 0.0 {
            return Err(FitError::Invalid("every customer has age 0".into()));
        }
        let scale = 10.0 / max_age;
        let rows = |h: &History| (h.frequency, h.recency * scale, h.age * scale);
        let m = fit_warm(customers, 4, |sample| {
            let (groups, total) = group(sample.iter().map(rows));
            move |p: &[f64], g: &mut [f64]| bgnbd_nll(&groups, total, p, g)
        })?;
        let [r, alpha, a, b] = [m.x[0].exp(), m.x[1].exp(), m.x[2].exp(), m.x[3].exp()];
        Ok(BgNbd {
            r,
            alpha: alpha / scale,
            a,
            b,
            log_likelihood: -m.value,
            customers: customers.len() as u64,
        })
    }

    /// P(alive): the probability that a customer with this history has not dropped out.
    pub fn p_alive(&self, h: &History) -> f64 {
        if h.frequency == 0 {
            return 1.0;
        }
        let x = f64::from(h.frequency);
        let log_div = (self.r + x) * ((self.alpha + h.age) / (self.alpha + h.recency)).ln()
            + (self.a / (self.b + x - 1.0)).ln();
        1.0 / (1.0 + log_div.exp())
    }

    /// Expected purchases in the next `t` time units of a customer with this history.
    pub fn expected_purchases(&self, h: &History, t: f64) -> f64 {
        let (r, alpha, a, b) = (self.r, self.alpha, self.a, self.b);
        let x = f64::from(h.frequency);
        let (ha, hb, hc) = (r + x, b + x, a + b + x - 1.0);
        let z = t / (alpha + h.age + t);
        let ln_hyp = match hyp2f1(ha, hb, hc, z) {
            Some(v) if v.is_finite() && v > 0.0 => v.ln(),
            // Euler's transformation, as `lifetimes` falls back to.
            _ => {
                hyp2f1(hc - ha, hc - hb, hc, z).map_or(f64::NAN, f64::ln)
                    + (hc - ha - hb) * (1.0 - z).ln()
            }
        };
        let first = (a + b + x - 1.0) / (a - 1.0);
        let second = 1.0 - (ln_hyp + (r + x) * ((alpha + h.age) / (alpha + t + h.age)).ln()).exp();
        let den = if h.frequency > 0 {
            1.0 + (a / (b + x - 1.0)) * ((alpha + h.age) / (alpha + h.recency)).powf(r + x)
        } else {
            1.0
        };
        first * second / den
    }
}

/// Above this many rows, a fit starts on an evenly spaced sample of about this size.
const SAMPLE: usize = 25_000;
/// Iterations a fit from scratch may take (over at most `2 * SAMPLE` rows).
const COLD_ITERATIONS: usize = 2_000;
/// Iterations the full fit may take from the sample's optimum (it usually takes 8–9).
const WARM_ITERATIONS: usize = 200;

/// Minimises the mean negative log-likelihood that `objective` builds over rows, from
/// log-parameters 0. Over many rows, the fit first runs on an evenly spaced sample; its
/// optimum and inverse Hessian (the mean likelihood's curvature does not depend on the
/// number of rows) start the fit over all rows, which then takes a few iterations
/// instead of dozens. The answer is the full data's optimum either way.
///
/// Data the sample cannot be fitted on (the likelihood has no finite optimum, as when
/// nearly every customer bought once on one day) is refused at once rather than after
/// thousands of iterations over every row; so is a full fit that, started from the
/// sample's optimum, still wanders after [`WARM_ITERATIONS`].
fn fit_warm<T, F>(
    rows: &[T],
    params: usize,
    objective: impl Fn(&[T]) -> F,
) -> Result<Minimum, FitError>
where
    T: Clone,
    F: FnMut(&[f64], &mut [f64]) -> f64,
{
    let mut x0 = vec![0.0; params];
    let mut h0 = None;
    if rows.len() > 2 * SAMPLE {
        let step = rows.len() / SAMPLE;
        let sample: Vec<T> = rows.iter().step_by(step).cloned().collect();
        let m = bfgs_from(objective(&sample), &x0, None, 1e-9, COLD_ITERATIONS);
        if !m.converged {
            return Err(FitError::NoConvergence(m.iterations));
        }
        x0 = m.x;
        h0 = Some(m.inverse_hessian);
    }
    let limit = if h0.is_some() {
        WARM_ITERATIONS
    } else {
        COLD_ITERATIONS
    };
    let m = bfgs_from(objective(rows), &x0, h0.as_deref(), 1e-9, limit);
    if !m.converged {
        return Err(FitError::NoConvergence(m.iterations));
    }
    Ok(m)
}

/// Mean negative log-likelihood of BG/NBD at log-parameters `p`, gradient into `g`.
fn bgnbd_nll(groups: &[ByFrequency], total: f64, p: &[f64], g: &mut [f64]) -> f64 {
    let (r, alpha, a, b) = (p[0].exp(), p[1].exp(), p[2].exp(), p[3].exp());
    let (lg_r, lg_ab, lg_b) = (ln_gamma(r), ln_gamma(a + b), ln_gamma(b));
    let (dg_r, dg_ab, dg_b) = (digamma(r), digamma(a + b), digamma(b));
    let ln_alpha = alpha.ln();
    let (mut ll, mut gr, mut gal, mut ga, mut gb) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for grp in groups {
        let x = grp.x;
        let rx = r + x;
        let c = ln_gamma(rx) - lg_r + r * ln_alpha + lg_ab + ln_gamma(b + x)
            - lg_b
            - ln_gamma(a + b + x);
        let dr = digamma(rx) - dg_r + ln_alpha;
        let da = dg_ab - digamma(a + b + x);
        let db = dg_ab + digamma(b + x) - dg_b - digamma(a + b + x);
        let (mut s_ll, mut s_w, mut s_r, mut s_al, mut s_b) = (0.0, 0.0, 0.0, 0.0, 0.0);
        if x == 0.0 {
            for &(_, age, w) in &grp.rows {
                let l_age = (alpha + age).ln();
                s_ll += w * (-rx * l_age);
                s_w += w;
                s_r -= w * l_age;
                s_al -= w * rx / (alpha + age);
            }
        } else {
            let lab = a.ln() - (b + x - 1.0).ln();
            for &(rec, age, w) in &grp.rows {
                let (l_age, l_rec) = ((alpha + age).ln(), (alpha + rec).ln());
                let la = -rx * l_age;
                let lb = lab - rx * l_rec;
                // ln(e^la + e^lb) and the share of the second term, stably.
                let (l, wb) = if lb > la {
                    let e = (la - lb).exp();
                    (lb + e.ln_1p(), 1.0 / (1.0 + e))
                } else {
                    let e = (lb - la).exp();
                    (la + e.ln_1p(), e / (1.0 + e))
                };
                let wa = 1.0 - wb;
                s_ll += w * l;
                s_w += w;
                s_r -= w * (wa * l_age + wb * l_rec);
                s_al -= w * rx * (wa / (alpha + age) + wb / (alpha + rec));
                s_b += w * wb;
            }
            ga += s_b / a;
            gb -= s_b / (b + x - 1.0);
        }
        ll += s_ll + s_w * c;
        gr += s_r + s_w * dr;
        gal += s_al + s_w * r / alpha;
        ga += s_w * da;
        gb += s_w * db;
    }
    // d/d(ln θ) = θ · d/dθ, of the negative mean.
    g[0] = -gr * r / total;
    g[1] = -gal * alpha / total;
    g[2] = -ga * a / total;
    g[3] = -gb * b / total;
    -ll / total
}

impl GammaGamma {
    /// Fits the model on repeat customers: (repeat purchases, mean value of the repeat
    /// purchases). Customers without a repeat purchase are left out, as the model requires.
    pub fn fit(customers: &[(u32, f64)]) -> Result<GammaGamma, FitError> {
        let mut rows = Vec::new();
        for &(x, m) in customers {
            if x == 0 {
                continue;
            }
            if !(m.is_finite() && m > 0.0) {
                return Err(FitError::Invalid(format!(
                    "monetary values must be positive: {m} with {x} repeat purchases"
                )));
            }
            rows.push((x, m, 0.0f64));
        }
        if rows.is_empty() {
            return Err(FitError::Empty);
        }
        let n = rows.len() as u64;
        let m = fit_warm(&rows, 3, |sample| {
            let (groups, total) = group(sample.iter().copied());
            move |p: &[f64], g: &mut [f64]| gg_nll(&groups, total, p, g)
        })?;
        Ok(GammaGamma {
            p: m.x[0].exp(),
            q: m.x[1].exp(),
            v: m.x[2].exp(),
            log_likelihood: -m.value,
            customers: n,
        })
    }

    /// Expected value of a purchase of a customer with `frequency` repeat purchases of mean
    /// value `monetary`: a weighted mean of the customer's own and the population's mean.
    /// Needs q > 1; for a customer without repeat purchases, the population mean.
    pub fn expected_value(&self, frequency: u32, monetary: f64) -> f64 {
        let (p, q, v) = (self.p, self.q, self.v);
        let population = v * p / (q - 1.0);
        if frequency == 0 {
            return population;
        }
        let px = p * f64::from(frequency);
        let own = px / (px + q - 1.0);
        (1.0 - own) * population + own * monetary
    }
}

/// Mean negative log-likelihood of Gamma-Gamma at log-parameters, gradient into `g`.
fn gg_nll(groups: &[ByFrequency], total: f64, par: &[f64], g: &mut [f64]) -> f64 {
    let (p, q, v) = (par[0].exp(), par[1].exp(), par[2].exp());
    let (lg_q, dg_q, ln_v) = (ln_gamma(q), digamma(q), v.ln());
    let (mut ll, mut gp, mut gq, mut gv) = (0.0, 0.0, 0.0, 0.0);
    for grp in groups {
        let x = grp.x;
        let px = p * x;
        let ln_x = x.ln();
        let c = ln_gamma(px + q) - ln_gamma(px) - lg_q + q * ln_v + px * ln_x;
        let dp = x * (digamma(px + q) - digamma(px)) + x * ln_x;
        let dq = digamma(px + q) - dg_q + ln_v;
        for &(m, _, w) in &grp.rows {
            let (ln_m, ln_xmv) = (m.ln(), (x * m + v).ln());
            ll += w * (c + (px - 1.0) * ln_m - (px + q) * ln_xmv);
            gp += w * (dp + x * ln_m - x * ln_xmv);
            gq += w * (dq - ln_xmv);
            gv += w * (q / v - (px + q) / (x * m + v));
        }
    }
    g[0] = -gp * p / total;
    g[1] = -gq * q / total;
    g[2] = -gv * v / total;
    -ll / total
}

/// A distribution summary of per-customer values: mean and quantiles.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Distribution {
    pub count: u64,
    pub mean: f64,
    /// (quantile, value) for 0.1, 0.25, 0.5, 0.75, 0.9, 0.99.
    pub quantiles: BTreeMap<String, f64>,
}

impl Distribution {
    /// Summarises `values` (NaNs are left out).
    pub fn of(values: impl IntoIterator<Item = f64>) -> Distribution {
        let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let mean = if n == 0 {
            0.0
        } else {
            v.iter().sum::<f64>() / n as f64
        };
        let quantiles = [0.1, 0.25, 0.5, 0.75, 0.9, 0.99]
            .iter()
            .filter(|_| n > 0)
            .map(|q| {
                let i = ((n - 1) as f64 * q).round() as usize;
                (format!("{q}"), v[i])
            })
            .collect();
        Distribution {
            count: n as u64,
            mean,
            quantiles,
        }
    }
}

/// A population drawn from the models themselves, for tests and benchmarks: purchase
/// rates ~ Gamma(1, 4) per time unit, dropout after each purchase ~ Beta(1, 3), ages
/// uniform in 20–40, each purchase's value ~ Gamma(3, ν) with ν ~ Gamma(4, 0.05) per
/// customer. Deterministic for a seed. Each item: (history, mean repeat value or 0).
pub fn simulate(n: usize, seed: u64) -> Vec<(History, f64)> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut u = move || {
        // xorshift64*: uniform in (0, 1).
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        ((s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let rate = -u().ln() / 4.0;
            let dropout = 1.0 - u().powf(1.0 / 3.0);
            let age = 20.0 + 20.0 * u();
            let nu = (0..4).map(|_| -u().ln()).sum::<f64>() / 0.05;
            let (mut t, mut last, mut x, mut spent) = (0.0, 0.0, 0u32, 0.0);
            // Active from the first purchase; after each repeat purchase, dropout.
            loop {
                t += -u().ln() / rate;
                if t > age {
                    break;
                }
                last = t;
                x += 1;
                spent += (0..3).map(|_| -u().ln()).sum::<f64>() / nu;
                if u() < dropout {
                    break;
                }
            }
            let m = if x > 0 { spent / f64::from(x) } else { 0.0 };
            (
                History {
                    frequency: x,
                    recency: last,
                    age,
                },
                m,
            )
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn sample() -> Vec<History> {
        simulate(3000, 1).into_iter().map(|c| c.0).collect()
    }

    #[test]
    fn the_gradient_is_that_of_the_likelihood() {
        let h = sample();
        let (groups, total) = group(
            h.iter()
                .map(|h| (h.frequency, h.recency / 4.0, h.age / 4.0)),
        );
        let p = [-0.3, 0.4, -0.2, 0.6];
        let mut g = [0.0; 4];
        bgnbd_nll(&groups, total, &p, &mut g);
        for i in 0..4 {
            let (mut hi, mut lo) = (p, p);
            hi[i] += 1e-6;
            lo[i] -= 1e-6;
            let mut scratch = [0.0; 4];
            let numeric = (bgnbd_nll(&groups, total, &hi, &mut scratch)
                - bgnbd_nll(&groups, total, &lo, &mut scratch))
                / 2e-6;
            assert!(
                (numeric - g[i]).abs() < 1e-6,
                "parameter {i}: {numeric} vs {}",
                g[i]
            );
        }
        let rows: Vec<(u32, f64, f64)> = h
            .iter()
            .filter(|h| h.frequency > 0)
            .map(|h| (h.frequency, 10.0 + h.recency, 0.0))
            .collect();
        let (groups, total) = group(rows.into_iter());
        let p = [0.5, 0.9, 1.7];
        let mut g = [0.0; 3];
        gg_nll(&groups, total, &p, &mut g);
        for i in 0..3 {
            let (mut hi, mut lo) = (p, p);
            hi[i] += 1e-6;
            lo[i] -= 1e-6;
            let mut scratch = [0.0; 3];
            let numeric = (gg_nll(&groups, total, &hi, &mut scratch)
                - gg_nll(&groups, total, &lo, &mut scratch))
                / 2e-6;
            assert!(
                (numeric - g[i]).abs() < 1e-6,
                "parameter {i}: {numeric} vs {}",
                g[i]
            );
        }
    }

    #[test]
    fn merging_equal_histories_does_not_change_the_fit() {
        let h = sample();
        let once = BgNbd::fit(&h).expect("fit");
        let mut twice = h.clone();
        twice.extend_from_slice(&h);
        let both = BgNbd::fit(&twice).expect("fit");
        for (x, y) in [
            (once.r, both.r),
            (once.alpha, both.alpha),
            (once.a, both.a),
            (once.b, both.b),
        ] {
            assert!(
                (x - y).abs() < 1e-6 * x.abs().max(1.0),
                "{once:?} vs {both:?}"
            );
        }
    }

    #[test]
    fn time_units_only_scale_alpha() {
        let h = sample();
        let days = BgNbd::fit(&h).expect("fit");
        let weeks: Vec<History> = h
            .iter()
            .map(|h| History {
                recency: h.recency / 7.0,
                age: h.age / 7.0,
                ..*h
            })
            .collect();
        let weeks = BgNbd::fit(&weeks).expect("fit");
        assert!((days.r - weeks.r).abs() < 1e-6 && (days.b - weeks.b).abs() < 1e-5);
        assert!((days.alpha / 7.0 - weeks.alpha).abs() < 1e-6 * days.alpha);
    }

    #[test]
    fn a_fit_recovers_the_parameters_of_a_simulated_population() {
        let pop = simulate(40_000, 7);
        let h: Vec<History> = pop.iter().map(|c| c.0).collect();
        let m = BgNbd::fit(&h).expect("fit");
        // Simulated with r = 1, α = 4, a = 1, b = 3.
        for (got, want) in [(m.r, 1.0), (m.alpha, 4.0), (m.a, 1.0), (m.b, 3.0)] {
            assert!((got - want).abs() < 0.2 * want, "{m:?}");
        }
        let rows: Vec<(u32, f64)> = pop.iter().map(|c| (c.0.frequency, c.1)).collect();
        let g = GammaGamma::fit(&rows).expect("fit");
        for (got, want) in [(g.p, 3.0), (g.q, 4.0), (g.v, 0.05)] {
            assert!((got - want).abs() < 0.25 * want, "{g:?}");
        }
    }

    #[test]
    fn a_fit_started_from_a_sample_ends_at_the_full_datas_optimum() {
        let pop = simulate(3 * SAMPLE, 11);
        let h: Vec<History> = pop.iter().map(|c| c.0).collect();
        let warm = BgNbd::fit(&h).expect("fit");
        let scale = 10.0 / h.iter().map(|h| h.age).fold(0.0, f64::max);
        let (groups, total) = group(
            h.iter()
                .map(|h| (h.frequency, h.recency * scale, h.age * scale)),
        );
        let cold = crate::optimize::bfgs(
            |p, g| bgnbd_nll(&groups, total, p, g),
            &[0.0; 4],
            1e-9,
            2000,
        );
        assert!(cold.converged);
        let c = [
            cold.x[0].exp(),
            cold.x[1].exp() / scale,
            cold.x[2].exp(),
            cold.x[3].exp(),
        ];
        for (w, c) in [warm.r, warm.alpha, warm.a, warm.b].iter().zip(c) {
            assert!((w - c).abs() < 1e-5 * c, "{warm:?} vs {c:?}");
        }
    }

    #[test]
    fn bad_input_is_refused() {
        assert_eq!(BgNbd::fit(&[]), Err(FitError::Empty));
        let bad = [History {
            frequency: 1,
            recency: 5.0,
            age: 2.0,
        }];
        assert!(matches!(BgNbd::fit(&bad), Err(FitError::Invalid(_))));
        assert!(matches!(
            GammaGamma::fit(&[(2, -1.0)]),
            Err(FitError::Invalid(_))
        ));
        assert_eq!(GammaGamma::fit(&[(0, 5.0)]), Err(FitError::Empty));
    }

    #[test]
    fn predictions_behave() {
        let m = BgNbd {
            r: 0.24,
            alpha: 4.4,
            a: 0.79,
            b: 2.4,
            log_likelihood: 0.0,
            customers: 0,
        };
        // Someone who bought often and recently is likelier alive than one who stopped.
        let recent = History {
            frequency: 5,
            recency: 30.0,
            age: 31.0,
        };
        let lapsed = History {
            frequency: 5,
            recency: 5.0,
            age: 31.0,
        };
        assert!(m.p_alive(&recent) > m.p_alive(&lapsed));
        assert_eq!(
            m.p_alive(&History {
                frequency: 0,
                recency: 0.0,
                age: 10.0
            }),
            1.0
        );
        // Expected purchases grow with the horizon and with P(alive).
        assert!(m.expected_purchases(&recent, 20.0) > m.expected_purchases(&recent, 10.0));
        assert!(m.expected_purchases(&recent, 10.0) > m.expected_purchases(&lapsed, 10.0));
        let d = Distribution::of([3.0, 1.0, 2.0, f64::NAN]);
        assert_eq!((d.count, d.mean, d.quantiles["0.5"]), (3, 2.0, 2.0));
    }
}
