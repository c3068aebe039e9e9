//! The compiled form of an event pattern.

use ipnet::IpNet;
use serde_json::Value as Json;

/// One level of a pattern: fields that must all match, and `$or` groups of which one
/// alternative must match.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Field name and what its value must satisfy; all must hold.
    pub fields: Vec<(String, Field)>,
    /// Each group is a `$or`: at least one of its alternatives must match at this level.
    pub ors: Vec<Vec<Node>>,
}

/// What a field in the pattern asks of the event.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    /// A nested object in the pattern: the event's field must satisfy it.
    Nested(Node),
    /// An array of values and operators: one of them must match.
    Leaf(Vec<Matcher>),
}

/// One entry of a pattern's value array.
#[derive(Debug, Clone, PartialEq)]
pub enum Matcher {
    /// A plain JSON value: string, number, `true`, `false` or `null`.
    Exact(Json),
    /// `{"prefix": "s"}` or `{"prefix": {"equals-ignore-case": "s"}}`.
    Prefix { text: String, ignore_case: bool },
    /// `{"suffix": "s"}` or `{"suffix": {"equals-ignore-case": "s"}}`.
    Suffix { text: String, ignore_case: bool },
    /// `{"equals-ignore-case": "s"}`.
    EqualsIgnoreCase(String),
    /// `{"wildcard": "a*b"}`.
    Wildcard(Glob),
    /// `{"anything-but": ...}`.
    AnythingBut(AnythingBut),
    /// `{"numeric": [op, n, ...]}`: every bound must hold.
    Numeric(Vec<(Cmp, f64)>),
    /// `{"cidr": "10.0.0.0/24"}`.
    Cidr(IpNet),
    /// `{"exists": bool}`.
    Exists(bool),
}

/// The forms of `anything-but`.
#[derive(Debug, Clone, PartialEq)]
pub enum AnythingBut {
    /// A value or a list of values (all strings or all numbers).
    Values(Vec<Json>),
    /// `{"prefix": s | [s...]}`
    Prefix(Vec<String>),
    /// `{"suffix": s | [s...]}`
    Suffix(Vec<String>),
    /// `{"equals-ignore-case": s | [s...]}`
    EqualsIgnoreCase(Vec<String>),
    /// `{"wildcard": s | [s...]}`
    Wildcard(Vec<Glob>),
}

/// A numeric comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// `=`
    Eq,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// A wildcard pattern split at its unescaped `*`: `a*b*c` is `["a", "b", "c"]`, `*a` is
/// `["", "a"]`. The literal parts have their `\*` and `\\` escapes resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    /// Literal parts between the stars; one more than the number of stars.
    pub parts: Vec<String>,
}
