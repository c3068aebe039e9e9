//! The model's parameters, with AWS-like defaults and a check that rejects nonsense.
//!
//! Why a config: AWS does not publish its Insights model, so ours is stated as numbers an
//! operator can read, tune and persist next to the detector state (a restore with different
//! parameters would not "resume exactly", so the state records the config it was built with).

use serde::{Deserialize, Serialize};

/// What the detector needs to know to tell an unusual minute from an ordinary one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InsightsConfig {
    /// Baseline window in minutes, whole hours; 10080 (7 days) is AWS's documented baseline
    /// period.
    pub baseline_minutes: i64,
    /// Minutes of history the detector must have seen before it may start any insight; the
    /// default (a full baseline window) keeps `baselineDuration` at AWS's documented minimum.
    pub min_history_minutes: i64,
    /// Multiplier `k` of the spread in the threshold `mean + k * spread`.
    pub spread_factor: f64,
    /// Multiplier `m` in the threshold `m * mean`: a busy API must at least do this many times
    /// its usual rate to be unusual, whatever its spread.
    pub mean_factor: f64,
    /// Quantile of the baseline's per-minute counts the rate must exceed: a level already
    /// reached that often in the last week (a nightly job) is normal.
    pub baseline_quantile: f64,
    /// A minute is unusual only with at least this many calls (or errors).
    pub min_count: u32,
    /// Consecutive unusual minutes before an insight starts.
    pub start_after: u32,
    /// Consecutive ordinary minutes after which an insight ends.
    pub end_after: u32,
    /// Minutes a record may arrive after a newer one and still be counted; a minute is closed
    /// (judged) once a record this many minutes newer has been seen.
    pub lateness_minutes: i64,
    /// Most (account, region, source, name) keys kept; beyond it the longest-idle key without an
    /// open insight is forgotten.
    pub max_keys: usize,
    /// Distinct values (identities, user agents, error codes) tallied per key and hour, and per
    /// insight; further values are not attributed.
    pub max_values: usize,
    /// Count read-only calls in the call rate. AWS's call-rate Insights cover write management
    /// APIs only (false); error rates always cover reads and writes.
    pub call_rate_includes_reads: bool,
}

impl Default for InsightsConfig {
    fn default() -> Self {
        Self {
            baseline_minutes: 10_080,
            min_history_minutes: 10_080,
            spread_factor: 6.0,
            mean_factor: 2.0,
            baseline_quantile: 0.999,
            min_count: 3,
            start_after: 2,
            end_after: 3,
            lateness_minutes: 2,
            max_keys: 2_000,
            max_values: 32,
            call_rate_includes_reads: false,
        }
    }
}

/// A parameter out of range, named so the operator can fix the config.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// The named parameter has a value the model cannot use.
    #[error("insights config: {field} must be {expected}, got {got}")]
    OutOfRange {
        /// The parameter.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
        /// What it was.
        got: String,
    },
}

impl InsightsConfig {
    /// Rejects values that would make the model meaningless (e.g. a zero window).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, expected, got: String| {
            Err(ConfigError::OutOfRange {
                field,
                expected,
                got,
            })
        };
        if !(60..=100_080).contains(&self.baseline_minutes) || self.baseline_minutes % 60 != 0 {
            return bad(
                "baseline_minutes",
                "a multiple of 60 in 60..=100080",
                self.baseline_minutes.to_string(),
            );
        }
        if !(1..=self.baseline_minutes).contains(&self.min_history_minutes) {
            return bad(
                "min_history_minutes",
                "1..=baseline_minutes",
                self.min_history_minutes.to_string(),
            );
        }
        if !(self.spread_factor.is_finite() && self.spread_factor >= 0.0) {
            return bad(
                "spread_factor",
                "finite and >= 0",
                self.spread_factor.to_string(),
            );
        }
        if !(self.mean_factor.is_finite() && self.mean_factor >= 1.0) {
            return bad(
                "mean_factor",
                "finite and >= 1",
                self.mean_factor.to_string(),
            );
        }
        if !(0.0..=1.0).contains(&self.baseline_quantile) {
            return bad(
                "baseline_quantile",
                "in 0..=1",
                self.baseline_quantile.to_string(),
            );
        }
        if self.min_count == 0 {
            return bad("min_count", ">= 1", "0".into());
        }
        if self.start_after == 0 || self.end_after == 0 {
            return bad("start_after/end_after", ">= 1", "0".into());
        }
        if !(0..=60).contains(&self.lateness_minutes) {
            return bad(
                "lateness_minutes",
                "0..=60",
                self.lateness_minutes.to_string(),
            );
        }
        if self.max_keys == 0 || self.max_values == 0 {
            return bad("max_keys/max_values", ">= 1", "0".into());
        }
        Ok(())
    }
}
