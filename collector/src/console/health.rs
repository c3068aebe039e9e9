//! The health page: each agent's last contact, the trail's sequence-gap and silence records,
//! delivery and digest status per destination and region, delivery errors, and the newest
//! alerts and Insights records when those exist.
//!
//! Everything here is read from the stores the collector keeps anyway (the journal's agent
//! states, delivery status and digest chains, the event history, the alert store): the page
//! adds no bookkeeping, so what it shows is what `GetTrailStatus`, `LookupEvents` and the
//! alerts API answer too.

use serde_json::{Value, json};

use super::query::{self, Category, Filters};
use crate::alerts::AlertQuery;
use crate::config::Config;
use crate::detector::Detector;
use crate::history::History;
use crate::journal::Journal;

/// Records of each kind shown at most.
const SHOWN: usize = 20;

/// The health page's data.
pub fn health(
    config: &Config,
    journal: &Journal,
    history: &History,
    detector: Option<&Detector>,
    now: u64,
) -> Result<Value, String> {
    let retention = config.history.retention.get().as_secs();
    let silence = config.monitoring.agent_silence.get().as_secs();
    let agents: Vec<Value> = journal
        .agents()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(name, a)| {
            let seen = groundtrail_common::time::parse_json_time(&a.last_seen)
                .map(|t| t.timestamp().max(0) as u64);
            let quiet = seen.map(|s| now.saturating_sub(s));
            json!({
                "name": name,
                "lastSeen": a.last_seen,
                "silentFor": quiet,
                "silent": quiet.is_some_and(|q| q > silence),
                "lastSeq": a.last_seq,
                "account": a.account,
                "region": a.region,
            })
        })
        .collect();
    // The trail's own records about agents and the collector (`groundtrail.<domain>`).
    let source = format!("groundtrail.{}", config.monitoring.domain);
    let own = query::page(
        history,
        &Filters {
            event_source: Some(source.clone()),
            ..Filters::default()
        },
        SHOWN * 5,
        None,
        query::DEFAULT_BUDGET,
        now,
        retention,
    )
    .map_err(|e| e.to_string())?;
    let pick = |names: &[&str]| -> Vec<Value> {
        own.rows
            .iter()
            .filter(|r| {
                r.summary
                    .event_name
                    .as_deref()
                    .is_some_and(|n| names.contains(&n))
            })
            .take(SHOWN)
            .map(|r| {
                let rec: Value = serde_json::from_slice(&r.json).unwrap_or(Value::Null);
                json!({
                    "eventId": r.summary.event_id,
                    "eventTime": r.summary.event_time,
                    "eventName": r.summary.event_name,
                    "region": r.summary.region,
                    "agent": rec.pointer("/requestParameters/agent")
                        .or_else(|| rec.pointer("/userIdentity/userName")).cloned(),
                    "requestParameters": rec.get("requestParameters").cloned(),
                })
            })
            .collect()
    };
    let gaps = pick(&["AgentSequenceGap", "AgentSequenceReset"]);
    let silences = pick(&["AgentSilent"]);
    let status = journal.status().map_err(|e| e.to_string())?;
    let mut destinations = Vec::new();
    for d in config.effective_destinations() {
        let name = d.name();
        let chains = journal.chains(&name).map_err(|e| e.to_string())?;
        let undelivered = journal.undelivered(&name).map_err(|e| e.to_string())?.len();
        let pending_digests = journal
            .pending_digests(&name)
            .map_err(|e| e.to_string())?
            .len();
        let chains: Vec<Value> = chains
            .into_iter()
            .map(|((account, region), c)| {
                json!({
                    "account": account,
                    "region": region,
                    "lastDigestEnd": c.head.as_ref().map(|h| h.end_time.clone()),
                    "lastDigestKey": c.head.as_ref().map(|h| h.key.clone()),
                    "filesAwaitingDigest": c.waiting.len(),
                    "lastDelivered": c.waiting.values().map(|f| f.delivered_at.clone()).max(),
                })
            })
            .collect();
        destinations.push(json!({
            "name": name,
            "undeliveredFiles": undelivered,
            "pendingDigests": pending_digests,
            "chains": chains,
        }));
    }
    let time = |k: &str| {
        status
            .get(k)
            .and_then(|v| v.parse::<i64>().ok())
            .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
            .map(groundtrail_common::time::json_time)
    };
    let delivery = json!({
        "latestDelivery": time("LatestDeliveryTime"),
        "latestDigestDelivery": time("LatestDigestDeliveryTime"),
        "latestAttempt": time("LatestDeliveryAttemptTime"),
        "latestDeliveryError": status.get("LatestDeliveryError"),
        "latestDigestDeliveryError": status.get("LatestDigestDeliveryError"),
        "latestNotificationError": status.get("LatestNotificationError"),
    });
    let alerts = match detector {
        Some(d) => {
            let (list, _) = d
                .store()
                .list(&AlertQuery {
                    limit: SHOWN,
                    ..AlertQuery::default()
                })
                .map_err(|e| e.to_string())?;
            Some(
                list.into_iter()
                    .map(|a| {
                        json!({
                            "id": a.id, "rule": a.rule_title, "severity": a.severity,
                            "detectedAt": a.detected_at, "count": a.count,
                            "summary": a.summary, "eventIds": a.event_ids,
                            "silencedBy": a.silenced_by,
                        })
                    })
                    .collect::<Vec<_>>(),
            )
        }
        None => None,
    };
    let insights = if config.insights.enabled() {
        let p = query::page(
            history,
            &Filters {
                category: Category::Insight,
                ..Filters::default()
            },
            SHOWN,
            None,
            query::DEFAULT_BUDGET,
            now,
            retention,
        )
        .map_err(|e| e.to_string())?;
        Some(
            p.rows
                .iter()
                .map(|r| {
                    let rec: Value = serde_json::from_slice(&r.json).unwrap_or(Value::Null);
                    json!({
                        "eventId": r.summary.event_id,
                        "eventTime": r.summary.event_time,
                        "eventName": r.summary.event_name,
                        "eventSource": r.summary.event_source,
                        "insightType": rec.pointer("/insightDetails/insightType"),
                        "state": rec.pointer("/insightDetails/state"),
                    })
                })
                .collect::<Vec<_>>(),
        )
    } else {
        None
    };
    Ok(json!({
        "now": now,
        "agentSilence": silence,
        "agents": agents,
        "gaps": gaps,
        "silences": silences,
        "delivery": delivery,
        "destinations": destinations,
        "alerts": alerts,
        "insights": insights,
    }))
}
