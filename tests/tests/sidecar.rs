//! End to end for sidecar mode (issue 5): real HTTP calls through the real `groundtrail-agent`'s
//! `[sidecar]` proxy to a real upstream (a small hyper server in this test) become CloudTrail
//! records in the real `groundtrail-collector`'s trail, with the route table's names and
//! resources, secrets redacted, upstream errors mapped, and a trail that validates.
//!
//! Nothing asserts on time: waits poll until the trail holds what is expected (or give up
//! after the harness's generous deadline).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use groundtrail_tests::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

const HOST: &str = "gt-e2e-sidecar";
const HIDDEN: &str = "HIDDEN_DUE_TO_SECURITY_REASONS";
const EVENT_SOURCE: &str = "orders.example.internal";

/// What the upstream saw: (method, path and query, body).
type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

/// The application behind the sidecar: `GET /orders/999` is 404 with an error document,
/// other `GET /orders/{id}` answer the order, `POST /orders` answers 201 with a new id, anything
/// else 204. It records every request it receives.
async fn upstream() -> (SocketAddr, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("upstream addr");
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let log = log.clone();
                    async move { Ok::<_, Infallible>(answer(req, &log).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    seen: &Seen,
) -> hyper::Response<Full<Bytes>> {
    let method = req.method().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let path = req.uri().path().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    seen.lock().unwrap().push((
        method.clone(),
        target,
        String::from_utf8_lossy(&body).into_owned(),
    ));
    let (status, doc) = match (method.as_str(), path.as_str()) {
        ("GET", "/orders/999") => (
            404,
            json!({"code": "OrderNotFound", "message": "Order 999 does not exist"}),
        ),
        ("GET", p) if p.starts_with("/orders/") => (
            200,
            json!({"id": &p["/orders/".len()..], "item": "book", "qty": 1}),
        ),
        ("POST", "/orders") => (201, json!({"id": "1001"})),
        _ => (204, Value::Null),
    };
    let mut resp = hyper::Response::builder().status(status);
    let body = if status == 204 {
        Bytes::new()
    } else {
        resp = resp.header("content-type", "application/json");
        Bytes::from(doc.to_string())
    };
    resp.body(Full::new(body)).expect("response")
}

/// One HTTP/1.1 call to `addr`: (status, response headers, body).
async fn call(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, hyper::HeaderMap, Bytes) {
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(target)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the sidecar");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("HTTP handshake");
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.expect("HTTP call");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("response body")
        .to_bytes();
    (status, headers, body)
}

/// The sidecar's records in the trail, by `requestID`.
async fn sidecar_records(store: &Store) -> Vec<Value> {
    store
        .records()
        .await
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| r["eventSource"] == EVENT_SOURCE)
        .collect()
}

fn by_request_id<'a>(records: &'a [Value], id: &str) -> &'a Value {
    let found: Vec<&Value> = records.iter().filter(|r| r["requestID"] == id).collect();
    assert_eq!(found.len(), 1, "records of request {id}: {found:#?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_through_the_sidecar_become_records_in_the_trail() {
    let started = chrono::Utc::now();
    let dir = tempfile::Builder::new()
        .prefix("gt-sidecar-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let d = dir.path();
    let trail = d.join("trail");
    let mut collector = Collector::start(
        &d.join("collector"),
        Spec::new(Dest::Local {
            path: trail.clone(),
            bucket: "sidecar-trail".into(),
        }),
    )
    .await;
    let (up, seen) = upstream().await;
    let adir = d.join("agent");
    let config = format!(
        r#"{head}[sources.auth_log]
enabled = false
[sources.auditd]
enabled = false
[sources.packages]
enabled = false
[sources.fim]
enabled = false
[sources.journald]
enabled = false

[sidecar]
listen = "127.0.0.1:0"
upstream = "http://{up}"
event_source = "{EVENT_SOURCE}"
redact_fields = ["card_number"]

[[sidecar.routes]]
method = "GET"
path = "/orders/{{id}}"
event_name = "GetOrder"
resources = [{{ type = "Example::Orders::Order", arn = "arn:{{partition}}:orders:{{region}}:{{account}}:order/{{id}}" }}]

[[sidecar.routes]]
method = "POST"
path = "/orders"
event_name = "CreateOrder"
"#,
        head = agent_config_head(&adir, HOST, &[format!("http://{}", collector.addr)]),
    );
    let mut agent = AgentProcess::start(&adir, &config).await;
    let listen = agent.addr(groundtrail_common::sd_notify::role::SIDECAR);

    // A read through a configured route, with a query parameter and a request id.
    let (status, headers, body) = call(
        listen,
        "GET",
        "/orders/42?view=full",
        &[("x-request-id", "e2e-get"), ("user-agent", "e2e-test/1.0")],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body:?}");
    assert_eq!(headers["x-request-id"], "e2e-get");
    let order: Value = serde_json::from_slice(&body).expect("JSON answer");
    assert_eq!(order["id"], "42");

    // A write with secrets in its JSON body: the upstream gets them, the trail does not.
    let secret_body =
        json!({"item": "book", "qty": 2, "password": "hunter2-e2e", "card_number": "4111111111111111"})
            .to_string();
    let (status, _, body) = call(
        listen,
        "POST",
        "/orders",
        &[
            ("x-request-id", "e2e-post"),
            ("content-type", "application/json"),
        ],
        &secret_body,
    )
    .await;
    assert_eq!(status, 201, "{body:?}");

    // The upstream answers 404 with an error document.
    let (status, _, body) = call(
        listen,
        "GET",
        "/orders/999",
        &[("x-request-id", "e2e-404")],
        "",
    )
    .await;
    assert_eq!(status, 404, "{body:?}");
    let err: Value = serde_json::from_slice(&body).expect("JSON error");
    assert_eq!(err["code"], "OrderNotFound", "the error reaches the client");

    // No route: the fallback name, and no request id from the client (one is generated).
    let (status, headers, _) = call(listen, "DELETE", "/carts/8812", &[], "").await;
    assert_eq!(status, 204);
    let generated = headers["x-request-id"]
        .to_str()
        .expect("generated request id")
        .to_string();

    {
        let seen = seen.lock().unwrap();
        let targets: Vec<&str> = seen.iter().map(|(_, t, _)| t.as_str()).collect();
        assert_eq!(
            targets,
            [
                "/orders/42?view=full",
                "/orders",
                "/orders/999",
                "/carts/8812"
            ],
            "each call reached the upstream once"
        );
        assert_eq!(
            seen[1].2, secret_body,
            "the body reached the upstream intact"
        );
    }

    let store = Store::Local(trail);
    let ids = ["e2e-get", "e2e-post", "e2e-404", generated.as_str()];
    let records = {
        let start = std::time::Instant::now();
        loop {
            let records = sidecar_records(&store).await;
            if ids
                .iter()
                .all(|id| records.iter().any(|r| r["requestID"] == *id))
            {
                break records;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "sidecar records never reached the trail; so far: {records:#?}\nagent log:\n{}",
                agent.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    };

    for r in &records {
        assert_eq!(r["eventType"], "AwsApiCall", "{r}");
        assert_eq!(r["recipientAccountId"], ACCOUNT, "{r}");
        assert_eq!(r["awsRegion"], REGION, "{r}");
        assert_eq!(r["sourceIPAddress"], "127.0.0.1", "{r}");
        assert_eq!(r["userIdentity"]["type"], "Unknown", "{r}");
    }

    let r = by_request_id(&records, "e2e-get");
    assert_eq!(r["eventName"], "GetOrder", "{r}");
    assert_eq!(r["readOnly"], true, "{r}");
    assert_eq!(r["userAgent"], "e2e-test/1.0", "{r}");
    assert_eq!(
        r["resources"],
        json!([{
            "accountId": ACCOUNT,
            "type": "Example::Orders::Order",
            "ARN": format!("arn:aws:orders:{REGION}:{ACCOUNT}:order/42"),
        }]),
        "{r}"
    );
    assert_eq!(
        r["requestParameters"],
        json!({"id": "42", "view": "full"}),
        "{r}"
    );
    assert_eq!(r["additionalEventData"]["httpStatus"], 200, "{r}");
    assert!(r.get("errorCode").is_none_or(Value::is_null), "{r}");

    let r = by_request_id(&records, "e2e-post");
    assert_eq!(r["eventName"], "CreateOrder", "{r}");
    assert_eq!(r["readOnly"], false, "{r}");
    assert_eq!(
        r["requestParameters"],
        json!({"item": "book", "qty": 2, "password": HIDDEN, "card_number": HIDDEN}),
        "{r}"
    );
    assert_eq!(r["additionalEventData"]["httpStatus"], 201, "{r}");
    assert!(r.get("errorCode").is_none_or(Value::is_null), "{r}");

    let r = by_request_id(&records, "e2e-404");
    assert_eq!(r["eventName"], "GetOrder", "{r}");
    assert_eq!(r["readOnly"], true, "{r}");
    assert_eq!(r["errorCode"], "OrderNotFound", "{r}");
    assert_eq!(r["errorMessage"], "Order 999 does not exist", "{r}");
    assert_eq!(r["additionalEventData"]["httpStatus"], 404, "{r}");
    assert_eq!(
        r["resources"][0]["ARN"],
        format!("arn:aws:orders:{REGION}:{ACCOUNT}:order/999"),
        "{r}"
    );

    let r = by_request_id(&records, &generated);
    assert_eq!(r["eventName"], "DELETE /carts/{id}", "{r}");
    assert_eq!(r["readOnly"], false, "{r}");
    assert_eq!(r["additionalEventData"]["routeMatched"], false, "{r}");

    let metrics = agent.metrics();
    for line in [
        "groundtrail_sidecar_requests_total 4",
        "groundtrail_sidecar_upstream_errors_total 0",
        "groundtrail_sidecar_records_lost_total 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "expected `{line}` on the metrics page:\n{metrics}"
        );
    }

    // Stop the agent (it drains), then the collector (final digest): still one record per
    // call, no secret anywhere in the delivered files, and a valid trail.
    agent.sigterm().await;
    wait_for("AgentStop in the trail", || async {
        store
            .records()
            .await
            .iter()
            .any(|(_, r)| r["eventName"] == "AgentStop")
            .then_some(())
    })
    .await;
    let records = sidecar_records(&store).await;
    assert_eq!(
        records.len(),
        ids.len(),
        "one record per call: {records:#?}"
    );
    for id in ids {
        by_request_id(&records, id);
    }
    let status = collector.sigterm().await;
    assert!(status.success(), "collector exit {status}");
    for key in store.log_keys().await {
        let (body, _) = store.get(&key).await.expect("log file");
        let text = String::from_utf8(gunzip(&body)).expect("UTF-8 log file");
        assert!(
            !text.contains("hunter2-e2e") && !text.contains("4111111111111111"),
            "a secret reached the trail in {key}"
        );
    }
    let mut args = vec![
        "--trail-arn".to_string(),
        TRAIL_ARN.into(),
        "--config".into(),
        collector.config_path.display().to_string(),
        "--verbose".into(),
    ];
    args.extend(window(started));
    groundtrail_validate(&args).assert_valid("validate-logs of the sidecar's trail");
}
