//! Checks the Sigma engine against the Sigma rules specification
//! (SigmaHQ/sigma-specification, `specification/sigma-rules-specification.md`, section named per
//! test; modifiers from `sigma-appendix-modifiers.md`), then loads the vendored SigmaHQ
//! CloudTrail rules and fires a set of them on crafted records.

use super::*;
use serde_json::{Value as Json, json};
use std::path::PathBuf;

fn rule(detection: &str) -> SigmaRule {
    let yaml = format!(
        "title: t\nlogsource:\n    product: aws\n    service: cloudtrail\ndetection:\n{detection}\nlevel: low\n"
    );
    SigmaRule::parse("inline", &yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

fn ct(name: &str) -> Json {
    json!({
        "eventVersion": "1.09",
        "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::123456789012:user/alice",
                         "accountId": "123456789012", "userName": "alice"},
        "eventTime": "2026-12-07T04:00:00Z",
        "eventSource": "iam.amazonaws.com",
        "eventName": name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": "198.51.100.7",
        "userAgent": "aws-cli/2.15.0",
        "requestParameters": {"userName": "bob", "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"},
        "responseElements": null,
        "eventType": "AwsApiCall",
        "recipientAccountId": "123456789012"
    })
}

// "General": all values are case-insensitive strings; `|cased` (appendix) makes them exact.
#[test]
fn values_are_case_insensitive_unless_cased() {
    let r = rule("    sel:\n        eventName: createuser\n    condition: sel");
    assert!(r.matches(&ct("CreateUser")));
    assert!(!r.matches(&ct("CreateUsers")));
    let cased = rule("    sel:\n        eventName|cased: createuser\n    condition: sel");
    assert!(!cased.matches(&ct("CreateUser")));
}

// "String Wildcard": `*` any run, `?` one character; "Escape Character": `\*` is literal.
#[test]
fn wildcards_and_escapes() {
    let r = rule("    sel:\n        eventName: 'Create?ser'\n    condition: sel");
    assert!(r.matches(&ct("CreateUser")));
    assert!(!r.matches(&ct("CreateUUser")));
    let r = rule("    sel:\n        eventName: 'Create*'\n    condition: sel");
    assert!(r.matches(&ct("CreateAccessKey")));
    assert!(!r.matches(&ct("DeleteUser")));
    let r = rule("    sel:\n        eventName: 'A\\*B'\n    condition: sel");
    assert!(r.matches(&ct("A*B")));
    assert!(!r.matches(&ct("AxB")));
}

// "Lists" (OR) and "Maps" (AND), and a list of maps (OR of ANDs).
#[test]
fn lists_or_maps_and() {
    let r = rule(
        "    sel:\n        eventSource: iam.amazonaws.com\n        eventName:\n            - CreateUser\n            - DeleteUser\n    condition: sel",
    );
    assert!(r.matches(&ct("CreateUser")));
    assert!(r.matches(&ct("DeleteUser")));
    assert!(!r.matches(&ct("GetUser")));
    let mut other = ct("CreateUser");
    other["eventSource"] = json!("sts.amazonaws.com");
    assert!(!r.matches(&other));
    let r = rule(
        "    sel:\n        - eventName: GetUser\n        - sourceIPAddress: 198.51.100.7\n    condition: sel",
    );
    assert!(r.matches(&ct("Anything")));
}

// "Value Modifiers" (appendix): contains, startswith, endswith, all, re (case-sensitive), cidr.
#[test]
fn modifiers() {
    let c = rule("    sel:\n        userAgent|contains: CLI/2\n    condition: sel");
    assert!(c.matches(&ct("X")));
    let s = rule("    sel:\n        eventName|startswith: create\n    condition: sel");
    assert!(s.matches(&ct("CreateUser")));
    assert!(!s.matches(&ct("UserCreate")));
    let e = rule("    sel:\n        eventName|endswith: USER\n    condition: sel");
    assert!(e.matches(&ct("CreateUser")));
    let all = rule(
        "    sel:\n        userAgent|contains|all:\n            - aws\n            - cli\n            - '2.15'\n    condition: sel",
    );
    assert!(all.matches(&ct("X")));
    let all_miss = rule(
        "    sel:\n        userAgent|contains|all:\n            - aws\n            - boto\n    condition: sel",
    );
    assert!(!all_miss.matches(&ct("X")));
    let re = rule("    sel:\n        userIdentity.arn|re: ':user/ali.e$'\n    condition: sel");
    assert!(re.matches(&ct("X")));
    let re_case = rule("    sel:\n        userIdentity.arn|re: ':USER/'\n    condition: sel");
    assert!(!re_case.matches(&ct("X")));
    let cidr = rule("    sel:\n        sourceIPAddress|cidr: 198.51.100.0/24\n    condition: sel");
    assert!(cidr.matches(&ct("X")));
    let cidr_miss = rule("    sel:\n        sourceIPAddress|cidr: 10.0.0.0/8\n    condition: sel");
    assert!(!cidr_miss.matches(&ct("X")));
}

// "Special Field Values": `null`; "Field Existence": `|exists`. Appendix: `|fieldref`.
#[test]
fn null_exists_and_fieldref() {
    let null = rule("    sel:\n        errorCode: null\n    condition: sel");
    assert!(null.matches(&ct("X")));
    let mut failed = ct("X");
    failed["errorCode"] = json!("AccessDenied");
    assert!(!null.matches(&failed));
    let exists = rule("    sel:\n        errorCode|exists: true\n    condition: sel");
    assert!(exists.matches(&failed));
    assert!(!exists.matches(&ct("X")));
    let fieldref = rule(
        "    sel:\n        userIdentity.userName|fieldref: requestParameters.userName\n    condition: sel",
    );
    assert!(!fieldref.matches(&ct("X")));
    let mut own = ct("X");
    own["requestParameters"]["userName"] = json!("alice");
    assert!(fieldref.matches(&own));
}

// "Condition": and, or, not, brackets, `1 of x*`, `all of them`, precedence not > and > or.
#[test]
fn conditions() {
    let d = "    sel_a:\n        eventName: CreateUser\n    sel_b:\n        eventSource: iam.amazonaws.com\n    filter_x:\n        sourceIPAddress: 198.51.100.7\n";
    let r = |cond: &str| rule(&format!("{d}    condition: {cond}"));
    let hit = ct("CreateUser");
    let other = ct("DeleteUser");
    assert!(r("all of them").matches(&ct("CreateUser")));
    assert!(!r("all of them").matches(&other));
    assert!(r("1 of sel_*").matches(&other));
    assert!(!r("all of sel_*").matches(&other));
    assert!(!r("sel_a and not filter_x").matches(&hit));
    assert!(r("sel_a and not 1 of filter_*").matches(&json!({"eventName": "CreateUser"})));
    // `or` binds looser than `and`: true or (false and false).
    assert!(r("sel_b or sel_a and not filter_x").matches(&other));
    assert!(!r("(sel_b or sel_a) and not filter_x").matches(&other));
}

#[test]
fn load_errors_name_the_file_and_reason() {
    let e = SigmaRule::parse("x.yml", "title: t\nlogsource:\n    product: windows\ndetection:\n    s:\n        a: b\n    condition: s\n")
        .expect_err("windows");
    assert!(matches!(e, SigmaError::Logsource { .. }), "{e}");
    assert!(e.to_string().contains("x.yml"), "{e}");
    let e = SigmaRule::parse("y.yml", "title: [unclosed\n").expect_err("yaml");
    assert!(e.to_string().starts_with("sigma rule y.yml:"), "{e}");
    let e = SigmaRule::parse(
        "z.yml",
        "title: t\nlogsource:\n    product: aws\n    service: cloudtrail\ndetection:\n    s:\n        a: b\n    condition: nothere\n",
    )
    .expect_err("unknown identifier");
    assert!(e.to_string().contains("z.yml"), "{e}");
    let e = SigmaRule::load(Path::new("/nonexistent/rule.yml")).expect_err("missing");
    assert!(matches!(e, SigmaError::Io { .. }), "{e}");
}

fn pack_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("packs/sigma-aws-cloudtrail")
}

fn sigmahq(file: &str) -> SigmaRule {
    SigmaRule::load(&pack_dir().join(file)).unwrap_or_else(|e| panic!("{e}"))
}

/// Every vendored SigmaHQ CloudTrail rule loads unmodified, and none fires on a plain read.
#[test]
fn sigmahq_cloudtrail_rules_all_load() {
    let rules = load_dir(&pack_dir()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rules.len(), 57);
    let mut read = ct("GetUser");
    read["requestParameters"] = json!({"userName": "alice"});
    for r in &rules {
        assert!(r.id.is_some() && r.level.is_some(), "{}", r.origin);
        assert!(!r.matches(&read), "{} fired on a plain GetUser", r.title);
    }
}

#[test]
fn sigmahq_rules_fire_on_crafted_records() {
    // aws_root_account_usage.yml: `selection_usertype and not selection_eventtype`.
    let root_rule = sigmahq("aws_root_account_usage.yml");
    let mut root = ct("ListBuckets");
    root["userIdentity"]["type"] = json!("Root");
    assert!(root_rule.matches(&root));
    root["eventType"] = json!("AwsServiceEvent");
    assert!(!root_rule.matches(&root));

    // aws_cloudtrail_disable_logging.yml: source plus a list of names.
    let disable = sigmahq("aws_cloudtrail_disable_logging.yml");
    let mut stop = ct("StopLogging");
    stop["eventSource"] = json!("cloudtrail.amazonaws.com");
    assert!(disable.matches(&stop));
    stop["eventName"] = json!("StartLogging");
    assert!(!disable.matches(&stop));

    // aws_cloudtrail_console_login_success_without_mfa.yml writes 'NO'; CloudTrail writes
    // "No": only case-insensitive matching makes the rule work.
    let no_mfa = sigmahq("aws_cloudtrail_console_login_success_without_mfa.yml");
    let mut login = ct("ConsoleLogin");
    login["eventSource"] = json!("signin.amazonaws.com");
    login["additionalEventData"] = json!({"MFAUsed": "No"});
    login["responseElements"] = json!({"ConsoleLogin": "Success"});
    assert!(no_mfa.matches(&login));
    login["additionalEventData"]["MFAUsed"] = json!("Yes");
    assert!(!no_mfa.matches(&login));

    // aws_sts_getcalleridentity_trufflehog.yml: `userAgent|contains`.
    let truffle = sigmahq("aws_sts_getcalleridentity_trufflehog.yml");
    let mut who = ct("GetCallerIdentity");
    who["eventSource"] = json!("sts.amazonaws.com");
    who["userAgent"] = json!("TruffleHog/3.63 aws-sdk-go/1.44");
    assert!(truffle.matches(&who));
    who["userAgent"] = json!("aws-cli/2.15.0");
    assert!(!truffle.matches(&who));

    // aws_update_login_profile.yml: `not 1 of filter_main_*` with `|fieldref`.
    let update = sigmahq("aws_update_login_profile.yml");
    let mut other_user = ct("UpdateLoginProfile");
    assert!(update.matches(&other_user));
    other_user["requestParameters"]["userName"] = json!("arn:aws:iam::123456789012:user/alice");
    assert!(!update.matches(&other_user));

    // aws_cloudtrail_imds_malicious_usage.yml: `|re` and a list-of-maps filter.
    let imds = sigmahq("aws_cloudtrail_imds_malicious_usage.yml");
    let mut stolen = ct("ListBuckets");
    stolen["userIdentity"]["arn"] =
        json!("arn:aws:sts::123456789012:assumed-role/aws:ec2-instance/i-0abc");
    assert!(imds.matches(&stolen));
    stolen["sourceIPAddress"] = json!("AWS Internal");
    assert!(!imds.matches(&stolen));

    // aws_disable_bucket_versioning.yml: `requestParameters|contains` on what CloudTrail
    // records as an object; it is matched against the object's JSON text (event.rs).
    let versioning = sigmahq("aws_disable_bucket_versioning.yml");
    let mut put = ct("PutBucketVersioning");
    put["eventSource"] = json!("s3.amazonaws.com");
    put["requestParameters"] = json!({
        "bucketName": "logs", "Host": "logs.s3.amazonaws.com", "versioning": "",
        "VersioningConfiguration": {"Status": "Suspended", "xmlns": "http://s3.amazonaws.com/doc/2006-03-01/"}
    });
    assert!(versioning.matches(&put));
    put["requestParameters"]["VersioningConfiguration"]["Status"] = json!("Enabled");
    assert!(!versioning.matches(&put));
}

/// The engine's indexed evaluation gives exactly the rules that match one by one.
#[test]
fn sigma_set_agrees_with_rule_by_rule() {
    let set = SigmaSet::new(load_dir(&pack_dir()).unwrap()).unwrap();
    let mut records = Vec::new();
    for (source, names) in [
        (
            "cloudtrail.amazonaws.com",
            &["StopLogging", "DeleteTrail", "LookupEvents"][..],
        ),
        (
            "iam.amazonaws.com",
            &[
                "UpdateLoginProfile",
                "CreateAccessKey",
                "PutUserPolicy",
                "DeleteSAMLProvider",
            ][..],
        ),
        (
            "s3.amazonaws.com",
            &["PutBucketVersioning", "ListBuckets", "DeleteBucket"][..],
        ),
        (
            "sts.amazonaws.com",
            &["GetCallerIdentity", "GetSessionToken", "AssumeRole"][..],
        ),
        (
            "ec2.amazonaws.com",
            &[
                "ModifyInstanceAttribute",
                "CreateRoute",
                "DisableEbsEncryptionByDefault",
            ][..],
        ),
        (
            "guardduty.amazonaws.com",
            &["DeleteDetector", "UpdateDetector"][..],
        ),
    ] {
        for name in names {
            let mut r = ct(name);
            r["eventSource"] = json!(source);
            records.push(r.clone());
            r["userAgent"] = json!("TruffleHog");
            r["userIdentity"]["type"] = json!("Root");
            r["requestParameters"] = json!({"attribute": "userData", "VersioningConfiguration": {"Status": "Suspended"}});
            records.push(r);
        }
    }
    let mut total = 0;
    for r in &records {
        let one_by_one: Vec<_> = set
            .rules()
            .iter()
            .filter(|rule| rule.matches(r))
            .map(|rule| &rule.origin)
            .collect();
        let indexed: Vec<_> = set
            .matching(r)
            .into_iter()
            .map(|rule| &rule.origin)
            .collect();
        assert_eq!(indexed, one_by_one, "{r}");
        total += indexed.len();
    }
    assert!(
        total >= 10,
        "only {total} matches: the records exercise too little"
    );
    // Duplicate ids are refused.
    let twice = vec![
        sigmahq("aws_root_account_usage.yml"),
        sigmahq("aws_root_account_usage.yml"),
    ];
    assert!(matches!(
        SigmaSet::new(twice),
        Err(SigmaError::Duplicate { .. })
    ));
}
