//! File integrity monitoring of configuration files (`files.<domain>`).
//!
//! The watched paths (files, or directories scanned two levels deep) are summarized as
//! [`FileState`]s: SHA-256 of the content, size, mode, owner, and for symlinks the target
//! (enabling a systemd unit is a new symlink). A change is found by comparing two summaries
//! ([`diff`], pure): a new or modified file is `PutFile`, a removed one `DeleteFile`, a change
//! of only mode or owner `ChangeFilePermissions`. File *contents* never enter a record, only
//! their hash: `/etc/shadow` is watched like any other file.
//!
//! Wake-ups come from `notify` on the watched paths' directories; a burst of events (an editor
//! writing a temp file, renaming, chmod-ing) is debounced into one rescan, and a periodic full
//! rescan catches anything notify missed. The whole summary is the checkpoint, stored with the
//! records, so changes made while the agent was down are found at the next start, and a crash
//! between detection and append re-detects the same change with the same eventID.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use groundtrail_common::Record;
use groundtrail_common::shutdown::Shutdown;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::{Env, FimConfig, SourceStats};
use crate::sink::{Checkpoint, RecordSink, SinkError};

/// Counters of this source (one per change found).
pub static STATS: SourceStats = SourceStats::new();

/// Checkpoint key of this source.
pub const SOURCE_KEY: &str = "fim";
/// Files per watched directory at most (a runaway directory is cut, with a warning).
pub const MAX_FILES_PER_ROOT: usize = 10_000;

/// What is known about one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    /// Hex SHA-256 of the content; `None` when not hashed (too large, unreadable, symlink).
    pub sha256: Option<String>,
    pub size: u64,
    /// Permission bits, octal text (`0640`).
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    /// Symlink target, for symlinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Why there is no hash (`too large`, an I/O error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_error: Option<String>,
}

/// All watched files, by absolute path.
pub type State = BTreeMap<String, FileState>;

fn hash_file(path: &Path, max: u64, size: u64) -> (Option<String>, Option<String>) {
    if size > max {
        return (
            None,
            Some(format!("not hashed: {size} bytes over the limit")),
        );
    }
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return (None, Some(e.to_string())),
    };
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => ctx.update(&buf[..n]),
            Err(e) => return (None, Some(e.to_string())),
        }
    }
    (Some(hex::encode(ctx.finish().as_ref())), None)
}

fn file_state(path: &Path, meta: &std::fs::Metadata, max: u64) -> FileState {
    let is_link = meta.file_type().is_symlink();
    let (sha256, hash_error, link) = if is_link {
        let target = std::fs::read_link(path)
            .map(|t| t.to_string_lossy().into_owned())
            .ok();
        (None, None, target)
    } else {
        let (h, e) = hash_file(path, max, meta.len());
        (h, e, None)
    };
    FileState {
        sha256,
        size: meta.len(),
        mode: format!("{:04o}", meta.mode() & 0o7777),
        uid: meta.uid(),
        gid: meta.gid(),
        link,
        hash_error,
    }
}

fn scan_into(path: &Path, depth: u32, max: u64, out: &mut State, budget: &mut usize) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        if depth == 0 {
            return;
        }
        let Ok(rd) = std::fs::read_dir(path) else {
            return;
        };
        let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        entries.sort();
        for e in entries {
            scan_into(&e, depth - 1, max, out, budget);
        }
        return;
    }
    if *budget == 0 {
        return;
    }
    *budget -= 1;
    out.insert(
        path.to_string_lossy().into_owned(),
        file_state(path, &meta, max),
    );
}

/// Summarizes the watched paths (directories: their files, two levels deep).
pub fn scan(paths: &[PathBuf], max_hash_bytes: u64) -> State {
    let mut out = State::new();
    for p in paths {
        let mut budget = MAX_FILES_PER_ROOT;
        scan_into(p, 2, max_hash_bytes, &mut out, &mut budget);
        if budget == 0 {
            tracing::warn!(path = %p.display(), "fim: too many files, the rest is not watched");
        }
    }
    out
}

fn state_json(env: &Env, s: &FileState) -> Value {
    let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v
        && let Some(n) = env.passwd.name(s.uid)
    {
        m.insert("owner".into(), json!(n));
    }
    v
}

/// The records for the difference between two summaries, in path order.
pub fn diff(env: &Env, old: &State, new: &State, time: DateTime<Utc>) -> Vec<Record> {
    let mut out = Vec::new();
    let paths: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for path in paths {
        let (before, after) = (old.get(path), new.get(path));
        let name = match (before, after) {
            (None, Some(_)) => "PutFile",
            (Some(_), None) => "DeleteFile",
            (Some(b), Some(a)) if b == a => continue,
            (Some(b), Some(a)) if b.sha256 == a.sha256 && b.size == a.size && b.link == a.link => {
                "ChangeFilePermissions"
            }
            (Some(_), Some(_)) => "PutFile",
            (None, None) => continue,
        };
        let mut r = env.record("files", name, "AwsServiceEvent", time);
        r.user_identity = Some(env.host.service("files"));
        r.user_agent = Some("groundtrail-fim".into());
        r.request_parameters = Some(json!({"path": path}));
        let details = json!({
            "path": path,
            "before": before.map(|s| state_json(env, s)),
            "after": after.map(|s| state_json(env, s)),
        });
        r.event_id = uuid::Uuid::new_v5(
            &crate::sources::tail::EVENT_ID_NAMESPACE,
            format!("{}|fim|{details}", env.host.host).as_bytes(),
        )
        .to_string();
        r.service_event_details = Some(details);
        r.resources = Some(vec![env.host.file_resource(path)]);
        STATS
            .records
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        out.push(r);
    }
    out
}

/// Runs the FIM loop until shutdown.
pub fn spawn(
    config: FimConfig,
    env: Arc<Env>,
    sink: Arc<dyn RecordSink>,
    mut shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let notify = Arc::new(Notify::new());
        let _watcher = watch(&config.paths, notify.clone());
        let debounce = Duration::from_millis(config.debounce_ms.max(1));
        let rescan = Duration::from_secs(config.rescan_secs.max(1));
        let mut known: State = sink
            .checkpoint(SOURCE_KEY)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let mut first = sink.checkpoint(SOURCE_KEY).is_none();
        loop {
            let paths = config.paths.clone();
            let max = config.max_hash_bytes;
            let now_state = tokio::task::spawn_blocking(move || scan(&paths, max))
                .await
                .unwrap_or_default();
            // The first run takes a baseline: what exists is not a change.
            let records = if first {
                Vec::new()
            } else {
                diff(
                    &env,
                    &known,
                    &now_state,
                    groundtrail_common::time::now_secs(),
                )
            };
            if first || !records.is_empty() {
                let ck = Checkpoint {
                    source: SOURCE_KEY.into(),
                    state: serde_json::to_vec(&now_state).unwrap_or_default(),
                };
                match append(&*sink, records, ck).await {
                    Ok(()) => {
                        known = now_state;
                        first = false;
                    }
                    Err(()) => return,
                }
            }
            // Wait for an event (then let the burst settle) or the periodic rescan.
            tokio::select! {
                _ = shutdown.recv() => return,
                _ = notify.notified() => {
                    loop {
                        tokio::select! {
                            _ = shutdown.recv() => return,
                            _ = notify.notified() => continue,
                            _ = tokio::time::sleep(debounce) => break,
                        }
                    }
                }
                _ = tokio::time::sleep(rescan) => {}
            }
        }
    })
}

async fn append(sink: &dyn RecordSink, records: Vec<Record>, ck: Checkpoint) -> Result<(), ()> {
    let mut delay = Duration::from_millis(100);
    loop {
        match sink.append(records.clone(), Some(ck.clone())).await {
            Ok(()) | Err(SinkError::Dropped { .. }) => return Ok(()),
            Err(SinkError::Closed) => return Err(()),
            Err(SinkError::Storage(e)) => {
                tracing::warn!(error = %e, "fim: append failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn watch(paths: &[PathBuf], notify: Arc<Notify>) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Not on opens and reads: /etc sees an open with every process start.
        if crate::sources::tail::is_change(&res) {
            notify.notify_one();
        }
    })
    .ok()?;
    let mut dirs: Vec<(PathBuf, RecursiveMode)> = Vec::new();
    for p in paths {
        if p.is_dir() {
            dirs.push((p.clone(), RecursiveMode::Recursive));
        } else if let Some(parent) = p.parent().filter(|d| d.is_dir()) {
            // Editors replace files by rename: watch the directory, not the inode.
            dirs.push((parent.to_path_buf(), RecursiveMode::NonRecursive));
        }
    }
    dirs.sort();
    dirs.dedup_by(|a, b| a.0 == b.0);
    for (d, mode) in dirs {
        if let Err(e) = w.watch(&d, mode) {
            tracing::debug!(path = %d.display(), error = %e, "fim: cannot watch; rescans cover it");
        }
    }
    Some(w)
}

#[cfg(test)]
mod tests;
