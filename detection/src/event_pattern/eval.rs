//! Matches a compiled pattern against an event.
//!
//! Semantics, from the EventBridge user guide ("Event patterns", "Content filtering") and the
//! event-ruler README (AWS's open-sourced matcher) where the guide is brief:
//! - all fields named at a level must match (AND); a field matches if any entry of its value
//!   array matches (OR); a `$or` group matches if any alternative matches at that level;
//! - where the event holds an array, the field matches if any element matches; arrays of
//!   objects are matched element by element, so two fields only match together when they sit
//!   in the same element (event-ruler's `rulesForJSONEvent`);
//! - `exists` looks at leaf values only: `exists: true` needs at least one leaf value (a
//!   string, number, boolean or `null`) at the path, `exists: false` holds when there is none,
//!   including when the path holds an object;
//! - `prefix`, `suffix`, `equals-ignore-case`, `wildcard` and `cidr` only match strings,
//!   `numeric` only JSON numbers; exact numbers compare by value (`5` equals `5.0`);
//! - `anything-but` with values matches any present leaf that equals none of them (so a field
//!   holding `["a", "b"]` matches `anything-but "a"`, as event-ruler documents for arrays);
//!   its prefix/suffix/ignore-case/wildcard forms match strings that fit none of the forms.
//!   A missing field never matches `anything-but`.

use super::ast::{AnythingBut, Cmp, Field, Glob, Matcher, Node};
use serde_json::Value as Json;
use std::net::IpAddr;

pub(super) fn node_matches(node: &Node, value: Option<&Json>) -> bool {
    if let Some(Json::Array(items)) = value {
        return if items.is_empty() {
            node_matches(node, None)
        } else {
            items.iter().any(|item| node_matches(node, Some(item)))
        };
    }
    let obj = value.and_then(Json::as_object);
    node.fields.iter().all(|(key, field)| {
        let child = obj.and_then(|o| o.get(key));
        match field {
            Field::Nested(inner) => node_matches(inner, child),
            Field::Leaf(matchers) => leaf_matches(matchers, child),
        }
    }) && node
        .ors
        .iter()
        .all(|group| group.iter().any(|alt| node_matches(alt, value)))
}

/// [`node_matches`] against `envelope` with `record` as its `detail`, without building the
/// combined event (which would copy the whole record).
pub(super) fn envelope_matches(node: &Node, envelope: &Json, record: &Json) -> bool {
    node.fields.iter().all(|(key, field)| {
        let child = if key == "detail" {
            Some(record)
        } else {
            envelope.get(key)
        };
        match field {
            Field::Nested(inner) => node_matches(inner, child),
            Field::Leaf(matchers) => leaf_matches(matchers, child),
        }
    }) && node.ors.iter().all(|group| {
        group
            .iter()
            .any(|alt| envelope_matches(alt, envelope, record))
    })
}

fn leaf_matches(matchers: &[Matcher], child: Option<&Json>) -> bool {
    match child {
        // The common case, a single leaf, without collecting.
        Some(leaf @ (Json::String(_) | Json::Number(_) | Json::Bool(_) | Json::Null)) => {
            matchers.iter().any(|m| match m {
                Matcher::Exists(want) => *want,
                m => leaf_match(m, leaf),
            })
        }
        // No leaf at all: absent, or an object.
        None | Some(Json::Object(_)) => {
            matchers.iter().any(|m| matches!(m, Matcher::Exists(false)))
        }
        Some(array) => {
            let mut leaves = Vec::new();
            collect_leaves(array, &mut leaves);
            matchers.iter().any(|m| match m {
                Matcher::Exists(want) => leaves.is_empty() != *want,
                m => leaves.iter().any(|v| leaf_match(m, v)),
            })
        }
    }
}

fn collect_leaves<'a>(v: &'a Json, out: &mut Vec<&'a Json>) {
    match v {
        Json::Array(items) => items.iter().for_each(|i| collect_leaves(i, out)),
        Json::Object(_) => {}
        leaf => out.push(leaf),
    }
}

fn leaf_match(m: &Matcher, v: &Json) -> bool {
    match m {
        Matcher::Exact(want) => same(want, v),
        Matcher::Prefix { text, ignore_case } => v.as_str().is_some_and(|s| {
            if *ignore_case {
                lower(s).starts_with(&lower(text))
            } else {
                s.starts_with(text.as_str())
            }
        }),
        Matcher::Suffix { text, ignore_case } => v.as_str().is_some_and(|s| {
            if *ignore_case {
                lower(s).ends_with(&lower(text))
            } else {
                s.ends_with(text.as_str())
            }
        }),
        Matcher::EqualsIgnoreCase(text) => v.as_str().is_some_and(|s| lower(s) == lower(text)),
        Matcher::Wildcard(glob) => v.as_str().is_some_and(|s| glob_match(glob, s)),
        Matcher::AnythingBut(but) => anything_but(but, v),
        Matcher::Numeric(bounds) => v.as_f64().is_some_and(|x| {
            bounds.iter().all(|(cmp, n)| match cmp {
                Cmp::Eq => x == *n,
                Cmp::Lt => x < *n,
                Cmp::Le => x <= *n,
                Cmp::Gt => x > *n,
                Cmp::Ge => x >= *n,
            })
        }),
        Matcher::Cidr(net) => v
            .as_str()
            .and_then(|s| s.parse::<IpAddr>().ok())
            .is_some_and(|ip| net.contains(&ip)),
        Matcher::Exists(_) => unreachable!("handled by leaf_matches"),
    }
}

fn anything_but(but: &AnythingBut, v: &Json) -> bool {
    match but {
        AnythingBut::Values(values) => !values.iter().any(|x| same(x, v)),
        AnythingBut::Prefix(ps) => v
            .as_str()
            .is_some_and(|s| !ps.iter().any(|p| s.starts_with(p.as_str()))),
        AnythingBut::Suffix(ps) => v
            .as_str()
            .is_some_and(|s| !ps.iter().any(|p| s.ends_with(p.as_str()))),
        AnythingBut::EqualsIgnoreCase(ps) => v
            .as_str()
            .is_some_and(|s| !ps.iter().any(|p| lower(p) == lower(s))),
        AnythingBut::Wildcard(gs) => v
            .as_str()
            .is_some_and(|s| !gs.iter().any(|g| glob_match(g, s))),
    }
}

/// Plain-value equality: strings exactly, numbers by value, `true`/`false`/`null` as
/// themselves; a string never equals a number.
fn same(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn lower(s: &str) -> String {
    s.to_lowercase()
}

/// `*` matches any run of characters, including none.
fn glob_match(glob: &Glob, s: &str) -> bool {
    let parts = &glob.parts;
    if parts.len() == 1 {
        return s == parts[0];
    }
    let (first, last) = (&parts[0], &parts[parts.len() - 1]);
    if s.len() < first.len() + last.len()
        || !s.starts_with(first.as_str())
        || !s.ends_with(last.as_str())
    {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part.as_str()) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}
