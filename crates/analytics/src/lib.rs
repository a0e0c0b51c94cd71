//! Customer analytics of Niyet: pure computation over profile summaries and journeys, no
//! I/O, no clock (time comes in as an argument).
//!
//! - [`rfm`]: recency, frequency and monetary scores 1–5 by quintiles of the current
//!   customer base, and the named RFM groups.
//! - [`clv`]: lifetime value with BG/NBD and Gamma-Gamma, fitted by maximum likelihood.
//! - [`channel`]: the marketing channel of a touchpoint.
//! - [`attribution`]: credit for conversions by channel: heuristic models, Markov removal
//!   effects and Shapley values.
//! - [`funnel`]: funnels, cohort retention and conversion rate over time.
//! - [`intent`]: predictive intent by logistic regression, with AUC.
//! - [`recommend`]: bought-together and viewed-then-bought item links, per-profile suggestions.
//! - [`special`], [`optimize`]: the special functions and the optimiser behind them.

#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod attribution;
pub mod channel;
pub mod clv;
pub mod funnel;
pub mod intent;
pub mod optimize;
pub mod recommend;
pub mod rfm;
pub mod special;
