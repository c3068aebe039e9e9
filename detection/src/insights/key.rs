//! Everything kept for one (account, region, eventSource, eventName): open minutes, a week of
//! closed per-minute counts, hourly attribute tallies, and the two series' runs.
//!
//! Why integers only: the state is persisted, and a restored detector must decide exactly as
//! the one that never stopped. Floats are recomputed from these counts (the cached baseline is
//! not persisted), so no float ever goes through a serializer.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::baseline::Baseline;
use super::config::InsightsConfig;
use super::record::{InsightType, Subject, build};
use super::series::{Minute, Run, Step, step};
use super::tally::Tally;

/// Counts of one minute not yet closed, or closed and kept for the hour's tally.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Counts {
    /// Calls counted in the call rate.
    pub calls: u64,
    /// Calls with an `errorCode`.
    pub errors: u64,
    /// Attribute values of `calls`, then of `errors`.
    pub tallies: [Tally; 2],
}

/// One closed minute with at least one call or error.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct Closed {
    pub minute: i64,
    pub calls: u32,
    pub errors: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct KeyState {
    pub account: String,
    pub region: String,
    pub source: String,
    pub name: String,
    /// Minutes with records that are not closed yet.
    pub open: BTreeMap<i64, Counts>,
    /// Closed minutes with records, oldest first, back to the baseline window's start.
    pub history: VecDeque<Closed>,
    /// Attribute tallies per hour (calls, errors), oldest first.
    pub hours: VecDeque<(i64, [Tally; 2])>,
    /// Last minute closed for this key.
    pub closed_through: i64,
    /// Newest minute with a record.
    pub last_active: i64,
    /// Runs of the call and error series.
    pub runs: [Option<Run>; 2],
    /// The baselines for the hour `.0`, recomputed from `history` after a restore.
    #[serde(skip)]
    pub cache: Option<(i64, [Option<Baseline>; 2])>,
}

const KINDS: [InsightType; 2] = [InsightType::ApiCallRate, InsightType::ApiErrorRate];

impl KeyState {
    pub fn new(parts: [&str; 4], closed_through: i64) -> Self {
        Self {
            account: parts[0].into(),
            region: parts[1].into(),
            source: parts[2].into(),
            name: parts[3].into(),
            open: BTreeMap::new(),
            history: VecDeque::new(),
            hours: VecDeque::new(),
            closed_through,
            last_active: closed_through,
            runs: [None, None],
            cache: None,
        }
    }

    /// Whether forgetting the key loses nothing but counts older than the window.
    pub fn quiet(&self) -> bool {
        self.open.is_empty() && self.runs.iter().all(Option::is_none)
    }

    /// Closes minutes up to `through`, pushing `(minute, record)` for each Start and End.
    pub fn close(
        &mut self,
        through: i64,
        hist_start: i64,
        cfg: &InsightsConfig,
        out: &mut Vec<(i64, Value)>,
    ) {
        let data: Vec<i64> = self.open.range(..=through).map(|(&m, _)| m).collect();
        for d in data {
            self.idle_until(d, hist_start, cfg, out);
            let counts = self.open.remove(&d).expect("listed");
            self.close_minute(d, &counts, hist_start, cfg, out);
            self.closed_through = d;
        }
        self.idle_until(through + 1, hist_start, cfg, out);
    }

    /// Closes the empty minutes before `until`; they matter only while a run is open.
    fn idle_until(
        &mut self,
        until: i64,
        hist_start: i64,
        cfg: &InsightsConfig,
        out: &mut Vec<(i64, Value)>,
    ) {
        let mut m = self.closed_through + 1;
        while m < until && self.runs.iter().any(Option::is_some) {
            self.close_minute(m, &Counts::default(), hist_start, cfg, out);
            m += 1;
        }
        self.closed_through = self.closed_through.max(until - 1);
    }

    fn close_minute(
        &mut self,
        minute: i64,
        c: &Counts,
        hist_start: i64,
        cfg: &InsightsConfig,
        out: &mut Vec<(i64, Value)>,
    ) {
        let bases = self.baselines(minute, hist_start, cfg);
        for (i, kind) in KINDS.into_iter().enumerate() {
            let count = if i == 0 { c.calls } else { c.errors };
            let unusual =
                bases[i].is_some_and(|b| b.unusual(u32::try_from(count).unwrap_or(u32::MAX), cfg));
            let tally = (count > 0).then_some(&c.tallies[i]);
            let hours = &self.hours;
            let open = || {
                let b = bases[i].expect("unusual needs a baseline");
                let mut baseline_tally = Tally::default();
                let end = minute.div_euclid(60) * 60;
                for (h, t) in hours {
                    // Hours overlapping the window (it starts mid-hour only at `hist_start`).
                    if h * 60 + 60 > end - b.minutes && h * 60 < end {
                        baseline_tally.merge(&t[i], cfg.max_values);
                    }
                }
                Run {
                    start: minute,
                    last_unusual: minute,
                    started: false,
                    streak: 0,
                    first_count: 0,
                    first_tally: Tally::default(),
                    total: 0,
                    tally: Tally::default(),
                    tail_minutes: 0,
                    tail_total: 0,
                    tail_tally: Tally::default(),
                    baseline_total: b.total,
                    baseline_minutes: b.minutes,
                    baseline_tally,
                }
            };
            let st = step(
                &mut self.runs[i],
                Minute {
                    minute,
                    count,
                    tally,
                    unusual,
                },
                cfg,
                open,
            );
            let subject = Subject {
                account: &self.account,
                region: &self.region,
                source: &self.source,
                name: &self.name,
                kind,
            };
            match st {
                Step::None => {}
                Step::Start => {
                    let run = self.runs[i].as_ref().expect("started");
                    out.push((run.start, build(&subject, run, false)));
                }
                Step::End(run) => out.push((run.last_unusual + 1, build(&subject, &run, true))),
            }
        }
        if c.calls + c.errors > 0 {
            let sat = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
            self.history.push_back(Closed {
                minute,
                calls: sat(c.calls),
                errors: sat(c.errors),
            });
            let hour = minute.div_euclid(60);
            if self.hours.back().is_none_or(|(h, _)| *h != hour) {
                self.hours.push_back((hour, Default::default()));
            }
            let (_, t) = self.hours.back_mut().expect("pushed");
            for (acc, add) in t.iter_mut().zip(&c.tallies) {
                acc.merge(add, cfg.max_values);
            }
        }
    }

    /// The baselines (calls, errors) for a minute: the whole hours of the window before the
    /// minute's hour, from `hist_start` at the earliest; `None` until `min_history_minutes`.
    fn baselines(
        &mut self,
        minute: i64,
        hist_start: i64,
        cfg: &InsightsConfig,
    ) -> [Option<Baseline>; 2] {
        let hour = minute.div_euclid(60);
        if let Some((h, b)) = self.cache
            && h == hour
        {
            return b;
        }
        let end = hour * 60;
        let start = hist_start.max(end - cfg.baseline_minutes);
        while self
            .history
            .front()
            .is_some_and(|c| c.minute < end - cfg.baseline_minutes)
        {
            self.history.pop_front();
        }
        while self
            .hours
            .front()
            .is_some_and(|(h, _)| h * 60 < end - cfg.baseline_minutes)
        {
            self.hours.pop_front();
        }
        let b = if end - start < cfg.min_history_minutes {
            [None, None]
        } else {
            let window = || {
                self.history
                    .iter()
                    .filter(|c| c.minute >= start && c.minute < end)
            };
            let mut calls: Vec<u32> = window().map(|c| c.calls).filter(|&n| n > 0).collect();
            let mut errors: Vec<u32> = window().map(|c| c.errors).filter(|&n| n > 0).collect();
            [
                Some(Baseline::compute(&mut calls, end - start, cfg)),
                Some(Baseline::compute(&mut errors, end - start, cfg)),
            ]
        };
        self.cache = Some((hour, b));
        b
    }
}
