//! A rule's `summary`: the one line an alert shows, with placeholders filled from the firing.
//!
//! Placeholders: `{count}` (matches in the window, 1 for a single match), `{group}` (the value
//! of `group_by`/`same`), `{period}` (the window, e.g. `300 s`), `{title}`, and any selector
//! `{$.userIdentity.arn}`, read from the record that made the rule fire (`-` when absent).
//! Alternatives separated by `|` take the first one present:
//! `{$.requestParameters.packageName | $.requestParameters.packages[0].packageName}` (records
//! of one source can carry a value in different places).
//! Anything else in braces is refused at load, so a typo shows then, not in an alert.

use crate::filter_pattern::Selector;
use serde_json::Value;

/// A parsed summary template.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Summary {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Count,
    Group,
    Period,
    Title,
    /// The first of these present in the record.
    Field(Vec<Selector>),
}

/// What a summary is filled from.
pub(crate) struct Fill<'a> {
    pub count: u64,
    pub group: Option<&'a str>,
    pub period_ms: Option<i64>,
    pub title: &'a str,
    pub record: &'a Value,
}

impl<'de> serde::Deserialize<'de> for Summary {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::de::string(d, "a summary line", Summary::parse)
    }
}

impl Summary {
    fn parse(text: &str) -> Result<Summary, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(format!("summary: unclosed '{{' in {text:?}"));
            };
            let name = &rest[open + 1..open + close];
            parts.push(match name {
                "count" => Part::Count,
                "group" => Part::Group,
                "period" => Part::Period,
                "title" => Part::Title,
                sel if sel.starts_with('$') => Part::Field(
                    sel.split('|')
                        .map(|one| {
                            Selector::parse(one.trim())
                                .map_err(|e| format!("summary: {{{sel}}}: {e}"))
                        })
                        .collect::<Result<_, _>>()?,
                ),
                other => {
                    return Err(format!(
                        "summary: unknown placeholder {{{other}}} (use {{count}}, {{group}}, {{period}}, {{title}} or a selector such as {{$.sourceIPAddress}})"
                    ));
                }
            });
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Summary { parts })
    }
}

impl Summary {
    /// The line for one firing.
    pub(crate) fn render(&self, fill: &Fill<'_>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Count => out.push_str(&fill.count.to_string()),
                Part::Group => out.push_str(fill.group.unwrap_or("-")),
                Part::Period => match fill.period_ms {
                    Some(ms) => out.push_str(&seconds(ms)),
                    None => out.push('-'),
                },
                Part::Title => out.push_str(fill.title),
                Part::Field(sels) => out.push_str(
                    &sels
                        .iter()
                        .find_map(|sel| scalar_text(sel.resolve(fill.record)))
                        .unwrap_or_else(|| "-".into()),
                ),
            }
        }
        out
    }
}

/// `300 s`, `0.5 s`.
pub(crate) fn seconds(ms: i64) -> String {
    if ms % 1000 == 0 {
        format!("{} s", ms / 1000)
    } else {
        format!("{} s", ms as f64 / 1000.0)
    }
}

/// The text of a string, number or boolean value; `None` for anything else.
pub(crate) fn scalar_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(template: &str, record: &Value) -> String {
        Summary::parse(template).unwrap().render(&Fill {
            count: 1,
            group: None,
            period_ms: None,
            title: "t",
            record,
        })
    }

    /// dpkg records name one package at the top, apt history records a list: one template
    /// serves both, and a field in neither place shows `-`.
    #[test]
    fn alternatives_take_the_first_present() {
        let t = "installed {$.requestParameters.packageName | $.requestParameters.packages[0].packageName}";
        let dpkg = json!({"requestParameters": {"packageName": "curl"}});
        let apt = json!({"requestParameters": {"packages": [{"packageName": "git"}]}});
        assert_eq!(render(t, &dpkg), "installed curl");
        assert_eq!(render(t, &apt), "installed git");
        assert_eq!(render(t, &json!({})), "installed -");
        assert!(Summary::parse("{$.a | nope}").is_err());
    }
}
