//! Cheap checks that rule out a candidate before its language is asked.
//!
//! Why: the index keys a rule on one field (usually eventName), but most rules require more
//! (`eventName: ConsoleLogin` *and* `errorMessage: Failed authentication`), and asking a Sigma
//! rule costs far more than reading two fields. (Filter and event patterns are not
//! prefiltered: they read their fields in order and stop at the first that fails, so a
//! prefilter would only read those fields twice.) A [`Requirement`] is a field the rule requires
//! to equal one of a few strings; they are derived, like the index keys, only where the
//! pattern's AND makes them necessary, and compared in lower case (a superset of every
//! language's equality). Like the index, they only skip rules that cannot match: a record
//! whose field holds something other than a string (an array, a number) passes.

use rsigma_parser::{ConditionExpr, Detection, Detections, Quantifier};
use serde_json::Value;

/// A field that must equal (ignoring case) one of `values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Requirement {
    path: Vec<String>,
    values: Vec<String>,
}

impl Requirement {
    fn new(path: Vec<String>, values: impl IntoIterator<Item = String>) -> Option<Requirement> {
        let values: Vec<String> = values.into_iter().map(|v| v.to_lowercase()).collect();
        (!path.is_empty() && !values.is_empty() && values.iter().all(|v| !v.is_empty()))
            .then_some(Requirement { path, values })
    }

    fn holds(&self, record: &Value) -> bool {
        let mut node = record;
        for step in &self.path {
            node = match node {
                Value::Object(m) => match m.get(step.as_str()) {
                    Some(v) => v,
                    None => return false,
                },
                // Sigma looks into arrays on the way: cannot tell here.
                Value::Array(_) => return true,
                _ => return false,
            };
        }
        match Some(node) {
            Some(Value::String(s)) => {
                // ASCII case-folding first (no allocation); full Unicode lower case only for
                // non-ASCII text.
                self.values.iter().any(|w| w.eq_ignore_ascii_case(s))
                    || (!s.is_ascii() && self.values.contains(&s.to_lowercase()))
            }
            None | Some(Value::Null) => false,
            Some(_) => true,
        }
    }
}

/// True if every requirement holds.
pub(crate) fn all_hold(reqs: &[Requirement], record: &Value) -> bool {
    reqs.iter().all(|r| r.holds(record))
}

/// Requirements of a Sigma rule: the plain-valued fields of the selections its single
/// condition ANDs.
pub(crate) fn sigma(det: &Detections) -> Vec<Requirement> {
    match det.conditions.as_slice() {
        [c] => condition(c, det),
        _ => Vec::new(),
    }
}

fn condition(c: &ConditionExpr, det: &Detections) -> Vec<Requirement> {
    match c {
        ConditionExpr::And(xs) => xs.iter().flat_map(|x| condition(x, det)).collect(),
        ConditionExpr::Identifier(name) => det.named.get(name).map_or_else(Vec::new, detection),
        ConditionExpr::Selector {
            quantifier: Quantifier::All,
            pattern,
        } => {
            let mut names: Vec<&String> = det
                .named
                .keys()
                .filter(|n| match pattern {
                    rsigma_parser::SelectorPattern::Them => !n.starts_with('_'),
                    rsigma_parser::SelectorPattern::Pattern(p) => super::index::glob(p, n),
                })
                .collect();
            names.sort();
            names
                .iter()
                .flat_map(|n| detection(&det.named[*n]))
                .collect()
        }
        _ => Vec::new(),
    }
}

fn detection(d: &Detection) -> Vec<Requirement> {
    let Detection::AllOf(items) = d else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let (name, values) = super::index::sigma_plain_values(item)?;
            Requirement::new(name.split('.').map(str::to_string).collect(), values)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requirements_only_rule_out_what_cannot_match() {
        let r = Requirement::new(
            vec!["userIdentity".into(), "type".into()],
            ["Root".to_string()],
        )
        .unwrap();
        assert!(r.holds(&json!({"userIdentity": {"type": "root"}})));
        assert!(r.holds(&json!({"userIdentity": {"type": "ROOT"}})));
        assert!(!r.holds(&json!({"userIdentity": {"type": "IAMUser"}})));
        assert!(!r.holds(&json!({"userIdentity": {}})));
        assert!(!r.holds(&json!({"userIdentity": {"type": null}})));
        // Not a string, or an array on the way: the language decides.
        assert!(r.holds(&json!({"userIdentity": {"type": ["Root"]}})));
        assert!(r.holds(&json!({"userIdentity": [{"type": "Root"}]})));
        assert!(r.holds(&json!({"userIdentity": {"type": 1}})));
        assert!(Requirement::new(vec!["a".into()], [String::new()]).is_none());
    }

    #[test]
    fn sigma_requirements_are_the_anded_plain_fields() {
        let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "packs/sigma-aws-cloudtrail/aws_cloudtrail_console_login_failed_authentication.yml",
        ))
        .unwrap();
        let rule = crate::sigma::SigmaRule::parse("x", &text).unwrap();
        let reqs = sigma(&rule.detection);
        assert_eq!(reqs.len(), 2);
        assert!(all_hold(
            &reqs,
            &json!({"eventName": "ConsoleLogin", "errorMessage": "Failed authentication"})
        ));
        assert!(!all_hold(&reqs, &json!({"eventName": "ConsoleLogin"})));
    }
}
