//! Measures what each rule language costs per record: the 14 CIS filter patterns, 14
//! EventBridge patterns (the same detections, written as EventBridge rules), and the 57
//! SigmaHQ CloudTrail rules, each evaluated against a mix of CloudTrail records.
//!
//! Run: `cargo run -p groundtrail-detection --example rule_cost --release [records]`.
//! Prints nanoseconds per record for each rule set (all rules of the set evaluated on every
//! record) and how many matches it found, so a change that breaks matching shows up too.

use groundtrail_detection::event_pattern::{EventPattern, cloudtrail_envelope};
use groundtrail_detection::filter_pattern::pack::cis_cloudwatch;
use groundtrail_detection::sigma::{SigmaSet, load_dir};
use serde_json::{Value, json};
use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

fn record(i: usize) -> Value {
    let names = [
        ("ec2.amazonaws.com", "DescribeInstances"),
        ("s3.amazonaws.com", "GetObject"),
        ("iam.amazonaws.com", "PutUserPolicy"),
        ("sts.amazonaws.com", "AssumeRole"),
        ("signin.amazonaws.com", "ConsoleLogin"),
        ("kms.amazonaws.com", "Decrypt"),
        ("cloudtrail.amazonaws.com", "StopLogging"),
        ("ec2.amazonaws.com", "AuthorizeSecurityGroupIngress"),
    ];
    let (source, name) = names[i % names.len()];
    json!({
        "eventVersion": "1.09",
        "userIdentity": {"type": if i.is_multiple_of(97) { "Root" } else { "IAMUser" },
                         "principalId": "AIDAEXAMPLE", "arn": "arn:aws:iam::123456789012:user/alice",
                         "accountId": "123456789012", "accessKeyId": "AKIAEXAMPLE", "userName": "alice"},
        "eventTime": "2026-12-07T04:00:00Z",
        "eventSource": source,
        "eventName": name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": format!("198.51.100.{}", i % 250),
        "userAgent": "aws-cli/2.15.0 Python/3.11.6 Linux/6.5 exe/x86_64",
        "errorCode": if i.is_multiple_of(13) { Value::from("AccessDenied") } else { Value::Null },
        "requestParameters": {"bucketName": "logs", "key": format!("obj/{i}")},
        "responseElements": null,
        "requestID": format!("req-{i}"),
        "eventID": format!("00000000-0000-4000-8000-{i:012}"),
        "readOnly": i.is_multiple_of(2),
        "eventType": if name == "ConsoleLogin" { "AwsConsoleSignIn" } else { "AwsApiCall" },
        "managementEvent": true,
        "recipientAccountId": "123456789012",
        "eventCategory": "Management"
    })
}

fn time<F: FnMut(&Value) -> usize>(label: &str, records: &[Value], mut f: F) {
    let start = Instant::now();
    let mut matches = 0;
    for r in records {
        matches += f(black_box(r));
    }
    let ns = start.elapsed().as_nanos() as f64 / records.len() as f64;
    println!("{label:<44} {ns:>10.0} ns/record   {matches} matches");
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(50_000);
    let records: Vec<Value> = (0..n).map(record).collect();

    let cis = cis_cloudwatch().expect("CIS pack");
    let eb: Vec<EventPattern> = [
        r#"{"detail": {"userIdentity": {"type": ["Root"]}, "eventType": [{"anything-but": "AwsServiceEvent"}]}}"#,
        r#"{"detail": {"errorCode": [{"suffix": "UnauthorizedOperation"}, {"prefix": "AccessDenied"}]}}"#,
        r#"{"detail-type": ["AWS Console Sign In via CloudTrail"], "detail": {"additionalEventData": {"MFAUsed": [{"anything-but": "Yes"}]}}}"#,
        r#"{"source": ["aws.iam"], "detail": {"eventName": [{"wildcard": "*Policy*"}]}}"#,
        r#"{"source": ["aws.cloudtrail"], "detail": {"eventName": ["CreateTrail", "UpdateTrail", "DeleteTrail", "StartLogging", "StopLogging"]}}"#,
        r#"{"detail": {"eventName": ["ConsoleLogin"], "errorMessage": ["Failed authentication"]}}"#,
        r#"{"source": ["aws.kms"], "detail": {"eventName": ["DisableKey", "ScheduleKeyDeletion"]}}"#,
        r#"{"source": ["aws.s3"], "detail": {"eventName": [{"prefix": "PutBucket"}, {"prefix": "DeleteBucket"}]}}"#,
        r#"{"source": ["aws.config"], "detail": {"eventName": ["StopConfigurationRecorder", "DeleteDeliveryChannel"]}}"#,
        r#"{"source": ["aws.ec2"], "detail": {"eventName": [{"wildcard": "*SecurityGroup*"}]}}"#,
        r#"{"source": ["aws.ec2"], "detail": {"eventName": [{"wildcard": "*NetworkAcl*"}]}}"#,
        r#"{"source": ["aws.ec2"], "detail": {"eventName": [{"wildcard": "*Gateway"}]}}"#,
        r#"{"detail": {"sourceIPAddress": [{"cidr": "203.0.113.0/24"}], "readOnly": [false]}}"#,
        r#"{"detail": {"errorCode": [{"exists": true}], "userIdentity": {"userName": [{"equals-ignore-case": "ALICE"}]}}}"#,
    ]
    .iter()
    .map(|p| EventPattern::parse(p).expect("pattern"))
    .collect();
    let sigma = load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("packs/sigma-aws-cloudtrail"))
        .expect("SigmaHQ rules");

    println!("{n} records");
    time("CIS filter patterns (14)", &records, |r| {
        cis.iter().filter(|rule| rule.pattern.matches(r)).count()
    });
    time(
        "EventBridge patterns (14), envelope included",
        &records,
        |r| {
            let envelope = cloudtrail_envelope(r);
            eb.iter()
                .filter(|p| p.matches_in_envelope(&envelope, r))
                .count()
        },
    );
    time("SigmaHQ CloudTrail rules (57), one by one", &records, |r| {
        sigma.iter().filter(|rule| rule.matches(r)).count()
    });
    let set = SigmaSet::new(sigma).expect("unique ids");
    time("SigmaHQ CloudTrail rules (57), SigmaSet", &records, |r| {
        set.matching(r).len()
    });
}
