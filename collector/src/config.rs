//! The collector's configuration file (TOML).
//!
//! Every field has a default that serves a single host, so an empty file — or no file at all —
//! is a working collector: it listens on loopback, keeps its journal and signing key under
//! `groundtrail-data/collector/` and writes the trail to `groundtrail-data/trail/`. Unknown
//! fields are an error naming the field: a misspelt `digest_interval` must not silently leave
//! the hourly default in place.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The ingest listener and its TLS.
    pub server: ServerConfig,
    /// Input limits; each protects the collector from one kind of oversize input.
    pub limits: LimitsConfig,
    /// The durable journal and dedup index.
    pub journal: JournalConfig,
    /// The trail being written: its name, key layout and delivery cadence.
    pub trail: TrailConfig,
    /// The key that signs digests.
    pub signing: SigningConfig,
    /// Agents allowed to write, and what. Empty: any agent may write any account and region
    /// (only sensible on loopback or with `client_ca` set).
    pub agents: Vec<AgentConfig>,
    /// Watching agents' sequence numbers and silence.
    pub monitoring: MonitoringConfig,
    /// Where the trail is delivered. Empty: one local directory, `groundtrail-data/trail`.
    pub destinations: Vec<DestinationConfig>,
    /// The CloudTrail-compatible API (control plane and `cloudtrail-data`) on the listener.
    pub api: ApiConfig,
    /// Event history behind `LookupEvents`.
    pub history: HistoryConfig,
    /// Webhooks told about every delivered log file (a trail's SNS notification).
    pub notifications: Vec<NotificationConfig>,
}

/// `[api]`: the CloudTrail API on the same listener as ingest (`POST /` with `X-Amz-Target`,
/// and `POST /PutAuditEvents`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// A second listener that serves only the API (not agent ingest), with the server's TLS
    /// certificate but no client certificates — needed when `[server] client_ca` (mTLS) is set,
    /// because the AWS CLI and SDKs present no client certificate. Unset: the API is served on
    /// `[server] listen` only. Non-loopback needs `[server] tls_cert`/`tls_key`.
    pub listen: Option<SocketAddr>,
    /// Access keys whose SigV4 signatures are accepted. Empty: only loopback clients, read
    /// scope only, and their signatures are not checked (so the AWS CLI works with any
    /// credentials against the embedded default); `PutAuditEvents` then needs a key.
    pub access_keys: Vec<AccessKeyConfig>,
    /// A signed request whose `X-Amz-Date` is further than this from the collector's clock is
    /// refused (replay window). AWS uses 5 minutes.
    pub max_clock_skew: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: None,
            access_keys: Vec::new(),
            max_clock_skew: Duration::from_secs(300),
        }
    }
}

/// `[[api.access_keys]]`
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKeyConfig {
    /// The key id clients put in `Credential=` (`AKIA...` style, any non-empty ASCII word).
    pub access_key_id: String,
    /// The shared secret. Keep the config file private when it holds one.
    pub secret_access_key: String,
    /// What the key may do: `read` (LookupEvents, ListPublicKeys, DescribeTrails, GetTrail,
    /// GetTrailStatus) and/or `write` (PutAuditEvents).
    #[serde(default = "default_scopes")]
    pub scopes: Vec<Scope>,
    /// For `write`: the account events must name as `recipientAccountId`. Empty: the trail's
    /// `account_id`.
    #[serde(default)]
    pub account: Option<String>,
}

impl std::fmt::Debug for AccessKeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret (configs end up in logs and panics).
        f.debug_struct("AccessKeyConfig")
            .field("access_key_id", &self.access_key_id)
            .field("scopes", &self.scopes)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

fn default_scopes() -> Vec<Scope> {
    vec![Scope::Read]
}

/// A permission of an access key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Event history, public keys, trail description and status.
    Read,
    /// `PutAuditEvents`.
    Write,
}

/// `[history]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Directory of the history store (sled). Default: `history` beside the journal.
    pub path: Option<PathBuf>,
    /// Management events older than this (by `eventTime`) are dropped. CloudTrail keeps 90 days.
    pub retention: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            path: None,
            retention: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// `[[notifications]]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationConfig {
    /// `http://` URL that receives `POST {"s3Bucket": ..., "s3ObjectKey": [...]}` for every
    /// delivered log file, retried until it answers 2xx. Plain HTTP only (a local relay or
    /// a loopback service; put TLS in front of it if it must cross the network).
    pub url: String,
    /// Name in logs and in the journal's queue; defaults to the URL.
    #[serde(default)]
    pub name: Option<String>,
}

impl NotificationConfig {
    /// The queue name in the journal.
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.url.clone())
    }
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Without `tls_cert`/`tls_key` only a loopback address is allowed.
    pub listen: SocketAddr,
    /// PEM certificate chain of the server.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the server.
    pub tls_key: Option<PathBuf>,
    /// PEM CA that issues agent certificates. When set, every client must present a certificate
    /// from it, and the certificate's name (CN, else first DNS SAN) is the agent's name.
    pub client_ca: Option<PathBuf>,
    /// Most connections served at once; further ones wait in the accept queue.
    pub max_connections: usize,
    /// On SIGTERM/SIGINT, how long to keep trying to deliver the last log files and their
    /// digest before exiting anyway. Whatever is not delivered by then stays in the journal
    /// and goes out on the next start, so this only bounds how long a stop can take.
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7480)),
            tls_cert: None,
            tls_key: None,
            client_ca: None,
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body as sent (compressed or not), in bytes.
    pub max_body_bytes: usize,
    /// Largest body after zstd decompression, in bytes; a zstd bomb stops here.
    pub max_decompressed_bytes: usize,
    /// Most records in one batch.
    pub max_batch_records: usize,
    /// Largest single record, in bytes (CloudTrail's own limit is 256 KB).
    pub max_record_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        use groundtrail_common::wire::limits;
        LimitsConfig {
            max_body_bytes: limits::MAX_BODY_BYTES,
            max_decompressed_bytes: limits::MAX_DECOMPRESSED_BYTES,
            max_batch_records: limits::MAX_BATCH_RECORDS,
            max_record_bytes: limits::MAX_RECORD_BYTES,
        }
    }
}

/// `[journal]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Directory of the journal (sled). Holds received records until they are delivered, the
    /// dedup index, and the digest chain heads: losing it breaks the chain.
    pub path: PathBuf,
    /// How long an `eventID` is remembered for dedup.
    pub dedup_window: Duration,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            path: PathBuf::from("groundtrail-data/collector/journal"),
            dedup_window: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// `[trail]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrailConfig {
    /// Trail name, as in the trail ARN and every digest file name.
    pub name: String,
    /// The trail's home region (last region in digest names, and in the trail ARN).
    pub home_region: String,
    /// The account in the trail ARN. Empty: the first account that records arrive for.
    pub account_id: String,
    /// ARN partition (`aws`, `aws-cn`, `aws-us-gov`).
    pub partition: String,
    /// `S3KeyPrefix`: folder(s) before `AWSLogs/`. Empty for none.
    pub s3_key_prefix: String,
    /// Organization id (`o-...`) for an organization trail's key layout.
    pub organization_id: Option<String>,
    /// A log file closes this long after its first record.
    pub log_file_interval: Duration,
    /// ... or when its uncompressed JSON reaches this many bytes, whichever comes first.
    pub log_file_max_bytes: usize,
    /// One digest per region per this interval, also when nothing was delivered.
    pub digest_interval: Duration,
}

impl Default for TrailConfig {
    fn default() -> Self {
        TrailConfig {
            name: "groundtrail".into(),
            home_region: "us-east-1".into(),
            account_id: String::new(),
            partition: "aws".into(),
            s3_key_prefix: String::new(),
            organization_id: None,
            log_file_interval: Duration::from_secs(300),
            log_file_max_bytes: 32 * 1024 * 1024,
            digest_interval: Duration::from_secs(3600),
        }
    }
}

/// `[signing]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningConfig {
    /// PKCS#8 PEM RSA key that signs digests; must not be group/world readable. When it does not
    /// exist, `serve` creates it (mode 0600) and logs its fingerprint.
    pub key_file: PathBuf,
    /// Public keys of earlier signing keys, still listed so that old digests validate.
    pub retired_keys: Vec<RetiredKey>,
}

impl Default for SigningConfig {
    fn default() -> Self {
        SigningConfig {
            key_file: PathBuf::from("groundtrail-data/collector/signing-key.pem"),
            retired_keys: Vec::new(),
        }
    }
}

/// `[[signing.retired_keys]]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetiredKey {
    /// PEM public key (`RSA PUBLIC KEY`, PKCS#1) as `keygen` prints it.
    pub public_key_file: PathBuf,
    /// Start of the key's validity, `YYYY-MM-DDTHH:MM:SSZ`.
    pub valid_from: String,
    /// End of the key's validity, `YYYY-MM-DDTHH:MM:SSZ`.
    pub valid_until: String,
}

/// `[[agents]]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The agent's name: its client certificate's CN (or `X-Groundtrail-Agent` without mTLS).
    pub name: String,
    /// Accounts (`recipientAccountId`) it may write. Empty: none.
    pub accounts: Vec<String>,
    /// Regions (`awsRegion`) it may write. Empty: any.
    #[serde(default)]
    pub regions: Vec<String>,
}

/// `[monitoring]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringConfig {
    /// An agent silent for longer than this gets an `AgentSilent` record in the trail.
    pub agent_silence: Duration,
    /// The domain of the collector's own audit records: their `eventSource` is
    /// `groundtrail.<domain>` (DESIGN.md's `<domain>`, shared with the agents' sources).
    pub domain: String,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig {
            agent_silence: Duration::from_secs(3600),
            domain: "onprem.internal".into(),
        }
    }
}

/// `[[destinations]]`: one place the trail is delivered to. Every destination gets every log
/// file and its own digest chain (digests name their bucket, so chains differ per bucket).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum DestinationConfig {
    /// A directory laid out like a bucket: `<path>/<key>`, with each object's metadata beside it
    /// in `<path>/<key>.metadata.json`.
    Local {
        /// Name in logs and metrics; defaults to `local`.
        #[serde(default)]
        name: Option<String>,
        /// The directory (created if missing).
        path: PathBuf,
        /// The bucket name written into digests (`digestS3Bucket`, `s3Bucket`).
        #[serde(default = "default_local_bucket")]
        bucket: String,
    },
    /// An S3 bucket, on AWS or any S3-compatible store. Credentials come from the standard AWS
    /// chain (environment, profile, instance role).
    S3 {
        /// Name in logs and metrics; defaults to `s3:<bucket>`.
        #[serde(default)]
        name: Option<String>,
        /// The bucket.
        bucket: String,
        /// The bucket's region.
        #[serde(default = "default_s3_region")]
        region: String,
        /// Endpoint URL for S3-compatible stores (`http://127.0.0.1:9000`); AWS when absent.
        #[serde(default)]
        endpoint: Option<String>,
        /// Path-style addressing (needed for IP endpoints and most S3-compatible stores).
        #[serde(default)]
        force_path_style: bool,
        /// `when_supported` (the SDK default, what AWS uses) or `when_required` for stores that
        /// mishandle the SDK's default checksums.
        #[serde(default)]
        checksums: ChecksumMode,
        /// Server-side encryption: `AES256` (SSE-S3) or `aws:kms` (SSE-KMS).
        #[serde(default)]
        sse: Option<String>,
        /// KMS key for `sse = "aws:kms"`.
        #[serde(default)]
        sse_kms_key_id: Option<String>,
    },
}

fn default_local_bucket() -> String {
    "groundtrail-trail".into()
}

fn default_s3_region() -> String {
    "us-east-1".into()
}

/// Checksum behaviour of the S3 client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChecksumMode {
    #[default]
    WhenSupported,
    WhenRequired,
}

impl DestinationConfig {
    /// The name used in logs, metrics and the journal's delivery state.
    pub fn name(&self) -> String {
        match self {
            DestinationConfig::Local { name, .. } => name.clone().unwrap_or_else(|| "local".into()),
            DestinationConfig::S3 { name, bucket, .. } => {
                name.clone().unwrap_or_else(|| format!("s3:{bucket}"))
            }
        }
    }

    /// The embedded default destination.
    pub fn default_local() -> DestinationConfig {
        DestinationConfig::Local {
            name: None,
            path: PathBuf::from("groundtrail-data/trail"),
            bucket: default_local_bucket(),
        }
    }
}

impl Config {
    /// Reads and checks a config file. Errors name the file, and for TOML errors the field.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Parses and checks config text.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Where the history store lives: `[history] path`, or `history` beside the journal.
    pub fn history_path(&self) -> PathBuf {
        match &self.history.path {
            Some(p) => p.clone(),
            None => self.journal.path.with_file_name("history"),
        }
    }

    /// The destinations in effect: the configured ones, or the embedded local default.
    pub fn effective_destinations(&self) -> Vec<DestinationConfig> {
        if self.destinations.is_empty() {
            vec![DestinationConfig::default_local()]
        } else {
            self.destinations.clone()
        }
    }

    /// Checks what types cannot: cross-field rules and formats.
    pub fn validate(&self) -> anyhow::Result<()> {
        use anyhow::bail;
        use groundtrail_common::event::{is_account_id, is_region};
        let s = &self.server;
        if s.tls_cert.is_some() != s.tls_key.is_some() {
            bail!("[server] tls_cert and tls_key must be set together");
        }
        if s.client_ca.is_some() && s.tls_cert.is_none() {
            bail!("[server] client_ca needs tls_cert and tls_key");
        }
        if s.tls_cert.is_none() && !s.listen.ip().is_loopback() {
            bail!(
                "[server] listen = {} is not a loopback address: set tls_cert and tls_key to listen on the network",
                s.listen
            );
        }
        if s.max_connections == 0 {
            bail!("[server] max_connections must be at least 1");
        }
        let domain = &self.monitoring.domain;
        if domain.is_empty()
            || !domain
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
        {
            bail!("[monitoring] domain {domain:?} must be a DNS name (letters, digits, '-', '.')");
        }
        let t = &self.trail;
        if t.name.is_empty()
            || t.name.len() > 128
            || !t
                .name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_')
        {
            bail!(
                "[trail] name {:?} must be 1-128 letters, digits, '-', '.' or '_'",
                t.name
            );
        }
        if !is_region(&t.home_region) {
            bail!(
                "[trail] home_region {:?} is not a region name",
                t.home_region
            );
        }
        if !t.account_id.is_empty() && !is_account_id(&t.account_id) {
            bail!("[trail] account_id {:?} is not 12 digits", t.account_id);
        }
        if let Some(org) = &t.organization_id {
            let ok = org.len() >= 12
                && org.len() <= 34
                && org.starts_with("o-")
                && org[2..]
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
            if !ok {
                bail!("[trail] organization_id {org:?} is not of the form o-[a-z0-9]{{10,32}}");
            }
        }
        if t.log_file_interval.is_zero() || t.digest_interval.is_zero() {
            bail!("[trail] log_file_interval and digest_interval must be positive");
        }
        for (i, a) in self.agents.iter().enumerate() {
            if a.name.is_empty() {
                bail!("[[agents]] entry {} has an empty name", i + 1);
            }
            if let Some(bad) = a.accounts.iter().find(|x| !is_account_id(x)) {
                bail!("[[agents]] {}: account {bad:?} is not 12 digits", a.name);
            }
            if let Some(bad) = a.regions.iter().find(|x| !is_region(x)) {
                bail!("[[agents]] {}: region {bad:?} is not a region name", a.name);
            }
        }
        let mut ids = std::collections::HashSet::new();
        for k in &self.api.access_keys {
            if k.access_key_id.is_empty()
                || k.access_key_id.len() > 128
                || !k.access_key_id.bytes().all(|c| c.is_ascii_alphanumeric())
            {
                bail!(
                    "[[api.access_keys]] access_key_id {:?} must be 1-128 letters and digits",
                    k.access_key_id
                );
            }
            if !ids.insert(k.access_key_id.clone()) {
                bail!("[[api.access_keys]] {} appears twice", k.access_key_id);
            }
            if k.secret_access_key.len() < 16 {
                bail!(
                    "[[api.access_keys]] {}: secret_access_key must be at least 16 characters",
                    k.access_key_id
                );
            }
            if k.scopes.is_empty() {
                bail!("[[api.access_keys]] {}: scopes is empty", k.access_key_id);
            }
            if let Some(a) = &k.account
                && !is_account_id(a)
            {
                bail!(
                    "[[api.access_keys]] {}: account {a:?} is not 12 digits",
                    k.access_key_id
                );
            }
        }
        if let Some(l) = self.api.listen {
            if l == self.server.listen {
                bail!("[api] listen {l} is [server] listen; leave it unset to share the listener");
            }
            if self.server.tls_cert.is_none() && !l.ip().is_loopback() {
                bail!(
                    "[api] listen = {l} is not a loopback address: set [server] tls_cert and tls_key to listen on the network"
                );
            }
        }
        if self.history.retention.is_zero() {
            bail!("[history] retention must be positive");
        }
        let mut hooks = std::collections::HashSet::new();
        for n in &self.notifications {
            if !n.url.starts_with("http://") || n.url.len() <= "http://".len() {
                bail!("[[notifications]] url {:?} must be an http:// URL", n.url);
            }
            if n.url.parse::<http::Uri>().is_err() {
                bail!("[[notifications]] url {:?} is not a URL", n.url);
            }
            if !hooks.insert(n.name()) {
                bail!("[[notifications]] {:?} appears twice", n.name());
            }
        }
        let mut names = std::collections::HashSet::new();
        for d in self.effective_destinations() {
            if !names.insert(d.name()) {
                bail!("[[destinations]] name {:?} is used twice", d.name());
            }
            if let DestinationConfig::S3 {
                sse,
                sse_kms_key_id,
                ..
            } = &d
            {
                match sse.as_deref() {
                    None | Some("AES256") | Some("aws:kms") => {}
                    Some(other) => bail!(
                        "[[destinations]] {}: sse = {other:?}; use \"AES256\" or \"aws:kms\"",
                        d.name()
                    ),
                }
                if sse_kms_key_id.is_some() && sse.as_deref() != Some("aws:kms") {
                    bail!(
                        "[[destinations]] {}: sse_kms_key_id needs sse = \"aws:kms\"",
                        d.name()
                    );
                }
            }
        }
        Ok(())
    }
}

/// A length of time written the way people write it: `500ms`, `30s`, `5m`, `1h`, `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const fn from_secs(s: u64) -> Duration {
        Duration(std::time::Duration::from_secs(s))
    }
    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }
    pub fn get(&self) -> std::time::Duration {
        self.0
    }
}

impl FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Duration, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("{s:?} has no unit; write e.g. 30s, 5m, 1h, 7d"))?;
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?} does not start with a whole number"))?;
        let per = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => {
                return Err(format!(
                    "{s:?}: unknown unit {unit:?}; use ms, s, m, h or d"
                ));
            }
        };
        // Capped at 100 years so that adding it to a date can never overflow.
        const MAX_MS: u64 = 100 * 365 * 86_400_000;
        let ms = n
            .checked_mul(per)
            .filter(|ms| *ms <= MAX_MS)
            .ok_or_else(|| format!("{s:?} is longer than 100 years"))?;
        Ok(Duration(std::time::Duration::from_millis(ms)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1000),
        ] {
            if ms >= size && ms.is_multiple_of(size) {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_embedded_default() {
        let c = Config::parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(
            c.effective_destinations(),
            vec![DestinationConfig::default_local()]
        );
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = Config::parse("[trail]\ndigest_intervall = \"1h\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("digest_intervall"), "{err:#}");
    }

    #[test]
    fn durations() {
        for (text, secs) in [("30s", 30), ("5m", 300), ("1h", 3600), ("7d", 604_800)] {
            let d: Duration = text.parse().unwrap();
            assert_eq!(d.get().as_secs(), secs);
            assert_eq!(d.to_string(), text);
        }
        assert!("5".parse::<Duration>().is_err());
        assert!("99999999999999999999d".parse::<Duration>().is_err());
        assert!("9999999999999999d".parse::<Duration>().is_err());
        assert!("5y".parse::<Duration>().is_err());
    }

    #[test]
    fn full_example_parses() {
        let c = Config::parse(
            r#"
[server]
listen = "0.0.0.0:7480"
tls_cert = "server.pem"
tls_key = "server.key"
client_ca = "ca.pem"
[trail]
name = "onprem"
s3_key_prefix = "logs"
organization_id = "o-abcdefghij"
log_file_interval = "10s"
digest_interval = "30s"
[[agents]]
name = "web-1"
accounts = ["123456789012"]
regions = ["eu-west-1"]
[[destinations]]
type = "local"
path = "/srv/trail"
[[destinations]]
type = "s3"
bucket = "trail"
endpoint = "http://127.0.0.1:9000"
force_path_style = true
checksums = "when_required"
sse = "aws:kms"
sse_kms_key_id = "alias/trail"
"#,
        )
        .unwrap();
        assert_eq!(c.destinations.len(), 2);
        assert_eq!(c.destinations[1].name(), "s3:trail");
    }

    #[test]
    fn api_history_and_notifications() {
        let c = Config::parse(
            r#"
[api]
listen = "127.0.0.1:7481"
max_clock_skew = "2m"
[[api.access_keys]]
access_key_id = "AKIDEXAMPLE"
secret_access_key = "0123456789abcdef"
scopes = ["read", "write"]
account = "123456789012"
[history]
retention = "30d"
[[notifications]]
url = "http://127.0.0.1:9000/hook"
"#,
        )
        .unwrap();
        assert_eq!(c.api.access_keys[0].scopes, vec![Scope::Read, Scope::Write]);
        assert_eq!(c.history.retention.get().as_secs(), 30 * 86_400);
        assert_eq!(
            c.history_path(),
            PathBuf::from("groundtrail-data/collector/history")
        );
        assert!(!format!("{:?}", c.api.access_keys[0]).contains("0123456789abcdef"));
        for (bad, why) in [
            (
                "[[api.access_keys]]\naccess_key_id = \"A\"\nsecret_access_key = \"short\"\n",
                "16",
            ),
            (
                "[[api.access_keys]]\naccess_key_id = \"A-B\"\nsecret_access_key = \"0123456789abcdef\"\n",
                "letters",
            ),
            (
                "[[api.access_keys]]\naccess_key_id = \"A\"\nsecret_access_key = \"0123456789abcdef\"\nscopes = [\"admin\"]\n",
                "admin",
            ),
            ("[[notifications]]\nurl = \"https://x\"\n", "http://"),
            ("[api]\nlisten = \"0.0.0.0:7481\"\n", "loopback"),
            ("[history]\nretention = \"0s\"\n", "retention"),
        ] {
            let err = format!("{:#}", Config::parse(bad).unwrap_err());
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn refuses_plaintext_on_the_network() {
        let err = Config::parse("[server]\nlisten = \"0.0.0.0:7480\"\n").unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
    }
}
