//! `serve`: wires the journal, ingest, batcher, deliverers and digest writer together, and
//! stops them in the order that loses nothing.
//!
//! Start-up: open the journal, load (or create) the signing key, open every destination,
//! reload pending records into the batcher, then listen. Nothing is sent to a destination
//! at start-up, so a store that is down delays delivery but does not stop the collector.
//!
//! Shutdown (SIGTERM/SIGINT or the test's signal), in order:
//! 1. stop accepting; in-flight requests finish (their records are committed and flushed);
//!    each `[[trails]]` trail's feed copies what the journal holds (within `shutdown_grace`);
//! 2. every trail's batcher closes every open file (recorded in its journal before any upload);
//! 3. every destination gets everything pending, retrying for up to `[server] shutdown_grace`;
//! 4. a digest is written for every chain with delivered files not yet in a digest, and
//!    delivered the same way;
//! 5. the journal is flushed. What could not be delivered in time stays in the journal and
//!    goes out on the next start.
//!
//! A stuck store (the journal or the history failing every write, see [`crate::store_health`])
//! stops the collector the same way, without steps 3-4 (nothing can be recorded delivered), and
//! `serve` then returns [`ServeError::StoreStuck`] so that the process exits non-zero and is
//! restarted; the next start records the outage in the trail.

use std::sync::Arc;

use groundtrail_common::shutdown::Shutdown;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};

use crate::agents::AgentTracker;
use crate::api::Api;
use crate::config::Config;
use crate::file_notifications::Notifier;
use crate::history::History;
use crate::ingest::Ingest;
use crate::journal::{Journal, JournalError};
use crate::signing_key::{KeyError, KeyOutcome, provide as provide_key};
use crate::trails::pipeline::{self, Pipeline};

mod background;
mod listeners;

use background::{expire_dedup, expire_history, start_detection, watch_silence};
pub(crate) use listeners::{bind_api, bound, run_listeners, server_tls};

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
    #[error(
        "refusing to serve plaintext on {0}, which is not a loopback address: set [server] tls_cert and tls_key"
    )]
    Plaintext(std::net::SocketAddr),
    #[error(transparent)]
    History(#[from] crate::history::HistoryError),
    #[error(transparent)]
    Api(#[from] crate::api::ApiSetupError),
    #[error("cannot listen on [api] listen = {addr}: {source}")]
    ApiListen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "the {store} store failed every write ({error}); stopped so that a fresh process can open it again (free disk space if it is full)"
    )]
    StoreStuck { store: String, error: String },
    #[error("cannot start the store-health thread: {0}")]
    StoreWatch(std::io::Error),
    #[error(transparent)]
    Detection(#[from] crate::detector::DetectorError),
    #[error("[insights.model] {0}")]
    Insights(String),
    /// A trail's settings (`[trail]`, `[[trails]]`); the message names the field.
    #[error("{0}")]
    Trails(String),
    /// Cluster mode could not start (`[cluster]`, the NATS servers).
    #[error("cluster: {0}")]
    Cluster(String),
}

/// Runs the collector on `listener` until `shutdown`, then shuts down as described above.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    external: Shutdown,
) -> Result<(), ServeError> {
    // Everything stops on this: the caller's signal, or a stuck store (`store_health::spawn`'s
    // watch sends either). Returning early drops the sender, which also stops every task.
    let (stop_tx, stop_rx) = tokio::sync::broadcast::channel(1);
    let shutdown = Shutdown::new(stop_rx);
    // `Config::validate` checks the configured address; this checks the socket actually given.
    if config.server.tls_cert.is_none()
        && let Ok(addr) = listener.local_addr()
        && !addr.ip().is_loopback()
    {
        return Err(ServeError::Plaintext(addr));
    }
    if let Some(cluster) = config.cluster.settings().map_err(ServeError::Cluster)? {
        return crate::cluster::service::serve(config, cluster, listener, external).await;
    }
    let journal = Arc::new(Journal::open_with_settings(
        &config.journal.path,
        &config.journal.settings(),
    )?);
    let history = Arc::new(History::open_with(
        &config.history_path(),
        config.history.cache_bytes,
        true,
    )?);
    let indexer_task = crate::indexer::spawn(
        journal.clone(),
        history.clone(),
        config.history.retention.get(),
        shutdown.clone(),
    );
    let mut background = Vec::new();
    let detector = start_detection(&config, &journal, &shutdown, &mut background)?;
    // Committed batches waiting for the batcher. Each holds its records' JSON in memory, so
    // this bounds that memory (64 agent batches: 128 MiB at the agents' default of 1,000
    // records); a full queue delays the next `200` (the records are already durable), it
    // never drops anything.
    let (tx, rx) = mpsc::channel(BATCHER_QUEUE);
    // Registered with the journal here, before the reload below can trim the log; started
    // after the reload (see `insights::open`).
    let insights = if config.insights.enabled() {
        Some(
            crate::insights::open(
                journal.clone(),
                tx.clone(),
                config.insights.clone(),
                &config.journal.path,
            )
            .map_err(|e| ServeError::Insights(e.to_string()))?,
        )
    } else {
        None
    };
    // Refuses a missing or changed key once digests exist (see `crate::signing_key`).
    let (key, outcome) = provide_key(
        &config.signing.key_file,
        &journal,
        &config.signing.retired_keys,
    )?;
    journal.flush().await?;
    match outcome {
        KeyOutcome::Generated => tracing::warn!(
            path = %config.signing.key_file.display(),
            fingerprint = key.fingerprint(),
            "generated a new digest signing key"
        ),
        KeyOutcome::Loaded => {
            tracing::info!(fingerprint = key.fingerprint(), "digest signing key loaded")
        }
        KeyOutcome::Rotated { previous } => tracing::warn!(
            fingerprint = key.fingerprint(),
            previous = %previous,
            "digest signing key rotated: the chains continue under the new key, the previous one is listed as retired"
        ),
    }
    let key = Arc::new(key);

    // A stuck store stopped the previous run: say so in the trail (committed before the
    // pending records are reloaded, so it is filed with them).
    let marker = crate::store_health::marker_path(&config.journal.path);
    if let Some(record) = crate::store_health::take_marker(
        &marker,
        &config.monitoring.domain,
        &config.trail.account_id,
        &config.trail.home_region,
    ) {
        journal.commit(&[record], &[], groundtrail_common::time::now_secs())?;
        journal.flush().await?;
    }

    let tls = server_tls(&config)?;

    let specs = config.trail_specs().map_err(ServeError::Trails)?;
    let mut specs = specs.into_iter();
    let primary_spec = specs.next().expect("the primary trail is always there");
    // Validated with the config; a stored PutEventSelectors applies on top (see trail_control).
    let control = Arc::new(crate::trail_control::TrailControl::load(
        journal.clone(),
        &primary_spec.name,
        primary_spec.selectors.clone(),
    )?);
    // `[[trails]]`: each with its own journal, fed from this one (see `crate::trails`). Their
    // feeds register as readers of the journal here, before the primary trail's batcher
    // starts and can trim its log.
    let mut extras = Vec::new();
    for spec in specs {
        let path = crate::trails::journal_path(&config.journal.path, &spec.name);
        let trail_journal = Arc::new(Journal::open_with_settings(
            &path,
            &config.journal.settings(),
        )?);
        // The same key signs every chain; each journal refuses a changed one on its own.
        provide_key(
            &config.signing.key_file,
            &trail_journal,
            &config.signing.retired_keys,
        )?;
        let trail_control = Arc::new(crate::trail_control::TrailControl::load(
            trail_journal.clone(),
            &spec.name,
            spec.selectors.clone(),
        )?);
        let (trail_tx, trail_rx) = mpsc::channel(BATCHER_QUEUE);
        let feed = crate::trails::feed::Feed::open(
            journal.clone(),
            trail_journal.clone(),
            spec.clone(),
            trail_control.clone(),
            trail_tx,
        )?;
        trail_journal.flush().await?;
        extras.push((spec, trail_journal, trail_control, trail_rx, feed));
    }
    let trail_journals: Vec<Arc<Journal>> = extras.iter().map(|e| e.1.clone()).collect();
    let notify_wake = Arc::new(Notify::new());
    let primary = Pipeline::start(
        primary_spec,
        journal.clone(),
        pipeline::Start {
            config: &config,
            key: key.clone(),
            control: control.clone(),
            records: rx,
            judge: true,
            notifications: (!config.notifications.is_empty()).then(|| {
                (
                    config.notifications.iter().map(|n| n.name()).collect(),
                    notify_wake.clone(),
                )
            }),
        },
        &mut background,
        &shutdown,
    )
    .await?;
    let names = primary.destinations.clone();
    if let Some(reader) = insights {
        background.push(tokio::spawn(reader.run(shutdown.clone())));
    }
    // The feeds stop after the listeners drain (see the shutdown order above).
    let (feeds_stop_tx, feeds_stop_rx) = tokio::sync::broadcast::channel(1);
    let feeds_stop = Shutdown::new(feeds_stop_rx);
    let mut pipelines = vec![primary];
    let mut feeds = Vec::new();
    for (spec, trail_journal, trail_control, trail_rx, feed) in extras {
        let p = Pipeline::start(
            spec,
            trail_journal.clone(),
            pipeline::Start {
                config: &config,
                key: key.clone(),
                control: trail_control,
                records: trail_rx,
                judge: false,
                notifications: None,
            },
            &mut background,
            &shutdown,
        )
        .await?;
        feeds.push(tokio::spawn(feed.run(feeds_stop.clone())));
        background.push(tokio::spawn(expire_dedup(
            trail_journal,
            config.journal.dedup_window.get(),
            shutdown.clone(),
        )));
        pipelines.push(p);
    }
    drop(feeds_stop);
    if !config.notifications.is_empty() {
        let notifier = Notifier::new(
            journal.clone(),
            config.notifications.clone(),
            notify_wake.clone(),
        );
        background.push(tokio::spawn(notifier.run(shutdown.clone())));
    }
    background.push(tokio::spawn(expire_history(
        history.clone(),
        config.history.retention.get(),
        shutdown.clone(),
    )));
    background.push(tokio::spawn(expire_dedup(
        journal.clone(),
        config.journal.dedup_window.get(),
        shutdown.clone(),
    )));

    let tracker = Arc::new(
        AgentTracker::load(
            &journal,
            &config.monitoring.domain,
            config.monitoring.agent_silence.get(),
        )?
        .with_max_agents(config.limits.max_agents),
    );
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
    // The pairs the trail already holds count against `[limits] max_account_regions`.
    for name in &names {
        ingest.seed_pairs(journal.chains(name)?.into_keys());
    }
    ingest.seed_pairs(
        journal
            .agents()?
            .into_values()
            .filter(|a| !a.account.is_empty())
            .map(|a| (a.account, a.region)),
    );
    let console = config.console.enabled.then(|| {
        Arc::new(crate::console::Console::new(
            &config,
            journal.clone(),
            history.clone(),
            detector.clone(),
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
        .with_detector(detector)
        .with_trails(
            pipelines
                .iter()
                .map(|p| crate::api::TrailView {
                    spec: p.spec.clone(),
                    journal: p.journal.clone(),
                    control: Some(p.control.clone()),
                })
                .collect(),
        ),
    );
    if config.api.access_keys.is_empty() {
        if config.api.allow_unsigned_loopback_reads {
            tracing::info!(
                "CloudTrail API: no [[api.access_keys]]; loopback clients may read unsigned ([api] allow_unsigned_loopback_reads) and PutAuditEvents is off"
            );
        } else {
            tracing::info!(
                "CloudTrail API: no [[api.access_keys]], so every API request is refused; add a key or set [api] allow_unsigned_loopback_reads"
            );
        }
    }
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        tls = tls.is_some(),
        mtls = config.server.client_ca.is_some(),
        destinations = ?names,
        "collector listening"
    );
    let (api_listener, api_tls) = bind_api(&config).await?;
    let store_watch = crate::store_health::spawn(
        journal.clone(),
        history.clone(),
        trail_journals.clone(),
        marker,
        external,
        stop_tx,
    )
    .map_err(ServeError::StoreWatch)?;
    // systemd (Type=notify): ready once both listeners are bound and everything runs; the
    // watchdog is fed only while both stores take writes. The pinger stays a tokio task (unlike
    // the store watch): a runtime wedged on a blocked store must stop the pings too.
    groundtrail_common::sd_notify::ready("listening", bound(&listener, api_listener.as_ref()));
    let watchdog = {
        let (journal, history) = (journal.clone(), history.clone());
        tokio::spawn(groundtrail_common::sd_notify::watchdog_while(move || {
            crate::store_health::healthy(&journal, &history, &trail_journals)
        }))
    };
    let settings = crate::server::Settings::from_config(&config).with_console(console);
    run_listeners(
        listener,
        api_listener,
        (tls, api_tls),
        ingest.clone(),
        api,
        settings,
        shutdown,
    )
    .await;

    // 1. No connection is left; drop the last senders so the batcher drains and stops.
    tracing::info!("shutting down: closing open log files");
    groundtrail_common::sd_notify::notify("STOPPING=1\nSTATUS=stopping: delivering and digesting");
    drop(ingest);
    for task in background {
        let _ = task.await;
    }
    // Nothing commits to the journal any more: each `[[trails]]` feed copies what is left,
    // then drops its sender, so its trail's batcher can finish too.
    // A feed far behind stops at the grace; the rest is copied on the next start.
    let _ = feeds_stop_tx.send(());
    let feeds_deadline = tokio::time::Instant::now() + config.server.shutdown_grace.get();
    for mut feed in feeds {
        if tokio::time::timeout_at(feeds_deadline, &mut feed)
            .await
            .is_err()
        {
            tracing::warn!(
                "a trail's feed did not catch up within [server] shutdown_grace; it goes on at the next start"
            );
            feed.abort();
            let _ = feed.await;
        }
    }
    // 2. Close every open file.
    for p in &mut pipelines {
        p.close_files().await;
    }
    // Ingest and the batcher are done: the indexer indexes what the log holds (within the
    // grace) and stops; the next start resumes from its position.
    let _ = indexer_task.await;
    crate::indexer::drain(
        &journal,
        &history,
        config.history.retention.get(),
        config.server.shutdown_grace.get(),
    )
    .await;
    if let Err(e) = history.flush().await {
        tracing::error!("event history flush: {e}");
    }
    let stuck = store_watch.finish().await;
    // 3-4. Deliver, write the covering digests, deliver those (not with a stuck store: no
    // delivery or digest can be recorded, the next process does it).
    let mut everything = false;
    if stuck.is_none() {
        let deadline = tokio::time::Instant::now() + config.server.shutdown_grace.get();
        let delivered =
            futures_util::future::join_all(pipelines.iter().map(|p| p.deliver(deadline))).await;
        everything = delivered.into_iter().all(|ok| ok);
    }
    if let Some(s) = stuck {
        watchdog.abort();
        return Err(ServeError::StoreStuck {
            store: s.store,
            error: s.error,
        });
    }
    for p in &pipelines[1..] {
        p.journal.flush().await?;
    }
    journal.flush().await?;
    if everything {
        tracing::info!("shutdown complete: everything delivered");
    } else {
        let (pending, undelivered) = journal.backlog();
        tracing::warn!(
            pending,
            undelivered,
            "shutdown grace ran out; the rest stays in the journal for the next start"
        );
    }
    watchdog.abort();
    Ok(())
}

/// Committed batches queued for the batcher at most (see where it is used).
const BATCHER_QUEUE: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DestinationConfig, Duration as ConfigDuration};
    use crate::destination::Destination;
    use crate::destination::local::LocalDestination;
    use groundtrail_common::trail::{
        DigestDocument, SigningKey, sha256_hex, signing_string, verify_signature,
    };
    use std::io::Read;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::broadcast;

    fn config(dir: &std::path::Path) -> Config {
        let mut c = Config::default();
        c.journal.path = dir.join("journal");
        c.signing.key_file = dir.join("key.pem");
        // Long intervals: only shutdown closes files and writes digests, so nothing here
        // depends on timing.
        c.trail.log_file_interval = ConfigDuration::from_secs(3600);
        c.trail.digest_interval = ConfigDuration::from_secs(3600);
        c.destinations = vec![DestinationConfig::Local {
            name: None,
            path: dir.join("trail"),
            bucket: "bkt".into(),
        }];
        c
    }

    fn line(n: u32) -> String {
        format!(
            r#"{{"eventVersion":"1.11","userIdentity":{{}},"eventTime":"2026-01-01T00:00:0{}Z","eventSource":"t.onprem.internal","eventName":"T","awsRegion":"us-east-1","eventID":"00000000-0000-4000-8000-{n:012x}","eventType":"AwsApiCall","recipientAccountId":"111122223333"}}"#,
            n % 10
        )
    }

    /// One HTTP/1.1 request over a fresh connection; returns (status, body).
    async fn post(addr: std::net::SocketAddr, body: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-ndjson\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out[9..12].parse().unwrap();
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    }

    /// A raw HTTP/1.1 exchange; returns (status, body).
    async fn raw(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out[9..12].parse().unwrap();
        (
            status,
            out.split("\r\n\r\n").nth(1).unwrap_or("").to_string(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn routes_metrics_and_header_checks() {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = broadcast::channel(1);
        let task = tokio::spawn(serve(config(dir.path()), listener, Shutdown::new(rx)));
        assert_eq!(post(addr, &format!("{}\n", line(7))).await.0, 200);
        let (status, text) = raw(
            addr,
            "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status, 200);
        assert!(text.contains("# TYPE groundtrail_records_committed_total counter"));
        assert!(
            text.contains("groundtrail_journal_pending_records 1\n"),
            "{text}"
        );
        let (status, _) = raw(
            addr,
            "GET /nope HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status, 404);
        let (status, _) = raw(
            addr,
            "GET /v1/events HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status, 405);
        // Refused on the Content-Length header alone, before any body byte is read.
        let (status, body) = raw(
            addr,
            "POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-ndjson\r\ncontent-length: 999999999\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status, 413, "{body}");
        assert!(body.contains("RequestEntityTooLarge"));
        tx.send(()).unwrap();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn refuses_plaintext_off_loopback() {
        let dir = tempfile::tempdir().unwrap();
        let Ok(listener) = TcpListener::bind("0.0.0.0:0").await else {
            return;
        };
        let (_tx, rx) = broadcast::channel(1);
        let err = serve(config(dir.path()), listener, Shutdown::new(rx))
            .await
            .unwrap_err();
        assert!(matches!(err, ServeError::Plaintext(_)), "{err}");
    }

    async fn run_once(dir: &std::path::Path, batches: &[String]) -> Vec<(u16, String)> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = broadcast::channel(1);
        let task = tokio::spawn(serve(config(dir), listener, Shutdown::new(rx)));
        let mut answers = Vec::new();
        for b in batches {
            answers.push(post(addr, b).await);
        }
        tx.send(()).unwrap();
        task.await.unwrap().unwrap();
        answers
    }

    /// Records in -> SIGTERM-style shutdown -> a log file and a signed digest covering it;
    /// a restart continues the chain and drops resent records.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serve_delivers_and_digests_on_shutdown_and_the_chain_continues() {
        let dir = tempfile::tempdir().unwrap();
        let batch = format!("{}\n{}\n", line(1), line(2));
        let answers = run_once(dir.path(), &[batch.clone(), "nope\n".into()]).await;
        assert_eq!(
            answers[0],
            (200, r#"{"committed":2,"duplicates":0}"#.into())
        );
        assert_eq!(answers[1].0, 400);

        let answers = run_once(dir.path(), &[batch, format!("{}\n", line(3))]).await;
        assert_eq!(
            answers[0],
            (200, r#"{"committed":0,"duplicates":2}"#.into())
        );
        assert_eq!(answers[1].0, 200);

        let dest = LocalDestination::open("local".into(), &dir.path().join("trail"), "bkt".into())
            .unwrap();
        let logs = dest
            .list("AWSLogs/111122223333/CloudTrail/us-east-1/", None)
            .await
            .unwrap();
        assert_eq!(logs.len(), 2);
        let mut ids = Vec::new();
        for key in &logs {
            let gz = dest.get(key).await.unwrap().unwrap().body;
            let mut json = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut json)
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
            for r in v["Records"].as_array().unwrap() {
                ids.push(r["eventID"].as_str().unwrap().to_string());
            }
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 3, "every record exactly once");

        let digests = dest
            .list("AWSLogs/111122223333/CloudTrail-Digest/us-east-1/", None)
            .await
            .unwrap();
        assert_eq!(digests.len(), 2);
        let key = SigningKey::load(&dir.path().join("key.pem")).unwrap();
        let mut previous: Option<(String, String, String)> = None;
        for k in &digests {
            let obj = dest.get(k).await.unwrap().unwrap();
            let mut bytes = Vec::new();
            flate2::read::GzDecoder::new(&obj.body[..])
                .read_to_end(&mut bytes)
                .unwrap();
            let doc: DigestDocument = serde_json::from_slice(&bytes).unwrap();
            let sig = &obj.metadata["signature"];
            assert_eq!(obj.metadata["signature-algorithm"], "SHA256withRSA");
            assert_eq!(doc.log_files.len(), 1);
            let msg = signing_string(
                &doc.digest_end_time,
                "bkt",
                k,
                &sha256_hex(&bytes),
                doc.previous_digest_signature.as_deref(),
            );
            assert!(verify_signature(key.public_key_der(), msg.as_bytes(), sig));
            match &previous {
                None => assert_eq!(doc.previous_digest_signature, None),
                Some((pk, ph, ps)) => {
                    assert_eq!(doc.previous_digest_s3_object.as_ref(), Some(pk));
                    assert_eq!(doc.previous_digest_hash_value.as_ref(), Some(ph));
                    assert_eq!(doc.previous_digest_signature.as_ref(), Some(ps));
                }
            }
            previous = Some((k.clone(), sha256_hex(&bytes), sig.clone()));
        }
    }
}
