//! The CloudTrail record (eventVersion 1.11), as it appears in a trail's log files.
//!
//! Every documented member has its real JSON type here, so a wrong type is refused at the edge
//! (the collector's ingest) instead of surprising a SIEM parser later. Members this model does
//! not know are kept, in order, in `extra`: a sender may be newer than us, and an audit trail
//! must never drop what it was given.
//!
//! Field order in the structs follows the order AWS writes (spec §1.4), so our log files look
//! like AWS's byte for byte where it is cheap to do so. `requestParameters` and
//! `responseElements` are "always present, possibly null" in CloudTrail; they are
//! `Option<Value>` where `None` means absent and `Some(Value::Null)` means an explicit `null`
//! ([`Record::new`] sets both to `null`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::time;

/// The eventVersion we write for records we build ourselves.
pub const EVENT_VERSION: &str = "1.11";

/// CloudTrail's cap on `requestParameters`, `responseElements` and `serviceEventDetails`.
pub const MAX_PARAMETERS_BYTES: usize = 100 * 1024;
/// CloudTrail's cap on `additionalEventData` and `edgeDeviceDetails`.
pub const MAX_ADDITIONAL_BYTES: usize = 28 * 1024;
/// CloudTrail's cap on `userAgent`, `errorCode`, `errorMessage`, `requestID`.
pub const MAX_SHORT_FIELD_BYTES: usize = 1024;

fn some_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// One CloudTrail event record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub event_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_identity: Option<UserIdentity>,
    pub event_time: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub event_source: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub event_name: String,
    pub aws_region: String,
    #[serde(rename = "sourceIPAddress", skip_serializing_if = "Option::is_none")]
    pub source_ip_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(
        default,
        deserialize_with = "some_value",
        skip_serializing_if = "Option::is_none"
    )]
    pub request_parameters: Option<Value>,
    #[serde(
        default,
        deserialize_with = "some_value",
        skip_serializing_if = "Option::is_none"
    )]
    pub response_elements: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub additional_event_data: Option<Value>,
    #[serde(rename = "requestID", skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(rename = "eventID")]
    pub event_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<Vec<Resource>>,
    pub event_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub management_event: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient_account_id: Option<String>,
    #[serde(rename = "sharedEventID", skip_serializing_if = "Option::is_none")]
    pub shared_event_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vpc_endpoint_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vpc_endpoint_account_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_event_details: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_category: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addendum: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edge_device_details: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_details: Option<TlsDetails>,
    /// Real files carry the string `"true"`, never a boolean, and only when it is true.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_credential_from_console: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_context: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insight_details: Option<Value>,
    /// Members this model does not name, kept verbatim and in order.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `userIdentity`: who made the call (spec §1.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct UserIdentity {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub identity_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_context: Option<SessionContext>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invoked_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `userIdentity.sessionContext`: present for temporary credentials (for us: a sudo/su session).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SessionContext {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_issuer: Option<SessionIssuer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web_id_federation_data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<SessionAttributes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_identity: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `sessionContext.sessionIssuer`: the role (for us: the account sudo/su switched to).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SessionIssuer {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub issuer_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `sessionContext.attributes`. Both members are strings in real files, `mfaAuthenticated`
/// included (`"true"`/`"false"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SessionAttributes {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfa_authenticated: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One entry of `resources[]`. Note the upper-case `ARN`, as AWS writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Resource {
    #[serde(rename = "accountId", skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    #[serde(rename = "ARN", skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `tlsDetails`: the TLS session the call arrived on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TlsDetails {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cipher_suite: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_provided_host_header: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Why a record was refused. Each variant names the member, so the sender can fix its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("not a CloudTrail record: {0}")]
    Json(String),
    #[error("required member `{0}` is missing or empty")]
    Missing(&'static str),
    #[error("member `{member}` is invalid: {why}")]
    Invalid { member: &'static str, why: String },
    #[error("member `{member}` is {size} bytes, over CloudTrail's limit of {limit}")]
    TooLong {
        member: &'static str,
        size: usize,
        limit: usize,
    },
}

impl RecordError {
    /// The CloudTrail-style error code for this failure.
    pub fn code(&self) -> &'static str {
        match self {
            RecordError::Json(_) | RecordError::Invalid { .. } => "InvalidData",
            RecordError::Missing(_) => "FieldNotFound",
            RecordError::TooLong { .. } => "FieldTooLong",
        }
    }
}

impl Record {
    /// A new management-event record with a fresh random `eventID`, the current time, and the
    /// "always present" members filled in the way CloudTrail fills them.
    pub fn new(
        event_source: impl Into<String>,
        event_name: impl Into<String>,
        event_type: impl Into<String>,
        region: impl Into<String>,
        account_id: impl Into<String>,
    ) -> Record {
        Record {
            event_version: EVENT_VERSION.to_string(),
            event_time: time::json_time(time::now_secs()),
            event_source: event_source.into(),
            event_name: event_name.into(),
            aws_region: region.into(),
            request_parameters: Some(Value::Null),
            response_elements: Some(Value::Null),
            event_id: uuid::Uuid::new_v4().to_string(),
            event_type: event_type.into(),
            management_event: Some(true),
            recipient_account_id: Some(account_id.into()),
            event_category: Some("Management".to_string()),
            ..Record::default()
        }
    }

    /// Parses one record from JSON and checks it ([`Record::validate`]).
    pub fn from_json(bytes: &[u8]) -> Result<Record, RecordError> {
        // The path-tracking deserializer costs a third more on every record; only a record
        // that fails needs it, to name the member, so it runs again on the error path.
        let record: Record = match serde_json::from_slice(bytes) {
            Ok(record) => record,
            Err(_) => return Err(Self::explain_json_error(bytes)),
        };
        record.validate()?;
        Ok(record)
    }

    /// The error of a record that does not deserialize, naming the member at fault.
    #[cold]
    fn explain_json_error(bytes: &[u8]) -> RecordError {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        match serde_path_to_error::deserialize::<_, Record>(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path.is_empty() || path == "." {
                RecordError::Json(inner.to_string())
            } else {
                RecordError::Json(format!("member `{path}`: {inner}"))
            }
        }) {
            Err(e) => e,
            // Unreachable unless serde_json disagrees with itself; say so rather than panic.
            Ok(_) => RecordError::Json("record does not deserialize".into()),
        }
    }

    /// Compact JSON, as log files carry it.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain structs and `Value`s cannot fail.
        serde_json::to_vec(self).expect("a Record always serializes")
    }

    /// `eventTime` as an instant. Only valid after [`Record::validate`] succeeded.
    pub fn event_time(&self) -> Option<DateTime<Utc>> {
        time::parse_json_time(&self.event_time)
    }

    /// The account this record is delivered to: `recipientAccountId`.
    pub fn account(&self) -> &str {
        self.recipient_account_id.as_deref().unwrap_or("")
    }

    /// Checks what serde's types cannot: required members, formats, and CloudTrail's size caps.
    pub fn validate(&self) -> Result<(), RecordError> {
        fn required(member: &'static str, v: &str) -> Result<(), RecordError> {
            if v.is_empty() {
                Err(RecordError::Missing(member))
            } else {
                Ok(())
            }
        }
        fn short(member: &'static str, v: &Option<String>) -> Result<(), RecordError> {
            match v {
                Some(s) if s.len() > MAX_SHORT_FIELD_BYTES => Err(RecordError::TooLong {
                    member,
                    size: s.len(),
                    limit: MAX_SHORT_FIELD_BYTES,
                }),
                _ => Ok(()),
            }
        }
        fn sized(member: &'static str, v: &Option<Value>, limit: usize) -> Result<(), RecordError> {
            if let Some(v) = v
                && !v.is_null()
            {
                let size = json_len(v);
                if size > limit {
                    return Err(RecordError::TooLong {
                        member,
                        size,
                        limit,
                    });
                }
            }
            Ok(())
        }

        required("eventVersion", &self.event_version)?;
        if !is_event_version(&self.event_version) {
            return Err(RecordError::Invalid {
                member: "eventVersion",
                why: format!(
                    "{:?} is not of the form \"<major>.<minor>\"",
                    self.event_version
                ),
            });
        }
        required("eventTime", &self.event_time)?;
        if self.event_time().is_none() {
            return Err(RecordError::Invalid {
                member: "eventTime",
                why: format!("{:?} is not UTC YYYY-MM-DDTHH:MM:SSZ", self.event_time),
            });
        }
        required("eventID", &self.event_id)?;
        if !is_lower_uuid(&self.event_id) {
            return Err(RecordError::Invalid {
                member: "eventID",
                why: format!("{:?} is not a lowercase UUID", self.event_id),
            });
        }
        required("eventType", &self.event_type)?;
        required("awsRegion", &self.aws_region)?;
        if !is_region(&self.aws_region) {
            return Err(RecordError::Invalid {
                member: "awsRegion",
                why: format!("{:?} is not a region name", self.aws_region),
            });
        }
        let account = self
            .recipient_account_id
            .as_deref()
            .ok_or(RecordError::Missing("recipientAccountId"))?;
        if !is_account_id(account) {
            return Err(RecordError::Invalid {
                member: "recipientAccountId",
                why: format!("{account:?} is not a 12-digit account id"),
            });
        }
        // Insights events are the one kind without these; everything else must say who and what.
        if self.event_type != "AwsCloudTrailInsight" {
            required("eventSource", &self.event_source)?;
            required("eventName", &self.event_name)?;
            if self.user_identity.is_none() {
                return Err(RecordError::Missing("userIdentity"));
            }
        }
        short("userAgent", &self.user_agent)?;
        short("errorCode", &self.error_code)?;
        short("errorMessage", &self.error_message)?;
        short("requestID", &self.request_id)?;
        sized(
            "requestParameters",
            &self.request_parameters,
            MAX_PARAMETERS_BYTES,
        )?;
        sized(
            "responseElements",
            &self.response_elements,
            MAX_PARAMETERS_BYTES,
        )?;
        sized(
            "serviceEventDetails",
            &self.service_event_details,
            MAX_PARAMETERS_BYTES,
        )?;
        sized(
            "additionalEventData",
            &self.additional_event_data,
            MAX_ADDITIONAL_BYTES,
        )?;
        sized(
            "edgeDeviceDetails",
            &self.edge_device_details,
            MAX_ADDITIONAL_BYTES,
        )?;
        Ok(())
    }
}

fn is_event_version(v: &str) -> bool {
    match v.split_once('.') {
        Some((a, b)) => {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        }
        None => false,
    }
}

/// A lowercase, hyphenated UUID, as CloudTrail writes `eventID`.
pub fn is_lower_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
        })
}

/// Twelve ASCII digits.
pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|c| c.is_ascii_digit())
}

/// A region name as it appears in keys: lowercase letters, digits and dashes (`us-east-1`,
/// `onprem-fra1`). It becomes a path element, so nothing else may pass.
pub fn is_region(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !s.starts_with('-')
}

/// The length of `v`'s compact JSON, counted without building it: validation measures the
/// nested members of every ingested record, and allocating each one's text only to take its
/// length showed up in the collector's profile.
pub(crate) fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a `Value` into a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut count, v);
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const AWS_SAMPLE: &str = r#"{"eventVersion":"1.11","userIdentity":{"type":"AssumedRole","principalId":"AROAEXAMPLE:alice","arn":"arn:aws:sts::111122223333:assumed-role/Admin/alice","accountId":"111122223333","accessKeyId":"ASIAEXAMPLE","sessionContext":{"sessionIssuer":{"type":"Role","principalId":"AROAEXAMPLE","arn":"arn:aws:iam::111122223333:role/Admin","accountId":"111122223333","userName":"Admin"},"attributes":{"creationDate":"2025-10-27T00:00:52Z","mfaAuthenticated":"false"}}},"eventTime":"2025-10-27T00:00:52Z","eventSource":"ec2.amazonaws.com","eventName":"DescribeInstances","awsRegion":"us-east-2","sourceIPAddress":"203.0.113.5","userAgent":"aws-cli/2.15.0","requestParameters":{"instancesSet":{},"filterSet":{}},"responseElements":null,"requestID":"a1b2c3","eventID":"0d9c2f4e-8a51-4a0c-9f1b-2b6f2c1d3e4f","readOnly":true,"eventType":"AwsApiCall","managementEvent":true,"recipientAccountId":"111122223333","eventCategory":"Management","tlsDetails":{"tlsVersion":"TLSv1.3","cipherSuite":"TLS_AES_128_GCM_SHA256","clientProvidedHostHeader":"ec2.us-east-2.amazonaws.com"},"sessionCredentialFromConsole":"true","someFutureField":{"b":1,"a":2}}"#;

    #[test]
    fn round_trips_byte_for_byte() {
        let r = Record::from_json(AWS_SAMPLE.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(r.to_json()).unwrap(), AWS_SAMPLE);
        assert_eq!(r.extra.len(), 1, "unknown member kept");
    }

    #[test]
    fn null_and_absent_parameters_differ() {
        let r = Record::from_json(AWS_SAMPLE.as_bytes()).unwrap();
        assert_eq!(r.response_elements, Some(Value::Null));
        let text = AWS_SAMPLE.replace(r#""responseElements":null,"#, "");
        let r = Record::from_json(text.as_bytes()).unwrap();
        assert_eq!(r.response_elements, None);
        assert!(
            !String::from_utf8(r.to_json())
                .unwrap()
                .contains("responseElements")
        );
    }

    #[test]
    fn new_record_is_valid() {
        let r = Record::new(
            "sshd.onprem.internal",
            "ConsoleLogin",
            "AwsConsoleSignIn",
            "us-east-1",
            "123456789012",
        );
        let mut r = r;
        r.user_identity = Some(UserIdentity::default());
        r.validate().unwrap();
        let json = String::from_utf8(r.to_json()).unwrap();
        assert!(json.contains(r#""requestParameters":null,"responseElements":null"#));
    }

    #[test]
    fn refuses_wrong_types_and_formats() {
        let cases: &[(&str, &str, &str)] = &[
            (r#""readOnly":true"#, r#""readOnly":"yes""#, "readOnly"),
            (
                r#""eventTime":"2025-10-27T00:00:52Z""#,
                r#""eventTime":"2025-10-27 00:00:52""#,
                "eventTime",
            ),
            (
                r#""eventID":"0d9c2f4e-8a51-4a0c-9f1b-2b6f2c1d3e4f""#,
                r#""eventID":"not-a-uuid""#,
                "eventID",
            ),
            (
                r#""recipientAccountId":"111122223333""#,
                r#""recipientAccountId":"1111""#,
                "recipientAccountId",
            ),
            (
                r#""awsRegion":"us-east-2""#,
                r#""awsRegion":"../etc""#,
                "awsRegion",
            ),
            (r#""eventSource":"ec2.amazonaws.com","#, "", "eventSource"),
        ];
        for (from, to, member) in cases {
            let text = AWS_SAMPLE.replacen(from, to, 1);
            assert_ne!(text, AWS_SAMPLE);
            let err = Record::from_json(text.as_bytes()).unwrap_err();
            assert!(err.to_string().contains(member), "{member}: {err}");
        }
    }

    #[test]
    fn json_len_is_the_length_of_the_compact_json() {
        let r = Record::from_json(AWS_SAMPLE.as_bytes()).unwrap();
        for v in [&r.request_parameters, &r.response_elements] {
            let v = v.as_ref().unwrap();
            assert_eq!(json_len(v), serde_json::to_vec(v).unwrap().len());
        }
    }

    #[test]
    fn enforces_size_caps() {
        let mut r = Record::from_json(AWS_SAMPLE.as_bytes()).unwrap();
        r.user_agent = Some("x".repeat(MAX_SHORT_FIELD_BYTES + 1));
        assert_eq!(r.validate().unwrap_err().code(), "FieldTooLong");
        let mut r = Record::from_json(AWS_SAMPLE.as_bytes()).unwrap();
        // Exactly at the cap (the quotes count) passes; one byte more does not.
        r.request_parameters = Some(Value::String("x".repeat(MAX_PARAMETERS_BYTES - 2)));
        r.validate().unwrap();
        r.request_parameters = Some(Value::String("x".repeat(MAX_PARAMETERS_BYTES - 1)));
        assert!(matches!(
            r.validate().unwrap_err(),
            RecordError::TooLong {
                member: "requestParameters",
                ..
            }
        ));
    }
}
