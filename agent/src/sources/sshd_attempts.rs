//! One failed ssh attempt, one record.
//!
//! sshd (and, in the old format, pam) log one failed attempt on several lines of the same
//! process: `Invalid user X from IP`, then `Failed password for invalid user X from IP …`; or
//! `sshd(pam_unix)[pid]: authentication failure; …`, then `sshd[pid]: Failed password …`.
//! Each of those lines, taken alone, is a failed `ConsoleLogin`; counting each would inflate
//! every brute-force count (the loghub OpenSSH sample: 637 failure records for 523 attempts).
//!
//! Guarantee: per sshd process (pid), the line that *opens* an attempt (`Invalid user`, the old
//! pam failure) is held until what follows says what it was:
//!
//! - a `Failed <method>` (or `message repeated N times: [ Failed …]`) of the same pid is that
//!   attempt: one record, sshd's (it has the method and the port), with the eventID of the
//!   opening line;
//! - a line that ends the connection (`Connection closed`, `Disconnected`, `Received
//!   disconnect`, `Timeout before authentication`, `fatal:`, an `Accepted`, …), a new opening
//!   line of the same pid, a line logged more than [`GRACE_SECS`] later (sshd's
//!   `LoginGraceTime` has closed the connection by then), more than [`MAX_OPEN`] attempts open,
//!   or the end of the file (rotation, truncation) -> the opening line's own record: an
//!   invalid user that never tried a password is still one failed attempt;
//! - `Failed none` (the client asking which methods exist) is part of the attempt, not one.
//!
//! Further `Failed` lines of the same connection are further attempts, one record each.
//!
//! Crash consistency: while an attempt is open, [`LineHandler::pending_from`] holds the file's
//! checkpoint back to its opening line, so an agent that stops (or crashes) with an attempt
//! open re-reads from that line after a restart and rebuilds the same attempt. Every record's
//! eventID is derived from host, file and the offset of the line it is keyed on (the opening
//! line for an attempt, else its own line), never from timing: a re-read yields the same IDs
//! whatever the order of commits, and the collector drops the repeats. The quiet-input flush of
//! the follower does not close young attempts (it would split an attempt whose `Failed` comes
//! a few seconds after `Invalid user`, the usual pam delay); they wait for their pid's next
//! line, which sshd always writes when the connection ends.

use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use groundtrail_common::Record;

use super::auth_log::AuthLogParser;
use super::{Parsed, SourceStats};
use crate::sources::tail::{LineHandler, LineRef};

/// An attempt whose opening line is older than this (in log time) is closed: sshd's
/// `LoginGraceTime` (120 s by default) has ended the connection.
pub const GRACE_SECS: i64 = 150;
/// At most this many attempts are held open at once (the oldest is closed first).
pub const MAX_OPEN: usize = 1024;

/// A line's part in an sshd connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opens a failed attempt that another line may complete (`Invalid user`, old pam failure).
    Opens,
    /// A credential tried and refused (`Failed <method>`, not `none`).
    Attempt,
    /// The connection ends (or succeeds): an open attempt has no more lines to come.
    Ends,
    /// Anything else.
    Other,
}

/// The facts of one line the merge needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SshdLine {
    /// The line's pid, if it has one.
    pub pid: Option<u32>,
    /// [`role`] of the line (`Other` for every program but sshd).
    pub role: Role,
    /// The line's time.
    pub time: DateTime<Utc>,
}

/// What `program`'s `msg` is in an sshd connection.
pub fn role(program: &str, msg: &str) -> Role {
    if program == "sshd(pam_unix)" {
        return if msg.starts_with("authentication failure;") {
            Role::Opens
        } else if msg.starts_with("session opened") {
            Role::Ends
        } else {
            Role::Other
        };
    }
    if !matches!(program, "sshd" | "sshd-session" | "sshd-auth") {
        return Role::Other;
    }
    let inner = match msg.strip_prefix("message repeated ") {
        Some(rest) => rest
            .split_once(" times: [")
            .map(|(_, r)| r.trim_start())
            .unwrap_or(""),
        None => msg,
    };
    if inner.starts_with("Invalid user ") {
        return Role::Opens;
    }
    if inner.starts_with("Failed none ") {
        return Role::Other;
    }
    if inner.starts_with("Failed ") {
        return Role::Attempt;
    }
    const ENDS: &[&str] = &[
        "Accepted ",
        "Connection closed",
        "Connection reset",
        "Disconnected from",
        "Received disconnect",
        "Disconnecting",
        "Timeout before authentication",
        "fatal:",
        "error: maximum authentication attempts",
        "maximum authentication attempts",
        "Too many authentication failures",
        "Bad protocol version",
    ];
    if ENDS.iter().any(|p| inner.starts_with(p))
        && !inner.starts_with("Accepted key ")
        && !inner.starts_with("Accepted certificate ")
    {
        return Role::Ends;
    }
    Role::Other
}

/// An attempt held open.
struct Open {
    pid: u32,
    /// Offset of the opening line: the checkpoint is held here, the eventID comes from it.
    offset: u64,
    time: DateTime<Utc>,
    /// The opening line's own record, with its eventID set.
    record: Box<Record>,
}

/// The auth log's [`LineHandler`]: [`AuthLogParser`] per line, with the merge above.
pub struct AttemptHandler {
    parser: AuthLogParser,
    stats: &'static SourceStats,
    open: Vec<Open>,
}

impl AttemptHandler {
    pub fn new(parser: AuthLogParser, stats: &'static SourceStats) -> AttemptHandler {
        AttemptHandler {
            parser,
            stats,
            open: Vec::new(),
        }
    }

    /// Emits the held record of the attempt at `i` on its own.
    fn close(&mut self, i: usize, out: &mut Vec<Record>) {
        let o = self.open.remove(i);
        self.stats.records.fetch_add(1, Ordering::Relaxed);
        out.push(*o.record);
    }

    fn close_where(&mut self, out: &mut Vec<Record>, pred: impl Fn(&Open) -> bool) {
        let mut i = 0;
        while i < self.open.len() {
            if pred(&self.open[i]) {
                self.close(i, out);
            } else {
                i += 1;
            }
        }
    }
}

impl LineHandler for AttemptHandler {
    fn line(&mut self, line: &[u8], at: LineRef<'_>, out: &mut Vec<Record>) {
        let text = String::from_utf8_lossy(line);
        let (parsed, sshd) = self.parser.parse_with_role(&text);
        let mut parsed = match parsed {
            Parsed::Record(mut r) => {
                if r.event_id.is_empty() {
                    r.event_id = at.event_id();
                }
                Parsed::Record(r)
            }
            other => other,
        };
        // Attempts whose connection must be over by now (log time).
        if let Some(t) = sshd.map(|s| s.time) {
            self.close_where(out, |o| (t - o.time).num_seconds() > GRACE_SECS);
        }
        let (Some(s), Some(pid)) = (sshd, sshd.and_then(|s| s.pid)) else {
            self.stats.count(&parsed);
            if let Parsed::Record(r) = parsed {
                out.push(*r);
            }
            return;
        };
        let held = self.open.iter().position(|o| o.pid == pid);
        match (s.role, held) {
            (Role::Attempt, Some(i)) => {
                if let Parsed::Record(r) = &mut parsed {
                    // The attempt the opening line announced: one record, keyed on that line.
                    let o = self.open.remove(i);
                    r.event_id = crate::sources::tail::event_id(at.host, at.file, o.offset);
                    // The opening line made no record of its own.
                    self.stats.ignored.fetch_add(1, Ordering::Relaxed);
                } else {
                    // A `Failed` line we could not read: keep the opening line's record.
                    self.close(i, out);
                }
            }
            (Role::Opens | Role::Ends, Some(i)) => self.close(i, out),
            _ => {}
        }
        if s.role == Role::Opens
            && let Parsed::Record(r) = parsed
        {
            if self.open.len() >= MAX_OPEN {
                self.close(0, out);
            }
            self.open.push(Open {
                pid,
                offset: at.offset,
                time: s.time,
                record: r,
            });
            return;
        }
        self.stats.count(&parsed);
        if let Parsed::Record(r) = parsed {
            out.push(*r);
        }
    }

    fn pending_from(&self) -> Option<u64> {
        self.open.iter().map(|o| o.offset).min()
    }

    /// The file ends (rotation, truncation): every attempt still open is closed.
    fn flush(&mut self, out: &mut Vec<Record>) {
        self.close_where(out, |_| true);
    }

    /// Quiet input closes nothing (see the module docs): the checkpoint stays held.
    fn idle(&mut self, _out: &mut Vec<Record>) {}

    fn reset(&mut self) {
        self.open.clear();
    }
}

#[cfg(test)]
mod tests;
