//! A stand-in for CloudTrail's API: the DescribeTrails, ListPublicKeys and DescribeOrganization
//! calls (JSON 1.1) `aws cloudtrail validate-logs` makes before it reads the bucket.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use bytes::Bytes;
use groundtrail_common::trail::SigningKey;
use serde_json::Value;

use crate::{ACCOUNT, REGION, TRAIL, TRAIL_ARN};

/// A loopback HTTP server answering the two CloudTrail calls `aws cloudtrail validate-logs`
/// makes, with the collector's trail and public key.
pub struct CloudTrailStub {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CloudTrailStub {
    /// Serves `trail` (a DescribeTrails `trailList` entry) and `key` as the only public key,
    /// valid from a day ago to a day ahead.
    pub fn start(trail: Value, key: &SigningKey) -> CloudTrailStub {
        use base64::Engine;
        let now = chrono::Utc::now().timestamp();
        let keys = serde_json::json!({
            "PublicKeyList": [{
                "Value": base64::engine::general_purpose::STANDARD.encode(key.public_key_der()),
                "ValidityStartTime": now - 86_400,
                "ValidityEndTime": now + 86_400,
                "Fingerprint": key.fingerprint(),
            }]
        });
        let trails = serde_json::json!({ "trailList": [trail] });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind stub");
        let addr = listener.local_addr().expect("stub addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("stub runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let answers = Arc::new((trails, keys));
                loop {
                    let (tcp, _) = tokio::select! {
                        _ = &mut stopped => return,
                        a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                    };
                    let answers = answers.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let answers = answers.clone();
                            async move { Ok::<_, std::convert::Infallible>(stub_answer(req, &answers)) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                            .await;
                    });
                }
            });
        });
        CloudTrailStub {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn stub_answer(
    req: hyper::Request<hyper::body::Incoming>,
    answers: &(Value, Value),
) -> hyper::Response<http_body_util::Full<Bytes>> {
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (status, body) = match target.rsplit('.').next() {
        Some("DescribeTrails") => (200, answers.0.clone()),
        Some("ListPublicKeys") => (200, answers.1.clone()),
        Some("DescribeOrganization") => {
            let org = answers.0["trailList"][0]["OrganizationId"].clone();
            (
                200,
                serde_json::json!({ "Organization": {
                    "Id": org,
                    "Arn": format!("arn:aws:organizations::{ACCOUNT}:organization/{}", org.as_str().unwrap_or_default()),
                    "MasterAccountId": ACCOUNT,
                    "FeatureSet": "ALL",
                }}),
            )
        }
        _ => (
            400,
            serde_json::json!({"__type": "UnknownOperationException", "message": target}),
        ),
    };
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.1")
        .body(http_body_util::Full::new(Bytes::from(body.to_string())))
        .expect("response")
}

impl Drop for CloudTrailStub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The DescribeTrails entry of an organization trail with a key prefix. (`OrganizationId` is
/// not a DescribeTrails member; the stub reads it to answer DescribeOrganization.)
pub fn org_trail_description(bucket: &str, prefix: &str, organization_id: &str) -> Value {
    let mut t = trail_description(bucket);
    t["S3KeyPrefix"] = prefix.into();
    t["IsOrganizationTrail"] = true.into();
    t["IsMultiRegionTrail"] = true.into();
    t["OrganizationId"] = organization_id.into();
    t
}

/// The DescribeTrails entry of the test trail in `bucket`.
pub fn trail_description(bucket: &str) -> Value {
    serde_json::json!({
        "Name": TRAIL,
        "S3BucketName": bucket,
        "TrailARN": TRAIL_ARN,
        "HomeRegion": REGION,
        "IsMultiRegionTrail": false,
        "IsOrganizationTrail": false,
        "LogFileValidationEnabled": true,
        "IncludeGlobalServiceEvents": true,
    })
}
