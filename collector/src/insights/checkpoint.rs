//! The Insights detector's saved state: the detector and the log position it has read to.
//!
//! # Guarantees
//!
//! - **All or nothing.** A save writes a temporary file, fsyncs it, renames it over the old
//!   one and fsyncs the directory, so after a crash the file is the previous save or this one,
//!   never a mixture.
//! - **Never a reason to stop the trail.** Insights are derived from the log; a checkpoint
//!   that cannot be read (damaged, or written by an incompatible version) is renamed to
//!   `<name>.damaged` for an operator, and the detector starts over (no Insights until it has
//!   a baseline again). The error is logged, not fatal.
//!
//! # Format
//!
//! One JSON document: `{"version": 1, "position": <next log entry to read>, "detector": {...},
//! "pending": [...]}` where `detector` is [`Detector`]'s own serialization (integers and
//! strings only) and `pending` (absent when empty) the Insights records of a flush not yet
//! known to be committed.

use std::io::Write;
use std::path::{Path, PathBuf};

use groundtrail_detection::insights::Detector;
use serde::{Deserialize, Serialize};

/// The format this module writes and reads.
const VERSION: u32 = 1;

/// Why a checkpoint could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("insights checkpoint {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The detector and the log position up to which it has read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    version: u32,
    /// The next log entry to read.
    pub position: u64,
    pub detector: Detector,
    /// Insights records the detector found and the journal may not have yet: the findings of
    /// a flush on the wall clock, saved before they are committed because a replay of the log
    /// would not find them again (see [`crate::insights`]). Committed first on the next start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<serde_json::Value>,
}

impl Checkpoint {
    pub fn new(position: u64, detector: Detector) -> Checkpoint {
        Checkpoint {
            version: VERSION,
            position,
            detector,
            pending: Vec::new(),
        }
    }
}

/// Reads the checkpoint at `path`: `None` when there is none, or when it could not be read
/// (then it is set aside and the reason logged; see the module doc).
pub fn load(path: &Path) -> Option<Checkpoint> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::error!(
                "insights: cannot read {} ({e}); the detector starts without a baseline",
                path.display()
            );
            return None;
        }
    };
    let why = match serde_json::from_slice::<Checkpoint>(&bytes) {
        Ok(c) if c.version == VERSION => return Some(c),
        Ok(c) => format!("version {} is not {VERSION}", c.version),
        Err(e) => e.to_string(),
    };
    let aside = path.with_extension("json.damaged");
    let moved = std::fs::rename(path, &aside);
    tracing::error!(
        "insights: {} cannot be used ({why}); {}; the detector starts without a baseline",
        path.display(),
        match moved {
            Ok(()) => format!("kept as {}", aside.display()),
            Err(e) => format!("and could not be moved aside ({e})"),
        }
    );
    None
}

/// Replaces the checkpoint at `path` with `checkpoint`, durably (see the module doc).
pub fn save(path: &Path, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
    let io = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Plain structs of numbers and strings always serialize.
    let bytes = serde_json::to_vec(checkpoint).unwrap_or_default();
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use groundtrail_detection::insights::InsightsConfig;
    use serde_json::json;

    #[test]
    fn saves_replace_and_a_damaged_file_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("insights.json");
        assert!(load(&path).is_none());
        let mut det = Detector::new(InsightsConfig::default()).unwrap();
        det.observe(&json!({
            "eventTime": "2026-12-07T10:00:00Z", "eventSource": "s.onprem.internal",
            "eventName": "N", "awsRegion": "r-1", "eventType": "AwsApiCall"
        }));
        save(&path, &Checkpoint::new(7, det.clone())).unwrap();
        save(&path, &Checkpoint::new(9, det.clone())).unwrap();
        let back = load(&path).unwrap();
        assert_eq!((back.position, &back.detector), (9, &det));
        assert!(!path.with_extension("json.tmp").exists());

        std::fs::write(&path, b"{\"version\":1,\"position\":").unwrap();
        assert!(load(&path).is_none());
        assert!(!path.exists());
        assert_eq!(
            std::fs::read(path.with_extension("json.damaged")).unwrap(),
            b"{\"version\":1,\"position\":"
        );
        // A later version's file is not guessed at either.
        let mut v2 = serde_json::to_value(Checkpoint::new(1, det)).unwrap();
        v2["version"] = 2.into();
        std::fs::write(&path, v2.to_string()).unwrap();
        assert!(load(&path).is_none());
    }
}
