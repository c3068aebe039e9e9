//! The HTTP(S) listener, after tokio-rs/mini-redis: an accept loop that takes a permit from a
//! [`Semaphore`] before each accept (so at most `max_connections` are served at once and the
//! rest wait in the kernel's queue), one task per connection, and a [`Shutdown`] that every
//! task watches. On shutdown the loop stops accepting, each connection finishes its
//! in-flight request (hyper's graceful shutdown) and closes, and [`run`] returns only when
//! the last connection task is gone — so when it returns, nothing can still be committing.
//!
//! Routes: `POST /v1/events` (see [`crate::ingest`]), `GET /metrics` (Prometheus text), and
//! the CloudTrail API (see [`crate::api`]): `POST /` with `X-Amz-Target`, and
//! `POST /PutAuditEvents`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use groundtrail_common::shutdown::Shutdown;
use groundtrail_common::wire::{self, ErrorResponse};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;

use crate::api::{Api, MAX_API_BODY_BYTES};
use crate::ingest::{Ingest, Peer, Refusal};
use crate::metrics::metrics;

/// A TLS handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Request headers must arrive within this (slowloris).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// The whole body must arrive within this (a slow sender holds a connection slot).
const BODY_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest request head (HTTP/1 buffer, HTTP/2 header list).
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Serves until `shutdown`, then drains connections and returns. `api_only`: serve only the
/// CloudTrail API here (the `[api] listen` listener), not ingest or metrics.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    listener: TcpListener,
    ingest: Arc<Ingest>,
    api: Arc<Api>,
    tls: Option<TlsAcceptor>,
    max_connections: usize,
    api_only: bool,
    mut shutdown: Shutdown,
) {
    let limit = Arc::new(Semaphore::new(max_connections.max(1)));
    // Each connection task holds a sender; when all are dropped, `done.recv()` returns None.
    let (done_tx, mut done) = mpsc::channel::<()>(1);
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.recv() => break,
        };
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.recv() => break,
        };
        let _ = stream.set_nodelay(true);
        let ingest = ingest.clone();
        let api = api.clone();
        let tls = tls.clone();
        let conn_shutdown = shutdown.clone();
        let done_tx = done_tx.clone();
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            let name = tls_stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .and_then(groundtrail_common::tls::certificate_name);
                            let peer = Peer {
                                certificate_name: name,
                                loopback: addr.ip().is_loopback(),
                                api_only,
                            };
                            serve_connection(tls_stream, peer, ingest, api, conn_shutdown).await;
                        }
                        Ok(Err(e)) => tracing::info!(%addr, "TLS handshake failed: {e}"),
                        Err(_) => tracing::info!(%addr, "TLS handshake timed out"),
                    }
                }
                None => {
                    let peer = Peer {
                        certificate_name: None,
                        loopback: addr.ip().is_loopback(),
                        api_only,
                    };
                    serve_connection(stream, peer, ingest, api, conn_shutdown).await
                }
            }
            drop(permit);
            drop(done_tx);
        });
    }
    drop(done_tx);
    let _ = done.recv().await;
}

async fn serve_connection<S>(
    stream: S,
    peer: Peer,
    ingest: Arc<Ingest>,
    api: Arc<Api>,
    mut shutdown: Shutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = Arc::new(peer);
    let service = hyper::service::service_fn(move |req| {
        let ingest = ingest.clone();
        let api = api.clone();
        let peer = peer.clone();
        async move { Ok::<_, Infallible>(route(req, &ingest, &api, &peer).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("connection ended: {e}");
            }
        }
        _ = shutdown.recv() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
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
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    if Api::is_api_request(&parts) {
        return api_request(parts, body, api, peer).await;
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
        (&Method::POST, wire::EVENTS_PATH) => events(req, ingest, peer).await,
        (&Method::GET, "/metrics") => {
            let (pending, undelivered) = ingest.journal().backlog();
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
    let read = tokio::time::timeout(
        BODY_TIMEOUT,
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
                    format!("the body did not arrive within {}s", BODY_TIMEOUT.as_secs()),
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

async fn api_request(
    parts: http::request::Parts,
    body: Incoming,
    api: &Arc<Api>,
    peer: &Peer,
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
    let read = tokio::time::timeout(
        BODY_TIMEOUT,
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
