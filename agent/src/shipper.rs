//! Buffer -> collector: batches, compresses, sends, retries, and deletes only what the collector
//! committed.
//!
//! One batch is in flight at a time, always the head of the buffer, so the commit point the
//! collector returns is simply "everything up to here": the shipper hands it to
//! [`Buffer::ack_up_to`] and reads the new head. A batch is cut at the first hole in the
//! sequence numbers (records dropped or skipped), so `X-Groundtrail-Seq-First..Last` always
//! describes a contiguous run and every gap the collector sees between batches is a real one.
//!
//! # How answers are handled
//!
//! | answer | meaning | what the shipper does |
//! |---|---|---|
//! | `200` | durable in the collector's journal | delete up to `commitPoint` (at most the batch's last seq) |
//! | `400`/`422` naming a `line` | that record is invalid; nothing of the batch was written | set that record aside (see below), send the rest again at once |
//! | `400`/`422` without a line | something in the batch is invalid | re-send one record per batch until the culprit is named, then set it aside |
//! | `413` | batch too large | halve the batch size and send again; a single record still too large is set aside |
//! | `401`/`403` | this agent is not allowed (certificate, account, region) | retry with backoff, forever, and say so in `status`: it is a configuration problem, and setting records aside would turn every record into a loss |
//! | `429`, `5xx`, other `4xx`, connection errors, timeouts | transient | retry with jittered exponential backoff, failing over to the next URL |
//!
//! **Why a refused record is set aside instead of retried:** the collector has judged it, and it
//! will judge it the same way next time; retrying would block every later record behind it
//! forever (head-of-line blocking), which is worse than the loss of one record. The record is not
//! deleted: [`Buffer::set_aside`] moves it to a side tree of the buffer where an operator can
//! inspect it, and the refusal (sequence number, `eventID`, the collector's error code and
//! message) becomes a `RecordsRejected` record in the trail, so the loss is never silent.
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

use crate::buffer::{Buffer, Entry};
use crate::metrics::Metrics;

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

/// Shipper settings (from `[shipper]` and `[collector]`).
#[derive(Debug, Clone)]
pub struct ShipperOptions {
    pub urls: Vec<CollectorUrl>,
    pub tls: Option<Arc<ClientConfig>>,
    /// Sent as `X-Groundtrail-Agent`.
    pub agent_name: String,
    pub batch_max_records: usize,
    pub batch_max_bytes: usize,
    pub batch_max_wait: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub request_timeout: Duration,
    pub compress: bool,
    pub drain_timeout: Duration,
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
}

impl Shipper {
    pub fn new(buffer: Buffer, opts: ShipperOptions, metrics: Arc<Metrics>) -> Shipper {
        let max_records = opts.batch_max_records.max(1);
        Shipper {
            buffer,
            opts,
            metrics,
            url: 0,
            conn: None,
            failures: 0,
            max_records,
        }
    }

    /// Ships until `stop` fires, then keeps shipping what is buffered (without waiting for
    /// batches to fill) for at most `drain_timeout`. A batch in flight when `stop` fires stays
    /// in the buffer and is sent again (the collector drops duplicates by `eventID`).
    pub async fn run(mut self, mut stop: Shutdown) {
        loop {
            tokio::select! {
                biased;
                _ = stop.recv() => break,
                r = self.step(false) => {
                    if let Err(e) = r {
                        tracing::error!(error = %e, "cannot read the buffer");
                        self.failures = self.failures.saturating_add(1);
                        tokio::time::sleep(self.backoff()).await;
                    }
                }
            }
        }
        let drain_timeout = self.opts.drain_timeout;
        let drain = async {
            loop {
                match self.step(true).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read the buffer");
                        tokio::time::sleep(self.opts.retry_initial).await;
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
    async fn next_batch(&self, draining: bool) -> Result<Vec<Entry>, crate::buffer::BufferError> {
        loop {
            let appended = self.buffer.appended();
            tokio::pin!(appended);
            appended.as_mut().enable();
            let buffer = self.buffer.clone();
            let (max_records, max_bytes) = (self.max_records, self.opts.batch_max_bytes);
            let mut entries =
                tokio::task::spawn_blocking(move || buffer.read_from(0, max_records, max_bytes))
                    .await
                    .map_err(|e| {
                        crate::buffer::BufferError::Storage(format!("read task failed: {e}"))
                    })??;
            if let Some(cut) = entries.windows(2).position(|w| w[1].seq != w[0].seq + 1) {
                entries.truncate(cut + 1);
                return Ok(entries);
            }
            if draining {
                return Ok(entries);
            }
            let Some(oldest) = entries.first() else {
                appended.await;
                continue;
            };
            let bytes: usize = entries.iter().map(|e| e.json.len() + 1).sum();
            if entries.len() >= self.max_records || bytes * 10 >= max_bytes * 9 {
                return Ok(entries);
            }
            let due_ms = oldest
                .appended_ms
                .saturating_add(self.opts.batch_max_wait.as_millis() as u64);
            let now = now_ms();
            if now >= due_ms {
                return Ok(entries);
            }
            let wait = Duration::from_millis(due_ms - now);
            tokio::select! {
                _ = appended => {}
                _ = tokio::time::sleep(wait) => return self.reread(max_records, max_bytes).await,
            }
        }
    }

    async fn reread(
        &self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, crate::buffer::BufferError> {
        let buffer = self.buffer.clone();
        let mut entries =
            tokio::task::spawn_blocking(move || buffer.read_from(0, max_records, max_bytes))
                .await
                .map_err(|e| {
                    crate::buffer::BufferError::Storage(format!("read task failed: {e}"))
                })??;
        if let Some(cut) = entries.windows(2).position(|w| w[1].seq != w[0].seq + 1) {
            entries.truncate(cut + 1);
        }
        Ok(entries)
    }

    /// Sends one batch until the collector has decided about it (committed, or a record set
    /// aside). Retries transient failures forever, with backoff and failover.
    async fn ship(&mut self, batch: &[Entry]) {
        let first = batch[0].seq;
        let last = batch[batch.len() - 1].seq;
        let mut body = Vec::with_capacity(batch.iter().map(|e| e.json.len() + 1).sum());
        for e in batch {
            body.extend_from_slice(&e.json);
            body.push(b'\n');
        }
        let body = if self.opts.compress {
            match zstd::bulk::compress(&body, 3) {
                Ok(z) => Bytes::from(z),
                Err(e) => {
                    tracing::error!(error = %e, "zstd failed; sending uncompressed");
                    Bytes::from(body)
                }
            }
        } else {
            Bytes::from(body)
        };
        loop {
            let outcome = match tokio::time::timeout(
                self.opts.request_timeout,
                self.send(body.clone(), first, last),
            )
            .await
            {
                Ok(o) => o,
                Err(_) => {
                    self.conn = None;
                    Outcome::Retry(format!(
                        "no answer within {} ms",
                        self.opts.request_timeout.as_millis()
                    ))
                }
            };
            match outcome {
                Outcome::Committed(resp) => {
                    let commit = resp.commit_point.unwrap_or(last).min(last);
                    self.record_success(batch, &resp, commit, body.len());
                    if let Err(e) = self.ack(commit).await {
                        tracing::error!(error = %e, commit, "cannot delete committed records");
                    }
                    if self.max_records < self.opts.batch_max_records {
                        self.max_records = (self.max_records * 2).min(self.opts.batch_max_records);
                    }
                    return;
                }
                Outcome::BadLine(line, err) if line >= 1 && line <= batch.len() => {
                    self.mark_answered();
                    let seq = batch[line - 1].seq;
                    tracing::error!(seq, code = %err.code, message = %err.message,
                        "collector refused a record; setting it aside");
                    self.set_aside(seq, &err).await;
                    return;
                }
                Outcome::BadLine(_, err) | Outcome::BadBatch(err) => {
                    self.mark_answered();
                    if batch.len() == 1 {
                        tracing::error!(seq = first, code = %err.code, message = %err.message,
                            "collector refused a record; setting it aside");
                        self.set_aside(first, &err).await;
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
                        self.set_aside(first, &err).await;
                    } else {
                        self.max_records = (batch.len() / 2).max(1);
                        tracing::warn!(
                            max_records = self.max_records,
                            "batch too large for the collector; halving"
                        );
                    }
                    return;
                }
                Outcome::Retry(why) => {
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
            }
        }
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

    fn record_success(&mut self, batch: &[Entry], resp: &BatchResponse, commit: u64, wire: usize) {
        self.mark_answered();
        let now = now_ms();
        let m = &self.metrics;
        Metrics::add(&m.shipped_batches, 1);
        Metrics::add(&m.shipped_records, resp.committed);
        Metrics::add(&m.shipped_duplicates, resp.duplicates);
        Metrics::add(&m.shipped_bytes, wire as u64);
        let lag_sum: u64 = batch
            .iter()
            .filter(|e| e.seq <= commit)
            .map(|e| now.saturating_sub(e.appended_ms))
            .sum();
        Metrics::add(&m.lag_ms_sum, lag_sum);
        m.last_lag_ms
            .store(now.saturating_sub(batch[0].appended_ms), Ordering::Relaxed);
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

    async fn set_aside(&self, seq: u64, err: &ErrorResponse) {
        Metrics::add(&self.metrics.rejected, 1);
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
        let exp = self.failures.saturating_sub(1).min(20);
        let cap = self
            .opts
            .retry_initial
            .saturating_mul(1u32 << exp)
            .min(self.opts.retry_max);
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

    async fn send(&mut self, body: Bytes, first: u64, last: u64) -> Outcome {
        let url = self.opts.urls[self.url].clone();
        let mut req = http::Request::builder()
            .method("POST")
            .uri(format!("{}{}", url.base_path, wire::EVENTS_PATH))
            .header(http::header::HOST, &url.authority)
            .header(http::header::CONTENT_TYPE, wire::NDJSON)
            .header(http::header::CONTENT_LENGTH, body.len())
            .header(wire::HEADER_AGENT, &self.opts.agent_name)
            .header(wire::HEADER_SEQ_FIRST, first)
            .header(wire::HEADER_SEQ_LAST, last);
        if self.opts.compress {
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
        let body = match Limited::new(resp.into_body(), 1 << 20).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                self.conn = None;
                return Outcome::Retry(format!("reading the answer ({status}): {e}"));
            }
        };
        classify(status, &body)
    }
}

/// Maps an HTTP answer to what the shipper does with it (see the module table).
fn classify(status: http::StatusCode, body: &[u8]) -> Outcome {
    let text = || String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned();
    if status == http::StatusCode::OK {
        return match serde_json::from_slice::<BatchResponse>(body) {
            Ok(r) => Outcome::Committed(r),
            Err(e) => Outcome::Retry(format!("200 with an unreadable answer ({e}): {}", text())),
        };
    }
    let err = serde_json::from_slice::<ErrorResponse>(body)
        .unwrap_or_else(|_| ErrorResponse::new(format!("Http{}", status.as_u16()), text()));
    match status.as_u16() {
        400 | 422 => match err.line {
            Some(line) => Outcome::BadLine(line, err),
            None => Outcome::BadBatch(err),
        },
        413 => Outcome::TooLarge(err),
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
            classify(S::OK, br#"{"committed":2,"duplicates":0,"commitPoint":7}"#),
            Outcome::Committed(BatchResponse {
                commit_point: Some(7),
                ..
            })
        ));
        assert!(matches!(
            classify(
                S::BAD_REQUEST,
                br#"{"__type":"InvalidData","message":"x","line":3}"#
            ),
            Outcome::BadLine(3, _)
        ));
        assert!(matches!(
            classify(S::BAD_REQUEST, br#"{"__type":"InvalidData","message":"x"}"#),
            Outcome::BadBatch(_)
        ));
        assert!(matches!(
            classify(S::PAYLOAD_TOO_LARGE, b""),
            Outcome::TooLarge(_)
        ));
        assert!(matches!(classify(S::FORBIDDEN, b"{}"), Outcome::Retry(_)));
        assert!(matches!(
            classify(S::SERVICE_UNAVAILABLE, b"oops"),
            Outcome::Retry(_)
        ));
        assert!(matches!(classify(S::OK, b"not json"), Outcome::Retry(_)));
    }
}
