//! The config form of a trail's event selectors (`[trail]`, snake_case TOML).
//!
//! It is converted to the `PutEventSelectors` body and read by the same code as the API, so a
//! config is refused exactly when the same selectors put through the API would be, with the
//! same error; the message names the member by its API name (`EventSelectors[0].ReadWriteType`
//! is `event_selectors[0].read_write_type` here). An empty operator list here means the
//! operator is absent.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{SelectorError, Selectors};

/// The trail's event selectors: `event_selectors` (basic) or `advanced_event_selectors`, never
/// both.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelectorsConfig {
    /// Basic event selectors (at most 5): management events by read/write, data events by
    /// resource ARN. A record is recorded when any selector takes it. Empty, and no advanced
    /// selectors: every record is recorded (CloudTrail's own default is management events
    /// only).
    pub event_selectors: Vec<EventSelectorConfig>,
    /// Advanced event selectors: conditions on record fields (`eventSource`, `eventName`,
    /// `readOnly`, `userIdentity.arn`, ...). A record is recorded when any selector takes it;
    /// a selector takes it when all its field selectors match.
    pub advanced_event_selectors: Vec<AdvancedEventSelectorConfig>,
}

/// One basic event selector (CloudTrail's `EventSelector`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventSelectorConfig {
    /// `All`, `ReadOnly` (records with `readOnly: true`) or `WriteOnly` (the others).
    pub read_write_type: String,
    /// Take management events (`eventCategory` absent or `Management`).
    pub include_management_events: bool,
    /// Take data events (`eventCategory: Data`) on these resources.
    pub data_resources: Vec<DataResourceConfig>,
    /// Management events of these `eventSource`s are not taken (e.g. `kms.amazonaws.com`,
    /// `sudo.example.internal`).
    pub exclude_management_event_sources: Vec<String>,
}

impl Default for EventSelectorConfig {
    fn default() -> Self {
        EventSelectorConfig {
            read_write_type: "All".into(),
            include_management_events: true,
            data_resources: Vec::new(),
            exclude_management_event_sources: Vec::new(),
        }
    }
}

/// Data resources of one type (CloudTrail's `DataResource`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataResourceConfig {
    /// The resource type, as in the record's `resources[].type`: `AWS::S3::Object`,
    /// `AWS::Lambda::Function`, `AWS::DynamoDB::Table`, or a type the sidecar writes.
    #[serde(rename = "type")]
    pub r#type: String,
    /// ARNs: prefixes of the resources' ARNs (`arn:aws:s3:::bucket/`, or `arn:aws:s3` for
    /// all); for Lambda functions and DynamoDB tables exact ARNs (or `arn:aws:lambda` for all).
    pub values: Vec<String>,
}

/// One advanced event selector (CloudTrail's `AdvancedEventSelector`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdvancedEventSelectorConfig {
    /// A name for people (at most 1000 characters).
    pub name: Option<String>,
    /// The conditions, all of which must match (at least one).
    pub field_selectors: Vec<FieldSelectorConfig>,
}

/// One condition on a record field (CloudTrail's `AdvancedFieldSelector`). The field matches
/// when one value of `equals`/`starts_with`/`ends_with` matches (if any is given) and every
/// value of `not_equals`/`not_starts_with`/`not_ends_with` holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FieldSelectorConfig {
    /// `eventCategory`, `eventSource`, `eventName`, `eventType`, `readOnly`, `resources.type`,
    /// `resources.ARN`, `userIdentity.arn`, `errorCode`, `sessionCredentialFromConsole` or
    /// `vpcEndpointId`.
    pub field: String,
    /// The field equals one of these (the only operator for `readOnly`, `eventCategory` and
    /// `resources.type`).
    pub equals: Vec<String>,
    /// The field starts with one of these.
    pub starts_with: Vec<String>,
    /// The field ends with one of these.
    pub ends_with: Vec<String>,
    /// The field equals none of these.
    pub not_equals: Vec<String>,
    /// The field starts with none of these.
    pub not_starts_with: Vec<String>,
    /// The field ends with none of these.
    pub not_ends_with: Vec<String>,
}

impl SelectorsConfig {
    /// The validated selectors; both lists empty is the default, [`Selectors::everything`].
    pub fn to_selectors(&self) -> Result<Selectors, SelectorError> {
        if self.event_selectors.is_empty() && self.advanced_event_selectors.is_empty() {
            return Ok(Selectors::everything());
        }
        Selectors::from_api(&self.to_api_request())
    }

    /// The `PutEventSelectors` body these selectors would be.
    fn to_api_request(&self) -> Map<String, Value> {
        let mut body = Map::new();
        if !self.event_selectors.is_empty() {
            let list: Vec<Value> = self
                .event_selectors
                .iter()
                .map(|s| {
                    let resources: Vec<Value> = s
                        .data_resources
                        .iter()
                        .map(|d| json!({"Type": d.r#type, "Values": d.values}))
                        .collect();
                    json!({
                        "ReadWriteType": s.read_write_type,
                        "IncludeManagementEvents": s.include_management_events,
                        "DataResources": resources,
                        "ExcludeManagementEventSources": s.exclude_management_event_sources,
                    })
                })
                .collect();
            body.insert("EventSelectors".into(), Value::Array(list));
        }
        if !self.advanced_event_selectors.is_empty() {
            let list: Vec<Value> = self
                .advanced_event_selectors
                .iter()
                .map(|s| {
                    let mut obj = Map::new();
                    if let Some(name) = &s.name {
                        obj.insert("Name".into(), json!(name));
                    }
                    let fields: Vec<Value> = s.field_selectors.iter().map(field_api).collect();
                    obj.insert("FieldSelectors".into(), Value::Array(fields));
                    Value::Object(obj)
                })
                .collect();
            body.insert("AdvancedEventSelectors".into(), Value::Array(list));
        }
        body
    }
}

fn field_api(f: &FieldSelectorConfig) -> Value {
    let mut obj = Map::new();
    obj.insert("Field".into(), json!(f.field));
    let ops = [
        ("Equals", &f.equals),
        ("StartsWith", &f.starts_with),
        ("EndsWith", &f.ends_with),
        ("NotEquals", &f.not_equals),
        ("NotStartsWith", &f.not_starts_with),
        ("NotEndsWith", &f.not_ends_with),
    ];
    for (name, values) in ops {
        if !values.is_empty() {
            obj.insert(name.into(), json!(values));
        }
    }
    Value::Object(obj)
}
