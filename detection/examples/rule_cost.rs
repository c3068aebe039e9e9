//! Measures what each rule language costs per record: the 14 CIS filter patterns, 14
//! EventBridge patterns (the same detections, written as EventBridge rules), and the 57
//! SigmaHQ CloudTrail rules, each evaluated against a mix of CloudTrail records.
//!
//! The last line is the rule engine as the collector runs it: `Engine::evaluate` with all
//! built-in packs (CIS, host, SigmaHQ) loaded, on a stream that mixes those CloudTrail records
//! with host records shaped as the agent writes them (ssh failures and logins, sudo, packages,
//! file changes, systemd).
//!
//! Run: `cargo run -p groundtrail-detection --example rule_cost --release [records] [engine]`
//! (`engine`: only the engine lines, e.g. under a profiler).
//! Prints nanoseconds per record for each rule set (all rules of the set evaluated on every
//! record) and how many matches it found, so a change that breaks matching shows up too.

use groundtrail_detection::event_pattern::{EventPattern, cloudtrail_envelope};
use groundtrail_detection::filter_pattern::pack::cis_cloudwatch;
use groundtrail_detection::rules::{Engine, RuleSet};
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

/// A host record as the agent writes it (agent/src/sources): one second apart, a brute force
/// from a few addresses among ordinary activity.
fn host_record(i: usize) -> Value {
    let kinds = [
        ("sshd", "ConsoleLogin", "AwsConsoleSignIn", true),
        ("sshd", "ConsoleLogin", "AwsConsoleSignIn", false),
        ("sudo", "RunCommand", "AwsApiCall", false),
        ("packages", "InstallPackage", "AwsApiCall", false),
        ("files", "PutFile", "AwsServiceEvent", false),
        ("systemd", "StartService", "AwsApiCall", false),
        ("sshd", "Logout", "AwsConsoleSignIn", false),
    ];
    let (service, name, event_type, failed) = kinds[i % kinds.len()];
    let secs = i as u64;
    let mut r = json!({
        "eventVersion": "1.09",
        "userIdentity": {"type": "IAMUser", "principalId": "web1:alice",
                         "arn": "arn:aws:iam::123456789012:user/web1/alice",
                         "accountId": "123456789012", "userName": if i.is_multiple_of(11) { "root" } else { "alice" }},
        "eventTime": format!("2026-12-07T{:02}:{:02}:{:02}Z", (secs / 3600) % 24, (secs / 60) % 60, secs % 60),
        "eventSource": format!("{service}.onprem.internal"),
        "eventName": name,
        "awsRegion": "onprem-1",
        "sourceIPAddress": format!("203.0.113.{}", i % 7),
        "userAgent": service,
        "requestParameters": {"path": "/etc/hosts", "packageName": "curl", "unit": "nginx.service",
                              "command": "/bin/ls", "runAs": "root"},
        "responseElements": {"ConsoleLogin": if failed { "Failure" } else { "Success" }},
        "eventID": format!("10000000-0000-4000-8000-{i:012}"),
        "readOnly": false,
        "eventType": event_type,
        "recipientAccountId": "123456789012",
    });
    if failed {
        r["errorCode"] = json!("AccessDenied");
        r["errorMessage"] = json!("Failed authentication");
    }
    r
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
    let engine_only = std::env::args().nth(2).as_deref() == Some("engine");
    println!("{n} records");
    if !engine_only {
        languages(&records);
    }
    engine(n);
}

/// Each language's rule set on its own, every rule asked on every record.
fn languages(records: &[Value]) {
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

    time("CIS filter patterns (14)", records, |r| {
        cis.iter().filter(|rule| rule.pattern.matches(r)).count()
    });
    time(
        "EventBridge patterns (14), envelope included",
        records,
        |r| {
            let envelope = cloudtrail_envelope(r);
            eb.iter()
                .filter(|p| p.matches_in_envelope(&envelope, r))
                .count()
        },
    );
    time("SigmaHQ CloudTrail rules (57), one by one", records, |r| {
        sigma.iter().filter(|rule| rule.matches(r)).count()
    });
    let set = SigmaSet::new(sigma).expect("unique ids");
    time("SigmaHQ CloudTrail rules (57), SigmaSet", records, |r| {
        set.matching(r).len()
    });
}

/// The engine with all packs, on CloudTrail and host records mixed.
fn engine(n: usize) {
    let rules = RuleSet::load(&["cis".into(), "host".into(), "sigma".into()], None)
        .expect("built-in packs");
    let mixed: Vec<Value> = (0..n)
        .map(|i| {
            if i % 2 == 0 {
                record(i)
            } else {
                host_record(i)
            }
        })
        .collect();
    for pack in ["cis", "host", "sigma"] {
        let mut e = Engine::new(RuleSet::load(&[pack.into()], None).expect("pack"));
        time(&format!("Engine, {pack} pack only"), &mixed, |r| {
            e.evaluate(r).len()
        });
    }
    // Three passes, each with a fresh engine (same firings each time): on a shared machine the
    // fastest pass is the one least disturbed by other work.
    for pass in 1..=3 {
        let mut engine = Engine::new(rules.clone());
        let label = format!(
            "Engine, all packs ({} rules, {} unindexed), pass {pass}",
            rules.len(),
            rules.unindexed()
        );
        time(&label, &mixed, |r| engine.evaluate(r).len());
        if pass == 3 {
            let changes = engine.take_state_changes().len();
            println!(
                "  window state: {:?}, {changes} state changes",
                engine.stats()
            );
        }
    }
    // The passes above read each record cold: 50,000 records do not fit in the caches, so the
    // first field read of each record waits for memory. The collector evaluates a record right
    // after parsing it, with the record in cache. So: a first engine reads the record (warming
    // it), then a second, identical engine is timed on it alone.
    for pass in 1..=3 {
        let mut warm = Engine::new(rules.clone());
        let mut engine = Engine::new(rules.clone());
        let (mut ns, mut fired) = (0u128, 0);
        for r in &mixed {
            black_box(warm.evaluate(r));
            let start = Instant::now();
            fired += engine.evaluate(black_box(r)).len();
            ns += start.elapsed().as_nanos();
        }
        println!(
            "{:<44} {:>10.0} ns/record   {fired} matches",
            format!("Engine, all packs, record in cache, pass {pass}"),
            ns as f64 / mixed.len() as f64
        );
    }
    // Most records of a real trail fire nothing; this stream (dense with matches) fires on
    // most. The same records without those on which any rule fires:
    let mut probe = Engine::new(rules.clone());
    let quiet: Vec<Value> = mixed
        .into_iter()
        .filter(|r| probe.evaluate(r).is_empty())
        .collect();
    for pass in 1..=3 {
        let mut engine = Engine::new(rules.clone());
        let label = format!("Engine, all packs, records that fire nothing, pass {pass}");
        time(&label, &quiet, |r| engine.evaluate(r).len());
    }
}
