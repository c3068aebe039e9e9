//! Evaluates a parsed pattern against one JSON record.
//!
//! Rules, each from the CloudWatch Logs user guide ("Matching terms in JSON log events",
//! "JSON special considerations", "Numeric comparisons") unless marked *derived*:
//! - A comparison (`=`, `!=`, `<`...) applies only when the selector reaches a value node, a
//!   string or a number. On an object or array, `=` and `!=` both fail (the guide's
//!   `{$.users = 1}` / `{$.users != 1}` example). *Derived*: a missing property, `null` or a
//!   boolean is not a value node either, so `!=` does not match those; the guide offers
//!   `NOT EXISTS`, `IS NULL` and `IS TRUE/FALSE` for them.
//! - String values match case-sensitively, with `*` at the start and/or end as a wildcard; an
//!   interior `*` is literal (the guide's `Ev*ent` example).
//! - Numeric operators compare JSON numbers numerically. *Derived*: a numeric literal with `=`
//!   or `!=` against a JSON string compares the text as written (`$.recipientAccountId =
//!   123456789012` against the string CloudTrail writes), and `<`, `<=`, `>`, `>=` never match a
//!   string. A string pattern against a JSON number compares with the number's JSON text.
//! - A regex value matches anywhere in the string (the guide's `%AUTHORIZED%` example matches
//!   `[ERROR 401] UNAUTHORIZED REQUEST`); anchor it with `^`/`$` for a whole match. The dialect
//!   is Rust's `regex` (RE2-like); AWS does not name its engine, and the allowed characters rule
//!   out the constructs where engines differ most (groups, lookaround, backreferences).
//! - An index past the end of an array, or an index into a non-array, resolves to nothing.

use super::ast::{Expr, Op, Selector, Step, StrMatch, Test, Value};
use serde_json::Value as Json;

/// True if `expr` holds for `record`.
pub(super) fn eval(expr: &Expr, record: &Json) -> bool {
    match expr {
        Expr::And(terms) => terms.iter().all(|t| eval(t, record)),
        Expr::Or(terms) => terms.iter().any(|t| eval(t, record)),
        Expr::Test { selector, test } => {
            let node = resolve(selector, record);
            match test {
                Test::IsNull => matches!(node, Some(Json::Null)),
                Test::IsTrue => matches!(node, Some(Json::Bool(true))),
                Test::IsFalse => matches!(node, Some(Json::Bool(false))),
                Test::NotExists => node.is_none(),
            }
        }
        Expr::OneOf { selector, values } => match resolve(selector, record) {
            Some(Json::String(s)) => values.iter().any(|v| v == s),
            Some(Json::Number(n)) => {
                let text = n.to_string();
                values.contains(&text)
            }
            _ => false,
        },
        Expr::Compare {
            selector,
            op,
            value,
        } => match resolve(selector, record) {
            Some(node @ (Json::String(_) | Json::Number(_))) => compare(node, *op, value),
            _ => false,
        },
    }
}

/// Follows the selector's steps; `None` when any step is missing.
pub(crate) fn resolve<'a>(selector: &Selector, record: &'a Json) -> Option<&'a Json> {
    selector
        .steps
        .iter()
        .try_fold(record, |node, step| match step {
            Step::Field(name) => node.as_object()?.get(name),
            Step::Index(i) => node.as_array()?.get(*i),
        })
}

fn compare(node: &Json, op: Op, value: &Value) -> bool {
    match value {
        Value::Str(pattern) => {
            let hit = match node {
                Json::String(s) => str_match(pattern, s),
                Json::Number(n) => str_match(pattern, &n.to_string()),
                _ => false,
            };
            match op {
                Op::Eq => hit,
                Op::Ne => !hit,
                // The parser accepts only `=` and `!=` with string values.
                _ => false,
            }
        }
        Value::Regex(re) => {
            let hit = match node {
                Json::String(s) => re.0.is_match(s),
                Json::Number(n) => re.0.is_match(&n.to_string()),
                _ => false,
            };
            match op {
                Op::Eq => hit,
                Op::Ne => !hit,
                _ => false,
            }
        }
        Value::Num { value, text } => match node {
            Json::Number(n) => match n.as_f64() {
                Some(x) => match op {
                    Op::Eq => x == *value,
                    Op::Ne => x != *value,
                    Op::Lt => x < *value,
                    Op::Le => x <= *value,
                    Op::Gt => x > *value,
                    Op::Ge => x >= *value,
                },
                None => false,
            },
            Json::String(s) => match op {
                Op::Eq => s == text,
                Op::Ne => s != text,
                _ => false,
            },
            _ => false,
        },
    }
}

fn str_match(pattern: &StrMatch, s: &str) -> bool {
    match pattern {
        StrMatch::Any => true,
        StrMatch::Exact(t) => s == t,
        StrMatch::Prefix(t) => s.starts_with(t.as_str()),
        StrMatch::Suffix(t) => s.ends_with(t.as_str()),
        StrMatch::Contains(t) => s.contains(t.as_str()),
    }
}
