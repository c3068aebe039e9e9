//! Packs of filter-pattern rules, and the built-in CIS pack.
//!
//! `packs/cis-cloudwatch.json` holds the fourteen metric filter patterns of Security Hub's
//! CloudWatch.1-14 controls, copied character for character from the remediation steps of the
//! AWS Security Hub user guide (the file names the commit read). Security Hub fails a control
//! when the pattern differs at all, so the text is kept byte-exact and embedded, not retyped.

use super::{FilterPattern, ParseError};
use serde::Deserialize;

/// The CIS pack's JSON, embedded so the engine never runs without it.
pub const CIS_CLOUDWATCH_JSON: &str = include_str!("../../packs/cis-cloudwatch.json");

/// A pack file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackFile {
    /// Short name of the pack, e.g. `cis-cloudwatch`.
    pub name: String,
    /// What the pack is for.
    pub description: String,
    /// Where the patterns come from (document and version), so an auditor can check them.
    pub source: String,
    /// The rules, in the order the source lists them.
    pub rules: Vec<PackRuleFile>,
}

/// One rule as written in a pack file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackRuleFile {
    /// Control id, e.g. `CloudWatch.1`.
    pub control: String,
    /// The control's title as the source states it.
    pub title: String,
    /// Benchmarks and requirements the source maps the control to.
    #[serde(default)]
    pub related_requirements: Vec<String>,
    /// The filter pattern, verbatim.
    pub pattern: String,
}

/// A rule whose pattern parsed.
#[derive(Debug, Clone)]
pub struct PackRule {
    /// Control id, e.g. `CloudWatch.1`.
    pub control: String,
    /// The control's title.
    pub title: String,
    /// Benchmarks and requirements the control maps to.
    pub related_requirements: Vec<String>,
    /// The parsed pattern (its [`FilterPattern::source`] is the verbatim text).
    pub pattern: FilterPattern,
}

/// Why a pack did not load.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The file is not a valid pack document.
    #[error("pack {pack}: {source}")]
    Json {
        /// The pack's name or file.
        pack: String,
        /// The JSON error, with its line and column.
        source: serde_json::Error,
    },
    /// A rule's pattern does not parse.
    #[error("pack {pack}: rule {control}: {source}")]
    Pattern {
        /// The pack's name or file.
        pack: String,
        /// The rule's control id.
        control: String,
        /// Where the pattern stopped parsing.
        source: ParseError,
    },
}

/// Parses a pack document; `origin` names it in errors (a file path, or the built-in name).
pub fn load(origin: &str, json: &str) -> Result<Vec<PackRule>, PackError> {
    let file: PackFile = serde_json::from_str(json).map_err(|source| PackError::Json {
        pack: origin.to_string(),
        source,
    })?;
    file.rules
        .into_iter()
        .map(|r| {
            let pattern =
                FilterPattern::parse(&r.pattern).map_err(|source| PackError::Pattern {
                    pack: origin.to_string(),
                    control: r.control.clone(),
                    source,
                })?;
            Ok(PackRule {
                control: r.control,
                title: r.title,
                related_requirements: r.related_requirements,
                pattern,
            })
        })
        .collect()
}

/// The built-in CIS CloudWatch.1-14 pack.
pub fn cis_cloudwatch() -> Result<Vec<PackRule>, PackError> {
    load("cis-cloudwatch (built in)", CIS_CLOUDWATCH_JSON)
}
