//! Detection against the real collector binary: records posted over HTTP are evaluated by the
//! built-in packs and by rules from a rules directory; alerts reach real HTTPS webhook, SNS-style
//! and Slack-style receivers signed with HMAC; `groundtrail-collector alerts` lists them and
//! manages silences; a receiver that is down for a minute, and a `kill -9` between alert and
//! delivery, lose nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use groundtrail_tests::webhook::{Received, Receiver};
use groundtrail_tests::*;
use serde_json::{Value, json};

const ADMIN_KEY: &str = "AKIDTESTADMIN";
const ADMIN_SECRET: &str = "admin-secret-0123456789";
const READ_KEY: &str = "AKIDTESTREADER";
const READ_SECRET: &str = "reader-secret-0123456789";
const READER: Option<(&str, &str)> = Some((READ_KEY, READ_SECRET));
const HMAC_SECRET: &str = "whsec-test-0123456789abcdef";

/// A collector spec with a local trail, the API keys, and `detection` appended.
fn spec(dir: &Path, detection: &str) -> Spec {
    let mut spec = Spec::new(Dest::Local {
        path: dir.join("trail"),
        bucket: "detect-bucket".into(),
    });
    spec.extra_toml = format!(
        "[api]\nallow_unsigned_loopback_reads = true\n\n\
         [[api.access_keys]]\naccess_key_id = \"{ADMIN_KEY}\"\nsecret_access_key = \"{ADMIN_SECRET}\"\nscopes = [\"read\", \"admin\"]\n\n\
         [[api.access_keys]]\naccess_key_id = \"{READ_KEY}\"\nsecret_access_key = \"{READ_SECRET}\"\nscopes = [\"read\"]\n\n\
         {detection}"
    );
    spec
}

/// `[[detection.notifiers]]` of `kind` posting to `url`, signed with the test secret.
fn notifier(dir: &Path, name: &str, kind: &str, url: &str, ca: Option<&Path>) -> String {
    let secret = dir.join("hmac.secret");
    std::fs::write(&secret, HMAC_SECRET).unwrap();
    let mut t = format!(
        "\n[[detection.notifiers]]\nname = \"{name}\"\nkind = \"{kind}\"\nurl = \"{url}\"\nsecret_file = {:?}\n",
        secret.display().to_string()
    );
    if kind == "sns" {
        t += "topic_arn = \"arn:aws:sns:us-east-1:123456789012:groundtrail-alerts\"\n";
    }
    if let Some(ca) = ca {
        t += &format!("ca_file = {:?}\n", ca.display().to_string());
    }
    t
}

/// `[detection]` with only the rule `trail-stopped` (any `StopLogging`, severity high) from a
/// rules directory under `dir`, and a webhook notifier `hook` on `http://127.0.0.1:<port>/hook`.
fn trail_stopped_rule(dir: &Path, port: u16) -> String {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("stop.yaml"),
        "rules:\n  - id: trail-stopped\n    title: Trail stopped\n    severity: high\n    filter_pattern: '{ $.eventName = \"StopLogging\" }'\n",
    )
    .unwrap();
    let mut detection = format!(
        "[detection]\nrules_dir = {:?}\npacks = []\n",
        rules.display().to_string()
    );
    detection += &notifier(
        dir,
        "hook",
        "webhook",
        &format!("http://127.0.0.1:{port}/hook"),
        None,
    );
    detection
}

/// A record the CIS pack's CloudWatch.5 (CloudTrail configuration changes) and SigmaHQ's
/// "AWS CloudTrail Important Change" both take.
fn stop_logging() -> Value {
    let mut r = record(ACCOUNT, REGION);
    r["eventSource"] = json!("cloudtrail.amazonaws.com");
    r["eventName"] = json!("StopLogging");
    r["eventType"] = json!("AwsApiCall");
    r["requestParameters"] =
        json!({"name": "arn:aws:cloudtrail:us-east-1:123456789012:trail/main"});
    r
}

/// A failed login from `ip`, as the agent records a failed ssh password.
fn failed_login(ip: &str) -> Value {
    let mut r = record(ACCOUNT, REGION);
    r["sourceIPAddress"] = json!(ip);
    r["errorMessage"] = json!("Failed authentication");
    r["errorCode"] = json!("Failed authentication");
    r
}

fn event_id(r: &Value) -> String {
    r["eventID"].as_str().unwrap().to_string()
}

/// `groundtrail-collector alerts <args>` against `c`, signed with `key` (unsigned: `None`).
fn alerts_cli(c: &Collector, args: &[&str], key: Option<(&str, &str)>) -> (i32, Value, String) {
    let mut cmd = Command::new(bin("groundtrail-collector"));
    cmd.arg("alerts")
        .args(args)
        .arg("--endpoint-url")
        .arg(format!("http://{}", c.addr))
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_REGION", REGION);
    if let Some((k, s)) = key {
        cmd.env("AWS_ACCESS_KEY_ID", k)
            .env("AWS_SECRET_ACCESS_KEY", s);
    }
    let out = cmd.output().expect("run groundtrail-collector alerts");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_str(&stdout).unwrap_or(Value::Null),
        format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
    )
}

/// Every stored alert (all pages), by id.
fn stored_alerts(c: &Collector) -> BTreeMap<String, Value> {
    let (code, v, out) = alerts_cli(c, &["list"], READER);
    assert_eq!(code, 0, "{out}");
    v["Alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|a| (a["id"].as_str().unwrap().to_string(), a))
        .collect()
}

/// Waits until the stored alerts include one of `rule origin prefix` for `event`.
async fn wait_alert(c: &Collector, origin: &str, event: &str) -> Value {
    wait_for(&format!("an alert of {origin} for {event}"), || {
        let found = stored_alerts(c).into_values().find(|a| {
            a["rule_origin"].as_str().unwrap_or("").starts_with(origin)
                && a["event_ids"]
                    .as_array()
                    .is_some_and(|ids| ids.iter().any(|i| i == event))
        });
        async move { found }
    })
    .await
}

/// Checks the `X-Groundtrail-Signature: t=<secs>,v1=<hex>` header against the body.
fn assert_signed(r: &Received) {
    let header = r
        .headers
        .get("x-groundtrail-signature")
        .unwrap_or_else(|| panic!("{} has no signature header: {:?}", r.path, r.headers));
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = Some(x.to_string()),
            Some(("v1", x)) => v1 = Some(x.to_string()),
            _ => {}
        }
    }
    let (t, v1) = (t.expect("t="), v1.expect("v1="));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, HMAC_SECRET.as_bytes());
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(&r.body);
    let expected = hex::encode(aws_lc_rs::hmac::sign(&key, &signed).as_ref());
    assert_eq!(v1, expected, "the HMAC of {} matches its body", r.path);
    let age = chrono::Utc::now().timestamp() - t.parse::<i64>().unwrap();
    assert!((-5..600).contains(&age), "t is the send time: {age}");
}

/// The alert a notifier's request carries, whatever the format.
fn alert_of(r: &Received) -> Value {
    let v = r.json();
    if let Some(a) = v.get("alert") {
        return a.clone();
    }
    if let Some(m) = v.get("Message").and_then(|m| m.as_str()) {
        return serde_json::from_str(m).expect("the SNS Message is the alert's JSON");
    }
    panic!("{}: not an alert: {v}", r.path)
}

/// Posts `records` to the collector and checks the `200`.
async fn post_ok(c: &Collector, records: &[Value]) {
    assert_eq!(c.client().post_records(records).await.unwrap().status, 200);
}

/// A CIS record and a Sigma match reach all three notifier kinds over HTTPS, signed; the CLI
/// lists them with their LookupEvents inputs; `/metrics` counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_https_webhook_sns_and_slack_signed() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki_init(dir.path());
    let rx = Receiver::start(0, Some((&pki.join("server.pem"), &pki.join("server.key")))).await;
    let base = format!("https://127.0.0.1:{}", rx.port);
    let ca = pki.join("ca.pem");
    let mut detection = String::new();
    detection += &notifier(
        dir.path(),
        "hook",
        "webhook",
        &format!("{base}/hook"),
        Some(&ca),
    );
    detection += &notifier(
        dir.path(),
        "topic",
        "sns",
        &format!("{base}/sns"),
        Some(&ca),
    );
    detection += &notifier(
        dir.path(),
        "chat",
        "slack",
        &format!("{base}/slack"),
        Some(&ca),
    );
    let c = Collector::start(dir.path(), spec(dir.path(), &detection)).await;

    let rec = stop_logging();
    let id = event_id(&rec);
    post_ok(&c, std::slice::from_ref(&rec)).await;
    let cis = wait_alert(&c, "pack:cis", &id).await;
    assert_eq!(cis["records"][0]["eventID"], json!(id), "{cis}");
    assert_eq!(
        cis["lookup"][0],
        json!({"LookupAttributes": [{"AttributeKey": "EventId", "AttributeValue": id}]})
    );
    let sigma = wait_alert(&c, "pack:sigma", &id).await;

    let wanted = [cis["id"].clone(), sigma["id"].clone()];
    let got = wait_for("both alerts at every receiver", || {
        let got = rx.received();
        let done = ["/hook", "/sns", "/slack"].iter().all(|p| {
            wanted.iter().all(|w| {
                got.iter().any(|r| {
                    r.path == *p && String::from_utf8_lossy(&r.body).contains(w.as_str().unwrap())
                })
            })
        });
        async move { done.then_some(got) }
    })
    .await;
    for r in &got {
        match r.path.as_str() {
            "/hook" => {
                assert_signed(r);
                let v = r.json();
                assert_eq!(v["type"], "groundtrail.alert");
                let a = alert_of(r);
                let stored = stored_alerts(&c)[a["id"].as_str().unwrap()].clone();
                assert_eq!(a, stored, "the webhook gets the alert as stored");
            }
            "/sns" => {
                assert_signed(r);
                let v = r.json();
                assert_eq!(v["Type"], "Notification");
                assert_eq!(
                    v["TopicArn"],
                    "arn:aws:sns:us-east-1:123456789012:groundtrail-alerts"
                );
                assert_eq!(r.headers["x-amz-sns-message-type"], "Notification");
                assert!(v["Subject"].as_str().unwrap().len() <= 100);
                assert!(wanted.contains(&alert_of(r)["id"]));
            }
            "/slack" => {
                let v = r.json();
                assert!(v["text"].as_str().is_some_and(|t| !t.is_empty()), "{v}");
            }
            other => panic!("unexpected path {other}"),
        }
    }

    let (code, rules, out) = alerts_cli(&c, &["rules"], READER);
    assert_eq!(code, 0, "{out}");
    let origins: Vec<String> = rules["Rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Origin"].as_str().unwrap().to_string())
        .collect();
    for pack in ["pack:cis", "pack:host", "pack:sigma"] {
        assert!(
            origins.iter().any(|o| o.starts_with(pack)),
            "{pack} in {origins:?}"
        );
    }
    let (code, one, out) = alerts_cli(&c, &["get", cis["id"].as_str().unwrap()], READER);
    assert_eq!(code, 0, "{out}");
    assert_eq!(one["Alert"], cis);
    let (code, _, out) = alerts_cli(&c, &["get", "no-such-rule/none"], READER);
    assert_eq!(code, 255);
    assert!(out.contains("AlertNotFoundException"), "{out}");

    let metrics = c.http_get("/metrics").await;
    assert!(
        metric(&metrics, "groundtrail_detection_records_evaluated_total") >= 1,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "groundtrail_detection_rules") == 14 + 17 + 44,
        "{metrics}"
    );
}

/// A threshold rule from the rules directory fires once at its count; a bad file is refused
/// with its name and the old rules keep running; SIGHUP and a changed file reload them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_dir_threshold_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("login.yaml"),
        "rules:\n  - id: login-failures\n    title: Failed logins from one address\n    severity: high\n    \
         filter_pattern: '{ ($.eventName = \"ConsoleLogin\") && ($.errorMessage = \"Failed authentication\") }'\n    \
         threshold: { count: 3, period: 5m, group_by: $.sourceIPAddress }\n",
    )
    .unwrap();
    let detection = format!(
        "[detection]\nrules_dir = {:?}\npacks = []\n",
        rules.display().to_string()
    );
    let mut c = Collector::start(dir.path(), spec(dir.path(), &detection)).await;

    // Two from one address and three from another: only the second reaches the count.
    let a: Vec<Value> = (0..2).map(|_| failed_login("198.51.100.7")).collect();
    let b: Vec<Value> = (0..3).map(|_| failed_login("203.0.113.9")).collect();
    post_ok(&c, &a).await;
    post_ok(&c, &b).await;
    let alert = wait_alert(
        &c,
        &rules.join("login.yaml").display().to_string(),
        &event_id(&b[2]),
    )
    .await;
    assert_eq!(alert["count"], 3, "{alert}");
    assert_eq!(alert["group"]["value"], "203.0.113.9", "{alert}");
    let ids: Vec<String> = b.iter().map(event_id).collect();
    assert_eq!(alert["event_ids"], json!(ids));
    // A fourth in the window does not raise a second alert (the alarm is already on).
    post_ok(&c, &[failed_login("203.0.113.9")]).await;
    let evaluated = |c: &Collector| {
        let c_addr = c.addr;
        async move {
            let m = http_get_addr(c_addr, "/metrics").await;
            metric(&m, "groundtrail_detection_records_evaluated_total")
        }
    };
    wait_for("six records evaluated", || {
        let f = evaluated(&c);
        async move { (f.await >= 6).then_some(()) }
    })
    .await;
    assert_eq!(stored_alerts(&c).len(), 1);

    // A bad file: refused with its name; the old rule set still runs.
    std::fs::write(rules.join("zz-bad.yaml"), "rules:\n  - id: broken\n    title: x\n    severity: high\n    filter_pattern: '{ $.eventName = }'\n").unwrap();
    let last_error = wait_for("the reload error in ListRules", || {
        let (_, v, _) = alerts_cli(&c, &["rules"], READER);
        async move { v["LastError"]["Message"].as_str().map(str::to_string) }
    })
    .await;
    assert!(last_error.contains("zz-bad.yaml"), "{last_error}");
    assert!(last_error.contains("broken"), "{last_error}");
    let (_, v, _) = alerts_cli(&c, &["rules"], READER);
    assert_eq!(v["Rules"][0]["Id"], "login-failures", "{v}");
    let m = c.http_get("/metrics").await;
    assert!(metric(&m, "groundtrail_detection_reload_failures_total") >= 1);
    let c2: Vec<Value> = (0..3).map(|_| failed_login("192.0.2.99")).collect();
    post_ok(&c, &c2).await;
    wait_alert(
        &c,
        &rules.join("login.yaml").display().to_string(),
        &event_id(&c2[2]),
    )
    .await;

    // Fixed, and a second rule added: SIGHUP reloads at once.
    std::fs::remove_file(rules.join("zz-bad.yaml")).unwrap();
    std::fs::write(
        rules.join("stop.json"),
        r#"{"rules": [{"id": "trail-stopped", "title": "Trail stopped", "severity": "critical",
           "event_pattern": {"detail": {"eventName": ["StopLogging"]}}}]}"#,
    )
    .unwrap();
    c.sighup();
    let rec = stop_logging();
    wait_for("both rules loaded", || {
        let (_, v, _) = alerts_cli(&c, &["rules"], READER);
        async move { (v["Rules"].as_array().map(Vec::len) == Some(2)).then_some(()) }
    })
    .await;
    post_ok(&c, std::slice::from_ref(&rec)).await;
    let a = wait_alert(
        &c,
        &rules.join("stop.json").display().to_string(),
        &event_id(&rec),
    )
    .await;
    assert_eq!(a["severity"], "critical");
    assert_eq!(a["language"], "event-pattern");
    assert!(c.is_running());
    assert!(c.sigterm().await.success(), "{}", c.log());
}

/// Silences need the admin scope, keep the rule's alerts from the notifiers (still stored,
/// marked), and end when deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_hold_alerts_back_and_need_admin() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(0, None).await;
    let detection = trail_stopped_rule(dir.path(), rx.port);
    let c = Collector::start(dir.path(), spec(dir.path(), &detection)).await;
    let silence_args = [
        "silence",
        "--rule-id",
        "trail-stopped",
        "--for",
        "1h",
        "--reason",
        "planned trail maintenance, change CHG-42",
    ];
    // Read scope and unsigned loopback may not silence.
    let (code, _, out) = alerts_cli(&c, &silence_args, Some((READ_KEY, READ_SECRET)));
    assert_eq!(code, 255, "{out}");
    assert!(out.contains("AccessDenied"), "{out}");
    let (code, _, out) = alerts_cli(&c, &silence_args, None);
    assert_eq!(code, 255, "{out}");
    // An unknown rule is refused by name.
    let (code, _, out) = alerts_cli(
        &c,
        &[
            "silence",
            "--rule-id",
            "nope",
            "--for",
            "1h",
            "--reason",
            "x",
        ],
        Some((ADMIN_KEY, ADMIN_SECRET)),
    );
    assert_eq!(code, 255, "{out}");
    assert!(out.contains("RuleNotFoundException"), "{out}");
    let (code, s, out) = alerts_cli(&c, &silence_args, Some((ADMIN_KEY, ADMIN_SECRET)));
    assert_eq!(code, 0, "{out}");
    let silence = s["Silence"].clone();
    assert_eq!(silence["created_by"], ADMIN_KEY);
    assert_eq!(
        silence["reason"],
        "planned trail maintenance, change CHG-42"
    );

    let quiet = stop_logging();
    post_ok(&c, std::slice::from_ref(&quiet)).await;
    let a = wait_alert(&c, "", &event_id(&quiet)).await;
    assert_eq!(a["silenced_by"], silence["id"], "{a}");

    let (code, _, out) = alerts_cli(
        &c,
        &["unsilence", silence["id"].as_str().unwrap()],
        Some((ADMIN_KEY, ADMIN_SECRET)),
    );
    assert_eq!(code, 0, "{out}");
    // Ended, not forgotten: who silenced, why, and who ended it stay on record.
    let (code, listed, out) = alerts_cli(&c, &["silences"], READER);
    assert_eq!(code, 0, "{out}");
    let kept = &listed["Silences"][0];
    assert_eq!(kept["id"], silence["id"], "{listed}");
    assert_eq!(kept["ended_by"], ADMIN_KEY, "{listed}");
    assert_eq!(kept["reason"], silence["reason"], "{listed}");
    let loud = stop_logging();
    post_ok(&c, std::slice::from_ref(&loud)).await;
    let loud_id = format!("trail-stopped/{}", event_id(&loud));
    wait_for("the alert after the silence at the webhook", || {
        let got = rx.on("/hook");
        let id = loud_id.clone();
        async move {
            got.iter()
                .any(|r| alert_of(r)["id"] == json!(id))
                .then_some(())
        }
    })
    .await;
    let quiet_id = format!("trail-stopped/{}", event_id(&quiet));
    assert!(
        !rx.on("/hook")
            .iter()
            .any(|r| alert_of(r)["id"] == json!(quiet_id)),
        "the silenced alert was not sent"
    );
}

/// A webhook that is down for a minute gets every alert afterwards, each exactly once and
/// exactly as `ListAlerts` announced it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_down_for_a_minute_gets_every_alert_afterwards() {
    let dir = tempfile::tempdir().unwrap();
    // free_port: the webhook is down first; its receiver binds this port later.
    let port = free_port();
    let detection = trail_stopped_rule(dir.path(), port);
    let c = Collector::start(dir.path(), spec(dir.path(), &detection)).await;
    let down = std::time::Instant::now();
    let mut sent = Vec::new();
    // Alerts keep coming while the receiver is down (nothing listens on its port).
    for _ in 0..6 {
        let batch: Vec<Value> = (0..5).map(|_| stop_logging()).collect();
        post_ok(&c, &batch).await;
        sent.extend(
            batch
                .iter()
                .map(|r| format!("trail-stopped/{}", event_id(r))),
        );
        tokio::time::sleep(Duration::from_secs(8)).await;
    }
    let announced = wait_for("30 alerts stored", || {
        let all = stored_alerts(&c);
        async move { (all.len() == 30).then_some(all) }
    })
    .await;
    let m = c.http_get("/metrics").await;
    assert!(m.contains("notifier=\"hook\""), "per-notifier metrics: {m}");
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(down.elapsed())).await;
    let rx = Receiver::start(port, None).await;
    let got = wait_for("every alert after the outage", || {
        let got = rx.on("/hook");
        async move { (got.len() >= 30).then_some(got) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got_after = rx.on("/hook");
    assert_eq!(got_after.len(), 30, "each alert once, no more");
    let mut ids = Vec::new();
    for r in &got {
        assert_signed(r);
        let a = alert_of(r);
        let id = a["id"].as_str().unwrap().to_string();
        assert_eq!(a, announced[&id], "sent exactly as announced");
        ids.push(id);
    }
    let mut want = sent.clone();
    want.sort();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, want);
}

/// `kill -9` right after the `200` (before or after the detector's commit) and again with
/// alerts queued but not sent: after restarts every alert arrives, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_between_alert_and_delivery_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // free_port: the webhook is down first; its receiver binds this port later.
    let port = free_port();
    let detection = trail_stopped_rule(dir.path(), port);
    let mut c = Collector::start(dir.path(), spec(dir.path(), &detection)).await;
    let mut want = Vec::new();
    // 1. Killed at once after the 200: the detector may not have evaluated the records yet.
    let first: Vec<Value> = (0..20).map(|_| stop_logging()).collect();
    post_ok(&c, &first).await;
    c.kill9();
    want.extend(
        first
            .iter()
            .map(|r| format!("trail-stopped/{}", event_id(r))),
    );
    c.spawn().await;
    // 2. Killed with the alerts stored and queued, the receiver still down.
    let second: Vec<Value> = (0..20).map(|_| stop_logging()).collect();
    post_ok(&c, &second).await;
    want.extend(
        second
            .iter()
            .map(|r| format!("trail-stopped/{}", event_id(r))),
    );
    wait_for("40 alerts stored", || {
        let n = stored_alerts(&c).len();
        async move { (n == 40).then_some(()) }
    })
    .await;
    c.kill9();
    let rx = Receiver::start(port, None).await;
    c.spawn().await;
    let got = wait_for("every alert after the restarts", || {
        let got = rx.on("/hook");
        async move { (got.len() >= 40).then_some(got) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut ids: Vec<String> = rx
        .on("/hook")
        .iter()
        .map(|r| alert_of(r)["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), got.len().max(40), "no alert twice");
    ids.sort();
    want.sort();
    assert_eq!(ids, want);
}
