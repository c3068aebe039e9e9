//! The results: one table on stdout (`figure | measured | limit/goal | verdict`) and the same
//! figures in a JSON file.

use std::path::Path;

use serde::Serialize;
use serde_json::{Value, json};

/// What a figure is compared with.
#[derive(Debug, Clone)]
pub enum Goal {
    /// The goal: the figure should be at least this.
    AtLeast(f64),
    /// The goal: the figure should be at most this.
    AtMost(f64),
}

#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// Stable name, e.g. `collector.delivered_records_per_s`.
    pub id: String,
    pub section: String,
    pub label: String,
    /// `None`: not measured (`note` says why).
    pub value: Option<f64>,
    pub unit: String,
    pub measured: String,
    /// The goal or limit it is shown beside, as text.
    pub beside: String,
    /// `meets`, `misses`, `limit` (a reference it cannot beat), `info`, `not measured`.
    pub verdict: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goal_value: Option<f64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub note: String,
}

#[derive(Debug, Default)]
pub struct Report {
    pub figures: Vec<Figure>,
    /// Lines printed above the table (how each section was measured).
    pub notes: Vec<String>,
    pub extra: serde_json::Map<String, Value>,
}

/// Formats a number with thousands separators and `decimals` decimals.
pub fn num(v: f64, decimals: usize) -> String {
    let s = format!("{:.*}", decimals, v.abs());
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i.to_string(), format!(".{f}")),
        None => (s.clone(), String::new()),
    };
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{}{out}{frac}", if v < 0.0 { "-" } else { "" })
}

fn show(v: f64, unit: &str) -> String {
    match unit {
        "records/s" | "appends/s" | "requests/s" | "events/s" | "bytes/event" => {
            format!("{} {unit}", num(v, 0))
        }
        "records/CPU-s" => format!("{} {unit}", num(v, 0)),
        "MB/s" | "MB" => format!("{} {unit}", num(v, 1)),
        "s" => format!("{} s", num(v, 2)),
        "ms" => format!("{} ms", num(v, 1)),
        "%" | "% of a core" => format!("{} {unit}", num(v, 2)),
        "" => num(v, 2),
        _ => format!("{} {unit}", num(v, 2)),
    }
}

impl Report {
    pub fn note(&mut self, line: impl Into<String>) {
        self.notes.push(line.into());
    }

    /// A measured figure, optionally beside a goal (`goal_text` describes it).
    #[allow(clippy::too_many_arguments)]
    pub fn value(
        &mut self,
        id: &str,
        section: &str,
        label: &str,
        value: f64,
        unit: &str,
        goal: Option<Goal>,
        goal_text: &str,
        note: &str,
    ) {
        let (verdict, goal_value) = match goal {
            Some(Goal::AtLeast(g)) => (if value >= g { "meets" } else { "misses" }, Some(g)),
            Some(Goal::AtMost(g)) => (if value <= g { "meets" } else { "misses" }, Some(g)),
            None if goal_text.is_empty() => ("info", None),
            None => ("info", None),
        };
        self.figures.push(Figure {
            id: id.into(),
            section: section.into(),
            label: label.into(),
            value: Some(value),
            unit: unit.into(),
            measured: show(value, unit),
            beside: goal_text.into(),
            verdict: verdict.into(),
            goal_value,
            note: note.into(),
        });
    }

    /// A reference rate the system cannot beat (raw gzip, raw sled, serde_json).
    pub fn limit(&mut self, id: &str, section: &str, label: &str, value: f64, unit: &str) {
        self.figures.push(Figure {
            id: id.into(),
            section: section.into(),
            label: label.into(),
            value: Some(value),
            unit: unit.into(),
            measured: show(value, unit),
            beside: "(limit it cannot beat)".into(),
            verdict: "limit".into(),
            goal_value: None,
            note: String::new(),
        });
    }

    /// A figure that could not be measured in this run, and why.
    pub fn not_measured(&mut self, id: &str, section: &str, label: &str, why: &str) {
        self.figures.push(Figure {
            id: id.into(),
            section: section.into(),
            label: label.into(),
            value: None,
            unit: String::new(),
            measured: "not measured".into(),
            beside: String::new(),
            verdict: "not measured".into(),
            goal_value: None,
            note: why.into(),
        });
    }

    /// The table, as printed.
    pub fn table(&self) -> String {
        let heads = ["figure", "measured", "limit / goal", "verdict"];
        let rows: Vec<[String; 4]> = self
            .figures
            .iter()
            .map(|f| {
                [
                    f.label.clone(),
                    f.measured.clone(),
                    f.beside.clone(),
                    if f.verdict == "not measured" {
                        format!("not measured: {}", f.note)
                    } else {
                        f.verdict.clone()
                    },
                ]
            })
            .collect();
        let mut w = heads.map(|h| h.len());
        for r in &rows {
            for i in 0..3 {
                w[i] = w[i].max(r[i].chars().count());
            }
        }
        let line = |cells: [&str; 4]| {
            format!(
                "| {:<w0$} | {:>w1$} | {:<w2$} | {} |",
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                w0 = w[0],
                w1 = w[1],
                w2 = w[2]
            )
        };
        let mut out = String::new();
        out += &line(heads);
        out.push('\n');
        out += &format!(
            "|{}|{}|{}|{}|\n",
            "-".repeat(w[0] + 2),
            "-".repeat(w[1] + 2),
            "-".repeat(w[2] + 2),
            "-".repeat(9)
        );
        let mut section = "";
        for (f, r) in self.figures.iter().zip(&rows) {
            if f.section != section {
                section = &f.section;
                out += &line([&format!("**{section}**"), "", "", ""]);
                out.push('\n');
            }
            out += &line([&r[0], &r[1], &r[2], &r[3]]);
            out.push('\n');
        }
        out
    }

    pub fn write_json(&self, path: &Path, meta: Value) -> anyhow::Result<()> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)?;
        }
        let mut doc = json!({
            "meta": meta,
            "notes": self.notes,
            "figures": self.figures,
        });
        for (k, v) in &self.extra {
            doc[k] = v.clone();
        }
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(num(1234567.0, 0), "1,234,567");
        assert_eq!(num(123.456, 1), "123.5");
        assert_eq!(num(-1000.0, 0), "-1,000");
    }
}
