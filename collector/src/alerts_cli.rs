//! `groundtrail-collector alerts`: lists alerts and rules and manages silences through the
//! collector's API ([`crate::detection_api`]), signed like `lookup-events` (SigV4 with
//! `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` when set, unsigned otherwise). Prints the
//! answer's JSON as the AWS CLI prints its own; exits 255 on an API error, as it does.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::{Map, json};

use crate::lookup_cli::{Client, parse_time};

/// `alerts`
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: AlertsCommand,
    /// The collector's URL.
    #[arg(long, global = true, default_value = "http://127.0.0.1:7480")]
    pub endpoint_url: String,
    /// The region the request is signed for (any: alerts are not regional).
    #[arg(long, global = true, env = "AWS_REGION")]
    pub region: Option<String>,
    /// CA bundle (PEM) to verify an https endpoint.
    #[arg(long, global = true)]
    pub ca_bundle: Option<PathBuf>,
}

/// What `alerts` does.
#[derive(Debug, clap::Subcommand)]
pub enum AlertsCommand {
    /// Alerts, newest first (every page, unless --max-results is given).
    List {
        /// Only this rule's alerts.
        #[arg(long)]
        rule_id: Option<String>,
        /// Only alerts raised at or after this time (ISO 8601 or epoch seconds).
        #[arg(long)]
        start_time: Option<String>,
        /// Only alerts raised at or before this time.
        #[arg(long)]
        end_time: Option<String>,
        /// One page of at most this many (1-1000), with its NextToken.
        #[arg(long)]
        max_results: Option<u32>,
        /// Continue from a previous page.
        #[arg(long)]
        next_token: Option<String>,
    },
    /// One alert, with its records and LookupEvents inputs.
    Get {
        /// The alert's id (`<rule id>/<eventID>`).
        id: String,
    },
    /// The rules loaded, and the last reload error if the running set is older than the files.
    Rules,
    /// Silences, active and scheduled.
    Silences,
    /// Keep a rule's alerts from the notifiers for a while (needs the `admin` scope).
    Silence {
        /// The rule to silence.
        #[arg(long)]
        rule_id: String,
        /// For how long from now (or from --start-time): 30m, 2h, 1d.
        #[arg(long = "for", conflicts_with = "end_time")]
        duration: Option<String>,
        /// Until this time (ISO 8601 or epoch seconds).
        #[arg(long)]
        end_time: Option<String>,
        /// From this time (default now).
        #[arg(long)]
        start_time: Option<String>,
        /// Why: kept with the silence and logged.
        #[arg(long)]
        reason: String,
    },
    /// End a silence (needs the `admin` scope).
    Unsilence {
        /// The silence's id.
        id: String,
    },
    /// Each notifier's queue: pending alerts, deliveries, last error.
    Status,
}

/// Runs the command; returns the exit code.
pub async fn run(args: Args) -> anyhow::Result<u8> {
    let client = Client::new(
        &args.endpoint_url,
        args.region.clone(),
        args.ca_bundle.as_deref(),
    )?;
    let mut input = Map::new();
    let mut paginate = false;
    let op = match args.command {
        AlertsCommand::List {
            rule_id,
            start_time,
            end_time,
            max_results,
            next_token,
        } => {
            if let Some(r) = rule_id {
                input.insert("RuleId".into(), json!(r));
            }
            if let Some(t) = start_time {
                input.insert("StartTime".into(), json!(parse_time(&t)?));
            }
            if let Some(t) = end_time {
                input.insert("EndTime".into(), json!(parse_time(&t)?));
            }
            paginate = max_results.is_none() && next_token.is_none();
            if let Some(n) = max_results {
                input.insert("MaxResults".into(), json!(n));
            } else {
                input.insert("MaxResults".into(), json!(1000));
            }
            if let Some(t) = next_token {
                input.insert("NextToken".into(), json!(t));
            }
            "ListAlerts"
        }
        AlertsCommand::Get { id } => {
            input.insert("AlertId".into(), json!(id));
            "GetAlert"
        }
        AlertsCommand::Rules => "ListRules",
        AlertsCommand::Silences => "ListSilences",
        AlertsCommand::Silence {
            rule_id,
            duration,
            end_time,
            start_time,
            reason,
        } => {
            input.insert("RuleId".into(), json!(rule_id));
            input.insert("Reason".into(), json!(reason));
            if let Some(t) = start_time {
                input.insert("StartTime".into(), json!(parse_time(&t)?));
            }
            match (duration, end_time) {
                (Some(d), None) => {
                    let secs = d
                        .parse::<crate::config::Duration>()
                        .map_err(anyhow::Error::msg)
                        .with_context(|| format!("--for {d:?}"))?
                        .get()
                        .as_secs();
                    input.insert("DurationSeconds".into(), json!(secs));
                }
                (None, Some(t)) => {
                    input.insert("EndTime".into(), json!(parse_time(&t)?));
                }
                _ => anyhow::bail!("say how long: --for <duration> or --end-time <time>"),
            }
            "CreateSilence"
        }
        AlertsCommand::Unsilence { id } => {
            input.insert("SilenceId".into(), json!(id));
            "DeleteSilence"
        }
        AlertsCommand::Status => "GetDeliveryStatus",
    };
    let target = format!("{}{op}", crate::detection_api::TARGET_PREFIX);
    client
        .call_and_print(&target, op, input, paginate.then_some("Alerts"))
        .await
}
