//! From one HTTP exchange to one CloudTrail record.
//!
//! The proxy gathers what it learns while the call passes through — the request line, identity,
//! route, the first bytes of the bodies, the status, byte counts — and [`RecordBuilder::build`]
//! turns that into a record shaped like an AWS API call:
//!
//! | member | from |
//! | --- | --- |
//! | `eventSource` | `event_source` in the config (default `api.<domain>`) |
//! | `eventName`, `readOnly`, `resources` | the route table ([`super::routes`]) |
//! | `requestParameters` | path parameters, then query parameters, then the members of a JSON object body (later ones win a name clash; a non-object JSON body goes under `body`), redacted, capped at 100 KB |
//! | `responseElements` | the JSON body of a 2xx answer, only with `record_response = true`, redacted, capped |
//! | `errorCode`, `errorMessage` | answers >= 400 and proxy failures ([`error_fields`]) |
//! | `sourceIPAddress` | the peer, or `X-Forwarded-For` when the peer is a trusted proxy |
//! | `userAgent`, `requestID` | the request (`requestID` generated when absent) |
//! | `tlsDetails` | the TLS session, when the sidecar terminates TLS |
//! | `additionalEventData` | `identity` (how the caller was identified), `httpStatus`, `protocol`, `bytesTransferredIn`/`Out` (as S3 data events name them), `durationMs`, `responseComplete`, `upgrade`, captured `headers` |
//!
//! 1xx-3xx answers are successes (a redirect or `304 Not Modified` is not a failed call).

use std::time::Duration;

use groundtrail_common::event::{
    MAX_ADDITIONAL_BYTES, MAX_SHORT_FIELD_BYTES, Record, TlsDetails, UserIdentity,
};
use serde_json::{Map, Value, json};

use super::redact::{Redactor, cap, json_len, omitted, query_object, truncate};
use super::routes::RouteMatch;
use crate::host_identity::HostIdentity;

/// What the request side contributes, fixed before the call is forwarded.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// `HTTP/1.1`, `HTTP/2`.
    pub protocol: String,
    pub route: RouteMatch,
    pub identity: UserIdentity,
    pub identity_note: Value,
    pub source_ip: String,
    pub user_agent: Option<String>,
    pub request_id: String,
    pub tls: Option<TlsDetails>,
    /// Captured (and already redacted) request headers.
    pub headers: Map<String, Value>,
    /// The `Upgrade` protocol asked for (e.g. `websocket`).
    pub upgrade: Option<String>,
}

/// A body prefix captured while it streamed through.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Captured {
    /// The first bytes, at most the capture limit.
    pub bytes: Vec<u8>,
    /// All bytes that passed, captured or not.
    pub total: u64,
    /// More than the limit passed: `bytes` is only a prefix.
    pub overflow: bool,
    /// The body ended normally (not aborted).
    pub complete: bool,
    /// The body was JSON by its `Content-Type`.
    pub json: bool,
    /// The body was text by its `Content-Type` (used for error messages).
    pub text: bool,
    /// The capture limit.
    pub limit: usize,
}

/// What the answer contributes.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The status sent to the client (the upstream's, or the proxy's own 502/503/504).
    pub status: u16,
    /// Set when the proxy answered itself: (errorCode, errorMessage).
    pub proxy_error: Option<(String, String)>,
    pub request_body: Option<Captured>,
    pub response_body: Option<Captured>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The response body reached its end (false: the client went away or the upstream failed).
    pub response_complete: bool,
    /// The response body failed (upstream error mid-stream).
    pub response_error: Option<String>,
    pub duration: Duration,
}

/// Settings that shape every record.
#[derive(Debug, Clone)]
pub struct RecordBuilder {
    pub event_source: String,
    /// The host: every record's `awsRegion` and `recipientAccountId`.
    pub host: HostIdentity,
    pub management: bool,
    pub redactor: Redactor,
    pub max_parameters: usize,
    pub record_response: bool,
}

impl RecordBuilder {
    fn base(&self, req: &RequestInfo) -> Record {
        let mut r = Record::new(
            self.event_source.clone(),
            req.route.event_name.clone(),
            "AwsApiCall",
            self.host.region.clone(),
            self.host.account_id.clone(),
        );
        r.user_identity = Some(req.identity.clone());
        r.source_ip_address = Some(req.source_ip.clone());
        r.user_agent = req
            .user_agent
            .as_deref()
            .map(|u| truncate(u, MAX_SHORT_FIELD_BYTES));
        r.request_id = Some(truncate(&req.request_id, MAX_SHORT_FIELD_BYTES));
        r.read_only = Some(req.route.read_only);
        if !req.route.resources.is_empty() {
            r.resources = Some(req.route.resources.clone());
        }
        if !self.management {
            r.management_event = Some(false);
            r.event_category = Some("Data".into());
        }
        r.tls_details = req.tls.clone();
        r
    }

    /// The write-ahead record of `fail_closed`: what is known before the call is forwarded.
    /// `requestParameters` holds path and query parameters only (the body has not been read).
    pub fn write_ahead(&self, req: &RequestInfo) -> Record {
        let mut r = self.base(req);
        r.request_parameters = Some(self.request_parameters(req, None));
        let mut extra = self.additional(req, None);
        extra.insert("phase".into(), json!("request"));
        extra.insert(
            "note".into(),
            json!("written before forwarding (fail_closed); the outcome is the record whose addendum.originalEventID is this eventID"),
        );
        r.additional_event_data = Some(cap_additional(extra));
        r
    }

    /// The record of a finished call. `write_ahead` is the eventID of the write-ahead record
    /// (fail_closed), which this record then updates (`addendum`, reason `UPDATED_DATA`).
    pub fn build(&self, req: &RequestInfo, out: &Outcome, write_ahead: Option<&str>) -> Record {
        let mut r = self.base(req);
        r.request_parameters = Some(self.request_parameters(req, out.request_body.as_ref()));
        if self.record_response
            && (200..300).contains(&out.status)
            && let Some(v) = out.response_body.as_ref().and_then(|c| self.body_value(c))
        {
            r.response_elements = Some(v);
        }
        if let Some((code, msg)) = &out.proxy_error {
            r.error_code = Some(truncate(code, MAX_SHORT_FIELD_BYTES));
            r.error_message = Some(truncate(msg, MAX_SHORT_FIELD_BYTES));
        } else if out.status >= 400 {
            let (code, msg) = error_fields(out.status, out.response_body.as_ref());
            r.error_code = Some(truncate(&code, MAX_SHORT_FIELD_BYTES));
            r.error_message = Some(truncate(&msg, MAX_SHORT_FIELD_BYTES));
        } else if let Some(e) = &out.response_error {
            r.error_code = Some("UpstreamResponseAborted".into());
            r.error_message = Some(truncate(
                &format!("the upstream failed while sending the response body: {e}"),
                MAX_SHORT_FIELD_BYTES,
            ));
        }
        r.additional_event_data = Some(cap_additional(self.additional(req, Some(out))));
        if let Some(original) = write_ahead {
            let mut a = Map::new();
            a.insert("reason".into(), json!("UPDATED_DATA"));
            a.insert(
                "updatedFields".into(),
                json!("eventTime,requestParameters,responseElements,errorCode,errorMessage,additionalEventData"),
            );
            a.insert("originalRequestID".into(), json!(r.request_id));
            a.insert("originalEventID".into(), json!(original));
            r.addendum = Some(a);
        }
        r
    }

    fn additional(&self, req: &RequestInfo, out: Option<&Outcome>) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("identity".into(), req.identity_note.clone());
        m.insert("protocol".into(), json!(req.protocol));
        if let Some(o) = out {
            m.insert("httpStatus".into(), json!(o.status));
            m.insert("bytesTransferredIn".into(), json!(o.bytes_in));
            m.insert("bytesTransferredOut".into(), json!(o.bytes_out));
            m.insert(
                "durationMs".into(),
                json!((o.duration.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0),
            );
            m.insert("responseComplete".into(), json!(o.response_complete));
        }
        if let Some(u) = &req.upgrade {
            m.insert("upgrade".into(), json!(truncate(u, 64)));
        }
        if !req.route.matched {
            m.insert("routeMatched".into(), json!(false));
        }
        if !req.headers.is_empty() {
            m.insert("headers".into(), Value::Object(req.headers.clone()));
        }
        m
    }

    /// The JSON of a captured body, redacted; the cap marker if it was too large.
    fn body_value(&self, c: &Captured) -> Option<Value> {
        if !c.json || c.total == 0 {
            return None;
        }
        if c.overflow {
            return Some(omitted(c.total, c.limit, "body over the limit"));
        }
        if !c.complete {
            return Some(
                json!({"omitted": true, "reason": "body incomplete", "originalSize": c.total}),
            );
        }
        let mut v: Value = serde_json::from_slice(&c.bytes).ok()?;
        self.redactor.redact(&mut v);
        Some(cap(v, self.max_parameters))
    }

    fn request_parameters(&self, req: &RequestInfo, body: Option<&Captured>) -> Value {
        let mut m = Map::new();
        for (k, v) in &req.route.params {
            m.insert(k.clone(), Value::String(v.clone()));
        }
        if let Some(q) = &req.query {
            for (k, v) in query_object(q) {
                m.insert(k, v);
            }
        }
        if let Some(c) = body
            && c.json
            && c.total > 0
        {
            if c.overflow || !c.complete {
                let marker = if c.overflow {
                    omitted(
                        c.total,
                        c.limit,
                        "request body over the limit; only path and query parameters are kept",
                    )
                } else {
                    json!({"omitted": true, "originalSize": c.total, "reason": "request body incomplete; only path and query parameters are kept"})
                };
                if let Value::Object(marker) = marker {
                    m.extend(marker);
                }
            } else {
                match serde_json::from_slice::<Value>(&c.bytes) {
                    Ok(Value::Object(o)) => m.extend(o),
                    Ok(other) => {
                        m.insert("body".into(), other);
                    }
                    Err(_) => {
                        m.insert("bodyNotJson".into(), json!(true));
                    }
                }
            }
        }
        if m.is_empty() {
            return Value::Null;
        }
        let mut v = Value::Object(m);
        self.redactor.redact(&mut v);
        cap(v, self.max_parameters)
    }
}

/// `additionalEventData` must stay under 28 KB: drop captured headers first, then everything
/// but the identity note and status.
fn cap_additional(mut m: Map<String, Value>) -> Value {
    if json_len(&Value::Object(m.clone())) <= MAX_ADDITIONAL_BYTES {
        return Value::Object(m);
    }
    m.remove("headers");
    m.insert("headersOmitted".into(), json!(true));
    let v = Value::Object(m);
    if json_len(&v) <= MAX_ADDITIONAL_BYTES {
        return v;
    }
    let mut small = Map::new();
    for k in [
        "httpStatus",
        "protocol",
        "bytesTransferredIn",
        "bytesTransferredOut",
    ] {
        if let Some(x) = v.get(k) {
            small.insert(k.into(), x.clone());
        }
    }
    small.insert("omitted".into(), json!(true));
    Value::Object(small)
}

/// `errorCode` and `errorMessage` of an answer >= 400.
///
/// From a JSON body: the code from `errorCode`, `code`, `__type` (AWS JSON protocols), `error`
/// (OAuth) or `type`, also inside an `error` object (`{"error": {"code", "message"}}`); the
/// message from `errorMessage`, `message`, `error_description`, `detail` or `title`. From a text
/// body: its first line as the message. Otherwise the HTTP status: code `NotFound`,
/// `TooManyRequests`, ... (the reason phrase without spaces), message `Not Found`.
pub fn error_fields(status: u16, body: Option<&Captured>) -> (String, String) {
    let (mut code, mut message) = (None::<String>, None::<String>);
    if let Some(c) = body.filter(|c| c.complete && !c.overflow) {
        if c.json {
            if let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(&c.bytes) {
                let mut scopes = vec![&o];
                if let Some(Value::Object(inner)) = o.get("error") {
                    scopes.insert(0, inner);
                }
                for s in scopes {
                    code = code.or_else(|| {
                        ["errorCode", "code", "__type", "error", "type"]
                            .iter()
                            .find_map(|k| scalar(s.get(*k)))
                    });
                    message = message.or_else(|| {
                        [
                            "errorMessage",
                            "message",
                            "error_description",
                            "detail",
                            "title",
                        ]
                        .iter()
                        .find_map(|k| scalar(s.get(*k)))
                    });
                }
            }
        } else if c.text {
            message = String::from_utf8_lossy(&c.bytes)
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(str::to_string);
        }
    }
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let status_code = if reason.is_empty() {
        format!("Http{status}")
    } else {
        reason
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(|w| {
                let mut cs = w.chars();
                cs.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + cs.as_str())
                    .unwrap_or_default()
            })
            .collect()
    };
    let code = code
        // AWS JSON `__type` may be `prefix#Code`.
        .map(|c| c.rsplit('#').next().unwrap_or(&c).to_string())
        .filter(|c| !c.is_empty())
        .unwrap_or(status_code);
    let message = message.unwrap_or_else(|| {
        if reason.is_empty() {
            format!("HTTP {status}")
        } else {
            reason.to_string()
        }
    });
    (code, message)
}

fn scalar(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder() -> RecordBuilder {
        RecordBuilder {
            event_source: "orders.onprem.internal".into(),
            host: crate::host_identity::testutil::web1(),
            management: true,
            redactor: Redactor::new(true, &[], &[]),
            max_parameters: 1024,
            record_response: true,
        }
    }

    fn req() -> RequestInfo {
        RequestInfo {
            method: "POST".into(),
            path: "/orders/7".into(),
            query: Some("dry=1&token=abc".into()),
            protocol: "HTTP/1.1".into(),
            route: RouteMatch {
                event_name: "UpdateOrder".into(),
                read_only: false,
                resources: vec![],
                params: vec![("id".into(), "7".into())],
                matched: true,
            },
            identity: UserIdentity {
                identity_type: Some("Unknown".into()),
                ..UserIdentity::default()
            },
            identity_note: json!({"source": "none", "verified": false}),
            source_ip: "10.0.0.9".into(),
            user_agent: Some("curl/8".into()),
            request_id: "rid-1".into(),
            tls: None,
            headers: Map::new(),
            upgrade: None,
        }
    }

    fn body(b: &str) -> Captured {
        Captured {
            bytes: b.as_bytes().to_vec(),
            total: b.len() as u64,
            overflow: false,
            complete: true,
            json: true,
            text: false,
            limit: 1024,
        }
    }

    #[test]
    fn parameters_merge_path_query_body_and_are_redacted() {
        let out = Outcome {
            status: 200,
            request_body: Some(body(r#"{"qty": 2, "password": "p"}"#)),
            response_body: Some(body(r#"{"ok": true, "apiKey": "k"}"#)),
            response_complete: true,
            ..Outcome::default()
        };
        let r = builder().build(&req(), &out, None);
        r.validate().unwrap();
        assert_eq!(
            r.request_parameters.unwrap(),
            json!({"id": "7", "dry": "1", "token": "HIDDEN_DUE_TO_SECURITY_REASONS", "qty": 2, "password": "HIDDEN_DUE_TO_SECURITY_REASONS"})
        );
        assert_eq!(
            r.response_elements.unwrap(),
            json!({"ok": true, "apiKey": "HIDDEN_DUE_TO_SECURITY_REASONS"})
        );
        assert!(r.error_code.is_none());
        assert_eq!(r.read_only, Some(false));
        assert_eq!(r.additional_event_data.as_ref().unwrap()["httpStatus"], 200);
    }

    #[test]
    fn oversized_body_is_marked() {
        let mut big = body("{");
        big.overflow = true;
        big.total = 5000;
        let out = Outcome {
            status: 201,
            request_body: Some(big),
            ..Outcome::default()
        };
        let p = builder()
            .build(&req(), &out, None)
            .request_parameters
            .unwrap();
        assert_eq!(p["omitted"], true);
        assert_eq!(p["originalSize"], 5000);
        assert_eq!(p["id"], "7");
    }

    #[test]
    fn errors_from_bodies_and_statuses() {
        assert_eq!(
            error_fields(404, None),
            ("NotFound".to_string(), "Not Found".to_string())
        );
        assert_eq!(error_fields(429, None).0, "TooManyRequests");
        assert_eq!(
            error_fields(599, None),
            ("Http599".to_string(), "HTTP 599".to_string())
        );
        let b = body(r#"{"error": {"code": "OrderLocked", "message": "order 7 is locked"}}"#);
        assert_eq!(
            error_fields(409, Some(&b)),
            ("OrderLocked".to_string(), "order 7 is locked".to_string())
        );
        let b = body(r#"{"__type": "com.example#ValidationException", "message": "bad qty"}"#);
        assert_eq!(error_fields(400, Some(&b)).0, "ValidationException");
        let b = body(r#"{"error": "invalid_grant", "error_description": "expired"}"#);
        assert_eq!(
            error_fields(400, Some(&b)),
            ("invalid_grant".to_string(), "expired".to_string())
        );
        let mut t = body("\n  upstream exploded\nstack...");
        t.json = false;
        t.text = true;
        assert_eq!(error_fields(500, Some(&t)).1, "upstream exploded");
        let out = Outcome {
            status: 503,
            ..Outcome::default()
        };
        let r = builder().build(&req(), &out, None);
        assert_eq!(r.error_code.as_deref(), Some("ServiceUnavailable"));
    }

    #[test]
    fn write_ahead_and_its_update() {
        let b = builder();
        let wa = b.write_ahead(&req());
        wa.validate().unwrap();
        assert_eq!(
            wa.additional_event_data.as_ref().unwrap()["phase"],
            "request"
        );
        let fin = b.build(
            &req(),
            &Outcome {
                status: 200,
                ..Outcome::default()
            },
            Some(&wa.event_id),
        );
        let a = fin.addendum.unwrap();
        assert_eq!(a["reason"], "UPDATED_DATA");
        assert_eq!(a["originalEventID"], json!(wa.event_id));
        assert_ne!(fin.event_id, wa.event_id);
    }
}
