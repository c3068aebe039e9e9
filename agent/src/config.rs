//! The agent's configuration file (TOML).
//!
//! Every field has a default that serves a single host, so the agent runs with no file at all
//! (`groundtrail-agent run`), and every unknown field is an error: a misspelt `max_byte` that is
//! silently ignored would leave an edge device with the wrong disk budget for years.
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

/// Unix socket paths are limited to 108 bytes on Linux (`sun_path`), including the NUL.
const MAX_SOCKET_PATH: usize = 107;

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

fn invalid(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        message: message.into(),
    }
}

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
    /// Host sources (auth log, sudo, packages, ...).
    pub sources: SourcesConfig,
    /// Sidecar mode: a reverse proxy in front of a service that records every API call.
    /// Absent (the default): no proxy runs. See docs/sidecar.md.
    pub sidecar: Option<crate::sidecar::SidecarConfig>,
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

/// What the buffer does when it holds `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FullPolicy {
    /// Sources and applications wait until the shipper frees space: nothing is lost, capture
    /// stalls (log-file sources catch up later from their checkpoints).
    #[default]
    Block,
    /// New records are dropped and counted; once there is room again, the loss is written to
    /// the trail as a `RecordsDropped` record with counts and sequence ranges.
    DropNewest,
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
}

impl Default for BufferSection {
    fn default() -> Self {
        BufferSection {
            max_bytes: 64 * 1000 * 1000,
            full_policy: FullPolicy::Block,
            flush_delay_ms: 0,
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
    /// First retry delay in milliseconds; doubles per failure, with full jitter.
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

/// The system host name (`gethostname(2)`), or `localhost` if it cannot be read.
pub fn system_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success
    // (and we bound the read by the buffer length anyway).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
    if name.is_empty() {
        "localhost".to_string()
    } else {
        name
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        config.finish()?;
        Ok(config)
    }

    /// The embedded default (no config file), validated.
    pub fn embedded_default() -> Result<Config, ConfigError> {
        let mut config = Config::default();
        config.finish()?;
        Ok(config)
    }

    /// Fills derived defaults (host name, socket paths) and checks every field.
    fn finish(&mut self) -> Result<(), ConfigError> {
        if let Some(sidecar) = &self.sidecar {
            sidecar
                .validate()
                .map_err(|e| invalid("sidecar", e.to_string()))?;
        }
        let a = &mut self.agent;
        if a.host.is_empty() {
            a.host = system_hostname();
        }
        if a.host.len() > 253
            || !a
                .host
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_')
        {
            return Err(invalid(
                "agent.host",
                format!(
                    "{:?} must be 1-253 characters of letters, digits, '-', '.', '_' (it becomes an ARN path element)",
                    a.host
                ),
            ));
        }
        if !groundtrail_common::event::is_account_id(&a.account_id) {
            return Err(invalid(
                "agent.account_id",
                format!("{:?} is not a 12-digit account id", a.account_id),
            ));
        }
        if !groundtrail_common::event::is_region(&a.region) {
            return Err(invalid(
                "agent.region",
                format!(
                    "{:?} is not a region name (lowercase letters, digits, '-')",
                    a.region
                ),
            ));
        }
        let dns_like = |s: &str| {
            !s.is_empty()
                && s.len() <= 253
                && s.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
                && !s.starts_with(['.', '-'])
                && !s.ends_with('.')
        };
        if !dns_like(&a.domain) {
            return Err(invalid(
                "agent.domain",
                format!("{:?} is not a lowercase DNS-style domain", a.domain),
            ));
        }
        if a.partition.is_empty()
            || a.partition.len() > 32
            || !a
                .partition
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        {
            return Err(invalid(
                "agent.partition",
                format!("{:?} is not a partition name such as \"aws\"", a.partition),
            ));
        }
        if a.data_dir.as_os_str().is_empty() {
            return Err(invalid("agent.data_dir", "must not be empty"));
        }

        let c = &self.collector;
        if c.urls.is_empty() {
            return Err(invalid("collector.urls", "needs at least one URL"));
        }
        for url in &c.urls {
            let parsed = crate::shipper::CollectorUrl::parse(url)
                .map_err(|why| invalid("collector.urls", format!("{url:?}: {why}")))?;
            if parsed.tls && c.ca.is_none() {
                return Err(invalid(
                    "collector.ca",
                    format!("{url:?} is https, so the collector's CA file must be given"),
                ));
            }
        }
        match (&c.client_cert, &c.client_key) {
            (Some(_), None) => {
                return Err(invalid(
                    "collector.client_key",
                    "client_cert is set but client_key is not",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "collector.client_cert",
                    "client_key is set but client_cert is not",
                ));
            }
            _ => {}
        }
        for (field, path) in [
            ("collector.ca", &c.ca),
            ("collector.client_cert", &c.client_cert),
            ("collector.client_key", &c.client_key),
        ] {
            if let Some(p) = path
                && !p.is_file()
            {
                return Err(invalid(
                    field,
                    format!("{} does not exist or is not a file", p.display()),
                ));
            }
        }

        let b = &self.buffer;
        if b.max_bytes < 64 * 1024 {
            return Err(invalid(
                "buffer.max_bytes",
                format!("{} bytes is below the minimum of 64KiB", b.max_bytes),
            ));
        }
        if b.flush_delay_ms > 1000 {
            return Err(invalid(
                "buffer.flush_delay_ms",
                format!("{} ms is above the maximum of 1000", b.flush_delay_ms),
            ));
        }

        let s = &self.shipper;
        let max_records = groundtrail_common::wire::limits::MAX_BATCH_RECORDS;
        if s.batch_max_records == 0 || s.batch_max_records > max_records {
            return Err(invalid(
                "shipper.batch_max_records",
                format!(
                    "{} is outside 1..={max_records} (the collector's limit)",
                    s.batch_max_records
                ),
            ));
        }
        let max_bytes = groundtrail_common::wire::limits::MAX_DECOMPRESSED_BYTES as u64;
        if s.batch_max_bytes < 1024 || s.batch_max_bytes > max_bytes {
            return Err(invalid(
                "shipper.batch_max_bytes",
                format!(
                    "{} is outside 1KiB..={max_bytes} (the collector's decompressed limit)",
                    s.batch_max_bytes
                ),
            ));
        }
        if !s.compress
            && s.batch_max_bytes > groundtrail_common::wire::limits::MAX_BODY_BYTES as u64
        {
            return Err(invalid(
                "shipper.batch_max_bytes",
                format!(
                    "{} is above the collector's body limit of {} bytes when compress = false",
                    s.batch_max_bytes,
                    groundtrail_common::wire::limits::MAX_BODY_BYTES
                ),
            ));
        }
        if s.retry_initial_ms == 0 || s.retry_initial_ms > s.retry_max_ms {
            return Err(invalid(
                "shipper.retry_initial_ms",
                "must be at least 1 and at most retry_max_ms",
            ));
        }
        if s.request_timeout_ms < 100 {
            return Err(invalid(
                "shipper.request_timeout_ms",
                "must be at least 100",
            ));
        }

        let data_dir = self.agent.data_dir.clone();
        let app = &mut self.app_events;
        let app_socket = app
            .socket
            .get_or_insert_with(|| data_dir.join("app-events.sock"))
            .clone();
        check_socket_path("app_events.socket", &app_socket)?;
        let mode = app.socket_mode.get_or_insert_with(|| "0660".to_string());
        parse_mode(mode).map_err(|m| invalid("app_events.socket_mode", m))?;
        if let Some(addr) = app.http_listen
            && !addr.ip().is_loopback()
        {
            return Err(invalid(
                "app_events.http_listen",
                format!("{addr} is not a loopback address (the endpoint has no authentication)"),
            ));
        }
        let control = &mut self.control;
        let control_socket = control
            .socket
            .get_or_insert_with(|| data_dir.join("control.sock"))
            .clone();
        check_socket_path("control.socket", &control_socket)?;
        if control_socket == app_socket {
            return Err(invalid(
                "control.socket",
                "must differ from app_events.socket",
            ));
        }
        if let Some(addr) = control.metrics_listen
            && !addr.ip().is_loopback()
        {
            return Err(invalid(
                "control.metrics_listen",
                format!("{addr} is not a loopback address"),
            ));
        }
        Ok(())
    }

    /// The sled directory.
    pub fn buffer_dir(&self) -> PathBuf {
        self.agent.data_dir.join("buffer")
    }

    /// The app-events socket (always set after validation).
    pub fn app_socket(&self) -> PathBuf {
        self.app_events
            .socket
            .clone()
            .unwrap_or_else(|| self.agent.data_dir.join("app-events.sock"))
    }

    /// The app-events socket's permission bits.
    pub fn app_socket_mode(&self) -> u32 {
        self.app_events
            .socket_mode
            .as_deref()
            .and_then(|m| parse_mode(m).ok())
            .unwrap_or(0o660)
    }

    /// The control socket (always set after validation).
    pub fn control_socket(&self) -> PathBuf {
        self.control
            .socket
            .clone()
            .unwrap_or_else(|| self.agent.data_dir.join("control.sock"))
    }
}

fn check_socket_path(field: &'static str, path: &Path) -> Result<(), ConfigError> {
    let len = path.as_os_str().len();
    if len == 0 || len > MAX_SOCKET_PATH {
        return Err(invalid(
            field,
            format!(
                "{} is {len} bytes; a Unix socket path must be 1-{MAX_SOCKET_PATH} bytes",
                path.display()
            ),
        ));
    }
    Ok(())
}

fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.trim_start_matches("0o");
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(format!("{text:?} is not an octal mode such as \"0660\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text, "test.toml").unwrap_err().to_string()
    }

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::embedded_default().unwrap();
        assert!(!c.agent.host.is_empty());
        assert_eq!(c.agent.account_id, DEFAULT_ACCOUNT_ID);
        assert_eq!(c.collector.urls, vec![DEFAULT_COLLECTOR_URL.to_string()]);
        assert_eq!(c.buffer.full_policy, FullPolicy::Block);
        assert_eq!(
            c.app_socket(),
            Path::new(DEFAULT_DATA_DIR).join("app-events.sock")
        );
        assert_eq!(c.app_socket_mode(), 0o660);
    }

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

    #[test]
    fn full_file_parses() {
        let c = Config::parse(
            r#"
[agent]
host = "web-1"
account_id = "123456789012"
region = "eu-west-1"
domain = "corp.example"
partition = "aws"
data_dir = "/tmp/gt"
[collector]
urls = ["http://a:7480", "http://b:7480/"]
[buffer]
max_bytes = "1MiB"
full_policy = "drop_newest"
flush_delay_ms = 2
[shipper]
batch_max_records = 10
batch_max_bytes = "64KB"
batch_max_wait_ms = 5
[app_events]
http_listen = "127.0.0.1:7481"
[control]
metrics_listen = "[::1]:9481"
[sources]
"#,
            "t",
        )
        .unwrap();
        assert_eq!(c.agent.host, "web-1");
        assert_eq!(c.buffer.full_policy, FullPolicy::DropNewest);
        assert_eq!(c.buffer.max_bytes, 1 << 20);
        assert_eq!(c.shipper.batch_max_bytes, 64_000);
        assert_eq!(c.control_socket(), Path::new("/tmp/gt/control.sock"));
    }

    #[test]
    fn precise_errors() {
        let cases = [
            ("[agent]\nhots = \"x\"\n", "unknown field `hots`"),
            ("[buffr]\n", "unknown field `buffr`"),
            ("[agent]\naccount_id = \"12\"\n", "agent.account_id"),
            ("[agent]\nregion = \"US_EAST\"\n", "agent.region"),
            ("[agent]\nhost = \"a/b\"\n", "agent.host"),
            ("[agent]\ndomain = \"Corp\"\n", "agent.domain"),
            ("[collector]\nurls = []\n", "collector.urls"),
            ("[collector]\nurls = [\"ftp://x\"]\n", "collector.urls"),
            ("[collector]\nurls = [\"https://x:7480\"]\n", "collector.ca"),
            (
                "[collector]\nclient_cert = \"/nonexistent.pem\"\n",
                "collector.client_key",
            ),
            (
                "[collector]\nca = \"/nonexistent/ca.pem\"\n",
                "/nonexistent/ca.pem does not exist",
            ),
            ("[buffer]\nmax_bytes = \"10KB\"\n", "buffer.max_bytes"),
            ("[buffer]\nmax_bytes = \"lots\"\n", "max_bytes"),
            ("[buffer]\nfull_policy = \"drop_oldest\"\n", "drop_oldest"),
            (
                "[shipper]\nbatch_max_records = 0\n",
                "shipper.batch_max_records",
            ),
            (
                "[shipper]\nbatch_max_records = 10001\n",
                "shipper.batch_max_records",
            ),
            (
                "[app_events]\nhttp_listen = \"0.0.0.0:7481\"\n",
                "app_events.http_listen",
            ),
            (
                "[app_events]\nsocket_mode = \"rw\"\n",
                "app_events.socket_mode",
            ),
            (
                "[control]\nmetrics_listen = \"10.0.0.1:9000\"\n",
                "control.metrics_listen",
            ),
            ("[sources]\nnonsense = 1\n", "nonsense"),
        ];
        for (text, want) in cases {
            let e = err(text);
            assert!(e.contains(want), "{text:?}: got {e:?}, want {want:?}");
        }
        let long = format!("[agent]\ndata_dir = \"/{}\"\n", "d".repeat(120));
        assert!(err(&long).contains("app_events.socket"));
    }
}
