//! Auth-log catalog rows -> the expected records, on real lines.
//!
//! Fixtures: `agent/tests/fixtures/auth/` (elastic/beats, Apache-2.0, see its README). Shapes
//! with no permissively licensed real sample are written in the exact format of the tool's
//! source (marked `tool format`). The larger loghub/ServerLog samples are read from
//! `../shared/host-logs` when present.

use std::sync::Arc;

use chrono::TimeZone;
use chrono::Utc;

use super::*;
use crate::sources::testutil::{env, json, rec, shared_sample};

const BEATS_TEST: &str = include_str!("../../../tests/fixtures/auth/beats_system_auth_test.log");
const BEATS_TIMESTAMP: &str =
    include_str!("../../../tests/fixtures/auth/beats_system_auth_timestamp.log");
const BEATS_RHEL7: &str =
    include_str!("../../../tests/fixtures/auth/beats_secure_rhel7_excerpt.log");

fn parser(year: i32) -> AuthLogParser {
    AuthLogParser::new(
        Arc::new(env()),
        Utc.with_ymd_and_hms(year, 12, 31, 0, 0, 0).unwrap(),
    )
}

fn parse_all(p: &mut AuthLogParser, text: &str) -> Vec<Parsed> {
    text.lines().map(|l| p.parse(l)).collect()
}

fn ident(r: &Record) -> (String, String) {
    let u = r.user_identity.as_ref().unwrap();
    (
        u.identity_type.clone().unwrap_or_default(),
        u.arn.clone().or(u.user_name.clone()).unwrap_or_default(),
    )
}

#[test]
fn beats_test_log_every_line() {
    let mut p = parser(2016);
    let out = parse_all(&mut p, BEATS_TEST);
    assert_eq!(out.len(), 10);
    let mut it = out.into_iter();

    // Accepted publickey -> ConsoleLogin Success from the ssh peer.
    let r = rec(it.next().unwrap());
    assert_eq!(r.event_source, "sshd.onprem.internal");
    assert_eq!(
        (r.event_name.as_str(), r.event_type.as_str()),
        ("ConsoleLogin", "AwsConsoleSignIn")
    );
    assert_eq!(r.event_time, "2016-02-21T21:54:44Z");
    assert_eq!(r.source_ip_address.as_deref(), Some("10.0.2.2"));
    assert_eq!(
        r.response_elements,
        Some(json!({"ConsoleLogin": "Success"}))
    );
    assert_eq!(
        ident(&r),
        (
            "IAMUser".into(),
            "arn:aws:iam::123456789012:user/web1/vagrant".into()
        )
    );
    let add = r.additional_event_data.as_ref().unwrap();
    assert_eq!(add["AuthMethod"], "publickey");
    assert_eq!(add["SourcePort"], 63673);
    assert!(add["PublicKey"].as_str().unwrap().starts_with("RSA 39:33"));
    assert_eq!(r.error_code, None);
    assert_eq!(r.read_only, Some(false));
    assert_eq!(r.recipient_account_id.as_deref(), Some("123456789012"));
    assert_eq!(r.aws_region, "onprem-1");

    // Accepted password.
    let r = rec(it.next().unwrap());
    assert_eq!(r.source_ip_address.as_deref(), Some("192.168.33.1"));
    assert_eq!(
        r.additional_event_data.as_ref().unwrap()["AuthMethod"],
        "password"
    );

    // Invalid user -> failure with the name hidden, as AWS does.
    let r = rec(it.next().unwrap());
    assert_eq!(
        r.response_elements,
        Some(json!({"ConsoleLogin": "Failure"}))
    );
    assert_eq!(r.error_code.as_deref(), Some("AccessDenied"));
    assert_eq!(
        r.error_message.as_deref(),
        Some("No username found in supplied account")
    );
    assert_eq!(
        r.user_identity.as_ref().unwrap().user_name.as_deref(),
        Some(crate::sources::host_accounts::HIDDEN_USER)
    );
    assert!(!json(&r).contains("\"test\""));

    // Failed password for an existing user.
    let r = rec(it.next().unwrap());
    assert_eq!(r.error_message.as_deref(), Some("Failed authentication"));
    assert_eq!(r.source_ip_address.as_deref(), Some("216.160.83.57"));
    assert_eq!(
        r.user_identity.as_ref().unwrap().user_name.as_deref(),
        Some("root")
    );

    // sudo -> RunCommand as the assumed role root, session name = the person.
    let r = rec(it.next().unwrap());
    assert_eq!(r.event_source, "sudo.onprem.internal");
    assert_eq!(
        (r.event_name.as_str(), r.event_type.as_str()),
        ("RunCommand", "AwsApiCall")
    );
    assert_eq!(
        ident(&r),
        (
            "AssumedRole".into(),
            "arn:aws:sts::123456789012:assumed-role/root/vagrant".into()
        )
    );
    assert_eq!(
        r.request_parameters,
        Some(
            json!({"command": "/bin/ls", "runAs": "root", "tty": "pts/0", "cwd": "/home/vagrant"})
        )
    );
    assert_eq!(r.user_agent.as_deref(), Some("sudo"));
    let res = &r.resources.as_ref().unwrap()[0];
    assert_eq!(
        res.resource_type.as_deref(),
        Some("Groundtrail::Host::Command")
    );
    assert_eq!(
        res.arn.as_deref(),
        Some("arn:aws:exec:onprem-1:123456789012:command/web1/bin/ls")
    );

    // "Did not receive identification string" is noise.
    assert_eq!(it.next().unwrap(), Parsed::Ignored);

    let r = rec(it.next().unwrap());
    assert_eq!(
        r.request_parameters.as_ref().unwrap()["command"],
        "/bin/cat /var/log/secure"
    );

    // Not in sudoers -> refused RunCommand, the person acted as themselves.
    let r = rec(it.next().unwrap());
    assert_eq!(r.error_code.as_deref(), Some("AccessDenied"));
    assert_eq!(r.error_message.as_deref(), Some("user NOT in sudoers"));
    assert_eq!(ident(&r).0, "IAMUser");
    assert_eq!(
        r.user_identity.as_ref().unwrap().user_name.as_deref(),
        Some("tsg")
    );

    // groupadd / useradd.
    let r = rec(it.next().unwrap());
    assert_eq!(
        (r.event_source.as_str(), r.event_name.as_str()),
        ("iam.onprem.internal", "CreateGroup")
    );
    assert_eq!(
        r.request_parameters,
        Some(json!({"groupName": "apache", "gid": "48"}))
    );
    assert_eq!(
        r.resources.as_ref().unwrap()[0].arn.as_deref(),
        Some("arn:aws:iam::123456789012:group/web1/apache")
    );
    let r = rec(it.next().unwrap());
    assert_eq!(r.event_name, "CreateUser");
    assert_eq!(
        r.request_parameters,
        Some(
            json!({"userName": "apache", "uid": "48", "gid": "48", "home": "/usr/share/httpd", "shell": "/sbin/nologin"})
        )
    );
    assert_eq!(
        r.resources.as_ref().unwrap()[0].resource_type.as_deref(),
        Some("Groundtrail::Host::User")
    );
}

#[test]
fn beats_timestamp_log_rfc3339() {
    let mut p = parser(2019);
    let out = parse_all(&mut p, BEATS_TIMESTAMP);
    let mut it = out.into_iter();
    // sudo -i session (naive ISO time, zone UTC in the test env).
    let r = rec(it.next().unwrap());
    assert_eq!(
        (r.event_source.as_str(), r.event_name.as_str()),
        ("sudo.onprem.internal", "AssumeRole")
    );
    assert_eq!(r.event_time, "2019-06-14T10:40:20Z");
    assert_eq!(
        r.user_identity.as_ref().unwrap().user_name.as_deref(),
        Some("userauth3")
    );
    let re = r.response_elements.as_ref().unwrap();
    assert_eq!(
        re["assumedRoleUser"]["arn"],
        "arn:aws:sts::123456789012:assumed-role/root/userauth3"
    );
    assert_eq!(
        r.resources.as_ref().unwrap()[0].resource_type.as_deref(),
        Some("Groundtrail::Host::Role")
    );
    // `pam: user nobody logged out.` is not one of ours.
    assert_eq!(it.next().unwrap(), Parsed::Ignored);
}

#[test]
fn beats_rhel7_excerpt_session() {
    let mut p = parser(2017);
    let out = parse_all(&mut p, BEATS_RHEL7);
    let names: Vec<String> = out
        .iter()
        .map(|p| match p {
            Parsed::Record(r) => format!("{}:{}", r.event_name, r.error_code.is_some()),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        names,
        [
            "ConsoleLogin:true",
            "ConsoleLogin:false",
            "Ignored",
            "Ignored",
            "Ignored",
            "Ignored",
            "Ignored",
            "Logout:false",
            "ConsoleLogin:true",
            "Ignored",
            "Ignored",
            "Ignored",
            "Ignored",
        ]
    );
    let logout = rec(out[7].clone());
    assert_eq!(
        logout.user_identity.as_ref().unwrap().user_name.as_deref(),
        Some("drewr")
    );
    assert_eq!(logout.event_type, "AwsConsoleSignIn");
}

/// Lines in the exact format of the tools' sources (shadow-utils, util-linux su, sudo, pam,
/// login), for shapes with no permissively licensed real sample. `tool format`.
#[test]
fn tool_format_rows() {
    let e = env();
    let t = Utc.with_ymd_and_hms(2024, 3, 6, 8, 0, 0).unwrap();
    let m = |prog: &str, msg: &str| parse_message(&e, prog, Some(1), msg, t);
    let check = |p: Parsed, source: &str, name: &str, principal: &str| -> Record {
        let r = rec(p);
        assert_eq!(r.event_source, format!("{source}.onprem.internal"), "{r:?}");
        assert_eq!(r.event_name, name);
        let u = r.user_identity.as_ref().unwrap();
        let who = u
            .session_context
            .as_ref()
            .and_then(|s| s.source_identity.clone())
            .or(u.user_name.clone())
            .unwrap();
        assert_eq!(who, principal, "{r:?}");
        r
    };

    // sudo: wrong password three times (sudo's own line) and pam's auth failure.
    let r = check(
        m(
            "sudo",
            "   alice : 3 incorrect password attempts ; TTY=pts/1 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id",
        ),
        "sudo",
        "RunCommand",
        "alice",
    );
    assert_eq!(
        r.error_message.as_deref(),
        Some("3 incorrect password attempts")
    );
    let r = check(
        m(
            "sudo",
            "pam_unix(sudo:auth): authentication failure; logname=alice uid=1000 euid=0 tty=/dev/pts/1 ruser=alice rhost=  user=alice",
        ),
        "sudo",
        "AssumeRole",
        "alice",
    );
    assert_eq!(r.error_code.as_deref(), Some("AccessDenied"));
    // Newer sudo with a GROUP and a command containing ' ; '.
    let r = check(
        m(
            "sudo",
            "alice : TTY=pts/0 ; PWD=/srv ; USER=postgres ; GROUP=postgres ; COMMAND=/bin/sh -c echo a ; echo b",
        ),
        "sudo",
        "RunCommand",
        "alice",
    );
    assert_eq!(
        r.request_parameters.as_ref().unwrap()["command"],
        "/bin/sh -c echo a ; echo b"
    );
    assert_eq!(
        r.request_parameters.as_ref().unwrap()["runAsGroup"],
        "postgres"
    );
    assert!(
        r.user_identity
            .as_ref()
            .unwrap()
            .arn
            .as_deref()
            .unwrap()
            .ends_with("assumed-role/postgres/alice")
    );
    // pam session with the newer `user(uid=N) by name(uid=N)` spelling.
    check(
        m(
            "sudo",
            "pam_unix(sudo:session): session opened for user root(uid=0) by alice(uid=1000)",
        ),
        "sudo",
        "AssumeRole",
        "alice",
    );
    assert_eq!(
        m(
            "sudo",
            "pam_unix(sudo:session): session closed for user root"
        ),
        Parsed::Ignored
    );

    // su (util-linux): success and failure; pam's session line is the duplicate.
    let r = check(
        m("su", "(to root) alice on pts/0"),
        "su",
        "AssumeRole",
        "alice",
    );
    assert_eq!(r.request_parameters.as_ref().unwrap()["tty"], "pts/0");
    assert!(r.error_code.is_none());
    let r = check(
        m("su", "FAILED SU (to root) alice on pts/0"),
        "su",
        "AssumeRole",
        "alice",
    );
    assert_eq!(r.error_code.as_deref(), Some("AccessDenied"));
    assert_eq!(
        m(
            "su",
            "pam_unix(su:session): session opened for user margo(uid=1000) by root(uid=0)"
        ),
        Parsed::Ignored
    );
    // su (shadow-utils).
    check(
        m("su", "Successful su for ben by root"),
        "su",
        "AssumeRole",
        "root",
    );
    let r = check(
        m("su", "FAILED su for root by ben"),
        "su",
        "AssumeRole",
        "ben",
    );
    assert!(r.error_code.is_some());
    assert_eq!(m("su", "+ ??? root:ben"), Parsed::Ignored);

    // Console login.
    let r = check(
        m(
            "login",
            "pam_unix(login:session): session opened for user root(uid=0) by LOGIN(uid=0)",
        ),
        "sshd",
        "ConsoleLogin",
        "root",
    );
    assert_eq!(r.user_agent.as_deref(), Some("login"));
    let r = check(
        m(
            "login",
            "FAILED LOGIN (1) on '/dev/tty1' FOR 'root', Authentication failure",
        ),
        "sshd",
        "ConsoleLogin",
        "root",
    );
    assert!(r.error_code.is_some());

    // OpenSSH 9.8+ logs as sshd-session; `Disconnected from user` is folded into Logout.
    check(
        m(
            "sshd-session",
            "Accepted publickey for margo from 10.10.15.13 port 35916 ssh2: ECDSA SHA256:ui/tjroDv1J8dgCcGNIaAr3QIk9BBLFDJVwiH9emcSQ",
        ),
        "sshd",
        "ConsoleLogin",
        "margo",
    );
    assert_eq!(
        m(
            "sshd",
            "Disconnected from user margo 10.10.15.13 port 40890"
        ),
        Parsed::Ignored
    );

    // shadow-utils account tools.
    let rows: &[(&str, &str, &str, &str)] = &[
        (
            "useradd",
            "new user: name=alice, UID=1001, GID=1001, home=/home/alice, shell=/bin/bash, from=/dev/pts/0",
            "CreateUser",
            "root",
        ),
        (
            "useradd",
            "add 'alice' to group 'sudo'",
            "AddUserToGroup",
            "root",
        ),
        (
            "useradd",
            "failed adding user 'alice', data deleted",
            "CreateUser",
            "root",
        ),
        ("userdel", "delete user 'alice'", "DeleteUser", "root"),
        (
            "userdel",
            "removed group 'alice' owned by 'alice'",
            "DeleteGroup",
            "root",
        ),
        (
            "userdel",
            "delete 'alice' from group 'sudo'",
            "RemoveUserFromGroup",
            "root",
        ),
        (
            "usermod",
            "change user 'varnish' password",
            "UpdateLoginProfile",
            "root",
        ),
        (
            "usermod",
            "lock user 'alice' password",
            "UpdateLoginProfile",
            "root",
        ),
        (
            "usermod",
            "change user 'alice' shell from '/bin/sh' to '/bin/bash'",
            "UpdateUser",
            "root",
        ),
        (
            "usermod",
            "change user name 'alice' to 'alicia'",
            "UpdateUser",
            "root",
        ),
        (
            "usermod",
            "add 'alice' to group 'docker'",
            "AddUserToGroup",
            "root",
        ),
        (
            "groupadd",
            "new group: name=docker, GID=999",
            "CreateGroup",
            "root",
        ),
        ("groupdel", "group 'docker' removed", "DeleteGroup", "root"),
        ("groupdel", "remove group `docker'", "DeleteGroup", "root"),
        (
            "gpasswd",
            "user alice added by root to group docker",
            "AddUserToGroup",
            "root",
        ),
        (
            "gpasswd",
            "user alice removed by ops from group docker",
            "RemoveUserFromGroup",
            "ops",
        ),
        (
            "gpasswd",
            "password of group docker changed by root",
            "UpdateGroup",
            "root",
        ),
        (
            "gpasswd",
            "members of group docker set by root to alice,bob",
            "UpdateGroup",
            "root",
        ),
        (
            "gpasswd",
            "access to group docker restricted by root",
            "UpdateGroup",
            "root",
        ),
        (
            "passwd",
            "pam_unix(passwd:chauthtok): password changed for margo",
            "UpdateLoginProfile",
            "root",
        ),
        (
            "passwd",
            "password for `alice' changed by `root'",
            "UpdateLoginProfile",
            "root",
        ),
        (
            "chpasswd",
            "pam_unix(chpasswd:chauthtok): password changed for alice",
            "UpdateLoginProfile",
            "root",
        ),
        (
            "chage",
            "changed password expiry for haproxy",
            "UpdateLoginProfile",
            "root",
        ),
        (
            "chfn",
            "changed user 'margo' information",
            "UpdateUser",
            "root",
        ),
    ];
    for (prog, msg, name, who) in rows {
        let r = check(m(prog, msg), "iam", name, who);
        assert_eq!(r.user_agent.as_deref(), Some(*prog));
        assert!(!r.resources.as_ref().unwrap().is_empty());
    }
    let r = rec(m("useradd", "add 'alice' to group 'sudo'"));
    assert_eq!(
        r.request_parameters,
        Some(json!({"userName": "alice", "groupName": "sudo"}))
    );
    assert_eq!(r.resources.as_ref().unwrap().len(), 2);
    // The duplicates are recognized, not recorded.
    for (prog, msg) in [
        (
            "groupadd",
            "group added to /etc/group: name=docker, GID=999",
        ),
        ("groupadd", "group added to /etc/gshadow: name=docker"),
        ("groupdel", "group 'docker' removed from /etc/group"),
        ("useradd", "add 'alice' to shadow group 'sudo'"),
        ("userdel", "removed shadow group 'alice' owned by 'alice'"),
    ] {
        assert_eq!(m(prog, msg), Parsed::Ignored, "{msg}");
    }
}

#[test]
fn malformed_and_truncated_lines_are_counted_not_fatal() {
    let lines = [
        "",
        "Feb 21 21:5",
        "Feb 21 21:54:44 localhost",
        "\u{0}\u{1}binary\u{ff}",
        "Feb 21 21:54:44 localhost sshd[3402]: Accepted publickey for vagrant fr",
        "Feb 21 21:54:44 localhost sshd[3402]: Accepted",
        "Feb 23 00:08:48 localhost sudo: vagrant : TTY=pts/1 ; PWD=/home/vagrant ; USER=ro",
        "Feb 31 00:08:48 localhost sudo: vagrant : TTY=pts/1 ; COMMAND=/bin/ls",
        "Feb 21 21:54:44 localhost sshd[x]: Accepted password for a from 1.2.3.4 port 1 ssh2",
        "Feb 21 21:54:44 localhost sshd[1]: message repeated lots times: [ x]",
    ];
    let mut p = parser(2016);
    for l in lines {
        assert_eq!(p.parse(l), Parsed::Malformed, "{l:?}");
    }
    assert_eq!(
        p.parse("Feb 21 21:54:44 localhost sshd[1]: Something sshd never said"),
        Parsed::Unrecognized
    );
    // Through the handler: counted per outcome.
    let before = STATS.snapshot();
    let dir = tempfile::tempdir().unwrap();
    let mut h = handler(Arc::new(env()), &dir.path().join("none"));
    let id = crate::sources::tail::FileId {
        dev: 1,
        ino: 2,
        head_len: 1,
        head: "00".into(),
    };
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let at = crate::sources::tail::LineRef {
            host: "web1",
            file: &id,
            offset: i as u64,
        };
        h.line(l.as_bytes(), at, &mut out);
    }
    assert!(out.is_empty());
    let after = STATS.snapshot();
    assert!(after.malformed - before.malformed >= lines.len() as u64);
}

#[test]
fn shared_loghub_openssh() {
    let Some(text) = shared_sample("auth/loghub_OpenSSH_2k.log") else {
        return;
    };
    let mut p = parser(2017);
    let out = parse_all(&mut p, &text);
    let count = |pred: &dyn Fn(&Parsed) -> bool| out.iter().filter(|p| pred(p)).count();
    assert_eq!(count(&|p| *p == Parsed::Malformed), 0);
    let expected_logins = text
        .lines()
        .filter(|l| {
            (l.contains("]: Failed ") && !l.contains("]: Failed none "))
                || l.contains("]: Invalid user ")
                || l.contains("]: Accepted ")
                || l.contains("]: message repeated")
        })
        .count();
    let logins = count(&|p| matches!(p, Parsed::Record(r) if r.event_name == "ConsoleLogin"));
    assert_eq!(logins, expected_logins);
    let unrecognized = count(&|p| *p == Parsed::Unrecognized);
    eprintln!(
        "loghub OpenSSH: {logins} logins, {unrecognized} unrecognized of {}",
        out.len()
    );
    assert!(
        unrecognized * 50 < out.len(),
        "too many unrecognized: {unrecognized}"
    );
    for p in out {
        if let Parsed::Record(_) = p {
            rec(p);
        }
    }
}

#[test]
fn shared_serverlog_ubuntu() {
    let Some(text) = shared_sample("auth/serverlog_ubuntu1404_auth.log") else {
        return;
    };
    let mut p = parser(2016);
    let out = parse_all(&mut p, &text);
    let by_name = |n: &str, failed: bool| {
        out.iter()
            .filter(|p| matches!(p, Parsed::Record(r) if r.event_name == n && r.error_code.is_some() == failed))
            .count()
    };
    assert_eq!(by_name("ConsoleLogin", false), 328);
    assert_eq!(by_name("Logout", false), 328);
    assert!(by_name("ConsoleLogin", true) > 27);
    assert_eq!(out.iter().filter(|p| **p == Parsed::Malformed).count(), 0);
    let root_login = out
        .iter()
        .find_map(|p| match p {
            Parsed::Record(r) if r.event_name == "ConsoleLogin" && r.error_code.is_none() => {
                Some(r)
            }
            _ => None,
        })
        .unwrap();
    assert!(root_login.event_time.starts_with("2016-02-27T"));
}

#[test]
fn shared_loghub_linux_old_pam_format() {
    let Some(text) = shared_sample("auth/loghub_Linux_2k.log") else {
        return;
    };
    let mut p = parser(2005);
    let out = parse_all(&mut p, &text);
    let n = |name: &str, src: &str| {
        out.iter()
            .filter(|p| matches!(p, Parsed::Record(r) if r.event_name == name && r.event_source.starts_with(src)))
            .count()
    };
    let pam_failures = text
        .lines()
        .filter(|l| l.contains("sshd(pam_unix)") && l.contains("authentication failure;"))
        .count();
    assert_eq!(n("ConsoleLogin", "sshd") - n_success(&out), pam_failures);
    let su_sessions = text
        .lines()
        .filter(|l| l.contains("su(pam_unix)") && l.contains("session opened"))
        .count();
    assert_eq!(n("AssumeRole", "su"), su_sessions);
    assert!(su_sessions > 0);
}

fn n_success(out: &[Parsed]) -> usize {
    out.iter()
        .filter(|p| matches!(p, Parsed::Record(r) if r.event_name == "ConsoleLogin" && r.error_code.is_none()))
        .count()
}
