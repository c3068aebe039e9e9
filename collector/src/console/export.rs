//! Downloads of the current query: CSV (one row per event) and JSON (CloudTrail's log file
//! shape, `{"Records": [...]}`, so the tools that read log files read it too).
//!
//! Guarantees (tested below):
//! - CSV follows RFC 4180: a field holding a comma, a quote, CR or LF is quoted, quotes
//!   doubled; lines end with CRLF. A spreadsheet must not run a value as a formula, so a field
//!   starting with `=`, `+`, `-`, `@`, TAB or CR gets a leading `'` (OWASP's advice for CSV
//!   injection): a record's fields are attacker-controlled text.
//! - An export walks the query's pages until [`MAX_ROWS`] rows or [`MAX_SCANNED`] events
//!   read; beyond that it is cut, and says so (`X-Groundtrail-Truncated`), rather than holding
//!   a connection for minutes.

use serde_json::Value;

use super::query::{self, Filters, QueryError, Row};
use crate::history::History;

/// Rows in one export at most.
pub const MAX_ROWS: usize = 10_000;
/// Events read for one export at most.
pub const MAX_SCANNED: usize = 1_000_000;

/// The CSV columns, in order.
pub const COLUMNS: [&str; 12] = [
    "eventTime",
    "eventName",
    "eventSource",
    "username",
    "sourceIPAddress",
    "errorCode",
    "readOnly",
    "awsRegion",
    "recipientAccountId",
    "accessKeyId",
    "resources",
    "eventID",
];

/// The rows of a query, for an export: (rows, truncated).
pub fn collect(
    history: &History,
    filters: &Filters,
    now: u64,
    retention: u64,
) -> Result<(Vec<Row>, bool), QueryError> {
    let mut rows = Vec::new();
    let mut token: Option<String> = None;
    let mut scanned = 0;
    loop {
        let left = MAX_ROWS - rows.len();
        let p = query::page(
            history,
            filters,
            left.min(query::MAX_PAGE),
            token.as_deref(),
            query::DEFAULT_BUDGET,
            now,
            retention,
        )?;
        scanned += p.scanned;
        rows.extend(p.rows);
        match p.next {
            None => return Ok((rows, false)),
            Some(_) if rows.len() >= MAX_ROWS || scanned >= MAX_SCANNED => {
                return Ok((rows, true));
            }
            Some(t) => token = Some(t),
        }
    }
}

/// One CSV field, quoted where needed (see the module's guarantees).
pub fn field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn line(out: &mut String, fields: &[String]) {
    let parts: Vec<String> = fields.iter().map(|f| field(f)).collect();
    out.push_str(&parts.join(","));
    out.push_str("\r\n");
}

/// The CSV values of one row, in [`COLUMNS`] order.
pub fn values(r: &Row) -> Vec<String> {
    let s = &r.summary;
    let o = |v: &Option<String>| v.clone().unwrap_or_default();
    let resources = s
        .resources
        .iter()
        .map(|(t, n)| {
            format!(
                "{} {}",
                t.as_deref().unwrap_or(""),
                n.as_deref().unwrap_or("")
            )
        })
        .map(|x| x.trim().to_string())
        .collect::<Vec<_>>()
        .join("; ");
    vec![
        chrono::DateTime::from_timestamp(s.event_time as i64, 0)
            .map(groundtrail_common::time::json_time)
            .unwrap_or_default(),
        o(&s.event_name),
        o(&s.event_source),
        o(&s.username),
        o(&r.extra.source_ip),
        o(&r.extra.error_code),
        o(&s.read_only),
        o(&s.region),
        o(&r.extra.account),
        o(&s.access_key_id),
        resources,
        s.event_id.clone(),
    ]
}

/// The CSV of `rows`, with a header line.
pub fn csv(rows: &[Row]) -> String {
    let mut out = String::new();
    line(
        &mut out,
        &COLUMNS.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
    );
    for r in rows {
        line(&mut out, &values(r));
    }
    out
}

/// `{"Records": [...]}` of `rows`' records, as stored.
pub fn json(rows: &[Row]) -> Vec<u8> {
    let records: Vec<Value> = rows
        .iter()
        .map(|r| serde_json::from_slice(&r.json).unwrap_or(Value::Null))
        .collect();
    serde_json::to_vec_pretty(&serde_json::json!({ "Records": records })).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_where_needed() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field(""), "");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
        assert_eq!(field("cr\rhere"), "\"cr\rhere\"");
        assert_eq!(field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(field("+1"), "'+1");
        assert_eq!(field("@cmd"), "'@cmd");
        assert_eq!(field("-2,3"), "\"'-2,3\"");
        assert_eq!(field("a-b"), "a-b");
    }

    /// A minimal RFC 4180 reader: what a spreadsheet does with our output.
    fn read_csv(text: &str) -> Vec<Vec<String>> {
        let mut rows = vec![];
        let mut row = vec![];
        let mut f = String::new();
        let mut quoted = false;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match (quoted, c) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    f.push('"');
                    chars.next();
                }
                (true, '"') => quoted = false,
                (true, c) => f.push(c),
                (false, '"') => quoted = true,
                (false, ',') => row.push(std::mem::take(&mut f)),
                (false, '\r') if chars.peek() == Some(&'\n') => {
                    chars.next();
                    row.push(std::mem::take(&mut f));
                    rows.push(std::mem::take(&mut row));
                }
                (false, c) => f.push(c),
            }
        }
        rows
    }

    #[test]
    fn csv_round_trips_awkward_values() {
        let nasty = ["a,b", "q\"uote", "multi\r\nline", "ünïcode", " spaced "];
        let rows: Vec<Row> = nasty
            .iter()
            .enumerate()
            .map(|(i, v)| Row {
                summary: crate::history::Summary {
                    event_id: format!("id-{i}"),
                    event_name: Some(v.to_string()),
                    username: Some(format!("{v}{v}")),
                    event_time: 1_800_000_000,
                    resources: vec![(Some("T".into()), Some(v.to_string()))],
                    ..Default::default()
                },
                extra: Default::default(),
                json: b"{}".to_vec(),
            })
            .collect();
        let back = read_csv(&csv(&rows));
        assert_eq!(back.len(), rows.len() + 1);
        assert_eq!(
            back[0],
            COLUMNS.iter().map(|c| c.to_string()).collect::<Vec<_>>()
        );
        for (i, v) in nasty.iter().enumerate() {
            assert_eq!(back[i + 1].len(), COLUMNS.len());
            assert_eq!(back[i + 1][0], "2027-01-15T08:00:00Z");
            assert_eq!(back[i + 1][1], *v);
            assert_eq!(back[i + 1][3], format!("{v}{v}"));
            assert_eq!(back[i + 1][10], format!("T {v}").trim());
            assert_eq!(back[i + 1][11], format!("id-{i}"));
        }
    }
}
