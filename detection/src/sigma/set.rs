//! A set of Sigma rules evaluated together.
//!
//! Why: evaluating 57 rules one by one costs every rule on every record. `rsigma-eval`'s
//! `Engine` keeps an inverted index of the rules' literal values (event names, sources) and
//! only runs the rules a record can match. The answer is the same as asking each rule
//! (tested in `tests.rs`); only the cost differs.

use super::{RecordEvent, SigmaError, SigmaRule};
use rsigma_eval::Engine;
use rsigma_eval::event::JsonEvent;
use std::collections::HashMap;

/// Rules compiled into one engine; each rule is identified by its `id`, or its title when it
/// has none, which must therefore be unique in the set.
pub struct SigmaSet {
    rules: Vec<SigmaRule>,
    by_key: HashMap<String, usize>,
    engine: Engine,
}

impl std::fmt::Debug for SigmaSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigmaSet")
            .field("rules", &self.rules.len())
            .finish()
    }
}

fn key(id: Option<&str>, title: &str) -> String {
    id.map_or_else(|| format!("title:{title}"), |id| format!("id:{id}"))
}

impl SigmaSet {
    /// Builds the set; two rules with the same id (or, without ids, the same title) are refused.
    pub fn new(rules: Vec<SigmaRule>) -> Result<Self, SigmaError> {
        let mut by_key = HashMap::new();
        for (i, r) in rules.iter().enumerate() {
            if let Some(first) = by_key.insert(key(r.id.as_deref(), &r.title), i) {
                return Err(SigmaError::Duplicate {
                    origin: r.origin.clone(),
                    first: rules[first].origin.clone(),
                });
            }
        }
        let mut engine = Engine::new();
        engine.extend_compiled_rules(rules.iter().map(|r| r.compiled.clone()));
        Ok(Self {
            rules,
            by_key,
            engine,
        })
    }

    /// The rules, in the order given.
    pub fn rules(&self) -> &[SigmaRule] {
        &self.rules
    }

    /// The rules the record matches, in the order given.
    pub fn matching(&self, record: &serde_json::Value) -> Vec<&SigmaRule> {
        let event = RecordEvent(JsonEvent::borrow(record));
        let mut hits: Vec<usize> = self
            .engine
            .evaluate(&event)
            .iter()
            .filter_map(|m| {
                self.by_key
                    .get(&key(m.header.rule_id.as_deref(), &m.header.rule_title))
                    .copied()
            })
            .collect();
        hits.sort_unstable();
        hits.dedup();
        hits.into_iter().map(|i| &self.rules[i]).collect()
    }
}
