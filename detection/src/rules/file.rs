//! Rule files: their schema, and parsing with errors that name the rule and the position.
//!
//! A file (YAML or JSON, the same schema) is either one Sigma rule (it has a top-level
//! `detection:`) or a Groundtrail rules file:
//!
//! ```yaml
//! rules:
//!   - id: ssh-brute-force                # [A-Za-z0-9._-]+, unique across all loaded rules
//!     title: SSH brute force
//!     severity: high                     # info | low | medium | high | critical
//!     description: Many failed logins from one address.   # optional
//!     summary: "{count} failed ssh logins from {group} within {period}"  # optional
//!     filter_pattern: '{ $.eventName = "ConsoleLogin" && $.errorCode = "AccessDenied" }'
//!     # or: event_pattern: {detail: {eventName: [ConsoleLogin]}}
//!     threshold: {count: 5, period: 5m, group_by: $.sourceIPAddress}    # optional
//!     # or: after: {filter_pattern: '...', count: 3, within: 10m, same: $.sourceIPAddress}
//! ```
//!
//! Every map refuses unknown fields. Positions: values are checked while their node is read
//! (see `de.rs`), so a bad value is placed at the value — in YAML at its first character, in
//! JSON at its last (where serde_json stands when the value is done) — with the column inside a
//! pattern in the message; a problem of the rule as a whole (no pattern, two patterns) is
//! placed at the rule.

use super::de;
use super::error::LoadError;
use super::info::{Language, Severity};
use super::summary::Summary;
use crate::event_pattern::EventPattern;
use crate::filter_pattern::{FilterPattern, Selector};
use crate::sigma::SigmaRule;
use serde::Deserialize;
use serde_path_to_error::{Path, Segment};

/// Most timestamps a window keeps per group (`count` is at most this): with the group cap,
/// this bounds the engine's memory.
pub(crate) const MAX_COUNT: u64 = 1000;
/// The longest `period`/`within`: a day, as CloudWatch alarms' evaluation range.
pub(crate) const MAX_PERIOD_MS: i64 = 24 * 3600 * 1000;

/// The pattern of a rule, compiled.
#[derive(Debug, Clone)]
pub(crate) enum Pattern {
    Filter(FilterPattern),
    Event(EventPattern, String),
}

impl Pattern {
    pub(crate) fn language(&self) -> Language {
        match self {
            Pattern::Filter(_) => Language::FilterPattern,
            Pattern::Event(..) => Language::EventPattern,
        }
    }

    /// The pattern's text, for the rule's definition fingerprint.
    fn text(&self) -> String {
        match self {
            Pattern::Filter(p) => format!("filter:{}", p.source()),
            Pattern::Event(_, json) => format!("event:{json}"),
        }
    }
}

/// How a rule turns matches into firings.
#[derive(Debug, Clone)]
pub(crate) enum Counting {
    /// Every match fires.
    Each,
    /// CloudWatch metric and alarm: fire when `count` matches fall within `period_ms`.
    Threshold {
        count: usize,
        period_ms: i64,
        group_by: Option<Selector>,
    },
    /// Fire on a match preceded by `count` matches of `pattern` within `within_ms`, all with
    /// the same value of `same`.
    After {
        pattern: Pattern,
        count: usize,
        within_ms: i64,
        same: Option<Selector>,
    },
}

/// One Groundtrail rule, compiled.
#[derive(Debug, Clone)]
pub(crate) struct RuleDef {
    pub id: String,
    pub title: String,
    pub severity: Severity,
    pub description: Option<String>,
    pub summary: Option<Summary>,
    pub pattern: Pattern,
    pub counting: Counting,
}

impl RuleDef {
    /// What the rule matches and counts, as text: two rules with the same id and definition
    /// share window state across a reload.
    pub(crate) fn definition(&self) -> String {
        let sel = |s: &Option<Selector>| s.as_ref().map_or(String::new(), |s| s.text.clone());
        let counting = match &self.counting {
            Counting::Each => "each".to_string(),
            Counting::Threshold {
                count,
                period_ms,
                group_by,
            } => format!("threshold:{count}/{period_ms}/{}", sel(group_by)),
            Counting::After {
                pattern,
                count,
                within_ms,
                same,
            } => format!("after:{count}/{within_ms}/{}/{}", sel(same), pattern.text()),
        };
        format!("{}|{counting}", self.pattern.text())
    }
}

/// What a file holds.
pub(crate) enum FileRules {
    Sigma(Box<SigmaRule>),
    Rules(Vec<RuleDef>),
}

/// A Groundtrail rules file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    /// What the file's rules are for (documentation only).
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    /// The rules, in the order they are evaluated.
    rules: Vec<RuleDoc>,
}

struct RuleDoc(RuleDef);

impl<'de> Deserialize<'de> for RuleDoc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::map(
            d,
            "a rule (a map with id, title, severity and a pattern)",
            RuleDoc::check,
        )
    }
}

/// One rule as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    /// Unique id, `[A-Za-z0-9._-]+`.
    id: RuleId,
    /// One line saying what it detects.
    title: String,
    /// `info`, `low`, `medium`, `high` or `critical`.
    severity: Severity,
    /// Longer explanation.
    #[serde(default)]
    description: Option<String>,
    /// The alert's one line, with placeholders (see `summary.rs`).
    #[serde(default)]
    summary: Option<Summary>,
    /// A CloudWatch Logs JSON filter pattern.
    #[serde(default)]
    filter_pattern: Option<FilterPatternDoc>,
    /// An EventBridge event pattern, as a map.
    #[serde(default)]
    event_pattern: Option<EventPatternDoc>,
    /// Fire on `count` matches within `period` instead of on each match.
    #[serde(default)]
    threshold: Option<ThresholdDoc>,
    /// Fire on a match preceded by `count` matches of another pattern.
    #[serde(default)]
    after: Option<After>,
}

/// `threshold:` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThresholdDoc {
    /// Matches needed within the period (1..=1000).
    count: Count,
    /// The sliding window, e.g. `5m`.
    period: Duration,
    /// Count separately per value of this field, e.g. `$.sourceIPAddress`.
    #[serde(default)]
    group_by: Option<SelectorDoc>,
}

/// `after:`, checked.
struct After {
    pattern: Pattern,
    count: usize,
    within_ms: i64,
    same: Option<Selector>,
}

impl<'de> Deserialize<'de> for After {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::map(
            d,
            "a map with a pattern, count and within",
            |a: AfterDoc| {
                Ok(After {
                    pattern: one_pattern(a.filter_pattern, a.event_pattern, "after")?,
                    count: a.count.0,
                    within_ms: a.within.0,
                    same: a.same.map(|s| s.0),
                })
            },
        )
    }
}

/// `after:` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AfterDoc {
    /// What must come before (a filter pattern)...
    #[serde(default)]
    filter_pattern: Option<FilterPatternDoc>,
    /// ...or an event pattern.
    #[serde(default)]
    event_pattern: Option<EventPatternDoc>,
    /// How many of them (1..=1000).
    count: Count,
    /// How long before the rule's match they may be.
    within: Duration,
    /// The field that must be equal on all of them and the match, e.g. `$.sourceIPAddress`.
    #[serde(default)]
    same: Option<SelectorDoc>,
}

struct RuleId(String);

impl<'de> Deserialize<'de> for RuleId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::string(d, "a rule id", RuleId::check)
    }
}

impl RuleId {
    fn check(s: &str) -> Result<RuleId, String> {
        if !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            Ok(RuleId(s.to_string()))
        } else {
            Err(format!(
                "rule id {s:?}: use letters, digits, '.', '_' and '-' only"
            ))
        }
    }
}

struct FilterPatternDoc(FilterPattern);

impl<'de> Deserialize<'de> for FilterPatternDoc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::string(d, "a CloudWatch Logs filter pattern in quotes", |s| {
            FilterPattern::parse(s)
                .map(FilterPatternDoc)
                .map_err(|e| e.to_string())
        })
    }
}

struct EventPatternDoc(EventPattern, String);

impl<'de> Deserialize<'de> for EventPatternDoc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::map(
            d,
            "an EventBridge event pattern (a map)",
            |m: serde_json::Map<String, serde_json::Value>| {
                let v = serde_json::Value::Object(m);
                let p = EventPattern::from_json(&v).map_err(|e| e.to_string())?;
                Ok(EventPatternDoc(p, v.to_string()))
            },
        )
    }
}

struct SelectorDoc(Selector);

impl<'de> Deserialize<'de> for SelectorDoc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::string(d, "a field selector such as $.sourceIPAddress", |s| {
            Selector::parse(s)
                .map(SelectorDoc)
                .map_err(|e| e.to_string())
        })
    }
}

struct Count(usize);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::count(d, MAX_COUNT).map(Count)
    }
}

/// `30s`, `5m`, `1h`, `1d`: a whole number and a unit.
struct Duration(i64);

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::string(d, "a duration such as 30s, 5m or 1h", Duration::check)
    }
}

impl Duration {
    fn check(s: &str) -> Result<Duration, String> {
        let bad =
            || format!("duration {s:?}: write a whole number and s, m, h or d, e.g. 30s, 5m, 1h");
        let t = s.trim();
        let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
        let n: i64 = num.parse().map_err(|_| bad())?;
        let ms = match unit {
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        let total = n.checked_mul(ms).filter(|t| *t > 0).ok_or_else(bad)?;
        if total > MAX_PERIOD_MS {
            return Err(format!("duration {s:?}: at most 1d"));
        }
        Ok(Duration(total))
    }
}

fn one_pattern(
    filter: Option<FilterPatternDoc>,
    event: Option<EventPatternDoc>,
    what: &str,
) -> Result<Pattern, String> {
    match (filter, event) {
        (Some(f), None) => Ok(Pattern::Filter(f.0)),
        (None, Some(e)) => Ok(Pattern::Event(e.0, e.1)),
        (Some(_), Some(_)) => Err(format!(
            "{what} has both filter_pattern and event_pattern; give exactly one"
        )),
        (None, None) => Err(format!(
            "{what} needs exactly one of filter_pattern and event_pattern"
        )),
    }
}

impl RuleDoc {
    fn check(r: RawRule) -> Result<RuleDoc, String> {
        let pattern = one_pattern(r.filter_pattern, r.event_pattern, "a rule")?;
        let counting = match (r.threshold, r.after) {
            (Some(_), Some(_)) => {
                return Err("a rule has either threshold or after, not both".into());
            }
            (Some(t), None) => Counting::Threshold {
                count: t.count.0,
                period_ms: t.period.0,
                group_by: t.group_by.map(|s| s.0),
            },
            (None, Some(a)) => Counting::After {
                pattern: a.pattern,
                count: a.count,
                within_ms: a.within_ms,
                same: a.same,
            },
            (None, None) => Counting::Each,
        };
        Ok(RuleDoc(RuleDef {
            id: r.id.0,
            title: r.title,
            severity: r.severity,
            description: r.description,
            summary: r.summary,
            pattern,
            counting,
        }))
    }
}

/// Parses one file's text; `origin` names it in errors, `json` picks the syntax.
pub(crate) fn parse(origin: &str, text: &str, json: bool) -> Result<FileRules, LoadError> {
    let is_sigma = if json {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| LoadError {
            line: Some(e.line()),
            column: Some(e.column()),
            ..LoadError::file(origin, strip_position(&e.to_string(), e.line(), e.column()))
        })?;
        v.get("detection").is_some()
    } else {
        let v: yaml_serde::Value = yaml_serde::from_str(text).map_err(|e| {
            let (line, column) = e.location().map(|l| (l.line(), l.column())).unzip();
            let message = match (line, column) {
                (Some(l), Some(c)) => strip_position(&e.to_string(), l, c),
                _ => e.to_string(),
            };
            LoadError {
                line,
                column,
                ..LoadError::file(origin, message)
            }
        })?;
        v.get("detection").is_some()
    };
    if is_sigma {
        return SigmaRule::parse(origin, text)
            .map(|r| FileRules::Sigma(Box::new(r)))
            .map_err(|e| LoadError::file(origin, sigma_message(e)));
    }
    let result = if json {
        let mut de = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize::<_, FileDoc>(&mut de)
            .map_err(|e| {
                let (path, inner) = (e.path().clone(), e.into_inner());
                let (l, c) = (inner.line(), inner.column());
                let message = strip_position(&inner.to_string(), l, c);
                (Some(path), Some((l, c)), message)
            })
            .and_then(|doc| {
                de.end()
                    .map(|()| doc)
                    .map_err(|e| (None, Some((e.line(), e.column())), e.to_string()))
            })
    } else {
        let de = yaml_serde::Deserializer::from_str(text);
        serde_path_to_error::deserialize::<_, FileDoc>(de).map_err(|e| {
            let (path, inner) = (e.path().clone(), e.into_inner());
            let pos = inner.location().map(|l| (l.line(), l.column()));
            let message = match pos {
                Some((l, c)) => strip_position(&inner.to_string(), l, c),
                None => inner.to_string(),
            };
            (Some(path), pos, message)
        })
    };
    match result {
        Ok(doc) => Ok(FileRules::Rules(
            doc.rules.into_iter().map(|r| r.0).collect(),
        )),
        Err((path, pos, message)) => Err(LoadError {
            file: origin.to_string(),
            rule: path.and_then(|p| rule_of(&p, text, json)),
            line: pos.map(|p| p.0),
            column: pos.map(|p| p.1),
            message,
        }),
    }
}

fn sigma_message(e: crate::sigma::SigmaError) -> String {
    // The Sigma errors start with "sigma rule <origin>: "; the LoadError names the file.
    let s = e.to_string();
    match s.split_once(": ") {
        Some((head, rest)) if head.starts_with("sigma rule ") => format!("sigma: {rest}"),
        _ => s,
    }
}

/// The parsers' messages end with ` at line L column C` and (YAML) start with the path of the
/// node (`rules[0].threshold: `); both are given separately in a [`LoadError`].
fn strip_position(msg: &str, line: usize, column: usize) -> String {
    let m = msg
        .strip_suffix(&format!(" at line {line} column {column}"))
        .unwrap_or(msg);
    let path_like = |h: &str| {
        h.starts_with("rules")
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.[]?".contains(&b))
    };
    match m.split_once(": ") {
        Some((head, rest)) if path_like(head) => rest.to_string(),
        _ => m.to_string(),
    }
}

/// The rule an error path points into (`rules[3]...`): its id if the file says one, else
/// `#4`.
fn rule_of(path: &Path, text: &str, json: bool) -> Option<String> {
    let mut it = path.iter();
    let (Some(Segment::Map { key }), Some(Segment::Seq { index })) = (it.next(), it.next()) else {
        return None;
    };
    if key != "rules" {
        return None;
    }
    let id = if json {
        serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v["rules"][*index]["id"].as_str().map(str::to_string))
    } else {
        yaml_serde::from_str::<yaml_serde::Value>(text)
            .ok()
            .and_then(|v| {
                v.get("rules")?
                    .get(*index)?
                    .get("id")?
                    .as_str()
                    .map(str::to_string)
            })
    };
    Some(id.unwrap_or_else(|| format!("#{}", index + 1)))
}
