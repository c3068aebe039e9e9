//! Shared helpers for the black-box tests: they start the real `groundtrail-collector` binary,
//! talk to it over real HTTP and TLS, read the trail back from a directory or from a real
//! S3-compatible server (moto), and run both `groundtrail-collector validate-logs` and the
//! unmodified `aws cloudtrail validate-logs`.
//!
//! Environment (set by `scripts/test.sh`):
//! - `S3_ENDPOINT`: a running S3-compatible server (moto) on loopback.
//! - `MOTO_SERVER`: the `moto_server` executable, for tests that start their own S3 server.
//! - `AWS_CLI`: the `aws` executable (awscli 1.x).
//! - `NATS_SERVER`: the `nats-server` executable, for tests that start their own NATS cluster
//!   ([`nats::NatsCluster`]).
//! - `GROUNDTRAIL_TESTS_REQUIRE_ALL=1`: a missing S3 server, AWS CLI or NATS server fails the
//!   test instead of skipping it.

pub mod nats;
pub mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use groundtrail_common::{Record, UserIdentity};
use serde_json::Value;

pub use groundtrail_common::trail::SigningKey;

/// Account and regions the tests write.
pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "us-east-1";
pub const TRAIL: &str = "groundtrail";
/// The trail ARN of the collector configs written here.
pub const TRAIL_ARN: &str = "arn:aws:cloudtrail:us-east-1:123456789012:trail/groundtrail";

/// Generous deadline for anything that waits on the collector (a 2-core CI machine that is also
/// compiling is slow; nothing here asserts on time, it only gives up eventually).
pub const DEADLINE: Duration = Duration::from_secs(90);

// ------------------------------------------------------------------------------------------
// Environment

/// Whether every test must run (no skipping): true under `scripts/test.sh`.
pub fn require_all() -> bool {
    std::env::var("GROUNDTRAIL_TESTS_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// The workspace root (`tests/..`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The S3 endpoint of the shared moto server, or `None` (with a notice) when the test should
/// be skipped. Under `scripts/test.sh` a missing endpoint is a failure.
pub fn s3_endpoint(test: &str) -> Option<String> {
    match std::env::var("S3_ENDPOINT") {
        Ok(e) if !e.is_empty() => Some(e),
        _ => {
            assert!(
                !require_all(),
                "{test}: S3_ENDPOINT is not set but GROUNDTRAIL_TESTS_REQUIRE_ALL=1"
            );
            eprintln!("SKIPPED {test}: S3_ENDPOINT is not set (run scripts/test.sh)");
            None
        }
    }
}

fn tool(env: &str, venv_path: &str, test: &str) -> Option<PathBuf> {
    let found = std::env::var_os(env)
        .map(PathBuf::from)
        .or_else(|| Some(workspace_root().join(venv_path)))
        .filter(|p| p.is_file());
    if found.is_none() {
        assert!(
            !require_all(),
            "{test}: {env} not found but GROUNDTRAIL_TESTS_REQUIRE_ALL=1"
        );
        eprintln!("SKIPPED {test}: {env} is not set and {venv_path} does not exist");
    }
    found
}

/// The `aws` executable (awscli 1.x), or `None` (with a notice) to skip.
pub fn aws_cli(test: &str) -> Option<PathBuf> {
    tool("AWS_CLI", ".venv-awscli/bin/aws", test)
}

/// The `moto_server` executable, or `None` (with a notice) to skip.
pub fn moto_server(test: &str) -> Option<PathBuf> {
    tool("MOTO_SERVER", ".venv-s3/bin/moto_server", test)
}

/// A built binary of the workspace (`target/<profile>/<name>`), next to this test executable.
/// `GROUNDTRAIL_BIN_DIR` overrides the directory.
pub fn bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("GROUNDTRAIL_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>-<hash>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// The `NOTIFY_SOCKET` a spawned binary reports `READY=1` to (sd_notify(3)), under the
/// system's temp directory (a socket path must stay under 108 bytes). Dropped after the
/// readiness: the binary's later notifications then fail at once (a logged warning), they
/// never wait on a full queue.
pub struct Readiness {
    pub path: PathBuf,
    sock: std::os::unix::net::UnixDatagram,
}

impl Readiness {
    pub fn new() -> Readiness {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "gt-ready-{}-{}.sock",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_file(&path);
        let sock = std::os::unix::net::UnixDatagram::bind(&path).expect("bind NOTIFY_SOCKET");
        sock.set_nonblocking(true)
            .expect("non-blocking NOTIFY_SOCKET");
        Readiness { path, sock }
    }

    /// Whether `READY=1` has arrived (reads what is queued, never waits).
    pub fn received(&self) -> bool {
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.sock.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "READY=1")
            {
                return true;
            }
        }
        false
    }
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness::new()
    }
}

impl Drop for Readiness {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A TCP port on loopback that was free a moment ago.
///
/// Not the kernel's choice for port 0: that port is free again once the probe closes, so two
/// tests of one process could get the same one, and the second collector's readiness probe
/// would then answer from the first (seen as a reset connection when the first one stopped).
/// Ports are handed out from a process-wide counter below Linux's ephemeral range
/// (32768-60999), which the kernel never gives to port-0 binds or outgoing connections; the
/// start is spread by process id, and a port something else holds is skipped.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() % 600) * 20,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN);
}

/// Polls `f` every 100 ms until it returns `Some`, or panics with `what` after [`DEADLINE`].
pub async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ------------------------------------------------------------------------------------------
// Records and batches

/// A valid CloudTrail record for `account`/`region`, with a fresh `eventID`.
/// A record of the test account and region from `source`: `Describe` (read-only) or `Update`,
/// for tests of what event selectors take.
pub fn record_of(source: &str, read_only: bool) -> Value {
    let mut r = record(ACCOUNT, REGION);
    r["eventSource"] = source.into();
    r["eventName"] = if read_only { "Describe" } else { "Update" }.into();
    r["readOnly"] = read_only.into();
    r
}

pub fn record(account: &str, region: &str) -> Value {
    let mut r = Record::new(
        "sshd.onprem.internal",
        "ConsoleLogin",
        "AwsConsoleSignIn",
        region,
        account,
    );
    r.user_identity = Some(UserIdentity {
        identity_type: Some("IAMUser".into()),
        principal_id: Some("alice".into()),
        arn: Some(format!("arn:aws:iam::{account}:user/host-1/alice")),
        account_id: Some(account.into()),
        user_name: Some("alice".into()),
        ..UserIdentity::default()
    });
    r.source_ip_address = Some("192.0.2.10".into());
    r.read_only = Some(false);
    serde_json::from_slice(&r.to_json()).expect("a record is JSON")
}

/// `n` valid records for the test account and region.
pub fn records(n: usize) -> Vec<Value> {
    (0..n).map(|_| record(ACCOUNT, REGION)).collect()
}

/// Newline-delimited JSON.
pub fn ndjson(records: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        serde_json::to_writer(&mut out, r).expect("JSON");
        out.push(b'\n');
    }
    out
}

pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).expect("zstd")
}

/// The `eventID`s of `records`.
pub fn event_ids(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["eventID"].as_str().expect("eventID").to_string())
        .collect()
}

// ------------------------------------------------------------------------------------------
// The collector process

/// Where a collector delivers.
#[derive(Debug, Clone)]
pub enum Dest {
    Local { path: PathBuf, bucket: String },
    S3 { bucket: String, endpoint: String },
}

/// TLS files for the collector's listener.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// What goes into a collector's config file.
#[derive(Debug, Clone)]
pub struct Spec {
    pub destinations: Vec<Dest>,
    pub log_file_interval: String,
    pub digest_interval: String,
    pub tls: Option<ServerTls>,
    /// `[[agents]]`: (name, accounts, regions).
    pub agents: Vec<(String, Vec<String>, Vec<String>)>,
    /// Extra TOML lines for `[limits]`, e.g. `max_batch_records = 10`.
    pub limits: Vec<String>,
    /// Extra TOML lines for `[trail]`, e.g. `s3_key_prefix = "audit"`.
    pub trail: Vec<String>,
    /// TOML appended at the end of the file (e.g. `[[api.access_keys]]`, `[[notifications]]`).
    pub extra_toml: String,
}

impl Spec {
    /// One destination, fast intervals (1 s log files, 3 s digests).
    pub fn new(dest: Dest) -> Spec {
        Spec {
            destinations: vec![dest],
            log_file_interval: "1s".into(),
            digest_interval: "3s".into(),
            tls: None,
            agents: vec![],
            limits: vec![],
            trail: vec![],
            extra_toml: String::new(),
        }
    }

    fn toml(&self, dir: &Path, port: u16) -> String {
        let q = |p: &Path| toml_str(&p.display().to_string());
        let mut t = String::new();
        t += "[server]\n";
        t += &format!("listen = \"127.0.0.1:{port}\"\n");
        if let Some(tls) = &self.tls {
            t += &format!("tls_cert = {}\ntls_key = {}\n", q(&tls.cert), q(&tls.key));
            if let Some(ca) = &tls.client_ca {
                t += &format!("client_ca = {}\n", q(ca));
            }
        }
        t += "\n[limits]\n";
        for l in &self.limits {
            t += l;
            t += "\n";
        }
        t += &format!("\n[journal]\npath = {}\n", q(&dir.join("journal")));
        t += &format!(
            "\n[trail]\nname = \"{TRAIL}\"\nhome_region = \"{REGION}\"\naccount_id = \"{ACCOUNT}\"\nlog_file_interval = \"{}\"\ndigest_interval = \"{}\"\n",
            self.log_file_interval, self.digest_interval
        );
        for l in &self.trail {
            t += l;
            t += "\n";
        }
        t += &format!(
            "\n[signing]\nkey_file = {}\n",
            q(&dir.join("signing-key.pem"))
        );
        for (name, accounts, regions) in &self.agents {
            t += &format!(
                "\n[[agents]]\nname = {}\naccounts = {:?}\nregions = {:?}\n",
                toml_str(name),
                accounts,
                regions
            );
        }
        for d in &self.destinations {
            match d {
                Dest::Local { path, bucket } => {
                    t += &format!(
                        "\n[[destinations]]\ntype = \"local\"\npath = {}\nbucket = {}\n",
                        q(path),
                        toml_str(bucket)
                    );
                }
                Dest::S3 { bucket, endpoint } => {
                    t += &format!(
                        "\n[[destinations]]\ntype = \"s3\"\nbucket = {}\nregion = \"us-east-1\"\nendpoint = {}\nforce_path_style = true\n",
                        toml_str(bucket),
                        toml_str(endpoint)
                    );
                }
            }
        }
        t += "\n";
        t += &self.extra_toml;
        t
    }
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a JSON string is a TOML basic string")
}

/// `groundtrail-collector pki init --dir <dir>/pki`: a CA (`ca.pem`) and a server certificate
/// (`server.pem`, `server.key`) for localhost and 127.0.0.1; returns the pki directory.
pub fn pki_init(dir: &Path) -> PathBuf {
    let pki = dir.join("pki");
    let out = Command::new(bin("groundtrail-collector"))
        .args(["pki", "init", "--dir"])
        .arg(&pki)
        .output()
        .expect("run groundtrail-collector pki init");
    assert!(
        out.status.success(),
        "pki init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    pki
}

/// A running (or stopped) `groundtrail-collector serve`.
pub struct Collector {
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub addr: SocketAddr,
    pub spec: Spec,
    log_path: PathBuf,
    child: Option<Child>,
}

impl Collector {
    /// Writes a config under `dir` (journal and signing key live there too), starts the
    /// collector and waits until it accepts connections.
    pub async fn start(dir: &Path, spec: Spec) -> Collector {
        std::fs::create_dir_all(dir).expect("collector dir");
        let port = free_port();
        let config_path = dir.join("collector.toml");
        std::fs::write(&config_path, spec.toml(dir, port)).expect("write config");
        let mut c = Collector {
            dir: dir.to_path_buf(),
            config_path,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            spec,
            log_path: dir.join("collector.log"),
            child: None,
        };
        c.spawn().await;
        c
    }

    /// Starts the process again with the same config (after [`Collector::kill9`] or
    /// [`Collector::sigterm`]) and waits until it listens.
    pub async fn spawn(&mut self) {
        assert!(self.child.is_none(), "collector already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("collector log");
        let ready = Readiness::new();
        let child = Command::new(bin("groundtrail-collector"))
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .current_dir(&self.dir)
            .env("NOTIFY_SOCKET", &ready.path)
            .env("RUST_LOG", "info")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start groundtrail-collector");
        self.child = Some(child);
        let addr = self.addr;
        let start = Instant::now();
        // Ready is the collector's own `READY=1` (sent once every listener is bound and every
        // task runs), not a connect to the port: a port that answers may be another process's,
        // or this one's in the moment before a failed start exits.
        loop {
            if ready.received() {
                break;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "collector exited with {status} before it was ready; log:\n{}",
                    self.log()
                );
            }
            assert!(
                start.elapsed() < DEADLINE,
                "collector not ready on {addr}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The collector's combined stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for the exit (the collector delivers open files and writes a final
    /// digest first).
    pub async fn sigterm(&mut self) -> ExitStatus {
        let child = self.child.take().expect("collector is running");
        sigterm_and_wait(child, "collector", &|| self.log()).await
    }

    /// Whether this collector has a process (started and not killed; it may be frozen).
    pub fn has_process(&self) -> bool {
        self.child.is_some()
    }

    /// SIGSTOP: the process is frozen (as a paused VM or a long GC stall would be) until
    /// [`Collector::sigcont`].
    pub fn sigstop(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT: a frozen process runs on.
    pub fn sigcont(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(child) = &self.child {
            // SAFETY: kill(2) with a pid we own; no memory is involved.
            unsafe {
                libc::kill(child.id() as libc::pid_t, sig);
            }
        }
    }

    /// The value of an unlabelled metric on `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> u64 {
        let text = self.http_get("/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }

    /// SIGHUP (the collector reloads its detection rules).
    pub fn sighup(&self) {
        if let Some(child) = &self.child {
            // SAFETY: kill(2) with a pid we own; no memory is involved.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGHUP);
            }
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// The PKCS#1 DER public key of the collector's signing key.
    pub fn public_key(&self) -> SigningKey {
        SigningKey::load(&self.dir.join("signing-key.pem")).expect("collector signing key")
    }

    /// A plain-HTTP client for this collector.
    /// `GET <path>` on the collector's listener (plain HTTP); the body.
    pub async fn http_get(&self, path: &str) -> String {
        http_get_addr(self.addr, path).await
    }

    pub fn client(&self) -> IngestClient {
        IngestClient {
            addr: self.addr,
            tls: None,
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill9();
    }
}

// ------------------------------------------------------------------------------------------
// Ingest over HTTP and TLS

/// An answer from the collector.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("reply is not JSON ({e}): {}", self.body))
    }

    /// The CloudTrail-style error code of an error answer (`__type`).
    pub fn code(&self) -> String {
        self.json()["__type"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Posts batches to `/v1/events`, one connection per request.
#[derive(Clone)]
pub struct IngestClient {
    pub addr: SocketAddr,
    /// TLS client config and the server name to verify.
    pub tls: Option<(Arc<rustls::ClientConfig>, String)>,
}

impl IngestClient {
    /// A TLS client trusting `ca`, presenting `identity` (cert, key) when given.
    pub fn tls(
        addr: SocketAddr,
        ca: &Path,
        identity: Option<(&Path, &Path)>,
        server_name: &str,
    ) -> IngestClient {
        let config = groundtrail_common::tls::client_config(ca, identity).expect("TLS config");
        IngestClient {
            addr,
            tls: Some((config, server_name.to_string())),
        }
    }

    /// Posts ndjson records (plain).
    pub async fn post_records(&self, records: &[Value]) -> anyhow::Result<Reply> {
        self.post(ndjson(records), false, &[]).await
    }

    /// Posts ndjson records compressed with zstd.
    pub async fn post_records_zstd(&self, records: &[Value]) -> anyhow::Result<Reply> {
        self.post(zstd(&ndjson(records)), true, &[]).await
    }

    /// Posts a raw body.
    pub async fn post(
        &self,
        body: Vec<u8>,
        zstd: bool,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Reply> {
        use http_body_util::{BodyExt, Full};
        use hyper_util::rt::TokioIo;

        let mut req = hyper::Request::post(groundtrail_common::wire::EVENTS_PATH)
            .header("host", self.addr.to_string())
            .header("content-type", groundtrail_common::wire::NDJSON);
        if zstd {
            req = req.header("content-encoding", "zstd");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body)))?;
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        let (status, body) = match &self.tls {
            None => {
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
                tokio::spawn(conn);
                let resp = sender.send_request(req).await?;
                let status = resp.status().as_u16();
                (status, resp.into_body().collect().await?.to_bytes())
            }
            Some((config, name)) => {
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                let server_name = rustls_pki_types::ServerName::try_from(name.clone())?;
                let tls = connector.connect(server_name, tcp).await?;
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
                tokio::spawn(conn);
                let resp = sender.send_request(req).await?;
                let status = resp.status().as_u16();
                (status, resp.into_body().collect().await?.to_bytes())
            }
        };
        Ok(Reply {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

// ------------------------------------------------------------------------------------------
// Reading the trail back

/// A trail's bucket: a local destination's directory or an S3 bucket.
#[derive(Clone)]
pub enum Store {
    Local(PathBuf),
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
    },
}

/// An S3 client for a test S3 server (any credentials, path-style).
pub fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// A bucket name unique to this test run.
pub fn unique_bucket(test: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut name: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    name.push('-');
    name.push_str(&id[..12]);
    name
}

/// Creates `bucket` on the S3 server at `endpoint` and returns its [`Store`].
pub async fn create_bucket(endpoint: &str, bucket: &str) -> Store {
    let client = s3_client(endpoint);
    client
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create bucket {bucket}: {e:?}"));
    Store::S3 {
        client,
        bucket: bucket.to_string(),
    }
}

/// User metadata, keys without `x-amz-meta-`.
pub type Metadata = BTreeMap<String, String>;

const METADATA_SUFFIX: &str = ".metadata.json";

impl Store {
    /// Every key in the bucket, sorted.
    pub async fn keys(&self) -> Vec<String> {
        match self {
            Store::Local(root) => {
                let mut keys = Vec::new();
                walk(root, root, &mut keys);
                keys.retain(|k| !k.ends_with(METADATA_SUFFIX) && !k.contains(".gt-tmp-"));
                keys.sort();
                keys
            }
            Store::S3 { client, bucket } => {
                let mut keys = Vec::new();
                let mut token = None;
                loop {
                    let resp = client
                        .list_objects_v2()
                        .bucket(bucket)
                        .set_continuation_token(token)
                        .send()
                        .await
                        .expect("list objects");
                    keys.extend(
                        resp.contents()
                            .iter()
                            .filter_map(|o| o.key().map(str::to_string)),
                    );
                    token = resp.next_continuation_token().map(str::to_string);
                    if token.is_none() {
                        break;
                    }
                }
                keys.sort();
                keys
            }
        }
    }

    /// An object and its metadata.
    pub async fn get(&self, key: &str) -> Option<(Vec<u8>, Metadata)> {
        match self {
            Store::Local(root) => {
                let body = std::fs::read(root.join(key)).ok()?;
                let md = std::fs::read(root.join(format!("{key}{METADATA_SUFFIX}")))
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or_default();
                Some((body, md))
            }
            Store::S3 { client, bucket } => {
                let resp = client
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .ok()?;
                let md: Metadata = resp
                    .metadata()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default();
                let body = resp.body.collect().await.ok()?.into_bytes().to_vec();
                Some((body, md))
            }
        }
    }

    /// Replaces an object (keeping the given metadata).
    pub async fn put(&self, key: &str, body: Vec<u8>, metadata: &Metadata) {
        match self {
            Store::Local(root) => {
                let path = root.join(key);
                std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
                std::fs::write(&path, body).expect("write object");
                std::fs::write(
                    root.join(format!("{key}{METADATA_SUFFIX}")),
                    serde_json::to_vec(metadata).expect("JSON"),
                )
                .expect("write metadata");
            }
            Store::S3 { client, bucket } => {
                client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .set_metadata(Some(
                        metadata.clone().into_iter().collect::<HashMap<_, _>>(),
                    ))
                    .body(body.into())
                    .send()
                    .await
                    .expect("put object");
            }
        }
    }

    /// Deletes an object (and, locally, its metadata).
    pub async fn delete(&self, key: &str) {
        match self {
            Store::Local(root) => {
                std::fs::remove_file(root.join(key)).expect("delete object");
                let _ = std::fs::remove_file(root.join(format!("{key}{METADATA_SUFFIX}")));
            }
            Store::S3 { client, bucket } => {
                client
                    .delete_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .expect("delete object");
            }
        }
    }

    /// Keys of log files (`.../CloudTrail/...`).
    pub async fn log_keys(&self) -> Vec<String> {
        let mut keys = self.keys().await;
        keys.retain(|k| k.contains("/CloudTrail/") && k.ends_with(".json.gz"));
        keys
    }

    /// Keys of digest files, oldest first.
    pub async fn digest_keys(&self) -> Vec<String> {
        let mut keys = self.keys().await;
        keys.retain(|k| k.contains("/CloudTrail-Digest/") && k.ends_with(".json.gz"));
        keys
    }

    /// Keys of Insights files (`.../CloudTrail-Insight/...`).
    pub async fn insight_keys(&self) -> Vec<String> {
        let mut keys = self.keys().await;
        keys.retain(|k| k.contains("/CloudTrail-Insight/") && k.ends_with(".json.gz"));
        keys
    }

    /// Every record in every Insights file, with the key of the file it is in.
    pub async fn insight_records(&self) -> Vec<(String, Value)> {
        self.records_of(self.insight_keys().await).await
    }

    /// Every record in every log file, with the key of the file it is in.
    pub async fn records(&self) -> Vec<(String, Value)> {
        self.records_of(self.log_keys().await).await
    }

    async fn records_of(&self, keys: Vec<String>) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for key in keys {
            let Some((body, _)) = self.get(&key).await else {
                continue;
            };
            let doc: Value = serde_json::from_slice(&gunzip(&body))
                .unwrap_or_else(|e| panic!("log file {key} is not JSON: {e}"));
            for r in doc["Records"].as_array().expect("Records array") {
                out.push((key.clone(), r.clone()));
            }
        }
        out
    }

    /// How many times each `eventID` occurs in the trail's log files.
    pub async fn event_id_counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for (_, r) in self.records().await {
            *counts
                .entry(r["eventID"].as_str().unwrap_or_default().to_string())
                .or_insert(0) += 1;
        }
        counts
    }

    /// Parsed digests, oldest first.
    pub async fn digests(&self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for key in self.digest_keys().await {
            if let Some((body, _)) = self.get(&key).await {
                out.push((
                    key,
                    serde_json::from_slice(&gunzip(&body)).expect("digest JSON"),
                ));
            }
        }
        out
    }

    /// Waits until every id in `ids` is in a log file that a digest lists.
    pub async fn wait_delivered(&self, ids: &[String]) {
        wait_for("records delivered and digested", || async {
            let counts = self.event_id_counts().await;
            if !ids.iter().all(|id| counts.contains_key(id)) {
                return None;
            }
            let listed: std::collections::HashSet<String> = self
                .digests()
                .await
                .iter()
                .flat_map(|(_, d)| {
                    d["logFiles"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .map(|l| l["s3Object"].as_str().unwrap_or_default().to_string())
                })
                .collect();
            let logs = self.log_keys().await;
            logs.iter().all(|k| listed.contains(k)).then_some(())
        })
        .await
    }
}

fn walk(root: &Path, dir: &Path, keys: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(root, &p, keys);
        } else if let Ok(rel) = p.strip_prefix(root) {
            keys.push(rel.to_string_lossy().into_owned());
        }
    }
}

/// Inflates one gzip member.
pub fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut out)
        .expect("gzip");
    out
}

/// Gzip (one member).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

// ------------------------------------------------------------------------------------------
// Validators

/// The result of a validate-logs run.
#[derive(Debug, Clone)]
pub struct Validation {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Validation {
    fn from(out: Output) -> Validation {
        Validation {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `(valid, total)` from the "N/M digest files valid" summary line; `(0, 0)` when none.
    pub fn digests(&self) -> (usize, usize) {
        summary_ratio(&self.stdout, "digest")
    }

    /// `(valid, total)` from the "N/M log files valid" summary line.
    pub fn logs(&self) -> (usize, usize) {
        summary_ratio(&self.stdout, "log")
    }

    /// The `INVALID` status lines (stderr), in order.
    pub fn invalid_lines(&self) -> Vec<String> {
        self.stderr
            .lines()
            .filter(|l| l.contains("\tINVALID: "))
            .map(str::to_string)
            .collect()
    }

    /// Panics unless the run passed and found digests and log files (the AWS CLI exits 0 on
    /// "No digests found", so the code alone proves nothing).
    pub fn assert_valid(&self, what: &str) {
        let (dv, dt) = self.digests();
        let (lv, lt) = self.logs();
        assert!(
            self.code == 0 && dt > 0 && dv == dt && lt > 0 && lv == lt && self.stderr.is_empty(),
            "{what}: expected a valid trail with digests and logs, got exit {} ({dv}/{dt} digests, {lv}/{lt} logs)\nstdout:\n{}\nstderr:\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
    }
}

fn summary_ratio(stdout: &str, name: &str) -> (usize, usize) {
    let suffix = format!(" {name} files valid");
    for line in stdout.lines() {
        let head = line.split(',').next().unwrap_or("");
        if let Some(ratio) = head.strip_suffix(&suffix)
            && let Some((v, t)) = ratio.split_once('/')
            && let (Ok(v), Ok(t)) = (v.parse(), t.parse())
        {
            return (v, t);
        }
    }
    (0, 0)
}

/// Runs `groundtrail-collector validate-logs <args>`.
pub fn groundtrail_validate(args: &[String]) -> Validation {
    let out = Command::new(bin("groundtrail-collector"))
        .arg("validate-logs")
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .stdin(Stdio::null())
        .output()
        .expect("run groundtrail-collector validate-logs");
    Validation::from(out)
}

/// The time window arguments shared by both validators: from `start` to now + 1 minute.
pub fn window(start: chrono::DateTime<chrono::Utc>) -> Vec<String> {
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    vec![
        "--start-time".into(),
        fmt(start - chrono::Duration::minutes(5)),
        "--end-time".into(),
        fmt(chrono::Utc::now() + chrono::Duration::minutes(1)),
    ]
}

/// Runs the unmodified `aws cloudtrail validate-logs <args>` with its CloudTrail client at
/// `cloudtrail` (a [`CloudTrailStub`]) and its S3 client at `s3_endpoint`.
pub fn aws_validate(
    aws: &Path,
    cloudtrail: &CloudTrailStub,
    s3_endpoint: &str,
    args: &[String],
) -> Validation {
    aws_validate_at(aws, &cloudtrail.url(), s3_endpoint, args)
}

/// Runs the unmodified `aws cloudtrail validate-logs <args>` with its CloudTrail client at
/// `cloudtrail_url` (e.g. the collector itself) and its S3 client at `s3_endpoint`.
pub fn aws_validate_at(
    aws: &Path,
    cloudtrail_url: &str,
    s3_endpoint: &str,
    args: &[String],
) -> Validation {
    aws_validate_signed(
        aws,
        cloudtrail_url,
        s3_endpoint,
        args,
        ("testing", "testing"),
    )
}

/// [`aws_validate_at`] signing with `key` (an access key id and its secret), for a collector
/// whose API takes only its configured keys.
pub fn aws_validate_signed(
    aws: &Path,
    cloudtrail_url: &str,
    s3_endpoint: &str,
    args: &[String],
    key: (&str, &str),
) -> Validation {
    let out = Command::new(aws)
        .args([
            "cloudtrail",
            "validate-logs",
            "--region",
            REGION,
            "--endpoint-url",
        ])
        .arg(cloudtrail_url)
        .args(args)
        .env("AWS_ENDPOINT_URL_S3", s3_endpoint)
        .env("AWS_ENDPOINT_URL_ORGANIZATIONS", cloudtrail_url)
        .env("AWS_ACCESS_KEY_ID", key.0)
        .env("AWS_SECRET_ACCESS_KEY", key.1)
        .env("AWS_DEFAULT_REGION", REGION)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("run aws cloudtrail validate-logs");
    Validation::from(out)
}

/// Runs the unmodified `aws <args>` with the given credentials (no config files, no profile,
/// nothing that could reach AWS) and returns its output.
pub fn aws_run(aws: &Path, args: &[&str], access_key_id: &str, secret: &str) -> Output {
    Command::new(aws)
        .args(args)
        .env("AWS_ACCESS_KEY_ID", access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_DEFAULT_REGION", REGION)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("run aws")
}

// ------------------------------------------------------------------------------------------
// A stand-in for CloudTrail's API: DescribeTrails and ListPublicKeys (JSON 1.1)

/// A loopback HTTP server answering the two CloudTrail calls `aws cloudtrail validate-logs`
/// makes, with the collector's trail and public key.
pub struct CloudTrailStub {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CloudTrailStub {
    /// Serves `trail` (a DescribeTrails `trailList` entry) and `key` as the only public key,
    /// valid from a day ago to a day ahead.
    pub fn start(trail: Value, key: &SigningKey) -> CloudTrailStub {
        use base64::Engine;
        let now = chrono::Utc::now().timestamp();
        let keys = serde_json::json!({
            "PublicKeyList": [{
                "Value": base64::engine::general_purpose::STANDARD.encode(key.public_key_der()),
                "ValidityStartTime": now - 86_400,
                "ValidityEndTime": now + 86_400,
                "Fingerprint": key.fingerprint(),
            }]
        });
        let trails = serde_json::json!({ "trailList": [trail] });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind stub");
        let addr = listener.local_addr().expect("stub addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("stub runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let answers = Arc::new((trails, keys));
                loop {
                    let (tcp, _) = tokio::select! {
                        _ = &mut stopped => return,
                        a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                    };
                    let answers = answers.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let answers = answers.clone();
                            async move { Ok::<_, std::convert::Infallible>(stub_answer(req, &answers)) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                            .await;
                    });
                }
            });
        });
        CloudTrailStub {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn stub_answer(
    req: hyper::Request<hyper::body::Incoming>,
    answers: &(Value, Value),
) -> hyper::Response<http_body_util::Full<Bytes>> {
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (status, body) = match target.rsplit('.').next() {
        Some("DescribeTrails") => (200, answers.0.clone()),
        Some("ListPublicKeys") => (200, answers.1.clone()),
        Some("DescribeOrganization") => {
            let org = answers.0["trailList"][0]["OrganizationId"].clone();
            (
                200,
                serde_json::json!({ "Organization": {
                    "Id": org,
                    "Arn": format!("arn:aws:organizations::{ACCOUNT}:organization/{}", org.as_str().unwrap_or_default()),
                    "MasterAccountId": ACCOUNT,
                    "FeatureSet": "ALL",
                }}),
            )
        }
        _ => (
            400,
            serde_json::json!({"__type": "UnknownOperationException", "message": target}),
        ),
    };
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.1")
        .body(http_body_util::Full::new(Bytes::from(body.to_string())))
        .expect("response")
}

impl Drop for CloudTrailStub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The DescribeTrails entry of an organization trail with a key prefix. (`OrganizationId` is
/// not a DescribeTrails member; the stub reads it to answer DescribeOrganization.)
pub fn org_trail_description(bucket: &str, prefix: &str, organization_id: &str) -> Value {
    let mut t = trail_description(bucket);
    t["S3KeyPrefix"] = prefix.into();
    t["IsOrganizationTrail"] = true.into();
    t["IsMultiRegionTrail"] = true.into();
    t["OrganizationId"] = organization_id.into();
    t
}

/// The DescribeTrails entry of the test trail in `bucket`.
pub fn trail_description(bucket: &str) -> Value {
    serde_json::json!({
        "Name": TRAIL,
        "S3BucketName": bucket,
        "TrailARN": TRAIL_ARN,
        "HomeRegion": REGION,
        "IsMultiRegionTrail": false,
        "IsOrganizationTrail": false,
        "LogFileValidationEnabled": true,
        "IncludeGlobalServiceEvents": true,
    })
}

// ------------------------------------------------------------------------------------------
// A private S3 server (for outage tests)

/// A `moto_server` process of the test's own on a given port.
pub struct Moto {
    pub endpoint: String,
    child: Child,
}

impl Moto {
    /// Starts moto on `port` and waits until it answers.
    pub async fn start(moto: &Path, port: u16) -> Moto {
        let child = Command::new(moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let mut m = Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let start = Instant::now();
        loop {
            if http_get_ok(addr) {
                break;
            }
            assert!(
                m.child.try_wait().ok().flatten().is_none(),
                "moto_server exited"
            );
            assert!(start.elapsed() < DEADLINE, "moto_server not answering");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        m
    }
}

impl Moto {
    /// SIGSTOP: every request to this S3 hangs (an upload in progress stays in progress).
    pub fn stop(&self) {
        // SAFETY: kill(2) with a pid we own.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGSTOP);
        }
    }

    /// SIGCONT after [`Moto::stop`].
    pub fn cont(&self) {
        // SAFETY: as above.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGCONT);
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get_ok(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).unwrap_or(0);
    buf[..n].starts_with(b"HTTP/1.0 200") || buf[..n].starts_with(b"HTTP/1.1 200")
}

/// Copies a directory tree (a local trail) for a destructive check.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let p = e.path();
        let target = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &target);
        } else {
            std::fs::copy(&p, &target).expect("copy");
        }
    }
}

// ------------------------------------------------------------------------------------------
// Trails written by the test itself (to check the validators against each other)

/// A trail written directly with `groundtrail-common`'s key layout, digest document and
/// signing, into a [`Store`]: lets a test build chains (gaps, damage) no collector would.
pub struct SyntheticTrail {
    pub store: Store,
    pub bucket: String,
    pub key: SigningKey,
    pub layout: groundtrail_common::trail::TrailLayout,
    /// The previous digest: (key, signature, sha256 of its bytes).
    prev: Option<(String, String, String)>,
    pub digests: Vec<String>,
    pub logs: Vec<String>,
}

impl SyntheticTrail {
    pub fn new(store: Store, bucket: &str, prefix: &str) -> SyntheticTrail {
        SyntheticTrail {
            store,
            bucket: bucket.to_string(),
            key: SigningKey::generate().expect("RSA key"),
            layout: groundtrail_common::trail::TrailLayout::new(prefix, None),
            prev: None,
            digests: vec![],
            logs: vec![],
        }
    }

    /// Writes a log file delivered at `at` with `n` records.
    pub async fn log(
        &mut self,
        at: chrono::DateTime<chrono::Utc>,
        n: usize,
    ) -> groundtrail_common::trail::DigestLogFile {
        use groundtrail_common::time::json_time;
        let mut recs = records(n);
        for r in &mut recs {
            r["eventTime"] = Value::String(json_time(at));
        }
        let body = serde_json::to_vec(&serde_json::json!({ "Records": recs })).expect("JSON");
        let key =
            self.layout
                .log_file_key(ACCOUNT, REGION, at, &groundtrail_common::trail::unique16());
        self.store.put(&key, gzip(&body), &Metadata::new()).await;
        self.logs.push(key.clone());
        groundtrail_common::trail::DigestLogFile {
            s3_bucket: self.bucket.clone(),
            s3_object: key,
            hash_value: groundtrail_common::trail::sha256_hex(&body),
            hash_algorithm: "SHA-256".into(),
            newest_event_time: json_time(at),
            oldest_event_time: json_time(at),
        }
    }

    /// Writes and signs the digest for `[start, end]` (JSON times); `restart` begins a new
    /// chain (all `previousDigest*` null).
    pub async fn digest(
        &mut self,
        start: &str,
        end: &str,
        logs: Vec<groundtrail_common::trail::DigestLogFile>,
        restart: bool,
    ) -> String {
        self.write_digest(start, end, logs, restart, None).await
    }

    /// Writes a starting backfill digest (`..._backfill.json.gz`, its own chain) whose
    /// `backfill-generation-timestamp` metadata is `generated` (left out when `None`).
    pub async fn backfill_digest(
        &mut self,
        start: &str,
        end: &str,
        logs: Vec<groundtrail_common::trail::DigestLogFile>,
        generated: Option<&str>,
    ) -> String {
        let saved = self.prev.take();
        let key = self
            .write_digest(start, end, logs, true, Some(generated.map(str::to_string)))
            .await;
        self.prev = saved;
        key
    }

    async fn write_digest(
        &mut self,
        start: &str,
        end: &str,
        logs: Vec<groundtrail_common::trail::DigestLogFile>,
        restart: bool,
        backfill: Option<Option<String>>,
    ) -> String {
        use groundtrail_common::trail::DigestDocument;
        let end_t = groundtrail_common::time::parse_json_time(end).expect("JSON time");
        let key = self
            .layout
            .digest_key(ACCOUNT, REGION, TRAIL, REGION, end_t, backfill.is_some());
        let prev = if restart { None } else { self.prev.clone() };
        let mut doc = DigestDocument {
            aws_account_id: ACCOUNT.into(),
            digest_start_time: start.into(),
            digest_end_time: end.into(),
            digest_s3_bucket: self.bucket.clone(),
            digest_s3_object: key.clone(),
            digest_public_key_fingerprint: self.key.fingerprint().into(),
            digest_signature_algorithm: "SHA256withRSA".into(),
            newest_event_time: None,
            oldest_event_time: None,
            previous_digest_s3_bucket: prev.as_ref().map(|_| self.bucket.clone()),
            previous_digest_s3_object: prev.as_ref().map(|p| p.0.clone()),
            previous_digest_hash_value: prev.as_ref().map(|p| p.2.clone()),
            previous_digest_hash_algorithm: prev.as_ref().map(|_| "SHA-256".to_string()),
            previous_digest_signature: prev.as_ref().map(|p| p.1.clone()),
            log_files: logs,
        };
        doc.set_event_time_bounds();
        let signed = doc.sign(&self.key).expect("sign");
        let (bytes, hash, signature) = (signed.bytes, signed.sha256, signed.signature);
        let mut md = Metadata::new();
        md.insert("signature".into(), signature.clone());
        md.insert("signature-algorithm".into(), "SHA256withRSA".into());
        if let Some(Some(generated)) = &backfill {
            md.insert("backfill-generation-timestamp".into(), generated.clone());
        }
        self.store.put(&key, gzip(&bytes), &md).await;
        self.prev = Some((key.clone(), signature, hash));
        self.digests.push(key.clone());
        key
    }
}

// ------------------------------------------------------------------------------------------
// The agent process

/// The head of an agent config for the black-box tests: `[agent]` (host `host`, the test
/// account and region, data under `dir/data`), `[collector]` and a quick `[shipper]`. Callers
/// append their own `[sources…]`, `[sidecar]`, … tables.
pub fn agent_config_head(dir: &Path, host: &str, collector_urls: &[String]) -> String {
    let urls: Vec<String> = collector_urls.iter().map(|u| toml_str(u)).collect();
    format!(
        "[agent]\nhost = {host}\naccount_id = \"{ACCOUNT}\"\nregion = \"{REGION}\"\ndata_dir = {data}\n\n\
         [collector]\nurls = [{urls}]\n\n\
         [shipper]\nbatch_max_records = 50\nbatch_max_wait_ms = 200\nretry_initial_ms = 50\nretry_max_ms = 500\ndrain_timeout_ms = 2000\n\n",
        host = toml_str(host),
        data = toml_str(&dir.join("data").display().to_string()),
        urls = urls.join(", "),
    )
}

/// A running (or stopped) `groundtrail-agent run --config <dir>/agent.toml`.
pub struct AgentProcess {
    pub dir: PathBuf,
    pub config_path: PathBuf,
    log_path: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl AgentProcess {
    /// Writes `config_text` to `dir/agent.toml`, starts the agent and waits until its control
    /// socket answers `status`.
    pub async fn start(dir: &Path, config_text: &str) -> AgentProcess {
        AgentProcess::start_with_env(dir, config_text, &[]).await
    }

    /// [`AgentProcess::start`] with extra environment variables for the agent process (kept
    /// for every later [`AgentProcess::spawn`]), e.g. `NOTIFY_SOCKET`.
    pub async fn start_with_env(
        dir: &Path,
        config_text: &str,
        env: &[(&str, &str)],
    ) -> AgentProcess {
        std::fs::create_dir_all(dir).expect("agent dir");
        let config_path = dir.join("agent.toml");
        std::fs::write(&config_path, config_text).expect("write agent config");
        let mut a = AgentProcess {
            dir: dir.to_path_buf(),
            config_path,
            log_path: dir.join("agent.log"),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
        };
        a.spawn().await;
        a
    }

    /// Starts the process again with the same config and waits until it answers.
    pub async fn spawn(&mut self) {
        assert!(self.child.is_none(), "agent already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("agent log");
        let child = Command::new(bin("groundtrail-agent"))
            .args(["run", "--config"])
            .arg(&self.config_path)
            .current_dir(&self.dir)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start groundtrail-agent");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            let answered = Command::new(bin("groundtrail-agent"))
                .args(["status", "--config"])
                .arg(&self.config_path)
                .current_dir(&self.dir)
                .stdin(Stdio::null())
                .output()
                .is_ok_and(|o| o.status.success());
            if answered {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!("agent exited with {status}; log:\n{}", self.log());
            }
            assert!(
                start.elapsed() < DEADLINE,
                "agent not answering; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The agent's combined stdout and stderr so far.
    /// Runs `groundtrail-agent <args> --config <config>` without blocking the runtime; its
    /// JSON output if it succeeded.
    pub async fn cli(&self, args: &[&str]) -> Option<Value> {
        let out = tokio::process::Command::new(bin("groundtrail-agent"))
            .current_dir(&self.dir)
            .args(args)
            .arg("--config")
            .arg(&self.config_path)
            .output()
            .await
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `groundtrail-agent status` (JSON).
    pub fn status(&self) -> Value {
        let out = Command::new(bin("groundtrail-agent"))
            .args(["status", "--config"])
            .arg(&self.config_path)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .expect("run groundtrail-agent status");
        assert!(
            out.status.success(),
            "status failed: {}; log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        serde_json::from_slice(&out.stdout).expect("status is JSON")
    }

    /// `groundtrail-agent status --metrics` (the Prometheus text).
    pub fn metrics(&self) -> String {
        let out = Command::new(bin("groundtrail-agent"))
            .args(["status", "--metrics", "--config"])
            .arg(&self.config_path)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .expect("run groundtrail-agent status --metrics");
        assert!(
            out.status.success(),
            "status --metrics failed: {}; log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SIGTERM, then wait for a successful exit (the agent drains to the collector first).
    pub async fn sigterm(&mut self) {
        let child = self.child.take().expect("agent is running");
        let status = sigterm_and_wait(child, "agent", &|| self.log()).await;
        assert!(
            status.success(),
            "agent exit {status}; log:\n{}",
            self.log()
        );
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Sends SIGTERM to `child` and waits for it to exit, polling; past [`DEADLINE`] the child is
/// killed and reaped before the test fails, so no stray process outlives it. `log` supplies the
/// process's output for the failure message.
pub async fn sigterm_and_wait(
    mut child: Child,
    what: &str,
    log: &dyn Fn() -> String,
) -> ExitStatus {
    // SAFETY: kill(2) on the pid of a child we own and have not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            return status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit after SIGTERM; log:\n{}", log());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET <path>` on `addr` (plain HTTP/1.1); the body.
pub async fn http_get_addr(addr: std::net::SocketAddr, path: &str) -> String {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", addr.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// The value of the unlabelled metric `name` in a `/metrics` text (0 when absent).
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}
