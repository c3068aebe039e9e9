//! A process under test: started with its output appended to a log file and a `NOTIFY_SOCKET`
//! of its own, ready when it says `READY=1` ([`crate::readiness`]), and never outliving the
//! test: dropping a [`Proc`] kills and reaps it.
//!
//! Stopping it is SIGTERM and a wait for the exit, either polled on the async runtime
//! ([`Proc::sigterm`], the tests) or reaped with `wait4(2)` to read the process's whole CPU time
//! ([`Proc::terminate`], the benchmark).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

use crate::readiness::{Readiness, Ready};

/// A child process we own.
pub struct Proc {
    pub name: String,
    pub pid: u32,
    pub log: PathBuf,
    child: Option<Child>,
}

/// How a process ended ([`Proc::terminate`]).
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    pub code: i32,
    /// Total user + system CPU seconds of the process's whole life (`wait4` rusage).
    pub cpu_seconds: f64,
}

impl Proc {
    /// Starts `cmd` with stdin closed and stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Proc> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("{name} log {}", log.display()))?;
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
            log: log.to_path_buf(),
        })
    }

    /// [`Proc::spawn`] with a fresh `NOTIFY_SOCKET`, then waits up to `limit` for `READY=1`
    /// and returns what it named. An exit before it, or no readiness in time, is an error with
    /// the log (the process is killed then).
    pub async fn start_ready(
        name: &str,
        mut cmd: Command,
        log: &Path,
        limit: Duration,
    ) -> anyhow::Result<(Proc, Ready)> {
        let mut readiness = Readiness::new();
        cmd.env("NOTIFY_SOCKET", &readiness.path);
        let mut p = Proc::spawn(name, cmd, log)?;
        let start = Instant::now();
        loop {
            if let Some(ready) = readiness.poll() {
                return Ok((p, ready.clone()));
            }
            if let Some(status) = p.try_exit() {
                bail!(
                    "{name} exited with {status} before it was ready; log:\n{}",
                    p.log_text()
                );
            }
            if start.elapsed() > limit {
                p.kill9();
                bail!("{name} not ready within {limit:?}; log:\n{}", p.log_text());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process's combined stdout and stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 20 lines of [`Proc::log_text`].
    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The exit status, once it has exited (reaped, so the pid is gone).
    fn try_exit(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }

    /// Whether the process still runs (not exited, not killed; it may be stopped).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Sends `sig` while the process is ours (not reaped).
    pub fn signal(&self, sig: libc::c_int) {
        if self.child.is_some() {
            // SAFETY: kill(2) with the pid of a child we own and have not reaped.
            unsafe {
                libc::kill(self.pid as libc::pid_t, sig);
            }
        }
    }

    /// SIGKILL, and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then the exit status, polled on the runtime; past `limit` the process is
    /// killed and reaped and the error carries its log.
    pub async fn sigterm(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("{} is not running", self.name))?;
        sigterm_within(child, &self.name, limit, &|| self.log_text()).await
    }

    /// SIGTERM, then wait up to `limit` for the exit, blocking; reaps with `wait4` to read the
    /// process's CPU time. Past `limit` it is killed and reaped, and the error has its log.
    pub fn terminate(&mut self, limit: Duration) -> anyhow::Result<Exit> {
        let child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("{} is not running", self.name))?;
        let pid = child.id() as libc::pid_t;
        // The pid is reaped by wait4 below, not by `Child`: forget it so nothing waits twice.
        std::mem::forget(child);
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
                return Ok(Exit {
                    code,
                    cpu_seconds: secs(usage.ru_utime) + secs(usage.ru_stime),
                });
            }
            if r < 0 {
                bail!("wait4 {}: {}", self.name, std::io::Error::last_os_error());
            }
            if start.elapsed() > limit {
                // SAFETY: as above.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::wait4(pid, &mut status, 0, &mut usage);
                }
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

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Sends SIGTERM to `child` and waits up to `limit` for it to exit, polling; past it the child
/// is killed and reaped before the error, so no stray process outlives the test. `log` supplies
/// the process's output for the error message.
async fn sigterm_within(
    mut child: Child,
    what: &str,
    limit: Duration,
    log: &dyn Fn() -> String,
) -> anyhow::Result<ExitStatus> {
    // SAFETY: kill(2) on the pid of a child we own and have not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not exit after SIGTERM; log:\n{}", log());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
