//! The API form: reading a `PutEventSelectors` body (every check lives here, so the config,
//! which is converted to this form, is refused the same way) and writing the
//! `GetEventSelectors` members back.

use serde_json::{Map, Value, json};

use super::{
    AdvancedSelector, DataResource, EVENT_CATEGORIES, EVERYTHING_NAME, EventSelector, Field,
    FieldSelector, Kind, Op, ReadWrite, SelectorError, Selectors,
};

/// Basic selectors per trail.
pub(super) const MAX_EVENT_SELECTORS: usize = 5;
/// Data resource values across a trail's basic selectors (whole-type values not counted).
pub(super) const MAX_DATA_RESOURCES: usize = 250;
/// Operator values across all of a trail's advanced selectors.
pub(super) const MAX_CONDITION_VALUES: usize = 500;
/// Characters of an advanced selector's `Name`.
pub(super) const MAX_NAME_CHARS: usize = 1000;
/// Characters of a `Field`.
pub(super) const MAX_FIELD_CHARS: usize = 1000;
/// Characters of one operator value.
pub(super) const MAX_VALUE_CHARS: usize = 2048;

const BASIC_MEMBERS: [&str; 4] = [
    "ReadWriteType",
    "IncludeManagementEvents",
    "DataResources",
    "ExcludeManagementEventSources",
];

pub(super) fn parse(input: &Map<String, Value>) -> Result<Selectors, SelectorError> {
    if let Some(key) = input.keys().find(|k| {
        !matches!(
            k.as_str(),
            "TrailName" | "EventSelectors" | "AdvancedEventSelectors"
        )
    }) {
        return Err(SelectorError::invalid(format!(
            "Unknown member {key} in the request; PutEventSelectors takes TrailName and \
             EventSelectors or AdvancedEventSelectors"
        )));
    }
    match (
        present(input, "EventSelectors"),
        present(input, "AdvancedEventSelectors"),
    ) {
        (Some(_), Some(_)) => Err(SelectorError::invalid(
            "Specify EventSelectors or AdvancedEventSelectors, not both: a trail uses one kind",
        )),
        (None, None) => Err(SelectorError::invalid(
            "Specify EventSelectors or AdvancedEventSelectors",
        )),
        (Some(basic), None) => parse_basic(array(basic, "EventSelectors")?),
        (None, Some(advanced)) => parse_advanced(array(advanced, "AdvancedEventSelectors")?),
    }
}

fn parse_basic(list: &[Value]) -> Result<Selectors, SelectorError> {
    if list.is_empty() || list.len() > MAX_EVENT_SELECTORS {
        return Err(SelectorError::invalid(format!(
            "EventSelectors has {} selectors; a trail can have 1 to {MAX_EVENT_SELECTORS}",
            list.len()
        )));
    }
    let mut selectors = Vec::with_capacity(list.len());
    let mut counted = 0;
    for (i, v) in list.iter().enumerate() {
        let path = format!("EventSelectors[{i}]");
        let obj = object(v, &path)?;
        members(obj, &path, &BASIC_MEMBERS)?;
        let read_write = match present(obj, "ReadWriteType") {
            None => ReadWrite::All,
            Some(v) => match string(v, &format!("{path}.ReadWriteType"))? {
                "ReadOnly" => ReadWrite::ReadOnly,
                "WriteOnly" => ReadWrite::WriteOnly,
                "All" => ReadWrite::All,
                other => {
                    return Err(SelectorError::invalid(format!(
                        "Value {other} for {path}.ReadWriteType is invalid; use ReadOnly, \
                         WriteOnly or All"
                    )));
                }
            },
        };
        let include_management = match present(obj, "IncludeManagementEvents") {
            None => true,
            Some(v) => boolean(v, &format!("{path}.IncludeManagementEvents"))?,
        };
        let mut data_resources = Vec::new();
        if let Some(v) = present(obj, "DataResources") {
            for (j, d) in array(v, &format!("{path}.DataResources"))?
                .iter()
                .enumerate()
            {
                let dpath = format!("{path}.DataResources[{j}]");
                let (resource, values) = data_resource(d, &dpath)?;
                counted += values;
                data_resources.push(resource);
            }
        }
        let mut exclude_sources = Vec::new();
        if let Some(v) = present(obj, "ExcludeManagementEventSources") {
            let epath = format!("{path}.ExcludeManagementEventSources");
            for (j, s) in array(v, &epath)?.iter().enumerate() {
                let s = string(s, &format!("{epath}[{j}]"))?;
                if s.is_empty() {
                    return Err(SelectorError::invalid(format!(
                        "{epath}[{j}] is empty; name an eventSource such as kms.amazonaws.com"
                    )));
                }
                exclude_sources.push(s.to_string());
            }
        }
        selectors.push(EventSelector {
            read_write,
            include_management,
            data_resources,
            exclude_sources,
        });
    }
    if counted > MAX_DATA_RESOURCES {
        return Err(SelectorError::invalid(format!(
            "A trail is limited to {MAX_DATA_RESOURCES} data resources across its event \
             selectors (values naming a whole type such as arn:aws:s3 not counted); these have \
             {counted}"
        )));
    }
    Ok(Selectors {
        kind: Kind::Basic(selectors),
    })
}

/// One `DataResources` entry and how many of its values count against the limit.
fn data_resource(v: &Value, path: &str) -> Result<(DataResource, usize), SelectorError> {
    let obj = object(v, path)?;
    members(obj, path, &["Type", "Values"])?;
    let r#type = match present(obj, "Type") {
        Some(t) => string(t, &format!("{path}.Type"))?,
        None => "",
    };
    if r#type.is_empty() {
        return Err(SelectorError::invalid(format!(
            "{path}.Type is required, e.g. AWS::S3::Object or the type the sidecar writes"
        )));
    }
    let values = match present(obj, "Values") {
        Some(v) => array(v, &format!("{path}.Values"))?,
        None => &[][..],
    };
    if values.is_empty() || values.len() > MAX_DATA_RESOURCES {
        return Err(SelectorError::invalid(format!(
            "{path}.Values has {} values; a data resource lists 1 to {MAX_DATA_RESOURCES} ARNs",
            values.len()
        )));
    }
    let mut out = Vec::with_capacity(values.len());
    let mut counted = 0;
    for (k, value) in values.iter().enumerate() {
        let value = string(value, &format!("{path}.Values[{k}]"))?;
        match data_value(r#type, value) {
            // AWS's own message for a value it refuses, then where and why.
            None => {
                return Err(SelectorError::invalid(format!(
                    "Value {value} for DataResources.Values is invalid. ({path}.Values[{k}]: {})",
                    value_hint(r#type)
                )));
            }
            Some(true) => {}
            Some(false) => counted += 1,
        }
        out.push(value.to_string());
    }
    Ok((
        DataResource {
            r#type: r#type.to_string(),
            values: out,
        },
        counted,
    ))
}

fn value_hint(r#type: &str) -> &'static str {
    match r#type {
        "AWS::S3::Object" => {
            "use arn:aws:s3 for every object, or arn:aws:s3:::bucket/ or arn:aws:s3:::bucket/prefix; \
             no wildcards"
        }
        "AWS::Lambda::Function" => {
            "use arn:aws:lambda for every function, or a function's ARN \
             (arn:aws:lambda:region:account:function:name); no wildcards"
        }
        "AWS::DynamoDB::Table" => {
            "use arn:aws:dynamodb for every table, or a table's ARN \
             (arn:aws:dynamodb:region:account:table/name); no wildcards"
        }
        _ => "a value is an ARN or ARN prefix (arn:partition:service...); no wildcards",
    }
}

/// Checks a data resource value of `type`: `None` when AWS would refuse it, otherwise whether
/// it names every resource of the type (`arn:aws:s3`), which the 250 limit does not count.
fn data_value(r#type: &str, value: &str) -> Option<bool> {
    if value.contains('*') {
        return None;
    }
    let parts: Vec<&str> = value.split(':').collect();
    if parts[0] != "arn" || parts.len() < 3 {
        return None;
    }
    let partition_ok = !parts[1].is_empty()
        && parts[1]
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !partition_ok || parts[2].is_empty() {
        return None;
    }
    let whole = whole_type(r#type, value);
    let service = |s: &str| (parts[2] == s).then_some(());
    match r#type {
        "AWS::S3::Object" => {
            service("s3")?;
            if whole {
                return Some(true);
            }
            // arn:p:s3:::bucket/[prefix]: a bucket name, then the slash that starts a key.
            let key = value.split_once(":::")?.1;
            (key.find('/')? > 0).then_some(false)
        }
        "AWS::Lambda::Function" => {
            service("lambda")?;
            (whole || (parts.len() >= 7 && parts[5] == "function" && !parts[6].is_empty()))
                .then_some(whole)
        }
        "AWS::DynamoDB::Table" => {
            service("dynamodb")?;
            let table = parts.len() == 6 && parts[5].len() > "table/".len();
            (whole || (table && parts[5].starts_with("table/"))).then_some(whole)
        }
        _ => Some(whole),
    }
}

/// Whether a data resource value names every resource of its type: `arn:<partition>:<service>`
/// (and S3's older `arn:<partition>:s3:::`).
pub(super) fn whole_type(r#type: &str, value: &str) -> bool {
    let parts = value.split(':').count();
    parts == 3 || (r#type == "AWS::S3::Object" && parts == 6 && value.ends_with(":::"))
}

fn parse_advanced(list: &[Value]) -> Result<Selectors, SelectorError> {
    if list.is_empty() {
        return Err(SelectorError::invalid(
            "AdvancedEventSelectors is empty; give at least one selector",
        ));
    }
    let mut selectors = Vec::with_capacity(list.len());
    let mut counted = 0;
    for (i, v) in list.iter().enumerate() {
        let path = format!("AdvancedEventSelectors[{i}]");
        let obj = object(v, &path)?;
        members(obj, &path, &["Name", "FieldSelectors"])?;
        let name = match present(obj, "Name") {
            None => None,
            Some(n) => {
                let n = string(n, &format!("{path}.Name"))?;
                let chars = n.chars().count();
                if chars > MAX_NAME_CHARS {
                    return Err(SelectorError::invalid(format!(
                        "{path}.Name is {chars} characters; at most {MAX_NAME_CHARS}"
                    )));
                }
                Some(n.to_string())
            }
        };
        let fields = match present(obj, "FieldSelectors") {
            Some(f) => array(f, &format!("{path}.FieldSelectors"))?,
            None => &[][..],
        };
        if fields.is_empty() {
            return Err(SelectorError::invalid(format!(
                "{path}.FieldSelectors is empty; a selector needs at least one field selector"
            )));
        }
        let mut parsed = Vec::with_capacity(fields.len());
        for (j, f) in fields.iter().enumerate() {
            let fpath = format!("{path}.FieldSelectors[{j}]");
            let (selector, values) = field_selector(f, &fpath)?;
            counted += values;
            parsed.push(selector);
        }
        selectors.push(AdvancedSelector {
            name,
            fields: parsed,
        });
    }
    if counted > MAX_CONDITION_VALUES {
        return Err(SelectorError::invalid(format!(
            "Advanced event selectors may have at most {MAX_CONDITION_VALUES} condition values \
             in all; these have {counted}"
        )));
    }
    let kind = if selectors == everything_selectors() {
        Kind::Everything
    } else {
        Kind::Advanced(selectors)
    };
    Ok(Selectors { kind })
}

/// One field selector and its number of values.
fn field_selector(v: &Value, path: &str) -> Result<(FieldSelector, usize), SelectorError> {
    let obj = object(v, path)?;
    let allowed: Vec<&str> = std::iter::once("Field")
        .chain(Op::ALL.iter().map(|o| o.name()))
        .collect();
    members(obj, path, &allowed)?;
    let name = match present(obj, "Field") {
        Some(f) => string(f, &format!("{path}.Field"))?,
        None => {
            return Err(SelectorError::invalid(format!("{path}.Field is required")));
        }
    };
    let shaped = (1..=MAX_FIELD_CHARS).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '|');
    if !shaped {
        return Err(SelectorError::invalid(format!(
            "Field {name:?} in {path} is invalid; a field is 1 to {MAX_FIELD_CHARS} letters, \
             digits, '.' or '_'"
        )));
    }
    let Some(field) = Field::parse(name) else {
        let known: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
        return Err(SelectorError::invalid(format!(
            "Field {name} in {path} is not supported; use one of {}",
            known.join(", ")
        )));
    };
    let mut ops: [Option<Vec<String>>; 6] = Default::default();
    let mut counted = 0;
    for (slot, op) in ops.iter_mut().zip(Op::ALL) {
        let Some(list) = present(obj, op.name()) else {
            continue;
        };
        let opath = format!("{path}.{}", op.name());
        let list = array(list, &opath)?;
        if list.is_empty() {
            return Err(SelectorError::invalid(format!(
                "{opath} is empty; an operator needs at least one value"
            )));
        }
        if field.equals_only() && op != Op::Equals {
            return Err(SelectorError::invalid(format!(
                "Field {} supports only the Equals operator; {path} uses {}",
                field.name(),
                op.name()
            )));
        }
        let mut values = Vec::with_capacity(list.len());
        for (k, value) in list.iter().enumerate() {
            let value = string(value, &format!("{opath}[{k}]"))?;
            if !(1..=MAX_VALUE_CHARS).contains(&value.chars().count()) {
                return Err(SelectorError::invalid(format!(
                    "{opath}[{k}] must be 1 to {MAX_VALUE_CHARS} characters"
                )));
            }
            check_value(field, value, &format!("{opath}[{k}]"))?;
            values.push(value.to_string());
        }
        counted += values.len();
        *slot = Some(values);
    }
    if ops.iter().all(Option::is_none) {
        let names: Vec<&str> = Op::ALL.iter().map(|o| o.name()).collect();
        return Err(SelectorError::invalid(format!(
            "{path} ({}) has no operator; give at least one of {}",
            field.name(),
            names.join(", ")
        )));
    }
    Ok((FieldSelector { field, ops }, counted))
}

/// The values AWS restricts: `readOnly` and `eventCategory`.
fn check_value(field: Field, value: &str, path: &str) -> Result<(), SelectorError> {
    match field {
        Field::ReadOnly if value != "true" && value != "false" => Err(SelectorError::invalid(
            format!("Value {value} for readOnly in {path} is invalid; use true or false"),
        )),
        Field::EventCategory if !EVENT_CATEGORIES.contains(&value) => {
            let hint = if value == "Insight" {
                " (Insights records are chosen by the trail's insight selectors)"
            } else {
                ""
            };
            Err(SelectorError::invalid(format!(
                "Value {value} for eventCategory in {path} is invalid; use {}{hint}",
                EVENT_CATEGORIES.join(", ")
            )))
        }
        _ => Ok(()),
    }
}

/// The advanced form of the default: one selector taking every category.
pub(super) fn everything_selectors() -> Vec<AdvancedSelector> {
    let categories = EVENT_CATEGORIES.iter().map(|c| c.to_string()).collect();
    let mut ops: [Option<Vec<String>>; 6] = Default::default();
    ops[Op::Equals as usize] = Some(categories);
    vec![AdvancedSelector {
        name: Some(EVERYTHING_NAME.to_string()),
        fields: vec![FieldSelector {
            field: Field::EventCategory,
            ops,
        }],
    }]
}

pub(super) fn render(selectors: &Selectors) -> Value {
    match &selectors.kind {
        Kind::Everything => {
            json!({"AdvancedEventSelectors": render_advanced(&everything_selectors())})
        }
        Kind::Advanced(list) => json!({"AdvancedEventSelectors": render_advanced(list)}),
        Kind::Basic(list) => {
            let list: Vec<Value> = list
                .iter()
                .map(|s| {
                    let resources: Vec<Value> = s
                        .data_resources
                        .iter()
                        .map(|d| json!({"Type": d.r#type, "Values": d.values}))
                        .collect();
                    json!({
                        "ReadWriteType": match s.read_write {
                            ReadWrite::ReadOnly => "ReadOnly",
                            ReadWrite::WriteOnly => "WriteOnly",
                            ReadWrite::All => "All",
                        },
                        "IncludeManagementEvents": s.include_management,
                        "DataResources": resources,
                        "ExcludeManagementEventSources": s.exclude_sources,
                    })
                })
                .collect();
            json!({"EventSelectors": list})
        }
    }
}

fn render_advanced(list: &[AdvancedSelector]) -> Value {
    let list: Vec<Value> = list
        .iter()
        .map(|s| {
            let mut obj = Map::new();
            if let Some(name) = &s.name {
                obj.insert("Name".into(), json!(name));
            }
            let fields: Vec<Value> = s
                .fields
                .iter()
                .map(|f| {
                    let mut fobj = Map::new();
                    fobj.insert("Field".into(), json!(f.field.name()));
                    for (op, values) in Op::ALL.iter().zip(&f.ops) {
                        if let Some(values) = values {
                            fobj.insert(op.name().into(), json!(values));
                        }
                    }
                    Value::Object(fobj)
                })
                .collect();
            obj.insert("FieldSelectors".into(), Value::Array(fields));
            Value::Object(obj)
        })
        .collect();
    Value::Array(list)
}

/// A member that is set: JSON `null` counts as absent, as AWS's SDKs send it.
fn present<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn members(obj: &Map<String, Value>, path: &str, allowed: &[&str]) -> Result<(), SelectorError> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(key) => Err(SelectorError::invalid(format!(
            "Unknown member {key} in {path}; allowed: {}",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, SelectorError> {
    v.as_object()
        .ok_or_else(|| SelectorError::serialization(format!("{path} must be an object")))
}

fn array<'a>(v: &'a Value, path: &str) -> Result<&'a [Value], SelectorError> {
    v.as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| SelectorError::serialization(format!("{path} must be a list")))
}

fn string<'a>(v: &'a Value, path: &str) -> Result<&'a str, SelectorError> {
    v.as_str()
        .ok_or_else(|| SelectorError::serialization(format!("{path} must be a string")))
}

fn boolean(v: &Value, path: &str) -> Result<bool, SelectorError> {
    v.as_bool()
        .ok_or_else(|| SelectorError::serialization(format!("{path} must be true or false")))
}
