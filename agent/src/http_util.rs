//! The agent's small local HTTP servers (app events, control socket, metrics) and the client the
//! CLI uses to talk to a running agent over its Unix sockets. HTTP/1.1 only, hyper 1.
//!
//! Each server is bounded like the collector's listener (see
//! [`groundtrail_common::connections`]): at most `[local_http] max_connections` connections
//! at once (further ones wait in the kernel's accept queue), a connection that sends no
//! request head within `header_timeout_ms` or stays idle `idle_timeout_ms` after its last
//! answer is closed, and a request (body and answer) must complete within
//! `request_timeout_ms`. So a local process that opens sockets and stays silent cannot stop
//! `groundtrail-agent status` or other applications' PutAuditEvents calls for more than a
//! header timeout. The accept loop is [`groundtrail_common::listener`]: on shutdown each open
//! connection answers its request in flight and closes, and the server returns after them.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use groundtrail_common::connections::{Activity, ConnectionLimiter, Timeouts};
use groundtrail_common::listener::{Accepted, Listener};
use groundtrail_common::shutdown::Shutdown;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::sink::BoxFuture;

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnInfo {
    /// The peer's uid (`SO_PEERCRED`), for Unix sockets.
    pub uid: Option<u32>,
    /// The peer's pid, for Unix sockets.
    pub pid: Option<i32>,
}

/// A request handler.
pub type Handler = Arc<
    dyn Fn(Request<Incoming>, ConnInfo) -> BoxFuture<'static, Response<Full<Bytes>>> + Send + Sync,
>;

/// A response with a body and content type.
pub fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

/// A JSON error in the AWS JSON-protocol shape: `{"__type": code, "message": ...}`.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "__type": code, "message": message });
    respond(status, "application/json", body.to_string())
}

/// Reads a request body of at most `limit` bytes; `None` if it is larger or broken.
pub async fn read_body(body: Incoming, limit: usize) -> Option<Bytes> {
    Limited::new(body, limit)
        .collect()
        .await
        .ok()
        .map(|b| b.to_bytes())
}

/// Binds a Unix socket at `path` with permission bits `mode`. A stale socket file left by a
/// crashed agent is removed; a live one (something answers) is an error.
pub async fn bind_unix(path: &Path, mode: u32) -> std::io::Result<UnixListener> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use by a running process", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// How a local server bounds its connections.
#[derive(Debug, Clone)]
pub struct Limits {
    limiter: ConnectionLimiter,
    timeouts: Timeouts,
}

impl Limits {
    /// At most `max_connections` at once, with `timeouts` (from `[local_http]`, see
    /// `settings::LocalHttpSettings::limits`). Each call makes new slots.
    pub fn new(max_connections: usize, timeouts: Timeouts) -> Limits {
        Limits {
            // Every peer of a local server is this host: only the total counts.
            limiter: ConnectionLimiter::new(max_connections, max_connections),
            timeouts,
        }
    }
}

/// Serves one connection (HTTP/1) until its peer is done, it stays silent too long, or the
/// server stops (the request in flight is answered first).
async fn serve_io<I>(
    io: I,
    info: ConnInfo,
    handler: Handler,
    timeouts: Timeouts,
    mut shutdown: Shutdown,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new(&timeouts);
    let watch = activity.clone();
    let service =
        hyper::service::service_fn(move |req| {
            let h = handler.clone();
            let in_flight = activity.begin();
            async move {
                let response = match tokio::time::timeout(timeouts.body, h(req, info)).await {
                    Ok(r) => r,
                    Err(_) => json_error(
                        StatusCode::REQUEST_TIMEOUT,
                        "RequestTimeout",
                        "the request did not complete in time",
                    ),
                };
                Ok::<_, std::convert::Infallible>(response.map(move |body| {
                    groundtrail_common::connections::Tracked::new(body, in_flight)
                }))
            }
        });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(timeouts.header)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let stopping = tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "local connection ended");
            }
            return;
        }
        _ = watch.expired() => {
            tracing::debug!("closing a silent local connection");
            return;
        }
        _ = shutdown.recv() => true,
    };
    if stopping {
        // Answer the request in flight, then close; a peer that keeps the connection open
        // is not waited for beyond the idle timer.
        conn.as_mut().graceful_shutdown();
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = watch.expired() => {}
        }
    }
}

/// Serves `handler` on a Unix socket until `shutdown`, then lets open connections finish.
pub async fn serve_unix(
    listener: UnixListener,
    handler: Handler,
    limits: Limits,
    shutdown: Shutdown,
) {
    let Limits { limiter, timeouts } = limits;
    Listener::new("local (unix)", listener, limiter)
        .run(
            shutdown,
            |_, why| tracing::debug!("local connection refused: {why}"),
            |c: Accepted<UnixStream>| {
                let cred = c.stream.peer_cred().ok();
                let info = ConnInfo {
                    uid: cred.map(|c| c.uid()),
                    pid: cred.and_then(|c| c.pid()),
                };
                serve_io(c.stream, info, handler.clone(), timeouts, c.shutdown)
            },
        )
        .await
}

/// Serves `handler` on a TCP listener until `shutdown`, then lets open connections finish.
pub async fn serve_tcp(
    listener: TcpListener,
    handler: Handler,
    limits: Limits,
    shutdown: Shutdown,
) {
    let Limits { limiter, timeouts } = limits;
    Listener::new("local (tcp)", listener, limiter)
        .run(
            shutdown,
            |_, why| tracing::debug!("local connection refused: {why}"),
            |c: Accepted<TcpStream>| {
                serve_io(
                    c.stream,
                    ConnInfo::default(),
                    handler.clone(),
                    timeouts,
                    c.shutdown,
                )
            },
        )
        .await
}

/// Errors of the local client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {path}: {source} (is the agent running?)")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("talking to the agent: {0}")]
    Http(String),
}

/// One request to a running agent over a Unix socket.
pub async fn unix_request(
    path: &Path,
    method: http::Method,
    uri: &str,
    body: Bytes,
) -> Result<(StatusCode, Bytes), ClientError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ClientError::Connect {
            path: path.display().to_string(),
            source,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|e| ClientError::Http(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?
        .to_bytes();
    Ok((status, body))
}
