//! The CloudTrail-compatible API, on the collector's listener beside `/v1/events`, so the
//! unmodified AWS CLI and SDKs work against the collector with `--endpoint-url`:
//!
//! - control plane (awsJson1_1): `POST /` with `X-Amz-Target:
//!   com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.<Operation>`, SigV4 service
//!   `cloudtrail`: `ListPublicKeys`, `DescribeTrails`, `GetTrail`, `GetTrailStatus`,
//!   `GetInsightSelectors`, `LookupEvents` (management events, or Insights records with
//!   `EventCategory: insight`), and `PutInsightSelectors`, which is refused: the insight
//!   selectors are the collector's `[insights] types`, read at start-up; the trail's settings,
//!   `GetEventSelectors`, `PutEventSelectors`, `StartLogging`, `StopLogging` ([`trail`]);
//! - `cloudtrail-data` (REST-JSON): `POST /PutAuditEvents?channelArn=...[&externalId=...]`,
//!   SigV4 service `cloudtrail-data` (see [`crate::api::Api::put_audit_events`]).
//!
//! Errors are `{"__type": "<code>", "message": "..."}` with AWS's codes, which botocore turns
//! into the same `ClientError`s the CLI prints for real CloudTrail.
//! Authentication is [`crate::sigv4`]: read operations need the `read` scope, PutAuditEvents,
//! PutInsightSelectors, PutEventSelectors, StartLogging and StopLogging `write`.

use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use groundtrail_common::trail::SigningKey;
use http::StatusCode;
use serde_json::{Map, Value, json};

use crate::config::{Config, Scope};
use crate::history::{Attribute, History, Query};
use crate::ingest::Ingest;
use crate::journal::Journal;
use crate::sigv4::{ApiError, Caller, Verifier};

pub mod trail;

/// `X-Amz-Target` prefix of the control-plane operations.
pub const TARGET_PREFIX: &str = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.";
/// The REST path of `PutAuditEvents`.
pub const PUT_AUDIT_EVENTS_PATH: &str = "/PutAuditEvents";
/// Largest request body the API reads (PutAuditEvents' 1 MB plus room for the JSON around it
/// is checked by the operation itself; this bounds memory).
pub const MAX_API_BODY_BYTES: usize = 1024 * 1024 + 64 * 1024;
/// Longest `AttributeValue`, counting `_`, space, `,` and newline double as AWS does.
const MAX_ATTRIBUTE_VALUE: usize = 2000;

/// A public key as `ListPublicKeys` lists it.
#[derive(Debug, Clone)]
pub struct PublicKey {
    pub der: Vec<u8>,
    pub fingerprint: String,
    pub valid_from: DateTime<Utc>,
    /// `None`: the current key, valid until now (and on).
    pub valid_until: Option<DateTime<Utc>>,
}

/// Everything the API answers from.
pub struct Api {
    config: Config,
    keys: Vec<PublicKey>,
    journal: Arc<Journal>,
    history: Arc<History>,
    verifier: Verifier,
    started: DateTime<Utc>,
    ingest: Option<Arc<Ingest>>,
    /// The rule engine and its alerts, for Groundtrail's detection operations
    /// ([`crate::detection_api`]); `None` with `[detection] enabled = false`.
    detector: Option<Arc<crate::detector::Detector>>,
    /// The trails, the primary one first.
    trails: Vec<TrailView>,
}

/// One trail as the API serves it.
#[derive(Debug, Clone)]
pub struct TrailView {
    /// What it is.
    pub spec: crate::trails::TrailSpec,
    /// Its journal (delivery status for `GetTrailStatus`).
    pub journal: Arc<Journal>,
    /// Its run-time settings (logging, event selectors); `None`: logging, the config's
    /// selectors, and the calls that change them are refused.
    pub control: Option<Arc<crate::trail_control::TrailControl>>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").finish_non_exhaustive()
    }
}

/// Why the API could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ApiSetupError {
    #[error("{0}")]
    Trails(String),
    #[error("[[signing.retired_keys]] {path}: {why}")]
    RetiredKey { path: String, why: String },
}

/// The DER of a PKCS#1 `RSA PUBLIC KEY` PEM (what `keygen` prints).
pub use groundtrail_common::trail::public_key::pkcs1_der_from_pem as public_key_der_from_pem;

impl Api {
    /// Builds the API for `config`: the current signing key (valid since its file was
    /// written) and every retired key with its configured window.
    pub fn new(
        config: &Config,
        key: &SigningKey,
        journal: Arc<Journal>,
        history: Arc<History>,
        ingest: Option<Arc<Ingest>>,
    ) -> Result<Api, ApiSetupError> {
        let now = groundtrail_common::time::now_secs();
        let current_from = std::fs::metadata(&config.signing.key_file)
            .and_then(|m| m.modified())
            .map(DateTime::<Utc>::from)
            .unwrap_or(now)
            .min(now);
        let mut keys = vec![PublicKey {
            der: key.public_key_der().to_vec(),
            fingerprint: key.fingerprint().to_string(),
            valid_from: current_from,
            valid_until: None,
        }];
        for r in &config.signing.retired_keys {
            let path = r.public_key_file.display().to_string();
            let err = |why: String| ApiSetupError::RetiredKey {
                path: path.clone(),
                why,
            };
            let text =
                std::fs::read_to_string(&r.public_key_file).map_err(|e| err(e.to_string()))?;
            let der = public_key_der_from_pem(&text).map_err(err)?;
            let from =
                groundtrail_common::time::parse_json_time(&r.valid_from).ok_or_else(|| {
                    err(format!(
                        "valid_from {:?} is not YYYY-MM-DDTHH:MM:SSZ",
                        r.valid_from
                    ))
                })?;
            let until =
                groundtrail_common::time::parse_json_time(&r.valid_until).ok_or_else(|| {
                    err(format!(
                        "valid_until {:?} is not YYYY-MM-DDTHH:MM:SSZ",
                        r.valid_until
                    ))
                })?;
            keys.push(PublicKey {
                fingerprint: groundtrail_common::trail::fingerprint(&der),
                der,
                valid_from: from,
                valid_until: Some(until),
            });
        }
        let primary = config
            .trail_specs()
            .map_err(ApiSetupError::Trails)?
            .swap_remove(0);
        Ok(Api {
            trails: vec![TrailView {
                spec: primary,
                journal: journal.clone(),
                control: None,
            }],
            config: config.clone(),
            keys,
            journal,
            history,
            verifier: Verifier::new(&config.api.access_keys, config.api.max_clock_skew.get())
                .with_unsigned_loopback_reads(config.api.allow_unsigned_loopback_reads),
            started: now,
            ingest,
            detector: None,
        })
    }

    /// Serves `trails` (the primary one first): `DescribeTrails`, `GetTrail`,
    /// `GetTrailStatus`, and each trail's settings (`GetEventSelectors`, `PutEventSelectors`,
    /// `StartLogging`, `StopLogging`) from its control.
    pub fn with_trails(mut self, trails: Vec<TrailView>) -> Api {
        if !trails.is_empty() {
            self.trails = trails;
        }
        self
    }

    /// Serves the detection operations from `detector`.
    pub fn with_detector(mut self, detector: Option<Arc<crate::detector::Detector>>) -> Api {
        self.detector = detector;
        self
    }

    /// Whether a request is for the API (rather than ingest or metrics).
    pub fn is_api_request(parts: &http::request::Parts) -> bool {
        let path = parts.uri.path();
        (path == "/" && parts.headers.contains_key("x-amz-target")) || path == PUT_AUDIT_EVENTS_PATH
    }

    /// Answers one API request whose body was read. `loopback`: the peer's address.
    pub async fn handle(
        &self,
        parts: &http::request::Parts,
        body: Bytes,
        loopback: bool,
    ) -> (StatusCode, Vec<u8>, &'static str) {
        let detection_op = parts
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .and_then(|t| t.strip_prefix(crate::detection_api::TARGET_PREFIX));
        let result = if parts.uri.path() == PUT_AUDIT_EVENTS_PATH {
            self.put_audit_events(parts, body, loopback)
                .await
                .map(|v| (v, "application/json"))
        } else if let Some(op) = trail_op(parts) {
            match self.verified_input(parts, &body, loopback) {
                Ok((caller, input)) => self
                    .trail_operation(op, parts, &caller, &input)
                    .await
                    .map(|v| (v, "application/x-amz-json-1.1")),
                Err(e) => Err(e),
            }
        } else if let Some(op) = detection_op {
            match self.verified_input(parts, &body, loopback) {
                Ok((caller, input)) => {
                    crate::detection_api::handle(self.detector.as_ref(), op, &input, &caller)
                        .await
                        .map(|v| (v, "application/x-amz-json-1.1"))
                }
                Err(e) => Err(e),
            }
        } else {
            self.control(parts, &body, loopback)
                .map(|v| (v, "application/x-amz-json-1.1"))
        };
        match result {
            Ok((v, ct)) => (
                StatusCode::OK,
                serde_json::to_vec(&v).unwrap_or_default(),
                ct,
            ),
            Err(e) => {
                tracing::info!(code = e.code, "API request refused: {}", e.message);
                let ct = if parts.uri.path() == PUT_AUDIT_EVENTS_PATH {
                    "application/json"
                } else {
                    "application/x-amz-json-1.1"
                };
                (e.status, e.body(), ct)
            }
        }
    }

    fn verify(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
        service: &str,
        loopback: bool,
    ) -> Result<Caller, ApiError> {
        self.verifier
            .verify(parts, body, service, loopback, SystemTime::now())
    }

    fn control(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
        loopback: bool,
    ) -> Result<Value, ApiError> {
        if parts.method != http::Method::POST {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "the CloudTrail API takes POST",
            ));
        }
        let target = parts
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let op = target.strip_prefix(TARGET_PREFIX).ok_or_else(|| {
            ApiError::bad(
                "UnknownOperationException",
                format!("X-Amz-Target {target:?} is not a CloudTrail operation"),
            )
        })?;
        let (caller, input) = self.verified_input(parts, body, loopback)?;
        caller.require(if op == "PutInsightSelectors" {
            Scope::Write
        } else {
            Scope::Read
        })?;
        match op {
            "ListPublicKeys" => self.list_public_keys(&input),
            "DescribeTrails" => Ok(self.describe_trails(&input)),
            "ListTrails" => Ok(self.list_trails()),
            "GetTrail" => self.get_trail(&input),
            "GetTrailStatus" => self.get_trail_status(&input),
            "GetInsightSelectors" => self.get_insight_selectors(&input),
            "PutInsightSelectors" => Err(put_insight_selectors_refused()),
            "LookupEvents" => self.lookup_events(&input, request_region(parts)),
            other => Err(ApiError::bad(
                "UnknownOperationException",
                format!("{other} is not supported by this collector"),
            )),
        }
    }

    /// The caller of a control-plane request (SigV4, service `cloudtrail`) and its JSON body.
    fn verified_input(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
        loopback: bool,
    ) -> Result<(Caller, Map<String, Value>), ApiError> {
        if parts.method != http::Method::POST {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "the API takes POST",
            ));
        }
        let caller = self.verify(parts, body, "cloudtrail", loopback)?;
        let input: Map<String, Value> = if body.is_empty() {
            Map::new()
        } else {
            match serde_json::from_slice(body) {
                Ok(Value::Object(m)) => m,
                Ok(_) => {
                    return Err(ApiError::bad(
                        "SerializationException",
                        "the request body must be a JSON object",
                    ));
                }
                Err(e) => {
                    return Err(ApiError::bad(
                        "SerializationException",
                        format!("the request body is not JSON: {e}"),
                    ));
                }
            }
        };
        Ok((caller, input))
    }

    /// The trail's account: `[trail] account_id`, else the first account with a chain.
    fn account(&self) -> String {
        if !self.config.trail.account_id.is_empty() {
            return self.config.trail.account_id.clone();
        }
        let dest = self
            .config
            .effective_destinations()
            .first()
            .map(|d| d.name())
            .unwrap_or_default();
        self.journal
            .chains(&dest)
            .ok()
            .and_then(|c| c.keys().next().map(|(a, _)| a.clone()))
            .unwrap_or_else(|| "000000000000".into())
    }

    /// The primary trail's ARN.
    pub fn trail_arn(&self) -> String {
        self.arn_of(&self.trails[0])
    }

    /// A trail's ARN.
    pub(crate) fn arn_of(&self, view: &TrailView) -> String {
        view.spec.arn(&self.config.trail.partition, &self.account())
    }

    /// `DescribeTrails`' and `GetTrail`'s description of a trail.
    fn trail(&self, view: &TrailView) -> Value {
        let t = &view.spec;
        let mut v = json!({
            "Name": t.name,
            "S3BucketName": t.bucket(),
            "IncludeGlobalServiceEvents": true,
            "IsMultiRegionTrail": true,
            "HomeRegion": t.home_region,
            "TrailARN": self.arn_of(view),
            "LogFileValidationEnabled": t.log_file_validation,
            "HasCustomEventSelectors": !self.current_selectors(view).is_default(),
            "HasInsightSelectors": !t.insight_types.is_empty(),
            "IsOrganizationTrail": t.organization_id.is_some(),
        });
        if !t.s3_key_prefix.is_empty()
            && let Some(m) = v.as_object_mut()
        {
            m.insert("S3KeyPrefix".into(), json!(t.s3_key_prefix));
        }
        v
    }

    /// The trail `name` (a trail name or its ARN) names.
    fn find_trail(&self, name: &str) -> Option<&TrailView> {
        self.trails.iter().find(|v| self.names(v, name))
    }

    /// Whether `name` is `view`'s name or its exact ARN.
    fn names(&self, view: &TrailView, name: &str) -> bool {
        name == view.spec.name || name == self.arn_of(view)
    }

    fn describe_trails(&self, input: &Map<String, Value>) -> Value {
        let wanted: Vec<&str> = input
            .get("trailNameList")
            .and_then(Value::as_array)
            .map(|l| l.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let list: Vec<Value> = self
            .trails
            .iter()
            .filter(|v| wanted.is_empty() || wanted.iter().any(|n| self.names(v, n)))
            .map(|v| self.trail(v))
            .collect();
        json!({ "trailList": list })
    }

    /// `ListTrails`: every trail's ARN, name and home region (one page: a collector has few).
    fn list_trails(&self) -> Value {
        let trails: Vec<Value> = self
            .trails
            .iter()
            .map(|v| {
                json!({"TrailARN": self.arn_of(v), "Name": v.spec.name, "HomeRegion": v.spec.home_region})
            })
            .collect();
        json!({ "Trails": trails })
    }

    /// The trail named (by name or ARN) in `field` of the input.
    pub(crate) fn trail_in<'i>(
        &self,
        input: &'i Map<String, Value>,
        field: &str,
    ) -> Result<(&'i str, &TrailView), ApiError> {
        let name = input.get(field).and_then(Value::as_str).ok_or_else(|| {
            ApiError::bad("InvalidParameterException", format!("{field} is required"))
        })?;
        match self.find_trail(name) {
            Some(view) => Ok((name, view)),
            None => Err(ApiError::bad(
                "TrailNotFoundException",
                format!("Unknown trail: {name} for the user: {}", self.account()),
            )),
        }
    }

    /// `GetInsightSelectors`: the trail's insight types, in their order; with none, AWS's
    /// answer for a trail without Insights.
    fn get_insight_selectors(&self, input: &Map<String, Value>) -> Result<Value, ApiError> {
        let (name, view) = self.trail_in(input, "TrailName")?;
        let types = &view.spec.insight_types;
        if types.is_empty() {
            return Err(ApiError::bad(
                "InsightNotEnabledException",
                format!("Trail {name} does not have Insights enabled."),
            ));
        }
        let selectors: Vec<Value> = types.iter().map(|t| json!({"InsightType": t})).collect();
        Ok(json!({"TrailARN": self.arn_of(view), "InsightSelectors": selectors}))
    }

    fn get_trail(&self, input: &Map<String, Value>) -> Result<Value, ApiError> {
        let (_, view) = self.trail_in(input, "Name")?;
        Ok(json!({"Trail": self.trail(view)}))
    }

    fn get_trail_status(&self, input: &Map<String, Value>) -> Result<Value, ApiError> {
        let (_, view) = self.trail_in(input, "Name")?;
        let status = view.journal.status().map_err(internal)?;
        let mut out = Map::new();
        let logging = view.control.as_ref().is_none_or(|c| c.is_logging());
        let changed = view
            .control
            .as_ref()
            .and_then(|c| c.logging_changed_at())
            .and_then(|s| DateTime::from_timestamp(s, 0));
        out.insert("IsLogging".into(), json!(logging));
        if logging {
            let since = changed.unwrap_or(self.started);
            out.insert("StartLoggingTime".into(), json!(since.timestamp()));
            out.insert(
                "TimeLoggingStarted".into(),
                json!(groundtrail_common::time::json_time(since)),
            );
        } else if let Some(at) = changed {
            out.insert("StopLoggingTime".into(), json!(at.timestamp()));
            out.insert(
                "TimeLoggingStopped".into(),
                json!(groundtrail_common::time::json_time(at)),
            );
        }
        for (name, value) in &status {
            let v = match value.parse::<i64>() {
                Ok(n) => json!(n),
                Err(_) => json!(value),
            };
            out.insert(name.clone(), v);
        }
        if let Some(t) = status
            .get("LatestDeliveryAttemptTime")
            .and_then(|v| v.parse::<i64>().ok())
            .and_then(|s| DateTime::from_timestamp(s, 0))
        {
            out.insert(
                "LatestDeliveryAttemptTime".into(),
                json!(groundtrail_common::time::json_time(t)),
            );
        }
        if let Some(t) = status
            .get("LatestDeliveryAttemptSucceeded")
            .and_then(|v| v.parse::<i64>().ok())
            .and_then(|s| DateTime::from_timestamp(s, 0))
        {
            out.insert(
                "LatestDeliveryAttemptSucceeded".into(),
                json!(groundtrail_common::time::json_time(t)),
            );
        }
        Ok(Value::Object(out))
    }

    fn list_public_keys(&self, input: &Map<String, Value>) -> Result<Value, ApiError> {
        let now = groundtrail_common::time::now_secs();
        let start = time_param(input, "StartTime")?;
        let end = time_param(input, "EndTime")?;
        if let (Some(s), Some(e)) = (start, end)
            && s > e
        {
            return Err(ApiError::bad(
                "InvalidTimeRangeException",
                "StartTime must be before EndTime",
            ));
        }
        let list: Vec<Value> = self
            .keys
            .iter()
            .filter(|k| {
                let until = k.valid_until.unwrap_or(now).timestamp() as f64;
                let from = k.valid_from.timestamp() as f64;
                // The current key is always listed: it signs every digest from now on.
                k.valid_until.is_none()
                    || (start.is_none_or(|s| until >= s) && end.is_none_or(|e| from <= e))
            })
            .map(|k| {
                json!({
                    "Value": base64::engine::general_purpose::STANDARD.encode(&k.der),
                    "ValidityStartTime": k.valid_from.timestamp(),
                    "ValidityEndTime": k.valid_until.unwrap_or(now).timestamp(),
                    "Fingerprint": k.fingerprint,
                })
            })
            .collect();
        Ok(json!({"PublicKeyList": list}))
    }

    /// `LookupEvents`, answered with the events of `region` (see [`request_region`]), or of
    /// every region when the request names none.
    fn lookup_events(
        &self,
        input: &Map<String, Value>,
        region: Option<String>,
    ) -> Result<Value, ApiError> {
        let req = LookupRequest::parse(input)?;
        let now = groundtrail_common::time::now_secs().timestamp().max(0) as u64;
        let retention = self.config.history.retention.get().as_secs();
        let binding = req.binding(region.as_deref());
        let (start, end, after) = match &req.next_token {
            Some(token) => {
                let t = NextToken::decode(token).ok_or_else(invalid_token)?;
                if t.binding != binding {
                    return Err(invalid_token());
                }
                (t.start, t.end, Some(t.after))
            }
            None => {
                let end = req.end.unwrap_or(now);
                let start = req.start.unwrap_or(now.saturating_sub(retention));
                (start, end, None)
            }
        };
        let query = Query {
            attribute: req.attribute.clone(),
            start,
            end,
            max_results: req.max_results,
            after,
            region,
            insight: req.insight,
        };
        let page = self.history.lookup(&query).map_err(internal)?;
        let events: Vec<Value> = page
            .events
            .iter()
            .map(|(s, json)| {
                // An Insights record's summary has only the name and source of its
                // insightDetails: its entry has no ReadOnly, AccessKeyId or Username, and
                // `Resources: []`, as on AWS.
                let mut e = Map::new();
                e.insert("EventId".into(), json!(s.event_id));
                if let Some(v) = &s.event_name {
                    e.insert("EventName".into(), json!(v));
                }
                if let Some(v) = &s.read_only {
                    e.insert("ReadOnly".into(), json!(v));
                }
                if let Some(v) = &s.access_key_id {
                    e.insert("AccessKeyId".into(), json!(v));
                }
                e.insert("EventTime".into(), json!(s.event_time));
                if let Some(v) = &s.event_source {
                    e.insert("EventSource".into(), json!(v));
                }
                if let Some(v) = &s.username {
                    e.insert("Username".into(), json!(v));
                }
                let resources: Vec<Value> = s
                    .resources
                    .iter()
                    .map(|(t, n)| {
                        let mut r = Map::new();
                        if let Some(t) = t {
                            r.insert("ResourceType".into(), json!(t));
                        }
                        if let Some(n) = n {
                            r.insert("ResourceName".into(), json!(n));
                        }
                        Value::Object(r)
                    })
                    .collect();
                e.insert("Resources".into(), Value::Array(resources));
                e.insert(
                    "CloudTrailEvent".into(),
                    json!(String::from_utf8_lossy(json)),
                );
                Value::Object(e)
            })
            .collect();
        let mut out = Map::new();
        out.insert("Events".into(), Value::Array(events));
        if let Some(after) = page.next {
            out.insert(
                "NextToken".into(),
                json!(
                    NextToken {
                        binding,
                        start,
                        end,
                        after
                    }
                    .encode()
                ),
            );
        }
        Ok(Value::Object(out))
    }

    /// `PutAuditEvents` (REST-JSON, service `cloudtrail-data`).
    pub async fn put_audit_events(
        &self,
        parts: &http::request::Parts,
        body: Bytes,
        loopback: bool,
    ) -> Result<Value, ApiError> {
        if parts.method != http::Method::POST {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "PutAuditEvents takes POST",
            ));
        }
        let caller = self.verify(parts, &body, "cloudtrail-data", loopback)?;
        caller.require(Scope::Write)?;
        let Some(ingest) = &self.ingest else {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "InternalFailure",
                "the collector is not accepting events",
            ));
        };
        crate::put_audit_events::put_audit_events(
            ingest,
            &self.config,
            &caller,
            parts.uri.query().unwrap_or_default(),
            &body,
        )
        .await
    }
}

/// Header naming the region of an unsigned request (`groundtrail-collector lookup-events`
/// without credentials sends its `--region` here); a signed request's scope takes precedence.
pub const REGION_HEADER: &str = "x-groundtrail-region";

/// The region a request was sent to, which `LookupEvents` answers for (as AWS's regional
/// endpoints do): the region of the SigV4 credential scope (`Credential=<key>/<date>/<region>/
/// <service>/aws4_request`; when the request was verified, that region is signed), else the
/// [`REGION_HEADER`] of an unsigned request, else none (every region).
pub fn request_region(parts: &http::request::Parts) -> Option<String> {
    let from_scope = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("AWS4-HMAC-SHA256 "))
        .and_then(|rest| {
            rest.split(',')
                .find_map(|p| p.trim().strip_prefix("Credential="))
        })
        .and_then(|c| c.split('/').nth(2))
        .filter(|r| !r.is_empty())
        .map(str::to_string);
    from_scope.or_else(|| {
        parts
            .headers
            .get(REGION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_string)
    })
}

/// A failure of the collector, not of the request: logged in full, answered without details.
/// The trail-settings operation a request names, if it names one (see [`trail`]).
fn trail_op(parts: &http::request::Parts) -> Option<&'static str> {
    let op = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix(TARGET_PREFIX))?;
    trail::OPERATIONS.into_iter().find(|o| *o == op)
}

pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!("API: {e}");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalFailure",
        "the collector could not answer; retry later",
    )
}

/// The lookup attributes AWS allows with `EventCategory: insight`.
const INSIGHT_ATTRIBUTES: [Attribute; 3] = [
    Attribute::EventId,
    Attribute::EventName,
    Attribute::EventSource,
];

/// `PutInsightSelectors`' answer: the selectors are the collector's config, not API state.
fn put_insight_selectors_refused() -> ApiError {
    ApiError::bad(
        "UnsupportedOperationException",
        "Insight selectors are set in the collector's config ([insights] types, \
         ApiCallRateInsight and/or ApiErrorRateInsight) and applied by a restart; \
         PutInsightSelectors cannot change them",
    )
}

fn invalid_token() -> ApiError {
    ApiError::bad(
        "InvalidNextTokenException",
        "Invalid NextToken: it was not issued for these parameters",
    )
}

/// A timestamp parameter: epoch seconds (what botocore sends for awsJson) or an ISO string.
pub(crate) fn time_param(input: &Map<String, Value>, name: &str) -> Result<Option<f64>, ApiError> {
    match input.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(Some)
            .ok_or_else(|| ApiError::bad("ValidationException", format!("{name} is not a time"))),
        Some(Value::String(s)) => groundtrail_common::time::parse_json_time(s)
            .map(|t| Some(t.timestamp() as f64))
            .ok_or_else(|| ApiError::bad("ValidationException", format!("{name} is not a time"))),
        Some(_) => Err(ApiError::bad(
            "ValidationException",
            format!("{name} is not a time"),
        )),
    }
}

/// A parsed `LookupEvents` request.
#[derive(Debug, Clone, PartialEq)]
pub struct LookupRequest {
    pub attribute: Option<(Attribute, String)>,
    /// Epoch seconds, inclusive.
    pub start: Option<u64>,
    pub end: Option<u64>,
    pub max_results: usize,
    pub next_token: Option<String>,
    /// `EventCategory: insight`: Insights records only (by `EventId`, `EventName` or
    /// `EventSource` at most), instead of management events.
    pub insight: bool,
}

fn weighted_len(s: &str) -> usize {
    s.chars()
        .map(|c| {
            if matches!(c, '_' | ' ' | ',' | '\n') {
                2
            } else {
                1
            }
        })
        .sum()
}

impl LookupRequest {
    /// Checks the input with `LookupEvents`' rules and error codes.
    pub fn parse(input: &Map<String, Value>) -> Result<LookupRequest, ApiError> {
        let attrs_err = |m: String| ApiError::bad("InvalidLookupAttributesException", m);
        let attribute = match input.get("LookupAttributes") {
            None | Some(Value::Null) => None,
            Some(Value::Array(list)) => {
                if list.len() > 1 {
                    return Err(attrs_err(
                        "You cannot have more than one lookup attribute.".into(),
                    ));
                }
                match list.first() {
                    None => None,
                    Some(item) => {
                        let key = item
                            .get("AttributeKey")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        let attr = Attribute::parse(key).ok_or_else(|| {
                            attrs_err(format!(
                                "AttributeKey {key:?} is not one of {}",
                                Attribute::ALL.join(", ")
                            ))
                        })?;
                        let value = item
                            .get("AttributeValue")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        if value.is_empty() || weighted_len(value) > MAX_ATTRIBUTE_VALUE {
                            return Err(attrs_err(format!(
                                "AttributeValue must be 1-{MAX_ATTRIBUTE_VALUE} characters"
                            )));
                        }
                        Some((attr, value.to_string()))
                    }
                }
            }
            Some(_) => return Err(attrs_err("LookupAttributes must be a list".into())),
        };
        let secs = |f: Option<f64>| f.map(|f| f.floor() as u64);
        let start_f = time_param(input, "StartTime")?;
        let end_f = time_param(input, "EndTime")?;
        if let (Some(s), Some(e)) = (start_f, end_f)
            && s > e
        {
            return Err(ApiError::bad(
                "InvalidTimeRangeException",
                "Start time must be earlier than end time.",
            ));
        }
        // An end with a fraction still includes events of that whole second.
        let start = start_f.map(|f| f.ceil() as u64);
        let end = secs(end_f);
        let max_results = match input.get("MaxResults") {
            None | Some(Value::Null) => 50,
            Some(v) => match v.as_i64() {
                Some(n @ 1..=50) => n as usize,
                _ => {
                    return Err(ApiError::bad(
                        "InvalidMaxResultsException",
                        "MaxResults must be between 1 and 50",
                    ));
                }
            },
        };
        let insight = match input.get("EventCategory") {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) if s == "insight" => true,
            Some(other) => {
                return Err(ApiError::bad(
                    "InvalidEventCategoryException",
                    format!("EventCategory {other} is not valid; the only value is insight"),
                ));
            }
        };
        if insight
            && let Some((attr, _)) = &attribute
            && !INSIGHT_ATTRIBUTES.contains(attr)
        {
            return Err(attrs_err(format!(
                "AttributeKey {:?} cannot be used with EventCategory insight; Insights events are \
                 looked up by EventId, EventName or EventSource only",
                attr.name()
            )));
        }
        let next_token = match input.get("NextToken") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(invalid_token()),
        };
        Ok(LookupRequest {
            attribute,
            start,
            end,
            max_results,
            next_token,
            insight,
        })
    }

    /// A digest of the parameters a token must be reused with (the region, the category, the
    /// attribute and the explicitly given times; MaxResults may change between pages, as in
    /// AWS).
    fn binding(&self, region: Option<&str>) -> String {
        let mut s = match region {
            Some(r) => format!("r{r}\0"),
            None => String::new(),
        };
        if self.insight {
            s += "insight\0";
        }
        if let Some((a, v)) = &self.attribute {
            s += &format!("{}\0{v}", *a as u8);
        }
        s += &format!("\0{:?}\0{:?}", self.start, self.end);
        groundtrail_common::trail::sha256_hex(s.as_bytes())[..32].to_string()
    }
}

/// The opaque `NextToken`: the parameters it belongs to, the effective time range (so a
/// default `EndTime` of "now" does not move between pages) and where the page ended.
#[derive(Debug, Clone, PartialEq)]
struct NextToken {
    binding: String,
    start: u64,
    end: u64,
    after: Vec<u8>,
}

impl NextToken {
    fn encode(&self) -> String {
        let v = json!({
            "b": self.binding,
            "s": self.start,
            "e": self.end,
            "a": hex::encode(&self.after),
        });
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    fn decode(token: &str) -> Option<NextToken> {
        if token.len() > 4096 {
            return None;
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()?;
        let v: Value = serde_json::from_slice(&bytes).ok()?;
        Some(NextToken {
            binding: v.get("b")?.as_str()?.to_string(),
            start: v.get("s")?.as_u64()?,
            end: v.get("e")?.as_u64()?,
            after: hex::decode(v.get("a")?.as_str()?).ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<LookupRequest, ApiError> {
        LookupRequest::parse(v.as_object().unwrap())
    }

    #[test]
    fn lookup_parameters_get_aws_error_codes() {
        let ok = parse(json!({})).unwrap();
        assert_eq!(ok.max_results, 50);
        assert_eq!(
            parse(json!({"MaxResults": 51})).unwrap_err().code,
            "InvalidMaxResultsException"
        );
        assert_eq!(
            parse(json!({"MaxResults": 0})).unwrap_err().code,
            "InvalidMaxResultsException"
        );
        assert_eq!(
            parse(json!({"StartTime": 10, "EndTime": 5}))
                .unwrap_err()
                .code,
            "InvalidTimeRangeException"
        );
        assert_eq!(
            parse(json!({"LookupAttributes": [
                {"AttributeKey": "EventName", "AttributeValue": "a"},
                {"AttributeKey": "EventName", "AttributeValue": "b"}]}))
            .unwrap_err()
            .code,
            "InvalidLookupAttributesException"
        );
        assert_eq!(
            parse(json!({"LookupAttributes": [{"AttributeKey": "Nope", "AttributeValue": "a"}]}))
                .unwrap_err()
                .code,
            "InvalidLookupAttributesException"
        );
        let long = "_".repeat(1001);
        assert_eq!(
            parse(
                json!({"LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": long}]})
            )
            .unwrap_err()
            .code,
            "InvalidLookupAttributesException"
        );
        for key in Attribute::ALL {
            let r =
                parse(json!({"LookupAttributes": [{"AttributeKey": key, "AttributeValue": "v"}]}))
                    .unwrap();
            assert!(r.attribute.is_some());
        }
        assert_eq!(
            parse(json!({"EventCategory": "data"})).unwrap_err().code,
            "InvalidEventCategoryException"
        );
    }

    #[test]
    fn tokens_round_trip_and_are_bound_to_the_parameters() {
        let a = parse(
            json!({"LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": "x"}]}),
        )
        .unwrap();
        let b = parse(
            json!({"LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": "y"}]}),
        )
        .unwrap();
        assert_ne!(a.binding(None), b.binding(None));
        assert_ne!(a.binding(Some("us-east-1")), a.binding(Some("eu-west-1")));
        assert_ne!(a.binding(Some("us-east-1")), a.binding(None));
        let t = NextToken {
            binding: a.binding(None),
            start: 1,
            end: 2,
            after: vec![0, 1, 255],
        };
        assert_eq!(NextToken::decode(&t.encode()), Some(t));
        assert_eq!(NextToken::decode("not a token"), None);
    }

    #[test]
    fn the_region_is_the_credential_scope_else_the_header() {
        let req = |headers: &[(&str, &str)]| {
            let mut b = http::Request::post("/");
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            b.body(()).unwrap().into_parts().0
        };
        let signed = "AWS4-HMAC-SHA256 Credential=AKID/20260101/eu-west-1/cloudtrail/aws4_request, SignedHeaders=host;x-amz-date, Signature=00";
        assert_eq!(
            request_region(&req(&[("authorization", signed)])).as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            request_region(&req(&[
                ("authorization", signed),
                (REGION_HEADER, "us-east-1")
            ]))
            .as_deref(),
            Some("eu-west-1"),
            "the signed scope wins"
        );
        assert_eq!(
            request_region(&req(&[(REGION_HEADER, "us-east-1")])).as_deref(),
            Some("us-east-1")
        );
        assert_eq!(request_region(&req(&[])), None);
    }

    #[test]
    fn insight_lookups_take_only_event_id_name_and_source() {
        for key in Attribute::ALL {
            let r = parse(json!({"EventCategory": "insight",
                "LookupAttributes": [{"AttributeKey": key, "AttributeValue": "v"}]}));
            if ["EventId", "EventName", "EventSource"].contains(&key) {
                assert!(r.unwrap().insight, "{key}");
            } else {
                let e = r.unwrap_err();
                assert_eq!(e.code, "InvalidLookupAttributesException", "{key}");
                assert_eq!(
                    e.message,
                    format!(
                        "AttributeKey \"{key}\" cannot be used with EventCategory insight; \
                         Insights events are looked up by EventId, EventName or EventSource only"
                    )
                );
            }
            // Without the category every attribute is allowed.
            parse(json!({"LookupAttributes": [{"AttributeKey": key, "AttributeValue": "v"}]}))
                .unwrap();
        }
        // A token of one category is not one of the other.
        let m = parse(json!({})).unwrap();
        let i = parse(json!({"EventCategory": "insight"})).unwrap();
        assert_ne!(m.binding(None), i.binding(None));
        assert_ne!(m.binding(Some("r")), i.binding(Some("r")));
    }

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    /// An API over a real journal and history in `dir`, with `[insights] types` and two
    /// keys: `AKIDREAD` (read) and `AKIDRW` (read and write).
    fn api(dir: &std::path::Path, types: &[&str]) -> (Api, Arc<History>) {
        let mut config = Config::default();
        config.journal.path = dir.join("journal");
        config.signing.key_file = dir.join("key.pem");
        config.trail.account_id = "111122223333".into();
        config.insights.types = types.iter().map(|t| t.to_string()).collect();
        config.api.access_keys = [
            ("AKIDREAD", vec![Scope::Read]),
            ("AKIDRW", vec![Scope::Read, Scope::Write]),
        ]
        .into_iter()
        .map(|(id, scopes)| crate::config::AccessKeyConfig {
            access_key_id: id.into(),
            secret_access_key: SECRET.into(),
            scopes,
            account: None,
        })
        .collect();
        let journal = Arc::new(Journal::open(&config.journal.path).unwrap());
        let history = Arc::new(History::open(&dir.join("history")).unwrap());
        let key = SigningKey::generate().unwrap();
        let api = Api::new(&config, &key, journal, history.clone(), None).unwrap();
        (api, history)
    }

    /// One control-plane call as botocore makes it, signed by `key` for `region`: (status,
    /// answer).
    async fn call(api: &Api, key: &str, region: &str, op: &str, body: Value) -> (u16, Value) {
        let body = body.to_string();
        let target = format!("{TARGET_PREFIX}{op}");
        let base = [
            ("host", "127.0.0.1:7480"),
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target.as_str()),
        ];
        let signed = crate::sigv4::sign_request(
            "POST",
            "/",
            &base,
            body.as_bytes(),
            region,
            "cloudtrail",
            key,
            SECRET,
            SystemTime::now(),
        )
        .unwrap();
        let mut b = http::Request::post("/");
        for (k, v) in base
            .iter()
            .copied()
            .chain(signed.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        {
            b = b.header(k, v);
        }
        let parts = b.body(()).unwrap().into_parts().0;
        let (status, out, _) = api.handle(&parts, Bytes::from(body), false).await;
        (status.as_u16(), serde_json::from_slice(&out).unwrap())
    }

    #[tokio::test]
    async fn insight_selectors_are_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let (on, _) = api(
            &dir.path().join("on"),
            &["ApiErrorRateInsight", "ApiCallRateInsight"],
        );
        let arn = "arn:aws:cloudtrail:us-east-1:111122223333:trail/groundtrail";
        for name in ["groundtrail", arn] {
            let (status, v) = call(
                &on,
                "AKIDREAD",
                "us-east-1",
                "GetInsightSelectors",
                json!({"TrailName": name}),
            )
            .await;
            assert_eq!(status, 200, "{v}");
            assert_eq!(
                v,
                json!({"TrailARN": arn, "InsightSelectors": [
                    {"InsightType": "ApiErrorRateInsight"}, {"InsightType": "ApiCallRateInsight"}]})
            );
        }
        let (status, v) = call(
            &on,
            "AKIDREAD",
            "us-east-1",
            "GetInsightSelectors",
            json!({"TrailName": "other"}),
        )
        .await;
        assert_eq!(
            (status, v["__type"].as_str()),
            (400, Some("TrailNotFoundException"))
        );
        let (status, v) = call(
            &on,
            "AKIDREAD",
            "us-east-1",
            "GetInsightSelectors",
            json!({}),
        )
        .await;
        assert_eq!(
            (status, v["__type"].as_str()),
            (400, Some("InvalidParameterException"))
        );
        let (_, v) = call(
            &on,
            "AKIDREAD",
            "us-east-1",
            "GetTrail",
            json!({"Name": "groundtrail"}),
        )
        .await;
        assert_eq!(v["Trail"]["HasInsightSelectors"], json!(true));
        let (_, v) = call(&on, "AKIDREAD", "us-east-1", "DescribeTrails", json!({})).await;
        assert_eq!(v["trailList"][0]["HasInsightSelectors"], json!(true));

        let (off, _) = api(&dir.path().join("off"), &[]);
        let (status, v) = call(
            &off,
            "AKIDREAD",
            "us-east-1",
            "GetInsightSelectors",
            json!({"TrailName": "groundtrail"}),
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(
            v,
            json!({"__type": "InsightNotEnabledException",
                "message": "Trail groundtrail does not have Insights enabled."})
        );
        let (_, v) = call(
            &off,
            "AKIDREAD",
            "us-east-1",
            "GetTrail",
            json!({"Name": "groundtrail"}),
        )
        .await;
        assert_eq!(v["Trail"]["HasInsightSelectors"], json!(false));
        let (_, v) = call(&off, "AKIDREAD", "us-east-1", "DescribeTrails", json!({})).await;
        assert_eq!(v["trailList"][0]["HasInsightSelectors"], json!(false));

        // PutInsightSelectors needs write, and then says where the selectors are set.
        let put = json!({"TrailName": "groundtrail",
            "InsightSelectors": [{"InsightType": "ApiCallRateInsight"}]});
        let (status, v) = call(
            &on,
            "AKIDREAD",
            "us-east-1",
            "PutInsightSelectors",
            put.clone(),
        )
        .await;
        assert_eq!(
            (status, v["__type"].as_str()),
            (403, Some("AccessDeniedException"))
        );
        let (status, v) = call(&on, "AKIDRW", "us-east-1", "PutInsightSelectors", put).await;
        assert_eq!(
            (status, v["__type"].as_str()),
            (400, Some("UnsupportedOperationException"))
        );
        let message = v["message"].as_str().unwrap();
        assert!(
            message.contains("[insights] types") && message.contains("restart"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn lookup_events_answers_insights_only_with_their_category() {
        let dir = tempfile::tempdir().unwrap();
        let (api, history) = api(dir.path(), &["ApiErrorRateInsight"]);
        let now = groundtrail_common::time::now_secs().timestamp();
        let time = |ago: i64| {
            groundtrail_common::time::json_time(DateTime::from_timestamp(now - ago, 0).unwrap())
        };
        let insight = |id: &str, ago: i64, name: &str| {
            json!({"eventVersion": "1.07", "eventTime": time(ago), "awsRegion": "onprem-1",
                "eventID": id, "eventType": "AwsCloudTrailInsight",
                "recipientAccountId": "123456789012", "sharedEventID": "s-1",
                "insightDetails": {"state": "Start", "eventSource": "sshd.onprem.internal",
                    "eventName": name, "insightType": "ApiErrorRateInsight",
                    "insightContext": {"statistics": {"baseline": {"average": 0.01},
                        "insight": {"average": 40}, "insightDuration": 2,
                        "baselineDuration": 10080}, "attributions": []}},
                "eventCategory": "Insight"})
        };
        let records = [
            insight("i-1", 300, "ConsoleLogin"),
            insight("i-2", 200, "StartSession"),
            json!({"eventVersion": "1.11", "eventTime": time(100), "awsRegion": "onprem-1",
                "eventID": "m-1", "eventName": "ConsoleLogin",
                "eventSource": "sshd.onprem.internal", "readOnly": false,
                "userIdentity": {"type": "IAMUser", "userName": "alice", "accessKeyId": "AK"},
                "eventType": "AwsConsoleSignIn", "eventCategory": "Management"}),
        ];
        let bytes: Vec<Vec<u8>> = records
            .iter()
            .map(|r| serde_json::to_vec(r).unwrap())
            .collect();
        assert_eq!(
            history
                .insert(bytes.iter().map(|b| b.as_slice()), 0)
                .unwrap(),
            3
        );
        let lookup = |body: Value| call(&api, "AKIDREAD", "onprem-1", "LookupEvents", body);
        let ids = |v: &Value| {
            v["Events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["EventId"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        let (status, v) = lookup(json!({})).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(ids(&v), ["m-1"]);
        let (_, v) = lookup(json!({"EventCategory": "insight"})).await;
        assert_eq!(ids(&v), ["i-2", "i-1"]);
        // An Insights event's entry: its insightDetails' name and source, no user, key or
        // readOnly, no resources, the record itself.
        assert_eq!(
            v["Events"][1],
            json!({"EventId": "i-1", "EventName": "ConsoleLogin", "EventTime": now - 300,
                "EventSource": "sshd.onprem.internal", "Resources": [],
                "CloudTrailEvent": records[0].to_string()})
        );
        let (_, v) = lookup(json!({"EventCategory": "insight", "LookupAttributes":
            [{"AttributeKey": "EventName", "AttributeValue": "ConsoleLogin"}]}))
        .await;
        assert_eq!(ids(&v), ["i-1"]);
        let (_, v) = lookup(json!({"LookupAttributes":
            [{"AttributeKey": "EventName", "AttributeValue": "ConsoleLogin"}]}))
        .await;
        assert_eq!(ids(&v), ["m-1"]);
        let (_, v) = lookup(json!({"LookupAttributes":
            [{"AttributeKey": "EventId", "AttributeValue": "i-1"}]}))
        .await;
        assert_eq!(ids(&v), Vec::<String>::new());
        let (_, v) = lookup(json!({"EventCategory": "insight", "LookupAttributes":
            [{"AttributeKey": "EventId", "AttributeValue": "m-1"}]}))
        .await;
        assert_eq!(ids(&v), Vec::<String>::new());
        let (status, v) = lookup(json!({"EventCategory": "insight", "LookupAttributes":
            [{"AttributeKey": "Username", "AttributeValue": "alice"}]}))
        .await;
        assert_eq!(
            (status, v["__type"].as_str()),
            (400, Some("InvalidLookupAttributesException"))
        );
        // Another region's endpoint has none of them.
        let (_, v) = call(
            &api,
            "AKIDREAD",
            "us-east-1",
            "LookupEvents",
            json!({"EventCategory": "insight"}),
        )
        .await;
        assert_eq!(ids(&v), Vec::<String>::new());
        // Pages, and a token that belongs to its category.
        let (_, v) = lookup(json!({"EventCategory": "insight", "MaxResults": 1})).await;
        assert_eq!(ids(&v), ["i-2"]);
        let token = v["NextToken"].as_str().unwrap().to_string();
        let (status, v) = lookup(json!({"NextToken": token})).await;
        assert_eq!(
            (status, v["__type"].as_str()),
            (400, Some("InvalidNextTokenException"))
        );
        let (_, v) = lookup(json!({"EventCategory": "insight", "NextToken": token})).await;
        assert_eq!(ids(&v), ["i-1"]);
        assert!(v.get("NextToken").is_none());
    }

    #[test]
    fn retired_key_pem_reads_back() {
        let key = SigningKey::generate().unwrap();
        let der = public_key_der_from_pem(&key.public_key_pem()).unwrap();
        assert_eq!(der, key.public_key_der());
        assert!(public_key_der_from_pem("junk").is_err());
    }
}
