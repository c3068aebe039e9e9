//! The systemd journal, through `journalctl -o json --follow`.
//!
//! For hosts without an auth log (journal-only distributions, containers with a journal), and
//! for systemd unit events.
//!
//! # Which fields are believed
//!
//! Any local process can write a journal entry with any *user* field (`logger --journald`,
//! `sd_journal_send`): `SYSLOG_IDENTIFIER`, `UNIT`, `JOB_TYPE`, `MESSAGE_ID` prove nothing. The
//! fields with a leading underscore are set by journald itself from the sender's socket
//! credentials and `/proc` (`_PID`, `_UID` — the effective uid —, `_COMM`, `_TRANSPORT`,
//! `_SYSTEMD_UNIT`) and cannot be forged by the sender. So each kind of event is accepted only
//! from the sender that really writes it:
//!
//! - systemd unit jobs and failures (`UNIT`, `JOB_TYPE`/`JOB_RESULT`, `MESSAGE_ID` d9b373ed…,
//!   "Failed with result") of the system manager: only from `_PID=1`, `_UID=0`,
//!   `_COMM=systemd`, `_TRANSPORT=journal` -> `StartService`, `StopService`,
//!   `RestartService`, `ReloadService` (failed jobs carry an error), `ServiceFailed` (an
//!   `AwsServiceEvent`). Those of a user's own manager (`USER_UNIT`) only from `_COMM=systemd`
//!   running as that user in `_SYSTEMD_UNIT=user@<uid>.service`; the user is the principal, so
//!   such an entry can never speak for anyone but the uid that sent it.
//! - sshd, sudo, su, login and the account tools -> the auth-log parsers
//!   ([`super::auth_log::parse_message`]), so the same message becomes the same record. The
//!   program is `_COMM` (journald's, not the sender's `SYSLOG_IDENTIFIER`), and the sender must
//!   run as root (`_UID=0`: sshd's monitor, set-uid sudo/su/passwd, the account tools all do)
//!   over `syslog`, `journal` or `stdout`. When a short-lived tool exited before journald read
//!   its `/proc` entry, `_COMM` is missing; then `SYSLOG_IDENTIFIER` names the program, still only
//!   for a sender with `_UID=0` (root can write anything anyway).
//! - everything else, forged entries included, is ignored (counted as `ignored`).
//!
//! The checkpoint is the journal cursor of the last entry handled (`--after-cursor`); the
//! eventID derives from host and cursor, so an entry read twice has one ID. sshd's two lines of
//! one failed attempt (`Invalid user` then `Failed password for invalid user`) are not merged
//! here: this source is meant for hosts without an auth log, and the merge of
//! [`super::sshd_attempts`] needs the file follower's held-back checkpoint.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use groundtrail_common::Record;
use groundtrail_common::shutdown::Shutdown;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use super::{Env, JournaldConfig, Parsed, SourceStats};
use crate::sink::{Checkpoint, RecordSink, SinkError};

/// Counters of this source.
pub static STATS: SourceStats = SourceStats::new();

/// Checkpoint key of this source.
pub const SOURCE_KEY: &str = "journald";

/// systemd's "unit failed with result" catalog id.
pub const MESSAGE_UNIT_FAILURE_RESULT: &str = "d9b373ed55a64feb8242e02dbe79a49c";

/// What the journald source stores as its checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalCheckpoint {
    pub cursor: String,
}

/// A journal field as text: strings as is, byte arrays (non-UTF-8 messages) decoded lossily.
fn field(entry: &Value, key: &str) -> Option<String> {
    match entry.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) => {
            let bytes: Vec<u8> = a
                .iter()
                .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect();
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One journal entry (a line of `journalctl -o json`) -> what it is. Pure.
pub fn parse_entry(env: &Env, config: &JournaldConfig, entry: &Value) -> Parsed {
    let Some(cursor) = field(entry, "__CURSOR") else {
        return Parsed::Malformed;
    };
    let Some(usec) = field(entry, "__REALTIME_TIMESTAMP").and_then(|t| t.parse::<i64>().ok())
    else {
        return Parsed::Malformed;
    };
    let Some(time) = Utc.timestamp_opt(usec / 1_000_000, 0).single() else {
        return Parsed::Malformed;
    };
    let message = field(entry, "MESSAGE").unwrap_or_default();
    let trusted = Trusted::of(entry);
    let parsed = if let Some(user_manager) = trusted.systemd_manager() {
        if config.units {
            unit_event(env, entry, time, &message, user_manager)
        } else {
            Parsed::Ignored
        }
    } else if config.auth {
        match trusted.auth_program(entry) {
            Some(program) => {
                super::auth_log::parse_message(env, &program, trusted.pid, &message, time)
            }
            None => Parsed::Ignored,
        }
    } else {
        Parsed::Ignored
    };
    match parsed {
        Parsed::Record(mut r) => {
            r.event_id = uuid::Uuid::new_v5(
                &crate::sources::tail::EVENT_ID_NAMESPACE,
                format!("{}|journal|{cursor}", env.host.host).as_bytes(),
            )
            .to_string();
            Parsed::Record(r)
        }
        other => other,
    }
}

/// The fields journald sets itself (see the module docs): what an entry's sender really is.
#[derive(Debug, Default)]
struct Trusted {
    pid: Option<u32>,
    uid: Option<u32>,
    comm: Option<String>,
    transport: Option<String>,
    systemd_unit: Option<String>,
}

/// The programs whose messages go to the auth-log parsers.
const AUTH_PROGRAMS: &[&str] = &[
    "sshd",
    "sshd-session",
    "sshd-auth",
    "sudo",
    "su",
    "login",
    "useradd",
    "userdel",
    "usermod",
    "groupadd",
    "groupdel",
    "groupmod",
    "gpasswd",
    "passwd",
    "chpasswd",
    "chage",
    "chfn",
    "chsh",
    "newusers",
];

impl Trusted {
    fn of(entry: &Value) -> Trusted {
        let num = |k: &str| field(entry, k).and_then(|v| v.parse::<u32>().ok());
        Trusted {
            pid: num("_PID"),
            uid: num("_UID"),
            comm: field(entry, "_COMM"),
            transport: field(entry, "_TRANSPORT"),
            systemd_unit: field(entry, "_SYSTEMD_UNIT"),
        }
    }

    /// `Some(None)`: written by the system manager (PID 1); `Some(Some(uid))`: by the user
    /// manager of `uid`; `None`: by anyone else, whatever it calls itself.
    fn systemd_manager(&self) -> Option<Option<u32>> {
        if self.comm.as_deref() != Some("systemd") || self.transport.as_deref() != Some("journal") {
            return None;
        }
        match (self.pid, self.uid) {
            (Some(1), Some(0)) => Some(None),
            (Some(_), Some(uid))
                if self.systemd_unit.as_deref() == Some(&format!("user@{uid}.service")) =>
            {
                Some(Some(uid))
            }
            _ => None,
        }
    }

    /// The auth program that really sent `entry`, if it is one and ran as root.
    fn auth_program(&self, entry: &Value) -> Option<String> {
        if self.uid != Some(0)
            || !matches!(
                self.transport.as_deref(),
                Some("syslog" | "journal" | "stdout")
            )
        {
            return None;
        }
        let program = match &self.comm {
            Some(c) => c.clone(),
            None => field(entry, "SYSLOG_IDENTIFIER")?,
        };
        AUTH_PROGRAMS.contains(&program.as_str()).then_some(program)
    }
}

/// A unit event of the system manager (`user_manager` `None`) or of the user manager of a uid.
fn unit_event(
    env: &Env,
    entry: &Value,
    time: chrono::DateTime<Utc>,
    message: &str,
    user_manager: Option<u32>,
) -> Parsed {
    // The system manager reports system units in `UNIT`; a user manager its own in `USER_UNIT`.
    let unit = match user_manager {
        None => field(entry, "UNIT"),
        Some(_) => field(entry, "USER_UNIT"),
    };
    let Some(unit) = unit else {
        return Parsed::Ignored;
    };
    let ids = &env.host;
    let identity = match user_manager {
        // A user's own service manager: the user acted.
        Some(uid) => ids.user(&env.passwd.name_or_uid(uid)),
        None => ids.service("systemd"),
    };
    let (name, event_type, error) =
        if field(entry, "MESSAGE_ID").as_deref() == Some(MESSAGE_UNIT_FAILURE_RESULT) {
            let result = field(entry, "UNIT_RESULT").unwrap_or_else(|| "failed".into());
            ("ServiceFailed", "AwsServiceEvent", Some(result))
        } else {
            let (Some(job), Some(result)) = (field(entry, "JOB_TYPE"), field(entry, "JOB_RESULT"))
            else {
                // "Starting …" (job begins), "Deactivated successfully", and the rest.
                return Parsed::Ignored;
            };
            let name = match job.as_str() {
                "start" => "StartService",
                "stop" => "StopService",
                "restart" | "try-restart" => "RestartService",
                "reload" | "reload-or-start" => "ReloadService",
                _ => return Parsed::Ignored,
            };
            let error = (result != "done").then_some(result);
            (name, "AwsApiCall", error)
        };
    let mut r = env.record("systemd", name, event_type, time);
    r.user_identity = Some(identity);
    r.user_agent = Some("systemd".into());
    r.request_parameters = Some(json!({"unit": unit}));
    if let Some(e) = error {
        r.error_code = Some(if event_type == "AwsServiceEvent" {
            "ServiceFailed".to_string()
        } else {
            format!("Job{}", capitalize(&e))
        });
        r.error_message = Some(super::truncate(message, 1024));
        r.service_event_details = (event_type == "AwsServiceEvent").then(|| json!({"result": e}));
    }
    r.resources = Some(vec![ids.service_resource(&unit)]);
    Parsed::Record(Box::new(r))
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The `journalctl` arguments for a start at `cursor` (or per `from_start`).
pub fn journalctl_args(config: &JournaldConfig, cursor: Option<&str>) -> Vec<String> {
    let mut a = vec![
        "-o".to_string(),
        "json".into(),
        "--follow".into(),
        "--no-pager".into(),
    ];
    match cursor {
        Some(c) => a.push(format!("--after-cursor={c}")),
        None if config.from_start => a.push("--lines=all".into()),
        None => a.push("--lines=0".into()),
    }
    a
}

/// Runs journalctl (restarting it when it exits) until shutdown.
pub fn spawn(
    config: JournaldConfig,
    env: Arc<Env>,
    sink: Arc<dyn RecordSink>,
    mut shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut warned = false;
        loop {
            let cursor = sink
                .checkpoint(SOURCE_KEY)
                .and_then(|b| serde_json::from_slice::<JournalCheckpoint>(&b).ok())
                .map(|c| c.cursor);
            let child = tokio::process::Command::new(&config.journalctl)
                .args(journalctl_args(&config, cursor.as_deref()))
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn();
            match child {
                Ok(mut child) => {
                    let stop = follow(&config, &env, &*sink, &mut child, &mut shutdown).await;
                    let _ = child.kill().await;
                    if stop {
                        return;
                    }
                }
                Err(e) if !warned => {
                    warned = true;
                    tracing::warn!(error = %e, "journald: cannot run journalctl; retrying every 5 s");
                }
                Err(e) => tracing::debug!(error = %e, "journald: cannot run journalctl"),
            }
            tokio::select! {
                _ = shutdown.recv() => return,
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    })
}

/// Reads journalctl's output; returns true when the source must stop (shutdown, sink closed).
async fn follow(
    config: &JournaldConfig,
    env: &Env,
    sink: &dyn RecordSink,
    child: &mut tokio::process::Child,
    shutdown: &mut Shutdown,
) -> bool {
    let Some(stdout) = child.stdout.take() else {
        return false;
    };
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut records: Vec<Record> = Vec::new();
    let mut last_cursor: Option<String> = None;
    loop {
        let next = tokio::select! {
            _ = shutdown.recv() => return true,
            r = tokio::time::timeout(Duration::from_millis(200), lines.next_line()) => r,
        };
        let line = match next {
            Ok(Ok(Some(line))) => Some(line),
            Ok(Ok(None)) | Ok(Err(_)) => {
                // journalctl ended: keep what we have, then restart it.
                if let Some(c) = last_cursor.take()
                    && commit(sink, &mut records, c).await.is_err()
                {
                    return true;
                }
                return false;
            }
            Err(_) => None, // quiet: commit the batch
        };
        if let Some(line) = line {
            let parsed = match serde_json::from_str::<Value>(&line) {
                Ok(v) => {
                    if let Some(c) = field(&v, "__CURSOR") {
                        last_cursor = Some(c);
                    }
                    parse_entry(env, config, &v)
                }
                Err(_) => Parsed::Malformed,
            };
            STATS.count(&parsed);
            if let Parsed::Record(r) = parsed {
                records.push(*r);
            }
            if records.len() < 500 {
                continue;
            }
        }
        if let Some(c) = last_cursor.take()
            && commit(sink, &mut records, c).await.is_err()
        {
            return true;
        }
    }
}

async fn commit(
    sink: &dyn RecordSink,
    records: &mut Vec<Record>,
    cursor: String,
) -> Result<(), ()> {
    let ck = Checkpoint {
        source: SOURCE_KEY.into(),
        state: serde_json::to_vec(&JournalCheckpoint { cursor }).unwrap_or_default(),
    };
    let mut delay = Duration::from_millis(100);
    loop {
        match sink.append(records.clone(), Some(ck.clone())).await {
            Ok(()) | Err(SinkError::Dropped { .. }) => {
                records.clear();
                return Ok(());
            }
            Err(SinkError::Closed) => return Err(()),
            Err(SinkError::Storage(e)) => {
                tracing::warn!(error = %e, "journald: append failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests;
