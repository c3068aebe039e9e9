//! Which rules a record can match, by its eventName and eventSource.
//!
//! Why: most rules name the events they are about (`$.eventName = "ConsoleLogin"`,
//! `detail.eventName: [StopLogging]`, Sigma's `eventName: DeleteTrail`). Asking only those rules
//! is what keeps all packs together cheap per record. The index never decides a match: it
//! names candidates, and each candidate is asked with its own language's `matches`, so a rule
//! is evaluated on every record it could match.
//!
//! A rule's [`Keys`] are derived from its pattern when the pattern *requires* them: a record
//! can only match if its eventName is in `names`, or its service (`eventSource` up to the first
//! `.`, as EventBridge's `source` is built) is in `services`, or one of the `fields` (a path and
//! a value, such as `userIdentity.type` = `root`) holds. Keys are compared in lower case,
//! so Sigma's case-insensitive values are covered; being a superset is safe. What cannot be
//! derived (a top-level `||` with an unkeyed branch, `!=`, wildcards, Sigma keywords) leaves
//! the rule unkeyed: asked on every record.

use crate::event_pattern::{Field, Matcher, Node};
use crate::filter_pattern::{Expr, Op, Selector, Step, StrMatch, Value as FpValue};
use rsigma_parser::{ConditionExpr, Detection, Detections, Quantifier, SelectorPattern};
use serde_json::Value;
use std::collections::BTreeSet;
use std::hash::{BuildHasherDefault, Hasher};

/// The index's maps: looked up several times per record with short keys, where std's SipHash
/// (built against hash flooding) costs more than the rest of the lookup. The keys are the
/// rules' own values, not attacker-chosen, so a fast multiplicative hash is enough.
type HashMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<KeyHasher>>;

/// FxHash-style: rotate, xor, multiply, 8 bytes at a time.
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// What a rule requires: eventName in `names`, or service in `services`, or a (dotted path,
/// value) of `fields` (values in lower case).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Keys {
    pub names: BTreeSet<String>,
    pub services: BTreeSet<String>,
    pub fields: BTreeSet<(String, String)>,
}

impl Keys {
    fn name(v: &str) -> Keys {
        Keys {
            names: [v.to_ascii_lowercase()].into(),
            ..Keys::default()
        }
    }

    fn service_of_source(source: &str) -> Keys {
        Keys {
            services: [service_of(source).to_ascii_lowercase()].into(),
            ..Keys::default()
        }
    }

    /// Any other field: `path` dotted, as in Sigma.
    fn field(path: &str, v: &str) -> Option<Keys> {
        match path {
            "eventName" => Some(Keys::name(v)),
            "eventSource" => Some(Keys::service_of_source(v)),
            // An empty value may stand for an absent field (Sigma); not a key.
            _ if v.is_empty() || path.is_empty() => None,
            _ => Some(Keys {
                fields: [(path.to_string(), v.to_ascii_lowercase())].into(),
                ..Keys::default()
            }),
        }
    }

    /// What the keys cost and let through, roughly: a service covers many event names; another
    /// field is a lookup on every record, so it is used only for rules with nothing better.
    fn cost(&self) -> usize {
        self.names.len() + 20 * self.services.len() + 1000 * self.fields.len()
    }

    /// Both must hold: either one's keys are required (the cheaper is kept).
    fn and(a: Option<Keys>, b: Option<Keys>) -> Option<Keys> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.cost() < a.cost() { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    /// Either may hold: keyed only if both are.
    fn or(a: Option<Keys>, b: Option<Keys>) -> Option<Keys> {
        let (mut a, b) = (a?, b?);
        a.names.extend(b.names);
        a.services.extend(b.services);
        a.fields.extend(b.fields);
        Some(a)
    }
}

/// The service part of an eventSource: `iam` of `iam.amazonaws.com`, `sshd` of
/// `sshd.onprem.internal`.
pub(crate) fn service_of(event_source: &str) -> &str {
    event_source.split('.').next().unwrap_or(event_source)
}

fn is_field(sel: &Selector, name: &str) -> bool {
    matches!(sel.steps.as_slice(), [Step::Field(f)] if f == name)
}

/// `a.b.c` of a selector made of names only.
fn dotted(sel: &Selector) -> Option<String> {
    let names: Option<Vec<&str>> = sel
        .steps
        .iter()
        .map(|s| match s {
            Step::Field(f) if !f.contains('.') => Some(f.as_str()),
            _ => None,
        })
        .collect();
    Some(names?.join("."))
}

/// Keys a filter pattern requires.
pub(crate) fn filter_keys(expr: &Expr) -> Option<Keys> {
    match expr {
        Expr::And(terms) => terms.iter().map(filter_keys).fold(None, Keys::and),
        Expr::Or(terms) => terms.iter().map(filter_keys).reduce(Keys::or).flatten(),
        Expr::Compare {
            selector,
            op: Op::Eq,
            value: FpValue::Str(m),
        } => {
            if is_field(selector, "eventName") {
                match m {
                    StrMatch::Exact(v) => Some(Keys::name(v)),
                    _ => None,
                }
            } else if is_field(selector, "eventSource") {
                match m {
                    StrMatch::Exact(v) => Some(Keys::service_of_source(v)),
                    // `sshd.*`: the service is what comes before the first '.'.
                    StrMatch::Prefix(p) if p.contains('.') => Some(Keys::service_of_source(p)),
                    _ => None,
                }
            } else {
                match m {
                    StrMatch::Exact(v) => Keys::field(&dotted(selector)?, v),
                    _ => None,
                }
            }
        }
        Expr::OneOf { selector, values } => {
            if is_field(selector, "eventName") {
                values
                    .iter()
                    .map(|v| Some(Keys::name(v)))
                    .reduce(Keys::or)
                    .flatten()
            } else if is_field(selector, "eventSource") {
                values
                    .iter()
                    .map(|v| Some(Keys::service_of_source(v)))
                    .reduce(Keys::or)
                    .flatten()
            } else {
                let path = dotted(selector)?;
                values
                    .iter()
                    .map(|v| Keys::field(&path, v))
                    .reduce(Keys::or)
                    .flatten()
            }
        }
        _ => None,
    }
}

/// Exact string values of a leaf, or `None` if any matcher is something else.
fn exact_strings(field: &Field) -> Option<Vec<&str>> {
    let Field::Leaf(matchers) = field else {
        return None;
    };
    matchers
        .iter()
        .map(|m| match m {
            Matcher::Exact(Value::String(s)) => Some(s.as_str()),
            _ => None,
        })
        .collect()
}

/// Keys an event pattern (over the EventBridge envelope) requires: `source: [aws.x]`,
/// `detail.eventName`, `detail.eventSource`.
pub(crate) fn event_keys(root: &Node) -> Option<Keys> {
    let mut keys = None;
    for (name, field) in &root.fields {
        let k = match name.as_str() {
            "source" => exact_strings(field).map(|vs| {
                let mut k = Keys::default();
                for v in vs {
                    k.services
                        .insert(v.strip_prefix("aws.").unwrap_or(v).to_ascii_lowercase());
                }
                k
            }),
            "detail" => match field {
                Field::Nested(detail) => detail_keys(detail),
                Field::Leaf(_) => None,
            },
            _ => None,
        };
        keys = Keys::and(keys, k);
    }
    keys
}

fn detail_keys(detail: &Node) -> Option<Keys> {
    let mut keys = None;
    for (name, field) in &detail.fields {
        let k = match name.as_str() {
            "eventName" => exact_strings(field).and_then(|vs| {
                vs.into_iter()
                    .map(|v| Some(Keys::name(v)))
                    .reduce(Keys::or)
                    .flatten()
            }),
            "eventSource" => exact_strings(field).and_then(|vs| {
                vs.into_iter()
                    .map(|v| Some(Keys::service_of_source(v)))
                    .reduce(Keys::or)
                    .flatten()
            }),
            _ => None,
        };
        keys = Keys::and(keys, k);
    }
    keys
}

/// Keys a Sigma rule's detection requires (its conditions are alternatives).
pub(crate) fn sigma_keys(det: &Detections) -> Option<Keys> {
    det.conditions
        .iter()
        .map(|c| condition_keys(c, det))
        .reduce(Keys::or)
        .flatten()
}

fn condition_keys(c: &ConditionExpr, det: &Detections) -> Option<Keys> {
    match c {
        ConditionExpr::And(xs) => xs
            .iter()
            .map(|x| condition_keys(x, det))
            .fold(None, Keys::and),
        ConditionExpr::Or(xs) => xs
            .iter()
            .map(|x| condition_keys(x, det))
            .reduce(Keys::or)
            .flatten(),
        ConditionExpr::Not(_) => None,
        ConditionExpr::Identifier(name) => det.named.get(name).and_then(detection_keys),
        ConditionExpr::Selector {
            quantifier,
            pattern,
        } => {
            let mut names: Vec<&String> = det
                .named
                .keys()
                .filter(|n| match pattern {
                    SelectorPattern::Them => !n.starts_with('_'),
                    SelectorPattern::Pattern(p) => glob(p, n),
                })
                .collect();
            names.sort();
            let keys = names.iter().map(|n| detection_keys(&det.named[*n]));
            match quantifier {
                Quantifier::All => keys.fold(None, Keys::and),
                Quantifier::Any | Quantifier::Count(_) => keys.reduce(Keys::or).flatten(),
            }
        }
    }
}

/// A Sigma detection item's field and the values it must equal, when the item says so: a
/// named field whose values are all plain strings and that has no modifier but `cased`.
/// (Shared with [`super::prefilter`], which derives its requirements the same way.)
pub(crate) fn sigma_plain_values(
    item: &rsigma_parser::DetectionItem,
) -> Option<(&str, Vec<String>)> {
    let name = item.field.name.as_deref()?;
    let plain = item
        .field
        .modifiers
        .iter()
        .all(|m| *m == rsigma_parser::Modifier::Cased);
    if !plain {
        return None;
    }
    let values = item
        .values
        .iter()
        .map(|v| match v {
            rsigma_parser::value::SigmaValue::String(s) => s.as_plain(),
            _ => None,
        })
        .collect::<Option<Vec<String>>>()?;
    Some((name, values))
}

fn detection_keys(d: &Detection) -> Option<Keys> {
    match d {
        Detection::AllOf(items) => {
            let mut keys = None;
            for item in items {
                let Some((field, values)) = sigma_plain_values(item) else {
                    continue;
                };
                if values.is_empty() {
                    continue;
                }
                let k = values
                    .iter()
                    .map(|v| Keys::field(field, v))
                    .reduce(Keys::or)
                    .flatten();
                keys = Keys::and(keys, k);
            }
            keys
        }
        Detection::AnyOf(ds) => ds.iter().map(detection_keys).reduce(Keys::or).flatten(),
        _ => None,
    }
}

/// Sigma's `selection_*` name patterns: `*` is any run of characters.
pub(crate) fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => name.strip_prefix(head).is_some_and(|rest| {
            (0..=rest.len())
                .filter(|i| rest.is_char_boundary(*i))
                .any(|i| glob(tail, &rest[i..]))
        }),
    }
}

/// Rule slots by the keys they require. A slot is `rule index * 2 + part` (part 0: the rule's
/// pattern, 1: its `after` pattern), so sorted slots are in rule order.
#[derive(Debug, Default)]
pub(crate) struct Index {
    names: HashMap<Box<str>, Vec<u32>>,
    services: HashMap<Box<str>, Vec<u32>>,
    fields: Vec<FieldIndex>,
    always: Vec<u32>,
}

/// Slots keyed on one other field.
#[derive(Debug)]
struct FieldIndex {
    path: String,
    steps: Vec<String>,
    by_value: HashMap<Box<str>, Vec<u32>>,
    /// Every slot of this field, for a record whose value there is not a string (an array, a
    /// number, an object): the index cannot tell, so all are asked.
    all: Vec<u32>,
}

impl Index {
    pub(crate) fn add(&mut self, slot: u32, keys: Option<Keys>) {
        match keys {
            None => self.always.push(slot),
            Some(k) => {
                for n in k.names {
                    self.names.entry(n.into()).or_default().push(slot);
                }
                for s in k.services {
                    self.services.entry(s.into()).or_default().push(slot);
                }
                for (path, v) in k.fields {
                    let i = match self.fields.iter().position(|f| f.path == path) {
                        Some(i) => i,
                        None => {
                            self.fields.push(FieldIndex {
                                steps: path.split('.').map(str::to_string).collect(),
                                path,
                                by_value: HashMap::default(),
                                all: Vec::new(),
                            });
                            self.fields.len() - 1
                        }
                    };
                    let f = &mut self.fields[i];
                    f.by_value.entry(v.into()).or_default().push(slot);
                    if !f.all.contains(&slot) {
                        f.all.push(slot);
                    }
                }
            }
        }
    }

    /// Number of slots asked on every record.
    pub(crate) fn unkeyed(&self) -> usize {
        self.always.len()
    }

    /// The slots asked on every record.
    #[cfg(test)]
    pub(crate) fn unkeyed_slots(&self) -> &[u32] {
        &self.always
    }

    /// The slots `record` can match, sorted, without repeats.
    pub(crate) fn candidates(&self, record: &Value, out: &mut Vec<u32>) {
        out.clear();
        out.extend_from_slice(&self.always);
        let s = |k: &str| record.get(k).and_then(Value::as_str);
        if let Some(name) = s("eventName") {
            lookup(&self.names, name, out);
        }
        let source = s("eventSource").or_else(|| {
            record
                .pointer("/insightDetails/eventSource")
                .and_then(Value::as_str)
        });
        if let Some(src) = source {
            lookup(&self.services, service_of(src), out);
        }
        for f in &self.fields {
            let v = f
                .steps
                .iter()
                .try_fold(record, |node, step| node.as_object()?.get(step.as_str()));
            match v {
                Some(Value::String(v)) => lookup(&f.by_value, v, out),
                None | Some(Value::Null) => {}
                Some(_) => out.extend_from_slice(&f.all),
            }
        }
        out.sort_unstable();
        out.dedup();
    }
}

/// Looks `key` up in lower case, without allocating for keys of up to 64 bytes.
fn lookup(map: &HashMap<Box<str>, Vec<u32>>, key: &str, out: &mut Vec<u32>) {
    if map.is_empty() {
        return;
    }
    let mut buf = [0u8; 64];
    let found = if key.len() <= buf.len() {
        let b = &mut buf[..key.len()];
        b.copy_from_slice(key.as_bytes());
        b.make_ascii_lowercase();
        // Lower-casing ASCII bytes keeps UTF-8 valid.
        map.get(std::str::from_utf8(b).unwrap_or(key))
    } else {
        map.get(key.to_ascii_lowercase().as_str())
    };
    if let Some(slots) = found {
        out.extend_from_slice(slots);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event_pattern::EventPattern;
    use crate::filter_pattern::FilterPattern;

    fn fp(p: &str) -> Option<Keys> {
        filter_keys(FilterPattern::parse(p).unwrap().expr())
    }

    fn keys(names: &[&str], services: &[&str]) -> Option<Keys> {
        Some(Keys {
            names: names.iter().map(|s| s.to_string()).collect(),
            services: services.iter().map(|s| s.to_string()).collect(),
            fields: BTreeSet::new(),
        })
    }

    #[test]
    fn filter_pattern_keys() {
        assert_eq!(
            fp(r#"{ $.eventName = "ConsoleLogin" }"#),
            keys(&["consolelogin"], &[])
        );
        assert_eq!(
            fp(
                r#"{ ($.eventSource = kms.amazonaws.com) && (($.eventName = DisableKey) || ($.eventName = ScheduleKeyDeletion)) }"#
            ),
            keys(&["disablekey", "schedulekeydeletion"], &[])
        );
        assert_eq!(
            fp(r#"{ $.eventSource = "sshd.*" && $.errorCode = "AccessDenied" }"#),
            keys(&[], &["sshd"])
        );
        assert_eq!(
            fp(r#"{ $.eventName = "A" || $.eventName = "B" || $.eventSource = "iam.x" }"#),
            keys(&["a", "b"], &["iam"])
        );
        // A branch without keys makes the whole `||` unkeyed.
        assert_eq!(fp(r#"{ $.eventName = "A" || $.errorCode != "X" }"#), None);
        // Other fields are keys too.
        assert_eq!(
            fp(r#"{ $.userIdentity.type = "Root" && $.userIdentity.invokedBy NOT EXISTS }"#),
            Some(Keys {
                fields: [("userIdentity.type".into(), "root".into())].into(),
                ..Keys::default()
            })
        );
        assert_eq!(fp(r#"{ $.eventName = "Con*" }"#), None);
        assert_eq!(fp(r#"{ $.eventName != "A" }"#), None);
    }

    #[test]
    fn event_pattern_keys() {
        let ep = |p: &str| event_keys(EventPattern::parse(p).unwrap().root());
        assert_eq!(
            ep(
                r#"{"source": ["aws.cloudtrail"], "detail": {"eventName": ["StopLogging", "DeleteTrail"]}}"#
            ),
            keys(&["stoplogging", "deletetrail"], &[])
        );
        assert_eq!(ep(r#"{"source": ["aws.iam"]}"#), keys(&[], &["iam"]));
        assert_eq!(
            ep(r#"{"detail": {"eventName": [{"prefix": "Put"}]}}"#),
            None
        );
    }

    #[test]
    fn lookup_is_case_insensitive_and_sorted() {
        let mut ix = Index::default();
        ix.add(4, keys(&["consolelogin"], &[]));
        ix.add(2, keys(&[], &["sshd"]));
        ix.add(0, None);
        let mut out = Vec::new();
        ix.candidates(
            &serde_json::json!({"eventName": "ConsoleLogin", "eventSource": "sshd.onprem.internal"}),
            &mut out,
        );
        assert_eq!(out, [0, 2, 4]);
        ix.candidates(&serde_json::json!({"eventName": "Other"}), &mut out);
        assert_eq!(out, [0]);
        ix.add(6, Keys::field("userIdentity.type", "Root"));
        ix.candidates(
            &serde_json::json!({"userIdentity": {"type": "ROOT"}}),
            &mut out,
        );
        assert_eq!(out, [0, 6]);
        ix.candidates(
            &serde_json::json!({"userIdentity": {"type": "IAMUser"}}),
            &mut out,
        );
        assert_eq!(out, [0]);
        // Not a string there: the index cannot tell, the rule is asked.
        ix.candidates(
            &serde_json::json!({"userIdentity": {"type": ["Root"]}}),
            &mut out,
        );
        assert_eq!(out, [0, 6]);
    }

    #[test]
    fn sigma_name_globs() {
        assert!(glob("selection_*", "selection_a"));
        assert!(glob("*", "x"));
        assert!(glob("a*c", "abc"));
        assert!(!glob("selection_*", "filter"));
    }
}
