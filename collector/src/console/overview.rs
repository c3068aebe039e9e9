//! The overview of a range: events over time stacked by event source, the top users, source
//! IPs and error codes, failed logins and sudo failures.
//!
//! Guarantees (tested below):
//! - Counts are over the events matching the page's filters in the range, newest first, read
//!   through [`super::query`] (the same matching as the event list).
//! - At most [`MAX_SCANNED`] events are read, for about [`MAX_TIME`]: on a larger range the
//!   overview covers the newest part of it and says from when (`coveredFrom`, `complete: false`), rather than taking
//!   seconds. The chart's time axis is the whole range either way.
//! - Without a start the range is the last [`DEFAULT_RANGE`] (a day) up to its end.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::query::{self, Filters, QueryError};
use crate::history::History;

/// The range of an overview without a start, seconds before its end.
pub const DEFAULT_RANGE: u64 = 86_400;
/// Events read for one overview at most.
pub const MAX_SCANNED: usize = 100_000;
/// Time spent reading for one overview at most (checked between pages).
pub const MAX_TIME: std::time::Duration = std::time::Duration::from_secs(1);
/// Event sources drawn apart in the chart; the rest are "other".
const TOP_SOURCES: usize = 6;
/// Entries in each top list.
const TOP: usize = 10;
/// Bucket widths the chart may use, seconds; the first giving at most [`MAX_BUCKETS`].
const WIDTHS: [u64; 9] = [
    60,
    300,
    900,
    1800,
    3600,
    3 * 3600,
    6 * 3600,
    86_400,
    7 * 86_400,
];
const MAX_BUCKETS: u64 = 60;

/// Whether a record is a failed login: `ConsoleLogin` answered `Failure`, or with an error.
pub fn failed_login(event_name: Option<&str>, error_code: Option<&str>, json: &[u8]) -> bool {
    if event_name != Some("ConsoleLogin") {
        return false;
    }
    error_code.is_some()
        || serde_json::from_slice::<Value>(json).is_ok_and(|v| {
            v.pointer("/responseElements/ConsoleLogin")
                .and_then(Value::as_str)
                == Some("Failure")
        })
}

/// Whether a record is a failed sudo: from `sudo.<domain>`, with an error code.
pub fn sudo_failure(event_source: Option<&str>, error_code: Option<&str>) -> bool {
    error_code.is_some() && event_source.is_some_and(|s| s.starts_with("sudo."))
}

fn top(counts: HashMap<String, u64>, n: usize) -> Vec<Value> {
    let mut v: Vec<(String, u64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.into_iter()
        .take(n)
        .map(|(k, c)| json!({"value": k, "count": c}))
        .collect()
}

/// The overview of `filters`' range as JSON (see the module's guarantees).
pub fn overview(
    history: &History,
    filters: &Filters,
    now: u64,
    retention: u64,
    max_scanned: usize,
) -> Result<Value, QueryError> {
    let end = filters.end.unwrap_or(now);
    // Without a start: the last day (the whole retention would be one bar a week).
    let start = filters
        .start
        .unwrap_or(end.saturating_sub(retention.min(DEFAULT_RANGE)));
    let mut f = filters.clone();
    f.end = Some(end);
    f.start = Some(start);
    let span = end.saturating_sub(start) + 1;
    let width = WIDTHS
        .iter()
        .copied()
        .find(|w| span.div_ceil(*w) <= MAX_BUCKETS)
        .unwrap_or_else(|| span.div_ceil(MAX_BUCKETS));
    let first = start - start % width;
    let n_buckets = ((end - first) / width + 1) as usize;
    let mut by_source: HashMap<String, Vec<u64>> = HashMap::new();
    let (mut users, mut ips, mut errors, mut sources) = (
        HashMap::new(),
        HashMap::new(),
        HashMap::new(),
        HashMap::<String, u64>::new(),
    );
    let (mut failed_logins, mut sudo_failures, mut total) = (0u64, 0u64, 0u64);
    let mut failures = Vec::new();
    let mut scanned = 0;
    let mut oldest = end;
    let mut token: Option<String> = None;
    let began = std::time::Instant::now();
    let complete = loop {
        let p = query::page(
            history,
            &f,
            query::MAX_PAGE,
            token.as_deref(),
            query::Budget {
                events: query::DEFAULT_BUDGET
                    .events
                    .min(max_scanned - scanned)
                    .max(1),
                ..query::DEFAULT_BUDGET
            },
            now,
            retention,
        )?;
        scanned += p.scanned;
        for r in &p.rows {
            let s = &r.summary;
            total += 1;
            oldest = oldest.min(s.event_time);
            let source = s.event_source.clone().unwrap_or_default();
            let b = ((s.event_time.max(first) - first) / width) as usize;
            by_source
                .entry(source.clone())
                .or_insert_with(|| vec![0; n_buckets])[b.min(n_buckets - 1)] += 1;
            *sources.entry(source).or_default() += 1;
            if let Some(u) = &s.username {
                *users.entry(u.clone()).or_default() += 1;
            }
            if let Some(ip) = &r.extra.source_ip {
                *ips.entry(ip.clone()).or_default() += 1;
            }
            if let Some(e) = &r.extra.error_code {
                *errors.entry(e.clone()).or_default() += 1;
            }
            let login = failed_login(
                s.event_name.as_deref(),
                r.extra.error_code.as_deref(),
                &r.json,
            );
            let sudo = sudo_failure(s.event_source.as_deref(), r.extra.error_code.as_deref());
            failed_logins += u64::from(login);
            sudo_failures += u64::from(sudo);
            if (login || sudo) && failures.len() < TOP {
                failures.push(json!({
                    "eventId": s.event_id,
                    "eventTime": s.event_time,
                    "eventName": s.event_name,
                    "eventSource": s.event_source,
                    "username": s.username,
                    "sourceIp": r.extra.source_ip,
                    "errorCode": r.extra.error_code,
                    "kind": if login { "login" } else { "sudo" },
                }));
            }
        }
        match p.next {
            None => break true,
            Some(_) if scanned >= max_scanned || began.elapsed() >= MAX_TIME => break false,
            Some(t) => token = Some(t),
        }
    };
    // The busiest sources apart, the rest summed as "other".
    let mut ranked: Vec<(String, u64)> = sources.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut series = Vec::new();
    let mut other = vec![0u64; n_buckets];
    for (i, (src, _)) in ranked.iter().enumerate() {
        let counts = by_source.remove(src).unwrap_or_default();
        if i < TOP_SOURCES {
            series.push(json!({"source": src, "counts": counts}));
        } else {
            for (o, c) in other.iter_mut().zip(counts) {
                *o += c;
            }
        }
    }
    if ranked.len() > TOP_SOURCES {
        series.push(json!({"source": "other", "counts": other}));
    }
    Ok(json!({
        "start": start,
        "end": end,
        "bucketStart": first,
        "bucketWidth": width,
        "buckets": n_buckets,
        "series": series,
        "total": total,
        "topUsers": top(users, TOP),
        "topSourceIps": top(ips, TOP),
        "topErrorCodes": top(errors, TOP),
        "failedLogins": failed_logins,
        "sudoFailures": sudo_failures,
        "recentFailures": failures,
        "scanned": scanned,
        "complete": complete,
        "coveredFrom": if complete { start } else { oldest },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000;

    fn rec(i: u64, source: &str, name: &str, user: &str, error: Option<&str>) -> Vec<u8> {
        let mut r = json!({
            "eventID": format!("00000000-0000-4000-8000-{i:012}"),
            "eventTime": groundtrail_common::time::json_time(
                chrono::DateTime::from_timestamp((T0 + i * 60) as i64, 0).unwrap()),
            "eventName": name, "eventSource": source, "awsRegion": "us-east-1",
            "sourceIPAddress": format!("10.0.0.{}", i % 3),
            "userIdentity": {"type": "IAMUser", "userName": user},
            "eventCategory": "Management",
        });
        if let Some(e) = error {
            r["errorCode"] = json!(e);
        }
        if name == "ConsoleLogin" {
            r["responseElements"] =
                json!({"ConsoleLogin": if i.is_multiple_of(4) { "Failure" } else { "Success" }});
        }
        serde_json::to_vec(&r).unwrap()
    }

    #[test]
    fn counts_tops_and_failures() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(&dir.path().join("h")).unwrap();
        let mut recs = Vec::new();
        for i in 0..40u64 {
            recs.push(match i % 2 {
                0 => rec(i, "sshd.onprem.internal", "ConsoleLogin", "alice", None),
                _ => rec(
                    i,
                    "sudo.onprem.internal",
                    "RunCommand",
                    "bob",
                    (i.is_multiple_of(5)).then_some("AccessDenied"),
                ),
            });
        }
        h.insert(recs.iter().map(|r| r.as_slice()), 0).unwrap();
        let f = Filters {
            start: Some(T0),
            end: Some(T0 + 3599),
            ..Filters::default()
        };
        let o = overview(&h, &f, T0 + 4000, 1 << 40, MAX_SCANNED).unwrap();
        assert_eq!(o["total"], 40);
        assert_eq!(o["complete"], true);
        assert_eq!(o["bucketWidth"], 60);
        assert_eq!(o["failedLogins"], 10, "i in 0, 4, 8, ..., 36");
        assert_eq!(o["sudoFailures"], 4, "i in 5, 15, 25, 35");
        assert_eq!(o["topUsers"][0], json!({"value": "alice", "count": 20}));
        assert_eq!(
            o["topErrorCodes"][0],
            json!({"value": "AccessDenied", "count": 4})
        );
        let sum: u64 = o["series"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["counts"].as_array().unwrap().iter())
            .map(|c| c.as_u64().unwrap())
            .sum();
        assert_eq!(sum, 40);
        // A budget smaller than the range: the newest part, said so.
        let o = overview(&h, &f, T0 + 4000, 10, 10).unwrap();
        assert_eq!(o["complete"], false);
        assert_eq!(o["total"], 10);
        assert_eq!(o["coveredFrom"], T0 + 30 * 60);
    }
}
