//! journald entries -> records. No permissively licensed `journalctl -o json` sample exists,
//! so the entries are built with the fields systemd and the tools write (`tool format`); the
//! runner is tested against a stand-in `journalctl` script.

use std::sync::Arc;

use tokio::sync::broadcast;

use super::*;
use crate::sources::tail::MemorySink;
use crate::sources::testutil::{env, rec};

/// An entry as journald stores it for the real program `ident`: the trusted fields
/// (`_PID`, `_UID`, `_COMM`, `_TRANSPORT`) are those journald sets for systemd (PID 1) or for a
/// root program logging through syslog; `extra` overrides them.
fn entry(cursor: &str, ident: &str, msg: &str, extra: Value) -> Value {
    let (pid, transport) = if ident == "systemd" {
        ("1", "journal")
    } else {
        ("4242", "syslog")
    };
    let mut v = json!({
        "__CURSOR": cursor,
        "__REALTIME_TIMESTAMP": "1700000000123456",
        "SYSLOG_IDENTIFIER": ident,
        "MESSAGE": msg,
        "_PID": pid,
        "_UID": "0",
        "_COMM": ident,
        "_TRANSPORT": transport,
    });
    if let (Value::Object(m), Value::Object(x)) = (&mut v, extra) {
        m.extend(x);
    }
    v
}

#[test]
fn auth_messages_use_the_auth_parsers() {
    let e = env();
    let c = JournaldConfig::default();
    let r = rec(parse_entry(
        &e,
        &c,
        &entry(
            "s=1;i=1",
            "sshd",
            "Accepted password for root from 10.10.15.13 port 44796 ssh2",
            json!({}),
        ),
    ));
    assert_eq!(
        (r.event_source.as_str(), r.event_name.as_str()),
        ("sshd.onprem.internal", "ConsoleLogin")
    );
    assert_eq!(r.event_time, "2023-11-14T22:13:20Z");
    assert_eq!(r.source_ip_address.as_deref(), Some("10.10.15.13"));
    // Deterministic from the cursor.
    let again = rec(parse_entry(
        &e,
        &c,
        &entry(
            "s=1;i=1",
            "sshd",
            "Accepted password for root from 10.10.15.13 port 44796 ssh2",
            json!({}),
        ),
    ));
    assert_eq!(r.event_id, again.event_id);
    let r = rec(parse_entry(
        &e,
        &c,
        &entry(
            "s=1;i=2",
            "sudo",
            "alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/systemctl restart nginx",
            json!({}),
        ),
    ));
    assert_eq!(r.event_name, "RunCommand");
    // A non-UTF-8 MESSAGE arrives as a byte array.
    let bytes: Vec<u8> = b"changed password expiry for bob".to_vec();
    let r = rec(parse_entry(
        &e,
        &c,
        &entry("s=1;i=3", "chage", "", json!({"MESSAGE": bytes})),
    ));
    assert_eq!(r.event_name, "UpdateLoginProfile");
    assert_eq!(
        parse_entry(
            &e,
            &c,
            &entry("s=1;i=4", "kernel", "eth0: link up", json!({}))
        ),
        Parsed::Ignored
    );
    let off = JournaldConfig {
        auth: false,
        ..JournaldConfig::default()
    };
    assert_eq!(
        parse_entry(
            &e,
            &off,
            &entry(
                "s=1;i=1",
                "sshd",
                "Accepted password for root from 10.0.0.1 port 1 ssh2",
                json!({})
            )
        ),
        Parsed::Ignored
    );
}

#[test]
fn systemd_unit_jobs_and_failures() {
    let e = env();
    let c = JournaldConfig::default();
    let job = |cursor: &str, msg: &str, t: &str, res: &str| {
        parse_entry(
            &e,
            &c,
            &entry(
                cursor,
                "systemd",
                msg,
                json!({"UNIT": "nginx.service", "JOB_TYPE": t, "JOB_RESULT": res}),
            ),
        )
    };
    let r = rec(job(
        "c1",
        "Started nginx.service - A high performance web server.",
        "start",
        "done",
    ));
    assert_eq!(
        (r.event_source.as_str(), r.event_name.as_str()),
        ("systemd.onprem.internal", "StartService")
    );
    assert_eq!(r.request_parameters, Some(json!({"unit": "nginx.service"})));
    assert_eq!(
        r.user_identity.as_ref().unwrap().invoked_by.as_deref(),
        Some("systemd.onprem.internal")
    );
    assert_eq!(
        r.resources.as_ref().unwrap()[0].arn.as_deref(),
        Some("arn:aws:systemd:onprem-1:123456789012:unit/web1/nginx.service")
    );
    assert_eq!(
        rec(job("c2", "Stopped nginx.service.", "stop", "done")).event_name,
        "StopService"
    );
    assert_eq!(
        rec(job("c3", "Stopped nginx.service.", "restart", "done")).event_name,
        "RestartService"
    );
    let r = rec(job(
        "c4",
        "Failed to start nginx.service.",
        "start",
        "failed",
    ));
    assert_eq!(
        (r.event_name.as_str(), r.error_code.as_deref()),
        ("StartService", Some("JobFailed"))
    );
    assert_eq!(
        r.error_message.as_deref(),
        Some("Failed to start nginx.service.")
    );
    let r = rec(parse_entry(
        &e,
        &c,
        &entry(
            "c5",
            "systemd",
            "nginx.service: Failed with result 'exit-code'.",
            json!({"UNIT": "nginx.service", "MESSAGE_ID": MESSAGE_UNIT_FAILURE_RESULT, "UNIT_RESULT": "exit-code"}),
        ),
    ));
    assert_eq!(
        (r.event_name.as_str(), r.event_type.as_str()),
        ("ServiceFailed", "AwsServiceEvent")
    );
    assert_eq!(
        r.service_event_details,
        Some(json!({"result": "exit-code"}))
    );
    // The job's beginning carries no result.
    assert_eq!(
        parse_entry(
            &e,
            &c,
            &entry(
                "c6",
                "systemd",
                "Starting nginx.service...",
                json!({"UNIT": "nginx.service", "JOB_TYPE": "start"})
            )
        ),
        Parsed::Ignored
    );
    // A user's own manager: the user is the principal.
    let r = rec(parse_entry(
        &e,
        &c,
        &entry(
            "c7",
            "systemd",
            "Started app.service.",
            json!({"USER_UNIT": "app.service", "JOB_TYPE": "start", "JOB_RESULT": "done",
                   "_UID": "1000", "_PID": "1771", "_SYSTEMD_UNIT": "user@1000.service"}),
        ),
    ));
    assert_eq!(
        r.user_identity.as_ref().unwrap().user_name.as_deref(),
        Some("alice")
    );
    // Missing cursor or time: malformed.
    assert_eq!(
        parse_entry(&e, &c, &json!({"MESSAGE": "x"})),
        Parsed::Malformed
    );
    assert_eq!(
        parse_entry(
            &e,
            &c,
            &json!({"__CURSOR": "c", "__REALTIME_TIMESTAMP": "soon"})
        ),
        Parsed::Malformed
    );
}

/// What `logger --journald` (or `sd_journal_send`) lets any local user write: every user
/// field of a real systemd or sshd entry, but journald's own `_PID`, `_UID`, `_COMM` say who
/// sent it. None of these becomes a record.
#[test]
fn forged_entries_are_not_believed() {
    let e = env();
    let c = JournaldConfig::default();
    let stop = json!({"UNIT": "auditd.service", "JOB_TYPE": "stop", "JOB_RESULT": "done"});
    let with = |base: &Value, over: Value| {
        let mut v = base.clone();
        if let (Value::Object(m), Value::Object(o)) = (&mut v, over) {
            m.extend(o);
        }
        v
    };
    // The genuine entry is a StopService.
    let real = entry("f0", "systemd", "Stopped auditd.service.", stop.clone());
    assert_eq!(rec(parse_entry(&e, &c, &real)).event_name, "StopService");
    let forged = [
        // logger --journald from an unprivileged shell.
        json!({"_PID": "31337", "_UID": "1000", "_COMM": "logger"}),
        // ...that renamed itself (prctl) to "systemd".
        json!({"_PID": "31337", "_UID": "1000", "_COMM": "systemd"}),
        // root, but not PID 1.
        json!({"_PID": "31337", "_UID": "0", "_COMM": "logger"}),
        // through syslog instead of the journal protocol.
        json!({"_TRANSPORT": "syslog"}),
        // no credentials at all.
        json!({"_PID": null, "_UID": null, "_COMM": null}),
    ];
    for (i, over) in forged.into_iter().enumerate() {
        let v = with(&real, over.clone());
        assert_eq!(
            parse_entry(&e, &c, &v),
            Parsed::Ignored,
            "forgery {i}: {over}"
        );
    }
    // A user manager's entry claiming a system unit, or another user's manager.
    let user = with(
        &real,
        json!({"_PID": "1771", "_UID": "1000", "_SYSTEMD_UNIT": "user@1000.service"}),
    );
    assert_eq!(parse_entry(&e, &c, &user), Parsed::Ignored);
    let other = with(
        &real,
        json!({"USER_UNIT": "app.service", "_PID": "1771", "_UID": "1000", "_SYSTEMD_UNIT": "user@0.service"}),
    );
    assert_eq!(parse_entry(&e, &c, &other), Parsed::Ignored);
    // An sshd login from a non-root sender, or from a program that only calls itself sshd.
    let login = entry(
        "f1",
        "sshd",
        "Accepted password for root from 10.0.0.1 port 1 ssh2",
        json!({}),
    );
    assert_eq!(rec(parse_entry(&e, &c, &login)).event_name, "ConsoleLogin");
    for over in [
        json!({"_UID": "1000"}),
        json!({"_COMM": "logger"}),
        json!({"_UID": "1000", "_COMM": null}),
        json!({"_TRANSPORT": "audit"}),
    ] {
        assert_eq!(
            parse_entry(&e, &c, &with(&login, over.clone())),
            Parsed::Ignored,
            "{over}"
        );
    }
    // A short-lived root tool that exited before journald read /proc: no _COMM, its
    // SYSLOG_IDENTIFIER names it.
    let chage = entry(
        "f2",
        "chage",
        "changed password expiry for bob",
        json!({"_COMM": null}),
    );
    assert_eq!(
        rec(parse_entry(&e, &c, &chage)).event_name,
        "UpdateLoginProfile"
    );
}

#[test]
fn journalctl_arguments() {
    let c = JournaldConfig::default();
    let a = journalctl_args(&c, Some("s=abc"));
    assert!(a.contains(&"--after-cursor=s=abc".to_string()) && a.contains(&"--follow".to_string()));
    assert!(journalctl_args(&c, None).contains(&"--lines=0".to_string()));
}

#[tokio::test]
async fn runner_checkpoints_the_cursor_and_resumes_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let args_log = dir.path().join("args");
    let script = dir.path().join("journalctl");
    let lines = [
        entry(
            "s=1;i=1",
            "sshd",
            "Accepted password for root from 10.0.0.1 port 1 ssh2",
            json!({}),
        ),
        entry("s=1;i=2", "kernel", "noise", json!({})),
        entry(
            "s=1;i=3",
            "systemd",
            "Started x.service.",
            json!({"UNIT": "x.service", "JOB_TYPE": "start", "JOB_RESULT": "done"}),
        ),
    ];
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect::<String>() + "not json\n";
    std::fs::write(dir.path().join("out.json"), body).unwrap();
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\ncat {}\nexec sleep 1000\n",
            args_log.display(),
            dir.path().join("out.json").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = JournaldConfig {
        enabled: true,
        journalctl: script.clone(),
        ..JournaldConfig::default()
    };
    let sink = MemorySink::new();
    let (stop, rx) = broadcast::channel(1);
    let task = spawn(
        config.clone(),
        Arc::new(env()),
        sink.clone(),
        Shutdown::new(rx),
    );
    tokio::time::timeout(Duration::from_secs(60), sink.wait_for(2))
        .await
        .unwrap();
    let _ = stop.send(());
    task.await.unwrap();
    let names: Vec<String> = sink
        .records()
        .iter()
        .map(|r| r.event_name.clone())
        .collect();
    assert_eq!(names, ["ConsoleLogin", "StartService"]);
    let ck: JournalCheckpoint =
        serde_json::from_slice(&sink.checkpoint(SOURCE_KEY).unwrap()).unwrap();
    assert_eq!(ck.cursor, "s=1;i=3");
    // Restart: journalctl is asked for what follows the stored cursor.
    let (stop, rx) = broadcast::channel(1);
    let task = spawn(config, Arc::new(env()), sink.clone(), Shutdown::new(rx));
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let text = std::fs::read_to_string(&args_log).unwrap_or_default();
            if text.lines().count() >= 2 {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .map(|text| {
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .contains("--after-cursor=s=1;i=3"),
            "{text}"
        )
    })
    .unwrap();
    let _ = stop.send(());
    task.await.unwrap();
}
