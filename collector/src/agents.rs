//! Watching agents: sequence gaps and silence become records in the trail.
//!
//! Each agent numbers its records (`X-Groundtrail-Seq-First`/`-Last`). When a batch starts
//! past the last number seen plus one, records were lost between agent and collector (a
//! damaged buffer, a drop policy, a reinstalled host), and that loss itself is written to the
//! trail as an `AgentSequenceGap` record — in the same journal batch as the records that
//! revealed it, so the gap is committed exactly when its evidence is. An agent silent for
//! longer than `[monitoring] agent_silence` (counted from the collector's own start at the
//! earliest) gets one `AgentSilent` record until it speaks again. Both go to the agent's last account and region, with `eventSource`
//! `groundtrail.<domain>`.
//!
//! The tracker's mutex is held across "read state, decide, commit": two batches of one agent
//! cannot both see the old sequence number.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use groundtrail_common::time::{json_time, parse_json_time};
use groundtrail_common::{Record, UserIdentity};
use serde_json::json;

use crate::internal_events::{AgentAudit, InternalEvent};
use crate::journal::{AgentState, CommitOutcome, Journal, JournalError, Prepared};

/// Per-agent state, mirrored in the journal.
#[derive(Debug)]
pub struct AgentTracker {
    agents: Mutex<BTreeMap<String, AgentState>>,
    /// `groundtrail.<domain>`: the eventSource of audit records.
    source: String,
    silence: Duration,
    /// When this collector started: silence is counted from here at the earliest, so a
    /// collector that was itself down does not blame every agent for the gap it caused.
    started: DateTime<Utc>,
}

impl AgentTracker {
    /// Loads the agents' state from the journal.
    pub fn load(
        journal: &Journal,
        domain: &str,
        silence: Duration,
    ) -> Result<AgentTracker, JournalError> {
        Ok(AgentTracker {
            agents: Mutex::new(journal.agents()?),
            source: format!("groundtrail.{domain}"),
            silence,
            started: groundtrail_common::time::now_secs(),
        })
    }

    fn audit_record(
        &self,
        name: &str,
        account: &str,
        region: &str,
        params: serde_json::Value,
    ) -> Record {
        let mut r = Record::new(
            self.source.clone(),
            name,
            "AwsServiceEvent",
            region,
            account,
        );
        r.user_identity = Some(UserIdentity {
            identity_type: Some("AWSService".into()),
            invoked_by: Some(self.source.clone()),
            ..UserIdentity::default()
        });
        r.source_ip_address = Some(self.source.clone());
        r.user_agent = Some(self.source.clone());
        r.read_only = Some(false);
        r.request_parameters = Some(params);
        r
    }

    /// Commits one batch of `agent` (already validated and authorized), adding a gap record when
    /// `seq` shows missing numbers, and the agent's new state, in one journal batch. The caller
    /// flushes.
    pub fn commit_batch(
        &self,
        journal: &Journal,
        agent: &str,
        seq: Option<(u64, u64)>,
        records: Vec<Record>,
        now: DateTime<Utc>,
    ) -> Result<CommitOutcome, JournalError> {
        // Serializing the records is most of the work and needs no lock: only deciding on a
        // gap and committing must be serialized per tracker.
        let mut prepared = Prepared::default();
        for r in &records {
            prepared.push(r);
        }
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        let old = agents.get(agent).cloned().unwrap_or_default();
        let mut state = old.clone();
        if let Some(first) = records.first() {
            state.account = first.account().to_string();
            state.region = first.aws_region.clone();
        }
        state.last_seen = json_time(now);
        state.silent_reported = false;
        let mut gap = None;
        if let Some((first, last)) = seq {
            if let Some(prev) = old.last_seq
                && first > prev.saturating_add(1)
                && !state.account.is_empty()
            {
                {
                    let missing = first - prev - 1;
                    gap = Some(format!(
                        "records {}..={} ({missing}) never arrived",
                        prev + 1,
                        first - 1
                    ));
                    prepared.push(&self.audit_record(
                        "AgentSequenceGap",
                        &state.account,
                        &state.region,
                        json!({
                            "agent": agent,
                            "firstMissingSequence": prev + 1,
                            "lastMissingSequence": first - 1,
                            "missingCount": missing,
                        }),
                    ));
                }
            }
            state.last_seq = Some(old.last_seq.map_or(last, |p| p.max(last)));
        }
        let outcome =
            journal.commit_prepared(prepared, &[(agent.to_string(), state.clone())], now)?;
        agents.insert(agent.to_string(), state);
        if let Some(detail) = gap {
            AgentAudit {
                agent,
                event_name: "AgentSequenceGap",
                detail: &detail,
            }
            .emit();
        }
        Ok(outcome)
    }

    /// Writes `AgentSilent` for every agent silent longer than the limit and not yet reported.
    /// The caller flushes and hands the committed records to the batcher.
    pub fn check_silence(
        &self,
        journal: &Journal,
        now: DateTime<Utc>,
    ) -> Result<CommitOutcome, JournalError> {
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        let limit = chrono::Duration::from_std(self.silence).unwrap_or(chrono::Duration::MAX);
        let mut records = Vec::new();
        let mut states = Vec::new();
        for (name, state) in agents.iter() {
            let Some(seen) = parse_json_time(&state.last_seen) else {
                continue;
            };
            if state.silent_reported
                || state.account.is_empty()
                || now - seen.max(self.started) <= limit
            {
                continue;
            }
            records.push(self.audit_record(
                "AgentSilent",
                &state.account,
                &state.region,
                json!({
                    "agent": name,
                    "lastSeen": state.last_seen,
                    "silenceLimitSeconds": self.silence.as_secs(),
                    "lastSequence": state.last_seq,
                }),
            ));
            let mut s = state.clone();
            s.silent_reported = true;
            states.push((name.clone(), s));
        }
        if states.is_empty() {
            return Ok(CommitOutcome::default());
        }
        let outcome = journal.commit(&records, &states, now)?;
        for (name, s) in states {
            AgentAudit {
                agent: &name,
                event_name: "AgentSilent",
                detail: &format!("silent since {}", s.last_seen),
            }
            .emit();
            agents.insert(name, s);
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn record(n: u32) -> Record {
        let mut r = Record::new(
            "t.onprem.internal",
            "T",
            "AwsApiCall",
            "eu-west-1",
            "111122223333",
        );
        r.event_id = format!("00000000-0000-4000-8000-{n:012x}");
        r.user_identity = Some(UserIdentity::default());
        r
    }

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn a_gap_becomes_a_record_in_the_same_commit_and_survives_reload() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("j")).unwrap();
        let tracker =
            AgentTracker::load(&journal, "onprem.internal", Duration::from_secs(60)).unwrap();
        let out = tracker
            .commit_batch(
                &journal,
                "web-1",
                Some((1, 2)),
                vec![record(1), record(2)],
                t(0),
            )
            .unwrap();
        assert_eq!(out.committed.len(), 2);
        // Reload from disk: the tracker remembers the last sequence number.
        let tracker =
            AgentTracker::load(&journal, "onprem.internal", Duration::from_secs(60)).unwrap();
        let out = tracker
            .commit_batch(&journal, "web-1", Some((6, 6)), vec![record(6)], t(1))
            .unwrap();
        assert_eq!(out.committed.len(), 2, "the record and the gap record");
        let gap = Record::from_json(&out.committed[1].json).unwrap();
        assert_eq!(gap.event_name, "AgentSequenceGap");
        assert_eq!(gap.event_source, "groundtrail.onprem.internal");
        assert_eq!(gap.aws_region, "eu-west-1");
        let p = gap.request_parameters.unwrap();
        assert_eq!(
            (
                p["firstMissingSequence"].as_u64(),
                p["lastMissingSequence"].as_u64(),
                p["missingCount"].as_u64()
            ),
            (Some(3), Some(5), Some(3))
        );
        // A resend of old numbers is no gap.
        let out = tracker
            .commit_batch(&journal, "web-1", Some((6, 6)), vec![record(6)], t(2))
            .unwrap();
        assert_eq!((out.committed.len(), out.duplicates), (0, 1));
    }

    #[test]
    fn silence_counts_from_collector_start_at_the_earliest() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("j")).unwrap();
        let tracker = AgentTracker::load(&journal, "x", Duration::from_secs(60)).unwrap();
        // Last seen long before this collector started (it was down).
        let long_ago = Utc::now() - chrono::Duration::days(3);
        tracker
            .commit_batch(&journal, "web-1", None, vec![record(1)], long_ago)
            .unwrap();
        let tracker = AgentTracker::load(&journal, "x", Duration::from_secs(60)).unwrap();
        let started = tracker.started;
        assert!(
            tracker
                .check_silence(&journal, started + chrono::Duration::seconds(30))
                .unwrap()
                .committed
                .is_empty()
        );
        assert_eq!(
            tracker
                .check_silence(&journal, started + chrono::Duration::seconds(61))
                .unwrap()
                .committed
                .len(),
            1
        );
    }

    #[test]
    fn silence_is_reported_once_until_the_agent_speaks() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("j")).unwrap();
        let tracker = AgentTracker::load(&journal, "x", Duration::from_secs(60)).unwrap();
        tracker
            .commit_batch(&journal, "web-1", None, vec![record(1)], t(0))
            .unwrap();
        assert!(
            tracker
                .check_silence(&journal, t(60))
                .unwrap()
                .committed
                .is_empty()
        );
        let out = tracker.check_silence(&journal, t(61)).unwrap();
        assert_eq!(out.committed.len(), 1);
        let r = Record::from_json(&out.committed[0].json).unwrap();
        assert_eq!(r.event_name, "AgentSilent");
        assert!(
            tracker
                .check_silence(&journal, t(500))
                .unwrap()
                .committed
                .is_empty(),
            "once"
        );
        // Persisted: a restarted collector does not report it again.
        let tracker = AgentTracker::load(&journal, "x", Duration::from_secs(60)).unwrap();
        assert!(
            tracker
                .check_silence(&journal, t(600))
                .unwrap()
                .committed
                .is_empty()
        );
        tracker
            .commit_batch(&journal, "web-1", None, vec![record(2)], t(700))
            .unwrap();
        assert_eq!(
            tracker
                .check_silence(&journal, t(800))
                .unwrap()
                .committed
                .len(),
            1
        );
    }
}
