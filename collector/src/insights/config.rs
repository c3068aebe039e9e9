//! `[insights]`: which CloudTrail Insights types the trail writes, and the model's settings.
//!
//! Checked by [`InsightsSection::validate`] at start-up: an unknown insight type or a model
//! setting the detector cannot use is an error that names the field.

use groundtrail_detection::insights::InsightsConfig;
use serde::{Deserialize, Serialize};

use crate::config::Duration;

/// The `insightType` values CloudTrail defines (and `PutInsightSelectors` accepts).
pub const INSIGHT_TYPES: [&str; 2] = ["ApiCallRateInsight", "ApiErrorRateInsight"];

/// The insights section of the collector's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InsightsSection {
    /// The trail's insight selectors: `ApiCallRateInsight` (unusual write calls a minute),
    /// `ApiErrorRateInsight` (unusual failed calls a minute). Empty, as on AWS: no Insights
    /// are written. Each type's records go to `CloudTrail-Insight/` beside the log files, are
    /// listed in the digests, and are found by `LookupEvents` with `EventCategory=insight`.
    pub types: Vec<String>,
    /// When no record has been committed for this long, every minute up to now (less the
    /// model's `lateness_minutes`) is judged, so an insight on an API that went quiet ends
    /// without waiting for newer records. A record that arrives later for a judged minute is
    /// counted as late (`groundtrail_insights_late_records_total`) and not in any rate.
    pub close_idle_after: Duration,
    /// How often the detector's state is saved (also at shutdown). A crash replays the log
    /// from the last save: the same records give the same Insights records, and the journal
    /// drops the repeats, so this bounds the work of a restart, not what is kept.
    pub checkpoint_interval: Duration,
    /// The model: baseline window, thresholds, start and end rules (see docs/insights.md).
    pub model: InsightsConfig,
}

impl Default for InsightsSection {
    fn default() -> Self {
        InsightsSection {
            types: Vec::new(),
            close_idle_after: Duration::from_secs(60),
            checkpoint_interval: Duration::from_secs(60),
            model: InsightsConfig::default(),
        }
    }
}

impl InsightsSection {
    /// Whether any insight type is selected.
    pub fn enabled(&self) -> bool {
        !self.types.is_empty()
    }

    /// Whether Insights records of `insight_type` are written.
    pub fn selects(&self, insight_type: &str) -> bool {
        self.types.iter().any(|t| t == insight_type)
    }

    /// Checks the section; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = Vec::new();
        for t in &self.types {
            if !INSIGHT_TYPES.contains(&t.as_str()) {
                return Err(format!(
                    "[insights] types: {t:?} is not an insight type; use {}",
                    INSIGHT_TYPES.join(" or ")
                ));
            }
            if seen.contains(&t) {
                return Err(format!("[insights] types: {t:?} is listed twice"));
            }
            seen.push(t);
        }
        if self.close_idle_after.is_zero() {
            return Err("[insights] close_idle_after must be positive".into());
        }
        if self.checkpoint_interval.is_zero() {
            return Err("[insights] checkpoint_interval must be positive".into());
        }
        self.model
            .validate()
            .map_err(|e| format!("[insights.model] {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_every_bad_value_is_named() {
        let d = InsightsSection::default();
        assert!(!d.enabled());
        d.validate().unwrap();
        let mut s = InsightsSection {
            types: vec!["ApiErrorRateInsight".into()],
            ..Default::default()
        };
        s.validate().unwrap();
        assert!(s.selects("ApiErrorRateInsight") && !s.selects("ApiCallRateInsight"));
        s.types.push("ApiErrorRateInsight".into());
        assert!(s.validate().unwrap_err().contains("listed twice"));
        s.types = vec!["CallRate".into()];
        assert!(s.validate().unwrap_err().contains("not an insight type"));
        s.types.clear();
        s.close_idle_after = Duration::from_secs(0);
        assert!(s.validate().unwrap_err().contains("close_idle_after"));
        s.close_idle_after = Duration::from_secs(60);
        s.model.start_after = 0;
        assert!(s.validate().unwrap_err().starts_with("[insights.model]"));
    }
}
