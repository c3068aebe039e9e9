//! The web console in a real browser: headless Chromium driven through chromedriver
//! (WebDriver, `fantoccini`) against the real collector binary. Signs in (a wrong secret is
//! refused first), filters by two attributes at once and checks the rows against what was
//! sent, opens an event, downloads the query's CSV and compares it, pages through a range,
//! looks at the overview and health pages, and signs out; without a session the API gives
//! nothing. With `CONSOLE_SCREENSHOTS=<dir>` each page is saved there as a PNG (that is how
//! docs/console/ was made).
//!
//! Needs Debian's `chromium` and `chromium-driver` (scripts/test.sh installs them); without
//! them the test skips with a notice, unless `GROUNDTRAIL_TESTS_REQUIRE_ALL=1`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use groundtrail_tests::*;
use serde_json::{Value, json};

const READ_KEY: &str = "AKIDCONSOLEREADER";
const READ_SECRET: &str = "console-reader-secret-0123";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// chromedriver on a free port, killed (by its pid) when dropped, with the Chromium it
/// started for `profile`: a test that panics before closing its session would otherwise
/// leave that browser running (killing chromedriver orphans it).
struct Driver {
    child: Child,
    url: String,
    profile: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let mark = format!("--user-data-dir={}", self.profile.display());
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if cmdline.split(|b| *b == 0).any(|arg| arg == mark.as_bytes()) {
                // SAFETY: kill(2) on a pid read just now, of a process running our profile.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn driver(log: &Path, profile: &Path) -> Driver {
    // free_port: chromedriver is told its port and cannot report one it chose.
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .arg(format!("--log-path={}", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let d = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
        profile: profile.to_path_buf(),
    };
    wait_for("chromedriver to listen", || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
    })
    .await;
    d
}

/// Headless Chromium with no background traffic (this network refuses it) and a fresh
/// profile.
async fn browser(driver: &Driver, profile: &Path) -> Client {
    let args = vec![
        "--headless".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--disable-dev-shm-usage".into(),
        "--window-size=1400,1000".into(),
        format!("--user-data-dir={}", profile.display()),
    ];
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": CHROMIUM, "args": args}),
    );
    ClientBuilder::rustls()
        .expect("rustls connector")
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session in Chromium")
}

/// One HTTP/1.1 request to the collector: (status, headers, body).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, http::HeaderMap, String) {
    use http_body_util::{BodyExt, Full};
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// The records sent: 60 events 150 s apart (newest last, 2.5 hours), three users, two source IPs,
/// ConsoleLogin and RunCommand, some failed.
fn sent(now: i64) -> Vec<Value> {
    (0..60u64)
        .map(|i| {
            let mut r = record(ACCOUNT, REGION);
            let t = chrono::DateTime::from_timestamp(now - 150 * 61 + 150 * i as i64, 0).expect("time");
            r["eventTime"] = json!(groundtrail_common::time::json_time(t));
            let user = ["alice", "bob", "carol"][i as usize % 3];
            r["userIdentity"]["userName"] = json!(user);
            r["userIdentity"]["principalId"] = json!(user);
            r["sourceIPAddress"] = json!(if i.is_multiple_of(4) { "198.51.100.7" } else { "192.0.2.10" });
            if i % 2 == 1 {
                r["eventName"] = json!("RunCommand");
                r["eventSource"] = json!("sudo.onprem.internal");
                r["eventType"] = json!("AwsApiCall");
            } else {
                r["responseElements"] =
                    json!({"ConsoleLogin": if i.is_multiple_of(10) { "Failure" } else { "Success" }});
            }
            if i.is_multiple_of(5) {
                r["errorCode"] = json!("AccessDenied");
                r["errorMessage"] = json!("authentication failure, \"quoted\", with a comma");
            }
            r["resources"] = json!([{"type": "AWS::EC2::Instance", "ARN": format!("arn:aws:ec2:us-east-1:{ACCOUNT}:instance/host-{}", i % 2)}]);
            r
        })
        .collect()
}

fn ids_newest_first(records: &[&Value]) -> Vec<String> {
    let mut v: Vec<&&Value> = records.iter().collect();
    v.sort_by(|a, b| b["eventTime"].as_str().cmp(&a["eventTime"].as_str()));
    v.iter()
        .map(|r| r["eventID"].as_str().expect("id").to_string())
        .collect()
}

/// The event ids in a table's rows, in order.
async fn table_ids(c: &Client, table: &str) -> Vec<String> {
    let v = c
        .execute(
            &format!(
                "return Array.from(document.querySelectorAll('#{table} tbody tr[data-id]')).map(r => r.dataset.id)"
            ),
            vec![],
        )
        .await
        .expect("read the table");
    serde_json::from_value(v).expect("ids")
}

/// Waits until `#events` shows `want` (and its status line is for a loaded page).
async fn wait_rows(c: &Client, want: &[String], what: &str) {
    let start = std::time::Instant::now();
    loop {
        let status = c
            .find(Locator::Id("status"))
            .await
            .expect("status")
            .text()
            .await
            .unwrap_or_default();
        let got = table_ids(c, "events").await;
        if got == want && status.starts_with("page") {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: the table shows {got:?} ({status}), expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn fill(c: &Client, id: &str, value: &str) {
    let e = c.find(Locator::Id(id)).await.expect(id);
    e.clear().await.expect("clear");
    if !value.is_empty() {
        e.send_keys(value).await.expect("type");
    }
}

async fn click(c: &Client, id: &str) {
    c.find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("#{id}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click #{id}: {e}"));
}

async fn visible(c: &Client, id: &str) -> bool {
    c.find(Locator::Id(id))
        .await
        .expect(id)
        .is_displayed()
        .await
        .unwrap_or(false)
}

async fn wait_visible(c: &Client, id: &str) {
    wait_for(&format!("#{id} to show"), || async move {
        visible(c, id).await.then_some(())
    })
    .await;
}

async fn text(c: &Client, id: &str) -> String {
    c.find(Locator::Id(id))
        .await
        .expect(id)
        .text()
        .await
        .unwrap_or_default()
}

async fn screenshot(c: &Client, dir: &Option<PathBuf>, name: &str) {
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).expect("screenshot dir");
        let png = c.screenshot().await.expect("screenshot");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }
}

/// A minimal RFC 4180 reader.
fn read_csv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut f, mut quoted) = (vec![], vec![], String::new(), false);
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        match (quoted, ch) {
            (true, '"') if chars.peek() == Some(&'"') => {
                f.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, ch) => f.push(ch),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut f)),
            (false, '\r') if chars.peek() == Some(&'\n') => {
                chars.next();
                row.push(std::mem::take(&mut f));
                rows.push(std::mem::take(&mut row));
            }
            (false, ch) => f.push(ch),
        }
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_real_browser() {
    if !Path::new(CHROMEDRIVER).exists() || !Path::new(CHROMIUM).exists() {
        assert!(
            !require_all(),
            "chromium and chromium-driver are needed (apt-get install chromium chromium-driver)"
        );
        eprintln!("console_in_a_real_browser: skipped, no {CHROMIUM} / {CHROMEDRIVER}");
        return;
    }
    let shots = std::env::var_os("CONSOLE_SCREENSHOTS").map(PathBuf::from);
    let dir = tempfile::tempdir().expect("tempdir");
    let trail = dir.path().join("trail");
    let mut spec = Spec::new(Dest::Local {
        path: trail,
        bucket: "console-bucket".into(),
    });
    // A second, API-only listener: the console is served there too (browsers have no client
    // certificate for an mTLS main listener).
    spec.extra_toml = format!(
        "[api]\nlisten = \"127.0.0.1:0\"\n\n[[api.access_keys]]\naccess_key_id = \"{READ_KEY}\"\nsecret_access_key = \"{READ_SECRET}\"\nscopes = [\"read\"]\n"
    );
    let c = Collector::start(&dir.path().join("collector"), spec).await;
    let api_addr = c.api_addr.expect("READY=1 names the API listener");
    let now = chrono::Utc::now().timestamp();
    let records = sent(now);
    let reply = c
        .client()
        .post(
            ndjson(&records),
            false,
            &[
                ("x-groundtrail-agent", "web-1"),
                ("x-groundtrail-seq-first", "1"),
                ("x-groundtrail-seq-last", "60"),
            ],
        )
        .await
        .expect("post");
    assert_eq!(reply.status, 200, "{}", reply.body);

    // No session: nothing.
    let (status, _, body) = http(c.addr, "GET", "/console/api/events", &[], "").await;
    assert_eq!(status, 401, "{body}");
    assert!(
        !body.contains("eventId") && !body.contains("events"),
        "{body}"
    );
    // A wrong secret: refused, no cookie.
    let (status, headers, body) = http(
        c.addr,
        "POST",
        "/console/api/signin",
        &[("content-type", "application/json")],
        &json!({"accessKeyId": READ_KEY, "secretAccessKey": "not-the-secret-at-all"}).to_string(),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(headers.get("set-cookie").is_none());

    let profile = dir.path().join("profile");
    let driver = driver(&dir.path().join("chromedriver.log"), &profile).await;
    let b = browser(&driver, &profile).await;
    let base = format!("http://{}", c.addr);
    b.goto(&format!("{base}/console/")).await.expect("open");
    wait_visible(&b, "signin").await;
    screenshot(&b, &shots, "signin").await;

    // A wrong secret in the page.
    fill(&b, "key-id", READ_KEY).await;
    fill(&b, "secret", "wrong-secret-wrong-secret").await;
    click(&b, "signin-submit").await;
    let refusal = wait_for("the refusal", || async {
        let t = text(&b, "signin-error").await;
        (!t.is_empty()).then_some(t)
    })
    .await;
    assert!(refusal.contains("wrong"), "{refusal}");
    assert!(!visible(&b, "nav").await);

    // The right one.
    fill(&b, "key-id", READ_KEY).await;
    fill(&b, "secret", READ_SECRET).await;
    click(&b, "signin-submit").await;
    wait_visible(&b, "nav").await;
    assert_eq!(text(&b, "whoami").await, READ_KEY);
    let cookie = b
        .get_named_cookie("gt_console")
        .await
        .expect("a session cookie");
    assert_eq!(cookie.http_only(), Some(true));
    let cookie = format!("gt_console={}", cookie.value());

    // The same session on the API-only listener; its page is there too.
    wait_for("the API listener", || async move {
        tokio::net::TcpStream::connect(api_addr).await.ok()
    })
    .await;
    let (status, _, body) = http(
        api_addr,
        "GET",
        "/console/api/session",
        &[("cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, page) = http(api_addr, "GET", "/console/", &[], "").await;
    assert_eq!(status, 200);
    assert!(page.contains("/console/app.js"));

    // Every event arrives (the history indexes behind the journal).
    let all: Vec<&Value> = records.iter().collect();
    let all_ids = ids_newest_first(&all);
    wait_for("the history to hold every event", || {
        let cookie = cookie.clone();
        let addr = c.addr;
        async move {
            let (_, _, body) = http(
                addr,
                "GET",
                "/console/api/events?limit=500",
                &[("cookie", &cookie)],
                "",
            )
            .await;
            let v: Value = serde_json::from_str(&body).ok()?;
            (v["events"].as_array()?.len() >= 60).then_some(())
        }
    })
    .await;

    // Two attributes at once: user bob from 198.51.100.7.
    fill(&b, "f-username", "bob").await;
    fill(&b, "f-sourceIp", "198.51.100.7").await;
    click(&b, "f-apply").await;
    let bob: Vec<&Value> = records
        .iter()
        .filter(|r| {
            r["userIdentity"]["userName"] == "bob" && r["sourceIPAddress"] == "198.51.100.7"
        })
        .collect();
    let bob_ids = ids_newest_first(&bob);
    assert!(bob_ids.len() >= 4);
    wait_rows(&b, &bob_ids, "user + source IP").await;
    screenshot(&b, &shots, "events").await;

    // The CSV of this query, fetched from the page's own link with the session.
    let href = b
        .find(Locator::Id("export-csv"))
        .await
        .expect("csv link")
        .attr("href")
        .await
        .expect("href")
        .expect("an href");
    let path = href.trim_start_matches(&base).to_string();
    assert!(
        path.contains("username=bob") && path.contains("sourceIp=198.51.100.7"),
        "{path}"
    );
    let (status, headers, csv) = http(c.addr, "GET", &path, &[("cookie", &cookie)], "").await;
    assert_eq!(status, 200, "{csv}");
    assert!(
        headers["content-disposition"]
            .to_str()
            .unwrap()
            .contains("attachment")
    );
    let rows = read_csv(&csv);
    assert_eq!(rows[0][0], "eventTime");
    assert_eq!(rows.len(), bob.len() + 1, "{csv}");
    for (row, id) in rows[1..].iter().zip(&bob_ids) {
        let r = records
            .iter()
            .find(|r| r["eventID"] == id.as_str())
            .expect("sent");
        assert_eq!(row[11], *id);
        assert_eq!(row[0], r["eventTime"].as_str().unwrap());
        assert_eq!(row[1], r["eventName"].as_str().unwrap());
        assert_eq!(row[2], r["eventSource"].as_str().unwrap());
        assert_eq!(row[3], "bob");
        assert_eq!(row[4], "198.51.100.7");
        assert_eq!(row[5], r["errorCode"].as_str().unwrap_or(""));
        assert_eq!(
            row[10],
            format!(
                "AWS::EC2::Instance {}",
                r["resources"][0]["ARN"].as_str().unwrap()
            )
        );
    }
    // And the JSON download: the records themselves.
    let (status, _, j) = http(
        c.addr,
        "GET",
        &path.replace("export.csv", "export.json"),
        &[("cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(status, 200);
    let j: Value = serde_json::from_str(&j).expect("JSON export");
    let got: Vec<&str> = j["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["eventID"].as_str().unwrap())
        .collect();
    assert_eq!(got, bob_ids);

    // Open the newest of them: its record, its resources, its related events.
    b.find(Locator::Css(&format!(
        "#events tr[data-id='{}']",
        bob_ids[0]
    )))
    .await
    .expect("row")
    .click()
    .await
    .expect("click row");
    wait_visible(&b, "detail").await;
    let shown: Value = wait_for("the record", || async {
        serde_json::from_str(&text(&b, "detail-json").await).ok()
    })
    .await;
    let original = records
        .iter()
        .find(|r| r["eventID"] == bob_ids[0].as_str())
        .unwrap();
    for k in [
        "eventID",
        "eventTime",
        "eventName",
        "sourceIPAddress",
        "userIdentity",
        "resources",
    ] {
        assert_eq!(shown[k], original[k], "{k}");
    }
    let related: Vec<String> = wait_for("related events", || async {
        let ids = table_ids(&b, "related-user").await;
        (!ids.is_empty()).then_some(ids)
    })
    .await;
    let bob_all: Vec<&Value> = records
        .iter()
        .filter(|r| r["userIdentity"]["userName"] == "bob")
        .collect();
    let secs = |r: &Value| {
        chrono::DateTime::parse_from_rfc3339(r["eventTime"].as_str().unwrap())
            .unwrap()
            .timestamp()
    };
    let t0 = secs(original);
    let near: Vec<&Value> = bob_all
        .into_iter()
        .filter(|r| (secs(r) - t0).abs() <= 900 && r["eventID"] != original["eventID"])
        .collect();
    let expect_related = ids_newest_first(&near);
    assert!(expect_related.len() >= 2 && expect_related.len() < 20);
    assert_eq!(related, expect_related, "bob's other events within ±15 min");
    screenshot(&b, &shots, "event").await;

    // Paging through the whole range, 25 at a time.
    click(&b, "detail-close").await;
    fill(&b, "f-username", "").await;
    fill(&b, "f-sourceIp", "").await;
    b.find(Locator::Id("f-limit"))
        .await
        .expect("limit")
        .select_by_value("25")
        .await
        .expect("select 25");
    click(&b, "f-apply").await;
    wait_rows(&b, &all_ids[..25], "page 1").await;
    click(&b, "next").await;
    wait_rows(&b, &all_ids[25..50], "page 2").await;
    click(&b, "next").await;
    wait_rows(&b, &all_ids[50..], "page 3").await;
    assert!(
        !b.find(Locator::Id("next"))
            .await
            .unwrap()
            .is_enabled()
            .await
            .unwrap(),
        "the last page has no Older"
    );
    click(&b, "prev").await;
    wait_rows(&b, &all_ids[25..50], "back to page 2").await;

    // Overview: the chart and the failures at a glance.
    click(&b, "nav-overview").await;
    wait_for("the chart", || async {
        b.find(Locator::Css("#chart-svg rect")).await.ok()
    })
    .await;
    let failed_logins = records
        .iter()
        .filter(|r| {
            r["eventName"] == "ConsoleLogin"
                && (r.get("errorCode").is_some()
                    || r["responseElements"]["ConsoleLogin"] == "Failure")
        })
        .count();
    let sudo_failures = records
        .iter()
        .filter(|r| r["eventSource"] == "sudo.onprem.internal" && r.get("errorCode").is_some())
        .count();
    wait_for("the overview's numbers", || async {
        (text(&b, "overview-total").await == "60").then_some(())
    })
    .await;
    assert_eq!(text(&b, "failed-logins").await, failed_logins.to_string());
    assert_eq!(text(&b, "sudo-failures").await, sudo_failures.to_string());
    screenshot(&b, &shots, "overview").await;

    // Health: the agent that sent, its sequence gap, the destination. Records 61..=69 of
    // web-1 never arrive: the collector writes an AgentSequenceGap record.
    let late = vec![record(ACCOUNT, REGION)];
    let reply = c
        .client()
        .post(
            ndjson(&late),
            false,
            &[
                ("x-groundtrail-agent", "web-1"),
                ("x-groundtrail-seq-first", "70"),
                ("x-groundtrail-seq-last", "70"),
            ],
        )
        .await
        .expect("post");
    assert_eq!(reply.status, 200, "{}", reply.body);
    click(&b, "nav-health").await;
    wait_for("the agent and its gap on the health page", || async {
        let agents = text(&b, "agents").await;
        let gaps = text(&b, "gaps").await;
        if agents.contains("web-1") && agents.contains("70") && gaps.contains("AgentSequenceGap") {
            return Some(());
        }
        // The history indexes behind the journal: load the page again.
        b.execute("loadHealth()", vec![]).await.ok()?;
        None
    })
    .await;
    let gaps = text(&b, "gaps").await;
    assert!(
        gaps.contains("firstMissingSequence: 61") && gaps.contains("missingCount: 9"),
        "{gaps}"
    );
    assert!(text(&b, "destinations").await.contains("local"));
    screenshot(&b, &shots, "health").await;

    // A sign-out without the CSRF token is refused; the page's sign-out works.
    let (status, _, _) = http(
        c.addr,
        "POST",
        "/console/api/signout",
        &[("cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(status, 403);
    click(&b, "signout").await;
    wait_visible(&b, "signin").await;
    let (status, _, body) = http(
        c.addr,
        "GET",
        "/console/api/events",
        &[("cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(status, 401, "the session ended: {body}");
    assert!(!body.contains("eventId"));
    b.close().await.expect("close the browser");
}
