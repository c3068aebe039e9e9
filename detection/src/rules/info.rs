//! What is known about a rule besides its logic: its name, severity, language and origin.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How urgent a rule's firing is. Rule files write it in lower case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth recording, not worth waking anyone (a package installed).
    Info,
    /// Unusual, to look at in the next review.
    Low,
    /// Suspicious, to look at today.
    Medium,
    /// Likely an attack or a control switched off.
    High,
    /// An attack in progress or an audit control gone.
    Critical,
}

impl Severity {
    /// The severity of a Sigma `level` (`informational`, `low`, `medium`, `high`, `critical`);
    /// a rule without one is `medium`, Sigma's middle.
    pub fn from_sigma_level(level: Option<&str>) -> Severity {
        match level.map(str::to_ascii_lowercase).as_deref() {
            Some("informational") | Some("info") => Severity::Info,
            Some("low") => Severity::Low,
            Some("high") => Severity::High,
            Some("critical") => Severity::Critical,
            _ => Severity::Medium,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        })
    }
}

/// The language a rule's pattern is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Language {
    /// A CloudWatch Logs JSON filter pattern ([`crate::filter_pattern`]).
    FilterPattern,
    /// An EventBridge event pattern ([`crate::event_pattern`]).
    EventPattern,
    /// A Sigma rule ([`crate::sigma`]).
    Sigma,
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Language::FilterPattern => "filter-pattern",
            Language::EventPattern => "event-pattern",
            Language::Sigma => "sigma",
        })
    }
}

/// A loaded rule as people see it (alerts, `alerts` listings, the rules API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleInfo {
    /// Unique in the rule set: `[A-Za-z0-9._-]+` (a Sigma rule's `id`).
    pub id: String,
    /// One line saying what the rule detects.
    pub title: String,
    /// How urgent a firing is.
    pub severity: Severity,
    /// The language of its pattern.
    pub language: Language,
    /// Where it was loaded from: `pack:cis`, `pack:host`, `pack:sigma/<file>`, or a file path.
    pub origin: String,
    /// Longer explanation, if the rule has one.
    pub description: Option<String>,
    /// When it fires: `any match`, `>= 5 in 300 s by $.sourceIPAddress`, ...
    pub condition: String,
}
