//! The profile engine: turns stored events into per-profile state.
//!
//! * [`extract`] reads a stored event (the normalised JSON the log holds) into an
//!   [`extract::EventView`] borrowing from it, and derives its identifiers.
//! * [`Symbols`] interns names (trait keys, event names, sources) so profiles hold small
//!   numbers instead of strings.
//! * [`Update`] is one event prepared for a profile (names interned, values copied out);
//!   [`Profile::apply`] folds it in and [`Profile::absorb`] merges two profiles. Both are
//!   order-independent where it matters (last-writer-wins by event time, then by
//!   value; sums in integer minor units), so merging two profiles gives the same state as
//!   folding all their events into one.
//!
//! * [`segments`] connects profiles to the rule engine ([`niyet_rules`]): the part of an
//!   event segment features read, a profile's traits as rules see them, and the
//!   per-profile segment state.
//!
//! Pure: no I/O, no clock, no threads.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod consent;
pub mod extract;
mod profile;
pub mod segments;
mod symbols;

pub use profile::{
    Account, CommerceNames, EventList, Profile, Purchases, Trait, TraitSet, TraitValues, Update,
    UpdateKind, DEVICE_TAG, MONEY_SCALE,
};
pub use symbols::{Sym, Symbols};
