//! The Start/End state machine of one series (calls or errors) of one key.
//!
//! Why a run with a tail: an insight covers the minutes from its first unusual minute to its
//! last one; ordinary minutes inside it count (they did not last long enough to end it), but
//! the `end_after` ordinary minutes that end it do not. So ordinary minutes are held in a
//! tail that joins the run if another unusual minute comes, and is dropped at the End.

use serde::{Deserialize, Serialize};

use super::config::InsightsConfig;
use super::tally::Tally;

/// A candidate (fewer than `start_after` unusual minutes yet) or open insight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Run {
    /// First unusual minute: the Start's `eventTime`, and part of the `sharedEventID`.
    pub start: i64,
    /// Last unusual minute; the End's `eventTime` is the minute after it.
    pub last_unusual: i64,
    /// Whether the Start record has been written.
    pub started: bool,
    /// Consecutive unusual minutes so far (decides the Start).
    pub streak: u32,
    /// Count in the first minute: the Start's `insight.average`.
    pub first_count: u64,
    /// Attribute values of the first minute.
    pub first_tally: Tally,
    /// Count from `start` to `last_unusual`.
    pub total: u64,
    /// Attribute values from `start` to `last_unusual`.
    pub tally: Tally,
    /// Ordinary minutes since `last_unusual`, their count and values.
    pub tail_minutes: u32,
    pub tail_total: u64,
    pub tail_tally: Tally,
    /// Baseline frozen at the first minute, as integers so a restored state reports the same
    /// averages: calls in the window and its length in minutes.
    pub baseline_total: u64,
    pub baseline_minutes: i64,
    /// Attribute values over the baseline window.
    pub baseline_tally: Tally,
}

/// What a closed minute did to a series.
#[derive(Debug, PartialEq)]
pub(crate) enum Step {
    /// Nothing to write.
    None,
    /// Write the Start of the run.
    Start,
    /// Write the End of this finished run.
    End(Box<Run>),
}

/// One minute's verdict and data, fed in minute order.
pub(crate) struct Minute<'a> {
    pub minute: i64,
    pub count: u64,
    pub tally: Option<&'a Tally>,
    pub unusual: bool,
}

/// Advances `run` by one closed minute. `open` builds a new run for an unusual minute when
/// none is open (it needs the baseline, which the caller has).
pub(crate) fn step(
    run: &mut Option<Run>,
    m: Minute<'_>,
    cfg: &InsightsConfig,
    open: impl FnOnce() -> Run,
) -> Step {
    let mv = cfg.max_values;
    match run {
        None if m.unusual => {
            let mut r = open();
            r.start = m.minute;
            r.last_unusual = m.minute;
            r.streak = 1;
            r.first_count = m.count;
            r.total = m.count;
            if let Some(t) = m.tally {
                r.first_tally.merge(t, mv);
                r.tally.merge(t, mv);
            }
            let start = cfg.start_after == 1;
            r.started = start;
            *run = Some(r);
            if start { Step::Start } else { Step::None }
        }
        None => Step::None,
        Some(r) if m.unusual => {
            r.streak += 1;
            r.last_unusual = m.minute;
            r.total += r.tail_total + m.count;
            let tail = std::mem::take(&mut r.tail_tally);
            r.tally.merge(&tail, mv);
            if let Some(t) = m.tally {
                r.tally.merge(t, mv);
            }
            r.tail_minutes = 0;
            r.tail_total = 0;
            if !r.started && r.streak >= cfg.start_after {
                r.started = true;
                return Step::Start;
            }
            Step::None
        }
        Some(r) if !r.started => {
            *run = None;
            Step::None
        }
        Some(r) => {
            r.streak = 0;
            r.tail_minutes += 1;
            r.tail_total += m.count;
            if let Some(t) = m.tally {
                r.tail_tally.merge(t, mv);
            }
            if r.tail_minutes >= cfg.end_after {
                return Step::End(Box::new(run.take().expect("matched Some")));
            }
            Step::None
        }
    }
}
