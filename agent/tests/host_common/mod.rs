//! What the host-log tests share: the agent's real auth-log handler on a fixed host, a line
//! feeder that drives it as the file follower does, and the optional shared samples.
//!
//! Why shared: `host_pack.rs` and `insights_sample.rs` must see the same records from the same
//! lines, or a test of the Insights detector on "real" records could drift from what the host
//! pack is checked against.

use std::path::Path;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use groundtrail_agent::host_identity::HostIdentity;
use groundtrail_agent::sources::auth_log::{self, AuthLogParser};
use groundtrail_agent::sources::host_accounts::Passwd;
use groundtrail_agent::sources::sshd_attempts::AttemptHandler;
use groundtrail_agent::sources::tail::{FileId, LineHandler, LineRef};
use groundtrail_agent::sources::{Env, Zone};
use groundtrail_common::Record;

/// The host `web1` of account 123456789012 in region `onprem-1`, clock in UTC.
pub fn env() -> Arc<Env> {
    let host = HostIdentity {
        host: "web1".into(),
        account_id: "123456789012".into(),
        region: "onprem-1".into(),
        domain: "onprem.internal".into(),
        partition: "aws".into(),
    };
    Arc::new(Env::new(
        &host,
        Passwd::from_pairs(&[(0, "root"), (1000, "alice"), (500, "vagrant")]),
        Zone::parse("UTC").unwrap(),
    ))
}

/// Every line of `text` through `handler` as the follower feeds it (byte offsets, then the
/// end-of-file flush).
pub fn run(mut handler: Box<dyn LineHandler>, text: &str) -> Vec<Record> {
    let file = FileId {
        dev: 1,
        ino: 1,
        head_len: 1,
        head: "0".into(),
    };
    let mut out = Vec::new();
    let mut offset = 0u64;
    for line in text.split_inclusive('\n') {
        let at = LineRef {
            host: "web1",
            file: &file,
            offset,
        };
        handler.line(line.trim_end_matches('\n').as_bytes(), at, &mut out);
        offset += line.len() as u64;
    }
    handler.flush(&mut out);
    out
}

/// The agent's handler of an auth.log (the parser, then the merge of one sshd attempt's lines);
/// year-less syslog times are placed in `year` (the reference is that year's 31 December).
pub fn auth_handler(year: i32) -> Box<dyn LineHandler> {
    let reference = Utc.with_ymd_and_hms(year, 12, 31, 0, 0, 0).unwrap();
    Box::new(AttemptHandler::new(
        AuthLogParser::new(env(), reference),
        &auth_log::STATS,
    ))
}

/// A sample of `/work/shared/host-logs`, or `None` (saying so) when it is absent: some samples'
/// terms forbid copying them into the repository.
pub fn shared(rel: &str) -> Option<String> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/host-logs")
        .join(rel);
    match std::fs::read(&p) {
        Ok(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        Err(_) => {
            eprintln!(
                "SKIPPED: {} not present (shared samples are optional)",
                p.display()
            );
            None
        }
    }
}
