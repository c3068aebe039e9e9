//! Running the real binaries: certificates from `groundtrail-collector pki`, collector and
//! agent configs, processes (with their CPU time at exit from `wait4`), the ingest protocol
//! over mTLS, the agent's PutAuditEvents endpoint, and reading the delivered trail back.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Where the release binaries are.
#[derive(Debug, Clone)]
pub struct Bins {
    pub collector: PathBuf,
    pub agent: PathBuf,
}

impl Bins {
    /// `dir`, else the directory of this executable (`target/release/`).
    pub fn find(dir: Option<&Path>) -> anyhow::Result<Bins> {
        let dir = match dir {
            Some(d) => d.to_path_buf(),
            None => std::env::current_exe()?
                .parent()
                .ok_or_else(|| anyhow!("executable has no directory"))?
                .to_path_buf(),
        };
        let bins = Bins {
            collector: dir.join("groundtrail-collector"),
            agent: dir.join("groundtrail-agent"),
        };
        for p in [&bins.collector, &bins.agent] {
            if !p.is_file() {
                bail!(
                    "{} is missing: build it (`cargo build --release -p groundtrail-collector -p groundtrail-agent`) or pass --bin-dir",
                    p.display()
                );
            }
        }
        Ok(bins)
    }
}

/// `RUST_LOG` for the binaries under test: `GROUNDTRAIL_BENCH_LOG`, default `warn`.
fn log_level() -> String {
    std::env::var("GROUNDTRAIL_BENCH_LOG").unwrap_or_else(|_| "warn".into())
}

/// Longest wait in seconds for one HTTP exchange before the scenario fails (60; 15 under
/// `--quick`).
pub static REQUEST_TIMEOUT_SECS: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(60);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a JSON string is a TOML basic string")
}

fn q(p: &Path) -> String {
    toml_str(&p.display().to_string())
}

/// A CA, the collector's server certificate and agent certificates, minted by
/// `groundtrail-collector pki`.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
    collector_bin: PathBuf,
}

impl Pki {
    pub fn init(bins: &Bins, dir: &Path) -> anyhow::Result<Pki> {
        run(Command::new(&bins.collector)
            .args(["pki", "init", "--dir"])
            .arg(dir))?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            collector_bin: bins.collector.clone(),
        })
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues `agents/<name>.pem`/`.key` (once).
    pub fn agent(&self, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let cert = self.dir.join("agents").join(format!("{name}.pem"));
        let key = self.dir.join("agents").join(format!("{name}.key"));
        if !cert.is_file() {
            run(Command::new(&self.collector_bin)
                .args(["pki", "agent", name, "--dir"])
                .arg(&self.dir))?;
        }
        Ok((cert, key))
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A child process we own; killed (by its pid) if dropped while running.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub pid: u32,
    pub log: PathBuf,
}

/// How a process ended.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    pub code: i32,
    /// Total user + system CPU seconds of the process's whole life (`wait4` rusage).
    pub cpu_seconds: f64,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> anyhow::Result<Proc> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("start {name}"))?;
        Ok(Proc {
            name: name.into(),
            pid: child.id(),
            child: Some(child),
            log,
        })
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    /// SIGTERM, then wait up to `limit` for the exit; reaps with `wait4` to read its CPU time.
    pub fn terminate(&mut self, limit: Duration) -> anyhow::Result<Exit> {
        let child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("{} is not running", self.name))?;
        let pid = child.id() as libc::pid_t;
        // SAFETY: kill(2) and wait4(2) on the pid of a child we own and have not reaped.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let start = Instant::now();
        loop {
            let mut status = 0;
            // SAFETY: as above; rusage is plain data written by the kernel.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
            if r == pid {
                let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
                let code = if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    128 + libc::WTERMSIG(status)
                };
                std::mem::forget(child);
                return Ok(Exit {
                    code,
                    cpu_seconds: secs(usage.ru_utime) + secs(usage.ru_stime),
                });
            }
            if r < 0 {
                bail!("wait4 {}: {}", self.name, std::io::Error::last_os_error());
            }
            if start.elapsed() > limit {
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::wait4(pid, &mut status, 0, &mut usage);
                }
                std::mem::forget(child);
                bail!(
                    "{} did not exit within {limit:?} of SIGTERM; log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Proc {
    /// Whether the process exits within `limit` (polled; it is not reaped).
    pub async fn wait_exit(&mut self, limit: Duration) -> bool {
        let start = Instant::now();
        while !self.exited() {
            if start.elapsed() > limit {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    /// SIGKILL (`kill -9`), and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

async fn wait_port(p: &mut Proc, addr: SocketAddr) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if p.exited() {
            bail!("{} exited before listening; log:\n{}", p.name, p.log_tail());
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("{} not listening on {addr}; log:\n{}", p.name, p.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A collector under test.
pub struct Collector {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub trail: PathBuf,
}

impl Collector {
    /// SIGTERM, which makes the collector close, deliver and digest everything it holds, and
    /// wait for its exit; anything but exit status 0 is an error carrying its log's tail.
    /// Returns the exit (with the collector's CPU time) once everything is delivered.
    pub fn deliver_and_exit(&mut self) -> anyhow::Result<Exit> {
        let exit = tokio::task::block_in_place(|| self.proc.terminate(Duration::from_secs(600)))?;
        if exit.code != 0 {
            anyhow::bail!(
                "collector exited {} after SIGTERM; log:\n{}",
                exit.code,
                self.proc.log_tail()
            );
        }
        Ok(exit)
    }
}

/// Starts `groundtrail-collector serve` with mTLS, its journal under `dir`, a local
/// destination `dir/trail`, and `agents` allowed to write any region of the generator's
/// accounts.
pub async fn start_collector(
    bins: &Bins,
    pki: &Pki,
    dir: &Path,
    log_file_interval: &str,
    agents: &[String],
) -> anyhow::Result<Collector> {
    start_collector_with(bins, pki, dir, log_file_interval, agents, "").await
}

/// As [`start_collector`], with `extra` TOML appended to the config (e.g. `[detection]`).
pub async fn start_collector_with(
    bins: &Bins,
    pki: &Pki,
    dir: &Path,
    log_file_interval: &str,
    agents: &[String],
    extra: &str,
) -> anyhow::Result<Collector> {
    start_collector_at(
        bins,
        pki,
        dir,
        log_file_interval,
        agents,
        &dir.join("trail"),
        extra,
    )
    .await
}

/// As [`start_collector_with`], with the local destination at `trail` (which several
/// collectors of a cluster may share) and the signing key `dir/signing-key.pem` (created by the
/// collector unless it is there already).
pub async fn start_collector_at(
    bins: &Bins,
    pki: &Pki,
    dir: &Path,
    log_file_interval: &str,
    agents: &[String],
    trail: &Path,
    extra: &str,
) -> anyhow::Result<Collector> {
    std::fs::create_dir_all(dir)?;
    let port = free_port();
    let trail = trail.to_path_buf();
    let mut t = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = {}\ntls_key = {}\nclient_ca = {}\nshutdown_grace = \"600s\"\n\n",
        q(&pki.dir.join("server.pem")),
        q(&pki.dir.join("server.key")),
        q(&pki.ca())
    );
    t += &format!("[journal]\npath = {}\n\n", q(&dir.join("journal")));
    t += &format!(
        "[trail]\nname = \"bench\"\naccount_id = \"{}\"\nlog_file_interval = \"{log_file_interval}\"\ndigest_interval = \"1h\"\n\n",
        crate::generator::ACCOUNTS[0]
    );
    t += &format!(
        "[signing]\nkey_file = {}\n\n",
        q(&dir.join("signing-key.pem"))
    );
    for a in agents {
        t += &format!(
            "[[agents]]\nname = {}\naccounts = {:?}\nregions = []\n\n",
            toml_str(a),
            crate::generator::ACCOUNTS
        );
    }
    t += &format!(
        "[[destinations]]\ntype = \"local\"\npath = {}\nbucket = \"bench-trail\"\n\n{extra}",
        q(&trail)
    );
    let config = dir.join("collector.toml");
    std::fs::write(&config, t)?;
    let mut cmd = Command::new(&bins.collector);
    cmd.arg("serve")
        .arg("--config")
        .arg(&config)
        .current_dir(dir)
        .env("RUST_LOG", log_level());
    let mut proc = Proc::spawn("collector", cmd, dir.join("collector.log"))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_port(&mut proc, addr).await?;
    Ok(Collector { proc, addr, trail })
}

/// An agent under test.
pub struct Agent {
    pub proc: Proc,
    /// The PutAuditEvents loopback HTTP listener.
    pub app_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
}

/// The account every agent writes (PutAuditEvents checks `recipientAccountId` against it).
pub const AGENT_ACCOUNT: &str = crate::generator::ACCOUNTS[0];

/// Starts `groundtrail-agent run` as `host` (certificate from `pki`), shipping to `collector`,
/// with the default sources enabled but pointed at empty files under `dir` (so they run,
/// watch and stay idle), PutAuditEvents and metrics on loopback HTTP, and default buffer and
/// shipper settings.
pub async fn start_agent(
    bins: &Bins,
    pki: &Pki,
    dir: &Path,
    host: &str,
    collector: SocketAddr,
) -> anyhow::Result<Agent> {
    std::fs::create_dir_all(dir.join("logs/apt"))?;
    std::fs::create_dir_all(dir.join("etc/sudoers.d"))?;
    for f in [
        "logs/auth.log",
        "logs/audit.log",
        "logs/dpkg.log",
        "logs/apt/history.log",
    ] {
        std::fs::write(dir.join(f), "")?;
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n")?;
    std::fs::write(dir.join("etc/sudoers"), "root ALL=(ALL:ALL) ALL\n")?;
    let (cert, key) = pki.agent(host)?;
    let (app_port, metrics_port) = (free_port(), free_port());
    let t = format!(
        "[agent]\nhost = {host}\naccount_id = \"{AGENT_ACCOUNT}\"\nregion = \"us-east-1\"\ndata_dir = {data}\n\n\
         [collector]\nurls = [\"https://localhost:{port}\"]\nca = {ca}\nclient_cert = {cert}\nclient_key = {key}\n\n\
         [app_events]\nhttp_listen = \"127.0.0.1:{app_port}\"\n\n\
         [control]\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n\n\
         [sources]\npasswd_path = {passwd}\n\n\
         [sources.auth_log]\nenabled = true\npath = {auth}\n\n\
         [sources.auditd]\nenabled = true\npath = {audit}\n\n\
         [sources.packages]\nenabled = true\ndpkg_log = {dpkg}\napt_history = {apt}\nyum_log = \"\"\ndnf_rpm_log = \"\"\n\n\
         [sources.fim]\nenabled = true\npaths = [{passwd}, {sudoers}, {sudoers_d}]\n",
        host = toml_str(host),
        data = q(&dir.join("data")),
        port = collector.port(),
        ca = q(&pki.ca()),
        cert = q(&cert),
        key = q(&key),
        passwd = q(&dir.join("etc/passwd")),
        auth = q(&dir.join("logs/auth.log")),
        audit = q(&dir.join("logs/audit.log")),
        dpkg = q(&dir.join("logs/dpkg.log")),
        apt = q(&dir.join("logs/apt/history.log")),
        sudoers = q(&dir.join("etc/sudoers")),
        sudoers_d = q(&dir.join("etc/sudoers.d")),
    );
    let config = dir.join("agent.toml");
    std::fs::write(&config, t)?;
    let mut cmd = Command::new(&bins.agent);
    cmd.args(["run", "--config"])
        .arg(&config)
        .current_dir(dir)
        .env("RUST_LOG", log_level());
    let mut proc = Proc::spawn("agent", cmd, dir.join("agent.log"))?;
    let app_addr = SocketAddr::from(([127, 0, 0, 1], app_port));
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], metrics_port));
    wait_port(&mut proc, app_addr).await?;
    wait_port(&mut proc, metrics_addr).await?;
    Ok(Agent {
        proc,
        app_addr,
        metrics_addr,
    })
}

impl Agent {
    /// One gauge or counter from the agent's Prometheus text.
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let mut c = HttpConn::plain(self.metrics_addr);
        let (status, body) = c.request("GET", "/metrics", Vec::new(), &[]).await?;
        if status != 200 {
            bail!("metrics: {status}");
        }
        let text = String::from_utf8_lossy(&body);
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("no metric {name}"))
    }

    /// Waits until the buffer is empty (everything shipped and committed by the collector).
    pub async fn wait_drained(&self, limit: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if self
                .metric("groundtrail_agent_buffer_records")
                .await
                .is_ok_and(|n| n == 0.0)
            {
                return Ok(());
            }
            if start.elapsed() > limit {
                bail!("agent buffer not drained after {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// One HTTP/1.1 connection (kept alive, reopened when the server closes it), plain or TLS.
pub struct HttpConn {
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl HttpConn {
    pub fn plain(addr: SocketAddr) -> HttpConn {
        HttpConn {
            addr,
            tls: None,
            sender: None,
        }
    }

    /// mTLS as the agent `cert`/`key`, trusting `ca`.
    pub fn tls(addr: SocketAddr, ca: &Path, cert: &Path, key: &Path) -> anyhow::Result<HttpConn> {
        let config = groundtrail_common::tls::client_config(ca, Some((cert, key)))?;
        Ok(HttpConn {
            addr,
            tls: Some(config),
            sender: None,
        })
    }

    async fn connect(&mut self) -> anyhow::Result<()> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let sender = match &self.tls {
            None => {
                let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
                tokio::spawn(conn);
                s
            }
            Some(config) => {
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                let name = rustls_pki_types::ServerName::try_from("localhost")?;
                let tls = connector.connect(name, tcp).await?;
                let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
                tokio::spawn(conn);
                s
            }
        };
        self.sender = Some(sender);
        Ok(())
    }

    /// One request; (status, body).
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, String)],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let body = Bytes::from(body);
        for attempt in 0..2 {
            if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
                self.connect().await?;
            }
            let sender = self.sender.as_mut().expect("connected");
            if sender.ready().await.is_err() {
                self.sender = None;
                continue;
            }
            let mut req = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header("host", "localhost");
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            let req = req.body(Full::new(body.clone()))?;
            let exchange = async {
                let resp = sender.send_request(req).await?;
                let status = resp.status().as_u16();
                let bytes = resp.into_body().collect().await?.to_bytes();
                Ok::<_, hyper::Error>((status, bytes.to_vec()))
            };
            let limit = Duration::from_secs(
                REQUEST_TIMEOUT_SECS.load(std::sync::atomic::Ordering::Relaxed),
            );
            let answer = tokio::time::timeout(limit, exchange)
                .await
                .map_err(|_| anyhow!("no answer from {} within {limit:?}", self.addr))?;
            match answer {
                Ok(r) => return Ok(r),
                Err(e) if attempt == 0 && e.is_canceled() => {
                    self.sender = None;
                }
                Err(e) => return Err(e.into()),
            }
        }
        bail!("connection to {} kept closing", self.addr)
    }

    /// Posts one ndjson batch (already zstd-compressed) to `/v1/events` with sequence headers.
    pub async fn post_batch(
        &mut self,
        zstd_body: Vec<u8>,
        seq_first: u64,
        seq_last: u64,
    ) -> anyhow::Result<u16> {
        use groundtrail_common::wire;
        let (status, body) = self
            .request(
                "POST",
                wire::EVENTS_PATH,
                zstd_body,
                &[
                    ("content-type", wire::NDJSON.to_string()),
                    ("content-encoding", "zstd".to_string()),
                    (wire::HEADER_SEQ_FIRST, seq_first.to_string()),
                    (wire::HEADER_SEQ_LAST, seq_last.to_string()),
                ],
            )
            .await?;
        if status != 200 {
            bail!(
                "collector answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(status)
    }

    /// A PutAuditEvents call; returns the `eventID`s of the accepted events.
    pub async fn put_audit_events(
        &mut self,
        events: &[(String, String)],
    ) -> anyhow::Result<Vec<String>> {
        let body = serde_json::json!({
            "auditEvents": events.iter().map(|(id, data)| serde_json::json!({"id": id, "eventData": data})).collect::<Vec<_>>()
        });
        let path = format!(
            "/PutAuditEvents?channelArn=arn%3Aaws%3Acloudtrail%3Aus-east-1%3A{AGENT_ACCOUNT}%3Achannel%2Fbench"
        );
        let (status, out) = self
            .request(
                "POST",
                &path,
                serde_json::to_vec(&body)?,
                &[("content-type", "application/json".into())],
            )
            .await?;
        let v: serde_json::Value = serde_json::from_slice(&out)
            .with_context(|| format!("PutAuditEvents answer {status}"))?;
        if status != 200 {
            bail!("PutAuditEvents {status}: {v}");
        }
        if let Some(f) = v["failed"].as_array().filter(|f| !f.is_empty()) {
            bail!("PutAuditEvents failed events: {}", f[0]);
        }
        Ok(v["successful"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s["eventID"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// ndjson of `records`, zstd level 3 (what the agent's shipper sends).
pub fn zstd_batch(records: &[Vec<u8>]) -> Vec<u8> {
    let mut nd = Vec::with_capacity(records.iter().map(|r| r.len() + 1).sum());
    for r in records {
        nd.extend_from_slice(r);
        nd.push(b'\n');
    }
    zstd::encode_all(nd.as_slice(), 3).expect("zstd")
}

/// Delivered log files (not digests, metadata or temporary files) under a local destination.
pub fn log_files(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if let Some(name) = p.file_name().and_then(|n| n.to_str())
                && name.ends_with(".json.gz")
                && !name.contains(".gt-tmp-")
                && !name.contains("CloudTrail-Digest")
                && p.components().any(|c| c.as_os_str() == "CloudTrail")
            {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out.sort();
    out
}

/// The `eventID`s in one delivered log file.
pub fn file_event_ids(path: &Path) -> anyhow::Result<Vec<String>> {
    let gz = std::fs::read(path)?;
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice()).read_to_end(&mut json)?;
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(rename = "Records")]
        records: Vec<Rec>,
    }
    #[derive(serde::Deserialize)]
    struct Rec {
        #[serde(rename = "eventID")]
        event_id: String,
    }
    let f: File = serde_json::from_slice(&json)?;
    Ok(f.records.into_iter().map(|r| r.event_id).collect())
}

/// Every `eventID` delivered under `root`.
pub fn delivered_ids(root: &Path) -> anyhow::Result<std::collections::HashSet<String>> {
    let mut ids = std::collections::HashSet::new();
    for f in log_files(root) {
        ids.extend(file_event_ids(&f)?);
    }
    Ok(ids)
}

/// `p` (0..=1) of sorted values.
pub fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}
