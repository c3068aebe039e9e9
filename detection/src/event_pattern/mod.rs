//! EventBridge event patterns (`{"source": ["aws.iam"], "detail": {"eventName": [...]}}`).
//!
//! Why: EventBridge rules are how AWS users react to CloudTrail events in seconds; letting the
//! same pattern documents run on Groundtrail's records means one rule set spans the AWS side
//! and the on-prem side. Records are matched inside the envelope EventBridge would deliver them
//! in ([`wrap_cloudtrail`]).
//!
//! What is exact: the operators of the EventBridge user guide's "Content filtering" page and
//! the event-ruler README (AWS's open-sourced matcher): exact values (strings, numbers,
//! `null`, `""`), `prefix`, `suffix` (both also with `equals-ignore-case`),
//! `equals-ignore-case`, `wildcard`, `anything-but` (values, and its prefix, suffix,
//! equals-ignore-case and wildcard forms), `numeric`, `cidr` (IPv4 and IPv6), `exists`, `$or`,
//! nested fields and arrays in the event; the matching rules are listed in `eval.rs`.
//! Validation rejects what the EventBridge API rejects that we know of (empty arrays, bare
//! scalars, unknown operators, malformed numeric ranges, `**` in wildcards), naming the path.
//! Not modelled: event size limits, and the `$or` complexity limit.

mod ast;
mod compile;
mod eval;
mod wrap;

pub use ast::{AnythingBut, Cmp, Field, Glob, Matcher, Node};
pub use wrap::{cloudtrail_envelope, detail_type, source, wrap_cloudtrail};

/// A pattern that is not valid, with the path of the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event pattern: at {path}: {message}")]
pub struct PatternError {
    /// Where in the pattern, e.g. `detail.eventName[0].prefix`; `(top)` for the whole pattern.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// A validated event pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPattern {
    root: Node,
}

impl EventPattern {
    /// Parses and validates a pattern from its JSON text.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let json: serde_json::Value = serde_json::from_str(text).map_err(|e| PatternError {
            path: format!("line {} column {}", e.line(), e.column()),
            message: format!("not valid JSON: {e}"),
        })?;
        Self::from_json(&json)
    }

    /// Validates a pattern already parsed as JSON.
    pub fn from_json(pattern: &serde_json::Value) -> Result<Self, PatternError> {
        Ok(Self {
            root: compile::compile(pattern)?,
        })
    }

    /// True if the event (an EventBridge envelope, or any JSON object) matches.
    pub fn matches(&self, event: &serde_json::Value) -> bool {
        eval::node_matches(&self.root, Some(event))
    }

    /// True if the CloudTrail record, wrapped as EventBridge delivers it, matches.
    /// Builds the envelope without copying the record.
    pub fn matches_record(&self, record: &serde_json::Value) -> bool {
        self.matches_in_envelope(&cloudtrail_envelope(record), record)
    }

    /// As [`Self::matches_record`], with the envelope built once by [`cloudtrail_envelope`] and
    /// shared by every pattern evaluated on the record.
    pub fn matches_in_envelope(
        &self,
        envelope: &serde_json::Value,
        record: &serde_json::Value,
    ) -> bool {
        eval::envelope_matches(&self.root, envelope, record)
    }

    /// The compiled pattern.
    pub fn root(&self) -> &Node {
        &self.root
    }
}

#[cfg(test)]
mod tests;
