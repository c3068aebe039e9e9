//! The engine: evaluates records in log order against a [`RuleSet`], keeping windows.

use super::file::Counting;
use super::info::RuleInfo;
use super::prefilter;
use super::set::{Compiled, Envelope, RuleSet, pattern_matches};
use super::state;
use super::summary::{Fill, scalar_text, seconds};
use super::time::event_time_ms;
use super::window::{Entry, Windows};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Most eventIDs a firing carries.
pub const MAX_EVENT_IDS: usize = 100;

/// A rule that fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Firing {
    /// `<rule id>/<eventID of the record that made it fire>`: the same on a replay.
    pub id: String,
    /// The rule.
    pub rule: RuleInfo,
    /// For threshold and sequence rules with a group field: (the field as written, its value).
    pub group: Option<(String, String)>,
    /// 1 for a single match; the window's count for threshold rules; for sequence rules, the
    /// preceding matches (whose eventIDs come before the firing record's in `event_ids`).
    pub count: u64,
    /// eventIDs of the matching records in the window, oldest first, at most 100 (the newest).
    pub event_ids: Vec<String>,
    /// eventTime of the first of them, as written in the record.
    pub first_event_time: String,
    /// eventTime of the last of them.
    pub last_event_time: String,
    /// One line for people.
    pub summary: String,
}

/// Counters of the engine's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Groups held in windows now.
    pub groups: usize,
    /// Groups evicted because a rule had [`super::MAX_GROUPS_PER_RULE`] groups (since start).
    pub evicted_groups: u64,
}

/// Evaluates records against rules. Not thread-safe by design: records are evaluated in log
/// order, one at a time.
pub struct Engine {
    rules: RuleSet,
    /// Per rule, its windows (threshold and sequence rules only).
    windows: Vec<Option<Windows>>,
    /// The newest eventTime seen (ms). Persisted with the windows (under [`state::CLOCK_KEY`]):
    /// it decides which groups are swept, so a replay from persisted state must start from
    /// the same clock as the original run did.
    clock: Option<i64>,
    /// `clock` as last handed out by [`Engine::take_state_changes`].
    clock_saved: Option<i64>,
    /// State changes not tied to a live window: deletes of dropped rules' groups.
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Evictions of windows no longer loaded.
    evicted_before: u64,
    slots: Vec<u32>,
}

fn windows_for(r: &Compiled) -> Option<Windows> {
    match &r.counting {
        Counting::Each => None,
        Counting::Threshold {
            count, period_ms, ..
        } => Some(Windows::new(*period_ms, *count)),
        Counting::After {
            count, within_ms, ..
        } => Some(Windows::new(*within_ms, *count)),
    }
}

fn str_of<'a>(record: &'a Value, key: &str) -> &'a str {
    record.get(key).and_then(Value::as_str).unwrap_or("")
}

impl Engine {
    pub fn new(rules: RuleSet) -> Engine {
        let windows = rules.compiled().iter().map(windows_for).collect();
        Engine {
            rules,
            windows,
            clock: None,
            clock_saved: None,
            pending: BTreeMap::new(),
            evicted_before: 0,
            slots: Vec::new(),
        }
    }

    /// Swaps the rules (a reload). Window state of a rule whose id and definition are
    /// unchanged is kept; the rest is dropped, and its persisted state deleted at the next
    /// [`Engine::take_state_changes`].
    pub fn replace_rules(&mut self, rules: RuleSet) {
        let mut windows: Vec<Option<Windows>> = rules.compiled().iter().map(windows_for).collect();
        for (i, old) in self.rules.compiled().iter().enumerate() {
            let Some(mut w) = self.windows[i].take() else {
                continue;
            };
            let same = rules.position(&old.info.id).filter(|j| {
                rules.compiled()[*j].fingerprint == old.fingerprint && windows[*j].is_some()
            });
            match same {
                Some(j) => windows[j] = Some(w),
                None => {
                    self.evicted_before += w.evicted;
                    let mut keys: Vec<Box<str>> = w.keys().map(Box::from).collect();
                    keys.extend(w.take_dirty());
                    for k in keys {
                        self.pending.insert(state::key(&old.info.id, &k), None);
                    }
                }
            }
        }
        self.rules = rules;
        self.windows = windows;
    }

    /// The rules in use.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Groups held and evicted.
    pub fn stats(&self) -> EngineStats {
        let live = self.windows.iter().flatten();
        EngineStats {
            groups: live.clone().map(Windows::len).sum(),
            evicted_groups: self.evicted_before + live.map(|w| w.evicted).sum::<u64>(),
        }
    }

    /// Evaluates one record (records in log order). Deterministic: the same rules and record
    /// sequence (and restored state) give the same firings, with the same ids.
    pub fn evaluate(&mut self, record: &Value) -> Vec<Firing> {
        let t = event_time_ms(record);
        if let Some(t) = t
            && self.clock.is_none_or(|c| t > c)
        {
            self.clock = Some(t);
            for w in self.windows.iter_mut().flatten() {
                w.sweep(t);
            }
        }
        let mut slots = std::mem::take(&mut self.slots);
        self.rules.index().candidates(record, &mut slots);
        let mut out = Vec::new();
        let mut envelope = Envelope::default();
        let compiled = self.rules.compiled();
        let mut i = 0;
        while i < slots.len() {
            let rule = (slots[i] / 2) as usize;
            let main = slots[i].is_multiple_of(2);
            let after = if main {
                slots.get(i + 1) == Some(&(slots[i] + 1))
            } else {
                true
            };
            i += if main && after { 2 } else { 1 };
            let ask = Ask {
                main,
                after,
                record,
                t,
            };
            evaluate_rule(
                &compiled[rule],
                self.windows[rule].as_mut(),
                ask,
                &mut envelope,
                &mut out,
            );
        }
        self.slots = slots;
        out
    }

    /// Window changes since the last call: `(key, Some(value))` to write, `(key, None)` to
    /// delete, in key order. Keys are unique per (rule, group) and stable; values are opaque.
    pub fn take_state_changes(&mut self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let mut out = std::mem::take(&mut self.pending);
        for (r, w) in self.rules.compiled().iter().zip(self.windows.iter_mut()) {
            let Some(w) = w else { continue };
            for g in w.take_dirty() {
                let v = w.get(&g).map(|group| state::encode(r.fingerprint, group));
                out.insert(state::key(&r.info.id, &g), v);
            }
        }
        if let Some(c) = self.clock
            && self.clock_saved != Some(c)
        {
            out.insert(state::CLOCK_KEY.to_vec(), Some(c.to_be_bytes().to_vec()));
            self.clock_saved = Some(c);
        }
        out.into_iter().collect()
    }

    /// Resumes state persisted earlier. Entries of rules no longer loaded, or saved under
    /// another definition of the rule, are ignored, and deleted at the next
    /// [`Engine::take_state_changes`].
    pub fn restore_state(&mut self, entries: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) {
        for (k, v) in entries {
            if k == state::CLOCK_KEY {
                if let Ok(b) = <[u8; 8]>::try_from(v.as_slice()) {
                    let c = i64::from_be_bytes(b);
                    self.clock = Some(self.clock.map_or(c, |old| old.max(c)));
                    self.clock_saved = self.clock;
                }
                continue;
            }
            let restored = state::split_key(&k).and_then(|(id, group)| {
                let i = self.rules.position(id)?;
                let fp = self.rules.compiled()[i].fingerprint;
                let w = self.windows[i].as_mut()?;
                let g = state::decode(fp, &v)?;
                let newest = g.newest;
                w.restore(group, g);
                Some(newest)
            });
            match restored {
                Some(newest) => self.clock = Some(self.clock.map_or(newest, |c| c.max(newest))),
                None => {
                    self.pending.insert(k, None);
                }
            }
        }
    }
}

/// What to ask one rule about one record.
struct Ask<'a> {
    /// Ask the rule's pattern.
    main: bool,
    /// Ask its `after` pattern.
    after: bool,
    record: &'a Value,
    /// The record's eventTime, ms.
    t: Option<i64>,
}

fn evaluate_rule(
    r: &Compiled,
    windows: Option<&mut Windows>,
    ask: Ask<'_>,
    envelope: &mut Envelope,
    out: &mut Vec<Firing>,
) {
    let record = ask.record;
    let main_hit =
        ask.main && prefilter::all_hold(&r.requires, record) && r.matcher.matches(record, envelope);
    let entry = |t: i64| Entry {
        t,
        id: str_of(record, "eventID").to_string(),
        time: str_of(record, "eventTime").to_string(),
    };
    let group_of = |sel: &Option<crate::filter_pattern::Selector>| match sel {
        Some(sel) => scalar_text(sel.resolve(record)).map(|v| Some((sel.text.clone(), v))),
        None => Some(None),
    };
    match &r.counting {
        Counting::Each => {
            if main_hit {
                out.push(single(r, record));
            }
        }
        Counting::Threshold {
            period_ms,
            group_by,
            ..
        } => {
            let (true, Some(t), Some(w)) = (main_hit, ask.t, windows) else {
                return;
            };
            // CloudWatch publishes no metric for an event without the dimension: not counted.
            let Some(group) = group_of(group_by) else {
                return;
            };
            let key = group.as_ref().map_or("", |g| g.1.as_str());
            if let Some(entries) = w.threshold(key, entry(t)) {
                let n = entries.len() as u64;
                out.push(windowed(r, record, group, entries, n, *period_ms));
            }
        }
        Counting::After {
            pattern,
            within_ms,
            same,
            ..
        } => {
            let after_hit = ask.after && pattern_matches(pattern, record, envelope);
            let (true, Some(t), Some(w)) = (main_hit || after_hit, ask.t, windows) else {
                return;
            };
            let Some(group) = group_of(same) else {
                return;
            };
            let key = group.as_ref().map_or("", |g| g.1.as_str()).to_string();
            if main_hit && let Some(mut entries) = w.take_after(&key, t) {
                let n = entries.len() as u64;
                entries.push(entry(t));
                out.push(windowed(r, record, group, entries, n, *within_ms));
            }
            if after_hit {
                w.push_after(&key, entry(t));
            }
        }
    }
}

fn default_who(record: &Value) -> String {
    let u = record.get("userIdentity");
    let pick = |k: &str| u.and_then(|u| u.get(k)).and_then(Value::as_str);
    pick("userName")
        .or_else(|| pick("arn"))
        .or_else(|| pick("principalId"))
        .unwrap_or("-")
        .to_string()
}

fn single(r: &Compiled, record: &Value) -> Firing {
    let event_id = str_of(record, "eventID");
    let time = str_of(record, "eventTime");
    let summary = match &r.summary {
        Some(s) => s.render(&Fill {
            count: 1,
            group: None,
            period_ms: None,
            title: &r.info.title,
            record,
        }),
        None => format!(
            "{}: {} {} by {} from {}",
            r.info.title,
            str_of(record, "eventSource"),
            str_of(record, "eventName"),
            default_who(record),
            record
                .get("sourceIPAddress")
                .and_then(Value::as_str)
                .unwrap_or("-"),
        ),
    };
    Firing {
        id: format!("{}/{event_id}", r.info.id),
        rule: r.info.clone(),
        group: None,
        count: 1,
        event_ids: vec![event_id.to_string()],
        first_event_time: time.to_string(),
        last_event_time: time.to_string(),
        summary,
    }
}

fn windowed(
    r: &Compiled,
    record: &Value,
    group: Option<(String, String)>,
    entries: Vec<Entry>,
    count: u64,
    span_ms: i64,
) -> Firing {
    let first = entries.first().map(|e| e.time.clone()).unwrap_or_default();
    let last = entries.last().map(|e| e.time.clone()).unwrap_or_default();
    let skip = entries.len().saturating_sub(MAX_EVENT_IDS);
    let event_ids = entries.into_iter().skip(skip).map(|e| e.id).collect();
    let summary = match &r.summary {
        Some(s) => s.render(&Fill {
            count,
            group: group.as_ref().map(|g| g.1.as_str()),
            period_ms: Some(span_ms),
            title: &r.info.title,
            record,
        }),
        None => {
            let by = group
                .as_ref()
                .map_or(String::new(), |(f, v)| format!(" for {f} = {v}"));
            format!(
                "{}: {count} matches within {}{by}",
                r.info.title,
                seconds(span_ms)
            )
        }
    };
    Firing {
        id: format!("{}/{}", r.info.id, str_of(record, "eventID")),
        rule: r.info.clone(),
        group,
        count,
        event_ids,
        first_event_time: first,
        last_event_time: last,
        summary,
    }
}
