//! The rule engine: rule files and packs loaded into a [`RuleSet`], evaluated record by record
//! by an [`Engine`] that keeps count windows and reports [`Firing`]s.
//!
//! Why: the three rule languages each say whether *one* record matches; alerting needs more —
//! rules loaded from files with errors that point at the line, CloudWatch's metric-and-alarm
//! counting (`>= 5 in 5 minutes by $.sourceIPAddress`), "a success after failures", and all of
//! it cheap enough to run on every committed record (issue 17).
//!
//! Guarantees, each tested in this module's tests:
//! - **Deterministic**: the same rules and the same record sequence (and the same restored
//!   state) give the same firings with the same ids, `<rule id>/<eventID>` of the record that
//!   made the rule fire. Nothing reads a clock: windows run on the records' `eventTime`.
//! - **Exact per rule language**: the engine only decides *which* rules to ask (an index by the
//!   eventName, service or other exact field a rule requires, see `index.rs`, and for Sigma a
//!   check of the fields its selection ANDs, see `prefilter.rs`); asking is the language's own
//!   `matches`, so a rule fires in the engine exactly when it matches alone
//!   (`tests::the_index_never_hides_a_match`).
//! - **Bounded state**: see `window.rs`: at most `count` timestamps per group, groups dropped once
//!   their period is over, at most [`MAX_GROUPS_PER_RULE`] groups per rule (the oldest evicted,
//!   and counted in [`EngineStats`]).
//! - **Persistable**: every window change is reported by [`Engine::take_state_changes`] for the
//!   collector to store with its log position; [`Engine::restore_state`] resumes from it.

mod de;
mod engine;
mod error;
mod file;
mod index;
mod info;
mod packs;
mod prefilter;
mod set;
mod state;
mod summary;
mod time;
mod window;

pub use engine::{Engine, EngineStats, Firing};
pub use error::LoadError;
pub use info::{Language, RuleInfo, Severity};
pub use packs::{HOST_YAML, NAMES as PACKS};
pub use set::RuleSet;
pub use window::MAX_GROUPS_PER_RULE;

#[cfg(test)]
mod tests;
