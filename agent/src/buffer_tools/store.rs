//! Opening a buffer directory for the offline tools without ever writing to it.
//!
//! # Guarantees
//!
//! 1. **The directory is only read.** sled has no read-only mode: opening a store replays its
//!    log, may cut a torn tail, creates `blobs/`, rewrites its settings and writes a snapshot
//!    when closed. So the directory is copied into a private scratch directory (under
//!    `$TMPDIR`, removed when the [`Store`] is dropped) and sled opens the copy; the original
//!    is opened for reading only.
//! 2. **A buffer a running agent holds is refused.** The agent holds sled's exclusive `flock`
//!    on `<buffer>/db` for as long as it runs. [`Store::open`] takes a shared `flock` on it
//!    without waiting: if the agent holds it, the answer is [`StoreError::InUse`]. The shared
//!    lock is kept while the [`Store`] lives, so the copy cannot be torn by an agent that starts
//!    meanwhile (that agent fails with "locked" and its supervisor restarts it).
//! 3. **A store sled cannot open is salvaged.** A quarantined directory is usually one sled
//!    refused (that is why the agent moved it aside). Then the raw files are scanned for chunk
//!    values (see [`salvage`]): each one found decodes with the buffer's own decoder, zstd
//!    content checksum and declared record count included, so what is found is data the agent
//!    wrote; its sequence numbers are not known.

use std::fs::File;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;

use crate::buffer::{self, K_ASIDE, K_RECORD, TREE, VALUE_CHUNK, VALUE_LINES, VALUE_SINGLE};

/// Why a buffer directory cannot be examined at all (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path} does not exist")]
    Missing { path: String },
    #[error("{path} is not a buffer: {why}")]
    NotABuffer { path: String, why: String },
    #[error(
        "{path} is in use: a running agent holds the lock on its `db` file; stop the agent \
         first (the tools never read a buffer that is being written)"
    )]
    InUse { path: String },
    #[error(
        "{path} holds chunks in a format this agent does not know (value format 0x{format:02x}): \
         it was written by another version of groundtrail-agent; use that version's tools"
    )]
    UnknownFormat { path: String, format: u8 },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: sled cannot open the copy because of the environment: {error}")]
    Environment { path: String, error: String },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

/// A buffer directory opened for reading.
pub struct Store {
    pub path: PathBuf,
    /// Whether the directory is one the agent moved aside (`<name>.quarantined-<time>`).
    pub quarantined: bool,
    /// Bytes of all files in the directory.
    pub bytes_on_disk: u64,
    pub view: View,
    /// The shared `flock` on `<path>/db` (guarantee 2); released when dropped.
    _lock: File,
}

/// How the store's contents are reached.
pub enum View {
    /// sled opened a private copy (guarantee 1).
    Sled(SledCopy),
    /// sled could not open it: chunk values found in the raw files (guarantee 3).
    Salvage {
        sled_error: String,
        chunks: Vec<salvage::Carved>,
    },
}

/// The copy and the sled handles on it; fields drop in order (tree, db, then the directory).
pub struct SledCopy {
    pub tree: sled::Tree,
    _db: sled::Db,
    _scratch: tempfile::TempDir,
}

impl Store {
    /// Opens `path` (a buffer directory, quarantined or not) for reading.
    pub fn open(path: &Path, progress: &ProgressBar) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Missing { path: shown });
            }
            Err(e) => return Err(io(format!("reading {shown}"))(e)),
        };
        if !meta.is_dir() {
            return Err(StoreError::NotABuffer {
                path: shown,
                why: "not a directory".into(),
            });
        }
        let db_file = path.join("db");
        if !db_file.is_file() {
            let mut why = "it has no sled `db` file".to_string();
            if path.join("buffer").join("db").is_file() {
                why.push_str(" (it looks like a data directory: use --data-dir)");
            }
            return Err(StoreError::NotABuffer { path: shown, why });
        }
        let lock = File::open(&db_file).map_err(io(format!("opening {}", db_file.display())))?;
        lock_shared(&lock).map_err(|e| match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => StoreError::InUse {
                path: shown.clone(),
            },
            _ => io(format!("locking {}", db_file.display()))(e),
        })?;
        let bytes_on_disk = dir_bytes(path).map_err(io(format!("reading {shown}")))?;
        let quarantined = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains(".quarantined-"));

        let scratch = tempfile::Builder::new()
            .prefix("groundtrail-buffer-")
            .tempdir()
            .map_err(io(
                "creating a scratch directory (set TMPDIR to choose where)",
            ))?;
        let copy = scratch.path().join("buffer");
        progress.set_length(bytes_on_disk);
        progress.set_message("copying");
        copy_dir(path, &copy, progress).map_err(io(format!(
            "copying {shown} to {} (set TMPDIR to a disk with room)",
            copy.display()
        )))?;
        let view = match open_quietly(&copy) {
            Ok(db) => {
                let has_queue = db.tree_names().iter().any(|n| &n[..] == TREE.as_bytes());
                if !has_queue {
                    return Err(StoreError::NotABuffer {
                        path: shown,
                        why: format!("a sled store without the `{TREE}` tree"),
                    });
                }
                let tree = db.open_tree(TREE).map_err(|e| StoreError::Environment {
                    path: shown.clone(),
                    error: e.to_string(),
                })?;
                check_format(&tree, &shown)?;
                View::Sled(SledCopy {
                    tree,
                    _db: db,
                    _scratch: scratch,
                })
            }
            Err(e) if buffer::is_environment_error(&e) => {
                return Err(StoreError::Environment {
                    path: shown,
                    error: e.to_string(),
                });
            }
            Err(e) => {
                drop(scratch);
                progress.set_position(0);
                progress.set_message("salvaging");
                let chunks =
                    salvage::carve(path, progress).map_err(io(format!("reading {shown}")))?;
                View::Salvage {
                    sled_error: e.to_string(),
                    chunks,
                }
            }
        };
        Ok(Store {
            path: path.to_path_buf(),
            quarantined,
            bytes_on_disk,
            view,
            _lock: lock,
        })
    }
}

/// The first stored value says which format the buffer is in: one this agent does not know
/// means another version wrote it, and every chunk would read as damage.
fn check_format(tree: &sled::Tree, path: &str) -> Result<(), StoreError> {
    for kind in [K_RECORD, K_ASIDE] {
        if let Some(Ok((_, v))) = tree.scan_prefix([kind]).next()
            && let Some(&format) = v.first()
            && format != VALUE_LINES
            && format != VALUE_CHUNK
            && format != VALUE_SINGLE
        {
            return Err(StoreError::UnknownFormat {
                path: path.to_string(),
                format,
            });
        }
    }
    Ok(())
}

/// sled, opened as the agent opens it; sled 0.34 panics on some damage, which the agent's
/// opener catches: its panic message would only be noise here (the error says it).
fn open_quietly(dir: &Path) -> Result<sled::Db, sled::Error> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = buffer::try_open_sled(dir);
    std::panic::set_hook(hook);
    r
}

fn lock_shared(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock only takes a lock on a descriptor we own for the duration of the call.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The regular files under `dir`, sorted (symbolic links are not followed).
pub(crate) fn files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                todo.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

fn dir_bytes(dir: &Path) -> std::io::Result<u64> {
    files(dir)?
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()))
        .sum()
}

fn copy_dir(from: &Path, to: &Path, progress: &ProgressBar) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for f in files(from)? {
        let rel = f.strip_prefix(from).unwrap_or(&f);
        let dest = to.join(rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let n = std::fs::copy(&f, &dest)?;
        progress.inc(n);
    }
    Ok(())
}

pub mod salvage {
    //! Finding chunk values in the raw files of a store sled cannot open.
    //!
    //! A value is stored contiguously in sled's log (or a blob file) wherever a node or delta
    //! holding it was written, without compression. A candidate is a zstd frame whose 13 bytes
    //! before it are a chunk header (`0x02`, plausible append time, record count) or whose 9
    //! are a one-record header (`0x01`); it is taken only if the buffer's own decoder accepts
    //! it (content checksum, exact record count). sled keeps old versions of a node until it
    //! reuses the space, so a value is found several times (kept once) and records the
    //! collector already acknowledged may be found too (the collector de-duplicates by
    //! `eventID`). Sequence numbers are not recovered: chunks are ordered by append time.

    use std::collections::HashSet;
    use std::path::Path;
    use std::sync::Mutex;

    use indicatif::ProgressBar;

    use crate::buffer::{
        self, CHUNK_HEADER, SINGLE_HEADER, VALUE_CHUNK, VALUE_LINES, VALUE_SINGLE,
    };

    const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
    /// Append times outside 2001..2100 (unix ms) are not a header.
    const PLAUSIBLE_MS: std::ops::Range<u64> = 1_000_000_000_000..4_102_444_800_000;

    /// 128 bits of two SipHashes: what was already found is remembered without keeping its
    /// bytes (a buffer's records decompressed can be ten times its size), and a collision that
    /// would hide a record is out of reach (~1e-20 for a million records).
    type Digest = (u64, u64);

    fn digest(bytes: &[u8]) -> Digest {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut a = DefaultHasher::new();
        bytes.hash(&mut a);
        let mut b = DefaultHasher::new();
        (0xA5u8, bytes).hash(&mut b);
        (a.finish(), b.finish())
    }

    /// Remembers the records already met, so that each one found in several chunk values
    /// (an older version of a chunk, or a chunk rewritten by a set-aside) comes out once.
    #[derive(Default)]
    pub struct Seen(HashSet<Digest>);

    impl Seen {
        /// Whether this record is met for the first time.
        pub fn first_time(&mut self, json: &[u8]) -> bool {
            self.0.insert(digest(json))
        }
    }

    /// A chunk value found in the raw files (validated: it decodes).
    #[derive(Debug, Clone)]
    pub struct Carved {
        /// `<file>@<offset>` where it was found.
        pub place: String,
        pub appended_ms: u64,
        /// The value as stored (compressed), decoded again when read: holding the records
        /// themselves would cost ten times the memory.
        pub value: Vec<u8>,
    }

    /// Every distinct chunk value in the files under `dir`, by append time.
    pub fn carve(dir: &Path, progress: &ProgressBar) -> std::io::Result<Vec<Carved>> {
        let decompressor = Mutex::new(zstd::bulk::Decompressor::new()?);
        let mut seen_values: HashSet<Digest> = HashSet::new();
        let mut out = Vec::new();
        for file in super::files(dir)? {
            let data = std::fs::read(&file)?;
            let name = file
                .strip_prefix(dir)
                .unwrap_or(&file)
                .display()
                .to_string();
            let mut i = 0;
            while let Some(at) = data[i..].windows(4).position(|w| w == ZSTD_MAGIC) {
                let p = i + at;
                i = p + 1;
                for (header, format) in [
                    (CHUNK_HEADER, VALUE_LINES),
                    (CHUNK_HEADER, VALUE_CHUNK),
                    (SINGLE_HEADER, VALUE_SINGLE),
                ] {
                    let Some(start) = p.checked_sub(header) else {
                        continue;
                    };
                    if data[start] != format {
                        continue;
                    }
                    let ms =
                        u64::from_be_bytes(data[start + 1..start + 9].try_into().unwrap_or([0; 8]));
                    if !PLAUSIBLE_MS.contains(&ms) {
                        continue;
                    }
                    let Ok(size) = zstd::zstd_safe::find_frame_compressed_size(&data[p..]) else {
                        continue;
                    };
                    let value = &data[start..p + size];
                    let d = digest(value);
                    if !seen_values.contains(&d) {
                        if buffer::decode_value(&decompressor, value).is_err() {
                            continue;
                        }
                        seen_values.insert(d);
                        out.push(Carved {
                            place: format!("{name}@{start}"),
                            appended_ms: ms,
                            value: value.to_vec(),
                        });
                    }
                    i = p + size;
                    break;
                }
            }
            progress.inc(data.len() as u64);
        }
        out.sort_by_key(|c| c.appended_ms);
        Ok(out)
    }
}
