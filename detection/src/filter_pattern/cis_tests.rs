//! Each Security Hub CloudWatch.1-14 pattern, as shipped, against realistic CloudTrail records
//! that must trigger it and near misses that must not. Record shapes follow the CloudTrail
//! user guide's record-contents reference and its ConsoleLogin examples.

use super::pack::{CIS_CLOUDWATCH_JSON, PackRule, cis_cloudwatch};
use serde_json::{Value as Json, json};

fn pack() -> Vec<PackRule> {
    cis_cloudwatch().expect("the built-in CIS pack parses")
}

fn rule(control: &str) -> PackRule {
    pack()
        .into_iter()
        .find(|r| r.control == control)
        .unwrap_or_else(|| panic!("{control} missing"))
}

/// An IAM user's API call, as CloudTrail records it.
fn api_call(source: &str, name: &str) -> Json {
    json!({
        "eventVersion": "1.09",
        "userIdentity": {
            "type": "IAMUser",
            "principalId": "AIDAEXAMPLE",
            "arn": "arn:aws:iam::123456789012:user/alice",
            "accountId": "123456789012",
            "accessKeyId": "AKIAEXAMPLE",
            "userName": "alice"
        },
        "eventTime": "2026-12-07T04:00:00Z",
        "eventSource": source,
        "eventName": name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": "198.51.100.7",
        "userAgent": "aws-cli/2.15.0",
        "requestParameters": {},
        "responseElements": null,
        "requestID": "0f8e0c5e-0000-4000-8000-000000000001",
        "eventID": "6e1f1c0a-0000-4000-8000-000000000002",
        "readOnly": false,
        "eventType": "AwsApiCall",
        "managementEvent": true,
        "recipientAccountId": "123456789012",
        "eventCategory": "Management"
    })
}

fn with(mut record: Json, path: &[&str], value: Json) -> Json {
    let mut node = &mut record;
    for key in &path[..path.len() - 1] {
        node = node
            .as_object_mut()
            .unwrap()
            .entry(key.to_string())
            .or_insert_with(|| json!({}));
    }
    node.as_object_mut()
        .unwrap()
        .insert(path[path.len() - 1].to_string(), value);
    record
}

fn without(mut record: Json, path: &[&str]) -> Json {
    let mut node = &mut record;
    for key in &path[..path.len() - 1] {
        node = node.get_mut(*key).unwrap();
    }
    node.as_object_mut().unwrap().remove(path[path.len() - 1]);
    record
}

/// A console sign-in record (signin.amazonaws.com), successful, with or without MFA.
fn console_login(mfa: &str, success: bool) -> Json {
    let mut r = api_call("signin.amazonaws.com", "ConsoleLogin");
    r["eventType"] = json!("AwsConsoleSignIn");
    r["additionalEventData"] = json!({
        "LoginTo": "https://console.aws.amazon.com/console/home",
        "MobileVersion": "No",
        "MFAUsed": mfa
    });
    if success {
        r["responseElements"] = json!({"ConsoleLogin": "Success"});
    } else {
        r["responseElements"] = json!({"ConsoleLogin": "Failure"});
        r["errorMessage"] = json!("Failed authentication");
    }
    r
}

fn assert_fires(control: &str, records: &[Json]) {
    let r = rule(control);
    for rec in records {
        assert!(r.pattern.matches(rec), "{control} should fire on {rec}");
    }
}

fn assert_quiet(control: &str, records: &[Json]) {
    let r = rule(control);
    for rec in records {
        assert!(
            !r.pattern.matches(rec),
            "{control} should not fire on {rec}"
        );
    }
}

#[test]
fn pack_has_fourteen_controls_in_order_verbatim() {
    let rules = pack();
    let ids: Vec<_> = rules.iter().map(|r| r.control.clone()).collect();
    let want: Vec<_> = (1..=14).map(|n| format!("CloudWatch.{n}")).collect();
    assert_eq!(ids, want);
    // The parsed pattern keeps the pack's text byte for byte.
    let raw: Json = serde_json::from_str(CIS_CLOUDWATCH_JSON).unwrap();
    for (r, raw) in rules.iter().zip(raw["rules"].as_array().unwrap()) {
        assert_eq!(r.pattern.source(), raw["pattern"].as_str().unwrap());
        assert!(!r.title.is_empty());
    }
    // Spot-check two against the Security Hub guide's text.
    assert_eq!(
        rules[0].pattern.source(),
        r#"{$.userIdentity.type="Root" && $.userIdentity.invokedBy NOT EXISTS && $.eventType !="AwsServiceEvent"}"#
    );
    assert_eq!(
        rules[6].pattern.source(),
        "{($.eventSource=kms.amazonaws.com) && (($.eventName=DisableKey) || ($.eventName=ScheduleKeyDeletion))}"
    );
}

#[test]
fn cloudwatch_1_root_usage() {
    let root = with(
        with(
            api_call("s3.amazonaws.com", "ListBuckets"),
            &["userIdentity", "type"],
            json!("Root"),
        ),
        &["userIdentity", "arn"],
        json!("arn:aws:iam::123456789012:root"),
    );
    assert_fires("CloudWatch.1", std::slice::from_ref(&root));
    assert_quiet(
        "CloudWatch.1",
        &[
            api_call("s3.amazonaws.com", "ListBuckets"),
            // A service acting for root (invokedBy present).
            with(
                root.clone(),
                &["userIdentity", "invokedBy"],
                json!("support.amazonaws.com"),
            ),
            // A service event.
            with(root.clone(), &["eventType"], json!("AwsServiceEvent")),
            // Case matters.
            with(root.clone(), &["userIdentity", "type"], json!("root")),
            // No eventType at all: `!=` needs a value.
            without(root, &["eventType"]),
        ],
    );
}

#[test]
fn cloudwatch_2_unauthorized_calls() {
    let base = api_call("ec2.amazonaws.com", "RunInstances");
    assert_fires(
        "CloudWatch.2",
        &[
            with(
                base.clone(),
                &["errorCode"],
                json!("Client.UnauthorizedOperation"),
            ),
            with(base.clone(), &["errorCode"], json!("AccessDenied")),
            with(base.clone(), &["errorCode"], json!("AccessDeniedException")),
        ],
    );
    assert_quiet(
        "CloudWatch.2",
        &[
            base.clone(),
            with(base.clone(), &["errorCode"], json!("ThrottlingException")),
            with(
                base.clone(),
                &["errorCode"],
                json!("UnauthorizedOperationX"),
            ),
            with(base, &["errorCode"], json!("NotAccessDenied")),
        ],
    );
}

#[test]
fn cloudwatch_3_console_login_without_mfa() {
    assert_fires("CloudWatch.3", &[console_login("No", true)]);
    assert_quiet(
        "CloudWatch.3",
        &[
            console_login("Yes", true),
            console_login("No", false),
            with(
                console_login("No", true),
                &["userIdentity", "type"],
                json!("AssumedRole"),
            ),
            // No MFAUsed field: `!=` needs a value to compare.
            without(
                console_login("No", true),
                &["additionalEventData", "MFAUsed"],
            ),
        ],
    );
}

fn fires_on_names(control: &str, source: &str, names: &[&str], near: &[&str]) {
    let hits: Vec<_> = names.iter().map(|n| api_call(source, n)).collect();
    assert_fires(control, &hits);
    let misses: Vec<_> = near.iter().map(|n| api_call(source, n)).collect();
    assert_quiet(control, &misses);
}

#[test]
fn cloudwatch_4_iam_policy_changes() {
    fires_on_names(
        "CloudWatch.4",
        "iam.amazonaws.com",
        &[
            "DeleteGroupPolicy",
            "DeleteRolePolicy",
            "DeleteUserPolicy",
            "PutGroupPolicy",
            "PutRolePolicy",
            "PutUserPolicy",
            "CreatePolicy",
            "DeletePolicy",
            "CreatePolicyVersion",
            "DeletePolicyVersion",
            "AttachRolePolicy",
            "DetachRolePolicy",
            "AttachUserPolicy",
            "DetachUserPolicy",
            "AttachGroupPolicy",
            "DetachGroupPolicy",
        ],
        &[
            "GetPolicy",
            "ListPolicies",
            "createpolicy",
            "CreatePolicyVersions",
            "PutRolePermissionsBoundary",
        ],
    );
}

#[test]
fn cloudwatch_5_cloudtrail_changes() {
    fires_on_names(
        "CloudWatch.5",
        "cloudtrail.amazonaws.com",
        &[
            "CreateTrail",
            "UpdateTrail",
            "DeleteTrail",
            "StartLogging",
            "StopLogging",
        ],
        &[
            "DescribeTrails",
            "GetTrailStatus",
            "PutEventSelectors",
            "LookupEvents",
        ],
    );
}

#[test]
fn cloudwatch_6_console_auth_failures() {
    assert_fires(
        "CloudWatch.6",
        &[console_login("No", false), console_login("Yes", false)],
    );
    assert_quiet(
        "CloudWatch.6",
        &[
            console_login("No", true),
            with(
                console_login("No", false),
                &["errorMessage"],
                json!("Failed authentication "),
            ),
            with(
                api_call("iam.amazonaws.com", "GetUser"),
                &["errorMessage"],
                json!("Failed authentication"),
            ),
        ],
    );
}

#[test]
fn cloudwatch_7_kms_disable_or_delete() {
    fires_on_names(
        "CloudWatch.7",
        "kms.amazonaws.com",
        &["DisableKey", "ScheduleKeyDeletion"],
        &["EnableKey", "CancelKeyDeletion", "DisableKeyRotation"],
    );
    // Right name, other service.
    assert_quiet("CloudWatch.7", &[api_call("kms.example.com", "DisableKey")]);
}

#[test]
fn cloudwatch_8_s3_bucket_policy_changes() {
    fires_on_names(
        "CloudWatch.8",
        "s3.amazonaws.com",
        &[
            "PutBucketAcl",
            "PutBucketPolicy",
            "PutBucketCors",
            "PutBucketLifecycle",
            "PutBucketReplication",
            "DeleteBucketPolicy",
            "DeleteBucketCors",
            "DeleteBucketLifecycle",
            "DeleteBucketReplication",
        ],
        &[
            "GetBucketPolicy",
            "PutObject",
            "PutBucketTagging",
            "PutBucketLifecycleConfiguration",
        ],
    );
    assert_quiet(
        "CloudWatch.8",
        &[api_call("s3-outposts.amazonaws.com", "PutBucketPolicy")],
    );
}

#[test]
fn cloudwatch_9_config_changes() {
    fires_on_names(
        "CloudWatch.9",
        "config.amazonaws.com",
        &[
            "StopConfigurationRecorder",
            "DeleteDeliveryChannel",
            "PutDeliveryChannel",
            "PutConfigurationRecorder",
        ],
        &[
            "StartConfigurationRecorder",
            "DescribeDeliveryChannels",
            "PutConfigRule",
        ],
    );
    assert_quiet(
        "CloudWatch.9",
        &[api_call("iam.amazonaws.com", "PutDeliveryChannel")],
    );
}

#[test]
fn cloudwatch_10_security_groups() {
    fires_on_names(
        "CloudWatch.10",
        "ec2.amazonaws.com",
        &[
            "AuthorizeSecurityGroupIngress",
            "AuthorizeSecurityGroupEgress",
            "RevokeSecurityGroupIngress",
            "RevokeSecurityGroupEgress",
            "CreateSecurityGroup",
            "DeleteSecurityGroup",
        ],
        &[
            "DescribeSecurityGroups",
            "ModifySecurityGroupRules",
            "CreateSecurityGroups",
        ],
    );
}

#[test]
fn cloudwatch_11_nacls() {
    fires_on_names(
        "CloudWatch.11",
        "ec2.amazonaws.com",
        &[
            "CreateNetworkAcl",
            "CreateNetworkAclEntry",
            "DeleteNetworkAcl",
            "DeleteNetworkAclEntry",
            "ReplaceNetworkAclEntry",
            "ReplaceNetworkAclAssociation",
        ],
        &["DescribeNetworkAcls", "CreateNetworkInterface"],
    );
}

#[test]
fn cloudwatch_12_network_gateways() {
    fires_on_names(
        "CloudWatch.12",
        "ec2.amazonaws.com",
        &[
            "CreateCustomerGateway",
            "DeleteCustomerGateway",
            "AttachInternetGateway",
            "CreateInternetGateway",
            "DeleteInternetGateway",
            "DetachInternetGateway",
        ],
        &["CreateNatGateway", "DescribeInternetGateways"],
    );
}

#[test]
fn cloudwatch_13_route_tables() {
    fires_on_names(
        "CloudWatch.13",
        "ec2.amazonaws.com",
        &[
            "CreateRoute",
            "CreateRouteTable",
            "ReplaceRoute",
            "ReplaceRouteTableAssociation",
            "DeleteRouteTable",
            "DeleteRoute",
            "DisassociateRouteTable",
        ],
        &["DescribeRouteTables", "AssociateRouteTable", "CreateRoutes"],
    );
}

#[test]
fn cloudwatch_14_vpcs() {
    fires_on_names(
        "CloudWatch.14",
        "ec2.amazonaws.com",
        &[
            "CreateVpc",
            "DeleteVpc",
            "ModifyVpcAttribute",
            "AcceptVpcPeeringConnection",
            "CreateVpcPeeringConnection",
            "DeleteVpcPeeringConnection",
            "RejectVpcPeeringConnection",
            "AttachClassicLinkVpc",
            "DetachClassicLinkVpc",
            "DisableVpcClassicLink",
            "EnableVpcClassicLink",
        ],
        &[
            "DescribeVpcs",
            "CreateVpcEndpoint",
            "ModifyVpcEndpoint",
            "createvpc",
        ],
    );
}

/// No CIS rule fires on a plain read.
#[test]
fn no_rule_fires_on_a_plain_read() {
    let read = api_call("ec2.amazonaws.com", "DescribeInstances");
    for r in pack() {
        assert!(!r.pattern.matches(&read), "{}", r.control);
    }
}

/// AWS's own example sign-in records (CloudTrail user guide, "AWS Management Console sign-in
/// events"; copied in testdata/ with their source) against the three CIS sign-in controls, and
/// the same records through the EventBridge and Sigma rules for the same detections.
#[test]
fn aws_documented_signin_records() {
    let doc: Json = serde_json::from_str(include_str!(
        "../../testdata/aws-console-signin-examples.json"
    ))
    .unwrap();
    let r = |name: &str| doc["records"][name].clone();
    let fired = |record: &Json| -> Vec<String> {
        pack()
            .into_iter()
            .filter(|rule| rule.pattern.matches(record))
            .map(|rule| rule.control)
            .collect()
    };
    assert_eq!(fired(&r("iam_success_no_mfa")), ["CloudWatch.3"]);
    assert!(fired(&r("iam_success_mfa")).is_empty());
    assert_eq!(fired(&r("iam_failure")), ["CloudWatch.6"]);
    // Root signing in: CloudWatch.1 (root usage), and not CloudWatch.3, which is for IAM users.
    assert_eq!(fired(&r("root_success_no_mfa")), ["CloudWatch.1"]);
    assert_eq!(fired(&r("root_failure")), ["CloudWatch.1", "CloudWatch.6"]);

    use crate::event_pattern::EventPattern;
    let eb = EventPattern::parse(
        r#"{"source": ["aws.signin"], "detail-type": ["AWS Console Sign In via CloudTrail"],
            "detail": {"responseElements": {"ConsoleLogin": ["Success"]},
                       "additionalEventData": {"MFAUsed": [{"anything-but": "Yes"}]}}}"#,
    )
    .unwrap();
    assert!(eb.matches_record(&r("iam_success_no_mfa")));
    assert!(eb.matches_record(&r("root_success_no_mfa")));
    assert!(!eb.matches_record(&r("iam_success_mfa")));
    assert!(!eb.matches_record(&r("iam_failure")));

    let sigma =
        crate::sigma::SigmaRule::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "packs/sigma-aws-cloudtrail/aws_cloudtrail_console_login_success_without_mfa.yml",
        ))
        .unwrap();
    assert!(sigma.matches(&r("iam_success_no_mfa")));
    assert!(!sigma.matches(&r("iam_success_mfa")));
    assert!(!sigma.matches(&r("iam_failure")));
}
