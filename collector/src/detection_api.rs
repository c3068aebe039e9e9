//! Groundtrail's own API operations for detection, beside CloudTrail's on the same listener:
//! `POST /` with `X-Amz-Target: Groundtrail_20261207.<Operation>` and a JSON body, signed with
//! SigV4 (service `cloudtrail`, the same access keys), answered as JSON. CloudTrail has no
//! alerts, so these are not CloudTrail operations and the AWS CLI cannot call them;
//! `groundtrail-collector alerts` does ([`crate::alerts_cli`]).
//!
//! | operation | scope | input | output |
//! | --- | --- | --- | --- |
//! | `ListAlerts` | read | `RuleId`, `StartTime`, `EndTime` (of detection), `MaxResults` (1-1000, default 50), `NextToken` | `Alerts` (newest first), `NextToken` |
//! | `GetAlert` | read | `AlertId` | `Alert` |
//! | `ListRules` | read | | `Rules`, `LoadedAt`, `LastError` |
//! | `ListSilences` | read | | `Silences` |
//! | `CreateSilence` | admin | `RuleId`, `EndTime` or `DurationSeconds`, `StartTime` (default now), `Reason` | `Silence` |
//! | `DeleteSilence` | admin | `SilenceId` | `Silence` (ended now, kept with `ended_by`) |
//! | `GetDeliveryStatus` | read | | `Notifiers` (pending, delivered, last error, last success) |
//!
//! A silence is recorded with who made it (the access key id, or `loopback`) and why; it
//! keeps a rule's alerts out of the notifiers' queues for its window (they are still stored
//! and listed, marked `silenced_by`).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::alerts::Silence;
use crate::alerts::store::AlertQuery;
use crate::api::internal;
use crate::config::Scope;
use crate::detector::Detector;
use crate::sigv4::{ApiError, Caller};

/// `X-Amz-Target` prefix of Groundtrail's own operations.
pub const TARGET_PREFIX: &str = "Groundtrail_20261207.";
/// Longest silence: a forgotten silence must not hide a rule for ever.
const MAX_SILENCE_SECS: i64 = 90 * 24 * 3600;
/// Longest reason kept.
const MAX_REASON: usize = 1000;

/// Answers one detection operation for a verified `caller`.
pub async fn handle(
    detector: Option<&Arc<Detector>>,
    op: &str,
    input: &Map<String, Value>,
    caller: &Caller,
) -> Result<Value, ApiError> {
    let detector = detector.ok_or_else(|| {
        ApiError::bad(
            "DetectionNotEnabledException",
            "detection is off on this collector ([detection] enabled = false)",
        )
    })?;
    match op {
        "ListAlerts" => {
            caller.require(Scope::Read)?;
            list_alerts(detector, input)
        }
        "GetAlert" => {
            caller.require(Scope::Read)?;
            let id = string(input, "AlertId")?.ok_or_else(|| missing("AlertId"))?;
            match detector.store().get(&id).map_err(internal)? {
                Some(a) => Ok(json!({"Alert": a})),
                None => Err(ApiError::bad(
                    "AlertNotFoundException",
                    format!("no alert {id:?}"),
                )),
            }
        }
        "ListRules" => {
            caller.require(Scope::Read)?;
            let (rules, status) = detector.rules();
            let list: Vec<Value> = rules
                .rules()
                .map(|r| {
                    json!({
                        "Id": r.id, "Title": r.title, "Severity": r.severity.to_string(),
                        "Language": r.language.to_string(), "Origin": r.origin,
                        "Condition": r.condition, "Description": r.description,
                    })
                })
                .collect();
            Ok(json!({
                "Rules": list,
                "LoadedAt": status.loaded_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "LastError": status.last_error.map(|(at, e)| json!({
                    "At": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "Message": e
                })),
            }))
        }
        "ListSilences" => {
            caller.require(Scope::Read)?;
            Ok(json!({"Silences": detector.store().silences().map_err(internal)?}))
        }
        "CreateSilence" => {
            caller.require(Scope::Admin)?;
            create_silence(detector, input, caller).await
        }
        "DeleteSilence" => {
            caller.require(Scope::Admin)?;
            let id = string(input, "SilenceId")?.ok_or_else(|| missing("SilenceId"))?;
            let now = groundtrail_common::time::now_secs();
            let Some(ended) = detector
                .store()
                .end_silence(&id, &who(caller), now)
                .await
                .map_err(internal)?
            else {
                return Err(ApiError::bad(
                    "SilenceNotFoundException",
                    format!("no silence {id:?}"),
                ));
            };
            tracing::warn!(silence = %id, by = %who(caller), "alert silence ended");
            Ok(json!({"Silence": ended}))
        }
        "GetDeliveryStatus" => {
            caller.require(Scope::Read)?;
            Ok(json!({"Notifiers": detector.store().delivery_status().map_err(internal)?}))
        }
        other => Err(ApiError::bad(
            "UnknownOperationException",
            format!("{other} is not a Groundtrail operation"),
        )),
    }
}

fn list_alerts(detector: &Arc<Detector>, input: &Map<String, Value>) -> Result<Value, ApiError> {
    let limit = match input.get("MaxResults") {
        None | Some(Value::Null) => 50,
        Some(v) => match v.as_u64() {
            Some(n @ 1..=1000) => n as usize,
            _ => {
                return Err(ApiError::bad(
                    "InvalidMaxResultsException",
                    "MaxResults must be an integer from 1 to 1000",
                ));
            }
        },
    };
    let rfc3339 =
        |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let query = AlertQuery {
        rule_id: string(input, "RuleId")?,
        since: rfc3339(time(input, "StartTime")?),
        until: rfc3339(time(input, "EndTime")?),
        limit,
        next_token: string(input, "NextToken")?,
    };
    let (alerts, next) = detector.store().list(&query).map_err(|e| match e {
        crate::alerts::AlertError::InvalidQuery(why) => {
            ApiError::bad("InvalidNextTokenException", format!("ListAlerts: {why}"))
        }
        other => internal(other),
    })?;
    let mut out = json!({"Alerts": alerts});
    if let Some(t) = next {
        out["NextToken"] = json!(t);
    }
    Ok(out)
}

async fn create_silence(
    detector: &Arc<Detector>,
    input: &Map<String, Value>,
    caller: &Caller,
) -> Result<Value, ApiError> {
    let rule_id = string(input, "RuleId")?.ok_or_else(|| missing("RuleId"))?;
    let (rules, _) = detector.rules();
    if !rules.rules().any(|r| r.id == rule_id) {
        return Err(ApiError::bad(
            "RuleNotFoundException",
            format!("no loaded rule has the id {rule_id:?} (ListRules lists them)"),
        ));
    }
    let reason = string(input, "Reason")?.ok_or_else(|| missing("Reason"))?;
    if reason.trim().is_empty() || reason.len() > MAX_REASON {
        return Err(ApiError::bad(
            "InvalidParameterException",
            format!("Reason must say why, in 1 to {MAX_REASON} bytes"),
        ));
    }
    let now = groundtrail_common::time::now_secs();
    let starts = time(input, "StartTime")?.unwrap_or(now);
    let ends = match (time(input, "EndTime")?, input.get("DurationSeconds")) {
        (Some(t), None) => t,
        (None, Some(v)) => {
            let secs = v.as_i64().filter(|s| *s > 0).ok_or_else(|| {
                ApiError::bad(
                    "InvalidParameterException",
                    "DurationSeconds must be a positive integer",
                )
            })?;
            starts
                .checked_add_signed(chrono::Duration::seconds(secs.min(MAX_SILENCE_SECS + 1)))
                .ok_or_else(|| {
                    ApiError::bad("InvalidTimeRangeException", "StartTime is out of range")
                })?
        }
        _ => {
            return Err(ApiError::bad(
                "InvalidParameterException",
                "give exactly one of EndTime and DurationSeconds",
            ));
        }
    };
    if ends <= starts || ends <= now {
        return Err(ApiError::bad(
            "InvalidTimeRangeException",
            "the silence must end after it starts, and in the future",
        ));
    }
    if (ends - starts).num_seconds() > MAX_SILENCE_SECS {
        return Err(ApiError::bad(
            "InvalidTimeRangeException",
            "a silence lasts at most 90 days",
        ));
    }
    let fmt = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let silence = Silence {
        id: uuid::Uuid::new_v4().to_string(),
        rule_id,
        starts: fmt(starts),
        ends: fmt(ends),
        created_by: who(caller),
        reason,
        created_at: fmt(now),
        ended_by: None,
    };
    detector
        .store()
        .add_silence(silence.clone())
        .await
        .map_err(internal)?;
    tracing::warn!(
        silence = %silence.id, rule = %silence.rule_id, until = %silence.ends,
        by = %silence.created_by, "alert silence created: {}", silence.reason
    );
    Ok(json!({"Silence": silence}))
}

fn who(caller: &Caller) -> String {
    caller
        .access_key_id
        .clone()
        .unwrap_or_else(|| "loopback".into())
}

fn missing(name: &str) -> ApiError {
    ApiError::bad("InvalidParameterException", format!("{name} is required"))
}

fn string(input: &Map<String, Value>, name: &str) -> Result<Option<String>, ApiError> {
    match input.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad(
            "InvalidParameterException",
            format!("{name} must be a string"),
        )),
    }
}

/// A time as the rest of the API takes it ([`crate::api::time_param`]: epoch seconds, or
/// `YYYY-MM-DDTHH:MM:SSZ`).
fn time(input: &Map<String, Value>, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    crate::api::time_param(input, name)?
        .map(|secs| {
            DateTime::from_timestamp(secs as i64, 0).ok_or_else(|| {
                ApiError::bad("ValidationException", format!("{name} is not a time"))
            })
        })
        .transpose()
}
