//! Wiring: opens the buffer, starts the shipper, the local endpoints and the sources, and stops
//! them in an order that loses nothing.
//!
//! Start: buffer -> shipper and control socket (so a full buffer can drain) -> `AgentStart`
//! record -> the inputs in `sources::registry::REGISTRY`'s order: the app-events endpoint, the
//! host sources, the sidecar (each endpoint bound before the next input starts; a taken port
//! or a live socket fails the start) -> `READY=1`.
//! Stop (SIGTERM/SIGINT): sources and endpoints stop taking input -> `AgentStop` record -> the
//! shipper drains for at most `drain_timeout_ms` -> buffer flushed and closed. Whatever is not
//! shipped stays in the buffer for the next start.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use groundtrail_common::shutdown::Shutdown;
use serde_json::json;
use tokio::sync::broadcast;

use crate::buffer::{Appended, Buffer, BufferError};
use crate::control::Control;
use crate::http_util;
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::shipper::{Shipper, ShipperOptions};
use crate::sink::RecordSink;
use crate::sources;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Buffer(#[from] BufferError),
    #[error("collector TLS: {0}")]
    Tls(#[from] groundtrail_common::tls::TlsError),
    #[error("cannot listen on {what}: {source}")]
    Listen {
        what: String,
        source: std::io::Error,
    },
    /// An input could not start (its listener could not be bound).
    #[error(transparent)]
    Input(#[from] sources::registry::StartError),
}

/// Opens the buffer the settings name; its loss records name `settings.identity`.
pub fn open_buffer(
    settings: &Settings,
) -> Result<(Buffer, crate::buffer::OpenReport), RuntimeError> {
    Ok(Buffer::open(
        &settings.buffer_dir(),
        settings.buffer.clone(),
        settings.identity.clone(),
    )?)
}

/// The shipper's options: the settings, and what only a start can add (the TLS files loaded).
fn shipper_options(settings: &Settings) -> Result<ShipperOptions, RuntimeError> {
    let tls = match settings.collector.tls_files() {
        Some(files) => Some(groundtrail_common::tls::client_config(
            files.ca,
            files.identity,
        )?),
        None => None,
    };
    Ok(ShipperOptions {
        urls: settings.collector.urls.clone(),
        tls,
        id: settings.identity.clone(),
        settings: settings.shipper.clone(),
    })
}

/// How often [`release_idle_memory`] looks whether the agent has gone quiet.
const IDLE_CHECK: Duration = Duration::from_secs(2);

/// Hands memory freed after a burst (startup, a backlog, a large batch) back to the system once
/// the agent is quiet: glibc keeps freed heap pages mapped in its arenas, which was a third of
/// the agent's idle RSS. Trims once per quiet period (nothing appended for [`IDLE_CHECK`]), so a
/// busy agent does not pay for page faults on memory it is about to reuse.
async fn release_idle_memory(buffer: Buffer, mut shutdown: Shutdown) {
    let mut last = None;
    let mut trimmed = false;
    loop {
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = tokio::time::sleep(IDLE_CHECK) => {}
        }
        let appended = buffer.appended_total();
        if last != Some(appended) {
            last = Some(appended);
            trimmed = false;
        } else if !trimmed {
            trimmed = true;
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only returns free memory to the system.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }
}

/// Runs the agent until `stop` resolves (with the reason, e.g. the signal's name).
pub async fn run(
    settings: Settings,
    stop: impl Future<Output = &'static str>,
) -> Result<(), RuntimeError> {
    let settings = Arc::new(settings);
    let started = std::time::Instant::now();
    std::fs::create_dir_all(&settings.data_dir).map_err(|source| RuntimeError::DataDir {
        path: settings.data_dir.display().to_string(),
        source,
    })?;
    // The one host identity every component below names records with.
    let id = settings.identity.clone();
    let shipper_opts = shipper_options(&settings)?;
    let (buffer, report) = open_buffer(&settings)?;
    if let Some(q) = &report.quarantined {
        tracing::error!(aside = %q.path, error = %q.error, "the buffer was damaged; moved aside, started fresh, loss recorded in the trail");
    }
    tracing::info!(
        host = %id.host, depth = report.depth, buffer = %settings.buffer_dir().display(),
        collector = %settings.collector.raw_urls().join(", "), "agent starting"
    );
    let metrics = Arc::new(Metrics::default());

    // Input side stops on `input_tx`; the shipper on `ship_tx`, later, after AgentStop.
    let (input_tx, _) = broadcast::channel::<()>(1);
    let (ship_tx, _) = broadcast::channel::<()>(1);
    let (control_tx, _) = broadcast::channel::<()>(1);

    let (resend_tx, resend_rx) = tokio::sync::mpsc::channel(4);
    let shipper =
        Shipper::new(buffer.clone(), shipper_opts, metrics.clone()).with_resend_requests(resend_rx);
    let shipper_task = tokio::spawn(shipper.run(Shutdown::new(ship_tx.subscribe())));

    let control = Arc::new(Control {
        id: id.clone(),
        buffer: buffer.clone(),
        metrics: metrics.clone(),
        started,
        resend: resend_tx,
    });
    let control_path = settings.control.socket.clone();
    let listener = http_util::bind_unix(&control_path, 0o600)
        .await
        .map_err(|source| RuntimeError::Listen {
            what: control_path.display().to_string(),
            source,
        })?;
    let mut control_tasks = vec![tokio::spawn(http_util::serve_unix(
        listener,
        control.clone().handler(false),
        settings.local_http.limits(),
        Shutdown::new(control_tx.subscribe()),
    ))];
    // The TCP addresses bound, for READY=1 (`X_LISTEN_<ROLE>`, see `sd_notify`).
    let mut bound = Vec::new();
    if let Some(addr) = settings.control.metrics_listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| RuntimeError::Listen {
                what: addr.to_string(),
                source,
            })?;
        bound.extend(
            l.local_addr()
                .ok()
                .map(|a| (groundtrail_common::sd_notify::role::METRICS, a)),
        );
        control_tasks.push(tokio::spawn(http_util::serve_tcp(
            l,
            control.clone().handler(true),
            settings.local_http.limits(),
            Shutdown::new(control_tx.subscribe()),
        )));
    }

    let start = id.agent_start(json!({
        "bufferDepth": report.depth,
        "nextSeq": buffer.status().next_seq,
        "collectorUrls": settings.collector.raw_urls(),
        "fullPolicy": buffer.status().full_policy,
        "maxBytes": settings.buffer.max_bytes,
    }));
    match buffer.append(vec![start], None).await {
        Ok(Appended::Dropped(_)) => tracing::warn!("AgentStart dropped: buffer full"),
        Ok(_) => {}
        Err(e) => return Err(e.into()),
    }

    // Every input (PutAuditEvents, the sources, the sidecar) stores through `Fitted`: no
    // record the collector would refuse for its size reaches the buffer.
    let sink: Arc<dyn RecordSink> = Arc::new(crate::sink::Fitted::new(Arc::new(buffer.clone())));
    // The inputs, in the registry's order; every endpoint is bound when this returns.
    let inputs = sources::registry::start_all(
        settings.clone(),
        sink,
        metrics.clone(),
        Shutdown::new(input_tx.subscribe()),
    )
    .await?;
    bound.extend(inputs.listening);
    let mut input_tasks = inputs.tasks;
    input_tasks.push(tokio::spawn(release_idle_memory(
        buffer.clone(),
        Shutdown::new(input_tx.subscribe()),
    )));
    let app_path = &settings.app_events.socket;
    tracing::info!(app_events = %app_path.display(), control = %control_path.display(), "agent running");
    // systemd (Type=notify): ready once every endpoint is bound and the sources run.
    groundtrail_common::sd_notify::ready("running", bound);
    let watchdog = tokio::spawn(watchdog(buffer.clone()));

    let reason = stop.await;
    tracing::info!(reason, "agent stopping");
    groundtrail_common::sd_notify::notify("STOPPING=1\nSTATUS=stopping: flushing the buffer");
    let _ = input_tx.send(());
    let inputs = futures_join(input_tasks);
    if tokio::time::timeout(Duration::from_secs(5), inputs)
        .await
        .is_err()
    {
        tracing::warn!("some sources did not stop within 5 s");
    }

    let st = buffer.status();
    let stop_record = id.agent_stop(json!({
        "reason": reason,
        "bufferDepth": st.depth,
        "lastCommitPoint": st.last_commit_point,
        "uptimeSeconds": started.elapsed().as_secs(),
    }));
    match tokio::time::timeout(
        Duration::from_secs(5),
        buffer.append(vec![stop_record], None),
    )
    .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "cannot record AgentStop"),
        Err(_) => tracing::error!("AgentStop not recorded: the buffer stayed full"),
    }

    let _ = ship_tx.send(());
    let _ = shipper_task.await;
    buffer.close();
    if let Err(e) = buffer.flush() {
        tracing::error!(error = %e, "final buffer flush failed");
    }
    let _ = control_tx.send(());
    futures_join(control_tasks).await;
    let _ = std::fs::remove_file(app_path);
    let _ = std::fs::remove_file(&control_path);
    let st = buffer.status();
    tracing::info!(
        depth = st.depth,
        "agent stopped; buffered records are sent after the next start"
    );
    watchdog.abort();
    Ok(())
}

/// Sends systemd's `WATCHDOG=1` every half `WatchdogSec=` while the runtime runs *and* the
/// buffer's storage is not stuck (buffer invariant 10): sled fails every write after one failed
/// write until the process restarts, so a stuck store stops the pings and systemd restarts the
/// agent. While writes fail, each tick probes the store, so a passing error clears itself.
async fn watchdog(buffer: Buffer) {
    let Some(every) = groundtrail_common::sd_notify::watchdog_interval() else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    let mut stopped = false;
    loop {
        tick.tick().await;
        if buffer.storage_failure().is_some() {
            let b = buffer.clone();
            let _ = tokio::task::spawn_blocking(move || b.probe()).await;
        }
        match buffer.stuck() {
            Some(error) => {
                if !stopped {
                    stopped = true;
                    tracing::error!(%error, "buffer storage is stuck; stopping the systemd watchdog so that systemd restarts the agent");
                    groundtrail_common::sd_notify::notify(&format!(
                        "STATUS=buffer storage failing: {error}"
                    ));
                }
            }
            None => {
                if stopped {
                    stopped = false;
                    tracing::info!("buffer storage works again; watchdog resumed");
                    groundtrail_common::sd_notify::notify("STATUS=running");
                }
                groundtrail_common::sd_notify::notify("WATCHDOG=1");
            }
        }
    }
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}
