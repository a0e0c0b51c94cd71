//! Triggers and journeys: what Niyet does when something happens to a profile.
//!
//! Pure: no I/O, no clock. The pipeline feeds each profile's events and segment entries
//! in log order, with the processing time; this crate says which triggers fire, when
//! their waits elapse and whether a later event cancels them. The payloads destinations
//! receive are built here too, so they are the same live and in tests.
//!
//! - [`trigger`]: definitions (`when` an event or a segment entry, `wait` … `unless`,
//!   `if` a segment, `then` destinations), their validation and the per-profile state.
//! - [`score`]: intent scores with decay and threshold crossings.
//! - [`offer`]: the cart-abandonment offer from history and stock.
//! - [`quiet`]: quiet hours in the profile's time zone.
//! - [`payload`]: the action record, its idempotency key, webhook signatures and the
//!   shapes of ad-platform conversion feedback (hashed e-mail and phone).

pub mod offer;
pub mod payload;
pub mod quiet;
pub mod score;
pub mod trigger;

pub use payload::{idempotency_key, Action, Decision};
pub use score::{Crossing, ScoreDef, Scores};
pub use trigger::{Cap, Fire, JourneyState, Outcome, TriggerDef, TriggerError, Triggers, When};
