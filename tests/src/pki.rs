//! Certificates from the collector's own `groundtrail-collector pki`: a CA, the collector's server
//! certificate (localhost and 127.0.0.1) and agent client certificates, as an operator would
//! make them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::bail;

use crate::env::Bins;

/// A CA (`ca.pem`), the server certificate (`server.pem`, `server.key`) and agents'
/// certificates (`agents/<name>.pem`, `.key`) in `dir`.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
    collector_bin: PathBuf,
}

impl Pki {
    /// `groundtrail-collector pki init --dir <dir>`.
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

    /// The server certificate and key.
    pub fn server(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("server.pem"), self.dir.join("server.key"))
    }

    /// Issues `agents/<name>.pem`/`.key` (once) and returns them.
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

/// `groundtrail-collector pki init --dir <dir>/pki` with the tests' binary; returns the pki
/// directory.
pub fn pki_init(dir: &Path) -> PathBuf {
    let pki = dir.join("pki");
    Pki::init(&Bins::for_tests(), &pki).unwrap_or_else(|e| panic!("{e:#}"));
    pki
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
