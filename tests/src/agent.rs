//! A `groundtrail-agent run` under test: the head of its config, the process, ready when it
//! says `READY=1` (its local TCP listeners configured on port 0 are read from there,
//! [`AgentProcess::addr`]), its `status` and metrics, and its stop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::collector_config::toml_str;
use crate::env::Bins;
use crate::process::Proc;
use crate::readiness::Ready;
use crate::{ACCOUNT, DEADLINE, REGION};

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
    bins: Bins,
    ready: Ready,
    proc: Option<Proc>,
}

impl AgentProcess {
    /// Writes `config_text` to `dir/agent.toml`, starts the tests' agent and waits until it is
    /// ready.
    pub async fn start(dir: &Path, config_text: &str) -> AgentProcess {
        AgentProcess::start_with_env(dir, config_text, &[]).await
    }

    /// [`AgentProcess::start`] with extra environment variables for the agent process (kept
    /// for every later [`AgentProcess::spawn`]). A `NOTIFY_SOCKET` of the caller's own is
    /// honoured: readiness is then the control socket answering `status`, and
    /// [`AgentProcess::addr`] knows nothing.
    pub async fn start_with_env(
        dir: &Path,
        config_text: &str,
        env: &[(&str, &str)],
    ) -> AgentProcess {
        AgentProcess::start_with(&Bins::for_tests(), dir, config_text, env)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// [`AgentProcess::start_with_env`] with the binary of `bins`, and an error instead of a
    /// panic.
    pub async fn start_with(
        bins: &Bins,
        dir: &Path,
        config_text: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<AgentProcess> {
        std::fs::create_dir_all(dir)?;
        let config_path = dir.join("agent.toml");
        std::fs::write(&config_path, config_text)?;
        let mut a = AgentProcess {
            dir: dir.to_path_buf(),
            config_path,
            log_path: dir.join("agent.log"),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            bins: bins.clone(),
            ready: Ready::default(),
            proc: None,
        };
        a.try_spawn().await?;
        Ok(a)
    }

    /// Starts the process again with the same config and waits until it is ready. Listeners
    /// on port 0 get new ports: read them again with [`AgentProcess::addr`].
    pub async fn spawn(&mut self) {
        self.try_spawn().await.unwrap_or_else(|e| panic!("{e:#}"));
    }

    async fn try_spawn(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.proc.is_none(), "agent already running");
        let mut cmd = Command::new(&self.bins.agent);
        cmd.args(["run", "--config"])
            .arg(&self.config_path)
            .current_dir(&self.dir)
            .env("RUST_LOG", &self.bins.rust_log)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        if self.env.iter().any(|(k, _)| k == "NOTIFY_SOCKET") {
            self.proc = Some(Proc::spawn("agent", cmd, &self.log_path)?);
            self.ready = Ready::default();
            return self.wait_status().await;
        }
        let (proc, ready) = Proc::start_ready("agent", cmd, &self.log_path, DEADLINE).await?;
        self.proc = Some(proc);
        self.ready = ready;
        Ok(())
    }

    /// Waits until the control socket answers `status` (readiness when the caller owns the
    /// `NOTIFY_SOCKET`).
    async fn wait_status(&mut self) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if self.cli_handle().output(&["status"]).await.is_some() {
                return Ok(());
            }
            let p = self.proc.as_mut().expect("spawned");
            if !p.is_running() {
                self.proc = None;
                anyhow::bail!("agent exited; log:\n{}", self.log());
            }
            anyhow::ensure!(
                start.elapsed() < DEADLINE,
                "agent not answering; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The address the running agent bound for `role` (`METRICS`, `APP_EVENTS`, `SIDECAR`),
    /// as its `READY=1` said; panics when it named none.
    pub fn addr(&self, role: &str) -> SocketAddr {
        self.ready.addr(role)
    }

    /// The agent's command line against this agent's config, to keep or clone into tasks.
    pub fn cli_handle(&self) -> AgentCli {
        AgentCli {
            bin: self.bins.agent.clone(),
            dir: self.dir.clone(),
            config_path: self.config_path.clone(),
            log_path: self.log_path.clone(),
        }
    }

    /// [`AgentCli::json`] of this agent.
    pub async fn cli(&self, args: &[&str]) -> Option<Value> {
        self.cli_handle().json(args).await
    }

    /// The agent's combined stdout and stderr so far.
    pub fn log(&self) -> String {
        self.cli_handle().log()
    }

    /// [`AgentCli::status`] of this agent.
    pub fn status(&self) -> Value {
        self.cli_handle().status()
    }

    /// [`AgentCli::metrics`] of this agent.
    pub fn metrics(&self) -> String {
        self.cli_handle().metrics()
    }

    /// SIGTERM, then wait for a successful exit (the agent drains to the collector first).
    pub async fn sigterm(&mut self) {
        let mut p = self.proc.take().expect("agent is running");
        let status = p
            .sigterm(DEADLINE)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(
            status.success(),
            "agent exit {status}; log:\n{}",
            self.log()
        );
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `groundtrail-agent <command> --config <config>` for one agent: every way the tests run the
/// agent's command line goes through here, so the command's shape, the success check and the
/// failure message (with the agent's log) are the same everywhere. Cheap to clone into tasks,
/// and usable while the agent is stopped.
#[derive(Clone, Debug)]
pub struct AgentCli {
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
}

impl AgentCli {
    /// The command `groundtrail-agent <args> --config <config>`, run from the agent's
    /// directory with no stdin: the one shape every run below has.
    fn std_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.current_dir(&self.dir)
            .args(args)
            .arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::null());
        c
    }

    /// [`AgentCli::std_command`] for the runtime, for callers that add arguments or read
    /// stderr themselves.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        self.std_command(args).into()
    }

    /// Runs the command without blocking the runtime: its stdout if it succeeded.
    pub async fn output(&self, args: &[&str]) -> Option<Vec<u8>> {
        let out = self.command(args).output().await.ok()?;
        out.status.success().then_some(out.stdout)
    }

    /// [`AgentCli::output`] read as JSON.
    pub async fn json(&self, args: &[&str]) -> Option<Value> {
        serde_json::from_slice(&self.output(args).await?).ok()
    }

    /// The agent's combined stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `groundtrail-agent status` (JSON), which must succeed.
    pub fn status(&self) -> Value {
        serde_json::from_slice(&self.status_output(&[])).expect("status is JSON")
    }

    /// `groundtrail-agent status --metrics` (the Prometheus text), which must succeed.
    pub fn metrics(&self) -> String {
        String::from_utf8_lossy(&self.status_output(&["--metrics"])).into_owned()
    }

    /// The stdout of `groundtrail-agent status <args> --config <config>`, which must succeed.
    /// Blocking: the callers are the tests' synchronous checks.
    fn status_output(&self, args: &[&str]) -> Vec<u8> {
        let args: Vec<&str> = ["status"].iter().chain(args).copied().collect();
        let what = args.join(" ");
        let out = self
            .std_command(&args)
            .output()
            .unwrap_or_else(|e| panic!("run groundtrail-agent {what}: {e}"));
        assert!(
            out.status.success(),
            "{what} failed: {}; log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        out.stdout
    }
}
