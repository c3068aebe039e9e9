//! Package changes: `dpkg.log`, apt's `history.log`, `yum.log` and dnf's `dnf.rpm.log`.
//!
//! | input | granularity | who |
//! | --- | --- | --- |
//! | dpkg.log `install`/`upgrade`/`remove`/`purge` | one record per package action | `root` (dpkg does not log its caller) |
//! | apt history.log stanza (`Start-Date` … `End-Date`) | one record per action kind (Install, Upgrade, Remove, …) of the transaction, its packages in `resources[]` | `Requested-By`, else `root` |
//! | yum.log `Installed:`/`Updated:`/`Erased:` | one record per package | `root` |
//! | dnf.rpm.log `Installed:`/`Upgrade:`/`Downgrade:`/`Reinstall:`/`Erase:` | one record per package | `root` |
//!
//! dpkg's `status`/`configure`/`trigproc`/`startup`/`conffile` lines and dnf's `Upgraded:` (the
//! old side of an upgrade) are recognized and ignored. On Debian both dpkg.log and apt's
//! history run by default: they are two views (per package, per transaction with the user),
//! told apart by `userAgent` (`dpkg` / `apt`).

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, Utc};
use groundtrail_common::Record;
use groundtrail_common::shutdown::Shutdown;
use serde_json::{Map, Value, json};

use super::syslog::{self, YearTracker};
use super::{Env, LineParser, PackagesConfig, Parsed, SourceStats, spawn_file, truncate};
use crate::sink::RecordSink;
use crate::sources::tail::{LineHandler, LineRef, TailOptions};

/// Counters of this source.
pub static STATS: SourceStats = SourceStats::new();

/// Packages listed per apt record at most (the rest are counted in `packagesOmitted`).
pub const MAX_PACKAGES_PER_RECORD: usize = 500;

fn package_record(
    env: &Env,
    agent: &str,
    name: &str,
    time: DateTime<Utc>,
    actor: &str,
    params: Value,
    packages: &[String],
) -> Record {
    let mut r = env.record("packages", name, "AwsApiCall", time);
    r.user_agent = Some(agent.into());
    r.user_identity = Some(env.host.user(actor));
    r.request_parameters = Some(params);
    r.resources = Some(
        packages
            .iter()
            .take(MAX_PACKAGES_PER_RECORD)
            .map(|p| env.host.package_resource(p))
            .collect(),
    );
    r
}

/// `name:arch` -> (`name`, `arch`).
fn split_arch(pkg: &str) -> (&str, Option<&str>) {
    match pkg.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (pkg, None),
    }
}

/// One dpkg.log line.
pub fn parse_dpkg(env: &Env, line: &str) -> Parsed {
    let mut it = line.splitn(4, ' ');
    let (Some(date), Some(time), Some(action)) = (it.next(), it.next(), it.next()) else {
        return Parsed::Malformed;
    };
    let Ok(t) = NaiveDateTime::parse_from_str(&format!("{date} {time}"), "%Y-%m-%d %H:%M:%S")
    else {
        return Parsed::Malformed;
    };
    let Some(t) = env.zone.to_utc(t) else {
        return Parsed::Malformed;
    };
    let rest = it.next().unwrap_or("");
    let event = match action {
        "install" => "InstallPackage",
        "upgrade" => "UpgradePackage",
        "remove" | "purge" => "RemovePackage",
        "status" | "configure" | "trigproc" | "startup" | "conffile" => return Parsed::Ignored,
        _ => return Parsed::Unrecognized,
    };
    let parts: Vec<&str> = rest.split(' ').collect();
    let [pkg, old, new] = parts.as_slice() else {
        return Parsed::Malformed;
    };
    let (name, arch) = split_arch(pkg);
    let none = |v: &str| (v != "<none>").then(|| v.to_string());
    let mut p = Map::new();
    p.insert("packageName".into(), json!(name));
    if let Some(a) = arch {
        p.insert("architecture".into(), json!(a));
    }
    if let Some(v) = none(new) {
        p.insert("version".into(), json!(v));
    }
    if let Some(v) = none(old) {
        p.insert("previousVersion".into(), json!(v));
    }
    if action == "purge" {
        p.insert("purge".into(), json!(true));
    }
    Parsed::Record(Box::new(package_record(
        env,
        "dpkg",
        event,
        t,
        "root",
        Value::Object(p),
        &[name.to_string()],
    )))
}

/// `Installed: httpd-2.4.6-93.el7.centos.x86_64` -> (name, version, arch); an unversioned
/// `Erased: httpd` -> (name, None, None).
pub fn split_nevra(s: &str) -> (String, Option<String>, Option<String>) {
    let s = s.trim();
    let (rest, arch) = match s.rsplit_once('.') {
        Some((r, a))
            if matches!(
                a,
                "x86_64"
                    | "noarch"
                    | "i686"
                    | "i386"
                    | "aarch64"
                    | "ppc64le"
                    | "s390x"
                    | "armv7hl"
                    | "src"
            ) =>
        {
            (r, Some(a.to_string()))
        }
        _ => (s, None),
    };
    let mut parts = rest.rsplitn(3, '-');
    let (Some(release), Some(version), Some(name)) = (parts.next(), parts.next(), parts.next())
    else {
        return (s.to_string(), None, None);
    };
    // Epoch may prefix the name's last part in yum.log (`1:name-1.0-1.x86_64`).
    let name = name.rsplit_once(':').map_or(name, |(_, n)| n);
    (name.to_string(), Some(format!("{version}-{release}")), arch)
}

fn rpm_record(env: &Env, agent: &str, verb: &str, nevra: &str, time: DateTime<Utc>) -> Parsed {
    let (event, extra) = match verb {
        "Installed" | "Install" | "Dep-Installed" => ("InstallPackage", None),
        "Updated" | "Upgrade" => ("UpgradePackage", None),
        "Downgrade" => ("UpgradePackage", Some(("downgrade", true))),
        "Reinstall" => ("InstallPackage", Some(("reinstall", true))),
        "Erased" | "Erase" => ("RemovePackage", None),
        "Upgraded" | "Downgraded" | "Reinstalled" | "Obsoleted" | "Obsoleting" | "Obsolete" => {
            return Parsed::Ignored;
        }
        _ => return Parsed::Unrecognized,
    };
    if nevra.trim().is_empty() {
        return Parsed::Malformed;
    }
    let (name, version, arch) = split_nevra(nevra);
    let mut p = Map::new();
    p.insert("packageName".into(), json!(name));
    if let Some(v) = version {
        p.insert("version".into(), json!(v));
    }
    if let Some(a) = arch {
        p.insert("architecture".into(), json!(a));
    }
    if let Some((k, v)) = extra {
        p.insert(k.into(), json!(v));
    }
    Parsed::Record(Box::new(package_record(
        env,
        agent,
        event,
        time,
        "root",
        Value::Object(p),
        &[name],
    )))
}

/// One dnf.rpm.log line: `2022-03-23T16:46:43-0400 SUBDEBUG Installed: elfutils-0.186-1.el9.x86_64`.
pub fn parse_dnf(env: &Env, line: &str) -> Parsed {
    let Some((stamp, rest)) = line.split_once(' ') else {
        return Parsed::Malformed;
    };
    let Some(st) = syslog::iso_stamp(stamp) else {
        return Parsed::Malformed;
    };
    let Some(time) = YearTracker::new(Utc::now()).resolve(st, env.zone) else {
        return Parsed::Malformed;
    };
    let Some((level, msg)) = rest.split_once(' ') else {
        return Parsed::Malformed;
    };
    if level != "SUBDEBUG" {
        return Parsed::Ignored;
    }
    let Some((verb, nevra)) = msg.split_once(": ") else {
        return Parsed::Unrecognized;
    };
    rpm_record(env, "dnf", verb, nevra, time)
}

/// One yum.log line: `Oct 04 14:39:17 Installed: tree-1.6.0-10.el7.x86_64`.
pub fn parse_yum(env: &Env, years: &mut YearTracker, line: &str) -> Parsed {
    let Some((stamp, rest)) = syslog::classic_stamp(line) else {
        return Parsed::Malformed;
    };
    let Some(time) = years.resolve(stamp, env.zone) else {
        return Parsed::Malformed;
    };
    let Some((verb, nevra)) = rest.split_once(": ") else {
        return Parsed::Unrecognized;
    };
    rpm_record(env, "yum", verb, nevra, time)
}

/// `a:amd64 (1.0, automatic), b:amd64 (1.0, 2.0)` -> packages with versions.
fn apt_packages(list: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut rest = list.trim();
    while !rest.is_empty() {
        let Some(open) = rest.find(" (") else {
            out.push((rest.trim_start_matches(", ").to_string(), Vec::new()));
            break;
        };
        let name = rest[..open].trim_start_matches(", ").trim().to_string();
        let Some(close) = rest[open..].find(')') else {
            out.push((name, Vec::new()));
            break;
        };
        let inner = &rest[open + 2..open + close];
        out.push((name, inner.split(", ").map(str::to_string).collect()));
        rest = &rest[open + close + 1..];
    }
    out
}

/// One apt history stanza (its lines, `Start-Date` first) -> records, one per action kind.
/// `base_id` is the eventID of the stanza's first line; the n-th action derives its own.
pub fn parse_apt_stanza(env: &Env, lines: &[String], base_id: &str) -> Vec<Parsed> {
    let mut fields: Vec<(&str, &str)> = Vec::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(": ") {
            fields.push((k.trim(), v.trim()));
        }
    }
    let get = |k: &str| fields.iter().find(|(fk, _)| *fk == k).map(|(_, v)| *v);
    let Some(start) = get("Start-Date") else {
        return vec![Parsed::Malformed];
    };
    let Ok(t) = NaiveDateTime::parse_from_str(start, "%Y-%m-%d  %H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(start, "%Y-%m-%d %H:%M:%S"))
    else {
        return vec![Parsed::Malformed];
    };
    let Some(time) = env.zone.to_utc(t) else {
        return vec![Parsed::Malformed];
    };
    // `Requested-By: alice (1000)`
    let actor = get("Requested-By")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or("root")
        .to_string();
    let mut out = Vec::new();
    for (i, (kind, event, flag)) in [
        ("Install", "InstallPackage", None),
        ("Reinstall", "InstallPackage", Some("reinstall")),
        ("Upgrade", "UpgradePackage", None),
        ("Downgrade", "UpgradePackage", Some("downgrade")),
        ("Remove", "RemovePackage", None),
        ("Purge", "RemovePackage", Some("purge")),
    ]
    .into_iter()
    .enumerate()
    {
        let Some(list) = get(kind) else { continue };
        let pkgs = apt_packages(list);
        let mut names = Vec::new();
        let mut items = Vec::new();
        for (pkg, vers) in pkgs.iter() {
            let (name, arch) = split_arch(pkg);
            names.push(name.to_string());
            if items.len() >= MAX_PACKAGES_PER_RECORD {
                continue;
            }
            let mut m = Map::new();
            m.insert("packageName".into(), json!(name));
            if let Some(a) = arch {
                m.insert("architecture".into(), json!(a));
            }
            let automatic = vers.iter().any(|v| v == "automatic");
            let vs: Vec<&String> = vers.iter().filter(|v| *v != "automatic").collect();
            match vs.as_slice() {
                [v] => {
                    m.insert("version".into(), json!(v));
                }
                [old, new, ..] => {
                    m.insert("previousVersion".into(), json!(old));
                    m.insert("version".into(), json!(new));
                }
                [] => {}
            }
            if automatic {
                m.insert("automatic".into(), json!(true));
            }
            items.push(Value::Object(m));
        }
        let mut p = Map::new();
        if let Some(c) = get("Commandline") {
            p.insert("commandLine".into(), json!(truncate(c, 4096)));
        }
        p.insert("packages".into(), Value::Array(items));
        if pkgs.len() > MAX_PACKAGES_PER_RECORD {
            p.insert(
                "packagesOmitted".into(),
                json!(pkgs.len() - MAX_PACKAGES_PER_RECORD),
            );
        }
        if let Some(f) = flag {
            p.insert(f.into(), json!(true));
        }
        let mut r = package_record(env, "apt", event, time, &actor, Value::Object(p), &names);
        if let Some(e) = get("Error") {
            r.error_code = Some("PackageError".into());
            r.error_message = Some(truncate(e, 1024));
        }
        if let Some(end) = get("End-Date") {
            r.additional_event_data = Some(json!({"endDate": end}));
        }
        r.event_id = if out.is_empty() {
            base_id.to_string()
        } else {
            uuid::Uuid::new_v5(
                &crate::sources::tail::EVENT_ID_NAMESPACE,
                format!("{base_id}|{i}").as_bytes(),
            )
            .to_string()
        };
        out.push(Parsed::Record(Box::new(r)));
    }
    if out.is_empty() {
        // A stanza with no package list (e.g. a failed command): nothing changed.
        out.push(Parsed::Ignored);
    }
    out
}

/// Groups apt history lines into stanzas.
pub struct AptHistoryHandler {
    env: Arc<Env>,
    lines: Vec<String>,
    first_offset: u64,
    base_id: String,
}

impl AptHistoryHandler {
    pub fn new(env: Arc<Env>) -> AptHistoryHandler {
        AptHistoryHandler {
            env,
            lines: Vec::new(),
            first_offset: 0,
            base_id: String::new(),
        }
    }

    fn close(&mut self, out: &mut Vec<Record>) {
        if self.lines.is_empty() {
            return;
        }
        for p in parse_apt_stanza(&self.env, &self.lines, &self.base_id) {
            STATS.count(&p);
            if let Parsed::Record(r) = p {
                out.push(*r);
            }
        }
        self.lines.clear();
    }
}

impl LineHandler for AptHistoryHandler {
    fn line(&mut self, line: &[u8], at: LineRef<'_>, out: &mut Vec<Record>) {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end();
        if line.starts_with("Start-Date:") {
            // A stanza without End-Date (cut short) is closed by the next one.
            self.close(out);
            self.first_offset = at.offset;
            self.base_id = at.event_id();
            self.lines.push(line.to_string());
            return;
        }
        if line.is_empty() {
            return;
        }
        if self.lines.is_empty() {
            // Outside a stanza: a truncated or foreign line.
            STATS.count(&Parsed::Malformed);
            return;
        }
        if self.lines.len() < 64 {
            self.lines.push(line.to_string());
        }
        if line.starts_with("End-Date:") {
            self.close(out);
        }
    }

    fn pending_from(&self) -> Option<u64> {
        (!self.lines.is_empty()).then_some(self.first_offset)
    }

    fn flush(&mut self, _out: &mut Vec<Record>) {
        // An open stanza is still being written by apt: keep it until End-Date arrives (the
        // checkpoint stays at its start).
    }

    fn reset(&mut self) {
        self.lines.clear();
    }
}

/// Starts one follower per configured package log.
pub fn spawn(
    config: &PackagesConfig,
    env: Arc<Env>,
    sink: Arc<dyn RecordSink>,
    shutdown: Shutdown,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let host = env.host.host.clone();
    let mut add = |kind: &str, path: &Option<PathBuf>, handler: Box<dyn LineHandler>| {
        if let Some(p) = path.as_ref().filter(|p| !p.as_os_str().is_empty()) {
            tasks.push(spawn_file(
                format!("packages:{kind}:{}", p.display()),
                p.clone(),
                host.clone(),
                sink.clone(),
                shutdown.clone(),
                TailOptions::default(),
                handler,
            ));
        }
    };
    let e = env.clone();
    add(
        "dpkg",
        &config.dpkg_log,
        Box::new(LineParser::new(&STATS, move |l: &str| parse_dpkg(&e, l))),
    );
    add(
        "apt",
        &config.apt_history,
        Box::new(AptHistoryHandler::new(env.clone())),
    );
    let e = env.clone();
    let reference = config
        .yum_log
        .as_ref()
        .and_then(|p| std::fs::metadata(p).ok())
        .and_then(|m| m.modified().ok())
        .map(DateTime::<Utc>::from)
        .unwrap_or_else(Utc::now);
    let mut years = YearTracker::new(reference);
    add(
        "yum",
        &config.yum_log,
        Box::new(LineParser::new(&STATS, move |l: &str| {
            parse_yum(&e, &mut years, l)
        })),
    );
    let e = env.clone();
    add(
        "dnf",
        &config.dnf_rpm_log,
        Box::new(LineParser::new(&STATS, move |l: &str| parse_dnf(&e, l))),
    );
    tasks
}

#[cfg(test)]
mod tests;
