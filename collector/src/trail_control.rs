//! What the trail records, as changed at run time: whether it is logging (`StartLogging`,
//! `StopLogging`) and its event selectors (`PutEventSelectors`).
//!
//! # Guarantees
//!
//! - **A change is durable before it is answered.** The new settings are written to the
//!   journal (`o/trail`) and flushed before the API says `200`; a restart starts with them.
//! - **A change applies to what is filed after it.** The batcher judges each batch it files by
//!   the settings of the moment ([`Snapshot::takes`]); a record the trail does not take is
//!   passed over ([`crate::journal::Journal::pass_over`]): it stays in the event history and is
//!   seen by detection and Insights, but is in no log file. Records received just before a
//!   change may be judged by the new settings (as on AWS, a change is not tied to an instant).
//! - **The trail records changes to itself.** The collector's own record of a
//!   `PutEventSelectors`, `StartLogging` or `StopLogging` call on this trail is taken whatever
//!   the settings (a stopped trail still shows who stopped it, and who started it again), so
//!   no setting can hide its own change. A call on another trail is judged like any record.
//! - **The config stays the reference.** The selectors in `[trail]` apply until a
//!   `PutEventSelectors`; selectors put through the API are kept across restarts as long as the
//!   config's selectors are unchanged. When the config's selectors change, they win (the
//!   operator edited the file after the API call) and the stored ones are dropped, with a log
//!   line.

use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::journal::{Journal, JournalError};
use crate::selectors::Selectors;

/// The `eventSource` of the collector's records of calls to its trail API.
pub const CLOUDTRAIL_SOURCE: &str = "cloudtrail.amazonaws.com";
/// The calls whose records the trail always takes.
pub const CONTROL_EVENTS: [&str; 3] = ["PutEventSelectors", "StartLogging", "StopLogging"];

/// What is stored at `o/trail`.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    logging: bool,
    /// When logging last started or stopped through the API (epoch seconds).
    #[serde(default)]
    logging_changed_at: Option<i64>,
    /// `PutEventSelectors`' selectors (its response members), when put through the API.
    selectors: Option<Value>,
    /// The config's selectors when they were put (their `to_api` form).
    config_selectors: Value,
}

/// The settings at one moment: what the batcher judges a batch by, and what is put back when
/// a change cannot be recorded.
#[derive(Debug, Clone)]
pub struct Snapshot {
    settings: Settings,
    /// The trail's name: its own control records are always taken.
    trail: Arc<str>,
}

impl Snapshot {
    /// Whether every record is taken (logging, default selectors): the batcher then need not
    /// read the records.
    pub fn takes_everything(&self) -> bool {
        self.settings.logging && self.settings.selectors.is_default()
    }

    /// Whether the trail is logging.
    pub fn is_logging(&self) -> bool {
        self.settings.logging
    }

    /// Whether the trail records this record (its JSON, as committed).
    pub fn takes(&self, json: &[u8]) -> bool {
        if self.takes_everything() {
            return true;
        }
        let Ok(record) = serde_json::from_slice::<Value>(json) else {
            // Committed records are JSON; one that is not is filed rather than dropped.
            return true;
        };
        if is_control_event_for(&record, &self.trail) {
            return true;
        }
        self.settings.logging && self.settings.selectors.selects(&record)
    }
}

#[derive(Debug, Clone)]
struct Settings {
    logging: bool,
    logging_changed_at: Option<i64>,
    selectors: Selectors,
    /// Whether `selectors` came from the API (kept in `o/trail`).
    put: bool,
}

/// The trail's run-time settings, shared by the batcher and the API.
#[derive(Debug)]
pub struct TrailControl {
    journal: Arc<Journal>,
    /// The trail's name.
    trail: Arc<str>,
    config_selectors: Selectors,
    settings: RwLock<Settings>,
    /// Held across a whole change (read, store, record, maybe undo), so two changes never
    /// interleave and one never undoes the other.
    changes: tokio::sync::Mutex<()>,
}

impl TrailControl {
    /// The settings the journal holds, reconciled with the config's selectors (see the module
    /// doc). A stored value that cannot be read is logged and ignored: the config applies.
    pub fn load(
        journal: Arc<Journal>,
        trail: &str,
        config_selectors: Selectors,
    ) -> Result<TrailControl, JournalError> {
        let mut settings = Settings {
            logging: true,
            logging_changed_at: None,
            selectors: config_selectors.clone(),
            put: false,
        };
        if let Some(bytes) = journal.trail_settings()? {
            match serde_json::from_slice::<Stored>(&bytes) {
                Ok(stored) => {
                    settings.logging = stored.logging;
                    settings.logging_changed_at = stored.logging_changed_at;
                    if !stored.logging {
                        tracing::warn!(
                            "the trail is not logging (StopLogging): records are kept in the event history but written to no log file until StartLogging"
                        );
                    }
                    if let Some(put) = stored.selectors {
                        if decode(&stored.config_selectors).as_ref() != Ok(&config_selectors) {
                            tracing::warn!(
                                "[trail] event selectors changed since the last PutEventSelectors; the config's selectors apply"
                            );
                        } else {
                            match decode(&put) {
                                Ok(s) => {
                                    settings.selectors = s;
                                    settings.put = true;
                                }
                                Err(e) => tracing::error!(
                                    "the stored event selectors cannot be used ({e}); the config's apply"
                                ),
                            }
                        }
                    }
                }
                Err(e) => tracing::error!(
                    "the stored trail settings cannot be read ({e}); the config's apply and the trail logs"
                ),
            }
        }
        Ok(TrailControl {
            journal,
            trail: trail.into(),
            config_selectors,
            settings: RwLock::new(settings),
            changes: tokio::sync::Mutex::new(()),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Settings> {
        self.settings.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the trail is logging.
    pub fn is_logging(&self) -> bool {
        self.read().logging
    }

    /// When logging last started or stopped through the API (epoch seconds), if ever.
    pub fn logging_changed_at(&self) -> Option<i64> {
        self.read().logging_changed_at
    }

    /// The selectors in force.
    pub fn selectors(&self) -> Selectors {
        self.read().selectors.clone()
    }

    /// Exclusive access for one change: hold the guard across the change, its record and any
    /// undo.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.changes.lock().await
    }

    /// The settings now: to judge a batch of records by one state (without a lock per
    /// record), or for [`TrailControl::restore`].
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            settings: self.read().clone(),
            trail: self.trail.clone(),
        }
    }

    /// Puts back earlier settings, durably (a change that could not be recorded).
    pub async fn restore(&self, snapshot: Snapshot) -> Result<(), JournalError> {
        self.store(snapshot.settings).await
    }

    /// Starts or stops logging, durably. Callers that record the change hold
    /// [`TrailControl::lock`].
    pub async fn set_logging(&self, on: bool) -> Result<(), JournalError> {
        let mut next = self.read().clone();
        next.logging = on;
        next.logging_changed_at = Some(groundtrail_common::time::now_secs().timestamp());
        self.store(next).await
    }

    /// Replaces the selectors, durably.
    pub async fn put_selectors(&self, selectors: Selectors) -> Result<(), JournalError> {
        let mut next = self.read().clone();
        next.selectors = selectors;
        next.put = true;
        self.store(next).await
    }

    /// Writes `next` and flushes; only then is it in force. A failed flush puts the previous
    /// stored value back, so a later flush by anyone cannot make a refused change durable.
    async fn store(&self, next: Settings) -> Result<(), JournalError> {
        let previous = self.journal.trail_settings()?;
        let stored = Stored {
            logging: next.logging,
            logging_changed_at: next.logging_changed_at,
            selectors: next.put.then(|| encode(&next.selectors)),
            config_selectors: encode(&self.config_selectors),
        };
        // Plain values always serialize.
        let json = serde_json::to_vec(&stored).unwrap_or_default();
        self.journal.set_trail_settings(&json)?;
        if let Err(e) = self.journal.flush().await {
            let undone = match &previous {
                Some(v) => self.journal.set_trail_settings(v),
                None => self.journal.clear_trail_settings(),
            };
            if let Err(u) = undone {
                tracing::error!("trail settings: the refused change could not be taken back: {u}");
            }
            return Err(e);
        }
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }
}

/// The stored form of selectors: the default as a marker of its own (its rendering lists
/// today's event categories, and a later release with one more must still read it as
/// "everything"), any other as `PutEventSelectors`' members.
fn encode(selectors: &Selectors) -> Value {
    if selectors.is_default() {
        serde_json::json!({"Default": true})
    } else {
        selectors.to_api()
    }
}

fn decode(stored: &Value) -> Result<Selectors, String> {
    if stored == &serde_json::json!({"Default": true}) {
        return Ok(Selectors::everything());
    }
    stored
        .as_object()
        .ok_or_else(|| "not an object".to_string())
        .and_then(|m| Selectors::from_api(m).map_err(|e| e.to_string()))
}

/// Whether `record` is the collector's own record of a call that changes the trail named
/// `trail` (its `requestParameters` name it, by name or ARN). A change to another trail is
/// judged by the selectors like any other record.
pub fn is_control_event_for(record: &Value, trail: &str) -> bool {
    let named = |v: &Value| {
        v.as_str()
            .is_some_and(|n| crate::trails::names_trail(n, trail))
    };
    // A call refused because it named no trail of ours (an ARN of another region or account
    // ending in this trail's name, say) is no change to this trail.
    let refused_as_unknown =
        record.get("errorCode").and_then(Value::as_str) == Some("TrailNotFoundException");
    !refused_as_unknown
        && record.get("eventSource").and_then(Value::as_str) == Some(CLOUDTRAIL_SOURCE)
        && record
            .get("eventName")
            .and_then(Value::as_str)
            .is_some_and(|n| CONTROL_EVENTS.contains(&n))
        && record.get("requestParameters").is_some_and(|p| {
            p.get("trailName").is_some_and(named) || p.get("name").is_some_and(named)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn selectors(prefix: &str) -> Selectors {
        let input = json!({"AdvancedEventSelectors": [{"FieldSelectors": [
            {"Field": "eventSource", "StartsWith": [prefix]}
        ]}]});
        Selectors::from_api(input.as_object().unwrap()).unwrap()
    }

    fn rec(source: &str, name: &str) -> Vec<u8> {
        rec_for(source, name, "t")
    }

    fn rec_for(source: &str, name: &str, trail: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({"eventSource": source, "eventName": name,
            "eventTime": "2026-12-07T10:00:00Z", "requestParameters": {"name": trail}}))
        .unwrap()
    }

    /// The default is stored as a marker, not as today's rendering of it.
    #[test]
    fn the_default_is_stored_as_itself() {
        assert_eq!(
            encode(&Selectors::everything()),
            serde_json::json!({"Default": true})
        );
        assert_eq!(
            decode(&encode(&Selectors::everything())),
            Ok(Selectors::everything())
        );
        let s = selectors("app.");
        assert_eq!(decode(&encode(&s)), Ok(s));
        assert!(decode(&serde_json::json!([1])).is_err());
    }

    /// Put selectors and a stop survive a reopen; a changed config wins over put selectors;
    /// the trail's records of its own changes are always taken.
    #[tokio::test]
    async fn settings_persist_and_the_config_stays_the_reference() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(Journal::open(&dir.path().join("j")).unwrap());
        let c = TrailControl::load(journal.clone(), "t", Selectors::everything()).unwrap();
        assert!(c.snapshot().takes_everything() && c.is_logging());
        c.put_selectors(selectors("app.")).await.unwrap();
        assert!(!c.snapshot().takes_everything());
        assert!(c.snapshot().takes(&rec("app.onprem.internal", "Update")));
        assert!(!c.snapshot().takes(&rec("sshd.onprem.internal", "Update")));
        c.set_logging(false).await.unwrap();
        assert!(!c.snapshot().takes(&rec("app.onprem.internal", "Update")));
        for op in CONTROL_EVENTS {
            assert!(c.snapshot().takes(&rec(CLOUDTRAIL_SOURCE, op)), "{op}");
            let arn = "arn:aws:cloudtrail:us-east-1:111122223333:trail/t";
            assert!(
                c.snapshot().takes(&rec_for(CLOUDTRAIL_SOURCE, op, arn)),
                "{op}"
            );
            // Another trail's change is judged by the selectors (none taken while stopped).
            assert!(
                !c.snapshot().takes(&rec_for(CLOUDTRAIL_SOURCE, op, "other")),
                "{op}"
            );
            assert!(
                !c.snapshot().takes(&rec_for(CLOUDTRAIL_SOURCE, op, "xt")),
                "{op}"
            );
        }
        assert!(
            !c.snapshot()
                .takes(&rec(CLOUDTRAIL_SOURCE, "DescribeTrails"))
        );
        assert!(c.logging_changed_at().is_some());
        drop(c);

        let again = TrailControl::load(journal.clone(), "t", Selectors::everything()).unwrap();
        assert!(!again.is_logging());
        assert_eq!(again.selectors(), selectors("app."));
        again.set_logging(true).await.unwrap();
        drop(again);

        // The operator then sets other selectors in the config: they apply.
        let edited = TrailControl::load(journal, "t", selectors("db.")).unwrap();
        assert!(edited.is_logging());
        assert_eq!(edited.selectors(), selectors("db."));
    }
}
