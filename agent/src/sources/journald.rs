//! The systemd journal, through `journalctl -o json --follow`.
//!
//! For hosts without an auth log (journal-only distributions, containers with a journal), and
//! for systemd unit events. Each JSON entry is routed by `SYSLOG_IDENTIFIER`:
//!
//! - sshd, sudo, su, login and the account tools -> the auth-log parsers
//!   ([`super::auth_log::parse_message`]), so the same message becomes the same record;
//! - systemd's job results (entries with `UNIT`/`USER_UNIT`, `JOB_TYPE` and `JOB_RESULT`) ->
//!   `StartService`, `StopService`, `RestartService`, `ReloadService` (failed jobs carry an
//!   error), and systemd's unit failure (`MESSAGE_ID` d9b373ed…, "Failed with result") ->
//!   `ServiceFailed` (an `AwsServiceEvent`);
//! - everything else is ignored.
//!
//! The checkpoint is the journal cursor of the last entry handled (`--after-cursor`); the
//! eventID derives from host and cursor, so an entry read twice has one ID.

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
    let ident = field(entry, "SYSLOG_IDENTIFIER").unwrap_or_default();
    let message = field(entry, "MESSAGE").unwrap_or_default();
    let pid = field(entry, "_PID").and_then(|p| p.parse().ok());
    let parsed = if ident == "systemd" {
        if config.units {
            unit_event(env, entry, time, &message)
        } else {
            Parsed::Ignored
        }
    } else if config.auth {
        super::auth_log::parse_message(env, &ident, pid, &message, time)
    } else {
        Parsed::Ignored
    };
    match parsed {
        Parsed::Record(mut r) => {
            r.event_id = uuid::Uuid::new_v5(
                &crate::tail::EVENT_ID_NAMESPACE,
                format!("{}|journal|{cursor}", env.ctx.host).as_bytes(),
            )
            .to_string();
            Parsed::Record(r)
        }
        other => other,
    }
}

fn unit_event(env: &Env, entry: &Value, time: chrono::DateTime<Utc>, message: &str) -> Parsed {
    let (unit, user_unit) = match (field(entry, "UNIT"), field(entry, "USER_UNIT")) {
        (Some(u), _) => (u, false),
        (None, Some(u)) => (u, true),
        (None, None) => return Parsed::Ignored,
    };
    let ids = &env.ids;
    let identity = if user_unit {
        // A user's own service manager: the user acted.
        match field(entry, "_UID").and_then(|u| u.parse::<u32>().ok()) {
            Some(uid) => ids.user(&env.passwd.name_or_uid(uid)),
            None => ids.service("systemd"),
        }
    } else {
        ids.service("systemd")
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
