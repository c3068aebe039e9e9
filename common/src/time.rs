//! CloudTrail's time formats.
//!
//! CloudTrail uses three UTC spellings, and mixing them up breaks consumers silently (the AWS
//! validator slices digest key names by position), so they are written once, here:
//!
//! | where | format | example |
//! |---|---|---|
//! | JSON members (`eventTime`, `digestEndTime`) | `%Y-%m-%dT%H:%M:%SZ` | `2015-08-17T15:01:31Z` |
//! | log file names | `%Y%m%dT%H%MZ` | `20150817T1501Z` |
//! | digest file names | `%Y%m%dT%H%M%SZ` (16 chars) | `20150817T150131Z` |

use chrono::{DateTime, NaiveDateTime, SecondsFormat, TimeZone, Utc};

/// Formats an instant the way CloudTrail writes times inside JSON: UTC, whole seconds, `Z`.
pub fn json_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The minute-precision stamp in a log file's name.
pub fn log_key_time(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%MZ").to_string()
}

/// The second-precision, 16-character stamp in a digest file's name.
pub fn digest_key_time(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// The `YYYY/MM/DD` folders of the key layout.
pub fn date_folders(t: DateTime<Utc>) -> String {
    t.format("%Y/%m/%d").to_string()
}

/// Parses CloudTrail's JSON time (`2015-08-17T15:01:31Z`). Fractional seconds and offsets are
/// refused: real trail files never carry them and downstream tools compare these as strings.
pub fn parse_json_time(s: &str) -> Option<DateTime<Utc>> {
    if s.len() != 20 || !s.ends_with('Z') {
        return None;
    }
    parse_seconds(&s[..19]).map(|n| Utc.from_utc_datetime(&n))
}

/// `YYYY-MM-DDTHH:MM:SS`, as chrono's `%Y-%m-%dT%H:%M:%S` reads it. Every record's times pass
/// through here (validation on both sides, PutAuditEvents), and chrono's format parser showed in
/// the agent's profile, so the usual shape is read directly; anything else (a leap second, a
/// signed year) goes to chrono, so what is accepted does not change.
pub fn parse_seconds(s: &str) -> Option<NaiveDateTime> {
    let b = s.as_bytes();
    if b.len() == 19
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
    {
        let num = |r: std::ops::Range<usize>| -> Option<u32> {
            b[r].iter().try_fold(0u32, |n, c| {
                c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
            })
        };
        if let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(sec)) = (
            num(0..4),
            num(5..7),
            num(8..10),
            num(11..13),
            num(14..16),
            num(17..19),
        ) && sec < 60
        {
            return chrono::NaiveDate::from_ymd_opt(y as i32, mo, d)?.and_hms_opt(h, mi, sec);
        }
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").ok()
}

/// Parses a digest key stamp (`20150817T150131Z`).
pub fn parse_digest_key_time(s: &str) -> Option<DateTime<Utc>> {
    if s.len() != 16 || !s.ends_with('Z') {
        return None;
    }
    NaiveDateTime::parse_from_str(&s[..15], "%Y%m%dT%H%M%S")
        .ok()
        .map(|n| Utc.from_utc_datetime(&n))
}

/// Whole-second "now": CloudTrail times carry no fractions, and truncating once avoids a digest
/// whose key stamp and `digestEndTime` disagree by rounding.
pub fn now_secs() -> DateTime<Utc> {
    let now = Utc::now();
    Utc.timestamp_opt(now.timestamp(), 0)
        .single()
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_seconds_reads_what_chrono_reads() {
        for s in [
            "2015-08-17T15:01:31",
            "1970-01-01T00:00:00",
            "2024-02-29T23:59:59",
            "2023-02-29T10:00:00",
            "2026-12-07T24:00:00",
            "2026-12-07T10:60:00",
            "2026-12-07T10:11:60",
            "2026-13-07T10:11:12",
            "2026-12-07 10:11:12",
            "2026-12-07T1a:11:12",
            "+999-12-07T10:11:12",
            "2026-12-7T10:11:12",
            "",
        ] {
            assert_eq!(
                parse_seconds(s),
                NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").ok(),
                "{s}"
            );
        }
    }

    #[test]
    fn formats_match_cloudtrail() {
        let t = Utc.with_ymd_and_hms(2015, 8, 17, 15, 1, 31).unwrap();
        assert_eq!(json_time(t), "2015-08-17T15:01:31Z");
        assert_eq!(log_key_time(t), "20150817T1501Z");
        assert_eq!(digest_key_time(t), "20150817T150131Z");
        assert_eq!(digest_key_time(t).len(), 16);
        assert_eq!(date_folders(t), "2015/08/17");
        assert_eq!(parse_json_time("2015-08-17T15:01:31Z"), Some(t));
        assert_eq!(parse_digest_key_time("20150817T150131Z"), Some(t));
    }

    #[test]
    fn refuses_other_spellings() {
        for bad in [
            "2015-08-17T15:01:31.000Z",
            "2015-08-17T15:01:31+00:00",
            "2015-08-17 15:01:31Z",
            "2015-13-17T15:01:31Z",
            "",
        ] {
            assert_eq!(parse_json_time(bad), None, "{bad}");
        }
    }
}
