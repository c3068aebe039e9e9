//! Buffer -> collector: batches, compresses, sends, retries, and deletes only what the collector
//! committed.
//!
//! One batch is in flight at a time, always the head of the buffer, so the commit point the
//! collector returns is simply "everything up to here": the shipper hands it to
//! [`Buffer::ack_up_to`] and reads the new head. A batch is cut at the first hole in the
//! sequence numbers (records dropped or skipped), so `X-Groundtrail-Seq-First..Last` always
//! describes a contiguous run and every gap the collector sees between batches is a real one.
//!
//! The body is built from the buffer's stored zstd frames as they are, without decompressing
//! and compressing the records again (see `ship_batch`: what is sent as stored, what is
//! decoded, and why the sequence, line-number and damage guarantees are unchanged). A batch
//! therefore ends at an append's boundary when it can; the wire protocol is unchanged.
//!
//! # Whose answer it is
//!
//! A `400` or `413` is a verdict on the records only when it comes from the collector: an
//! `http://` URL pointing at a TLS port (nginx: "400 The plain HTTP request was sent to HTTPS
//! port"), a proxy's `413`, or some other server on a wrong port answer the same status codes
//! and say nothing about the records. So only an answer that carries the collector's marker
//! header `X-Groundtrail-Error` *and* whose body is the collector's error JSON with the same
//! `__type`, one of the codes the collector uses to judge records, may set a record aside.
//! Everything else is transient: retried with backoff, and `status` says what is wrong (e.g.
//! "answer is not from a groundtrail collector").
//!
//! # How answers are handled
//!
//! | answer | meaning | what the shipper does |
//! |---|---|---|
//! | `200` with the collector's JSON | durable in the collector's journal | delete up to `commitPoint` (at most the batch's last seq); if the deletion fails (disk), retry the deletion with backoff, never re-send the batch in a loop |
//! | marked `400`/`422` (`InvalidData`, `FieldNotFound`, `FieldTooLong`) naming a `line` | that record is invalid; nothing of the batch was written | set that record aside (see below), send the rest again at once |
//! | the same without a line | something in the batch is invalid | re-send one record per batch until the culprit is named, then set it aside |
//! | marked `413` (`RequestEntityTooLarge`, `RecordTooLarge`, `LimitExceededException`) | batch too large | halve the batch size and send again; a single record still too large is set aside |
//! | marked `401`/`403` | this agent is not allowed (certificate, account, region) | retry with backoff, forever, and say so in `status`: it is a configuration problem, and setting records aside would turn every record into a loss |
//! | any answer without the marker (or whose body is not the collector's error JSON), `429`, `5xx`, other `4xx`, connection errors, timeouts | transient, or not the collector | retry with jittered exponential backoff, failing over to the next URL |
//!
//! **Why a refused record is set aside instead of retried:** the collector has judged it, and it
//! will judge it the same way next time; retrying would block every later record behind it
//! forever (head-of-line blocking), which is worse than the loss of one record. The record is not
//! deleted: [`Buffer::set_aside`] moves it to the buffer's side tree (bounded, counted within
//! `max_bytes`; see the `buffer` module), and the refusal (sequence number, `eventID`, the
//! collector's error code and message) becomes a `RecordsRejected` record in the trail, so the
//! loss is never silent.
//!
//! **The agent's own records are never set aside.** They are the trail's account of loss
//! (`RecordsRejected`, `RecordsDropped`, ...) and of the agent itself; setting one aside would
//! produce another `RecordsRejected`, refused in turn. The agent builds them within the
//! collector's default limits; if a collector still refuses one (limits set below them), it
//! stays at the head and is retried with backoff, and `status` names it: a configuration to fix,
//! not a record to drop.
//!
//! **Set-aside records are offered again.** `set_aside_retry_ms` after a record is set aside
//! (and after each later round, the interval doubling up to 16 times that while the collector
//! still refuses them all), and at once on `groundtrail-agent resend-set-aside`, the shipper
//! sends each set-aside record on its own (no sequence headers: its number lies behind the
//! commit point; the collector de-duplicates by `eventID`). One the collector accepts is removed
//! from the side tree; one it still refuses stays; an unreachable collector ends the round.
//! A round runs between batches, so it never holds up the head of the buffer for long.
//!
//! During an outage the shipper retries forever (the delay is capped at `retry_max_ms`) while the
//! buffer grows to its limit; then the buffer's full policy applies. Nothing is deleted that the
//! collector did not commit.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use groundtrail_common::shutdown::Shutdown;
use groundtrail_common::wire::{self, BatchResponse, ErrorResponse};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rand::RngExt;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::buffer::{Buffer, Entry};
use crate::host_identity::HostIdentity;
use crate::metrics::Metrics;
use crate::ship_batch::Batch;

/// The collector's error codes that judge the records of a batch (`400`/`422`).
const RECORD_VERDICTS: &[&str] = &["InvalidData", "FieldNotFound", "FieldTooLong"];
/// The collector's error codes that say the batch or a record is too large (`413`).
const SIZE_VERDICTS: &[&str] = &[
    "RequestEntityTooLarge",
    "RecordTooLarge",
    "LimitExceededException",
];

/// What a resend round of the side tree came to (printed by `groundtrail-agent
/// resend-set-aside`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResendReport {
    /// Set-aside records offered to the collector.
    pub offered: u64,
    /// Accepted and removed from the side tree.
    pub accepted: u64,
    /// Refused again by the collector (kept).
    pub still_refused: u64,
    /// Records left in the side tree.
    pub remaining: u64,
    /// Why the round stopped early (collector unreachable, buffer error), if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A request for a resend round, answered when it is done.
pub type ResendRequest = oneshot::Sender<ResendReport>;

/// A parsed collector URL: `http(s)://host[:port][/base]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectorUrl {
    pub raw: String,
    pub tls: bool,
    /// Host name or IP address (without brackets).
    pub host: String,
    pub port: u16,
    /// `host:port` as it goes into the `Host` header.
    pub authority: String,
    /// Path prefix before `/v1/events`, without a trailing slash.
    pub base_path: String,
}

impl CollectorUrl {
    pub fn parse(raw: &str) -> Result<CollectorUrl, String> {
        let (tls, rest) = if let Some(r) = raw.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = raw.strip_prefix("http://") {
            (false, r)
        } else {
            return Err("must start with http:// or https://".into());
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err("no host".into());
        }
        if authority.contains('@') || path.contains(['?', '#']) {
            return Err("user info, query and fragment are not supported".into());
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("unclosed '[' in host")?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| format!("bad port {p:?}"))?,
                None if after.is_empty() => default_port,
                None => return Err(format!("unexpected {after:?} after host")),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    p.parse().map_err(|_| format!("bad port {p:?}"))?,
                ),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return Err("no host".into());
        }
        Ok(CollectorUrl {
            raw: raw.to_string(),
            tls,
            host,
            port,
            authority: authority.to_string(),
            base_path: path.trim_end_matches('/').to_string(),
        })
    }
}

/// What `[shipper]` sets (checked by `crate::settings`): batch limits, timers, compression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShipperSettings {
    /// Most records per batch: 1..=the collector's limit.
    pub batch_max_records: usize,
    /// Most uncompressed bytes per batch: 1 KiB..=the collector's decompressed limit (and its
    /// body limit without compression).
    pub batch_max_bytes: usize,
    /// How long a batch may wait to fill up.
    pub batch_max_wait: Duration,
    /// First retry delay: at least 1 ms, at most `retry_max`.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Longest wait for one answer: at least 100 ms.
    pub request_timeout: Duration,
    /// Whether bodies are zstd.
    pub compress: bool,
    /// How long a stopping agent keeps sending.
    pub drain_timeout: Duration,
    /// First delay before set-aside records are offered again (doubles up to 16 times): at
    /// least 1 s.
    pub set_aside_retry: Duration,
}

/// Everything the shipper runs with: its settings and what the start adds (`[collector]`'s
/// URLs, the loaded TLS config, the host).
#[derive(Debug, Clone)]
pub struct ShipperOptions {
    pub urls: Vec<CollectorUrl>,
    pub tls: Option<Arc<ClientConfig>>,
    /// Whose records are the agent's own (never set aside); its host is sent as
    /// `X-Groundtrail-Agent`.
    pub id: HostIdentity,
    pub settings: ShipperSettings,
}

/// What one send attempt came to.
#[derive(Debug)]
enum Outcome {
    Committed(BatchResponse),
    /// The collector named the bad record (1-based line).
    BadLine(usize, ErrorResponse),
    /// Invalid, but no line named.
    BadBatch(ErrorResponse),
    TooLarge(ErrorResponse),
    /// Retry later (and fail over).
    Retry(String),
}

pub struct Shipper {
    buffer: Buffer,
    opts: ShipperOptions,
    metrics: Arc<Metrics>,
    url: usize,
    conn: Option<SendRequest<Full<Bytes>>>,
    failures: u32,
    /// Current batch size cap (shrinks after a 413 or while looking for a bad record).
    max_records: usize,
    /// `resend-set-aside` requests (from the control socket).
    resend_rx: Option<mpsc::Receiver<ResendRequest>>,
    /// When the side tree is next offered to the collector, if it holds records.
    next_resend: Option<tokio::time::Instant>,
    /// The current delay between resend rounds (backoff while the collector refuses).
    resend_interval: Duration,
    /// Refusals of the agent's own record at the head since the last commit (its backoff).
    held: u32,
}

impl Shipper {
    pub fn new(buffer: Buffer, opts: ShipperOptions, metrics: Arc<Metrics>) -> Shipper {
        let max_records = opts.settings.batch_max_records.max(1);
        let resend_interval = opts.settings.set_aside_retry;
        // Records set aside in an earlier run are offered again soon after the start (the
        // collector's limits may have been changed in between).
        let next_resend = (buffer.status().set_aside > 0)
            .then(|| tokio::time::Instant::now() + Duration::from_secs(5).min(resend_interval));
        Shipper {
            buffer,
            opts,
            metrics,
            url: 0,
            conn: None,
            failures: 0,
            max_records,
            resend_rx: None,
            next_resend,
            resend_interval,
            held: 0,
        }
    }

    /// Serves `resend-set-aside` requests from `rx`.
    pub fn with_resend_requests(mut self, rx: mpsc::Receiver<ResendRequest>) -> Shipper {
        self.resend_rx = Some(rx);
        self
    }

    /// Ships until `stop` fires, then keeps shipping what is buffered (without waiting for
    /// batches to fill) for at most `drain_timeout`. A batch in flight when `stop` fires stays
    /// in the buffer and is sent again (the collector drops duplicates by `eventID`).
    pub async fn run(mut self, mut stop: Shutdown) {
        let mut resend_rx = self.resend_rx.take();
        loop {
            let due = self.next_resend;
            tokio::select! {
                biased;
                _ = stop.recv() => break,
                req = async {
                    match resend_rx.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    match req {
                        Some(reply) => {
                            let report = self.resend_round().await;
                            let _ = reply.send(report);
                        }
                        // The control socket has gone: no more requests.
                        None => resend_rx = None,
                    }
                }
                _ = async {
                    match due {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.resend_round().await;
                }
                r = self.step(false) => {
                    if let Err(e) = r {
                        tracing::error!(error = %e, "cannot read the buffer");
                        self.failures = self.failures.saturating_add(1);
                        tokio::time::sleep(self.backoff()).await;
                    }
                }
            }
        }
        let drain_timeout = self.opts.settings.drain_timeout;
        let drain = async {
            loop {
                match self.step(true).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read the buffer");
                        tokio::time::sleep(self.opts.settings.retry_initial).await;
                    }
                }
            }
        };
        if tokio::time::timeout(drain_timeout, drain).await.is_err() {
            let depth = self.buffer.status().depth;
            tracing::info!(
                depth,
                "stopping with records still buffered; they are sent after restart"
            );
        }
    }

    /// Ships one batch; `false` when draining and there is nothing left.
    async fn step(&mut self, draining: bool) -> Result<bool, crate::buffer::BufferError> {
        let batch = self.next_batch(draining).await?;
        if batch.is_empty() {
            return Ok(false);
        }
        self.ship(&batch).await;
        Ok(true)
    }

    /// The next batch: the head of the buffer, cut at the first sequence hole, once it is full
    /// or its oldest record has waited `batch_max_wait` (at once when draining). Empty only
    /// when draining and the buffer is empty.
    async fn next_batch(&self, draining: bool) -> Result<Batch, crate::buffer::BufferError> {
        loop {
            let appended = self.buffer.appended();
            tokio::pin!(appended);
            appended.as_mut().enable();
            let (max_records, max_bytes) = (self.max_records, self.opts.settings.batch_max_bytes);
            let mut batch = self.reread(max_records, max_bytes).await?;
            if batch.cut_at_hole() || draining {
                return Ok(batch);
            }
            let Some(oldest_ms) = batch.oldest_ms() else {
                appended.await;
                continue;
            };
            let records = batch.len();
            let bytes = batch.json_bytes() + records;
            if batch.full || records >= self.max_records || bytes * 10 >= max_bytes * 9 {
                return Ok(batch);
            }
            let due_ms =
                oldest_ms.saturating_add(self.opts.settings.batch_max_wait.as_millis() as u64);
            let now = now_ms();
            if now >= due_ms {
                return Ok(batch);
            }
            // Until the batch is due, an append only matters once it can have filled the batch:
            // judge that from the depth and the mean record size so far instead of reading the
            // buffer again on every append (that was most of the agent's CPU at a steady trickle).
            let per_record = bytes / records;
            let deadline = tokio::time::Instant::now() + Duration::from_millis(due_ms - now);
            drop(batch);
            loop {
                tokio::select! {
                    _ = &mut appended => {}
                    _ = tokio::time::sleep_until(deadline) => {
                        let mut batch = self.reread(max_records, max_bytes).await?;
                        batch.cut_at_hole();
                        return Ok(batch);
                    }
                }
                // Armed before looking, so that no append between the two is missed.
                appended.set(self.buffer.appended());
                appended.as_mut().enable();
                let depth = usize::try_from(self.buffer.depth()).unwrap_or(usize::MAX);
                if depth >= self.max_records
                    || depth.saturating_mul(per_record).saturating_mul(10) >= max_bytes * 9
                {
                    break;
                }
            }
        }
    }

    /// The head of the buffer (not yet cut at a hole). Stored frames are taken as they are
    /// unless the shipper is narrowing down a refused batch (then every chunk is decoded, so
    /// that a damaged one is found by the buffer, not sent again; see `ship_batch`).
    async fn reread(
        &self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Batch, crate::buffer::BufferError> {
        let buffer = self.buffer.clone();
        let stored = max_records >= self.opts.settings.batch_max_records;
        tokio::task::spawn_blocking(move || buffer.read_batch(max_records, max_bytes, stored))
            .await
            .map_err(|e| crate::buffer::BufferError::Storage(format!("read task failed: {e}")))?
    }

    /// The body of a batch (see `ship_batch`); empty if it cannot be built.
    fn batch_body(&self, batch: &Batch) -> Bytes {
        match batch.body(self.opts.settings.compress) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                // Only decompression of a stored frame (compression off) can fail: the frame is
                // damaged. Send the batch re-read record by record, which finds the damage.
                tracing::error!(error = %e, "cannot build the batch body");
                Bytes::new()
            }
        }
    }

    /// The body of set-aside records sent on their own.
    fn body(&self, batch: &[Entry]) -> Bytes {
        let mut body = Vec::with_capacity(batch.iter().map(|e| e.json.len() + 1).sum());
        for e in batch {
            body.extend_from_slice(&e.json);
            body.push(b'\n');
        }
        if self.opts.settings.compress {
            match zstd::bulk::compress(&body, 3) {
                Ok(z) => Bytes::from(z),
                Err(e) => {
                    tracing::error!(error = %e, "zstd failed; sending uncompressed");
                    Bytes::from(body)
                }
            }
        } else {
            Bytes::from(body)
        }
    }

    /// One request with the request timeout.
    async fn attempt(&mut self, body: Bytes, seq: Option<(u64, u64)>) -> Outcome {
        match tokio::time::timeout(self.opts.settings.request_timeout, self.send(body, seq)).await {
            Ok(o) => o,
            Err(_) => {
                self.conn = None;
                Outcome::Retry(format!(
                    "no answer within {} ms",
                    self.opts.settings.request_timeout.as_millis()
                ))
            }
        }
    }

    /// Whether `json` is one of the agent's own records (never set aside).
    fn is_own(&self, json: &[u8]) -> bool {
        #[derive(Deserialize)]
        struct Source<'a> {
            #[serde(rename = "eventSource", borrow)]
            event_source: Option<std::borrow::Cow<'a, str>>,
        }
        serde_json::from_slice::<Source>(json)
            .ok()
            .and_then(|s| s.event_source)
            .is_some_and(|s| s == self.opts.id.agent_event_source())
    }

    /// The collector refused the record `seq`: set it aside, unless it is one of the agent's
    /// own (then it is held at the head and retried with backoff; see the module docs).
    async fn refused(&mut self, seq: u64, err: &ErrorResponse) {
        let buffer = self.buffer.clone();
        let entry =
            match tokio::task::spawn_blocking(move || buffer.read_from(seq, 1, usize::MAX)).await {
                Ok(Ok(entries)) => entries.into_iter().next().filter(|e| e.seq == seq),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, seq, "cannot read the refused record; will retry");
                    tokio::time::sleep(self.backoff_after(1)).await;
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, seq, "read task failed; will retry");
                    tokio::time::sleep(self.backoff_after(1)).await;
                    return;
                }
            };
        // Gone (acknowledged, or removed as corrupt on this read): nothing to set aside.
        let Some(entry) = entry else { return };
        if self.is_own(&entry.json) {
            let why = format!(
                "the collector refuses the agent's own record (seq {}): {}: {}; it is kept at the head of the buffer and retried: the collector's limits are below what the agent produces",
                entry.seq, err.code, err.message
            );
            tracing::error!("{why}");
            self.held = self.held.saturating_add(1);
            Metrics::add(&self.metrics.retries, 1);
            self.metrics.update_health(|h| h.last_error = Some(why));
            tokio::time::sleep(self.backoff_after(self.held)).await;
            return;
        }
        tracing::error!(seq = entry.seq, code = %err.code, message = %err.message,
            "collector refused a record; setting it aside");
        self.set_aside(entry.seq, err).await;
    }

    /// Counts a failed attempt, shows it in `status`, fails over and backs off.
    async fn transient_failure(&mut self, why: String) {
        Metrics::add(&self.metrics.retries, 1);
        self.failures = self.failures.saturating_add(1);
        let url = self.opts.urls[self.url].raw.clone();
        tracing::warn!(url = %url, error = %why, failures = self.failures, "send failed; will retry");
        self.metrics.update_health(|h| {
            h.url = Some(url);
            h.reachable = Some(false);
            h.last_error = Some(why);
            h.consecutive_failures += 1;
        });
        // Fail over.
        self.conn = None;
        self.url = (self.url + 1) % self.opts.urls.len();
        tokio::time::sleep(self.backoff()).await;
    }

    /// Deletes up to `commit`, retrying the deletion (not the batch) with backoff while the
    /// buffer's storage fails: re-sending a committed batch in a loop would only hammer the
    /// collector with duplicates while the disk is full.
    async fn ack_with_backoff(&mut self, commit: u64) {
        let mut attempts = 0u32;
        loop {
            match self.ack(commit).await {
                Ok(_) => {
                    if attempts > 0 {
                        tracing::info!(
                            commit,
                            attempts,
                            "committed records deleted from the buffer after storage errors"
                        );
                        self.metrics.update_health(|h| h.last_error = None);
                    }
                    return;
                }
                Err(e) => {
                    attempts = attempts.saturating_add(1);
                    let why = format!(
                        "cannot delete committed records (up to seq {commit}) from the buffer: {e}; retrying the deletion, not the batch"
                    );
                    tracing::error!(attempts, "{why}");
                    self.metrics.update_health(|h| h.last_error = Some(why));
                    tokio::time::sleep(self.backoff_after(attempts)).await;
                }
            }
        }
    }

    /// Sends one batch until the collector has decided about it (committed, or a record set
    /// aside). Retries transient failures forever, with backoff and failover.
    async fn ship(&mut self, batch: &Batch) {
        let first = batch.first();
        let last = batch.last();
        let body = self.batch_body(batch);
        if body.is_empty() {
            self.max_records = 1;
            return;
        }
        loop {
            let outcome = self.attempt(body.clone(), Some((first, last))).await;
            match outcome {
                Outcome::Committed(resp) => {
                    let commit = resp.commit_point.unwrap_or(last).min(last);
                    self.held = 0;
                    self.record_success(batch, &resp, commit, body.len());
                    self.ack_with_backoff(commit).await;
                    if self.max_records < self.opts.settings.batch_max_records {
                        self.max_records =
                            (self.max_records * 2).min(self.opts.settings.batch_max_records);
                    }
                    return;
                }
                Outcome::BadLine(line, err) if batch.seq_at_line(line).is_some() => {
                    self.mark_answered();
                    self.refused(batch.seq_at_line(line).unwrap_or(first), &err)
                        .await;
                    return;
                }
                Outcome::BadLine(_, err) | Outcome::BadBatch(err) => {
                    self.mark_answered();
                    if batch.len() == 1 {
                        self.refused(first, &err).await;
                    } else {
                        tracing::warn!(code = %err.code, message = %err.message,
                            "collector refused the batch without naming a record; sending one record per batch to find it");
                        self.max_records = 1;
                    }
                    return;
                }
                Outcome::TooLarge(err) => {
                    self.mark_answered();
                    if batch.len() == 1 {
                        self.refused(first, &err).await;
                    } else {
                        self.max_records = (batch.len() / 2).max(1);
                        tracing::warn!(
                            max_records = self.max_records,
                            "batch too large for the collector; halving"
                        );
                    }
                    return;
                }
                Outcome::Retry(why) => self.transient_failure(why).await,
            }
        }
    }

    /// Offers every set-aside record to the collector again, one per request (see the module
    /// docs), and schedules the next round.
    async fn resend_round(&mut self) -> ResendReport {
        // A round can interrupt a batch in flight: start on a fresh connection rather than one
        // whose answer was abandoned.
        self.conn = None;
        let mut report = ResendReport::default();
        let buffer = self.buffer.clone();
        let entries = match tokio::task::spawn_blocking(move || buffer.set_aside_records()).await {
            Ok(Ok(e)) => e,
            Ok(Err(e)) => {
                report.error = Some(format!("cannot read the side tree: {e}"));
                Vec::new()
            }
            Err(e) => {
                report.error = Some(format!("side-tree read task failed: {e}"));
                Vec::new()
            }
        };
        for entry in entries {
            report.offered += 1;
            let body = self.body(std::slice::from_ref(&entry));
            match self.attempt(body, None).await {
                Outcome::Committed(resp) => {
                    self.mark_answered();
                    Metrics::add(&self.metrics.shipped_records, resp.committed);
                    Metrics::add(&self.metrics.shipped_duplicates, resp.duplicates);
                    let buffer = self.buffer.clone();
                    let seq = entry.seq;
                    match tokio::task::spawn_blocking(move || buffer.remove_set_aside(seq)).await {
                        Ok(Ok(_)) => {
                            report.accepted += 1;
                            tracing::info!(seq, "a set-aside record was accepted on resend");
                        }
                        Ok(Err(e)) => {
                            report.error = Some(format!("cannot remove seq {seq}: {e}"));
                            break;
                        }
                        Err(e) => {
                            report.error = Some(format!("remove task failed: {e}"));
                            break;
                        }
                    }
                }
                Outcome::BadLine(_, err) | Outcome::BadBatch(err) | Outcome::TooLarge(err) => {
                    self.mark_answered();
                    tracing::info!(seq = entry.seq, code = %err.code, message = %err.message,
                        "a set-aside record is still refused; keeping it");
                    report.still_refused += 1;
                }
                Outcome::Retry(why) => {
                    self.conn = None;
                    report.error = Some(why);
                    break;
                }
            }
        }
        report.remaining = self.buffer.status().set_aside;
        self.resend_interval = if report.accepted > 0 || report.offered == 0 {
            self.opts.settings.set_aside_retry
        } else {
            (self.resend_interval * 2).min(self.opts.settings.set_aside_retry * 16)
        };
        self.next_resend =
            (report.remaining > 0).then(|| tokio::time::Instant::now() + self.resend_interval);
        report
    }

    fn mark_answered(&mut self) {
        self.failures = 0;
        let url = self.opts.urls[self.url].raw.clone();
        self.metrics.update_health(|h| {
            h.url = Some(url);
            h.reachable = Some(true);
            h.consecutive_failures = 0;
        });
    }

    fn record_success(&mut self, batch: &Batch, resp: &BatchResponse, commit: u64, wire: usize) {
        self.mark_answered();
        let now = now_ms();
        let m = &self.metrics;
        Metrics::add(&m.shipped_batches, 1);
        Metrics::add(&m.shipped_records, resp.committed);
        Metrics::add(&m.shipped_duplicates, resp.duplicates);
        Metrics::add(&m.shipped_bytes, wire as u64);
        Metrics::add(&m.lag_ms_sum, batch.lag_sum(now, commit));
        m.last_lag_ms.store(
            now.saturating_sub(batch.oldest_ms().unwrap_or(now)),
            Ordering::Relaxed,
        );
        m.update_health(|h| {
            h.last_success_ms = Some(now);
            h.last_error = None;
            h.last_commit_point = Some(commit);
        });
    }

    async fn ack(&self, commit: u64) -> Result<u64, crate::buffer::BufferError> {
        let buffer = self.buffer.clone();
        tokio::task::spawn_blocking(move || buffer.ack_up_to(commit))
            .await
            .map_err(|e| crate::buffer::BufferError::Storage(format!("ack task failed: {e}")))?
    }

    async fn set_aside(&mut self, seq: u64, err: &ErrorResponse) {
        Metrics::add(&self.metrics.rejected, 1);
        if self.next_resend.is_none() {
            self.resend_interval = self.opts.settings.set_aside_retry;
            self.next_resend = Some(tokio::time::Instant::now() + self.resend_interval);
        }
        let buffer = self.buffer.clone();
        let (code, message) = (err.code.clone(), err.message.clone());
        let r = tokio::task::spawn_blocking(move || buffer.set_aside(seq, &code, &message)).await;
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, seq, "cannot set the record aside"),
            Err(e) => tracing::error!(error = %e, seq, "set-aside task failed"),
        }
    }

    /// Jittered exponential backoff: a random delay between half and all of
    /// `min(retry_max, retry_initial * 2^failures)` ("equal jitter": spread out, never zero).
    fn backoff(&self) -> Duration {
        self.backoff_after(self.failures)
    }

    /// [`Shipper::backoff`] after `failures` failures.
    fn backoff_after(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        let cap = self
            .opts
            .settings
            .retry_initial
            .saturating_mul(1u32 << exp)
            .min(self.opts.settings.retry_max);
        let ms = cap.as_millis() as u64;
        let jittered = if ms < 2 {
            ms
        } else {
            rand::rng().random_range(ms / 2..=ms)
        };
        Duration::from_millis(jittered)
    }

    async fn connection(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, String> {
        if self.conn.as_ref().is_some_and(|c| c.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let url = self.opts.urls[self.url].clone();
            self.conn = Some(connect(&url, self.opts.tls.clone()).await?);
        }
        let conn = self.conn.as_mut().ok_or("no connection")?;
        conn.ready().await.map_err(|e| format!("connection: {e}"))?;
        Ok(conn)
    }

    async fn send(&mut self, body: Bytes, seq: Option<(u64, u64)>) -> Outcome {
        let url = self.opts.urls[self.url].clone();
        let mut req = http::Request::builder()
            .method("POST")
            .uri(format!("{}{}", url.base_path, wire::EVENTS_PATH))
            .header(http::header::HOST, &url.authority)
            .header(http::header::CONTENT_TYPE, wire::NDJSON)
            .header(http::header::CONTENT_LENGTH, body.len())
            .header(wire::HEADER_AGENT, &self.opts.id.host);
        if let Some((first, last)) = seq {
            req = req
                .header(wire::HEADER_SEQ_FIRST, first)
                .header(wire::HEADER_SEQ_LAST, last);
        }
        if self.opts.settings.compress {
            req = req.header(http::header::CONTENT_ENCODING, "zstd");
        }
        let req = match req.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => return Outcome::Retry(format!("cannot build request: {e}")),
        };
        let conn = match self.connection().await {
            Ok(c) => c,
            Err(e) => return Outcome::Retry(e),
        };
        let resp = match conn.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                self.conn = None;
                return Outcome::Retry(format!("request failed: {e}"));
            }
        };
        let status = resp.status();
        let marker = resp
            .headers()
            .get(wire::HEADER_ERROR)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = match Limited::new(resp.into_body(), 1 << 20).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                self.conn = None;
                return Outcome::Retry(format!("reading the answer ({status}): {e}"));
            }
        };
        classify(status, marker.as_deref(), &body)
    }
}

/// Maps an HTTP answer to what the shipper does with it (see the module docs): `marker` is the
/// answer's `X-Groundtrail-Error` header. Only an answer the collector marked, whose body is its
/// error JSON with the same code, may judge records.
fn classify(status: http::StatusCode, marker: Option<&str>, body: &[u8]) -> Outcome {
    let text = || String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    if status == http::StatusCode::OK {
        return match serde_json::from_slice::<BatchResponse>(body) {
            Ok(r) => Outcome::Committed(r),
            Err(e) => Outcome::Retry(format!(
                "200 with an unreadable answer ({e}): answer is not from a groundtrail collector? {}",
                text()
            )),
        };
    }
    let err = match (marker, serde_json::from_slice::<ErrorResponse>(body)) {
        (Some(code), Ok(err)) if err.code == code => err,
        _ => {
            return Outcome::Retry(format!(
                "{status}: answer is not from a groundtrail collector (no {} header with its error JSON); check the collector URL (http or https, host, port, a proxy in between): {}",
                wire::HEADER_ERROR,
                text()
            ));
        }
    };
    match status.as_u16() {
        400 | 422 if RECORD_VERDICTS.contains(&err.code.as_str()) => match err.line {
            Some(line) => Outcome::BadLine(line, err),
            None => Outcome::BadBatch(err),
        },
        413 if SIZE_VERDICTS.contains(&err.code.as_str()) => Outcome::TooLarge(err),
        401 | 403 => Outcome::Retry(format!(
            "{status}: the collector refuses this agent ({}: {}); check its certificate and the collector's authorization config",
            err.code, err.message
        )),
        _ => Outcome::Retry(format!("{status}: {}: {}", err.code, err.message)),
    }
}

async fn connect(
    url: &CollectorUrl,
    tls: Option<Arc<ClientConfig>>,
) -> Result<SendRequest<Full<Bytes>>, String> {
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect((url.host.as_str(), url.port)),
    )
    .await
    .map_err(|_| format!("connect to {} timed out", url.authority))?
    .map_err(|e| format!("connect to {}: {e}", url.authority))?;
    let _ = tcp.set_nodelay(true);
    if url.tls {
        let cfg = tls.ok_or_else(|| format!("{} is https but no TLS config", url.raw))?;
        let name = ServerName::try_from(url.host.clone())
            .map_err(|e| format!("{}: not a valid TLS server name: {e}", url.host))?;
        let stream = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {}: {e}", url.authority))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {}: {e}", url.authority))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "collector connection ended");
            }
        });
        Ok(sender)
    } else {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("HTTP handshake with {}: {e}", url.authority))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "collector connection ended");
            }
        });
        Ok(sender)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = CollectorUrl::parse("https://collector.example:7480/base/").unwrap();
        assert!(u.tls);
        assert_eq!((u.host.as_str(), u.port), ("collector.example", 7480));
        assert_eq!(u.base_path, "/base");
        let u = CollectorUrl::parse("http://[::1]:7480").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 7480));
        assert_eq!(u.authority, "[::1]:7480");
        let u = CollectorUrl::parse("http://127.0.0.1").unwrap();
        assert_eq!(u.port, 80);
        for bad in [
            "ftp://x",
            "http://",
            "http://x:port",
            "http://u@x",
            "http://x/?q",
        ] {
            assert!(CollectorUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn classifies_answers() {
        use http::StatusCode as S;
        assert!(matches!(
            classify(
                S::OK,
                None,
                br#"{"committed":2,"duplicates":0,"commitPoint":7}"#
            ),
            Outcome::Committed(BatchResponse {
                commit_point: Some(7),
                ..
            })
        ));
        let bad_line = br#"{"__type":"InvalidData","message":"x","line":3}"#;
        assert!(matches!(
            classify(S::BAD_REQUEST, Some("InvalidData"), bad_line),
            Outcome::BadLine(3, _)
        ));
        assert!(matches!(
            classify(
                S::BAD_REQUEST,
                Some("InvalidData"),
                br#"{"__type":"InvalidData","message":"x"}"#
            ),
            Outcome::BadBatch(_)
        ));
        assert!(matches!(
            classify(
                S::PAYLOAD_TOO_LARGE,
                Some("RequestEntityTooLarge"),
                br#"{"__type":"RequestEntityTooLarge","message":"x"}"#
            ),
            Outcome::TooLarge(_)
        ));
        assert!(matches!(
            classify(S::FORBIDDEN, None, b"{}"),
            Outcome::Retry(_)
        ));
        assert!(matches!(
            classify(S::SERVICE_UNAVAILABLE, None, b"oops"),
            Outcome::Retry(_)
        ));
        assert!(matches!(
            classify(S::OK, None, b"not json"),
            Outcome::Retry(_)
        ));
    }

    /// Only the collector's marked error JSON judges records: the same status and even the same
    /// body without the marker, a marker that disagrees with the body, or a code that is not a
    /// verdict on records, are all retried.
    #[test]
    fn unmarked_answers_never_judge_records() {
        use http::StatusCode as S;
        let nginx = b"<html><head><title>400 The plain HTTP request was sent to HTTPS port</title></head></html>";
        let bad_line = br#"{"__type":"InvalidData","message":"x","line":3}"#;
        let too_large = br#"{"__type":"RequestEntityTooLarge","message":"x"}"#;
        for (status, marker, body) in [
            (S::BAD_REQUEST, None, &nginx[..]),
            (S::BAD_REQUEST, None, &bad_line[..]),
            (S::BAD_REQUEST, Some("InvalidData"), &nginx[..]),
            (S::BAD_REQUEST, Some("FieldTooLong"), &bad_line[..]),
            (S::UNPROCESSABLE_ENTITY, None, &bad_line[..]),
            (
                S::PAYLOAD_TOO_LARGE,
                None,
                &b"<html>413 Request Entity Too Large</html>"[..],
            ),
            (S::PAYLOAD_TOO_LARGE, None, &too_large[..]),
            (
                S::BAD_REQUEST,
                Some("RequestTimeout"),
                &br#"{"__type":"RequestTimeout","message":"x"}"#[..],
            ),
        ] {
            match classify(status, marker, body) {
                Outcome::Retry(why) => assert!(
                    marker.is_some() || why.contains("not from a groundtrail collector"),
                    "{why}"
                ),
                other => panic!("{status} {marker:?}: {other:?}"),
            }
        }
    }
}

/// These tests drive the shipper against a small scripted HTTP endpoint speaking the wire
/// protocol, to pin down each answer's handling precisely (which the real collector cannot be
/// made to produce on demand, e.g. a 400 naming line 2, or exactly three 503s). The black-box
/// tests in `tests/tests/agent.rs` run the real agent against the real collector.
#[cfg(test)]
mod scripted_collector_tests {
    use super::*;
    use crate::buffer::BufferOptions;
    use crate::buffer::FullPolicy;
    use crate::host_identity::HostIdentity;
    use groundtrail_common::Record;
    use http::{Request, Response};
    use hyper::body::Incoming;
    use serde_json::{Value, json};
    use std::sync::Mutex;
    use tokio::sync::broadcast;

    #[derive(Debug, Clone)]
    struct Received {
        first: u64,
        last: u64,
        agent: String,
        records: Vec<Value>,
        /// The body as sent.
        raw: Vec<u8>,
    }

    type Script = dyn Fn(usize, &Received) -> (u16, String) + Send + Sync;

    struct Fake {
        received: Mutex<Vec<Received>>,
        script: Box<Script>,
    }

    async fn handle(fake: Arc<Fake>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let h = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let zstd_body = h("content-encoding") == "zstd";
        let (first, last, agent) = (
            h(wire::HEADER_SEQ_FIRST).parse().unwrap_or(0),
            h(wire::HEADER_SEQ_LAST).parse().unwrap_or(0),
            h(wire::HEADER_AGENT),
        );
        assert_eq!(req.uri().path(), wire::EVENTS_PATH);
        let raw = req.into_body().collect().await.unwrap().to_bytes().to_vec();
        let body = if zstd_body {
            match zstd::decode_all(&raw[..]) {
                Ok(b) => b,
                // As the collector answers a broken zstd stream (no line named).
                Err(e) => {
                    let err = ErrorResponse::new("InvalidData", format!("zstd: {e}"));
                    let mut r =
                        Response::new(Full::new(Bytes::from(serde_json::to_vec(&err).unwrap())));
                    *r.status_mut() = http::StatusCode::BAD_REQUEST;
                    r.headers_mut()
                        .insert(wire::HEADER_ERROR, "InvalidData".parse().unwrap());
                    return r;
                }
            }
        } else {
            raw.clone()
        };
        let records: Vec<Value> = body
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        let rec = Received {
            first,
            last,
            agent,
            records,
            raw,
        };
        let n = fake.received.lock().unwrap().len();
        let (status, body) = (fake.script)(n, &rec);
        fake.received.lock().unwrap().push(rec);
        // Marked like the collector's own error answers, unless the script answers as
        // something else (a body that is not the error JSON).
        let marker = (status != 200)
            .then(|| serde_json::from_str::<ErrorResponse>(&body).ok())
            .flatten()
            .map(|e| e.code);
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
        if let Some(code) = marker {
            r.headers_mut()
                .insert(wire::HEADER_ERROR, code.parse().unwrap());
        }
        r
    }

    async fn serve(script: Box<Script>) -> (Arc<Fake>, String) {
        let fake = Arc::new(Fake {
            received: Mutex::new(Vec::new()),
            script,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let f = fake.clone();
        tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                let f = f.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let f = f.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(f, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        (fake, url)
    }

    fn ok(r: &Received) -> (u16, String) {
        (
            200,
            json!({"committed": r.records.len(), "duplicates": 0, "commitPoint": r.last})
                .to_string(),
        )
    }

    fn id() -> HostIdentity {
        HostIdentity {
            host: "ship-host".into(),
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            domain: "onprem.internal".into(),
            partition: "aws".into(),
        }
    }

    fn setup(
        dir: &std::path::Path,
        urls: &[String],
        max_records: usize,
    ) -> (Buffer, ShipperOptions) {
        let (buffer, _) = Buffer::open(
            &dir.join("buffer"),
            BufferOptions {
                max_bytes: 1 << 24,
                full_policy: FullPolicy::Block,
                flush_delay: Duration::ZERO,
                ..BufferOptions::default()
            },
            id(),
        )
        .unwrap();
        let opts = ShipperOptions {
            urls: urls
                .iter()
                .map(|u| CollectorUrl::parse(u).unwrap())
                .collect(),
            tls: None,
            id: id(),
            settings: ShipperSettings {
                batch_max_records: max_records,
                batch_max_bytes: 1 << 20,
                batch_max_wait: Duration::from_millis(1),
                retry_initial: Duration::from_millis(5),
                retry_max: Duration::from_millis(20),
                request_timeout: Duration::from_secs(10),
                compress: true,
                drain_timeout: Duration::from_millis(100),
                set_aside_retry: Duration::from_secs(3600),
            },
        };
        (buffer, opts)
    }

    /// Records of some other source (not the agent's own, which are never set aside).
    fn recs(n: u64) -> Vec<Record> {
        let other = HostIdentity {
            domain: "app.example".into(),
            ..id()
        };
        (0..n)
            .map(|i| other.agent_record("TestEvent", json!({"i": i})))
            .collect()
    }

    /// Runs the shipper until the buffer is empty (bounded by a generous number of polls so a
    /// bug fails the test instead of hanging it).
    async fn ship_until_empty(buffer: &Buffer, opts: ShipperOptions) -> Arc<Metrics> {
        let metrics = Arc::new(Metrics::default());
        let (tx, rx) = broadcast::channel(1);
        let task = tokio::spawn(
            Shipper::new(buffer.clone(), opts, metrics.clone()).run(Shutdown::new(rx)),
        );
        for _ in 0..3000 {
            if buffer.status().depth == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = tx.send(());
        task.await.unwrap();
        assert_eq!(buffer.status().depth, 0, "buffer did not drain");
        metrics
    }

    fn all_i(fake: &Fake) -> Vec<u64> {
        fake.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.last != 0)
            .flat_map(|r| r.records.clone())
            .filter_map(|r| r["requestParameters"]["i"].as_u64())
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ships_in_contiguous_batches_and_deletes_on_commit() {
        let (fake, url) = serve(Box::new(|_, r| ok(r))).await;
        let dir = tempfile::tempdir().unwrap();
        let (buffer, opts) = setup(dir.path(), &[url], 7);
        buffer.try_append(&recs(20), None).unwrap();
        let m = ship_until_empty(&buffer, opts).await;
        let got = fake.received.lock().unwrap().clone();
        assert_eq!(all_i(&fake), (0..20).collect::<Vec<_>>());
        for b in &got {
            assert_eq!(b.agent, "ship-host");
            assert_eq!(b.last - b.first + 1, b.records.len() as u64);
            assert!(b.records.len() <= 7);
        }
        for w in got.windows(2) {
            assert_eq!(w[1].first, w[0].last + 1);
        }
        assert_eq!(m.shipped_records.load(Ordering::Relaxed), 20);
        assert_eq!(
            buffer.status().last_commit_point,
            Some(got.last().unwrap().last)
        );
    }

    /// `ship_batch`: a batch of whole chunks is their stored zstd frames, byte for byte, one
    /// after the other: nothing decompressed or compressed again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ships_the_stored_frames_as_they_are() {
        let (fake, url) = serve(Box::new(|_, r| ok(r))).await;
        let dir = tempfile::tempdir().unwrap();
        let (buffer, opts) = setup(dir.path(), &[url], 100);
        for a in 0..5 {
            buffer.try_append(&recs(5)[..a + 1], None).unwrap();
        }
        let stored: Vec<u8> = buffer
            .raw_tree()
            .scan_prefix([crate::buffer::K_RECORD])
            .flat_map(|kv| kv.unwrap().1[crate::buffer::CHUNK_HEADER..].to_vec())
            .collect();
        ship_until_empty(&buffer, opts).await;
        let got = fake.received.lock().unwrap().clone();
        assert_eq!(got.len(), 1, "one batch");
        assert_eq!(got[0].raw, stored);
        assert_eq!(got[0].records.len(), 15);
        assert_eq!(got[0].last - got[0].first + 1, 15);
        assert_eq!(all_i(&fake), [0, 0, 1, 0, 1, 2, 0, 1, 2, 3, 0, 1, 2, 3, 4]);
    }

    /// `ship_batch`: a stored frame that is damaged is refused by the collector (broken zstd,
    /// no line); the shipper then reads record by record, the buffer removes and reports the
    /// damaged chunk, and every other record is delivered: the damage is neither resent
    /// forever nor set aside.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_damaged_stored_frame_is_reported_as_loss_not_resent() {
        let (fake, url) = serve(Box::new(|_, r| ok(r))).await;
        let dir = tempfile::tempdir().unwrap();
        let (buffer, opts) = setup(dir.path(), &[url], 100);
        let r = recs(6);
        for a in 0..3 {
            buffer.try_append(&r[a * 2..a * 2 + 2], None).unwrap();
        }
        let keys: Vec<_> = buffer
            .raw_tree()
            .scan_prefix([crate::buffer::K_RECORD])
            .map(|kv| kv.unwrap().0)
            .collect();
        let mut v = buffer.raw_tree().get(&keys[1]).unwrap().unwrap().to_vec();
        let n = v.len();
        v[n - 4..].copy_from_slice(b"\xde\xad\xbe\xef");
        buffer.raw_tree().insert(&keys[1], v).unwrap();
        ship_until_empty(&buffer, opts).await;
        assert_eq!(all_i(&fake), [0, 1, 4, 5]);
        let got = fake.received.lock().unwrap().clone();
        let names: Vec<&str> = got
            .iter()
            .flat_map(|b| b.records.iter())
            .filter_map(|r| r["eventName"].as_str())
            .collect();
        assert_eq!(
            names.iter().filter(|n| **n == "BufferCorruption").count(),
            1
        );
        let st = buffer.status();
        assert_eq!((st.corrupt_total, st.set_aside), (2, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fails_over_and_rides_out_an_outage_without_deleting() {
        // A port with nothing listening, then a collector that is "down" (503) three times.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let (fake, url) = serve(Box::new(|n, r| {
            if n < 3 {
                (
                    503,
                    json!({"__type": "ServiceUnavailable", "message": "down"}).to_string(),
                )
            } else {
                ok(r)
            }
        }))
        .await;
        let dir = tempfile::tempdir().unwrap();
        let (buffer, opts) = setup(dir.path(), &[dead, url], 100);
        buffer.try_append(&recs(5), None).unwrap();
        let m = ship_until_empty(&buffer, opts).await;
        let got = fake.received.lock().unwrap().clone();
        assert_eq!(got.len(), 4, "three refused attempts, then one commit");
        assert!(
            got.windows(2)
                .all(|w| w[0].first == w[1].first && w[0].last == w[1].last),
            "the same batch is re-sent until committed"
        );
        assert!(m.retries.load(Ordering::Relaxed) >= 3);
        assert_eq!(all_i(&fake)[15..], [0, 1, 2, 3, 4]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_record_is_set_aside_and_reported() {
        // Line 2 of any batch containing i == 3 is refused; the collector writes nothing then.
        let (fake, url) = serve(Box::new(|_, r| {
            match r
                .records
                .iter()
                .position(|v| v["requestParameters"]["i"] == 3)
            {
                Some(p) => (
                    400,
                    json!({"__type": "InvalidData", "message": "bad record", "line": p + 1})
                        .to_string(),
                ),
                None => ok(r),
            }
        }))
        .await;
        let dir = tempfile::tempdir().unwrap();
        let (buffer, opts) = setup(dir.path(), &[url], 100);
        buffer.try_append(&recs(6), None).unwrap();
        let m = ship_until_empty(&buffer, opts).await;
        let committed: Vec<Value> = fake
            .received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| !r.records.iter().any(|v| v["requestParameters"]["i"] == 3))
            .flat_map(|r| r.records.clone())
            .collect();
        let is: Vec<u64> = committed
            .iter()
            .filter_map(|r| r["requestParameters"]["i"].as_u64())
            .collect();
        assert_eq!(is, vec![0, 1, 2, 4, 5]);
        let report = committed
            .iter()
            .find(|r| r["eventName"] == "RecordsRejected")
            .expect("loss reported");
        assert_eq!(
            report["requestParameters"]["records"][0]["errorCode"],
            "InvalidData"
        );
        assert_eq!(m.rejected.load(Ordering::Relaxed), 1);
        let aside = buffer.set_aside_records().unwrap();
        assert_eq!(aside.len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unlocated_refusal_is_narrowed_down_to_one_record() {
        let (fake, url) = serve(Box::new(|_, r| {
            if r.records.iter().any(|v| v["requestParameters"]["i"] == 2) {
                (
                    400,
                    json!({"__type": "InvalidData", "message": "somewhere"}).to_string(),
                )
            } else {
                ok(r)
            }
        }))
        .await;
        let dir = tempfile::tempdir().unwrap();
        let (buffer, opts) = setup(dir.path(), &[url], 100);
        buffer.try_append(&recs(4), None).unwrap();
        ship_until_empty(&buffer, opts).await;
        let aside = buffer.set_aside_records().unwrap();
        assert_eq!(aside.len(), 1);
        let v: Value = serde_json::from_slice(&aside[0].json).unwrap();
        assert_eq!(v["requestParameters"]["i"], 2);
        let mut is = all_i(&fake);
        is.sort();
        is.dedup();
        assert!(is.contains(&0) && is.contains(&1) && is.contains(&3));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_partial_commit_point_re_sends_the_rest() {
        let (fake, url) = serve(Box::new(|n, r| {
            if n == 0 {
                (
                    200,
                    json!({"committed": 2, "duplicates": 0, "commitPoint": r.first + 1})
                        .to_string(),
                )
            } else {
                ok(r)
            }
        }))
        .await;
        let dir = tempfile::tempdir().unwrap();
        let (buffer, opts) = setup(dir.path(), &[url], 100);
        buffer.try_append(&recs(5), None).unwrap();
        ship_until_empty(&buffer, opts).await;
        let got = fake.received.lock().unwrap().clone();
        assert_eq!(got[1].first, got[0].first + 2);
        assert_eq!(all_i(&fake), vec![0, 1, 2, 3, 4, 2, 3, 4]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forbidden_is_retried_not_set_aside() {
        let (fake, url) = serve(Box::new(|n, r| {
            if n < 2 {
                (
                    403,
                    json!({"__type": "AccessDenied", "message": "account not allowed"}).to_string(),
                )
            } else {
                ok(r)
            }
        }))
        .await;
        let dir = tempfile::tempdir().unwrap();
        let (buffer, opts) = setup(dir.path(), &[url], 100);
        buffer.try_append(&recs(3), None).unwrap();
        ship_until_empty(&buffer, opts).await;
        assert!(buffer.set_aside_records().unwrap().is_empty());
        assert_eq!(fake.received.lock().unwrap().len(), 3);
    }

    /// A 400 or 413 that is not the collector's (no marker, not its JSON) keeps every record in
    /// the buffer: retried with backoff, nothing set aside, and all of it delivered once the
    /// answers are the collector's again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unmarked_refusal_is_retried_not_judged() {
        let (fake, url) = serve(Box::new(|n, r| match n {
            0..4 => (
                400,
                "<html>400 The plain HTTP request was sent to HTTPS port</html>".into(),
            ),
            4..8 => (413, "<html>413 Request Entity Too Large</html>".into()),
            _ => ok(r),
        }))
        .await;
        let dir = tempfile::tempdir().unwrap();
        let (buffer, opts) = setup(dir.path(), &[url], 100);
        buffer.try_append(&recs(5), None).unwrap();
        let m = ship_until_empty(&buffer, opts).await;
        assert!(buffer.set_aside_records().unwrap().is_empty());
        assert_eq!(m.rejected.load(Ordering::Relaxed), 0);
        assert!(m.retries.load(Ordering::Relaxed) >= 8);
        let got = fake.received.lock().unwrap().clone();
        assert_eq!(got.len(), 9);
        assert!(
            got.iter().all(|b| b.records.len() == 5),
            "never narrowed down"
        );
    }

    /// The agent's own record refused by the collector is held at the head (retried with
    /// backoff), never set aside: setting it aside would write a `RecordsRejected` refused in
    /// turn.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_agents_own_records_are_never_set_aside() {
        let (fake, url) = serve(Box::new(|n, r| {
            if n < 3 {
                (
                    400,
                    json!({"__type": "FieldTooLong", "message": "too long", "line": 1}).to_string(),
                )
            } else {
                ok(r)
            }
        }))
        .await;
        let dir = tempfile::tempdir().unwrap();
        let (buffer, opts) = setup(dir.path(), &[url], 100);
        let own: Vec<Record> = (0..2)
            .map(|i| id().agent_record("TestEvent", json!({"i": i})))
            .collect();
        buffer.try_append(&own, None).unwrap();
        let m = ship_until_empty(&buffer, opts).await;
        assert!(buffer.set_aside_records().unwrap().is_empty());
        assert_eq!(m.rejected.load(Ordering::Relaxed), 0);
        let got = fake.received.lock().unwrap().clone();
        assert_eq!(got.len(), 4);
        assert_eq!(all_i(&fake)[6..], [0, 1]);
    }

    /// A record set aside is offered again on request; once the collector accepts it, it leaves
    /// the side tree (and its bytes the buffer's count).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_set_aside_record_is_resent_on_request() {
        let accept = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let a = accept.clone();
        let (fake, url) = serve(Box::new(move |_, r| {
            let refuse = !a.load(Ordering::SeqCst)
                && r.records.iter().any(|v| v["requestParameters"]["i"] == 1);
            if refuse {
                (
                    400,
                    json!({"__type": "InvalidData", "message": "no", "line": 1}).to_string(),
                )
            } else {
                ok(r)
            }
        }))
        .await;
        let dir = tempfile::tempdir().unwrap();
        let (buffer, opts) = setup(dir.path(), &[url], 1);
        buffer.try_append(&recs(3), None).unwrap();
        let metrics = Arc::new(Metrics::default());
        let (tx, rx) = broadcast::channel(1);
        let (req_tx, req_rx) = mpsc::channel(1);
        let task = tokio::spawn(
            Shipper::new(buffer.clone(), opts, metrics.clone())
                .with_resend_requests(req_rx)
                .run(Shutdown::new(rx)),
        );
        for _ in 0..3000 {
            if buffer.status().depth == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(buffer.status().set_aside, 1);
        assert!(buffer.status().set_aside_bytes > 0);
        let ask = |req_tx: mpsc::Sender<ResendRequest>| async move {
            let (reply, answer) = oneshot::channel();
            req_tx.send(reply).await.unwrap();
            answer.await.unwrap()
        };
        let r = ask(req_tx.clone()).await;
        assert_eq!(
            (r.offered, r.accepted, r.still_refused, r.remaining),
            (1, 0, 1, 1)
        );
        accept.store(true, Ordering::SeqCst);
        let r = ask(req_tx.clone()).await;
        assert_eq!((r.offered, r.accepted, r.remaining), (1, 1, 0));
        let st = buffer.status();
        assert_eq!((st.set_aside, st.set_aside_bytes), (0, 0));
        let _ = tx.send(());
        task.await.unwrap();
        let resent = fake.received.lock().unwrap().last().unwrap().clone();
        assert_eq!(resent.records[0]["requestParameters"]["i"], 1);
        assert_eq!((resent.first, resent.last), (0, 0), "no sequence headers");
    }
}
