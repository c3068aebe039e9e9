//! The Linux audit log (`/var/log/audit/audit.log`), raw or ENRICHED format.
//!
//! One audit *event* is several lines (records) sharing `msg=audit(TIME:SERIAL)`. Kernel events
//! (a `SYSCALL` with its `EXECVE`, `CWD`, `PATH`, `PROCTITLE`, …) end with an `EOE` line;
//! user-space events (`USER_*`, `ADD_USER`, `SERVICE_START`, …) are usually a single line,
//! sometimes followed by a `SYSCALL` of the same serial on newer kernels. The
//! [`AuditHandler`] therefore groups lines by serial and closes a group
//!
//! - at its `EOE`;
//! - for a group without `SYSCALL`, when a line of another serial arrives (auditd writes an
//!   event's records together);
//! - when it has been open for [`MAX_OPEN_LINES`] further lines (a lost `EOE`), or the input
//!   went quiet, or the file ends.
//!
//! A closed group becomes at most one record ([`parse_event`], a pure function). Its eventID
//! derives from the offset of the group's first line, so re-reading after a restart (the
//! checkpoint stays at the first line of the oldest open group) gives the same ID.
//!
//! Values are decoded the way auditd encodes them: `"quoted"` text, or unquoted hex for fields
//! that may contain spaces or control characters (`cmd`, `proctitle`, `EXECVE` arguments, …),
//! with `aN_len`/`aN[i]` chunks for long arguments. In the ENRICHED format the resolved names
//! after the 0x1d separator (`AUID="alice"`) are preferred to a local passwd lookup: they were
//! resolved on the host that wrote the event.
//!
//! Identity: `auid` (the login uid, i.e. the person) is the principal; `uid` (what the process
//! runs as) the assumed role when it differs; an unset auid (4294967295) with uid 0 is the
//! system itself (see [`super::host_accounts`]).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use groundtrail_common::{Record, UserIdentity};
use serde_json::{Map, Value, json};

use super::{Env, Parsed, SourceStats, truncate};
use crate::sources::host_accounts::AUID_UNSET;
use crate::sources::tail::{LineHandler, LineRef};

/// Counters of this source (per event for parsed groups, per line for malformed lines).
pub static STATS: SourceStats = SourceStats::new();

/// A group missing its `EOE` is closed after this many lines of other events.
pub const MAX_OPEN_LINES: usize = 64;
/// At most this many records are kept in one group (a runaway event is cut, not buffered).
pub const MAX_GROUP_RECORDS: usize = 256;

/// One field value as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub key: String,
    pub value: String,
    /// Written with double quotes (so never hex-encoded).
    pub quoted: bool,
}

/// One audit log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditLine {
    pub node: Option<String>,
    pub rtype: String,
    /// Seconds and milliseconds since the epoch.
    pub secs: i64,
    pub millis: u32,
    pub serial: u64,
    /// Fields in order; the inner `msg='…'` fields of user-space records are flattened in.
    pub fields: Vec<Field>,
    /// ENRICHED-format names after the 0x1d separator (`AUID` -> `alice`).
    pub enriched: HashMap<String, String>,
}

impl AuditLine {
    /// The raw value of `key` (first occurrence), `None` for absent, `?` or `(null)`.
    pub fn raw(&self, key: &str) -> Option<&Field> {
        self.fields
            .iter()
            .find(|f| f.key == key)
            .filter(|f| !matches!(f.value.as_str(), "?" | "(null)" | "(none)" | ""))
    }

    /// The decoded text of `key`: quoted as is, unquoted hex decoded for fields auditd may
    /// hex-encode, other unquoted values as is.
    pub fn text(&self, key: &str) -> Option<String> {
        let f = self.raw(key)?;
        if !f.quoted
            && may_be_hex(key)
            && let Some(s) = decode_hex(&f.value)
        {
            return Some(s);
        }
        Some(f.value.clone())
    }

    /// A numeric field.
    pub fn num(&self, key: &str) -> Option<u64> {
        self.raw(key)?.value.parse().ok()
    }
}

/// Fields auditd writes hex-encoded when they contain spaces, quotes or control characters.
fn may_be_hex(key: &str) -> bool {
    matches!(
        key,
        "cmd"
            | "comm"
            | "exe"
            | "proctitle"
            | "acct"
            | "cwd"
            | "name"
            | "path"
            | "data"
            | "old"
            | "new"
            | "grp"
            | "id"
    ) || (key.starts_with('a')
        && key[1..]
            .split('[')
            .next()
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())))
}

/// Hex -> text; NULs (argument separators in `proctitle`) become spaces.
pub fn decode_hex(s: &str) -> Option<String> {
    if s.is_empty() || !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes = hex::decode(s).ok()?;
    let text = String::from_utf8_lossy(&bytes)
        .trim_end_matches('\0')
        .replace('\0', " ");
    Some(text)
}

/// Parses `key=value` pairs; `msg='…'` contents are parsed and flattened in.
fn parse_fields(body: &str, out: &mut Vec<Field>) {
    let b = body.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && b[i] != b' ' {
            i += 1;
        }
        if i >= b.len() || b[i] == b' ' {
            // A bare word (`old auid=…`): skip it.
            continue;
        }
        let key = &body[start..i];
        i += 1; // '='
        let (value, quoted, nested) = match b.get(i) {
            Some(&q @ (b'"' | b'\'')) => {
                let vstart = i + 1;
                let end = body[vstart..]
                    .find(q as char)
                    .map_or(b.len(), |e| vstart + e);
                i = (end + 1).min(b.len());
                (&body[vstart..end.min(b.len())], q == b'"', q == b'\'')
            }
            _ => {
                let vstart = i;
                while i < b.len() && b[i] != b' ' {
                    i += 1;
                }
                if key == "op" && i > vstart {
                    // Old shadow-utils write `op=adding group to /etc/group id=1004`: the
                    // value runs until the next `key=` word.
                    loop {
                        let mut j = i;
                        while j < b.len() && b[j] == b' ' {
                            j += 1;
                        }
                        let wstart = j;
                        while j < b.len() && b[j] != b' ' {
                            j += 1;
                        }
                        if wstart == j || body[wstart..j].contains('=') {
                            break;
                        }
                        i = j;
                    }
                }
                (&body[vstart..i], false, false)
            }
        };
        if nested && key == "msg" {
            parse_fields(value, out);
        } else if !key.is_empty() {
            out.push(Field {
                key: key.to_string(),
                value: value.to_string(),
                quoted,
            });
        }
    }
}

/// Parses one line; `None` if it is not an audit record.
pub fn parse_line(line: &str) -> Option<AuditLine> {
    let (raw, enriched_part) = match line.split_once('\u{1d}') {
        Some((r, e)) => (r, Some(e)),
        None => (line, None),
    };
    let mut rest = raw;
    let mut node = None;
    if let Some(r) = rest.strip_prefix("node=") {
        let (n, r) = r.split_once(' ')?;
        node = Some(n.to_string());
        rest = r;
    }
    let r = rest.strip_prefix("type=")?;
    let (rtype, r) = r.split_once(' ')?;
    let r = r.strip_prefix("msg=audit(")?;
    let (stamp, body) = r.split_once("):")?;
    let (time, serial) = stamp.split_once(':')?;
    let (secs, millis) = time.split_once('.').unwrap_or((time, "0"));
    let secs: i64 = secs.parse().ok()?;
    let millis: u32 = millis.parse().ok()?;
    let serial: u64 = serial.parse().ok()?;
    if rtype.is_empty() {
        return None;
    }
    let mut fields = Vec::new();
    parse_fields(body, &mut fields);
    let mut enriched = HashMap::new();
    if let Some(e) = enriched_part {
        let mut ef = Vec::new();
        parse_fields(e, &mut ef);
        for f in ef {
            enriched.insert(f.key, f.value);
        }
    }
    Some(AuditLine {
        node,
        rtype: rtype.to_string(),
        secs,
        millis,
        serial,
        fields,
        enriched,
    })
}

/// One event's records.
#[derive(Debug, Clone, Default)]
pub struct AuditEvent {
    pub records: Vec<AuditLine>,
}

impl AuditEvent {
    fn first(&self, rtype: &str) -> Option<&AuditLine> {
        self.records.iter().find(|r| r.rtype == rtype)
    }
}

fn exe_base(exe: &str) -> &str {
    exe.rsplit('/').next().unwrap_or(exe)
}

/// Turns one audit event into what it means for the trail. `execve`: record plain commands.
pub fn parse_event(env: &Env, ev: &AuditEvent, execve: bool) -> Parsed {
    let Some(first) = ev.records.first() else {
        return Parsed::Ignored;
    };
    let time = Utc
        .timestamp_opt(first.secs, 0)
        .single()
        .unwrap_or_else(Utc::now);
    let c = Ev { env, ev, time };
    let primary = ev
        .records
        .iter()
        .find(|r| r.rtype != "SYSCALL" && r.rtype != "EOE" && r.rtype != "PROCTITLE")
        .unwrap_or(first);
    match primary.rtype.as_str() {
        "USER_CMD" => c.user_cmd(primary),
        "USER_LOGIN" => c.user_login(primary),
        "USER_AUTH" => c.user_auth(primary),
        "USER_START" => c.session(primary, true),
        "USER_END" => c.session(primary, false),
        "ADD_USER" | "DEL_USER" | "ADD_GROUP" | "DEL_GROUP" | "USER_CHAUTHTOK" | "USER_MGMT"
        | "GRP_MGMT" | "GRP_CHAUTHTOK" => c.account(primary),
        "SERVICE_START" | "SERVICE_STOP" => c.service(primary),
        "SOFTWARE_UPDATE" => c.software(primary),
        "EXECVE" if execve => c.execve(),
        "EXECVE" => Parsed::Ignored,
        _ => Parsed::Ignored,
    }
}

struct Ev<'a> {
    env: &'a Env,
    ev: &'a AuditEvent,
    time: DateTime<Utc>,
}

impl Ev<'_> {
    /// The name of a uid field: the ENRICHED name if written, else passwd, else `uid:N`.
    fn name(&self, line: &AuditLine, key: &str) -> Option<String> {
        let n = line.num(key)?;
        if n == u64::from(AUID_UNSET) {
            return None;
        }
        if let Some(e) = line.enriched.get(&key.to_ascii_uppercase())
            && e != "unset"
            && !e.is_empty()
        {
            return Some(e.clone());
        }
        Some(self.env.passwd.name_or_uid(n as u32))
    }

    fn identity(&self, line: &AuditLine, service: &str) -> UserIdentity {
        let ids = &self.env.host;
        match (self.name(line, "auid"), self.name(line, "uid")) {
            (Some(a), Some(u)) => ids.assumed(&a, &u),
            (Some(a), None) => ids.user(&a),
            (None, Some(u)) if u != "root" => ids.user(&u),
            _ => ids.service(service),
        }
    }

    fn rec(&self, line: &AuditLine, service: &str, name: &str, event_type: &str) -> Record {
        let mut r = self.env.record(service, name, event_type, self.time);
        let exe = line.text("exe");
        r.user_agent = Some(truncate(
            exe.as_deref().map(exe_base).unwrap_or("auditd"),
            1024,
        ));
        if let Some(addr) = line.text("addr") {
            r.source_ip_address = Some(addr);
        }
        let mut add = Map::new();
        add.insert("auditSerial".into(), json!(line.serial));
        add.insert("auditType".into(), json!(line.rtype));
        for k in ["pid", "ses", "auid", "uid"] {
            if let Some(v) = line.num(k) {
                add.insert(k.into(), json!(v));
            }
        }
        if let Some(t) = line.text("terminal") {
            add.insert("terminal".into(), json!(t));
        }
        if let Some(n) = &line.node {
            add.insert("node".into(), json!(n));
        }
        r.additional_event_data = Some(Value::Object(add));
        r.user_identity = Some(self.identity(line, service));
        if !success(line) {
            r.error_code = Some("AccessDenied".into());
            let what = line.text("op").unwrap_or_else(|| line.rtype.clone());
            r.error_message = Some(truncate(&format!("{what} failed"), 1024));
        }
        r
    }

    /// `acct` (or `id` looked up) of a user-space record.
    fn acct(&self, line: &AuditLine) -> Option<String> {
        if let Some(a) = line.text("acct") {
            return Some(a);
        }
        if let Some(e) = line.enriched.get("ID") {
            return Some(e.clone());
        }
        let id = line.num("id")?;
        Some(self.env.passwd.name_or_uid(id as u32))
    }

    fn user_cmd(&self, l: &AuditLine) -> Parsed {
        let mut r = self.rec(l, "sudo", "RunCommand", "AwsApiCall");
        let Some(cmd) = l.text("cmd") else {
            return Parsed::Malformed;
        };
        let mut p = Map::new();
        p.insert("command".into(), json!(truncate(&cmd, 16 * 1024)));
        if let Some(cwd) = l.text("cwd") {
            p.insert("cwd".into(), json!(cwd));
        }
        if let Some(t) = l.text("terminal") {
            p.insert("tty".into(), json!(t));
        }
        r.request_parameters = Some(Value::Object(p));
        let exe = cmd.split_whitespace().next().unwrap_or(&cmd).to_string();
        r.resources = Some(vec![self.env.host.command_resource(&exe)]);
        Parsed::Record(Box::new(r))
    }

    fn user_login(&self, l: &AuditLine) -> Parsed {
        let mut r = self.rec(l, "sshd", "ConsoleLogin", "AwsConsoleSignIn");
        let ok = success(l);
        let acct = self.acct(l).filter(|a| !a.starts_with('('));
        let ids = &self.env.host;
        r.user_identity = Some(match &acct {
            Some(a) => ids.user(a),
            None => ids.hidden_user(),
        });
        r.response_elements = Some(json!({"ConsoleLogin": if ok {"Success"} else {"Failure"}}));
        if !ok {
            r.error_message = Some(
                if acct.is_some() {
                    "Failed authentication"
                } else {
                    "No username found in supplied account"
                }
                .into(),
            );
        }
        if let Some(a) = &acct {
            r.resources = Some(vec![ids.user_resource(a)]);
        }
        Parsed::Record(Box::new(r))
    }

    fn user_auth(&self, l: &AuditLine) -> Parsed {
        // The login itself is USER_LOGIN; sessions are USER_START. Only failed sudo/su
        // authentication has no other record.
        let exe = l.text("exe").unwrap_or_default();
        let tool = exe_base(&exe);
        if success(l) || !matches!(tool, "sudo" | "su") {
            return Parsed::Ignored;
        }
        let mut r = self.rec(l, tool, "AssumeRole", "AwsApiCall");
        let person = self.name(l, "auid").or_else(|| self.name(l, "uid"));
        if let Some(p) = &person {
            r.user_identity = Some(self.env.host.user(p));
        }
        r.request_parameters = Some(json!({"roleSessionName": person}));
        Parsed::Record(Box::new(r))
    }

    fn session(&self, l: &AuditLine, start: bool) -> Parsed {
        let exe = l.text("exe").unwrap_or_default();
        let tool = exe_base(&exe);
        let ids = &self.env.host;
        match (tool, start) {
            ("su" | "sudo", true) => {
                let Some(target) = self.acct(l) else {
                    return Parsed::Malformed;
                };
                let Some(person) = self.name(l, "auid").or_else(|| self.name(l, "uid")) else {
                    return Parsed::Ignored;
                };
                let mut r = self.rec(l, tool, "AssumeRole", "AwsApiCall");
                r.user_identity = Some(ids.user(&person));
                let a = ids.assumed(&person, &target);
                r.request_parameters = Some(json!({
                    "roleArn": format!("arn:{}:iam::{}:role/{}/{}", ids.partition, ids.account_id, ids.host, target),
                    "roleSessionName": person,
                }));
                if r.error_code.is_none() {
                    r.response_elements = Some(json!({
                        "assumedRoleUser": {"assumedRoleId": a.principal_id, "arn": a.arn}
                    }));
                }
                r.resources = Some(vec![ids.role_resource(&target)]);
                Parsed::Record(Box::new(r))
            }
            ("sshd" | "login" | "sshd-session", false) => {
                let Some(acct) = self.acct(l) else {
                    return Parsed::Ignored;
                };
                let mut r = self.rec(l, "sshd", "Logout", "AwsConsoleSignIn");
                r.user_identity = Some(ids.user(&acct));
                r.resources = Some(vec![ids.user_resource(&acct)]);
                Parsed::Record(Box::new(r))
            }
            _ => Parsed::Ignored,
        }
    }

    fn account(&self, l: &AuditLine) -> Parsed {
        let op = l.text("op").unwrap_or_default();
        let ids = &self.env.host;
        // The per-database steps are duplicates of the main step.
        if op.contains("gshadow")
            || op.contains("shadow group")
            || op.contains("home directory")
            || op.contains("mail file")
            || op.is_empty()
        {
            return Parsed::Ignored;
        }
        let group = || {
            l.text("grp")
                .or_else(|| l.enriched.get("GRP").cloned())
                .or_else(|| l.text("acct"))
                .or_else(|| l.num("id").map(|g| format!("gid:{g}")))
        };
        let (name, is_group) = match l.rtype.as_str() {
            "ADD_USER" => ("CreateUser", false),
            "DEL_USER" => ("DeleteUser", false),
            "ADD_GROUP" => ("CreateGroup", true),
            "DEL_GROUP" => ("DeleteGroup", true),
            "GRP_MGMT" | "GRP_CHAUTHTOK" => ("UpdateGroup", true),
            "USER_CHAUTHTOK" if op.contains("to group") => ("AddUserToGroup", false),
            "USER_CHAUTHTOK" if op.contains("from group") => ("RemoveUserFromGroup", false),
            "USER_CHAUTHTOK" if op.contains("chauthtok") || op.contains("password") => {
                ("UpdateLoginProfile", false)
            }
            "USER_CHAUTHTOK" if op.contains("adding user") => ("CreateUser", false),
            "USER_CHAUTHTOK" if op.contains("deleting user") => ("DeleteUser", false),
            "USER_CHAUTHTOK" | "USER_MGMT" if op.contains("add") && op.contains("group") => {
                ("AddUserToGroup", false)
            }
            "USER_CHAUTHTOK" | "USER_MGMT"
                if (op.contains("delete") || op.contains("remov")) && op.contains("group") =>
            {
                ("RemoveUserFromGroup", false)
            }
            _ => ("UpdateUser", false),
        };
        let exe = l.text("exe").unwrap_or_default();
        let mut r = self.rec(l, "iam", name, "AwsApiCall");
        if r.error_code.is_some() {
            r.error_code = Some("Failed".into());
        }
        let person = self.name(l, "auid").or_else(|| self.name(l, "uid"));
        r.user_identity = Some(match &person {
            Some(p) => ids.user(p),
            None => ids.service(exe_base(&exe)),
        });
        let mut p = Map::new();
        p.insert("op".into(), json!(op));
        let mut resources = Vec::new();
        if is_group {
            let g = group();
            if let Some(g) = &g {
                resources.push(ids.group_resource(g));
            }
            p.insert("groupName".into(), json!(g));
            if let Some(id) = l.num("id") {
                p.insert("gid".into(), json!(id));
            }
        } else {
            let u = self.acct(l);
            if let Some(u) = &u {
                resources.push(ids.user_resource(u));
            }
            p.insert("userName".into(), json!(u));
            if let Some(id) = l.num("id") {
                p.insert("uid".into(), json!(id));
            }
            if let Some(g) = l.text("grp") {
                resources.push(ids.group_resource(&g));
                p.insert("groupName".into(), json!(g));
            }
        }
        r.request_parameters = Some(Value::Object(p));
        r.resources = Some(resources);
        Parsed::Record(Box::new(r))
    }

    fn service(&self, l: &AuditLine) -> Parsed {
        let Some(unit) = l.text("unit") else {
            return Parsed::Malformed;
        };
        let name = if l.rtype == "SERVICE_START" {
            "StartService"
        } else {
            "StopService"
        };
        let mut r = self.rec(l, "systemd", name, "AwsApiCall");
        r.user_agent = Some("systemd".into());
        r.request_parameters = Some(json!({"unit": unit}));
        if r.error_code.is_some() {
            r.error_code = Some("ServiceFailed".into());
            r.error_message = Some(truncate(&format!("{unit}: {name} failed"), 1024));
        }
        r.resources = Some(vec![self.env.host.service_resource(&unit)]);
        Parsed::Record(Box::new(r))
    }

    /// rpm's audit record of a package transaction element: who (auid) installed what.
    fn software(&self, l: &AuditLine) -> Parsed {
        let Some(sw) = l.text("sw") else {
            return Parsed::Malformed;
        };
        let op = l.text("op").unwrap_or_default();
        let name = if op.contains("remove") || op.contains("erase") {
            "RemovePackage"
        } else if op.contains("update") || op.contains("upgrade") {
            "UpgradePackage"
        } else {
            "InstallPackage"
        };
        let mut r = self.rec(l, "packages", name, "AwsApiCall");
        if r.error_code.is_some() {
            r.error_code = Some("PackageError".into());
        }
        if let Some(comm) = l.text("comm") {
            r.user_agent = Some(truncate(&comm, 1024));
        }
        let (pkg, version, arch) = super::packages::split_nevra(&sw);
        let mut p = Map::new();
        p.insert("packageName".into(), json!(pkg));
        if let Some(v) = version {
            p.insert("version".into(), json!(v));
        }
        if let Some(a) = arch {
            p.insert("architecture".into(), json!(a));
        }
        if let Some(t) = l.text("sw_type") {
            p.insert("packageType".into(), json!(t));
        }
        if let Some(g) = l.text("gpg_res") {
            p.insert("gpgResult".into(), json!(g));
        }
        r.request_parameters = Some(Value::Object(p));
        r.resources = Some(vec![self.env.host.package_resource(&pkg)]);
        Parsed::Record(Box::new(r))
    }

    fn execve(&self) -> Parsed {
        let Some(exec) = self.ev.first("EXECVE") else {
            return Parsed::Ignored;
        };
        let sys = self.ev.first("SYSCALL");
        let argc = exec.num("argc").unwrap_or(0).min(4096) as usize;
        let mut argv: Vec<String> = Vec::with_capacity(argc);
        // Chunked arguments may span several EXECVE lines of the event.
        let execs: Vec<&AuditLine> = self
            .ev
            .records
            .iter()
            .filter(|r| r.rtype == "EXECVE")
            .collect();
        for i in 0..argc {
            let key = format!("a{i}");
            let mut arg = execs.iter().find_map(|l| l.text(&key));
            if arg.is_none() {
                let mut hexbuf = String::new();
                for chunk in 0.. {
                    let ck = format!("a{i}[{chunk}]");
                    match execs
                        .iter()
                        .find_map(|l| l.raw(&ck).map(|f| f.value.clone()))
                    {
                        Some(v) => hexbuf.push_str(&v),
                        None => break,
                    }
                    if hexbuf.len() > 64 * 1024 {
                        break;
                    }
                }
                arg = decode_hex(&hexbuf);
            }
            argv.push(arg.unwrap_or_default());
        }
        let line = sys.unwrap_or(exec);
        let mut r = self.rec(line, "exec", "RunCommand", "AwsApiCall");
        // Readability caps only (raw bytes): the collector's limits are kept on the serialized
        // record, escapes included, by the sink (`crate::sink::Fitted`), for every source.
        let command = truncate(&argv.join(" "), 16 * 1024);
        let mut p = Map::new();
        p.insert("command".into(), json!(command));
        if argv.len() > 1 {
            let capped: Vec<String> = argv.iter().take(64).map(|a| truncate(a, 1024)).collect();
            p.insert("argv".into(), json!(capped));
        }
        if let Some(cwd) = self.ev.first("CWD").and_then(|c| c.text("cwd")) {
            p.insert("cwd".into(), json!(cwd));
        }
        let exe = sys.and_then(|s| s.text("exe"));
        if let Some(s) = sys {
            if let Some(e) = &exe {
                p.insert("exe".into(), json!(e));
            }
            for k in ["tty", "key"] {
                if let Some(v) = s.text(k) {
                    p.insert(k.into(), json!(v));
                }
            }
            if let Some(pp) = s.num("ppid") {
                p.insert("ppid".into(), json!(pp));
            }
            if s.text("success").as_deref() == Some("no") {
                r.error_code = Some("Failed".into());
                let exit = s.text("exit").unwrap_or_default();
                r.error_message = Some(truncate(&format!("execve failed: exit={exit}"), 1024));
            }
        }
        r.request_parameters = Some(Value::Object(p));
        if let Some(e) = exe.or_else(|| argv.first().cloned()) {
            r.user_agent = Some(truncate(exe_base(&e), 1024));
            r.resources = Some(vec![self.env.host.command_resource(&e)]);
        }
        Parsed::Record(Box::new(r))
    }
}

fn success(l: &AuditLine) -> bool {
    match l.text("res").as_deref() {
        Some("success" | "yes" | "1") | None => true,
        Some(_) => false,
    }
}

/// Kernel records whose event ends with `EOE`.
fn is_kernel(rtype: &str) -> bool {
    matches!(
        rtype,
        "SYSCALL" | "EXECVE" | "CWD" | "PATH" | "PROCTITLE" | "SOCKADDR" | "EOE"
    )
}

struct Group {
    key: (Option<String>, u64),
    first_offset: u64,
    event_id: String,
    event: AuditEvent,
    kernel: bool,
    age: usize,
}

/// Groups audit lines into events and turns them into records (see the module docs).
pub struct AuditHandler {
    env: Arc<Env>,
    execve: bool,
    open: Vec<Group>,
}

impl AuditHandler {
    pub fn new(env: Arc<Env>, execve: bool) -> AuditHandler {
        AuditHandler {
            env,
            execve,
            open: Vec::new(),
        }
    }

    fn emit(&self, g: Group, out: &mut Vec<Record>) {
        let parsed = parse_event(&self.env, &g.event, self.execve);
        STATS.count(&parsed);
        if let Parsed::Record(mut r) = parsed {
            r.event_id = g.event_id;
            out.push(*r);
        }
    }

    fn close_where(&mut self, out: &mut Vec<Record>, pred: impl Fn(&Group) -> bool) {
        let mut i = 0;
        while i < self.open.len() {
            if pred(&self.open[i]) {
                let g = self.open.remove(i);
                self.emit(g, out);
            } else {
                i += 1;
            }
        }
    }
}

impl LineHandler for AuditHandler {
    fn line(&mut self, line: &[u8], at: LineRef<'_>, out: &mut Vec<Record>) {
        let text = String::from_utf8_lossy(line);
        let Some(l) = parse_line(&text) else {
            STATS.count(&Parsed::Malformed);
            return;
        };
        let key = (l.node.clone(), l.serial);
        for g in &mut self.open {
            g.age += 1;
        }
        // Another event began: user-space groups are complete; stale kernel ones too.
        self.close_where(out, |g| {
            g.key != key && (!g.kernel || g.age > MAX_OPEN_LINES)
        });
        let eoe = l.rtype == "EOE";
        let kernel = is_kernel(&l.rtype);
        match self.open.iter_mut().find(|g| g.key == key) {
            Some(g) => {
                g.kernel |= kernel;
                g.age = 0;
                if g.event.records.len() < MAX_GROUP_RECORDS && !eoe {
                    g.event.records.push(l);
                }
            }
            None => {
                let mut event = AuditEvent::default();
                if !eoe {
                    event.records.push(l);
                }
                self.open.push(Group {
                    key: key.clone(),
                    first_offset: at.offset,
                    event_id: at.event_id(),
                    event,
                    kernel,
                    age: 0,
                });
            }
        }
        if eoe {
            self.close_where(out, |g| g.key == key);
        }
    }

    fn pending_from(&self) -> Option<u64> {
        self.open.iter().map(|g| g.first_offset).min()
    }

    fn flush(&mut self, out: &mut Vec<Record>) {
        self.close_where(out, |_| true);
    }

    fn reset(&mut self) {
        self.open.clear();
    }
}

#[cfg(test)]
mod tests;
