//! Wraps a CloudTrail record in the envelope EventBridge delivers it in, so that patterns
//! written for EventBridge (`"source": ["aws.iam"]`, `"detail-type": [...]`, `"detail": {...}`)
//! run unchanged.
//!
//! The envelope's fields are those of every EventBridge event (EventBridge user guide, "Events"
//! / "Event structure"): `version` is `"0"`, `detail` is the record itself. The `detail-type`
//! follows the record's `eventType` as the guide's "AWS service events delivered via AWS
//! CloudTrail" lists them. That page spells the sign-in type "AWS Console Signin via
//! CloudTrail", but the events EventBridge actually delivers, and the patterns written against
//! them, use "AWS Console Sign In via CloudTrail"; the delivered spelling is used here.
//!
//! Not exact, by necessity: EventBridge's `id` is a UUID it generates; here it is the record's
//! `eventID`, so that re-evaluating a record gives the same envelope. `resources` is `[]`, as in
//! the CloudTrail-via-EventBridge samples.

use serde_json::{Value as Json, json};

/// The `detail-type` EventBridge gives a CloudTrail record of this `eventType`.
pub fn detail_type(event_type: Option<&str>) -> &'static str {
    match event_type {
        Some("AwsConsoleSignIn") => "AWS Console Sign In via CloudTrail",
        Some("AwsConsoleAction") => "AWS Console Action via CloudTrail",
        Some("AwsServiceEvent") => "AWS Service Event via CloudTrail",
        Some("AwsCloudTrailInsight") => "AWS Insight via CloudTrail",
        _ => "AWS API Call via CloudTrail",
    }
}

/// `aws.<service>` from an `eventSource` such as `iam.amazonaws.com` (`aws.iam`).
pub fn source(event_source: &str) -> String {
    let service = event_source.split('.').next().unwrap_or(event_source);
    format!("aws.{service}")
}

/// The EventBridge event for a CloudTrail record.
pub fn wrap_cloudtrail(record: &Json) -> Json {
    let mut event = cloudtrail_envelope(record);
    event["detail"] = record.clone();
    event
}

/// The envelope without `detail`, for matching many patterns with
/// [`super::EventPattern::matches_in_envelope`] without copying the record.
pub fn cloudtrail_envelope(record: &Json) -> Json {
    let s = |key: &str| record.get(key).and_then(Json::as_str);
    // Insights records carry their service inside insightDetails.
    let event_source = s("eventSource")
        .or_else(|| {
            record
                .pointer("/insightDetails/eventSource")
                .and_then(Json::as_str)
        })
        .unwrap_or("");
    let account = s("recipientAccountId")
        .or_else(|| {
            record
                .pointer("/userIdentity/accountId")
                .and_then(Json::as_str)
        })
        .unwrap_or("");
    json!({
        "version": "0",
        "id": s("eventID").unwrap_or(""),
        "detail-type": detail_type(s("eventType")),
        "source": source(event_source),
        "account": account,
        "time": s("eventTime").unwrap_or(""),
        "region": s("awsRegion").unwrap_or(""),
        "resources": [],
    })
}
