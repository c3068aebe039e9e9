//! Validates a pattern document and compiles it to [`Node`]s, with an error naming the path of
//! the offending part (`detail.eventName[1].prefix`).

use super::PatternError;
use super::ast::{AnythingBut, Cmp, Field, Glob, Matcher, Node};
use ipnet::IpNet;
use serde_json::{Map, Value as Json};
use std::net::IpAddr;

/// The current EventBridge guide limits numeric matching to -5.0e9..=5.0e9.
const NUMERIC_LIMIT: f64 = 5.0e9;

pub(super) fn compile(pattern: &Json) -> Result<Node, PatternError> {
    let obj = pattern
        .as_object()
        .ok_or_else(|| err("", "an event pattern is a JSON object"))?;
    node(obj, "")
}

fn err(path: &str, message: impl Into<String>) -> PatternError {
    PatternError {
        path: if path.is_empty() {
            "(top)".into()
        } else {
            path.into()
        },
        message: message.into(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn node(obj: &Map<String, Json>, path: &str) -> Result<Node, PatternError> {
    if obj.is_empty() {
        return Err(err(
            path,
            "an empty object matches nothing; name at least one field",
        ));
    }
    let mut out = Node {
        fields: Vec::new(),
        ors: Vec::new(),
    };
    for (key, value) in obj {
        let here = join(path, key);
        match value {
            // `$or` with an array is the OR primitive; with an object it is an ordinary field name,
            // as event-ruler keeps it for backward compatibility.
            Json::Array(alts) if key == "$or" => {
                if alts.len() < 2 {
                    return Err(err(&here, "$or needs an array of at least two objects"));
                }
                let mut group = Vec::new();
                for (i, alt) in alts.iter().enumerate() {
                    let alt_path = format!("{here}[{i}]");
                    let alt = alt
                        .as_object()
                        .ok_or_else(|| err(&alt_path, "each $or alternative is an object"))?;
                    group.push(node(alt, &alt_path)?);
                }
                out.ors.push(group);
            }
            Json::Array(values) => {
                if values.is_empty() {
                    return Err(err(&here, "an empty array of values matches nothing"));
                }
                let matchers = values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| matcher(v, &format!("{here}[{i}]")))
                    .collect::<Result<_, _>>()?;
                out.fields.push((key.clone(), Field::Leaf(matchers)));
            }
            Json::Object(inner) => out
                .fields
                .push((key.clone(), Field::Nested(node(inner, &here)?))),
            _ => {
                return Err(err(
                    &here,
                    "values in a pattern must be in an array, e.g. [\"value\"]",
                ));
            }
        }
    }
    Ok(out)
}

fn matcher(v: &Json, path: &str) -> Result<Matcher, PatternError> {
    let obj = match v {
        Json::Object(obj) => obj,
        Json::Array(_) => return Err(err(path, "nested arrays are not allowed in a pattern")),
        scalar => return Ok(Matcher::Exact(scalar.clone())),
    };
    let mut entries = obj.iter();
    let (Some((op, arg)), None) = (entries.next(), entries.next()) else {
        return Err(err(
            path,
            "an operator object has exactly one key, e.g. {\"prefix\": \"x\"}",
        ));
    };
    let here = join(path, op);
    match op.as_str() {
        "prefix" | "suffix" => {
            let (text, ignore_case) = match arg {
                Json::String(s) => (s.clone(), false),
                Json::Object(o) if o.len() == 1 && o.contains_key("equals-ignore-case") => (
                    string(&o["equals-ignore-case"], &join(&here, "equals-ignore-case"))?,
                    true,
                ),
                _ => {
                    return Err(err(
                        &here,
                        "takes a string or {\"equals-ignore-case\": string}",
                    ));
                }
            };
            Ok(if op == "prefix" {
                Matcher::Prefix { text, ignore_case }
            } else {
                Matcher::Suffix { text, ignore_case }
            })
        }
        "equals-ignore-case" => Ok(Matcher::EqualsIgnoreCase(string(arg, &here)?)),
        "wildcard" => Ok(Matcher::Wildcard(glob(&string(arg, &here)?, &here)?)),
        "anything-but" => Ok(Matcher::AnythingBut(anything_but(arg, &here)?)),
        "numeric" => numeric(arg, &here),
        "cidr" => {
            let s = string(arg, &here)?;
            let net = s
                .parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| err(&here, format!("{s:?} is not an IPv4 or IPv6 CIDR block")))?;
            Ok(Matcher::Cidr(net))
        }
        "exists" => match arg {
            Json::Bool(b) => Ok(Matcher::Exists(*b)),
            _ => Err(err(&here, "takes true or false")),
        },
        other => Err(err(path, format!("unknown operator {other:?}"))),
    }
}

fn string(v: &Json, path: &str) -> Result<String, PatternError> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| err(path, "takes a string"))
}

fn strings(v: &Json, path: &str) -> Result<Vec<String>, PatternError> {
    match v {
        Json::String(s) => Ok(vec![s.clone()]),
        Json::Array(items) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, s)| string(s, &format!("{path}[{i}]")))
            .collect(),
        _ => Err(err(path, "takes a string or a non-empty array of strings")),
    }
}

fn anything_but(arg: &Json, path: &str) -> Result<AnythingBut, PatternError> {
    match arg {
        Json::String(_) | Json::Number(_) => Ok(AnythingBut::Values(vec![arg.clone()])),
        Json::Array(items) => {
            let all_strings = items.iter().all(Json::is_string);
            let all_numbers = items.iter().all(Json::is_number);
            if items.is_empty() || !(all_strings || all_numbers) {
                return Err(err(
                    path,
                    "takes a non-empty list of only strings or only numbers",
                ));
            }
            Ok(AnythingBut::Values(items.clone()))
        }
        Json::Object(o) if o.len() == 1 => {
            let (op, v) = o.iter().next().expect("one entry");
            let here = join(path, op);
            match op.as_str() {
                "prefix" => Ok(AnythingBut::Prefix(strings(v, &here)?)),
                "suffix" => Ok(AnythingBut::Suffix(strings(v, &here)?)),
                "equals-ignore-case" => Ok(AnythingBut::EqualsIgnoreCase(strings(v, &here)?)),
                "wildcard" => Ok(AnythingBut::Wildcard(
                    strings(v, &here)?
                        .iter()
                        .map(|s| glob(s, &here))
                        .collect::<Result<_, _>>()?,
                )),
                other => Err(err(path, format!("anything-but does not take {other:?}"))),
            }
        }
        _ => Err(err(
            path,
            "takes a string, a number, a list, or {prefix|suffix|equals-ignore-case|wildcard: ...}",
        )),
    }
}

fn numeric(arg: &Json, path: &str) -> Result<Matcher, PatternError> {
    let items = arg
        .as_array()
        .filter(|a| !a.is_empty() && a.len() % 2 == 0)
        .ok_or_else(|| {
            err(
                path,
                "takes pairs of operator and number, e.g. [\">\", 0, \"<=\", 5]",
            )
        })?;
    let mut bounds = Vec::new();
    let (mut lower, mut upper, mut equals) = (None, None, false);
    for pair in items.chunks(2) {
        let cmp = match pair[0].as_str() {
            Some("=") => Cmp::Eq,
            Some("<") => Cmp::Lt,
            Some("<=") => Cmp::Le,
            Some(">") => Cmp::Gt,
            Some(">=") => Cmp::Ge,
            _ => return Err(err(path, format!("{} is not one of = < <= > >=", pair[0]))),
        };
        let n = pair[1]
            .as_f64()
            .ok_or_else(|| err(path, format!("{} is not a number", pair[1])))?;
        if !(-NUMERIC_LIMIT..=NUMERIC_LIMIT).contains(&n) {
            return Err(err(path, format!("{n} is outside -5e9..=5e9")));
        }
        let slot = match cmp {
            Cmp::Eq => {
                equals = true;
                None
            }
            Cmp::Gt | Cmp::Ge => Some(&mut lower),
            Cmp::Lt | Cmp::Le => Some(&mut upper),
        };
        if let Some(slot) = slot
            && slot.replace(n).is_some()
        {
            return Err(err(path, "at most one lower and one upper bound"));
        }
        bounds.push((cmp, n));
    }
    if equals && bounds.len() > 1 {
        return Err(err(path, "\"=\" cannot be combined with other bounds"));
    }
    if let (Some(lo), Some(hi)) = (lower, upper)
        && lo >= hi
    {
        return Err(err(path, "the lower bound must be below the upper bound"));
    }
    Ok(Matcher::Numeric(bounds))
}

/// Splits a wildcard at unescaped `*`. Rules from the event-ruler README ("Wildcard matching"):
/// no consecutive `*`; `\*` is a literal star, `\\` a literal backslash; any other escape is an
/// error.
fn glob(s: &str, path: &str) -> Result<Glob, PatternError> {
    let mut parts = vec![String::new()];
    let mut chars = s.chars().peekable();
    let mut last_star = false;
    while let Some(c) = chars.next() {
        match c {
            '*' => {
                if last_star {
                    return Err(err(path, "consecutive '*' are not allowed in a wildcard"));
                }
                parts.push(String::new());
                last_star = true;
                continue;
            }
            '\\' => match chars.next() {
                Some(e @ ('*' | '\\')) => parts.last_mut().expect("non-empty").push(e),
                _ => return Err(err(path, "in a wildcard, '\\' may only escape '*' or '\\'")),
            },
            c => parts.last_mut().expect("non-empty").push(c),
        }
        last_star = false;
    }
    Ok(Glob { parts })
}
