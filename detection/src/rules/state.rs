//! The persisted form of window state.
//!
//! Key: the rule id, a NUL byte, the group value (empty for rules without a group field).
//! Rule ids cannot contain NUL, so keys are unique per (rule, group) and stable across
//! restarts and versions. Value: JSON with the rule's definition fingerprint, so state saved
//! under another definition of the same id is not resumed (the window would count something
//! else).

use super::window::Group;
use serde::{Deserialize, Serialize};

/// FNV-1a, 64 bits: a fingerprint that stays the same across builds and Rust versions (std's
/// hasher promises neither).
pub(crate) fn fingerprint(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The key of the engine's clock (the newest eventTime seen, i64 big-endian ms). It starts
/// with NUL, which no rule id can be empty before, so it cannot be a (rule, group) key.
pub(crate) const CLOCK_KEY: &[u8] = b"\0clock";

pub(crate) fn key(rule_id: &str, group: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(rule_id.len() + 1 + group.len());
    k.extend_from_slice(rule_id.as_bytes());
    k.push(0);
    k.extend_from_slice(group.as_bytes());
    k
}

/// `(rule id, group)` of a key, if it is one.
pub(crate) fn split_key(k: &[u8]) -> Option<(&str, &str)> {
    let nul = k.iter().position(|b| *b == 0)?;
    Some((
        std::str::from_utf8(&k[..nul]).ok()?,
        std::str::from_utf8(&k[nul + 1..]).ok()?,
    ))
}

#[derive(Serialize, Deserialize)]
struct Stored {
    /// Fingerprint of the rule's definition, hex.
    def: String,
    #[serde(flatten)]
    group: Group,
}

pub(crate) fn encode(fp: u64, g: &Group) -> Vec<u8> {
    serde_json::to_vec(&Stored {
        def: format!("{fp:016x}"),
        group: g.clone(),
    })
    .expect("window state serializes")
}

/// The group, if the value is well formed and was saved under definition `fp`.
pub(crate) fn decode(fp: u64, v: &[u8]) -> Option<Group> {
    let s: Stored = serde_json::from_slice(v).ok()?;
    (s.def == format!("{fp:016x}")).then_some(s.group)
}
