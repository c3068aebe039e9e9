//! The CloudTrail Insights detector (`groundtrail_detection::insights`) on real ssh records
//! (issue 18's acceptance): a quiet synthetic week of logins on the host, then the loghub
//! OpenSSH log (a real server under password guessing), every line through the agent's own
//! auth-log handler, every record shipped as JSON and fed to the detector in `eventTime` order.
//!
//! What is checked is what the data implies, computed here from the records themselves and not
//! from the detector's internals: the guessing raises an `ApiErrorRateInsight` on the ssh login
//! event; every Start has its End; each insight's duration and averages are the per-minute
//! counts of its minutes; its baseline is the week's mean. The week alone, and the same
//! pattern one day longer (so the detector judges a day with a full baseline), raise nothing.
//!
//! The loghub log may not be copied into the repository (its terms); it is read from
//! `../shared/host-logs` and the test is skipped, saying so, when that folder is absent.

mod host_common;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, TimeZone, Timelike, Utc};
use groundtrail_common::Record;
use groundtrail_detection::insights::{Detector, InsightsConfig};
use groundtrail_detection::rules::{Engine, Firing, RuleSet};
use host_common::{auth_handler, run, shared};
use serde_json::Value;

/// The year the loghub sample's year-less times are placed in (as in `host_pack.rs`).
const YEAR: i32 = 2017;
/// The detector's baseline window (the default), in minutes.
const WEEK: i64 = 10_080;

/// The records as the agent ships them (`Record::to_json`, parsed back), stably sorted by
/// `eventTime` (the attempt merge may emit a held line after a later one).
fn shipped(records: &[Record]) -> Vec<Value> {
    let mut out: Vec<Value> = records
        .iter()
        .map(|r| {
            r.validate().unwrap();
            serde_json::from_slice(&r.to_json()).unwrap()
        })
        .collect();
    out.sort_by(|a, b| a["eventTime"].as_str().cmp(&b["eventTime"].as_str()));
    out
}

/// Minutes since the epoch of an `eventTime`.
fn minute(v: &Value) -> i64 {
    let t = v["eventTime"].as_str().expect("eventTime");
    DateTime::parse_from_rfc3339(t)
        .expect("RFC 3339 eventTime")
        .timestamp()
        .div_euclid(60)
}

/// A quiet auth.log for `hours` hours from `from` (a whole hour) on the loghub host `LabSZ`:
/// alice, bob and carol log in once an hour each; every third hour bob mistypes his password
/// once; once a day alice mistypes twice and then gets in, all within one minute (three logins
/// in a minute, an unusual minute on its own, never two in a row). Lines in time order.
fn quiet_auth_log(from: DateTime<Utc>, hours: i64) -> String {
    let mut lines: Vec<(DateTime<Utc>, String)> = Vec::new();
    let mut pid = 30_000;
    let mut line = |at: DateTime<Utc>, pid: u32, msg: String| {
        let stamp = at.format("%b %e %H:%M:%S");
        lines.push((at, format!("{stamp} LabSZ sshd[{pid}]: {msg}")));
    };
    for h in 0..hours {
        let hour = from + Duration::hours(h);
        for (k, (user, ip)) in [("alice", 5), ("bob", 6), ("carol", 7)]
            .into_iter()
            .enumerate()
        {
            let k = k as i64;
            let at = hour
                + Duration::minutes((h * 7 + 20 * k) % 60)
                + Duration::seconds((h * 13 + 17 * k) % 60);
            pid += 1;
            line(
                at,
                pid,
                format!(
                    "Accepted password for {user} from 10.0.0.{ip} port {} ssh2",
                    40_000 + (h * 3 + k) % 20_000
                ),
            );
        }
        if h % 3 == 1 {
            let at = hour + Duration::minutes((h * 11 + 5) % 60) + Duration::seconds(31);
            pid += 1;
            line(
                at,
                pid,
                format!(
                    "Failed password for bob from 10.0.0.6 port {} ssh2",
                    50_000 + h
                ),
            );
        }
        if h % 24 == 3 {
            let at = hour + Duration::minutes(30);
            pid += 1;
            let port = 60_000 + h;
            for (s, msg) in [(5, "Failed"), (20, "Failed"), (40, "Accepted")] {
                line(
                    at + Duration::seconds(s),
                    pid,
                    format!("{msg} password for alice from 10.0.0.5 port {port} ssh2"),
                );
            }
        }
    }
    lines.sort_by_key(|(at, _)| *at);
    lines.into_iter().map(|(_, l)| l + "\n").collect()
}

/// Feeds `records` in order, then judges every minute up to ten minutes after the last one
/// (enough for any open insight to end: `end_after` is 3).
fn detect(records: &[Value]) -> (Vec<Value>, Detector) {
    let mut det = Detector::new(InsightsConfig::default()).unwrap();
    let mut out: Vec<Value> = records.iter().flat_map(|r| det.observe(r)).collect();
    let last = records.last().map(minute).expect("records");
    out.extend(det.flush_until((last + 10) * 60_000));
    (out, det)
}

/// Per-minute counts of the records of (`source`, `name`): calls the call rate counts (not
/// `readOnly`) and calls with an `errorCode`, as `docs/insights.md` defines the two series.
struct Series {
    calls: BTreeMap<i64, u64>,
    errors: BTreeMap<i64, u64>,
}

impl Series {
    fn of(records: &[Value], source: &str, name: &str) -> Series {
        let mut s = Series {
            calls: BTreeMap::new(),
            errors: BTreeMap::new(),
        };
        for r in records
            .iter()
            .filter(|r| r["eventSource"] == source && r["eventName"] == name)
        {
            let m = minute(r);
            if r["readOnly"] != true {
                *s.calls.entry(m).or_default() += 1;
            }
            if r["errorCode"].as_str().is_some_and(|e| !e.is_empty()) {
                *s.errors.entry(m).or_default() += 1;
            }
        }
        s
    }

    fn of_type(&self, insight_type: &str) -> &BTreeMap<i64, u64> {
        match insight_type {
            "ApiCallRateInsight" => &self.calls,
            "ApiErrorRateInsight" => &self.errors,
            other => panic!("unknown insightType {other}"),
        }
    }
}

fn sum(counts: &BTreeMap<i64, u64>, from: i64, until: i64) -> u64 {
    counts.range(from..until).map(|(_, n)| n).sum()
}

fn stat(r: &Value, path: &str) -> f64 {
    r.pointer(&format!("/insightDetails/insightContext/statistics/{path}"))
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{path} in {r}"))
}

/// The record's averages are written with at most 10 decimals.
fn same_average(written: f64, computed: f64) -> bool {
    (written - (computed * 1e10).round() / 1e10).abs() < 1e-9
}

fn detail<'a>(r: &'a Value, member: &str) -> &'a str {
    r["insightDetails"][member].as_str().expect(member)
}

#[test]
fn quiet_week_alone_and_a_day_more_give_no_insight() {
    // Any whole hour will do; this one's year is the sample's.
    let from = Utc.with_ymd_and_hms(YEAR, 11, 5, 6, 0, 0).unwrap();
    for (what, hours) in [("the week", 168), ("the week and a day more", 192)] {
        let records = shipped(&run(auth_handler(YEAR), &quiet_auth_log(from, hours)));
        let (out, det) = detect(&records);
        // Every record is a login the detector counted: the silence is the model's verdict.
        assert_eq!(det.stats().counted, records.len() as u64, "{what}");
        let failures = records
            .iter()
            .filter(|r| r["errorCode"].is_string())
            .count();
        eprintln!(
            "{what}: {} logins, {failures} failed, {} insights",
            records.len(),
            out.len()
        );
        assert!(out.is_empty(), "{what}: {out:#?}");
    }
}

#[test]
fn loghub_openssh_after_a_quiet_week_raises_error_rate_insights() {
    let Some(loghub) = shared("auth/loghub_OpenSSH_2k.log") else {
        return;
    };
    // The sample's first line dates it: the quiet week is the 168 whole hours before its hour.
    let replayed = shipped(&run(auth_handler(YEAR), &loghub));
    let first = DateTime::from_timestamp(minute(&replayed[0]) * 60, 0).unwrap();
    let from = first.with_minute(0).unwrap() - Duration::days(7);
    // One auth.log: the week, then the sample, through one handler (as the agent would read it).
    let text = quiet_auth_log(from, 168) + &loghub;
    let records = shipped(&run(auth_handler(YEAR), &text));
    let split = records.partition_point(|r| minute(r) < minute(&replayed[0]));
    let (week, sample) = records.split_at(split);
    assert_eq!(
        sample.len(),
        replayed.len(),
        "the sample's records, unchanged"
    );
    assert_eq!(
        minute(&week[0]),
        from.timestamp() / 60,
        "the week starts on the hour"
    );

    // The ssh login event, as the parser writes failed logins (read, not assumed).
    let failed_keys: BTreeSet<(&str, &str)> = records
        .iter()
        .filter(|r| r["errorCode"].is_string())
        .map(|r| {
            (
                r["eventSource"].as_str().unwrap(),
                r["eventName"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(failed_keys.len(), 1, "{failed_keys:?}");
    let (source, name) = *failed_keys.first().unwrap();
    eprintln!("failed ssh logins are {source} {name}");
    let series = Series::of(&records, source, name);
    let week_failures = sum(&series.errors, i64::MIN, i64::MAX)
        - sum(&Series::of(sample, source, name).errors, i64::MIN, i64::MAX);
    eprintln!(
        "quiet week: {} records, {week_failures} failed logins ({:.6}/min); sample: {} records from {}",
        week.len(),
        week_failures as f64 / WEEK as f64,
        sample.len(),
        sample[0]["eventTime"]
    );

    let (out, _) = detect(&records);
    for r in &out {
        let d = &r["insightDetails"];
        eprintln!(
            "{} {:5} {} {} {}: insight {}/min over {} min, baseline {}/min over {} min",
            r["eventTime"].as_str().unwrap(),
            detail(r, "state"),
            detail(r, "insightType"),
            d["eventSource"].as_str().unwrap(),
            d["eventName"].as_str().unwrap(),
            stat(r, "insight/average"),
            stat(r, "insightDuration"),
            stat(r, "baseline/average"),
            stat(r, "baselineDuration"),
        );
    }

    let starts: Vec<&Value> = out
        .iter()
        .filter(|r| detail(r, "state") == "Start")
        .collect();
    let ends: Vec<&Value> = out.iter().filter(|r| detail(r, "state") == "End").collect();
    assert_eq!(starts.len() + ends.len(), out.len());
    assert_eq!(starts.len(), ends.len(), "every insight has ended");
    let error_starts = starts
        .iter()
        .filter(|r| {
            detail(r, "insightType") == "ApiErrorRateInsight"
                && detail(r, "eventSource") == source
                && detail(r, "eventName") == name
        })
        .count();
    assert!(
        error_starts >= 1,
        "no error-rate insight on {source} {name}"
    );

    for start in &starts {
        let shared_id = &start["sharedEventID"];
        let matching: Vec<&&Value> = ends
            .iter()
            .filter(|e| e["sharedEventID"] == *shared_id)
            .collect();
        assert_eq!(matching.len(), 1, "one End for {start}");
        let end = matching[0];
        for m in ["eventSource", "eventName", "insightType"] {
            assert_eq!(detail(start, m), detail(end, m));
        }
        assert_eq!(
            detail(start, "eventSource"),
            source,
            "only ssh logins stand out"
        );
        let counts = series.of_type(detail(start, "insightType"));
        let n = |m: i64| counts.get(&m).copied().unwrap_or(0);
        // The insight's minutes: from the Start's minute to the one before the End's.
        let (first, last) = (minute(start), minute(end) - 1);
        assert!(first < last, "at least start_after (2) unusual minutes");
        assert!(
            n(first) >= 3 && n(first + 1) >= 3 && n(last) >= 3,
            "unusual minutes have at least min_count (3): {} {} {}",
            n(first),
            n(first + 1),
            n(last)
        );
        let duration = last - first + 1;
        assert_eq!(stat(end, "insightDuration"), duration as f64);
        assert_eq!(stat(start, "insightDuration"), 2.0, "known at the Start");
        assert_eq!(stat(start, "insight/average"), n(first) as f64);
        let total = sum(counts, first, last + 1);
        assert!(
            same_average(stat(end, "insight/average"), total as f64 / duration as f64),
            "{total} in {duration} min: {end}"
        );
        // The baseline: the week of whole hours before the first minute's hour.
        let hour = first.div_euclid(60) * 60;
        let base = sum(counts, hour - WEEK, hour);
        for r in [*start, end] {
            assert_eq!(stat(r, "baselineDuration"), WEEK as f64);
            assert!(
                same_average(stat(r, "baseline/average"), base as f64 / WEEK as f64),
                "{base} in the week before {}: {r}",
                start["eventTime"]
            );
        }
    }

    // The host pack's `host-insight-start` alerts once per Start, with the Start's numbers, and on
    // nothing else of the replay (the logins fire the pack's ssh rules, not this one).
    let mut engine = Engine::new(RuleSet::load(&["host".into()], None).unwrap());
    let alerts: Vec<Firing> = records
        .iter()
        .chain(&out)
        .flat_map(|r| engine.evaluate(r))
        .filter(|f| f.rule.id == "host-insight-start")
        .collect();
    let ids = |v: Vec<&str>| v.into_iter().map(String::from).collect::<Vec<_>>();
    assert_eq!(
        ids(alerts.iter().map(|f| f.event_ids[0].as_str()).collect()),
        ids(starts
            .iter()
            .map(|r| r["eventID"].as_str().unwrap())
            .collect())
    );
    for (f, s) in alerts.iter().zip(&starts) {
        eprintln!("alert {}: {}", f.first_event_time, f.summary);
        assert_eq!(
            f.summary,
            format!(
                "{} on {source} {name}: {}/min against a baseline of {}/min",
                detail(s, "insightType"),
                stat(s, "insight/average"),
                stat(s, "baseline/average")
            )
        );
    }

    // The first error-rate insight's baseline holds the quiet week's failures and only those
    // the sample made before the insight's hour began.
    let first_error = starts
        .iter()
        .find(|r| detail(r, "insightType") == "ApiErrorRateInsight")
        .unwrap();
    let hour = minute(first_error).div_euclid(60) * 60;
    let sample_before = sum(&series.errors, minute(&sample[0]), hour);
    assert!(
        same_average(
            stat(first_error, "baseline/average"),
            (week_failures + sample_before) as f64 / WEEK as f64
        ),
        "{first_error}"
    );
    eprintln!(
        "first error-rate insight at {}: baseline = {week_failures} quiet-week + {sample_before} sample failures over {WEEK} min",
        first_error["eventTime"]
    );
}
