//! Compact JSON text copied from a sender's JSON, without building a tree.
//!
//! PutAuditEvents carries each event's `requestParameters`, `responseElements` and
//! `additionalEventData` as JSON the record keeps. Parsing them into `serde_json::Value` only to
//! write them out again was most of the agent's CPU per application event (allocation per node,
//! an ordered map per object, the drop). [`compact_text`] writes the same bytes `serde_json`
//! would write for the parsed value, in one pass over the text where it can:
//!
//! - `serde_json` rewrites some escapes (`\u00e9` becomes `é`, `\/` becomes `/`) and some numbers
//!   (`1E2` becomes `100.0`, integers beyond 64 bits become floats); text holding a `\u` or `\/`
//!   escape, a fraction, an exponent, `-0` or an integer of 19 or more digits goes through
//!   `Value` instead, so the result is byte for byte what it was;
//! - whitespace outside strings is dropped, everything else is copied;
//! - text that is compact already (what a JSON library writes, so the usual case) is not
//!   copied at all: the result borrows it. Whether it is, and how deep it nests, is its
//!   [`Shape`], found by reading the text once ([`shape`]) or given by the caller that found
//!   it while reading the object around it ([`crate::json_split`], [`compact_text`]).
//!
//! One difference remains, by choice: a key repeated inside one object stays repeated, where a
//! `Value` keeps only the last. The record then holds what the application sent, and both copies
//! count toward the member's size cap.
//!
//! A `RawValue` is read without `serde_json`'s nesting limit, so [`compact_text`] applies one:
//! the caller's, chosen so the record holding the member can still be read.

use std::borrow::Cow;

/// Why a member cannot be copied.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    /// Nested deeper than the caller allows: `serde_json` refuses more than 127 levels in a
    /// whole document, and a `RawValue` is read without that limit, so it is kept here.
    #[error("nested more than {0} levels deep")]
    TooDeep(usize),
    /// Text `serde_json` reads as a value but cannot take (a lone surrogate, a number too large).
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

/// What one pass over the text found.
struct Scan {
    /// The copy without whitespace, when one was asked for.
    out: Option<Vec<u8>>,
    /// Whitespace outside strings: the text is not compact as it stands.
    spaced: bool,
    /// Something `serde_json` would write differently (see the module doc).
    rewrite: bool,
    depth: usize,
}

/// Reads `raw` (valid JSON, as a `RawValue` is), noting whether it holds whitespace outside
/// strings, whether a copy would differ from what `serde_json` writes and how deep it nests;
/// with `copy`, also copies it without that whitespace.
fn scan(raw: &str, copy: bool) -> Scan {
    let b = raw.as_bytes();
    // Bytes, not `&str` slices: on text that is not JSON a slice could end inside a character.
    let mut out = copy.then(|| Vec::with_capacity(b.len()));
    let mut push = |bytes: &[u8]| {
        if let Some(out) = out.as_mut() {
            out.extend_from_slice(bytes);
        }
    };
    let (mut spaced, mut rewrite, mut depth, mut level) = (false, false, 0usize, 0usize);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                spaced = true;
                i += 1;
            }
            b'"' => {
                // A string: copied up to its closing quote; escapes are checked, not decoded.
                let start = i;
                i += 1;
                while i < b.len() {
                    let Some(at) = b[i..].iter().position(|&c| c == b'"' || c == b'\\') else {
                        i = b.len();
                        break;
                    };
                    i += at;
                    if b[i] == b'"' {
                        i += 1;
                        break;
                    }
                    if matches!(b.get(i + 1), Some(b'u' | b'/')) {
                        rewrite = true;
                    }
                    i += 2;
                }
                push(&b[start..i.min(b.len())]);
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                if c == b'-' && b.get(i + 1) == Some(&b'0') {
                    rewrite = true;
                }
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                let digits = i - start - usize::from(c == b'-');
                if digits >= 19 || matches!(b.get(i), Some(b'.' | b'e' | b'E')) {
                    rewrite = true;
                }
                push(&b[start..i]);
            }
            _ => {
                // Structure and the literals true, false, null (ASCII: one byte is one char).
                match c {
                    b'[' | b'{' => {
                        level += 1;
                        depth = depth.max(level);
                    }
                    b']' | b'}' => level = level.saturating_sub(1),
                    _ => {}
                }
                push(&b[i..i + 1]);
                i += 1;
            }
        }
    }
    Scan {
        out,
        spaced,
        rewrite,
        depth,
    }
}

/// What a value's text looks like to the compaction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    /// Whitespace outside strings: the text is not compact as it stands.
    pub spaced: bool,
    /// Something `serde_json` would write differently (see the module doc).
    pub rewrite: bool,
    /// How deep objects and arrays nest (0 for a string, number or literal).
    pub depth: usize,
}

/// The [`Shape`] of `text` (valid JSON), found by reading it.
pub fn shape(text: &str) -> Shape {
    let s = scan(text, false);
    Shape {
        spaced: s.spaced,
        rewrite: s.rewrite,
        depth: s.depth,
    }
}

/// The compact text of a member, valid JSON `text` of the given [`Shape`] (from [`shape`], or
/// from [`crate::json_split`], which finds it while checking the text), nested at most
/// `max_depth` levels (objects and arrays): the text itself when it is compact already (the
/// usual case: senders write JSON with a library), else a copy without its whitespace, or the
/// value parsed and written again where a copy would differ.
pub fn compact_text(
    text: &str,
    shape: Shape,
    max_depth: usize,
) -> Result<Cow<'_, str>, CompactError> {
    if shape.depth > max_depth {
        return Err(CompactError::TooDeep(max_depth));
    }
    if shape.rewrite {
        return Ok(Cow::Owned(
            serde_json::from_str::<serde_json::Value>(text)?.to_string(),
        ));
    }
    if !shape.spaced {
        return Ok(Cow::Borrowed(text));
    }
    // Whole tokens of valid UTF-8 text, so the copy is UTF-8 (checked: this path is rare).
    let copy = scan(text, true).out.unwrap_or_default();
    Ok(Cow::Owned(String::from_utf8(copy).map_err(|e| {
        CompactError::Json(serde::de::Error::custom(e))
    })?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn compact_member(raw: &RawValue, max_depth: usize) -> Result<Cow<'_, str>, CompactError> {
        compact_text(raw.get(), shape(raw.get()), max_depth)
    }

    /// The copy of `raw`, or `None` where serde_json would write something else.
    fn compact(raw: &str) -> Option<String> {
        let s = scan(raw, true);
        (!s.rewrite).then(|| String::from_utf8(s.out.unwrap()).unwrap())
    }

    /// What the old path gave: parse into a `Value`, write it compactly.
    fn reparsed(raw: &str) -> String {
        serde_json::from_str::<serde_json::Value>(raw)
            .unwrap()
            .to_string()
    }

    #[test]
    fn copies_are_byte_for_byte_what_serde_json_writes() {
        let cases = [
            r#"{"a":1,"b":[true,false,null],"c":{"d":"e"}}"#,
            "{ \"a\" : 1 ,\n\t\"b\" :\r [ 1 , 2 ] }",
            r#"{"quote":"say \"hi\"","back":"a\\b","ctl":"\n\t\r\b\f"}"#,
            r#"{"unicode":"é ✓ 😀","neg":-12,"zero":0,"big":123456789012345678}"#,
            r#"["", " spaced  string ", {}, [], -1, 10]"#,
            r#""just a string""#,
            "  42  ",
            "null",
            r#"{"nested":{"deep":[[[{"x":[1,{"y":"z"}]}]]]}}"#,
        ];
        for raw in cases {
            assert_eq!(
                compact(raw).as_deref(),
                Some(reparsed(raw).as_str()),
                "{raw}"
            );
        }
    }

    #[test]
    fn text_serde_json_would_rewrite_goes_through_value() {
        let cases = [
            r#"{"a":"\u00e9"}"#,
            r#"{"a":"\/path"}"#,
            r#"{"a":1.5}"#,
            r#"{"a":1e3}"#,
            r#"{"a":2E-2}"#,
            r#"{"a":-0}"#,
            r#"{"a":12345678901234567890}"#,
            r#"{"a":-1234567890123456789}"#,
        ];
        for raw in cases {
            assert_eq!(compact(raw), None, "{raw} must not be copied");
            let r: Box<RawValue> = serde_json::from_str(raw).unwrap();
            assert_eq!(compact_member(&r, 10).unwrap(), reparsed(raw), "{raw}");
        }
    }

    /// Compact text is the member's own text (no copy); spaced text is copied without its
    /// spaces; both are what serde_json writes.
    #[test]
    fn compact_text_is_kept_and_spaced_text_copied() {
        for (text, borrowed) in [
            (r#"{"a":[1,true,null],"b":"x y"}"#, true),
            (r#"{ "a" : [1, true ,null] ,"b":"x y" }"#, false),
            ("\n[ ]\t", false),
            (r#""é""#, true),
        ] {
            let raw: &RawValue = serde_json::from_str(text).unwrap();
            let got = compact_member(raw, 10).unwrap();
            assert_eq!(matches!(got, Cow::Borrowed(_)), borrowed, "{text}");
            assert_eq!(got, reparsed(text), "{text}");
        }
    }

    #[test]
    fn depth_is_limited_and_bad_values_are_errors() {
        let nested = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let ok: Box<RawValue> = serde_json::from_str(&nested(5)).unwrap();
        assert_eq!(compact_member(&ok, 5).unwrap(), nested(5));
        // Deeper than allowed, whether it would be copied or written again.
        for text in [nested(6), nested(6).replace('1', "1.5")] {
            let deep: Box<RawValue> = serde_json::from_str(&text).unwrap();
            assert!(
                matches!(compact_member(&deep, 5), Err(CompactError::TooDeep(5))),
                "{text}"
            );
        }
        // A RawValue takes these; a Value does not.
        for text in [r#"{"a":"\ud800"}"#, r#"{"a":1e400}"#] {
            let bad: Box<RawValue> = serde_json::from_str(text).unwrap();
            assert!(
                matches!(compact_member(&bad, 5), Err(CompactError::Json(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn a_repeated_key_is_kept_as_sent() {
        // The one chosen difference (module doc): a Value would keep {"a":2}.
        assert_eq!(compact(r#"{"a":1, "a":2}"#).unwrap(), r#"{"a":1,"a":2}"#);
    }
}
