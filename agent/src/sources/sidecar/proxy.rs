//! The reverse proxy: accept, (optionally) terminate TLS, forward, stream back, record.
//!
//! # Streaming
//!
//! Bodies are never collected. Each body is wrapped in a [`Tap`] that passes every frame on
//! as it arrives and, on the side, counts its bytes and — only for JSON bodies that the record
//! needs — copies at most the capture limit (100 KB) into a buffer. Memory per request is
//! therefore bounded by that limit plus hyper's own frame buffers, whatever the body size.
//!
//! # When the record is written
//!
//! The response body's [`Tap`] owns a "finisher". It runs exactly once: when the body reaches
//! its end, fails, or is dropped unfinished (client gone). That is the moment the call is over,
//! so the record carries the final byte counts and whether the answer completed. Answers the
//! proxy makes itself (502, 503, 504) are recorded at once. An upgrade (WebSocket) is recorded
//! once, when the `101` goes out; the tunnel that follows is bytes, not API calls.
//!
//! # Upgrades
//!
//! A request with `Connection: upgrade` goes over its own upstream connection (not the pool)
//! so that after the upstream's `101 Switching Protocols` both sides can be taken over as raw
//! streams and joined with `copy_bidirectional`.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use groundtrail_common::event::TlsDetails;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::STATS;
use super::caller_identity::Resolver;
use super::record::{Captured, Outcome, RecordBuilder, RequestInfo};
use super::redact::{Redactor, truncate};
use super::routes::RouteTable;
use super::writer::Writer;
use crate::host_identity::HostIdentity;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type the proxy answers with.
pub(crate) type RespBody = UnsyncBoxBody<Bytes, BoxError>;

/// Most bytes of an error answer kept to find its code and message (when
/// `record_response` is off).
const ERROR_CAPTURE: usize = 8 * 1024;

/// An IP network (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: prefix must be 0..={max}"))?,
            None => max,
        };
        Ok(Cidr { net, prefix })
    }
}

impl Cidr {
    /// Whether `ip` is inside (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// The client address: the peer, or — only when the peer is a trusted proxy — the right-most
/// `X-Forwarded-For` entry that is not itself a trusted proxy (entries left of it could be
/// forged by the client).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer.to_canonical();
    }
    let mut chain: Vec<IpAddr> = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        let Ok(v) = v.to_str() else {
            return peer.to_canonical();
        };
        for part in v.split(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => chain.push(ip.to_canonical()),
                Err(_) => return peer.to_canonical(),
            }
        }
    }
    let mut found = peer.to_canonical();
    for ip in chain.into_iter().rev() {
        found = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    found
}

/// What the TLS handshake established.
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    pub version: String,
    pub cipher: String,
    pub sni: Option<String>,
    /// The verified client certificate's name (CN, else first DNS SAN).
    pub client_cert: Option<String>,
}

/// Per-connection facts.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: Option<TlsInfo>,
}

/// CloudTrail names cipher suites the way OpenSSL does for TLS 1.2 and by the IANA name for
/// TLS 1.3 (`TLS_AES_128_GCM_SHA256`).
pub fn cipher_name(rustls_name: &str) -> String {
    match rustls_name {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => "ECDHE-ECDSA-AES128-GCM-SHA256".into(),
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => "ECDHE-ECDSA-AES256-GCM-SHA384".into(),
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => "ECDHE-ECDSA-CHACHA20-POLY1305".into(),
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => "ECDHE-RSA-AES128-GCM-SHA256".into(),
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => "ECDHE-RSA-AES256-GCM-SHA384".into(),
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => "ECDHE-RSA-CHACHA20-POLY1305".into(),
        other => match other.strip_prefix("TLS13_") {
            Some(rest) => format!("TLS_{rest}"),
            None => other.to_string(),
        },
    }
}

/// Reads the TLS facts of an accepted connection.
pub fn tls_info(conn: &rustls::ServerConnection) -> TlsInfo {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .map(|s| {
            let id = s.suite();
            id.as_str()
                .map(cipher_name)
                .unwrap_or_else(|| format!("{id:?}"))
        })
        .unwrap_or_default();
    let client_cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(groundtrail_common::tls::certificate_name);
    TlsInfo {
        version,
        cipher,
        sni: conn.server_name().map(str::to_string),
        client_cert,
    }
}

/// Everything a request needs, built once from the config.
pub(crate) struct Shared {
    pub routes: RouteTable,
    /// The host: the ARN templates' `{partition}`, `{region}`, `{account}`, `{host}`.
    pub host: HostIdentity,
    pub resolver: Resolver,
    pub builder: RecordBuilder,
    pub redactor: Redactor,
    pub trusted: Vec<Cidr>,
    pub writer: Writer,
    pub fail_closed: bool,
    pub fail_closed_timeout: Duration,
    pub request_id_header: HeaderName,
    /// Lowercase header names to record; `*` = all.
    pub capture_headers: Vec<String>,
    pub upstream_scheme: http::uri::Scheme,
    pub upstream_authority: http::uri::Authority,
    pub upstream_http2: bool,
    pub upstream_timeout: Option<Duration>,
    pub client: Client<HttpConnector, Tap<Incoming>>,
    pub forward_xff: bool,
    pub record_response: bool,
    pub max_parameters: usize,
    /// Identity headers to strip when the peer is not trusted (so the app cannot be fooled).
    pub spoofable_headers: Vec<HeaderName>,
}

/// A body prefix being captured.
#[derive(Debug)]
pub(crate) struct CaptureBuf {
    limit: usize,
    json: bool,
    text: bool,
    buf: Vec<u8>,
    total: u64,
    overflow: bool,
    complete: bool,
}

impl CaptureBuf {
    fn new(limit: usize, json: bool, text: bool) -> Arc<Mutex<CaptureBuf>> {
        Arc::new(Mutex::new(CaptureBuf {
            limit,
            json,
            text,
            buf: Vec::new(),
            total: 0,
            overflow: false,
            complete: false,
        }))
    }

    fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        if self.overflow {
            return;
        }
        let room = self.limit.saturating_sub(self.buf.len());
        if data.len() > room {
            self.overflow = true;
            // The prefix is useless for JSON; free it at once.
            self.buf = Vec::new();
        } else {
            self.buf.extend_from_slice(data);
        }
    }

    fn snapshot(c: &Arc<Mutex<CaptureBuf>>) -> Option<Captured> {
        let c = c.lock().ok()?;
        Some(Captured {
            bytes: c.buf.clone(),
            total: c.total,
            overflow: c.overflow,
            complete: c.complete,
            json: c.json,
            text: c.text,
            limit: c.limit,
        })
    }
}

type Finisher = Box<dyn FnOnce(bool, Option<String>) + Send>;

/// A body that passes through while counting (and optionally capturing) its bytes, and runs a
/// finisher once when it ends, fails or is dropped.
pub struct Tap<B: Body> {
    inner: B,
    capture: Option<Arc<Mutex<CaptureBuf>>>,
    bytes: Arc<AtomicU64>,
    finished: bool,
    on_finish: Option<Finisher>,
}

impl<B: Body + Unpin> Tap<B> {
    fn new(
        inner: B,
        capture: Option<Arc<Mutex<CaptureBuf>>>,
        bytes: Arc<AtomicU64>,
        on_finish: Option<Finisher>,
    ) -> Tap<B> {
        Tap {
            inner,
            capture,
            bytes,
            finished: false,
            on_finish,
        }
    }
}

impl<B: Body> Tap<B> {
    fn finish(&mut self, complete: bool, error: Option<String>) {
        if self.finished {
            return;
        }
        self.finished = true;
        if let Some(c) = &self.capture
            && let Ok(mut c) = c.lock()
        {
            c.complete = complete;
        }
        if let Some(f) = self.on_finish.take() {
            f(complete, error);
        }
    }
}

impl<B> Body for Tap<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
                    if let Some(c) = &this.capture
                        && let Ok(mut c) = c.lock()
                    {
                        c.push(d);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                this.finish(false, Some(e.to_string()));
                Poll::Ready(Some(Err(e)))
            }
            None => {
                this.finish(true, None);
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Body> Drop for Tap<B> {
    fn drop(&mut self) {
        let complete = self.inner.is_end_stream();
        self.finish(complete, None);
    }
}

fn full(
    status: StatusCode,
    body: Value,
    request_id: &HeaderValue,
    rid_name: &HeaderName,
) -> Response<RespBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(rid_name.clone(), request_id.clone());
    r
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including those named in `Connection`.
/// With `keep_upgrade`, `Connection: upgrade` and `Upgrade` stay (the upgrade is forwarded).
fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !(keep_upgrade && n == header::UPGRADE))
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
    if keep_upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        h.remove(header::UPGRADE);
    }
}

fn upgrade_of(req: &Request<Incoming>) -> Option<String> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let conn_upgrade = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !conn_upgrade {
        return None;
    }
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.to_ascii_lowercase())
}

fn content_kind(h: &HeaderMap) -> (bool, bool) {
    let ct = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let json = ct.starts_with("application/json") || ct.contains("+json");
    let text = ct.starts_with("text/");
    (json, text)
}

fn valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 200 && b.iter().all(|c| c.is_ascii_graphic())
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP",
    }
}

impl Shared {
    fn captured_headers(&self, h: &HeaderMap) -> Map<String, Value> {
        let mut out = Map::new();
        if self.capture_headers.is_empty() {
            return out;
        }
        let all = self.capture_headers.iter().any(|c| c == "*");
        for name in h.keys() {
            let n = name.as_str();
            if !all && !self.capture_headers.iter().any(|c| c == n) {
                continue;
            }
            let value = if self.redactor.is_secret_header(n) {
                super::redact::REDACTED.to_string()
            } else {
                let joined: Vec<String> = h
                    .get_all(name)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect();
                truncate(&joined.join(", "), 256)
            };
            out.insert(n.to_string(), Value::String(value));
        }
        out
    }
}

/// Handles one request. Never fails: every problem is an answer (and a record).
pub(crate) async fn handle(
    mut req: Request<Incoming>,
    conn: Arc<ConnInfo>,
    sh: Arc<Shared>,
) -> Result<Response<RespBody>, Infallible> {
    let started = Instant::now();
    STATS.requests.fetch_add(1, Ordering::Relaxed);
    let peer = conn.peer.ip();
    let peer_trusted = sh.trusted.iter().any(|c| c.contains(peer));
    let source_ip = client_ip(peer, req.headers(), &sh.trusted);

    // requestID: the client's (or an upstream gateway's) if sane, else ours; passed upstream.
    let rid_name = sh.request_id_header.clone();
    let rid_value = match req.headers().get(&rid_name) {
        Some(v) if valid_request_id(v) => v.clone(),
        _ => {
            let id = uuid::Uuid::new_v4().to_string();
            let v = HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("invalid"));
            req.headers_mut().insert(rid_name.clone(), v.clone());
            v
        }
    };
    let request_id = String::from_utf8_lossy(rid_value.as_bytes()).into_owned();

    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let route = sh.routes.resolve(&method, &path, &sh.host);
    let resolved = sh.resolver.resolve(
        req.headers(),
        conn.tls.as_ref().and_then(|t| t.client_cert.as_deref()),
        peer_trusted,
    );
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let tls = conn.tls.as_ref().map(|t| TlsDetails {
        tls_version: Some(t.version.clone()),
        cipher_suite: Some(t.cipher.clone()),
        client_provided_host_header: host
            .clone()
            .or_else(|| t.sni.clone())
            .map(|h| truncate(&h, 256)),
        ..TlsDetails::default()
    });
    let upgrade = upgrade_of(&req);
    let info = RequestInfo {
        method,
        path,
        query: req.uri().query().map(str::to_string),
        protocol: protocol(req.version()).to_string(),
        route,
        identity: resolved.identity,
        identity_note: resolved.note,
        source_ip: source_ip.to_string(),
        user_agent: req
            .headers()
            .get(header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        request_id,
        tls,
        headers: sh.captured_headers(req.headers()),
        upgrade: upgrade.clone(),
    };

    // fail_closed: nothing is forwarded before its record is durable.
    let mut write_ahead = None;
    if sh.fail_closed {
        let rec = sh.builder.write_ahead(&info);
        let id = rec.event_id.clone();
        if let Err(e) = sh.writer.write_durable(rec, sh.fail_closed_timeout).await {
            STATS.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "fail_closed: audit record not durable; answering 503");
            let out = Outcome {
                status: 503,
                proxy_error: Some((
                    "AuditRecordNotStored".into(),
                    format!("refused before forwarding (fail_closed): {e}"),
                )),
                duration: started.elapsed(),
                ..Outcome::default()
            };
            // If the write-ahead record lands after all (timeout), this one says how it ended.
            sh.writer.submit(sh.builder.build(&info, &out, Some(&id)));
            return Ok(full(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"errorCode": "ServiceUnavailable", "message": "the audit trail cannot record this request right now", "requestId": info.request_id}),
                &rid_value,
                &rid_name,
            ));
        }
        write_ahead = Some(id);
    }

    // Capture the request body only when the record can use it (JSON).
    let (req_json, _) = content_kind(req.headers());
    let req_capture = req_json.then(|| CaptureBuf::new(sh.max_parameters, true, false));
    let bytes_in = Arc::new(AtomicU64::new(0));
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));

    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers, upgrade.is_some());
    if !peer_trusted {
        for h in &sh.spoofable_headers {
            parts.headers.remove(h);
        }
    }
    if parts.headers.get(header::HOST).is_none()
        && let Some(h) = host.as_deref().and_then(|h| HeaderValue::from_str(h).ok())
    {
        parts.headers.insert(header::HOST, h);
    }
    if sh.forward_xff {
        let prior = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let xff = match prior {
            Some(p) if peer_trusted => format!("{p}, {}", peer.to_canonical()),
            _ => peer.to_canonical().to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            parts.headers.insert("x-forwarded-for", v);
        }
        if !peer_trusted || !parts.headers.contains_key("x-forwarded-proto") {
            let proto = if conn.tls.is_some() { "https" } else { "http" };
            parts
                .headers
                .insert("x-forwarded-proto", HeaderValue::from_static(proto));
        }
    }
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let body = Tap::new(body, req_capture.clone(), bytes_in.clone(), None);

    let result: Result<Response<Incoming>, (StatusCode, String, String)> = if upgrade.is_some() {
        parts.version = Version::HTTP_11;
        parts.uri = pq.parse().unwrap_or_else(|_| Uri::from_static("/"));
        send_upgrade(&sh, Request::from_parts(parts, body)).await
    } else {
        parts.version = if sh.upstream_http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        let uri = Uri::builder()
            .scheme(sh.upstream_scheme.clone())
            .authority(sh.upstream_authority.clone())
            .path_and_query(pq.as_str())
            .build();
        match uri {
            Err(e) => Err((
                StatusCode::BAD_REQUEST,
                "InvalidRequest".into(),
                e.to_string(),
            )),
            Ok(uri) => {
                parts.uri = uri;
                let fut = sh.client.request(Request::from_parts(parts, body));
                match sh.upstream_timeout {
                    Some(t) => match tokio::time::timeout(t, fut).await {
                        Ok(r) => r.map_err(|e| bad_gateway(&e)),
                        Err(_) => Err((
                            StatusCode::GATEWAY_TIMEOUT,
                            "GatewayTimeout".into(),
                            format!("the upstream sent no answer within {t:?}"),
                        )),
                    },
                    None => fut.await.map_err(|e| bad_gateway(&e)),
                }
            }
        }
    };

    let mut resp = match result {
        Ok(r) => r,
        Err((status, code, message)) => {
            STATS.upstream_errors.fetch_add(1, Ordering::Relaxed);
            let out = Outcome {
                status: status.as_u16(),
                proxy_error: Some((code.clone(), message.clone())),
                request_body: req_capture.as_ref().and_then(CaptureBuf::snapshot),
                bytes_in: bytes_in.load(Ordering::Relaxed),
                duration: started.elapsed(),
                ..Outcome::default()
            };
            sh.writer
                .submit(sh.builder.build(&info, &out, write_ahead.as_deref()));
            return Ok(full(
                status,
                json!({"errorCode": code, "message": message, "requestId": info.request_id}),
                &rid_value,
                &rid_name,
            ));
        }
    };

    let status = resp.status();
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    if switching && let Some(client_up) = client_upgrade {
        let upstream_up = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match tokio::join!(client_up, upstream_up) {
                (Ok(c), Ok(u)) => {
                    let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                }
                (c, u) => {
                    tracing::debug!(client = ?c.err(), upstream = ?u.err(), "upgrade not completed")
                }
            }
        });
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, switching);
    if !parts.headers.contains_key(&rid_name) {
        parts.headers.insert(rid_name.clone(), rid_value.clone());
    }
    let (resp_json, resp_text) = content_kind(&parts.headers);
    let resp_capture = if sh.record_response && resp_json && status.is_success() {
        Some(CaptureBuf::new(sh.max_parameters, true, false))
    } else if status.as_u16() >= 400 && (resp_json || resp_text) {
        Some(CaptureBuf::new(ERROR_CAPTURE, resp_json, resp_text))
    } else {
        None
    };
    let bytes_out = Arc::new(AtomicU64::new(0));
    let finisher: Finisher = {
        let sh = sh.clone();
        let resp_capture = resp_capture.clone();
        let bytes_out = bytes_out.clone();
        Box::new(move |complete, error| {
            let out = Outcome {
                status: status.as_u16(),
                proxy_error: None,
                request_body: req_capture.as_ref().and_then(CaptureBuf::snapshot),
                response_body: resp_capture.as_ref().and_then(CaptureBuf::snapshot),
                bytes_in: bytes_in.load(Ordering::Relaxed),
                bytes_out: bytes_out.load(Ordering::Relaxed),
                response_complete: complete,
                response_error: error,
                duration: started.elapsed(),
            };
            sh.writer
                .submit(sh.builder.build(&info, &out, write_ahead.as_deref()));
        })
    };
    let body = Tap::new(body, resp_capture, bytes_out, Some(finisher))
        .map_err(|e| Box::new(e) as BoxError)
        .boxed_unsync();
    Ok(Response::from_parts(parts, body))
}

fn bad_gateway(e: &hyper_util::client::legacy::Error) -> (StatusCode, String, String) {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    (
        StatusCode::BAD_GATEWAY,
        "BadGateway".into(),
        format!("the upstream could not be reached: {msg}"),
    )
}

/// Sends an upgrade request over a fresh connection that supports upgrades.
async fn send_upgrade(
    sh: &Shared,
    req: Request<Tap<Incoming>>,
) -> Result<Response<Incoming>, (StatusCode, String, String)> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        (
            StatusCode::BAD_GATEWAY,
            "BadGateway".to_string(),
            format!("the upstream could not be reached ({what}): {e}"),
        )
    };
    let addr = match sh.upstream_authority.port_u16() {
        Some(_) => sh.upstream_authority.as_str().to_string(),
        None => format!("{}:80", sh.upstream_authority.host()),
    };
    let stream = TcpStream::connect(&addr)
        .await
        .map_err(|e| fail("connect", &e))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| fail("handshake", &e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upgrade connection to upstream ended");
        }
    });
    sender
        .send_request(req)
        .await
        .map_err(|e| fail("request", &e))
}

/// Serves one accepted connection (TLS already done) until it ends, falls silent (`activity`:
/// no first request within the header timeout, or idle after its last answer) or the drain
/// signal. On TLS, `alpn` (the protocol ALPN chose) fixes HTTP/1 or HTTP/2 up front.
pub(crate) async fn serve_io<I>(
    io: I,
    info: ConnInfo,
    sh: Arc<Shared>,
    builder: hyper_util::server::conn::auto::Builder<TokioExecutor>,
    alpn: Option<Vec<u8>>,
    activity: groundtrail_common::connections::Activity,
    mut drain: groundtrail_common::shutdown::Shutdown,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let info = Arc::new(info);
    let watch = activity.clone();
    let svc =
        hyper::service::service_fn(move |req| {
            // A call is in flight until its response body is dropped: a long download or stream
            // is never cut by the idle timer.
            let in_flight = activity.begin();
            let answer = handle(req, info.clone(), sh.clone());
            async move {
                let response = answer.await?;
                Ok::<_, Infallible>(response.map(move |body| {
                    groundtrail_common::connections::Tracked::new(body, in_flight)
                }))
            }
        });
    let builder = match alpn.as_deref() {
        Some(b"h2") => builder.http2_only(),
        Some(b"http/1.1") => builder.http1_only(),
        _ => builder,
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let silent = tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "sidecar connection ended with an error");
            }
            return;
        }
        _ = watch.expired() => true,
        _ = drain.recv() => false,
    };
    conn.as_mut().graceful_shutdown();
    if silent {
        tracing::debug!("sidecar: closing a silent connection");
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.as_mut()).await;
    } else {
        // The drain timeout in the accept loop bounds how long open calls may take.
        let _ = conn.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(
            c.contains("::ffff:10.1.2.3".parse().unwrap()),
            "mapped IPv4"
        );
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        let one: Cidr = "::1".parse().unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!(!one.contains("::2".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("ten".parse::<Cidr>().is_err());
    }

    #[test]
    fn forwarded_for_is_honoured_only_from_trusted_peers() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "1.1.1.1, 203.0.113.7, 10.0.0.5".parse().unwrap(),
        );
        // From a trusted proxy: right-most untrusted entry.
        assert_eq!(
            client_ip("10.0.0.2".parse().unwrap(), &h, &trusted),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        // From anyone else: the peer, whatever the header says.
        assert_eq!(
            client_ip("198.51.100.1".parse().unwrap(), &h, &trusted),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
        // Garbage in the chain: the peer.
        h.insert("x-forwarded-for", "nonsense".parse().unwrap());
        assert_eq!(
            client_ip("10.0.0.2".parse().unwrap(), &h, &trusted),
            "10.0.0.2".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn cipher_names_as_cloudtrail_writes_them() {
        assert_eq!(
            cipher_name("TLS13_AES_128_GCM_SHA256"),
            "TLS_AES_128_GCM_SHA256"
        );
        assert_eq!(
            cipher_name("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
            "ECDHE-RSA-AES128-GCM-SHA256"
        );
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-secret-hop".parse().unwrap());
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("x-app", "kept".parse().unwrap());
        let mut a = h.clone();
        strip_hop_by_hop(&mut a, false);
        assert_eq!(a.len(), 1);
        assert_eq!(a["x-app"], "kept");
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert!(h.get("x-secret-hop").is_none());
    }

    #[test]
    fn capture_keeps_a_bounded_prefix() {
        let c = CaptureBuf::new(10, true, false);
        {
            let mut g = c.lock().unwrap();
            g.push(b"12345");
            g.push(b"67890");
            assert!(!g.overflow);
            g.push(b"x");
            assert!(g.overflow && g.buf.is_empty());
            g.push(&[0u8; 1000]);
            assert_eq!(g.total, 1011);
        }
        let s = CaptureBuf::snapshot(&c).unwrap();
        assert!(s.overflow && !s.complete);
    }
}
