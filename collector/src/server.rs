//! The HTTP(S) listener, after tokio-rs/mini-redis: an accept loop that takes a connection
//! slot before each accept (so at most `[server] max_connections` are served at once and the
//! rest wait in the kernel's queue), one task per connection, and a [`Shutdown`] that every
//! task watches. On shutdown the loop stops accepting, each connection finishes its
//! in-flight request (hyper's graceful shutdown) and closes, and [`run`] returns only when
//! the last connection task is gone — so when it returns, nothing can still be committing.
//!
//! No one can hold the collector's connections by opening sockets and staying silent (see
//! [`groundtrail_common::connections`]): one peer address holds at most
//! `max_connections_per_peer` of them, and every phase of a connection has a timer — the TLS
//! handshake (`handshake_timeout`), the first request's headers or HTTP/2 preface and later
//! HTTP/1 heads (`header_timeout`), the body (`body_timeout`), the silence after a response
//! (`idle_timeout`), and an HTTP/2 peer that stops answering pings (`http2_keepalive`). On TLS
//! the protocol is the one ALPN chose, so hyper reads no preface to guess it. Request bodies in
//! flight share one memory budget (`[limits] max_body_bytes_in_flight`, [`BodyBudget`]).
//!
//! The accept loop itself is [`groundtrail_common::listener`], shared with the agent's
//! servers.
//!
//! Routes: `POST /v1/events` (see [`crate::ingest`]), `GET /metrics` (Prometheus text), the
//! CloudTrail API (see [`crate::api`]): `POST /` with `X-Amz-Target`, and
//! `POST /PutAuditEvents`, and the web console under `/console` (see [`crate::console`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use groundtrail_common::connections::{Activity, ConnectionLimiter, Timeouts};
use groundtrail_common::listener::{Accepted, Listener};
use groundtrail_common::shutdown::Shutdown;
use groundtrail_common::wire::{self, ErrorResponse};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::api::{Api, MAX_API_BODY_BYTES};
use crate::budget::BodyBudget;
use crate::config::Config;
use crate::ingest::{Ingest, Peer, Refusal};
use crate::metrics::metrics;

/// Largest request head (HTTP/1 buffer, HTTP/2 header list).
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// What every listener of one collector shares: its connection limits and timers, and the
/// memory budget for bodies.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
    pub timeouts: Timeouts,
    pub budget: Arc<BodyBudget>,
    /// The web console under `/console` (`[console] enabled`), on every listener.
    pub console: Option<Arc<crate::console::Console>>,
}

impl Settings {
    /// From `[server]` and `[limits]`.
    pub fn from_config(config: &Config) -> Settings {
        let s = &config.server;
        Settings {
            max_connections: s.max_connections,
            max_connections_per_peer: s.max_connections_per_peer,
            timeouts: Timeouts {
                handshake: s.handshake_timeout.get(),
                header: s.header_timeout.get(),
                body: s.body_timeout.get(),
                idle: s.idle_timeout.get(),
                keepalive: s.http2_keepalive.get(),
            },
            budget: Arc::new(BodyBudget::new(config.limits.max_body_bytes_in_flight)),
            console: None,
        }
    }

    /// Serves `console` under `/console`.
    pub fn with_console(mut self, console: Option<Arc<crate::console::Console>>) -> Settings {
        self.console = console;
        self
    }
}

/// Serves until `shutdown`, then drains connections and returns. `api_only`: serve only the
/// CloudTrail API here (the `[api] listen` listener), not ingest or metrics.
pub async fn run(
    listener: TcpListener,
    ingest: Arc<Ingest>,
    api: Arc<Api>,
    tls: Option<TlsAcceptor>,
    settings: Settings,
    api_only: bool,
    shutdown: Shutdown,
) {
    let limiter =
        ConnectionLimiter::new(settings.max_connections, settings.max_connections_per_peer);
    let settings = Arc::new(settings);
    let refused = |addr: Option<std::net::SocketAddr>,
                   why: &groundtrail_common::connections::Refused| {
        tracing::info!(addr = ?addr, "connection closed at once: {why}");
        metrics().connection_refused();
    };
    Listener::new("collector", listener, limiter)
        .run(shutdown, refused, |accepted: Accepted<TcpStream>| {
            let (ingest, api, tls, settings) =
                (ingest.clone(), api.clone(), tls.clone(), settings.clone());
            async move {
                let Accepted {
                    stream,
                    peer: addr,
                    shutdown,
                } = accepted;
                let Some(addr) = addr else { return };
                // Timed from the accept: a TLS handshake counts against the header timeout too.
                let activity = Activity::new(&settings.timeouts);
                let handshake = settings.timeouts.handshake;
                let peer = |certificate_name| Peer {
                    certificate_name,
                    loopback: addr.ip().is_loopback(),
                    api_only,
                    ip: Some(addr.ip()),
                };
                match tls {
                    Some(acceptor) => {
                        match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                            Ok(Ok(tls_stream)) => {
                                let session = tls_stream.get_ref().1;
                                let name = session
                                    .peer_certificates()
                                    .and_then(|c| c.first())
                                    .and_then(groundtrail_common::tls::certificate_name);
                                let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
                                let conn = Connection {
                                    peer: peer(name),
                                    alpn,
                                    ingest,
                                    api,
                                    settings,
                                    activity,
                                };
                                conn.serve(tls_stream, shutdown).await;
                            }
                            Ok(Err(e)) => tracing::info!(%addr, "TLS handshake failed: {e}"),
                            Err(_) => tracing::info!(%addr, "TLS handshake timed out"),
                        }
                    }
                    None => {
                        let conn = Connection {
                            peer: peer(None),
                            alpn: None,
                            ingest,
                            api,
                            settings,
                            activity,
                        };
                        conn.serve(stream, shutdown).await
                    }
                }
            }
        })
        .await;
}

/// One accepted connection.
struct Connection {
    peer: Peer,
    /// The protocol TLS's ALPN settled on (`h2`, `http/1.1`); `None` without TLS or ALPN.
    alpn: Option<Vec<u8>>,
    ingest: Arc<Ingest>,
    api: Arc<Api>,
    settings: Arc<Settings>,
    activity: Activity,
}

impl Connection {
    async fn serve<S>(self, stream: S, mut shutdown: Shutdown)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            peer,
            alpn,
            ingest,
            api,
            settings,
            activity,
        } = self;
        let peer = Arc::new(peer);
        let timeouts = settings.timeouts;
        let watch = activity.clone();
        let service = hyper::service::service_fn(move |req| {
            // In flight from its headers until the response body is dropped (written out).
            let in_flight = activity.begin();
            let ingest = ingest.clone();
            let api = api.clone();
            let peer = peer.clone();
            let settings = settings.clone();
            async move {
                let response = route(req, &ingest, &api, &peer, &settings).await;
                Ok::<_, Infallible>(response.map(move |body| {
                    groundtrail_common::connections::Tracked::new(body, in_flight)
                }))
            }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(timeouts.header)
            .max_buf_size(MAX_HEADER_BYTES);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_HEADER_BYTES as u32)
            .keep_alive_interval(Some(timeouts.keepalive))
            .keep_alive_timeout(timeouts.keepalive);
        // On TLS, ALPN already chose: no preface to read and guess from.
        let builder = match alpn.as_deref() {
            Some(b"h2") => builder.http2_only(),
            Some(b"http/1.1") => builder.http1_only(),
            _ => builder,
        };
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        let silent = tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("connection ended: {e}");
                }
                return;
            }
            _ = watch.expired() => true,
            _ = shutdown.recv() => false,
        };
        // HTTP/2: GOAWAY; HTTP/1: close once the request in flight (if any) is answered.
        conn.as_mut().graceful_shutdown();
        if silent {
            tracing::debug!("closing a silent connection");
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.as_mut()).await;
        } else {
            // An in-flight request finishes, but a peer that then keeps the connection open
            // is not waited for beyond the idle timer.
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = watch.expired() => {}
            }
        }
    }
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn refusal_response(r: &Refusal) -> Response<Full<Bytes>> {
    r.response()
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    crate::ingest::error_response(status, &ErrorResponse::new(code, message))
}

async fn route(
    req: Request<Incoming>,
    ingest: &Arc<Ingest>,
    api: &Arc<Api>,
    peer: &Peer,
    settings: &Settings,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    if Api::is_api_request(&parts) {
        return api_request(parts, body, api, peer, settings).await;
    }
    // The console: on the API-only listener too (browsers have no client certificate).
    if let Some(console) = &settings.console
        && crate::console::Console::is_console_path(parts.uri.path())
    {
        let timeout = settings.timeouts.body;
        return console.handle(parts, body, peer.loopback, timeout).await;
    }
    if peer.api_only {
        return error(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            "only the CloudTrail API is served on this listener",
        );
    }
    let req = Request::from_parts(parts, body);
    match (req.method(), req.uri().path()) {
        (&Method::POST, wire::EVENTS_PATH) => events(req, ingest, peer, settings).await,
        (&Method::GET, "/metrics") => {
            let (pending, undelivered) = ingest.journal().backlog();
            let dedup = ingest.journal().dedup_stats();
            let text = metrics().render(&[
                (
                    "groundtrail_journal_pending_records",
                    "Committed records not yet in a closed log file.",
                    pending as u64,
                ),
                (
                    "groundtrail_journal_undelivered_files",
                    "Closed log files not yet stored, counted per destination.",
                    undelivered as u64,
                ),
                (
                    "groundtrail_journal_log_bytes",
                    "Bytes the journal's log of received batches occupies on disk.",
                    ingest.journal().log_size_on_disk(),
                ),
                (
                    "groundtrail_dedup_memory_bytes",
                    "Memory the dedup index holds (memtables, block cache, pinned index blocks).",
                    dedup.memory_bytes(),
                ),
                (
                    "groundtrail_dedup_keys",
                    "Records the dedup index remembers (fjall's estimate).",
                    dedup.keys,
                ),
            ]);
            Response::builder()
                .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
                .body(Full::new(Bytes::from(text)))
                .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
        }
        (_, wire::EVENTS_PATH) | (_, "/metrics") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "method not allowed",
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            "no such path",
        ),
    }
}

async fn events(
    req: Request<Incoming>,
    ingest: &Arc<Ingest>,
    peer: &Peer,
    settings: &Settings,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let agent = match ingest.agent_name(peer, &parts.headers) {
        Ok(a) => a,
        Err(r) => return refused("unknown", r),
    };
    // Refuse on headers alone (unknown agent, media type, Content-Length) before reading.
    if let Err(r) = ingest.check_headers(&agent, &parts.headers) {
        return refused(&agent, r);
    }
    // Held until the batch is answered: the body and what is parsed from it stay in memory.
    let Some(_reserved) = settings
        .budget
        .reserve(declared_length(&parts.headers, ingest.max_body_bytes()))
    else {
        return with_retry_after(refused(&agent, budget_spent()));
    };
    let body_timeout = settings.timeouts.body;
    let read = tokio::time::timeout(
        body_timeout,
        Limited::new(body, ingest.max_body_bytes()).collect(),
    )
    .await;
    let Ok(read) = read else {
        return refused(
            &agent,
            Refusal {
                status: StatusCode::REQUEST_TIMEOUT,
                body: ErrorResponse::new(
                    "RequestTimeout",
                    format!("the body did not arrive within {}s", body_timeout.as_secs()),
                ),
            },
        );
    };
    let body = match read {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return refused(&agent, ingest.refuse_oversize_body());
            }
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidData",
                &format!("reading body: {e}"),
            );
        }
    };
    match ingest.ingest(&agent, &parts.headers, body).await {
        Ok(ok) => json_response(StatusCode::OK, serde_json::to_vec(&ok).unwrap_or_default()),
        Err(r) => refusal_response(&r),
    }
}

/// What a body will take: its `Content-Length` when it declares one within `max`, else `max`
/// (a chunked body is read up to `max`).
fn declared_length(headers: &HeaderMap, max: usize) -> usize {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(max, |n| n.min(max))
}

fn budget_spent() -> Refusal {
    Refusal {
        status: StatusCode::SERVICE_UNAVAILABLE,
        body: ErrorResponse::new(
            "ThrottlingException",
            "the collector is reading as many request bodies as its memory budget \
             ([limits] max_body_bytes_in_flight) allows; retry later",
        ),
    }
}

fn with_retry_after(mut r: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    r.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    r
}

async fn api_request(
    mut parts: http::request::Parts,
    body: Incoming,
    api: &Arc<Api>,
    peer: &Peer,
    settings: &Settings,
) -> Response<Full<Bytes>> {
    let api_error = |status: StatusCode, code: &str, message: &str| {
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/x-amz-json-1.1")
            .body(Full::new(Bytes::from(
                serde_json::json!({"__type": code, "message": message}).to_string(),
            )))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    };
    let Some(_reserved) = settings
        .budget
        .reserve(declared_length(&parts.headers, MAX_API_BODY_BYTES))
    else {
        let b = budget_spent().body;
        return with_retry_after(api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            &b.code,
            &b.message,
        ));
    };
    let read = tokio::time::timeout(
        settings.timeouts.body,
        Limited::new(body, MAX_API_BODY_BYTES).collect(),
    )
    .await;
    let body = match read {
        Err(_) => {
            return api_error(
                StatusCode::REQUEST_TIMEOUT,
                "RequestTimeout",
                "the body did not arrive in time",
            );
        }
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return api_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "ValidationException",
                    &format!(
                        "the request is larger than {} bytes (PutAuditEvents takes at most 1 MB)",
                        MAX_API_BODY_BYTES
                    ),
                );
            }
            return api_error(
                StatusCode::BAD_REQUEST,
                "SerializationException",
                &e.to_string(),
            );
        }
        Ok(Ok(b)) => b.to_bytes(),
    };
    // For the collector's records of the calls it serves (`sourceIPAddress`).
    if let Some(ip) = peer.ip {
        parts.extensions.insert(crate::api::trail::PeerIp(ip));
    }
    let (status, body, content_type) = api.handle(&parts, body, peer.loopback).await;
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header("x-amzn-requestid", uuid::Uuid::new_v4().to_string())
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn refused(agent: &str, r: Refusal) -> Response<Full<Bytes>> {
    use crate::internal_events::{BatchRefused, InternalEvent};
    BatchRefused {
        agent,
        status: r.status.as_u16(),
        code: &r.body.code,
        message: &r.body.message,
    }
    .emit();
    refusal_response(&r)
}
