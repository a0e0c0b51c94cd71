//! Shared vocabulary of Niyet: the [`clock::Clock`] through which all code reads time,
//! and [`time`], the ISO-8601 timestamp parser and formatter used for event times.
//!
//! [`hash`] holds the cheap hasher for keys that are already hashes.
//!
//! Pure: no I/O beyond reading the system clock in [`clock::SystemClock`].

pub mod clock;
pub mod hash;
pub mod time;
pub mod walk;

pub use clock::{Clock, ManualClock, SystemClock};
pub use time::{
    civil_from_days, days_from_civil, format_rfc3339_millis, parse_timestamp, TimestampError,
};
