//! Sends one alert to one receiver: the three payloads, their signature, and HTTPS.
//!
//! - `webhook`: `POST` of `{"version":"1","type":"groundtrail.alert","alert":{...}}`
//!   (`application/json`).
//! - `sns`: the envelope Amazon SNS POSTs to an HTTP/S subscriber (`Type` `Notification`,
//!   `MessageId`, `TopicArn`, `Subject`, `Message` = the alert JSON as a string, `Timestamp`,
//!   with the `x-amz-sns-*` headers and `text/plain; charset=UTF-8`), so a receiver written
//!   for SNS accepts it. SNS's own `Signature` is an RSA signature by AWS's key, which we
//!   cannot make: `Signature`, `SignatureVersion` and `SigningCertURL` are left out, and the
//!   request carries our HMAC header instead. `MessageId` is a UUID derived from the notifier
//!   and the alert id, so it is the same on every retry (as SNS's is) and receivers can dedup.
//! - `slack`: a Slack incoming-webhook message (`text` plus `blocks`).
//!
//! Every request carries `X-Groundtrail-Alert-Id`, and, when the notifier has a secret,
//! `X-Groundtrail-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`:
//! the receiver recomputes it over the raw body and refuses a `t` far from its clock
//! (replays). `t` is the time of the attempt, so a retry is signed afresh.
//!
//! HTTPS is rustls with the system's roots plus the notifier's `ca_file`; plain HTTP is only
//! accepted to loopback ([`crate::alerts::config`]). Each attempt opens its own connection
//! and must finish within the notifier's `timeout`.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::hmac;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;

use crate::alerts::config::{NotifierConfig, NotifierKind};
use crate::alerts::{Alert, AlertError};

/// The header carrying the HMAC.
pub const SIGNATURE_HEADER: &str = "x-groundtrail-signature";
/// The header carrying the alert's id.
pub const ALERT_ID_HEADER: &str = "x-groundtrail-alert-id";
/// Shortest accepted HMAC key.
const MIN_SECRET_BYTES: usize = 16;
/// eventIDs shown in a Slack message.
const SLACK_EVENT_IDS: usize = 5;

/// Why one attempt failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
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

/// A configured receiver.
pub struct Notifier {
    name: String,
    kind: NotifierKind,
    uri: http::Uri,
    host: String,
    port: u16,
    authority: String,
    path: String,
    secret: Option<Vec<u8>>,
    topic_arn: Option<String>,
    tls: Option<TlsConnector>,
    timeout: Duration,
}

/// One request, ready to send.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Notifier {
    /// Checks the entry, reads its secret and CA files, and builds its TLS client.
    pub fn new(cfg: &NotifierConfig) -> Result<Notifier, AlertError> {
        let err = |why: String| AlertError::Notifier {
            name: cfg.name.clone(),
            why,
        };
        cfg.validate().map_err(&err)?;
        let uri: http::Uri = cfg.url.parse().map_err(|e| err(format!("url: {e}")))?;
        let https = uri.scheme_str() == Some("https");
        let host = uri
            .host()
            .ok_or_else(|| err("url has no host".into()))?
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
        let secret = match &cfg.secret_file {
            Some(p) => {
                let raw = std::fs::read(p)
                    .map_err(|e| err(format!("secret_file {}: {e}", p.display())))?;
                let key = raw.trim_ascii().to_vec();
                if key.len() < MIN_SECRET_BYTES {
                    return Err(err(format!(
                        "secret_file {} holds {} bytes; use at least {MIN_SECRET_BYTES} (e.g. `openssl rand -hex 32`)",
                        p.display(),
                        key.len()
                    )));
                }
                Some(key)
            }
            None => None,
        };
        let tls = if https {
            Some(connector(cfg).map_err(&err)?)
        } else {
            None
        };
        Ok(Notifier {
            name: cfg.name.clone(),
            kind: cfg.kind,
            uri,
            host,
            port,
            authority,
            path,
            secret,
            topic_arn: cfg.topic_arn.clone(),
            tls,
            timeout: cfg.timeout.get(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The request for `alert`, signed at unix time `t`.
    pub fn prepare(&self, alert: &Alert, t: i64) -> Prepared {
        let alert_json = serde_json::to_value(alert).expect("an alert serializes");
        let mut headers = vec![(ALERT_ID_HEADER, alert.id.clone())];
        let body = match self.kind {
            NotifierKind::Webhook => {
                headers.push(("content-type", "application/json".into()));
                json!({"version": "1", "type": "groundtrail.alert", "alert": alert_json})
                    .to_string()
            }
            NotifierKind::Sns => {
                let id = message_id(&self.name, &alert.id);
                let arn = self.topic_arn.clone().unwrap_or_default();
                headers.push(("content-type", "text/plain; charset=UTF-8".into()));
                headers.push(("x-amz-sns-message-type", "Notification".into()));
                headers.push(("x-amz-sns-message-id", id.clone()));
                headers.push(("x-amz-sns-topic-arn", arn.clone()));
                json!({
                    "Type": "Notification",
                    "MessageId": id,
                    "TopicArn": arn,
                    "Subject": sns_subject(alert),
                    "Message": alert_json.to_string(),
                    "Timestamp": sns_timestamp(&alert.detected_at),
                })
                .to_string()
            }
            NotifierKind::Slack => {
                headers.push(("content-type", "application/json".into()));
                slack_message(alert).to_string()
            }
        }
        .into_bytes();
        if let Some(secret) = &self.secret {
            headers.push((SIGNATURE_HEADER, sign(secret, t, &body)));
        }
        Prepared { headers, body }
    }

    /// One attempt: Ok only for a 2xx answer within the timeout.
    pub async fn send(&self, alert: &Alert) -> Result<(), SendError> {
        let prepared = self.prepare(alert, chrono::Utc::now().timestamp());
        tokio::time::timeout(self.timeout, self.post(prepared))
            .await
            .map_err(|_| SendError::Timeout(self.timeout))?
    }

    async fn post(&self, p: Prepared) -> Result<(), SendError> {
        let connect = |why: std::io::Error| SendError::Connect {
            authority: self.authority.clone(),
            why: why.to_string(),
        };
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(connect)?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some(tls) => {
                let name = ServerName::try_from(self.host.clone()).map_err(|e| SendError::Tls {
                    authority: self.authority.clone(),
                    why: e.to_string(),
                })?;
                let stream = tls.connect(name, tcp).await.map_err(|e| SendError::Tls {
                    authority: self.authority.clone(),
                    why: e.to_string(),
                })?;
                self.exchange(stream, p).await
            }
            None => self.exchange(tcp, p).await,
        }
    }

    async fn exchange<I>(&self, io: I, p: Prepared) -> Result<(), SendError>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let http = |e: &dyn std::fmt::Display| SendError::Http(e.to_string());
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| http(&e))?;
        tokio::spawn(conn);
        let mut req = http::Request::post(self.path.as_str())
            .header(http::header::HOST, &self.authority)
            .header(http::header::USER_AGENT, "groundtrail-collector");
        for (k, v) in &p.headers {
            req = req.header(*k, v);
        }
        let req = req
            .body(Full::new(Bytes::from(p.body)))
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
            Err(SendError::Status {
                status: status.as_u16(),
                body: text.chars().take(200).collect(),
            })
        }
    }

    /// The URL, for logs.
    pub fn url(&self) -> String {
        self.uri.to_string()
    }
}

/// A TLS client trusting the system's roots and the notifier's `ca_file`, HTTP/1.1 only.
fn connector(cfg: &NotifierConfig) -> Result<TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = &cfg.ca_file {
        let certs = groundtrail_common::tls::load_certs(ca).map_err(|e| format!("ca_file: {e}"))?;
        for c in certs {
            roots.add(c).map_err(|e| {
                format!("ca_file {}: not a usable CA certificate: {e}", ca.display())
            })?;
        }
    }
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(notifier = %cfg.name, "system root certificates: {e}");
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

/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("t={t},v1={}", hex::encode(ctx.sign().as_ref()))
}

/// What a receiver does: checks the header against the raw body, and that `t` is within
/// `tolerance_secs` of `now`. Constant-time comparison.
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: i64, tolerance_secs: i64) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if (now - t).abs() > tolerance_secs {
        return false;
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut msg = t.to_string().into_bytes();
    msg.push(b'.');
    msg.extend_from_slice(body);
    hmac::verify(&key, &msg, &v1).is_ok()
}

/// SNS's `MessageId`: a UUID stable per (notifier, alert).
pub fn message_id(notifier: &str, alert_id: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("groundtrail:alert:{notifier}:{alert_id}").as_bytes(),
    )
    .to_string()
}

/// SNS subjects are ASCII without control characters, under 100 characters.
fn sns_subject(a: &Alert) -> String {
    let raw = format!("[{}] {}", a.severity.to_uppercase(), a.rule_title);
    raw.chars()
        .map(|c| match c {
            ' '..='~' => c,
            c if c.is_control() => ' ',
            _ => '?',
        })
        .take(99)
        .collect()
}

/// SNS writes `2012-05-02T00:54:06.655Z`: milliseconds, `Z`.
fn sns_timestamp(detected_at: &str) -> String {
    crate::alerts::parse_time(detected_at)
        .unwrap_or_else(chrono::Utc::now)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Slack's mrkdwn needs `&`, `<` and `>` escaped.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max - 1).collect();
        out.push('…');
        out
    }
}

/// The Slack message: `text` (the notification's fallback) and `blocks`.
pub fn slack_message(a: &Alert) -> serde_json::Value {
    let severity = a.severity.to_uppercase();
    let text = clip(
        &format!("[{severity}] {}: {}", a.rule_title, a.summary),
        3000,
    );
    let mut fields = vec![
        json!({"type": "mrkdwn", "text": format!("*Severity*\n{}", slack_escape(&severity))}),
        json!({"type": "mrkdwn", "text": clip(&format!("*Rule*\n`{}`", slack_escape(&a.rule_id)), 2000)}),
        json!({"type": "mrkdwn", "text": format!("*Count*\n{}", a.count)}),
        json!({"type": "mrkdwn", "text": format!("*Detected*\n{}", slack_escape(&a.detected_at))}),
    ];
    if let Some(g) = &a.group {
        fields.push(json!({"type": "mrkdwn", "text": clip(&format!("*{}*\n{}", slack_escape(&g.field), slack_escape(&g.value)), 2000)}));
    }
    let mut ids: Vec<String> = a
        .event_ids
        .iter()
        .take(SLACK_EVENT_IDS)
        .map(|i| format!("`{}`", slack_escape(i)))
        .collect();
    if a.event_ids.len() > SLACK_EVENT_IDS {
        ids.push(format!("(+{} more)", a.event_ids.len() - SLACK_EVENT_IDS));
    }
    json!({
        "text": slack_escape(&text),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": clip(&format!("{severity}: {}", a.rule_title), 150)}},
            {"type": "section", "fields": fields},
            {"type": "section", "text": {"type": "mrkdwn", "text": clip(&slack_escape(&a.summary), 3000)}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(&format!("eventIDs: {} · alert `{}`", ids.join(", "), slack_escape(&a.id)), 3000)}]},
        ]
    })
}
