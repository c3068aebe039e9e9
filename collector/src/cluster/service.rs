//! `serve` in cluster mode: the same listeners, API and console as a single collector, with
//! ingest publishing to the cluster's stream, shard writers instead of the batcher, deliverers
//! and digest writer, and an event history fed from the stream.
//!
//! Shutdown order: stop accepting (in-flight batches finish: acknowledged or refused); each
//! shard writer files what it read, delivers it and writes the covering digests, then releases
//! its lease so another collector goes on at once; the history indexes what ingest published;
//! all within `[server] shutdown_grace`. What is left is in the stream and the shards' state,
//! for whichever collector takes the shards next.

use std::sync::Arc;

use groundtrail_common::shutdown::Shutdown;
use groundtrail_common::trail::TrailLayout;
use tokio::net::TcpListener;

use super::config::ClusterSettings;
use super::intent::Seen;
use super::membership::Membership;
use super::publish::Publisher;
use super::writer::WriterSettings;
use crate::agents::AgentTracker;
use crate::api::Api;
use crate::config::Config;
use crate::digest::ChainSigner;
use crate::history::History;
use crate::ingest::Ingest;
use crate::journal::Journal;
use crate::service::{ServeError, bind_api, run_listeners, server_tls};
use crate::signing_key::provide as provide_key;

/// Runs a cluster member on `listener` until `external` says stop.
pub async fn serve(
    config: Config,
    cluster: ClusterSettings,
    listener: TcpListener,
    external: Shutdown,
) -> Result<(), ServeError> {
    let fail = |e: &dyn std::fmt::Display| ServeError::Cluster(e.to_string());
    if config.detection.enabled {
        tracing::warn!(
            "cluster mode: detection rules are not evaluated yet (single-node mode only); set [detection] enabled = false to silence this"
        );
    }
    tracing::info!(
        "cluster mode: agent sequence-gap and silence records (AgentSequenceGap, AgentSilent) are written in single-node mode only"
    );
    // The local journal holds no records in cluster mode: only what the API reads of it (the
    // signing key's record, agent states).
    let journal = Arc::new(Journal::open_with_settings(
        &config.journal.path,
        &config.journal.settings(),
    )?);
    // A journal left from single-node mode with records not yet delivered: cluster mode would
    // never deliver them (its writers read the stream, not this journal).
    let (pending, undelivered) = journal.backlog();
    if pending + undelivered > 0 {
        return Err(ServeError::Cluster(format!(
            "the journal at {} still holds {pending} records not yet filed and {undelivered} files not yet delivered from single-node mode; run without [cluster] until they are delivered, then switch",
            config.journal.path.display()
        )));
    }
    let history = Arc::new(History::open_with(
        &config.history_path(),
        config.history.cache_bytes,
        true,
    )?);
    let (key, _) = provide_key(
        &config.signing.key_file,
        &journal,
        &config.signing.retired_keys,
    )?;
    journal.flush().await?;
    let key = Arc::new(key);
    tracing::info!(
        node = %cluster.node_id,
        servers = ?cluster.urls,
        shards = cluster.shards,
        "cluster mode: connecting to NATS"
    );
    let spec = config
        .trail_specs()
        .map_err(ServeError::Trails)?
        .into_iter()
        .next()
        .expect("the primary trail is always there");
    let mut destinations = Vec::new();
    for d in &spec.destinations {
        destinations.push(crate::destination::open(d).await.map_err(|e| {
            ServeError::Destination {
                name: d.name(),
                why: format!("{e:#}"),
            }
        })?);
    }
    let meta = super::nats::Meta {
        format: 1,
        shards: cluster.shards,
        key_fingerprint: key.fingerprint().to_string(),
        trail: format!(
            "trail {:?} (home region {}, key prefix {:?}, organization {:?}, lease_ttl {:?}, dedup_window {:?}) delivered to {}",
            spec.name,
            spec.home_region,
            spec.s3_key_prefix,
            spec.organization_id.as_deref().unwrap_or(""),
            cluster.lease_ttl,
            config.journal.dedup_window.get(),
            destinations
                .iter()
                .map(|d| format!("{} ({})", d.name(), d.bucket()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        records_created: String::new(),
    };
    // Until NATS answers nothing else can start; a stop asked for meanwhile is honoured.
    let mut waiting = external.clone();
    let nats = tokio::select! {
        n = super::nats::connect(&cluster, config.journal.dedup_window.get(), meta) => {
            n.map_err(|e| fail(&e))?
        }
        _ = waiting.recv() => {
            tracing::info!("stopped while connecting to NATS");
            return Ok(());
        }
    };
    let layout = TrailLayout::new(&spec.s3_key_prefix, spec.organization_id.as_deref());
    // The shard writers' dedup index, beside the journal (a cache of GT_SEEN, see
    // `cluster::intent::Seen`).
    let seen = Seen::open(
        &config.journal.path.join("cluster-seen"),
        &config.journal.settings().dedup,
    )
    .map_err(|e| fail(&e))?;
    let settings = Arc::new(WriterSettings {
        node: cluster.node_id.clone(),
        shards: cluster.shards,
        file_interval: config.trail.log_file_interval.get(),
        max_bytes: config.trail.log_file_max_bytes,
        signer: ChainSigner {
            key: key.clone(),
            layout: layout.clone(),
            trail_name: spec.name.clone(),
            home_region: spec.home_region.clone(),
            interval: config.trail.digest_interval.get(),
        },
        layout,
        destinations,
        seen: seen.clone(),
        seed: (!config.trail.account_id.is_empty())
            .then(|| (config.trail.account_id.clone(), spec.home_region.clone())),
    });

    let (stop_tx, stop_rx) = tokio::sync::broadcast::channel::<()>(1);
    let shutdown = Shutdown::new(stop_rx);
    let grace = config.server.shutdown_grace.get();
    // Writers and the history stop after the listeners have drained (see the module doc).
    let (after_tx, after_rx) = tokio::sync::broadcast::channel::<()>(1);
    let after = Shutdown::new(after_rx);
    let membership = tokio::spawn(
        Membership::new(nats.clone(), settings, cluster.lease_ttl).run(after.clone(), grace),
    );
    let indexer = super::history::spawn(
        nats.clone(),
        history.clone(),
        config.history.retention.get(),
        cluster.node_id.clone(),
        grace,
        after,
    );

    let expiry = tokio::spawn(expire_seen(seen, shutdown.clone()));
    let status = super::status::spawn_mirror(nats.clone(), journal.clone(), shutdown.clone());
    let tracker = Arc::new(
        AgentTracker::load(
            &journal,
            &config.monitoring.domain,
            config.monitoring.agent_silence.get(),
        )?
        .with_max_agents(config.limits.max_agents),
    );
    // Ingest never hands records to a batcher in cluster mode.
    let (unused_tx, _unused_rx) = tokio::sync::mpsc::channel(1);
    let ingest = Arc::new(
        Ingest::new(
            journal.clone(),
            tracker,
            config.limits.clone(),
            &config.agents,
            config.server.client_ca.is_some(),
            unused_tx,
        )
        .with_cluster(Publisher::new(nats.js.clone(), cluster.shards)),
    );
    let console = config.console.enabled.then(|| {
        Arc::new(crate::console::Console::new(
            &config,
            journal.clone(),
            history.clone(),
            None,
        ))
    });
    let api = Arc::new(
        Api::new(
            &config,
            &key,
            journal.clone(),
            history.clone(),
            Some(ingest.clone()),
        )?
        .with_trails(vec![crate::api::TrailView {
            spec,
            journal: journal.clone(),
            // Logging and selectors are fixed by the config in cluster mode: the calls that
            // change them are refused rather than applied on one collector only.
            control: None,
        }]),
    );
    let tls = server_tls(&config)?;
    let (api_listener, api_tls) = bind_api(&config).await?;
    let store_watch = crate::store_health::spawn(
        journal.clone(),
        history.clone(),
        Vec::new(),
        crate::store_health::marker_path(&config.journal.path),
        external,
        stop_tx,
    )
    .map_err(ServeError::StoreWatch)?;
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        node = %cluster.node_id,
        "collector listening (cluster mode)"
    );
    groundtrail_common::sd_notify::ready(
        "listening (cluster mode)",
        crate::service::bound(&listener, api_listener.as_ref()),
    );
    let watchdog = {
        let (journal, history) = (journal.clone(), history.clone());
        tokio::spawn(groundtrail_common::sd_notify::watchdog_while(move || {
            crate::store_health::healthy(&journal, &history, &[])
        }))
    };
    let server_settings = crate::server::Settings::from_config(&config).with_console(console);
    run_listeners(
        listener,
        api_listener,
        (tls, api_tls),
        ingest.clone(),
        api,
        server_settings,
        shutdown,
    )
    .await;
    tracing::info!("shutting down: shard writers file, deliver and digest what they read");
    groundtrail_common::sd_notify::notify("STOPPING=1\nSTATUS=stopping: delivering and digesting");
    drop(ingest);
    let _ = after_tx.send(());
    let _ = membership.await;
    let _ = indexer.await;
    let _ = status.await;
    let _ = expiry.await;
    if let Err(e) = history.flush().await {
        tracing::error!("event history flush: {e}");
    }
    let stuck = store_watch.finish().await;
    watchdog.abort();
    if let Some(s) = stuck {
        return Err(ServeError::StoreStuck {
            store: s.store,
            error: s.error,
        });
    }
    journal.flush().await?;
    tracing::info!("shutdown complete");
    Ok(())
}

/// Drops dedup keys older than the window, every minute.
async fn expire_seen(seen: Seen, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
            _ = shutdown.recv() => return,
        }
        let now = groundtrail_common::time::now_secs().timestamp();
        let s = seen.clone();
        match tokio::task::spawn_blocking(move || s.expire(now)).await {
            Ok(Err(e)) => tracing::error!("cluster dedup expiry: {e}"),
            Err(e) => tracing::error!("cluster dedup expiry task: {e}"),
            Ok(Ok(_)) => {}
        }
    }
}
