//! Opening the buffer: recovering its counters, and what to do with a directory that will not
//! open.
//!
//! Guarantees kept here (see the invariants in `mod.rs`):
//! - **Numbers are never reused** (invariant 3): the next sequence number is the highest of
//!   the stored lower bound, the last chunk's last record + 1, the last set-aside key + 1 and
//!   the commit point + 1; a fresh buffer starts at the current time in microseconds.
//! - **Damage is set aside, not crash-looped on** (invariant 8): a directory sled cannot open
//!   (or panics on) is renamed to `<dir>.quarantined-<time>`, a fresh buffer starts and the
//!   loss goes to the trail. Keys that are not chunk keys are removed and counted.
//! - **A failing disk is an error, not damage** (invariant 9): an operating-system error
//!   while opening is returned, so the agent exits and is restarted with its backlog intact;
//!   "locked by another process" is an error too (that is another agent).
//! - The counters are recomputed from keys and chunk headers alone, without decompressing.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use super::chunk::{chunk_compressor, chunk_last, chunk_len, live, zstd_err};
use super::loss::{PendingLoss, Quarantined};
use super::{
    Buffer, BufferError, BufferOptions, Inner, K_ASIDE, K_RECORD, META_ACKED, META_LOSS,
    META_NEXT_SEQ, State, TREE, now_us, seq_of, u64_of,
};
use crate::host_identity::HostIdentity;

/// sled's page cache.
const SLED_CACHE_BYTES: u64 = 4 * 1024 * 1024;

/// What happened while opening.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Set when the directory was damaged and moved aside: where it went and why.
    pub quarantined: Option<Quarantined>,
    /// Records found waiting from an earlier run.
    pub depth: u64,
}

pub(crate) fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// Errors that are not damage to our files: quarantining would not help and could hide a
/// misconfiguration (permissions, a full or read-only disk).
/// Any error the operating system reports (EIO, EDQUOT, EMFILE, ENOSPC, EACCES, ...) is one of
/// these (invariant 9): only sled's own finding of damage (corruption, a panic, a file cut
/// short) is a reason to move the backlog aside.
pub(crate) fn is_environment_error(e: &sled::Error) -> bool {
    use std::io::ErrorKind::*;
    match e {
        sled::Error::Io(io) => {
            io.raw_os_error().is_some()
                || matches!(
                    io.kind(),
                    PermissionDenied | NotFound | StorageFull | ReadOnlyFilesystem | OutOfMemory
                )
        }
        _ => false,
    }
}

pub(crate) fn try_open_sled(dir: &Path) -> Result<sled::Db, sled::Error> {
    let dir = dir.to_path_buf();
    // sled 0.34 panics on some kinds of damage instead of returning an error.
    // sled's default page cache is 1 GiB; the agent must stay small on edge devices, and the
    // buffer is read once, front to back, so a small cache costs nothing. Every change is
    // flushed explicitly (invariant 1), so sled's own periodic flusher thread is not needed.
    let open = move || {
        sled::Config::new()
            .path(dir)
            .cache_capacity(SLED_CACHE_BYTES)
            .flush_every_ms(None)
            .open()
    };
    match std::panic::catch_unwind(open) {
        Ok(r) => r,
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".to_string());
            Err(sled::Error::Unsupported(format!("sled panicked: {why}")))
        }
    }
}

impl Buffer {
    /// Opens (or creates) the buffer in `dir`. A damaged directory is moved aside and replaced
    /// by a fresh one (see [`OpenReport::quarantined`]); a directory locked by another process
    /// is an error.
    pub fn open(
        dir: &Path,
        opts: BufferOptions,
        id: HostIdentity,
    ) -> Result<(Buffer, OpenReport), BufferError> {
        if let Some(parent) = dir.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                BufferError::Storage(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let mut report = OpenReport::default();
        let db = match try_open_sled(dir) {
            Ok(db) => db,
            Err(e) if is_lock_error(&e) => {
                return Err(BufferError::Locked {
                    path: dir.display().to_string(),
                });
            }
            Err(e) if is_environment_error(&e) => {
                return Err(BufferError::Storage(format!(
                    "cannot open {}: {e}",
                    dir.display()
                )));
            }
            Err(e) => {
                let aside = quarantine_name(dir);
                tracing::error!(
                    dir = %dir.display(), aside = %aside.display(), error = %e,
                    "buffer cannot be opened; moving it aside and starting a fresh one"
                );
                std::fs::rename(dir, &aside).map_err(|re| {
                    BufferError::Storage(format!(
                        "cannot open {} ({e}) and cannot move it aside to {}: {re}",
                        dir.display(),
                        aside.display()
                    ))
                })?;
                report.quarantined = Some(Quarantined {
                    path: aside.display().to_string(),
                    error: e.to_string(),
                });
                try_open_sled(dir).map_err(|e| {
                    BufferError::Storage(format!("cannot create {}: {e}", dir.display()))
                })?
            }
        };
        let tree = db.open_tree(TREE)?;

        // Recover the counters with a scan of keys and chunk headers; chunks are decompressed
        // lazily by read_from.
        let acked = tree.get(META_ACKED)?.and_then(|v| u64_of(&v)).unwrap_or(0);
        let mut bytes = 0u64;
        let mut count = 0u64;
        let mut last_seq = 0u64;
        let mut bad_keys = Vec::new();
        for item in tree.scan_prefix([K_RECORD]) {
            let (k, v) = item?;
            match seq_of(&k) {
                Some(first) => {
                    let n = chunk_len(&v);
                    bytes += v.len() as u64;
                    count += live(first, n, acked);
                    last_seq = chunk_last(first, n);
                }
                None => bad_keys.push(k),
            }
        }
        let mut set_aside = 0u64;
        let mut set_aside_bytes = 0u64;
        let mut last_aside = 0u64;
        for item in tree.scan_prefix([K_ASIDE]) {
            let (k, v) = item?;
            set_aside += 1;
            set_aside_bytes += v.len() as u64;
            last_aside = last_aside.max(seq_of(&k).unwrap_or(0));
        }
        bytes += set_aside_bytes;
        let stored_next = tree.get(META_NEXT_SEQ)?.and_then(|v| u64_of(&v));
        let mut loss: PendingLoss = match tree.get(META_LOSS)? {
            Some(v) => serde_json::from_slice(&v).unwrap_or_else(|e| {
                tracing::error!(error = %e, "pending-loss entry unreadable; reporting it as corruption");
                PendingLoss {
                    corrupt: 1,
                    ..PendingLoss::default()
                }
            }),
            None => PendingLoss::default(),
        };
        let fresh = stored_next.is_none() && last_seq == 0;
        let next_seq = if fresh {
            // Invariant 3: above anything an earlier buffer on this host can have reached.
            now_us().max(1)
        } else {
            stored_next
                .unwrap_or(1)
                .max(last_seq.saturating_add(1))
                .max(last_aside.saturating_add(1))
                .max(acked.saturating_add(1))
        };
        if !bad_keys.is_empty() {
            loss.corrupt += bad_keys.len() as u64;
        }
        if let Some(q) = &report.quarantined {
            loss.quarantined.push(q.clone());
        }
        let mut batch = sled::Batch::default();
        batch.insert(META_NEXT_SEQ, &next_seq.to_be_bytes());
        for k in &bad_keys {
            batch.remove(k);
        }
        if !loss.is_empty() {
            batch.insert(META_LOSS, serde_json::to_vec(&loss).unwrap_or_default());
        }
        tree.apply_batch(batch)?;
        db.flush()?;

        report.depth = count;
        let last = next_seq - 1;
        let compressor = chunk_compressor().map_err(zstd_err)?;
        let decompressor = zstd::bulk::Decompressor::new().map_err(zstd_err)?;
        let inner = Inner {
            db,
            tree,
            opts,
            id,
            state: Mutex::new(State {
                next_seq,
                bytes,
                count,
                acked,
                set_aside,
                set_aside_bytes,
                loss,
            }),
            acked: AtomicU64::new(acked),
            compressor: Mutex::new(compressor),
            decompressor: Mutex::new(decompressor),
            written: AtomicU64::new(last),
            durable: AtomicU64::new(last),
            flush_lock: Mutex::new(()),
            closed: AtomicBool::new(false),
            space: tokio::sync::Notify::new(),
            appended: tokio::sync::Notify::new(),
            appended_total: AtomicU64::new(0),
            dropped_total: AtomicU64::new(0),
            corrupt_total: AtomicU64::new(bad_keys.len() as u64),
            rejected_total: AtomicU64::new(0),
            waiting_appends: AtomicU64::new(0),
            discarded_total: AtomicU64::new(0),
            resent_total: AtomicU64::new(0),
            storage_errors_total: AtomicU64::new(0),
            failing: Mutex::new(None),
        };
        let buffer = Buffer {
            inner: Arc::new(inner),
        };
        buffer.report_loss()?;
        Ok((buffer, report))
    }
}

fn quarantine_name(dir: &Path) -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "buffer".to_string());
    let mut candidate = dir.with_file_name(format!("{name}.quarantined-{stamp}"));
    let mut n = 1;
    while candidate.exists() {
        candidate = dir.with_file_name(format!("{name}.quarantined-{stamp}-{n}"));
        n += 1;
    }
    candidate
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::testutil::*;
    use crate::buffer::*;

    /// Invariant 8: a directory sled cannot open is moved aside, a fresh buffer starts with
    /// numbers above the old ones, and the loss is reported.
    #[test]
    fn damaged_directory_is_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("buffer");
        let (b, _) = open(&path, 1 << 20, FullPolicy::Block);
        b.try_append(&[rec(1)], None).unwrap();
        let old_last = all(&b)[0].seq;
        drop(b);
        // Damage every file sled keeps.
        for entry in std::fs::read_dir(&path).unwrap() {
            let p = entry.unwrap().path();
            if p.is_file() {
                std::fs::write(&p, vec![0xA5u8; 4096]).unwrap();
            }
        }
        let (b, report) = open(&path, 1 << 20, FullPolicy::Block);
        let q = report.quarantined.expect("quarantined");
        assert!(q.path.contains("buffer.quarantined-"), "{}", q.path);
        assert!(Path::new(&q.path).exists());
        let got = all(&b);
        assert_eq!(names(&got), vec!["BufferCorruption"]);
        let p = &json_of(&got[0])["requestParameters"];
        assert_eq!(p["quarantined"][0]["path"], q.path.as_str());
        assert_eq!(p["lostUnknown"], true);
        assert!(got[0].seq > old_last);
        drop(b);
        // And the fresh buffer opens normally afterwards.
        let (_, report) = open(&path, 1 << 20, FullPolicy::Block);
        assert!(report.quarantined.is_none());
    }

    /// Only a lock held by another opener is an error; the directory is left alone.
    #[test]
    fn a_locked_buffer_is_an_error_not_a_quarantine() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let (_b, _) = open(&path, 1 << 20, FullPolicy::Block);
        let err = Buffer::open(&path, opts(1 << 20, FullPolicy::Block), id())
            .err()
            .expect("second open must fail");
        assert!(matches!(err, BufferError::Locked { .. }), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// Invariant 9: errors the operating system reports are the environment's, never a reason
    /// to quarantine; sled's own findings of damage are.
    #[test]
    fn os_errors_are_not_damage() {
        for errno in [
            libc::EIO,
            libc::EDQUOT,
            libc::EMFILE,
            libc::ENOSPC,
            libc::EACCES,
        ] {
            let e = sled::Error::Io(std::io::Error::from_raw_os_error(errno));
            assert!(is_environment_error(&e), "errno {errno}");
        }
        let damage = [
            sled::Error::Corruption { at: None, bt: () },
            sled::Error::Unsupported("sled panicked: x".into()),
            sled::Error::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "file cut short",
            )),
        ];
        for e in damage {
            assert!(!is_environment_error(&e), "{e}");
        }
    }

    /// Invariant 6: the byte accounting matches what is stored, across reopen.
    #[test]
    fn byte_accounting_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let (b, _) = open(&path, 1 << 20, FullPolicy::Block);
        b.try_append(&(0..20).map(rec).collect::<Vec<_>>(), None)
            .unwrap();
        let e = all(&b);
        b.ack_up_to(e[4].seq).unwrap();
        let st = b.status();
        drop(b);
        let (b, _) = open(&path, 1 << 20, FullPolicy::Block);
        let st2 = b.status();
        assert_eq!((st.depth, st.bytes), (st2.depth, st2.bytes));
        assert_eq!(st2.depth, 15);
        assert_eq!(st2.oldest_seq, Some(e[5].seq));
    }
}
