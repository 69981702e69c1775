//! Times typed by people: a retain-until date, a `since` filter, an agent's
//! end. One parser for every front end (CLI, server), so each accepts the
//! same forms and says the same thing about the ones it refuses.

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;

use crate::error::{Result, ServiceError};

/// Which instant of a day a bare date stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayBound {
    /// 00:00:00, for "since".
    Start,
    /// 23:59:59, for "until" and "retain until".
    End,
}

/// The forms accepted, for error messages.
pub const TIME_FORMS: &str = "a date (2027-06-30), a local date and time (2027-06-30 12:00 or 2027-06-30T12:00:00) \
     or a time with its offset (2027-06-30T12:00:00Z, 2027-06-30T12:00:00+02:00)";

/// Parses a time given as text. A time with an offset is taken as is; a
/// date and time without one, or a bare date, is read in `zone` (the
/// machine's zone on the command line), a bare date as `bound` of its day.
///
/// # Errors
/// `Invalid` naming the text and the forms accepted, or saying the time is
/// outside the range of dates boveda handles.
pub fn parse_time(text: &str, zone: &TimeZone, bound: DayBound) -> Result<Timestamp> {
    let text = text.trim();
    let out_of_range = |_: jiff::Error| {
        ServiceError::Invalid(format!("time {text:?} is out of range: boveda handles times from year -9999 to 9999"))
    };
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    if let Ok(dt) = text.parse::<DateTime>()
        && text.len() > "YYYY-MM-DD".len()
    {
        return dt.to_zoned(zone.clone()).map(|z| z.timestamp()).map_err(out_of_range);
    }
    let date: Date =
        text.parse().map_err(|_| ServiceError::Invalid(format!("invalid time {text:?}: use {TIME_FORMS}")))?;
    let at = match bound {
        DayBound::Start => date.at(0, 0, 0, 0),
        DayBound::End => date.at(23, 59, 59, 0),
    };
    at.to_zoned(zone.clone()).map(|z| z.timestamp()).map_err(out_of_range)
}

/// The furthest an ad-hoc point may be kept: 99 years, as Azure Backup's
/// longest retention.
pub const MAX_RETAIN_YEARS: i64 = 99;

/// Parses and checks a retain-until time: after `now`, and at most
/// [`MAX_RETAIN_YEARS`] ahead. A bare date keeps the point to the end of
/// that day in `zone`.
///
/// # Errors
/// `Invalid` for text that is no time, a time not in the future, or one too
/// far ahead.
pub fn parse_retain_until(text: &str, now: Timestamp, zone: &TimeZone) -> Result<Timestamp> {
    let t = parse_time(text, zone, DayBound::End)?;
    check_retain_until(t, now)?;
    Ok(t)
}

/// Checks a retain-until time against `now`.
///
/// # Errors
/// `Invalid` for a time not in the future or more than
/// [`MAX_RETAIN_YEARS`] ahead.
pub fn check_retain_until(t: Timestamp, now: Timestamp) -> Result<()> {
    if t <= now {
        return Err(ServiceError::Invalid(format!("retain-until time {t} is not in the future (now: {now})")));
    }
    let limit =
        now.to_zoned(TimeZone::UTC).checked_add(jiff::Span::new().years(MAX_RETAIN_YEARS)).map(|z| z.timestamp());
    if limit.is_ok_and(|limit| t > limit) {
        return Err(ServiceError::Invalid(format!("retain-until time {t} is more than {MAX_RETAIN_YEARS} years away")));
    }
    Ok(())
}

/// A duration as a user writes it (`24h`, `90m`, `1h30m`, `0s`); not
/// negative.
///
/// # Errors
/// `Field` naming `field` for text that does not parse or is negative.
pub fn parse_duration(field: &'static str, text: &str) -> Result<jiff::SignedDuration> {
    let d: jiff::SignedDuration = text.parse().map_err(|_| {
        ServiceError::field_error(field, format!("invalid duration {text:?}: use forms such as 24h, 90m, 1h30m or 0s"))
    })?;
    if d.is_negative() {
        return Err(ServiceError::field_error(field, format!("invalid duration {text:?}: must not be negative")));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn madrid() -> TimeZone {
        TimeZone::get("Europe/Madrid").expect("zone")
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn every_form_means_what_it_says() {
        let z = madrid();
        assert_eq!(parse_time("2027-01-01", &z, DayBound::End).expect("date"), ts("2027-01-01T22:59:59Z"));
        assert_eq!(parse_time("2027-01-01", &z, DayBound::Start).expect("date"), ts("2026-12-31T23:00:00Z"));
        assert_eq!(parse_time("2027-01-01T12:00:00", &z, DayBound::End).expect("dt"), ts("2027-01-01T11:00:00Z"));
        assert_eq!(parse_time("2027-01-01 12:00", &z, DayBound::End).expect("dt"), ts("2027-01-01T11:00:00Z"));
        assert_eq!(parse_time("2027-07-01 12:00", &z, DayBound::End).expect("summer"), ts("2027-07-01T10:00:00Z"));
        assert_eq!(parse_time("2027-01-01T12:00:00Z", &z, DayBound::End).expect("utc"), ts("2027-01-01T12:00:00Z"));
        assert_eq!(
            parse_time("2027-01-01T12:00:00+05:00", &z, DayBound::End).expect("offset"),
            ts("2027-01-01T07:00:00Z")
        );
    }

    #[test]
    fn bad_and_out_of_range_times_are_refused_clearly() {
        let z = madrid();
        let now = ts("2026-11-23T10:00:00Z");
        for bad in ["tomorrow", "2027-13-01", "2027-01-01 25:00", ""] {
            let e = parse_retain_until(bad, now, &z).expect_err(bad).to_string();
            assert!(e.contains("invalid time"), "{bad}: {e}");
        }
        let e = parse_retain_until("9999-12-31", now, &z).expect_err("far").to_string();
        assert!(e.contains("out of range") || e.contains("years away"), "{e}");
        let e = parse_retain_until("2126-01-01", now, &z).expect_err("far").to_string();
        assert!(e.contains("99 years away"), "{e}");
        let e = parse_retain_until("2026-11-22", now, &z).expect_err("past").to_string();
        assert!(e.contains("not in the future"), "{e}");
        assert!(parse_retain_until("2027-06-30", now, &z).is_ok());
    }
}
