//! Where sources put what they capture.
//!
//! A source hands its records to a [`RecordSink`] together with the position in its input that
//! those records bring it to (its checkpoint). The sink makes both durable *in one step* before
//! `append` returns: that is what lets a restarted source resume from its checkpoint without
//! losing or repeating a record. A source must therefore only move its own notion of "done" after
//! `append` returned `Ok`.
//!
//! Every record the agent produces (host sources, the sidecar, PutAuditEvents) reaches the
//! buffer through [`Fitted`], which makes it fit the collector's limits *before* it is stored
//! ([`groundtrail_common::fit`]: the same constants the collector checks, measured on the
//! serialized JSON, what is cut marked in `additionalEventData.groundtrailTruncated`). This is
//! the one place the check happens: a source may cap what it reads for its own reasons, but
//! none has to get the collector's arithmetic right, and no record is stored that the collector
//! would refuse (a refused record is an action missing from the trail).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use groundtrail_common::Record;
use groundtrail_common::fit;
use groundtrail_common::wire::limits::MAX_RECORD_BYTES;

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

/// Records [`Fitted`] had to cut, since the agent started (`groundtrail_records_truncated_total`).
pub static TRUNCATED: AtomicU64 = AtomicU64::new(0);

/// A [`RecordSink`] that makes every record fit the collector's limits before handing it on.
pub struct Fitted {
    inner: Arc<dyn RecordSink>,
}

impl Fitted {
    pub fn new(inner: Arc<dyn RecordSink>) -> Fitted {
        Fitted { inner }
    }

    fn fit_one(r: &mut Record) {
        if let Some(cut) = fit::fit(r) {
            TRUNCATED.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                event_source = %r.event_source,
                event_name = %r.event_name,
                event_id = %r.event_id,
                original_bytes = cut.original_bytes,
                members = ?cut.members,
                "record over the collector's limits: cut to fit and marked"
            );
        }
    }
}

impl RecordSink for Fitted {
    fn append(
        &self,
        mut records: Vec<Record>,
        checkpoint: Option<Checkpoint>,
    ) -> BoxFuture<'_, Result<(), SinkError>> {
        for r in &mut records {
            Self::fit_one(r);
        }
        self.inner.append(records, checkpoint)
    }

    /// Records given as JSON are the PutAuditEvents ones, whose conversion already refuses an
    /// event over any member cap (as CloudTrail Lake does); only the total length is checked
    /// here on the fast path, and a record over it is parsed, cut and serialized again.
    fn append_json(
        &self,
        mut records: Vec<Vec<u8>>,
        checkpoint: Option<Checkpoint>,
    ) -> BoxFuture<'_, Result<(), SinkError>> {
        for j in &mut records {
            if j.len() <= MAX_RECORD_BYTES {
                continue;
            }
            let parsed: Result<Record, _> = serde_json::from_slice(j);
            match parsed {
                Ok(mut r) => {
                    Self::fit_one(&mut r);
                    *j = r.to_json();
                }
                Err(e) => {
                    return Box::pin(async move {
                        Err(SinkError::Storage(format!("not a record: {e}")))
                    });
                }
            }
        }
        self.inner.append_json(records, checkpoint)
    }

    fn checkpoint(&self, source: &str) -> Option<Vec<u8>> {
        self.inner.checkpoint(source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::tail::MemorySink;
    use serde_json::json;

    /// Through the wrapper, an oversized record is stored cut, valid and marked; a record that
    /// fits is stored as it was.
    #[tokio::test]
    async fn fitted_sink_cuts_what_the_collector_would_refuse() {
        let mem = MemorySink::new();
        let sink = Fitted::new(mem.clone());
        let mk = |p: serde_json::Value| {
            let mut r = Record::new(
                "exec.onprem.internal",
                "RunCommand",
                "AwsApiCall",
                "onprem-1",
                "123456789012",
            );
            r.user_identity = Some(groundtrail_common::UserIdentity::default());
            r.request_parameters = Some(p);
            r
        };
        let small = mk(json!({"command": "ls"}));
        let big = mk(json!({"argv": vec!["\\".repeat(1000); 80]}));
        assert!(big.validate().is_err());
        sink.append(vec![small.clone(), big], None).await.unwrap();
        let got = mem.records();
        assert_eq!(got[0], small);
        got[1].validate().unwrap();
        assert!(got[1].to_json().len() <= MAX_RECORD_BYTES);
        assert_eq!(
            got[1].additional_event_data.as_ref().unwrap()[fit::MARKER]["members"],
            json!(["requestParameters"])
        );
    }
}
