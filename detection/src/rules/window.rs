//! Count windows over eventTime, per rule and group.
//!
//! Semantics (CloudWatch's metric filter and alarm, on a sliding window instead of fixed
//! periods, so that five failures straddling a minute boundary still count as five):
//! - **Threshold**: a group's window holds its matches with eventTime in `(newest - period,
//!   newest]`, `newest` being the latest eventTime matched in that group. When a match brings
//!   the count to `count` and the group is not in alarm, the rule fires once and the group
//!   goes to alarm (OK -> ALARM). It re-arms when the count has fallen below `count`: checked
//!   at the group's next match, before that match is counted (between matches the count only
//!   falls), or when the group is dropped.
//! - **After** (sequence): a group keeps the preceding pattern's matches; a match of the
//!   rule's own pattern at `t` fires if at least `count` of them have eventTime in
//!   `[t - within, t]`, and then the group is cleared, so the next firing needs new failures.
//!
//! Records may arrive slightly out of order: a match is placed by its eventTime; one older
//! than its group's window is not counted.
//!
//! Bounds: a group keeps at most `count` timestamps (the newest; more would not change when a
//! rule fires). A group whose newest match is older than the window plus [`LATENESS_MS`]
//! (an hour), measured against the newest eventTime the engine has seen, is dropped: records
//! of one group up to an hour late (an agent shipping what it buffered) still count together. A rule keeps at most
//! [`MAX_GROUPS_PER_RULE`] groups: a new group beyond that evicts the group with the oldest
//! newest match, and [`Windows::evicted`] counts it (an attacker spraying source addresses can
//! make a rule forget an older, slower one; the count makes that visible).

use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, VecDeque};

/// Most groups one rule keeps.
pub const MAX_GROUPS_PER_RULE: usize = 100_000;

/// How far behind the newest eventTime seen a group's records may arrive and still be
/// counted with it: an agent that was cut off ships its buffered records late, interleaved
/// with other agents' live ones. A group is dropped only once its newest match is older than
/// its window plus this.
pub const LATENESS_MS: i64 = 3_600_000;

/// One counted match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// eventTime in ms since the epoch.
    pub t: i64,
    /// The record's eventID.
    pub id: String,
    /// The record's eventTime as written.
    pub time: String,
}

/// One group's window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Group {
    /// Counted matches, oldest first, at most `keep`.
    pub entries: VecDeque<Entry>,
    /// The latest eventTime matched in this group.
    pub newest: i64,
    /// In alarm (threshold rules): has fired and not re-armed.
    pub alarm: bool,
}

/// All groups of one rule.
#[derive(Debug)]
pub(crate) struct Windows {
    /// The window length (`period` or `within`), ms.
    span: i64,
    /// Timestamps kept per group (the rule's `count`).
    keep: usize,
    /// Most groups.
    cap: usize,
    groups: HashMap<Box<str>, Group>,
    /// (newest, key) of every group: the oldest is first, for dropping and eviction.
    ages: BTreeSet<(i64, Box<str>)>,
    /// Groups changed since the last [`Windows::take_dirty`].
    dirty: BTreeSet<Box<str>>,
    /// Groups evicted because the rule had `cap` groups.
    pub evicted: u64,
}

impl Windows {
    pub(crate) fn new(span: i64, keep: usize) -> Windows {
        Windows::with_cap(span, keep, MAX_GROUPS_PER_RULE)
    }

    pub(crate) fn with_cap(span: i64, keep: usize, cap: usize) -> Windows {
        Windows {
            span,
            keep,
            cap: cap.max(1),
            groups: HashMap::new(),
            ages: BTreeSet::new(),
            dirty: BTreeSet::new(),
            evicted: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.groups.len()
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Group> {
        self.groups.get(key)
    }

    /// Keys of every group.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.groups.keys().map(|k| &**k)
    }

    /// Groups changed (written or dropped) since the last call.
    pub(crate) fn take_dirty(&mut self) -> BTreeSet<Box<str>> {
        std::mem::take(&mut self.dirty)
    }

    fn remove(&mut self, key: &str) {
        if let Some(g) = self.groups.remove(key) {
            self.ages.remove(&(g.newest, Box::from(key)));
            self.dirty.insert(key.into());
        }
    }

    /// The group for `key`, created (evicting the oldest at the cap) if new, with `newest`
    /// moved up to `t`.
    fn touch(&mut self, key: &str, t: i64) -> &mut Group {
        if !self.groups.contains_key(key) {
            if self.groups.len() >= self.cap
                && let Some((_, oldest)) = self.ages.first().cloned()
            {
                self.remove(&oldest);
                self.evicted += 1;
            }
            self.groups.insert(
                key.into(),
                Group {
                    newest: t,
                    ..Group::default()
                },
            );
            self.ages.insert((t, key.into()));
        }
        let g = self.groups.get_mut(key).expect("just inserted");
        if t > g.newest {
            self.ages.remove(&(g.newest, Box::from(key)));
            self.ages.insert((t, key.into()));
            g.newest = t;
        }
        self.dirty.insert(key.into());
        g
    }

    /// Counts a threshold match. Returns the window's entries when the rule fires.
    pub(crate) fn threshold(&mut self, key: &str, e: Entry) -> Option<Vec<Entry>> {
        let (span, keep) = (self.span, self.keep);
        let g = self.touch(key, e.t);
        let floor = g.newest - span;
        while g.entries.front().is_some_and(|x| x.t <= floor) {
            g.entries.pop_front();
        }
        if g.entries.len() < keep {
            // The count is below the threshold before this match: OK again.
            g.alarm = false;
        }
        if e.t <= floor {
            return None;
        }
        let at = g.entries.partition_point(|x| x.t <= e.t);
        g.entries.insert(at, e);
        if g.entries.len() > keep {
            g.entries.pop_front();
        }
        if g.entries.len() >= keep && !g.alarm {
            g.alarm = true;
            return Some(g.entries.iter().cloned().collect());
        }
        None
    }

    /// Keeps a match of an `after` pattern.
    pub(crate) fn push_after(&mut self, key: &str, e: Entry) {
        let (span, keep) = (self.span, self.keep);
        let g = self.touch(key, e.t);
        let floor = g.newest - span;
        while g.entries.front().is_some_and(|x| x.t < floor) {
            g.entries.pop_front();
        }
        if e.t < floor {
            return;
        }
        let at = g.entries.partition_point(|x| x.t <= e.t);
        g.entries.insert(at, e);
        if g.entries.len() > keep {
            g.entries.pop_front();
        }
    }

    /// A match of the rule's own pattern at `t`: if `keep` preceding matches lie in
    /// `[t - span, t]`, they are returned and the group is cleared.
    pub(crate) fn take_after(&mut self, key: &str, t: i64) -> Option<Vec<Entry>> {
        let g = self.groups.get(key)?;
        let before: Vec<Entry> = g
            .entries
            .iter()
            .filter(|x| x.t >= t - self.span && x.t <= t)
            .cloned()
            .collect();
        if before.len() < self.keep {
            return None;
        }
        self.remove(key);
        Some(before)
    }

    /// Drops groups whose newest match is older than the window plus [`LATENESS_MS`] at
    /// `clock`. A match exactly at the window's start still counts (`take_after` counts
    /// `[t - span, t]`), so the boundary itself is kept.
    pub(crate) fn sweep(&mut self, clock: i64) {
        while let Some((newest, key)) = self.ages.first() {
            if *newest >= clock - self.span - LATENESS_MS {
                break;
            }
            let key = key.clone();
            self.remove(&key);
        }
    }

    /// A group read back from persisted state (not marked changed).
    pub(crate) fn restore(&mut self, key: &str, mut g: Group) {
        if self.groups.contains_key(key) {
            return;
        }
        if self.groups.len() >= self.cap {
            self.evicted += 1;
            return;
        }
        while g.entries.len() > self.keep {
            g.entries.pop_front();
        }
        self.ages.insert((g.newest, key.into()));
        self.groups.insert(key.into(), g);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(t: i64) -> Entry {
        Entry {
            t,
            id: format!("id-{t}"),
            time: t.to_string(),
        }
    }

    #[test]
    fn threshold_fires_once_then_rearms_below_count() {
        let mut w = Windows::new(300, 3);
        assert!(w.threshold("a", e(0)).is_none());
        assert!(w.threshold("a", e(100)).is_none());
        let fired = w.threshold("a", e(200)).unwrap();
        assert_eq!(fired.iter().map(|x| x.t).collect::<Vec<_>>(), [0, 100, 200]);
        // Still >= 3 in the window: in alarm, no second firing.
        assert!(w.threshold("a", e(250)).is_none());
        assert!(w.threshold("a", e(299)).is_none());
        // At 700 the window (400, 700] is empty before this match: re-armed.
        assert!(w.threshold("a", e(700)).is_none());
        assert!(w.threshold("a", e(710)).is_none());
        assert_eq!(w.threshold("a", e(720)).unwrap().len(), 3);
        // Other groups count on their own.
        assert!(w.threshold("b", e(720)).is_none());
    }

    #[test]
    fn out_of_order_and_late_matches() {
        let mut w = Windows::new(300, 3);
        w.threshold("a", e(1000));
        w.threshold("a", e(900));
        // Older than the window (700, 1000]: not counted.
        assert!(w.threshold("a", e(650)).is_none());
        let fired = w.threshold("a", e(950)).unwrap();
        assert_eq!(
            fired.iter().map(|x| x.t).collect::<Vec<_>>(),
            [900, 950, 1000]
        );
    }

    #[test]
    fn keeps_at_most_count_and_sweeps_and_evicts() {
        let mut w = Windows::with_cap(300, 2, 2);
        for t in 0..10 {
            w.threshold("a", e(t));
        }
        assert_eq!(w.get("a").unwrap().entries.len(), 2);
        w.threshold("b", e(50));
        w.threshold("c", e(60)); // evicts "a" (oldest newest match)
        assert_eq!(w.evicted, 1);
        assert!(w.get("a").is_none() && w.get("b").is_some());
        // b's newest (50) is exactly the window plus the lateness before 350 + LATENESS_MS:
        // kept; one ms later it is out.
        w.sweep(350 + LATENESS_MS);
        assert!(w.get("b").is_some());
        w.sweep(351 + LATENESS_MS);
        assert!(w.get("b").is_none() && w.get("c").is_some());
        let dirty = w.take_dirty();
        assert!(dirty.contains("a") && dirty.contains("b") && dirty.contains("c"));
        assert!(w.take_dirty().is_empty());
    }

    #[test]
    fn after_needs_count_within_and_clears() {
        let mut w = Windows::new(600, 3);
        w.push_after("ip", e(0));
        w.push_after("ip", e(100));
        assert!(w.take_after("ip", 200).is_none());
        w.push_after("ip", e(150));
        // The first failure is 700 before the success: out of `within`.
        assert!(w.take_after("ip", 700).is_none());
        assert_eq!(w.take_after("ip", 600).unwrap().len(), 3);
        assert!(w.get("ip").is_none());
        assert!(w.take_after("ip", 600).is_none());
    }

    /// An agent cut off for half an hour ships its buffered failures late, interleaved with
    /// live records of other groups that move the clock: they still count together.
    #[test]
    fn late_records_of_a_group_still_count() {
        let mut w = Windows::new(300_000, 3);
        let minute = 60_000;
        let mut fired = None;
        for i in 0..3 {
            w.sweep(30 * minute + i * 1000); // live traffic elsewhere, 30 min ahead
            fired = fired.or(w.threshold("late-agent", e(i * 10_000)));
        }
        assert_eq!(fired.map(|f| f.len()), Some(3));
    }
}
