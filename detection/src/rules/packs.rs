//! The built-in packs, embedded in the binary: `cis`, `host`, `sigma` (the SigmaHQ CloudTrail
//! rules of level medium and above) and `sigma-low` (those of level low and informational).
//!
//! Why two Sigma packs: SigmaHQ's low-level rules are for hunting, not alerting, and some match
//! ordinary traffic; "AWS STS AssumeRole Misuse" matches every call made with an assumed role,
//! most of a real AWS trail (0.6 alerts per record on the benchmark's generator). Loaded by
//! default they would bury the alerts that matter and cost more than the rest of detection.

use super::error::LoadError;
use super::file::{self, Counting, FileRules, Pattern, RuleDef};
use super::info::Severity;
use crate::filter_pattern::pack::cis_cloudwatch;

mod sigma_files {
    include!(concat!(env!("OUT_DIR"), "/sigma_pack.rs"));
}

/// The host pack's text (`packs/host.yaml`).
pub const HOST_YAML: &str = include_str!("../../packs/host.yaml");

/// Names of the built-in packs.
pub const NAMES: [&str; 4] = ["cis", "host", "sigma", "sigma-low"];

/// The Sigma `level` a rule file declares (`medium` without one, as Sigma reads it).
fn sigma_severity(text: &str) -> Severity {
    let level = text
        .lines()
        .find_map(|l| l.strip_prefix("level:"))
        .map(|l| l.trim().trim_matches(['"', '\'']));
    Severity::from_sigma_level(level)
}

/// Groundtrail's severity for each CIS control: how urgent an alert is, which Security Hub's
/// control severity (how bad a *missing alarm* is) does not say.
fn cis_severity(control: &str) -> Severity {
    match control {
        // Root used; CloudTrail changed; keys disabled or scheduled for deletion.
        "CloudWatch.1" | "CloudWatch.5" | "CloudWatch.7" => Severity::High,
        // Unauthorized calls and failed console logins are common noise one by one.
        "CloudWatch.2" | "CloudWatch.6" => Severity::Low,
        _ => Severity::Medium,
    }
}

/// The files of a pack, as (origin, rules).
pub(crate) fn load(name: &str) -> Result<Vec<(String, FileRules)>, LoadError> {
    match name {
        "cis" => {
            let origin = "pack:cis".to_string();
            let rules = cis_cloudwatch()
                .map_err(|e| LoadError::file(&origin, e.to_string()))?
                .into_iter()
                .map(|r| RuleDef {
                    severity: cis_severity(&r.control),
                    description: Some(format!(
                        "Security Hub control {}; {}",
                        r.control,
                        r.related_requirements.join(", ")
                    )),
                    id: r.control,
                    title: r.title,
                    summary: None,
                    pattern: Pattern::Filter(r.pattern),
                    counting: Counting::Each,
                })
                .collect();
            Ok(vec![(origin, FileRules::Rules(rules))])
        }
        "host" => Ok(vec![(
            "pack:host".to_string(),
            file::parse("pack:host", HOST_YAML, false)?,
        )]),
        "sigma" | "sigma-low" => sigma_files::SIGMA_PACK
            .iter()
            .filter(|(_, text)| (sigma_severity(text) >= Severity::Medium) == (name == "sigma"))
            .map(|(name, text)| {
                let origin = format!("pack:sigma/{name}");
                file::parse(&origin, text, false).map(|r| (origin, r))
            })
            .collect(),
        other => Err(LoadError::file(
            format!("pack:{other}"),
            format!("no such built-in pack; the packs are {}", NAMES.join(", ")),
        )),
    }
}
