//! Judging one record against validated selectors (the rules are in the module docs).

use std::borrow::Cow;

use serde_json::Value;

use super::api::whole_type;
use super::{
    AdvancedSelector, DataResource, EventSelector, Field, FieldSelector, Kind, Op, ReadWrite,
    Selectors,
};

pub(super) fn selects(selectors: &Selectors, record: &Value) -> bool {
    if is_insight(record) {
        return true;
    }
    match &selectors.kind {
        Kind::Everything => true,
        Kind::Basic(list) => list.iter().any(|s| basic(s, record)),
        Kind::Advanced(list) => list.iter().any(|s| advanced(s, record)),
    }
}

fn is_insight(record: &Value) -> bool {
    record.get("eventType").and_then(Value::as_str) == Some("AwsCloudTrailInsight")
        || record.get("eventCategory").and_then(Value::as_str) == Some("Insight")
}

fn read_only(record: &Value) -> bool {
    match record.get("readOnly") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

fn basic(s: &EventSelector, record: &Value) -> bool {
    let fits = match s.read_write {
        ReadWrite::All => true,
        ReadWrite::ReadOnly => read_only(record),
        ReadWrite::WriteOnly => !read_only(record),
    };
    if !fits {
        return false;
    }
    let category = category(record);
    if category.as_deref() == Some("Management") {
        let source = record.get("eventSource").and_then(Value::as_str);
        return s.include_management
            && !source.is_some_and(|src| s.exclude_sources.iter().any(|e| e == src));
    }
    if category.as_deref() == Some("Data") {
        return resources(record)
            .iter()
            .any(|r| s.data_resources.iter().any(|d| data_match(d, r)));
    }
    false
}

/// Whether one of the record's resources is named by a `DataResources` entry.
fn data_match(d: &DataResource, resource: &Value) -> bool {
    let (Some(t), Some(arn)) = (
        resource.get("type").and_then(Value::as_str),
        resource.get("ARN").and_then(Value::as_str),
    ) else {
        return false;
    };
    if t != d.r#type {
        return false;
    }
    d.values.iter().any(|v| match t {
        // A function or table is named by its exact ARN, or the whole service.
        "AWS::Lambda::Function" | "AWS::DynamoDB::Table" => {
            if whole_type(t, v) {
                arn.strip_prefix(v.as_str())
                    .is_some_and(|rest| rest.starts_with(':'))
            } else {
                arn == v
            }
        }
        _ => arn.starts_with(v.as_str()),
    })
}

fn resources(record: &Value) -> &[Value] {
    record
        .get("resources")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn advanced(s: &AdvancedSelector, record: &Value) -> bool {
    let (on_resources, on_record): (Vec<&FieldSelector>, Vec<&FieldSelector>) =
        s.fields.iter().partition(|f| f.field.is_resource());
    if !on_record
        .iter()
        .all(|f| condition(f, record_value(f.field, record).as_deref()))
    {
        return false;
    }
    if on_resources.is_empty() {
        return true;
    }
    // Every resources.* condition on the same resource; no resources: one empty resource.
    let list = resources(record);
    let absent = [Value::Null];
    let list = if list.is_empty() { &absent[..] } else { list };
    list.iter().any(|r| {
        on_resources.iter().all(|f| {
            let key = if f.field == Field::ResourcesType {
                "type"
            } else {
                "ARN"
            };
            condition(f, r.get(key).and_then(scalar).as_deref())
        })
    })
}

/// One field selector on the record's value (`None`: the record lacks it).
fn condition(f: &FieldSelector, value: Option<&str>) -> bool {
    let mut positive = None;
    for (op, operands) in Op::ALL.iter().zip(&f.ops) {
        let Some(operands) = operands else { continue };
        if op.negative() {
            if let Some(v) = value
                && !operands.iter().all(|o| op.holds(v, o))
            {
                return false;
            }
        } else {
            let hit = value.is_some_and(|v| operands.iter().any(|o| op.holds(v, o)));
            positive = Some(positive.unwrap_or(false) || hit);
        }
    }
    positive.unwrap_or(true)
}

/// The record's category, by the event history's rule (one rule for basic selectors,
/// advanced selectors and `LookupEvents`): `eventCategory` when present; without it, a
/// management event unless `managementEvent` is false (older data-event records carry no
/// category), then a data event.
fn category(record: &Value) -> Option<Cow<'_, str>> {
    match record.get("eventCategory") {
        None | Some(Value::Null) => Some(Cow::Borrowed(
            if record.get("managementEvent").and_then(Value::as_bool) == Some(false) {
                "Data"
            } else {
                "Management"
            },
        )),
        Some(v) => scalar(v),
    }
}

/// The record's value of a non-resource field.
fn record_value(field: Field, record: &Value) -> Option<Cow<'_, str>> {
    let member = |key: &str| record.get(key).and_then(scalar);
    match field {
        Field::EventCategory => category(record),
        Field::ReadOnly => Some(Cow::Borrowed(if read_only(record) {
            "true"
        } else {
            "false"
        })),
        Field::EventSource => member("eventSource"),
        Field::EventName => member("eventName"),
        Field::EventType => member("eventType"),
        Field::ErrorCode => member("errorCode"),
        Field::SessionCredentialFromConsole => member("sessionCredentialFromConsole"),
        Field::VpcEndpointId => member("vpcEndpointId"),
        Field::UserIdentityArn => record
            .get("userIdentity")
            .and_then(|u| u.get("arn"))
            .and_then(scalar),
        Field::ResourcesType | Field::ResourcesArn => None,
    }
}

/// A string, boolean or number as the text selectors compare; anything else counts as absent.
fn scalar(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::String(s) => Some(Cow::Borrowed(s.as_str())),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        _ => None,
    }
}
