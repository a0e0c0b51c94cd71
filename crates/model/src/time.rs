//! ISO-8601 / RFC 3339 timestamps as tracking SDKs send them, to and from milliseconds
//! since the Unix epoch.
//!
//! Accepted (case-insensitive `T`/`Z`, or a space instead of `T`):
//! `2026-11-22T10:15:30Z`, `…30.123Z`, `…30.123456Z` (any 1–9 fraction digits),
//! `…30+03:00`, `…30+0300`, `…30+03`, `…30.123456+00:00`, a time without an offset
//! (taken as UTC, as Python's naive `isoformat()` produces), `2026-11-22T10:15Z` (no
//! seconds) and a plain date `2026-11-22` (midnight UTC). Years 0001–9999.
//! Sub-millisecond digits are truncated.

use std::fmt;

/// Why a timestamp string was refused; the text names the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampError(pub &'static str);

impl fmt::Display for TimestampError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for TimestampError {}

const MS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn digits(&mut self, n: usize, what: &'static str) -> Result<u32, TimestampError> {
        let end = self.i + n;
        if end > self.b.len() {
            return Err(TimestampError(what));
        }
        let mut v = 0u32;
        for &c in &self.b[self.i..end] {
            if !c.is_ascii_digit() {
                return Err(TimestampError(what));
            }
            v = v * 10 + u32::from(c - b'0');
        }
        self.i = end;
        Ok(v)
    }
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn expect(&mut self, c: u8, what: &'static str) -> Result<(), TimestampError> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(TimestampError(what))
        }
    }
}

/// Parses an ISO-8601 timestamp into milliseconds since the Unix epoch (UTC).
pub fn parse_timestamp(s: &str) -> Result<i64, TimestampError> {
    let mut c = Cursor {
        b: s.trim().as_bytes(),
        i: 0,
    };
    let year = c.digits(4, "expected a four-digit year (YYYY-MM-DD)")?;
    c.expect(b'-', "expected '-' after the year")?;
    let month = c.digits(2, "expected a two-digit month")?;
    c.expect(b'-', "expected '-' after the month")?;
    let day = c.digits(2, "expected a two-digit day")?;
    if year == 0 {
        return Err(TimestampError("year out of range 0001-9999"));
    }
    let year = i64::from(year);
    if !(1..=12).contains(&month) {
        return Err(TimestampError("month out of range 01-12"));
    }
    if day == 0 || day > days_in_month(year, month) {
        return Err(TimestampError("day out of range for the month"));
    }
    let days = days_from_civil(year, month, day);
    let (mut h, mut mi, mut sec, mut ms) = (0u32, 0u32, 0u32, 0u32);
    let mut offset_min: i64 = 0;
    if let Some(sep) = c.peek() {
        if !matches!(sep, b'T' | b't' | b' ') {
            return Err(TimestampError("expected 'T' between date and time"));
        }
        c.i += 1;
        h = c.digits(2, "expected a two-digit hour")?;
        c.expect(b':', "expected ':' after the hour")?;
        mi = c.digits(2, "expected two-digit minutes")?;
        if c.peek() == Some(b':') {
            c.i += 1;
            sec = c.digits(2, "expected two-digit seconds")?;
            if matches!(c.peek(), Some(b'.') | Some(b',')) {
                c.i += 1;
                let start = c.i;
                while c.peek().is_some_and(|d| d.is_ascii_digit()) {
                    let digit = u32::from(c.b[c.i] - b'0');
                    let pos = c.i - start;
                    if pos < 3 {
                        ms += digit * 10u32.pow(2 - pos as u32);
                    }
                    c.i += 1;
                }
                let n = c.i - start;
                if n == 0 || n > 9 {
                    return Err(TimestampError("expected 1 to 9 fraction digits"));
                }
            }
        }
        if h > 23 || mi > 59 || sec > 59 {
            return Err(TimestampError("time of day out of range"));
        }
        match c.peek() {
            None => {}
            Some(b'Z') | Some(b'z') => c.i += 1,
            Some(sign @ (b'+' | b'-')) => {
                c.i += 1;
                let oh = c.digits(2, "expected a two-digit offset hour")?;
                let mut om = 0;
                if c.peek() == Some(b':') {
                    c.i += 1;
                    om = c.digits(2, "expected two-digit offset minutes")?;
                } else if c.peek().is_some() {
                    om = c.digits(2, "expected two-digit offset minutes")?;
                }
                if oh > 23 || om > 59 {
                    return Err(TimestampError("offset out of range"));
                }
                let total = i64::from(oh * 60 + om);
                offset_min = if sign == b'+' { total } else { -total };
            }
            Some(_) => return Err(TimestampError("expected 'Z' or an offset like +03:00")),
        }
    }
    if c.i != c.b.len() {
        return Err(TimestampError("unexpected characters after the timestamp"));
    }
    let local = days * MS_PER_DAY
        + i64::from(h) * 3_600_000
        + i64::from(mi) * 60_000
        + i64::from(sec) * 1000
        + i64::from(ms);
    Ok(local - offset_min * 60_000)
}

/// Formats milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_rfc3339_millis(ms: i64) -> String {
    let mut out = String::with_capacity(24);
    write_rfc3339_millis(&mut out, ms);
    out
}

/// Appends the `YYYY-MM-DDTHH:MM:SS.mmmZ` form of `ms` to `out`.
pub fn write_rfc3339_millis(out: &mut String, ms: i64) {
    let days = ms.div_euclid(MS_PER_DAY);
    let rem = ms.rem_euclid(MS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        use fmt::Write;
        let _ = write!(
            out,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            y,
            m,
            d,
            rem / 3_600_000,
            rem / 60_000 % 60,
            rem / 1000 % 60,
            rem % 1000
        );
        return;
    }
    // The hot path (every stored event has one): digits by hand, u32 arithmetic.
    let rem = rem as u32;
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let put = |b: &mut [u8; 24], at: usize, width: usize, mut v: u32| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(&mut b, 0, 4, y as u32);
    put(&mut b, 5, 2, m);
    put(&mut b, 8, 2, d);
    put(&mut b, 11, 2, rem / 3_600_000);
    put(&mut b, 14, 2, rem / 60_000 % 60);
    put(&mut b, 17, 2, rem / 1000 % 60);
    put(&mut b, 20, 3, rem % 1000);
    out.extend(b.iter().map(|&c| char::from(c)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, FixedOffset, SecondsFormat, TimeZone, Utc};
    use proptest::prelude::*;

    #[test]
    fn sdk_forms() {
        let base = 1_763_806_530_000; // 2025-11-22T10:15:30Z
        for (s, want) in [
            ("2025-11-22T10:15:30Z", base),
            ("2025-11-22T10:15:30.123Z", base + 123),
            ("2025-11-22T10:15:30.123456Z", base + 123),
            ("2025-11-22T10:15:30.1Z", base + 100),
            ("2025-11-22T10:15:30+00:00", base),
            ("2025-11-22T10:15:30.123456+00:00", base + 123),
            ("2025-11-22T13:15:30+03:00", base),
            ("2025-11-22T13:15:30+0300", base),
            ("2025-11-22T13:15:30+03", base),
            ("2025-11-22T05:15:30-05:00", base),
            ("2025-11-22 10:15:30", base),
            ("2025-11-22t10:15:30z", base),
            ("2025-11-22T10:15Z", base - 30_000),
            ("2025-11-22", base - (10 * 3600 + 15 * 60 + 30) * 1000),
        ] {
            assert_eq!(parse_timestamp(s), Ok(want), "{s}");
        }
    }

    #[test]
    fn refuses_nonsense_with_a_reason() {
        for (s, why) in [
            ("", "year"),
            ("yesterday", "year"),
            ("2025-13-01T00:00:00Z", "month"),
            ("2025-02-29T00:00:00Z", "day"),
            ("2025-01-01T24:00:00Z", "time of day"),
            ("2025-01-01T00:00:00Q", "offset"),
            ("2025-01-01T00:00:00.Z", "fraction"),
            ("2025-01-01T00:00:00Z trailing", "unexpected"),
        ] {
            let e = parse_timestamp(s).expect_err(s);
            assert!(e.0.contains(why), "{s}: {e}");
        }
        assert!(parse_timestamp("2024-02-29T00:00:00Z").is_ok());
    }

    fn reference(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(ms).single().expect("in range")
    }

    // Years 0001..=9999 in milliseconds.
    const MIN_MS: i64 = -62_135_596_800_000;
    const MAX_MS: i64 = 253_402_300_799_999;

    proptest! {
        #[test]
        fn formatting_matches_chrono(ms in MIN_MS..=MAX_MS) {
            let want = reference(ms).to_rfc3339_opts(SecondsFormat::Millis, true);
            prop_assert_eq!(format_rfc3339_millis(ms), want);
        }

        #[test]
        fn parses_every_form_chrono_writes(
            us in (MIN_MS / 1000 + 86_400)..=(MAX_MS / 1000 - 86_400),
            frac_us in 0i64..1_000_000,
            offset_min in -(23 * 60 + 59)..=(23 * 60 + 59i32),
            form in 0usize..5,
        ) {
            let utc = Utc.timestamp_opt(us, (frac_us * 1000) as u32).single().expect("valid");
            let tz = FixedOffset::east_opt(offset_min * 60).expect("valid offset");
            let local = utc.with_timezone(&tz);
            let text = match form {
                0 => utc.to_rfc3339_opts(SecondsFormat::Millis, true),
                1 => utc.to_rfc3339_opts(SecondsFormat::Micros, true),
                2 => local.to_rfc3339_opts(SecondsFormat::Micros, false),
                3 => local.format("%Y-%m-%dT%H:%M:%S%.f%z").to_string(),
                _ => utc.format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
            };
            let want = us * 1000 + frac_us / 1000;
            prop_assert_eq!(parse_timestamp(&text), Ok(want), "{}", text);
            prop_assert_eq!(parse_timestamp(&format_rfc3339_millis(want)), Ok(want));
        }
    }
}
