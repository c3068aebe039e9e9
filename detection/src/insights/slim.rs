//! Reading only what the detector counts from a record's JSON.
//!
//! Why: a CloudTrail record is mostly `requestParameters`, `responseElements`, resources and
//! TLS details, none of which the detector reads. Parsing the whole record into a
//! `serde_json::Value` allocates every one of those strings and maps; here the members the
//! detector needs are borrowed as raw JSON and only they are parsed, the rest is skipped
//! without allocating. The result is the same `Value` the detector would have read them from,
//! so [`super::Detector::observe_json`] and [`super::Detector::observe`] agree by
//! construction (tested).

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The members [`super::Detector::observe`] reads.
#[derive(Deserialize)]
struct Slim<'a> {
    #[serde(borrow, rename = "eventTime")]
    event_time: Option<&'a RawValue>,
    #[serde(borrow, rename = "eventType")]
    event_type: Option<&'a RawValue>,
    #[serde(borrow, rename = "eventCategory")]
    event_category: Option<&'a RawValue>,
    #[serde(borrow, rename = "eventSource")]
    event_source: Option<&'a RawValue>,
    #[serde(borrow, rename = "eventName")]
    event_name: Option<&'a RawValue>,
    #[serde(borrow, rename = "errorCode")]
    error_code: Option<&'a RawValue>,
    #[serde(borrow, rename = "readOnly")]
    read_only: Option<&'a RawValue>,
    #[serde(borrow, rename = "recipientAccountId")]
    account: Option<&'a RawValue>,
    #[serde(borrow, rename = "awsRegion")]
    region: Option<&'a RawValue>,
    #[serde(borrow, rename = "userAgent")]
    user_agent: Option<&'a RawValue>,
    #[serde(borrow, rename = "userIdentity")]
    user_identity: Option<&'a RawValue>,
}

/// The record's members the detector reads, as a `Value` object; `None` when `json` is not a
/// JSON object.
pub(crate) fn slim(json: &[u8]) -> Option<Value> {
    let s: Slim<'_> = serde_json::from_slice(json).ok()?;
    let mut m = Map::new();
    let mut put = |k: &str, raw: Option<&RawValue>| {
        if let Some(v) = raw.and_then(|r| serde_json::from_str::<Value>(r.get()).ok()) {
            m.insert(k.to_string(), v);
        }
    };
    put("eventTime", s.event_time);
    put("eventType", s.event_type);
    put("eventCategory", s.event_category);
    put("eventSource", s.event_source);
    put("eventName", s.event_name);
    put("errorCode", s.error_code);
    put("readOnly", s.read_only);
    put("recipientAccountId", s.account);
    put("awsRegion", s.region);
    put("userAgent", s.user_agent);
    if let Some(arn) = s
        .user_identity
        .and_then(|r| serde_json::from_str::<IdentityArn>(r.get()).ok())
        .and_then(|i| i.arn)
    {
        m.insert("userIdentity".into(), serde_json::json!({"arn": arn}));
    }
    Some(Value::Object(m))
}

/// `userIdentity.arn` (a string), nothing else of the identity.
#[derive(Deserialize)]
struct IdentityArn {
    #[serde(default, deserialize_with = "string_or_none")]
    arn: Option<String>,
}

fn string_or_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        _ => None,
    })
}
