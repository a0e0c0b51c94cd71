//! Quiet hours: a daily stretch of local time (`21:00`–`09:00`) in which a trigger does
//! not send; an action decided then leaves when the stretch ends, in the profile's time
//! zone (daylight saving included: the time-zone database is built in, so the answer is
//! the same on every machine and on every replay).

use jiff::civil::Time;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Quiet hours as configured (`quiet_hours = { from = "21:00", to = "09:00" }`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHoursDef {
    /// Local time the quiet stretch starts (`HH:MM`).
    pub from: String,
    /// Local time it ends (`HH:MM`); before `from`, the stretch runs over midnight.
    pub to: String,
    /// Time zone for profiles without a valid `timezone` trait (an IANA name such as
    /// `Europe/Istanbul`; default `UTC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// Quiet hours, checked.
#[derive(Debug, Clone)]
pub struct QuietHours {
    /// Minutes after local midnight.
    from: i32,
    to: i32,
    fallback: TimeZone,
}

/// `HH:MM` (24-hour clock) as minutes after midnight.
fn minutes(s: &str) -> Result<i32, String> {
    let bad = || format!("`{s}` is not a time of day as HH:MM (00:00 to 23:59)");
    let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
    let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if !(0..24).contains(&h) || !(0..60).contains(&m) || s.trim().len() != 5 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// The time zone named `name` (IANA), if the built-in database knows it.
pub fn zone(name: &str) -> Option<TimeZone> {
    TimeZone::get(name.trim()).ok()
}

impl QuietHours {
    pub fn new(def: &QuietHoursDef) -> Result<QuietHours, String> {
        let (from, to) = (minutes(&def.from)?, minutes(&def.to)?);
        if from == to {
            return Err("`from` and `to` are the same time".into());
        }
        let fallback = match &def.timezone {
            Some(n) => zone(n).ok_or_else(|| format!("unknown time zone `{n}`"))?,
            None => TimeZone::UTC,
        };
        Ok(QuietHours { from, to, fallback })
    }

    /// If instant `at_ms` falls in quiet hours in time zone `tz` (a profile's `timezone`
    /// trait; the configured fallback when it is missing or unknown), the instant they
    /// end; otherwise `None`.
    pub fn until(&self, at_ms: i64, tz: Option<&str>) -> Option<i64> {
        let tz = tz.and_then(zone).unwrap_or_else(|| self.fallback.clone());
        let local = Timestamp::from_millisecond(at_ms)
            .ok()?
            .to_zoned_datetime(tz.clone());
        let m = i32::from(local.hour()) * 60 + i32::from(local.minute());
        let date = local.date();
        let end_day = if self.from < self.to {
            if !(self.from..self.to).contains(&m) {
                return None;
            }
            date
        } else if m >= self.from {
            date.tomorrow().ok()?
        } else if m < self.to {
            date
        } else {
            return None;
        };
        let end = Time::new((self.to / 60) as i8, (self.to % 60) as i8, 0, 0).ok()?;
        // A local time skipped by a clock change resolves to the instant after the gap.
        let ts = end_day
            .to_datetime(end)
            .to_zoned_datetime(tz)
            .ok()?
            .timestamp();
        Some(ts.as_millisecond().max(at_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(from: &str, to: &str, tz: Option<&str>) -> QuietHours {
        QuietHours::new(&QuietHoursDef {
            from: from.into(),
            to: to.into(),
            timezone: tz.map(str::to_string),
        })
        .unwrap()
    }

    fn ms(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn overnight_quiet_hours_end_at_the_local_morning() {
        let h = q("21:00", "09:00", None);
        // Istanbul is UTC+3: 19:30 UTC is 22:30 local, quiet until 09:00 local next day.
        assert_eq!(
            h.until(ms("2026-03-10T19:30:00Z"), Some("Europe/Istanbul")),
            Some(ms("2026-03-11T06:00:00Z"))
        );
        // 03:00 UTC is 06:00 local: quiet until 09:00 local the same day.
        assert_eq!(
            h.until(ms("2026-03-11T03:00:00Z"), Some("Europe/Istanbul")),
            Some(ms("2026-03-11T06:00:00Z"))
        );
        // 12:00 local: not quiet.
        assert_eq!(
            h.until(ms("2026-03-11T09:00:00Z"), Some("Europe/Istanbul")),
            None
        );
        // The end itself is not quiet; a minute before it is.
        assert_eq!(
            h.until(ms("2026-03-11T06:00:00Z"), Some("Europe/Istanbul")),
            None
        );
        assert_eq!(
            h.until(ms("2026-03-11T05:59:00Z"), Some("Europe/Istanbul")),
            Some(ms("2026-03-11T06:00:00Z"))
        );
    }

    #[test]
    fn unknown_or_missing_zones_use_the_fallback() {
        let h = q("21:00", "09:00", Some("America/New_York"));
        // 02:00 UTC on 10 March 2026 is 22:00 in New York (EDT, UTC-4, since 8 March).
        let want = Some(ms("2026-03-10T13:00:00Z"));
        assert_eq!(h.until(ms("2026-03-10T02:00:00Z"), None), want);
        assert_eq!(
            h.until(ms("2026-03-10T02:00:00Z"), Some("Mars/Olympus")),
            want
        );
        // In UTC by default.
        let utc = q("21:00", "09:00", None);
        assert_eq!(
            utc.until(ms("2026-03-10T02:00:00Z"), None),
            Some(ms("2026-03-10T09:00:00Z"))
        );
    }

    #[test]
    fn daylight_saving_moves_the_end() {
        // Berlin: 09:00 local is 08:00 UTC in winter, 07:00 UTC after 29 March 2026.
        let h = q("22:00", "09:00", None);
        assert_eq!(
            h.until(ms("2026-03-28T23:00:00Z"), Some("Europe/Berlin")),
            Some(ms("2026-03-29T07:00:00Z"))
        );
        assert_eq!(
            h.until(ms("2026-03-27T23:00:00Z"), Some("Europe/Berlin")),
            Some(ms("2026-03-28T08:00:00Z"))
        );
    }

    #[test]
    fn daytime_quiet_hours_and_bad_definitions() {
        let h = q("12:00", "14:00", None);
        assert_eq!(
            h.until(ms("2026-03-10T13:15:00Z"), None),
            Some(ms("2026-03-10T14:00:00Z"))
        );
        assert_eq!(h.until(ms("2026-03-10T14:15:00Z"), None), None);
        assert_eq!(h.until(ms("2026-03-10T11:59:00Z"), None), None);
        for (from, to, tz) in [
            ("21:00", "21:00", None),
            ("25:00", "09:00", None),
            ("9:00", "21:00", None),
            ("21:00", "09:60", None),
            ("21:00", "09:00", Some("Nowhere/City")),
        ] {
            let def = QuietHoursDef {
                from: from.into(),
                to: to.into(),
                timezone: tz.map(str::to_string),
            };
            assert!(QuietHours::new(&def).is_err(), "{def:?}");
        }
    }
}
