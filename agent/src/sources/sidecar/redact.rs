//! Redaction and capping of what the sidecar copies into a record.
//!
//! A trail is read by many people and kept for years; a password that slipped into
//! `requestParameters` would be disclosed to all of them. So every field name and header name is
//! checked before its value is recorded, and a secret's value is replaced by CloudTrail's own
//! marker, [`REDACTED`] (the string AWS writes for a user name it must not show).
//!
//! Two lists decide:
//! - built-in patterns (on unless `redact_defaults = false`): a name is secret if, lowercased and
//!   without `-`, `_` and `.`, it *contains* one of `password`, `passwd`, `passphrase`, `secret`,
//!   `token`, `authorization`, `apikey`, `accesskey`, `cookie`, `credential`, `privatekey`,
//!   `sessionid` or `signature` — so `client_secret`, `X-Api-Key`, `refresh_token` and
//!   `Set-Cookie` are all caught;
//! - the operator's `redact_fields` / `redact_headers`, matched *exactly* after the same
//!   normalisation (case folded, separators dropped: `card_number`, `Card-Number` and
//!   `cardNumber` are one name).
//!
//! Redaction over-approximates on purpose (`tokenCount` is hidden too): a hidden harmless value
//! costs little, a recorded secret cannot be taken back.

use serde_json::{Map, Value, json};

/// What a redacted value becomes (CloudTrail's own marker for hidden values).
pub const REDACTED: &str = "HIDDEN_DUE_TO_SECURITY_REASONS";

/// Substrings that make a (normalised) name secret.
pub const DEFAULT_PATTERNS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "authorization",
    "apikey",
    "accesskey",
    "cookie",
    "credential",
    "privatekey",
    "sessionid",
    "signature",
];

/// Decides which names are secret.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    defaults: bool,
    fields: Vec<String>,
    headers: Vec<String>,
}

/// Lowercase, without `-`, `_`, `.` and spaces.
pub fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '-' | '_' | '.' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

impl Redactor {
    /// A redactor with the built-in patterns (when `defaults`) plus exact names.
    pub fn new(defaults: bool, fields: &[String], headers: &[String]) -> Redactor {
        Redactor {
            defaults,
            fields: fields.iter().map(|f| normalize(f)).collect(),
            headers: headers.iter().map(|f| normalize(f)).collect(),
        }
    }

    fn by_default(&self, n: &str) -> bool {
        self.defaults && DEFAULT_PATTERNS.iter().any(|p| n.contains(p))
    }

    /// Whether a body or query field of this name is secret.
    pub fn is_secret_field(&self, name: &str) -> bool {
        let n = normalize(name);
        self.by_default(&n) || self.fields.contains(&n)
    }

    /// Whether a header of this name is secret (header list, then field list).
    pub fn is_secret_header(&self, name: &str) -> bool {
        let n = normalize(name);
        self.by_default(&n) || self.headers.contains(&n) || self.fields.contains(&n)
    }

    /// Replaces, in place and at every depth, the value of each secret member by [`REDACTED`].
    pub fn redact(&self, v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, val) in map.iter_mut() {
                    if self.is_secret_field(k) {
                        *val = Value::String(REDACTED.into());
                    } else {
                        self.redact(val);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.redact(i)),
            _ => {}
        }
    }
}

/// The serialized size of `v`.
pub fn json_len(v: &Value) -> usize {
    serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX)
}

/// `v` if its JSON fits in `limit` bytes; else the cap marker, which says that the content was
/// omitted, how large it was, and the limit (`{"omitted": true, "originalSize": n, "limit": l}`).
pub fn cap(v: Value, limit: usize) -> Value {
    let n = json_len(&v);
    if n <= limit {
        v
    } else {
        omitted(n as u64, limit, "over the size limit")
    }
}

/// The cap marker.
pub fn omitted(size: u64, limit: usize, reason: &str) -> Value {
    json!({ "omitted": true, "originalSize": size, "limit": limit, "reason": reason })
}

/// Parses a URL query into an object: repeated keys become arrays, a key without `=` is `""`.
pub fn query_object(query: &str) -> Map<String, Value> {
    let mut out = Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = groundtrail_common::percent::decode_query(k);
        let v = Value::String(groundtrail_common::percent::decode_query(v));
        match out.get_mut(&k) {
            Some(Value::Array(items)) => items.push(v),
            Some(prev) => {
                let first = prev.take();
                *prev = Value::Array(vec![first, v]);
            }
            None => {
                out.insert(k, v);
            }
        }
    }
    out
}

/// Truncates to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s[..cut].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_patterns_catch_common_secrets_at_any_depth() {
        let r = Redactor::new(true, &["card_number".into()], &[]);
        let mut v = json!({
            "user": "alice",
            "password": "hunter2",
            "nested": {"client_secret": "s", "refreshToken": "t", "list": [{"API-Key": "k", "ok": 1}]},
            "CardNumber": "4111",
            "amount": 12
        });
        r.redact(&mut v);
        assert_eq!(v["user"], "alice");
        assert_eq!(v["password"], REDACTED);
        assert_eq!(v["nested"]["client_secret"], REDACTED);
        assert_eq!(v["nested"]["refreshToken"], REDACTED);
        assert_eq!(v["nested"]["list"][0]["API-Key"], REDACTED);
        assert_eq!(v["nested"]["list"][0]["ok"], 1);
        assert_eq!(v["CardNumber"], REDACTED);
        assert_eq!(v["amount"], 12);
        for h in [
            "Authorization",
            "Cookie",
            "Set-Cookie",
            "X-Api-Key",
            "X-Auth-Token",
            "Proxy-Authorization",
        ] {
            assert!(r.is_secret_header(h), "{h}");
        }
        assert!(!r.is_secret_header("Content-Type"));
    }

    #[test]
    fn defaults_can_be_turned_off_and_extended() {
        let r = Redactor::new(false, &[], &["x-tenant".into()]);
        assert!(!r.is_secret_field("password"));
        assert!(r.is_secret_header("X-Tenant"));
        assert!(
            !r.is_secret_field("x-tenant"),
            "header list does not apply to fields"
        );
    }

    #[test]
    fn cap_marks_what_it_omits() {
        let v = json!({"a": "x".repeat(100)});
        assert_eq!(cap(v.clone(), 1000), v);
        let c = cap(v, 50);
        assert_eq!(c["omitted"], true);
        assert_eq!(c["limit"], 50);
        assert!(c["originalSize"].as_u64().unwrap() > 100);
    }

    #[test]
    fn queries() {
        let q = query_object("a=1&b=x+y&a=2&c&d=%2F&a=3");
        assert_eq!(
            Value::Object(q),
            json!({"a": ["1", "2", "3"], "b": "x y", "c": "", "d": "/"})
        );
        assert_eq!(truncate("héllo", 2), "h");
    }
}
