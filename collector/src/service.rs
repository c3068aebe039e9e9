//! `serve`: wires the journal, ingest, batcher, deliverers and digest writer together, and
//! stops them in the order that loses nothing.
//!
//! Start-up: open the journal, load (or create) the signing key, open every destination,
//! reload pending records into the batcher, then listen. Nothing is sent to a destination
//! at start-up, so a store that is down delays delivery but does not stop the collector.
//!
//! Shutdown (SIGTERM/SIGINT or the test's signal), in order:
//! 1. stop accepting; in-flight requests finish (their records are committed and flushed);
//! 2. the batcher closes every open file (recorded in the journal before any upload);
//! 3. every destination gets everything pending, retrying for up to `[server] shutdown_grace`;
//! 4. a digest is written for every chain with delivered files not yet in a digest, and
//!    delivered the same way;
//! 5. the journal is flushed. What could not be delivered in time stays in the journal and
//!    goes out on the next start.

use std::sync::Arc;
use std::time::Duration;

use groundtrail_common::shutdown::Shutdown;
use groundtrail_common::trail::{SigningKey, TrailLayout};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};

use crate::agents::AgentTracker;
use crate::batcher::Batcher;
use crate::config::Config;
use crate::delivery::Deliverer;
use crate::digest::{DigestTarget, DigestWriter};
use crate::ingest::Ingest;
use crate::journal::{Journal, JournalError};
use crate::keys::{KeyError, load_or_generate};

/// Why `serve` could not start (or stopped uncleanly).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("destination {name}: {why}")]
    Destination { name: String, why: String },
    #[error(transparent)]
    Tls(#[from] groundtrail_common::tls::TlsError),
}

/// Runs the collector on `listener` until `shutdown`, then shuts down as described above.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), ServeError> {
    let journal = Arc::new(Journal::open(&config.journal.path)?);
    let (key, generated) = load_or_generate(&config.signing.key_file)?;
    if generated {
        tracing::warn!(
            path = %config.signing.key_file.display(),
            fingerprint = key.fingerprint(),
            "generated a new digest signing key"
        );
    } else {
        tracing::info!(fingerprint = key.fingerprint(), "digest signing key loaded");
    }
    let key = Arc::new(key);

    let mut destinations = Vec::new();
    for d in config.effective_destinations() {
        let dest = crate::destination::open(&d)
            .await
            .map_err(|e| ServeError::Destination {
                name: d.name(),
                why: format!("{e:#}"),
            })?;
        destinations.push(dest);
    }
    let wakes: Vec<Arc<Notify>> = destinations
        .iter()
        .map(|_| Arc::new(Notify::new()))
        .collect();
    let names: Vec<String> = destinations.iter().map(|d| d.name().to_string()).collect();

    let tls = match (&config.server.tls_cert, &config.server.tls_key) {
        (Some(cert), Some(tls_key)) => Some(tokio_rustls::TlsAcceptor::from(
            groundtrail_common::tls::server_config(
                cert,
                tls_key,
                config.server.client_ca.as_deref(),
            )?,
        )),
        _ => None,
    };

    let layout = TrailLayout::new(
        &config.trail.s3_key_prefix,
        config.trail.organization_id.as_deref(),
    );
    let mut batcher = Batcher::new(
        journal.clone(),
        layout.clone(),
        config.trail.log_file_interval.get(),
        config.trail.log_file_max_bytes,
        names.clone(),
        wakes.clone(),
    );
    let reloaded = journal.pending()?;
    if !reloaded.is_empty() {
        tracing::info!(
            records = reloaded.len(),
            "reloaded pending records from the journal"
        );
        batcher.add(reloaded).await?;
    }
    let (tx, rx) = mpsc::channel(1024);
    let batcher_task = tokio::spawn(batcher.run(rx, shutdown.clone()));

    let deliverers: Vec<Arc<Deliverer>> = destinations
        .iter()
        .zip(&wakes)
        .map(|(d, w)| Arc::new(Deliverer::new(journal.clone(), d.clone(), w.clone())))
        .collect();
    let mut background = Vec::new();
    for d in &deliverers {
        let d = d.clone();
        let s = shutdown.clone();
        background.push(tokio::spawn(async move { d.run(s).await }));
    }
    let digests = Arc::new(DigestWriter::new(
        journal.clone(),
        key.clone(),
        layout,
        config.trail.name.clone(),
        config.trail.home_region.clone(),
        config.trail.digest_interval.get(),
        destinations
            .iter()
            .zip(&wakes)
            .map(|(d, w)| DigestTarget {
                name: d.name().to_string(),
                bucket: d.bucket().to_string(),
                wake: w.clone(),
            })
            .collect(),
    ));
    {
        let digests = digests.clone();
        let s = shutdown.clone();
        background.push(tokio::spawn(async move { digests.run(s).await }));
    }
    background.push(tokio::spawn(expire_dedup(
        journal.clone(),
        config.journal.dedup_window.get(),
        shutdown.clone(),
    )));

    let tracker = Arc::new(AgentTracker::load(
        &journal,
        &config.monitoring.domain,
        config.monitoring.agent_silence.get(),
    )?);
    background.push(tokio::spawn(watch_silence(
        journal.clone(),
        tracker.clone(),
        config.monitoring.agent_silence.get(),
        tx.clone(),
        shutdown.clone(),
    )));

    let ingest = Arc::new(Ingest::new(
        journal.clone(),
        tracker,
        config.limits.clone(),
        &config.agents,
        config.server.client_ca.is_some(),
        tx,
    ));
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        tls = tls.is_some(),
        mtls = config.server.client_ca.is_some(),
        destinations = ?names,
        "collector listening"
    );
    crate::server::run(
        listener,
        ingest.clone(),
        tls,
        config.server.max_connections,
        shutdown,
    )
    .await;

    // 1. No connection is left; drop the last senders so the batcher drains and stops.
    tracing::info!("shutting down: closing open log files");
    drop(ingest);
    for task in background {
        let _ = task.await;
    }
    // 2. Close every open file.
    match batcher_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!("closing log files failed: {e}; their records stay pending"),
        Err(e) => tracing::error!("batcher task failed: {e}"),
    }
    // 3-4. Deliver, write the covering digests, deliver those.
    let deadline = tokio::time::Instant::now() + config.server.shutdown_grace.get();
    let all_files = drain(&deliverers, deadline).await;
    if let Err(e) = digests
        .write_due(groundtrail_common::time::now_secs(), true)
        .await
    {
        tracing::error!("final digest failed: {e}");
    }
    let all_digests = drain(&deliverers, deadline).await;
    journal.flush().await?;
    if all_files && all_digests {
        tracing::info!("shutdown complete: everything delivered");
    } else {
        let (pending, undelivered) = journal.backlog();
        tracing::warn!(
            pending,
            undelivered,
            "shutdown grace ran out; the rest stays in the journal for the next start"
        );
    }
    Ok(())
}

async fn drain(deliverers: &[Arc<Deliverer>], deadline: tokio::time::Instant) -> bool {
    let results =
        futures_util::future::join_all(deliverers.iter().map(|d| d.drain(deadline))).await;
    results.into_iter().all(|ok| ok)
}

/// Forgets `eventID`s older than the dedup window, every tenth of it (at most every minute).
async fn expire_dedup(journal: Arc<Journal>, window: Duration, mut shutdown: Shutdown) {
    let every = (window / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match journal.expire_dedup(groundtrail_common::time::now_secs(), window) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(expired = n, "dedup index pruned"),
            Err(e) => tracing::error!("dedup expiry: {e}"),
        }
    }
}

/// Writes `AgentSilent` records for agents silent too long.
async fn watch_silence(
    journal: Arc<Journal>,
    tracker: Arc<AgentTracker>,
    silence: Duration,
    batcher: mpsc::Sender<Vec<crate::journal::PendingRecord>>,
    mut shutdown: Shutdown,
) {
    let every = (silence / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let outcome = match tracker.check_silence(&journal, groundtrail_common::time::now_secs()) {
            Ok(o) => o,
            Err(e) => {
                tracing::error!("agent silence check: {e}");
                continue;
            }
        };
        if outcome.committed.is_empty() {
            continue;
        }
        if let Err(e) = journal.flush().await {
            tracing::error!("agent silence check: {e}");
        }
        let _ = batcher.send(outcome.committed).await;
    }
}

/// Loads the signing key the config names (for `keygen`-style inspection).
pub fn signing_key(config: &Config) -> Result<SigningKey, KeyError> {
    Ok(SigningKey::load(&config.signing.key_file)?)
}
