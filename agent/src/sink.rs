//! Where sources put what they capture.
//!
//! A source hands its records to a [`RecordSink`] together with the position in its input that
//! those records bring it to (its checkpoint). The sink makes both durable *in one step* before
//! `append` returns: that is what lets a restarted source resume from its checkpoint without
//! losing or repeating a record. A source must therefore only move its own notion of "done" after
//! `append` returned `Ok`.

use std::future::Future;
use std::pin::Pin;

use groundtrail_common::Record;

/// A boxed future, so the trait stays object-safe (`Arc<dyn RecordSink>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A source's position in its input, stored with the records it produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Stable key of the source instance, e.g. `auth_log:/var/log/auth.log`.
    pub source: String,
    /// Opaque to the sink; the source's own encoding (JSON is fine).
    pub state: Vec<u8>,
}

/// Why an append did not happen. Nothing of the call was stored in either case.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The buffer is full and its policy is `drop_newest`: the records were dropped, and the
    /// loss was counted so that it reaches the trail as a gap record.
    #[error("buffer full: {dropped} records dropped")]
    Dropped { dropped: u64 },
    /// The agent is shutting down.
    #[error("the agent is shutting down")]
    Closed,
    /// The buffer could not write (disk error).
    #[error("buffer write failed: {0}")]
    Storage(String),
}

/// The durable input side of the agent's buffer.
pub trait RecordSink: Send + Sync {
    /// Stores `records` and, in the same atomic write, `checkpoint`; returns once both are
    /// flushed to disk. Under the `block` full policy this waits for space.
    fn append(
        &self,
        records: Vec<Record>,
        checkpoint: Option<Checkpoint>,
    ) -> BoxFuture<'_, Result<(), SinkError>>;

    /// [`RecordSink::append`] of records already serialized, each one a record's compact JSON
    /// ([`Record::to_json`]); a caller that has the JSON anyway saves serializing it again.
    /// The default parses them back; the buffer stores them as they are.
    fn append_json(
        &self,
        records: Vec<Vec<u8>>,
        checkpoint: Option<Checkpoint>,
    ) -> BoxFuture<'_, Result<(), SinkError>> {
        let parsed: Result<Vec<Record>, _> = records.iter().map(|j| Record::from_json(j)).collect();
        match parsed {
            Ok(records) => self.append(records, checkpoint),
            Err(e) => {
                Box::pin(async move { Err(SinkError::Storage(format!("not a record: {e}"))) })
            }
        }
    }

    /// The last checkpoint stored for `source`, if any.
    fn checkpoint(&self, source: &str) -> Option<Vec<u8>>;
}
