//! Insights records in AWS's documented trail shape, and their deterministic ids.
//!
//! Why this shape: SIEM parsers read AWS's Insights files by these member names and this
//! order (AWS's `insightDetails` reference example): `eventVersion`, `eventTime`, `awsRegion`,
//! `eventID`, `eventType`, `recipientAccountId`, `sharedEventID`, `insightDetails`
//! (`state`, `eventSource`, `eventName`, `insightType`, `insightContext` with `statistics`
//! and `attributions`), `eventCategory`. Members AWS's trail records do not have (`eventName`
//! at the top level, `userIdentity`, ...) are not written. Ids are hashes of the insight's
//! key and first minute instead of random GUIDs, so a replay writes the same ids.

use serde_json::{Map, Value, json};

use super::series::Run;
use super::tally::{ATTRIBUTES, Tally};
use super::time::format_minute;

/// The record version of AWS's example whose members these records have (1.07 predates the
/// optional `errorCode`/`sourceEventCategory` members of later versions, which we omit).
pub const INSIGHT_EVENT_VERSION: &str = "1.07";

/// The insight types, as AWS names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsightType {
    /// Unusual number of calls a minute.
    ApiCallRate,
    /// Unusual number of failed calls (with an `errorCode`) a minute.
    ApiErrorRate,
}

impl InsightType {
    /// AWS's `insightType` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiCallRate => "ApiCallRateInsight",
            Self::ApiErrorRate => "ApiErrorRateInsight",
        }
    }
}

/// Who and what an insight is about.
pub(crate) struct Subject<'a> {
    pub account: &'a str,
    pub region: &'a str,
    pub source: &'a str,
    pub name: &'a str,
    pub kind: InsightType,
}

/// The Start (`end == false`) or End record of `run`.
pub(crate) fn build(s: &Subject<'_>, run: &Run, end: bool) -> Value {
    let shared = uuid_of(&format!(
        "{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}",
        s.account,
        s.region,
        s.source,
        s.name,
        s.kind.as_str(),
        run.start
    ));
    let state = if end { "End" } else { "Start" };
    let event_id = uuid_of(&format!("{shared}\u{1f}{state}"));
    let duration = run.last_unusual - run.start + 1;
    let (time, insight_avg, span_minutes, tally) = if end {
        (
            run.last_unusual + 1,
            run.total as f64 / duration as f64,
            duration,
            &run.tally,
        )
    } else {
        (run.start, run.first_count as f64, 1, &run.first_tally)
    };
    let baseline_avg = run.baseline_total as f64 / run.baseline_minutes.max(1) as f64;
    let attributions: Vec<Value> = (0..ATTRIBUTES.len())
        .map(|i| {
            json!({
                "attribute": ATTRIBUTES[i],
                "insight": averages(tally, i, span_minutes),
                "baseline": averages(&run.baseline_tally, i, run.baseline_minutes),
            })
        })
        .collect();
    let mut r = Map::new();
    r.insert("eventVersion".into(), INSIGHT_EVENT_VERSION.into());
    r.insert("eventTime".into(), format_minute(time).into());
    r.insert("awsRegion".into(), s.region.into());
    r.insert("eventID".into(), event_id.into());
    r.insert("eventType".into(), "AwsCloudTrailInsight".into());
    if !s.account.is_empty() {
        r.insert("recipientAccountId".into(), s.account.into());
    }
    r.insert("sharedEventID".into(), shared.into());
    r.insert(
        "insightDetails".into(),
        json!({
            "state": state,
            "eventSource": s.source,
            "eventName": s.name,
            "insightType": s.kind.as_str(),
            "insightContext": {
                "statistics": {
                    "baseline": {"average": number(baseline_avg)},
                    "insight": {"average": number(insight_avg)},
                    "insightDuration": if end { duration } else { run.streak.into() },
                    "baselineDuration": run.baseline_minutes,
                },
                "attributions": attributions,
            },
        }),
    );
    r.insert("eventCategory".into(), "Insight".into());
    Value::Object(r)
}

/// `[{value, average}]`, top five, highest first.
fn averages(t: &Tally, i: usize, minutes: i64) -> Value {
    t.top(i, minutes)
        .into_iter()
        .map(|(v, a)| json!({"value": v, "average": number(a)}))
        .collect()
}

/// AWS writes whole averages as integers (`664`) and others with at most 10 decimals
/// (`85.4202380952`).
fn number(x: f64) -> Value {
    let r = (x * 1e10).round() / 1e10;
    if r.fract() == 0.0 && r.abs() < 9e15 {
        Value::from(r as i64)
    } else {
        Value::from(r)
    }
}

/// A GUID-shaped (8-4-4-4-12 hex, version 8 "custom") FNV-1a 128-bit hash of `s`: stable
/// across builds and platforms, unlike std's hasher.
pub(crate) fn uuid_of(s: &str) -> String {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut h = OFFSET;
    for &b in s.as_bytes() {
        h ^= u128::from(b);
        h = h.wrapping_mul(PRIME);
    }
    h = (h & !(0xF << 76)) | (0x8 << 76);
    h = (h & !(0x3 << 62)) | (0x2 << 62);
    let x = format!("{h:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}
