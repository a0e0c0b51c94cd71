//! Customer analytics of Niyet: pure computation over profile summaries, no I/O, no clock
//! (time comes in as an argument).
//!
//! - [`rfm`]: recency, frequency and monetary scores 1–5 by quintiles of the current
//!   customer base, and the named RFM groups.

#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod rfm;
