//! Getting the sidecar's records into the agent's buffer without slowing the proxy down.
//!
//! Requests hand their finished records to one writer task through a bounded queue
//! (`max_pending_records`). The writer takes whatever is queued (up to [`MAX_BATCH`]) and makes
//! it durable with *one* [`RecordSink::append`], so a burst of requests shares one disk flush.
//!
//! # Loss accounting
//!
//! A record can fail to reach the buffer in three ways, and each is counted so that the loss
//! itself reaches the trail:
//! - the buffer is full under its `drop_newest` policy: the buffer refuses the append, counts
//!   the records and writes its own `RecordsDropped` record (see `buffer/loss.rs`); the writer
//!   adds nothing, so nothing is counted twice;
//! - the queue in front of the writer is full (the buffer is slow or blocked under its `block`
//!   policy): the record is dropped *here* and counted;
//! - the buffer fails (disk error) or is closed: counted here.
//!
//! What is counted here is written as one `SidecarRecordsLost` record (eventSource
//! `groundtrail.<domain>`, like the agent's other loss records) in front of the next batch the
//! buffer accepts, with the count, the reasons and the first and last time a record was lost. It
//! is only cleared once that batch is durable, so a failing buffer cannot lose the loss report.
//!
//! # Durable writes (fail_closed)
//!
//! [`Writer::write_durable`] queues a record *and waits* until the append that carries it has
//! returned, with a deadline. The proxy uses it for the write-ahead record under `fail_closed`
//! (see the module documentation of `sidecar`).

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use groundtrail_common::Record;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::host_identity::HostIdentity;
use crate::sink::{RecordSink, SinkError};

use super::STATS;

/// Most records in one append.
pub const MAX_BATCH: usize = 512;

/// Why a durable write did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error("the record queue is full")]
    QueueFull,
    #[error("the buffer did not confirm the record within {0:?}")]
    Timeout(Duration),
    #[error("the buffer refused the record: {0}")]
    Refused(String),
    #[error("the sidecar is shutting down")]
    Closed,
}

struct Job {
    record: Record,
    ack: Option<oneshot::Sender<Result<(), WriteError>>>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Loss {
    count: u64,
    queue_full: u64,
    sink_error: u64,
    closed: u64,
    first: Option<String>,
    last: Option<String>,
    last_error: Option<String>,
}

impl Loss {
    fn add(&mut self, n: u64, why: &WriteError, detail: Option<String>) {
        if n == 0 {
            return;
        }
        self.count += n;
        match why {
            WriteError::QueueFull => self.queue_full += n,
            WriteError::Closed => self.closed += n,
            _ => self.sink_error += n,
        }
        let now = groundtrail_common::time::json_time(groundtrail_common::time::now_secs());
        if self.first.is_none() {
            self.first = Some(now.clone());
        }
        self.last = Some(now);
        if detail.is_some() {
            self.last_error = detail;
        }
        STATS
            .records_lost
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn minus(&mut self, written: &Loss) {
        self.count -= written.count;
        self.queue_full -= written.queue_full;
        self.sink_error -= written.sink_error;
        self.closed -= written.closed;
        if self.count == 0 {
            *self = Loss::default();
        }
    }
}

/// The handle requests use to submit records. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
    loss: Arc<Mutex<Loss>>,
}

impl Writer {
    /// Starts the writer task. It ends when every [`Writer`] clone is dropped and the queue is
    /// drained.
    pub fn spawn(
        sink: Arc<dyn RecordSink>,
        capacity: usize,
        id: HostIdentity,
        event_source: String,
    ) -> (Writer, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let loss = Arc::new(Mutex::new(Loss::default()));
        let task = tokio::spawn(run(sink, rx, loss.clone(), id, event_source));
        (Writer { tx, loss }, task)
    }

    fn count_loss(&self, n: u64, why: &WriteError) {
        if let Ok(mut l) = self.loss.lock() {
            l.add(n, why, None);
        }
    }

    /// Queues a record without waiting (fail_open). If the queue is full the record is dropped
    /// and counted (see the module documentation).
    pub fn submit(&self, record: Record) {
        match self.tx.try_send(Job { record, ack: None }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("sidecar record queue full: record dropped and counted");
                self.count_loss(1, &WriteError::QueueFull);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.count_loss(1, &WriteError::Closed),
        }
    }

    /// Queues a record and waits until the buffer has made it durable, at most `timeout`.
    /// On `Err` the caller must assume the record is *not* stored (it may still be stored later
    /// after a timeout; the caller records the outcome in a follow-up record either way).
    pub async fn write_durable(&self, record: Record, timeout: Duration) -> Result<(), WriteError> {
        let (ack, done) = oneshot::channel();
        let job = Job {
            record,
            ack: Some(ack),
        };
        let wait = async {
            self.tx.send(job).await.map_err(|_| WriteError::Closed)?;
            done.await.map_err(|_| WriteError::Closed)?
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r,
            Err(_) => Err(WriteError::Timeout(timeout)),
        }
    }
}

async fn run(
    sink: Arc<dyn RecordSink>,
    mut rx: mpsc::Receiver<Job>,
    loss: Arc<Mutex<Loss>>,
    id: HostIdentity,
    event_source: String,
) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let pending = loss.lock().map(|l| l.clone()).unwrap_or_default();
        let mut records = Vec::with_capacity(jobs.len() + 1);
        if pending.count > 0 {
            records.push(loss_record(&id, &event_source, &pending));
        }
        let mut acks = Vec::new();
        let mut fire_and_forget = 0u64;
        for j in jobs {
            records.push(j.record);
            match j.ack {
                Some(a) => acks.push(a),
                None => fire_and_forget += 1,
            }
        }
        let n = records.len() as u64;
        let outcome = sink.append(records, None).await;
        let result = match &outcome {
            Ok(()) => {
                if let Ok(mut l) = loss.lock() {
                    l.minus(&pending);
                }
                STATS
                    .records_written
                    .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
            Err(SinkError::Dropped { .. }) => {
                // The buffer counted these and reports them itself.
                Err(WriteError::Refused("buffer full (drop_newest)".into()))
            }
            Err(SinkError::Closed) => {
                if let Ok(mut l) = loss.lock() {
                    l.add(fire_and_forget, &WriteError::Closed, None);
                }
                Err(WriteError::Closed)
            }
            Err(SinkError::Storage(e)) => {
                tracing::error!(error = %e, records = n, "sidecar records could not be stored");
                let why = WriteError::Refused(e.clone());
                if let Ok(mut l) = loss.lock() {
                    l.add(fire_and_forget, &why, Some(e.clone()));
                }
                Err(why)
            }
        };
        for a in acks {
            let _ = a.send(result.clone());
        }
    }
    // Last chance for a pending loss report (e.g. after a burst at shutdown).
    let pending = loss.lock().map(|l| l.clone()).unwrap_or_default();
    if pending.count > 0 {
        let _ = sink
            .append(vec![loss_record(&id, &event_source, &pending)], None)
            .await;
    }
}

fn loss_record(id: &HostIdentity, event_source: &str, l: &Loss) -> Record {
    id.agent_record(
        "SidecarRecordsLost",
        json!({
            "host": id.host,
            "eventSource": event_source,
            "count": l.count,
            "reasons": {"queueFull": l.queue_full, "bufferError": l.sink_error, "closed": l.closed},
            "firstLostTime": l.first,
            "lastLostTime": l.last,
            "lastError": l.last_error,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::{BoxFuture, Checkpoint};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Fails the first `fail` appends with a storage error, then stores.
    struct Flaky {
        fail: AtomicUsize,
        stored: Mutex<Vec<Record>>,
    }

    impl RecordSink for Flaky {
        fn append(
            &self,
            records: Vec<Record>,
            _: Option<Checkpoint>,
        ) -> BoxFuture<'_, Result<(), SinkError>> {
            Box::pin(async move {
                if self.fail.load(Ordering::SeqCst) > 0 {
                    self.fail.fetch_sub(1, Ordering::SeqCst);
                    return Err(SinkError::Storage("disk on fire".into()));
                }
                self.stored.lock().unwrap().extend(records);
                Ok(())
            })
        }
        fn checkpoint(&self, _: &str) -> Option<Vec<u8>> {
            None
        }
    }

    fn id() -> HostIdentity {
        crate::host_identity::testutil::web1()
    }

    fn rec(name: &str) -> Record {
        Record::new(
            "api.onprem.internal",
            name,
            "AwsApiCall",
            "onprem-1",
            "123456789012",
        )
    }

    #[tokio::test]
    async fn storage_failures_become_a_loss_record_once_the_buffer_recovers() {
        let sink = Arc::new(Flaky {
            fail: AtomicUsize::new(1),
            stored: Mutex::new(Vec::new()),
        });
        let (w, task) = Writer::spawn(sink.clone(), 16, id(), "api.onprem.internal".into());
        let e = w
            .write_durable(rec("A"), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, WriteError::Refused(_)));
        w.submit(rec("B"));
        w.write_durable(rec("C"), Duration::from_secs(5))
            .await
            .unwrap();
        drop(w);
        task.await.unwrap();
        let stored = sink.stored.lock().unwrap();
        let names: Vec<&str> = stored.iter().map(|r| r.event_name.as_str()).collect();
        // A was refused (the caller knows: fail_closed answers 503), so it is not counted as lost.
        assert!(names.contains(&"B") && names.contains(&"C") && !names.contains(&"A"));
        assert!(!names.contains(&"SidecarRecordsLost"));
    }

    #[tokio::test]
    async fn fire_and_forget_failures_are_counted_and_reported() {
        let sink = Arc::new(Flaky {
            fail: AtomicUsize::new(1),
            stored: Mutex::new(Vec::new()),
        });
        let (w, task) = Writer::spawn(sink.clone(), 16, id(), "api.onprem.internal".into());
        w.submit(rec("A"));
        // Wait until the failed append happened.
        while sink.fail.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        w.write_durable(rec("B"), Duration::from_secs(5))
            .await
            .unwrap();
        drop(w);
        task.await.unwrap();
        let stored = sink.stored.lock().unwrap();
        let lost: Vec<&Record> = stored
            .iter()
            .filter(|r| r.event_name == "SidecarRecordsLost")
            .collect();
        assert_eq!(lost.len(), 1, "{stored:?}");
        let p = lost[0].request_parameters.as_ref().unwrap();
        assert_eq!(p["count"], 1);
        assert_eq!(p["reasons"]["bufferError"], 1);
        assert_eq!(p["lastError"], "disk on fire");
        lost[0].validate().unwrap();
    }
}
