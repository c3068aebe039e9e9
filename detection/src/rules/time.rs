//! `eventTime` to milliseconds, without allocating.
//!
//! Windows run on the records' own time, not the clock, so that a replay gives the same
//! firings. CloudTrail writes `YYYY-MM-DDTHH:MM:SSZ` (Groundtrail's records are validated to
//! that form); a fraction of a second (`.123Z`) is accepted too. Anything else is no time: such
//! a record still fires single-record rules but is not counted in windows.

use serde_json::Value;

/// Milliseconds since the Unix epoch of the record's `eventTime`.
pub(crate) fn event_time_ms(record: &Value) -> Option<i64> {
    parse(record.get("eventTime")?.as_str()?)
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff…]Z`.
pub(crate) fn parse(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' || *b.last()? != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let mut n = 0i64;
        for &c in &b[r] {
            if !c.is_ascii_digit() {
                return None;
            }
            n = n * 10 + i64::from(c - b'0');
        }
        Some(n)
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut ms = 0;
    match b.len() {
        20 => {}
        n if b[19] == b'.' && n > 21 => {
            let frac = &b[20..n - 1];
            if !frac.iter().all(u8::is_ascii_digit) {
                return None;
            }
            for i in 0..3 {
                ms = ms * 10 + frac.get(i).map_or(0, |c| i64::from(c - b'0'));
            }
        }
        _ => return None,
    }
    let days = days_from_civil(y, mo, d);
    Some(((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn cloudtrail_times() {
        assert_eq!(parse("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse("2026-12-07T04:00:00Z"), Some(1_796_616_000_000));
        assert_eq!(parse("2000-02-29T12:34:56Z"), Some(951_827_696_000));
        assert_eq!(parse("2000-02-29T12:34:56.789Z"), Some(951_827_696_789));
        assert_eq!(parse("2000-02-29T12:34:56.7Z"), Some(951_827_696_700));
        for bad in [
            "2000-02-29 12:34:56Z",
            "2000-02-29T12:34:56",
            "2000-02-29T12:34:56+00:00",
            "2000-13-01T00:00:00Z",
            "2000-02-29T12:34:5xZ",
            "2000-02-29T12:34:56.Z",
            "",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
