//! The detector end to end on synthetic weeks, by `eventTime`.

use serde_json::{Value, json};

use super::time::format_minute;
use super::{Detector, InsightsConfig};

/// 2026-11-02T00:00:00Z in minutes.
const T0: i64 = 29_892_960;
const DAY: i64 = 1440;

/// A small deterministic generator (xorshift64*), so the noise is the same on every run.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A Poisson draw (Knuth), fine for the small means used here.
    fn poisson(&mut self, mean: f64) -> u32 {
        let (l, mut k, mut p) = ((-mean).exp(), 0, 1.0);
        loop {
            p *= self.unit();
            if p <= l {
                return k;
            }
            k += 1;
        }
    }
}

fn rec(minute: i64, i: u32, name: &str, arn: &str, error: Option<&str>, read: bool) -> Value {
    let mut r = json!({
        "eventVersion": "1.08",
        "userIdentity": {"type": "IAMUser", "arn": arn},
        "eventTime": format_minute(minute).replace(":00Z", &format!(":{:02}Z", i % 60)),
        "eventSource": "sshd.onprem.internal",
        "eventName": name,
        "awsRegion": "onprem-1",
        "userAgent": if arn.contains("attacker") { "hydra" } else { "OpenSSH_9.6" },
        "readOnly": read,
        "eventType": "AwsApiCall",
        "recipientAccountId": "123456789012",
    });
    if let Some(e) = error {
        r["errorCode"] = e.into();
    }
    r
}

fn run(det: &mut Detector, records: &[Value], end_minute: i64) -> Vec<Value> {
    let mut out: Vec<Value> = records.iter().flat_map(|r| det.observe(r)).collect();
    out.extend(det.flush_until(end_minute * 60_000));
    out
}

fn det() -> Detector {
    Detector::new(InsightsConfig::default()).expect("default config is valid")
}

fn stat(r: &Value, path: &str) -> f64 {
    r.pointer(&format!("/insightDetails/insightContext/statistics/{path}"))
        .and_then(Value::as_f64)
        .unwrap_or(f64::NAN)
}

fn attribution<'a>(r: &'a Value, attribute: &str, list: &str) -> Vec<(&'a str, f64)> {
    let all = r
        .pointer("/insightDetails/insightContext/attributions")
        .and_then(Value::as_array)
        .expect("attributions");
    let a = all
        .iter()
        .find(|a| a["attribute"] == attribute)
        .expect("attribute present");
    a[list]
        .as_array()
        .expect("list")
        .iter()
        .map(|v| {
            (
                v["value"].as_str().expect("value"),
                v["average"].as_f64().expect("average"),
            )
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// Eight days of write calls (Poisson, mean 2 a minute) by alice, then a 10-minute burst of
/// 60 a minute more by an attacker starting at 00:07 on day 9, then 30 quiet minutes.
struct Spike {
    records: Vec<Value>,
    counts: Vec<u32>,
    spike: i64,
    end: i64,
}

fn spike_scenario() -> Spike {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let spike = T0 + 8 * DAY + 7;
    let end = spike + 40;
    let (mut records, mut counts) = (Vec::new(), Vec::new());
    for m in T0..end {
        let background = rng.poisson(2.0);
        let burst = if (spike..spike + 10).contains(&m) {
            60
        } else {
            0
        };
        for i in 0..background {
            records.push(rec(
                m,
                i,
                "RunCommand",
                "arn:aws:iam::123456789012:user/alice",
                None,
                false,
            ));
        }
        for i in 0..burst {
            records.push(rec(
                m,
                i,
                "RunCommand",
                "arn:aws:iam::123456789012:user/attacker",
                None,
                false,
            ));
        }
        counts.push(background + burst);
    }
    Spike {
        records,
        counts,
        spike,
        end,
    }
}

#[test]
fn a_spike_after_a_week_gives_one_start_and_one_matching_end() {
    let s = spike_scenario();
    let out = run(&mut det(), &s.records, s.end);
    assert_eq!(out.len(), 2, "{out:#?}");
    let (start, end) = (&out[0], &out[1]);
    assert_eq!(start["insightDetails"]["state"], "Start");
    assert_eq!(end["insightDetails"]["state"], "End");
    assert_eq!(start["sharedEventID"], end["sharedEventID"]);
    assert_ne!(start["eventID"], end["eventID"]);
    assert_eq!(start["insightDetails"]["insightType"], "ApiCallRateInsight");
    assert_eq!(start["eventTime"], format_minute(s.spike));
    assert_eq!(end["eventTime"], format_minute(s.spike + 10));
    // The baseline: the 168 whole hours before the spike's hour.
    let idx = |m: i64| (m - T0) as usize;
    let hour_start = s.spike.div_euclid(60) * 60;
    let window = &s.counts[idx(hour_start - 10_080)..idx(hour_start)];
    let base = window.iter().map(|&c| f64::from(c)).sum::<f64>() / 10_080.0;
    let burst = &s.counts[idx(s.spike)..idx(s.spike + 10)];
    let burst_avg = burst.iter().map(|&c| f64::from(c)).sum::<f64>() / 10.0;
    for r in [start, end] {
        assert!(
            close(stat(r, "baseline/average"), (base * 1e10).round() / 1e10),
            "{r}"
        );
        assert_eq!(stat(r, "baselineDuration"), 10_080.0);
    }
    assert_eq!(stat(start, "insight/average"), f64::from(burst[0]));
    assert_eq!(stat(start, "insightDuration"), 2.0);
    assert!(close(stat(end, "insight/average"), burst_avg));
    assert_eq!(stat(end, "insightDuration"), 10.0);
    // Attributions: the attacker leads the insight at exactly 60 a minute; alice is the whole
    // baseline; no call failed, so errorCode is the string "null" at the overall averages.
    let users = attribution(end, "userIdentityArn", "insight");
    assert_eq!(users[0], ("arn:aws:iam::123456789012:user/attacker", 60.0));
    assert!(close(users[1].1, burst_avg - 60.0));
    let base_users = attribution(end, "userIdentityArn", "baseline");
    assert_eq!(base_users.len(), 1);
    assert!(close(base_users[0].1, base));
    assert_eq!(attribution(end, "userAgent", "insight")[0], ("hydra", 60.0));
    let codes = attribution(end, "errorCode", "insight");
    assert_eq!(codes.len(), 1);
    assert_eq!(codes[0].0, "null");
    assert!(close(codes[0].1, burst_avg));
    assert_eq!(
        attribution(start, "errorCode", "insight"),
        vec![("null", f64::from(burst[0]))]
    );
}

#[test]
fn a_steady_noisy_fortnight_gives_none() {
    let mut rng = Rng(42);
    let mut records = Vec::new();
    let end = T0 + 14 * DAY;
    for m in T0..end {
        let busy = rng.poisson(5.0);
        for i in 0..busy {
            records.push(rec(
                m,
                i,
                "Exec",
                "arn:aws:iam::123456789012:user/alice",
                None,
                false,
            ));
        }
        // A rare API, and a nightly job at 40 a minute for 30 minutes: both ordinary.
        let rare = if m.rem_euclid(DAY) < 30 {
            40
        } else {
            rng.poisson(0.05)
        };
        for i in 0..rare {
            records.push(rec(
                m,
                i,
                "Backup",
                "arn:aws:iam::123456789012:role/backup",
                None,
                false,
            ));
        }
        // Failed logins: a steady trickle of errors.
        let failed = rng.poisson(0.3);
        for i in 0..failed {
            records.push(rec(
                m,
                i,
                "ConsoleLogin",
                "arn:aws:iam::123456789012:user/bob",
                Some("Failed authentication"),
                false,
            ));
        }
    }
    let mut d = det();
    let out = run(&mut d, &records, end);
    assert!(out.is_empty(), "{out:#?}");
    assert_eq!(d.stats().counted, records.len() as u64);
    assert_eq!(d.key_count(), 3);
    // The same data under a naive threshold (mean + 1 spread, no quantile) does fire: the
    // silence above is the model's doing, not a detector that never judges.
    let naive = InsightsConfig {
        spread_factor: 1.0,
        mean_factor: 1.0,
        baseline_quantile: 0.0,
        ..InsightsConfig::default()
    };
    let out = run(&mut Detector::new(naive).expect("valid"), &records, end);
    assert!(out.len() > 10, "{}", out.len());
}

#[test]
fn an_error_burst_gives_an_error_rate_insight_with_error_codes() {
    let mut rng = Rng(7);
    let spike = T0 + 8 * DAY + 30;
    let end = spike + 20;
    let mut records = Vec::new();
    for m in T0..end {
        // Reads (not in the call rate), one AccessDenied an hour.
        for i in 0..rng.poisson(3.0) {
            records.push(rec(
                m,
                i,
                "GetSession",
                "arn:aws:iam::123456789012:user/alice",
                None,
                true,
            ));
        }
        if m.rem_euclid(60) == 17 {
            records.push(rec(
                m,
                59,
                "GetSession",
                "arn:aws:iam::123456789012:user/alice",
                Some("AccessDenied"),
                true,
            ));
        }
        if (spike..spike + 5).contains(&m) {
            for i in 0..20 {
                let code = if i < 15 {
                    "AuthenticationFailure"
                } else {
                    "AccessDenied"
                };
                records.push(rec(
                    m,
                    i,
                    "GetSession",
                    "arn:aws:iam::123456789012:user/attacker",
                    Some(code),
                    true,
                ));
            }
        }
    }
    let out = run(&mut det(), &records, end);
    assert_eq!(out.len(), 2, "{out:#?}");
    for r in &out {
        assert_eq!(r["insightDetails"]["insightType"], "ApiErrorRateInsight");
    }
    let end_rec = &out[1];
    assert_eq!(out[0]["eventTime"], format_minute(spike));
    assert_eq!(end_rec["eventTime"], format_minute(spike + 5));
    assert_eq!(stat(end_rec, "insight/average"), 20.0);
    assert_eq!(stat(end_rec, "insightDuration"), 5.0);
    // 168 AccessDenied in the 10080-minute window.
    assert!(close(stat(end_rec, "baseline/average"), 168.0 / 10_080.0));
    assert_eq!(
        attribution(end_rec, "errorCode", "insight"),
        vec![("AuthenticationFailure", 15.0), ("AccessDenied", 5.0)]
    );
    let base_codes = attribution(end_rec, "errorCode", "baseline");
    assert_eq!(base_codes.len(), 1);
    assert_eq!(base_codes[0].0, "AccessDenied");
    assert!(close(base_codes[0].1, 168.0 / 10_080.0));
    assert_eq!(
        attribution(end_rec, "userIdentityArn", "insight")[0],
        ("arn:aws:iam::123456789012:user/attacker", 20.0)
    );
}

/// The structure of AWS's documented Insights record (the `insightDetails` reference example
/// for trails, values as published), member names, order and JSON types.
fn aws_example() -> Value {
    json!({
        "eventVersion": "1.07",
        "eventTime": "2023-01-02T02:51:00Z",
        "awsRegion": "us-east-1",
        "eventID": "654ccbc0-ba0d-486a-9076-dbf7274677a7",
        "eventType": "AwsCloudTrailInsight",
        "recipientAccountId": "123456789012",
        "sharedEventID": "bcbfc828-7fe7-4c35-b8ab-d5a5dbc1d4f2",
        "insightDetails": {
            "state": "Start",
            "eventSource": "autoscaling.amazonaws.com",
            "eventName": "CompleteLifecycleAction",
            "insightType": "ApiCallRateInsight",
            "insightContext": {
                "statistics": {
                    "baseline": {"average": 0.0000882145},
                    "insight": {"average": 0.6},
                    "insightDuration": 5,
                    "baselineDuration": 11336
                },
                "attributions": [
                    {"attribute": "userIdentityArn",
                     "insight": [{"value": "arn:aws:sts::123456789012:assumed-role/CodeDeployRole1", "average": 0.2}],
                     "baseline": [{"value": "arn:aws:sts::123456789012:assumed-role/CodeDeployRole1", "average": 0.0000882145}]},
                    {"attribute": "userAgent",
                     "insight": [{"value": "codedeploy.amazonaws.com", "average": 0.6}],
                     "baseline": [{"value": "codedeploy.amazonaws.com", "average": 0.0000882145}]},
                    {"attribute": "errorCode",
                     "insight": [{"value": "null", "average": 0.6}],
                     "baseline": [{"value": "null", "average": 0.0000882145}]}
                ]
            }
        },
        "eventCategory": "Insight"
    })
}

/// Member names in order and JSON types, recursively (arrays by their first element).
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Array(m.iter().map(|(k, v)| json!([k, shape(v)])).collect()),
        Value::Array(a) => json!(["array", a.first().map(shape)]),
        Value::String(_) => "string".into(),
        Value::Number(_) => "number".into(),
        Value::Bool(_) => "bool".into(),
        Value::Null => "null".into(),
    }
}

#[test]
fn records_have_aws_documented_shape() {
    let s = spike_scenario();
    let out = run(&mut det(), &s.records, s.end);
    let example = shape(&aws_example());
    for r in &out {
        assert_eq!(shape(r), example, "{r:#}");
        for id in ["eventID", "sharedEventID"] {
            let v = r[id].as_str().expect("id");
            let groups: Vec<usize> = v.split('-').map(str::len).collect();
            assert_eq!(groups, [8, 4, 4, 4, 12], "{v}");
            assert!(v.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        }
        assert!(r["eventTime"].as_str().expect("time").ends_with(":00Z"));
    }
}

#[test]
fn replays_and_restores_give_the_same_records() {
    let s = spike_scenario();
    let first = run(&mut det(), &s.records, s.end);
    assert_eq!(first, run(&mut det(), &s.records, s.end), "replay");
    // Persist and restore at every day boundary, and inside the burst (open run).
    let mut d = det();
    let mut out = Vec::new();
    let mut saves = 0;
    for (n, r) in s.records.iter().enumerate() {
        out.extend(d.observe(r));
        let in_burst = s
            .records
            .get(n + 1)
            .is_some_and(|next| next["eventTime"] == format_minute(s.spike + 4));
        if n % 9_000 == 0 || in_burst {
            let state = serde_json::to_string(&d).expect("serialize");
            d = serde_json::from_str(&state).expect("deserialize");
            assert_eq!(serde_json::to_string(&d).expect("serialize"), state);
            saves += 1;
        }
    }
    out.extend(d.flush_until(s.end * 60_000));
    assert!(saves > 3);
    // One key, a week of minutes with calls: the state stays a few hundred kB.
    let size = serde_json::to_string(&d).expect("serialize").len();
    eprintln!("state after {} records: {size} bytes", s.records.len());
    assert!(size < 1_000_000, "{size}");
    assert_eq!(out, first, "restored");
}

#[test]
fn state_stays_bounded_and_late_records_are_counted() {
    let cfg = InsightsConfig {
        max_keys: 5,
        min_history_minutes: 60,
        ..InsightsConfig::default()
    };
    let mut d = Detector::new(cfg).expect("valid");
    for m in 0..600 {
        let name = format!("Api{}", m % 10);
        d.observe(&rec(
            T0 + m,
            0,
            &name,
            "arn:aws:iam::123456789012:user/alice",
            None,
            false,
        ));
        assert!(d.key_count() <= 5);
    }
    assert!(d.stats().evicted > 0);
    assert_eq!(d.stats().dropped, 0);
    d.observe(&rec(
        T0 + 10,
        0,
        "Api0",
        "arn:aws:iam::123456789012:user/alice",
        None,
        false,
    ));
    assert_eq!(d.stats().late, 1);
    // Silence longer than the window forgets every key.
    d.flush_until((T0 + 600 + 10_080 + 200) * 60_000);
    assert_eq!(d.key_count(), 0);
}

#[test]
fn bad_configs_are_rejected_by_name() {
    let bad = InsightsConfig {
        baseline_minutes: 100,
        ..InsightsConfig::default()
    };
    let e = Detector::new(bad).expect_err("not whole hours");
    assert!(e.to_string().contains("baseline_minutes"), "{e}");
    let e = serde_json::from_str::<InsightsConfig>(r#"{"spread":1}"#).expect_err("unknown field");
    assert!(e.to_string().contains("unknown field"), "{e}");
    let cfg: InsightsConfig =
        serde_json::from_str(r#"{"start_after": 3}"#).expect("partial config");
    assert_eq!(cfg.start_after, 3);
    assert_eq!(cfg.baseline_minutes, 10_080);
}

/// Issue 18's real sample: the loghub OpenSSH log (brute force against one host, 10 Dec,
/// about four hours) after a quiet synthetic week of ssh logins on the same host. Each
/// `Failed password` line is one failed `ConsoleLogin` (errorCode `AccessDenied`, as the
/// agent writes it), each `Accepted` line a successful one. Read from `../shared/host-logs`
/// when present (its licence does not allow copying it here).
#[test]
fn loghub_openssh_brute_force_after_a_quiet_week_gives_error_rate_insights() {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/host-logs/auth/loghub_OpenSSH_2k.log");
    let Ok(text) = std::fs::read_to_string(&p) else {
        eprintln!(
            "SKIPPED: {} not present (shared samples are optional)",
            p.display()
        );
        return;
    };
    let login = |minute: i64, sec: u32, user: &str, failed: bool| {
        let mut r = rec(
            minute,
            sec,
            "ConsoleLogin",
            &format!("arn:aws:iam::123456789012:user/{user}"),
            failed.then_some("AccessDenied"),
            false,
        );
        r["eventType"] = "AwsConsoleSignIn".into();
        r
    };
    // 2026-12-10T00:00:00Z; the quiet week starts seven days and a bit earlier.
    let log_day = T0 + 38 * DAY;
    let mut records = Vec::new();
    for m in (log_day - 7 * DAY - 120)..(log_day + 6 * 60) {
        if m.rem_euclid(20) == 0 {
            records.push(login(m, 5, "alice", false));
        }
        if m.rem_euclid(360) == 7 {
            records.push(login(m, 9, "alice", true));
        }
    }
    let mut failures = 0;
    for line in text.lines() {
        let (Some(time), Some(rest)) = (line.get(7..15), line.split_once("]: ").map(|x| x.1))
        else {
            continue;
        };
        let (Ok(h), Ok(mi), Ok(s)) = (
            time[0..2].parse::<i64>(),
            time[3..5].parse::<i64>(),
            time[6..8].parse::<u32>(),
        ) else {
            continue;
        };
        let user = |after: &str| {
            rest.split_once(after)
                .and_then(|x| x.1.split(' ').next())
                .unwrap_or("unknown")
                .to_string()
        };
        if rest.starts_with("Failed password for ") {
            let u = if rest.contains("invalid user ") {
                user("invalid user ")
            } else {
                user("for ")
            };
            records.push(login(log_day + h * 60 + mi, s, &u, true));
            failures += 1;
        } else if rest.starts_with("Accepted ") {
            records.push(login(log_day + h * 60 + mi, s, &user("for "), false));
        }
    }
    records.sort_by(|a, b| a["eventTime"].as_str().cmp(&b["eventTime"].as_str()));
    let out = run(&mut det(), &records, log_day + 6 * 60);
    let errors: Vec<&Value> = out
        .iter()
        .filter(|r| r["insightDetails"]["insightType"] == "ApiErrorRateInsight")
        .collect();
    let starts: Vec<&&Value> = errors
        .iter()
        .filter(|r| r["insightDetails"]["state"] == "Start")
        .collect();
    eprintln!(
        "loghub: {failures} failed logins, {} insight records, {} error-rate starts",
        out.len(),
        starts.len()
    );
    assert!(failures > 300, "{failures}");
    assert!(!starts.is_empty(), "{out:#?}");
    let times: Vec<&str> = starts
        .iter()
        .map(|s| s["eventTime"].as_str().expect("time"))
        .collect();
    eprintln!("loghub error-rate starts: {times:?}");
    // Failures a minute in the log: 07:27 3, 07:28 23 (the first two unusual minutes in a
    // row); 09:10 3, 09:11 18, ... 09:19 11 (the long burst).
    assert_eq!(times[0], "2026-12-10T07:27:00Z");
    assert!(times.contains(&"2026-12-10T09:10:00Z"), "{times:?}");
    for r in &errors {
        assert_eq!(attribution(r, "errorCode", "insight")[0].0, "AccessDenied");
        if r["insightDetails"]["state"] == "End" {
            assert!(
                starts
                    .iter()
                    .any(|s| s["sharedEventID"] == r["sharedEventID"]),
                "End without Start"
            );
        }
    }
}

/// Reading only the counted members from the JSON gives exactly what parsing the whole
/// record gives: on a week with a burst, and on records with odd or missing members.
#[test]
fn observe_json_gives_what_observe_gives() {
    let s = spike_scenario();
    let mut odd: Vec<Value> = vec![
        json!({"eventTime": format_minute(s.spike + 1), "eventSource": "sshd.onprem.internal",
            "eventName": "ConsoleLogin", "readOnly": "true", "errorCode": "",
            "userIdentity": {"arn": 5}, "requestParameters": {"big": "x".repeat(10_000)}}),
        json!({"eventTime": format_minute(s.spike + 1), "eventSource": "sshd.onprem.internal",
            "eventName": "ConsoleLogin", "userIdentity": "nobody", "userAgent": null}),
        json!({"eventTime": format_minute(s.spike + 2), "eventType": "AwsCloudTrailInsight",
            "eventSource": "sshd.onprem.internal", "eventName": "ConsoleLogin"}),
        json!({"eventTime": 17, "eventSource": "sshd.onprem.internal", "eventName": "X"}),
        json!({"eventSource": "sshd.onprem.internal"}),
        json!([1, 2]),
    ];
    let mut records = s.records.clone();
    let at = records.len() / 2;
    records.splice(at..at, odd.drain(..));
    let (mut whole, mut slim) = (det(), det());
    let mut a = Vec::new();
    let mut b = Vec::new();
    for r in &records {
        a.extend(whole.observe(r));
        b.extend(slim.observe_json(&serde_json::to_vec(r).expect("JSON")));
    }
    a.extend(whole.flush_until(s.end * 60_000));
    b.extend(slim.flush_until(s.end * 60_000));
    assert!(!a.is_empty());
    assert_eq!(a, b);
    assert_eq!(whole.stats(), slim.stats());
    assert_eq!(
        serde_json::to_string(&whole).unwrap(),
        serde_json::to_string(&slim).unwrap()
    );
}

/// The detector's own records read back (as from the trail) are ignored, not counted late,
/// though their minutes are judged.
#[test]
fn insights_records_read_back_are_not_late() {
    let s = spike_scenario();
    let mut d = det();
    let mut found = run(&mut d, &s.records, s.end);
    assert!(!found.is_empty());
    let before = d.stats();
    for r in found.drain(..) {
        assert!(d.observe(&r).is_empty());
    }
    let after = d.stats();
    assert_eq!(after.late, before.late);
    assert_eq!(after.ignored, before.ignored + 2);
}
