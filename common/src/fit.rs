//! Making a record fit the collector's limits, by cutting what is too long and saying so.
//!
//! Guarantee: after [`fit`], a record passes every size check of [`Record::validate`] (the
//! member caps [`MAX_SHORT_FIELD_BYTES`], [`MAX_PARAMETERS_BYTES`], [`MAX_ADDITIONAL_BYTES`])
//! and its compact JSON is at most [`MAX_RECORD_BYTES`] — the very constants the collector
//! checks, so a record the agent stores is never one the collector must refuse (a refused host
//! record would be an action missing from the trail). A record that already fits is left
//! untouched, byte for byte.
//!
//! Sizes are measured on the *serialized* JSON, after escaping: a `"` costs two bytes and a
//! control character six, so a cap on the raw text (what sources used to apply) lets a
//! quote-heavy command line through at twice its length.
//!
//! What is cut, in this order: string members with a byte cap (`userAgent`, `errorCode`,
//! `errorMessage`, `requestID`) to that cap; then the JSON members over their cap; then, while
//! the whole record is over its cap, the largest JSON member (unknown top-level members
//! included). Inside a JSON value the largest string is shortened first (to what is needed,
//! keeping at least [`MIN_STRING_KEEP`] bytes of each), then the largest array or object
//! loses its last elements. The identity, time, names and IDs of the record are never touched.
//!
//! What was cut is written into the record itself (see [`MARKER`]): a consumer sees that the
//! record is incomplete and which members lost content, and the record stays a valid
//! CloudTrail record (`additionalEventData` is free-form in CloudTrail, and its readers ignore
//! keys they do not know).

use serde_json::{Map, Value, json};

use crate::event::{
    MAX_ADDITIONAL_BYTES, MAX_PARAMETERS_BYTES, MAX_SHORT_FIELD_BYTES, Record, json_len,
};
use crate::wire::limits::MAX_RECORD_BYTES;

/// The key of the truncation marker: `additionalEventData.groundtrailTruncated` (or a
/// top-level member of that name when `additionalEventData` is not a JSON object):
/// `{"members": ["requestParameters", ...], "originalBytes": <compact JSON size before>}`.
pub const MARKER: &str = "groundtrailTruncated";
/// Room kept free for the marker in `additionalEventData` and in the record.
const MARKER_RESERVE: usize = 1024;
/// A string is never cut below this many (escaped) bytes while something else can give.
pub const MIN_STRING_KEEP: usize = 64;
/// At most this many member names are listed in the marker (then `"+N more"`).
const MARKER_MAX_NAMES: usize = 8;
/// Member names in the marker are cut to this many bytes.
const MARKER_NAME_BYTES: usize = 64;

/// What [`fit`] cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The members that lost content, in the order they were cut, without repeats.
    pub members: Vec<String>,
    /// The record's compact JSON size before.
    pub original_bytes: usize,
}

/// The compact JSON size of a whole record, counted without building it.
pub fn record_len(r: &Record) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Serializing a `Record` into a writer that never fails cannot fail.
    let _ = serde_json::to_writer(&mut c, r);
    c.0
}

/// Whether `r` already fits every limit (the cheap check before [`fit`]).
pub fn fits(r: &Record) -> bool {
    let short = [
        &r.user_agent,
        &r.error_code,
        &r.error_message,
        &r.request_id,
    ]
    .into_iter()
    .all(|s| s.as_ref().is_none_or(|s| s.len() <= MAX_SHORT_FIELD_BYTES));
    let sized = |v: &Option<Value>, limit: usize| v.as_ref().is_none_or(|v| json_len(v) <= limit);
    short
        && sized(&r.request_parameters, MAX_PARAMETERS_BYTES)
        && sized(&r.response_elements, MAX_PARAMETERS_BYTES)
        && sized(&r.service_event_details, MAX_PARAMETERS_BYTES)
        && sized(&r.additional_event_data, MAX_ADDITIONAL_BYTES)
        && sized(&r.edge_device_details, MAX_ADDITIONAL_BYTES)
        && record_len(r) <= MAX_RECORD_BYTES
}

/// Cuts `r` down to the collector's limits and marks it; `None` when it already fit (then it
/// is unchanged).
pub fn fit(r: &mut Record) -> Option<Cut> {
    if fits(r) {
        return None;
    }
    let original_bytes = record_len(r);
    let mut cut: Vec<String> = Vec::new();

    for (name, field) in [
        ("userAgent", &mut r.user_agent),
        ("errorCode", &mut r.error_code),
        ("errorMessage", &mut r.error_message),
        ("requestID", &mut r.request_id),
    ] {
        if let Some(s) = field
            && s.len() > MAX_SHORT_FIELD_BYTES
        {
            let mut end = MAX_SHORT_FIELD_BYTES;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
            note(&mut cut, name);
        }
    }
    for (name, slot, limit) in [
        (
            "requestParameters",
            &mut r.request_parameters,
            MAX_PARAMETERS_BYTES,
        ),
        (
            "responseElements",
            &mut r.response_elements,
            MAX_PARAMETERS_BYTES,
        ),
        (
            "serviceEventDetails",
            &mut r.service_event_details,
            MAX_PARAMETERS_BYTES,
        ),
        (
            "edgeDeviceDetails",
            &mut r.edge_device_details,
            MAX_ADDITIONAL_BYTES,
        ),
    ] {
        if let Some(v) = slot
            && json_len(v) > limit
        {
            shrink_value(v, limit);
            note(&mut cut, name);
        }
    }

    // The whole record, leaving room for the marker.
    let budget = MAX_RECORD_BYTES - MARKER_RESERVE;
    let mut size = record_len(r);
    while size > budget {
        let Some((name, have)) = largest_member(r) else {
            break;
        };
        if have <= 2 {
            break;
        }
        let target = have.saturating_sub(size - budget);
        if let Some(v) = member_mut(r, &name) {
            shrink_value(v, target);
        }
        note(&mut cut, &name);
        let after = record_len(r);
        if after >= size {
            // Nothing gave (cannot happen with the members above); stop rather than spin.
            break;
        }
        size = after;
    }

    // additionalEventData last: its limit leaves room for the marker it is about to carry.
    let ad_limit = MAX_ADDITIONAL_BYTES - MARKER_RESERVE;
    if let Some(v) = &mut r.additional_event_data {
        let n = json_len(v);
        if n > MAX_ADDITIONAL_BYTES || (!cut.is_empty() && n > ad_limit) {
            shrink_value(v, ad_limit);
            note(&mut cut, "additionalEventData");
        }
    }
    if cut.is_empty() {
        return None;
    }
    mark(r, &cut, original_bytes);
    Some(Cut {
        members: cut,
        original_bytes,
    })
}

/// Adds `name` to the list of cut members, once.
fn note(cut: &mut Vec<String>, name: &str) {
    if !cut.iter().any(|c| c == name) {
        cut.push(name.to_string());
    }
}

/// Writes the marker into `r`.
fn mark(r: &mut Record, cut: &[String], original_bytes: usize) {
    let mut names: Vec<Value> = cut
        .iter()
        .take(MARKER_MAX_NAMES)
        .map(|n| {
            let mut end = n.len().min(MARKER_NAME_BYTES);
            while !n.is_char_boundary(end) {
                end -= 1;
            }
            Value::String(n[..end].to_string())
        })
        .collect();
    if cut.len() > MARKER_MAX_NAMES {
        names.push(json!(format!("+{} more", cut.len() - MARKER_MAX_NAMES)));
    }
    let marker = json!({"members": names, "originalBytes": original_bytes});
    match &mut r.additional_event_data {
        Some(Value::Object(m)) => {
            m.insert(MARKER.into(), marker);
        }
        None | Some(Value::Null) => {
            let mut m = Map::new();
            m.insert(MARKER.into(), marker);
            r.additional_event_data = Some(Value::Object(m));
        }
        Some(_) => {
            r.extra.insert(MARKER.into(), marker);
        }
    }
}

/// The largest JSON member that may give bytes, by compact size.
fn largest_member(r: &Record) -> Option<(String, usize)> {
    let mut best: Option<(String, usize)> = None;
    let mut consider = |name: &str, v: &Option<Value>| {
        if let Some(v) = v {
            let n = json_len(v);
            if best.as_ref().is_none_or(|(_, b)| n > *b) {
                best = Some((name.to_string(), n));
            }
        }
    };
    consider("requestParameters", &r.request_parameters);
    consider("responseElements", &r.response_elements);
    consider("serviceEventDetails", &r.service_event_details);
    consider("additionalEventData", &r.additional_event_data);
    consider("edgeDeviceDetails", &r.edge_device_details);
    consider("eventContext", &r.event_context);
    consider("insightDetails", &r.insight_details);
    for (k, v) in &r.extra {
        let n = json_len(v) + k.len();
        if best.as_ref().is_none_or(|(_, b)| n > *b) {
            best = Some((k.clone(), n));
        }
    }
    best
}

fn member_mut<'a>(r: &'a mut Record, name: &str) -> Option<&'a mut Value> {
    match name {
        "requestParameters" => r.request_parameters.as_mut(),
        "responseElements" => r.response_elements.as_mut(),
        "serviceEventDetails" => r.service_event_details.as_mut(),
        "additionalEventData" => r.additional_event_data.as_mut(),
        "edgeDeviceDetails" => r.edge_device_details.as_mut(),
        "eventContext" => r.event_context.as_mut(),
        "insightDetails" => r.insight_details.as_mut(),
        other => r.extra.get_mut(other),
    }
}

/// The escaped size of one character inside a JSON string (serde_json's escaping).
fn escaped_char_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\u{8}' | '\u{c}' | '\n' | '\r' | '\t' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// The escaped size of `s` inside a JSON string, quotes not counted.
pub fn escaped_len(s: &str) -> usize {
    s.chars().map(escaped_char_len).sum()
}

/// Cuts `s` (on a character boundary) so that its escaped size is at most `max`.
pub fn cut_escaped(s: &mut String, max: usize) {
    let mut n = 0;
    let mut end = 0;
    for (i, c) in s.char_indices() {
        let l = escaped_char_len(c);
        if n + l > max {
            s.truncate(end);
            return;
        }
        n += l;
        end = i + c.len_utf8();
    }
}

/// A step into a JSON value.
#[derive(Debug, Clone)]
enum Seg {
    Index(usize),
    Key(String),
}

fn at_path<'a>(mut v: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    for s in path {
        v = match (v, s) {
            (Value::Array(a), Seg::Index(i)) => a.get_mut(*i)?,
            (Value::Object(m), Seg::Key(k)) => m.get_mut(k)?,
            _ => return None,
        };
    }
    Some(v)
}

/// The path and size of the value in `v` (any depth) that `size` rates largest; values it
/// rates `None` are passed over (their children are still looked at). Ties keep the first.
fn largest_by(v: &Value, size: &impl Fn(&Value) -> Option<usize>) -> Option<(Vec<Seg>, usize)> {
    fn walk(
        v: &Value,
        size: &impl Fn(&Value) -> Option<usize>,
        path: &mut Vec<Seg>,
        best: &mut Option<(Vec<Seg>, usize)>,
    ) {
        if let Some(n) = size(v)
            && best.as_ref().is_none_or(|(_, b)| n > *b)
        {
            *best = Some((path.clone(), n));
        }
        match v {
            Value::Array(a) => {
                for (i, e) in a.iter().enumerate() {
                    path.push(Seg::Index(i));
                    walk(e, size, path, best);
                    path.pop();
                }
            }
            Value::Object(m) => {
                for (k, e) in m {
                    path.push(Seg::Key(k.clone()));
                    walk(e, size, path, best);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut best = None;
    walk(v, size, &mut Vec::new(), &mut best);
    best
}

/// The path and escaped size of the largest string in `v` that is longer than
/// [`MIN_STRING_KEEP`].
fn largest_string(v: &Value) -> Option<(Vec<Seg>, usize)> {
    largest_by(v, &|v| {
        let Value::String(s) = v else { return None };
        // Cheap upper bound first: most strings are short.
        if s.len() * 6 <= MIN_STRING_KEEP {
            return None;
        }
        Some(escaped_len(s)).filter(|n| *n > MIN_STRING_KEEP)
    })
}

/// The path and size of the largest array or object in `v` with more than one element.
fn largest_container(v: &Value) -> Option<(Vec<Seg>, usize)> {
    largest_by(v, &|v| {
        let len = match v {
            Value::Array(a) => a.len(),
            Value::Object(m) => m.len(),
            _ => return None,
        };
        (len > 1).then(|| json_len(v))
    })
}

/// Shrinks `v` until its compact JSON is at most `limit` bytes (see the module docs for the
/// order); as a last resort `v` becomes `null`.
pub fn shrink_value(v: &mut Value, limit: usize) {
    loop {
        let size = json_len(v);
        if size <= limit {
            return;
        }
        let excess = size - limit;
        if let Some((path, have)) = largest_string(v) {
            let keep = have.saturating_sub(excess).max(MIN_STRING_KEEP);
            if let Some(Value::String(s)) = at_path(v, &path) {
                cut_escaped(s, keep);
            }
            continue;
        }
        if let Some((path, _)) = largest_container(v)
            && let Some(c) = at_path(v, &path)
        {
            // Drop trailing elements until the excess is covered (keeping the first).
            let mut freed = 0;
            match c {
                Value::Array(a) => {
                    while a.len() > 1 && freed < excess {
                        let e = a.pop().expect("len > 1");
                        freed += json_len(&e) + 1;
                    }
                }
                Value::Object(m) => {
                    while m.len() > 1 && freed < excess {
                        let Some(k) = m.keys().next_back().cloned() else {
                            break;
                        };
                        if let Some(e) = m.remove(&k) {
                            freed += json_len(&e) + escaped_len(&k) + 4;
                        }
                    }
                }
                _ => {}
            }
            continue;
        }
        // One scalar or a chain of one-element containers: nothing left to cut from.
        *v = Value::Null;
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::UserIdentity;

    fn record() -> Record {
        let mut r = Record::new(
            "exec.onprem.internal",
            "RunCommand",
            "AwsApiCall",
            "us-east-1",
            "123456789012",
        );
        r.user_identity = Some(UserIdentity {
            identity_type: Some("IAMUser".into()),
            user_name: Some("alice".into()),
            ..UserIdentity::default()
        });
        r
    }

    fn assert_valid_and_within(r: &Record) {
        r.validate().unwrap();
        assert!(
            r.to_json().len() <= MAX_RECORD_BYTES,
            "{}",
            r.to_json().len()
        );
        assert_eq!(record_len(r), r.to_json().len());
    }

    #[test]
    fn a_record_that_fits_is_untouched() {
        let mut r = record();
        r.request_parameters = Some(json!({"command": "ls -l", "argv": ["ls", "-l"]}));
        let before = r.to_json();
        assert_eq!(fit(&mut r), None);
        assert_eq!(r.to_json(), before);
    }

    #[test]
    fn escaping_counts_quotes_backslashes_and_controls() {
        assert_eq!(escaped_len("ab"), 2);
        assert_eq!(escaped_len("\"\\\n"), 6);
        assert_eq!(escaped_len("\u{1}"), 6);
        assert_eq!(escaped_len("é"), 2);
        for s in ["a\"b\\c\u{1}é\tz", "\"\"\"\"", "plain"] {
            let v = Value::String(s.to_string());
            assert_eq!(escaped_len(s) + 2, json_len(&v));
            for max in 0..=escaped_len(s) {
                let mut t = s.to_string();
                cut_escaped(&mut t, max);
                assert!(escaped_len(&t) <= max);
                assert!(s.starts_with(&t));
            }
        }
    }

    /// The auditd case: 64 arguments of 1 KiB of quotes each. Their raw text is 64 KiB, under
    /// the 100 KiB cap; escaped it is twice that.
    #[test]
    fn quote_heavy_arguments_are_cut_on_their_escaped_size_and_marked() {
        let mut r = record();
        let arg = "\"".repeat(1024);
        let argv: Vec<String> = std::iter::repeat_n(arg.clone(), 64).collect();
        let raw: usize = argv.iter().map(String::len).sum();
        assert!(raw < MAX_PARAMETERS_BYTES);
        r.request_parameters = Some(json!({"command": argv.join(" "), "argv": argv, "cwd": "/"}));
        assert!(r.validate().is_err(), "over the cap before");
        let cut = fit(&mut r).expect("cut");
        assert_eq!(cut.members, vec!["requestParameters".to_string()]);
        assert_valid_and_within(&r);
        let p = r.request_parameters.as_ref().unwrap();
        // Small members are kept whole; the big ones keep their beginning.
        assert_eq!(p["cwd"], "/");
        assert!(arg.starts_with(p["argv"][0].as_str().unwrap()));
        assert!(!p["command"].as_str().unwrap().is_empty());
        let marker = &r.additional_event_data.as_ref().unwrap()[MARKER];
        assert_eq!(marker["members"], json!(["requestParameters"]));
        assert_eq!(marker["originalBytes"], cut.original_bytes);
        // Close to the cap, not cut to nothing.
        assert!(json_len(p) > MAX_PARAMETERS_BYTES - 4096);
    }

    #[test]
    fn short_members_and_existing_additional_data() {
        let mut r = record();
        r.user_agent = Some("é".repeat(MAX_SHORT_FIELD_BYTES));
        r.error_message = Some("x".repeat(5000));
        r.additional_event_data = Some(json!({"pid": 7, "blob": "\u{1}".repeat(10_000)}));
        let cut = fit(&mut r).unwrap();
        assert_eq!(
            cut.members,
            ["userAgent", "errorMessage", "additionalEventData"]
        );
        assert_valid_and_within(&r);
        let ad = r.additional_event_data.as_ref().unwrap();
        assert_eq!(ad["pid"], 7);
        assert!(ad[MARKER].is_object());
    }

    #[test]
    fn the_whole_record_is_brought_under_its_cap() {
        let mut r = record();
        // Each member under its own cap, together over the record's.
        let big = |c: &str| json!({"v": c.repeat(MAX_PARAMETERS_BYTES - 100)});
        r.request_parameters = Some(big("a"));
        r.response_elements = Some(big("b"));
        r.service_event_details = Some(big("c"));
        r.extra.insert("someFutureField".into(), big("d"));
        r.validate().unwrap();
        let cut = fit(&mut r).unwrap();
        assert_valid_and_within(&r);
        assert!(!cut.members.is_empty());
        // A non-object additionalEventData: the marker goes to the top level.
        let mut r = record();
        r.additional_event_data = Some(json!("a string"));
        r.request_parameters = Some(json!(["x".repeat(MAX_PARAMETERS_BYTES)]));
        fit(&mut r).unwrap();
        assert_valid_and_within(&r);
        assert!(r.extra[MARKER].is_object());
        assert_eq!(r.additional_event_data, Some(json!("a string")));
    }

    #[test]
    fn many_small_elements_and_long_keys() {
        let mut r = record();
        let many: Vec<u32> = (0..100_000).collect();
        r.request_parameters = Some(json!({"n": many}));
        fit(&mut r).unwrap();
        assert_valid_and_within(&r);
        let mut m = Map::new();
        for i in 0..5000 {
            m.insert(format!("{i:040}"), json!(i));
        }
        let mut r = record();
        r.response_elements = Some(Value::Object(m));
        fit(&mut r).unwrap();
        assert_valid_and_within(&r);
        let mut r = record();
        let mut m = Map::new();
        m.insert("k".repeat(MAX_PARAMETERS_BYTES), json!(1));
        r.request_parameters = Some(Value::Object(m));
        fit(&mut r).unwrap();
        assert_valid_and_within(&r);
        assert_eq!(r.request_parameters, Some(Value::Null));
    }
}
