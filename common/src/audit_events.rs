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

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use base64::Engine;
use chrono::NaiveDateTime;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::event::{EVENT_VERSION, Record, UserIdentity, is_account_id};
use crate::{compact_json, time, wire};

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

/// A member of `eventData` the record keeps as JSON (`requestParameters` and the like): its
/// compact text, copied rather than parsed into a tree (see [`crate::compact_json`]), and
/// checked against its size cap.
fn json_field<'a>(
    raw: Option<Text<'a>>,
    name: &str,
    limit: usize,
) -> Result<Option<Cow<'a, str>>, EventError> {
    let Some(raw) = raw else { return Ok(None) };
    let text = member_text(raw, name, DEPTH_MEMBER)?;
    // `null` counts as absent for the caps, as `Record::validate` counts it.
    if text.len() > limit && text != "null" {
        return Err(ev_err(
            "FieldTooLong",
            format!(
                "eventData.{name} is {} bytes; at most {limit} are allowed",
                text.len()
            ),
        ));
    }
    Ok(Some(text))
}

/// How deep a member may nest, so that the record holding it stays within the 127 levels
/// `serde_json` reads (the collector reads every record): `eventData` itself is one level; a
/// `userIdentity` member sits one deeper, an unmapped one two deeper (`metadata.unmappedEventData`).
const DEPTH_MEMBER: usize = 126;
const DEPTH_IDENTITY_MEMBER: usize = 125;
const DEPTH_UNMAPPED: usize = 124;

/// A member's compact text (see [`crate::compact_json`]), its errors named after it.
fn member_text<'a>(
    raw: Text<'a>,
    name: impl std::fmt::Display,
    max_depth: usize,
) -> Result<Cow<'a, str>, EventError> {
    let shape = raw.shape.unwrap_or_else(|| compact_json::shape(raw.text));
    compact_json::compact_text(raw.text, shape, max_depth).map_err(|e| match e {
        compact_json::CompactError::TooDeep(n) => ev_err(
            "InvalidData",
            format!("eventData.{name} is nested more than {n} levels deep"),
        ),
        compact_json::CompactError::Json(e) => ev_err(
            "InvalidData",
            format!("eventData.{name} is not valid JSON: {e}"),
        ),
    })
}

/// `userIdentity.<name>`, written out only when an error message names it (this is on every
/// identity member's way, and naming it up front was an allocation each).
struct IdentityMember<'a>(&'a str);

impl std::fmt::Display for IdentityMember<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "userIdentity.{}", self.0)
    }
}

/// Whether `text` ends with `suffix`, ASCII letters compared without case.
fn ends_with_ignoring_ascii_case(text: &str, suffix: &str) -> bool {
    text.len() >= suffix.len()
        && text.as_bytes()[text.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// A string member of `eventData`, read from its text and checked by [`string_field`].
fn string_member(
    raw: Option<Text<'_>>,
    name: &str,
    limit: usize,
    required: bool,
) -> Result<Option<String>, EventError> {
    // A string without escapes is its text between the quotes (the reader of the object around it has checked it).
    if let Some(text) = raw.map(|r| r.text)
        && let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"'))
        && !inner.contains('\\')
    {
        return string_field(
            Some(Value::String(inner.to_string())),
            name,
            limit,
            required,
        );
    }
    let value = raw
        .map(|r| serde_json::from_str(r.text))
        .transpose()
        .map_err(|e| ev_err("InvalidData", format!("eventData.{name}: {e}")))?;
    string_field(value, name, limit, required)
}

/// A member's value: its JSON text (valid JSON), and its shape when the read that found it
/// has it already ([`crate::json_split`]).
#[derive(Debug, Clone, Copy)]
struct Text<'a> {
    text: &'a str,
    shape: Option<compact_json::Shape>,
}

/// An object's members in their order, each as its JSON text; a repeated member counts once,
/// with its last value, as a parsed object would have it.
///
/// Read in one pass by [`crate::json_split`] where it can; `serde_json` reads the rest (an
/// escaped name, nesting the split leaves alone, an error, which it names), with the same
/// result.
fn read_members<'a>(text: &'a str) -> Result<Vec<(Key<'a>, Text<'a>)>, serde_json::Error> {
    Ok(
        match crate::json_split::split_object(text, DEPTH_UNMAPPED) {
            Some(split) => last_value_wins(split.into_iter().map(|m| {
                let text = Text {
                    text: m.text,
                    shape: Some(m.shape),
                };
                (Key(Cow::Borrowed(m.name)), text)
            })),
            None => last_value_wins(serde_json::from_str::<Entries>(text)?.0.into_iter()),
        },
    )
}

/// An object's entries with each repeated name once, at its first position, with its last
/// value (as a parsed object has it). Taken as they are read, so that the split's members are
/// collected once (this runs twice for every application event; serde_json's fallback reads
/// them into a list first).
fn last_value_wins<'a>(
    entries: impl ExactSizeIterator<Item = (Key<'a>, Text<'a>)>,
) -> Vec<(Key<'a>, Text<'a>)> {
    let mut members: Vec<(Key<'a>, Text<'a>)> = Vec::with_capacity(entries.len());
    // Positions by name, only for objects large enough for a scan to cost.
    let mut index: HashMap<Key<'a>, usize> = HashMap::new();
    for (k, v) in entries {
        let at = if members.len() < 32 {
            members.iter().position(|(n, _)| *n == k)
        } else {
            if index.is_empty() {
                index = members
                    .iter()
                    .enumerate()
                    .map(|(i, (n, _))| (n.clone(), i))
                    .collect();
            }
            index.get(&k).copied()
        };
        match at {
            Some(i) => members[i].1 = v,
            None => {
                if !index.is_empty() {
                    index.insert(k.clone(), members.len());
                }
                members.push((k, v));
            }
        }
    }
    members
}

/// An object's entries as `serde_json` reads them, repeats included.
struct Entries<'a>(Vec<(Key<'a>, Text<'a>)>);

/// A member's name: borrowed from the text unless it holds an escape (serde's own `Cow` always
/// copies, and a record's twenty-odd names were as many allocations).
#[derive(Debug, PartialEq, Eq, Hash, Clone)]
struct Key<'a>(Cow<'a, str>);

impl std::ops::Deref for Key<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Key<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visit)
    }
}

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Entries<'de>, A::Error> {
                let mut entries = Vec::with_capacity(16);
                while let Some((k, v)) = m.next_entry::<Key<'de>, &'de RawValue>()? {
                    let text = Text {
                        text: v.get(),
                        shape: None,
                    };
                    entries.push((k, text));
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// `yyyy-MM-ddTHH:mm:ss`, optionally with fractional seconds and a trailing `Z`, read as UTC and
/// written the way CloudTrail writes times (whole seconds, `Z`).
fn parse_event_time(s: &str) -> Option<String> {
    let t = s.strip_suffix('Z').unwrap_or(s);
    // Whole seconds, the usual shape, without chrono's format parser (see `time::parse_seconds`).
    if let Some(n) = time::parse_seconds(t) {
        return Some(time::json_time(n.and_utc()));
    }
    let n = NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f").ok()?;
    Some(time::json_time(n.and_utc()))
}

/// `Uuid::new_v5(&EVENT_ID_NAMESPACE, name)`, with aws-lc's SHA-1 (hardware-accelerated where the
/// CPU has it) in place of the `uuid` crate's portable one, which was 3% of the agent's CPU per
/// application event. RFC 9562 §5.5: the first 16 bytes of SHA-1(namespace ‖ name), with the
/// version and variant bits set (`Builder::from_sha1_bytes`).
fn name_based_id(name: &[u8]) -> uuid::Uuid {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(EVENT_ID_NAMESPACE.as_bytes());
    ctx.update(name);
    let digest = ctx.finish();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_ref()[..16]);
    uuid::Builder::from_sha1_bytes(bytes).into_uuid()
}

/// Checks one event and turns it into a CloudTrail record for `ctx`.
pub fn convert(ev: &AuditEvent, channel: &str, ctx: &Context<'_>) -> Result<Record, EventError> {
    convert_to_json(ev, channel, ctx)?.record()
}

impl Converted {
    /// The record this JSON is, as the conversion built it.
    pub fn record(&self) -> Result<Record, EventError> {
        let read_back = |e: serde_json::Error| {
            ev_err(
                "InvalidData",
                format!("the converted record does not read back: {e}"),
            )
        };
        let mut members: serde_json::Map<String, Value> =
            serde_json::from_slice(&self.json).map_err(read_back)?;
        // userIdentity's members other than `type` and `principalId` stay in `extra`, as the sender
        // wrote them: read into `UserIdentity`'s typed fields they would be written in another order,
        // and one of an unexpected type (`"arn": 5`) would be refused here but not by the agent.
        let mut ui = match members.shift_remove("userIdentity") {
            Some(Value::Object(ui)) => ui,
            _ => {
                return Err(ev_err(
                    "InvalidData",
                    "the converted record has no userIdentity",
                ));
            }
        };
        let mut record: Record =
            serde_json::from_value(Value::Object(members)).map_err(read_back)?;
        let text = |v: Option<Value>| v.and_then(|v| v.as_str().map(str::to_string));
        record.user_identity = Some(UserIdentity {
            identity_type: text(ui.shift_remove("type")),
            principal_id: text(ui.shift_remove("principalId")),
            extra: ui,
            ..UserIdentity::default()
        });
        Ok(record)
    }
}

/// A converted event: the record's compact JSON (what [`Record::to_json`] gives for it) and the
/// two members its callers look at.
#[derive(Debug, Clone)]
pub struct Converted {
    pub event_id: String,
    pub event_source: String,
    pub json: Vec<u8>,
}

/// [`convert`] as the record's JSON, written once and without parsing the event's JSON members
/// into trees (they are copied, see [`crate::compact_json`]): this is the agent's hot path for
/// application events.
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
    let members = read_members(&ev.event_data).map_err(|e| {
        if e.classify() == serde_json::error::Category::Data {
            ev_err("InvalidData", "eventData must be a JSON object")
        } else {
            ev_err("InvalidData", format!("eventData is not JSON: {e}"))
        }
    })?;
    // One pass over the members: the known ones into their slots (in `KNOWN` order), the others
    // into `unmapped`, in their order.
    let mut known: [Option<Text<'_>>; KNOWN.len()] = Default::default();
    let mut unmapped = Vec::new();
    for (k, v) in members {
        match KNOWN.iter().position(|n| *n == &*k) {
            Some(i) => known[i] = Some(v),
            None => unmapped.push((k, v)),
        }
    }
    let mut raw = |name: &str| {
        KNOWN
            .iter()
            .position(|n| *n == name)
            .and_then(|i| known[i].take())
    };

    let version =
        string_member(raw("version"), "version", LIMIT_VERSION, true)?.unwrap_or_default();
    // userIdentity: `type` and `principalId` are read, the other members copied as they are
    // (real identities carry a sessionContext and more, which the record keeps in order).
    let ui_raw = raw("userIdentity")
        .filter(|r| r.text != "null")
        .ok_or_else(|| ev_err("FieldNotFound", "eventData.userIdentity is required"))?;
    let ui = read_members(ui_raw.text).map_err(|e| {
        if e.classify() == serde_json::error::Category::Data {
            ev_err("InvalidData", "eventData.userIdentity must be an object")
        } else {
            ev_err(
                "InvalidData",
                format!("eventData.userIdentity is not valid JSON: {e}"),
            )
        }
    })?;
    let prefixed = |e: EventError| EventError {
        code: e.code,
        message: e
            .message
            .replacen("eventData.", "eventData.userIdentity.", 1),
    };
    let (mut identity_type, mut principal_id) = (None, None);
    let mut identity_extra = Vec::with_capacity(ui.len());
    for (k, v) in ui {
        match &*k {
            "type" => identity_type = Some(v),
            "principalId" => principal_id = Some(v),
            _ => {
                let text = member_text(v, IdentityMember(&k), DEPTH_IDENTITY_MEMBER)?;
                identity_extra.push((k, text));
            }
        }
    }
    let identity_type =
        string_member(identity_type, "type", LIMIT_IDENTITY_TYPE, true).map_err(prefixed)?;
    let principal_id =
        string_member(principal_id, "principalId", LIMIT_1K, true).map_err(prefixed)?;
    let user_agent = string_member(raw("userAgent"), "userAgent", LIMIT_1K, false)?;
    let event_source =
        string_member(raw("eventSource"), "eventSource", LIMIT_1K, true)?.unwrap_or_default();
    let event_name =
        string_member(raw("eventName"), "eventName", LIMIT_1K, true)?.unwrap_or_default();
    let event_time_raw =
        string_member(raw("eventTime"), "eventTime", 64, true)?.unwrap_or_default();
    let uid = string_member(raw("UID"), "UID", LIMIT_1K, true)?;
    let request_parameters = json_field(
        raw("requestParameters"),
        "requestParameters",
        LIMIT_PARAMETERS,
    )?;
    let response_elements = json_field(
        raw("responseElements"),
        "responseElements",
        LIMIT_PARAMETERS,
    )?;
    let additional = json_field(
        raw("additionalEventData"),
        "additionalEventData",
        LIMIT_ADDITIONAL,
    )?;
    let error_code = string_member(raw("errorCode"), "errorCode", LIMIT_ERROR, false)?;
    let error_message = string_member(raw("errorMessage"), "errorMessage", LIMIT_ERROR, false)?;
    let source_ip = string_member(raw("sourceIPAddress"), "sourceIPAddress", 64, false)?;
    let recipient = string_member(raw("recipientAccountId"), "recipientAccountId", 12, true)
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
    if event_source.eq_ignore_ascii_case(ctx.reserved_source)
        || ends_with_ignoring_ascii_case(&event_source, ".amazonaws.com")
    {
        return Err(ev_err(
            "InvalidEventSource",
            format!(
                "eventData.eventSource {event_source:?} is reserved (AWS services and {}'s own {})",
                ctx.owner,
                ctx.reserved_source.to_ascii_lowercase()
            ),
        ));
    }

    let mut name = Vec::with_capacity(
        4 * 4 + recipient.len() + channel.len() + ev.id.len() + digest.as_ref().len(),
    );
    for part in [
        recipient.as_bytes(),
        channel.as_bytes(),
        ev.id.as_bytes(),
        digest.as_ref(),
    ] {
        name.extend_from_slice(&(part.len() as u32).to_be_bytes());
        name.extend_from_slice(part);
    }
    let event_id = name_based_id(&name).to_string();

    // The record without its JSON members, for the checks every record passes.
    let record = Record {
        event_version: EVENT_VERSION.to_string(),
        user_identity: Some(UserIdentity {
            identity_type,
            principal_id,
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
        request_id: uid,
        event_id,
        event_type: "ActivityLog".to_string(),
        recipient_account_id: Some(recipient),
        event_category: Some("ActivityAuditLog".to_string()),
        ..Record::default()
    };
    record
        .validate()
        .map_err(|e| ev_err(e.code(), e.to_string()))?;
    let mut unmapped_json = Vec::with_capacity(unmapped.len());
    for (k, v) in &unmapped {
        let text = member_text(*v, &**k, DEPTH_UNMAPPED)?;
        unmapped_json.push((&**k, text));
    }
    let json = RecordJson {
        record: &record,
        identity_extra: &identity_extra,
        request_parameters: request_parameters.as_deref(),
        response_elements: response_elements.as_deref(),
        additional_event_data: additional.as_deref(),
        ingestion_time: &time::json_time(time::now_secs()),
        channel,
        audit_event_id: &ev.id,
        version: &version,
        sender_uid: ctx.sender_uid,
        unmapped: &unmapped_json,
    }
    .write();
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
    Ok(Converted {
        event_id: record.event_id,
        event_source: record.event_source,
        json,
    })
}

/// The parts of a converted record, written as [`Record::to_json`] writes the record they make:
/// the same members in the same order, with the JSON members spliced in as compact text. The
/// test `the_written_record_is_what_record_writes` holds the two together.
struct RecordJson<'a> {
    /// Every member but the JSON ones, and `userIdentity` with only `type` and `principalId`.
    record: &'a Record,
    /// The other members of `userIdentity`, as compact text, in their order.
    identity_extra: &'a [(Key<'a>, Cow<'a, str>)],
    request_parameters: Option<&'a str>,
    response_elements: Option<&'a str>,
    additional_event_data: Option<&'a str>,
    ingestion_time: &'a str,
    channel: &'a str,
    audit_event_id: &'a str,
    version: &'a str,
    sender_uid: Option<u32>,
    unmapped: &'a [(&'a str, Cow<'a, str>)],
}

impl RecordJson<'_> {
    fn write(&self) -> Vec<u8> {
        let r = self.record;
        let texts = [
            self.request_parameters,
            self.response_elements,
            self.additional_event_data,
        ];
        let unmapped: usize = self
            .unmapped
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum();
        let mut out = Vec::with_capacity(
            1024 + texts.iter().flatten().map(|t| t.len()).sum::<usize>() + unmapped,
        );
        let mut o = JsonObject::open(&mut out);
        o.string("eventVersion", &r.event_version);
        // `userIdentity` as `UserIdentity` writes one whose other members are all in `extra`.
        let ui = r.user_identity.as_ref().expect("set above");
        let mut u = o.object("userIdentity");
        u.opt_string("type", ui.identity_type.as_deref());
        u.opt_string("principalId", ui.principal_id.as_deref());
        for (k, v) in self.identity_extra {
            u.text(k, v);
        }
        u.close();
        o.string("eventTime", &r.event_time);
        o.string("eventSource", &r.event_source);
        o.string("eventName", &r.event_name);
        o.string("awsRegion", &r.aws_region);
        o.opt_string("sourceIPAddress", r.source_ip_address.as_deref());
        o.opt_string("userAgent", r.user_agent.as_deref());
        o.opt_string("errorCode", r.error_code.as_deref());
        o.opt_string("errorMessage", r.error_message.as_deref());
        o.text(
            "requestParameters",
            self.request_parameters.unwrap_or("null"),
        );
        o.text("responseElements", self.response_elements.unwrap_or("null"));
        if let Some(v) = self.additional_event_data {
            o.text("additionalEventData", v);
        }
        o.opt_string("requestID", r.request_id.as_deref());
        o.string("eventID", &r.event_id);
        o.string("eventType", &r.event_type);
        o.string("recipientAccountId", r.account());
        o.opt_string("eventCategory", r.event_category.as_deref());
        let mut m = o.object("metadata");
        m.string("ingestionTime", self.ingestion_time);
        m.string("channelARN", self.channel);
        m.string("auditEventId", self.audit_event_id);
        m.string("eventDataVersion", self.version);
        if let Some(uid) = self.sender_uid {
            m.text("senderUid", &uid.to_string());
        }
        if !self.unmapped.is_empty() {
            let mut e = m.object("unmappedEventData");
            for (k, v) in self.unmapped {
                e.text(k, v);
            }
            e.close();
        }
        m.close();
        o.close();
        out
    }
}

/// A JSON object written member by member, as `serde_json` writes one: a comma between members,
/// keys and string values escaped by `serde_json`, other values given as compact text.
struct JsonObject<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> JsonObject<'a> {
    fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        JsonObject { out, empty: true }
    }

    /// Writes `"key":` (after a comma unless first) and returns the buffer for the value.
    fn key(&mut self, key: &str) -> &mut Vec<u8> {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        write_string(self.out, key);
        self.out.push(b':');
        self.out
    }

    fn string(&mut self, key: &str, value: &str) {
        write_string(self.key(key), value);
    }

    fn opt_string(&mut self, key: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.string(key, v);
        }
    }

    /// A member whose value is compact JSON text already.
    fn text(&mut self, key: &str, json: &str) {
        self.key(key).extend_from_slice(json.as_bytes());
    }

    /// A member whose value is an object, written through the returned writer.
    fn object(&mut self, key: &str) -> JsonObject<'_> {
        JsonObject::open(self.key(key))
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

/// `s` as a JSON string, as `serde_json` writes it. `serde_json` escapes only `"`, `\\` and the
/// control characters below 0x20, so a string without them is copied between quotes: most
/// strings of a record are, and the writer's per-byte path was a tenth of the conversion.
fn write_string(out: &mut Vec<u8>, s: &str) {
    // Without an early exit, so the check is vectorized.
    let plain = !s.bytes().fold(false, |esc, b| {
        esc | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    // Writing a string into a Vec cannot fail.
    serde_json::to_writer(out, s).expect("a string serializes");
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "123456789012";

    /// The eventID's UUID is the `uuid` crate's v5 of the same name, byte for byte: names of
    /// every length around SHA-1's 64-byte block, and real ones.
    #[test]
    fn name_based_ids_are_uuid_v5() {
        for len in (0..200).chain([1000, 4096]) {
            let name: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            assert_eq!(
                name_based_id(&name),
                uuid::Uuid::new_v5(&EVENT_ID_NAMESPACE, &name),
                "name of {len} bytes"
            );
        }
        let id = name_based_id(b"x");
        assert_eq!(id.get_version_num(), 5);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
    }

    /// Strings are written as serde_json writes them, on both the copied and the escaped path.
    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        for s in [
            "",
            "plain",
            "é ü 漢",
            "say \"hi\"",
            "back\\slash",
            "tab\tnl\n",
            "\u{1}\u{1f}",
            "\u{7f}",
            "/",
        ] {
            let mut out = Vec::new();
            write_string(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }

    /// String members are read as serde_json reads them, escaped or not.
    #[test]
    fn string_members_read_as_serde_json_reads_them() {
        for text in [
            r#""plain""#,
            r#""é""#,
            r#""a\"b""#,
            r#""\u00e9""#,
            r#""""#,
            "null",
        ] {
            let raw = Text { text, shape: None };
            let want: Option<String> = serde_json::from_str(text).unwrap();
            assert_eq!(
                string_member(Some(raw), "x", 100, false).unwrap(),
                want,
                "{text}"
            );
        }
        let raw = Text {
            text: "5",
            shape: None,
        };
        assert_eq!(
            string_member(Some(raw), "x", 100, false)
                .unwrap_err()
                .message,
            "eventData.x must be a string"
        );
    }

    fn ctx(sender_uid: Option<u32>) -> Context<'static> {
        Context {
            account_id: ACCOUNT,
            region: "onprem-fra1",
            reserved_source: "groundtrail.example.internal",
            owner: "this agent",
            sender_uid,
        }
    }

    fn event(data: serde_json::Value) -> AuditEvent {
        AuditEvent {
            id: "ev-1".into(),
            // `\/` is valid JSON that serde_json writes as `/`: a case the copy must not keep.
            event_data: data.to_string().replace(r#""/x""#, r#""\/x""#),
            event_data_checksum: None,
        }
    }

    fn full() -> serde_json::Value {
        serde_json::json!({
            "version": "1.0",
            "userIdentity": {"arn": "arn:app:alice", "type": "App", "principalId": "alice", "details": {"team": "ops"}},
            "userAgent": "billing/2.1",
            "eventSource": "billing.example.com",
            "eventName": "RefundIssued",
            "eventTime": "2026-12-07T10:11:12Z",
            "UID": "req-77",
            "requestParameters": {"order": "o-1", "amount": 1250, "tags": ["a", "b"], "note": "say \"hi\" é"},
            "responseElements": null,
            "errorCode": "Denied",
            "errorMessage": "over the limit",
            "sourceIPAddress": "10.0.0.7",
            "recipientAccountId": ACCOUNT,
            "additionalEventData": {"ratio": 0.5, "url": "/x"},
            "zExtra": {"kept": [1, 2]},
            "aExtra": "last"
        })
    }

    #[test]
    fn the_written_record_is_what_record_writes() {
        for uid in [None, Some(1000)] {
            let c = convert_to_json(
                &event(full()),
                "arn:aws:cloudtrail:x:1:channel/c",
                &ctx(uid),
            )
            .unwrap();
            let record = c.record().unwrap();
            assert_eq!(
                String::from_utf8(record.to_json()).unwrap(),
                String::from_utf8(c.json.clone()).unwrap()
            );
            assert_eq!(record.event_id, c.event_id);
            assert_eq!(record.event_source, "billing.example.com");
            // userIdentity as before: type and principalId first, the rest in the sender's order.
            let text = String::from_utf8(c.json.clone()).unwrap();
            assert!(text.contains(r#""userIdentity":{"type":"App","principalId":"alice","arn":"arn:app:alice","details":{"team":"ops"}}"#), "{text}");
            let meta = &record.extra["metadata"];
            assert_eq!(
                meta["unmappedEventData"],
                serde_json::json!({"zExtra": {"kept": [1, 2]}, "aExtra": "last"})
            );
            assert_eq!(meta["senderUid"], serde_json::json!(uid));
            assert_eq!(record.request_parameters.unwrap()["note"], "say \"hi\" é");
            assert_eq!(record.response_elements, Some(Value::Null));
            // Written by serde_json again where a copy would differ: `\/` and the fraction.
            assert_eq!(
                record.additional_event_data.unwrap(),
                serde_json::json!({"ratio": 0.5, "url": "/x"})
            );
        }
        // The fewest members: no optional ones, no metadata extras.
        let mut min = full();
        for k in [
            "userAgent",
            "errorCode",
            "errorMessage",
            "sourceIPAddress",
            "requestParameters",
            "responseElements",
            "additionalEventData",
            "zExtra",
            "aExtra",
        ] {
            min.as_object_mut().unwrap().remove(k);
        }
        let c = convert_to_json(&event(min), "c", &ctx(None)).unwrap();
        let record = c.record().unwrap();
        assert_eq!(record.to_json(), c.json);
    }

    #[test]
    fn spacing_in_the_senders_json_does_not_reach_the_record() {
        let spaced = serde_json::to_string_pretty(&full()).unwrap();
        let compact = convert_to_json(&event(full()), "c", &ctx(None)).unwrap();
        let mut ev = event(full());
        ev.event_data = spaced;
        let c = convert_to_json(&ev, "c", &ctx(None)).unwrap();
        // Only eventID (the SHA-256 of eventData) and ingestionTime may differ.
        let strip = |j: &[u8]| {
            let mut v: Value = serde_json::from_slice(j).unwrap();
            v["eventID"] = Value::Null;
            v["metadata"]["ingestionTime"] = Value::Null;
            v.to_string()
        };
        assert_eq!(strip(&c.json), strip(&compact.json));
        assert!(!String::from_utf8(c.json).unwrap().contains(" : "));
    }

    #[test]
    fn bad_event_data_is_named() {
        let mut ev = event(full());
        ev.event_data = "[1,2]".into();
        let e = convert_to_json(&ev, "c", &ctx(None)).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            ("InvalidData", "eventData must be a JSON object")
        );
        ev.event_data = "{\"version\": ".into();
        let e = convert_to_json(&ev, "c", &ctx(None)).unwrap_err();
        assert_eq!(e.code, "InvalidData");
        assert!(
            e.message.starts_with("eventData is not JSON: "),
            "{}",
            e.message
        );
        let mut big = full();
        big["requestParameters"] = serde_json::json!({"blob": "x".repeat(LIMIT_PARAMETERS)});
        let e = convert_to_json(&event(big), "c", &ctx(None)).unwrap_err();
        assert_eq!(e.code, "FieldTooLong");
        assert!(
            e.message.starts_with("eventData.requestParameters is "),
            "{}",
            e.message
        );
        for (ui, code, message) in [
            (
                serde_json::json!("x"),
                "InvalidData",
                "eventData.userIdentity must be an object",
            ),
            (
                Value::Null,
                "FieldNotFound",
                "eventData.userIdentity is required",
            ),
            (
                serde_json::json!({"principalId": "p"}),
                "FieldNotFound",
                "eventData.userIdentity.type is required",
            ),
        ] {
            let mut d = full();
            d["userIdentity"] = ui;
            let e = convert_to_json(&event(d), "c", &ctx(None)).unwrap_err();
            assert_eq!((e.code, e.message.as_str()), (code, message));
        }
        for (t, ok) in [
            ("2026-12-07T10:11:12", Some("2026-12-07T10:11:12Z")),
            ("2026-12-07T10:11:12.345Z", Some("2026-12-07T10:11:12Z")),
            ("2026-02-30T10:11:12Z", None),
            ("2026-12-07T24:11:12Z", None),
            ("2026-12-07 10:11:12Z", None),
            ("2026-12-07T1a:11:12Z", None),
        ] {
            assert_eq!(parse_event_time(t).as_deref(), ok, "{t}");
        }
        // A repeated member counts once, with its last value, as before.
        let mut ev = event(full());
        ev.event_data = ev.event_data.replacen("{", "{\"eventName\":\"First\",", 1);
        let r = convert(&ev, "c", &ctx(None)).unwrap();
        assert_eq!(r.event_name, "RefundIssued");
    }

    /// The collector's `convert` gives the record the agent writes: userIdentity's members in the
    /// sender's order and of any JSON type (typed fields would reorder or refuse them).
    #[test]
    fn the_collectors_record_is_the_agents() {
        let mut d = full();
        d["userIdentity"] = serde_json::json!({
            "type": "A", "principalId": "p", "userName": "u", "arn": 5,
            "sessionContext": {"attributes": {"mfaAuthenticated": true}}
        });
        let ev = event(d);
        let strip = |j: &[u8]| {
            let mut v: Value = serde_json::from_slice(j).unwrap();
            v["metadata"]["ingestionTime"] = Value::Null;
            v.to_string()
        };
        let agent = convert_to_json(&ev, "c", &ctx(None)).unwrap();
        let collector = convert(&ev, "c", &ctx(None)).unwrap();
        assert_eq!(strip(&collector.to_json()), strip(&agent.json));
        assert!(strip(&agent.json).contains(r#""userName":"u","arn":5"#));
    }

    /// Nesting stays within what serde_json reads back (127 levels in a whole record), checked
    /// per member so that what the agent accepts the collector can read.
    #[test]
    fn members_nest_only_as_deep_as_a_record_can_be_read() {
        let nested = |n: usize| {
            serde_json::from_str::<Value>(&format!("{}1{}", "[".repeat(n), "]".repeat(n))).unwrap()
        };
        for (member, deepest) in [
            ("requestParameters", DEPTH_MEMBER),
            ("zUnmapped", DEPTH_UNMAPPED),
        ] {
            let mut d = full();
            d[member] = nested(deepest);
            let c = convert_to_json(&event(d), "c", &ctx(None)).unwrap();
            Record::from_json(&c.json).expect("the deepest accepted record reads back");
            let mut d = full();
            d[member] = nested(deepest + 1);
            let e = convert_to_json(&event(d), "c", &ctx(None)).unwrap_err();
            assert_eq!(e.code, "InvalidData");
            assert_eq!(
                e.message,
                format!("eventData.{member} is nested more than {deepest} levels deep")
            );
        }
        let mut d = full();
        d["userIdentity"]["deep"] = nested(DEPTH_IDENTITY_MEMBER);
        let c = convert_to_json(&event(d), "c", &ctx(None)).unwrap();
        Record::from_json(&c.json).expect("reads back");
        let mut d = full();
        d["userIdentity"]["deep"] = nested(DEPTH_IDENTITY_MEMBER + 1);
        let e = convert_to_json(&event(d), "c", &ctx(None)).unwrap_err();
        assert_eq!(
            e.message,
            format!(
                "eventData.userIdentity.deep is nested more than {DEPTH_IDENTITY_MEMBER} levels deep"
            )
        );
    }

    /// AWS sources and the owner's own are refused whatever their case, and the message names
    /// the owner's source in lowercase (the reserved one may be configured with capitals).
    #[test]
    fn reserved_sources_are_refused_in_any_case() {
        let own = Context {
            reserved_source: "GroundTrail.Example.Internal",
            ..ctx(None)
        };
        for source in [
            "groundtrail.example.internal",
            "GROUNDTRAIL.example.INTERNAL",
            "iam.amazonaws.com",
            "IAM.AmazonAWS.COM",
        ] {
            let mut d = full();
            d["eventSource"] = source.into();
            let e = convert_to_json(&event(d), "c", &own).unwrap_err();
            assert_eq!(e.code, "InvalidEventSource", "{source}");
            assert_eq!(
                e.message,
                format!(
                    "eventData.eventSource {source:?} is reserved (AWS services and this agent's own groundtrail.example.internal)"
                )
            );
        }
        for source in [
            "amazonaws.com",
            "iam.amazonaws.com.example.org",
            "groundtrail.example",
        ] {
            let mut d = full();
            d["eventSource"] = source.into();
            convert_to_json(&event(d), "c", &own).expect(source);
        }
    }

    /// The one-pass read (`json_split`) and serde_json's read give the same members, in the
    /// same order, with the same compact texts: on objects the split takes and on ones it
    /// leaves to serde_json.
    #[test]
    fn both_readings_of_an_object_give_the_same_members() {
        let by_serde = |text: &str| {
            let entries = serde_json::from_str::<Entries>(text).unwrap().0;
            last_value_wins(entries.into_iter())
                .into_iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        member_text(v, &*k, 200).unwrap().into_owned(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let by_default = |text: &str| {
            read_members(text)
                .unwrap()
                .into_iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        member_text(v, &*k, 200).unwrap().into_owned(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let split = |text| crate::json_split::split_object(text, DEPTH_UNMAPPED).is_some();
        let full_text = full().to_string();
        for (text, splits) in [
            (full_text.as_str(), true),
            (r#"{"a":1,"b":[1, 2],"a":{"x":"\u00e9"},"c":-0.5}"#, true),
            (r#"{"a\u0062":1,"ab":2,"c":{ "d" : null }}"#, false),
            (r#"{"a":"x","b":"y\/z","a":"w"}"#, true),
        ] {
            assert_eq!(split(text), splits, "{text}");
            assert_eq!(by_default(text), by_serde(text), "{text}");
        }
    }

    #[test]
    fn values_a_raw_read_lets_through_are_refused_by_member() {
        let mut ev = event(full());
        ev.event_data = ev
            .event_data
            .replacen(r#""order":"o-1""#, r#""order":"\ud800""#, 1);
        let e = convert_to_json(&ev, "c", &ctx(None)).unwrap_err();
        assert_eq!(e.code, "InvalidData");
        assert!(
            e.message
                .starts_with("eventData.requestParameters is not valid JSON: "),
            "{}",
            e.message
        );
        let mut d = full();
        d["userIdentity"]["type"] = serde_json::json!(5);
        let e = convert_to_json(&event(d), "c", &ctx(None)).unwrap_err();
        assert_eq!(e.message, "eventData.userIdentity.type must be a string");
    }
}
