//! Sidecar mode: the agent as a reverse proxy in front of an HTTP service, turning every API
//! call into a CloudTrail record.
//!
//! ```text
//! client --HTTP/1.1, HTTP/2, (TLS)--> sidecar --HTTP/1.1 keep-alive (or h2c)--> upstream app
//!                                        |
//!                                        +--> one record per call --> agent buffer --> trail
//! ```
//!
//! Put the sidecar where the service's clients connect (the pod's service port) and the
//! application behind it on loopback. Each call becomes one `AwsApiCall` record: who called
//! ([`caller_identity`]), what action on which resources ([`routes`]), with which parameters
//! ([`record`], secrets hidden by [`redact`]), from where, and whether it failed. Bodies stream
//! through in both directions and are never held in memory; WebSocket and other upgrades are
//! passed through and recorded once. `docs/sidecar.md` is the operator's guide.
//!
//! # When the buffer cannot take a record: `failure_mode`
//!
//! - **`fail_open`** (default): the service stays available. Records go to the buffer after
//!   the answer, off the request path; a record the buffer cannot take is counted and the loss
//!   reaches the trail as a loss record — the buffer's own `RecordsDropped` under its
//!   `drop_newest` policy, or the sidecar's `SidecarRecordsLost` for a full sidecar queue or a
//!   buffer error (see [`writer`]). One record per call.
//! - **`fail_closed`**: no call reaches the upstream unless a record of it is already durable.
//!   Before forwarding, the sidecar writes a *write-ahead* record (identity, action, resources,
//!   path and query parameters, `additionalEventData.phase = "request"`) and waits until the
//!   buffer has flushed it, at most `fail_closed_timeout_ms`. If that fails — buffer full
//!   under `drop_newest`, still full after the timeout under `block`, disk error, shutting
//!   down — the client gets `503` and the upstream never sees the request. After the call, the
//!   complete record follows with `addendum = {reason: "UPDATED_DATA", originalEventID: <the
//!   write-ahead record>}` (CloudTrail's own way to amend an event), so a call is two records
//!   under `fail_closed`. A crash between the two leaves the write-ahead record: the call is
//!   never unrecorded, only its outcome can be missing.
//!
//! Why not "check for room, then forward, then record"? A check is not a reservation: another
//! writer can take the room, or the agent can crash, between the check and the record — and
//! the call would then have happened without a trace, which is exactly what `fail_closed`
//! promises never happens.

pub mod caller_identity;
pub mod jwt;
pub mod proxy;
pub mod record;
pub mod redact;
pub mod routes;
pub mod writer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use groundtrail_common::event::MAX_PARAMETERS_BYTES;
use groundtrail_common::shutdown::Shutdown;
use http::HeaderName;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::host_identity::HostIdentity;
use crate::sink::RecordSink;

pub use caller_identity::{IdentityConfig, IdentitySource, TrustedHeaderConfig};
pub use jwt::JwtConfig;
pub use routes::{ResourceTemplate, RouteConfig};

/// What the sidecar does when the agent's buffer cannot take a record (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Serve the call; count the lost record so the loss reaches the trail.
    #[default]
    FailOpen,
    /// Answer 503 unless a write-ahead record of the call is durable before forwarding.
    FailClosed,
}

/// `eventCategory` of the sidecar's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum EventCategory {
    /// Control-plane calls (`managementEvent: true`), as most trails select by default.
    #[default]
    Management,
    /// Data-plane calls (`managementEvent: false`, `eventCategory: "Data"`).
    Data,
}

/// `[sidecar.tls]`: terminate TLS at the sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarTlsConfig {
    /// PEM certificate chain the sidecar presents (leaf first).
    pub cert: PathBuf,
    /// PEM private key of that certificate.
    pub key: PathBuf,
    /// PEM CA bundle. When set, every client must present a certificate issued by it, and the
    /// certificate's name becomes the caller's identity (`client_cert` source).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// `[sidecar]` in the agent config.
///
/// A minimal sidecar only needs `listen` and `upstream`:
///
/// ```toml
/// [sidecar]
/// listen = "0.0.0.0:8080"
/// upstream = "http://127.0.0.1:8081"
/// event_source = "orders.example.internal"
///
/// [[sidecar.routes]]
/// method = "GET"
/// path = "/orders/{id}"
/// event_name = "GetOrder"
/// resources = [{ type = "Example::Order", arn = "arn:{partition}:orders:{region}:{account}:order/{id}" }]
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SidecarConfig {
    /// Address the proxy listens on (the address clients connect to).
    pub listen: SocketAddr,
    /// The application, as `http://host:port` (plain HTTP: it runs beside the sidecar, on
    /// loopback or inside the pod).
    pub upstream: String,
    /// Speak HTTP/2 with prior knowledge (h2c) to the upstream instead of HTTP/1.1.
    pub upstream_http2: bool,
    /// Longest wait for the upstream's response head, seconds (0: no limit). A timeout is
    /// answered `504` and recorded as `GatewayTimeout`.
    pub upstream_timeout_secs: u64,
    /// `eventSource` of every record. Empty: `api.<domain>`.
    pub event_source: String,
    /// `eventCategory` of every record.
    pub event_category: EventCategory,
    /// Terminate TLS (and optionally verify client certificates) at the sidecar.
    pub tls: Option<SidecarTlsConfig>,
    /// The route table: method + path pattern -> eventName, readOnly, resources.
    pub routes: Vec<RouteConfig>,
    /// How callers are identified.
    pub identity: IdentityConfig,
    /// Peers (IPs or CIDRs) whose `X-Forwarded-For` and identity headers are believed: a load
    /// balancer or an authenticating proxy in front of the sidecar.
    pub trusted_proxies: Vec<String>,
    /// Header carrying the request id. Used as `requestID` when present; otherwise an id is
    /// generated, set on the request to the upstream and on the answer.
    pub request_id_header: String,
    /// Hide the values of obviously secret fields and headers (password, secret, token,
    /// authorization, api key, cookie, credential, ...). Turning this off is rarely right.
    pub redact_defaults: bool,
    /// More body/query field names to hide (matched case-insensitively, ignoring `-`, `_`, `.`).
    pub redact_fields: Vec<String>,
    /// More header names to hide.
    pub redact_headers: Vec<String>,
    /// Request headers copied into `additionalEventData.headers` (`"*"`: all). Secret ones
    /// are recorded as hidden.
    pub capture_headers: Vec<String>,
    /// Record the JSON body of successful answers as `responseElements` (capped, redacted).
    /// Off by default, as in CloudTrail where most read calls have `null` there.
    pub record_response: bool,
    /// Cap of `requestParameters` and `responseElements`, bytes (at most CloudTrail's 100 KB).
    pub max_parameters_bytes: usize,
    /// `fail_open` (default) or `fail_closed`.
    pub failure_mode: FailureMode,
    /// Under `fail_closed`, longest wait for the write-ahead record to be durable before the
    /// call is refused with 503, milliseconds.
    pub fail_closed_timeout_ms: u64,
    /// Records waiting for the buffer; beyond, records are lost (and counted) under
    /// `fail_open`. Bounds the sidecar's memory when the buffer is slow.
    pub max_pending_records: usize,
    /// Most simultaneous client connections; further ones are closed at once.
    pub max_connections: usize,
    /// Most simultaneous connections from one peer IP address; further ones are closed at
    /// once. Behind a load balancer every connection comes from its address: keep this at
    /// `max_connections` there.
    pub max_connections_per_peer: usize,
    /// Longest wait for a request's headers, seconds (slowloris guard): for a connection's
    /// first request (including the HTTP/2 preface) counted from the accept.
    pub header_read_timeout_secs: u64,
    /// A connection with no call in flight is closed this long after its last answer,
    /// seconds (HTTP/1 keep-alive and HTTP/2 alike; HTTP/2 peers are also pinged at this
    /// interval and dropped when they stop answering).
    pub idle_timeout_secs: u64,
    /// Longest TLS handshake, seconds.
    pub tls_handshake_timeout_secs: u64,
    /// At shutdown, how long open connections may finish their calls, seconds.
    pub drain_timeout_secs: u64,
    /// Append the peer to `X-Forwarded-For` and set `X-Forwarded-Proto` on forwarded requests.
    pub forward_xff: bool,
}

impl Default for SidecarConfig {
    fn default() -> Self {
        SidecarConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            upstream: "http://127.0.0.1:8081".into(),
            upstream_http2: false,
            upstream_timeout_secs: 300,
            event_source: String::new(),
            event_category: EventCategory::Management,
            tls: None,
            routes: Vec::new(),
            identity: IdentityConfig::default(),
            trusted_proxies: Vec::new(),
            request_id_header: "x-request-id".into(),
            redact_defaults: true,
            redact_fields: Vec::new(),
            redact_headers: Vec::new(),
            capture_headers: Vec::new(),
            record_response: false,
            max_parameters_bytes: MAX_PARAMETERS_BYTES,
            failure_mode: FailureMode::FailOpen,
            fail_closed_timeout_ms: 2000,
            max_pending_records: 4096,
            max_connections: 4096,
            max_connections_per_peer: 4096,
            header_read_timeout_secs: 30,
            idle_timeout_secs: 60,
            tls_handshake_timeout_secs: 10,
            drain_timeout_secs: 10,
            forward_xff: true,
        }
    }
}

/// Why the sidecar could not start (or stopped).
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    /// A config value is unusable; the message names the field.
    #[error("sidecar config: {0}")]
    Config(String),
    #[error(transparent)]
    Route(#[from] routes::RouteError),
    #[error(transparent)]
    Jwt(#[from] jwt::JwtConfigError),
    #[error("sidecar.tls: {0}")]
    Tls(#[from] groundtrail_common::tls::TlsError),
}

/// Counters of the sidecar since start (exported as metrics by the agent).
#[derive(Debug)]
pub struct SidecarStats {
    /// Calls received.
    pub requests: AtomicU64,
    /// Records the buffer confirmed (including loss records).
    pub records_written: AtomicU64,
    /// Records lost and counted by the sidecar (not those the buffer counted itself).
    pub records_lost: AtomicU64,
    /// Calls refused with 503 under `fail_closed`.
    pub refused: AtomicU64,
    /// Calls answered 502/504 because the upstream failed.
    pub upstream_errors: AtomicU64,
    /// Connections closed at once because `max_connections` was reached.
    pub connections_refused: AtomicU64,
}

/// The process-wide sidecar counters.
pub static STATS: SidecarStats = SidecarStats {
    requests: AtomicU64::new(0),
    records_written: AtomicU64::new(0),
    records_lost: AtomicU64::new(0),
    refused: AtomicU64::new(0),
    upstream_errors: AtomicU64::new(0),
    connections_refused: AtomicU64::new(0),
};

impl SidecarConfig {
    /// The eventSource used: `event_source`, or `api.<domain>`.
    pub fn event_source(&self, host: &HostIdentity) -> String {
        if self.event_source.trim().is_empty() {
            format!("api.{}", host.domain)
        } else {
            self.event_source.trim().to_string()
        }
    }

    /// Checks everything that can be checked without binding: upstream, routes, keys, CIDRs,
    /// TLS files. The agent calls this at config load so mistakes surface before start.
    pub fn validate(&self) -> Result<(), SidecarError> {
        self.upstream_parts()?;
        routes::RouteTable::compile(&self.routes)?;
        self.trusted()?;
        if let Some(j) = &self.identity.jwt {
            jwt::JwtVerifier::new(j)?;
        }
        if let Some(t) = &self.tls {
            groundtrail_common::tls::server_config(&t.cert, &t.key, t.client_ca.as_deref())?;
        }
        if self.max_connections == 0 || self.max_connections_per_peer == 0 {
            return Err(SidecarError::Config(
                "max_connections and max_connections_per_peer must be at least 1".into(),
            ));
        }
        if self.header_read_timeout_secs == 0 || self.idle_timeout_secs == 0 {
            return Err(SidecarError::Config(
                "header_read_timeout_secs and idle_timeout_secs must be at least 1".into(),
            ));
        }
        HeaderName::from_bytes(self.request_id_header.as_bytes()).map_err(|_| {
            SidecarError::Config(format!(
                "request_id_header {:?} is not a header name",
                self.request_id_header
            ))
        })?;
        if self.max_parameters_bytes == 0 || self.max_parameters_bytes > MAX_PARAMETERS_BYTES {
            return Err(SidecarError::Config(format!(
                "max_parameters_bytes must be 1..={MAX_PARAMETERS_BYTES} (CloudTrail's cap)"
            )));
        }
        if self.identity.order.contains(&IdentitySource::ClientCert)
            && self.tls.as_ref().is_some_and(|t| t.client_ca.is_none())
        {
            // Not an error: the source is simply never used. Said once, at start.
            tracing::info!("sidecar: identity source client_cert needs tls.client_ca; skipped");
        }
        Ok(())
    }

    fn upstream_parts(&self) -> Result<(http::uri::Scheme, http::uri::Authority), SidecarError> {
        let bad = |why: &str| SidecarError::Config(format!("upstream {:?}: {why}", self.upstream));
        let uri: http::Uri = self.upstream.parse().map_err(|_| bad("not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(bad(
                    "https upstreams are not supported; the upstream runs beside the sidecar, use http://",
                ));
            }
            _ => return Err(bad("must start with http://")),
        }
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err(bad("must not have a path (requests keep theirs)"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| bad("has no host"))?;
        Ok((http::uri::Scheme::HTTP, authority))
    }

    fn trusted(&self) -> Result<Vec<proxy::Cidr>, SidecarError> {
        self.trusted_proxies
            .iter()
            .map(|s| {
                s.parse()
                    .map_err(|e: String| SidecarError::Config(format!("trusted_proxies: {e}")))
            })
            .collect()
    }
}

/// Runs the sidecar on `listener` until `shutdown`. Then it stops accepting, lets open calls
/// finish for `drain_timeout_secs`, and waits for the last records to reach the buffer. The
/// caller binds the listener: the agent binds `config.listen` at start-up, where a busy address
/// is reported with the other listeners (and named in `READY=1`); tests bind port 0.
pub async fn run(
    config: SidecarConfig,
    host: HostIdentity,
    sink: Arc<dyn RecordSink>,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), SidecarError> {
    config.validate()?;
    let (upstream_scheme, upstream_authority) = config.upstream_parts()?;
    let jwt = match &config.identity.jwt {
        Some(j) => Some(jwt::JwtVerifier::new(j)?),
        None => None,
    };
    let tls = match &config.tls {
        Some(t) => Some(tokio_rustls::TlsAcceptor::from(
            groundtrail_common::tls::server_config(&t.cert, &t.key, t.client_ca.as_deref())?,
        )),
        None => None,
    };
    let redactor = redact::Redactor::new(
        config.redact_defaults,
        &config.redact_fields,
        &config.redact_headers,
    );
    let event_source = config.event_source(&host);
    let (writer, writer_task) = writer::Writer::spawn(
        sink,
        config.max_pending_records,
        host.clone(),
        event_source.clone(),
    );
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_timer(TokioTimer::new())
        .http2_only(config.upstream_http2)
        .build(connector);
    let mut spoofable = Vec::new();
    if let Some(t) = &config.identity.trusted_header {
        for h in std::iter::once(&t.user_header).chain(t.role_header.as_ref()) {
            if let Ok(n) = HeaderName::from_bytes(h.as_bytes()) {
                spoofable.push(n);
            }
        }
    }
    let shared = Arc::new(proxy::Shared {
        routes: routes::RouteTable::compile(&config.routes)?,
        resolver: caller_identity::Resolver::new(&config.identity, jwt, host.clone()),
        host: host.clone(),
        builder: record::RecordBuilder {
            event_source,
            host: host.clone(),
            management: config.event_category == EventCategory::Management,
            redactor: redactor.clone(),
            max_parameters: config.max_parameters_bytes,
            record_response: config.record_response,
        },
        redactor,
        trusted: config.trusted()?,
        writer,
        fail_closed: config.failure_mode == FailureMode::FailClosed,
        fail_closed_timeout: Duration::from_millis(config.fail_closed_timeout_ms),
        request_id_header: HeaderName::from_bytes(config.request_id_header.as_bytes())
            .map_err(|e| SidecarError::Config(format!("request_id_header: {e}")))?,
        capture_headers: config
            .capture_headers
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        upstream_scheme,
        upstream_authority,
        upstream_http2: config.upstream_http2,
        upstream_timeout: (config.upstream_timeout_secs > 0)
            .then(|| Duration::from_secs(config.upstream_timeout_secs)),
        client,
        forward_xff: config.forward_xff,
        record_response: config.record_response,
        max_parameters: config.max_parameters_bytes,
        spoofable_headers: spoofable,
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(config.header_read_timeout_secs.max(1)))
        .keep_alive(true);
    let timeouts = groundtrail_common::connections::Timeouts {
        handshake: Duration::from_secs(config.tls_handshake_timeout_secs.max(1)),
        header: Duration::from_secs(config.header_read_timeout_secs.max(1)),
        idle: Duration::from_secs(config.idle_timeout_secs.max(1)),
        keepalive: Duration::from_secs(config.idle_timeout_secs.max(1)),
        ..Default::default()
    };
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(timeouts.keepalive))
        .keep_alive_timeout(timeouts.keepalive);
    let handshake = timeouts.handshake;
    let limiter = groundtrail_common::connections::ConnectionLimiter::new(
        config.max_connections,
        config.max_connections_per_peer,
    );
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        upstream = %config.upstream,
        tls = config.tls.is_some(),
        mode = ?config.failure_mode,
        "sidecar listening"
    );
    // A proxy answers rather than letting clients hang: a connection over the cap is closed
    // at once; open calls get `drain_timeout_secs` at shutdown.
    let refused = |peer: Option<std::net::SocketAddr>,
                   why: &groundtrail_common::connections::Refused| {
        tracing::debug!(peer = ?peer, "sidecar connection closed at once: {why}");
        STATS
            .connections_refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    };
    groundtrail_common::listener::Listener::new("sidecar", listener, limiter)
        .when_full(groundtrail_common::listener::WhenFull::Refuse)
        .drain_within(Duration::from_secs(config.drain_timeout_secs))
        .run(shutdown, refused, |c: groundtrail_common::listener::Accepted<tokio::net::TcpStream>| {
            let (sh, b, tls) = (shared.clone(), builder.clone(), tls.clone());
            async move {
                let groundtrail_common::listener::Accepted { stream, peer, shutdown } = c;
                let Some(peer) = peer else { return };
                // Timed from the accept: the handshake counts against the header timeout.
                let activity = groundtrail_common::connections::Activity::new(&timeouts);
                match tls {
                    None => {
                        let info = proxy::ConnInfo { peer, tls: None };
                        proxy::serve_io(stream, info, sh, b, None, activity, shutdown).await;
                    }
                    Some(acceptor) => {
                        let s = match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "sidecar TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        };
                        let alpn = s.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                        let info = proxy::ConnInfo { peer, tls: Some(proxy::tls_info(s.get_ref().1)) };
                        proxy::serve_io(s, info, sh, b, alpn, activity, shutdown).await;
                    }
                }
            }
        })
        .await;
    // The writer ends once every handle is gone: ours, and those of finished calls.
    drop(shared);
    if tokio::time::timeout(Duration::from_secs(10), writer_task)
        .await
        .is_err()
    {
        tracing::warn!("sidecar: the last records did not reach the buffer within 10 s");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_unknown_fields() {
        let c: SidecarConfig = toml::from_str("").unwrap();
        assert_eq!(c, SidecarConfig::default());
        assert_eq!(c.failure_mode, FailureMode::FailOpen);
        assert!(c.redact_defaults && !c.record_response);
        c.validate().unwrap();
        let c: SidecarConfig = toml::from_str(
            r#"
            listen = "127.0.0.1:9000"
            upstream = "http://127.0.0.1:9001"
            failure_mode = "fail_closed"
            event_category = "Data"
            trusted_proxies = ["10.0.0.0/8"]
            [identity]
            order = ["jwt", "trusted_header"]
            [identity.trusted_header]
            user_header = "x-auth-request-user"
            [[routes]]
            method = "GET"
            path = "/orders/{id}"
            event_name = "GetOrder"
            resources = [{ type = "Shop::Order", arn = "arn:{partition}:shop:{region}:{account}:order/{id}" }]
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.failure_mode, FailureMode::FailClosed);
        assert!(toml::from_str::<SidecarConfig>("nope = 1").is_err());
        assert!(toml::from_str::<SidecarConfig>("[identity]\nbogus = 1").is_err());
        assert!(
            toml::from_str::<SidecarConfig>(
                "[[routes]]\nmethod='GET'\npath='/'\nevent_name='X'\nextra=1"
            )
            .is_err()
        );
    }

    struct NoSink;
    impl RecordSink for NoSink {
        fn append(
            &self,
            _: Vec<groundtrail_common::Record>,
            _: Option<crate::sink::Checkpoint>,
        ) -> crate::sink::BoxFuture<'_, Result<(), crate::sink::SinkError>> {
            Box::pin(async { Ok(()) })
        }
        fn checkpoint(&self, _: &str) -> Option<Vec<u8>> {
            None
        }
    }

    #[tokio::test]
    async fn run_reports_bad_config() {
        let host = crate::host_identity::testutil::web1();
        let (_tx, rx) = tokio::sync::broadcast::channel(1);
        let config = SidecarConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            upstream: "ftp://x".into(),
            ..SidecarConfig::default()
        };
        let listener = TcpListener::bind(config.listen).await.unwrap();
        let e = run(config, host, Arc::new(NoSink), listener, Shutdown::new(rx))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("upstream"), "{e}");
    }

    /// The Kubernetes example's config map must stay loadable: its `[sidecar]` table by
    /// [`SidecarConfig`], everything else by the agent's own config.
    #[test]
    fn kubernetes_example_config_parses() {
        let yaml = include_str!("../../../../packaging/kubernetes/sidecar-example.yaml");
        let mut toml_text = String::new();
        let mut inside = false;
        for line in yaml.lines() {
            if line.trim_end() == "  agent.toml: |" {
                inside = true;
                continue;
            }
            if inside {
                if line == "---" {
                    break;
                }
                toml_text.push_str(line.strip_prefix("    ").unwrap_or(""));
                toml_text.push('\n');
            }
        }
        let mut table: toml::Table = toml::from_str(&toml_text).unwrap();
        let sidecar = table.remove("sidecar").expect("a [sidecar] table");
        let c: SidecarConfig = sidecar.try_into().unwrap();
        assert_eq!(c.routes.len(), 4);
        routes::RouteTable::compile(&c.routes).unwrap();
        c.upstream_parts().unwrap();
        c.trusted().unwrap();
        let rest: crate::config::Config = toml::Value::Table(table).try_into().unwrap();
        assert!(!rest.sources.auth_log.enabled);
    }

    #[test]
    fn validation_names_the_field() {
        let bad = |f: &dyn Fn(&mut SidecarConfig)| {
            let mut c = SidecarConfig::default();
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert!(bad(&|c| c.upstream = "https://x".into()).contains("upstream"));
        assert!(bad(&|c| c.upstream = "http://x/base".into()).contains("path"));
        assert!(bad(&|c| c.trusted_proxies = vec!["x".into()]).contains("trusted_proxies"));
        assert!(bad(&|c| c.max_parameters_bytes = 200_000).contains("max_parameters_bytes"));
        assert!(bad(&|c| c.request_id_header = "bad header".into()).contains("request_id_header"));
        assert!(
            bad(&|c| c.routes = vec![RouteConfig {
                method: "GET".into(),
                path: "/x/{id}".into(),
                event_name: "X".into(),
                read_only: None,
                resources: vec![ResourceTemplate {
                    resource_type: "T".into(),
                    arn: "{nope}".into()
                }],
            }])
            .contains("sidecar.routes[0]")
        );
        assert!(
            bad(&|c| c.tls = Some(SidecarTlsConfig {
                cert: "/nonexistent/c.pem".into(),
                key: "/nonexistent/k.pem".into(),
                client_ca: None,
            }))
            .contains("/nonexistent/c.pem")
        );
    }
}
