//! `[cluster]`: several collectors on one NATS JetStream cluster (see [`crate::cluster`]).
//!
//! The section is off while `nats` is empty, so the embedded single-node default is untouched.
//! [`ClusterConfig::settings`] turns the parsed section into [`ClusterSettings`]: checked values
//! the runtime uses as they are (no `Option`s left to unwrap, durations as `std::time`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Duration;

/// `[cluster]`: the NATS servers and how this collector takes part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// NATS server URLs (`nats://host:4222`, `tls://host:4222`). Empty: cluster mode is off
    /// and the collector runs alone on its journal, as without this section.
    pub nats: Vec<String>,
    /// This collector's name in the cluster: who holds which shard, in logs and metrics.
    /// Empty: the host name. Must be unique among the cluster's collectors.
    pub node_id: String,
    /// How many shards the records are spread over by (account, region). Fixed when the
    /// cluster's stream is created: every collector must say the same, and a collector that
    /// does not refuses to start. It bounds how many collectors write at once.
    pub shards: u32,
    /// Copies JetStream keeps of every record and of the shards' state (1, 3 or 5; 3 survives
    /// the loss of one NATS server, and is what a `200` to an agent should mean).
    pub replicas: u32,
    /// A shard whose holder has not renewed its lease for this long is taken over by another
    /// collector. Shorter: faster takeover after a crash; longer: fewer spurious takeovers
    /// when a collector stalls. At least 2s.
    pub lease_ttl: Duration,
    /// The most record bytes the stream holds. When it is full, ingest answers `503` and the
    /// agents keep their records until there is room: the stream never drops records to make
    /// room. Keep it below the NATS servers' `max_file_store`.
    pub stream_max_bytes: u64,
    /// A batch published again within this window is stored once (JetStream's duplicate
    /// window); later repeats are dropped by the shard writer's own dedup.
    pub duplicate_window: Duration,
    /// A publish or state update not acknowledged within this time fails (ingest answers `503`).
    pub request_timeout: Duration,
    /// CA certificate (PEM) that signed the NATS servers' certificates, for `tls://` URLs.
    /// Unset: the system's roots.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for NATS servers that require one; with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub tls_key: Option<PathBuf>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            nats: Vec::new(),
            node_id: String::new(),
            shards: 16,
            replicas: 3,
            lease_ttl: Duration::from_secs(15),
            stream_max_bytes: 8 * 1024 * 1024 * 1024,
            duplicate_window: Duration::from_secs(120),
            request_timeout: Duration::from_secs(5),
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// `[cluster]`, checked: what the cluster code runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSettings {
    pub urls: Vec<String>,
    pub node_id: String,
    pub shards: u32,
    pub replicas: usize,
    pub lease_ttl: std::time::Duration,
    pub stream_max_bytes: u64,
    pub duplicate_window: std::time::Duration,
    pub request_timeout: std::time::Duration,
    pub tls: Option<ClusterTls>,
}

/// TLS towards the NATS servers.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterTls {
    pub ca: Option<PathBuf>,
    /// Client certificate and key, both or neither.
    pub client: Option<(PathBuf, PathBuf)>,
}

impl ClusterConfig {
    /// Whether cluster mode is on.
    pub fn enabled(&self) -> bool {
        !self.nats.is_empty()
    }

    /// The checked settings, or the first problem with the field named. `None` when cluster
    /// mode is off.
    pub fn settings(&self) -> Result<Option<ClusterSettings>, String> {
        if !self.enabled() {
            return Ok(None);
        }
        for url in &self.nats {
            let scheme = url.split_once("://").map(|(s, _)| s);
            if !matches!(scheme, Some("nats" | "tls")) || url.len() <= "nats://".len() {
                return Err(format!(
                    "[cluster] nats: {url:?} is not a NATS URL (nats://host:port or tls://host:port)"
                ));
            }
        }
        let node_id = if self.node_id.is_empty() {
            hostname()
        } else {
            self.node_id.clone()
        };
        if node_id.is_empty()
            || node_id.len() > 64
            || !node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "[cluster] node_id = {node_id:?}: 1 to 64 characters of letters, digits, '-' and '_' (it is part of NATS key names)"
            ));
        }
        if !(1..=1024).contains(&self.shards) {
            return Err(format!(
                "[cluster] shards = {} is out of range: 1 to 1024",
                self.shards
            ));
        }
        if !matches!(self.replicas, 1 | 3 | 5) {
            return Err(format!(
                "[cluster] replicas = {}: 1, 3 or 5 (an even count adds no safety to a NATS quorum)",
                self.replicas
            ));
        }
        if self.lease_ttl.get() < std::time::Duration::from_secs(2) {
            return Err("[cluster] lease_ttl must be at least 2s".into());
        }
        if self.stream_max_bytes < 1024 * 1024 {
            return Err("[cluster] stream_max_bytes must be at least 1 MiB".into());
        }
        if self.duplicate_window.get() < std::time::Duration::from_secs(1) {
            return Err("[cluster] duplicate_window must be at least 1s".into());
        }
        if self.request_timeout.get() < std::time::Duration::from_millis(100) {
            return Err("[cluster] request_timeout must be at least 100ms".into());
        }
        let client = match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            _ => return Err("[cluster] tls_cert and tls_key must be set together".into()),
        };
        let tls = (self.tls_ca.is_some() || client.is_some()).then(|| ClusterTls {
            ca: self.tls_ca.clone(),
            client,
        });
        Ok(Some(ClusterSettings {
            urls: self.nats.clone(),
            node_id,
            shards: self.shards,
            replicas: self.replicas as usize,
            lease_ttl: self.lease_ttl.get(),
            stream_max_bytes: self.stream_max_bytes,
            duplicate_window: self.duplicate_window.get(),
            request_timeout: self.request_timeout.get(),
            tls,
        }))
    }
}

/// The host name, for the default `node_id` (empty when it cannot be read).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> ClusterConfig {
        ClusterConfig {
            nats: vec!["nats://127.0.0.1:4222".into()],
            node_id: "a".into(),
            ..ClusterConfig::default()
        }
    }

    #[test]
    fn off_without_servers_and_checked_with_them() {
        assert_eq!(ClusterConfig::default().settings(), Ok(None));
        let s = on().settings().unwrap().unwrap();
        assert_eq!((s.shards, s.replicas, s.node_id.as_str()), (16, 3, "a"));
        let bad = [
            (
                ClusterConfig {
                    nats: vec!["http://x:1".into()],
                    ..on()
                },
                "not a NATS URL",
            ),
            (
                ClusterConfig {
                    node_id: "a.b".into(),
                    ..on()
                },
                "node_id",
            ),
            (ClusterConfig { shards: 0, ..on() }, "shards = 0"),
            (
                ClusterConfig {
                    replicas: 2,
                    ..on()
                },
                "replicas = 2",
            ),
            (
                ClusterConfig {
                    lease_ttl: Duration::from_secs(1),
                    ..on()
                },
                "lease_ttl",
            ),
            (
                ClusterConfig {
                    tls_cert: Some("c.pem".into()),
                    ..on()
                },
                "tls_cert and tls_key",
            ),
        ];
        for (config, expected) in bad {
            let e = config.settings().unwrap_err();
            assert!(e.contains(expected), "{e:?} should mention {expected:?}");
        }
    }
}
