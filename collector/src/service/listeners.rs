//! The collector's listeners, shared by single-node and cluster mode: the ingest listener's
//! TLS, the API-only listener, and serving both until shutdown has drained them.

use std::sync::Arc;

use groundtrail_common::shutdown::Shutdown;
use tokio::net::TcpListener;

use super::ServeError;
use crate::api::Api;
use crate::config::Config;
use crate::ingest::Ingest;

/// The ingest listener's TLS (`[server] tls_cert`, `tls_key`, `client_ca`), if configured.
pub(crate) fn server_tls(config: &Config) -> Result<Option<tokio_rustls::TlsAcceptor>, ServeError> {
    Ok(match (&config.server.tls_cert, &config.server.tls_key) {
        (Some(cert), Some(tls_key)) => Some(tokio_rustls::TlsAcceptor::from(
            groundtrail_common::tls::server_config(
                cert,
                tls_key,
                config.server.client_ca.as_deref(),
            )?,
        )),
        _ => None,
    })
}

/// Binds `[api] listen`, if set, with the server's certificate but no client certificates.
pub(crate) async fn bind_api(
    config: &Config,
) -> Result<(Option<TcpListener>, Option<tokio_rustls::TlsAcceptor>), ServeError> {
    let api_listener = match config.api.listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::ApiListen { addr, source })?,
        ),
        None => None,
    };
    let api_tls = match (&config.server.tls_cert, &config.server.tls_key) {
        (Some(cert), Some(tls_key)) if api_listener.is_some() => {
            Some(tokio_rustls::TlsAcceptor::from(
                groundtrail_common::tls::server_config(cert, tls_key, None)?,
            ))
        }
        _ => None,
    };
    Ok((api_listener, api_tls))
}

/// The bound addresses `READY=1` names (`X_LISTEN_INGEST`, `X_LISTEN_API`; see
/// `groundtrail_common::sd_notify`), so whoever configured port 0 learns the real ports.
pub(crate) fn bound(
    listener: &TcpListener,
    api_listener: Option<&TcpListener>,
) -> Vec<(&'static str, std::net::SocketAddr)> {
    let mut out: Vec<_> = listener
        .local_addr()
        .ok()
        .map(|a| (groundtrail_common::sd_notify::role::INGEST, a))
        .into_iter()
        .collect();
    out.extend(
        api_listener
            .and_then(|l| l.local_addr().ok())
            .map(|a| (groundtrail_common::sd_notify::role::API, a)),
    );
    out
}

/// Serves ingest and the API on `listener`, and the API alone on `api_listener`, until
/// `shutdown` and every connection has drained.
pub(crate) async fn run_listeners(
    listener: TcpListener,
    api_listener: Option<TcpListener>,
    (tls, api_tls): (
        Option<tokio_rustls::TlsAcceptor>,
        Option<tokio_rustls::TlsAcceptor>,
    ),
    ingest: Arc<Ingest>,
    api: Arc<Api>,
    settings: crate::server::Settings,
    shutdown: Shutdown,
) {
    let main = crate::server::run(
        listener,
        ingest.clone(),
        api.clone(),
        tls,
        settings.clone(),
        false,
        shutdown.clone(),
    );
    match api_listener {
        Some(l) => {
            tracing::info!(
                listen = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
                tls = api_tls.is_some(),
                "CloudTrail API listening"
            );
            let second = crate::server::run(l, ingest, api, api_tls, settings, true, shutdown);
            tokio::join!(main, second);
        }
        None => {
            drop(api);
            drop(shutdown);
            main.await;
        }
    }
}
