//! Pure ingest logic: everything between the bytes of an HTTP request and the bytes of a
//! log record, with no I/O and no clock of its own (the receive time is an argument).
//!
//! * [`body`] undoes transport encodings (gzip, form-encoded JSON) within size limits and
//!   checks nesting depth before any parsing.
//! * [`message`] reads Segment Tracking API envelopes (`/v1/batch` and the single-message
//!   endpoints), validates each message, corrects client clock skew and writes the
//!   normalised JSON that the log keeps.
//! * [`plan`] holds tracking plans (a JSON Schema per event name) and the small schema
//!   validator behind them.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod body;
pub mod error;
pub mod message;
pub mod minimise;
pub mod plan;

pub use error::{ErrorKind, IngestError};
pub use message::{
    parse_envelope, Disposition, Endpoint, Envelope, Invalid, MessageType, NormalizeCtx,
    Normalized, Outcome, MAX_MESSAGE_BYTES,
};
pub use minimise::{IpPolicy, Minimise};
pub use plan::{PlanAction, Schema, SchemaError, TrackingPlan};
