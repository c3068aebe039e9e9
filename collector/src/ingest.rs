//! `POST /v1/events`: from an agent's request to records durable in the journal.
//!
//! The order of checks is the order of cost, and nothing is written until all of them passed:
//!
//! 1. who is asking (client certificate name, else `X-Groundtrail-Agent`), and may they write
//!    at all (`[[agents]]`);
//! 2. media type and encoding (`415`);
//! 3. body size as sent, then after zstd decompression (`413`; a zstd bomb stops at
//!    `max_decompressed_bytes` without allocating more). A zstd body may be several frames one
//!    after the other (the agent sends its buffer's stored frames, one per append, as they
//!    are): it decodes as their contents concatenated, line numbers run on across frames, and
//!    the cap counts the whole body, not each frame;
//! 4. per line: record count and size (`413`), then parse and validate (`400`), then whether
//!    this agent may write that account and region (`403`) — each error names its 1-based line;
//! 5. commit: dedup by `eventID` and write, under one lock (concurrent batches with the same
//!    `eventID` yield one copy), then flush. Only then `200` with a [`BatchResponse`].
//!
//! Every refusal is an [`ErrorResponse`] with a CloudTrail-style code, and means that nothing
//! of the batch was written, so the agent can fix or resend it as a whole:
//!
//! | status | `__type` | when | `line` |
//! |---|---|---|---|
//! | 400 | `InvalidData` | not JSON, a wrong type, a bad format (`eventTime`, `eventID`, ...), a broken zstd stream, bad sequence headers; an Insights record (`eventType: AwsCloudTrailInsight`: only the collector writes those) | for record errors |
//! | 400 | `FieldNotFound` | a required member missing or empty | yes |
//! | 400 | `FieldTooLong` | a member over CloudTrail's size cap (`userAgent`, `requestParameters`, ...) | yes |
//! | 401 | `UnrecognizedClientException` | mTLS on and the certificate names no agent | no |
//! | 403 | `AccessDeniedException` | agent not in `[[agents]]`; or a record's account/region it may not write | for records |
//! | 403 | `LimitExceededException` | a record for a new (account, region) pair while `[limits] max_account_regions` are held | yes |
//! | 408 | `RequestTimeout` | the body did not arrive in time | no |
//! | 413 | `RequestEntityTooLarge` | body over `max_body_bytes`, or over `max_decompressed_bytes` once inflated | no |
//! | 413 | `RecordTooLarge` | one line over `max_record_bytes` | yes |
//! | 413 | `LimitExceededException` | more than `max_batch_records` records | the first one too many |
//! | 429 | `LimitExceededException` | a new agent name while `[limits] max_agents` are tracked | no |
//! | 503 | `ThrottlingException` | the memory budget for bodies in flight (`[limits] max_body_bytes_in_flight`) is spent; retry (`Retry-After`) | no |
//! | 415 | `UnsupportedMediaTypeException` | `Content-Type` not `application/x-ndjson`, or `Content-Encoding` not zstd/identity | no |
//! | 500 | `InternalFailure` | the journal failed; nothing was committed, retry | no |
//!
//! Every error answer is rendered by [`error_response`], which sets `X-Groundtrail-Error: <code>`
//! ([`wire::HEADER_ERROR`]): the agent judges records only on an answer that carries it, so a
//! `400`/`413` from a proxy or a TLS port spoken to in plain HTTP is never taken for a verdict.
//!
//! With `client_ca` set, a client without a certificate from that CA never gets this far: the
//! TLS handshake fails.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use groundtrail_common::Record;
use groundtrail_common::trail::FileKind;
use groundtrail_common::wire::{self, BatchResponse, ErrorResponse};
use http::{HeaderMap, StatusCode};
use tokio::sync::mpsc;

use crate::agents::{AgentTracker, TrackError};
use crate::config::{AgentConfig, LimitsConfig};
use crate::internal_events::{BatchCommitted, BatchRefused, InternalEvent};
use crate::journal::{Journal, PendingRecord};

/// A refused batch: the HTTP status and the JSON body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {} {}", .body.code, .body.message)]
pub struct Refusal {
    pub status: StatusCode,
    pub body: ErrorResponse,
}

/// The HTTP answer for an [`ErrorResponse`]: JSON, marked with `X-Groundtrail-Error` (the one
/// place error answers to agents are rendered, so none goes out unmarked).
pub fn error_response(
    status: StatusCode,
    body: &ErrorResponse,
) -> http::Response<http_body_util::Full<Bytes>> {
    let json = serde_json::to_vec(body).unwrap_or_default();
    let code = http::HeaderValue::from_str(&body.code)
        .unwrap_or_else(|_| http::HeaderValue::from_static("InvalidCode"));
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(wire::HEADER_ERROR, code)
        .body(http_body_util::Full::new(Bytes::from(json)))
        .unwrap_or_else(|_| http::Response::new(http_body_util::Full::new(Bytes::new())))
}

impl Refusal {
    /// The HTTP answer (see [`error_response`]).
    pub fn response(&self) -> http::Response<http_body_util::Full<Bytes>> {
        error_response(self.status, &self.body)
    }

    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            body: ErrorResponse::new(code, message),
        }
    }

    fn at_line(mut self, line: usize) -> Refusal {
        self.body.message = format!("line {line}: {}", self.body.message);
        self.body = self.body.at_line(line);
        self
    }
}

/// Who sent a request, as far as the transport knows.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// The verified client certificate's name, when mTLS is on.
    pub certificate_name: Option<String>,
    /// Whether the peer's address is a loopback address (the API's unsigned read access).
    pub loopback: bool,
    /// Whether the connection came in on `[api] listen` (API only, no ingest).
    pub api_only: bool,
    /// The peer's address (the `sourceIPAddress` of the collector's records of API calls).
    pub ip: Option<std::net::IpAddr>,
}

/// The ingest endpoint's state.
pub struct Ingest {
    journal: Arc<Journal>,
    tracker: Arc<AgentTracker>,
    limits: LimitsConfig,
    /// `None`: any agent may write anything (no `[[agents]]` configured).
    allowed: Option<HashMap<String, AgentConfig>>,
    /// Whether client certificates are required (then they, not headers, name the agent).
    mtls: bool,
    batcher: mpsc::Sender<Vec<PendingRecord>>,
    /// The (account, region) pairs the trail holds, at most `max_account_regions`.
    pairs: Mutex<HashSet<(String, String)>>,
    /// Cluster mode: records go to the cluster's stream instead of the journal (see
    /// [`crate::cluster::publish`]).
    cluster: Option<Arc<crate::cluster::publish::Publisher>>,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("mtls", &self.mtls)
            .finish_non_exhaustive()
    }
}

/// Whether a header value's media type (before any `;` parameters) is `expected`.
fn media_type_is(value: &str, expected: &str) -> bool {
    value
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(expected))
}

impl Ingest {
    pub fn new(
        journal: Arc<Journal>,
        tracker: Arc<AgentTracker>,
        limits: LimitsConfig,
        agents: &[AgentConfig],
        mtls: bool,
        batcher: mpsc::Sender<Vec<PendingRecord>>,
    ) -> Ingest {
        let allowed = (!agents.is_empty())
            .then(|| agents.iter().map(|a| (a.name.clone(), a.clone())).collect());
        Ingest {
            journal,
            tracker,
            limits,
            allowed,
            mtls,
            batcher,
            pairs: Mutex::default(),
            cluster: None,
        }
    }

    /// Cluster mode: a batch's `200` waits for the cluster's stream, not the journal.
    pub fn with_cluster(mut self, publisher: Arc<crate::cluster::publish::Publisher>) -> Ingest {
        self.cluster = Some(publisher);
        self
    }

    /// Adds pairs the trail already holds (digest chains, agents' last pairs) to the count of
    /// `max_account_regions`, at startup.
    pub fn seed_pairs(&self, pairs: impl IntoIterator<Item = (String, String)>) {
        let mut held = self.pairs.lock().unwrap_or_else(|p| p.into_inner());
        held.extend(pairs);
    }

    /// Takes room for every new (account, region) pair of a batch at once, or refuses it at
    /// the line of the first pair that does not fit (then nothing is taken).
    fn admit_pairs(&self, records: &[Record], lines: &[usize]) -> Result<(), Refusal> {
        let mut held = self.pairs.lock().unwrap_or_else(|p| p.into_inner());
        let mut new: HashSet<(&str, &str)> = HashSet::new();
        // Most batches hold one pair: look each up once, not once per record.
        let mut seen: HashSet<(&str, &str)> = HashSet::new();
        for (record, line) in records.iter().zip(lines) {
            let pair = (record.account(), record.aws_region.as_str());
            if !seen.insert(pair) || held.contains(&(pair.0.to_string(), pair.1.to_string())) {
                continue;
            }
            if held.len() + new.len() >= self.limits.max_account_regions {
                return Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    "LimitExceededException",
                    format!(
                        "the trail already holds {} (account, region) pairs ([limits] max_account_regions); account {} region {} is not among them",
                        self.limits.max_account_regions, pair.0, pair.1
                    ),
                )
                .at_line(*line));
            }
            new.insert(pair);
        }
        held.extend(new.into_iter().map(|(a, r)| (a.to_string(), r.to_string())));
        Ok(())
    }

    /// The journal (for metrics).
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The largest body this endpoint reads.
    pub fn max_body_bytes(&self) -> usize {
        self.limits.max_body_bytes
    }

    /// The agent's name: the certificate's when mTLS is on, else the header's, else
    /// `anonymous`.
    pub fn agent_name(&self, peer: &Peer, headers: &HeaderMap) -> Result<String, Refusal> {
        if self.mtls {
            return peer.certificate_name.clone().ok_or_else(|| {
                Refusal::new(
                    StatusCode::UNAUTHORIZED,
                    "UnrecognizedClientException",
                    "the client certificate names no agent",
                )
            });
        }
        Ok(headers
            .get(wire::HEADER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 256)
            .unwrap_or("anonymous")
            .to_string())
    }

    /// Checks the request headers, before the body is read.
    pub fn check_headers(&self, agent: &str, headers: &HeaderMap) -> Result<(), Refusal> {
        if let Some(allowed) = &self.allowed
            && !allowed.contains_key(agent)
        {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "AccessDeniedException",
                format!("agent {agent:?} is not listed in [[agents]]"),
            ));
        }
        self.tracker.admits(agent).map_err(track_refusal)?;
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !media_type_is(content_type, wire::NDJSON) {
            return Err(Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaTypeException",
                format!(
                    "Content-Type must be {}, not {content_type:?}",
                    wire::NDJSON
                ),
            ));
        }
        self.encoding(headers)?;
        if let Some(len) = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            && len > self.limits.max_body_bytes as u64
        {
            return Err(self.body_too_large());
        }
        Ok(())
    }

    fn body_too_large(&self) -> Refusal {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("body is larger than {} bytes", self.limits.max_body_bytes),
        )
    }

    /// `true` for zstd, `false` for identity.
    fn encoding(&self, headers: &HeaderMap) -> Result<bool, Refusal> {
        match headers
            .get(http::header::CONTENT_ENCODING)
            .map(|v| v.to_str().map(|s| s.trim().to_ascii_lowercase()))
        {
            None => Ok(false),
            Some(Ok(e)) if e.is_empty() || e == "identity" => Ok(false),
            Some(Ok(e)) if e == "zstd" => Ok(true),
            Some(other) => Err(Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaTypeException",
                format!(
                    "Content-Encoding {:?} is not supported; use zstd or none",
                    other.unwrap_or_default()
                ),
            )),
        }
    }

    /// Refusal for a body that was cut off by the size limit while reading.
    pub fn refuse_oversize_body(&self) -> Refusal {
        self.body_too_large()
    }

    /// Decompresses (if zstd), parses and authorizes a batch, and takes room for its new
    /// (account, region) pairs. Writes nothing.
    pub fn parse(
        &self,
        agent: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Vec<Record>, Refusal> {
        if body.len() > self.limits.max_body_bytes {
            return Err(self.body_too_large());
        }
        let decompressed;
        let text: &[u8] = if self.encoding(headers)? {
            decompressed = decompress_capped(body, self.limits.max_decompressed_bytes)?;
            &decompressed
        } else {
            body
        };
        let rules = self.allowed.as_ref().and_then(|a| a.get(agent));
        let mut records = Vec::new();
        let mut lines = Vec::new();
        for (i, line) in text.split(|b| *b == b'\n').enumerate() {
            let n = i + 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if records.len() >= self.limits.max_batch_records {
                return Err(Refusal::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "LimitExceededException",
                    format!(
                        "more than {} records in one batch",
                        self.limits.max_batch_records
                    ),
                )
                .at_line(n));
            }
            if line.len() > self.limits.max_record_bytes {
                return Err(Refusal::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "RecordTooLarge",
                    format!(
                        "record is {} bytes, over the limit of {}",
                        line.len(),
                        self.limits.max_record_bytes
                    ),
                )
                .at_line(n));
            }
            let record = Record::from_json(line).map_err(|e| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    record_error_code(&e),
                    e.to_string(),
                )
                .at_line(n)
            })?;
            if FileKind::of_event_type(&record.event_type) == FileKind::Insight {
                // Insights records are the collector's own findings (see `crate::insights`);
                // one sent in would land in the Insights files, signed like a real finding.
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "InvalidData",
                    "eventType AwsCloudTrailInsight is written by the collector's Insights \
                     detector and is not accepted from senders"
                        .to_string(),
                )
                .at_line(n));
            }
            if let Some(rules) = rules {
                if !rules.accounts.iter().any(|a| a == record.account()) {
                    return Err(Refusal::new(
                        StatusCode::FORBIDDEN,
                        "AccessDeniedException",
                        format!("agent {agent:?} may not write account {}", record.account()),
                    )
                    .at_line(n));
                }
                if !rules.regions.is_empty() && !rules.regions.contains(&record.aws_region) {
                    return Err(Refusal::new(
                        StatusCode::FORBIDDEN,
                        "AccessDeniedException",
                        format!("agent {agent:?} may not write region {}", record.aws_region),
                    )
                    .at_line(n));
                }
            }
            records.push(record);
            lines.push(n);
        }
        self.admit_pairs(&records, &lines)?;
        Ok(records)
    }

    /// The sequence range from the headers, if both are present and sane.
    fn seq_range(headers: &HeaderMap) -> Result<Option<(u64, u64)>, Refusal> {
        let get = |name: &str| -> Result<Option<u64>, Refusal> {
            match headers.get(name) {
                None => Ok(None),
                Some(v) => v
                    .to_str()
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .map(Some)
                    .ok_or_else(|| {
                        Refusal::new(
                            StatusCode::BAD_REQUEST,
                            "InvalidData",
                            format!("header {name} is not an unsigned integer"),
                        )
                    }),
            }
        };
        match (get(wire::HEADER_SEQ_FIRST)?, get(wire::HEADER_SEQ_LAST)?) {
            (Some(first), Some(last)) if first <= last => Ok(Some((first, last))),
            (None, None) => Ok(None),
            _ => Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "InvalidData",
                format!(
                    "{} and {} must both be given, first <= last",
                    wire::HEADER_SEQ_FIRST,
                    wire::HEADER_SEQ_LAST
                ),
            )),
        }
    }

    /// The whole endpoint after the body was read: parse, commit, flush, hand to the batcher.
    pub async fn ingest(
        self: &Arc<Self>,
        agent: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<BatchResponse, Refusal> {
        let result = self.ingest_inner(agent, headers, body).await;
        if let Err(r) = &result {
            BatchRefused {
                agent,
                status: r.status.as_u16(),
                code: &r.body.code,
                message: &r.body.message,
            }
            .emit();
        }
        result
    }

    async fn ingest_inner(
        self: &Arc<Self>,
        agent: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<BatchResponse, Refusal> {
        self.check_headers(agent, headers)?;
        let seq = Self::seq_range(headers)?;
        if let Some(publisher) = &self.cluster {
            return self.publish(publisher, agent, headers, body, seq).await;
        }
        // Commit, flush and hand-off run as one spawned task, awaited here. hyper drops this
        // future when the client disconnects; were that to happen between the journal commit
        // and the batcher hand-off, the records would be durable but unknown to the running
        // batcher until the next restart, while the agent's resend is answered "duplicate" and
        // deleted: committed records stalled without a trace. A spawned task runs to its end
        // whatever becomes of the request.
        let this = self.clone();
        let headers = headers.clone();
        let who = agent.to_string();
        let (received, committed, duplicates) = tokio::spawn(async move {
            // Decompressing, parsing 10,000 records and the dedup check are CPU work: keep them
            // off the async workers so one big batch does not stall every other connection.
            let worker = this.clone();
            let (received, outcome) = tokio::task::spawn_blocking(move || {
                let records = worker.parse(&who, &headers, &body)?;
                let received = records.len() as u64;
                let outcome = worker
                    .tracker
                    .commit_batch(
                        &worker.journal,
                        &who,
                        seq,
                        records,
                        groundtrail_common::time::now_secs(),
                    )
                    .map_err(track_refusal)?;
                Ok::<_, Refusal>((received, outcome))
            })
            .await
            .map_err(internal)??;
            // The commit point: nothing is acknowledged before it is on disk. A duplicate-only
            // batch flushes too, so its 200 also covers the earlier batch that committed those
            // ids.
            this.journal.sync_commits().await.map_err(internal)?;
            let committed = outcome.committed.len() as u64;
            if committed > 0 && this.batcher.send(outcome.committed).await.is_err() {
                // The batcher has stopped (shutdown): the records are durable and pending, and
                // the next start files them.
                tracing::debug!("batcher gone; records stay pending in the journal");
            }
            Ok::<_, Refusal>((received, committed, outcome.duplicates))
        })
        .await
        .map_err(internal)??;
        BatchCommitted {
            agent,
            received,
            committed,
            duplicates,
        }
        .emit();
        Ok(BatchResponse {
            // Audit records added by the collector count as committed too.
            committed,
            duplicates,
            commit_point: seq.map(|(_, last)| last),
        })
    }
}

impl Ingest {
    /// Cluster mode's commit point: parse as always, then publish; `200` only once the
    /// cluster acknowledged every chunk.
    async fn publish(
        self: &Arc<Self>,
        publisher: &crate::cluster::publish::Publisher,
        agent: &str,
        headers: &HeaderMap,
        body: Bytes,
        seq: Option<(u64, u64)>,
    ) -> Result<BatchResponse, Refusal> {
        let worker = self.clone();
        let (who, headers) = (agent.to_string(), headers.clone());
        let records = tokio::task::spawn_blocking(move || worker.parse(&who, &headers, &body))
            .await
            .map_err(internal)??;
        let received = records.len() as u64;
        let published = publisher.publish(&records).await.map_err(cluster_refusal)?;
        BatchCommitted {
            agent,
            received,
            committed: published.stored,
            duplicates: published.duplicates,
        }
        .emit();
        Ok(BatchResponse {
            committed: published.stored,
            duplicates: published.duplicates,
            commit_point: seq.map(|(_, last)| last),
        })
    }

    /// Commits records that arrived some other way than an agent batch (`PutAuditEvents`)
    /// through the same path: dedup and journal commit, flush, then the batcher. Returns the
    /// outcome only once the records are durable.
    pub async fn commit_records(
        self: &Arc<Self>,
        records: Vec<groundtrail_common::Record>,
    ) -> Result<crate::journal::CommitOutcome, crate::journal::JournalError> {
        if let Some(publisher) = &self.cluster {
            let published = publisher
                .publish(&records)
                .await
                .map_err(|e| crate::journal::JournalError::Other(e.to_string()))?;
            return Ok(crate::journal::CommitOutcome {
                committed: Vec::new(),
                duplicates: published.duplicates,
            });
        }
        // One spawned task for the same reason as in `ingest_inner`: a dropped request must
        // not separate the commit from the batcher hand-off.
        let this = self.clone();
        tokio::spawn(async move {
            let journal = this.journal.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                journal.commit(&records, &[], groundtrail_common::time::now_secs())
            })
            .await
            .map_err(|e| crate::journal::JournalError::Other(e.to_string()))??;
            this.journal.sync_commits().await?;
            if !outcome.committed.is_empty()
                && this.batcher.send(outcome.committed.clone()).await.is_err()
            {
                tracing::debug!("batcher gone; records stay pending in the journal");
            }
            Ok(outcome)
        })
        .await
        .map_err(|e| crate::journal::JournalError::Other(e.to_string()))?
    }
}

/// The CloudTrail-style code for a refused record. A member that serde found missing (a
/// required, non-optional one such as `eventType`) is `FieldNotFound`, like one that
/// validation found empty; everything else keeps the record model's own code.
fn record_error_code(e: &groundtrail_common::RecordError) -> &'static str {
    match e {
        groundtrail_common::RecordError::Json(m) if m.contains("missing field") => "FieldNotFound",
        other => other.code(),
    }
}

fn track_refusal(e: TrackError) -> Refusal {
    match e {
        TrackError::TooManyAgents(max) => Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "LimitExceededException",
            format!(
                "the collector already tracks {max} agent names ([limits] max_agents); raise it or list the agent in [[agents]]"
            ),
        ),
        TrackError::Journal(e) => internal(e),
    }
}

/// A batch the cluster's stream did not take: `503`, so the agent keeps it and resends.
fn cluster_refusal(e: crate::cluster::publish::PublishError) -> Refusal {
    tracing::warn!("ingest: {e}");
    crate::cluster::metrics::add(&crate::cluster::metrics::metrics().publish_failures, 1);
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailableException",
        format!("{e}; nothing of the batch is acknowledged, retry later"),
    )
}

fn internal(e: impl std::fmt::Display) -> Refusal {
    tracing::error!("ingest: {e}");
    Refusal::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalFailure",
        "the journal could not store the batch; nothing was committed, retry later",
    )
}

/// Decompresses zstd, refusing output over `cap` bytes. The output buffer grows by doubling
/// but never past `cap + 1` bytes (one byte more than allowed is how an overrun is seen), so a
/// bomb costs at most about `cap` of memory however far it would expand.
pub fn decompress_capped(body: &[u8], cap: usize) -> Result<Vec<u8>, Refusal> {
    let bad = |e: std::io::Error| {
        Refusal::new(StatusCode::BAD_REQUEST, "InvalidData", format!("zstd: {e}"))
    };
    let mut decoder = zstd::stream::read::Decoder::new(body).map_err(bad)?;
    let limit = cap.saturating_add(1);
    let mut out: Vec<u8> = Vec::with_capacity(body.len().saturating_mul(4).max(4096).min(limit));
    loop {
        if out.len() == out.capacity() {
            if out.len() >= limit {
                break;
            }
            let target = out.capacity().saturating_mul(2).min(limit);
            out.reserve_exact(target - out.len());
        }
        let start = out.len();
        let room = out.capacity() - start;
        out.resize(start + room, 0);
        match decoder.read(&mut out[start..]) {
            Ok(0) => {
                out.truncate(start);
                break;
            }
            Ok(n) => out.truncate(start + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => out.truncate(start),
            Err(e) => return Err(bad(e)),
        }
    }
    if out.len() > cap {
        return Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("body decompresses to more than {cap} bytes"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const ACCOUNT: &str = "111122223333";

    fn line(n: u32, account: &str, region: &str) -> String {
        format!(
            r#"{{"eventVersion":"1.11","userIdentity":{{}},"eventTime":"2026-01-01T00:00:00Z","eventSource":"t.onprem.internal","eventName":"T","awsRegion":"{region}","eventID":"00000000-0000-4000-8000-{n:012x}","eventType":"AwsApiCall","recipientAccountId":"{account}"}}"#
        )
    }

    fn headers(extra: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("content-type", wire::NDJSON.parse().unwrap());
        for (k, v) in extra {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn setup(
        agents: &[AgentConfig],
        limits: LimitsConfig,
    ) -> (
        tempfile::TempDir,
        Arc<Ingest>,
        mpsc::Receiver<Vec<PendingRecord>>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(Journal::open(&dir.path().join("j")).unwrap());
        let tracker =
            Arc::new(AgentTracker::load(&journal, "x", Duration::from_secs(3600)).unwrap());
        let (tx, rx) = mpsc::channel(1024);
        (
            dir,
            Arc::new(Ingest::new(journal, tracker, limits, agents, false, tx)),
            rx,
        )
    }

    #[test]
    fn a_zstd_bomb_stops_at_the_cap_without_growing_past_it() {
        let bomb = zstd::encode_all(&vec![b'a'; 50_000_000][..], 19).unwrap();
        assert!(bomb.len() < 10_000);
        let err = decompress_capped(&bomb, 1_000_000).unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        let ok = zstd::encode_all(&vec![b'b'; 1_000_000][..], 3).unwrap();
        let out = decompress_capped(&ok, 1_000_000).unwrap();
        assert_eq!(out.len(), 1_000_000);
        assert!(out.capacity() <= 1_000_001);
        assert_eq!(
            decompress_capped(&ok, 999_999).unwrap_err().status.as_u16(),
            413
        );
    }

    /// The agent ships its buffer's stored zstd frames as they are, one frame per append: a
    /// body of concatenated frames is their concatenated content, and the cap still holds for
    /// the whole body (a bomb spread over many frames, each under the cap, stops at it).
    #[test]
    fn concatenated_frames_decode_as_one_body_and_stay_capped() {
        let mut body = zstd::encode_all(&b"first\n"[..], 1).unwrap();
        body.extend(zstd::encode_all(&b"second\n"[..], 3).unwrap());
        body.extend(zstd::encode_all(&b"third\n"[..], 1).unwrap());
        assert_eq!(
            decompress_capped(&body, 1_000).unwrap(),
            b"first\nsecond\nthird\n"
        );
        let mut bombs = Vec::new();
        for _ in 0..40 {
            bombs.extend(zstd::encode_all(&vec![b'a'; 900_000][..], 19).unwrap());
        }
        assert!(bombs.len() < 40_000);
        let err = decompress_capped(&bombs, 1_000_000).unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        // A broken frame after good ones is a broken body, not a shorter one.
        let mut broken = zstd::encode_all(&b"ok\n"[..], 1).unwrap();
        let second = zstd::encode_all(&b"lost\n"[..], 1).unwrap();
        broken.extend_from_slice(&second[..second.len() - 2]);
        assert_eq!(
            decompress_capped(&broken, 1_000).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }

    #[tokio::test]
    async fn a_batch_of_several_frames_commits_and_names_lines_across_frames() {
        let (_d, ingest, _rx) = setup(&[], LimitsConfig::default());
        let h = headers(&[
            ("content-encoding", "zstd"),
            ("x-groundtrail-seq-first", "1"),
            ("x-groundtrail-seq-last", "3"),
        ]);
        let frame = |lines: &[String]| {
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            zstd::encode_all(text.as_bytes(), 1).unwrap()
        };
        // A bad record in the second frame is named by its line in the whole body.
        let mut bad = frame(&[line(1, ACCOUNT, "us-east-1"), line(2, ACCOUNT, "us-east-1")]);
        bad.extend(frame(&["{\"eventVersion\":".to_string()]));
        let err = ingest.ingest("a", &h, Bytes::from(bad)).await.unwrap_err();
        assert_eq!((err.status.as_u16(), err.body.line), (400, Some(3)));
        let mut good = frame(&[line(1, ACCOUNT, "us-east-1"), line(2, ACCOUNT, "us-east-1")]);
        good.extend(frame(&[line(3, ACCOUNT, "us-east-1")]));
        let ok = ingest.ingest("a", &h, Bytes::from(good)).await.unwrap();
        assert_eq!((ok.committed, ok.commit_point), (3, Some(3)));
    }

    #[tokio::test]
    async fn commits_and_deduplicates() {
        let (_d, ingest, mut rx) = setup(&[], LimitsConfig::default());
        let body = format!(
            "{}\n{}\n\n",
            line(1, ACCOUNT, "us-east-1"),
            line(2, ACCOUNT, "us-east-1")
        );
        let h = headers(&[
            ("x-groundtrail-seq-first", "1"),
            ("x-groundtrail-seq-last", "2"),
        ]);
        let ok = ingest
            .ingest("a", &h, Bytes::from(body.clone()))
            .await
            .unwrap();
        assert_eq!(
            (ok.committed, ok.duplicates, ok.commit_point),
            (2, 0, Some(2))
        );
        assert_eq!(rx.recv().await.unwrap().len(), 2);
        let again = ingest
            .ingest("a", &h, Bytes::from(body.clone()))
            .await
            .unwrap();
        assert_eq!((again.committed, again.duplicates), (0, 2));
    }

    /// Two batches racing with the same eventIDs yield one copy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_batches_commit_one_copy() {
        let (_d, ingest, _rx) = setup(&[], LimitsConfig::default());
        let body: String = (0..200)
            .map(|n| line(n, ACCOUNT, "us-east-1") + "\n")
            .collect();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let ingest = ingest.clone();
                let body = body.clone();
                tokio::spawn(async move {
                    ingest
                        .ingest("a", &headers(&[]), Bytes::from(body))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut committed = 0;
        for t in tasks {
            committed += t.await.unwrap().committed;
        }
        assert_eq!(committed, 200);
        assert_eq!(ingest.journal.pending().unwrap().len(), 200);
    }

    #[tokio::test]
    async fn refusals_name_the_line_and_write_nothing() {
        let limits = LimitsConfig {
            max_batch_records: 3,
            max_record_bytes: 2000,
            max_body_bytes: 100_000,
            max_decompressed_bytes: 50_000,
            ..LimitsConfig::default()
        };
        let agents = [AgentConfig {
            name: "web-1".into(),
            accounts: vec![ACCOUNT.into()],
            regions: vec!["us-east-1".into()],
        }];
        let (_d, ingest, _rx) = setup(&agents, limits);
        let good = line(1, ACCOUNT, "us-east-1");
        // (body, headers, agent, status, code, line)
        type Case<'a> = (Vec<u8>, HeaderMap, &'a str, u16, &'a str, Option<usize>);
        let cases: Vec<Case> = vec![
            (
                format!("{good}\nnot json\n").into_bytes(),
                headers(&[]),
                "web-1",
                400,
                "InvalidData",
                Some(2),
            ),
            (
                format!(
                    "{good}\n{}\n",
                    good.replace("AwsApiCall", "AwsCloudTrailInsight")
                )
                .into_bytes(),
                headers(&[]),
                "web-1",
                400,
                "InvalidData",
                Some(2),
            ),
            (
                format!(
                    "{good}\n{}\n",
                    good.replace(r#""eventType":"AwsApiCall","#, "")
                )
                .into_bytes(),
                headers(&[]),
                "web-1",
                400,
                "FieldNotFound",
                Some(2),
            ),
            (
                format!(
                    "{}\n",
                    good.replace(
                        r#""eventName":"T""#,
                        &format!(r#""eventName":"T","userAgent":"{}""#, "u".repeat(1500))
                    )
                )
                .into_bytes(),
                headers(&[]),
                "web-1",
                400,
                "FieldTooLong",
                Some(1),
            ),
            (
                format!("{good}\n{}\n", line(2, "999999999999", "us-east-1")).into_bytes(),
                headers(&[]),
                "web-1",
                403,
                "AccessDeniedException",
                Some(2),
            ),
            (
                format!("{}\n", line(2, ACCOUNT, "eu-west-1")).into_bytes(),
                headers(&[]),
                "web-1",
                403,
                "AccessDeniedException",
                Some(1),
            ),
            (
                format!("{good}\n").into_bytes(),
                headers(&[]),
                "stranger",
                403,
                "AccessDeniedException",
                None,
            ),
            (
                (0..4)
                    .map(|n| line(n, ACCOUNT, "us-east-1") + "\n")
                    .collect::<String>()
                    .into_bytes(),
                headers(&[]),
                "web-1",
                413,
                "LimitExceededException",
                Some(4),
            ),
            (
                format!(
                    "{}\n",
                    good.replace(
                        r#""eventName":"T""#,
                        &format!(r#""eventName":"T","x":"{}""#, "u".repeat(3000))
                    )
                )
                .into_bytes(),
                headers(&[]),
                "web-1",
                413,
                "RecordTooLarge",
                Some(1),
            ),
            (
                vec![b'x'; 100_001],
                headers(&[]),
                "web-1",
                413,
                "RequestEntityTooLarge",
                None,
            ),
            (
                format!("{good}\n").into_bytes(),
                {
                    let mut h = headers(&[]);
                    h.insert("content-type", "application/json".parse().unwrap());
                    h
                },
                "web-1",
                415,
                "UnsupportedMediaTypeException",
                None,
            ),
            (
                format!("{good}\n").into_bytes(),
                headers(&[("content-encoding", "gzip")]),
                "web-1",
                415,
                "UnsupportedMediaTypeException",
                None,
            ),
            (
                b"not zstd".to_vec(),
                headers(&[("content-encoding", "zstd")]),
                "web-1",
                400,
                "InvalidData",
                None,
            ),
            (
                zstd::encode_all(&vec![b'\n'; 10_000_000][..], 19).unwrap(),
                headers(&[("content-encoding", "zstd")]),
                "web-1",
                413,
                "RequestEntityTooLarge",
                None,
            ),
            (
                format!("{good}\n").into_bytes(),
                headers(&[("x-groundtrail-seq-first", "5")]),
                "web-1",
                400,
                "InvalidData",
                None,
            ),
        ];
        for (i, (body, h, agent, status, code, line)) in cases.into_iter().enumerate() {
            let err = ingest
                .ingest(agent, &h, Bytes::from(body))
                .await
                .unwrap_err();
            assert_eq!(
                (err.status.as_u16(), err.body.code.as_str(), err.body.line),
                (status, code, line),
                "case {i}: {err}"
            );
            if let Some(l) = line {
                assert!(
                    err.body.message.starts_with(&format!("line {l}: ")),
                    "{}",
                    err.body.message
                );
            }
        }
        assert!(
            ingest.journal.pending().unwrap().is_empty(),
            "nothing written"
        );
        assert_eq!(ingest.journal.backlog().0, 0, "nothing committed");
        // And a good zstd batch passes.
        let body = zstd::encode_all(format!("{good}\n").as_bytes(), 3).unwrap();
        let ok = ingest
            .ingest(
                "web-1",
                &headers(&[("content-encoding", "zstd")]),
                Bytes::from(body),
            )
            .await
            .unwrap();
        assert_eq!(ok.committed, 1);
    }
}
