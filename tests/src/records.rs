//! Records and batches as an agent sends them: valid CloudTrail records of the test account and
//! region, ndjson and zstd bodies.

use groundtrail_common::{Record, UserIdentity};
use serde_json::Value;

use crate::{ACCOUNT, REGION};

/// A valid CloudTrail record for `account`/`region`, with a fresh `eventID`.
/// A record of the test account and region from `source`: `Describe` (read-only) or `Update`,
/// for tests of what event selectors take.
pub fn record_of(source: &str, read_only: bool) -> Value {
    let mut r = record(ACCOUNT, REGION);
    r["eventSource"] = source.into();
    r["eventName"] = if read_only { "Describe" } else { "Update" }.into();
    r["readOnly"] = read_only.into();
    r
}

pub fn record(account: &str, region: &str) -> Value {
    let mut r = Record::new(
        "sshd.onprem.internal",
        "ConsoleLogin",
        "AwsConsoleSignIn",
        region,
        account,
    );
    r.user_identity = Some(UserIdentity {
        identity_type: Some("IAMUser".into()),
        principal_id: Some("alice".into()),
        arn: Some(format!("arn:aws:iam::{account}:user/host-1/alice")),
        account_id: Some(account.into()),
        user_name: Some("alice".into()),
        ..UserIdentity::default()
    });
    r.source_ip_address = Some("192.0.2.10".into());
    r.read_only = Some(false);
    serde_json::from_slice(&r.to_json()).expect("a record is JSON")
}

/// `n` valid records for the test account and region.
pub fn records(n: usize) -> Vec<Value> {
    (0..n).map(|_| record(ACCOUNT, REGION)).collect()
}

/// Newline-delimited JSON.
pub fn ndjson(records: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        serde_json::to_writer(&mut out, r).expect("JSON");
        out.push(b'\n');
    }
    out
}

pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).expect("zstd")
}

/// The `eventID`s of `records`.
pub fn event_ids(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["eventID"].as_str().expect("eventID").to_string())
        .collect()
}
