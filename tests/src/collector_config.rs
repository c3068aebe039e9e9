//! A collector's config as the tests and the benchmark write it: a [`Spec`] (destinations,
//! intervals, TLS, agents, limits and any extra TOML) turned into `collector.toml`, its journal
//! and signing key in the collector's directory. [`Spec::toml`] takes the listen address: the
//! tests' [`crate::Collector`] gives a port it keeps across restarts (its module says why), the
//! benchmark `127.0.0.1:0` (read back from `READY=1`, see [`crate::readiness`]).

use std::path::{Path, PathBuf};

use crate::{ACCOUNT, REGION, TRAIL};

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
    /// Extra TOML lines for `[server]`, e.g. `shutdown_grace = "600s"`.
    pub server: Vec<String>,
    /// `[trail] name` and `account_id` ([`TRAIL`], [`ACCOUNT`] unless changed).
    pub trail_name: String,
    pub account: String,
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
            server: vec![],
            trail_name: TRAIL.into(),
            account: ACCOUNT.into(),
        }
    }

    /// The config text, listening on `listen` (`127.0.0.1:<port>`).
    pub fn toml(&self, dir: &Path, listen: &str) -> String {
        let q = |p: &Path| toml_str(&p.display().to_string());
        let mut t = String::new();
        t += "[server]\n";
        t += &format!("listen = {}\n", toml_str(listen));
        for l in &self.server {
            t += l;
            t += "\n";
        }
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
            "\n[trail]\nname = {}\nhome_region = \"{REGION}\"\naccount_id = {}\nlog_file_interval = \"{}\"\ndigest_interval = \"{}\"\n",
            toml_str(&self.trail_name),
            toml_str(&self.account),
            self.log_file_interval,
            self.digest_interval
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

/// `s` as a TOML basic string (a JSON string is one).
pub fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a JSON string is a TOML basic string")
}
