//! auditd catalog rows -> the expected records, on real audit logs: elastic/beats samples in
//! `agent/tests/fixtures/audit/` (Apache-2.0) and laurel's test data from
//! `../shared/host-logs` when present (GPL, read only, never copied).

use std::sync::Arc;

use super::*;
use crate::sources::tail::FileId;
use crate::sources::testutil::{env, shared_sample};

const RHEL6: &str = include_str!("../../../tests/fixtures/audit/beats_auditd_rhel6.log");
const USERADD: &str = include_str!("../../../tests/fixtures/audit/beats_auditd_useradd.log");
const CENT7: &str = include_str!("../../../tests/fixtures/audit/beats_auditd_cent7_node.log");
const EXECVE_HEX: &str =
    include_str!("../../../tests/fixtures/audit/beats_auditd_execve_hex_arg.log");
const EXCERPT: &str = include_str!("../../../tests/fixtures/audit/beats_auditd_test_excerpt.log");

/// Feeds a whole file through the grouping handler, then flushes (end of input).
fn run(text: &str, execve: bool) -> Vec<Record> {
    let mut h = AuditHandler::new(Arc::new(env()), execve);
    let id = FileId {
        dev: 1,
        ino: 2,
        head_len: 1,
        head: "ab".into(),
    };
    let mut out = Vec::new();
    let mut offset = 0u64;
    for line in text.split_inclusive('\n') {
        let at = LineRef {
            host: "web1",
            file: &id,
            offset,
        };
        h.line(line.trim_end_matches('\n').as_bytes(), at, &mut out);
        offset += line.len() as u64;
    }
    h.flush(&mut out);
    assert_eq!(h.pending_from(), None);
    for r in &out {
        r.validate().unwrap();
    }
    out
}

fn who(r: &Record) -> String {
    let u = r.user_identity.as_ref().unwrap();
    u.arn.clone().or(u.invoked_by.clone()).unwrap_or_default()
}

#[test]
fn line_envelope_and_hex() {
    let l = parse_line(RHEL6.lines().nth(2).unwrap()).unwrap();
    assert_eq!(
        (l.rtype.as_str(), l.secs, l.millis, l.serial),
        ("USER_CMD", 1489519256, 192, 19600329)
    );
    assert_eq!(l.text("cwd").as_deref(), Some("/"));
    assert_eq!(
        l.text("cmd").as_deref(),
        Some("/usr/lib64/nagios/plugins/check_asterisk_sip_peers -p 202")
    );
    let l = parse_line(CENT7.lines().next().unwrap()).unwrap();
    assert_eq!(l.node.as_deref(), Some("localhost.localdomain"));
    assert_eq!(
        decode_hex("2F62696E2F6563686F0061"),
        Some("/bin/echo a".into())
    );
    for bad in [
        "",
        "garbage",
        "type=USER_CMD msg=audit(1489519256.192:1960",
        "type=SYSCALL msg=audit(abc:1): x=1",
        "node=only",
        "type= msg=audit(1.0:1): a=b",
    ] {
        assert_eq!(parse_line(bad), None, "{bad:?}");
    }
}

#[test]
fn beats_rhel6_sudo_command_and_session() {
    let out = run(RHEL6, true);
    assert_eq!(out.len(), 2, "{out:#?}");
    let cmd = &out[0];
    assert_eq!(
        (cmd.event_source.as_str(), cmd.event_name.as_str()),
        ("sudo.onprem.internal", "RunCommand")
    );
    assert_eq!(cmd.event_time, "2017-03-14T19:20:56Z");
    // auid 700 (ops) logged in, runs as uid 497 (nagios).
    assert_eq!(
        who(cmd),
        "arn:aws:sts::123456789012:assumed-role/nagios/ops"
    );
    assert_eq!(
        cmd.request_parameters.as_ref().unwrap()["command"],
        "/usr/lib64/nagios/plugins/check_asterisk_sip_peers -p 202"
    );
    assert_eq!(cmd.request_parameters.as_ref().unwrap()["cwd"], "/");
    assert_eq!(
        cmd.additional_event_data.as_ref().unwrap()["auditSerial"],
        19600329
    );
    let s = &out[1];
    assert_eq!(
        (s.event_source.as_str(), s.event_name.as_str()),
        ("sudo.onprem.internal", "AssumeRole")
    );
    assert_eq!(
        s.user_identity.as_ref().unwrap().user_name.as_deref(),
        Some("ops")
    );
    assert_eq!(
        s.response_elements.as_ref().unwrap()["assumedRoleUser"]["arn"],
        "arn:aws:sts::123456789012:assumed-role/root/ops"
    );
    // Deterministic, distinct eventIDs.
    assert_ne!(out[0].event_id, out[1].event_id);
    assert_eq!(run(RHEL6, true)[0].event_id, out[0].event_id);
}

#[test]
fn beats_useradd_account_changes() {
    let out = run(USERADD, true);
    let names: Vec<&str> = out.iter().map(|r| r.event_name.as_str()).collect();
    assert_eq!(names, ["CreateGroup", "CreateUser", "UpdateLoginProfile"]);
    for r in &out {
        assert_eq!(r.event_source, "iam.onprem.internal");
        // auid 1000 is alice in the test passwd.
        assert_eq!(
            r.user_identity.as_ref().unwrap().user_name.as_deref(),
            Some("alice")
        );
        assert_eq!(r.source_ip_address.as_deref(), Some("127.0.0.1"));
    }
    assert_eq!(out[0].request_parameters.as_ref().unwrap()["gid"], 1004);
    assert_eq!(
        out[2].request_parameters.as_ref().unwrap()["userName"],
        "charlie"
    );
    assert_eq!(out[2].user_agent.as_deref(), Some("passwd"));
    assert_eq!(
        out[2].resources.as_ref().unwrap()[0].arn.as_deref(),
        Some("arn:aws:iam::123456789012:user/web1/charlie")
    );
}

#[test]
fn beats_cent7_services_by_the_system() {
    let out = run(CENT7, true);
    let units: Vec<&str> = out
        .iter()
        .map(|r| {
            r.request_parameters.as_ref().unwrap()["unit"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(
        units,
        [
            "auditd",
            "systemd-update-utmp",
            "rngd",
            "irqbalance",
            "abrtd",
            "abrt-xorg"
        ]
    );
    for r in &out {
        assert_eq!(
            (r.event_source.as_str(), r.event_name.as_str()),
            ("systemd.onprem.internal", "StartService")
        );
        assert_eq!(who(r), "systemd.onprem.internal");
        assert_eq!(
            r.additional_event_data.as_ref().unwrap()["node"],
            "localhost.localdomain"
        );
        assert_eq!(
            r.resources.as_ref().unwrap()[0].resource_type.as_deref(),
            Some("Groundtrail::Host::Service")
        );
    }
}

#[test]
fn beats_execve_and_software_update() {
    // A lone EXECVE (no SYSCALL, no EOE, no final newline): closed at the end of input.
    let out = run(EXECVE_HEX, true);
    assert_eq!(out.len(), 1);
    let p = out[0].request_parameters.as_ref().unwrap();
    assert_eq!(p["command"], r#"sh -c echo \"arg hex encoded\""#);
    assert_eq!(p["argv"][2], r#"echo \"arg hex encoded\""#);
    assert_eq!(out[0].event_time, "2022-11-28T06:01:53Z");

    let out = run(EXCERPT, true);
    let names: Vec<&str> = out.iter().map(|r| r.event_name.as_str()).collect();
    assert_eq!(names, ["InstallPackage", "RunCommand"]);
    let sw = &out[0];
    assert_eq!(sw.event_source, "packages.onprem.internal");
    // auid 1000 (alice in the test passwd) ran yum as root.
    assert_eq!(who(sw), "arn:aws:sts::123456789012:assumed-role/root/alice");
    assert_eq!(sw.user_agent.as_deref(), Some("yum"));
    assert_eq!(
        sw.request_parameters,
        Some(
            serde_json::json!({"packageName": "gcc", "version": "4.8.5-39.el7", "architecture": "x86_64", "packageType": "rpm", "gpgResult": "1"})
        )
    );
    // An unquoted, non-hex argument (ausearch -i style) stays as written.
    assert_eq!(
        out[1].request_parameters.as_ref().unwrap()["command"],
        "top"
    );
}

/// Shapes with no permissively licensed sample, in the format auditd/pam/sshd write them.
/// `tool format`.
#[test]
fn tool_format_logins_and_failures() {
    let text = "\
type=USER_LOGIN msg=audit(1700000000.100:500): pid=1 uid=0 auid=1000 ses=3 msg='op=login id=1000 exe=\"/usr/sbin/sshd\" hostname=10.0.0.9 addr=10.0.0.9 terminal=/dev/pts/0 res=success'
type=USER_LOGIN msg=audit(1700000001.100:501): pid=2 uid=0 auid=4294967295 ses=4294967295 msg='op=login acct=28696E76616C6964207573657229 exe=\"/usr/sbin/sshd\" hostname=? addr=203.0.113.7 terminal=ssh res=failed'
type=USER_AUTH msg=audit(1700000002.100:502): pid=3 uid=1000 auid=1000 ses=3 msg='op=PAM:authentication grantors=? acct=\"root\" exe=\"/usr/bin/su\" hostname=? addr=? terminal=pts/0 res=failed'
type=USER_START msg=audit(1700000003.100:503): pid=4 uid=0 auid=1000 ses=3 msg='op=PAM:session_open grantors=pam_unix acct=\"root\" exe=\"/usr/bin/su\" hostname=? addr=? terminal=pts/0 res=success'
type=USER_END msg=audit(1700000004.100:504): pid=1 uid=0 auid=1000 ses=3 msg='op=PAM:session_close grantors=pam_unix acct=\"alice\" exe=\"/usr/sbin/sshd\" hostname=10.0.0.9 addr=10.0.0.9 terminal=ssh res=success'
type=DEL_USER msg=audit(1700000005.100:505): pid=5 uid=0 auid=1000 ses=3 msg='op=deleting user acct=\"bob\" exe=\"/usr/sbin/userdel\" hostname=web1 addr=? terminal=pts/0 res=success'
type=DEL_GROUP msg=audit(1700000005.200:506): pid=5 uid=0 auid=1000 ses=3 msg='op=deleting group acct=\"bob\" exe=\"/usr/sbin/userdel\" hostname=web1 addr=? terminal=pts/0 res=success'
type=SERVICE_STOP msg=audit(1700000006.100:507): pid=1 uid=0 auid=4294967295 ses=4294967295 msg='unit=nginx comm=\"systemd\" exe=\"/usr/lib/systemd/systemd\" hostname=? addr=? terminal=? res=failed'
";
    let out = run(text, true);
    let names: Vec<String> = out
        .iter()
        .map(|r| format!("{}/{}", r.event_source, r.event_name))
        .collect();
    assert_eq!(
        names,
        [
            "sshd.onprem.internal/ConsoleLogin",
            "sshd.onprem.internal/ConsoleLogin",
            "su.onprem.internal/AssumeRole",
            "su.onprem.internal/AssumeRole",
            "sshd.onprem.internal/Logout",
            "iam.onprem.internal/DeleteUser",
            "iam.onprem.internal/DeleteGroup",
            "systemd.onprem.internal/StopService",
        ]
    );
    assert_eq!(out[0].source_ip_address.as_deref(), Some("10.0.0.9"));
    assert_eq!(
        out[0].user_identity.as_ref().unwrap().user_name.as_deref(),
        Some("alice")
    );
    assert_eq!(
        out[0].response_elements,
        Some(serde_json::json!({"ConsoleLogin": "Success"}))
    );
    assert_eq!(
        out[1].user_identity.as_ref().unwrap().user_name.as_deref(),
        Some(crate::sources::host_accounts::HIDDEN_USER)
    );
    assert!(out[1].error_code.is_some());
    assert!(out[2].error_code.is_some());
    assert!(out[3].error_code.is_none());
    assert_eq!(
        out[5].request_parameters.as_ref().unwrap()["userName"],
        "bob"
    );
    assert_eq!(
        out[6].request_parameters.as_ref().unwrap()["groupName"],
        "bob"
    );
    assert_eq!(out[7].error_code.as_deref(), Some("ServiceFailed"));
}

/// Account-management records of older and newer shadow-utils (`tool format`).
#[test]
fn tool_format_account_management() {
    let text = "\
type=USER_CHAUTHTOK msg=audit(1700000100.000:600): pid=7 uid=0 auid=1000 ses=3 msg='op=adding user to group acct=\"bob\" exe=\"/usr/sbin/useradd\" hostname=? addr=? terminal=pts/0 res=success'
type=USER_CHAUTHTOK msg=audit(1700000100.100:601): pid=7 uid=0 auid=1000 ses=3 msg='op=adding user to shadow group acct=\"bob\" exe=\"/usr/sbin/useradd\" hostname=? addr=? terminal=pts/0 res=success'
type=USER_CHAUTHTOK msg=audit(1700000100.200:602): pid=7 uid=0 auid=1000 ses=3 msg='op=adding home directory acct=\"bob\" exe=\"/usr/sbin/useradd\" hostname=? addr=? terminal=pts/0 res=success'
type=USER_MGMT msg=audit(1700000100.300:603): pid=8 uid=0 auid=1000 ses=3 msg='op=changing-shell acct=\"bob\" exe=\"/usr/sbin/usermod\" hostname=? addr=? terminal=pts/0 res=success'
type=GRP_MGMT msg=audit(1700000100.400:604): pid=9 uid=0 auid=1000 ses=3 msg='op=modify-group acct=\"docker\" exe=\"/usr/sbin/groupmod\" hostname=? addr=? terminal=pts/0 res=success'
type=ADD_USER msg=audit(1700000100.500:605): pid=10 uid=0 auid=1000 ses=3 msg='op=adding user id=1001 exe=\"/usr/sbin/useradd\" hostname=? addr=? terminal=pts/0 res=failed'
";
    let out = run(text, true);
    let names: Vec<&str> = out.iter().map(|r| r.event_name.as_str()).collect();
    assert_eq!(
        names,
        ["AddUserToGroup", "UpdateUser", "UpdateGroup", "CreateUser"]
    );
    assert_eq!(
        out[0].request_parameters.as_ref().unwrap()["userName"],
        "bob"
    );
    assert_eq!(
        out[2].request_parameters.as_ref().unwrap()["groupName"],
        "docker"
    );
    assert_eq!(out[3].error_code.as_deref(), Some("Failed"));
    assert_eq!(out[3].error_message.as_deref(), Some("adding user failed"));
}

#[test]
fn malformed_lines_are_counted_and_groups_survive() {
    let before = STATS.snapshot();
    let text = format!(
        "garbage\n{}\ntype=USER_CMD msg=audit(1489519256.192:1960\n{}\n",
        RHEL6.lines().nth(2).unwrap(),
        RHEL6.lines().nth(4).unwrap()
    );
    let out = run(&text, true);
    assert_eq!(out.len(), 2);
    assert!(STATS.snapshot().malformed - before.malformed >= 2);
}

#[test]
fn open_group_holds_the_checkpoint() {
    let mut h = AuditHandler::new(Arc::new(env()), true);
    let id = FileId {
        dev: 1,
        ino: 2,
        head_len: 1,
        head: "ab".into(),
    };
    let mut out = Vec::new();
    let lines = [
        "type=SYSCALL msg=audit(1615114232.375:15558): arch=c000003e syscall=59 success=yes exit=0 items=2 ppid=1 pid=2 auid=1000 uid=0 tty=pts1 ses=1 comm=\"whoami\" exe=\"/usr/bin/whoami\" key=(null)",
        "type=EXECVE msg=audit(1615114232.375:15558): argc=1 a0=\"whoami\"",
        "type=CWD msg=audit(1615114232.375:15558): cwd=\"/root\"",
    ];
    for (i, l) in lines.iter().enumerate() {
        let at = LineRef {
            host: "web1",
            file: &id,
            offset: 100 + i as u64 * 10,
        };
        h.line(l.as_bytes(), at, &mut out);
    }
    assert!(out.is_empty());
    assert_eq!(h.pending_from(), Some(100));
    let at = LineRef {
        host: "web1",
        file: &id,
        offset: 200,
    };
    h.line(b"type=EOE msg=audit(1615114232.375:15558): ", at, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(h.pending_from(), None);
    assert_eq!(
        out[0].event_id,
        crate::sources::tail::event_id("web1", &id, 100)
    );
    assert_eq!(
        who(&out[0]),
        "arn:aws:sts::123456789012:assumed-role/root/alice"
    );
}

#[test]
fn shared_laurel_enriched() {
    let Some(text) = shared_sample("audit/laurel_testdata_enriched.log") else {
        return;
    };
    let out = run(&text, true);
    let cmds: Vec<&Record> = out
        .iter()
        .filter(|r| r.event_name == "RunCommand")
        .collect();
    assert_eq!(
        cmds.len(),
        3,
        "{:#?}",
        out.iter().map(|r| &r.event_name).collect::<Vec<_>>()
    );
    // whoami: ENRICHED names win (AUID="user" UID="root").
    assert_eq!(
        who(cmds[0]),
        "arn:aws:sts::123456789012:assumed-role/root/user"
    );
    let p = cmds[0].request_parameters.as_ref().unwrap();
    assert_eq!(
        (p["command"].as_str(), p["cwd"].as_str()),
        (Some("whoami"), Some("/home/user/tmp"))
    );
    assert_eq!(cmds[0].event_source, "exec.onprem.internal");
    // A 16 KiB argument reassembled from hex chunks.
    let long = cmds[1].request_parameters.as_ref().unwrap()["command"]
        .as_str()
        .unwrap();
    assert!(long.starts_with("/bin/echo baaaa"), "{}", &long[..40]);
    assert_eq!(long.len(), "/bin/echo ".len() + 8192);
    // A hex-encoded perl one-liner, decoded.
    let perl = cmds[2].request_parameters.as_ref().unwrap()["command"]
        .as_str()
        .unwrap();
    assert!(perl.starts_with("perl -e use Socket;"), "{perl}");
    let services: Vec<&Record> = out
        .iter()
        .filter(|r| r.event_name == "StartService")
        .collect();
    assert_eq!(services.len(), 1);
    assert_eq!(
        services[0].request_parameters.as_ref().unwrap()["unit"],
        "apt-daily"
    );
}

#[test]
fn shared_laurel_shell_proc_trace() {
    let Some(text) = shared_sample("audit/laurel_shell-proc-trace.log") else {
        return;
    };
    let out = run(&text, true);
    let execs = text
        .lines()
        .filter(|l| l.starts_with("type=EXECVE"))
        .count();
    assert_eq!(
        out.iter().filter(|r| r.event_name == "RunCommand").count(),
        execs
    );
    assert!(
        out.iter()
            .any(|r| r.request_parameters.as_ref().unwrap()["command"] == "grep baz")
    );
    // With execve off, none of them.
    assert!(
        run(&text, false)
            .iter()
            .all(|r| r.event_name != "RunCommand")
    );
}
