//! `[detection]`: which rules run and where their alerts go.
//!
//! Checked by [`DetectionConfig::validate`] at start-up, before anything is sent: every error
//! names the notifier (`[[detection.notifiers]] "ops"`) and the field, so a typo never turns
//! into a silent "alerts go nowhere".

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::alerts::severity_rank;
use crate::config::Duration;

/// The detection section of the collector's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectionConfig {
    /// Evaluate rules against committed records and raise alerts. Off: no rule is loaded and
    /// nothing is stored or sent.
    pub enabled: bool,
    /// A directory of rule files (YAML or JSON) loaded beside the built-in packs and reloaded
    /// when it changes. Unset: only the packs.
    pub rules_dir: Option<PathBuf>,
    /// Built-in rule packs to load: `cis` (the CIS AWS Foundations metric filters), `host`
    /// (what the agent records: ssh, sudo, users, files, packages, agents), `sigma` (SigmaHQ's
    /// CloudTrail rules of level medium and above), `sigma-low` (its low-level hunting rules,
    /// some of which match ordinary traffic; not loaded by default).
    pub packs: Vec<String>,
    /// Carry the record that made a rule fire inside its alert. Off: alerts carry eventIDs
    /// (and LookupEvents inputs) only, for receivers that must not see record contents. A
    /// count rule's alert always lists the eventIDs it counted (up to 100).
    pub include_record: bool,
    /// Where alerts are sent: each notifier gets every alert at least once, in order, from
    /// its own durable queue.
    pub notifiers: Vec<NotifierConfig>,
    /// Stored alerts older than this (by when they were raised) are deleted, unless a
    /// notifier still has them queued. CloudTrail's event history keeps 90 days too.
    pub retention: Duration,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        DetectionConfig {
            enabled: true,
            rules_dir: None,
            packs: vec!["cis".into(), "host".into(), "sigma".into()],
            include_record: true,
            notifiers: Vec::new(),
            retention: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// One `[[detection.notifiers]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifierConfig {
    /// Names this notifier in logs, metrics (`notifier` label), the delivery status and its
    /// queue on disk. Renaming a notifier starts a new, empty queue.
    pub name: String,
    /// The payload: `webhook` (Groundtrail's JSON, HMAC-signed), `sns` (the envelope SNS
    /// POSTs to HTTP/S subscribers) or `slack` (a Slack incoming webhook message).
    pub kind: NotifierKind,
    /// Where to POST. `https://` unless the host is loopback (`localhost`, `127.0.0.1`,
    /// `::1`), where `http://` is accepted too.
    pub url: String,
    /// A file holding the HMAC-SHA256 key (at least 16 bytes; surrounding whitespace is
    /// ignored) that signs each request's `X-Groundtrail-Signature` header. Required for
    /// `webhook` and `sns`; optional for `slack`.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// A PEM file of CA certificates trusted for this notifier's `https://` URL, beside the
    /// system's roots (for a receiver with a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// `sns` only: the topic ARN written in the envelope and `x-amz-sns-topic-arn`.
    #[serde(default)]
    pub topic_arn: Option<String>,
    /// Send only alerts at least this severe: `info`, `low`, `medium`, `high` or
    /// `critical` (Sigma's `informational` means `info`). Unset: every alert. Alerts below it are stored and listed, not sent here.
    #[serde(default)]
    pub min_severity: Option<String>,
    /// A whole attempt (connect, TLS, request, answer) must finish within this, or it counts
    /// as failed and is retried.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Most alerts kept queued for this notifier while it does not answer. Past it, the oldest
    /// queued alert is dropped from this queue (it stays stored and listed), counted in
    /// `groundtrail_alert_notifications_dropped_total`, logged as an error and shown in the
    /// delivery status.
    #[serde(default = "default_max_queued")]
    pub max_queued: usize,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_queued() -> usize {
    100_000
}

/// The payload format of a notifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifierKind {
    Webhook,
    Sns,
    Slack,
}

/// Longest accepted `timeout`: a hung receiver must not hold its queue for longer.
const MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

impl DetectionConfig {
    /// Checks what can be checked without touching the network or reading files.
    pub fn validate(&self) -> Result<(), String> {
        let mut packs = BTreeSet::new();
        for p in &self.packs {
            if p.trim().is_empty() {
                return Err("[detection] packs: an entry is empty".into());
            }
            if !packs.insert(p) {
                return Err(format!("[detection] packs: {p:?} is listed twice"));
            }
        }
        if self.retention.get() < std::time::Duration::from_secs(3600)
            || self.retention.get() > std::time::Duration::from_secs(10 * 366 * 24 * 3600)
        {
            return Err("[detection] retention must be from 1h to 3660d".into());
        }
        let mut names = BTreeSet::new();
        for n in &self.notifiers {
            n.validate()?;
            if !names.insert(n.name.as_str()) {
                return Err(format!(
                    "[[detection.notifiers]] {:?}: name is used by another notifier",
                    n.name
                ));
            }
        }
        Ok(())
    }
}

impl NotifierConfig {
    /// Checks one entry; errors name it and the field.
    pub fn validate(&self) -> Result<(), String> {
        let who = format!("[[detection.notifiers]] {:?}", self.name);
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!(
                "{who}: name must be 1-64 letters, digits, '-', '_' or '.'"
            ));
        }
        let uri: http::Uri = self
            .url
            .parse()
            .map_err(|e| format!("{who}: url {:?} is not a URL: {e}", self.url))?;
        let host = uri
            .host()
            .ok_or_else(|| format!("{who}: url {:?} has no host", self.url))?;
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if is_loopback(host) => {}
            Some("http") => {
                return Err(format!(
                    "{who}: url {:?} must be https:// (http:// only to a loopback host)",
                    self.url
                ));
            }
            _ => {
                return Err(format!(
                    "{who}: url {:?} must start with https://",
                    self.url
                ));
            }
        }
        if self.secret_file.is_none() && self.kind != NotifierKind::Slack {
            return Err(format!(
                "{who}: secret_file is required for kind = \"{}\" (the key that signs each request)",
                self.kind.as_str()
            ));
        }
        match (&self.kind, &self.topic_arn) {
            (NotifierKind::Sns, None) => {
                return Err(format!("{who}: topic_arn is required for kind = \"sns\""));
            }
            (NotifierKind::Sns, Some(arn)) if !is_sns_arn(arn) => {
                return Err(format!(
                    "{who}: topic_arn {arn:?} is not an SNS topic ARN (arn:aws:sns:<region>:<account>:<topic>)"
                ));
            }
            (NotifierKind::Webhook | NotifierKind::Slack, Some(_)) => {
                return Err(format!("{who}: topic_arn applies to kind = \"sns\" only"));
            }
            _ => {}
        }
        if let Some(s) = &self.min_severity
            && severity_rank(s).is_none()
        {
            return Err(format!(
                "{who}: min_severity {s:?} is not one of info, low, medium, high, critical"
            ));
        }
        if self.timeout.get().is_zero() || self.timeout.get() > MAX_TIMEOUT {
            return Err(format!(
                "{who}: timeout = {} must be more than 0 and at most 5m",
                self.timeout
            ));
        }
        if self.max_queued == 0 {
            return Err(format!("{who}: max_queued must be at least 1"));
        }
        Ok(())
    }
}

impl NotifierKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            NotifierKind::Webhook => "webhook",
            NotifierKind::Sns => "sns",
            NotifierKind::Slack => "slack",
        }
    }
}

/// `localhost` or a loopback IP (brackets of an IPv6 host allowed).
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn is_sns_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.split(':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "sns"
        && !parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && !parts[5].is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DetectionConfig, String> {
        let c: DetectionConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn defaults_and_a_full_example() {
        let c = parse("").unwrap();
        assert!(c.enabled);
        assert_eq!(c.packs, ["cis", "host", "sigma"]);
        assert!(c.include_record);
        let c = parse(
            r#"
            [[notifiers]]
            name = "soc"
            kind = "webhook"
            url = "https://alerts.example.net/hook"
            secret_file = "/etc/groundtrail/hook.key"
            min_severity = "high"
            timeout = "5s"
            [[notifiers]]
            name = "topic"
            kind = "sns"
            url = "http://127.0.0.1:9000/sns"
            secret_file = "k"
            topic_arn = "arn:aws:sns:us-east-1:123456789012:alerts"
            [[notifiers]]
            name = "chat"
            kind = "slack"
            url = "https://hooks.slack.com/services/T/B/X"
            "#,
        )
        .unwrap();
        assert_eq!(c.notifiers.len(), 3);
        assert_eq!(c.notifiers[0].timeout.get().as_secs(), 5);
        assert_eq!(c.notifiers[1].max_queued, 100_000);
        assert_eq!(c.notifiers[2].kind, NotifierKind::Slack);
    }

    /// `config --example` renders `[detection]` from these doc comments: every field has one.
    #[test]
    fn documented_for_config_example() {
        use groundtrail_common::config_doc::{Docs, render};
        let docs = Docs::parse(&[include_str!("config.rs")]);
        let mut c = DetectionConfig::default();
        c.notifiers.push(NotifierConfig {
            name: "soc".into(),
            kind: NotifierKind::Sns,
            url: "https://siem.example.net/hook".into(),
            secret_file: Some("/etc/groundtrail/soc.key".into()),
            ca_file: Some("/etc/groundtrail/ca.pem".into()),
            topic_arn: Some("arn:aws:sns:us-east-1:123456789012:alerts".into()),
            min_severity: Some("high".into()),
            timeout: default_timeout(),
            max_queued: default_max_queued(),
        });
        let value = toml::Table::try_from(&c).unwrap();
        let text = render(&docs, "DetectionConfig", &value, "detection").unwrap();
        assert!(text.contains("min_severity"), "{text}");
        assert!(text.contains("HMAC-SHA256"), "{text}");
    }

    #[test]
    fn every_bad_entry_is_named() {
        let base = |extra: &str| {
            format!(
                "[[notifiers]]\nname = \"ops\"\nkind = \"webhook\"\nsecret_file = \"k\"\n{extra}"
            )
        };
        for (extra, want) in [
            ("url = \"http://alerts.example.net/\"", "must be https://"),
            ("url = \"ftp://localhost/\"", "must start with https://"),
            ("url = \"https://\"", "url"),
            (
                "url = \"https://x/\"\nmin_severity = \"urgent\"",
                "min_severity",
            ),
            ("url = \"https://x/\"\ntimeout = \"0s\"", "timeout"),
            ("url = \"https://x/\"\ntimeout = \"1h\"", "timeout"),
            ("url = \"https://x/\"\nmax_queued = 0", "max_queued"),
            (
                "url = \"https://x/\"\ntopic_arn = \"arn:aws:sns:us-east-1:123456789012:t\"",
                "applies to kind",
            ),
            ("url = \"https://x/\"\ncolour = \"red\"", "unknown field"),
        ] {
            let err = parse(&base(extra)).unwrap_err();
            assert!(err.contains(want), "{extra}: {err}");
            if !want.contains("unknown") {
                assert!(err.contains("\"ops\""), "{err}");
            }
        }
        let err = parse("[[notifiers]]\nname = \"t\"\nkind = \"sns\"\nurl = \"https://x/\"\nsecret_file = \"k\"\ntopic_arn = \"arn:aws:s3:::b\"").unwrap_err();
        assert!(err.contains("topic_arn"), "{err}");
        let err = parse("[[notifiers]]\nname = \"w\"\nkind = \"webhook\"\nurl = \"https://x/\"")
            .unwrap_err();
        assert!(err.contains("secret_file is required"), "{err}");
        let err = parse("[[notifiers]]\nname = \"a b\"\nkind = \"slack\"\nurl = \"https://x/\"")
            .unwrap_err();
        assert!(err.contains("name must be"), "{err}");
        let two = "[[notifiers]]\nname = \"s\"\nkind = \"slack\"\nurl = \"https://x/\"\n";
        let err = parse(&format!("{two}{two}")).unwrap_err();
        assert!(err.contains("used by another notifier"), "{err}");
        assert!(
            parse("packs = [\"cis\", \"cis\"]")
                .unwrap_err()
                .contains("twice")
        );
        // Loopback may be plain HTTP, in every spelling.
        for url in [
            "http://localhost:1/",
            "http://127.0.0.1/",
            "http://[::1]:8080/x",
        ] {
            parse(&format!(
                "[[notifiers]]\nname = \"s\"\nkind = \"slack\"\nurl = \"{url}\""
            ))
            .unwrap();
        }
    }
}
