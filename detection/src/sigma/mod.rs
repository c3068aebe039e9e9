//! Sigma rules for `logsource: {product: aws, service: cloudtrail}`.
//!
//! Why: Sigma is the shared language of detection content; SigmaHQ publishes CloudTrail rules
//! that security teams already run in their SIEMs, and Groundtrail should run them unmodified
//! on its records. `packs/sigma-aws-cloudtrail/` vendors the SigmaHQ rules (DRL 1.1, with
//! attribution in that folder's README).
//!
//! Parsing and matching are done by `rsigma-parser`/`rsigma-eval` (MIT, maintained, compile
//! once and match without allocation, with correlation rules for later count-based alerts).
//! The crate was checked against the Sigma rules specification by the tests in `tests.rs`,
//! each citing the section: values case-insensitive unless `|cased`, `*`/`?` wildcards in plain
//! values, lists OR, maps AND, `|all`, `|contains`/`|startswith`/`|endswith`, `|re` (case
//! sensitive), `|cidr`, `|fieldref`, `null` for an absent or empty field, and conditions with
//! `and`, `or`, `not`, parentheses, `1 of x_*`, `all of them`.
//!
//! What this module adds: a rule must declare the CloudTrail logsource (anything else is a
//! load error naming the file), one rule per file, and object-valued fields are offered as their
//! JSON text (see [`event`]).

mod event;
mod set;

pub use set::SigmaSet;

use event::RecordEvent;
use rsigma_eval::compiler::{CompiledRule, compile_rule, evaluate_rule};
use rsigma_eval::event::JsonEvent;
use std::path::Path;

/// Why a Sigma rule did not load.
#[derive(Debug, thiserror::Error)]
pub enum SigmaError {
    /// The rule file could not be read.
    #[error("sigma rule {origin}: {source}")]
    Io {
        /// The file.
        origin: String,
        /// The read error.
        source: std::io::Error,
    },
    /// The YAML is not a valid Sigma rule.
    #[error("sigma rule {origin}: {message}")]
    Parse {
        /// The file or name given to the loader.
        origin: String,
        /// The parser's message, with its position where it gives one.
        message: String,
    },
    /// The file holds no rule, or several.
    #[error("sigma rule {origin}: expected one detection rule, found {found}")]
    NotOneRule {
        /// The file.
        origin: String,
        /// How many detection rules it holds.
        found: usize,
    },
    /// Two rules of a set share an id (or, without ids, a title).
    #[error("sigma rule {origin}: same id as {first}")]
    Duplicate {
        /// The later rule's file.
        origin: String,
        /// The earlier rule's file.
        first: String,
    },
    /// The rule is for another log source.
    #[error(
        "sigma rule {origin}: logsource is product={product:?} service={service:?}, not product=aws service=cloudtrail"
    )]
    Logsource {
        /// The file.
        origin: String,
        /// The rule's `logsource.product`.
        product: Option<String>,
        /// The rule's `logsource.service`.
        service: Option<String>,
    },
}

/// A loaded Sigma rule, compiled for matching.
#[derive(Debug)]
pub struct SigmaRule {
    /// Where the rule came from (file path or given name).
    pub origin: String,
    /// The rule's `title`.
    pub title: String,
    /// The rule's `id`, if any.
    pub id: Option<String>,
    /// The rule's `level` (`low`, `medium`, ...), if any.
    pub level: Option<String>,
    /// The rule's `description`, if any.
    pub description: Option<String>,
    /// The parsed detection section, kept so the rule engine can index the rule by the event
    /// names it requires ([`crate::rules`]).
    pub(crate) detection: rsigma_parser::Detections,
    compiled: CompiledRule,
}

impl SigmaRule {
    /// Parses one CloudTrail Sigma rule; `origin` names it in errors.
    pub fn parse(origin: &str, yaml: &str) -> Result<Self, SigmaError> {
        let parse_err = |message: String| SigmaError::Parse {
            origin: origin.to_string(),
            message,
        };
        let collection =
            rsigma_parser::parse_sigma_yaml(yaml).map_err(|e| parse_err(e.to_string()))?;
        if let Some(first) = collection.errors.first() {
            return Err(parse_err(first.clone()));
        }
        let [rule] = collection.rules.as_slice() else {
            return Err(SigmaError::NotOneRule {
                origin: origin.to_string(),
                found: collection.rules.len(),
            });
        };
        let ls = &rule.logsource;
        let is = |v: &Option<String>, want: &str| {
            v.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(want))
        };
        if !is(&ls.product, "aws") || !is(&ls.service, "cloudtrail") {
            return Err(SigmaError::Logsource {
                origin: origin.to_string(),
                product: ls.product.clone(),
                service: ls.service.clone(),
            });
        }
        let compiled = compile_rule(rule).map_err(|e| parse_err(e.to_string()))?;
        Ok(Self {
            origin: origin.to_string(),
            title: rule.title.clone(),
            id: rule.id.clone(),
            level: rule.level.as_ref().map(|l| l.as_str().to_string()),
            description: rule.description.clone(),
            detection: rule.detection.clone(),
            compiled,
        })
    }

    /// Reads and parses one rule file.
    pub fn load(path: &Path) -> Result<Self, SigmaError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SigmaError::Io {
            origin: origin.clone(),
            source,
        })?;
        Self::parse(&origin, &text)
    }

    /// True if the CloudTrail record matches the rule's condition.
    pub fn matches(&self, record: &serde_json::Value) -> bool {
        evaluate_rule(
            &self.compiled,
            &event::RecordEvent(JsonEvent::borrow(record)),
        )
        .is_some()
    }
}

/// Loads every `*.yml`/`*.yaml` file of a directory, in name order; the first bad file fails
/// the load with its name.
pub fn load_dir(dir: &Path) -> Result<Vec<SigmaRule>, SigmaError> {
    let io = |source| SigmaError::Io {
        origin: dir.display().to_string(),
        source,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            paths.push(path);
        }
    }
    paths.sort();
    paths.iter().map(|p| SigmaRule::load(p)).collect()
}

#[cfg(test)]
mod tests;
