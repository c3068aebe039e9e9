//! CloudTrail Insights: records about unusual call and error rates (issue 18, first part).
//!
//! Why: AWS CloudTrail Insights writes `AwsCloudTrailInsight` records when an API's calls or
//! failed calls per minute depart from the API's baseline, and SIEM pipelines already read
//! them. This module is the pure detector: CloudTrail records in, Insights records out, in the
//! trail record shape AWS documents. Writing them under `CloudTrail-Insight/`, digests and the
//! API belong to the collector.
//!
//! # Guarantees
//! - **Deterministic.** Only the records' `eventTime` is time; no clock, no randomness, no
//!   hash-map order. The same records in the same order give the same Insights records, byte
//!   for byte, ids included (`sharedEventID` and `eventID` are hashes of the key, insight type,
//!   first minute and state).
//! - **Resumable exactly.** [`Detector`] is `Serialize`/`Deserialize` and holds integers and
//!   strings only (baselines are recomputed from counts); a detector restored from its
//!   serialized state produces what the original would have.
//! - **Bounded.** At most `max_keys` keys, each holding at most one baseline window of closed
//!   minutes with records, one tally per hour of that window, and at most `max_values` values per
//!   tally. Keys silent for longer than the window are forgotten without loss.
//! - **Final.** A minute is judged once (see [`Detector::flush_until`] and `lateness_minutes`);
//!   a record for a judged minute is counted in [`DetectorStats::late`] and otherwise ignored.
//! - **Paired.** Every End follows a Start with the same `sharedEventID`; a Start without an End
//!   means the insight is still open.
//!
//! # What is counted
//! Key: (`recipientAccountId`, `awsRegion`, `eventSource`, `eventName`). Management events only
//! (no `eventCategory`, or `Management`); Insights records themselves are not counted.
//! - Call rate (`ApiCallRateInsight`): write calls (`readOnly` not `true`), as AWS does; set
//!   `call_rate_includes_reads` to count reads too.
//! - Error rate (`ApiErrorRateInsight`): calls with a non-empty `errorCode`, read or write.
//!
//! # The model (AWS publishes none; this one is ours)
//! Per key and series, per-minute counts; a minute without records counts 0.
//! - **Baseline window**: the `baseline_minutes` (10080 = 7 days, AWS's documented period)
//!   of whole hours before the hour of the minute judged, no earlier than the first record the
//!   detector saw. It is recomputed once an hour; no insight starts before the window holds
//!   `min_history_minutes` (default: a full week, so `baselineDuration` is 10080).
//! - **Statistics**: mean `μ`, spread `σ = max(1.4826 · MAD, √μ)` (robust, with a Poisson
//!   floor), and the `baseline_quantile` (99.9%) of the window's per-minute counts `q`.
//! - **Unusual minute**: `count > max(μ + k·σ, m·μ, q)` and `count ≥ min_count`
//!   (`k = 6`, `m = 2`, `min_count = 3`).
//! - **Start** after `start_after` (2) consecutive unusual minutes; the Start's `eventTime` is
//!   the first of them. **End** after `end_after` (3) consecutive ordinary minutes; its
//!   `eventTime` is the minute after the last unusual one.
//!
//! On a Poisson stream of mean 5 a minute the threshold is about 18.4; a count above it has a
//! probability near 1e-5 a minute, two in a row about 1e-10, so a steady week gives none.
//!
//! # Statistics written (AWS's members, our exact definitions)
//! - `baseline.average`: mean per minute over the window of the first unusual minute (the same
//!   in Start and End); `baselineDuration`: that window's length in minutes.
//! - `insight.average`: Start: the count of the first unusual minute; End: the mean per minute
//!   from the first to the last unusual minute.
//! - `insightDuration`: End: minutes from the first to the last unusual minute; Start: the
//!   unusual minutes seen when the Start was written (AWS writes its Start later, knowing the
//!   duration; we write it as soon as it is known, so the End carries the final duration).
//! - `attributions`: `userIdentityArn`, `userAgent`, `errorCode` (the string `"null"` for a
//!   call without one), top five by average over the same minutes as `insight.average`, and
//!   over the baseline window for `baseline`.

mod baseline;
mod config;
mod detector;
mod key;
mod record;
mod series;
mod slim;
mod tally;
mod time;

#[cfg(test)]
mod tests;

pub use config::{ConfigError, InsightsConfig};
pub use detector::{Detector, DetectorStats};
pub use record::{INSIGHT_EVENT_VERSION, InsightType};
