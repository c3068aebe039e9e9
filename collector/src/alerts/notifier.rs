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

use aws_lc_rs::hmac;
use serde_json::json;

use crate::alerts::config::{NotifierConfig, NotifierKind};
use crate::alerts::{Alert, AlertError};
use crate::http_post::Endpoint;

/// The header carrying the HMAC.
pub const SIGNATURE_HEADER: &str = "x-groundtrail-signature";
/// The header carrying the alert's id.
pub const ALERT_ID_HEADER: &str = "x-groundtrail-alert-id";
/// Shortest accepted HMAC key.
const MIN_SECRET_BYTES: usize = 16;
/// eventIDs shown in a Slack message.
const SLACK_EVENT_IDS: usize = 5;

/// Why one attempt failed (it is retried).
pub use crate::http_post::PostError as SendError;

/// A configured receiver.
pub struct Notifier {
    name: String,
    kind: NotifierKind,
    endpoint: Endpoint,
    secret: Option<Vec<u8>>,
    topic_arn: Option<String>,
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
        let endpoint =
            Endpoint::new(&cfg.url, cfg.ca_file.as_deref(), cfg.timeout.get()).map_err(&err)?;
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
        Ok(Notifier {
            name: cfg.name.clone(),
            kind: cfg.kind,
            endpoint,
            secret,
            topic_arn: cfg.topic_arn.clone(),
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
        let p = self.prepare(alert, chrono::Utc::now().timestamp());
        self.endpoint.post(&p.headers, p.body).await
    }

    /// The URL, for logs.
    pub fn url(&self) -> String {
        self.endpoint.url()
    }
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
    // Slack refuses an empty text object.
    let summary = if a.summary.trim().is_empty() {
        "(no summary)".to_string()
    } else {
        clip(&slack_escape(&a.summary), 3000)
    };
    json!({
        "text": slack_escape(&text),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": clip(&format!("{severity}: {}", a.rule_title), 150)}},
            {"type": "section", "fields": fields},
            {"type": "section", "text": {"type": "mrkdwn", "text": summary}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(&format!("eventIDs: {} · alert `{}`", ids.join(", "), slack_escape(&a.id)), 3000)}]},
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::testing::{Receiver, alert};
    use crate::config::Duration as ConfigDuration;
    use std::path::Path;
    use std::time::Duration;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn cfg(dir: &Path, kind: NotifierKind, url: String, ca: Option<&Path>) -> NotifierConfig {
        let secret = dir.join("secret");
        std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
        NotifierConfig {
            name: format!("n-{}", kind.as_str()),
            kind,
            url,
            secret_file: Some(secret),
            ca_file: ca.map(Path::to_path_buf),
            topic_arn: (kind == NotifierKind::Sns)
                .then(|| "arn:aws:sns:us-east-1:123456789012:alerts".to_string()),
            min_severity: None,
            timeout: ConfigDuration::from_secs(5),
            max_queued: 10,
        }
    }

    fn header<'a>(r: &'a crate::alerts::testing::Received, name: &str) -> &'a str {
        r.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    #[tokio::test]
    async fn webhook_over_https_is_signed() {
        let dir = tempfile::tempdir().unwrap();
        let rx = Receiver::https(dir.path(), 0).await;
        let n = Notifier::new(&cfg(
            dir.path(),
            NotifierKind::Webhook,
            rx.url("https"),
            Some(&rx.ca_file),
        ))
        .unwrap();
        let a = alert("al-1", "cis-3.1", "high", "2026-12-07T10:00:00Z");
        n.send(&a).await.unwrap();
        let got = rx.accepted();
        assert_eq!(got.len(), 1);
        let r = &got[0];
        assert_eq!(header(r, "content-type"), "application/json");
        assert_eq!(header(r, "x-groundtrail-alert-id"), "al-1");
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["version"], "1");
        assert_eq!(body["type"], "groundtrail.alert");
        let back: Alert = serde_json::from_value(body["alert"].clone()).unwrap();
        assert_eq!(back, a);
        // What a receiver does, with the raw body.
        let sig = header(r, "x-groundtrail-signature");
        let now = chrono::Utc::now().timestamp();
        assert!(verify(SECRET.as_bytes(), sig, &r.body, now, 300));
        let mut tampered = r.body.clone();
        tampered[5] ^= 1;
        assert!(!verify(SECRET.as_bytes(), sig, &tampered, now, 300));
        assert!(!verify(b"another key entirely!", sig, &r.body, now, 300));
        assert!(!verify(SECRET.as_bytes(), sig, &r.body, now + 301, 300));
        // A known vector, checked against Python's hmac module:
        // hmac.new(b"key", b"1700000000.{}", "sha256").hexdigest()
        assert_eq!(
            sign(b"key", 1_700_000_000, b"{}"),
            "t=1700000000,v1=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
    }

    #[tokio::test]
    async fn sns_envelope_as_sns_posts_it() {
        let dir = tempfile::tempdir().unwrap();
        let rx = Receiver::https(dir.path(), 0).await;
        let c = cfg(
            dir.path(),
            NotifierKind::Sns,
            rx.url("https"),
            Some(&rx.ca_file),
        );
        let n = Notifier::new(&c).unwrap();
        let mut a = alert("al-2", "sigma-x", "critical", "2026-12-07T10:00:00Z");
        a.rule_title = "é".repeat(150);
        n.send(&a).await.unwrap();
        n.send(&a).await.unwrap();
        let got = rx.accepted();
        assert_eq!(got.len(), 2);
        let r = &got[0];
        assert_eq!(header(r, "content-type"), "text/plain; charset=UTF-8");
        assert_eq!(header(r, "x-amz-sns-message-type"), "Notification");
        assert_eq!(
            header(r, "x-amz-sns-topic-arn"),
            "arn:aws:sns:us-east-1:123456789012:alerts"
        );
        let id = message_id("n-sns", "al-2");
        assert_eq!(header(r, "x-amz-sns-message-id"), id);
        assert_eq!(
            header(&got[1], "x-amz-sns-message-id"),
            id,
            "stable across retries"
        );
        assert_ne!(message_id("other", "al-2"), id);
        let env: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(env["Type"], "Notification");
        assert_eq!(env["MessageId"], id);
        assert_eq!(env["TopicArn"], "arn:aws:sns:us-east-1:123456789012:alerts");
        assert_eq!(env["Timestamp"], "2026-12-07T10:00:00.000Z");
        let subject = env["Subject"].as_str().unwrap();
        assert!(subject.len() < 100 && subject.is_ascii(), "{subject}");
        assert!(subject.starts_with("[CRITICAL] ??"));
        let message: Alert = serde_json::from_str(env["Message"].as_str().unwrap()).unwrap();
        assert_eq!(message, a);
        for absent in ["Signature", "SignatureVersion", "SigningCertURL"] {
            assert!(env.get(absent).is_none());
        }
        let sig = header(r, "x-groundtrail-signature");
        assert!(verify(
            SECRET.as_bytes(),
            sig,
            &r.body,
            chrono::Utc::now().timestamp(),
            300
        ));
    }

    #[tokio::test]
    async fn slack_message_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let rx = Receiver::https(dir.path(), 0).await;
        let mut c = cfg(
            dir.path(),
            NotifierKind::Slack,
            rx.url("https"),
            Some(&rx.ca_file),
        );
        c.secret_file = None;
        let n = Notifier::new(&c).unwrap();
        let mut a = alert("al-3", "host-ssh-brute", "medium", "2026-12-07T10:00:00Z");
        a.count = 12;
        a.event_ids = (0..12).map(|i| format!("e{i}")).collect();
        a.summary = "12 failed <ssh> logins & more".into();
        a.group = Some(crate::alerts::AlertGroup {
            field: "sourceIPAddress".into(),
            value: "203.0.113.9".into(),
        });
        n.send(&a).await.unwrap();
        let got = rx.accepted();
        let r = &got[0];
        assert!(r.headers.get(SIGNATURE_HEADER).is_none());
        let m: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let text = m["text"].as_str().unwrap();
        assert!(
            text.starts_with(
                "[MEDIUM] Rule host-ssh-brute: 12 failed &lt;ssh&gt; logins &amp; more"
            ),
            "{text}"
        );
        let blocks = m["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        let fields: Vec<&str> = blocks[1]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["text"].as_str().unwrap())
            .collect();
        assert_eq!(fields[0], "*Severity*\nMEDIUM");
        assert_eq!(fields[1], "*Rule*\n`host-ssh-brute`");
        assert_eq!(fields[2], "*Count*\n12");
        assert_eq!(fields[4], "*sourceIPAddress*\n203.0.113.9");
        let ctx = blocks[3]["elements"][0]["text"].as_str().unwrap();
        assert!(
            ctx.contains("`e0`, `e1`, `e2`, `e3`, `e4`, (+7 more)"),
            "{ctx}"
        );
        assert!(!ctx.contains("`e5`"));
    }

    #[tokio::test]
    async fn every_failure_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let rx = Receiver::https(dir.path(), 0).await;
        let a = alert("al-4", "r", "low", "2026-12-07T10:00:00Z");
        let c = cfg(
            dir.path(),
            NotifierKind::Webhook,
            rx.url("https"),
            Some(&rx.ca_file),
        );
        // Non-2xx.
        rx.status.store(503, std::sync::atomic::Ordering::SeqCst);
        let err = Notifier::new(&c).unwrap().send(&a).await.unwrap_err();
        assert!(
            matches!(err, SendError::Status { status: 503, .. }),
            "{err}"
        );
        // A certificate from a CA the notifier does not trust.
        let other = tempfile::tempdir().unwrap();
        crate::pki::init(other.path(), &[], false).unwrap();
        let untrusted = cfg(
            dir.path(),
            NotifierKind::Webhook,
            rx.url("https"),
            Some(&other.path().join("ca.pem")),
        );
        let err = Notifier::new(&untrusted)
            .unwrap()
            .send(&a)
            .await
            .unwrap_err();
        assert!(matches!(err, SendError::Tls { .. }), "{err}");
        // Plain HTTP to an HTTPS port fails too, and so does a refused connection.
        let port = rx.addr.port();
        rx.stop();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let c = cfg(
            dir.path(),
            NotifierKind::Webhook,
            format!("http://127.0.0.1:{port}/"),
            None,
        );
        let err = Notifier::new(&c).unwrap().send(&a).await.unwrap_err();
        assert!(matches!(err, SendError::Connect { .. }), "{err}");
        // A receiver that accepts and never answers: the attempt times out.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut c = cfg(
            dir.path(),
            NotifierKind::Webhook,
            format!("http://127.0.0.1:{}/", silent.local_addr().unwrap().port()),
            None,
        );
        c.timeout = "300ms".parse().unwrap();
        let started = std::time::Instant::now();
        let err = Notifier::new(&c).unwrap().send(&a).await.unwrap_err();
        assert!(matches!(err, SendError::Timeout(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        // Bad secrets are refused when the notifier is built.
        std::fs::write(dir.path().join("short"), "abc").unwrap();
        c.secret_file = Some(dir.path().join("short"));
        let err = Notifier::new(&c).err().unwrap().to_string();
        assert!(err.contains("at least 16"), "{err}");
        c.secret_file = Some(dir.path().join("missing"));
        let err = Notifier::new(&c).err().unwrap().to_string();
        assert!(
            err.contains("missing") && err.contains("n-webhook"),
            "{err}"
        );
    }
}
