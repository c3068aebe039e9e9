//! The host sources the agent runs, as one list.
//!
//! A source is a module that parses one kind of host activity and a [`Source`] that starts it
//! from its `[sources.<name>]` table. Adding one is that module, its table in
//! [`super::SourcesConfig`], and a line in [`REGISTRY`]: the start-up, the per-source line
//! counters in `/metrics` and `groundtrail-agent status`, and the generated config example all
//! follow from those (a test below fails when the registry and the config disagree).

use std::path::PathBuf;
use std::sync::Arc;

use groundtrail_common::shutdown::Shutdown;
use tokio::task::JoinHandle;

use super::{
    Env, SourceStats, SourcesConfig, auditd, auth_log, fim, journald, packages, spawn_file,
};
use crate::sink::RecordSink;
use crate::tail::{LineHandler, TailOptions};

/// What every source is started with.
pub struct Start {
    /// The host, its identity builder, uid names and time zone.
    pub env: Arc<Env>,
    /// Where records go (the buffer, through the size fitter).
    pub sink: Arc<dyn RecordSink>,
    /// Fires when the agent's inputs stop.
    pub shutdown: Shutdown,
}

/// A host source.
pub trait Source: Sync {
    /// Its name: its `[sources.<name>]` table and its `source` label in metrics.
    fn name(&self) -> &'static str;
    /// Its line counters.
    fn stats(&self) -> &'static SourceStats;
    /// Starts its tasks when its table enables it (none otherwise). A missing or unreadable
    /// input is reported and waited for by the task; it never fails the start.
    fn spawn(&self, config: &SourcesConfig, start: &Start) -> Vec<JoinHandle<()>>;
}

/// Every host source, in the order they start.
pub static REGISTRY: [&dyn Source; 5] = [&AuthLog, &Journald, &Auditd, &Packages, &Fim];

/// Follows one file with `handler` (a file source's one task), keyed `<name>:<path>`.
fn follow(
    start: &Start,
    name: &str,
    path: PathBuf,
    start_at_end: bool,
    handler: Box<dyn LineHandler>,
) -> Vec<JoinHandle<()>> {
    let opts = TailOptions {
        start_at_end,
        ..TailOptions::default()
    };
    vec![spawn_file(
        format!("{name}:{}", path.display()),
        path,
        start.env.host.host.clone(),
        start.sink.clone(),
        start.shutdown.clone(),
        opts,
        handler,
    )]
}

struct AuthLog;
impl Source for AuthLog {
    fn name(&self) -> &'static str {
        "auth_log"
    }
    fn stats(&self) -> &'static SourceStats {
        &auth_log::STATS
    }
    fn spawn(&self, config: &SourcesConfig, start: &Start) -> Vec<JoinHandle<()>> {
        let c = &config.auth_log;
        if !c.enabled {
            return Vec::new();
        }
        let path = c.resolved_path();
        let handler = auth_log::handler(start.env.clone(), &path);
        follow(start, self.name(), path, c.start_at_end, handler)
    }
}

struct Auditd;
impl Source for Auditd {
    fn name(&self) -> &'static str {
        "auditd"
    }
    fn stats(&self) -> &'static SourceStats {
        &auditd::STATS
    }
    fn spawn(&self, config: &SourcesConfig, start: &Start) -> Vec<JoinHandle<()>> {
        let c = &config.auditd;
        if !c.enabled {
            return Vec::new();
        }
        let handler = Box::new(auditd::AuditHandler::new(start.env.clone(), c.execve));
        follow(start, self.name(), c.path.clone(), c.start_at_end, handler)
    }
}

struct Packages;
impl Source for Packages {
    fn name(&self) -> &'static str {
        "packages"
    }
    fn stats(&self) -> &'static SourceStats {
        &packages::STATS
    }
    fn spawn(&self, config: &SourcesConfig, start: &Start) -> Vec<JoinHandle<()>> {
        if !config.packages.enabled {
            return Vec::new();
        }
        packages::spawn(
            &config.packages,
            start.env.clone(),
            start.sink.clone(),
            start.shutdown.clone(),
        )
    }
}

struct Fim;
impl Source for Fim {
    fn name(&self) -> &'static str {
        "fim"
    }
    fn stats(&self) -> &'static SourceStats {
        &fim::STATS
    }
    fn spawn(&self, config: &SourcesConfig, start: &Start) -> Vec<JoinHandle<()>> {
        if !config.fim.enabled {
            return Vec::new();
        }
        vec![fim::spawn(
            config.fim.clone(),
            start.env.clone(),
            start.sink.clone(),
            start.shutdown.clone(),
        )]
    }
}

struct Journald;
impl Source for Journald {
    fn name(&self) -> &'static str {
        "journald"
    }
    fn stats(&self) -> &'static SourceStats {
        &journald::STATS
    }
    fn spawn(&self, config: &SourcesConfig, start: &Start) -> Vec<JoinHandle<()>> {
        if !config.journald.enabled {
            return Vec::new();
        }
        vec![journald::spawn(
            config.journald.clone(),
            start.env.clone(),
            start.sink.clone(),
            start.shutdown.clone(),
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `[sources.<name>]` table is a registered source and every registered source has
    /// a table (the two settings every source shares aside), so neither can be added alone.
    #[test]
    fn the_registry_and_the_config_name_the_same_sources() {
        let value = toml::Value::try_from(SourcesConfig::default()).unwrap();
        let mut tables: Vec<&str> = value
            .as_table()
            .unwrap()
            .iter()
            .filter(|(_, v)| v.is_table())
            .map(|(k, _)| k.as_str())
            .collect();
        let mut names: Vec<&str> = REGISTRY.iter().map(|s| s.name()).collect();
        tables.sort();
        names.sort();
        assert_eq!(tables, names);
        let stats: std::collections::HashSet<*const SourceStats> =
            REGISTRY.iter().map(|s| s.stats() as *const _).collect();
        assert_eq!(
            stats.len(),
            REGISTRY.len(),
            "each source counts its own lines"
        );
    }
}
