//! The command line: `run`, `status`, `resend-set-aside`, `put-audit-events`, `check-config`,
//! `config`, `buffer` (offline tools, in `buffer_tools`).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::http_util;
use crate::settings::Settings;

/// Groundtrail's host agent: captures admin actions and API calls as CloudTrail records,
/// buffers them durably and ships them to the collector.
#[derive(Debug, Parser)]
#[command(name = "groundtrail-agent", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent (until SIGTERM or SIGINT).
    Run {
        /// TOML config file; without it the embedded single-host default is used.
        #[arg(long, env = "GROUNDTRAIL_AGENT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Ask the running agent for its buffer depth, oldest record, commit point and collector
    /// reachability (JSON), or its Prometheus metrics with --metrics.
    Status {
        #[arg(long, env = "GROUNDTRAIL_AGENT_CONFIG")]
        config: Option<PathBuf>,
        /// The control socket (default: from the config).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print the Prometheus metrics instead.
        #[arg(long)]
        metrics: bool,
    },
    /// Ask the running agent to offer the records the collector refused (its side tree) to the
    /// collector again now, e.g. after the collector's limits were changed. Prints what came of
    /// it (JSON); fails if the collector could not be reached.
    ResendSetAside {
        #[arg(long, env = "GROUNDTRAIL_AGENT_CONFIG")]
        config: Option<PathBuf>,
        /// The control socket (default: from the config).
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Send application events through the local agent, like
    /// `aws cloudtrail-data put-audit-events`.
    PutAuditEvents {
        /// `file://events.json` or inline JSON: a list of {"id","eventData","eventDataChecksum"}
        /// or an object {"auditEvents":[...]}.
        #[arg(long)]
        audit_events: String,
        /// Channel ARN recorded with the events (default: the agent's own channel).
        #[arg(long)]
        channel_arn: Option<String>,
        #[arg(long, env = "GROUNDTRAIL_AGENT_CONFIG")]
        config: Option<PathBuf>,
        /// The app-events socket (default: from the config).
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Validate a config file (with the environment overrides applied) and print the
    /// effective configuration; errors name the field.
    CheckConfig {
        #[arg(long, env = "GROUNDTRAIL_AGENT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Inspect, verify or export a buffer offline: a stopped agent's, or one the agent moved
    /// aside as damaged (`<buffer>.quarantined-<time>`).
    ///
    /// Never writes to the buffer: sled has no read-only mode, so the directory is copied to a
    /// private scratch directory under $TMPDIR (removed afterwards) and the copy is opened. A
    /// buffer a running agent holds is refused (the agent's lock on `<buffer>/db`); while the
    /// tool runs it holds a shared lock, so an agent started meanwhile exits with "locked" and
    /// is restarted by its supervisor. A store sled cannot open is salvaged from its raw files.
    /// Exit 0 ok, 1 problems found or records skipped, 2 the buffer cannot be examined.
    Buffer {
        #[command(subcommand)]
        command: crate::buffer_tools::BufferCommand,
    },
    /// Print the configuration reference: `--example` prints a commented example of every
    /// field with its default, generated from the config types.
    Config {
        /// Print the commented example (packaging/config/agent.example.toml).
        #[arg(long)]
        example: bool,
    },
}

/// The settings from `--config`, or the embedded default, with the environment overrides
/// (`GROUNDTRAIL_AGENT__SECTION__FIELD`) applied, validated.
pub fn load_settings(path: Option<&Path>) -> anyhow::Result<Settings> {
    let loaded = Config::load_with_env(path).and_then(Config::validate);
    match path {
        Some(p) => loaded.with_context(|| format!("config {}", p.display())),
        None => loaded.context("embedded default config"),
    }
}

/// `status`: prints what the running agent reports.
pub async fn status(
    config: Option<&Path>,
    socket: Option<&Path>,
    metrics: bool,
) -> anyhow::Result<()> {
    let path = match socket {
        Some(s) => s.to_path_buf(),
        None => load_settings(config)?.control.socket,
    };
    let uri = if metrics { "/metrics" } else { "/status" };
    let (code, body) = http_util::unix_request(&path, http::Method::GET, uri, Bytes::new())
        .await
        .context("asking the agent")?;
    if !code.is_success() {
        bail!(
            "the agent answered {code}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    println!("{}", String::from_utf8_lossy(&body).trim_end());
    Ok(())
}

/// `resend-set-aside`: asks the running agent for a resend round and prints its report. Returns
/// whether the round ran to its end (the collector answered for every record).
pub async fn resend_set_aside(
    config: Option<&Path>,
    socket: Option<&Path>,
) -> anyhow::Result<bool> {
    let path = match socket {
        Some(s) => s.to_path_buf(),
        None => load_settings(config)?.control.socket,
    };
    let (code, body) =
        http_util::unix_request(&path, http::Method::POST, "/resend-set-aside", Bytes::new())
            .await
            .context("asking the agent")?;
    if !code.is_success() {
        bail!(
            "the agent answered {code}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    println!("{}", String::from_utf8_lossy(&body).trim_end());
    let report: crate::shipper::ResendReport =
        serde_json::from_slice(&body).context("the agent's answer")?;
    Ok(report.error.is_none())
}

/// The `--audit-events` argument as a request body.
pub fn audit_events_body(arg: &str) -> anyhow::Result<Vec<u8>> {
    let text = match arg.strip_prefix("file://") {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
        None => arg.to_string(),
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).context("--audit-events is not JSON")?;
    let body = match value {
        serde_json::Value::Array(list) => serde_json::json!({ "auditEvents": list }),
        v @ serde_json::Value::Object(_) if v.get("auditEvents").is_some() => v,
        _ => bail!("--audit-events must be a list of events or an object with auditEvents"),
    };
    Ok(serde_json::to_vec(&body)?)
}

/// `put-audit-events`: posts through the local socket and prints the answer. Returns whether
/// the call was accepted (HTTP 200; individual events may still have failed).
pub async fn put_audit_events(
    audit_events: &str,
    channel_arn: Option<&str>,
    config: Option<&Path>,
    socket: Option<&Path>,
) -> anyhow::Result<bool> {
    let body = audit_events_body(audit_events)?;
    let path = match socket {
        Some(s) => s.to_path_buf(),
        None => load_settings(config)?.app_events.socket,
    };
    let uri = match channel_arn {
        Some(c) => format!(
            "/PutAuditEvents?channelArn={}",
            groundtrail_common::percent::encode(c)
        ),
        None => "/PutAuditEvents".to_string(),
    };
    let (code, answer) =
        http_util::unix_request(&path, http::Method::POST, &uri, Bytes::from(body))
            .await
            .context("sending to the agent")?;
    let pretty = serde_json::from_slice::<serde_json::Value>(&answer)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(&answer).into_owned());
    if code.is_success() {
        println!("{pretty}");
        Ok(true)
    } else {
        eprintln!("{pretty}");
        Ok(false)
    }
}
