//! A `groundtrail-collector serve` under test: its config written from a [`Spec`], started,
//! ready when it says so, stopped, frozen or killed, and asked for its metrics.
//!
//! The ingest port is kept across restarts ([`Collector::spawn`]), so that agents configured
//! with [`Collector::addr`] still reach it; a port the kernel chose for port 0 could be taken by
//! another test's port-0 bind or connection while the collector is stopped, and those agents
//! would then ship to the wrong collector. So it is a [`crate::free_port`], below the kernel's
//! ephemeral range where no port-0 bind lands, and the collector's `READY=1` confirms it
//! ([`Collector::addr`] is what it reports).
//!
//! An `[api] listen = "127.0.0.1:0"` in [`Spec::extra_toml`] is not pinned: each start reports
//! its own port in [`Collector::api_addr`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use crate::collector_config::Spec;
use crate::env::Bins;
use crate::ingest::{IngestClient, http_get_addr};
use crate::process::Proc;
use crate::readiness::Ready;
use crate::{DEADLINE, SigningKey};

/// A running (or stopped) `groundtrail-collector serve`.
pub struct Collector {
    pub dir: PathBuf,
    pub config_path: PathBuf,
    /// The ingest listener (`[server] listen`).
    pub addr: SocketAddr,
    /// `[api] listen`, when the config has one.
    pub api_addr: Option<SocketAddr>,
    pub spec: Spec,
    bins: Bins,
    log_path: PathBuf,
    proc: Option<Proc>,
}

impl Collector {
    /// Writes a config under `dir` (journal and signing key live there too), starts the
    /// tests' collector and waits until it is ready.
    pub async fn start(dir: &Path, spec: Spec) -> Collector {
        Collector::start_with(&Bins::for_tests(), dir, spec)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// [`Collector::start`] with the binary of `bins`; an error (with the log) if it does not
    /// become ready.
    pub async fn start_with(bins: &Bins, dir: &Path, spec: Spec) -> anyhow::Result<Collector> {
        std::fs::create_dir_all(dir)?;
        let config_path = dir.join("collector.toml");
        // Kept across restarts (see the module doc).
        let ingest = format!("127.0.0.1:{}", crate::free_port());
        std::fs::write(&config_path, spec.toml(dir, &ingest))?;
        let mut c = Collector {
            dir: dir.to_path_buf(),
            config_path,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_addr: None,
            spec,
            bins: bins.clone(),
            log_path: dir.join("collector.log"),
            proc: None,
        };
        c.try_spawn().await?;
        anyhow::ensure!(
            c.addr.to_string() == ingest,
            "the collector reports {} for ingest, configured {ingest}",
            c.addr
        );
        Ok(c)
    }

    /// Starts the process again with the same config (after [`Collector::kill9`] or
    /// [`Collector::sigterm`]) and waits until it is ready.
    pub async fn spawn(&mut self) {
        self.try_spawn().await.unwrap_or_else(|e| panic!("{e:#}"));
    }

    async fn try_spawn(&mut self) -> anyhow::Result<Ready> {
        anyhow::ensure!(self.proc.is_none(), "collector already running");
        let mut cmd = Command::new(&self.bins.collector);
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .current_dir(&self.dir)
            .env("RUST_LOG", &self.bins.rust_log)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE");
        let (proc, ready) = Proc::start_ready("collector", cmd, &self.log_path, DEADLINE).await?;
        self.addr = ready.addr(groundtrail_common::sd_notify::role::INGEST);
        self.api_addr = ready.get(groundtrail_common::sd_notify::role::API);
        self.proc = Some(proc);
        Ok(ready)
    }

    /// The collector's combined stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    /// SIGTERM, then wait for the exit (the collector delivers open files and writes a final
    /// digest first).
    pub async fn sigterm(&mut self) -> ExitStatus {
        let mut p = self.proc.take().expect("collector is running");
        p.sigterm(DEADLINE)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Whether this collector has a process (started and not killed; it may be frozen).
    pub fn has_process(&self) -> bool {
        self.proc.is_some()
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

    /// SIGHUP (the collector reloads its detection rules).
    pub fn sighup(&self) {
        self.signal(libc::SIGHUP);
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(p) = &self.proc {
            p.signal(sig);
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(Proc::is_running)
    }

    /// The value of an unlabelled metric on `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> u64 {
        let text = self.http_get("/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }

    /// The PKCS#1 DER public key of the collector's signing key.
    pub fn public_key(&self) -> SigningKey {
        SigningKey::load(&self.dir.join("signing-key.pem")).expect("collector signing key")
    }

    /// `GET <path>` on the collector's listener (plain HTTP); the body.
    pub async fn http_get(&self, path: &str) -> String {
        http_get_addr(self.addr, path).await
    }

    /// A plain-HTTP ingest client for this collector.
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
