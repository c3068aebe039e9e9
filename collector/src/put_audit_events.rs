//! `PutAuditEvents` on the collector (`cloudtrail-data`, spec §4.3): the checks and the
//! conversion are [`groundtrail_common::audit_events`] (the agent's local endpoint uses the same
//! code); the accepted records go through [`Ingest::commit_records`], i.e. the same dedup,
//! journal commit and flush as agent batches, and the answer is sent only after that flush.
//!
//! - The events' account (`recipientAccountId` must equal it) is the access key's `account`,
//!   else `[trail] account_id`; with neither, the call is refused.
//! - `awsRegion` is the trail's home region; `eventSource` `groundtrail.<domain>` (the
//!   collector's own records) and `*.amazonaws.com` are refused (`InvalidEventSource`).
//! - A re-sent call yields the same `eventID`s (name-based), so it is stored once and answered
//!   with the same `successful` list.

use std::sync::Arc;

use groundtrail_common::audit_events::{self, Failure, PutAuditEventsResponse, Success};
use http::StatusCode;
use serde_json::Value;

use crate::config::Config;
use crate::ingest::Ingest;
use crate::sigv4::{ApiError, Caller};

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| groundtrail_common::percent::decode_query(v))
    })
}

/// Handles one verified call with the `write` scope.
pub async fn put_audit_events(
    ingest: &Arc<Ingest>,
    config: &Config,
    caller: &Caller,
    query: &str,
    body: &[u8],
) -> Result<Value, ApiError> {
    let channel = query_param(query, "channelArn").unwrap_or_default();
    if channel.is_empty() || channel.len() > 1024 {
        return Err(ApiError::bad(
            "ValidationException",
            "channelArn is required (1-1024 characters)",
        ));
    }
    if let Some(ext) = query_param(query, "externalId")
        && (ext.len() < 2 || ext.len() > 1224)
    {
        return Err(ApiError::bad(
            "ValidationException",
            "externalId must be 2-1224 characters",
        ));
    }
    let account = caller
        .account
        .clone()
        .unwrap_or_else(|| config.trail.account_id.clone());
    if account.is_empty() {
        return Err(ApiError::bad(
            "ValidationException",
            "the collector has no account for these events: set [trail] account_id or the access key's account",
        ));
    }
    let events = audit_events::parse_request(body)
        .map_err(|e| ApiError::new(e.status, e.code, e.message))?;
    let reserved = format!("groundtrail.{}", config.monitoring.domain);
    let ctx = audit_events::Context {
        account_id: &account,
        region: &config.trail.home_region,
        reserved_source: &reserved,
        owner: "the channel owner (the collector)",
        sender_uid: None,
    };
    let mut resp = PutAuditEventsResponse::default();
    let mut records = Vec::new();
    let mut ok = Vec::new();
    for ev in &events {
        match audit_events::convert(ev, &channel, &ctx) {
            Ok(r) => {
                ok.push(Success {
                    id: ev.id.clone(),
                    event_id: r.event_id.clone(),
                });
                records.push(r);
            }
            Err(e) => resp.failed.push(Failure {
                id: ev.id.clone(),
                error_code: e.code.to_string(),
                error_message: e.message,
            }),
        }
    }
    if !records.is_empty() {
        match ingest.commit_records(records).await {
            Ok(_) => resp.successful = ok,
            Err(e) => {
                tracing::error!("PutAuditEvents: {e}");
                for s in ok {
                    resp.failed.push(Failure {
                        id: s.id,
                        error_code: "InternalFailure".into(),
                        error_message: "the collector could not store the event; retry".into(),
                    });
                }
            }
        }
    }
    serde_json::to_value(&resp).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            e.to_string(),
        )
    })
}
