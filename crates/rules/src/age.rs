//! Age in whole years from a profile's traits, and when it next changes.
//!
//! Sources, first found wins: `birthday` (`YYYY-MM-DD`, or an ISO timestamp whose date
//! part is taken; the age goes up at 00:00 UTC on the birthday, on 1 March in non-leap
//! years for 29 February), `birth_year` / `birthYear` (the age goes up on 1 January), or a
//! numeric `age` trait (fixed).

use crate::value::Traits;

const DAY: i64 = 86_400_000;

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Civil date of a day number.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// The day (in year `y`) on which a birthday of `m`-`d` is celebrated.
fn birthday_in(y: i64, m: i64, d: i64) -> i64 {
    if m == 2 && d == 29 && !leap(y) {
        days_from_civil(y, 3, 1)
    } else {
        days_from_civil(y, m, d)
    }
}

fn parse_date(s: &str) -> Option<(i64, i64, i64)> {
    let b = s.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let dim = [
        31,
        if leap(y) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    ((1..=12).contains(&m) && d >= 1 && d <= dim[(m - 1) as usize]).then_some((y, m, d))
}

/// The traits an age is read from, in order: `birthday`, `birth_year`, `birthYear`,
/// `age`. A static, so that a reader caching trait values by the name's address sees the
/// same address every time.
pub static SOURCES: [&str; 4] = ["birthday", "birth_year", "birthYear", "age"];

/// Age at `now` and the next instant (after `now`) it changes, if it ever does.
pub fn age<T: Traits + ?Sized>(traits: &T, now: i64) -> Option<(i64, Option<i64>)> {
    let today = now.div_euclid(DAY);
    let (ty, _, _) = civil_from_days(today);
    let [birthday, birth_year, birth_year_camel, age] = &SOURCES;
    if let crate::value::Value::Str(s) = traits.get(birthday) {
        if let Some((y, m, d)) = parse_date(&s) {
            let this_year = birthday_in(ty, m, d);
            let (years, next) = if today >= this_year {
                (ty - y, birthday_in(ty + 1, m, d))
            } else {
                (ty - y - 1, this_year)
            };
            return (years >= 0).then_some((years, Some(next * DAY)));
        }
    }
    for key in [birth_year, birth_year_camel] {
        if let Some(y) = traits.get(key).as_num() {
            if y.fract() == 0.0 && (1000.0..=9999.0).contains(&y) {
                let next = days_from_civil(ty + 1, 1, 1) * DAY;
                return Some((ty - y as i64, Some(next)));
            }
        }
    }
    traits
        .get(age)
        .as_num()
        .filter(|a| a.fract() == 0.0 && *a >= 0.0)
        .map(|a| (a as i64, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;
    use std::borrow::Cow;

    struct T(&'static str, Value<'static>);
    impl Traits for T {
        fn get(&self, k: &str) -> Value<'_> {
            if k == self.0 {
                self.1.clone()
            } else {
                Value::Null
            }
        }
    }

    #[test]
    fn civil_round_trip() {
        for z in -800_000..800_000 {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(days_from_civil(2000, 2, 29)), (2000, 2, 29));
    }

    #[test]
    fn birthday_changes_age_at_midnight_utc() {
        let t = T("birthday", Value::Str(Cow::Borrowed("1990-06-15")));
        let bday = days_from_civil(2026, 6, 15) * DAY;
        assert_eq!(age(&t, bday - 1), Some((35, Some(bday))));
        assert_eq!(
            age(&t, bday),
            Some((36, Some(days_from_civil(2027, 6, 15) * DAY)))
        );
    }

    #[test]
    fn leap_day_birthday_counts_on_first_of_march() {
        let t = T("birthday", Value::Str(Cow::Borrowed("2004-02-29")));
        let mar1 = days_from_civil(2026, 3, 1) * DAY;
        assert_eq!(age(&t, mar1 - 1).map(|a| a.0), Some(21));
        assert_eq!(age(&t, mar1).map(|a| a.0), Some(22));
        let feb29 = days_from_civil(2028, 2, 29) * DAY;
        assert_eq!(age(&t, feb29).map(|a| a.0), Some(24));
    }

    #[test]
    fn birth_year_and_plain_age() {
        let now = days_from_civil(2026, 11, 22) * DAY;
        let t = T("birthYear", Value::Num(1990.0));
        assert_eq!(
            age(&t, now),
            Some((36, Some(days_from_civil(2027, 1, 1) * DAY)))
        );
        let t = T("age", Value::Str(Cow::Borrowed("41")));
        assert_eq!(age(&t, now), Some((41, None)));
        assert_eq!(
            age(&T("birthday", Value::Str(Cow::Borrowed("1990-13-01"))), now),
            None
        );
    }
}
