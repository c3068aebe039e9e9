//! CloudTrail Lake's `PutAuditEvents` (spec §4.3): request checks, per-event checks and the
//! conversion of an `eventData` into a CloudTrail record. One implementation for the agent's
//! local endpoint and the collector's `cloudtrail-data` API, so both accept and refuse the
//! same events with the same codes and produce the same records (and `eventID`s).
//!
//! Request-level problems (not JSON, 0 or more than 100 events, over 1 MB, an `id` that is not
//! 1-128 of `[-_A-Za-z0-9]`, a repeated `id`) refuse the whole call ([`parse_request`]);
//! everything about one event's content fails only that event ([`convert`]).
//!
//! `eventID` is a name-based UUID (v5) of the account, channel, `id` and the SHA-256 of
//! `eventData`: a sender that re-sends a call after a lost answer produces the same
//! `eventID`s, which the collector de-duplicates, so the trail holds the event once.

use std::collections::HashSet;
use std::net::IpAddr;

use base64::Engine;
use chrono::NaiveDateTime;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::event::{EVENT_VERSION, Record, UserIdentity, is_account_id};
use crate::{time, wire};

/// Most events per call.
pub const MAX_EVENTS: usize = 100;
/// Largest request body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Namespace of the name-based event IDs.
const EVENT_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x7f1c_2a4e_9b3d_4c5f_8e6a_1d2b_3c4d_5e6f);

/// One entry of `auditEvents`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    pub id: String,
    pub event_data: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_data_checksum: Option<String>,
}

/// `{"successful":[...]}` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Success {
    pub id: String,
    #[serde(rename = "eventID")]
    pub event_id: String,
}

/// `{"failed":[...]}` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub id: String,
    pub error_code: String,
    pub error_message: String,
}

/// The whole answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutAuditEventsResponse {
    pub successful: Vec<Success>,
    pub failed: Vec<Failure>,
}

/// A request-level refusal: HTTP 400 with `{"__type", "message"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

pub fn validation(message: impl Into<String>) -> RequestError {
    RequestError {
        status: StatusCode::BAD_REQUEST,
        code: "ValidationException",
        message: message.into(),
    }
}

/// One event's refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventError {
    pub code: &'static str,
    pub message: String,
}

fn ev_err(code: &'static str, message: impl Into<String>) -> EventError {
    EventError {
        code,
        message: message.into(),
    }
}

/// Parses and checks the request body (everything that refuses the whole call).
pub fn parse_request(body: &[u8]) -> Result<Vec<AuditEvent>, RequestError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(validation(format!(
            "the request is {} bytes; at most {MAX_BODY_BYTES} are allowed",
            body.len()
        )));
    }
    // The common case, a well-formed call, straight into the events; anything it does not take
    // goes the general way below, which names the problem. (A JSON array would deserialize into
    // the struct too, but is no call: only an object takes this path.)
    #[derive(Deserialize)]
    struct Call {
        #[serde(rename = "auditEvents")]
        audit_events: Vec<AuditEvent>,
    }
    let is_object = body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{');
    if is_object && let Ok(call) = serde_json::from_slice::<Call>(body) {
        return check_events(call.audit_events);
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| RequestError {
        status: StatusCode::BAD_REQUEST,
        code: "SerializationException",
        message: format!("the body is not JSON: {e}"),
    })?;
    let list = v
        .get("auditEvents")
        .ok_or_else(|| validation("auditEvents is required"))?
        .as_array()
        .ok_or_else(|| validation("auditEvents must be a list"))?;
    if list.is_empty() || list.len() > MAX_EVENTS {
        return Err(validation(format!(
            "auditEvents has {} members; it must have 1 to {MAX_EVENTS}",
            list.len()
        )));
    }
    let mut events = Vec::with_capacity(list.len());
    let mut seen = HashSet::new();
    for (i, item) in list.iter().enumerate() {
        let ev: AuditEvent = serde_json::from_value(item.clone()).map_err(|e| {
            validation(format!(
                "auditEvents[{i}]: {e} (each event needs string members id and eventData)"
            ))
        })?;
        check_id(i, &ev.id)?;
        if !seen.insert(ev.id.clone()) {
            return Err(duplicated(&ev.id));
        }
        events.push(ev);
    }
    Ok(events)
}

/// The request-level checks of events that all deserialized (the fast path of
/// [`parse_request`]): the same checks in the same order as the general path.
fn check_events(events: Vec<AuditEvent>) -> Result<Vec<AuditEvent>, RequestError> {
    if events.is_empty() || events.len() > MAX_EVENTS {
        return Err(validation(format!(
            "auditEvents has {} members; it must have 1 to {MAX_EVENTS}",
            events.len()
        )));
    }
    let mut seen = HashSet::with_capacity(events.len());
    for (i, ev) in events.iter().enumerate() {
        check_id(i, &ev.id)?;
        if !seen.insert(ev.id.as_str()) {
            return Err(duplicated(&ev.id));
        }
    }
    Ok(events)
}

/// An event's `id`: 1-128 of `[-_A-Za-z0-9]`.
fn check_id(i: usize, id: &str) -> Result<(), RequestError> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    {
        return Err(validation(format!(
            "auditEvents[{i}].id {id:?} must be 1-128 characters of [-_A-Za-z0-9]"
        )));
    }
    Ok(())
}

fn duplicated(id: &str) -> RequestError {
    RequestError {
        status: StatusCode::BAD_REQUEST,
        code: "DuplicatedAuditEventId",
        message: format!("the id {id:?} appears more than once in the call"),
    }
}

/// Who the events are converted for.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The channel owner's account: `recipientAccountId` must equal it.
    pub account_id: &'a str,
    /// `awsRegion` of the records.
    pub region: &'a str,
    /// An `eventSource` senders may not use (besides `*.amazonaws.com`): the receiver's own.
    pub reserved_source: &'a str,
    /// Who receives, in messages ("this agent", "the collector").
    pub owner: &'a str,
    /// The sender's local uid, kept in `metadata.senderUid` when known.
    pub sender_uid: Option<u32>,
}

/// Field limits of `eventData` (spec §4.3).
const LIMIT_VERSION: usize = 256;
const LIMIT_IDENTITY_TYPE: usize = 128;
// The caps the record itself has are the record's constants (what the collector checks), so the
// two can never disagree.
const LIMIT_1K: usize = crate::event::MAX_SHORT_FIELD_BYTES;
const LIMIT_ERROR: usize = 256;
const LIMIT_PARAMETERS: usize = crate::event::MAX_PARAMETERS_BYTES;
const LIMIT_ADDITIONAL: usize = crate::event::MAX_ADDITIONAL_BYTES;

/// Members of `eventData` that map onto the record.
const KNOWN: &[&str] = &[
    "version",
    "userIdentity",
    "userAgent",
    "eventSource",
    "eventName",
    "eventTime",
    "UID",
    "requestParameters",
    "responseElements",
    "errorCode",
    "errorMessage",
    "sourceIPAddress",
    "recipientAccountId",
    "additionalEventData",
];

/// Reads a string member taken out of `eventData` (moved, not copied).
fn string_field(
    value: Option<Value>,
    name: &str,
    limit: usize,
    required: bool,
) -> Result<Option<String>, EventError> {
    match value {
        None | Some(Value::Null) if required => Err(ev_err(
            "FieldNotFound",
            format!("eventData.{name} is required"),
        )),
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() && required => Err(ev_err(
            "FieldNotFound",
            format!("eventData.{name} is required and must not be empty"),
        )),
        Some(Value::String(s)) if s.len() > limit && s.chars().count() > limit => Err(ev_err(
            "FieldTooLong",
            format!(
                "eventData.{name} is {} characters; at most {limit} are allowed",
                s.chars().count()
            ),
        )),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ev_err(
            "InvalidData",
            format!("eventData.{name} must be a string"),
        )),
    }
}

/// Checks the compact JSON size of a member taken out of `eventData` (counted, not built).
fn json_field(value: Option<Value>, name: &str, limit: usize) -> Result<Option<Value>, EventError> {
    match value {
        None => Ok(None),
        Some(v) => {
            let size = crate::event::json_len(&v);
            if size > limit {
                return Err(ev_err(
                    "FieldTooLong",
                    format!("eventData.{name} is {size} bytes; at most {limit} are allowed"),
                ));
            }
            Ok(Some(v))
        }
    }
}

/// `yyyy-MM-ddTHH:mm:ss`, optionally with fractional seconds and a trailing `Z`, read as UTC and
/// written the way CloudTrail writes times (whole seconds, `Z`).
fn parse_event_time(s: &str) -> Option<String> {
    let t = s.strip_suffix('Z').unwrap_or(s);
    let n = NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f").ok()?;
    Some(time::json_time(n.and_utc()))
}

/// Checks one event and turns it into a CloudTrail record for `ctx`.
pub fn convert(ev: &AuditEvent, channel: &str, ctx: &Context<'_>) -> Result<Record, EventError> {
    convert_to_json(ev, channel, ctx).map(|c| c.record)
}

/// A converted event: the record and its compact JSON (what [`Record::to_json`] gives), which
/// the conversion builds anyway to check the record's size.
#[derive(Debug, Clone)]
pub struct Converted {
    pub record: Record,
    pub json: Vec<u8>,
}

/// [`convert`], also returning the record's JSON, so that a caller storing it does not
/// serialize the record a second time.
pub fn convert_to_json(
    ev: &AuditEvent,
    channel: &str,
    ctx: &Context<'_>,
) -> Result<Converted, EventError> {
    // One SHA-256 of eventData serves the checksum and the eventID.
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, ev.event_data.as_bytes());
    if let Some(sum) = &ev.event_data_checksum {
        let want = base64::engine::general_purpose::STANDARD
            .decode(sum)
            .map_err(|_| ev_err("InvalidChecksum", "eventDataChecksum is not base64"))?;
        if want != digest.as_ref() {
            return Err(ev_err(
                "InvalidChecksum",
                "eventDataChecksum is not the base64 SHA-256 of eventData",
            ));
        }
    }
    let data: Value = serde_json::from_str(&ev.event_data)
        .map_err(|e| ev_err("InvalidData", format!("eventData is not JSON: {e}")))?;
    let Value::Object(obj) = data else {
        return Err(ev_err("InvalidData", "eventData must be a JSON object"));
    };
    // One pass over the members: the known ones are moved into their slots (in `KNOWN` order),
    // the others into `unmapped`, in their order. Nothing is copied.
    let mut known: [Option<Value>; KNOWN.len()] = Default::default();
    let mut unmapped = Map::new();
    for (k, v) in obj {
        match KNOWN.iter().position(|n| *n == k) {
            Some(i) => known[i] = Some(v),
            None => {
                unmapped.insert(k, v);
            }
        }
    }
    let mut take = |name: &str| {
        KNOWN
            .iter()
            .position(|n| *n == name)
            .and_then(|i| known[i].take())
    };

    let version =
        string_field(take("version"), "version", LIMIT_VERSION, true)?.unwrap_or_default();
    let mut ui = match take("userIdentity") {
        None | Some(Value::Null) => {
            return Err(ev_err(
                "FieldNotFound",
                "eventData.userIdentity is required",
            ));
        }
        Some(Value::Object(ui)) => ui,
        Some(_) => {
            return Err(ev_err(
                "InvalidData",
                "eventData.userIdentity must be an object",
            ));
        }
    };
    let prefixed = |e: EventError| EventError {
        code: e.code,
        message: e
            .message
            .replacen("eventData.", "eventData.userIdentity.", 1),
    };
    // `shift_remove` keeps the order of the members left (they stay in `userIdentity`).
    let identity_type = string_field(ui.shift_remove("type"), "type", LIMIT_IDENTITY_TYPE, true)
        .map_err(prefixed)?;
    let principal_id = string_field(
        ui.shift_remove("principalId"),
        "principalId",
        LIMIT_1K,
        true,
    )
    .map_err(prefixed)?;
    let identity_extra = ui;
    let user_agent = string_field(take("userAgent"), "userAgent", LIMIT_1K, false)?;
    let event_source =
        string_field(take("eventSource"), "eventSource", LIMIT_1K, true)?.unwrap_or_default();
    let event_name =
        string_field(take("eventName"), "eventName", LIMIT_1K, true)?.unwrap_or_default();
    let event_time_raw =
        string_field(take("eventTime"), "eventTime", 64, true)?.unwrap_or_default();
    let uid = string_field(take("UID"), "UID", LIMIT_1K, true)?;
    let request_parameters = json_field(
        take("requestParameters"),
        "requestParameters",
        LIMIT_PARAMETERS,
    )?;
    let response_elements = json_field(
        take("responseElements"),
        "responseElements",
        LIMIT_PARAMETERS,
    )?;
    let additional = json_field(
        take("additionalEventData"),
        "additionalEventData",
        LIMIT_ADDITIONAL,
    )?;
    let error_code = string_field(take("errorCode"), "errorCode", LIMIT_ERROR, false)?;
    let error_message = string_field(take("errorMessage"), "errorMessage", LIMIT_ERROR, false)?;
    let source_ip = string_field(take("sourceIPAddress"), "sourceIPAddress", 64, false)?;
    let recipient = string_field(take("recipientAccountId"), "recipientAccountId", 12, true)
        .map_err(|e| {
            if e.code == "FieldTooLong" {
                ev_err(
                    "InvalidData",
                    "eventData.recipientAccountId is not a 12-digit account id",
                )
            } else {
                e
            }
        })?
        .unwrap_or_default();

    let event_time = parse_event_time(&event_time_raw).ok_or_else(|| {
        ev_err(
            "InvalidData",
            format!(
                "eventData.eventTime {event_time_raw:?} is not a UTC time yyyy-MM-ddTHH:mm:ss[Z]"
            ),
        )
    })?;
    if let Some(ip) = &source_ip
        && ip.parse::<IpAddr>().is_err()
    {
        return Err(ev_err(
            "InvalidData",
            format!("eventData.sourceIPAddress {ip:?} is not an IPv4 or IPv6 address"),
        ));
    }
    if !is_account_id(&recipient) {
        return Err(ev_err(
            "InvalidData",
            format!("eventData.recipientAccountId {recipient:?} is not a 12-digit account id"),
        ));
    }
    if recipient != ctx.account_id {
        return Err(ev_err(
            "InvalidRecipient",
            format!(
                "eventData.recipientAccountId {recipient} is not {}'s account ({})",
                ctx.owner, ctx.account_id
            ),
        ));
    }
    let own = ctx.reserved_source.to_ascii_lowercase();
    let lower = event_source.to_ascii_lowercase();
    if lower == own || lower.ends_with(".amazonaws.com") {
        return Err(ev_err(
            "InvalidEventSource",
            format!(
                "eventData.eventSource {event_source:?} is reserved (AWS services and {}'s own {own})",
                ctx.owner
            ),
        ));
    }

    let mut name = Vec::new();
    for part in [
        recipient.as_bytes(),
        channel.as_bytes(),
        ev.id.as_bytes(),
        digest.as_ref(),
    ] {
        name.extend_from_slice(&(part.len() as u32).to_be_bytes());
        name.extend_from_slice(part);
    }
    let event_id = uuid::Uuid::new_v5(&EVENT_ID_NAMESPACE, &name).to_string();

    let mut metadata = json!({
        "ingestionTime": time::json_time(time::now_secs()),
        "channelARN": channel,
        "auditEventId": ev.id,
        "eventDataVersion": version,
    });
    if let Some(m) = metadata.as_object_mut() {
        if let Some(uid) = ctx.sender_uid {
            m.insert("senderUid".into(), json!(uid));
        }
        if !unmapped.is_empty() {
            m.insert("unmappedEventData".into(), Value::Object(unmapped));
        }
    }
    let mut extra = Map::new();
    extra.insert("metadata".into(), metadata);

    let record = Record {
        event_version: EVENT_VERSION.to_string(),
        user_identity: Some(UserIdentity {
            identity_type,
            principal_id,
            extra: identity_extra,
            ..UserIdentity::default()
        }),
        event_time,
        event_source,
        event_name,
        aws_region: ctx.region.to_string(),
        source_ip_address: source_ip,
        user_agent,
        error_code,
        error_message,
        request_parameters: Some(request_parameters.unwrap_or(Value::Null)),
        response_elements: Some(response_elements.unwrap_or(Value::Null)),
        additional_event_data: additional,
        request_id: uid,
        event_id,
        event_type: "ActivityLog".to_string(),
        recipient_account_id: Some(recipient),
        event_category: Some("ActivityAuditLog".to_string()),
        extra,
        ..Record::default()
    };
    record
        .validate()
        .map_err(|e| ev_err(e.code(), e.to_string()))?;
    let json = record.to_json();
    let size = json.len();
    if size > wire::limits::MAX_RECORD_BYTES {
        return Err(ev_err(
            "FieldTooLong",
            format!(
                "the event is {size} bytes as a CloudTrail record; at most {} are allowed",
                wire::limits::MAX_RECORD_BYTES
            ),
        ));
    }
    Ok(Converted { record, json })
}
