//! Talking to a collector over HTTP and TLS: posting batches to `/v1/events` the way an agent
//! does (one connection per request), plain `GET`s, and reading a Prometheus text.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use crate::records::{ndjson, zstd};

/// An answer from the collector.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("reply is not JSON ({e}): {}", self.body))
    }

    /// The CloudTrail-style error code of an error answer (`__type`).
    pub fn code(&self) -> String {
        self.json()["__type"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Posts batches to `/v1/events`, one connection per request.
#[derive(Clone)]
pub struct IngestClient {
    pub addr: SocketAddr,
    /// TLS client config and the server name to verify.
    pub tls: Option<(Arc<rustls::ClientConfig>, String)>,
}

impl IngestClient {
    /// A TLS client trusting `ca`, presenting `identity` (cert, key) when given.
    pub fn tls(
        addr: SocketAddr,
        ca: &Path,
        identity: Option<(&Path, &Path)>,
        server_name: &str,
    ) -> IngestClient {
        let config = groundtrail_common::tls::client_config(ca, identity).expect("TLS config");
        IngestClient {
            addr,
            tls: Some((config, server_name.to_string())),
        }
    }

    /// Posts ndjson records (plain).
    pub async fn post_records(&self, records: &[Value]) -> anyhow::Result<Reply> {
        self.post(ndjson(records), false, &[]).await
    }

    /// Posts ndjson records compressed with zstd.
    pub async fn post_records_zstd(&self, records: &[Value]) -> anyhow::Result<Reply> {
        self.post(zstd(&ndjson(records)), true, &[]).await
    }

    /// Posts a raw body.
    pub async fn post(
        &self,
        body: Vec<u8>,
        zstd: bool,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Reply> {
        use http_body_util::{BodyExt, Full};
        use hyper_util::rt::TokioIo;

        let mut req = hyper::Request::post(groundtrail_common::wire::EVENTS_PATH)
            .header("host", self.addr.to_string())
            .header("content-type", groundtrail_common::wire::NDJSON);
        if zstd {
            req = req.header("content-encoding", "zstd");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body)))?;
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        let (status, body) = match &self.tls {
            None => {
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
                tokio::spawn(conn);
                let resp = sender.send_request(req).await?;
                let status = resp.status().as_u16();
                (status, resp.into_body().collect().await?.to_bytes())
            }
            Some((config, name)) => {
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                let server_name = rustls_pki_types::ServerName::try_from(name.clone())?;
                let tls = connector.connect(server_name, tcp).await?;
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
                tokio::spawn(conn);
                let resp = sender.send_request(req).await?;
                let status = resp.status().as_u16();
                (status, resp.into_body().collect().await?.to_bytes())
            }
        };
        Ok(Reply {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// `GET <path>` on `addr` (plain HTTP/1.1); the body.
pub async fn http_get_addr(addr: std::net::SocketAddr, path: &str) -> String {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", addr.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// The value of the unlabelled metric `name` in a `/metrics` text (0 when absent).
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}
