//! The benchmark's side of running the real binaries: the collector and agent configs it
//! measures with (mTLS, the generator's accounts, idle sources), a keep-alive HTTP/1 load client
//! for ingest and PutAuditEvents, and reading the delivered trail back. Processes, readiness
//! (port 0, the bound port read from `READY=1`), certificates and the collector's config file
//! are the test kit's (`groundtrail_tests`), shared with the black-box tests.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
pub use groundtrail_tests::{Bins, Exit, Pki, Proc};
use groundtrail_tests::{Dest, ServerTls, Spec, toml_str};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// The release binaries in `dir`, else in the directory of this executable
/// (`target/release/`), logging at [`log_level`].
pub fn find_bins(dir: Option<&Path>) -> anyhow::Result<Bins> {
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .ok_or_else(|| anyhow!("executable has no directory"))?
            .to_path_buf(),
    };
    Bins::in_dir(&dir, &log_level()).context("build the release binaries or pass --bin-dir")
}

/// `RUST_LOG` for the binaries under test: `GROUNDTRAIL_BENCH_LOG`, default `warn`.
fn log_level() -> String {
    std::env::var("GROUNDTRAIL_BENCH_LOG").unwrap_or_else(|_| "warn".into())
}

/// Longest wait for a process to say `READY=1`.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// Longest wait in seconds for one HTTP exchange before the scenario fails (60; 15 under
/// `--quick`).
pub static REQUEST_TIMEOUT_SECS: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(60);

fn q(p: &Path) -> String {
    toml_str(&p.display().to_string())
}

/// The address `ready` names for `role`, or an error naming the process.
fn bound(ready: &groundtrail_tests::Ready, p: &Proc, role: &str) -> anyhow::Result<SocketAddr> {
    ready.get(role).ok_or_else(|| {
        anyhow!(
            "{}'s READY=1 named no {role} listener; log:\n{}",
            p.name,
            p.log_tail()
        )
    })
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
/// collector unless it is there already). Ready once it says `READY=1` (in cluster mode: once
/// it is connected to NATS), on the port it reports.
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
    let accounts: Vec<String> = crate::generator::ACCOUNTS
        .iter()
        .map(|a| a.to_string())
        .collect();
    let (cert, key) = pki.server();
    let mut spec = Spec::new(Dest::Local {
        path: trail.to_path_buf(),
        bucket: "bench-trail".into(),
    });
    spec.log_file_interval = log_file_interval.into();
    spec.digest_interval = "1h".into();
    spec.tls = Some(ServerTls {
        cert,
        key,
        client_ca: Some(pki.ca()),
    });
    spec.server = vec!["shutdown_grace = \"600s\"".into()];
    spec.trail_name = "bench".into();
    spec.account = crate::generator::ACCOUNTS[0].into();
    spec.agents = agents
        .iter()
        .map(|a| (a.clone(), accounts.clone(), vec![]))
        .collect();
    spec.extra_toml = extra.into();
    let config = dir.join("collector.toml");
    std::fs::write(&config, spec.toml(dir, "127.0.0.1:0"))?;
    let mut cmd = Command::new(&bins.collector);
    cmd.arg("serve")
        .arg("--config")
        .arg(&config)
        .current_dir(dir)
        .env("RUST_LOG", &bins.rust_log);
    let (proc, ready) =
        Proc::start_ready("collector", cmd, &dir.join("collector.log"), READY_WITHIN).await?;
    let addr = bound(&ready, &proc, groundtrail_common::sd_notify::role::INGEST)?;
    Ok(Collector {
        proc,
        addr,
        trail: trail.to_path_buf(),
    })
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
/// watch and stay idle), PutAuditEvents and metrics on loopback HTTP (port 0, read from its
/// `READY=1`), and default buffer and shipper settings.
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
    let t = format!(
        "[agent]\nhost = {host}\naccount_id = \"{AGENT_ACCOUNT}\"\nregion = \"us-east-1\"\ndata_dir = {data}\n\n\
         [collector]\nurls = [\"https://localhost:{port}\"]\nca = {ca}\nclient_cert = {cert}\nclient_key = {key}\n\n\
         [app_events]\nhttp_listen = \"127.0.0.1:0\"\n\n\
         [control]\nmetrics_listen = \"127.0.0.1:0\"\n\n\
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
        .env("RUST_LOG", &bins.rust_log);
    let (proc, ready) =
        Proc::start_ready("agent", cmd, &dir.join("agent.log"), READY_WITHIN).await?;
    Ok(Agent {
        app_addr: bound(
            &ready,
            &proc,
            groundtrail_common::sd_notify::role::APP_EVENTS,
        )?,
        metrics_addr: bound(&ready, &proc, groundtrail_common::sd_notify::role::METRICS)?,
        proc,
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
    zstd::encode_all(ndjson(records).as_slice(), 3).expect("zstd")
}

/// `records`, each followed by a newline: the body of a batch, and of an agent's chunk.
pub fn ndjson<R: AsRef<[u8]>>(records: &[R]) -> Vec<u8> {
    let mut nd = Vec::with_capacity(records.iter().map(|r| r.as_ref().len() + 1).sum());
    for r in records {
        nd.extend_from_slice(r.as_ref());
        nd.push(b'\n');
    }
    nd
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
