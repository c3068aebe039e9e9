//! Every input the agent runs, as one list: the PutAuditEvents endpoint, the host sources and
//! the sidecar.
//!
//! An input is a module that turns one kind of activity into records and a [`Source`] that
//! starts it from its settings. There are two kinds ([`Kind`]): a *host source* reads host
//! activity (log files, the journal, `/etc`), is set up by `[sources.<name>]` and counts its
//! lines in a [`SourceStats`]; an *endpoint* serves callers on a socket or a port (application
//! events, the sidecar), is set up by a section of its own (`[<name>]`) and counts in
//! [`Metrics`] (application events) or statics of its own (the sidecar). Adding an input is its module, its table, and a [`Source`] here with a line in
//! [`REGISTRY`]: the start-up, the per-source line counters in `/metrics` and `groundtrail-agent
//! status`, and the generated config example all follow from those (a test below fails when the
//! registry and the config disagree).
//!
//! **Guarantee: a start that returns has every listener bound.** An endpoint binds its socket
//! or port in [`Source::start`], before its task is spawned, so a taken port or a live socket
//! fails the agent's start ([`StartError`]) instead of becoming a log line while the agent
//! reports itself ready. A host source never fails the start: a missing or unreadable input is
//! reported and waited for by its task.
//!
//! The inputs start in the registry's order, the one `runtime` states: application events, the
//! host sources, the sidecar.

use std::path::PathBuf;
use std::sync::Arc;

use groundtrail_common::shutdown::Shutdown;
use tokio::task::JoinHandle;

use super::app_events::{AppEvents, Converter};
use super::host_accounts::Passwd;
use super::{Env, SourceStats, Zone, auditd, auth_log, fim, journald, packages, spawn_file};
use crate::http_util;
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::sink::{BoxFuture, RecordSink};
use crate::sources::tail::{LineHandler, TailOptions};

/// What every input is started with.
pub struct Start {
    /// The validated settings; each input reads its own section.
    pub settings: Arc<Settings>,
    /// The host, its identity builder, uid names and time zone (for the host sources' parsers).
    pub env: Arc<Env>,
    /// Where records go (the buffer, through the size fitter).
    pub sink: Arc<dyn RecordSink>,
    /// The agent's counters (the endpoints count their calls there).
    pub metrics: Arc<Metrics>,
    /// Fires when the agent's inputs stop.
    pub shutdown: Shutdown,
    /// The TCP addresses the endpoints bound, by role (`APP_EVENTS`, `SIDECAR`): `READY=1`
    /// names them, so a configured port 0 can be found (see `groundtrail_common::sd_notify`).
    listening: std::sync::Mutex<Vec<(&'static str, std::net::SocketAddr)>>,
}

impl Start {
    /// Binds `addr` for the endpoint `role` (`what` names it in the error) and notes the
    /// address bound for `READY=1`, so no endpoint can listen without reporting it.
    async fn bind_tcp(
        &self,
        role: &'static str,
        addr: std::net::SocketAddr,
        what: String,
    ) -> Result<tokio::net::TcpListener, StartError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Listen { what, source })?;
        if let Ok(bound) = listener.local_addr() {
            self.listening
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((role, bound));
        }
        Ok(listener)
    }
}

/// What [`start_all`] started.
pub struct Started {
    /// Every input's tasks.
    pub tasks: Vec<JoinHandle<()>>,
    /// The TCP addresses the endpoints bound, by role.
    pub listening: Vec<(&'static str, std::net::SocketAddr)>,
}

/// Why an input could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Its socket or port could not be bound (taken, or a live socket of another process).
    #[error("cannot listen on {what}: {source}")]
    Listen {
        what: String,
        source: std::io::Error,
    },
}

/// A [`Source::start`] under way: its tasks once they are spawned (and its listeners bound).
pub type Starting<'a> = BoxFuture<'a, Result<Vec<JoinHandle<()>>, StartError>>;

/// Which kind of input a [`Source`] is (see the module docs).
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Reads host activity; set up by `[sources.<name>]`; counts its lines here.
    Host(&'static SourceStats),
    /// Serves callers on a socket or a port; set up by its own `[<name>]` section.
    Endpoint,
}

/// An input.
pub trait Source: Sync {
    /// Its name: its config table (and a host source's `source` label in metrics).
    fn name(&self) -> &'static str;
    /// A host source (and its line counters) or an endpoint.
    fn kind(&self) -> Kind;
    /// Starts its tasks when its settings enable it (none otherwise). An endpoint has bound its
    /// listeners when this returns; a host source's missing or unreadable input is reported and
    /// waited for by its task, it never fails the start.
    fn start<'a>(&'a self, start: &'a Start) -> Starting<'a>;
}

/// Every input, in the order they start.
pub static REGISTRY: [&dyn Source; 7] = [
    &AppEventsEndpoint,
    &AuthLog,
    &Journald,
    &Auditd,
    &Packages,
    &Fim,
    &Sidecar,
];

/// Starts every enabled input of the [`REGISTRY`], in its order. Each task runs until
/// `shutdown` fires. Fails only when an endpoint cannot bind (the tasks already started then
/// stop with the process).
pub async fn start_all(
    settings: Arc<Settings>,
    sink: Arc<dyn RecordSink>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> Result<Started, StartError> {
    let sources = &settings.sources;
    let zone = Zone::parse(&sources.timezone).unwrap_or_else(|| {
        tracing::warn!(timezone = %sources.timezone, "unknown time zone; using local");
        Zone::Local
    });
    let env = Env::new(&settings.identity, Passwd::load(&sources.passwd_path), zone);
    let start = Start {
        env: Arc::new(env),
        settings,
        sink,
        metrics,
        shutdown,
        listening: Default::default(),
    };
    let mut tasks = Vec::new();
    for source in REGISTRY {
        tasks.extend(source.start(&start).await?);
    }
    let listening = start
        .listening
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    Ok(Started { tasks, listening })
}

/// A host source's start: its tasks are spawned, nothing to wait for.
fn started(tasks: Vec<JoinHandle<()>>) -> Starting<'static> {
    Box::pin(std::future::ready(Ok(tasks)))
}

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
    fn kind(&self) -> Kind {
        Kind::Host(&auth_log::STATS)
    }
    fn start<'a>(&'a self, start: &'a Start) -> Starting<'a> {
        let c = &start.settings.sources.auth_log;
        if !c.enabled {
            return started(Vec::new());
        }
        let path = c.resolved_path();
        let handler = auth_log::handler(start.env.clone(), &path);
        started(follow(start, self.name(), path, c.start_at_end, handler))
    }
}

struct Auditd;
impl Source for Auditd {
    fn name(&self) -> &'static str {
        "auditd"
    }
    fn kind(&self) -> Kind {
        Kind::Host(&auditd::STATS)
    }
    fn start<'a>(&'a self, start: &'a Start) -> Starting<'a> {
        let c = &start.settings.sources.auditd;
        if !c.enabled {
            return started(Vec::new());
        }
        let handler = Box::new(auditd::AuditHandler::new(start.env.clone(), c.execve));
        started(follow(
            start,
            self.name(),
            c.path.clone(),
            c.start_at_end,
            handler,
        ))
    }
}

struct Packages;
impl Source for Packages {
    fn name(&self) -> &'static str {
        "packages"
    }
    fn kind(&self) -> Kind {
        Kind::Host(&packages::STATS)
    }
    fn start<'a>(&'a self, start: &'a Start) -> Starting<'a> {
        let c = &start.settings.sources.packages;
        if !c.enabled {
            return started(Vec::new());
        }
        started(packages::spawn(
            c,
            start.env.clone(),
            start.sink.clone(),
            start.shutdown.clone(),
        ))
    }
}

struct Fim;
impl Source for Fim {
    fn name(&self) -> &'static str {
        "fim"
    }
    fn kind(&self) -> Kind {
        Kind::Host(&fim::STATS)
    }
    fn start<'a>(&'a self, start: &'a Start) -> Starting<'a> {
        let c = &start.settings.sources.fim;
        if !c.enabled {
            return started(Vec::new());
        }
        started(vec![fim::spawn(
            c.clone(),
            start.env.clone(),
            start.sink.clone(),
            start.shutdown.clone(),
        )])
    }
}

struct Journald;
impl Source for Journald {
    fn name(&self) -> &'static str {
        "journald"
    }
    fn kind(&self) -> Kind {
        Kind::Host(&journald::STATS)
    }
    fn start<'a>(&'a self, start: &'a Start) -> Starting<'a> {
        let c = &start.settings.sources.journald;
        if !c.enabled {
            return started(Vec::new());
        }
        started(vec![journald::spawn(
            c.clone(),
            start.env.clone(),
            start.sink.clone(),
            start.shutdown.clone(),
        )])
    }
}

/// `PutAuditEvents` for applications ([`super::app_events`]): the Unix socket, and the
/// loopback HTTP listener when `[app_events] http_listen` is set.
struct AppEventsEndpoint;
impl Source for AppEventsEndpoint {
    fn name(&self) -> &'static str {
        "app_events"
    }
    fn kind(&self) -> Kind {
        Kind::Endpoint
    }
    fn start<'a>(&'a self, start: &'a Start) -> Starting<'a> {
        Box::pin(async move {
            let settings = &start.settings;
            let c = &settings.app_events;
            let id = &settings.identity;
            let app = Arc::new(AppEvents {
                converter: Converter { id: id.clone() },
                sink: start.sink.clone(),
                metrics: start.metrics.clone(),
                default_channel: AppEvents::default_channel_for(id),
            });
            let listener = http_util::bind_unix(&c.socket, c.socket_mode)
                .await
                .map_err(|source| StartError::Listen {
                    what: c.socket.display().to_string(),
                    source,
                })?;
            let mut tasks = vec![tokio::spawn(http_util::serve_unix(
                listener,
                app.clone().handler(),
                settings.local_http.limits(),
                start.shutdown.clone(),
            ))];
            if let Some(addr) = c.http_listen {
                let l = start
                    .bind_tcp(
                        groundtrail_common::sd_notify::role::APP_EVENTS,
                        addr,
                        addr.to_string(),
                    )
                    .await?;
                tasks.push(tokio::spawn(http_util::serve_tcp(
                    l,
                    app.handler(),
                    settings.local_http.limits(),
                    start.shutdown.clone(),
                )));
            }
            Ok(tasks)
        })
    }
}

/// The reverse proxy ([`crate::sources::sidecar`]) when `[sidecar]` is set.
struct Sidecar;
impl Source for Sidecar {
    fn name(&self) -> &'static str {
        "sidecar"
    }
    fn kind(&self) -> Kind {
        Kind::Endpoint
    }
    fn start<'a>(&'a self, start: &'a Start) -> Starting<'a> {
        Box::pin(async move {
            let Some(config) = start.settings.sidecar.clone() else {
                return Ok(Vec::new());
            };
            let listener = start
                .bind_tcp(
                    groundtrail_common::sd_notify::role::SIDECAR,
                    config.listen,
                    format!("sidecar {}", config.listen),
                )
                .await?;
            tracing::info!(listen = %config.listen, upstream = %config.upstream, "sidecar proxy running");
            let host = start.settings.identity.clone();
            let (sink, shutdown) = (start.sink.clone(), start.shutdown.clone());
            Ok(vec![tokio::spawn(async move {
                if let Err(e) =
                    crate::sources::sidecar::run(config, host, sink, listener, shutdown).await
                {
                    tracing::error!(error = %e, "sidecar proxy stopped");
                }
            })])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::sources::sidecar::SidecarConfig;

    /// The config's sections that configure the agent's own plumbing rather than an input.
    const PLUMBING: [&str; 7] = [
        "agent",
        "collector",
        "buffer",
        "shipper",
        "control",
        "local_http",
        "sources",
    ];

    /// The tables of a serialized section.
    fn tables(t: &toml::Table) -> Vec<String> {
        let mut names: Vec<String> = t
            .iter()
            .filter(|(_, v)| v.is_table())
            .map(|(k, _)| k.clone())
            .collect();
        names.sort();
        names
    }

    /// Every `[sources.<name>]` table is a registered host source and every registered host
    /// source has one (the two settings every source shares aside); every other section of the
    /// config is either plumbing or a registered endpoint, and every registered endpoint has its
    /// section. So no input can be added in one place only.
    #[test]
    fn the_registry_and_the_config_name_the_same_sources() {
        let mut config = toml::Table::try_from(Config::default()).unwrap();
        // `[sidecar]` is absent by default.
        config.insert(
            "sidecar".into(),
            toml::Value::try_from(SidecarConfig::default()).unwrap(),
        );
        let names = |want_host: bool| -> Vec<String> {
            let mut n: Vec<String> = REGISTRY
                .iter()
                .filter(|s| matches!(s.kind(), Kind::Host(_)) == want_host)
                .map(|s| s.name().to_string())
                .collect();
            n.sort();
            n
        };
        assert_eq!(tables(config["sources"].as_table().unwrap()), names(true));
        let endpoints: Vec<String> = tables(&config)
            .into_iter()
            .filter(|k| !PLUMBING.contains(&k.as_str()))
            .collect();
        assert_eq!(endpoints, names(false));
        let stats: std::collections::HashSet<*const SourceStats> = REGISTRY
            .iter()
            .filter_map(|s| match s.kind() {
                Kind::Host(stats) => Some(stats as *const _),
                Kind::Endpoint => None,
            })
            .collect();
        assert_eq!(
            stats.len(),
            names(true).len(),
            "each source counts its own lines"
        );
    }

    /// The registry's start order is the one runtime.rs states: application events before the
    /// host sources, the sidecar last.
    #[test]
    fn application_events_start_first_and_the_sidecar_last() {
        let order: Vec<&str> = REGISTRY.iter().map(|s| s.name()).collect();
        assert_eq!(order.first(), Some(&"app_events"));
        assert_eq!(order.last(), Some(&"sidecar"));
    }

    /// A taken port fails the start (it is not a log line after "ready"), naming what could
    /// not be bound, and a live socket of another process is not taken over.
    #[tokio::test]
    async fn a_taken_port_or_a_live_socket_fails_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap();
        // Each start in a data directory of its own: the endpoint tasks of a failed start stop
        // in the background and may still hold their socket.
        let start = |data_dir: &str, text: String| {
            let dir = dir.path().join(data_dir);
            async move {
                let mut config = Config::parse(&text, "test").unwrap();
                config.agent.data_dir = dir;
                config.sources.auth_log.enabled = false;
                config.sources.journald.enabled = false;
                config.sources.auditd.enabled = false;
                config.sources.packages.enabled = false;
                config.sources.fim.enabled = false;
                let (_stop, rx) = tokio::sync::broadcast::channel(1);
                start_all(
                    Arc::new(config.validate().unwrap()),
                    crate::sources::tail::MemorySink::new(),
                    Arc::new(Metrics::default()),
                    Shutdown::new(rx),
                )
                .await
                .map(|started| (started.tasks.len(), started.listening))
            }
        };
        let e = start("a", format!("[app_events]\nhttp_listen = \"{port}\"\n"))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&format!("cannot listen on {port}: ")), "{e}");
        let e = start(
            "b",
            format!("[sidecar]\nlisten = \"{port}\"\nupstream = \"http://127.0.0.1:9\"\n"),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(&format!("cannot listen on sidecar {port}: ")),
            "{e}"
        );
        // A live app-events socket (another agent on the same data directory).
        std::fs::create_dir(dir.path().join("c")).unwrap();
        let socket = dir.path().join("c/app-events.sock");
        let _live = tokio::net::UnixListener::bind(&socket).unwrap();
        let e = start("c", String::new()).await.unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "cannot listen on {0}: {0} is in use by a running process",
                socket.display()
            )
        );
        // Nothing in the way: the app-events socket is served (one task).
        assert_eq!(start("d", String::new()).await.unwrap(), (1, Vec::new()));
        // Port 0: the ports the system chose are reported for READY=1, by role.
        let (tasks, listening) = start(
            "e",
            "[app_events]\nhttp_listen = \"127.0.0.1:0\"\n[sidecar]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://127.0.0.1:9\"\n".into(),
        )
        .await
        .unwrap();
        assert_eq!(tasks, 3);
        let roles: Vec<&str> = listening.iter().map(|(r, _)| *r).collect();
        assert_eq!(roles, ["APP_EVENTS", "SIDECAR"]);
        for (role, addr) in listening {
            assert_ne!(addr.port(), 0, "{role}");
            std::net::TcpStream::connect(addr).unwrap();
        }
    }
}
