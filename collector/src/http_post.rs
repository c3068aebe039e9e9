//! One HTTP or HTTPS `POST` to a configured endpoint, with a deadline: what the alert notifiers
//! ([`crate::alerts::notifier`]) and the delivered-file webhooks ([`crate::file_notifications`])
//! send with.
//!
//! Why our own few lines on hyper rather than a client crate: one request per connection to
//! one fixed endpoint, no redirects, no pooling, no cookies; TLS with rustls (already the
//! collector's TLS) against the system's roots plus an optional CA file, HTTP/1.1 only. A 2xx
//! answer is success; anything else is a [`PostError`] that says what failed, for the logs and
//! the retry loops of the callers (which own retries, order and durability).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;

/// Why a `POST` did not get a 2xx answer.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("connect {authority}: {why}")]
    Connect { authority: String, why: String },
    #[error("TLS with {authority}: {why}")]
    Tls { authority: String, why: String },
    #[error("HTTP: {0}")]
    Http(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("answered {status}: {body}")]
    Status { status: u16, body: String },
}

/// A parsed `http://` or `https://` URL, with its TLS client when it is HTTPS.
pub struct Endpoint {
    uri: http::Uri,
    host: String,
    port: u16,
    authority: String,
    path: String,
    tls: Option<TlsConnector>,
    timeout: Duration,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.uri.to_string())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Checks `url` (`http://` or `https://`, with a host) and, for HTTPS, builds the TLS
    /// client: the system's root certificates plus those of `ca_file`. Every `post` must
    /// finish within `timeout`. The error says what is wrong, for the config's error message.
    pub fn new(url: &str, ca_file: Option<&Path>, timeout: Duration) -> Result<Endpoint, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("url {url:?}: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("url {url:?} must start with http:// or https://")),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("url {url:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_else(|| host.clone());
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let tls = if https {
            Some(connector(ca_file)?)
        } else {
            None
        };
        Ok(Endpoint {
            uri,
            host,
            port,
            authority,
            path,
            tls,
            timeout,
        })
    }

    /// The URL, for logs.
    pub fn url(&self) -> String {
        self.uri.to_string()
    }

    /// `POST`s `body` with `headers` (besides `Host` and `User-Agent`) on a new connection;
    /// `Ok` only for a 2xx answer within the timeout.
    pub async fn post(&self, headers: &[(&str, String)], body: Vec<u8>) -> Result<(), PostError> {
        tokio::time::timeout(self.timeout, self.attempt(headers, body))
            .await
            .map_err(|_| PostError::Timeout(self.timeout))?
    }

    async fn attempt(&self, headers: &[(&str, String)], body: Vec<u8>) -> Result<(), PostError> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| PostError::Connect {
                authority: self.authority.clone(),
                why: e.to_string(),
            })?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some(tls) => {
                let tls_err = |why: String| PostError::Tls {
                    authority: self.authority.clone(),
                    why,
                };
                let name =
                    ServerName::try_from(self.host.clone()).map_err(|e| tls_err(e.to_string()))?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| tls_err(e.to_string()))?;
                self.exchange(stream, headers, body).await
            }
            None => self.exchange(tcp, headers, body).await,
        }
    }

    async fn exchange<I>(
        &self,
        io: I,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<(), PostError>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let http = |e: &dyn std::fmt::Display| PostError::Http(e.to_string());
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| http(&e))?;
        tokio::spawn(conn);
        let mut req = http::Request::post(self.path.as_str())
            .header(http::header::HOST, &self.authority)
            .header(http::header::USER_AGENT, "groundtrail-collector");
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| http(&e))?;
        let resp = sender.send_request(req).await.map_err(|e| http(&e))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if status.is_success() {
            Ok(())
        } else {
            let text = String::from_utf8_lossy(&body);
            Err(PostError::Status {
                status: status.as_u16(),
                body: text.chars().take(200).collect(),
            })
        }
    }
}

/// The TLS client: the system's roots and `ca_file`'s certificates, HTTP/1.1 by ALPN.
fn connector(ca_file: Option<&Path>) -> Result<TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = ca_file {
        let certs = groundtrail_common::tls::load_certs(ca).map_err(|e| format!("ca_file: {e}"))?;
        for c in certs {
            roots.add(c).map_err(|e| {
                format!("ca_file {}: not a usable CA certificate: {e}", ca.display())
            })?;
        }
    }
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!("system root certificates: {e}");
    }
    roots.add_parsable_certificates(native.certs);
    if roots.is_empty() {
        return Err("no CA certificates: the system has none and ca_file is not set".to_string());
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let t = Duration::from_secs(1);
        assert!(Endpoint::new("http://127.0.0.1:9/hook?x=1", None, t).is_ok());
        assert!(
            Endpoint::new("ftp://example.com/", None, t)
                .unwrap_err()
                .contains("http:// or https://")
        );
        assert!(Endpoint::new("http:///x", None, t).is_err());
        assert!(Endpoint::new("not a url", None, t).is_err());
        let e = Endpoint::new("http://[::1]:8080/a", None, t).unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            ("::1", 8080, "/a")
        );
    }

    /// A 2xx is success, anything else an error that says what was answered, and a closed
    /// port a connect error.
    #[tokio::test]
    async fn answers_and_failures() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for status in ["204 No Content", "503 Service Unavailable"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
                let reply = format!("HTTP/1.1 {status}\r\ncontent-length: 4\r\n\r\nbusy");
                tokio::io::AsyncWriteExt::write_all(&mut s, reply.as_bytes())
                    .await
                    .unwrap();
            }
        });
        let e = Endpoint::new(&format!("http://{addr}/h"), None, Duration::from_secs(5)).unwrap();
        e.post(&[], b"{}".to_vec()).await.unwrap();
        match e.post(&[], b"{}".to_vec()).await {
            Err(PostError::Status { status: 503, body }) => assert_eq!(body, "busy"),
            other => panic!("{other:?}"),
        }
        let closed = Endpoint::new("http://127.0.0.1:9/h", None, Duration::from_secs(5)).unwrap();
        assert!(matches!(
            closed.post(&[], vec![]).await,
            Err(PostError::Connect { .. })
        ));
    }
}
