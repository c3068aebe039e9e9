//! The agent's configuration file (TOML).
//!
//! Every field has a default that serves a single host, so the agent runs with no file at all
//! (`groundtrail-agent run`), and every unknown field is an error: a misspelt `max_byte` that is
//! silently ignored would leave an edge device with the wrong disk budget for years.
//!
//! This module is the file's shape only (and the generated `config --example`, which reads the
//! doc comments below); [`Config::validate`] in [`crate::settings`] checks the values and turns
//! them into the typed settings the runtime uses.
//!
//! ```toml
//! [agent]
//! host = "web-1"                  # default: the system host name
//! account_id = "000000000000"     # default: a documented placeholder, see DEFAULT_ACCOUNT_ID
//! region = "us-east-1"
//! domain = "onprem.internal"
//! partition = "aws"
//! data_dir = "groundtrail-data/agent"
//!
//! [collector]
//! urls = ["https://collector-a:7480", "https://collector-b:7480"]   # failover, in order
//! ca = "/etc/groundtrail/ca.pem"
//! client_cert = "/etc/groundtrail/web-1.pem"
//! client_key = "/etc/groundtrail/web-1.key"
//!
//! [buffer]
//! max_bytes = "64MB"              # or an integer number of bytes
//! full_policy = "block"           # or "drop_newest"
//! flush_delay_ms = 0              # group-commit window; appends always wait for the flush
//!
//! [shipper]
//! batch_max_records = 1000
//! batch_max_bytes = "1MB"
//! batch_max_wait_ms = 1000
//!
//! [app_events]
//! socket = "groundtrail-data/agent/app-events.sock"
//! http_listen = "127.0.0.1:7481"   # optional, loopback only
//!
//! [control]
//! socket = "groundtrail-data/agent/control.sock"
//! metrics_listen = "127.0.0.1:9481" # optional, loopback only
//!
//! [sources]
//! # see crate::sources::SourcesConfig
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

/// `[buffer] full_policy`: the buffer's own type (the buffer must not depend on the config).
use crate::buffer::FullPolicy;
use crate::sources::SourcesConfig;

/// The account id used when the config names none. It is the all-zero account, which AWS never
/// issues, so records from an unconfigured agent are recognisable as such in any trail (and the
/// collector's per-agent authorization will refuse them unless an operator allows it).
pub const DEFAULT_ACCOUNT_ID: &str = "000000000000";
/// Default `awsRegion` of every record.
pub const DEFAULT_REGION: &str = "us-east-1";
/// Default `<domain>` of event sources (`sshd.<domain>`).
pub const DEFAULT_DOMAIN: &str = "onprem.internal";
/// Default ARN partition.
pub const DEFAULT_PARTITION: &str = "aws";
/// Default data directory (relative to the working directory, like the collector's).
pub const DEFAULT_DATA_DIR: &str = "groundtrail-data/agent";
/// Default collector: the collector's own default listen address, plaintext on loopback.
pub const DEFAULT_COLLECTOR_URL: &str = "http://127.0.0.1:7480";

/// Why a configuration was refused. Each message names the field, so the operator can fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        message: message.into(),
    }
}

/// Prefix of the environment variables that override config fields:
/// `GROUNDTRAIL_AGENT__<SECTION>__<FIELD>` (double underscores between path segments).
pub const ENV_PREFIX: &str = "GROUNDTRAIL_AGENT";

/// `config --example`: a commented example of every field, generated from the config types'
/// doc comments and their serialized defaults (see [`groundtrail_common::config_doc`]), so it
/// cannot drift from the code. Fails when a field has no doc comment.
pub fn example() -> Result<String, String> {
    use groundtrail_common::config_doc::{Docs, render};
    let docs = Docs::parse(&[
        include_str!("config.rs"),
        include_str!("buffer/mod.rs"),
        include_str!("sources/mod.rs"),
        include_str!("sources/sidecar/mod.rs"),
        include_str!("sources/sidecar/caller_identity.rs"),
        include_str!("sources/sidecar/jwt.rs"),
        include_str!("sources/sidecar/routes.rs"),
    ]);
    let mut value = toml::Table::try_from(Config::default()).map_err(|e| e.to_string())?;
    // `[sidecar]` is absent by default; show what it would be when present.
    let sidecar = toml::Value::try_from(crate::sources::sidecar::SidecarConfig::default())
        .map_err(|e| e.to_string())?;
    value.insert("sidecar".into(), sidecar);
    render(&docs, "Config", &value, EXAMPLE_HEADER)
}

const EXAMPLE_HEADER: &str = "groundtrail-agent configuration: every field, with its default.
Generated by `groundtrail-agent config --example` from the config types; do not edit.
Every line is a comment, so this file as it stands is the embedded default: uncomment and
change what you need. Unknown fields are an error.
Any field can also be set from the environment: GROUNDTRAIL_AGENT__AGENT__ACCOUNT_ID=...
(upper case, `__` between path segments; values are TOML when they parse as TOML, e.g.
GROUNDTRAIL_AGENT__COLLECTOR__URLS='[\"http://collector:7480\"]', else a string).";

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Who this host is and where its data lives.
    pub agent: AgentSection,
    /// Where records go.
    pub collector: CollectorSection,
    /// The durable on-disk queue between sources and the collector.
    pub buffer: BufferSection,
    /// How records are batched and sent.
    pub shipper: ShipperSection,
    /// The local PutAuditEvents endpoint for applications.
    pub app_events: AppEventsSection,
    /// The local control socket (`groundtrail-agent status`) and metrics.
    pub control: ControlSection,
    /// Limits of the local HTTP servers (PutAuditEvents socket and listener, control socket,
    /// metrics listener).
    pub local_http: LocalHttpSection,
    /// Host sources (auth log, sudo, packages, ...).
    pub sources: SourcesConfig,
    /// Sidecar mode: a reverse proxy in front of a service that records every API call.
    /// Absent (the default): no proxy runs. See docs/sidecar.md.
    pub sidecar: Option<crate::sources::sidecar::SidecarConfig>,
}

/// `[agent]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSection {
    /// Host name: a path element in ARNs, the agent's name towards the collector, and part of
    /// deterministic event IDs. Empty (the default) means the system host name.
    pub host: String,
    /// `recipientAccountId` of every record: twelve digits. Default [`DEFAULT_ACCOUNT_ID`].
    pub account_id: String,
    /// `awsRegion` of every record (lowercase letters, digits, dashes).
    pub region: String,
    /// `<domain>` in event sources such as `sshd.<domain>` and `groundtrail.<domain>`.
    pub domain: String,
    /// ARN partition (`aws`, `aws-cn`, `aws-us-gov`, or your own).
    pub partition: String,
    /// Directory for the buffer and the local sockets. Created if missing.
    pub data_dir: PathBuf,
}

impl Default for AgentSection {
    fn default() -> Self {
        AgentSection {
            host: String::new(),
            account_id: DEFAULT_ACCOUNT_ID.to_string(),
            region: DEFAULT_REGION.to_string(),
            domain: DEFAULT_DOMAIN.to_string(),
            partition: DEFAULT_PARTITION.to_string(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
        }
    }
}

/// `[collector]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorSection {
    /// One or more collector base URLs (`http://` or `https://`), tried in order; on failure the
    /// shipper fails over to the next one.
    pub urls: Vec<String>,
    /// PEM file of the CA that issued the collector's certificate. Required for `https` URLs
    /// (the agent trusts nothing else, not even the system store).
    pub ca: Option<PathBuf>,
    /// PEM certificate naming this agent (mutual TLS). Must be given together with `client_key`.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
}

impl Default for CollectorSection {
    fn default() -> Self {
        CollectorSection {
            urls: vec![DEFAULT_COLLECTOR_URL.to_string()],
            ca: None,
            client_cert: None,
            client_key: None,
        }
    }
}

/// `[buffer]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BufferSection {
    /// Most bytes of (compressed) records the buffer holds: an integer or a size such as
    /// `"64MB"`, `"512KiB"`, `"2GB"`. sled's own files take more than this (its log and
    /// page overhead), so leave headroom on small disks.
    #[serde(deserialize_with = "de_size")]
    pub max_bytes: u64,
    /// What happens when the buffer is full: `block` (default) or `drop_newest`.
    pub full_policy: FullPolicy,
    /// Flush policy: how long (milliseconds) an append may wait for other appends to share its
    /// disk flush (group commit). Appends always return only after their flush; 0 flushes at
    /// once. Raise it on slow storage (SD cards) with many concurrent sources.
    pub flush_delay_ms: u64,
    /// Most bytes of records the collector refused that the side tree keeps (to be resent once
    /// the collector accepts them). Counted within `max_bytes`, and never more than a quarter
    /// of it, whatever this says: refused records must not crowd out the queue. A refused
    /// record that does not fit is not kept; the trail says so (`RecordsRejected`,
    /// `"kept": false`).
    #[serde(deserialize_with = "de_size")]
    pub set_aside_max_bytes: u64,
    /// How long (milliseconds) writes to the buffer may keep failing before the store counts as
    /// stuck: then the agent stops its systemd watchdog pings, so that systemd restarts it
    /// (sled fails every write after one failed write until the process restarts), and
    /// `status` shows the error.
    pub stuck_after_ms: u64,
}

impl Default for BufferSection {
    fn default() -> Self {
        BufferSection {
            max_bytes: 64 * 1000 * 1000,
            full_policy: FullPolicy::Block,
            flush_delay_ms: 0,
            set_aside_max_bytes: 4 * 1000 * 1000,
            stuck_after_ms: 60_000,
        }
    }
}

/// `[shipper]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShipperSection {
    /// Most records in one batch (at most the collector's limit of 10000).
    pub batch_max_records: usize,
    /// Most uncompressed bytes in one batch (at most 64 MB, the collector's decompressed limit).
    #[serde(deserialize_with = "de_size")]
    pub batch_max_bytes: u64,
    /// How long a batch may wait to fill up before it is sent anyway, in milliseconds.
    pub batch_max_wait_ms: u64,
    /// First retry delay in milliseconds; doubles per failure up to `retry_max_ms`, each wait
    /// a random time between half and all of it ("equal jitter": spread out, never zero).
    pub retry_initial_ms: u64,
    /// Longest retry delay in milliseconds: the shipper retries forever (an outage of hours is
    /// ridden out; the buffer holds the records), so this bounds how quickly it notices recovery.
    pub retry_max_ms: u64,
    /// Per-request timeout in milliseconds (connect, send, and the collector's durable answer).
    pub request_timeout_ms: u64,
    /// zstd-compress batches (`Content-Encoding: zstd`).
    pub compress: bool,
    /// On shutdown, how long (milliseconds) to keep shipping what is buffered before exiting.
    pub drain_timeout_ms: u64,
    /// How long (milliseconds) after a record is set aside the shipper offers the side tree to
    /// the collector again; the delay doubles (up to 16 times this) while the collector still
    /// refuses every record, and starts over once it accepts one. `groundtrail-agent
    /// resend-set-aside` offers them at once.
    pub set_aside_retry_ms: u64,
}

impl Default for ShipperSection {
    fn default() -> Self {
        ShipperSection {
            batch_max_records: 1000,
            batch_max_bytes: 1024 * 1024,
            batch_max_wait_ms: 1000,
            retry_initial_ms: 200,
            retry_max_ms: 30_000,
            request_timeout_ms: 30_000,
            compress: true,
            drain_timeout_ms: 3_000,
            set_aside_retry_ms: 600_000,
        }
    }
}

/// `[app_events]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AppEventsSection {
    /// Unix socket for PutAuditEvents. Default: `<data_dir>/app-events.sock`.
    pub socket: Option<PathBuf>,
    /// Octal permission bits of the socket (who may post audit events), default `"0660"`.
    pub socket_mode: Option<String>,
    /// Optional loopback HTTP listen address (e.g. `127.0.0.1:7481`) for applications that
    /// cannot use a Unix socket. Only loopback addresses are accepted.
    pub http_listen: Option<SocketAddr>,
}

/// `[control]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ControlSection {
    /// Unix socket for `groundtrail-agent status` and `GET /metrics`. Default:
    /// `<data_dir>/control.sock`, mode 0600.
    pub socket: Option<PathBuf>,
    /// Optional loopback address serving `GET /metrics` (Prometheus text format).
    pub metrics_listen: Option<SocketAddr>,
}

/// `[local_http]`: each local server (the PutAuditEvents socket, its HTTP listener, the control
/// socket, the metrics listener) bounds its connections by these, so that a local process
/// holding silent sockets cannot lock out the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalHttpSection {
    /// Most connections one server serves at once; further ones wait in the accept queue.
    pub max_connections: usize,
    /// A connection must send its first request head within this of being accepted (and a
    /// later head within this of its first byte), in milliseconds.
    pub header_timeout_ms: u64,
    /// A connection with no request in flight is closed this long after its last answer, in
    /// milliseconds.
    pub idle_timeout_ms: u64,
    /// A request (its body and the answer) must complete within this, in milliseconds.
    pub request_timeout_ms: u64,
}

impl Default for LocalHttpSection {
    fn default() -> Self {
        LocalHttpSection {
            max_connections: 64,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            request_timeout_ms: 60_000,
        }
    }
}

/// A size: an integer (bytes) or a string with a unit (`B`, `KB`, `MB`, `GB`, `TB` are powers of
/// 1000; `KiB`, `MiB`, `GiB`, `TiB` are powers of 1024; case-insensitive, spaces allowed).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let factor: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "m" | "mb" => 1000 * 1000,
        "g" | "gb" => 1000 * 1000 * 1000,
        "t" | "tb" => 1000 * 1000 * 1000 * 1000,
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use B, KB, MB, GB, KiB, MiB, GiB)"
            ));
        }
    };
    if num.is_empty() {
        return Err(format!("{text:?}: no number"));
    }
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{text:?}: {num:?} is not a number"))?;
    let bytes = value * factor as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("{text:?}: too large"));
    }
    Ok(bytes as u64)
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a byte count or a size such as \"64MB\"")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom("a size cannot be negative"))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<u64, E> {
            parse_size(v).map_err(E::custom)
        }
    }
    d.deserialize_any(V)
}

impl Config {
    /// Reads and parses a config file with the process's environment overrides
    /// ([`ENV_PREFIX`]) applied; without a file, the embedded default with them. Not yet
    /// checked: [`Config::validate`] (in [`crate::settings`]) does that.
    pub fn load_with_env(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                Config::parse_with_env(&text, &path.display().to_string(), std::env::vars())
            }
            None => Config::parse_with_env("", "embedded default", std::env::vars()),
        }
    }

    /// Parses config text after applying the environment overrides among `vars`:
    /// `GROUNDTRAIL_AGENT__COLLECTOR__URLS='["http://collector:7480"]'` sets `[collector] urls`
    /// (see [`groundtrail_common::config_doc::apply_env`]). The overridden document goes through
    /// the same deserialization (and later the same checks) as a file, so a misspelt variable
    /// is an unknown field error too.
    pub fn parse_with_env(
        text: &str,
        origin: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse {
            path: origin.to_string(),
            message,
        };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| parse_err(e.to_string()))?;
        let defaults = toml::Table::try_from(Config::default()).ok();
        let applied = groundtrail_common::config_doc::apply_env(
            &mut table,
            ENV_PREFIX,
            vars,
            defaults.as_ref(),
        )
        .map_err(parse_err)?;
        if applied.is_empty() {
            return Config::parse(text, origin);
        }
        // Re-parsed as text so that errors point at the offending key and value.
        let merged = toml::to_string(&table).map_err(|e| parse_err(e.to_string()))?;
        Config::parse(
            &merged,
            &format!(
                "{origin} with the environment overrides {}",
                applied.join(", ")
            ),
        )
    }

    /// Parses config text (its shape: unknown fields, types, sizes); `origin` names it in
    /// errors. The values are checked by [`Config::validate`].
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MB").unwrap(), 64_000_000);
        assert_eq!(parse_size("64 MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1.5kb").unwrap(), 1500);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("64XB").unwrap_err().contains("unknown unit"));
        assert!(parse_size("MB").is_err());
        let c = Config::parse("[buffer]\nmax_bytes = \"2MB\"\n", "t").unwrap();
        assert_eq!(c.buffer.max_bytes, 2_000_000);
        let c = Config::parse("[buffer]\nmax_bytes = 1000000\n", "t").unwrap();
        assert_eq!(c.buffer.max_bytes, 1_000_000);
    }

    /// Environment overrides land in the document before it is parsed, so they meet the same
    /// field names and types as the file (a misspelt variable is an unknown field).
    #[test]
    fn environment_overrides_are_parsed_like_the_file() {
        let var = |k: &str, v: &str| (k.to_string(), v.to_string());
        let c = Config::parse_with_env(
            "[agent]\naccount_id = \"111111111111\"\n",
            "t",
            [
                var("GROUNDTRAIL_AGENT__AGENT__ACCOUNT_ID", "123456789012"),
                var("GROUNDTRAIL_AGENT__BUFFER__MAX_BYTES", "2MB"),
                var("UNRELATED", "x"),
            ],
        )
        .unwrap();
        assert_eq!(c.agent.account_id, "123456789012");
        assert_eq!(c.buffer.max_bytes, 2_000_000);
        let e = Config::parse_with_env("", "t", [var("GROUNDTRAIL_AGENT__AGENT__HOTS", "x")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `hots`"), "{e}");
    }
}
