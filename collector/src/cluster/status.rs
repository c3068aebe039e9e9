//! `GetTrailStatus` in cluster mode: the shard writers record the trail's latest delivery
//! times and errors in `GT_SHARDS` (`status.<name>`), and every collector mirrors them into its
//! local journal, where `GetTrailStatus` and the console read them as in single-node mode. So
//! any collector answers for the whole trail, a couple of seconds behind at most.
//!
//! Best effort, like the single-node status: a lost update is corrected by the next delivery.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use groundtrail_common::shutdown::Shutdown;

use super::nats::Nats;
use crate::journal::Journal;

const PREFIX: &str = "status.";

/// How often a collector copies the cluster's status into its journal.
const MIRROR_EVERY: Duration = Duration::from_secs(2);

/// Sets (`Some`) or clears (`None`) status values, e.g. `LatestDeliveryTime`.
pub async fn record(nats: &Nats, values: &[(&str, Option<&str>)]) {
    let writes = values.iter().map(|(name, value)| async move {
        let key = format!("{PREFIX}{name}");
        let done = match value {
            Some(v) => nats
                .shards
                .put(key, v.to_string().into())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            None => nats.shards.delete(key).await.map_err(|e| e.to_string()),
        };
        if let Err(e) = done {
            tracing::debug!("cluster status {name}: {e}");
        }
    });
    futures_util::future::join_all(writes).await;
}

/// The cluster's status values.
async fn read(nats: &Nats) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut keys = nats.shards.keys().await.map_err(|e| e.to_string())?;
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| e.to_string())?;
        let Some(name) = key.strip_prefix(PREFIX) else {
            continue;
        };
        if let Some(v) = nats.shards.get(&key).await.map_err(|e| e.to_string())? {
            out.insert(name.to_string(), String::from_utf8_lossy(&v).into_owned());
        }
    }
    Ok(out)
}

/// Mirrors the cluster's status into `journal` until `shutdown`.
pub fn spawn_mirror(
    nats: Nats,
    journal: Arc<Journal>,
    mut shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match read(&nats).await {
                Ok(values) => {
                    let local = journal.status().unwrap_or_default();
                    for name in local.keys().filter(|n| !values.contains_key(*n)) {
                        let _ = journal.clear_status(name);
                    }
                    for (name, value) in &values {
                        if local.get(name) != Some(value) {
                            let _ = journal.set_status(name, value);
                        }
                    }
                }
                Err(e) => tracing::debug!("cluster status: {e}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(MIRROR_EVERY) => {}
                _ = shutdown.recv() => return,
            }
        }
    })
}
