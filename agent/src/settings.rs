//! The agent's settings: the config file once it has been checked, in the types the runtime
//! uses.
//!
//! [`crate::config::Config`] is the file's shape (what an operator writes: strings, `Option`s
//! whose default depends on another field, milliseconds as integers). [`Config::validate`] turns
//! it into [`Settings`], section by section, each section's `validate` returning what its
//! consumer needs: the one [`HostIdentity`] with the host name resolved, the collector URLs
//! parsed once, the buffer's [`BufferOptions`], real [`Duration`]s, socket paths that are not
//! `Option`s and a socket mode that is a number.
//!
//! **Guarantee: a [`Settings`] is only made by [`Config::validate`].** Everything past the
//! command line (`runtime`, the inputs, the CLI's `status`, `buffer ...`) takes [`Settings`]; so no consumer re-parses a URL, unwraps
//! an `Option` that "validation filled", or converts milliseconds on its own (before, the config
//! was edited in place and its accessors unwrapped the fields again). The checks and their
//! messages are the ones the operator sees from `check-config`: each names the field. The host
//! sources' `[sources]` and the sidecar's `[sidecar]` keep their own types (the sidecar checks
//! itself with `SidecarConfig::validate`, called here).
//!
//! `check-config` prints [`Settings::effective`]: the settings written back in the file's shape,
//! so what it prints is what runs (the derived defaults filled in).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use groundtrail_common::connections::Timeouts;

use crate::buffer::BufferOptions;
use crate::config::{
    AgentSection, AppEventsSection, BufferSection, CollectorSection, Config, ConfigError,
    ControlSection, LocalHttpSection, ShipperSection, invalid,
};
use crate::host_identity::HostIdentity;
use crate::http_util;
use crate::shipper::{CollectorUrl, ShipperSettings};
use crate::sources::SourcesConfig;
use crate::sources::sidecar::SidecarConfig;

/// Unix socket paths are limited to 108 bytes on Linux (`sun_path`), including the NUL.
const MAX_SOCKET_PATH: usize = 107;
/// The app-events socket's permission bits when `socket_mode` is not given.
const DEFAULT_APP_SOCKET_MODE: u32 = 0o660;

/// A validated config: what the runtime runs with. Made only by [`Config::validate`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// Who this host is in the trail (`[agent]`, the host name resolved).
    pub identity: HostIdentity,
    /// Directory for the buffer and the default socket paths.
    pub data_dir: PathBuf,
    pub collector: CollectorSettings,
    pub buffer: BufferOptions,
    pub shipper: ShipperSettings,
    pub app_events: AppEventsSettings,
    pub control: ControlSettings,
    pub local_http: LocalHttpSettings,
    pub sources: SourcesConfig,
    /// Validated by `SidecarConfig::validate`; absent: no proxy runs.
    pub sidecar: Option<SidecarConfig>,
    /// Keeps `Settings` from being built anywhere but [`Config::validate`].
    _validated: Validated,
}

/// A field only this module can fill: proof that [`Config::validate`] made the settings.
#[derive(Debug, Clone)]
struct Validated;

/// `[collector]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectorSettings {
    /// At least one, in failover order.
    pub urls: Vec<CollectorUrl>,
    /// The collector's CA file (an existing file); always given when a URL is https.
    pub ca: Option<PathBuf>,
    /// This agent's certificate and key for mutual TLS (existing files), given together.
    pub client_identity: Option<ClientIdentity>,
}

/// A client certificate and its key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The files the shipper's TLS config is loaded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsFiles<'a> {
    pub ca: &'a Path,
    /// Certificate and key, for mutual TLS.
    pub identity: Option<(&'a Path, &'a Path)>,
}

impl CollectorSettings {
    /// The TLS files to load when a URL is https (`None` when every URL is plain http): the CA,
    /// and the client identity if one is given.
    pub fn tls_files(&self) -> Option<TlsFiles<'_>> {
        if !self.urls.iter().any(|u| u.tls) {
            return None;
        }
        let ca = self
            .ca
            .as_deref()
            .expect("validation refuses an https URL without a CA");
        let identity = self
            .client_identity
            .as_ref()
            .map(|c| (c.cert.as_path(), c.key.as_path()));
        Some(TlsFiles { ca, identity })
    }

    /// The URLs as the operator wrote them.
    pub fn raw_urls(&self) -> Vec<String> {
        self.urls.iter().map(|u| u.raw.clone()).collect()
    }
}

/// `[app_events]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppEventsSettings {
    /// The PutAuditEvents Unix socket (default `<data_dir>/app-events.sock`), 1-107 bytes.
    pub socket: PathBuf,
    /// Its permission bits (at most 0o777).
    pub socket_mode: u32,
    /// The optional HTTP listener, a loopback address.
    pub http_listen: Option<SocketAddr>,
}

/// `[control]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlSettings {
    /// The control socket (default `<data_dir>/control.sock`), 1-107 bytes, not the app-events
    /// socket.
    pub socket: PathBuf,
    /// The optional metrics listener, a loopback address.
    pub metrics_listen: Option<SocketAddr>,
}

/// `[local_http]`, validated: the bounds of each local server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalHttpSettings {
    /// At least 1.
    pub max_connections: usize,
    /// The header, body (`request_timeout_ms`) and idle timers, each at least 100 ms.
    pub timeouts: Timeouts,
}

impl LocalHttpSettings {
    /// The bounds of one server: each call gives fresh connection slots (a clone of a
    /// [`http_util::Limits`] shares them), so each server is bounded on its own.
    pub fn limits(&self) -> http_util::Limits {
        http_util::Limits::new(self.max_connections, self.timeouts)
    }
}

impl Settings {
    /// The sled directory.
    pub fn buffer_dir(&self) -> PathBuf {
        self.data_dir.join("buffer")
    }

    /// The settings in the file's shape, as `check-config` prints them: every derived default
    /// (the host name, the socket paths and mode) written out. Validating it again gives the
    /// same settings.
    pub fn effective(&self) -> Config {
        let id = &self.identity;
        let ms = |d: Duration| d.as_millis() as u64;
        let s = &self.shipper;
        let b = &self.buffer;
        let t = &self.local_http.timeouts;
        Config {
            agent: AgentSection {
                host: id.host.clone(),
                account_id: id.account_id.clone(),
                region: id.region.clone(),
                domain: id.domain.clone(),
                partition: id.partition.clone(),
                data_dir: self.data_dir.clone(),
            },
            collector: CollectorSection {
                urls: self.collector.raw_urls(),
                ca: self.collector.ca.clone(),
                client_cert: self
                    .collector
                    .client_identity
                    .as_ref()
                    .map(|c| c.cert.clone()),
                client_key: self
                    .collector
                    .client_identity
                    .as_ref()
                    .map(|c| c.key.clone()),
            },
            buffer: BufferSection {
                max_bytes: b.max_bytes,
                full_policy: b.full_policy,
                flush_delay_ms: ms(b.flush_delay),
                set_aside_max_bytes: b.set_aside_max_bytes,
                stuck_after_ms: ms(b.stuck_after),
            },
            shipper: ShipperSection {
                batch_max_records: s.batch_max_records,
                batch_max_bytes: s.batch_max_bytes as u64,
                batch_max_wait_ms: ms(s.batch_max_wait),
                retry_initial_ms: ms(s.retry_initial),
                retry_max_ms: ms(s.retry_max),
                request_timeout_ms: ms(s.request_timeout),
                compress: s.compress,
                drain_timeout_ms: ms(s.drain_timeout),
                set_aside_retry_ms: ms(s.set_aside_retry),
            },
            app_events: AppEventsSection {
                socket: Some(self.app_events.socket.clone()),
                socket_mode: Some(format!("{:04o}", self.app_events.socket_mode)),
                http_listen: self.app_events.http_listen,
            },
            control: ControlSection {
                socket: Some(self.control.socket.clone()),
                metrics_listen: self.control.metrics_listen,
            },
            local_http: LocalHttpSection {
                max_connections: self.local_http.max_connections,
                header_timeout_ms: ms(t.header),
                idle_timeout_ms: ms(t.idle),
                request_timeout_ms: ms(t.body),
            },
            sources: self.sources.clone(),
            sidecar: self.sidecar.clone(),
        }
    }
}

impl Config {
    /// Checks every field and returns the settings the runtime uses; the first problem found
    /// is the error, naming its field.
    pub fn validate(self) -> Result<Settings, ConfigError> {
        if let Some(sidecar) = &self.sidecar {
            sidecar
                .validate()
                .map_err(|e| invalid("sidecar", e.to_string()))?;
        }
        let local_http = self.local_http.validate()?;
        let data_dir = self.agent.data_dir.clone();
        let identity = self.agent.validate()?;
        let collector = self.collector.validate()?;
        let buffer = self.buffer.validate()?;
        let shipper = self.shipper.validate()?;
        let app_events = self.app_events.validate(&data_dir)?;
        let control = self.control.validate(&data_dir, &app_events.socket)?;
        Ok(Settings {
            identity,
            data_dir,
            collector,
            buffer,
            shipper,
            app_events,
            control,
            local_http,
            sources: self.sources,
            sidecar: self.sidecar,
            _validated: Validated,
        })
    }
}

impl AgentSection {
    /// The host's identity, with an empty `host` replaced by the system host name. Also checks
    /// `data_dir` (which the caller keeps).
    fn validate(self) -> Result<HostIdentity, ConfigError> {
        let host = if self.host.is_empty() {
            system_hostname()
        } else {
            self.host
        };
        if host.len() > 253
            || !host
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_')
        {
            return Err(invalid(
                "agent.host",
                format!(
                    "{host:?} must be 1-253 characters of letters, digits, '-', '.', '_' (it becomes an ARN path element)"
                ),
            ));
        }
        if !groundtrail_common::event::is_account_id(&self.account_id) {
            return Err(invalid(
                "agent.account_id",
                format!("{:?} is not a 12-digit account id", self.account_id),
            ));
        }
        if !groundtrail_common::event::is_region(&self.region) {
            return Err(invalid(
                "agent.region",
                format!(
                    "{:?} is not a region name (lowercase letters, digits, '-')",
                    self.region
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
        if !dns_like(&self.domain) {
            return Err(invalid(
                "agent.domain",
                format!("{:?} is not a lowercase DNS-style domain", self.domain),
            ));
        }
        let p = &self.partition;
        if p.is_empty()
            || p.len() > 32
            || !p
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        {
            return Err(invalid(
                "agent.partition",
                format!("{p:?} is not a partition name such as \"aws\""),
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("agent.data_dir", "must not be empty"));
        }
        Ok(HostIdentity {
            host,
            account_id: self.account_id,
            region: self.region,
            domain: self.domain,
            partition: self.partition,
        })
    }
}

impl CollectorSection {
    fn validate(self) -> Result<CollectorSettings, ConfigError> {
        if self.urls.is_empty() {
            return Err(invalid("collector.urls", "needs at least one URL"));
        }
        let mut urls = Vec::with_capacity(self.urls.len());
        for url in &self.urls {
            let parsed = CollectorUrl::parse(url)
                .map_err(|why| invalid("collector.urls", format!("{url:?}: {why}")))?;
            if parsed.tls && self.ca.is_none() {
                return Err(invalid(
                    "collector.ca",
                    format!("{url:?} is https, so the collector's CA file must be given"),
                ));
            }
            urls.push(parsed);
        }
        let client_identity = match (self.client_cert, self.client_key) {
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
            (Some(cert), Some(key)) => Some(ClientIdentity { cert, key }),
            (None, None) => None,
        };
        let client = client_identity.as_ref();
        for (field, path) in [
            ("collector.ca", self.ca.as_ref()),
            ("collector.client_cert", client.map(|c| &c.cert)),
            ("collector.client_key", client.map(|c| &c.key)),
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
        Ok(CollectorSettings {
            urls,
            ca: self.ca,
            client_identity,
        })
    }
}

impl BufferSection {
    fn validate(self) -> Result<BufferOptions, ConfigError> {
        if self.max_bytes < 64 * 1024 {
            return Err(invalid(
                "buffer.max_bytes",
                format!("{} bytes is below the minimum of 64KiB", self.max_bytes),
            ));
        }
        if self.flush_delay_ms > 1000 {
            return Err(invalid(
                "buffer.flush_delay_ms",
                format!("{} ms is above the maximum of 1000", self.flush_delay_ms),
            ));
        }
        if self.stuck_after_ms < 1000 {
            return Err(invalid(
                "buffer.stuck_after_ms",
                format!("{} ms is below the minimum of 1000", self.stuck_after_ms),
            ));
        }
        Ok(BufferOptions {
            max_bytes: self.max_bytes,
            full_policy: self.full_policy,
            flush_delay: Duration::from_millis(self.flush_delay_ms),
            set_aside_max_bytes: self.set_aside_max_bytes,
            stuck_after: Duration::from_millis(self.stuck_after_ms),
        })
    }
}

impl ShipperSection {
    fn validate(self) -> Result<ShipperSettings, ConfigError> {
        use groundtrail_common::wire::limits;
        let max_records = limits::MAX_BATCH_RECORDS;
        if self.batch_max_records == 0 || self.batch_max_records > max_records {
            return Err(invalid(
                "shipper.batch_max_records",
                format!(
                    "{} is outside 1..={max_records} (the collector's limit)",
                    self.batch_max_records
                ),
            ));
        }
        let max_bytes = limits::MAX_DECOMPRESSED_BYTES as u64;
        if self.batch_max_bytes < 1024 || self.batch_max_bytes > max_bytes {
            return Err(invalid(
                "shipper.batch_max_bytes",
                format!(
                    "{} is outside 1KiB..={max_bytes} (the collector's decompressed limit)",
                    self.batch_max_bytes
                ),
            ));
        }
        if !self.compress && self.batch_max_bytes > limits::MAX_BODY_BYTES as u64 {
            return Err(invalid(
                "shipper.batch_max_bytes",
                format!(
                    "{} is above the collector's body limit of {} bytes when compress = false",
                    self.batch_max_bytes,
                    limits::MAX_BODY_BYTES
                ),
            ));
        }
        if self.retry_initial_ms == 0 || self.retry_initial_ms > self.retry_max_ms {
            return Err(invalid(
                "shipper.retry_initial_ms",
                "must be at least 1 and at most retry_max_ms",
            ));
        }
        if self.set_aside_retry_ms < 1000 {
            return Err(invalid(
                "shipper.set_aside_retry_ms",
                format!(
                    "{} ms is below the minimum of 1000",
                    self.set_aside_retry_ms
                ),
            ));
        }
        if self.request_timeout_ms < 100 {
            return Err(invalid(
                "shipper.request_timeout_ms",
                "must be at least 100",
            ));
        }
        Ok(ShipperSettings {
            batch_max_records: self.batch_max_records,
            // At most MAX_DECOMPRESSED_BYTES (checked above), so it fits.
            batch_max_bytes: self.batch_max_bytes as usize,
            batch_max_wait: Duration::from_millis(self.batch_max_wait_ms),
            retry_initial: Duration::from_millis(self.retry_initial_ms),
            retry_max: Duration::from_millis(self.retry_max_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            compress: self.compress,
            drain_timeout: Duration::from_millis(self.drain_timeout_ms),
            set_aside_retry: Duration::from_millis(self.set_aside_retry_ms),
        })
    }
}

impl AppEventsSection {
    fn validate(self, data_dir: &Path) -> Result<AppEventsSettings, ConfigError> {
        let socket = self
            .socket
            .unwrap_or_else(|| data_dir.join("app-events.sock"));
        check_socket_path("app_events.socket", &socket)?;
        let socket_mode = match &self.socket_mode {
            Some(text) => parse_mode(text).map_err(|m| invalid("app_events.socket_mode", m))?,
            None => DEFAULT_APP_SOCKET_MODE,
        };
        if let Some(addr) = self.http_listen
            && !addr.ip().is_loopback()
        {
            return Err(invalid(
                "app_events.http_listen",
                format!("{addr} is not a loopback address (the endpoint has no authentication)"),
            ));
        }
        Ok(AppEventsSettings {
            socket,
            socket_mode,
            http_listen: self.http_listen,
        })
    }
}

impl ControlSection {
    fn validate(self, data_dir: &Path, app_socket: &Path) -> Result<ControlSettings, ConfigError> {
        let socket = self.socket.unwrap_or_else(|| data_dir.join("control.sock"));
        check_socket_path("control.socket", &socket)?;
        if socket == app_socket {
            return Err(invalid(
                "control.socket",
                "must differ from app_events.socket",
            ));
        }
        if let Some(addr) = self.metrics_listen
            && !addr.ip().is_loopback()
        {
            return Err(invalid(
                "control.metrics_listen",
                format!("{addr} is not a loopback address"),
            ));
        }
        Ok(ControlSettings {
            socket,
            metrics_listen: self.metrics_listen,
        })
    }
}

impl LocalHttpSection {
    fn validate(self) -> Result<LocalHttpSettings, ConfigError> {
        if self.max_connections == 0 {
            return Err(invalid("local_http.max_connections", "must be at least 1"));
        }
        for (field, ms) in [
            ("local_http.header_timeout_ms", self.header_timeout_ms),
            ("local_http.idle_timeout_ms", self.idle_timeout_ms),
            ("local_http.request_timeout_ms", self.request_timeout_ms),
        ] {
            if ms < 100 {
                return Err(invalid(field, format!("{ms} is too short: at least 100")));
            }
        }
        Ok(LocalHttpSettings {
            max_connections: self.max_connections,
            timeouts: Timeouts {
                header: Duration::from_millis(self.header_timeout_ms),
                body: Duration::from_millis(self.request_timeout_ms),
                idle: Duration::from_millis(self.idle_timeout_ms),
                ..Timeouts::default()
            },
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::FullPolicy;
    use crate::config::{DEFAULT_ACCOUNT_ID, DEFAULT_COLLECTOR_URL, DEFAULT_DATA_DIR};

    fn settings(text: &str) -> Result<Settings, ConfigError> {
        Config::parse(text, "test.toml")?.validate()
    }

    fn err(text: &str) -> String {
        settings(text).unwrap_err().to_string()
    }

    #[test]
    fn embedded_default_is_valid() {
        let s = Config::default().validate().unwrap();
        assert!(!s.identity.host.is_empty());
        assert_eq!(s.identity.account_id, DEFAULT_ACCOUNT_ID);
        assert_eq!(
            s.collector.raw_urls(),
            vec![DEFAULT_COLLECTOR_URL.to_string()]
        );
        assert_eq!(s.collector.tls_files(), None);
        assert_eq!(s.buffer.full_policy, FullPolicy::Block);
        assert_eq!(
            s.app_events.socket,
            Path::new(DEFAULT_DATA_DIR).join("app-events.sock")
        );
        assert_eq!(s.app_events.socket_mode, 0o660);
        assert_eq!(
            s.control.socket,
            Path::new(DEFAULT_DATA_DIR).join("control.sock")
        );
        assert_eq!(s.shipper.batch_max_wait, Duration::from_secs(1));
        assert_eq!(s.local_http.timeouts.body, Duration::from_secs(60));
    }

    const FULL: &str = r#"
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
socket_mode = "0o600"
[control]
metrics_listen = "[::1]:9481"
[local_http]
request_timeout_ms = 1500
[sources]
"#;

    #[test]
    fn full_file_becomes_typed_settings() {
        let s = settings(FULL).unwrap();
        assert_eq!(s.identity.host, "web-1");
        assert_eq!(s.buffer.full_policy, FullPolicy::DropNewest);
        assert_eq!(s.buffer.max_bytes, 1 << 20);
        assert_eq!(s.buffer.flush_delay, Duration::from_millis(2));
        assert_eq!(s.shipper.batch_max_bytes, 64_000);
        assert_eq!(s.shipper.batch_max_wait, Duration::from_millis(5));
        let urls: Vec<(&str, u16, &str)> = s
            .collector
            .urls
            .iter()
            .map(|u| (u.host.as_str(), u.port, u.base_path.as_str()))
            .collect();
        assert_eq!(urls, [("a", 7480, ""), ("b", 7480, "")]);
        assert_eq!(s.control.socket, Path::new("/tmp/gt/control.sock"));
        assert_eq!(s.app_events.socket, Path::new("/tmp/gt/app-events.sock"));
        assert_eq!(s.app_events.socket_mode, 0o600);
        assert_eq!(s.local_http.timeouts.body, Duration::from_millis(1500));
        assert_eq!(s.buffer_dir(), Path::new("/tmp/gt/buffer"));
    }

    /// What `check-config` prints is the file with the derived defaults written out, and it
    /// validates to the same settings (so nothing is lost between the two shapes).
    #[test]
    fn the_effective_config_is_the_file_with_its_defaults_written_out() {
        for text in [
            "",
            FULL,
            "[agent]\nhost = \"\"\n[control]\nsocket = \"/run/c.sock\"\n",
        ] {
            let file = Config::parse(text, "t").unwrap();
            let effective = file.clone().validate().unwrap().effective();
            let mut want = file;
            if want.agent.host.is_empty() {
                want.agent.host = system_hostname();
            }
            let dir = want.agent.data_dir.clone();
            want.app_events
                .socket
                .get_or_insert_with(|| dir.join("app-events.sock"));
            want.app_events.socket_mode = Some(match want.app_events.socket_mode {
                Some(m) => format!("{:04o}", parse_mode(&m).unwrap()),
                None => "0660".into(),
            });
            want.control
                .socket
                .get_or_insert_with(|| dir.join("control.sock"));
            assert_eq!(effective, want, "{text}");
            let again = effective.clone().validate().unwrap().effective();
            assert_eq!(again, effective, "{text}");
        }
    }

    #[test]
    fn tls_files_only_when_a_url_is_https() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        for f in [&ca, &cert, &key] {
            std::fs::write(f, "").unwrap();
        }
        let text = |urls: &str| {
            format!(
                "[collector]\nurls = {urls}\nca = {ca:?}\nclient_cert = {cert:?}\nclient_key = {key:?}\n"
            )
        };
        let s = settings(&text(r#"["http://a:7480"]"#)).unwrap();
        assert_eq!(s.collector.tls_files(), None);
        assert_eq!(s.collector.ca.as_deref(), Some(ca.as_path()));
        let s = settings(&text(r#"["http://a:7480", "https://b:7480"]"#)).unwrap();
        assert_eq!(
            s.collector.tls_files(),
            Some(TlsFiles {
                ca: &ca,
                identity: Some((&cert, &key))
            })
        );
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
            (
                "[control]\nsocket = \"groundtrail-data/agent/app-events.sock\"\n",
                "control.socket: must differ from app_events.socket",
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
