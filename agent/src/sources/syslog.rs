//! The syslog line envelope shared by the auth log and the package logs: timestamp, host,
//! tag (`program[pid]:`), message.
//!
//! Two timestamp families occur in files:
//! - classic BSD syslog, `Feb 21 21:54:44` (day space-padded, no year, no zone): the year comes
//!   from a [`YearTracker`] and the zone from the config;
//! - RFC 3339 / ISO 8601 as rsyslog's high-precision template writes it,
//!   `2019-06-14T13:01:15.412+01:30`, sometimes without offset (`2019-06-14T10:40:20.912134`,
//!   then the configured zone applies).

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Utc};

use super::Zone;

/// A parsed syslog line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line<'a> {
    pub time: Stamp,
    pub host: &'a str,
    /// The program, without pid; old pam lines keep their suffix (`sshd(pam_unix)`).
    pub program: &'a str,
    pub pid: Option<u32>,
    pub message: &'a str,
}

/// A timestamp as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// No year: month (1-12), day, hour, minute, second.
    Classic {
        month: u32,
        day: u32,
        hms: (u32, u32, u32),
    },
    /// Has an offset: an instant.
    Instant(DateTime<Utc>),
    /// Has a year but no offset.
    Naive(NaiveDateTime),
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn hms(s: &str) -> Option<(u32, u32, u32)> {
    let b = s.as_bytes();
    if b.len() != 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let h = s[0..2].parse().ok()?;
    let m = s[3..5].parse().ok()?;
    let sec = s[6..8].parse().ok()?;
    (h < 24 && m < 60 && sec < 61).then_some((h, m, sec))
}

/// Parses a classic `Mmm dd HH:MM:SS` prefix; returns it and the rest after one space.
pub fn classic_stamp(line: &str) -> Option<(Stamp, &str)> {
    if line.len() < 16 {
        return None;
    }
    let month = MONTHS.iter().position(|m| line.starts_with(m))? as u32 + 1;
    let b = line.as_bytes();
    if b[3] != b' ' {
        return None;
    }
    let day: u32 = line.get(4..6)?.trim_start().parse().ok()?;
    if b[6] != b' ' || !(1..=31).contains(&day) {
        return None;
    }
    let t = hms(line.get(7..15)?)?;
    let rest = line.get(15..)?;
    let rest = rest.strip_prefix(' ')?;
    Some((Stamp::Classic { month, day, hms: t }, rest))
}

/// Parses an RFC 3339-ish stamp (`T` or space-free), with or without fraction and offset.
pub fn iso_stamp(token: &str) -> Option<Stamp> {
    if token.len() < 19 || token.as_bytes().get(10) != Some(&b'T') {
        return None;
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(token) {
        return Some(Stamp::Instant(t.with_timezone(&Utc)));
    }
    // Offsets written without a colon (`+0000`, as dnf does).
    if let Ok(t) = DateTime::parse_from_str(token, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(Stamp::Instant(t.with_timezone(&Utc)));
    }
    NaiveDateTime::parse_from_str(token, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(Stamp::Naive)
}

/// Splits a syslog file line into its parts; `None` if it is not one.
pub fn parse(line: &str) -> Option<Line<'_>> {
    let (time, rest) = match classic_stamp(line) {
        Some(x) => x,
        None => {
            let (tok, rest) = line.split_once(' ')?;
            (iso_stamp(tok)?, rest)
        }
    };
    let (host, rest) = rest.split_once(' ')?;
    if host.is_empty() {
        return None;
    }
    let (tag, message) = match rest.split_once(": ") {
        Some(x) => x,
        None => (rest.strip_suffix(':')?, ""),
    };
    if tag.is_empty() || tag.contains(' ') {
        return None;
    }
    let (program, pid) = match tag.strip_suffix(']').and_then(|t| t.rsplit_once('[')) {
        Some((p, pid)) => (p, Some(pid.parse().ok()?)),
        None => (tag, None),
    };
    Some(Line {
        time,
        host,
        program,
        pid,
        message,
    })
}

/// Gives classic timestamps a year. Starts from a reference instant (now, or the file's
/// modification time): the first line is in the reference's year unless that would put it
/// more than a day in the future (then it is the year before). After that, a jump back by
/// six months or more (Dec -> Jan) starts a new year; a jump forward by six months or more is
/// a late line from the previous year.
#[derive(Debug, Clone)]
pub struct YearTracker {
    reference: DateTime<Utc>,
    year: i32,
    last_month: u32,
}

impl YearTracker {
    pub fn new(reference: DateTime<Utc>) -> YearTracker {
        YearTracker {
            reference,
            year: reference.year(),
            last_month: 0,
        }
    }

    /// The UTC instant of a stamp in `zone`; `None` if it names no real time.
    pub fn resolve(&mut self, stamp: Stamp, zone: Zone) -> Option<DateTime<Utc>> {
        match stamp {
            Stamp::Instant(t) => Some(t),
            Stamp::Naive(n) => zone.to_utc(n),
            Stamp::Classic { month, day, hms } => {
                let mut year = self.year;
                if self.last_month == 0 {
                    let r = self.reference;
                    if (month, day) > (r.month(), r.day() + 1) {
                        year -= 1;
                    }
                    self.year = year;
                    self.last_month = month;
                } else if month + 6 <= self.last_month {
                    self.year += 1;
                    year = self.year;
                    self.last_month = month;
                } else if month >= self.last_month + 6 {
                    year -= 1;
                } else {
                    self.last_month = month;
                }
                let n =
                    NaiveDate::from_ymd_opt(year, month, day)?.and_hms_opt(hms.0, hms.1, hms.2)?;
                zone.to_utc(n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use groundtrail_common::time::json_time;

    fn utc() -> Zone {
        Zone::parse("UTC").unwrap()
    }

    #[test]
    fn envelopes() {
        let l =
            parse("Feb 21 21:54:44 localhost sshd[3402]: Accepted publickey for vagrant").unwrap();
        assert_eq!(
            (l.host, l.program, l.pid),
            ("localhost", "sshd", Some(3402))
        );
        assert_eq!(l.message, "Accepted publickey for vagrant");
        let l =
            parse("Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure;").unwrap();
        assert_eq!(l.program, "sshd(pam_unix)");
        let l = parse("Mar  6 08:14:21 ubuntu su: (to margo) root on pts/0").unwrap();
        assert_eq!((l.program, l.pid), ("su", None));
        let l =
            parse("2019-06-14T13:01:15.412+01:30 localhost pam: user nobody logged out.").unwrap();
        let mut y = YearTracker::new(Utc::now());
        assert_eq!(
            json_time(y.resolve(l.time, utc()).unwrap()),
            "2019-06-14T11:31:15Z"
        );
        for bad in [
            "",
            "Feb 21 21:54",
            "Foo 21 21:54:44 h p: m",
            "Feb 21 21:54:44 ",
            "garbage line",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn year_rolls_over_december_to_january() {
        let reference = Utc.with_ymd_and_hms(2021, 1, 2, 0, 0, 0).unwrap();
        let mut y = YearTracker::new(reference);
        let st = |s: &str| classic_stamp(s).unwrap().0;
        let a = y.resolve(st("Dec 31 23:59:59 h p: m"), utc()).unwrap();
        let b = y.resolve(st("Jan  1 00:00:01 h p: m"), utc()).unwrap();
        assert_eq!(json_time(a), "2020-12-31T23:59:59Z");
        assert_eq!(json_time(b), "2021-01-01T00:00:01Z");
        // A late December line after January stays in the old year.
        let c = y.resolve(st("Dec 31 23:59:58 h p: m"), utc()).unwrap();
        assert_eq!(json_time(c), "2020-12-31T23:59:58Z");
        let d = y.resolve(st("Jan  1 00:00:02 h p: m"), utc()).unwrap();
        assert_eq!(json_time(d), "2021-01-01T00:00:02Z");
    }

    #[test]
    fn zone_applies_to_classic_and_naive() {
        let reference = Utc.with_ymd_and_hms(2016, 3, 1, 0, 0, 0).unwrap();
        let mut y = YearTracker::new(reference);
        let z = Zone::parse("-05:00").unwrap();
        let t = y
            .resolve(classic_stamp("Feb 27 12:54:05 h p: m").unwrap().0, z)
            .unwrap();
        assert_eq!(json_time(t), "2016-02-27T17:54:05Z");
        let n = iso_stamp("2019-06-14T10:40:20.912134").unwrap();
        assert_eq!(
            json_time(y.resolve(n, utc()).unwrap()),
            "2019-06-14T10:40:20Z"
        );
    }
}
