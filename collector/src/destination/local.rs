//! A directory laid out like a bucket.
//!
//! Object `key` lives at `<root>/<key>` and its user metadata at `<root>/<key>.metadata.json`
//! (a JSON object of strings), so a trail delivered here has exactly the key layout it would
//! have in S3 and tools that read a directory tree (DuckDB, trailscraper, `find | zcat`) work
//! on it directly.
//!
//! Every write is atomic and durable: the bytes go to a hidden temporary file in the target
//! directory, which is fsynced, renamed over the final name, and the directory is fsynced. A
//! reader therefore sees either the old object or the whole new one, never a torn file, and an
//! object the collector was told is stored survives a power cut. Metadata is written before the
//! object, so an object is never visible without its metadata (a retried put rewrites both).
//!
//! Directories are durable too: every directory a put (or `open`) creates is made durable by
//! fsyncing the directory that holds it, from the first one that already existed down to the
//! new leaf ([`create_dirs_durably`]). Fsyncing only the leaf is not enough: after a power cut
//! the new `2026/01/02` folder could be gone with every file in it, although the journal had
//! already dropped those files and a signed digest lists them. Creation and those fsyncs happen
//! under one lock per destination, so a put that finds a directory another put is still
//! creating waits until it is durable instead of reporting success early.
//!
//! Keys are checked before they touch the file system: a key with an empty, `.` or `..`
//! segment, a leading `/`, a backslash or a NUL is refused, so no key can escape the root.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::{BoxFuture, Destination, DestinationError, Metadata, Object};

/// Suffix of the metadata file beside each object. `list` never returns these.
pub const METADATA_SUFFIX: &str = ".metadata.json";
/// Marker in the names of temporary files; `list` never returns these either.
const TEMP_MARKER: &str = ".gt-tmp-";

/// A [`Destination`] backed by a local directory.
#[derive(Debug, Clone)]
pub struct LocalDestination {
    name: String,
    root: PathBuf,
    bucket: String,
    /// Held while directories are created and fsynced (see the module doc).
    dirs: Arc<Mutex<()>>,
}

impl LocalDestination {
    /// Opens (creating if needed) the directory `path`. `bucket` is the name digests record as
    /// `digestS3Bucket`/`s3Bucket`, so the same trail validates whether read from here or from
    /// a bucket of that name.
    pub fn open(name: String, path: &Path, bucket: String) -> anyhow::Result<LocalDestination> {
        use anyhow::Context;
        create_dirs_durably(path)
            .with_context(|| format!("cannot create destination directory {}", path.display()))?;
        Ok(LocalDestination {
            name,
            root: path.to_path_buf(),
            bucket,
            dirs: Arc::new(Mutex::new(())),
        })
    }

    /// The directory objects live under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn io(&self, source: io::Error) -> DestinationError {
        DestinationError::Io {
            destination: self.name.clone(),
            source,
        }
    }

    fn refused(&self, message: String) -> DestinationError {
        DestinationError::Refused {
            destination: self.name.clone(),
            message,
        }
    }

    /// The path of `key`, after checking that it stays inside the root.
    fn path_of(&self, key: &str) -> Result<PathBuf, DestinationError> {
        check_key(key).map_err(|why| self.refused(format!("key {key:?} refused: {why}")))?;
        Ok(self.root.join(key))
    }

    fn put_blocking(
        &self,
        key: &str,
        body: &[u8],
        metadata: &Metadata,
    ) -> Result<(), DestinationError> {
        let path = self.path_of(key)?;
        let dir = path
            .parent()
            .ok_or_else(|| self.refused(format!("key {key:?} has no parent directory")))?;
        {
            // A poisoned lock guards no data: the file system is the state.
            let _g = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
            create_dirs_durably(dir).map_err(|e| self.io(e))?;
        }
        let meta_json = serde_json::to_vec(metadata).map_err(|e| self.io(io::Error::other(e)))?;
        let meta_path = PathBuf::from(format!("{}{METADATA_SUFFIX}", path.display()));
        write_atomic(&meta_path, &meta_json).map_err(|e| self.io(e))?;
        write_atomic(&path, body).map_err(|e| self.io(e))?;
        sync_dir(dir).map_err(|e| self.io(e))?;
        Ok(())
    }

    fn get_blocking(&self, key: &str) -> Result<Option<Object>, DestinationError> {
        let path = self.path_of(key)?;
        let body = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            // A directory where an object would be: no such object.
            Err(_) if path.is_dir() => return Ok(None),
            Err(e) => return Err(self.io(e)),
        };
        let meta_path = PathBuf::from(format!("{}{METADATA_SUFFIX}", path.display()));
        let metadata = match fs::read(&meta_path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                self.io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", meta_path.display()),
                ))
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Metadata::new(),
            Err(e) => return Err(self.io(e)),
        };
        Ok(Some(Object {
            body: Bytes::from(body),
            metadata,
        }))
    }

    fn list_blocking(
        &self,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<Vec<String>, DestinationError> {
        // Walk only below the deepest directory the prefix names: listing one region's digests
        // must not read every log file of every account.
        let dir_part = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        if !dir_part.is_empty() {
            check_key(dir_part)
                .map_err(|why| self.refused(format!("prefix {prefix:?} refused: {why}")))?;
        }
        let start = if dir_part.is_empty() {
            self.root.clone()
        } else {
            self.root.join(dir_part)
        };
        let mut keys = Vec::new();
        let base = if dir_part.is_empty() {
            String::new()
        } else {
            format!("{dir_part}/")
        };
        walk(&start, &base, &mut keys).map_err(|e| self.io(e))?;
        keys.retain(|k| {
            k.starts_with(prefix) && start_after.is_none_or(|after| k.as_str() > after)
        });
        // `String` orders by bytes: S3's binary (UTF-8) key order.
        keys.sort_unstable();
        Ok(keys)
    }
}

/// Collects the keys of every object below `dir`; `base` is the key prefix of `dir`.
fn walk(dir: &Path, base: &str, out: &mut Vec<String>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory =>
        {
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            // Not UTF-8: not an object we wrote, and not expressible as an S3 key.
            continue;
        };
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            walk(&entry.path(), &format!("{base}{name}/"), out)?;
        } else if file_type.is_file()
            && !name.ends_with(METADATA_SUFFIX)
            && !name.contains(TEMP_MARKER)
        {
            out.push(format!("{base}{name}"));
        }
    }
    Ok(())
}

/// Why a key cannot be a path below the root, if it cannot.
fn check_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() {
        return Err("empty key");
    }
    if key.starts_with('/') {
        return Err("leading '/'");
    }
    if key.contains('\\') || key.contains('\0') {
        return Err("backslash or NUL");
    }
    if key
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err("empty, '.' or '..' path segment");
    }
    if key.ends_with(METADATA_SUFFIX) || key.contains(TEMP_MARKER) {
        return Err("reserved name");
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically and durably: temp file, fsync, rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("object");
    let tmp = dir.join(format!(
        ".{file_name}{TEMP_MARKER}{}",
        groundtrail_common::trail::unique16()
    ));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// fsyncs a directory so a rename in it is durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing parents, and makes each new directory durable: every new
/// directory is fsynced (so the entry of the next one down is on disk) and so is the existing
/// directory above the topmost new one (so that one's entry is). Returns the directories it
/// fsynced, top down (empty when `dir` existed), which the tests check.
fn create_dirs_durably(dir: &Path) -> io::Result<Vec<PathBuf>> {
    // Walk up to the first directory that exists; everything below it is new.
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.as_os_str().is_empty() || d.is_dir() {
            break;
        }
        missing.push(d.to_path_buf());
        cur = d.parent();
    }
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    fs::create_dir_all(dir)?;
    let top = &missing[missing.len() - 1];
    let existing = match top.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut synced = vec![existing];
    synced.extend(missing.into_iter().rev());
    for d in &synced {
        sync_dir(d)?;
    }
    Ok(synced)
}

impl Destination for LocalDestination {
    fn name(&self) -> &str {
        &self.name
    }

    fn bucket(&self) -> &str {
        &self.bucket
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        body: Bytes,
        metadata: &'a Metadata,
    ) -> BoxFuture<'a, Result<(), DestinationError>> {
        let this = self.clone();
        let key = key.to_string();
        let metadata = metadata.clone();
        Box::pin(async move {
            let name = this.name.clone();
            tokio::task::spawn_blocking(move || this.put_blocking(&key, &body, &metadata))
                .await
                .map_err(|e| DestinationError::Io {
                    destination: name,
                    source: io::Error::other(e),
                })?
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Object>, DestinationError>> {
        let this = self.clone();
        let key = key.to_string();
        Box::pin(async move {
            let name = this.name.clone();
            tokio::task::spawn_blocking(move || this.get_blocking(&key))
                .await
                .map_err(|e| DestinationError::Io {
                    destination: name,
                    source: io::Error::other(e),
                })?
        })
    }

    fn list<'a>(
        &'a self,
        prefix: &'a str,
        start_after: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<String>, DestinationError>> {
        let this = self.clone();
        let prefix = prefix.to_string();
        let start_after = start_after.map(str::to_string);
        Box::pin(async move {
            let name = this.name.clone();
            tokio::task::spawn_blocking(move || this.list_blocking(&prefix, start_after.as_deref()))
                .await
                .map_err(|e| DestinationError::Io {
                    destination: name,
                    source: io::Error::other(e),
                })?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest() -> (tempfile::TempDir, LocalDestination) {
        let dir = tempfile::tempdir().unwrap();
        let d =
            LocalDestination::open("local".into(), &dir.path().join("trail"), "b".into()).unwrap();
        (dir, d)
    }

    #[tokio::test]
    async fn put_get_with_metadata_and_overwrite() {
        let (_dir, d) = dest();
        let mut meta = Metadata::new();
        meta.insert("signature".into(), "abc".into());
        let key = "AWSLogs/111122223333/CloudTrail/us-east-1/2026/01/02/x.json.gz";
        d.put(key, Bytes::from_static(b"one"), &meta).await.unwrap();
        let got = d.get(key).await.unwrap().unwrap();
        assert_eq!(&got.body[..], b"one");
        assert_eq!(got.metadata, meta);
        assert!(d.root().join(format!("{key}.metadata.json")).is_file());
        d.put(key, Bytes::from_static(b"two"), &Metadata::new())
            .await
            .unwrap();
        let got = d.get(key).await.unwrap().unwrap();
        assert_eq!(&got.body[..], b"two");
        assert!(got.metadata.is_empty());
        assert_eq!(d.get("AWSLogs/missing").await.unwrap(), None);
        assert_eq!(
            d.get("AWSLogs").await.unwrap(),
            None,
            "a directory is no object"
        );
    }

    #[tokio::test]
    async fn list_is_binary_sorted_filtered_and_hides_metadata() {
        let (_dir, d) = dest();
        for key in ["a/b/2", "a/b/10", "a/B", "a/c/1", "z", "a/b/1"] {
            d.put(key, Bytes::from_static(b"x"), &Metadata::new())
                .await
                .unwrap();
        }
        assert_eq!(
            d.list("a/", None).await.unwrap(),
            ["a/B", "a/b/1", "a/b/10", "a/b/2", "a/c/1"]
        );
        assert_eq!(
            d.list("a/b", None).await.unwrap(),
            ["a/b/1", "a/b/10", "a/b/2"]
        );
        assert_eq!(d.list("a/b/", Some("a/b/10")).await.unwrap(), ["a/b/2"]);
        assert_eq!(d.list("", None).await.unwrap().len(), 6);
        assert!(d.list("nope/deeper/", None).await.unwrap().is_empty());
    }

    #[test]
    fn new_directories_and_the_one_above_them_are_fsynced() {
        let dir = tempfile::tempdir().unwrap();
        let leaf = dir.path().join("a/b/c");
        let synced = create_dirs_durably(&leaf).unwrap();
        assert_eq!(
            synced,
            [
                dir.path().to_path_buf(),
                dir.path().join("a"),
                dir.path().join("a/b"),
                leaf.clone(),
            ]
        );
        assert!(leaf.is_dir());
        // Only what is new: `a/b` exists now, so `a/b` (its parent) and `a/b/d` are synced.
        let synced = create_dirs_durably(&dir.path().join("a/b/d")).unwrap();
        assert_eq!(synced, [dir.path().join("a/b"), dir.path().join("a/b/d")]);
        assert!(create_dirs_durably(&leaf).unwrap().is_empty());
    }

    #[tokio::test]
    async fn refuses_keys_that_escape_the_root() {
        let (dir, d) = dest();
        for key in [
            "../escape",
            "/etc/passwd",
            "a/../../b",
            "a//b",
            "a/./b",
            "",
            "x.metadata.json",
            "a\\b",
        ] {
            let err = d
                .put(key, Bytes::from_static(b"x"), &Metadata::new())
                .await
                .unwrap_err();
            assert!(
                matches!(err, DestinationError::Refused { .. }),
                "{key}: {err}"
            );
        }
        assert!(!dir.path().join("escape").exists());
        assert!(d.get("../escape").await.is_err());
        assert!(d.list("../", None).await.is_err());
    }
}
