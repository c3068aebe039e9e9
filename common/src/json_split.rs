//! A JSON object's members in one pass over its text, checked as `serde_json` checks JSON.
//!
//! PutAuditEvents reads each event's `eventData` (and its `userIdentity`) member by member,
//! keeping most values as text ([`crate::compact_json`]). Reading the members with
//! `serde_json`'s `RawValue` and then looking at each value again for its shape walked the same
//! text twice; [`split_object`] does both in one pass: each member's value text and its
//! [`Shape`], which is all the compaction needs.
//!
//! # What it accepts
//!
//! Only text `serde_json` reads as the same object, so that nothing is accepted here that the
//! `serde_json` path refused: the grammar of RFC 8259 (whitespace, structure, strings without
//! raw control characters, the escapes `\" \\ \/ \b \f \n \r \t \uXXXX`, numbers, `true`,
//! `false`, `null`) and nothing after the object but whitespace. A `\u` escape in a value is
//! checked as `serde_json`'s raw read checks it (four hex digits) and marks the value for
//! rewriting; whether it makes a character is decided where the value is decoded, on either
//! path. It gives up (`None`) where the caller needs `serde_json`'s reading or its messages: an
//! escape in a member name (the name would need decoding), a value nested deeper than the
//! caller allows, and every error. The caller then reads the text with `serde_json`, which
//! decides and names the problem; so the result is the same either way, only slower.
//! `split_agrees_with_serde_json` holds the two together on valid and broken text.

use crate::compact_json::Shape;

/// One member of an object: its name (as written: it holds no escape) and its value's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member<'a> {
    pub name: &'a str,
    /// The value's text, from its first byte to its last (no surrounding whitespace).
    pub text: &'a str,
    pub shape: Shape,
}

/// The members of the object `text`, in their order (a repeated name appears each time), each
/// value nested at most `max_depth` levels; `None` where `serde_json` should read the text
/// instead (see the module doc).
pub fn split_object(text: &str, max_depth: usize) -> Option<Vec<Member<'_>>> {
    let mut p = Reader {
        b: text.as_bytes(),
        i: 0,
    };
    let mut members = Vec::with_capacity(16);
    p.ws();
    p.eat(b'{')?;
    p.ws();
    if !p.eat_if(b'}') {
        loop {
            p.eat(b'"')?;
            let name_start = p.i;
            if p.string()?.0 {
                return None; // an escaped name: serde_json decodes it
            }
            let name = &text[name_start..p.i - 1];
            p.ws();
            p.eat(b':')?;
            p.ws();
            let start = p.i;
            let mut shape = Shape::default();
            p.value(&mut shape, 0, max_depth)?;
            members.push(Member {
                name,
                text: &text[start..p.i],
                shape,
            });
            p.ws();
            if p.eat_if(b'}') {
                break;
            }
            p.eat(b',')?;
            p.ws();
        }
    }
    p.ws();
    (p.i == p.b.len()).then_some(members)
}

/// A cursor over the text. Every method returns `None` on anything it does not accept.
struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.eat_if(c).then_some(())
    }

    fn eat_if(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        self.i += usize::from(hit);
        hit
    }

    /// Skips whitespace; whether there was any.
    fn ws(&mut self) -> bool {
        let start = self.i;
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
        self.i > start
    }

    /// The rest of a string whose opening quote was read: whether it held an escape, and
    /// whether one is written back differently by serde_json (`\/` as `/`, `\u00e9` as `é`).
    fn string(&mut self) -> Option<(bool, bool)> {
        let (mut escaped, mut rewrite) = (false, false);
        loop {
            // Plain characters: anything but the quote, the backslash and control characters;
            // eight at a time while none is one of those (as serde_json skips them).
            while let Some(word) = self.b.get(self.i..self.i + 8) {
                let w = u64::from_le_bytes(word.try_into().expect("eight bytes"));
                if has_special(w) {
                    break;
                }
                self.i += 8;
            }
            while let Some(&c) = self.b.get(self.i) {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.i += 1;
            }
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some((escaped, rewrite));
                }
                b'\\' => {
                    escaped = true;
                    match self.b.get(self.i + 1)? {
                        b'/' => {
                            rewrite = true;
                            self.i += 2;
                        }
                        b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                        // Four hex digits, as serde_json's raw read checks them; whether they
                        // make a character (surrogates) is decided where the value is decoded,
                        // on either path (the compaction's `Value`, a string member's read).
                        b'u' => {
                            let hex = self.b.get(self.i + 2..self.i + 6)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            rewrite = true;
                            self.i += 6;
                        }
                        _ => return None,
                    }
                }
                _ => return None, // a raw control character
            }
        }
    }

    /// One value at `level` (0 for a member's own value), its shape noted in `shape`.
    fn value(&mut self, shape: &mut Shape, level: usize, max_depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => {
                self.i += 1;
                let (_, rewrite) = self.string()?;
                shape.rewrite |= rewrite;
                Some(())
            }
            b'{' | b'[' => {
                let close = if self.peek() == Some(b'{') {
                    b'}'
                } else {
                    b']'
                };
                let level = level + 1;
                if level > max_depth {
                    return None;
                }
                shape.depth = shape.depth.max(level);
                self.i += 1;
                shape.spaced |= self.ws();
                if self.eat_if(close) {
                    return Some(());
                }
                loop {
                    if close == b'}' {
                        self.eat(b'"')?;
                        let (_, rewrite) = self.string()?;
                        shape.rewrite |= rewrite;
                        shape.spaced |= self.ws();
                        self.eat(b':')?;
                        shape.spaced |= self.ws();
                    }
                    self.value(shape, level, max_depth)?;
                    shape.spaced |= self.ws();
                    if self.eat_if(close) {
                        return Some(());
                    }
                    self.eat(b',')?;
                    shape.spaced |= self.ws();
                }
            }
            b'-' | b'0'..=b'9' => self.number(shape),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.b[self.i..]
            .starts_with(word)
            .then(|| self.i += word.len())
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, noting what serde_json writes
    /// differently (as [`crate::compact_json`] does): `-0`, 19 or more digits, a fraction or an
    /// exponent.
    fn number(&mut self, shape: &mut Shape) -> Option<()> {
        let negative = self.eat_if(b'-');
        let int_start = self.i;
        match self.peek()? {
            b'0' => {
                self.i += 1;
                if negative {
                    shape.rewrite = true;
                }
            }
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.i - int_start >= 19 {
            shape.rewrite = true;
        }
        if self.eat_if(b'.') {
            shape.rewrite = true;
            self.one_or_more_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            shape.rewrite = true;
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.one_or_more_digits()?;
        }
        // A number runs into the next token only where JSON would not allow it (`01`, `1x`):
        // the caller's structure check refuses what follows.
        Some(())
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
    }

    fn one_or_more_digits(&mut self) -> Option<()> {
        let start = self.i;
        self.digits();
        (self.i > start).then_some(())
    }
}

/// Whether one of the eight bytes of `w` is `"`, `\\` or below 0x20 (the classic "has zero byte"
/// and "has byte less than" word tricks; exact, no false positives or negatives).
fn has_special(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let quote = zero(w ^ (ONES * u64::from(b'"')));
    let backslash = zero(w ^ (ONES * u64::from(b'\\')));
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
    (quote | backslash | control) != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compact_json;
    use serde_json::value::RawValue;

    /// What the serde_json path gives: each member's name and value text, and the shape the
    /// compaction finds by scanning the text.
    fn by_serde(text: &str) -> Option<Vec<(String, String, Shape)>> {
        // Read as a sequence of entries, so that repeats and order are kept.
        struct Entries<'a>(Vec<(String, &'a RawValue)>);
        impl<'de> serde::Deserialize<'de> for Entries<'de> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = Entries<'de>;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("an object")
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut m: A,
                    ) -> Result<Entries<'de>, A::Error> {
                        let mut v = Vec::new();
                        while let Some(e) = m.next_entry::<String, &'de RawValue>()? {
                            v.push(e);
                        }
                        Ok(Entries(v))
                    }
                }
                d.deserialize_map(V)
            }
        }
        let entries = serde_json::from_str::<Entries>(text).ok()?.0;
        Some(
            entries
                .into_iter()
                .map(|(k, v)| (k, v.get().to_string(), compact_json::shape(v.get())))
                .collect(),
        )
    }

    fn by_split(text: &str) -> Option<Vec<(String, String, Shape)>> {
        split_object(text, 128).map(|m| {
            m.into_iter()
                .map(|m| (m.name.to_string(), m.text.to_string(), m.shape))
                .collect()
        })
    }

    /// Wherever the split answers, serde_json reads the same members with the same texts and
    /// shapes; it never accepts what serde_json refuses. Checked on valid objects and on every
    /// change of one byte (to each of the 256 values), every insertion of one and every
    /// deletion of one.
    #[test]
    fn split_agrees_with_serde_json() {
        let valid = [
            r#"{}"#,
            r#" { } "#,
            r#"{"":1}"#,
            r#"{"a":1,"b":"x","c":[1,2,{"d":null}],"e":{"f":[true,false]}}"#,
            r#"{ "a" : [ 1 , 2 ] , "b" :{ } }"#,
            r#"{"n":-0,"m":-0.5,"o":1e5,"p":1E-2,"q":1e+5,"r":0,"s":-12}"#,
            r#"{"i":123456789012345678,"j":1234567890123456789,"k":-123456789012345678}"#,
            r#"{"s":"tab\t nl\n q\" b\\ sl\/ bs\\/","k":"é 漢","c":"\b\f\r"}"#,
            r#"{"u":"\u00e9 \ud800","v":{"k\/":1,"k\u0041":2}}"#,
            r#"{"long":"abcdefgh€ijklmnop漢qrstuvwx","w":"12345678\"12345678"}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"deep":[[[[[[{"x":[[]]}]]]]]]}"#,
            "{\"a\":\"x\"}\n",
        ];
        let agree = |t: &str, what: &str| {
            if let Some(got) = by_split(t) {
                assert_eq!(Some(got), by_serde(t), "{what}: {t:?}");
            }
        };
        let mut checked = 0;
        for text in valid {
            let want = by_serde(text).expect("valid");
            assert_eq!(by_split(text), Some(want), "{text}");
            let bytes = text.as_bytes();
            for i in 0..=bytes.len() {
                for b in 0..=255u8 {
                    let mut inserted = bytes.to_vec();
                    inserted.insert(i, b);
                    if let Ok(t) = std::str::from_utf8(&inserted) {
                        agree(t, "inserted");
                        checked += 1;
                    }
                    if i < bytes.len() {
                        let mut changed = bytes.to_vec();
                        changed[i] = b;
                        if let Ok(t) = std::str::from_utf8(&changed) {
                            agree(t, "changed");
                            checked += 1;
                        }
                    }
                }
                if i < bytes.len() {
                    let mut deleted = bytes.to_vec();
                    deleted.remove(i);
                    if let Ok(t) = std::str::from_utf8(&deleted) {
                        agree(t, "deleted");
                    }
                }
            }
        }
        assert!(checked > 100_000, "{checked}");
    }

    /// The word test finds exactly the bytes the byte loop stops at, wherever they sit.
    #[test]
    fn the_word_test_is_the_byte_test() {
        for special in 0u8..=255 {
            for at in 0..8 {
                let mut word = [b'a'; 8];
                word[at] = special;
                let want = special == b'"' || special == b'\\' || special < 0x20;
                assert_eq!(
                    has_special(u64::from_le_bytes(word)),
                    want,
                    "{special} at {at}"
                );
            }
        }
        // Bytes around the thresholds next to each other (borrows between lanes).
        for a in [0x1f, 0x20, 0x21, 0x22, 0x5c, 0x5d, 0x80, 0xff, 0x00] {
            for b in [0x1f, 0x20, 0x21, 0x22, 0x5c, 0x5d, 0x80, 0xff, 0x00] {
                let word = [a, b, a, b, b, a, b, a];
                let want = word.iter().any(|&c| c == b'"' || c == b'\\' || c < 0x20);
                assert_eq!(has_special(u64::from_le_bytes(word)), want, "{word:?}");
            }
        }
    }

    /// What the split leaves to serde_json: escaped names, `\u`, too deep, not an object.
    #[test]
    fn it_gives_up_where_serde_json_decides() {
        for text in [
            r#"{"a\"b":1}"#,
            r#"{"\u0061":1}"#,
            r#"{"a":"\u00g9"}"#,
            r#"[1]"#,
            r#""x""#,
            r#"{"a":1}x"#,
            r#"{"a":01}"#,
            r#"{"a":1,}"#,
            "{\"a\":\"\u{1}\"}",
        ] {
            assert_eq!(by_split(text), None, "{text}");
        }
        assert!(split_object(r#"{"a":[[1]]}"#, 2).is_some());
        assert!(split_object(r#"{"a":[[[1]]]}"#, 2).is_none());
    }
}
