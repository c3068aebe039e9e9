//! Test support for the sidecar: a real upstream (hyper), the agent's real buffer (sled on
//! disk) as the sink, and the sidecar itself on a port-0 listener.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use groundtrail_agent::buffer::FullPolicy;
use groundtrail_agent::buffer::{Buffer, BufferOptions};
use groundtrail_agent::host_identity::HostIdentity;
use groundtrail_agent::sources::sidecar::{SidecarConfig, SidecarError, run};
use groundtrail_common::Record;
use groundtrail_common::shutdown::Shutdown;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type TestBody = UnsyncBoxBody<Bytes, BoxError>;

pub const SOURCE: &str = "orders.test.internal";

/// The host the sidecar tests run on (a pod, in its own domain).
pub fn host() -> HostIdentity {
    HostIdentity {
        host: "pod-1".into(),
        account_id: "123456789012".into(),
        region: "onprem-1".into(),
        domain: "test.internal".into(),
        partition: "aws".into(),
    }
}

/// Byte `i` of every generated body.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// A long run of the pattern, so a chunk at any offset is a slice of it.
pub fn pattern_block() -> &'static [u8] {
    static BLOCK: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BLOCK.get_or_init(|| (0..(256 * 1024 + 251) as u64).map(pattern_byte).collect())
}

/// Whether `chunk`, found at `offset` of a body, is the pattern.
pub fn is_pattern(chunk: &[u8], offset: u64) -> bool {
    let block = pattern_block();
    let mut done = 0usize;
    while done < chunk.len() {
        let start = ((offset + done as u64) % 251) as usize;
        let n = (chunk.len() - done).min(block.len() - start);
        if chunk[done..done + n] != block[start..start + n] {
            return false;
        }
        done += n;
    }
    true
}

/// A body generated on the fly: `total` bytes of the pattern in 64 KB chunks. Nothing is kept
/// after a chunk is handed on.
pub struct PatternBody {
    total: u64,
    sent: u64,
}

impl PatternBody {
    pub fn new(total: u64) -> PatternBody {
        PatternBody { total, sent: 0 }
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.sent >= self.total {
            return Poll::Ready(None);
        }
        let n = (self.total - self.sent).min(64 * 1024) as usize;
        let start = (self.sent % 251) as usize;
        let chunk = Bytes::copy_from_slice(&pattern_block()[start..start + n]);
        self.sent += n as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }
    fn is_end_stream(&self) -> bool {
        self.sent >= self.total
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.total - self.sent)
    }
}

pub fn full_body(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed_unsync()
}

pub fn empty_body() -> TestBody {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

/// The test upstream: counts hits and keeps the last request's headers.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub last_headers: Arc<Mutex<Option<HeaderMap>>>,
}

impl Upstream {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
    pub fn last_headers(&self) -> HeaderMap {
        self.last_headers
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_default()
    }
}

fn json_response(status: StatusCode, v: Value) -> Response<TestBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full_body(v.to_string()))
        .unwrap()
}

async fn upstream_handle(
    mut req: Request<Incoming>,
    up: Upstream,
) -> Result<Response<TestBody>, Infallible> {
    up.hits.fetch_add(1, Ordering::SeqCst);
    *up.last_headers.lock().unwrap() = Some(req.headers().clone());
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    if path == "/ws" {
        let key = req
            .headers()
            .get("sec-websocket-key")
            .map(|k| k.as_bytes().to_vec())
            .unwrap_or_default();
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(up) = on.await else { return };
            let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(up),
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            let (mut tx, mut rx) = ws.split();
            while let Some(Ok(msg)) = rx.next().await {
                if msg.is_close() {
                    let _ = tx.close().await;
                    break;
                }
                if (msg.is_text() || msg.is_binary()) && tx.send(msg).await.is_err() {
                    break;
                }
            }
        });
        return Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header("sec-websocket-accept", accept)
            .body(empty_body())
            .unwrap());
    }
    if path == "/slow" {
        tokio::time::sleep(Duration::from_secs(3)).await;
        return Ok(json_response(StatusCode::OK, json!({"late": true})));
    }
    if path == "/upload" {
        let mut body = req.into_body();
        let (mut total, mut ok) = (0u64, true);
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                ok = false;
                break;
            };
            if let Some(d) = frame.data_ref() {
                ok &= is_pattern(d, total);
                total += d.len() as u64;
            }
        }
        return Ok(json_response(
            StatusCode::OK,
            json!({"bytes": total, "ok": ok}),
        ));
    }
    if path == "/download" {
        let n: u64 = query
            .strip_prefix("n=")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        return Ok(Response::builder()
            .header("content-type", "application/octet-stream")
            .body(PatternBody::new(n).boxed_unsync())
            .unwrap());
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let code: u16 = code.parse().unwrap_or(500);
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Ok(match code {
            409 => json_response(
                status,
                json!({"error": {"code": "OrderLocked", "message": "order 7 is locked"}}),
            ),
            500 => Response::builder()
                .status(status)
                .header("content-type", "text/plain")
                .body(full_body("database on fire\nat line 3"))
                .unwrap(),
            _ => Response::builder()
                .status(status)
                .body(empty_body())
                .unwrap(),
        });
    }
    // Echo: what arrived.
    let method = req.method().to_string();
    let version = format!("{:?}", req.version());
    let mut headers = serde_json::Map::new();
    for (k, v) in req.headers() {
        headers.insert(
            k.to_string(),
            Value::String(String::from_utf8_lossy(v.as_bytes()).into()),
        );
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Ok(json_response(
        StatusCode::OK,
        json!({"method": method, "version": version, "path": path, "query": query, "bodyBytes": body.len(), "headers": headers, "ok": true, "secretToken": "upstream-secret"}),
    ))
}

/// Starts the test upstream on a free port.
pub async fn upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = Upstream {
        addr: listener.local_addr().unwrap(),
        hits: Arc::new(AtomicUsize::new(0)),
        last_headers: Arc::new(Mutex::new(None)),
    };
    let u = up.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let u = u.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| upstream_handle(req, u.clone()));
                // HTTP/1.1 (with upgrades) and h2c, like a real application server.
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    up
}

/// A running sidecar with its buffer.
pub struct Sidecar {
    pub addr: SocketAddr,
    pub buffer: Buffer,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::broadcast::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), SidecarError>>>,
}

pub fn buffer_opts(max_bytes: u64, full_policy: FullPolicy) -> BufferOptions {
    BufferOptions {
        max_bytes,
        full_policy,
        flush_delay: Duration::ZERO,
        ..BufferOptions::default()
    }
}

/// A config pointing at `up` with the event source [`SOURCE`].
pub fn config(up: &Upstream) -> SidecarConfig {
    SidecarConfig {
        upstream: format!("http://{}", up.addr),
        event_source: SOURCE.into(),
        ..SidecarConfig::default()
    }
}

pub async fn start(cfg: SidecarConfig, opts: BufferOptions) -> Sidecar {
    let dir = tempfile::tempdir().unwrap();
    let (buffer, _) = Buffer::open(&dir.path().join("buffer"), opts, host()).unwrap();
    start_with(cfg, buffer, dir).await
}

pub async fn start_with(cfg: SidecarConfig, buffer: Buffer, dir: tempfile::TempDir) -> Sidecar {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::broadcast::channel(1);
    let sink = Arc::new(buffer.clone());
    let task = tokio::spawn(run(cfg, host(), sink, listener, Shutdown::new(rx)));
    Sidecar {
        addr,
        buffer,
        _dir: dir,
        stop: Some(tx),
        task: Some(task),
    }
}

impl Sidecar {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Every record in the buffer, in order.
    pub fn records(&self) -> Vec<Record> {
        self.buffer
            .read_from(0, 1_000_000, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|e| Record::from_json(&e.json).expect("every record is valid"))
            .collect()
    }

    /// Waits (10 s at most) until `pred` holds for the buffered records.
    pub async fn wait_records(&self, pred: impl Fn(&[Record]) -> bool) -> Vec<Record> {
        for _ in 0..500 {
            let r = self.records();
            if pred(&r) {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let r = self.records();
        panic!(
            "records never matched; have {}:\n{}",
            r.len(),
            r.iter()
                .map(|r| String::from_utf8_lossy(&r.to_json()).into_owned())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    /// The single record with this requestID (waits for it).
    pub async fn record_for(&self, request_id: &str) -> Record {
        let rs = self
            .wait_records(|rs| {
                rs.iter()
                    .any(|r| r.request_id.as_deref() == Some(request_id))
            })
            .await;
        let mine: Vec<Record> = rs
            .into_iter()
            .filter(|r| r.request_id.as_deref() == Some(request_id))
            .collect();
        assert_eq!(mine.len(), 1, "one record per call: {mine:?}");
        mine.into_iter().next().unwrap()
    }

    pub async fn stop(mut self) {
        drop(self.stop.take());
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

pub fn client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends a request, collects the answer.
pub async fn send(
    c: &Client<HttpConnector, TestBody>,
    req: Request<TestBody>,
) -> (StatusCode, HeaderMap, Bytes) {
    let resp = c.request(req).await.expect("request through the sidecar");
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, bytes)
}

pub fn get(url: &str, rid: &str) -> Request<TestBody> {
    Request::get(url)
        .header("x-request-id", rid)
        .header("user-agent", "sidecar-test/1.0")
        .body(empty_body())
        .unwrap()
}

pub fn post_json(url: &str, rid: &str, v: Value) -> Request<TestBody> {
    Request::post(url)
        .header("x-request-id", rid)
        .header("content-type", "application/json")
        .body(full_body(v.to_string()))
        .unwrap()
}
