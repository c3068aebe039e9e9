//! The [`Detector`]: records in, Insights records out, in `eventTime` order.
//!
//! Why a watermark: CloudTrail files are roughly, not strictly, in time order, so a minute is
//! judged only once a record `lateness_minutes` newer has been seen (or the caller says the
//! log is complete up to a time with [`Detector::flush_until`]). Records for a judged minute
//! are counted as late and otherwise ignored, so the output never changes after the fact.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::{ConfigError, InsightsConfig};
use super::key::KeyState;
use super::tally::Tally;
use super::time::parse_minute;

/// Counters of what the detector did not count, for the operator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetectorStats {
    /// Records analysed (in a call or error series).
    pub counted: u64,
    /// Records not analysed: Insights records, data events, no time/source/name, reads
    /// that succeeded while reads are not in the call rate.
    pub ignored: u64,
    /// Records for a minute already judged.
    pub late: u64,
    /// Records dropped because `max_keys` keys all had an insight in progress.
    pub dropped: u64,
    /// Keys forgotten to stay within `max_keys` while their window still had counts.
    pub evicted: u64,
}

/// Turns CloudTrail records into CloudTrail Insights records. Serialize it to persist it;
/// a deserialized detector continues exactly where the serialized one was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detector {
    config: InsightsConfig,
    /// First minute counted: the baseline window never reaches before it.
    hist_start: Option<i64>,
    /// Every minute up to this one has been judged.
    closed_through: Option<i64>,
    /// Newest minute seen.
    watermark: Option<i64>,
    /// Keys by `account␟region␟source␟name`, so iteration (and output) order is fixed.
    keys: BTreeMap<String, KeyState>,
    stats: DetectorStats,
}

impl Detector {
    /// A detector with no history.
    pub fn new(config: InsightsConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            hist_start: None,
            closed_through: None,
            watermark: None,
            keys: BTreeMap::new(),
            stats: DetectorStats::default(),
        })
    }

    /// The parameters in use.
    pub fn config(&self) -> &InsightsConfig {
        &self.config
    }

    /// Continues with other parameters (an operator tuned the model): the counts and open
    /// insights are kept and the new parameters judge every minute not judged yet, so a
    /// restored detector need not spend a week rebuilding its baseline. A shorter window
    /// forgets the minutes outside it at the next judgement.
    pub fn reconfigure(&mut self, config: InsightsConfig) -> Result<(), ConfigError> {
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// What was left out so far.
    pub fn stats(&self) -> DetectorStats {
        self.stats
    }

    /// Keys currently kept.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Feeds one record (in log order); returns the Insights records of the minutes this
    /// record closed, in `eventTime` order.
    pub fn observe(&mut self, record: &Value) -> Vec<Value> {
        // Insights records (the detector's own, read back from a trail) are not counted, and
        // not late either: their minutes are judged by definition.
        if record.get("eventType").and_then(Value::as_str) == Some("AwsCloudTrailInsight") {
            self.stats.ignored += 1;
            return Vec::new();
        }
        let Some(minute) = record
            .get("eventTime")
            .and_then(Value::as_str)
            .and_then(parse_minute)
        else {
            self.stats.ignored += 1;
            return Vec::new();
        };
        let first = self.closed_through.is_none();
        let closed = *self
            .closed_through
            .get_or_insert(minute - self.config.lateness_minutes - 1);
        if minute <= closed {
            self.stats.late += 1;
            return Vec::new();
        }
        if first || self.hist_start.is_some_and(|h| minute < h) {
            self.hist_start = Some(minute);
        }
        self.count(record, minute, closed);
        if self.watermark.is_none_or(|w| minute > w) {
            self.watermark = Some(minute);
            return self.close_through(minute - self.config.lateness_minutes - 1);
        }
        Vec::new()
    }

    /// [`Detector::observe`] of a record's JSON, reading only the members the detector
    /// counts (much cheaper than parsing the whole record; the result is the same). A `json`
    /// that is not a JSON object is counted as ignored.
    pub fn observe_json(&mut self, json: &[u8]) -> Vec<Value> {
        match super::slim::slim(json) {
            Some(record) => self.observe(&record),
            None => {
                self.stats.ignored += 1;
                Vec::new()
            }
        }
    }

    /// Judges every minute that ends at or before `event_time_ms` (ms since the epoch): the
    /// caller knows no more records for them will come (e.g. the end of a delivered batch).
    /// Only feed it times derived from the log itself if replays must give the same output.
    pub fn flush_until(&mut self, event_time_ms: i64) -> Vec<Value> {
        if self.closed_through.is_none() {
            return Vec::new();
        }
        self.close_through(event_time_ms.div_euclid(60_000) - 1)
    }

    fn count(&mut self, record: &Value, minute: i64, closed: i64) {
        let s = |k: &str| record.get(k).and_then(Value::as_str);
        let insight = s("eventType") == Some("AwsCloudTrailInsight");
        let management = s("eventCategory").is_none_or(|c| c == "Management");
        let (Some(source), Some(name)) = (s("eventSource"), s("eventName")) else {
            self.stats.ignored += 1;
            return;
        };
        let error = s("errorCode").filter(|e| !e.is_empty());
        let read = record.get("readOnly").and_then(Value::as_bool) == Some(true);
        let call = self.config.call_rate_includes_reads || !read;
        if insight || !management || (!call && error.is_none()) {
            self.stats.ignored += 1;
            return;
        }
        let parts = [
            s("recipientAccountId").unwrap_or(""),
            s("awsRegion").unwrap_or(""),
            source,
            name,
        ];
        let id = parts.join("\u{1f}");
        if !self.keys.contains_key(&id) && !self.make_room(minute) {
            self.stats.dropped += 1;
            return;
        }
        let mv = self.config.max_values;
        let key = self
            .keys
            .entry(id)
            .or_insert_with(|| KeyState::new(parts, closed));
        key.last_active = key.last_active.max(minute);
        let c = key.open.entry(minute).or_default();
        let arn = record.pointer("/userIdentity/arn").and_then(Value::as_str);
        let values = [arn, s("userAgent"), Some(error.unwrap_or("null"))];
        if call {
            c.calls += 1;
            c.tallies[0].add(&values, mv);
        }
        if error.is_some() {
            c.errors += 1;
            let t: &mut Tally = &mut c.tallies[1];
            t.add(&values, mv);
        }
        self.stats.counted += 1;
    }

    /// Makes room for one more key: forgets a key whose window is empty, else the longest
    /// idle key without an open minute or run. False when every key is busy.
    fn make_room(&mut self, minute: i64) -> bool {
        if self.keys.len() < self.config.max_keys {
            return true;
        }
        let horizon = minute - self.config.baseline_minutes - 60;
        let victim = self
            .keys
            .iter()
            .filter(|(_, k)| k.quiet())
            .min_by_key(|(id, k)| (k.last_active, *id))
            .map(|(id, k)| (id.clone(), k.last_active));
        match victim {
            Some((id, last)) => {
                if last >= horizon {
                    self.stats.evicted += 1;
                }
                self.keys.remove(&id);
                true
            }
            None => false,
        }
    }

    fn close_through(&mut self, through: i64) -> Vec<Value> {
        let (Some(closed), Some(hist)) = (self.closed_through, self.hist_start) else {
            return Vec::new();
        };
        if through <= closed {
            return Vec::new();
        }
        let mut out = Vec::new();
        let horizon = through - self.config.baseline_minutes - 60;
        self.keys.retain(|_, k| {
            k.close(through, hist, &self.config, &mut out);
            !(k.quiet() && k.last_active < horizon)
        });
        self.closed_through = Some(through);
        out.sort_by_key(|(m, _)| *m);
        out.into_iter().map(|(_, r)| r).collect()
    }
}

#[cfg(test)]
mod reconfigure_tests {
    use serde_json::json;

    use super::*;

    /// Tuning the model keeps what was counted: the same records then give the same
    /// judgement as a detector that had the new parameters from the start.
    #[test]
    fn reconfigure_keeps_the_counts_and_refuses_bad_values() {
        let cfg = InsightsConfig {
            baseline_minutes: 60,
            min_history_minutes: 60,
            ..InsightsConfig::default()
        };
        let rec = |minute: i64, i: u32| {
            json!({
                "eventTime": super::super::time::format_minute(minute)
                    .replace(":00Z", &format!(":{:02}Z", i % 60)),
                "eventSource": "s.onprem.internal", "eventName": "N", "awsRegion": "r-1",
                "recipientAccountId": "123456789012", "eventType": "AwsApiCall",
            })
        };
        // An hour and a half of one call a minute, then a burst of 9 a minute: unusual for
        // the default model (threshold max(1 + 6 * 1, 2 * 1) = 7), not for the tuned one.
        let records: Vec<_> = (0..90)
            .map(|m| rec(m, 0))
            .chain((90..95).flat_map(|m| (0..9).map(move |i| rec(m, i))))
            .collect();
        let tuned = InsightsConfig {
            mean_factor: 10.0,
            ..cfg.clone()
        };
        let mut fresh = Detector::new(tuned.clone()).unwrap();
        let mut retuned = Detector::new(cfg).unwrap();
        let mut out = (Vec::new(), Vec::new());
        for (i, r) in records.iter().enumerate() {
            if i == 45 {
                retuned.reconfigure(tuned.clone()).unwrap();
            }
            out.0.extend(fresh.observe(r));
            out.1.extend(retuned.observe(r));
        }
        out.0.extend(fresh.flush_until(100 * 60_000));
        out.1.extend(retuned.flush_until(100 * 60_000));
        assert_eq!(out.0, out.1);
        // 9 a minute is not 10 times the mean of 1: nothing with the tuned model, while the
        // model it was retuned from sees the burst.
        assert!(out.0.is_empty(), "{:?}", out.0);
        let mut untuned = Detector::new(InsightsConfig {
            baseline_minutes: 60,
            min_history_minutes: 60,
            ..InsightsConfig::default()
        })
        .unwrap();
        let mut seen: Vec<Value> = records.iter().flat_map(|r| untuned.observe(r)).collect();
        seen.extend(untuned.flush_until(100 * 60_000));
        assert_eq!(seen.len(), 2, "{seen:?}");
        let bad = InsightsConfig {
            start_after: 0,
            ..tuned
        };
        assert!(retuned.reconfigure(bad).is_err());
        assert_eq!(retuned.config().mean_factor, 10.0);
    }
}
