//! Helpers shared by the buffer's tests (and `buffer_tools`' tests): one identity, options,
//! records and checkpoints, so each file's tests read as the guarantee they check.

use std::path::Path;
use std::time::Duration;

use groundtrail_common::Record;
use serde_json::{Value, json};

use super::{Appended, Buffer, BufferOptions, Entry, FullPolicy, OpenReport};
use crate::host_identity::HostIdentity;
use crate::sink::Checkpoint;

/// The identity the buffer tests (and `buffer_tools`' tests) write records as.
pub(crate) fn id() -> HostIdentity {
    HostIdentity {
        host: "test-host".into(),
        account_id: "123456789012".into(),
        region: "us-east-1".into(),
        domain: "onprem.internal".into(),
        partition: "aws".into(),
    }
}

pub(crate) fn opts(max_bytes: u64, full_policy: FullPolicy) -> BufferOptions {
    BufferOptions {
        max_bytes,
        full_policy,
        flush_delay: Duration::ZERO,
        ..BufferOptions::default()
    }
}

pub(crate) fn open(dir: &Path, max: u64, policy: FullPolicy) -> (Buffer, OpenReport) {
    open_with(dir, opts(max, policy))
}

/// Opens the buffer in `dir`, waiting while a `Buffer` this process has just dropped still
/// holds the directory's lock (see [`while_locked`]).
pub(crate) fn open_with(dir: &Path, opts: BufferOptions) -> (Buffer, OpenReport) {
    open_as(dir, opts, id())
}

/// [`open_with`] writing the agent's own records as `host` (for tests outside the buffer).
pub(crate) fn open_as(dir: &Path, opts: BufferOptions, host: HostIdentity) -> (Buffer, OpenReport) {
    while_locked(
        || Buffer::open(dir, opts.clone(), host.clone()),
        |e| matches!(e, super::BufferError::Locked { .. }),
    )
    .unwrap()
}

/// Retries `open` (up to 10 s) while its error is `locked`. sled lets go of its lock only when
/// the last handle to its files goes, and the I/O thread that completed the last flush holds one
/// for a moment after the flush has returned; a test that reopens a buffer it has just dropped
/// can find the lock still held (seen on a loaded 2-core machine). A lock that stays is still an
/// error.
pub(crate) fn while_locked<T, E>(
    mut open: impl FnMut() -> Result<T, E>,
    locked: impl Fn(&E) -> bool,
) -> Result<T, E> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match open() {
            Err(e) if locked(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

pub(crate) fn rec(i: u64) -> Record {
    id().agent_record("TestEvent", json!({ "i": i }))
}

pub(crate) fn json_of(e: &Entry) -> Value {
    serde_json::from_slice(&e.json).unwrap()
}

pub(crate) fn names(entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| json_of(e)["eventName"].as_str().unwrap().to_string())
        .collect()
}

pub(crate) fn cp(source: &str, state: &str) -> Checkpoint {
    Checkpoint {
        source: source.into(),
        state: state.as_bytes().to_vec(),
    }
}

pub(crate) fn all(b: &Buffer) -> Vec<Entry> {
    b.read_from(0, usize::MAX, usize::MAX).unwrap()
}

pub(crate) fn fill(b: &Buffer) -> u64 {
    let mut n = 0;
    loop {
        match b.try_append(&[rec(n)], None).unwrap() {
            Appended::Stored(_) => n += 1,
            _ => return n,
        }
    }
}
