//! Application events: a local endpoint shaped like CloudTrail Lake's `PutAuditEvents`
//! (spec §4.3), on a Unix socket and optionally on a loopback HTTP address.
//!
//! ```text
//! POST /PutAuditEvents?channelArn=<arn>[&externalId=<id>]
//! {"auditEvents":[{"id":"1","eventData":"{...}","eventDataChecksum":"<base64 sha256>"}]}
//! -> 200 {"successful":[{"id","eventID"}],"failed":[{"id","errorCode","errorMessage"}]}
//! ```
//!
//! Request-level problems (not JSON, 0 or more than 100 events, over 1 MB, an `id` that is not
//! 1-128 of `[-_A-Za-z0-9]`, a repeated `id`) refuse the whole call, as the real API does
//! (`ValidationException`, `SerializationException`, `DuplicatedAuditEventId`). Everything about
//! one event's content fails only that event, with CloudTrail Lake's per-event codes
//! (`InvalidChecksum`, `InvalidData`, `FieldNotFound`, `FieldTooLong`, `InvalidRecipient`,
//! `InvalidEventSource`, `Throttling`, `InternalFailure`); the good events of the same call are
//! stored. The answer is sent only once they are durable in the buffer (one append, one flush).
//!
//! An application may not write under an event source the agent writes itself
//! ([`AGENT_SERVICES`] under the configured domain: `sshd.`, `sudo.`, `su.`, `iam.`, `systemd.`,
//! `packages.`, `files.`, `exec.`, `groundtrail.`), nor under `*.amazonaws.com`: such an event
//! fails with `InvalidEventSource`, because a record that looks exactly like a host record
//! (a `StopService` of `auditd.service`, a `ConsoleLogin`) would be a forgery in the trail.
//!
//! # Conversion (the way CloudTrail Lake ingests integration events)
//!
//! The sender's fields become the record's (`userIdentity.type/principalId`, `details` kept
//! inside `userIdentity`; `eventSource`, `eventName`, `eventTime`, `userAgent`,
//! `sourceIPAddress`, `requestParameters`, `responseElements`, `errorCode`, `errorMessage`,
//! `additionalEventData`, `recipientAccountId`), `UID` becomes `requestID`. The agent adds what
//! CloudTrail adds at ingestion: `eventVersion`, `eventCategory: ActivityAuditLog`,
//! `eventType: ActivityLog`, `eventID`, `awsRegion`, and `metadata{ingestionTime, channelARN}`;
//! it also keeps in `metadata` the call's `id`, the sender's `version`, any `eventData` members
//! it does not map (nothing the sender gave is dropped) and, on the Unix socket, the sender's
//! uid — which local account posted the event is part of the audit trail.
//!
//! `eventID` is a name-based UUID (v5) of the account, channel, `id` and the SHA-256 of
//! `eventData`: an application that re-sends a call after a lost answer produces the same
//! `eventID`s, which the collector de-duplicates, so the trail holds the event once.

use std::sync::Arc;

use bytes::Bytes;
use groundtrail_common::audit_events::{self, validation};
use groundtrail_common::event::Record;
use groundtrail_common::percent;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

// The validation and conversion live in `groundtrail_common::audit_events` (shared with the
// collector's `cloudtrail-data` API); re-exported so this module's API is unchanged.
pub use groundtrail_common::audit_events::{
    AuditEvent, EventError, Failure, MAX_BODY_BYTES, MAX_EVENTS, PutAuditEventsResponse,
    RequestError, Success, parse_request,
};

use crate::host_identity::HostIdentity;
use crate::http_util::{self, ConnInfo, Handler};
use crate::metrics::Metrics;
use crate::sink::{RecordSink, SinkError};

/// Converts and checks events for one agent.
#[derive(Debug, Clone)]
pub struct Converter {
    pub id: HostIdentity,
}

impl Converter {
    /// Checks one event and turns it into a CloudTrail record (see
    /// [`groundtrail_common::audit_events::convert`]).
    pub fn convert(
        &self,
        ev: &AuditEvent,
        channel: &str,
        sender: ConnInfo,
    ) -> Result<Record, EventError> {
        self.convert_to_json(ev, channel, sender)?.record()
    }

    /// [`Converter::convert`], also giving the record's compact JSON (what the buffer stores).
    pub fn convert_to_json(
        &self,
        ev: &AuditEvent,
        channel: &str,
        sender: ConnInfo,
    ) -> Result<audit_events::Converted, EventError> {
        let reserved = self.id.agent_event_source();
        let c = audit_events::convert_to_json(
            ev,
            channel,
            &audit_events::Context {
                account_id: &self.id.account_id,
                region: &self.id.region,
                reserved_source: &reserved,
                owner: "this agent",
                sender_uid: sender.uid,
            },
        )?;
        if let Some(service) = self.agent_service(&c.event_source) {
            return Err(EventError {
                code: "InvalidEventSource",
                message: format!(
                    "eventData.eventSource {:?} is reserved: this agent writes `{service}.{}` \
                     records itself (reserved: {}); an application must use its own event source",
                    c.event_source,
                    self.id.domain,
                    reserved_sources(&self.id.domain).join(", "),
                ),
            });
        }
        Ok(c)
    }

    /// The agent's own service `source` names, if it is one of them (case-insensitive): an
    /// application posting `systemd.<domain>` could otherwise write a `StopService` that looks
    /// exactly like the host's.
    fn agent_service(&self, source: &str) -> Option<&'static str> {
        let (service, domain) = source.split_once('.')?;
        if !domain.eq_ignore_ascii_case(&self.id.domain) {
            return None;
        }
        AGENT_SERVICES
            .iter()
            .copied()
            .find(|s| s.eq_ignore_ascii_case(service))
    }
}

/// The services whose `<service>.<domain>` event sources the agent writes itself: those of the
/// host sources (see `sources`) and of the agent's own records (`groundtrail`).
/// PutAuditEvents refuses them (`InvalidEventSource`).
pub const AGENT_SERVICES: &[&str] = &[
    "sshd",
    "sudo",
    "su",
    "iam",
    "systemd",
    "packages",
    "files",
    "exec",
    "groundtrail",
];

/// [`AGENT_SERVICES`] as event sources of `domain`.
pub fn reserved_sources(domain: &str) -> Vec<String> {
    AGENT_SERVICES
        .iter()
        .map(|s| format!("{s}.{domain}"))
        .collect()
}

/// The endpoint: converts, stores through the sink, answers.
pub struct AppEvents {
    pub converter: Converter,
    pub sink: Arc<dyn RecordSink>,
    pub metrics: Arc<Metrics>,
    /// Used when the call names no `channelArn`.
    pub default_channel: String,
}

impl AppEvents {
    /// `arn:<partition>:cloudtrail:<region>:<account>:channel/groundtrail-<host>`.
    pub fn default_channel_for(id: &HostIdentity) -> String {
        format!(
            "arn:{}:cloudtrail:{}:{}:channel/groundtrail-{}",
            id.partition, id.region, id.account_id, id.host
        )
    }

    /// Handles one call: request-level errors refuse everything; otherwise every event either
    /// succeeds (durably stored) or fails on its own.
    pub async fn put_audit_events(
        &self,
        channel: Option<&str>,
        body: &[u8],
        sender: ConnInfo,
    ) -> Result<PutAuditEventsResponse, RequestError> {
        if let Some(c) = channel
            && (c.is_empty() || c.len() > 1024)
        {
            return Err(validation("channelArn must be 1-1024 characters"));
        }
        let channel = channel.unwrap_or(&self.default_channel);
        let events = parse_request(body)?;
        let mut resp = PutAuditEventsResponse::default();
        let mut records = Vec::new();
        let mut ids = Vec::new();
        for ev in &events {
            match self.converter.convert_to_json(ev, channel, sender) {
                Ok(c) => {
                    ids.push(Success {
                        id: ev.id.clone(),
                        event_id: c.event_id,
                    });
                    // Stored as the JSON the conversion built (not serialized again).
                    records.push(c.json);
                }
                Err(e) => resp.failed.push(Failure {
                    id: ev.id.clone(),
                    error_code: e.code.to_string(),
                    error_message: e.message,
                }),
            }
        }
        if !records.is_empty() {
            match self.sink.append_json(records, None).await {
                Ok(()) => resp.successful = ids,
                Err(e) => {
                    let (code, message) = match e {
                        SinkError::Dropped { .. } => (
                            "Throttling",
                            "the agent's buffer is full; the event was dropped and the loss recorded"
                                .to_string(),
                        ),
                        SinkError::Closed => {
                            ("InternalFailure", "the agent is shutting down".to_string())
                        }
                        SinkError::Storage(why) => {
                            ("InternalFailure", format!("the agent could not store the event: {why}"))
                        }
                    };
                    for s in ids {
                        resp.failed.push(Failure {
                            id: s.id,
                            error_code: code.to_string(),
                            error_message: message.clone(),
                        });
                    }
                }
            }
        }
        Metrics::add(
            &self.metrics.app_events_accepted,
            resp.successful.len() as u64,
        );
        Metrics::add(&self.metrics.app_events_failed, resp.failed.len() as u64);
        Ok(resp)
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        info: ConnInfo,
    ) -> Response<Full<Bytes>> {
        if req.uri().path() != "/PutAuditEvents" {
            return http_util::json_error(
                StatusCode::NOT_FOUND,
                "UnknownOperationException",
                "only POST /PutAuditEvents is served here",
            );
        }
        if req.method() != Method::POST {
            return http_util::json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "UnknownOperationException",
                "PutAuditEvents takes POST",
            );
        }
        let channel = req.uri().query().and_then(|q| {
            q.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k == "channelArn").then(|| percent::decode_query(v))
            })
        });
        let Some(body) = http_util::read_body(req.into_body(), MAX_BODY_BYTES).await else {
            return http_util::json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "ValidationException",
                &format!("the request is larger than {MAX_BODY_BYTES} bytes"),
            );
        };
        match self.put_audit_events(channel.as_deref(), &body, info).await {
            Ok(resp) => http_util::respond(
                StatusCode::OK,
                "application/json",
                serde_json::to_vec(&resp).unwrap_or_default(),
            ),
            Err(e) => http_util::json_error(e.status, e.code, &e.message),
        }
    }

    /// This endpoint as a handler for [`http_util`]'s servers.
    pub fn handler(self: Arc<Self>) -> Handler {
        Arc::new(move |req, info| {
            let this = self.clone();
            Box::pin(this.handle(req, info))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::FullPolicy;
    use crate::buffer::{Buffer, BufferOptions};
    use base64::Engine;
    use groundtrail_common::event::EVENT_VERSION;
    use serde_json::{Map, Value, json};

    fn identity() -> HostIdentity {
        HostIdentity {
            host: "app-host".into(),
            account_id: "123456789012".into(),
            region: "eu-central-1".into(),
            domain: "onprem.internal".into(),
            partition: "aws".into(),
        }
    }

    fn endpoint(dir: &std::path::Path) -> (AppEvents, Buffer) {
        let (buffer, _) = Buffer::open(
            &dir.join("buffer"),
            BufferOptions {
                max_bytes: 1 << 24,
                full_policy: FullPolicy::Block,
                flush_delay: std::time::Duration::ZERO,
                ..BufferOptions::default()
            },
            identity(),
        )
        .unwrap();
        let ep = AppEvents {
            converter: Converter { id: identity() },
            sink: Arc::new(buffer.clone()),
            metrics: Arc::new(Metrics::default()),
            default_channel: AppEvents::default_channel_for(&identity()),
        };
        (ep, buffer)
    }

    fn good_data() -> Value {
        json!({
            "version": "1.0",
            "userIdentity": {"type": "CustomUser", "principalId": "alice", "details": {"team": "ops"}},
            "userAgent": "billing/2.1",
            "eventSource": "billing.example.com",
            "eventName": "RefundIssued",
            "eventTime": "2026-11-21T10:00:00Z",
            "UID": "req-42",
            "requestParameters": {"amount": 12},
            "responseElements": null,
            "sourceIPAddress": "192.0.2.10",
            "recipientAccountId": "123456789012",
            "additionalEventData": {"ticket": "T-1"},
            "customField": [1, 2]
        })
    }

    fn event(id: &str, data: &Value) -> Value {
        json!({"id": id, "eventData": data.to_string()})
    }

    fn with_checksum(id: &str, data: &str) -> Value {
        let sum = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data.as_bytes());
        json!({"id": id, "eventData": data,
               "eventDataChecksum": base64::engine::general_purpose::STANDARD.encode(sum.as_ref())})
    }

    async fn call(
        ep: &AppEvents,
        events: Vec<Value>,
    ) -> Result<PutAuditEventsResponse, RequestError> {
        let body = json!({ "auditEvents": events }).to_string();
        ep.put_audit_events(
            Some("arn:aws:cloudtrail:eu-central-1:123456789012:channel/test"),
            body.as_bytes(),
            ConnInfo {
                uid: Some(1000),
                pid: None,
            },
        )
        .await
    }

    fn modified(f: impl FnOnce(&mut Map<String, Value>)) -> Value {
        let mut d = good_data();
        f(d.as_object_mut().unwrap());
        d
    }

    #[tokio::test]
    async fn good_event_becomes_a_lake_style_record_durably() {
        let dir = tempfile::tempdir().unwrap();
        let (ep, buffer) = endpoint(dir.path());
        let data = good_data().to_string();
        let resp = call(&ep, vec![with_checksum("e1", &data)]).await.unwrap();
        assert!(resp.failed.is_empty(), "{resp:?}");
        assert_eq!(resp.successful.len(), 1);
        let entries = buffer.read_from(0, 10, usize::MAX).unwrap();
        assert_eq!(entries.len(), 1);
        let r = Record::from_json(&entries[0].json).unwrap();
        // Stored as the conversion serialized it: exactly the record's compact JSON.
        assert_eq!(r.to_json(), entries[0].json);
        assert_eq!(r.event_id, resp.successful[0].event_id);
        assert_eq!(r.event_category.as_deref(), Some("ActivityAuditLog"));
        assert_eq!(r.event_type, "ActivityLog");
        assert_eq!(r.event_version, EVENT_VERSION);
        assert_eq!(r.aws_region, "eu-central-1");
        assert_eq!(r.recipient_account_id.as_deref(), Some("123456789012"));
        assert_eq!(r.request_id.as_deref(), Some("req-42"));
        assert_eq!(r.event_time, "2026-11-21T10:00:00Z");
        assert_eq!(r.event_source, "billing.example.com");
        assert_eq!(r.source_ip_address.as_deref(), Some("192.0.2.10"));
        assert_eq!(r.request_parameters, Some(json!({"amount": 12})));
        assert_eq!(r.response_elements, Some(Value::Null));
        assert_eq!(r.additional_event_data, Some(json!({"ticket": "T-1"})));
        let ui = r.user_identity.unwrap();
        assert_eq!(ui.identity_type.as_deref(), Some("CustomUser"));
        assert_eq!(ui.principal_id.as_deref(), Some("alice"));
        assert_eq!(ui.extra["details"], json!({"team": "ops"}));
        let m = &r.extra["metadata"];
        assert_eq!(
            m["channelARN"],
            "arn:aws:cloudtrail:eu-central-1:123456789012:channel/test"
        );
        assert_eq!(m["auditEventId"], "e1");
        assert_eq!(m["eventDataVersion"], "1.0");
        assert_eq!(m["senderUid"], 1000);
        assert_eq!(m["unmappedEventData"], json!({"customField": [1, 2]}));
        // The same call again yields the same eventID (collector de-duplicates a re-send).
        let again = call(&ep, vec![with_checksum("e1", &data)]).await.unwrap();
        assert_eq!(again.successful[0].event_id, resp.successful[0].event_id);
        // Times without Z and with fractions are accepted and normalised.
        let d = modified(|m| {
            m.insert("eventTime".into(), json!("2026-11-21T10:00:00.123"));
        });
        let resp = call(&ep, vec![event("e2", &d)]).await.unwrap();
        assert_eq!(resp.successful.len(), 1, "{resp:?}");
    }

    #[tokio::test]
    async fn each_bad_event_fails_alone_with_its_code() {
        let dir = tempfile::tempdir().unwrap();
        let (ep, buffer) = endpoint(dir.path());
        let data = good_data().to_string();
        let mut bad_sum = with_checksum("sum", &data);
        bad_sum["eventDataChecksum"] =
            json!(base64::engine::general_purpose::STANDARD.encode([0u8; 32]));
        let mut not_b64 = with_checksum("sum64", &data);
        not_b64["eventDataChecksum"] = json!("!!!");
        let mut cases: Vec<(Value, &str)> = vec![
            (bad_sum, "InvalidChecksum"),
            (not_b64, "InvalidChecksum"),
            (
                json!({"id": "notjson", "eventData": "{nope"}),
                "InvalidData",
            ),
            (json!({"id": "array", "eventData": "[1]"}), "InvalidData"),
        ];
        type Edit = Box<dyn Fn(&mut Map<String, Value>)>;
        let edits: Vec<(&str, Edit, &str)> = vec![
            (
                "noversion",
                Box::new(|m| {
                    m.remove("version");
                }),
                "FieldNotFound",
            ),
            (
                "noidentity",
                Box::new(|m| {
                    m.remove("userIdentity");
                }),
                "FieldNotFound",
            ),
            (
                "notype",
                Box::new(|m| {
                    m["userIdentity"].as_object_mut().unwrap().remove("type");
                }),
                "FieldNotFound",
            ),
            (
                "noprincipal",
                Box::new(|m| {
                    m["userIdentity"]
                        .as_object_mut()
                        .unwrap()
                        .remove("principalId");
                }),
                "FieldNotFound",
            ),
            (
                "nosource",
                Box::new(|m| {
                    m.remove("eventSource");
                }),
                "FieldNotFound",
            ),
            (
                "noname",
                Box::new(|m| {
                    m.remove("eventName");
                }),
                "FieldNotFound",
            ),
            (
                "notime",
                Box::new(|m| {
                    m.remove("eventTime");
                }),
                "FieldNotFound",
            ),
            (
                "nouid",
                Box::new(|m| {
                    m.remove("UID");
                }),
                "FieldNotFound",
            ),
            (
                "norecipient",
                Box::new(|m| {
                    m.remove("recipientAccountId");
                }),
                "FieldNotFound",
            ),
            (
                "longversion",
                Box::new(|m| {
                    m.insert("version".into(), json!("v".repeat(257)));
                }),
                "FieldTooLong",
            ),
            (
                "longtype",
                Box::new(|m| {
                    m["userIdentity"]["type"] = json!("t".repeat(129));
                }),
                "FieldTooLong",
            ),
            (
                "longname",
                Box::new(|m| {
                    m.insert("eventName".into(), json!("n".repeat(1025)));
                }),
                "FieldTooLong",
            ),
            (
                "longuid",
                Box::new(|m| {
                    m.insert("UID".into(), json!("u".repeat(1025)));
                }),
                "FieldTooLong",
            ),
            (
                "longagent",
                Box::new(|m| {
                    m.insert("userAgent".into(), json!("a".repeat(1025)));
                }),
                "FieldTooLong",
            ),
            (
                "longerror",
                Box::new(|m| {
                    m.insert("errorCode".into(), json!("e".repeat(257)));
                }),
                "FieldTooLong",
            ),
            (
                "longmsg",
                Box::new(|m| {
                    m.insert("errorMessage".into(), json!("e".repeat(257)));
                }),
                "FieldTooLong",
            ),
            (
                "bigparams",
                Box::new(|m| {
                    m.insert(
                        "requestParameters".into(),
                        json!({"x": "p".repeat(100 * 1024)}),
                    );
                }),
                "FieldTooLong",
            ),
            (
                "bigresponse",
                Box::new(|m| {
                    m.insert(
                        "responseElements".into(),
                        json!({"x": "p".repeat(100 * 1024)}),
                    );
                }),
                "FieldTooLong",
            ),
            (
                "bigadditional",
                Box::new(|m| {
                    m.insert(
                        "additionalEventData".into(),
                        json!({"x": "p".repeat(28 * 1024)}),
                    );
                }),
                "FieldTooLong",
            ),
            (
                "badtime",
                Box::new(|m| {
                    m.insert("eventTime".into(), json!("yesterday"));
                }),
                "InvalidData",
            ),
            (
                "badip",
                Box::new(|m| {
                    m.insert("sourceIPAddress".into(), json!("300.1.1.1"));
                }),
                "InvalidData",
            ),
            (
                "numbersource",
                Box::new(|m| {
                    m.insert("eventSource".into(), json!(7));
                }),
                "InvalidData",
            ),
            (
                "identitystring",
                Box::new(|m| {
                    m.insert("userIdentity".into(), json!("alice"));
                }),
                "InvalidData",
            ),
            (
                "badaccount",
                Box::new(|m| {
                    m.insert("recipientAccountId".into(), json!("12345"));
                }),
                "InvalidData",
            ),
            (
                "otheraccount",
                Box::new(|m| {
                    m.insert("recipientAccountId".into(), json!("210987654321"));
                }),
                "InvalidRecipient",
            ),
            (
                "awssource",
                Box::new(|m| {
                    m.insert("eventSource".into(), json!("iam.amazonaws.com"));
                }),
                "InvalidEventSource",
            ),
            (
                "agentsource",
                Box::new(|m| {
                    m.insert("eventSource".into(), json!("groundtrail.onprem.internal"));
                }),
                "InvalidEventSource",
            ),
            (
                "hostsource",
                Box::new(|m| {
                    m.insert("eventSource".into(), json!("systemd.onprem.internal"));
                }),
                "InvalidEventSource",
            ),
            (
                "awssourcecase",
                Box::new(|m| {
                    m.insert("eventSource".into(), json!("IAM.AmazonAWS.com"));
                }),
                "InvalidEventSource",
            ),
            (
                "agentsourcecase",
                Box::new(|m| {
                    m.insert("eventSource".into(), json!("GroundTrail.OnPrem.Internal"));
                }),
                "InvalidEventSource",
            ),
            (
                "hostsourcecase",
                Box::new(|m| {
                    m.insert("eventSource".into(), json!("SSHD.Onprem.Internal"));
                }),
                "InvalidEventSource",
            ),
        ];
        for (id, edit, code) in &edits {
            let mut d = good_data();
            edit(d.as_object_mut().unwrap());
            cases.push((event(id, &d), code));
        }
        let mut events: Vec<Value> = cases.iter().map(|(e, _)| e.clone()).collect();
        events.push(event("good1", &good_data()));
        events.push(with_checksum("good2", &data));
        let resp = call(&ep, events).await.unwrap();
        let ids: Vec<&str> = resp.successful.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, vec!["good1", "good2"]);
        assert_eq!(resp.failed.len(), cases.len());
        for ((ev, code), failure) in cases.iter().zip(&resp.failed) {
            assert_eq!(failure.id, ev["id"].as_str().unwrap());
            assert_eq!(
                failure.error_code, *code,
                "{}: {}",
                failure.id, failure.error_message
            );
            assert!(!failure.error_message.is_empty());
        }
        assert_eq!(buffer.read_from(0, 1000, usize::MAX).unwrap().len(), 2);
    }

    #[tokio::test]
    async fn request_level_errors_refuse_the_call() {
        let dir = tempfile::tempdir().unwrap();
        let (ep, buffer) = endpoint(dir.path());
        let g = good_data();
        let code = |r: Result<PutAuditEventsResponse, RequestError>| r.unwrap_err().code;
        assert_eq!(code(call(&ep, vec![]).await), "ValidationException");
        let many: Vec<Value> = (0..101).map(|i| event(&format!("e{i}"), &g)).collect();
        assert_eq!(code(call(&ep, many).await), "ValidationException");
        let hundred: Vec<Value> = (0..100).map(|i| event(&format!("e{i}"), &g)).collect();
        assert_eq!(call(&ep, hundred).await.unwrap().successful.len(), 100);
        assert_eq!(
            code(call(&ep, vec![event("a", &g), event("a", &g)]).await),
            "DuplicatedAuditEventId"
        );
        assert_eq!(
            code(call(&ep, vec![event("a b", &g)]).await),
            "ValidationException"
        );
        assert_eq!(
            code(call(&ep, vec![event(&"x".repeat(129), &g)]).await),
            "ValidationException"
        );
        assert_eq!(
            code(call(&ep, vec![event("", &g)]).await),
            "ValidationException"
        );
        assert_eq!(
            code(call(&ep, vec![json!({"id": "a"})]).await),
            "ValidationException"
        );
        assert_eq!(
            code(
                call(
                    &ep,
                    vec![json!({"id": "a", "eventData": {"not": "a string"}})]
                )
                .await
            ),
            "ValidationException"
        );
        // A list holding a call is not a call.
        let list = format!("[{}]", json!({ "auditEvents": [event("a", &g)] }));
        let err = ep
            .put_audit_events(None, list.as_bytes(), ConnInfo::default())
            .await
            .unwrap_err();
        assert_eq!(err.code, "ValidationException");
        let err = ep
            .put_audit_events(None, b"{not json", ConnInfo::default())
            .await
            .unwrap_err();
        assert_eq!(err.code, "SerializationException");
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        let err = ep
            .put_audit_events(None, &big, ConnInfo::default())
            .await
            .unwrap_err();
        assert_eq!(err.code, "ValidationException");
        // Only the 100-event call stored anything.
        assert_eq!(buffer.read_from(0, 1000, usize::MAX).unwrap().len(), 100);
    }

    #[test]
    fn query_values_round_trip() {
        let arn = "arn:aws:cloudtrail:us-east-1:123456789012:channel/x y+z";
        assert_eq!(percent::decode_query(&percent::encode(arn)), arn);
        assert_eq!(percent::decode_query("a%2"), "a%2");
        assert_eq!(percent::decode_query("%zz%41"), "%zzA");
    }
}
