//! Test support: a real HTTPS (or HTTP) receiver on loopback that records what it is sent
//! and answers a status the test controls, and a sample alert.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::alerts::Alert;

/// One request as received, and the status it was answered.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    pub status: u16,
    /// When its body had arrived.
    pub at: std::time::Instant,
}

/// A receiver listening on 127.0.0.1.
pub struct Receiver {
    pub addr: SocketAddr,
    /// The CA that issued the receiver's certificate (for `ca_file`).
    pub ca_file: PathBuf,
    pub received: Arc<Mutex<Vec<Received>>>,
    /// The status answered to every request.
    pub status: Arc<AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts an HTTPS receiver whose certificate is issued by a CA written to `dir`.
    /// `port` 0 picks a free one.
    pub async fn https(dir: &Path, port: u16) -> Receiver {
        if !dir.join("ca.pem").exists() {
            crate::pki::init(dir, &[], false).unwrap();
        }
        let config = groundtrail_common::tls::server_config(
            &dir.join("server.pem"),
            &dir.join("server.key"),
            None,
        )
        .unwrap();
        Receiver::start(Some(TlsAcceptor::from(config)), dir.join("ca.pem"), port).await
    }

    async fn start(tls: Option<TlsAcceptor>, ca_file: PathBuf, port: u16) -> Receiver {
        // Retried briefly: a port given back by a stopped receiver may linger a moment.
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("bind 127.0.0.1:{port}: {e}"),
            }
        };
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let (rec, st) = (received.clone(), status.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let (rec, st, tls) = (rec.clone(), st.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(tcp).await {
                                serve(s, rec, st).await;
                            }
                        }
                        None => serve(tcp, rec, st).await,
                    }
                });
            }
        });
        Receiver {
            addr,
            ca_file,
            received,
            status,
            task,
        }
    }

    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://localhost:{}/hook", self.addr.port())
    }

    /// Requests answered 2xx, in order.
    pub fn accepted(&self) -> Vec<Received> {
        let r = self.received.lock().unwrap();
        r.iter().filter(|r| r.status / 100 == 2).cloned().collect()
    }

    /// Every request, whatever it was answered.
    pub fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Stops listening (the port refuses connections afterwards).
    pub fn stop(self) {
        self.task.abort();
    }
}

async fn serve<I>(io: I, rec: Arc<Mutex<Vec<Received>>>, st: Arc<AtomicU16>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let (rec, st) = (rec.clone(), st.clone());
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await?.to_bytes().to_vec();
            let status = st.load(Ordering::SeqCst);
            rec.lock().unwrap().push(Received {
                headers: parts.headers,
                body,
                status,
                at: std::time::Instant::now(),
            });
            Ok::<_, hyper::Error>(
                http::Response::builder()
                    .status(status)
                    .body(Full::new(Bytes::from_static(b"ok")))
                    .unwrap(),
            )
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// A plausible alert with id `id`.
pub fn alert(id: &str, rule: &str, severity: &str, detected_at: &str) -> Alert {
    Alert {
        id: id.into(),
        rule_id: rule.into(),
        rule_title: format!("Rule {rule}"),
        severity: severity.into(),
        language: "eventbridge".into(),
        rule_origin: "cis".into(),
        detected_at: detected_at.into(),
        first_event_time: "2026-12-07T10:00:00Z".into(),
        last_event_time: "2026-12-07T10:00:05Z".into(),
        group: None,
        count: 1,
        event_ids: vec![format!("ev-{id}")],
        records: vec![
            serde_json::json!({"eventID": format!("ev-{id}"), "eventName": "ConsoleLogin"}),
        ],
        summary: format!("ConsoleLogin without MFA ({id})"),
        lookup: vec![
            serde_json::json!({"LookupAttributes": [{"AttributeKey": "EventId", "AttributeValue": format!("ev-{id}")}]}),
        ],
        silenced_by: None,
    }
}

/// A webhook notifier named `name` for `rx`, with a fixed secret (`SECRET`) written to `dir`.
pub fn webhook_config(dir: &Path, name: &str, rx: &Receiver) -> crate::alerts::NotifierConfig {
    let secret = dir.join(format!("{name}.secret"));
    std::fs::write(&secret, SECRET).unwrap();
    crate::alerts::NotifierConfig {
        name: name.into(),
        kind: crate::alerts::NotifierKind::Webhook,
        url: rx.url("https"),
        secret_file: Some(secret),
        ca_file: Some(rx.ca_file.clone()),
        topic_arn: None,
        min_severity: None,
        timeout: "2s".parse().unwrap(),
        max_queued: 100_000,
    }
}

/// The HMAC key [`webhook_config`] writes.
pub const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// The alert ids a webhook receiver accepted (2xx), in order of receipt.
pub fn accepted_ids(rx: &Receiver) -> Vec<String> {
    rx.accepted()
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            v["alert"]["id"].as_str().unwrap().to_string()
        })
        .collect()
}
