//! [`SegmentLog`]: the [`Log`] on local disk, as files of consecutive entries.
//!
//! # On-disk format
//!
//! A directory of *segments*, each named after the position of its first entry as 20 decimal
//! digits (`00000000000000001234.seg`), so that names sort in log order. A segment is a
//! sequence of frames, one per entry:
//!
//! | bytes | meaning |
//! |---|---|
//! | 4 | payload length, u32 little-endian |
//! | 4 | CRC-32 (IEEE) of the payload, u32 little-endian |
//! | n | the payload: the entry's bytes exactly as appended |
//!
//! Appends go to the newest segment; once it holds [`SegmentLogSettings::segment_bytes`] a new
//! one starts. Trimming deletes whole segments that lie entirely below the trim position and
//! never the newest one, so positions continue across restarts however much was trimmed.
//!
//! # Durability and recovery
//!
//! Appends are positioned writes (`pwrite`) at the segment's end, without fsync; a sync is one
//! `fdatasync` of the newest segment, shared by every caller waiting for it (group commit: the
//! first caller to arrive runs it, the others wait and are covered by it, or run the next one).
//! A segment is fsynced completely, and the directory too, before the next one starts, so
//! everything below the newest segment is durable.
//!
//! After a crash the newest segment may end in a torn frame (a write the crash interrupted:
//! never acknowledged, since acknowledgement waits for the sync). Opening the log checks every
//! frame of the newest segment against its CRC and cuts the file at the first that does not
//! read back whole; older segments were fsynced whole and are only checked when read. Gaps
//! between segments (a file deleted by hand) are refused at open: positions would no longer
//! mean what the journal recorded.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use super::{Entry, Log, LogError, Position};

/// Frame header: length and CRC.
const HEADER: u64 = 8;
/// The largest entry accepted (a batch is capped far below this by the collector's limits).
const MAX_ENTRY: usize = 1 << 30;

/// How a [`SegmentLog`] is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentLogSettings {
    /// Size at which a segment is closed and a new one started. Trimming frees disk space a
    /// whole segment at a time, so this is also how much a fully delivered log can keep.
    pub segment_bytes: u64,
}

impl Default for SegmentLogSettings {
    fn default() -> Self {
        SegmentLogSettings {
            segment_bytes: 64 * 1024 * 1024,
        }
    }
}

/// One segment's bookkeeping: where each of its entries starts in its file.
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    /// Byte offset of each entry's frame; entry `first + i` is at `offsets[i]`.
    offsets: Vec<u64>,
    /// Bytes written (the offset of the next frame).
    len: u64,
}

#[derive(Debug)]
struct Writer {
    /// Segments by first position; the last one is the one appended to.
    segments: BTreeMap<Position, Segment>,
    /// The newest segment's file.
    file: Arc<File>,
    /// The position the next append gets.
    next: Position,
}

impl Writer {
    /// The newest segment's path, for error messages.
    fn newest_path(&self) -> PathBuf {
        self.segments
            .last_key_value()
            .map(|(_, s)| s.path.clone())
            .unwrap_or_default()
    }
}

#[derive(Debug, Default)]
struct SyncState {
    running: bool,
}

/// The log on local disk (see the module doc).
#[derive(Debug)]
pub struct SegmentLog {
    dir: PathBuf,
    settings: SegmentLogSettings,
    writer: Mutex<Writer>,
    sync_state: Mutex<SyncState>,
    synced: Condvar,
    durable: AtomicU64,
    start: AtomicU64,
    end: AtomicU64,
    failed: OnceLock<String>,
}

fn io(path: &Path, source: std::io::Error) -> LogError {
    LogError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn segment_name(first: Position) -> String {
    format!("{first:020}.seg")
}

fn fsync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

/// Reads the frame headers of a segment file. With `verify`, every payload's CRC is checked
/// too. Returns the offsets of the whole frames and the length they cover; a frame that is cut
/// short or (with `verify`) fails its CRC ends the scan there.
fn scan(file: &File, path: &Path, verify: bool) -> Result<(Vec<u64>, u64), LogError> {
    let size = file.metadata().map_err(|e| io(path, e))?.len();
    let mut offsets = Vec::new();
    let mut at = 0u64;
    let mut header = [0u8; HEADER as usize];
    let mut payload = Vec::new();
    while at + HEADER <= size {
        file.read_exact_at(&mut header, at)
            .map_err(|e| io(path, e))?;
        let len = u32::from_le_bytes(header[..4].try_into().unwrap_or_default()) as u64;
        let crc = u32::from_le_bytes(header[4..].try_into().unwrap_or_default());
        // An empty entry is never appended, so a zero length is what a crash leaves when the
        // file grew but its data never reached the disk (a tail of zeros), not a frame.
        if len == 0 || at + HEADER + len > size {
            break;
        }
        if verify {
            payload.resize(len as usize, 0);
            file.read_exact_at(&mut payload, at + HEADER)
                .map_err(|e| io(path, e))?;
            if crc32fast::hash(&payload) != crc {
                break;
            }
        }
        offsets.push(at);
        at += HEADER + len;
    }
    Ok((offsets, at))
}

impl SegmentLog {
    /// Opens the log in `dir` (creating it), recovering the newest segment's tail (see the
    /// module doc).
    pub fn open(dir: &Path, settings: SegmentLogSettings) -> Result<SegmentLog, LogError> {
        if !dir.is_dir() {
            std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
            // The new directory's entry must survive a power loss with what goes into it.
            if let Some(parent) = dir.parent() {
                fsync_dir(parent)?;
            }
        }
        let mut firsts = Vec::new();
        for item in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
            let item = item.map_err(|e| io(dir, e))?;
            let name = item.file_name();
            let Some(first) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            firsts.push(first);
        }
        firsts.sort_unstable();
        let mut segments = BTreeMap::new();
        let last = firsts.last().copied();
        let mut expected: Option<Position> = None;
        for first in firsts {
            if let Some(exp) = expected
                && exp != first
            {
                return Err(LogError::Corrupt {
                    path: dir.display().to_string(),
                    position: exp,
                    why: format!("segments are not contiguous: entries {exp}..{first} are missing"),
                });
            }
            let path = dir.join(segment_name(first));
            let newest = Some(first) == last;
            let file = OpenOptions::new()
                .read(true)
                .write(newest)
                .open(&path)
                .map_err(|e| io(&path, e))?;
            let (offsets, len) = scan(&file, &path, newest)?;
            if newest {
                let size = file.metadata().map_err(|e| io(&path, e))?.len();
                if size != len {
                    tracing::warn!(
                        segment = %path.display(),
                        "log: cutting {} bytes of a torn write after entry {} (never acknowledged)",
                        size - len,
                        first + offsets.len() as u64
                    );
                    file.set_len(len).map_err(|e| io(&path, e))?;
                    file.sync_all().map_err(|e| io(&path, e))?;
                }
            }
            expected = Some(first + offsets.len() as u64);
            segments.insert(first, Segment { path, offsets, len });
        }
        let next = expected.unwrap_or(0);
        let file = match segments.last_key_value() {
            Some((_, seg)) => OpenOptions::new()
                .read(true)
                .write(true)
                .open(&seg.path)
                .map_err(|e| io(&seg.path, e))?,
            None => {
                let path = dir.join(segment_name(0));
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                    .map_err(|e| io(&path, e))?;
                fsync_dir(dir)?;
                segments.insert(
                    0,
                    Segment {
                        path,
                        offsets: Vec::new(),
                        len: 0,
                    },
                );
                file
            }
        };
        let start = segments.keys().next().copied().unwrap_or(0);
        // What survived is what the journal builds on from here: make it certain (a process
        // crash leaves unsynced writes in the page cache, where a machine crash could still
        // take them), so every entry found is durable before anything reads it.
        file.sync_data().map_err(|e| io(dir, e))?;
        Ok(SegmentLog {
            dir: dir.to_path_buf(),
            settings,
            writer: Mutex::new(Writer {
                segments,
                file: Arc::new(file),
                next,
            }),
            sync_state: Mutex::new(SyncState::default()),
            synced: Condvar::new(),
            durable: AtomicU64::new(next),
            start: AtomicU64::new(start),
            end: AtomicU64::new(next),
            failed: OnceLock::new(),
        })
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check(&self) -> Result<(), LogError> {
        match self.failed.get() {
            Some(e) => Err(LogError::Failed(e.clone())),
            None => Ok(()),
        }
    }

    fn fail(&self, e: &LogError) {
        let _ = self.failed.set(e.to_string());
    }

    /// Closes the newest segment (fsynced whole, as the module doc promises) and starts one at
    /// `w.next`.
    fn roll(&self, w: &mut Writer) -> Result<(), LogError> {
        let old = w.newest_path();
        w.file.sync_data().map_err(|e| io(&old, e))?;
        self.durable.fetch_max(w.next, Ordering::SeqCst);
        let path = self.dir.join(segment_name(w.next));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        fsync_dir(&self.dir)?;
        w.segments.insert(
            w.next,
            Segment {
                path,
                offsets: Vec::new(),
                len: 0,
            },
        );
        w.file = Arc::new(file);
        Ok(())
    }
}

impl Log for SegmentLog {
    fn append(&self, data: &[u8]) -> Result<Position, LogError> {
        self.check()?;
        if data.len() > MAX_ENTRY {
            return Err(LogError::TooLarge(data.len()));
        }
        if data.is_empty() {
            // A zero length marks a torn tail (see `scan`).
            return Err(LogError::TooLarge(0));
        }
        let mut w = self.writer();
        let full = w
            .segments
            .last_key_value()
            .is_some_and(|(_, s)| s.len >= self.settings.segment_bytes && !s.offsets.is_empty());
        if full && let Err(e) = self.roll(&mut w) {
            self.fail(&e);
            return Err(e);
        }
        let Some((_, seg)) = w.segments.iter_mut().next_back() else {
            return Err(LogError::Failed("no segment".into()));
        };
        let at = seg.len;
        let mut header = [0u8; HEADER as usize];
        header[..4].copy_from_slice(&(data.len() as u32).to_le_bytes());
        header[4..].copy_from_slice(&crc32fast::hash(data).to_le_bytes());
        let written = w
            .file
            .write_all_at(&header, at)
            .and_then(|()| w.file.write_all_at(data, at + HEADER));
        if let Err(e) = written {
            // Nothing advanced: the next append overwrites the partial frame. Cutting it now
            // keeps a crash before that from finding garbage after the last whole frame.
            let _ = w.file.set_len(at);
            let path = w.newest_path();
            return Err(io(&path, e));
        }
        let position = w.next;
        let Some((_, seg)) = w.segments.iter_mut().next_back() else {
            return Err(LogError::Failed("no segment".into()));
        };
        seg.offsets.push(at);
        seg.len = at + HEADER + data.len() as u64;
        w.next += 1;
        self.end.store(w.next, Ordering::SeqCst);
        Ok(position)
    }

    fn sync(&self) -> Result<Position, LogError> {
        self.check()?;
        let target = self.end.load(Ordering::SeqCst);
        let mut st = self.sync_state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let durable = self.durable.load(Ordering::SeqCst);
            if durable >= target {
                return Ok(durable);
            }
            self.check()?;
            if st.running {
                st = self.synced.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            st.running = true;
            drop(st);
            let (file, end, path) = {
                let w = self.writer();
                let path = w.newest_path();
                (w.file.clone(), w.next, path)
            };
            let result = file.sync_data();
            st = self.sync_state.lock().unwrap_or_else(|p| p.into_inner());
            st.running = false;
            match result {
                Ok(()) => {
                    self.durable.fetch_max(end, Ordering::SeqCst);
                }
                Err(e) => {
                    let e = io(&path, e);
                    self.fail(&e);
                    self.synced.notify_all();
                    return Err(e);
                }
            }
            self.synced.notify_all();
        }
    }

    fn read(&self, from: Position, max_bytes: usize) -> Result<Vec<Entry>, LogError> {
        let mut out = Vec::new();
        let mut from = from;
        let mut budget = max_bytes;
        loop {
            let durable = self.durable.load(Ordering::SeqCst);
            if from >= durable || (budget == 0 && !out.is_empty()) {
                return Ok(out);
            }
            // Look up where the entries are, then read without holding the writer's lock.
            let (path, offsets) = {
                let w = self.writer();
                if from < self.start.load(Ordering::SeqCst) {
                    return Err(LogError::Trimmed(from));
                }
                let Some((&first, seg)) = w.segments.range(..=from).next_back() else {
                    return Err(LogError::Trimmed(from));
                };
                let upto = (durable - first).min(seg.offsets.len() as u64) as usize;
                let skip = (from - first) as usize;
                if skip >= upto {
                    return Ok(out);
                }
                let mut offsets = seg.offsets[skip..upto].to_vec();
                // The end of the last one: the next offset, or the segment's length.
                offsets.push(seg.offsets.get(upto).copied().unwrap_or(seg.len));
                (seg.path.clone(), offsets)
            };
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(LogError::Trimmed(from));
                }
                Err(e) => return Err(io(&path, e)),
            };
            for pair in offsets.windows(2) {
                let (at, next) = (pair[0], pair[1]);
                let mut buf = vec![0u8; (next - at) as usize];
                file.read_exact_at(&mut buf, at).map_err(|e| io(&path, e))?;
                let corrupt = |why: &str| LogError::Corrupt {
                    path: path.display().to_string(),
                    position: from,
                    why: why.to_string(),
                };
                if buf.len() < HEADER as usize {
                    return Err(corrupt("frame shorter than its header"));
                }
                let len = u32::from_le_bytes(buf[..4].try_into().unwrap_or_default()) as usize;
                let crc = u32::from_le_bytes(buf[4..8].try_into().unwrap_or_default());
                if len + HEADER as usize != buf.len() {
                    return Err(corrupt("frame length does not match its place"));
                }
                let data = buf.split_off(HEADER as usize);
                if crc32fast::hash(&data) != crc {
                    return Err(corrupt("CRC mismatch"));
                }
                budget = budget.saturating_sub(data.len());
                out.push(Entry {
                    position: from,
                    data,
                });
                from += 1;
                if budget == 0 {
                    return Ok(out);
                }
            }
        }
    }

    fn trim_below(&self, position: Position) -> Result<(), LogError> {
        let mut w = self.writer();
        let firsts: Vec<Position> = w.segments.keys().copied().collect();
        for pair in firsts.windows(2) {
            let (first, next_first) = (pair[0], pair[1]);
            if next_first > position {
                break;
            }
            if let Some(seg) = w.segments.remove(&first) {
                match std::fs::remove_file(&seg.path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        w.segments.insert(first, seg);
                        return Err(io(&self.dir, e));
                    }
                }
                // Oldest first, each removal durable before the next: a crash can bring back
                // only a prefix of the removed segments, never leave a hole (which `open`
                // refuses).
                fsync_dir(&self.dir)?;
                self.start.store(next_first, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    fn start(&self) -> Position {
        self.start.load(Ordering::SeqCst)
    }

    fn durable_end(&self) -> Position {
        self.durable.load(Ordering::SeqCst)
    }

    fn end(&self) -> Position {
        self.end.load(Ordering::SeqCst)
    }

    fn size_on_disk(&self) -> u64 {
        self.writer().segments.values().map(|s| s.len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SegmentLogSettings {
        SegmentLogSettings { segment_bytes: 100 }
    }

    fn entry(n: u64) -> Vec<u8> {
        format!("entry {n} ")
            .repeat((n % 7 + 1) as usize)
            .into_bytes()
    }

    #[test]
    fn only_synced_entries_are_read_and_they_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        // One segment: a roll would make the entries before it durable.
        let log = SegmentLog::open(dir.path(), SegmentLogSettings::default()).unwrap();
        for n in 0..50 {
            assert_eq!(log.append(&entry(n)).unwrap(), n);
        }
        assert!(
            log.read(0, usize::MAX).unwrap().is_empty(),
            "nothing synced yet"
        );
        assert_eq!(log.sync().unwrap(), 50);
        let all = log.read(0, usize::MAX).unwrap();
        assert_eq!(all.len(), 50);
        for (n, e) in all.iter().enumerate() {
            assert_eq!(e.position, n as u64);
            assert_eq!(e.data, entry(n as u64));
        }
        // A byte budget stops after the entry that exhausts it, never before the first.
        let some = log.read(10, 1).unwrap();
        assert_eq!(some.len(), 1);
        assert_eq!(some[0].position, 10);
        assert!(log.read(50, usize::MAX).unwrap().is_empty());
    }

    #[test]
    fn positions_continue_across_reopen_and_trim() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = SegmentLog::open(dir.path(), small()).unwrap();
            for n in 0..40 {
                log.append(&entry(n)).unwrap();
            }
            log.sync().unwrap();
            log.trim_below(30).unwrap();
            assert!(log.start() > 0 && log.start() <= 30, "{}", log.start());
            assert!(matches!(log.read(0, 10), Err(LogError::Trimmed(0))));
        }
        let log = SegmentLog::open(dir.path(), small()).unwrap();
        assert_eq!(log.end(), 40);
        assert!(log.start() <= 30);
        assert_eq!(log.append(b"after").unwrap(), 40);
        log.sync().unwrap();
        let tail = log.read(30, usize::MAX).unwrap();
        assert_eq!(tail.first().unwrap().position, 30);
        assert_eq!(tail.last().unwrap().data, b"after");
        // Trimming everything keeps the newest segment: positions never restart.
        log.trim_below(u64::MAX).unwrap();
        drop(log);
        let log = SegmentLog::open(dir.path(), small()).unwrap();
        assert_eq!(log.append(b"x").unwrap(), 41);
    }

    #[test]
    fn a_torn_tail_is_cut_at_open_and_earlier_entries_survive() {
        let dir = tempfile::tempdir().unwrap();
        let seg_path;
        {
            let log = SegmentLog::open(dir.path(), SegmentLogSettings::default()).unwrap();
            for n in 0..5 {
                log.append(&entry(n)).unwrap();
            }
            log.sync().unwrap();
            seg_path = dir.path().join(segment_name(0));
        }
        // What a crash inside a write leaves: a header promising more than follows, and
        // separately a whole frame whose payload does not match its CRC.
        let f = OpenOptions::new().append(true).open(&seg_path).unwrap();
        let size = f.metadata().unwrap().len();
        f.write_all_at(&[200, 0, 0, 0, 1, 2, 3, 4, b'p', b'a'], size)
            .unwrap();
        let log = SegmentLog::open(dir.path(), SegmentLogSettings::default()).unwrap();
        assert_eq!(log.end(), 5);
        assert_eq!(std::fs::metadata(&seg_path).unwrap().len(), size);
        assert_eq!(log.append(b"next").unwrap(), 5);
        log.sync().unwrap();
        drop(log);
        let mut bad = vec![3, 0, 0, 0];
        bad.extend_from_slice(&crc32fast::hash(b"abc").to_le_bytes());
        bad.extend_from_slice(b"abd");
        let size = std::fs::metadata(&seg_path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&seg_path).unwrap();
        f.write_all_at(&bad, size).unwrap();
        let log = SegmentLog::open(dir.path(), SegmentLogSettings::default()).unwrap();
        assert_eq!(log.end(), 6);
        log.sync().unwrap();
        let all = log.read(0, usize::MAX).unwrap();
        assert_eq!(all.len(), 6);
        assert_eq!(all[5].data, b"next");
        drop(log);
        // A power loss after the file grew but before its data was written: zeros.
        let size = std::fs::metadata(&seg_path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&seg_path).unwrap();
        f.write_all_at(&[0u8; 64], size).unwrap();
        let log = SegmentLog::open(dir.path(), SegmentLogSettings::default()).unwrap();
        assert_eq!(log.end(), 6, "zeros are no entries");
        assert_eq!(std::fs::metadata(&seg_path).unwrap().len(), size);
    }

    #[test]
    fn a_missing_segment_in_the_middle_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = SegmentLog::open(dir.path(), small()).unwrap();
            for n in 0..40 {
                log.append(&entry(n)).unwrap();
            }
            log.sync().unwrap();
        }
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        assert!(names.len() >= 3);
        std::fs::remove_file(&names[1]).unwrap();
        let err = SegmentLog::open(dir.path(), small()).unwrap_err();
        assert!(err.to_string().contains("not contiguous"), "{err}");
    }

    #[test]
    fn damage_below_the_tail_is_reported_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let log = SegmentLog::open(dir.path(), small()).unwrap();
        for n in 0..20 {
            log.append(&entry(n)).unwrap();
        }
        log.sync().unwrap();
        let first = dir.path().join(segment_name(0));
        let f = OpenOptions::new().write(true).open(&first).unwrap();
        f.write_all_at(b"X", HEADER + 1).unwrap();
        let err = log.read(0, usize::MAX).unwrap_err();
        assert!(
            matches!(err, LogError::Corrupt { position: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn concurrent_appenders_share_syncs_and_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(SegmentLog::open(dir.path(), small()).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut mine = Vec::new();
                    for n in 0..200u64 {
                        let data = format!("{t}:{n}").into_bytes();
                        let p = log.append(&data).unwrap();
                        // Durable once sync returns: readable at once.
                        assert!(log.sync().unwrap() > p);
                        mine.push((p, data));
                    }
                    mine
                })
            })
            .collect();
        let mut expected: Vec<(u64, Vec<u8>)> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        expected.sort();
        let got: Vec<(u64, Vec<u8>)> = log
            .read(0, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|e| (e.position, e.data))
            .collect();
        assert_eq!(got, expected);
    }
}
