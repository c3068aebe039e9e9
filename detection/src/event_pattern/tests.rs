//! Semantics table for event patterns. "Guide" is the EventBridge user guide page "Content
//! filtering in Amazon EventBridge event patterns" (section named per case); "Ruler" is the
//! event-ruler README (section named per case).

use super::*;
use serde_json::{Value as Json, json};

/// The event-ruler README's sample event ("Ruler by Example").
fn ruler_event() -> Json {
    json!({
        "version": "0",
        "id": "ddddd4-aaaa-7777-4444-345dd43cc333",
        "detail-type": "EC2 Instance State-change Notification",
        "source": "aws.ec2",
        "account": "012345679012",
        "time": "2017-10-02T16:24:49Z",
        "region": "us-east-1",
        "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-000000aaaaaa00000"],
        "detail": {
            "c-count": 5,
            "d-count": 3,
            "x-limit": 301.8,
            "source-ip": "10.0.0.33",
            "instance-id": "i-000000aaaaaa00000",
            "state": "running"
        }
    })
}

fn p(pattern: Json) -> EventPattern {
    EventPattern::from_json(&pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"))
}

/// Each row: pattern, whether it matches the ruler sample event.
fn table(rows: &[(Json, bool)]) {
    let e = ruler_event();
    for (pattern, want) in rows {
        assert_eq!(p(pattern.clone()).matches(&e), *want, "{pattern}");
    }
}

// Ruler "Simple matching": values OR, fields AND, event arrays by intersection.
#[test]
fn exact_values_fields_and_arrays() {
    table(&[
        (
            json!({"detail-type": ["EC2 Instance State-change Notification"],
                   "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-000000aaaaaa00000"],
                   "detail": {"state": ["initializing", "running"]}}),
            true,
        ),
        (json!({"detail": {"state": ["initializing"]}}), false),
        (json!({"detail": {"state": ["Running"]}}), false), // case-sensitive
        (
            json!({"source": ["aws.ec2"], "detail": {"state": ["stopped"]}}),
            false,
        ),
        (
            json!({"resources": ["arn:other", "arn:aws:ec2:us-east-1:123456789012:instance/i-000000aaaaaa00000"]}),
            true,
        ),
        (json!({"detail": {"c-count": [5.0]}}), true), // numbers by value
        (json!({"detail": {"c-count": ["5"]}}), false), // a string is not a number
        (json!({"detail": {"missing": ["x"]}}), false),
    ]);
}

// Guide "Prefix matching", "Suffix matching", and their "... while ignoring case" sections.
#[test]
fn prefix_and_suffix() {
    table(&[
        (json!({"time": [{"prefix": "2017-10-02"}]}), true),
        (json!({"time": [{"prefix": "2017-10-03"}]}), false),
        (json!({"source": [{"suffix": "ec2"}]}), true),
        (json!({"source": [{"suffix": "EC2"}]}), false),
        (
            json!({"source": [{"prefix": {"equals-ignore-case": "AWS.E"}}]}),
            true,
        ),
        (
            json!({"source": [{"suffix": {"equals-ignore-case": "EC2"}}]}),
            true,
        ),
        (json!({"detail": {"c-count": [{"prefix": "5"}]}}), false), // strings only
    ]);
}

// Guide "Equals-ignore-case matching"; Ruler "Wildcard matching".
#[test]
fn equals_ignore_case_and_wildcard() {
    table(&[
        (json!({"source": [{"equals-ignore-case": "AWS.EC2"}]}), true),
        (json!({"source": [{"equals-ignore-case": "aws.ec"}]}), false),
        (
            json!({"detail-type": [{"wildcard": "EC2*State-change*"}]}),
            true,
        ),
        (
            json!({"detail-type": [{"wildcard": "*Notification"}]}),
            true,
        ),
        (
            json!({"detail-type": [{"wildcard": "EC2*Stopped*"}]}),
            false,
        ),
        (
            json!({"detail": {"instance-id": [{"wildcard": "i-*"}]}}),
            true,
        ),
        (
            json!({"detail": {"instance-id": [{"wildcard": "i-000000aaaaaa00000"}]}}),
            true,
        ),
        (json!({"detail": {"c-count": [{"wildcard": "*"}]}}), false), // strings only
    ]);
    // `\*` is a literal star.
    let e = json!({"f": "a*b", "g": "axb"});
    assert!(p(json!({"f": [{"wildcard": "a\\*b"}]})).matches(&e));
    assert!(!p(json!({"g": [{"wildcard": "a\\*b"}]})).matches(&e));
    assert!(p(json!({"g": [{"wildcard": "a*b"}]})).matches(&e));
    // Overlapping parts: the suffix cannot reuse the prefix's characters.
    assert!(!p(json!({"f": [{"wildcard": "ab*ba"}]})).matches(&json!({"f": "aba"})));
}

// Ruler "Anything-but matching", every form listed there.
#[test]
fn anything_but_forms() {
    table(&[
        (
            json!({"detail": {"state": [{"anything-but": "initializing"}]}}),
            true,
        ),
        (
            json!({"detail": {"state": [{"anything-but": "running"}]}}),
            false,
        ),
        (
            json!({"detail": {"x-limit": [{"anything-but": 123}]}}),
            true,
        ),
        (
            json!({"detail": {"x-limit": [{"anything-but": 301.8}]}}),
            false,
        ),
        (
            json!({"detail": {"state": [{"anything-but": ["stopped", "overloaded"]}]}}),
            true,
        ),
        (
            json!({"detail": {"state": [{"anything-but": ["stopped", "running"]}]}}),
            false,
        ),
        (
            json!({"detail": {"x-limit": [{"anything-but": [100, 200, 300]}]}}),
            true,
        ),
        (
            json!({"detail": {"state": [{"anything-but": {"prefix": "init"}}]}}),
            true,
        ),
        (
            json!({"detail": {"state": [{"anything-but": {"prefix": "run"}}]}}),
            false,
        ),
        (
            json!({"detail": {"state": [{"anything-but": {"prefix": ["init", "error"]}}]}}),
            true,
        ),
        (
            json!({"detail": {"instance-id": [{"anything-but": {"suffix": "1234"}}]}}),
            true,
        ),
        (
            json!({"detail": {"instance-id": [{"anything-but": {"suffix": ["1234", "00000"]}}]}}),
            false,
        ),
        (
            json!({"detail": {"state": [{"anything-but": {"equals-ignore-case": "RUNNING"}}]}}),
            false,
        ),
        (
            json!({"detail": {"state": [{"anything-but": {"equals-ignore-case": ["Stopped", "OverLoaded"]}}]}}),
            true,
        ),
        (
            json!({"detail": {"state": [{"anything-but": {"wildcard": "*/bin/*.jar"}}]}}),
            true,
        ),
        (
            json!({"detail": {"state": [{"anything-but": {"wildcard": ["r*g", "x"]}}]}}),
            false,
        ),
        // A missing field matches no anything-but.
        (
            json!({"detail": {"missing": [{"anything-but": "x"}]}}),
            false,
        ),
    ]);
    // An event array matches if any element is outside the list.
    let e = json!({"tags": ["a", "b"]});
    assert!(p(json!({"tags": [{"anything-but": "a"}]})).matches(&e));
    assert!(!p(json!({"tags": [{"anything-but": ["a", "b"]}]})).matches(&e));
}

// Ruler "Numeric matching" (the README's rule matches the sample) and guide "Numeric matching".
#[test]
fn numeric_ranges() {
    table(&[
        (
            json!({"detail": {"c-count": [{"numeric": [">", 0, "<=", 5]}],
                              "d-count": [{"numeric": ["<", 10]}],
                              "x-limit": [{"numeric": ["=", 3.018e2]}]}}),
            true,
        ),
        (
            json!({"detail": {"c-count": [{"numeric": [">", 5]}]}}),
            false,
        ),
        (
            json!({"detail": {"c-count": [{"numeric": [">=", 5]}]}}),
            true,
        ),
        (
            json!({"detail": {"c-count": [{"numeric": [">", 0, "<", 5]}]}}),
            false,
        ),
        (json!({"detail": {"state": [{"numeric": [">", 0]}]}}), false), // numbers only
        (
            json!({"detail": {"missing": [{"numeric": [">", 0]}]}}),
            false,
        ),
    ]);
}

// Ruler "IP Address Matching" (also IPv6); guide "IP address matching".
#[test]
fn cidr_v4_and_v6() {
    table(&[
        (
            json!({"detail": {"source-ip": [{"cidr": "10.0.0.0/24"}]}}),
            true,
        ),
        (
            json!({"detail": {"source-ip": [{"cidr": "10.0.1.0/24"}]}}),
            false,
        ),
        (
            json!({"detail": {"source-ip": [{"cidr": "10.0.0.33"}]}}),
            true,
        ), // a bare address is a /32
        (json!({"detail": {"state": [{"cidr": "0.0.0.0/0"}]}}), false), // not an address
    ]);
    let e = json!({"ip": "2001:db8::1"});
    assert!(p(json!({"ip": [{"cidr": "2001:db8::/32"}]})).matches(&e));
    assert!(!p(json!({"ip": [{"cidr": "2001:db9::/32"}]})).matches(&e));
    assert!(!p(json!({"ip": [{"cidr": "10.0.0.0/8"}]})).matches(&e));
}

// Ruler "Exists matching": leaf nodes only; `exists: false` also holds on an object.
#[test]
fn exists_on_leaves_only() {
    table(&[
        (json!({"detail": {"c-count": [{"exists": true}]}}), true),
        (json!({"detail": {"c-count": [{"exists": false}]}}), false),
        (json!({"detail": {"nope": [{"exists": false}]}}), true),
        (json!({"nope": {"deeper": [{"exists": false}]}}), true),
        (json!({"detail": [{"exists": true}]}), false), // detail is an object
        (json!({"detail": [{"exists": false}]}), true),
    ]);
    let e = json!({"n": null, "empty": []});
    assert!(p(json!({"n": [{"exists": true}]})).matches(&e));
    assert!(p(json!({"empty": [{"exists": false}]})).matches(&e));
}

// Guide "Empty value matching" / "Null value matching": `[""]` and `[null]` are values.
#[test]
fn null_and_empty_string() {
    let e = json!({"a": "", "b": null});
    assert!(p(json!({"a": [""]})).matches(&e));
    assert!(!p(json!({"b": [""]})).matches(&e));
    assert!(p(json!({"b": [null]})).matches(&e));
    assert!(!p(json!({"a": [null]})).matches(&e));
    assert!(!p(json!({"missing": [null]})).matches(&e)); // absent is not null
}

// Ruler "The $or Primitive": the README's three shapes.
#[test]
fn or_primitive() {
    let normal = p(json!({"source": ["aws.cloudwatch"],
                          "$or": [{"metricName": ["CPUUtilization", "ReadLatency"]},
                                  {"namespace": ["AWS/EC2", "AWS/ES"]}]}));
    assert!(normal.matches(&json!({"source": "aws.cloudwatch", "namespace": "AWS/ES"})));
    assert!(normal.matches(&json!({"source": "aws.cloudwatch", "metricName": "ReadLatency"})));
    assert!(!normal.matches(&json!({"source": "aws.cloudwatch", "metricName": "Other"})));
    assert!(!normal.matches(&json!({"source": "aws.ec2", "namespace": "AWS/ES"})));

    let nested = p(json!({"source": ["aws.cloudwatch"],
                          "$or": [{"metricName": ["CPUUtilization"]},
                                  {"metricType": ["MetricType"], "namespace": ["AWS/EC2"],
                                   "$or": [{"metricId": [1234]}, {"spaceId": [1000]}]},
                                  {"scope": ["Service"]}]}));
    let base =
        json!({"source": "aws.cloudwatch", "metricType": "MetricType", "namespace": "AWS/EC2"});
    assert!(!nested.matches(&base));
    let mut with_space = base.clone();
    with_space["spaceId"] = json!(1000);
    assert!(nested.matches(&with_space));
    assert!(nested.matches(&json!({"source": "aws.cloudwatch", "scope": "Service"})));

    // Inside a nested object, $or applies at that level.
    let inner = p(json!({"detail": {"$or": [{"a": ["1"]}, {"b": ["2"]}]}}));
    assert!(inner.matches(&json!({"detail": {"b": "2"}})));
    assert!(!inner.matches(&json!({"b": "2"})));
}

// Ruler "JSON Array Matching": arrays of objects are crushed, but two fields only match
// together inside one element (rulesForJSONEvent).
#[test]
fn arrays_of_objects_match_per_element() {
    let e = json!({"employees": [
        {"firstName": "John", "lastName": "Doe"},
        {"firstName": "Anna", "lastName": "Smith"},
        {"firstName": "Peter", "lastName": "Jones"}
    ]});
    assert!(p(json!({"employees": {"firstName": ["Anna"]}})).matches(&e));
    assert!(!p(json!({"employees": {"firstName": ["Anna"], "lastName": ["Jones"]}})).matches(&e));
    assert!(p(json!({"employees": {"firstName": ["Anna"], "lastName": ["Smith"]}})).matches(&e));
    // Multi-level arrays too.
    let nested = json!({"employees": [[{"firstName": "John"}], [{"firstName": "Peter"}]]});
    assert!(p(json!({"employees": {"firstName": ["Peter"]}})).matches(&nested));
}

#[test]
fn validation_errors_name_the_path() {
    let cases = [
        (json!([]), "(top)", "JSON object"),
        (json!({}), "(top)", "empty object"),
        (json!({"source": "aws.ec2"}), "source", "in an array"),
        (json!({"source": []}), "source", "empty array"),
        (json!({"source": [["x"]]}), "source[0]", "nested arrays"),
        (
            json!({"source": [{"prefix": "a", "suffix": "b"}]}),
            "source[0]",
            "exactly one key",
        ),
        (
            json!({"source": [{"regex": "a"}]}),
            "source[0]",
            "unknown operator",
        ),
        (
            json!({"source": [{"prefix": 1}]}),
            "source[0].prefix",
            "string",
        ),
        (
            json!({"detail": {"x": [{"numeric": [">", "a"]}]}}),
            "detail.x[0].numeric",
            "not a number",
        ),
        (
            json!({"detail": {"x": [{"numeric": ["~", 1]}]}}),
            "detail.x[0].numeric",
            "not one of",
        ),
        (
            json!({"detail": {"x": [{"numeric": [">", 1]}, {"numeric": [">", 5, "<", 2]}]}}),
            "detail.x[1].numeric",
            "below",
        ),
        (
            json!({"x": [{"numeric": [">", 1, ">=", 2]}]}),
            "x[0].numeric",
            "one lower",
        ),
        (
            json!({"x": [{"numeric": ["=", 1, "<", 2]}]}),
            "x[0].numeric",
            "cannot be combined",
        ),
        (
            json!({"x": [{"numeric": [">", 1, "<"]}]}),
            "x[0].numeric",
            "pairs",
        ),
        (
            json!({"x": [{"numeric": [">", 6e9]}]}),
            "x[0].numeric",
            "outside",
        ),
        (
            json!({"x": [{"wildcard": "a**b"}]}),
            "x[0].wildcard",
            "consecutive",
        ),
        (
            json!({"x": [{"wildcard": "a\\b"}]}),
            "x[0].wildcard",
            "may only escape",
        ),
        (json!({"x": [{"cidr": "10.0.0.0/33"}]}), "x[0].cidr", "CIDR"),
        (
            json!({"x": [{"exists": "yes"}]}),
            "x[0].exists",
            "true or false",
        ),
        (
            json!({"x": [{"anything-but": ["a", 1]}]}),
            "x[0].anything-but",
            "only strings or only numbers",
        ),
        (
            json!({"x": [{"anything-but": {"numeric": [">", 1]}}]}),
            "x[0].anything-but",
            "does not take",
        ),
        (
            json!({"x": [{"anything-but": true}]}),
            "x[0].anything-but",
            "takes a string",
        ),
        (json!({"$or": [{"a": ["1"]}]}), "$or", "at least two"),
        (json!({"$or": [{"a": ["1"]}, "b"]}), "$or[1]", "object"),
    ];
    for (pattern, path, needle) in cases {
        let e = EventPattern::from_json(&pattern).expect_err(&pattern.to_string());
        assert_eq!(e.path, path, "{pattern}: {e}");
        assert!(e.message.contains(needle), "{pattern}: {e}");
    }
    let e = EventPattern::parse("{\"source\": [\"x\"").expect_err("truncated");
    assert!(e.message.contains("not valid JSON"), "{e}");
}

fn cloudtrail_call() -> Json {
    json!({
        "eventVersion": "1.09",
        "userIdentity": {"type": "IAMUser", "accountId": "123456789012", "userName": "alice"},
        "eventTime": "2026-12-07T04:00:00Z",
        "eventSource": "iam.amazonaws.com",
        "eventName": "CreateAccessKey",
        "awsRegion": "us-east-1",
        "sourceIPAddress": "198.51.100.7",
        "eventID": "6e1f1c0a-0000-4000-8000-000000000002",
        "eventType": "AwsApiCall",
        "recipientAccountId": "123456789012",
        "tags": ["x"]
    })
}

// EventBridge guide "AWS service events delivered via AWS CloudTrail": envelope fields.
#[test]
fn wrap_builds_the_eventbridge_envelope() {
    let r = cloudtrail_call();
    let e = wrap_cloudtrail(&r);
    assert_eq!(e["version"], "0");
    assert_eq!(e["id"], "6e1f1c0a-0000-4000-8000-000000000002");
    assert_eq!(e["detail-type"], "AWS API Call via CloudTrail");
    assert_eq!(e["source"], "aws.iam");
    assert_eq!(e["account"], "123456789012");
    assert_eq!(e["time"], "2026-12-07T04:00:00Z");
    assert_eq!(e["region"], "us-east-1");
    assert_eq!(e["resources"], json!([]));
    assert_eq!(e["detail"], r);

    let mut signin = r.clone();
    signin["eventType"] = json!("AwsConsoleSignIn");
    signin["eventSource"] = json!("signin.amazonaws.com");
    let e = wrap_cloudtrail(&signin);
    assert_eq!(e["detail-type"], "AWS Console Sign In via CloudTrail");
    assert_eq!(e["source"], "aws.signin");
    assert_eq!(
        detail_type(Some("AwsServiceEvent")),
        "AWS Service Event via CloudTrail"
    );
    assert_eq!(
        detail_type(Some("AwsConsoleAction")),
        "AWS Console Action via CloudTrail"
    );
    assert_eq!(
        detail_type(Some("AwsCloudTrailInsight")),
        "AWS Insight via CloudTrail"
    );
    assert_eq!(source("sshd.onprem.internal"), "aws.sshd");
}

// The guide's CloudTrail pattern shape, against a wrapped record.
#[test]
fn cloudtrail_pattern_against_wrapped_record() {
    let rule = EventPattern::parse(
        r#"{"source": ["aws.iam"], "detail-type": ["AWS API Call via CloudTrail"],
            "detail": {"eventSource": ["iam.amazonaws.com"], "eventName": ["CreateAccessKey", "CreateUser"],
                       "sourceIPAddress": [{"anything-but": {"prefix": "10."}}],
                       "errorCode": [{"exists": false}]}}"#,
    )
    .unwrap();
    let r = cloudtrail_call();
    assert!(rule.matches_record(&r));
    let mut failed = r.clone();
    failed["errorCode"] = json!("AccessDenied");
    assert!(!rule.matches_record(&failed));
    let mut internal = r.clone();
    internal["sourceIPAddress"] = json!("10.1.2.3");
    assert!(!rule.matches_record(&internal));
    let mut signin = r.clone();
    signin["eventType"] = json!("AwsConsoleSignIn");
    assert!(!rule.matches_record(&signin));
    // Unwrapped, the envelope fields are missing.
    assert!(!rule.matches(&r));
}

// matches_record / matches_in_envelope skip copying the record into the envelope; they must
// agree with matching the fully wrapped event, including `$or` and `detail` at the top.
#[test]
fn envelope_matching_agrees_with_the_wrapped_event() {
    let patterns = [
        json!({"source": ["aws.iam"], "detail": {"eventName": ["CreateAccessKey"]}}),
        json!({"$or": [{"detail": {"eventName": ["Nope"]}}, {"source": ["aws.iam"]}]}),
        json!({"$or": [{"detail": {"eventName": ["Nope"]}}, {"source": ["aws.sts"]}]}),
        json!({"detail": [{"exists": false}]}),
        json!({"detail": {"tags": ["x"]}, "detail-type": [{"prefix": "AWS API"}]}),
        json!({"id": [{"exists": true}], "resources": [{"exists": false}]}),
        json!({"detail": {"nothere": [{"exists": false}]}}),
    ];
    let record = cloudtrail_call();
    let envelope = cloudtrail_envelope(&record);
    assert!(envelope.get("detail").is_none());
    let wrapped = wrap_cloudtrail(&record);
    let mut hits = 0;
    for pattern in &patterns {
        let p = p(pattern.clone());
        let want = p.matches(&wrapped);
        assert_eq!(p.matches_record(&record), want, "{pattern}");
        assert_eq!(p.matches_in_envelope(&envelope, &record), want, "{pattern}");
        hits += usize::from(want);
    }
    assert_eq!(hits, 6);
}
