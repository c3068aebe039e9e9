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
//!
//! No header can switch gap detection off. The numbers are the sender's claim: a batch that
//! jumps far ahead (say `X-Groundtrail-Seq-Last: 18446744073709551615`) is itself a gap and
//! written as one, and when the agent's next new records come with numbers below the last
//! one seen (the forged jump was not the agent's, or the host was reinstalled and counts from
//! 1 again) the tracker writes an `AgentSequenceReset` record and counts on from those
//! numbers, so later gaps are seen again. Resends of records already committed (all
//! duplicates) move nothing.
//!
//! The tracker holds at most `[limits] max_agents` names: each is state kept for ever, and
//! without client certificates any sender can invent names. A batch from a new name beyond
//! that is refused ([`TrackError::TooManyAgents`]).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use groundtrail_common::time::{json_time, parse_json_time};
use groundtrail_common::{Record, UserIdentity};
use serde_json::json;

use crate::internal_events::{AgentAudit, InternalEvent};
use crate::journal::{AgentState, CommitOutcome, Journal, JournalError, Prepared};

/// Why a batch could not be committed by the tracker.
#[derive(Debug, thiserror::Error)]
pub enum TrackError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A new agent name while `max` are tracked already.
    #[error("the collector already tracks {0} agents ([limits] max_agents)")]
    TooManyAgents(usize),
}

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
    /// Most agent names tracked.
    max_agents: usize,
}

/// Whether any of `records` is not yet in the journal (a resend of committed records is not).
fn has_new(journal: &Journal, records: &[Record]) -> Result<bool, JournalError> {
    for r in records {
        if !journal.is_known(&r.event_time, &r.event_id)? {
            return Ok(true);
        }
    }
    Ok(false)
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
            max_agents: usize::MAX,
        })
    }

    /// Caps the number of agent names tracked (`[limits] max_agents`). Names already in the
    /// journal stay tracked even beyond it.
    pub fn with_max_agents(mut self, max: usize) -> AgentTracker {
        self.max_agents = max.max(1);
        self
    }

    /// Whether a batch from `agent` can be tracked (it is known, or there is room for it).
    pub fn admits(&self, agent: &str) -> Result<(), TrackError> {
        let agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if agents.contains_key(agent) || agents.len() < self.max_agents {
            Ok(())
        } else {
            Err(TrackError::TooManyAgents(self.max_agents))
        }
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
    ) -> Result<CommitOutcome, TrackError> {
        // Serializing the records is most of the work and needs no lock: only deciding on a
        // gap and committing must be serialized per tracker.
        let mut prepared = Prepared::default();
        for r in &records {
            prepared.push(r);
        }
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if !agents.contains_key(agent) && agents.len() >= self.max_agents {
            return Err(TrackError::TooManyAgents(self.max_agents));
        }
        let old = agents.get(agent).cloned().unwrap_or_default();
        let mut state = old.clone();
        if let Some(first) = records.first() {
            state.account = first.account().to_string();
            state.region = first.aws_region.clone();
        }
        state.last_seen = json_time(now);
        state.silent_reported = false;
        let mut audit = None;
        if let Some((first, last)) = seq {
            state.last_seq = Some(match old.last_seq {
                None => last,
                Some(prev) if first > prev.saturating_add(1) => {
                    if !state.account.is_empty() {
                        let missing = first - prev - 1;
                        audit = Some((
                            "AgentSequenceGap",
                            format!(
                                "records {}..={} ({missing}) never arrived",
                                prev + 1,
                                first - 1
                            ),
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
                    last
                }
                // Wholly below the last number seen, yet new records: the numbering went
                // back (a reinstalled agent, or an earlier batch's numbers were not the
                // agent's). Count on from here so that later gaps are seen again.
                Some(prev) if last < prev && has_new(journal, &records)? => {
                    if !state.account.is_empty() {
                        audit = Some((
                            "AgentSequenceReset",
                            format!("sequence went back from {prev} to {first}..={last}"),
                        ));
                        prepared.push(&self.audit_record(
                            "AgentSequenceReset",
                            &state.account,
                            &state.region,
                            json!({
                                "agent": agent,
                                "previousLastSequence": prev,
                                "firstSequence": first,
                                "lastSequence": last,
                            }),
                        ));
                    }
                    last
                }
                Some(prev) => prev.max(last),
            });
        }
        let outcome =
            journal.commit_prepared(prepared, &[(agent.to_string(), state.clone())], now)?;
        agents.insert(agent.to_string(), state);
        if let Some((event_name, detail)) = audit {
            AgentAudit {
                agent,
                event_name,
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
    fn a_forged_huge_sequence_number_does_not_switch_gap_detection_off() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("j")).unwrap();
        let tracker = AgentTracker::load(&journal, "x", Duration::from_secs(60)).unwrap();
        let names = |out: &CommitOutcome| -> Vec<String> {
            out.committed
                .iter()
                .map(|p| Record::from_json(&p.json).unwrap().event_name)
                .collect()
        };
        tracker
            .commit_batch(&journal, "web-1", Some((1, 1)), vec![record(1)], t(0))
            .unwrap();
        // The forgery is itself reported as a gap.
        let out = tracker
            .commit_batch(
                &journal,
                "web-1",
                Some((u64::MAX, u64::MAX)),
                vec![record(2)],
                t(1),
            )
            .unwrap();
        assert_eq!(names(&out), ["T", "AgentSequenceGap"]);
        // The real agent goes on from 2: the reset is recorded once and counting resumes.
        let out = tracker
            .commit_batch(&journal, "web-1", Some((2, 2)), vec![record(3)], t(2))
            .unwrap();
        assert_eq!(names(&out), ["T", "AgentSequenceReset"]);
        let out = tracker
            .commit_batch(&journal, "web-1", Some((3, 3)), vec![record(4)], t(3))
            .unwrap();
        assert_eq!(names(&out), ["T"]);
        // ... so a real gap afterwards is seen.
        let out = tracker
            .commit_batch(&journal, "web-1", Some((9, 9)), vec![record(5)], t(4))
            .unwrap();
        assert_eq!(names(&out), ["T", "AgentSequenceGap"]);
        // A resend of committed records moves nothing.
        let out = tracker
            .commit_batch(&journal, "web-1", Some((3, 3)), vec![record(4)], t(5))
            .unwrap();
        assert!(out.committed.is_empty());
        let out = tracker
            .commit_batch(&journal, "web-1", Some((10, 10)), vec![record(6)], t(6))
            .unwrap();
        assert_eq!(names(&out), ["T"]);
    }

    #[test]
    fn new_agent_names_stop_at_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("j")).unwrap();
        let tracker = AgentTracker::load(&journal, "x", Duration::from_secs(60))
            .unwrap()
            .with_max_agents(1);
        tracker
            .commit_batch(&journal, "a", None, vec![record(1)], t(0))
            .unwrap();
        assert!(matches!(
            tracker.commit_batch(&journal, "b", None, vec![record(2)], t(0)),
            Err(TrackError::TooManyAgents(1))
        ));
        assert!(tracker.admits("a").is_ok() && tracker.admits("b").is_err());
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
