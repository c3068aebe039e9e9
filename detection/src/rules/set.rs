//! A loaded, compiled, indexed set of rules.

use super::error::LoadError;
use super::file::{self, Counting, FileRules, Pattern};
use super::index::{self, Index};
use super::info::{Language, RuleInfo, Severity};
use super::packs;
use super::prefilter::{self, Requirement};
use super::state::fingerprint;
use super::summary::{Summary, seconds};
use crate::event_pattern::cloudtrail_envelope;
use crate::sigma::SigmaRule;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// How one rule matches a single record.
pub(crate) enum Matcher {
    Pattern(Pattern),
    Sigma(Box<SigmaRule>),
}

/// The EventBridge envelope of the record being evaluated, built once and only if an event
/// pattern is asked.
#[derive(Default)]
pub(crate) struct Envelope(Option<Value>);

pub(crate) fn pattern_matches(p: &Pattern, record: &Value, env: &mut Envelope) -> bool {
    match p {
        Pattern::Filter(f) => f.matches(record),
        Pattern::Event(e, _) => {
            let envelope = env.0.get_or_insert_with(|| cloudtrail_envelope(record));
            e.matches_in_envelope(envelope, record)
        }
    }
}

impl Matcher {
    pub(crate) fn matches(&self, record: &Value, env: &mut Envelope) -> bool {
        match self {
            Matcher::Pattern(p) => pattern_matches(p, record, env),
            Matcher::Sigma(s) => s.matches(record),
        }
    }
}

/// One compiled rule.
pub(crate) struct Compiled {
    pub info: RuleInfo,
    pub matcher: Matcher,
    pub counting: Counting,
    pub summary: Option<Summary>,
    /// Fingerprint of what the rule matches and counts.
    pub fingerprint: u64,
    /// Fields a Sigma rule requires, checked before asking it ([`prefilter`]).
    pub requires: Vec<Requirement>,
}

struct Inner {
    rules: Vec<Compiled>,
    by_id: HashMap<String, usize>,
    index: Index,
}

/// Compiled rules with their index; cheap to clone (shared).
#[derive(Clone)]
pub struct RuleSet(Arc<Inner>);

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.len())
            .finish()
    }
}

fn condition(c: &Counting) -> String {
    let by = |s: &Option<crate::filter_pattern::Selector>| {
        s.as_ref()
            .map_or(String::new(), |s| format!(" by {}", s.text))
    };
    match c {
        Counting::Each => "any match".into(),
        Counting::Threshold {
            count,
            period_ms,
            group_by,
        } => format!(">= {count} in {}{}", seconds(*period_ms), by(group_by)),
        Counting::After {
            count,
            within_ms,
            same,
            ..
        } => format!(
            "a match after >= {count} matches of `after` within {}{}",
            seconds(*within_ms),
            by(same)
        ),
    }
}

impl RuleSet {
    /// Built-in packs by name (`cis`, `host`, `sigma`; an unknown name is an error), embedded
    /// in the binary, plus every `*.yaml`/`*.yml`/`*.json` file of `dir` (not recursive, in
    /// name order). Two rules with the same id anywhere is an error naming both places.
    pub fn load(packs: &[String], dir: Option<&Path>) -> Result<RuleSet, LoadError> {
        let mut files = Vec::new();
        for p in packs {
            files.extend(packs::load(p)?);
        }
        if let Some(dir) = dir {
            let origin = dir.display().to_string();
            let io = |e: std::io::Error| LoadError::file(&origin, format!("cannot read: {e}"));
            let mut paths = Vec::new();
            for entry in std::fs::read_dir(dir).map_err(io)? {
                let path = entry.map_err(io)?.path();
                let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
                if matches!(ext, "yaml" | "yml" | "json") && path.is_file() {
                    paths.push(path);
                }
            }
            paths.sort();
            for path in paths {
                let origin = path.display().to_string();
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| LoadError::file(&origin, format!("cannot read: {e}")))?;
                let json = path.extension().is_some_and(|e| e == "json");
                files.push((origin.clone(), file::parse(&origin, &text, json)?));
            }
        }
        Self::build(files)
    }

    /// One rules file's text (JSON if `origin` ends in `.json`, else YAML), for tests and
    /// tools that validate a file before installing it.
    pub fn from_text(origin: &str, text: &str) -> Result<RuleSet, LoadError> {
        let rules = file::parse(origin, text, origin.ends_with(".json"))?;
        Self::build(vec![(origin.to_string(), rules)])
    }

    fn build(files: Vec<(String, FileRules)>) -> Result<RuleSet, LoadError> {
        let mut rules = Vec::new();
        for (origin, content) in files {
            match content {
                FileRules::Rules(defs) => {
                    for d in defs {
                        let fp = fingerprint(&d.definition());
                        rules.push(Compiled {
                            // A filter or event pattern reads its fields in order and stops at
                            // the first that fails: checking them first would read them twice.
                            requires: Vec::new(),
                            info: RuleInfo {
                                id: d.id,
                                title: d.title,
                                severity: d.severity,
                                language: d.pattern.language(),
                                origin: origin.clone(),
                                description: d.description,
                                condition: condition(&d.counting),
                            },
                            matcher: Matcher::Pattern(d.pattern),
                            counting: d.counting,
                            summary: d.summary,
                            fingerprint: fp,
                        });
                    }
                }
                FileRules::Sigma(s) => {
                    let id = s.id.clone().unwrap_or_else(|| {
                        let stem = origin.rsplit('/').next().unwrap_or(&origin);
                        stem.rsplit_once('.').map_or(stem, |(a, _)| a).to_string()
                    });
                    if id.is_empty()
                        || !id
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
                    {
                        return Err(LoadError {
                            rule: Some(id.clone()),
                            ..LoadError::file(
                                &origin,
                                "sigma: the rule id may only hold letters, digits, '.', '_' and '-'",
                            )
                        });
                    }
                    rules.push(Compiled {
                        info: RuleInfo {
                            id,
                            title: s.title.clone(),
                            severity: Severity::from_sigma_level(s.level.as_deref()),
                            language: Language::Sigma,
                            origin: origin.clone(),
                            description: s.description.clone(),
                            condition: "any match".into(),
                        },
                        // Sigma rules fire on each match and keep no window state.
                        fingerprint: fingerprint(&format!("sigma|{origin}")),
                        requires: prefilter::sigma(&s.detection),
                        matcher: Matcher::Sigma(s),
                        counting: Counting::Each,
                        summary: None,
                    });
                }
            }
        }
        let mut by_id = HashMap::new();
        for (i, r) in rules.iter().enumerate() {
            if let Some(first) = by_id.insert(r.info.id.clone(), i) {
                return Err(LoadError {
                    rule: Some(r.info.id.clone()),
                    ..LoadError::file(
                        &r.info.origin,
                        format!(
                            "duplicate rule id: already defined in {}",
                            rules[first].info.origin
                        ),
                    )
                });
            }
        }
        let mut ix = Index::default();
        for (i, r) in rules.iter().enumerate() {
            let keys = match &r.matcher {
                Matcher::Pattern(p) => pattern_keys(p),
                Matcher::Sigma(s) => index::sigma_keys(&s.detection),
            };
            ix.add(i as u32 * 2, keys);
            if let Counting::After { pattern, .. } = &r.counting {
                ix.add(i as u32 * 2 + 1, pattern_keys(pattern));
            }
        }
        Ok(RuleSet(Arc::new(Inner {
            rules,
            by_id,
            index: ix,
        })))
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.0.rules.len()
    }

    /// True if there are no rules.
    pub fn is_empty(&self) -> bool {
        self.0.rules.is_empty()
    }

    /// The rules, in evaluation order (packs in the order given, then files in name order).
    pub fn rules(&self) -> impl Iterator<Item = &RuleInfo> {
        self.0.rules.iter().map(|r| &r.info)
    }

    /// The rule with this id.
    pub fn get(&self, id: &str) -> Option<&RuleInfo> {
        self.0.by_id.get(id).map(|i| &self.0.rules[*i].info)
    }

    /// How many rule patterns could not be indexed and are asked on every record.
    pub fn unindexed(&self) -> usize {
        self.0.index.unkeyed()
    }

    pub(crate) fn compiled(&self) -> &[Compiled] {
        &self.0.rules
    }

    pub(crate) fn position(&self, id: &str) -> Option<usize> {
        self.0.by_id.get(id).copied()
    }

    pub(crate) fn index(&self) -> &Index {
        &self.0.index
    }
}

fn pattern_keys(p: &Pattern) -> Option<index::Keys> {
    match p {
        Pattern::Filter(f) => index::filter_keys(f.expr()),
        Pattern::Event(e, _) => index::event_keys(e.root()),
    }
}
