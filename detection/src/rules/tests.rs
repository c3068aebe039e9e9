//! The rule engine's guarantees (see the module docs), on the real packs and rule files on
//! disk.

use super::*;
use serde_json::{Value, json};
use std::path::Path;

fn packs(names: &[&str]) -> RuleSet {
    RuleSet::load(
        &names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        None,
    )
    .unwrap()
}

fn err(origin: &str, text: &str) -> String {
    RuleSet::from_text(origin, text).unwrap_err().to_string()
}

#[test]
fn all_packs_load_with_unique_ids() {
    let set = packs(&["cis", "host", "sigma", "sigma-low"]);
    let n = |origin: &str| set.rules().filter(|r| r.origin.starts_with(origin)).count();
    assert_eq!(n("pack:cis"), 14);
    assert_eq!(n("pack:sigma/"), 57);
    assert_eq!(n("pack:host"), 17);
    assert_eq!(set.len(), 14 + 57 + 17);
    // `sigma` is the rules of level medium and above, `sigma-low` the 13 others, among them
    // the AssumeRole rule that matches any call made with an assumed role.
    let medium_up = packs(&["sigma"]);
    let low = packs(&["sigma-low"]);
    assert_eq!((medium_up.len(), low.len()), (44, 13));
    assert!(medium_up.rules().all(|r| r.severity >= Severity::Medium));
    assert!(low.rules().all(|r| r.severity < Severity::Medium));
    assert!(low.get("905d389b-b853-46d0-9d3d-dea0d3a3cd49").is_some());
    let cis1 = set.get("CloudWatch.1").unwrap();
    assert_eq!(
        (cis1.severity, cis1.language),
        (Severity::High, Language::FilterPattern)
    );
    let brute = set.get("host-ssh-brute-force").unwrap();
    assert_eq!(brute.condition, ">= 5 in 300 s by $.sourceIPAddress");
    assert_eq!(brute.origin, "pack:host");
    let seq = set.get("host-ssh-login-after-failures").unwrap();
    assert_eq!(
        seq.condition,
        "a match after >= 3 matches of `after` within 600 s by $.sourceIPAddress"
    );
    assert!(set.rules().any(|r| r.language == Language::Sigma
        && r.origin == "pack:sigma/aws_cloudtrail_disable_logging.yml"));
    assert_eq!(Severity::High.to_string(), "high");
    assert_eq!(Language::EventPattern.to_string(), "event-pattern");
    // Only two rules are asked on every record: CloudWatch.2 (wildcard error codes) and the
    // Sigma IMDS rule (a regex on the ARN).
    let unkeyed: Vec<&str> = set
        .index()
        .unkeyed_slots()
        .iter()
        .map(|s| set.compiled()[(*s / 2) as usize].info.id.as_str())
        .collect();
    let imds = set
        .rules()
        .find(|r| r.origin == "pack:sigma/aws_cloudtrail_imds_malicious_usage.yml")
        .unwrap();
    assert_eq!(unkeyed, ["CloudWatch.2", imds.id.as_str()]);
    assert_eq!(set.unindexed(), 2);
}

#[test]
fn unknown_pack_and_duplicate_ids() {
    let e = RuleSet::load(&["nope".into()], None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "pack:nope: no such built-in pack; the packs are cis, host, sigma, sigma-low"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "rules:\n  - id: CloudWatch.3\n    title: t\n    severity: low\n    filter_pattern: '{ $.a = 1 }'\n",
    )
    .unwrap();
    let e = RuleSet::load(&["cis".into()], Some(dir.path())).unwrap_err();
    assert_eq!(e.rule.as_deref(), Some("CloudWatch.3"));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: rule `CloudWatch.3`: duplicate rule id: already defined in pack:cis",
            dir.path().join("a.yaml").display()
        )
    );
}

#[test]
fn a_directory_of_yaml_json_and_sigma_files_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    std::fs::write(
        p("b.json"),
        r#"{"rules": [{"id": "json-rule", "title": "J", "severity": "low",
            "event_pattern": {"detail": {"eventName": ["DeleteBucket"]}}}]}"#,
    )
    .unwrap();
    std::fs::write(
        p("a.yml"),
        "rules:\n  - id: yaml-rule\n    title: Y\n    severity: info\n    filter_pattern: '{ $.eventName = \"GetObject\" }'\n",
    )
    .unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("packs/sigma-aws-cloudtrail/aws_cloudtrail_disable_logging.yml"),
        p("c.yaml"),
    )
    .unwrap();
    std::fs::write(p("notes.txt"), "not a rule").unwrap();
    std::fs::create_dir(p("sub")).unwrap();
    std::fs::write(p("sub/x.yaml"), "garbage: [").unwrap();
    let set = RuleSet::load(&[], Some(dir.path())).unwrap();
    let ids: Vec<&str> = set.rules().map(|r| r.id.as_str()).collect();
    assert_eq!(ids[..2], ["yaml-rule", "json-rule"]);
    assert_eq!(set.len(), 3);
    let sigma = set.rules().nth(2).unwrap();
    assert_eq!(sigma.language, Language::Sigma);
    assert_eq!(sigma.origin, p("c.yaml").display().to_string());
    let mut e = Engine::new(set);
    let f = e.evaluate(&json!({"eventName": "StopLogging", "eventSource": "cloudtrail.amazonaws.com", "eventID": "e1", "eventTime": "2026-12-07T04:00:00Z"}));
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].id, format!("{}/e1", sigma_id(&e)));
}

fn sigma_id(e: &Engine) -> String {
    e.rules().rules().nth(2).unwrap().id.clone()
}

const GOOD: &str =
    "rules:\n  - id: ok\n    title: t\n    severity: low\n    filter_pattern: '{ $.a = 1 }'\n";

#[test]
fn error_yaml_syntax() {
    assert_eq!(
        err("r.yaml", "rules:\n  - id: [x\n"),
        "r.yaml: line 3, column 1: did not find expected ',' or ']' at line 3 column 1, while parsing a flow sequence at line 2 column 9"
    );
}

#[test]
fn error_unknown_field_names_rule_and_position() {
    let text = format!(
        "{GOOD}  - id: second\n    title: t\n    severity: low\n    filter_pattern: '{{ $.a = 1 }}'\n    thresold: {{count: 2, period: 1m}}\n"
    );
    assert_eq!(
        err("rules/x.yaml", &text),
        "rules/x.yaml: rule `second`: line 10, column 5: unknown field `thresold`, expected one of `id`, `title`, `severity`, `description`, `summary`, `filter_pattern`, `event_pattern`, `threshold`, `after`"
    );
}

#[test]
fn error_bad_filter_pattern_points_into_the_pattern() {
    let text = "rules:\n  - id: ssh-brute-force\n    title: t\n    severity: high\n    filter_pattern: '{ $.eventName = }'\n";
    let e = RuleSet::from_text("rules/ssh.yaml", text).unwrap_err();
    assert_eq!((e.line, e.column), (Some(5), Some(21)));
    assert_eq!(
        e.to_string(),
        "rules/ssh.yaml: rule `ssh-brute-force`: line 5, column 21: filter pattern: column 17: expected a value after the operator"
    );
}

#[test]
fn error_bad_event_pattern_names_the_path() {
    let text = "rules:\n  - id: ep\n    title: t\n    severity: high\n    event_pattern:\n      detail:\n        eventName: [{prefx: Put}]\n";
    assert_eq!(
        err("r.yaml", text),
        "r.yaml: rule `ep`: line 6, column 7: event pattern: at detail.eventName[0]: unknown operator \"prefx\""
    );
}

#[test]
fn error_rule_shape() {
    let no_pattern = "rules:\n  - id: a\n    title: t\n    severity: low\n";
    assert_eq!(
        err("r.yaml", no_pattern),
        "r.yaml: rule `a`: line 2, column 5: a rule needs exactly one of filter_pattern and event_pattern"
    );
    let both = "rules:\n  - id: a\n    title: t\n    severity: low\n    filter_pattern: '{ $.a = 1 }'\n    event_pattern: {x: [1]}\n";
    assert!(
        err("r.yaml", both)
            .ends_with("a rule has both filter_pattern and event_pattern; give exactly one")
    );
    let both_counts = format!(
        "{GOOD}    threshold: {{count: 2, period: 1m}}\n    after: {{filter_pattern: '{{ $.b = 1 }}', count: 1, within: 1m}}\n"
    );
    assert!(
        err("r.yaml", &both_counts).ends_with("a rule has either threshold or after, not both")
    );
    let bad_id = "rules:\n  - id: 'no spaces'\n    title: t\n    severity: low\n    filter_pattern: '{ $.a = 1 }'\n";
    assert_eq!(
        err("r.yaml", bad_id),
        "r.yaml: rule `no spaces`: line 2, column 9: rule id \"no spaces\": use letters, digits, '.', '_' and '-' only"
    );
    let bad_severity = "rules:\n  - id: a\n    title: t\n    severity: urgent\n    filter_pattern: '{ $.a = 1 }'\n";
    assert_eq!(
        err("r.yaml", bad_severity),
        "r.yaml: rule `a`: line 4, column 15: unknown variant `urgent`, expected one of `info`, `low`, `medium`, `high`, `critical`"
    );
    let unknown_top = "rule: []\n";
    assert!(
        err("r.yaml", unknown_top).starts_with("r.yaml: line 1, column 1: unknown field `rule`")
    );
}

#[test]
fn error_threshold_and_after_values() {
    let with = |extra: &str| err("r.yaml", &format!("{GOOD}{extra}"));
    assert_eq!(
        with("    threshold: {count: 5, period: 5 minutes}\n"),
        "r.yaml: rule `ok`: line 6, column 35: duration \"5 minutes\": write a whole number and s, m, h or d, e.g. 30s, 5m, 1h"
    );
    assert_eq!(
        with("    threshold: {count: 0, period: 5m}\n"),
        "r.yaml: rule `ok`: line 6, column 24: count 0: must be 1 to 1000"
    );
    assert_eq!(
        with("    threshold: {count: 5, period: 2d}\n"),
        "r.yaml: rule `ok`: line 6, column 35: duration \"2d\": at most 1d"
    );
    assert_eq!(
        with("    threshold: {count: 5, period: 5m, group_by: sourceIPAddress}\n"),
        "r.yaml: rule `ok`: line 6, column 49: filter pattern: column 1: a selector starts with '$', as in $.sourceIPAddress"
    );
    assert_eq!(
        with("    after: {count: 3, within: 10m}\n"),
        "r.yaml: rule `ok`: line 6, column 12: after needs exactly one of filter_pattern and event_pattern"
    );
    assert_eq!(
        with("    summary: '{count} from {grp}'\n"),
        "r.yaml: rule `ok`: line 6, column 14: summary: unknown placeholder {grp} (use {count}, {group}, {period}, {title} or a selector such as {$.sourceIPAddress})"
    );
}

#[test]
fn error_json_file_positions() {
    let text = "{\"rules\": [\n  {\"id\": \"j\", \"title\": \"t\", \"severity\": \"low\",\n   \"filter_pattern\": \"{ $.a = }\"}\n]}";
    assert_eq!(
        err("r.json", text),
        "r.json: rule `j`: line 3, column 32: filter pattern: column 9: expected a value after the operator"
    );
    assert_eq!(
        err("r.json", "{\"rules\": [}"),
        "r.json: line 1, column 12: expected value"
    );
}

#[test]
fn error_sigma_file_for_another_logsource() {
    let text = "title: x\nid: 11111111-1111-1111-1111-111111111111\nlogsource:\n  product: windows\n  service: security\ndetection:\n  sel:\n    EventID: 4625\n  condition: sel\n";
    assert_eq!(
        err("win.yml", text),
        "win.yml: sigma: logsource is product=Some(\"windows\") service=Some(\"security\"), not product=aws service=cloudtrail"
    );
}

// ---- the engine ----

fn rec(i: usize, name: &str, ip: &str, time: &str, ok: bool) -> Value {
    let mut r = json!({
        "eventVersion": "1.09",
        "eventTime": time,
        "eventSource": "sshd.onprem.internal",
        "eventName": name,
        "eventID": format!("ev-{i}"),
        "sourceIPAddress": ip,
        "userIdentity": {"type": "IAMUser", "userName": "root"},
        "responseElements": {"ConsoleLogin": if ok { "Success" } else { "Failure" }},
    });
    if !ok {
        r["errorCode"] = json!("AccessDenied");
    }
    r
}

fn t(secs: u32) -> String {
    format!("2026-12-07T04:{:02}:{:02}Z", secs / 60, secs % 60)
}

fn ids(f: &[Firing]) -> Vec<String> {
    f.iter().map(|f| f.id.clone()).collect()
}

#[test]
fn single_match_firing() {
    let mut e = Engine::new(packs(&["host"]));
    let f = e.evaluate(&rec(1, "ConsoleLogin", "10.0.0.1", &t(0), true));
    assert_eq!(ids(&f), ["host-root-login/ev-1"]);
    assert_eq!(f[0].count, 1);
    assert_eq!(f[0].event_ids, ["ev-1"]);
    assert_eq!(f[0].summary, "root logged in to - from 10.0.0.1");
    assert_eq!(f[0].rule.severity, Severity::Medium);
}

#[test]
fn threshold_fires_once_per_burst_per_group() {
    let mut e = Engine::new(packs(&["host"]));
    let mut fired = Vec::new();
    for i in 0..12 {
        // Two addresses interleaved; one failure every 10 s each.
        let ip = if i % 2 == 0 {
            "203.0.113.9"
        } else {
            "198.51.100.7"
        };
        fired.extend(e.evaluate(&rec(i, "ConsoleLogin", ip, &t(i as u32 * 5), false)));
    }
    assert_eq!(
        ids(&fired),
        ["host-ssh-brute-force/ev-8", "host-ssh-brute-force/ev-9"]
    );
    let f = &fired[0];
    assert_eq!(f.count, 5);
    assert_eq!(
        f.group,
        Some(("$.sourceIPAddress".into(), "203.0.113.9".into()))
    );
    assert_eq!(f.event_ids, ["ev-0", "ev-2", "ev-4", "ev-6", "ev-8"]);
    assert_eq!(
        (f.first_event_time.as_str(), f.last_event_time.as_str()),
        ("2026-12-07T04:00:00Z", "2026-12-07T04:00:40Z")
    );
    assert_eq!(
        f.summary,
        "5 failed ssh logins from 203.0.113.9 within 300 s"
    );
    // Ten minutes later the window has emptied: the next burst fires again.
    for i in 100..105 {
        fired.extend(e.evaluate(&rec(
            i,
            "ConsoleLogin",
            "203.0.113.9",
            &t(700 + i as u32),
            false,
        )));
    }
    assert_eq!(fired.last().unwrap().id, "host-ssh-brute-force/ev-104");
    assert_eq!(fired.len(), 3);
}

#[test]
fn a_record_without_the_group_field_is_not_counted() {
    let mut e = Engine::new(packs(&["host"]));
    for i in 0..10 {
        let mut r = rec(i, "ConsoleLogin", "x", &t(i as u32), false);
        r.as_object_mut().unwrap().remove("sourceIPAddress");
        assert!(e.evaluate(&r).is_empty());
    }
    assert_eq!(e.stats().groups, 0);
}

#[test]
fn login_after_failures_sequence() {
    let mut e = Engine::new(packs(&["host"]));
    let ip = "203.0.113.9";
    assert!(
        e.evaluate(&rec(0, "ConsoleLogin", ip, &t(0), false))
            .is_empty()
    );
    assert!(
        e.evaluate(&rec(1, "ConsoleLogin", ip, &t(10), false))
            .is_empty()
    );
    // Only two failures so far: a success from the address does not fire the sequence.
    let f = e.evaluate(&rec(2, "ConsoleLogin", ip, &t(20), true));
    assert_eq!(ids(&f), ["host-root-login/ev-2"]);
    assert!(
        e.evaluate(&rec(3, "ConsoleLogin", ip, &t(30), false))
            .is_empty()
    );
    // A success from another address does not count this address's failures.
    let f = e.evaluate(&rec(4, "ConsoleLogin", "10.0.0.1", &t(40), true));
    assert_eq!(ids(&f), ["host-root-login/ev-4"]);
    let f = e.evaluate(&rec(5, "ConsoleLogin", ip, &t(50), true));
    assert_eq!(
        ids(&f),
        ["host-ssh-login-after-failures/ev-5", "host-root-login/ev-5"]
    );
    assert_eq!(f[0].count, 3);
    assert_eq!(f[0].event_ids, ["ev-0", "ev-1", "ev-3", "ev-5"]);
    assert_eq!(
        f[0].summary,
        "root logged in from 203.0.113.9 after 3 failed attempts within 600 s"
    );
    // The failures were used up.
    let f = e.evaluate(&rec(6, "ConsoleLogin", ip, &t(60), true));
    assert_eq!(ids(&f), ["host-root-login/ev-6"]);
}

/// A stream of mixed records for equivalence and determinism checks.
fn stream(n: usize) -> Vec<Value> {
    let names = [
        ("sshd.onprem.internal", "ConsoleLogin"),
        ("signin.amazonaws.com", "ConsoleLogin"),
        ("cloudtrail.amazonaws.com", "StopLogging"),
        ("iam.amazonaws.com", "PutUserPolicy"),
        ("ec2.amazonaws.com", "AuthorizeSecurityGroupIngress"),
        ("kms.amazonaws.com", "ScheduleKeyDeletion"),
        ("s3.amazonaws.com", "PutBucketPolicy"),
        ("iam.onprem.internal", "AddUserToGroup"),
        ("files.onprem.internal", "PutFile"),
        ("groundtrail.onprem.internal", "AgentSilent"),
        ("sudo.onprem.internal", "RunCommand"),
        ("ec2.amazonaws.com", "DescribeInstances"),
        ("guardduty.amazonaws.com", "DeleteDetector"),
        ("iam.amazonaws.com", "CreateAccessKey"),
    ];
    (0..n)
        .map(|i| {
            let (src, name) = names[i % names.len()];
            let mut r = json!({
                "eventTime": t((i / 3) as u32 % 3600),
                "eventSource": src, "eventName": name, "eventID": format!("ev-{i}"),
                "eventType": if name == "ConsoleLogin" { "AwsConsoleSignIn" } else { "AwsApiCall" },
                "sourceIPAddress": format!("203.0.113.{}", i % 3),
                "userIdentity": {"type": if i % 17 == 0 { "Root" } else { "IAMUser" }, "userName": if i % 5 == 0 { "root" } else { "alice" }},
                "requestParameters": {"groupName": "wheel", "path": "/etc/sudoers", "agent": "web1"},
                "responseElements": {"ConsoleLogin": if i % 4 == 0 { "Success" } else { "Failure" }},
                "additionalEventData": {"MFAUsed": "No"},
            });
            if i % 4 != 0 {
                r["errorCode"] = json!("AccessDenied");
                r["errorMessage"] = json!("Failed authentication");
            }
            r
        })
        .collect()
}

/// The index only picks candidates: every single-match rule fires in the engine exactly when
/// its pattern matches alone.
#[test]
fn the_index_never_hides_a_match() {
    let set = packs(&["cis", "host", "sigma", "sigma-low"]);
    let records = stream(2000);
    let mut e = Engine::new(set.clone());
    let mut total = 0;
    for r in &records {
        let fired: std::collections::BTreeSet<String> =
            e.evaluate(r).into_iter().map(|f| f.rule.id).collect();
        let mut env = set::Envelope::default();
        for c in set.compiled() {
            if matches!(c.counting, file::Counting::Each) {
                let alone = c.matcher.matches(r, &mut env);
                assert_eq!(fired.contains(&c.info.id), alone, "{} on {r}", c.info.id);
                total += usize::from(alone);
            }
        }
    }
    assert!(total > 1000, "the stream should match many rules: {total}");
}

#[test]
fn deterministic_and_resumable_from_persisted_state() {
    let set = packs(&["cis", "host", "sigma", "sigma-low"]);
    let records = stream(3000);
    let run = |rs: &[Value], e: &mut Engine| -> Vec<String> {
        rs.iter()
            .flat_map(|r| e.evaluate(r))
            .map(|f| f.id)
            .collect()
    };
    let mut a = Engine::new(set.clone());
    let all = run(&records, &mut a);
    let mut b = Engine::new(set.clone());
    assert_eq!(run(&records, &mut b), all, "same input, same firings");
    assert!(all.iter().any(|id| id.starts_with("host-ssh-brute-force/")));
    assert!(
        all.iter()
            .any(|id| id.starts_with("host-ssh-login-after-failures/"))
    );

    // Stop half way; persist; a new engine restores and continues.
    let mut store = std::collections::BTreeMap::new();
    let mut first = Engine::new(set.clone());
    let mut got = run(&records[..1500], &mut first);
    for (k, v) in first.take_state_changes() {
        match v {
            Some(v) => store.insert(k, v),
            None => store.remove(&k),
        };
    }
    assert!(!store.is_empty());
    assert!(
        first.take_state_changes().is_empty(),
        "changes are taken once"
    );
    let mut second = Engine::new(set.clone());
    second.restore_state(store.clone());
    got.extend(run(&records[1500..], &mut second));
    assert_eq!(
        got, all,
        "restored state gives the firings of an uninterrupted run"
    );

    // Without the state, the resumed half differs: the test can fail.
    let mut cold = Engine::new(set);
    let mut without = run(
        &records[..1500],
        &mut Engine::new(packs(&["cis", "host", "sigma", "sigma-low"])),
    );
    without.extend(run(&records[1500..], &mut cold));
    assert_ne!(without, all);
}

#[test]
fn state_of_unknown_or_changed_rules_is_ignored_and_deleted() {
    let mut e = Engine::new(packs(&["host"]));
    for i in 0..3 {
        e.evaluate(&rec(i, "ConsoleLogin", "203.0.113.9", &t(i as u32), false));
    }
    let changes = e.take_state_changes();
    let keys: Vec<String> = changes
        .iter()
        .map(|(k, _)| String::from_utf8_lossy(k).replace('\0', "|"))
        .collect();
    assert_eq!(
        keys,
        [
            "|clock",
            "host-ssh-brute-force|203.0.113.9",
            "host-ssh-login-after-failures|203.0.113.9"
        ]
    );
    let stored: Vec<(Vec<u8>, Vec<u8>)> =
        changes.into_iter().map(|(k, v)| (k, v.unwrap())).collect();

    // The same id with another definition: not resumed, and deleted.
    let changed = RuleSet::from_text(
        "r.yaml",
        "rules:\n  - id: host-ssh-brute-force\n    title: t\n    severity: high\n    filter_pattern: '{ $.errorCode = \"AccessDenied\" }'\n    threshold: {count: 5, period: 10m, group_by: $.sourceIPAddress}\n",
    )
    .unwrap();
    let mut e2 = Engine::new(changed);
    e2.restore_state(stored.clone());
    assert_eq!(e2.stats().groups, 0);
    let deletes = e2.take_state_changes();
    assert_eq!(deletes.len(), 2);
    assert!(deletes.iter().all(|(_, v)| v.is_none()));

    // The same rules: resumed, two more failures fire.
    let mut e3 = Engine::new(packs(&["host"]));
    e3.restore_state(stored);
    assert_eq!(e3.stats().groups, 2);
    assert!(
        e3.evaluate(&rec(3, "ConsoleLogin", "203.0.113.9", &t(3), false))
            .is_empty()
    );
    let f = e3.evaluate(&rec(4, "ConsoleLogin", "203.0.113.9", &t(4), false));
    assert_eq!(ids(&f), ["host-ssh-brute-force/ev-4"]);
}

#[test]
fn replace_rules_keeps_unchanged_windows_only() {
    let mut e = Engine::new(packs(&["host"]));
    for i in 0..4 {
        e.evaluate(&rec(i, "ConsoleLogin", "203.0.113.9", &t(i as u32), false));
    }
    e.take_state_changes();
    // Reload the same pack plus CIS: brute-force state is kept, the fifth failure fires.
    e.replace_rules(packs(&["host", "cis"]));
    assert!(e.take_state_changes().is_empty());
    let f = e.evaluate(&rec(4, "ConsoleLogin", "203.0.113.9", &t(4), false));
    assert!(ids(&f).contains(&"host-ssh-brute-force/ev-4".to_string()));
    // Reload with the rule redefined: its state is dropped and deleted.
    let redefined = "rules:\n  - id: host-ssh-brute-force\n    title: t\n    severity: high\n    filter_pattern: '{ $.errorCode = \"AccessDenied\" }'\n    threshold: {count: 2, period: 1m}\n";
    e.replace_rules(RuleSet::from_text("r.yaml", redefined).unwrap());
    let changes = e.take_state_changes();
    assert!(
        changes
            .iter()
            .any(|(k, v)| k.starts_with(b"host-ssh-brute-force\0") && v.is_none())
    );
    assert!(
        changes
            .iter()
            .any(|(k, v)| k.starts_with(b"host-ssh-login-after-failures\0") && v.is_none())
    );
    assert_eq!(e.stats().groups, 0);
    assert_eq!(e.rules().len(), 1);
}

#[test]
fn groups_per_rule_are_capped() {
    let text = "rules:\n  - id: many\n    title: t\n    severity: low\n    filter_pattern: '{ $.eventName = \"X\" }'\n    threshold: {count: 2, period: 1h, group_by: $.sourceIPAddress}\n";
    let mut e = Engine::new(RuleSet::from_text("r.yaml", text).unwrap());
    let n = MAX_GROUPS_PER_RULE + 10;
    for i in 0..n {
        let r = json!({"eventName": "X", "eventID": i.to_string(), "eventTime": t(0), "sourceIPAddress": i.to_string()});
        e.evaluate(&r);
    }
    assert_eq!(
        e.stats(),
        EngineStats {
            groups: MAX_GROUPS_PER_RULE,
            evicted_groups: 10
        }
    );
}

/// The collector moves the engine into its evaluation task and shares rule sets across
/// threads (reload): both must allow it.
#[test]
fn engine_is_send_and_rule_sets_are_shared() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<Engine>();
    send_sync::<RuleSet>();
    send_sync::<Firing>();
    send_sync::<LoadError>();
}

/// A restart at any point of a stream, resuming from the state persisted up to there, gives
/// the same firings and the same state as a run without the restart: the engine's clock (which
/// decides what is swept) is persisted with the windows. The stream has records hours apart
/// and late ones, so sweeps happen at different places depending on the clock.
#[test]
fn a_restart_anywhere_changes_nothing() {
    let rules = packs(&["host"]);
    let hour = 3600u32;
    let stamp = |secs: u32| {
        format!(
            "2026-12-07T{:02}:{:02}:{:02}Z",
            secs / 3600,
            secs % 3600 / 60,
            secs % 60
        )
    };
    let mut stream = Vec::new();
    let mut i = 0;
    for (at, ip, ok) in [
        (5 * hour, "10.9.9.9", true), // the clock at 5 h; no window holds it
        (hour, "10.0.0.1", false),    // late failures: a group whose newest is 1 h
        (hour + 10, "10.0.0.1", false),
        // A failure at 3 h: before the clock, so nothing is swept. An engine that resumed
        // with its clock at 1 h (the newest group) would sweep the 1 h group here.
        (3 * hour, "10.0.0.2", false),
        (hour + 20, "10.0.0.1", false),
        (hour + 30, "10.0.0.1", false),
        (hour + 40, "10.0.0.1", false), // five within five minutes: brute force
        (hour + 50, "10.0.0.1", true),
        (7 * hour, "10.0.0.3", false),  // sweeps the 1 h and 3 h groups
        (hour + 60, "10.0.0.1", false), // its group starts again
        (7 * hour + 1, "10.0.0.3", false),
    ] {
        i += 1;
        stream.push(rec(i, "ConsoleLogin", ip, &stamp(at), ok));
    }
    let run = |restart_at: Option<usize>| {
        let mut e = Engine::new(rules.clone());
        let mut stored: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = Default::default();
        let mut fired = Vec::new();
        for (n, r) in stream.iter().enumerate() {
            if Some(n) == restart_at {
                e = Engine::new(rules.clone());
                e.restore_state(stored.clone());
            }
            fired.extend(ids(&e.evaluate(r)));
            for (k, v) in e.take_state_changes() {
                match v {
                    Some(v) => stored.insert(k, v),
                    None => stored.remove(&k),
                };
            }
        }
        (fired, stored)
    };
    let straight = run(None);
    assert!(
        straight
            .0
            .contains(&"host-ssh-brute-force/ev-7".to_string()),
        "{:?}",
        straight.0
    );
    for at in 1..stream.len() {
        let resumed = run(Some(at));
        assert_eq!(resumed.0, straight.0, "firings, restart before record {at}");
        assert!(resumed.1 == straight.1, "state, restart before record {at}");
    }
}

mod insight_start;
