//! The bytes of one log entry: one commit (an agent's batch, or records the collector adds),
//! with the agent states that commit moved.
//!
//! | bytes | meaning |
//! |---|---|
//! | 1 | format version, `1` |
//! | 8 | received at, unix seconds, u64 big-endian (the dedup window counts from it) |
//! | 4 | number of agent states, u32 big-endian; then each: name length (u16), name, state length (u32), [`AgentState`] JSON |
//! | rest | the records: each one's compact JSON followed by `\n` (JSON escapes newlines inside strings, so `\n` only ends records) |
//!
//! The records are stored exactly as they will appear in the log file, so a reload needs no
//! re-serialization and delivery stays byte-exact.

use super::AgentState;

const VERSION: u8 = 1;

/// A decoded entry. `records` borrows from the entry's bytes.
#[derive(Debug)]
pub struct Frame<'a> {
    pub received_at: u64,
    pub agents: Vec<(String, AgentState)>,
    /// The record lines, in commit order (without their `\n`).
    pub records: Vec<&'a [u8]>,
}

/// Encodes a commit: `records` is the already-joined block of record lines, each ending in
/// `\n`.
pub fn encode(received_at: u64, agents: &[(String, AgentState)], records: &[u8]) -> Vec<u8> {
    let mut out = start(received_at, agents, records.len());
    out.extend_from_slice(records);
    out
}

/// The entry's bytes up to its records, with room for `records_len` more: the committer
/// appends each record line (and its `\n`) in place, without a second copy of the batch.
pub fn start(received_at: u64, agents: &[(String, AgentState)], records_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(records_len + 64 + agents.len() * 256);
    out.push(VERSION);
    out.extend_from_slice(&received_at.to_be_bytes());
    out.extend_from_slice(&(agents.len() as u32).to_be_bytes());
    for (name, state) in agents {
        let name = &name.as_bytes()[..name.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name);
        // A struct of strings and numbers always serializes.
        let json = serde_json::to_vec(state).unwrap_or_default();
        out.extend_from_slice(&(json.len() as u32).to_be_bytes());
        out.extend_from_slice(&json);
    }
    out
}

/// Decodes an entry; `Err` names what is wrong (the entry passed the log's CRC, so this means
/// a different format, not disk damage).
pub fn decode(bytes: &[u8]) -> Result<Frame<'_>, String> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], String> {
        let s = bytes
            .get(at..at + n)
            .ok_or_else(|| format!("entry ends at byte {} of {}", bytes.len(), at + n))?;
        at += n;
        Ok(s)
    };
    let version = take(1)?[0];
    if version != VERSION {
        return Err(format!("unknown entry format {version}"));
    }
    let received_at = u64::from_be_bytes(take(8)?.try_into().unwrap_or_default());
    let n = u32::from_be_bytes(take(4)?.try_into().unwrap_or_default());
    let mut agents = Vec::new();
    for _ in 0..n {
        let len = u16::from_be_bytes(take(2)?.try_into().unwrap_or_default()) as usize;
        let name = String::from_utf8_lossy(take(len)?).into_owned();
        let len = u32::from_be_bytes(take(4)?.try_into().unwrap_or_default()) as usize;
        let state: AgentState =
            serde_json::from_slice(take(len)?).map_err(|e| format!("agent {name}: {e}"))?;
        agents.push((name, state));
    }
    let rest = &bytes[at..];
    let records = rest
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    Ok(Frame {
        received_at,
        agents,
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_agents_and_records() {
        let state = AgentState {
            last_seq: Some(7),
            last_seen: "2026-01-01T00:00:00Z".into(),
            account: "1".into(),
            region: "r".into(),
            silent_reported: false,
        };
        let bytes = encode(
            42,
            &[("web-1".into(), state.clone())],
            b"{\"a\":1}\n{\"b\":\"x\\ny\"}\n",
        );
        let f = decode(&bytes).unwrap();
        assert_eq!(f.received_at, 42);
        assert_eq!(f.agents, vec![("web-1".to_string(), state)]);
        assert_eq!(
            f.records,
            vec![&b"{\"a\":1}"[..], &b"{\"b\":\"x\\ny\"}"[..]]
        );
        let empty = encode(1, &[], b"");
        assert!(decode(&empty).unwrap().records.is_empty());
        assert!(decode(&bytes[..10]).is_err());
        assert!(decode(b"\x09rest").unwrap_err().contains("format 9"));
    }
}
