//! The selectors' semantics, validation, API and config forms, with AWS's documented examples
//! as fixtures.

use serde_json::{Value, json};

use super::*;

fn put(body: Value) -> Result<Selectors, SelectorError> {
    Selectors::from_api(body.as_object().expect("a JSON object"))
}

fn ok(body: Value) -> Selectors {
    put(body).expect("valid selectors")
}

/// The error for `body`, checked to carry `code` and a message containing `needle`.
fn refused(body: Value, code: &str, needle: &str) -> SelectorError {
    let e = put(body).expect_err("selectors must be refused");
    assert_eq!(e.code, code, "{e}");
    assert!(e.message.contains(needle), "{e:?} lacks {needle:?}");
    e
}

fn invalid(body: Value, needle: &str) -> SelectorError {
    refused(body, INVALID_EVENT_SELECTORS, needle)
}

/// A management event of `source`/`name`.
fn mgmt(source: &str, name: &str, read_only: bool) -> Value {
    json!({"eventCategory": "Management", "managementEvent": true, "eventSource": source,
           "eventName": name, "readOnly": read_only, "eventType": "AwsApiCall"})
}

/// A data event on the given `(type, ARN)` resources.
fn data(source: &str, name: &str, read_only: bool, resources: &[(&str, &str)]) -> Value {
    let resources: Vec<Value> = resources
        .iter()
        .map(|(t, a)| json!({"type": t, "ARN": a}))
        .collect();
    json!({"eventCategory": "Data", "managementEvent": false, "eventSource": source,
           "eventName": name, "readOnly": read_only, "resources": resources})
}

fn s3_object(name: &str, read_only: bool, bucket: &str, key: &str) -> Value {
    data(
        "s3.amazonaws.com",
        name,
        read_only,
        &[
            ("AWS::S3::Object", &format!("arn:aws:s3:::{bucket}/{key}")),
            ("AWS::S3::Bucket", &format!("arn:aws:s3:::{bucket}")),
        ],
    )
}

fn advanced(fields: Value) -> Selectors {
    ok(json!({"AdvancedEventSelectors": [{"FieldSelectors": fields}]}))
}

// ---- Basic selectors ----------------------------------------------------------------------

#[test]
fn basic_read_write_type_compares_with_read_only() {
    let read = mgmt("ec2.amazonaws.com", "DescribeInstances", true);
    let write = mgmt("ec2.amazonaws.com", "RunInstances", false);
    let mut unmarked = write.clone();
    unmarked.as_object_mut().unwrap().remove("readOnly");
    let rw = |t: &str| ok(json!({"EventSelectors": [{"ReadWriteType": t}]}));
    let (all, ro, wo) = (rw("All"), rw("ReadOnly"), rw("WriteOnly"));
    assert!(all.selects(&read) && all.selects(&write) && all.selects(&unmarked));
    assert!(ro.selects(&read) && !ro.selects(&write) && !ro.selects(&unmarked));
    assert!(!wo.selects(&read) && wo.selects(&write) && wo.selects(&unmarked));
}

#[test]
fn basic_management_events_are_the_management_category() {
    let s = ok(json!({"EventSelectors": [{"IncludeManagementEvents": true}]}));
    let absent = json!({"eventSource": "sshd.example.internal", "eventName": "ConsoleLogin"});
    assert!(s.selects(&absent), "no eventCategory is a management event");
    assert!(s.selects(&mgmt("iam.amazonaws.com", "CreateUser", false)));
    let not_mgmt = json!({"eventSource": "x", "managementEvent": false});
    assert!(
        !s.selects(&not_mgmt),
        "managementEvent false without a category is data"
    );
    // A category, when present, decides, as in the event history (LookupEvents shows this
    // record as a management event, so the trail must not drop it as something else).
    let mut flagged = mgmt("iam.amazonaws.com", "CreateUser", false);
    flagged["managementEvent"] = json!(false);
    assert!(s.selects(&flagged));
    // An old data-event record without a category is a data event for data resources too,
    // and for advanced selectors.
    let old_data = json!({"eventSource": "s3.amazonaws.com", "managementEvent": false,
        "resources": [{"type": "AWS::S3::Object", "ARN": "arn:aws:s3:::b/k"}]});
    let objects = ok(json!({"EventSelectors": [{"IncludeManagementEvents": false,
        "DataResources": [{"Type": "AWS::S3::Object", "Values": ["arn:aws:s3:::b/"]}]}]}));
    assert!(objects.selects(&old_data));
    let data = ok(json!({"AdvancedEventSelectors": [{"FieldSelectors": [
        {"Field": "eventCategory", "Equals": ["Data"]}]}]}));
    assert!(data.selects(&old_data) && !data.selects(&flagged));
    let d = s3_object("GetObject", true, "b", "k");
    assert!(!s.selects(&d), "a data event needs a data resource");
    for category in ["ActivityAuditLog", "NetworkActivity"] {
        let r = json!({"eventCategory": category, "eventSource": "orders.example.internal"});
        assert!(!s.selects(&r), "{category} needs advanced selectors");
    }
    let off = ok(json!({"EventSelectors": [{"IncludeManagementEvents": false}]}));
    assert!(!off.selects(&absent));
    assert!(!off.selects(&mgmt("iam.amazonaws.com", "CreateUser", false)));
}

#[test]
fn basic_exclude_kms_keeps_every_other_source() {
    let s = ok(json!({"EventSelectors": [{
        "ReadWriteType": "All", "IncludeManagementEvents": true,
        "ExcludeManagementEventSources": ["kms.amazonaws.com"]}]}));
    assert!(!s.selects(&mgmt("kms.amazonaws.com", "Decrypt", true)));
    assert!(!s.selects(&mgmt("kms.amazonaws.com", "CreateKey", false)));
    assert!(s.selects(&mgmt("ec2.amazonaws.com", "RunInstances", false)));
    assert!(s.selects(&json!({"eventName": "NoSource"})));
    // Groundtrail accepts host sources too.
    let s = ok(json!({"EventSelectors": [{
        "ExcludeManagementEventSources": ["sudo.example.internal"]}]}));
    assert!(!s.selects(&mgmt("sudo.example.internal", "Sudo", false)));
    assert!(s.selects(&mgmt("sshd.example.internal", "ConsoleLogin", false)));
}

#[test]
fn basic_s3_values_are_arn_prefixes_of_the_same_typed_resource() {
    let s = ok(json!({"EventSelectors": [{"IncludeManagementEvents": false,
        "DataResources": [{"Type": "AWS::S3::Object",
                           "Values": ["arn:aws:s3:::mybucket/prefix", "arn:aws:s3:::other/"]}]}]}));
    assert!(s.selects(&s3_object("PutObject", false, "mybucket", "prefix/a.txt")));
    assert!(s.selects(&s3_object("GetObject", true, "other", "x")));
    assert!(!s.selects(&s3_object(
        "PutObject",
        false,
        "mybucket",
        "elsewhere/a.txt"
    )));
    assert!(!s.selects(&s3_object("PutObject", false, "third", "prefix/a")));
    // The ARN matches but the resource is not of the selector's type.
    let bucket_only = data(
        "s3.amazonaws.com",
        "PutBucketAcl",
        false,
        &[("AWS::S3::Bucket", "arn:aws:s3:::other/")],
    );
    assert!(!s.selects(&bucket_only));
    assert!(!s.selects(&mgmt("s3.amazonaws.com", "CreateBucket", false)));
    let all = ok(json!({"EventSelectors": [{"DataResources": [
        {"Type": "AWS::S3::Object", "Values": ["arn:aws:s3"]}]}]}));
    assert!(all.selects(&s3_object("GetObject", true, "any", "thing")));
}

#[test]
fn basic_lambda_and_dynamodb_values_are_exact_or_the_whole_service() {
    let f = "arn:aws:lambda:us-west-2:111111111111:function:helloworld";
    let s = ok(json!({"EventSelectors": [{"DataResources": [
        {"Type": "AWS::Lambda::Function", "Values": [f]}]}]}));
    let invoke = |arn: &str| {
        data(
            "lambda.amazonaws.com",
            "Invoke",
            false,
            &[("AWS::Lambda::Function", arn)],
        )
    };
    assert!(s.selects(&invoke(f)));
    assert!(!s.selects(&invoke(&format!("{f}2"))), "not a prefix");
    let all = ok(json!({"EventSelectors": [{"DataResources": [
        {"Type": "AWS::Lambda::Function", "Values": ["arn:aws:lambda"]}]}]}));
    assert!(all.selects(&invoke(&format!("{f}2"))));
    let table = "arn:aws:dynamodb:us-east-1:111111111111:table/Music";
    let s = ok(json!({"EventSelectors": [{"DataResources": [
        {"Type": "AWS::DynamoDB::Table", "Values": [table]}]}]}));
    let get = |arn: &str| {
        data(
            "dynamodb.amazonaws.com",
            "GetItem",
            true,
            &[("AWS::DynamoDB::Table", arn)],
        )
    };
    assert!(s.selects(&get(table)));
    assert!(!s.selects(&get(&format!("{table}Archive"))));
}

#[test]
fn basic_sidecar_types_use_prefixes_and_read_write_type() {
    let s = ok(json!({"EventSelectors": [{"ReadWriteType": "WriteOnly",
        "IncludeManagementEvents": false,
        "DataResources": [{"Type": "Shop::Order",
                           "Values": ["arn:aws:shop:us-east-1:111122223333:order/"]}]}]}));
    let call = |name: &str, read_only: bool, arn: &str| {
        data(
            "shop.example.internal",
            name,
            read_only,
            &[("Shop::Order", arn)],
        )
    };
    let arn = "arn:aws:shop:us-east-1:111122223333:order/42";
    assert!(s.selects(&call("CancelOrder", false, arn)));
    assert!(!s.selects(&call("GetOrder", true, arn)), "WriteOnly");
    assert!(!s.selects(&call(
        "CancelOrder",
        false,
        "arn:aws:shop:us-east-1:111122223333:cart/1"
    )));
}

#[test]
fn basic_selectors_are_ored() {
    let s = ok(json!({"EventSelectors": [
        {"ReadWriteType": "ReadOnly"},
        {"IncludeManagementEvents": false,
         "DataResources": [{"Type": "AWS::S3::Object", "Values": ["arn:aws:s3:::logs/"]}]}]}));
    assert!(s.selects(&mgmt("ec2.amazonaws.com", "DescribeVpcs", true)));
    assert!(!s.selects(&mgmt("ec2.amazonaws.com", "CreateVpc", false)));
    assert!(s.selects(&s3_object("PutObject", false, "logs", "a")));
    assert!(!s.selects(&s3_object("PutObject", false, "data", "a")));
}

// ---- Advanced selectors -------------------------------------------------------------------

/// CloudTrail User Guide (logging data events): management events, plus `PutObject` and
/// `DeleteObject` under two S3 prefixes.
fn aws_doc_example() -> Value {
    json!({"AdvancedEventSelectors": [
        {"Name": "Log readOnly and writeOnly management events",
         "FieldSelectors": [{"Field": "eventCategory", "Equals": ["Management"]}]},
        {"Name": "Log PutObject and DeleteObject events for two S3 prefixes",
         "FieldSelectors": [
            {"Field": "eventCategory", "Equals": ["Data"]},
            {"Field": "resources.type", "Equals": ["AWS::S3::Object"]},
            {"Field": "eventName", "Equals": ["PutObject", "DeleteObject"]},
            {"Field": "resources.ARN", "StartsWith":
                ["arn:aws:s3:::mybucket/prefix", "arn:aws:s3:::mybucket2/prefix2"]}]}]})
}

#[test]
fn advanced_aws_doc_example() {
    let s = ok(aws_doc_example());
    assert!(s.selects(&mgmt("ec2.amazonaws.com", "DescribeInstances", true)));
    assert!(s.selects(&mgmt("ec2.amazonaws.com", "RunInstances", false)));
    assert!(
        s.selects(&json!({"eventName": "NoCategory"})),
        "absent is Management"
    );
    assert!(s.selects(&s3_object("PutObject", false, "mybucket", "prefix/a")));
    assert!(s.selects(&s3_object("DeleteObject", false, "mybucket2", "prefix2/b")));
    assert!(!s.selects(&s3_object("GetObject", true, "mybucket", "prefix/a")));
    assert!(!s.selects(&s3_object("PutObject", false, "mybucket", "other/a")));
    assert!(!s.selects(&s3_object("PutObject", false, "mybucket2", "prefix/a")));
    let app = json!({"eventCategory": "ActivityAuditLog", "eventName": "PutObject"});
    assert!(!s.selects(&app));
}

#[test]
fn advanced_developers_write_events_of_their_services() {
    let s = advanced(json!([
        {"Field": "eventSource", "StartsWith": ["app."]},
        {"Field": "readOnly", "Equals": ["false"]}]));
    assert!(s.selects(&mgmt("app.orders", "CreateOrder", false)));
    assert!(!s.selects(&mgmt("app.orders", "GetOrder", true)));
    assert!(!s.selects(&mgmt("sshd.example.internal", "ConsoleLogin", false)));
    assert!(!s.selects(&mgmt("web.app.orders", "CreateOrder", false)));
    let app = json!({"eventCategory": "ActivityAuditLog", "eventSource": "app.billing",
                     "eventName": "Refund"});
    assert!(
        s.selects(&app),
        "no readOnly is a write; no eventCategory field: any category"
    );
}

/// An operator, its one operand, and eventNames with whether the selector takes them.
type OperatorCase = (&'static str, &'static str, &'static [(&'static str, bool)]);

#[test]
fn advanced_each_operator() {
    let name = |n: &str| mgmt("svc", n, false);
    let cases: [OperatorCase; 6] = [
        (
            "Equals",
            "GetObject",
            &[
                ("GetObject", true),
                ("GetObjectAcl", false),
                ("getobject", false),
            ],
        ),
        (
            "StartsWith",
            "Get",
            &[("GetObject", true), ("Get", true), ("ListGet", false)],
        ),
        (
            "EndsWith",
            "Object",
            &[("GetObject", true), ("Objects", false), ("Object", true)],
        ),
        (
            "NotEquals",
            "GetObject",
            &[("GetObject", false), ("PutObject", true)],
        ),
        (
            "NotStartsWith",
            "Get",
            &[("GetObject", false), ("PutObject", true)],
        ),
        (
            "NotEndsWith",
            "Object",
            &[("GetObject", false), ("GetBucket", true)],
        ),
    ];
    for (op, operand, expect) in cases {
        let s = advanced(json!([{"Field": "eventName", op: [operand]}]));
        for (event, taken) in expect {
            assert_eq!(s.selects(&name(event)), *taken, "{op} {operand} on {event}");
        }
    }
}

#[test]
fn advanced_positive_values_and_operators_are_ored() {
    let s = advanced(json!([{"Field": "eventName",
        "Equals": ["Decrypt", "Encrypt"], "StartsWith": ["Generate"], "EndsWith": ["Key"]}]));
    for n in [
        "Decrypt",
        "Encrypt",
        "GenerateDataKey",
        "GenerateRandom",
        "CreateKey",
    ] {
        assert!(s.selects(&mgmt("kms", n, false)), "{n}");
    }
    assert!(!s.selects(&mgmt("kms", "ListAliases", true)));
}

#[test]
fn advanced_negative_values_and_operators_are_anded() {
    let s = advanced(json!([{"Field": "eventSource",
        "NotEquals": ["kms.amazonaws.com", "rdsdata.amazonaws.com"],
        "NotStartsWith": ["sudo."], "NotEndsWith": [".test"]}]));
    assert!(s.selects(&mgmt("ec2.amazonaws.com", "RunInstances", false)));
    for src in [
        "kms.amazonaws.com",
        "rdsdata.amazonaws.com",
        "sudo.h1",
        "x.test",
    ] {
        assert!(!s.selects(&mgmt(src, "Any", false)), "{src}");
    }
}

#[test]
fn advanced_positive_and_negative_together() {
    let s = advanced(json!([{"Field": "eventName",
        "StartsWith": ["Get"], "NotEquals": ["GetSecretValue"]}]));
    assert!(s.selects(&mgmt("s", "GetObject", true)));
    assert!(!s.selects(&mgmt("s", "GetSecretValue", true)));
    assert!(!s.selects(&mgmt("s", "PutObject", false)));
}

#[test]
fn advanced_fields_are_anded_and_selectors_ored() {
    let s = ok(json!({"AdvancedEventSelectors": [
        {"FieldSelectors": [{"Field": "eventSource", "Equals": ["iam.amazonaws.com"]},
                            {"Field": "eventName", "StartsWith": ["Create"]}]},
        {"FieldSelectors": [{"Field": "errorCode", "Equals": ["AccessDenied"]}]}]}));
    assert!(s.selects(&mgmt("iam.amazonaws.com", "CreateUser", false)));
    assert!(!s.selects(&mgmt("iam.amazonaws.com", "DeleteUser", false)));
    assert!(!s.selects(&mgmt("ec2.amazonaws.com", "CreateVpc", false)));
    let mut denied = mgmt("ec2.amazonaws.com", "RunInstances", false);
    denied["errorCode"] = json!("AccessDenied");
    assert!(s.selects(&denied));
}

#[test]
fn advanced_missing_member_fails_positive_and_passes_negative() {
    let ok_call = mgmt("ec2.amazonaws.com", "RunInstances", false);
    let mut failed = ok_call.clone();
    failed["errorCode"] = json!("AccessDenied");
    let positive = advanced(json!([{"Field": "errorCode", "StartsWith": ["Access"]}]));
    assert!(!positive.selects(&ok_call) && positive.selects(&failed));
    for op in ["NotEquals", "NotStartsWith", "NotEndsWith"] {
        let s = advanced(json!([{"Field": "errorCode", op: ["AccessDenied"]}]));
        assert!(s.selects(&ok_call), "{op} holds on a missing errorCode");
        assert!(!s.selects(&failed), "{op}");
    }
    // A member that is an object or null counts as missing.
    let mut odd = ok_call.clone();
    odd["errorCode"] = json!({"code": 1});
    assert!(!positive.selects(&odd));
}

#[test]
fn advanced_record_fields() {
    let mut r = mgmt("sts.amazonaws.com", "AssumeRole", false);
    r["userIdentity"] = json!({"type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/alice"});
    r["sessionCredentialFromConsole"] = json!("true");
    r["vpcEndpointId"] = json!("vpce-1234");
    let yes = [
        json!({"Field": "userIdentity.arn", "EndsWith": [":user/alice"]}),
        json!({"Field": "sessionCredentialFromConsole", "Equals": ["true"]}),
        json!({"Field": "eventType", "Equals": ["AwsApiCall"]}),
        json!({"Field": "vpcEndpointId", "StartsWith": ["vpce-"]}),
        json!({"Field": "eventCategory", "Equals": ["Management"]}),
        json!({"Field": "readOnly", "Equals": ["false"]}),
    ];
    for f in yes {
        assert!(advanced(json!([f.clone()])).selects(&r), "{f}");
    }
    let no = [
        json!({"Field": "userIdentity.arn", "EndsWith": [":user/bob"]}),
        json!({"Field": "sessionCredentialFromConsole", "Equals": ["false"]}),
        json!({"Field": "eventType", "Equals": ["AwsServiceEvent"]}),
        json!({"Field": "eventCategory", "Equals": ["Data"]}),
        json!({"Field": "readOnly", "Equals": ["true"]}),
    ];
    for f in no {
        assert!(!advanced(json!([f.clone()])).selects(&r), "{f}");
    }
    // A boolean compares as its JSON text, a string "true" as itself.
    let mut text = r.clone();
    text["readOnly"] = json!("true");
    assert!(advanced(json!([{"Field": "readOnly", "Equals": ["true"]}])).selects(&text));
    text["sessionCredentialFromConsole"] = json!(false);
    let console = advanced(json!([{"Field": "sessionCredentialFromConsole", "Equals": ["false"]}]));
    assert!(console.selects(&text));
}

#[test]
fn advanced_resource_fields_hold_on_one_resource() {
    // Everything written to S3 objects except the trail's own bucket.
    let s = advanced(json!([
        {"Field": "eventCategory", "Equals": ["Data"]},
        {"Field": "resources.type", "Equals": ["AWS::S3::Object"]},
        {"Field": "resources.ARN", "NotStartsWith": ["arn:aws:s3:::trail-bucket/"]}]));
    assert!(s.selects(&s3_object("PutObject", false, "data", "a")));
    assert!(
        !s.selects(&s3_object("PutObject", false, "trail-bucket", "AWSLogs/x")),
        "the bucket resource (arn:aws:s3:::trail-bucket) must not rescue it"
    );
    // Any resource may be the one.
    let two = data(
        "s.example",
        "Copy",
        false,
        &[
            ("AWS::S3::Object", "arn:aws:s3:::trail-bucket/a"),
            ("AWS::S3::Object", "arn:aws:s3:::data/b"),
        ],
    );
    assert!(s.selects(&two));
    // Without resources: positive conditions fail, negative ones hold.
    let bare = json!({"eventCategory": "Data", "eventName": "X"});
    assert!(!s.selects(&bare));
    let negative_only = advanced(json!([
        {"Field": "resources.ARN", "NotStartsWith": ["arn:aws:s3:::trail-bucket/"]}]));
    assert!(negative_only.selects(&bare));
}

#[test]
fn insights_records_are_never_filtered() {
    let nothing = ok(json!({"EventSelectors": [{"IncludeManagementEvents": false}]}));
    let insight = json!({"eventType": "AwsCloudTrailInsight", "eventCategory": "Insight",
                         "eventSource": "sshd.example.internal"});
    assert!(nothing.selects(&insight));
    assert!(nothing.selects(&json!({"eventType": "AwsCloudTrailInsight"})));
    let only_data = advanced(json!([{"Field": "eventCategory", "Equals": ["Data"]}]));
    assert!(only_data.selects(&insight));
    assert!(!only_data.selects(&mgmt("x", "y", false)));
}

// ---- The default ----------------------------------------------------------------------------

#[test]
fn everything_is_the_default_and_selects_every_record() {
    let all = Selectors::everything();
    assert!(all.is_default());
    let records = [
        mgmt("ec2.amazonaws.com", "RunInstances", false),
        mgmt("ec2.amazonaws.com", "DescribeVpcs", true),
        s3_object("GetObject", true, "b", "k"),
        json!({"eventCategory": "ActivityAuditLog", "eventSource": "app.x"}),
        json!({"eventCategory": "NetworkActivity"}),
        json!({"eventCategory": "SomethingNew", "managementEvent": false}),
        json!({}),
    ];
    for r in &records {
        assert!(all.selects(r), "{r}");
    }
    let shown = all.to_api();
    assert_eq!(
        shown,
        json!({"AdvancedEventSelectors": [{"Name": "All events", "FieldSelectors": [
            {"Field": "eventCategory",
             "Equals": ["Management", "Data", "NetworkActivity", "ActivityAuditLog"]}]}]})
    );
    let back = ok(shown.clone());
    assert_eq!(back, all);
    assert!(back.is_default());
    // The same selector under another name is custom, and selects the same known categories.
    let mut renamed = shown;
    renamed["AdvancedEventSelectors"][0]["Name"] = json!("Mine");
    let custom = ok(renamed);
    assert!(!custom.is_default());
    for r in &records[..5] {
        assert!(custom.selects(r), "{r}");
    }
    assert!(!ok(json!({"EventSelectors": [{}]})).is_default());
}

// ---- The API form ---------------------------------------------------------------------------

#[test]
fn basic_to_api_fills_in_aws_defaults_and_round_trips() {
    let s = ok(json!({"TrailName": "t", "EventSelectors": [
        {},
        {"ReadWriteType": "WriteOnly", "IncludeManagementEvents": false,
         "DataResources": [{"Type": "AWS::S3::Object", "Values": ["arn:aws:s3:::b/"]}],
         "ExcludeManagementEventSources": ["kms.amazonaws.com"]}]}));
    let shown = s.to_api();
    assert_eq!(
        shown,
        json!({"EventSelectors": [
            {"ReadWriteType": "All", "IncludeManagementEvents": true, "DataResources": [],
             "ExcludeManagementEventSources": []},
            {"ReadWriteType": "WriteOnly", "IncludeManagementEvents": false,
             "DataResources": [{"Type": "AWS::S3::Object", "Values": ["arn:aws:s3:::b/"]}],
             "ExcludeManagementEventSources": ["kms.amazonaws.com"]}]})
    );
    assert_eq!(ok(shown), s);
}

#[test]
fn advanced_to_api_is_what_was_put_and_round_trips() {
    let put_body = json!({"AdvancedEventSelectors": [
        {"FieldSelectors": [{"Field": "eventName", "NotEndsWith": ["z"], "Equals": ["a"],
                             "StartsWith": ["b"], "NotEquals": ["c"], "EndsWith": ["d"],
                             "NotStartsWith": ["e"]}]}]});
    let s = ok(put_body);
    let shown = s.to_api();
    let fs = &shown["AdvancedEventSelectors"][0];
    assert!(fs.get("Name").is_none(), "no name put, none shown");
    let keys: Vec<&String> = fs["FieldSelectors"][0]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(
        keys,
        [
            "Field",
            "Equals",
            "StartsWith",
            "EndsWith",
            "NotEquals",
            "NotStartsWith",
            "NotEndsWith"
        ]
    );
    assert_eq!(ok(shown.clone()), s);
    let doc = ok(aws_doc_example());
    assert_eq!(doc.to_api(), aws_doc_example());
    assert_eq!(ok(doc.to_api()), doc);
}

#[test]
fn null_members_are_absent() {
    let s = ok(json!({"EventSelectors": null, "AdvancedEventSelectors": [
        {"Name": null, "FieldSelectors": [{"Field": "eventName", "Equals": ["A"], "StartsWith": null}]}]}));
    assert_eq!(
        s.to_api(),
        json!({"AdvancedEventSelectors": [{"FieldSelectors": [{"Field": "eventName", "Equals": ["A"]}]}]})
    );
    let b = ok(json!({"EventSelectors": [{"ReadWriteType": null, "DataResources": null}]}));
    assert_eq!(b, ok(json!({"EventSelectors": [{}]})));
}

// ---- Validation -----------------------------------------------------------------------------

fn one_field(f: Value) -> Value {
    json!({"AdvancedEventSelectors": [{"FieldSelectors": [f]}]})
}

#[test]
fn refuses_both_kinds_neither_and_unknown_request_members() {
    let e = invalid(
        json!({"EventSelectors": [{}], "AdvancedEventSelectors": aws_doc_example()["AdvancedEventSelectors"]}),
        "not both",
    );
    assert_eq!(
        e.to_string(),
        "InvalidEventSelectorsException: Specify EventSelectors or AdvancedEventSelectors, not \
         both: a trail uses one kind"
    );
    invalid(
        json!({"TrailName": "t"}),
        "Specify EventSelectors or AdvancedEventSelectors",
    );
    invalid(
        json!({"EventSelectors": [{}], "InsightSelectors": []}),
        "Unknown member InsightSelectors",
    );
}

#[test]
fn refuses_bad_basic_selectors() {
    invalid(
        json!({"EventSelectors": []}),
        "EventSelectors has 0 selectors; a trail can have 1 to 5",
    );
    let six: Vec<Value> = (0..6).map(|_| json!({})).collect();
    invalid(json!({"EventSelectors": six}), "has 6 selectors");
    let five: Vec<Value> = (0..5).map(|_| json!({})).collect();
    ok(json!({"EventSelectors": five}));
    invalid(
        json!({"EventSelectors": [{}, {"ReadWriteType": "read-only"}]}),
        "Value read-only for EventSelectors[1].ReadWriteType is invalid; use ReadOnly, WriteOnly or All",
    );
    invalid(
        json!({"EventSelectors": [{"IncludeManagementEvent": true}]}),
        "Unknown member IncludeManagementEvent in EventSelectors[0]",
    );
    refused(
        json!({"EventSelectors": [{"IncludeManagementEvents": "yes"}]}),
        SERIALIZATION,
        "EventSelectors[0].IncludeManagementEvents must be true or false",
    );
    refused(
        json!({"EventSelectors": {}}),
        SERIALIZATION,
        "EventSelectors must be a list",
    );
    invalid(
        json!({"EventSelectors": [{"ExcludeManagementEventSources": [""]}]}),
        "EventSelectors[0].ExcludeManagementEventSources[0] is empty",
    );
}

#[test]
fn refuses_bad_data_resources() {
    let with = |d: Value| json!({"EventSelectors": [{"DataResources": [d]}]});
    invalid(
        with(json!({"Values": ["arn:aws:s3"]})),
        "EventSelectors[0].DataResources[0].Type is required",
    );
    invalid(
        with(json!({"Type": "AWS::S3::Object"})),
        "DataResources[0].Values has 0 values",
    );
    invalid(
        with(json!({"Type": "AWS::S3::Object", "Values": []})),
        "has 0 values",
    );
    invalid(
        with(json!({"Type": "AWS::S3::Object", "Vals": []})),
        "Unknown member Vals",
    );
    for bad in [
        "arn:aws:s3:::*/*",
        "arn:aws:s3:::bucket",
        "arn:aws:s3:::/key",
        "bucket/",
        "arn:aws:lambda:us-east-1:1:function:f",
    ] {
        invalid(
            with(json!({"Type": "AWS::S3::Object", "Values": [bad]})),
            &format!("Value {bad} for DataResources.Values is invalid."),
        );
    }
    for bad in ["arn:aws:lambda:*", "arn:aws:lambda:us-east-1:1:function:"] {
        invalid(
            with(json!({"Type": "AWS::Lambda::Function", "Values": [bad]})),
            &format!("Value {bad} for DataResources.Values is invalid."),
        );
    }
    invalid(
        with(
            json!({"Type": "AWS::DynamoDB::Table", "Values": ["arn:aws:dynamodb:us-east-1:1:stream/x"]}),
        ),
        "for DataResources.Values is invalid",
    );
    invalid(
        with(json!({"Type": "Shop::Order", "Values": ["order/1"]})),
        "Value order/1 for DataResources.Values is invalid",
    );
    for good in [
        "arn:aws:s3",
        "arn:aws:s3:::",
        "arn:aws-cn:s3:::b/",
        "arn:aws:s3:::b/p/q",
    ] {
        ok(with(json!({"Type": "AWS::S3::Object", "Values": [good]})));
    }
}

#[test]
fn refuses_more_than_250_data_resources_across_selectors() {
    let arns = |n: usize, bucket: &str| -> Vec<String> {
        (0..n)
            .map(|i| format!("arn:aws:s3:::{bucket}/{i}"))
            .collect()
    };
    let body = |a: usize, b: usize| {
        json!({"EventSelectors": [
            {"DataResources": [{"Type": "AWS::S3::Object", "Values": arns(a, "a")}]},
            {"DataResources": [{"Type": "AWS::S3::Object", "Values": arns(b, "b")},
                               {"Type": "AWS::Lambda::Function", "Values": ["arn:aws:lambda"]}]}]})
    };
    ok(body(200, 50));
    invalid(
        body(200, 51),
        "limited to 250 data resources across its event selectors",
    );
    invalid(body(251, 0), "Values has 251 values");
    // Whole-type values do not count.
    let mut whole = body(200, 50);
    whole["EventSelectors"][0]["DataResources"][0]["Values"]
        .as_array_mut()
        .unwrap()
        .push(json!("arn:aws:s3"));
    ok(whole);
}

#[test]
fn refuses_bad_advanced_selectors() {
    invalid(
        json!({"AdvancedEventSelectors": []}),
        "AdvancedEventSelectors is empty",
    );
    let named = |n: usize| {
        json!({"AdvancedEventSelectors": [{"Name": "n".repeat(n),
            "FieldSelectors": [{"Field": "eventCategory", "Equals": ["Management"]}]}]})
    };
    ok(named(1000));
    invalid(
        named(1001),
        "AdvancedEventSelectors[0].Name is 1001 characters; at most 1000",
    );
    invalid(
        json!({"AdvancedEventSelectors": [{"Name": "x", "FieldSelectors": []}]}),
        "AdvancedEventSelectors[0].FieldSelectors is empty",
    );
    invalid(
        json!({"AdvancedEventSelectors": [{"Name": "x"}]}),
        "FieldSelectors is empty",
    );
    invalid(
        json!({"AdvancedEventSelectors": [{"FieldSelector": []}]}),
        "Unknown member FieldSelector in AdvancedEventSelectors[0]",
    );
    invalid(
        one_field(json!({"Equals": ["a"]})),
        "FieldSelectors[0].Field is required",
    );
    invalid(
        one_field(json!({"Field": "event name", "Equals": ["a"]})),
        "Field \"event name\"",
    );
    invalid(
        one_field(json!({"Field": "", "Equals": ["a"]})),
        "is invalid; a field is 1 to 1000",
    );
    invalid(
        one_field(json!({"Field": "a".repeat(1001), "Equals": ["a"]})),
        "1 to 1000 letters",
    );
    invalid(
        one_field(json!({"Field": "eventTime", "Equals": ["a"]})),
        "Field eventTime in AdvancedEventSelectors[0].FieldSelectors[0] is not supported",
    );
    invalid(
        one_field(json!({"Field": "eventName"})),
        "FieldSelectors[0] (eventName) has no operator",
    );
    invalid(
        one_field(json!({"Field": "eventName", "StartsWith": []})),
        "FieldSelectors[0].StartsWith is empty",
    );
    invalid(
        one_field(json!({"Field": "eventName", "Equal": ["a"]})),
        "Unknown member Equal in AdvancedEventSelectors[0].FieldSelectors[0]",
    );
    invalid(
        one_field(json!({"Field": "eventName", "Equals": [""]})),
        "Equals[0] must be 1 to 2048",
    );
    ok(one_field(
        json!({"Field": "eventName", "Equals": ["v".repeat(2048)]}),
    ));
    invalid(
        one_field(json!({"Field": "eventName", "Equals": ["v".repeat(2049)]})),
        "must be 1 to 2048 characters",
    );
    refused(
        one_field(json!({"Field": "eventName", "Equals": "GetObject"})),
        SERIALIZATION,
        "FieldSelectors[0].Equals must be a list",
    );
    refused(
        one_field(json!({"Field": "eventName", "Equals": [1]})),
        SERIALIZATION,
        "Equals[0] must be a string",
    );
}

#[test]
fn refuses_operators_and_values_aws_restricts() {
    for (field, op) in [
        ("readOnly", "StartsWith"),
        ("eventCategory", "NotEquals"),
        ("resources.type", "EndsWith"),
    ] {
        invalid(
            one_field(json!({"Field": field, op: ["x"]})),
            &format!(
                "Field {field} supports only the Equals operator; AdvancedEventSelectors[0].FieldSelectors[0] uses {op}"
            ),
        );
    }
    invalid(
        one_field(json!({"Field": "readOnly", "Equals": ["yes"]})),
        "Value yes for readOnly in AdvancedEventSelectors[0].FieldSelectors[0].Equals[0] is invalid; use true or false",
    );
    invalid(
        one_field(json!({"Field": "eventCategory", "Equals": ["Insight"]})),
        "insight selectors",
    );
    invalid(
        one_field(json!({"Field": "eventCategory", "Equals": ["Management", "ConfigurationItem"]})),
        "Value ConfigurationItem for eventCategory",
    );
    for c in ["Management", "Data", "NetworkActivity", "ActivityAuditLog"] {
        ok(one_field(json!({"Field": "eventCategory", "Equals": [c]})));
    }
}

#[test]
fn refuses_more_than_500_condition_values() {
    let values = |n: usize| -> Vec<String> { (0..n).map(|i| format!("Name{i}")).collect() };
    let body = |a: usize, b: usize| {
        json!({"AdvancedEventSelectors": [
            {"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Management"]},
                                {"Field": "eventName", "Equals": values(a)}]},
            {"FieldSelectors": [{"Field": "eventName", "NotEquals": values(b)}]}]})
    };
    ok(body(249, 250));
    invalid(
        body(250, 250),
        "at most 500 condition values in all; these have 501",
    );
}

// ---- The config form ------------------------------------------------------------------------

fn config(toml_text: &str) -> SelectorsConfig {
    toml::from_str(toml_text).expect("config parses")
}

#[test]
fn config_default_is_everything() {
    assert_eq!(
        SelectorsConfig::default().to_selectors().unwrap(),
        Selectors::everything()
    );
    assert_eq!(config("").to_selectors().unwrap(), Selectors::everything());
    // The defaults render, so the example config can show them.
    let text = toml::to_string(&SelectorsConfig::default()).unwrap();
    assert!(text.contains("event_selectors = []"), "{text}");
    assert!(text.contains("advanced_event_selectors = []"), "{text}");
    let one = toml::Value::try_from(EventSelectorConfig::default()).unwrap();
    assert_eq!(one["read_write_type"].as_str(), Some("All"));
    assert_eq!(one["include_management_events"].as_bool(), Some(true));
    toml::Value::try_from(FieldSelectorConfig::default()).unwrap();
    toml::Value::try_from(AdvancedEventSelectorConfig::default()).unwrap();
    toml::Value::try_from(DataResourceConfig::default()).unwrap();
}

#[test]
fn config_basic_equals_api() {
    let c = config(
        r#"
        [[event_selectors]]
        exclude_management_event_sources = ["kms.amazonaws.com"]

        [[event_selectors]]
        read_write_type = "WriteOnly"
        include_management_events = false
        data_resources = [{ type = "AWS::S3::Object", values = ["arn:aws:s3:::b/"] }]
        "#,
    );
    let api = ok(json!({"EventSelectors": [
        {"ReadWriteType": "All", "IncludeManagementEvents": true,
         "ExcludeManagementEventSources": ["kms.amazonaws.com"]},
        {"ReadWriteType": "WriteOnly", "IncludeManagementEvents": false,
         "DataResources": [{"Type": "AWS::S3::Object", "Values": ["arn:aws:s3:::b/"]}]}]}));
    assert_eq!(c.to_selectors().unwrap(), api);
}

#[test]
fn config_advanced_equals_api() {
    let c = config(
        r#"
        [[advanced_event_selectors]]
        name = "Log readOnly and writeOnly management events"
        field_selectors = [{ field = "eventCategory", equals = ["Management"] }]

        [[advanced_event_selectors]]
        name = "Log PutObject and DeleteObject events for two S3 prefixes"
        field_selectors = [
            { field = "eventCategory", equals = ["Data"] },
            { field = "resources.type", equals = ["AWS::S3::Object"] },
            { field = "eventName", equals = ["PutObject", "DeleteObject"] },
            { field = "resources.ARN", starts_with = ["arn:aws:s3:::mybucket/prefix", "arn:aws:s3:::mybucket2/prefix2"] },
        ]
        "#,
    );
    assert_eq!(c.to_selectors().unwrap(), ok(aws_doc_example()));
    let dev = config(
        r#"
        [[advanced_event_selectors]]
        field_selectors = [
            { field = "eventSource", starts_with = ["app."], not_ends_with = [".test"] },
            { field = "readOnly", equals = ["false"] },
        ]
        "#,
    );
    assert_eq!(
        dev.to_selectors().unwrap(),
        advanced(json!([
            {"Field": "eventSource", "StartsWith": ["app."], "NotEndsWith": [".test"]},
            {"Field": "readOnly", "Equals": ["false"]}]))
    );
}

#[test]
fn config_is_refused_like_the_api() {
    let both = config(
        r#"
        [[event_selectors]]
        [[advanced_event_selectors]]
        field_selectors = [{ field = "eventName", equals = ["A"] }]
        "#,
    );
    let api = put(json!({"EventSelectors": [{}], "AdvancedEventSelectors": [
        {"FieldSelectors": [{"Field": "eventName", "Equals": ["A"]}]}]}));
    assert_eq!(both.to_selectors(), api);
    assert_eq!(
        both.to_selectors().unwrap_err().code,
        INVALID_EVENT_SELECTORS
    );
    let bad_rw = config("[[event_selectors]]\nread_write_type = \"read-only\"\n");
    assert_eq!(
        bad_rw.to_selectors(),
        put(json!({"EventSelectors": [{"ReadWriteType": "read-only"}]}))
    );
    let no_op =
        config("[[advanced_event_selectors]]\nfield_selectors = [{ field = \"eventName\" }]\n");
    let e = no_op.to_selectors().unwrap_err();
    assert!(e.message.contains("has no operator"), "{e}");
    let only_eq = config(
        "[[advanced_event_selectors]]\nfield_selectors = [{ field = \"readOnly\", not_equals = [\"true\"] }]\n",
    );
    assert!(
        only_eq
            .to_selectors()
            .unwrap_err()
            .message
            .contains("only the Equals operator")
    );
    // Unknown keys are refused by the config parser itself, naming the key.
    for text in [
        "event_selector = []\n",
        "[[event_selectors]]\nreadwrite_type = \"All\"\n",
        "[[event_selectors]]\ndata_resources = [{ type = \"AWS::S3::Object\", value = [] }]\n",
        "[[advanced_event_selectors]]\nfield_selectors = [{ field = \"eventName\", equal = [\"A\"] }]\n",
    ] {
        let e = toml::from_str::<SelectorsConfig>(text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field"), "{text}: {e}");
    }
}
