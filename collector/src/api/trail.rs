//! The calls that read and change what the trail records: `GetEventSelectors` (read scope),
//! `PutEventSelectors`, `StartLogging`, `StopLogging` (write scope). The settings themselves
//! live in [`crate::trail_control`].
//!
//! Every call of the three that change the trail, once its signature is verified, is itself
//! recorded as a management event (`eventSource` `cloudtrail.amazonaws.com`, as AWS records
//! it), committed through the journal before the answer, with `errorCode`/`errorMessage` when it
//! was refused (a caller without the write scope included). The trail always takes these
//! records (see [`crate::trail_control`]).
//!
//! **No change without its record.** A change is made durable, then its record; when the
//! record cannot be committed (the journal refuses), the change is taken back and the call
//! answers `500`. Changes are serialized ([`crate::trail_control::TrailControl::lock`]), so a
//! concurrent `StopLogging` and `PutEventSelectors` both take effect, one after the other.

use std::net::IpAddr;

use serde_json::{Map, Value, json};

use super::{Api, ApiError, TrailView, internal};
use crate::config::Scope;
use crate::selectors::Selectors;
use crate::sigv4::Caller;
use crate::trail_control::CLOUDTRAIL_SOURCE;

/// The peer's address, put into the request's extensions by the server.
#[derive(Debug, Clone, Copy)]
pub struct PeerIp(pub IpAddr);

/// A changing call, as received.
#[derive(Clone, Copy)]
struct Call<'a> {
    op: &'a str,
    parts: &'a http::request::Parts,
    caller: &'a Caller,
    input: &'a Map<String, Value>,
}

/// What a changing call changes.
enum Change {
    Selectors(Selectors),
    Logging(bool),
}

/// The operations served here.
pub const OPERATIONS: [&str; 4] = [
    "GetEventSelectors",
    "PutEventSelectors",
    "StartLogging",
    "StopLogging",
];

impl Api {
    /// Serves one of [`OPERATIONS`].
    pub(super) async fn trail_operation(
        &self,
        op: &str,
        parts: &http::request::Parts,
        caller: &Caller,
        input: &Map<String, Value>,
    ) -> Result<Value, ApiError> {
        if op == "GetEventSelectors" {
            caller.require(Scope::Read)?;
            let (_, view) = self.trail_in(input, "TrailName")?;
            return Ok(self.selectors_answer(view, &self.current_selectors(view)));
        }
        let call = Call {
            op,
            parts,
            caller,
            input,
        };
        // The trail is found before anything is recorded: a call naming no trail of ours is
        // refused like any malformed call, and recorded against the primary trail.
        let field = if op == "PutEventSelectors" {
            "TrailName"
        } else {
            "Name"
        };
        let view = match self.trail_in(input, field) {
            Ok((_, v)) => v,
            Err(e) => {
                self.record(&call, &self.trails[0], &Err(e.clone())).await?;
                return Err(e);
            }
        };
        let Some(control) = view.control.as_ref() else {
            return Err(ApiError::bad(
                "UnsupportedOperationException",
                "this collector serves no trail settings",
            ));
        };
        // One change at a time, from the check to its record (or its undo).
        let _one = control.lock().await;
        let prepared = self.prepare(&call, view);
        let (change, answer) = match prepared {
            Ok(p) => p,
            Err(e) => {
                // Refused before anything changed: recorded with its error.
                self.record(&call, view, &Err(e.clone())).await?;
                return Err(e);
            }
        };
        let before = control.snapshot();
        let applied = match change {
            Change::Selectors(s) => control.put_selectors(s).await,
            Change::Logging(on) => control.set_logging(on).await,
        };
        if let Err(e) = applied {
            let e = internal(e);
            self.record(&call, view, &Err(e.clone())).await?;
            return Err(e);
        }
        // The change is in force; without its record it must not stay.
        let answered = Ok(answer);
        if let Err(e) = self.record(&call, view, &answered).await {
            if let Err(u) = control.restore(before).await {
                tracing::error!(
                    "{op}: the change could not be recorded and could not be taken back ({u}); it stays in force unrecorded"
                );
            }
            return Err(e);
        }
        tracing::warn!(
            trail = %view.spec.name,
            "{op}: {}",
            match op {
                "PutEventSelectors" => "the trail's event selectors changed",
                "StopLogging" => "the trail stopped logging",
                _ => "the trail is logging",
            }
        );
        answered
    }

    /// Checks a changing call and says what it will change and answer; nothing changes here.
    fn prepare(&self, call: &Call<'_>, view: &TrailView) -> Result<(Change, Value), ApiError> {
        call.caller.require(Scope::Write)?;
        match call.op {
            "PutEventSelectors" => {
                let selectors = Selectors::from_api(call.input)
                    .map_err(|e| ApiError::bad(e.code, e.message.clone()))?;
                let answer = self.selectors_answer(view, &selectors);
                Ok((Change::Selectors(selectors), answer))
            }
            "StartLogging" => Ok((Change::Logging(true), json!({}))),
            "StopLogging" => Ok((Change::Logging(false), json!({}))),
            other => Err(ApiError::bad(
                "UnknownOperationException",
                format!("{other} is not supported by this collector"),
            )),
        }
    }

    /// A trail's selectors in force (the config's when the API runs without trail settings).
    pub(super) fn current_selectors(&self, view: &TrailView) -> Selectors {
        view.control
            .as_ref()
            .map(|c| c.selectors())
            .unwrap_or_else(|| view.spec.selectors.clone())
    }

    fn selectors_answer(&self, view: &TrailView, selectors: &Selectors) -> Value {
        let mut out = Map::new();
        out.insert("TrailARN".into(), json!(self.arn_of(view)));
        if let Value::Object(m) = selectors.to_api() {
            out.extend(m);
        }
        Value::Object(out)
    }

    /// Commits the record of a trail-changing call (see the module doc) and waits until it
    /// is durable. A record that would be refused for its size (a large selector set) keeps
    /// only the trail's name in `requestParameters` and `responseElements`.
    async fn record(
        &self,
        call: &Call<'_>,
        view: &TrailView,
        result: &Result<Value, ApiError>,
    ) -> Result<(), ApiError> {
        // An unsigned (loopback) caller is no one to name; it is refused before any change.
        let (Some(ingest), Some(_)) = (&self.ingest, &call.caller.access_key_id) else {
            return Ok(());
        };
        let parse = |v: &Value| {
            groundtrail_common::Record::from_json(&serde_json::to_vec(v).unwrap_or_default())
        };
        let mut json = self.call_record(call, view, result);
        let record = match parse(&json) {
            Ok(r) => r,
            Err(_) => {
                let name = call
                    .input
                    .get("TrailName")
                    .or_else(|| call.input.get("Name"))
                    .cloned()
                    .unwrap_or(Value::Null);
                json["requestParameters"] = json!({"trailName": name});
                if json["responseElements"].is_object() {
                    json["responseElements"] = json!({"trailARN": self.arn_of(view)});
                }
                parse(&json).map_err(|e| internal(format!("the record of {}: {e}", call.op)))?
            }
        };
        ingest
            .commit_records(vec![record])
            .await
            .map_err(internal)?;
        Ok(())
    }

    /// The record of `call` with its `result`, as CloudTrail writes a call to its API.
    fn call_record(
        &self,
        call: &Call<'_>,
        view: &TrailView,
        result: &Result<Value, ApiError>,
    ) -> Value {
        let Call {
            op,
            parts,
            caller,
            input,
        } = *call;
        let t = &self.config.trail;
        let key = caller.access_key_id.clone().unwrap_or_default();
        let account = self.account();
        let mut r = json!({
            "eventVersion": groundtrail_common::event::EVENT_VERSION,
            "userIdentity": {
                "type": "IAMUser",
                "principalId": key,
                "arn": format!("arn:{}:iam::{account}:user/{key}", t.partition),
                "accountId": account,
                "accessKeyId": key,
                "userName": key,
            },
            "eventTime": groundtrail_common::time::json_time(groundtrail_common::time::now_secs()),
            "eventSource": CLOUDTRAIL_SOURCE,
            "eventName": op,
            "awsRegion": view.spec.home_region,
        });
        let m = r.as_object_mut().expect("an object");
        if let Some(PeerIp(ip)) = parts.extensions.get::<PeerIp>() {
            m.insert("sourceIPAddress".into(), json!(ip.to_string()));
        }
        if let Some(ua) = parts
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
        {
            let ua: String = ua.chars().take(1024).collect();
            m.insert("userAgent".into(), json!(ua));
        }
        if let Err(e) = result {
            m.insert("errorCode".into(), json!(e.code));
            let msg: String = e.message.chars().take(1024).collect();
            m.insert("errorMessage".into(), json!(msg));
        }
        m.insert(
            "requestParameters".into(),
            lower_camel(&Value::Object(input.clone())),
        );
        m.insert(
            "responseElements".into(),
            match result {
                Ok(v) if v.as_object().is_some_and(|o| !o.is_empty()) => lower_camel(v),
                _ => Value::Null,
            },
        );
        m.insert("requestID".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("eventID".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("readOnly".into(), json!(false));
        m.insert("eventType".into(), json!("AwsApiCall"));
        m.insert("managementEvent".into(), json!(true));
        m.insert("recipientAccountId".into(), json!(account));
        m.insert("eventCategory".into(), json!("Management"));
        r
    }
}

/// The API's PascalCase members as CloudTrail writes them in `requestParameters`
/// (`TrailName` -> `trailName`); values are kept.
fn lower_camel(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let mut c = k.chars();
                    let k = match c.next() {
                        Some(f) => f.to_lowercase().chain(c).collect(),
                        None => String::new(),
                    };
                    (k, lower_camel(v))
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(lower_camel).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_members_are_written_lower_camel() {
        let v = lower_camel(&json!({"TrailName": "t", "AdvancedEventSelectors": [
            {"Name": "n", "FieldSelectors": [{"Field": "resources.ARN", "StartsWith": ["arn:X"]}]}
        ]}));
        assert_eq!(
            v,
            json!({"trailName": "t", "advancedEventSelectors": [
                {"name": "n", "fieldSelectors": [{"field": "resources.ARN", "startsWith": ["arn:X"]}]}
            ]})
        );
    }
}
