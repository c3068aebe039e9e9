//! Minutes from `eventTime` and back, so the detector never reads a clock.
//!
//! Why: a replay of the same records must give the same insights, so time is the records'
//! `eventTime` (`YYYY-MM-DDTHH:MM:SS[.fff]Z`, as CloudTrail writes it) counted in whole
//! minutes since the Unix epoch.

/// Minutes since the epoch of a CloudTrail `eventTime`; `None` for anything else.
pub(crate) fn parse_minute(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    if *b.last()? != b'Z' || (b.len() > 20 && b[19] != b'.') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        b[r].iter().try_fold(0i64, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    Some((days_from_civil(y, mo, d) * 24 + h) * 60 + mi)
}

/// `YYYY-MM-DDTHH:MM:00Z` of a minute; AWS writes Insights times on whole minutes.
pub(crate) fn format_minute(minute: i64) -> String {
    let (days, rem) = (minute.div_euclid(1440), minute.rem_euclid(1440));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:00Z", rem / 60, rem % 60)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
}

/// The inverse of [`days_from_civil`].
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

#[cfg(test)]
mod tests {
    use super::{format_minute, parse_minute};

    #[test]
    fn round_trips_whole_minutes() {
        assert_eq!(parse_minute("1970-01-01T00:01:59Z"), Some(1));
        assert_eq!(
            parse_minute("2000-02-29T12:34:56.789Z"),
            Some(951_827_696 / 60)
        );
        for m in [0, 1, 29_943_600, 951_827_696 / 60, 27_000_000] {
            assert_eq!(parse_minute(&format_minute(m)), Some(m));
        }
        assert_eq!(format_minute(29_943_600), "2026-12-07T04:00:00Z");
        for bad in [
            "2000-02-29 12:34:56Z",
            "2000-13-01T00:00:00Z",
            "2000-01-01T00:00:00",
            "x",
        ] {
            assert_eq!(parse_minute(bad), None, "{bad}");
        }
    }
}
