//! Issue 14, items 2-4, end to end with the real `groundtrail-agent` and `groundtrail-collector`:
//! what the agent's record production lets through.
//!
//! - item 2: an exec with quote-heavy arguments (auditd EXECVE) reaches the trail, cut to the
//!   collector's limits and marked, instead of being refused by the collector;
//! - item 3: sshd's `Invalid user` and `Failed password for invalid user` lines of one
//!   connection are one failed `ConsoleLogin` in the trail;
//! - item 4: a journal entry any local user can write (`logger --journald` style: systemd's
//!   user fields, but journald's own `_PID`/`_UID`/`_COMM` of an ordinary process) does not
//!   become a `StopService`; PutAuditEvents refuses the agent's own event sources.
//!
//! The log lines are in the exact format of the tools (`tool format`); the journal entries are
//! those a stand-in `journalctl` prints, with the fields journald sets.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use groundtrail_tests::*;
use serde_json::{Value, json};

const HOST: &str = "gt-hardening-host";

fn q(p: &Path) -> String {
    serde_json::to_string(&p.display().to_string()).unwrap()
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log for append");
    f.write_all(text.as_bytes()).expect("append");
    f.sync_all().expect("sync");
}

/// Every source off except what `sources` turns on.
fn config(adir: &Path, collector: &Collector, passwd: &Path, sources: &str) -> String {
    format!(
        "{head}[sources]\npasswd_path = {passwd}\ntimezone = \"UTC\"\n\n\
         {sources}\n",
        head = agent_config_head(adir, HOST, &[format!("http://{}", collector.addr)]),
        passwd = q(passwd),
    )
}

const ALL_OFF: &[(&str, &str)] = &[
    ("auth_log", "[sources.auth_log]\nenabled = false\n"),
    ("auditd", "[sources.auditd]\nenabled = false\n"),
    ("packages", "[sources.packages]\nenabled = false\n"),
    ("fim", "[sources.fim]\nenabled = false\n"),
    ("journald", "[sources.journald]\nenabled = false\n"),
];

/// The `[sources.*]` tables: `on` replaces the named ones, the rest are off.
fn sources(on: &[(&str, String)]) -> String {
    ALL_OFF
        .iter()
        .map(|(name, off)| {
            on.iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.clone())
                .unwrap_or_else(|| off.to_string())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

struct Setup {
    _dir: tempfile::TempDir,
    collector: Collector,
    store: Store,
    logs: std::path::PathBuf,
    adir: std::path::PathBuf,
    passwd: std::path::PathBuf,
}

async fn setup(name: &str) -> Setup {
    let dir = tempfile::Builder::new()
        .prefix(&format!("gt-{name}-"))
        .tempdir_in("/tmp")
        .expect("tempdir");
    let d = dir.path().to_path_buf();
    let trail = d.join("trail");
    let collector = Collector::start(
        &d.join("collector"),
        Spec::new(Dest::Local {
            path: trail.clone(),
            bucket: format!("{name}-trail"),
        }),
    )
    .await;
    let logs = d.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let passwd = logs.join("passwd");
    std::fs::write(
        &passwd,
        "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n",
    )
    .unwrap();
    Setup {
        _dir: dir,
        collector,
        store: Store::Local(trail),
        logs,
        adir: d.join("agent"),
        passwd,
    }
}

/// The records of the host sources in the trail (the agent's own left out).
async fn host_records(store: &Store) -> Vec<Value> {
    store
        .records()
        .await
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| {
            !r["eventSource"]
                .as_str()
                .unwrap_or_default()
                .starts_with("groundtrail.")
        })
        .collect()
}

/// Polls the trail until `done` holds for its host records; the records then.
async fn wait_records(
    store: &Store,
    agent: &AgentProcess,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let records = host_records(store).await;
        if done(&records) {
            return records;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{what} never reached the trail; records so far: {}\nagent log:\n{}",
            serde_json::to_string_pretty(&records).unwrap_or_default(),
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02X}")).collect()
}

/// Item 2. 64 arguments of 1 KiB of `"` and `\` each: 64 KiB of text, which the auditd source
/// used to pass whole (its caps counted raw bytes), but 128 KiB of `requestParameters.argv`
/// once JSON-escaped (plus the joined `command`), over the collector's 100 KiB cap. The
/// collector refused it and the command was gone from the trail; now it arrives, cut to the
/// limit and marked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quote_heavy_exec_reaches_the_trail_cut_and_marked() {
    let s = setup("records-exec").await;
    let audit = s.logs.join("audit.log");
    std::fs::write(&audit, "").unwrap();
    let cfg = config(
        &s.adir,
        &s.collector,
        &s.passwd,
        &sources(&[(
            "auditd",
            format!("[sources.auditd]\npath = {}\nexecve = true\n", q(&audit)),
        )]),
    );
    let agent = AgentProcess::start(&s.adir, &cfg).await;

    let arg = "\"\\".repeat(512);
    let args: String = (0..64)
        .map(|i| format!(" a{i}={}", hex(&arg)))
        .collect::<String>();
    let serial = "1700000000.123:4242";
    append(
        &audit,
        &format!(
            "type=SYSCALL msg=audit({serial}): arch=c000003e syscall=59 success=yes exit=0 a0=1 a1=2 a2=3 a3=4 items=2 ppid=100 pid=4242 auid=1000 uid=1000 gid=1000 euid=1000 suid=1000 fsuid=1000 egid=1000 sgid=1000 fsgid=1000 tty=pts0 ses=3 comm=\"printf\" exe=\"/usr/bin/printf\" key=\"exec\"\n\
             type=EXECVE msg=audit({serial}): argc=64{args}\n\
             type=CWD msg=audit({serial}): cwd=\"/home/alice\"\n\
             type=EOE msg=audit({serial}): \n"
        ),
    );
    let records = wait_records(&s.store, &agent, "the exec record", |rs| {
        rs.iter().any(|r| r["eventName"] == "RunCommand")
    })
    .await;
    let r = records
        .iter()
        .find(|r| r["eventName"] == "RunCommand")
        .unwrap();
    assert_eq!(
        r["eventSource"], "exec.onprem.internal",
        "{}",
        r["eventSource"]
    );
    let params = serde_json::to_vec(&r["requestParameters"]).unwrap().len();
    assert!(params <= 100 * 1024, "requestParameters is {params} bytes");
    assert!(serde_json::to_vec(r).unwrap().len() <= 256 * 1024);
    let argv = r["requestParameters"]["argv"]
        .as_array()
        .expect("argv kept");
    let first = argv[0].as_str().unwrap();
    assert!(
        !first.is_empty() && arg.starts_with(first),
        "argv[0] keeps its beginning"
    );
    assert_eq!(r["requestParameters"]["cwd"], "/home/alice");
    let marker = &r["additionalEventData"]["groundtrailTruncated"];
    assert_eq!(marker["members"], json!(["requestParameters"]), "{r}");
    assert!(
        marker["originalBytes"].as_u64().unwrap() > 100 * 1024,
        "{r}"
    );
    assert!(
        agent
            .metrics()
            .lines()
            .any(|l| l == "groundtrail_records_truncated_total 1"),
        "{}",
        agent.metrics()
    );
}

/// Item 3. One connection of an invalid user with a password try (four lines of sshd, one
/// attempt), one that only probed (`Failed none`) and closed, a valid user's failed password,
/// then a successful login as the marker that everything before it was read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failed_ssh_attempt_is_one_record() {
    let s = setup("records-sshd").await;
    let auth = s.logs.join("auth.log");
    std::fs::write(&auth, "").unwrap();
    let cfg = config(
        &s.adir,
        &s.collector,
        &s.passwd,
        &sources(&[(
            "auth_log",
            format!("[sources.auth_log]\npath = {}\n", q(&auth)),
        )]),
    );
    let agent = AgentProcess::start(&s.adir, &cfg).await;
    append(
        &auth,
        "Dec 10 07:07:38 gt-hardening-host sshd[24206]: Invalid user test9 from 52.80.34.196\n\
         Dec 10 07:07:38 gt-hardening-host sshd[24206]: input_userauth_request: invalid user test9 [preauth]\n\
         Dec 10 07:07:38 gt-hardening-host sshd[24206]: pam_unix(sshd:auth): check pass; user unknown\n\
         Dec 10 07:07:38 gt-hardening-host sshd[24206]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=52.80.34.196\n",
    );
    // The password try comes seconds later (pam's delay): longer than the follower's quiet
    // flush, which must not split the attempt.
    tokio::time::sleep(Duration::from_secs(3)).await;
    append(
        &auth,
        "Dec 10 07:07:45 gt-hardening-host sshd[24206]: Failed password for invalid user test9 from 52.80.34.196 port 36060 ssh2\n\
         Dec 10 07:07:45 gt-hardening-host sshd[24206]: Received disconnect from 52.80.34.196: 11: Bye Bye [preauth]\n\
         Dec 10 09:07:23 gt-hardening-host sshd[24415]: Invalid user 0 from 185.190.58.151\n\
         Dec 10 09:07:23 gt-hardening-host sshd[24415]: Failed none for invalid user 0 from 185.190.58.151 port 55495 ssh2\n\
         Dec 10 09:07:24 gt-hardening-host sshd[24415]: Connection closed by 185.190.58.151 [preauth]\n\
         Dec 10 09:13:43 gt-hardening-host sshd[24227]: Failed password for root from 5.36.59.76 port 42393 ssh2\n\
         Dec 10 09:20:00 gt-hardening-host sshd[24500]: Accepted password for alice from 10.0.0.5 port 50000 ssh2\n",
    );
    let is_success = |r: &Value| r["eventName"] == "ConsoleLogin" && r["errorCode"].is_null();
    let failures = |rs: &[Value]| -> Vec<Value> {
        rs.iter()
            .filter(|r| r["eventName"] == "ConsoleLogin" && !r["errorCode"].is_null())
            .cloned()
            .collect()
    };
    wait_records(&s.store, &agent, "the successful login", |rs| {
        rs.iter().any(is_success) && failures(rs).len() >= 3
    })
    .await;
    // Whatever the agent would have made of these lines has been shipped with (or before)
    // the marker; give a stray record time to show up all the same.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let records = host_records(&s.store).await;
    let failed = failures(&records);
    assert_eq!(
        failed.len(),
        3,
        "three attempts, three records: {}",
        serde_json::to_string_pretty(&failed).unwrap()
    );
    let methods: Vec<(&str, &str)> = failed
        .iter()
        .map(|r| {
            (
                r["sourceIPAddress"].as_str().unwrap(),
                r["additionalEventData"]["AuthMethod"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        methods.contains(&("52.80.34.196", "password")),
        "{methods:?}"
    );
    assert!(methods.contains(&("185.190.58.151", "none")), "{methods:?}");
    assert!(methods.contains(&("5.36.59.76", "password")), "{methods:?}");
    let counts = s.store.event_id_counts().await;
    for r in &records {
        assert_eq!(counts[r["eventID"].as_str().unwrap()], 1);
    }
}

/// Item 4, journald. A stand-in `journalctl` prints what the journal holds: a forged
/// `StopService auditd.service` and a forged sshd login, both written by an ordinary process
/// (journald's `_UID=1000`, `_COMM=logger` / a process that renamed itself `systemd`), then a
/// genuine `StopService nginx.service` from PID 1 as the marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_journal_entries_do_not_reach_the_trail() {
    let s = setup("records-journal").await;
    let entry = |cursor: &str, fields: Value| {
        let mut v = json!({
            "__CURSOR": cursor,
            "__REALTIME_TIMESTAMP": "1700000000123456",
        });
        v.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        v.to_string()
    };
    let lines = [
        entry(
            "s=1;i=1",
            json!({"SYSLOG_IDENTIFIER": "systemd", "MESSAGE": "Stopped auditd.service.",
                   "UNIT": "auditd.service", "JOB_TYPE": "stop", "JOB_RESULT": "done",
                   "_PID": "31337", "_UID": "1000", "_GID": "1000", "_COMM": "logger",
                   "_TRANSPORT": "journal"}),
        ),
        entry(
            "s=1;i=2",
            json!({"SYSLOG_IDENTIFIER": "systemd", "MESSAGE": "Stopped auditd.service.",
                   "UNIT": "auditd.service", "JOB_TYPE": "stop", "JOB_RESULT": "done",
                   "_PID": "31338", "_UID": "1000", "_COMM": "systemd",
                   "_TRANSPORT": "journal"}),
        ),
        entry(
            "s=1;i=3",
            json!({"SYSLOG_IDENTIFIER": "sshd",
                   "MESSAGE": "Accepted password for root from 203.0.113.9 port 4000 ssh2",
                   "_PID": "31339", "_UID": "1000", "_COMM": "logger", "_TRANSPORT": "syslog"}),
        ),
        entry(
            "s=1;i=4",
            json!({"SYSLOG_IDENTIFIER": "systemd", "MESSAGE": "Stopped nginx.service.",
                   "UNIT": "nginx.service", "JOB_TYPE": "stop", "JOB_RESULT": "done",
                   "_PID": "1", "_UID": "0", "_COMM": "systemd", "_TRANSPORT": "journal"}),
        ),
    ];
    let out = s.logs.join("journal.json");
    std::fs::write(&out, lines.join("\n") + "\n").unwrap();
    let script = s.logs.join("journalctl");
    std::fs::write(
        &script,
        format!("#!/bin/sh\ncat {}\nexec sleep 1000\n", out.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cfg = config(
        &s.adir,
        &s.collector,
        &s.passwd,
        &sources(&[(
            "journald",
            format!(
                "[sources.journald]\nenabled = true\njournalctl = {}\nfrom_start = true\n",
                q(&script)
            ),
        )]),
    );
    let agent = AgentProcess::start(&s.adir, &cfg).await;
    wait_records(&s.store, &agent, "PID 1's StopService", |rs| {
        rs.iter()
            .any(|r| r["requestParameters"]["unit"] == "nginx.service")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let records = host_records(&s.store).await;
    assert_eq!(
        records.len(),
        1,
        "only the genuine entry is a record: {}",
        serde_json::to_string_pretty(&records).unwrap()
    );
    assert_eq!(records[0]["eventName"], "StopService");
    assert_eq!(records[0]["eventSource"], "systemd.onprem.internal");
    let metrics = agent.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l
                == "groundtrail_source_lines_total{source=\"journald\",outcome=\"ignored\"} 3"),
        "{metrics}"
    );
    drop(agent);
}

/// One HTTP/1.1 exchange over loopback TCP: (status, body).
fn http_exchange(port: u16, request: &str) -> (u16, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// Item 4, PutAuditEvents: an application cannot write under the agent's own event sources
/// (`systemd.<domain>` could fake a StopService); its other events of the same call are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_audit_events_refuses_the_agents_own_event_sources() {
    let s = setup("records-app").await;
    let cfg = format!(
        "{}[app_events]\nhttp_listen = \"127.0.0.1:0\"\n",
        config(&s.adir, &s.collector, &s.passwd, &sources(&[]))
    );
    let agent = AgentProcess::start(&s.adir, &cfg).await;
    let app_port = agent
        .addr(groundtrail_common::sd_notify::role::APP_EVENTS)
        .port();
    let event = |id: &str, source: &str, name: &str| {
        let data = json!({
            "version": "1.0",
            "userIdentity": {"type": "AppUser", "principalId": "mallory"},
            "eventSource": source,
            "eventName": name,
            "eventTime": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "UID": format!("req-{id}"),
            "requestParameters": {"unit": "auditd.service"},
            "recipientAccountId": ACCOUNT,
        });
        json!({"id": id, "eventData": data.to_string()})
    };
    let body = json!({"auditEvents": [
        event("forged-systemd", "systemd.onprem.internal", "StopService"),
        event("forged-sshd", "SSHD.onprem.internal", "ConsoleLogin"),
        event("forged-files", "files.onprem.internal", "ModifyFile"),
        event("good", "billing.example.com", "IssueRefund"),
    ]})
    .to_string();
    let (code, answer) = http_exchange(
        app_port,
        &format!(
            "POST /PutAuditEvents?channelArn=arn%3Aaws%3Acloudtrail%3Aus-east-1%3A{ACCOUNT}%3Achannel%2Fweb HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(code, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        answer["successful"].as_array().unwrap().len(),
        1,
        "{answer}"
    );
    assert_eq!(answer["successful"][0]["id"], "good", "{answer}");
    let failed = answer["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 3, "{answer}");
    for f in failed {
        assert_eq!(f["errorCode"], "InvalidEventSource", "{answer}");
        let msg = f["errorMessage"].as_str().unwrap();
        assert!(msg.contains("reserved"), "{msg}");
    }
    // The good event reaches the trail; none of the refused ones does.
    let good = answer["successful"][0]["eventID"]
        .as_str()
        .unwrap()
        .to_string();
    s.store.wait_delivered(std::slice::from_ref(&good)).await;
    let records = host_records(&s.store).await;
    assert!(
        records
            .iter()
            .all(|r| r["eventSource"] == "billing.example.com"),
        "{records:?}"
    );
    drop(agent);
}
