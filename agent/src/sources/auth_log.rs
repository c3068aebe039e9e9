//! The syslog auth file: `/var/log/auth.log` (Debian/Ubuntu) or `/var/log/secure` (RHEL).
//!
//! Several programs log one action on several lines (sshd's own line and pam's; su's own line
//! and pam's session line). For each action one line is *canonical* and becomes the record; the
//! others are recognized and ignored, so an action is in the trail once. The choice, per
//! program (see `docs/sources.md` for every shape):
//!
//! - sshd: `Accepted …` / `Failed …` / `Invalid user …` (ConsoleLogin), pam's `session closed`
//!   (Logout). pam's auth failure is a failure record only in the old `sshd(pam_unix)` format.
//!   One failed attempt is one record even where sshd (and pam) write several lines for it:
//!   `Invalid user X` followed by `Failed password for invalid user X` of the same pid, or the
//!   old pam failure followed by sshd's `Failed`, are merged by [`sshd_attempts`]; `Failed none`
//!   (the client asking which methods exist) is no attempt of its own.
//! - sudo: its own `user : TTY=… ; COMMAND=…` line (RunCommand, with an error when refused),
//!   pam's `session opened` (AssumeRole) and pam's auth failure (AssumeRole, failed).
//! - su: its own `(to X) Y on tty`, `FAILED SU (to X) …`, `Successful su for X by Y`,
//!   `FAILED su for X by Y` (AssumeRole); pam's session line only in the old `su(pam_unix)`
//!   format.
//! - login: pam's `session opened`/`closed`, `FAILED LOGIN` (ConsoleLogin, Logout).
//! - shadow-utils and pam for accounts: useradd, userdel, usermod, groupadd, groupdel,
//!   gpasswd, passwd, chpasswd, chage, chfn (`iam.<domain>`).
//!
//! Principals: the line's actor where it names one (sshd's user, sudo's invoking user, su's
//! `by`, gpasswd's `by`); account tools that do not say who ran them are attributed to `root`
//! (they need root); auditd, when enabled, has the real login uid of the same action.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use groundtrail_common::Record;
use serde_json::{Map, Value, json};

use super::sshd_attempts::{self, SshdLine};
use super::syslog::{self, YearTracker};
use super::{Env, Parsed, SourceStats, truncate};
use crate::sources::tail::LineHandler;

/// Counters of this source.
pub static STATS: SourceStats = SourceStats::new();

/// Parses auth-log lines, keeping the year context between lines.
pub struct AuthLogParser {
    env: Arc<Env>,
    years: YearTracker,
}

impl AuthLogParser {
    /// `reference`: the instant classic timestamps are placed near (now for a live file; the
    /// file's modification time when replaying an old one).
    pub fn new(env: Arc<Env>, reference: DateTime<Utc>) -> AuthLogParser {
        AuthLogParser {
            env,
            years: YearTracker::new(reference),
        }
    }

    /// One line -> what it is, on its own (the merge of sshd's lines of one attempt is
    /// [`sshd_attempts`]'s).
    pub fn parse(&mut self, line: &str) -> Parsed {
        self.parse_with_role(line).0
    }

    /// [`AuthLogParser::parse`], plus what the merge of [`sshd_attempts`] needs (time, pid and
    /// the line's part in an sshd connection); `None` for a line that does not parse.
    pub fn parse_with_role(&mut self, line: &str) -> (Parsed, Option<SshdLine>) {
        let Some(l) = syslog::parse(line) else {
            return (Parsed::Malformed, None);
        };
        let Some(time) = self.years.resolve(l.time, self.env.zone) else {
            return (Parsed::Malformed, None);
        };
        let parsed = parse_message(&self.env, l.program, l.pid, l.message, time);
        let facts = SshdLine {
            pid: l.pid,
            role: sshd_attempts::role(l.program, l.message),
            time,
        };
        (parsed, Some(facts))
    }
}

/// The handler the agent runs on the auth file: the parser, with sshd's lines of one attempt
/// merged into one record ([`sshd_attempts::AttemptHandler`]).
pub fn handler(env: Arc<Env>, path: &Path) -> Box<dyn LineHandler> {
    // The year context of a replayed file is its modification time; of a live one, now.
    let reference = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(DateTime::<Utc>::from)
        .unwrap_or_else(|_| Utc::now());
    Box::new(sshd_attempts::AttemptHandler::new(
        AuthLogParser::new(env, reference),
        &STATS,
    ))
}

/// A message of `program` (syslog tag or journald `SYSLOG_IDENTIFIER`) -> what it is. Shared
/// by the auth log and journald.
pub fn parse_message(
    env: &Env,
    program: &str,
    pid: Option<u32>,
    msg: &str,
    time: DateTime<Utc>,
) -> Parsed {
    let (prog, old_pam) = match program.strip_suffix("(pam_unix)") {
        Some(p) => (p, true),
        None => (program, false),
    };
    let c = Ctx {
        env,
        pid,
        time,
        old_pam,
    };
    match prog {
        "sshd" | "sshd-session" | "sshd-auth" => c.sshd(msg),
        "sudo" => c.sudo(msg),
        "su" => c.su(msg),
        "login" => c.login(msg),
        "useradd" | "userdel" | "usermod" | "groupadd" | "groupdel" | "groupmod" | "gpasswd"
        | "passwd" | "chpasswd" | "chage" | "chfn" | "chsh" | "newusers" => c.account(prog, msg),
        _ => Parsed::Ignored,
    }
}

struct Ctx<'a> {
    env: &'a Env,
    pid: Option<u32>,
    time: DateTime<Utc>,
    old_pam: bool,
}

/// `key=value` members of a pam line (`logname= uid=0 euid=0 tty=ssh ruser= rhost=1.2.3.4 user=root`).
fn pam_kv<'a>(s: &'a str, key: &str) -> Option<&'a str> {
    s.split_whitespace().find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key && !v.is_empty()).then_some(v)
    })
}

/// `name(uid=N)` or `name` or `(uid=N)` -> the name (uid looked up when no name).
fn pam_user(env: &Env, s: &str) -> Option<String> {
    let s = s.trim();
    let (name, rest) = match s.find('(') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    if !name.is_empty() {
        return Some(name.to_string());
    }
    let uid: u32 = rest
        .strip_prefix("(uid=")?
        .strip_suffix(')')?
        .parse()
        .ok()?;
    Some(env.passwd.name_or_uid(uid))
}

/// `Xxx for USER from IP port N ssh2[: KEY FP]` after the method word.
struct SshAttempt<'a> {
    user: &'a str,
    invalid: bool,
    ip: &'a str,
    port: Option<u16>,
    key: Option<&'a str>,
}

fn ssh_attempt(rest: &str) -> Option<SshAttempt<'_>> {
    let rest = rest.strip_prefix("for ")?;
    let (invalid, rest) = match rest.strip_prefix("invalid user ") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    // User names may contain spaces in attacks; the anchor is the last " from ".
    let (user, rest) = rest.rsplit_once(" from ")?;
    let mut it = rest.split_whitespace();
    let ip = it.next()?;
    let mut port = None;
    if it.next() == Some("port") {
        port = it.next().and_then(|p| p.parse().ok());
    }
    let key = rest.split_once(": ").map(|(_, k)| k.trim());
    Some(SshAttempt {
        user,
        invalid,
        ip,
        port,
        key,
    })
}

impl Ctx<'_> {
    fn rec(&self, service: &str, name: &str, event_type: &str, agent: &str) -> Record {
        let mut r = self.env.record(service, name, event_type, self.time);
        r.user_agent = Some(agent.to_string());
        r
    }

    fn login_record(
        &self,
        user: Option<&str>,
        ok: bool,
        ip: Option<&str>,
        agent: &str,
        extra: Map<String, Value>,
    ) -> Parsed {
        let ids = &self.env.host;
        let mut r = self.rec("sshd", "ConsoleLogin", "AwsConsoleSignIn", agent);
        r.user_identity = Some(match user {
            Some(u) => ids.user(u),
            None => ids.hidden_user(),
        });
        if let Some(ip) = ip {
            r.source_ip_address = Some(ip.to_string());
        }
        r.response_elements = Some(json!({"ConsoleLogin": if ok {"Success"} else {"Failure"}}));
        let mut add = Map::new();
        add.insert(
            "LoginTo".into(),
            json!(format!("ssh://{}", self.env.host.host)),
        );
        add.insert("MobileVersion".into(), json!("No"));
        add.insert("MFAUsed".into(), json!("No"));
        add.extend(extra);
        if let Some(pid) = self.pid {
            add.insert("pid".into(), json!(pid));
        }
        r.additional_event_data = Some(Value::Object(add));
        if !ok {
            r.error_code = Some("AccessDenied".into());
            r.error_message = Some(
                if user.is_some() {
                    "Failed authentication"
                } else {
                    "No username found in supplied account"
                }
                .into(),
            );
        }
        if let Some(u) = user {
            r.resources = Some(vec![self.env.host.user_resource(u)]);
        }
        Parsed::Record(Box::new(r))
    }

    fn logout(&self, user: &str, agent: &str) -> Parsed {
        let mut r = self.rec("sshd", "Logout", "AwsConsoleSignIn", agent);
        r.user_identity = Some(self.env.host.user(user));
        r.resources = Some(vec![self.env.host.user_resource(user)]);
        Parsed::Record(Box::new(r))
    }

    fn sshd(&self, msg: &str) -> Parsed {
        if let Some(inner) = msg.strip_prefix("message repeated ") {
            // `message repeated 2 times: [ Failed password for root from … ssh2]`
            let Some((n, rest)) = inner.split_once(" times: [") else {
                return Parsed::Malformed;
            };
            let Ok(n) = n.parse::<u64>() else {
                return Parsed::Malformed;
            };
            let inner = rest.trim_start().trim_end_matches(']');
            return match self.sshd(inner) {
                Parsed::Record(mut r) => {
                    if let Some(Value::Object(m)) = r.additional_event_data.as_mut() {
                        m.insert("repeatCount".into(), json!(n));
                    }
                    Parsed::Record(r)
                }
                other => other,
            };
        }
        if msg.starts_with("Accepted key ") || msg.starts_with("Accepted certificate ") {
            // LogLevel VERBOSE detail of the login that follows.
            return Parsed::Ignored;
        }
        if let Some(rest) = msg.strip_prefix("Accepted") {
            let Some((method, rest)) = rest.trim_start().split_once(' ') else {
                return Parsed::Malformed;
            };
            let Some(a) = ssh_attempt(rest) else {
                return Parsed::Malformed;
            };
            let mut extra = Map::new();
            extra.insert("AuthMethod".into(), json!(method));
            if let Some(p) = a.port {
                extra.insert("SourcePort".into(), json!(p));
            }
            if let Some(k) = a.key {
                extra.insert("PublicKey".into(), json!(truncate(k, 512)));
            }
            return self.login_record(Some(a.user), true, Some(a.ip), "sshd", extra);
        }
        if msg.starts_with("Failed none ") {
            // The client asking which methods exist (the protocol's first request), not a
            // credential tried: part of the connection's attempt, not one of its own.
            return Parsed::Ignored;
        }
        if let Some(rest) = msg.strip_prefix("Failed ") {
            let Some((method, rest)) = rest.split_once(' ') else {
                return Parsed::Malformed;
            };
            let Some(a) = ssh_attempt(rest) else {
                return Parsed::Malformed;
            };
            let mut extra = Map::new();
            extra.insert("AuthMethod".into(), json!(method));
            if let Some(p) = a.port {
                extra.insert("SourcePort".into(), json!(p));
            }
            let user = (!a.invalid).then_some(a.user);
            return self.login_record(user, false, Some(a.ip), "sshd", extra);
        }
        if let Some(rest) = msg.strip_prefix("Invalid user ") {
            // `Invalid user test from 10.0.2.2[ port 4444]`
            let Some((_user, rest)) = rest.rsplit_once(" from ") else {
                return Parsed::Malformed;
            };
            let mut it = rest.split_whitespace();
            let Some(ip) = it.next() else {
                return Parsed::Malformed;
            };
            let mut extra = Map::new();
            if it.next() == Some("port")
                && let Some(p) = it.next().and_then(|p| p.parse::<u16>().ok())
            {
                extra.insert("SourcePort".into(), json!(p));
            }
            extra.insert("AuthMethod".into(), json!("none"));
            return self.login_record(None, false, Some(ip), "sshd", extra);
        }
        if let Some(rest) = msg
            .strip_prefix("pam_unix(sshd:session): ")
            .or_else(|| self.old_pam.then_some(msg))
        {
            if let Some(u) = rest.strip_prefix("session closed for user ") {
                return self.logout(u.trim(), "sshd");
            }
            if let Some(r) = rest.strip_prefix("session opened for user ") {
                if self.old_pam {
                    // Old RHEL: pam's line is the only trace of the login.
                    let user = r.split(" by ").next().and_then(|u| pam_user(self.env, u));
                    return match user {
                        Some(u) => self.login_record(Some(&u), true, None, "sshd", Map::new()),
                        None => Parsed::Malformed,
                    };
                }
                return Parsed::Ignored;
            }
        }
        if self.old_pam {
            if let Some(kv) = msg.strip_prefix("authentication failure; ") {
                let user = pam_kv(kv, "user");
                let rhost = pam_kv(kv, "rhost");
                return self.login_record(user, false, rhost, "sshd", Map::new());
            }
            if msg.starts_with("check pass;") {
                return Parsed::Ignored;
            }
            return Parsed::Unrecognized;
        }
        const NOISE: &[&str] = &[
            "pam_unix(sshd:auth)",
            "pam_unix(sshd:account)",
            "pam_succeed_if(",
            "pam_systemd(",
            "PAM ",
            "input_userauth_request",
            "Received disconnect",
            "Disconnected from",
            "Disconnecting",
            "Connection closed",
            "Connection reset",
            "Connection from",
            "Close session",
            "Did not receive identification",
            "reverse mapping checking",
            "Address ",
            "Server listening",
            "Received signal",
            "Exiting on signal",
            "error:",
            "fatal:",
            "warning:",
            "Bad protocol version",
            "Protocol major versions differ",
            "Postponed ",
            "Starting session",
            "User child is on pid",
            "Transferred:",
            "subsystem request",
            "Unable to negotiate",
            "banner exchange",
            "Timeout before authentication",
            "maximum authentication attempts",
            "Too many authentication failures",
            "Authorized to ",
            "Nasty PTR record",
            "drop connection",
            "srclimit_penalise",
            "userauth_",
            "debug",
            "error: ",
            "Corrupted MAC",
            "Failed none",
            "Set /proc/self/oom_score_adj",
            "Invalid user",
            "ssh_dispatch_run_fatal",
            "kex_",
            "Read error",
            "Bad packet",
            "Disconnected",
            "Remote:",
            "Accepted key",
            "Certificate invalid",
            "AuthorizedKeysCommand",
            "pam_",
        ];
        if NOISE.iter().any(|p| msg.starts_with(p)) {
            return Parsed::Ignored;
        }
        Parsed::Unrecognized
    }

    /// `AssumeRole` by `person` into `target`.
    fn assume_role(
        &self,
        service: &str,
        person: &str,
        target: Option<&str>,
        error: Option<&str>,
        params: Map<String, Value>,
    ) -> Parsed {
        let ids = &self.env.host;
        let mut r = self.rec(service, "AssumeRole", "AwsApiCall", service);
        r.user_identity = Some(ids.user(person));
        let mut p = Map::new();
        if let Some(t) = target {
            p.insert(
                "roleArn".into(),
                json!(format!(
                    "arn:{}:iam::{}:role/{}/{}",
                    ids.partition, ids.account_id, ids.host, t
                )),
            );
        }
        p.insert("roleSessionName".into(), json!(person));
        p.extend(params);
        r.request_parameters = Some(Value::Object(p));
        match error {
            Some(e) => {
                r.error_code = Some("AccessDenied".into());
                r.error_message = Some(truncate(e, 1024));
            }
            None => {
                if let Some(t) = target {
                    let a = ids.assumed(person, t);
                    r.response_elements = Some(json!({
                        "assumedRoleUser": {
                            "assumedRoleId": a.principal_id,
                            "arn": a.arn,
                        }
                    }));
                }
            }
        }
        if let Some(t) = target {
            r.resources = Some(vec![ids.role_resource(t)]);
        }
        Parsed::Record(Box::new(r))
    }

    fn sudo(&self, msg: &str) -> Parsed {
        if let Some(rest) = msg
            .strip_prefix("pam_unix(sudo:session): ")
            .or_else(|| msg.strip_prefix("pam_unix(sudo-i:session): "))
        {
            if let Some(r) = rest.strip_prefix("session opened for user ") {
                let Some((target, by)) = r.split_once(" by ") else {
                    return Parsed::Malformed;
                };
                let Some(target) = pam_user(self.env, target) else {
                    return Parsed::Malformed;
                };
                let Some(person) = pam_user(self.env, by) else {
                    return Parsed::Malformed;
                };
                return self.assume_role("sudo", &person, Some(&target), None, Map::new());
            }
            if rest.starts_with("session closed for user ") {
                return Parsed::Ignored;
            }
            return Parsed::Unrecognized;
        }
        if let Some(kv) = msg
            .strip_prefix("pam_unix(sudo:auth): authentication failure; ")
            .or_else(|| msg.strip_prefix("pam_unix(sudo-i:auth): authentication failure; "))
        {
            let Some(person) = pam_kv(kv, "ruser")
                .or_else(|| pam_kv(kv, "logname"))
                .or_else(|| pam_kv(kv, "user"))
            else {
                return Parsed::Malformed;
            };
            let mut p = Map::new();
            if let Some(t) = pam_kv(kv, "tty") {
                p.insert("tty".into(), json!(t));
            }
            return self.assume_role("sudo", person, None, Some("authentication failure"), p);
        }
        if msg.starts_with("pam_") {
            return Parsed::Ignored;
        }
        // `alice : [error ; ]TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/ls`
        let Some((user, rest)) = msg.split_once(" : ") else {
            return Parsed::Unrecognized;
        };
        let user = user.trim();
        if user.is_empty() || user.contains(' ') {
            return Parsed::Unrecognized;
        }
        let mut error = None;
        let mut fields: Vec<(&str, &str)> = Vec::new();
        let mut command = None;
        for part in rest.split(" ; ") {
            match part.split_once('=') {
                Some(("COMMAND", _)) => {
                    // The command may itself contain " ; ": take everything that is left.
                    let start = part.as_ptr() as usize - rest.as_ptr() as usize;
                    command = Some(&rest[start + "COMMAND=".len()..]);
                    break;
                }
                Some((k, v)) if k.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') => {
                    fields.push((k, v))
                }
                _ if fields.is_empty() && error.is_none() => error = Some(part.trim()),
                _ => {}
            }
        }
        let Some(command) = command else {
            return Parsed::Malformed;
        };
        let get = |k: &str| fields.iter().find(|(fk, _)| *fk == k).map(|(_, v)| *v);
        let target = get("USER").unwrap_or("root");
        let ids = &self.env.host;
        let mut r = self.rec("sudo", "RunCommand", "AwsApiCall", "sudo");
        r.user_identity = Some(ids.assumed(user, target));
        let mut p = Map::new();
        p.insert("command".into(), json!(truncate(command, 16 * 1024)));
        p.insert("runAs".into(), json!(target));
        if let Some(g) = get("GROUP") {
            p.insert("runAsGroup".into(), json!(g));
        }
        if let Some(t) = get("TTY") {
            p.insert("tty".into(), json!(t));
        }
        if let Some(d) = get("PWD") {
            p.insert("cwd".into(), json!(d));
        }
        if let Some(e) = get("ENV") {
            p.insert("env".into(), json!(e));
        }
        r.request_parameters = Some(Value::Object(p));
        if let Some(e) = error {
            r.error_code = Some("AccessDenied".into());
            r.error_message = Some(truncate(e, 1024));
            // A refused sudo never became the target: the person acted as themselves.
            r.user_identity = Some(ids.user(user));
        }
        let exe = command.split_whitespace().next().unwrap_or(command);
        r.resources = Some(vec![ids.command_resource(exe)]);
        Parsed::Record(Box::new(r))
    }

    fn su(&self, msg: &str) -> Parsed {
        // util-linux: `(to root) alice on pts/0`, `FAILED SU (to root) alice on pts/0`
        let (failed, body) = match msg.strip_prefix("FAILED SU ") {
            Some(b) => (true, b),
            None => (false, msg),
        };
        if let Some(b) = body.strip_prefix("(to ") {
            let Some((target, rest)) = b.split_once(") ") else {
                return Parsed::Malformed;
            };
            let (person, tty) = match rest.rsplit_once(" on ") {
                Some((p, t)) => (p, Some(t)),
                None => (rest, None),
            };
            let mut p = Map::new();
            if let Some(t) = tty {
                p.insert("tty".into(), json!(t));
            }
            let err = failed.then_some("authentication failure");
            return self.assume_role("su", person.trim(), Some(target), err, p);
        }
        // shadow-utils: `Successful su for root by alice`, `FAILED su for root by alice`
        for (prefix, failed) in [("Successful su for ", false), ("FAILED su for ", true)] {
            if let Some(b) = msg.strip_prefix(prefix) {
                let Some((target, person)) = b.split_once(" by ") else {
                    return Parsed::Malformed;
                };
                let err = failed.then_some("authentication failure");
                return self.assume_role("su", person.trim(), Some(target), err, Map::new());
            }
        }
        if let Some(rest) = msg
            .strip_prefix("pam_unix(su:session): ")
            .or_else(|| msg.strip_prefix("pam_unix(su-l:session): "))
            .or_else(|| self.old_pam.then_some(msg))
        {
            if let Some(r) = rest.strip_prefix("session opened for user ") {
                if !self.old_pam {
                    return Parsed::Ignored;
                }
                let Some((target, by)) = r.split_once(" by ") else {
                    return Parsed::Malformed;
                };
                let (Some(target), Some(person)) =
                    (pam_user(self.env, target), pam_user(self.env, by))
                else {
                    return Parsed::Malformed;
                };
                return self.assume_role("su", &person, Some(&target), None, Map::new());
            }
            if rest.starts_with("session closed for user ") {
                return Parsed::Ignored;
            }
            if self.old_pam {
                return Parsed::Unrecognized;
            }
        }
        // `+ pts/0 alice:root`, `- pts/0 alice:root`: shadow su's second line, ignored.
        if (msg.starts_with("+ ") || msg.starts_with("- ")) && msg.contains(':') {
            return Parsed::Ignored;
        }
        if msg.starts_with("pam_") {
            return Parsed::Ignored;
        }
        Parsed::Unrecognized
    }

    fn login(&self, msg: &str) -> Parsed {
        if let Some(rest) = msg.strip_prefix("pam_unix(login:session): ") {
            if let Some(r) = rest.strip_prefix("session opened for user ") {
                let user = r.split(" by ").next().and_then(|u| pam_user(self.env, u));
                let Some(user) = user else {
                    return Parsed::Malformed;
                };
                let mut extra = Map::new();
                extra.insert("AuthMethod".into(), json!("console"));
                return self.login_record(Some(&user), true, None, "login", extra);
            }
            if let Some(u) = rest.strip_prefix("session closed for user ") {
                return self.logout(u.trim(), "login");
            }
            return Parsed::Unrecognized;
        }
        // `FAILED LOGIN (1) on '/dev/tty1' FOR 'root', Authentication failure`
        if let Some(rest) = msg.strip_prefix("FAILED LOGIN ") {
            let user = rest
                .split_once(" FOR '")
                .and_then(|(_, r)| r.split_once('\''))
                .map(|(u, _)| u);
            let user = user.filter(|u| *u != "UNKNOWN");
            let mut extra = Map::new();
            extra.insert("AuthMethod".into(), json!("console"));
            return self.login_record(user, false, None, "login", extra);
        }
        if msg.starts_with("pam_") || msg.starts_with("ROOT LOGIN") {
            return Parsed::Ignored;
        }
        Parsed::Unrecognized
    }

    fn iam(
        &self,
        tool: &str,
        name: &str,
        actor: &str,
        params: Value,
        resources: Vec<groundtrail_common::Resource>,
        error: Option<&str>,
    ) -> Parsed {
        let mut r = self.rec("iam", name, "AwsApiCall", tool);
        r.user_identity = Some(self.env.host.user(actor));
        r.request_parameters = Some(params);
        r.resources = Some(resources);
        if let Some(e) = error {
            r.error_code = Some("Failed".into());
            r.error_message = Some(truncate(e, 1024));
        }
        Parsed::Record(Box::new(r))
    }

    fn account(&self, tool: &str, msg: &str) -> Parsed {
        let ids = &self.env.host;
        // Older shadow-utils quote with `x'; a trailing newline may arrive as rsyslog's `#012`.
        let normalized = msg.replace('`', "'");
        let msg = normalized.trim_end().trim_end_matches("#012").trim_end();
        let first = |s: &str| s.split_whitespace().next().unwrap_or("").to_string();
        // `name=apache, UID=48, GID=48, home=/usr/share/httpd, shell=/sbin/nologin, from=/dev/pts/0`
        let kv = |s: &str| -> Map<String, Value> {
            s.split(", ")
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect()
        };
        let quoted = |s: &str| -> Vec<String> {
            s.split('\'')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect()
        };
        if let Some(rest) = msg.strip_prefix("new user: ") {
            let m = kv(rest);
            let Some(name) = m.get("name").and_then(Value::as_str).map(str::to_string) else {
                return Parsed::Malformed;
            };
            let mut p = Map::new();
            p.insert("userName".into(), json!(name));
            for (k, out) in [
                ("UID", "uid"),
                ("GID", "gid"),
                ("home", "home"),
                ("shell", "shell"),
                ("from", "tty"),
            ] {
                if let Some(v) = m.get(k) {
                    p.insert(out.into(), v.clone());
                }
            }
            return self.iam(
                tool,
                "CreateUser",
                "root",
                Value::Object(p),
                vec![ids.user_resource(&name)],
                None,
            );
        }
        if let Some(rest) = msg.strip_prefix("new group: ") {
            let m = kv(rest);
            let Some(name) = m.get("name").and_then(Value::as_str).map(str::to_string) else {
                return Parsed::Malformed;
            };
            let mut p = Map::new();
            p.insert("groupName".into(), json!(name));
            if let Some(g) = m.get("GID") {
                p.insert("gid".into(), g.clone());
            }
            return self.iam(
                tool,
                "CreateGroup",
                "root",
                Value::Object(p),
                vec![ids.group_resource(&name)],
                None,
            );
        }
        if msg.starts_with("group added to ")
            || msg.starts_with("removed shadow group ")
            || (msg.starts_with("group '") && msg.contains("' removed from "))
            || msg.contains(" to shadow group '")
            || msg.contains(" from shadow group '")
        {
            return Parsed::Ignored;
        }
        // useradd/usermod: `add 'alice' to group 'sudo'`; userdel/usermod: `delete 'alice' from group 'sudo'`
        for (prefix, mid, event) in [
            ("add '", "' to group '", "AddUserToGroup"),
            ("delete '", "' from group '", "RemoveUserFromGroup"),
        ] {
            if msg.starts_with(prefix) && msg.contains(mid) {
                let q = quoted(msg);
                let [user, group] = q.as_slice() else {
                    return Parsed::Malformed;
                };
                return self.iam(
                    tool,
                    event,
                    "root",
                    json!({"userName": user, "groupName": group}),
                    vec![ids.user_resource(user), ids.group_resource(group)],
                    None,
                );
            }
        }
        // gpasswd: `user alice added by root to group docker`, `user alice removed by root from group docker`
        if let Some(rest) = msg.strip_prefix("user ") {
            for (mid, mid2, event) in [
                (" added by ", " to group ", "AddUserToGroup"),
                (" removed by ", " from group ", "RemoveUserFromGroup"),
            ] {
                if let Some((user, r)) = rest.split_once(mid) {
                    let Some((actor, group)) = r.split_once(mid2) else {
                        return Parsed::Malformed;
                    };
                    let group = first(group);
                    let group = group.as_str();
                    return self.iam(
                        tool,
                        event,
                        actor,
                        json!({"userName": user, "groupName": group}),
                        vec![ids.user_resource(user), ids.group_resource(group)],
                        None,
                    );
                }
            }
        }
        // gpasswd: `password of group G changed by X`, `members of group G set by X to a,b`, ...
        for (prefix, what) in [
            ("password of group ", "password"),
            ("members of group ", "members"),
            ("administrators of group ", "administrators"),
        ] {
            if let Some(rest) = msg.strip_prefix(prefix) {
                let Some((group, r)) = rest.split_once(' ') else {
                    return Parsed::Malformed;
                };
                let Some((_, after_by)) = r.split_once("by ") else {
                    return Parsed::Malformed;
                };
                let (actor, to) = match after_by.split_once(" to ") {
                    Some((a, t)) => (a, Some(t)),
                    None => (after_by, None),
                };
                let actor = first(actor);
                let actor = actor.as_str();
                let mut p = json!({"groupName": group, "changed": what});
                if let Some(t) = to {
                    p["value"] = json!(t);
                }
                return self.iam(
                    tool,
                    "UpdateGroup",
                    actor,
                    p,
                    vec![ids.group_resource(group)],
                    None,
                );
            }
        }
        if let Some(rest) = msg.strip_prefix("group ") {
            // groupdel `group 'G' removed`
            if let Some(g) = rest
                .strip_prefix('\'')
                .and_then(|r| r.strip_suffix("' removed"))
            {
                return self.iam(
                    tool,
                    "DeleteGroup",
                    "root",
                    json!({"groupName": g}),
                    vec![ids.group_resource(g)],
                    None,
                );
            }
        }
        if let Some(rest) = msg.strip_prefix("access to group ")
            && let Some((g, actor)) = rest.split_once(" restricted by ")
        {
            let actor = first(actor);
            let actor = actor.as_str();
            return self.iam(
                tool,
                "UpdateGroup",
                actor,
                json!({"groupName": g, "changed": "restricted"}),
                vec![ids.group_resource(g)],
                None,
            );
        }
        // old groupdel: `remove group 'G'`
        if let Some(g) = msg
            .strip_prefix("remove group '")
            .and_then(|r| r.strip_suffix('\''))
        {
            return self.iam(
                tool,
                "DeleteGroup",
                "root",
                json!({"groupName": g}),
                vec![ids.group_resource(g)],
                None,
            );
        }
        // userdel: `delete user 'alice'`, `removed group 'alice' owned by 'alice'`
        if let Some(rest) = msg.strip_prefix("delete user '") {
            let u = rest.trim_end_matches('\'');
            return self.iam(
                tool,
                "DeleteUser",
                "root",
                json!({"userName": u}),
                vec![ids.user_resource(u)],
                None,
            );
        }
        if msg.starts_with("removed group '") {
            let q = quoted(msg);
            let Some(g) = q.first() else {
                return Parsed::Malformed;
            };
            return self.iam(
                tool,
                "DeleteGroup",
                "root",
                json!({"groupName": g}),
                vec![ids.group_resource(g)],
                None,
            );
        }
        // usermod: `change user 'x' password`, `lock user 'x' password`, `unlock user 'x' password`
        for (prefix, action) in [
            ("change user '", "change"),
            ("lock user '", "lock"),
            ("unlock user '", "unlock"),
        ] {
            if let Some(rest) = msg.strip_prefix(prefix) {
                let Some((u, what)) = rest.split_once('\'') else {
                    return Parsed::Malformed;
                };
                let what = what.trim();
                if what == "password" {
                    return self.iam(
                        tool,
                        "UpdateLoginProfile",
                        "root",
                        json!({"userName": u, "action": action}),
                        vec![ids.user_resource(u)],
                        None,
                    );
                }
                // `change user 'x' shell from '/bin/sh' to '/bin/bash'` and the like.
                let attr = what.split_whitespace().next().unwrap_or("");
                let q = quoted(what);
                let mut p = json!({"userName": u, "changed": attr});
                if let [from, to] = q.as_slice() {
                    p["from"] = json!(from);
                    p["to"] = json!(to);
                }
                return self.iam(
                    tool,
                    "UpdateUser",
                    "root",
                    p,
                    vec![ids.user_resource(u)],
                    None,
                );
            }
        }
        // usermod: `change user name 'old' to 'new'`
        if msg.starts_with("change user name '") {
            let q = quoted(msg);
            let [from, to] = q.as_slice() else {
                return Parsed::Malformed;
            };
            return self.iam(
                tool,
                "UpdateUser",
                "root",
                json!({"userName": from, "newUserName": to}),
                vec![ids.user_resource(from)],
                None,
            );
        }
        // chfn/chsh: `changed user 'margo' information`, `changed user 'x' shell to '/bin/zsh'`
        if msg.starts_with("changed user '") {
            let q = quoted(msg);
            let Some(u) = q.first() else {
                return Parsed::Malformed;
            };
            return self.iam(
                tool,
                "UpdateUser",
                "root",
                json!({"userName": u}),
                vec![ids.user_resource(u)],
                None,
            );
        }
        // chage: `changed password expiry for alice`
        if let Some(u) = msg.strip_prefix("changed password expiry for ") {
            return self.iam(
                tool,
                "UpdateLoginProfile",
                "root",
                json!({"userName": u, "changed": "passwordExpiry"}),
                vec![ids.user_resource(u)],
                None,
            );
        }
        // passwd/chpasswd via pam: `pam_unix(passwd:chauthtok): password changed for alice`
        if let Some(rest) = msg.strip_prefix("pam_unix(") {
            if let Some((_, r)) = rest.split_once("): ")
                && let Some(u) = r.strip_prefix("password changed for ")
            {
                return self.iam(
                    tool,
                    "UpdateLoginProfile",
                    "root",
                    json!({"userName": u}),
                    vec![ids.user_resource(u)],
                    None,
                );
            }
            return Parsed::Ignored;
        }
        // shadow passwd: `password for 'alice' changed by 'root'`
        if msg.starts_with("password for '") && msg.contains("' changed by '") {
            let q = quoted(msg);
            let [u, actor] = q.as_slice() else {
                return Parsed::Malformed;
            };
            return self.iam(
                tool,
                "UpdateLoginProfile",
                actor,
                json!({"userName": u}),
                vec![ids.user_resource(u)],
                None,
            );
        }
        // useradd failure: `failed adding user 'alice', data deleted`
        if msg.starts_with("failed adding user '") {
            let q = quoted(msg);
            let Some(u) = q.first() else {
                return Parsed::Malformed;
            };
            return self.iam(
                tool,
                "CreateUser",
                "root",
                json!({"userName": u}),
                vec![ids.user_resource(u)],
                Some(msg),
            );
        }
        if msg.starts_with("pam_") || msg.starts_with("Authentication token") {
            return Parsed::Ignored;
        }
        Parsed::Unrecognized
    }
}

#[cfg(test)]
mod tests;
