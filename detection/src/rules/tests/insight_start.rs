//! The host pack's `host-insight-start` on the records of a real [`Detector`] run: a synthetic week
//! of ssh logins, then two bursts of failed logins. The rule must fire once per Start, never
//! on an End nor on the logins themselves, and its summary must carry the Start's numbers.

use super::*;
use crate::insights::{Detector, InsightsConfig};
use serde_json::{Value, json};

/// `2026-11-DDTHH:MM:SSZ` of minute `m` after 2026-11-02T00:00Z (the runs stay in November).
fn time(m: i64, sec: i64) -> String {
    let (d, rem) = (2 + m / 1440, m % 1440);
    format!("2026-11-{d:02}T{:02}:{:02}:{sec:02}Z", rem / 60, rem % 60)
}

fn login(m: i64, sec: i64, i: usize, user: &str, ok: bool) -> Value {
    let mut r = json!({
        "eventVersion": "1.08",
        "userIdentity": {"type": "IAMUser", "userName": user},
        "eventTime": time(m, sec),
        "eventSource": "sshd.onprem.internal",
        "eventName": "ConsoleLogin",
        "awsRegion": "onprem-1",
        "eventID": format!("login-{i}"),
        "readOnly": false,
        "eventType": "AwsConsoleSignIn",
        "recipientAccountId": "123456789012",
        "responseElements": {"ConsoleLogin": if ok { "Success" } else { "Failure" }},
    });
    if !ok {
        r["errorCode"] = "AccessDenied".into();
    }
    r
}

/// Eight days and a half: three logins an hour and a failed one every other hour (so the
/// week before day 8 holds 504 + 84 logins, 84 failed), then on day 8 at 00:07 five minutes
/// of 20 failures, and at 03:10 three minutes of 10.
fn logins() -> Vec<Value> {
    let mut out = Vec::new();
    let burst = |m: i64| match m - 8 * 1440 {
        7..=11 => 20,
        190..=192 => 10,
        _ => 0,
    };
    for m in 0..8 * 1440 + 12 * 60 {
        let (h, min) = (m / 60, m % 60);
        for k in 0..3 {
            if (h * 7 + 20 * k) % 60 == min {
                let n = out.len();
                out.push(login(
                    m,
                    10 + k,
                    n,
                    ["alice", "bob", "carol"][k as usize],
                    true,
                ));
            }
        }
        if h % 2 == 0 && min == 30 {
            let n = out.len();
            out.push(login(m, 45, n, "bob", false));
        }
        for s in 0..burst(m) {
            let n = out.len();
            out.push(login(m, s, n, "admin", false));
        }
    }
    out
}

#[test]
fn insight_start_fires_once_per_start_with_its_numbers() {
    let mut det = Detector::new(InsightsConfig::default()).unwrap();
    let mut engine = Engine::new(packs(&["host"]));
    let (mut insights, mut fired) = (Vec::new(), Vec::new());
    let records = logins();
    // Each login, then the insights it closed, through the engine in that order (as the
    // collector would write them into the trail it evaluates).
    for r in &records {
        let found = det.observe(r);
        for x in std::iter::once(r).chain(&found) {
            fired.extend(engine.evaluate(x));
        }
        insights.extend(found);
    }
    let last = 8 * 1440 + 12 * 60;
    for x in det.flush_until(last * 60_000) {
        fired.extend(engine.evaluate(&x));
        insights.push(x);
    }
    let state = |r: &Value| r["insightDetails"]["state"].as_str().unwrap().to_string();
    let starts: Vec<&Value> = insights.iter().filter(|r| state(r) == "Start").collect();
    let ends: Vec<&Value> = insights.iter().filter(|r| state(r) == "End").collect();
    // Both bursts raise a call-rate and an error-rate insight, and all four end.
    assert_eq!((starts.len(), ends.len()), (4, 4), "{insights:#?}");

    let on_insights: Vec<&Firing> = fired
        .iter()
        .filter(|f| f.rule.id == "host-insight-start")
        .collect();
    let start_ids: Vec<String> = starts
        .iter()
        .map(|r| format!("host-insight-start/{}", r["eventID"].as_str().unwrap()))
        .collect();
    assert_eq!(
        on_insights.iter().map(|f| f.id.clone()).collect::<Vec<_>>(),
        start_ids,
        "once per Start, in order, never on an End or a login"
    );
    for e in &ends {
        let id = e["eventID"].as_str().unwrap();
        assert!(fired.iter().all(|f| !f.event_ids.iter().any(|x| x == id)));
    }
    let f = on_insights[0];
    assert_eq!(f.rule.severity, Severity::Medium);
    assert_eq!((f.count, f.event_ids.len()), (1, 1));
    assert_eq!(f.first_event_time, time(8 * 1440 + 7, 0));

    // The first burst's numbers, computed by hand: 20 failed logins in its first minute
    // against 588 logins (84 failed) in the week of whole hours before it.
    let summaries: Vec<&str> = on_insights.iter().map(|f| f.summary.as_str()).collect();
    assert_eq!(
        summaries[..2],
        [
            "ApiCallRateInsight on sshd.onprem.internal ConsoleLogin: 20/min against a baseline of 0.0583333333/min",
            "ApiErrorRateInsight on sshd.onprem.internal ConsoleLogin: 20/min against a baseline of 0.0083333333/min",
        ]
    );
    // The second burst's: its first minute's 10, against the Start's own baseline.
    for (f, s) in on_insights[2..].iter().zip(&starts[2..]) {
        let stats = &s["insightDetails"]["insightContext"]["statistics"];
        assert_eq!(stats["insight"]["average"], 10);
        assert_eq!(
            f.summary,
            format!(
                "{} on sshd.onprem.internal ConsoleLogin: 10/min against a baseline of {}/min",
                s["insightDetails"]["insightType"].as_str().unwrap(),
                stats["baseline"]["average"]
            )
        );
    }
}
