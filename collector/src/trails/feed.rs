//! A `[[trails]]` trail's feed: a reader of the collector's journal that copies the records
//! the trail takes into the trail's own journal (see [`crate::trails`] for the guarantees).

use std::sync::Arc;
use std::time::Duration;

use groundtrail_common::Record;
use groundtrail_common::shutdown::Shutdown;
use serde_json::Value;
use tokio::sync::mpsc;

use super::TrailSpec;
use crate::journal::{Journal, JournalError, PendingRecord, Prepared};
use crate::log::LogError;
use crate::metrics::metrics;
use crate::trail_control::{Snapshot, TrailControl};

/// Log bytes read per step at most.
const READ_BYTES: usize = 4 * 1024 * 1024;
/// How long a failed step waits before the next try.
const RETRY: Duration = Duration::from_secs(1);

/// The journal reader name of the feed of trail `name`.
pub fn reader_name(name: &str) -> String {
    format!("trail:{name}")
}

/// One trail's feed.
pub struct Feed {
    source: Arc<Journal>,
    trail: Arc<Journal>,
    spec: TrailSpec,
    control: Arc<TrailControl>,
    batcher: mpsc::Sender<Vec<PendingRecord>>,
    reader: String,
    /// The next entry of the collector's journal to read.
    position: u64,
    /// Records committed to the trail's journal and not yet handed to its batcher (a step that
    /// failed after its commit: the retry finds them as repeats, so they are kept here).
    unsent: Vec<PendingRecord>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("trail", &self.spec.name)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl Feed {
    /// Registers the feed as a reader of `source` where the trail's journal says it left off.
    /// A trail seen for the first time starts at the log's end: like a new CloudTrail trail,
    /// it records what arrives from its creation on. Call before anything can trim `source`.
    pub fn open(
        source: Arc<Journal>,
        trail: Arc<Journal>,
        spec: TrailSpec,
        control: Arc<TrailControl>,
        batcher: mpsc::Sender<Vec<PendingRecord>>,
    ) -> Result<Feed, JournalError> {
        let reader = reader_name(&spec.name);
        let position = match trail.feed_position()? {
            Some(p) => {
                let resumed = source.resume_reader(&reader, Some(p));
                if resumed < p {
                    // The collector's journal was replaced under the trail.
                    trail.set_feed_position(resumed)?;
                }
                resumed
            }
            None => {
                let end = source.durable_end_now();
                trail.set_feed_position(end)?;
                source.set_reader(&reader, end);
                tracing::info!(trail = %spec.name, "new trail: recording from now on");
                end
            }
        };
        Ok(Feed {
            source,
            trail,
            spec,
            control,
            batcher,
            reader,
            position,
            unsent: Vec::new(),
        })
    }

    /// Copies what the trail takes until `stop`, then once more up to the log's end (so that
    /// records committed before the collector stopped are in the trail's files), and returns,
    /// dropping its sender so the trail's batcher closes its files.
    pub async fn run(mut self, mut stop: Shutdown) {
        let mut durable = self.source.durable_end();
        loop {
            let stopping = stop.is_shutdown();
            let stepped = self.step().await;
            let lag = durable.borrow().saturating_sub(self.position);
            metrics().feed_lag(&self.spec.name, lag);
            match stepped {
                Ok(true) => continue,
                Ok(false) if stopping => return,
                Ok(false) => {}
                Err(JournalError::Log(LogError::Trimmed(_))) => {
                    let start = self.source.resume_reader(&self.reader, None);
                    tracing::error!(
                        trail = %self.spec.name,
                        "log entries {}..{start} were trimmed before this trail read them: \
                         the trail lacks their records (the feed fell behind the journal's bound)",
                        self.position
                    );
                    metrics().feed_skipped(&self.spec.name, start.saturating_sub(self.position));
                    self.position = start;
                    continue;
                }
                Err(e) => {
                    tracing::error!(trail = %self.spec.name, "trail feed: {e}");
                    if stopping {
                        return;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY) => {}
                        _ = stop.recv() => {}
                    }
                    continue;
                }
            }
            tokio::select! {
                changed = durable.changed() => if changed.is_err() { return },
                _ = stop.recv() => {}
            }
        }
    }

    /// Copies what the log has from the position; `Ok(false)` when there was nothing new.
    async fn step(&mut self) -> Result<bool, JournalError> {
        let j = self.source.clone();
        let from = self.position;
        let entries = tokio::task::spawn_blocking(move || j.read_committed(from, READ_BYTES))
            .await
            .map_err(|e| JournalError::Other(e.to_string()))??;
        let Some(last) = entries.last() else {
            return Ok(false);
        };
        let next = last.position + 1;
        let snapshot = self.control.snapshot();
        let spec = self.spec.clone();
        let (prepared, read) = tokio::task::spawn_blocking(move || {
            let mut prepared = Prepared::default();
            let mut read = 0u64;
            for entry in entries {
                for json in entry.records {
                    read += 1;
                    if !takes(&spec, &snapshot, &json) {
                        continue;
                    }
                    match Record::from_json(&json) {
                        Ok(r) => prepared.push_json(&r, json),
                        // Committed records passed the same check; one that does not is a bug
                        // to report, not a reason to stop the trail.
                        Err(e) => tracing::error!(
                            trail = %spec.name,
                            entry = entry.position,
                            "trail feed: a committed record does not read back ({e}); skipped"
                        ),
                    }
                }
            }
            (prepared, read)
        })
        .await
        .map_err(|e| JournalError::Other(e.to_string()))?;
        let taken = prepared.len() as u64;
        let trail = self.trail.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            trail.commit_prepared(prepared, &[], groundtrail_common::time::now_secs())
        })
        .await
        .map_err(|e| JournalError::Other(e.to_string()))??;
        self.unsent.extend(outcome.committed);
        // The copies are durable before the position moves past them; a crash in between
        // copies them again and the trail's journal drops the repeats.
        self.trail.sync_commits().await?;
        self.trail.set_feed_position(next)?;
        self.trail.flush().await?;
        self.source.set_reader(&self.reader, next);
        self.position = next;
        metrics().feed_read(&self.spec.name, read, taken);
        if !self.unsent.is_empty() {
            let sent = std::mem::take(&mut self.unsent);
            if self.batcher.send(sent).await.is_err() {
                tracing::debug!(trail = %self.spec.name, "batcher gone; records stay pending");
            }
        }
        Ok(true)
    }
}

/// Whether the trail takes a committed record: an Insights record when the trail records its
/// type (and is logging), any other record when its selectors take it.
pub fn takes(spec: &TrailSpec, snapshot: &Snapshot, json: &[u8]) -> bool {
    if !memchr_insight(json) {
        return snapshot.takes(json);
    }
    let Ok(v) = serde_json::from_slice::<Value>(json) else {
        return snapshot.takes(json);
    };
    if v.get("eventType").and_then(Value::as_str) != Some("AwsCloudTrailInsight") {
        return snapshot.takes(json);
    }
    snapshot.is_logging()
        && v.pointer("/insightDetails/insightType")
            .and_then(Value::as_str)
            .is_some_and(|t| spec.records_insight(t))
}

/// Whether the bytes can be an Insights record (a cheap test before a parse).
fn memchr_insight(json: &[u8]) -> bool {
    json.windows(20).any(|w| w == b"AwsCloudTrailInsight")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DestinationConfig;
    use crate::selectors::Selectors;
    use groundtrail_common::UserIdentity;
    use serde_json::json;

    fn record(n: u32, source: &str) -> Record {
        let mut r = Record::new(source, "Update", "AwsApiCall", "us-east-1", "111122223333");
        r.event_id = format!("00000000-0000-4000-8000-{n:012x}");
        r.event_time = "2026-12-07T10:00:00Z".into();
        r.user_identity = Some(UserIdentity::default());
        r.read_only = Some(false);
        r
    }

    fn spec(selectors: Selectors, insight_types: &[&str]) -> TrailSpec {
        TrailSpec {
            name: "dev".into(),
            home_region: "us-east-1".into(),
            s3_key_prefix: String::new(),
            organization_id: None,
            log_file_validation: true,
            insight_types: insight_types.iter().map(|t| t.to_string()).collect(),
            selectors,
            destinations: vec![DestinationConfig::default_local()],
            primary: false,
        }
    }

    fn app_only() -> Selectors {
        let input = json!({"AdvancedEventSelectors": [{"FieldSelectors": [
            {"Field": "eventSource", "StartsWith": ["app."]}
        ]}]});
        Selectors::from_api(input.as_object().unwrap()).unwrap()
    }

    async fn commit(journal: &Journal, records: &[Record]) {
        journal
            .commit(records, &[], groundtrail_common::time::now_secs())
            .unwrap();
        journal.sync_commits().await.unwrap();
    }

    /// A new trail starts at the log's end; it copies what its selectors take, durably before
    /// its position moves; a replay from an older position (a crash before the move) copies
    /// nothing twice; the collector's log is kept for the feed.
    #[tokio::test]
    async fn copies_what_the_trail_takes_once_even_when_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let source = Arc::new(Journal::open(&dir.path().join("j")).unwrap());
        let trail = Arc::new(Journal::open(&dir.path().join("t")).unwrap());
        let control = Arc::new(TrailControl::load(trail.clone(), "dev", app_only()).unwrap());
        commit(&source, &[record(1, "app.onprem.internal")]).await;

        let (tx, mut rx) = mpsc::channel(16);
        let mut feed = Feed::open(
            source.clone(),
            trail.clone(),
            spec(app_only(), &[]),
            control.clone(),
            tx.clone(),
        )
        .unwrap();
        let start = feed.position;
        assert_eq!(
            start,
            source.durable_end_now(),
            "a new trail starts at the end"
        );
        commit(
            &source,
            &[
                record(2, "app.onprem.internal"),
                record(3, "sshd.onprem.internal"),
            ],
        )
        .await;
        assert!(feed.step().await.unwrap());
        assert!(!feed.step().await.unwrap(), "caught up");
        let sent = rx.try_recv().unwrap();
        assert_eq!(sent.len(), 1);
        assert!(String::from_utf8_lossy(&sent[0].json).contains("000000000002"));
        let pending = trail.pending().unwrap();
        assert_eq!(pending.len(), 1, "only what the selectors take");
        let end = source.durable_end_now();
        assert_eq!(trail.feed_position().unwrap(), Some(end));
        assert_eq!(source.reader(&reader_name("dev")), Some(end));
        drop(feed);

        // A crash after the copy and before the position moved: the copy is made again and
        // the trail's journal drops it.
        trail.set_feed_position(start).unwrap();
        let mut again = Feed::open(
            source.clone(),
            trail.clone(),
            spec(app_only(), &[]),
            control,
            tx,
        )
        .unwrap();
        assert_eq!(again.position, start);
        assert!(again.step().await.unwrap());
        assert!(rx.try_recv().is_err(), "nothing new to file");
        assert_eq!(trail.pending().unwrap().len(), 1);
    }

    /// Insights records go by the trail's insight types, and not while it is stopped; other
    /// records by its selectors.
    #[tokio::test]
    async fn insight_records_go_by_type() {
        let dir = tempfile::tempdir().unwrap();
        let trail = Arc::new(Journal::open(&dir.path().join("t")).unwrap());
        let control = Arc::new(TrailControl::load(trail, "dev", Selectors::everything()).unwrap());
        let s = spec(Selectors::everything(), &["ApiErrorRateInsight"]);
        let insight = |t: &str| {
            serde_json::to_vec(&json!({"eventType": "AwsCloudTrailInsight",
                "eventCategory": "Insight", "insightDetails": {"insightType": t}}))
            .unwrap()
        };
        let plain = serde_json::to_vec(&json!({"eventSource": "app.onprem.internal",
            "eventName": "Update", "eventType": "AwsApiCall"}))
        .unwrap();
        assert!(takes(
            &s,
            &control.snapshot(),
            &insight("ApiErrorRateInsight")
        ));
        assert!(!takes(
            &s,
            &control.snapshot(),
            &insight("ApiCallRateInsight")
        ));
        assert!(takes(&s, &control.snapshot(), &plain));
        let none = spec(Selectors::everything(), &[]);
        assert!(!takes(
            &none,
            &control.snapshot(),
            &insight("ApiErrorRateInsight")
        ));
        control.set_logging(false).await.unwrap();
        assert!(!takes(
            &s,
            &control.snapshot(),
            &insight("ApiErrorRateInsight")
        ));
        assert!(!takes(&s, &control.snapshot(), &plain));
    }
}
