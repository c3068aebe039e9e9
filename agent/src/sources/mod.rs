//! The agent's inputs: the host sources, each turning raw host activity into CloudTrail
//! records, [`app_events`], the PutAuditEvents endpoint for applications, and [`sidecar`], the
//! reverse proxy that records the API calls it forwards. [`registry`] lists and starts them all.
//! What they share lives beside them: [`tail`] (file following, for the file sources) and
//! [`host_accounts`] (who a uid is).
//!
//! | module | input | eventSources |
//! | --- | --- | --- |
//! | [`auth_log`] | `/var/log/auth.log` (Debian/Ubuntu) or `/var/log/secure` (RHEL) | `sshd.`, `sudo.`, `su.`, `iam.` |
//! | [`journald`] | `journalctl -o json --follow` | the same, plus `systemd.` |
//! | [`auditd`] | `/var/log/audit/audit.log` | `sshd.`, `sudo.`, `su.`, `iam.`, `systemd.`, `exec.` |
//! | [`packages`] | `dpkg.log`, apt `history.log`, `yum.log`, `dnf.rpm.log` | `packages.` |
//! | [`fim`] | configured files and directories | `files.` |
//!
//! Parsers are pure functions from line(s) to a [`Parsed`]: a record, a line that is known
//! but carries nothing for the trail (ignored: e.g. pam's duplicate of sshd's own message), an
//! unrecognized line, or a malformed one. The last two are counted per source
//! ([`SourceStats`], read with [`stats`]) and never an error: a log line we do not understand
//! must not stop the trail. The catalog of shapes is `docs/sources.md`.
//!
//! The agent starts them from one list, [`registry::REGISTRY`], together with the endpoints that
//! take records from callers (application events, the sidecar): a new host source is its module,
//! its `[sources.<name>]` table and one line there.

pub mod app_events;
pub mod auditd;
pub mod auth_log;
pub mod fim;
pub mod host_accounts;
pub mod journald;
pub mod packages;
pub mod registry;
pub mod sidecar;
pub mod sshd_attempts;
pub mod syslog;
pub mod tail;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use groundtrail_common::Record;
use groundtrail_common::shutdown::Shutdown;
use serde::{Deserialize, Serialize};

use crate::host_identity::HostIdentity;
use crate::sink::RecordSink;
use crate::sources::tail::{Follower, LineHandler, TailOptions};
use host_accounts::Passwd;

/// `[sources]` in the agent config: which sources run and what they read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    /// passwd-format file used to turn uids (auditd, pam) into user names.
    pub passwd_path: PathBuf,
    /// Time zone of log timestamps that carry no offset (classic syslog `Feb 21 21:54:44`,
    /// dpkg, apt): `"local"` (the agent's zone, default), `"UTC"`, or a fixed offset such as
    /// `"+01:00"`.
    pub timezone: String,
    /// ssh logins, sudo, su and user/group tools from the syslog auth file.
    pub auth_log: AuthLogConfig,
    /// The same events from the systemd journal, plus unit start/stop/restart/failure.
    pub journald: JournaldConfig,
    /// The Linux audit log.
    pub auditd: AuditdConfig,
    /// Package installs, upgrades and removals.
    pub packages: PackagesConfig,
    /// File integrity monitoring of configuration files.
    pub fim: FimConfig,
}

impl Default for SourcesConfig {
    fn default() -> Self {
        SourcesConfig {
            passwd_path: PathBuf::from("/etc/passwd"),
            timezone: "local".into(),
            auth_log: AuthLogConfig::default(),
            journald: JournaldConfig::default(),
            auditd: AuditdConfig::default(),
            packages: PackagesConfig::default(),
            fim: FimConfig::default(),
        }
    }
}

/// `[sources.auth_log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthLogConfig {
    /// Run this source.
    pub enabled: bool,
    /// The file to follow. Unset: `/var/log/auth.log` if it exists, else `/var/log/secure` if
    /// it exists, else wait for `/var/log/auth.log`.
    pub path: Option<PathBuf>,
    /// Without a checkpoint, start at the end of the file instead of replaying it.
    pub start_at_end: bool,
}

impl Default for AuthLogConfig {
    fn default() -> Self {
        AuthLogConfig {
            enabled: true,
            path: None,
            start_at_end: false,
        }
    }
}

impl AuthLogConfig {
    /// The path this source reads (see [`AuthLogConfig::path`]).
    pub fn resolved_path(&self) -> PathBuf {
        if let Some(p) = &self.path {
            return p.clone();
        }
        for p in ["/var/log/auth.log", "/var/log/secure"] {
            if Path::new(p).exists() {
                return PathBuf::from(p);
            }
        }
        PathBuf::from("/var/log/auth.log")
    }
}

/// `[sources.journald]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournaldConfig {
    /// Run this source. Off by default: most hosts also write the auth log, and reading both
    /// would record each login twice. Turn it on for hosts without an auth log, and for
    /// systemd unit events.
    pub enabled: bool,
    /// The `journalctl` binary.
    pub journalctl: PathBuf,
    /// Record systemd unit start/stop/restart/failure (`systemd.<domain>`).
    pub units: bool,
    /// Record sshd/sudo/su/user-tool messages (turn off when `auth_log` runs too).
    pub auth: bool,
    /// Without a cursor checkpoint, start with the whole journal (`true`) or only new entries.
    pub from_start: bool,
}

impl Default for JournaldConfig {
    fn default() -> Self {
        JournaldConfig {
            enabled: false,
            journalctl: PathBuf::from("journalctl"),
            units: true,
            auth: true,
            from_start: false,
        }
    }
}

/// `[sources.auditd]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditdConfig {
    /// Run this source.
    pub enabled: bool,
    /// The audit log (raw or ENRICHED format).
    pub path: PathBuf,
    /// Record every EXECVE event as `RunCommand` (needs an execve audit rule). Off keeps only
    /// the user-space events (logins, sudo, account changes, services).
    pub execve: bool,
    /// Without a checkpoint, start at the end of the file instead of replaying it.
    pub start_at_end: bool,
}

impl Default for AuditdConfig {
    fn default() -> Self {
        AuditdConfig {
            enabled: true,
            path: PathBuf::from("/var/log/audit/audit.log"),
            execve: true,
            start_at_end: false,
        }
    }
}

/// `[sources.packages]`. An empty path list entry disables that log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PackagesConfig {
    /// Run this source.
    pub enabled: bool,
    /// dpkg's log (Debian/Ubuntu): one record per package action.
    pub dpkg_log: Option<PathBuf>,
    /// apt's history: one record per transaction and action, with the requesting user.
    pub apt_history: Option<PathBuf>,
    /// yum's log (RHEL/CentOS 7 and older).
    pub yum_log: Option<PathBuf>,
    /// dnf's rpm log (RHEL 8+, Fedora).
    pub dnf_rpm_log: Option<PathBuf>,
}

impl Default for PackagesConfig {
    fn default() -> Self {
        PackagesConfig {
            enabled: true,
            dpkg_log: Some("/var/log/dpkg.log".into()),
            apt_history: Some("/var/log/apt/history.log".into()),
            yum_log: Some("/var/log/yum.log".into()),
            dnf_rpm_log: Some("/var/log/dnf.rpm.log".into()),
        }
    }
}

/// `[sources.fim]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FimConfig {
    /// Run this source.
    pub enabled: bool,
    /// Files and directories to watch (directories: their files, two levels deep).
    pub paths: Vec<PathBuf>,
    /// Changes within this many milliseconds are one change (editors write in bursts).
    pub debounce_ms: u64,
    /// Files larger than this are not hashed (size, mode and owner are still compared).
    pub max_hash_bytes: u64,
    /// Full rescan interval in seconds (catches changes notify missed).
    pub rescan_secs: u64,
}

impl Default for FimConfig {
    fn default() -> Self {
        FimConfig {
            enabled: true,
            paths: [
                "/etc/ssh/sshd_config",
                "/etc/ssh/sshd_config.d",
                "/etc/sudoers",
                "/etc/sudoers.d",
                "/etc/passwd",
                "/etc/group",
                "/etc/shadow",
                "/etc/gshadow",
                "/etc/systemd/system",
                "/usr/lib/systemd/system",
                "/lib/systemd/system",
                "/etc/crontab",
                "/etc/cron.d",
                "/var/spool/cron/crontabs",
                "/var/spool/cron",
            ]
            .into_iter()
            .map(PathBuf::from)
            .collect(),
            debounce_ms: 500,
            max_hash_bytes: 64 * 1024 * 1024,
            rescan_secs: 300,
        }
    }
}

/// What a parser made of its input.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// A record for the trail (its eventID is set by the caller if empty).
    Record(Box<Record>),
    /// Known shape that carries nothing for the trail (a duplicate or noise).
    Ignored,
    /// Well-formed but not a shape we know.
    Unrecognized,
    /// Not even the envelope parses (truncated, binary, wrong format).
    Malformed,
}

/// Counters of one source. Read them with [`stats`]; the agent's metrics page exports them as
/// `groundtrail_source_lines_total{source,outcome}`.
#[derive(Debug, Default)]
pub struct SourceStats {
    pub records: AtomicU64,
    pub ignored: AtomicU64,
    pub unrecognized: AtomicU64,
    pub malformed: AtomicU64,
}

impl SourceStats {
    pub const fn new() -> SourceStats {
        SourceStats {
            records: AtomicU64::new(0),
            ignored: AtomicU64::new(0),
            unrecognized: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
        }
    }

    /// Counts one outcome.
    pub fn count(&self, p: &Parsed) {
        let c = match p {
            Parsed::Record(_) => &self.records,
            Parsed::Ignored => &self.ignored,
            Parsed::Unrecognized => &self.unrecognized,
            Parsed::Malformed => &self.malformed,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// `(records, ignored, unrecognized, malformed)` right now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            records: self.records.load(Ordering::Relaxed),
            ignored: self.ignored.load(Ordering::Relaxed),
            unrecognized: self.unrecognized.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
        }
    }
}

/// A copy of [`SourceStats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub records: u64,
    pub ignored: u64,
    pub unrecognized: u64,
    pub malformed: u64,
}

/// Counters of every host source, by name (`auth_log`, `journald`, `auditd`, `packages`, `fim`).
pub fn stats() -> Vec<(&'static str, StatsSnapshot)> {
    registry::REGISTRY
        .iter()
        .filter_map(|s| match s.kind() {
            registry::Kind::Host(stats) => Some((s.name(), stats.snapshot())),
            registry::Kind::Endpoint => None,
        })
        .collect()
}

/// How timestamps without an offset are placed in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    Local,
    Fixed(chrono::FixedOffset),
}

impl Zone {
    /// Parses `local`, `UTC`/`Z`, or `+HH:MM`/`-HH:MM`; anything else is `None`.
    pub fn parse(s: &str) -> Option<Zone> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("local") {
            return Some(Zone::Local);
        }
        if t.eq_ignore_ascii_case("utc") || t == "Z" {
            return Some(Zone::Fixed(chrono::FixedOffset::east_opt(0)?));
        }
        let (sign, rest) = match t.as_bytes().first()? {
            b'+' => (1, &t[1..]),
            b'-' => (-1, &t[1..]),
            _ => return None,
        };
        let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
        let secs = h.parse::<i32>().ok()? * 3600 + m.parse::<i32>().ok()? * 60;
        chrono::FixedOffset::east_opt(sign * secs).map(Zone::Fixed)
    }

    /// The UTC instant of a wall-clock time in this zone (`None` for a time that does not
    /// exist there, e.g. inside a DST gap).
    pub fn to_utc(&self, t: chrono::NaiveDateTime) -> Option<DateTime<Utc>> {
        use chrono::TimeZone;
        match self {
            Zone::Local => chrono::Local
                .from_local_datetime(&t)
                .earliest()
                .map(|d| d.with_timezone(&Utc)),
            Zone::Fixed(o) => o
                .from_local_datetime(&t)
                .single()
                .map(|d| d.with_timezone(&Utc)),
        }
    }
}

/// Everything a parser needs besides its input: the host (its name, and the identities and
/// ARNs of its accounts, see [`host_accounts`]), uid names and the time zone. Shared, read-only.
#[derive(Debug)]
pub struct Env {
    pub host: HostIdentity,
    pub passwd: Passwd,
    pub zone: Zone,
}

impl Env {
    pub fn new(host: &HostIdentity, passwd: Passwd, zone: Zone) -> Env {
        Env {
            host: host.clone(),
            passwd,
            zone,
        }
    }

    /// `<service>.<domain>`.
    pub fn event_source(&self, service: &str) -> String {
        format!("{service}.{}", self.host.domain)
    }

    /// A record with the conventions every host record shares: eventSource
    /// `<service>.<domain>`, the given time, `sourceIPAddress` = the host name (where no
    /// peer is known; callers overwrite it with the ssh peer), `readOnly` false, and the
    /// account and region of the agent. `eventID` is left empty for the caller to derive.
    pub fn record(
        &self,
        service: &str,
        event_name: &str,
        event_type: &str,
        time: DateTime<Utc>,
    ) -> Record {
        let mut r = Record::new(
            self.event_source(service),
            event_name,
            event_type,
            self.host.region.clone(),
            self.host.account_id.clone(),
        );
        r.event_time = groundtrail_common::time::json_time(time);
        r.event_id = String::new();
        r.source_ip_address = Some(self.host.host.clone());
        r.read_only = Some(false);
        r
    }
}

/// Cuts `s` to at most `max` bytes on a char boundary (CloudTrail's field caps).
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Glue for line-based sources: a per-line parser + its counters as a [`LineHandler`].
pub struct LineParser<F> {
    parse: F,
    stats: &'static SourceStats,
}

impl<F> LineParser<F>
where
    F: FnMut(&str) -> Parsed + Send,
{
    pub fn new(stats: &'static SourceStats, parse: F) -> Self {
        LineParser { parse, stats }
    }
}

impl<F> LineHandler for LineParser<F>
where
    F: FnMut(&str) -> Parsed + Send,
{
    fn line(&mut self, line: &[u8], at: crate::sources::tail::LineRef<'_>, out: &mut Vec<Record>) {
        let parsed = match std::str::from_utf8(line) {
            Ok(s) => (self.parse)(s),
            // Logs are mostly UTF-8; a line that is not is decoded lossily rather than lost.
            Err(_) => (self.parse)(&String::from_utf8_lossy(line)),
        };
        self.stats.count(&parsed);
        if let Parsed::Record(mut r) = parsed {
            if r.event_id.is_empty() {
                r.event_id = at.event_id();
            }
            out.push(*r);
        }
    }
}

/// Runs a follower on `path` with `handler` until shutdown (a task per file source).
pub(crate) fn spawn_file(
    source_key: String,
    path: PathBuf,
    host: String,
    sink: Arc<dyn RecordSink>,
    shutdown: Shutdown,
    opts: TailOptions,
    mut handler: Box<dyn LineHandler>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tracing::info!(source = %source_key, path = %path.display(), "source started");
        let f = Follower::new(path, source_key.clone(), host, sink, opts);
        if let Err(e) = f.run(handler.as_mut(), shutdown).await {
            tracing::info!(source = %source_key, error = %e, "source stopped");
        }
    })
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    pub fn env() -> Env {
        Env::new(
            &crate::host_identity::testutil::web1(),
            Passwd::from_pairs(&[(0, "root"), (1000, "alice"), (700, "ops"), (497, "nagios")]),
            Zone::parse("UTC").unwrap(),
        )
    }

    /// A record as compact JSON (for `contains` checks).
    pub fn json(r: &Record) -> String {
        String::from_utf8(r.to_json()).unwrap()
    }

    /// Unwraps `Parsed::Record`, fills an eventID and checks the record is valid.
    pub fn rec(p: Parsed) -> Record {
        match p {
            Parsed::Record(mut r) => {
                if r.event_id.is_empty() {
                    r.event_id = uuid::Uuid::new_v4().to_string();
                }
                r.validate().unwrap();
                *r
            }
            other => panic!("expected a record, got {other:?}"),
        }
    }

    /// The shared host-log samples (not part of the repository), or `None` with a notice.
    pub fn shared_sample(rel: &str) -> Option<String> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/host-logs")
            .join(rel);
        match std::fs::read(&p) {
            Ok(b) => Some(String::from_utf8_lossy(&b).into_owned()),
            Err(_) => {
                eprintln!(
                    "SKIPPED: {} not present (shared samples are optional)",
                    p.display()
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::settings::Settings;
    use registry::start_all;

    /// Settings for the unit tests' host (`testutil::web1`), with `sources` and the sockets in
    /// `data_dir`.
    fn settings(data_dir: &Path, sources: SourcesConfig) -> Arc<Settings> {
        let id = crate::host_identity::testutil::web1();
        let config = crate::config::Config {
            agent: crate::config::AgentSection {
                host: id.host,
                account_id: id.account_id,
                region: id.region,
                domain: id.domain,
                partition: id.partition,
                data_dir: data_dir.to_path_buf(),
            },
            sources,
            ..Default::default()
        };
        Arc::new(config.validate().unwrap())
    }

    #[test]
    fn config_defaults_and_unknown_fields() {
        let c: SourcesConfig = toml::from_str("").unwrap();
        assert_eq!(c, SourcesConfig::default());
        assert!(c.auth_log.enabled && c.auditd.enabled && !c.journald.enabled);
        let c: SourcesConfig =
            toml::from_str("[auth_log]\npath = \"/tmp/x\"\n[fim]\nenabled = false\n").unwrap();
        assert_eq!(c.auth_log.resolved_path(), PathBuf::from("/tmp/x"));
        assert!(!c.fim.enabled);
        assert!(toml::from_str::<SourcesConfig>("[auth_log]\nnope = 1\n").is_err());
        assert!(toml::from_str::<SourcesConfig>("bogus = 1\n").is_err());
    }

    #[test]
    fn zones() {
        assert_eq!(Zone::parse("local"), Some(Zone::Local));
        let t = chrono::NaiveDate::from_ymd_opt(2020, 1, 1)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap();
        let z = Zone::parse("+01:30").unwrap();
        assert_eq!(
            groundtrail_common::time::json_time(z.to_utc(t).unwrap()),
            "2020-01-01T10:30:00Z"
        );
        assert_eq!(Zone::parse("Mars/Olympus"), None);
    }

    /// Every prefix of every real fixture line (a truncated write), through every parser:
    /// never a panic, and every record produced is valid.
    #[test]
    fn truncated_lines_never_panic() {
        use crate::sources::tail::{FileId, LineHandler, LineRef};
        let e = std::sync::Arc::new(testutil::env());
        let fixtures = [
            include_str!("../../tests/fixtures/auth/beats_system_auth_test.log"),
            include_str!("../../tests/fixtures/auth/beats_system_auth_timestamp.log"),
            include_str!("../../tests/fixtures/auth/beats_secure_rhel7_excerpt.log"),
            include_str!("../../tests/fixtures/audit/beats_auditd_rhel6.log"),
            include_str!("../../tests/fixtures/audit/beats_auditd_useradd.log"),
            include_str!("../../tests/fixtures/audit/beats_auditd_cent7_node.log"),
            "2016-03-07 02:23:48 upgrade python3.4:amd64 3.4.0-2ubuntu1.1 3.4.3-1ubuntu1~14.04.3",
            "2022-03-23T16:46:43-0400 SUBDEBUG Installed: elfutils-0.186-1.el9.x86_64",
            "Oct 04 14:39:17 Installed: tree-1.6.0-10.el7.x86_64",
        ];
        let fid = FileId {
            dev: 1,
            ino: 1,
            head_len: 1,
            head: "0".into(),
        };
        let check = |p: Parsed| {
            if let Parsed::Record(mut r) = p {
                r.event_id = "00000000-0000-0000-0000-000000000000".into();
                r.validate().unwrap();
            }
        };
        let mut auth = auth_log::AuthLogParser::new(e.clone(), chrono::Utc::now());
        let mut years = syslog::YearTracker::new(chrono::Utc::now());
        let jc = JournaldConfig::default();
        for text in fixtures {
            for line in text.lines() {
                let cuts: Vec<usize> = (0..=line.len())
                    .filter(|i| line.is_char_boundary(*i))
                    .collect();
                for cut in cuts {
                    let l = &line[..cut];
                    check(auth.parse(l));
                    check(packages::parse_dpkg(&e, l));
                    check(packages::parse_dnf(&e, l));
                    check(packages::parse_yum(&e, &mut years, l));
                    check(packages::parse_apt_stanza(&e, &[l.to_string()], "x").remove(0));
                    let mut h = auditd::AuditHandler::new(e.clone(), true);
                    let mut out = Vec::new();
                    h.line(
                        l.as_bytes(),
                        LineRef {
                            host: "h",
                            file: &fid,
                            offset: 0,
                        },
                        &mut out,
                    );
                    h.flush(&mut out);
                    for r in out {
                        r.validate().unwrap();
                    }
                    let entry = serde_json::json!({
                        "__CURSOR": "c", "__REALTIME_TIMESTAMP": "1700000000000000",
                        "SYSLOG_IDENTIFIER": l.split(' ').nth(4).unwrap_or("sshd").trim_end_matches(':'),
                        "MESSAGE": l, "_UID": "0", "_TRANSPORT": "syslog",
                    });
                    check(journald::parse_entry(&e, &jc, &entry));
                }
            }
        }
    }

    /// The follower on the agent's real sled buffer: records and checkpoint are stored
    /// together, so after the buffer is closed and reopened (an agent restart) the auth log
    /// resumes exactly where it was: every line once.
    #[tokio::test]
    async fn restart_on_the_real_buffer_neither_loses_nor_repeats() {
        use crate::buffer::{Buffer, BufferOptions};
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("auth.log");
        let line = |i: u32| {
            format!(
                "Feb 20 08:35:{:02} slave22 sshd[{}]: Failed password for root from 216.160.83.57 port 29160 ssh2\n",
                i % 60,
                5774 + i
            )
        };
        let write = |range: std::ops::Range<u32>| {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap();
            for i in range {
                f.write_all(line(i).as_bytes()).unwrap();
            }
        };
        let open = || {
            let opts = BufferOptions {
                max_bytes: 64 * 1024 * 1024,
                full_policy: crate::buffer::FullPolicy::Block,
                flush_delay: std::time::Duration::ZERO,
                ..BufferOptions::default()
            };
            let id = crate::host_identity::testutil::web1();
            // Waits out the lock the buffer dropped before a reopen may still hold.
            let path = dir.path().join("buffer");
            Arc::new(crate::buffer::testutil::open_as(&path, opts, id).0)
        };
        fn sshd_records(b: &Buffer) -> Vec<Record> {
            b.read_from(0, 100_000, usize::MAX)
                .unwrap()
                .into_iter()
                .map(|e| Record::from_json(&e.json).unwrap())
                .filter(|r| r.event_source.starts_with("sshd."))
                .collect()
        }
        async fn run_until(settings: &Arc<Settings>, buffer: Arc<Buffer>, n: usize) {
            let (stop, rx) = tokio::sync::broadcast::channel(1);
            let tasks = start_all(
                settings.clone(),
                buffer.clone(),
                Arc::new(Metrics::default()),
                Shutdown::new(rx),
            )
            .await
            .unwrap()
            .tasks;
            tokio::time::timeout(std::time::Duration::from_secs(60), async {
                while sshd_records(&buffer).len() < n {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            })
            .await
            .unwrap();
            let _ = stop.send(());
            for t in tasks {
                t.await.unwrap();
            }
        }
        let config = SourcesConfig {
            auth_log: AuthLogConfig {
                path: Some(log.clone()),
                ..AuthLogConfig::default()
            },
            auditd: AuditdConfig {
                enabled: false,
                ..AuditdConfig::default()
            },
            packages: PackagesConfig {
                enabled: false,
                ..PackagesConfig::default()
            },
            fim: FimConfig {
                enabled: false,
                ..FimConfig::default()
            },
            ..SourcesConfig::default()
        };
        let settings = settings(dir.path(), config);
        write(0..500);
        let buffer = open();
        run_until(&settings, buffer.clone(), 500).await;
        drop(buffer);
        // Written while the agent is down.
        write(500..800);
        let buffer = open();
        run_until(&settings, buffer.clone(), 800).await;
        let records = sshd_records(&buffer);
        assert_eq!(records.len(), 800);
        let ids: std::collections::HashSet<&str> =
            records.iter().map(|r| r.event_id.as_str()).collect();
        assert_eq!(ids.len(), 800);
    }

    /// The registry's start with real files: lines appended to an auth log, an audit log and a
    /// dpkg log come out as records of the right sources, with checkpoints stored.
    #[tokio::test]
    async fn start_all_follows_configured_files() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(
            p("passwd"),
            "root:x:0:0::/root:/bin/sh\nops:x:700:700::/:/bin/sh\n",
        )
        .unwrap();
        let config = SourcesConfig {
            passwd_path: p("passwd"),
            timezone: "UTC".into(),
            auth_log: AuthLogConfig {
                path: Some(p("auth.log")),
                ..AuthLogConfig::default()
            },
            auditd: AuditdConfig {
                path: p("audit.log"),
                ..AuditdConfig::default()
            },
            packages: PackagesConfig {
                enabled: true,
                dpkg_log: Some(p("dpkg.log")),
                apt_history: None,
                yum_log: None,
                dnf_rpm_log: Some("".into()),
            },
            fim: FimConfig {
                enabled: false,
                ..FimConfig::default()
            },
            journald: JournaldConfig::default(),
        };
        let sink = crate::sources::tail::MemorySink::new();
        let (stop, rx) = tokio::sync::broadcast::channel(1);
        let tasks = start_all(
            settings(dir.path(), config),
            sink.clone(),
            Arc::new(Metrics::default()),
            Shutdown::new(rx),
        )
        .await
        .unwrap()
        .tasks;
        // One per file source, and the application events' socket.
        assert_eq!(tasks.len(), 4);
        let append = |name: &str, text: &str| {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p(name))
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
        };
        // beats sample lines (the USER_CMD one shortened: uid 0, cmd /bin/ls).
        append(
            "auth.log",
            // The connection's end completes the invalid user's attempt (sshd_attempts).
            "Feb 21 21:56:12 localhost sshd[3430]: Invalid user test from 10.0.2.2\n\
             Feb 21 21:56:13 localhost sshd[3430]: Connection closed by 10.0.2.2 port 4444 [preauth]\n",
        );
        append(
            "audit.log",
            "type=USER_CMD msg=audit(1489519256.192:19600329): user pid=4151 uid=0 auid=700 ses=11988 msg='cwd=\"/\" cmd=2F62696E2F6C73 terminal=? res=success'\n",
        );
        append(
            "dpkg.log",
            "2016-03-07 02:23:48 upgrade python3.4:amd64 3.4.0-2ubuntu1.1 3.4.3-1ubuntu1~14.04.3\n",
        );
        tokio::time::timeout(std::time::Duration::from_secs(60), sink.wait_for(3))
            .await
            .unwrap();
        let _ = stop.send(());
        for t in tasks {
            t.await.unwrap();
        }
        let mut got: Vec<String> = sink
            .records()
            .iter()
            .map(|r| {
                r.validate().unwrap();
                format!("{} {}", r.event_source, r.event_name)
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                "packages.onprem.internal UpgradePackage",
                "sshd.onprem.internal ConsoleLogin",
                "sudo.onprem.internal RunCommand",
            ]
        );
        let sudo = sink
            .records()
            .into_iter()
            .find(|r| r.event_name == "RunCommand")
            .unwrap();
        assert_eq!(
            sudo.user_identity.unwrap().arn.as_deref(),
            Some("arn:aws:sts::123456789012:assumed-role/root/ops")
        );
        for key in ["auth_log:", "auditd:", "packages:dpkg:"] {
            let k = format!(
                "{key}{}",
                p(match key {
                    "auth_log:" => "auth.log",
                    "auditd:" => "audit.log",
                    _ => "dpkg.log",
                })
                .display()
            );
            assert!(sink.checkpoint(&k).is_some(), "no checkpoint for {k}");
        }
    }
}
