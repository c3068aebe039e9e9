//! The control socket: how `groundtrail-agent status` and Prometheus talk to a running agent.
//!
//! The buffer's sled directory is locked by the running agent, so `status` cannot open it
//! itself; it asks the agent over `<data_dir>/control.sock` (mode 0600: only the agent's own
//! user). `GET /status` answers JSON ([`StatusReport`]); `GET /metrics` answers the Prometheus
//! text format, also served on a loopback TCP address when `[control] metrics_listen` is set.
//! `POST /resend-set-aside` (`groundtrail-agent resend-set-aside`) asks the shipper to offer the
//! side tree's records to the collector now and answers with what came of it
//! ([`ResendReport`]); it is served on the socket only, never on the metrics address.

use std::sync::Arc;

use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::buffer::{Buffer, BufferStatus};
use crate::host_identity::HostIdentity;
use crate::http_util::{self, Handler};
use crate::metrics::{CollectorHealth, Metrics};
use crate::shipper::{ResendReport, ResendRequest};

/// What `groundtrail-agent status` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub agent: AgentInfo,
    pub buffer: BufferStatus,
    pub collector: serde_json::Value,
    pub shipped: serde_json::Value,
}

/// The running agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentInfo {
    pub host: String,
    pub account_id: String,
    pub region: String,
    pub version: String,
    pub pid: u32,
    pub uptime_seconds: u64,
}

/// Serves status and metrics.
pub struct Control {
    pub id: HostIdentity,
    pub buffer: Buffer,
    pub metrics: Arc<Metrics>,
    pub started: std::time::Instant,
    /// Resend requests to the shipper.
    pub resend: tokio::sync::mpsc::Sender<ResendRequest>,
}

impl Control {
    pub fn report(&self) -> StatusReport {
        use std::sync::atomic::Ordering::Relaxed;
        let m = &self.metrics;
        let health: CollectorHealth = m.health();
        StatusReport {
            agent: AgentInfo {
                host: self.id.host.clone(),
                account_id: self.id.account_id.clone(),
                region: self.id.region.clone(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                pid: std::process::id(),
                uptime_seconds: self.started.elapsed().as_secs(),
            },
            buffer: self.buffer.status(),
            collector: serde_json::to_value(health).unwrap_or_default(),
            shipped: serde_json::json!({
                "records": m.shipped_records.load(Relaxed),
                "duplicates": m.shipped_duplicates.load(Relaxed),
                "batches": m.shipped_batches.load(Relaxed),
                "bytes": m.shipped_bytes.load(Relaxed),
                "retries": m.retries.load(Relaxed),
                "rejected": m.rejected.load(Relaxed),
                "lastLagMs": m.last_lag_ms.load(Relaxed),
            }),
        }
    }

    /// Asks the shipper for a resend round and waits for its report.
    async fn resend(&self) -> http::Response<http_body_util::Full<bytes::Bytes>> {
        let (reply, answer) = tokio::sync::oneshot::channel::<ResendReport>();
        if self.resend.send(reply).await.is_err() {
            return http_util::json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ShipperStopped",
                "the shipper is not running (the agent is stopping)",
            );
        }
        match answer.await {
            Ok(report) => http_util::respond(
                StatusCode::OK,
                "application/json",
                serde_json::to_vec_pretty(&report).unwrap_or_default(),
            ),
            Err(_) => http_util::json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ShipperStopped",
                "the shipper stopped before the round ended",
            ),
        }
    }

    /// `/status` and `/metrics` (the control socket).
    pub fn handler(self: Arc<Self>, metrics_only: bool) -> Handler {
        Arc::new(move |req, _info| {
            let this = self.clone();
            Box::pin(async move {
                if req.method() == Method::POST
                    && req.uri().path() == "/resend-set-aside"
                    && !metrics_only
                {
                    return this.resend().await;
                }
                if req.method() != Method::GET {
                    return http_util::json_error(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "MethodNotAllowed",
                        "only GET is served here",
                    );
                }
                match req.uri().path() {
                    "/metrics" => {
                        let status = this.buffer.status();
                        http_util::respond(
                            StatusCode::OK,
                            "text/plain; version=0.0.4",
                            this.metrics.render(&status),
                        )
                    }
                    "/status" if !metrics_only => http_util::respond(
                        StatusCode::OK,
                        "application/json",
                        serde_json::to_vec_pretty(&this.report()).unwrap_or_default(),
                    ),
                    _ => http_util::json_error(StatusCode::NOT_FOUND, "NotFound", "no such path"),
                }
            })
        })
    }
}
