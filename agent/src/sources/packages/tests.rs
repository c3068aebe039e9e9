//! Package catalog rows -> the expected records. Real dpkg/apt logs (ServerLog, log.pinga) are
//! read from `../shared/host-logs` when present; no permissively licensed package log sample
//! exists, so the always-run rows are in the tools' exact formats (`tool format`).

use std::sync::Arc;

use chrono::TimeZone;

use super::*;
use crate::sources::tail::FileId;
use crate::sources::testutil::{env, rec, shared_sample};

fn apt(text: &str) -> Vec<Record> {
    let mut h = AptHistoryHandler::new(Arc::new(env()));
    let id = FileId {
        dev: 1,
        ino: 2,
        head_len: 1,
        head: "ab".into(),
    };
    let mut out = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let at = LineRef {
            host: "web1",
            file: &id,
            offset,
        };
        h.line(line.trim_end_matches('\n').as_bytes(), at, &mut out);
        offset += line.len() as u64;
    }
    for r in &out {
        r.validate().unwrap();
    }
    out
}

#[test]
fn dpkg_rows() {
    let e = env();
    // tool format (dpkg's log_message "%s %s %s %s" for install/upgrade/remove/purge).
    let r = rec(parse_dpkg(
        &e,
        "2021-03-23 05:26:25 install base-passwd:amd64 <none> 3.5.46",
    ));
    assert_eq!(
        (r.event_source.as_str(), r.event_name.as_str()),
        ("packages.onprem.internal", "InstallPackage")
    );
    assert_eq!(r.event_time, "2021-03-23T05:26:25Z");
    assert_eq!(
        r.request_parameters,
        Some(json!({"packageName": "base-passwd", "architecture": "amd64", "version": "3.5.46"}))
    );
    assert_eq!(
        r.resources.as_ref().unwrap()[0].arn.as_deref(),
        Some("arn:aws:packages:onprem-1:123456789012:package/web1/base-passwd")
    );
    assert_eq!(r.user_agent.as_deref(), Some("dpkg"));
    let r = rec(parse_dpkg(
        &e,
        "2016-03-07 02:23:48 upgrade python3.4:amd64 3.4.0-2ubuntu1.1 3.4.3-1ubuntu1~14.04.3",
    ));
    assert_eq!(r.event_name, "UpgradePackage");
    assert_eq!(
        r.request_parameters.as_ref().unwrap()["previousVersion"],
        "3.4.0-2ubuntu1.1"
    );
    let r = rec(parse_dpkg(
        &e,
        "2024-01-02 10:00:00 remove nano:amd64 7.2-1 <none>",
    ));
    assert_eq!(r.event_name, "RemovePackage");
    let r = rec(parse_dpkg(
        &e,
        "2024-01-02 10:00:01 purge nano:amd64 7.2-1 <none>",
    ));
    assert_eq!(r.request_parameters.as_ref().unwrap()["purge"], true);
    for l in [
        "2016-03-07 02:23:43 startup archives unpack",
        "2016-03-07 02:23:48 status half-configured python3.4:amd64 3.4.0-2ubuntu1.1",
        "2021-03-23 05:26:25 configure base-passwd:amd64 3.5.46 3.5.46",
    ] {
        assert_eq!(parse_dpkg(&e, l), Parsed::Ignored, "{l}");
    }
    for l in [
        "",
        "2016-03-07",
        "2016-03-07 02:2",
        "2016-03-07 02:23:48 upgrade python3.4:amd64",
        "2016-13-07 02:23:48 install a b c",
    ] {
        assert_eq!(parse_dpkg(&e, l), Parsed::Malformed, "{l}");
    }
    assert_eq!(
        parse_dpkg(&e, "2016-03-07 02:23:48 frobnicate x"),
        Parsed::Unrecognized
    );
}

#[test]
fn rpm_rows() {
    let e = env();
    // tool format: dnf.rpm.log (hawkey) and yum.log.
    let r = rec(parse_dnf(
        &e,
        "2022-03-23T16:46:43-0400 SUBDEBUG Installed: elfutils-0.186-1.el9.x86_64",
    ));
    assert_eq!(r.event_name, "InstallPackage");
    assert_eq!(r.event_time, "2022-03-23T20:46:43Z");
    assert_eq!(
        r.request_parameters,
        Some(
            json!({"packageName": "elfutils", "version": "0.186-1.el9", "architecture": "x86_64"})
        )
    );
    let r = rec(parse_dnf(
        &e,
        "2026-02-14T09:30:12+0000 SUBDEBUG Upgrade: openssl-libs-1:3.2.2-6.el9.x86_64",
    ));
    assert_eq!(r.event_name, "UpgradePackage");
    assert_eq!(
        r.request_parameters.as_ref().unwrap()["version"],
        "1:3.2.2-6.el9"
    );
    assert_eq!(
        parse_dnf(
            &e,
            "2026-02-14T09:30:14+0000 SUBDEBUG Upgraded: openssl-libs-1:3.0.7-27.el9.x86_64"
        ),
        Parsed::Ignored
    );
    let r = rec(parse_dnf(
        &e,
        "2026-09-26T10:00:07+0000 SUBDEBUG Erase: nano-8.1-1.fc41.x86_64",
    ));
    assert_eq!(r.event_name, "RemovePackage");
    assert_eq!(
        parse_dnf(
            &e,
            "2026-01-10T08:00:00+0000 INFO --- logging initialized ---"
        ),
        Parsed::Ignored
    );
    assert_eq!(parse_dnf(&e, "2026-01-10T08:00"), Parsed::Malformed);

    let mut years = YearTracker::new(Utc.with_ymd_and_hms(2020, 10, 5, 0, 0, 0).unwrap());
    let r = rec(parse_yum(
        &e,
        &mut years,
        "Oct 04 14:39:17 Installed: tree-1.6.0-10.el7.x86_64",
    ));
    assert_eq!(r.event_time, "2020-10-04T14:39:17Z");
    assert_eq!(
        r.request_parameters.as_ref().unwrap()["packageName"],
        "tree"
    );
    assert_eq!(r.user_agent.as_deref(), Some("yum"));
    let r = rec(parse_yum(
        &e,
        &mut years,
        "Oct 04 14:40:00 Updated: 1:java-1.8.0-openjdk-1.8.0.262.b10-0.el7_8.x86_64",
    ));
    assert_eq!(r.event_name, "UpgradePackage");
    assert_eq!(
        r.request_parameters.as_ref().unwrap()["packageName"],
        "java-1.8.0-openjdk"
    );
    let r = rec(parse_yum(&e, &mut years, "Oct 04 14:41:00 Erased: tree"));
    assert_eq!(
        (
            r.event_name.as_str(),
            r.request_parameters.as_ref().unwrap()["packageName"].as_str()
        ),
        ("RemovePackage", Some("tree"))
    );
    assert_eq!(parse_yum(&e, &mut years, "Oct 04 14:4"), Parsed::Malformed);
}

#[test]
fn apt_stanzas() {
    // tool format: apt's history.log (Remove/Purge have no real sample here).
    let text = "\
Start-Date: 2024-01-02  10:00:00
Commandline: apt purge nano
Requested-By: alice (1000)
Purge: nano:amd64 (7.2-1)
End-Date: 2024-01-02  10:00:02

Start-Date: 2024-01-03  11:00:00
Commandline: apt-get install -y curl
Install: libcurl4:amd64 (7.88.1-10, automatic), curl:amd64 (7.88.1-10)
Upgrade: libssl3:amd64 (3.0.9-1, 3.0.11-1)
End-Date: 2024-01-03  11:00:05
Start-Date: 2024-01-04  12:00:00
Commandline: apt-get install broken
";
    let out = apt(text);
    assert_eq!(out.len(), 3, "the last stanza is still open");
    let r = &out[0];
    assert_eq!(
        (r.event_name.as_str(), r.user_agent.as_deref()),
        ("RemovePackage", Some("apt"))
    );
    assert_eq!(
        r.user_identity.as_ref().unwrap().user_name.as_deref(),
        Some("alice")
    );
    assert_eq!(r.request_parameters.as_ref().unwrap()["purge"], true);
    assert_eq!(r.event_time, "2024-01-02T10:00:00Z");
    let r = &out[1];
    assert_eq!(r.event_name, "InstallPackage");
    assert_eq!(
        r.user_identity.as_ref().unwrap().user_name.as_deref(),
        Some("root")
    );
    assert_eq!(
        r.request_parameters.as_ref().unwrap()["packages"],
        json!([
            {"packageName": "libcurl4", "architecture": "amd64", "version": "7.88.1-10", "automatic": true},
            {"packageName": "curl", "architecture": "amd64", "version": "7.88.1-10"}
        ])
    );
    assert_eq!(r.resources.as_ref().unwrap().len(), 2);
    let r = &out[2];
    assert_eq!(r.event_name, "UpgradePackage");
    assert_eq!(
        r.request_parameters.as_ref().unwrap()["packages"][0]["previousVersion"],
        "3.0.9-1"
    );
    assert_ne!(out[1].event_id, out[2].event_id);
    // Deterministic.
    assert_eq!(apt(text)[2].event_id, out[2].event_id);
}

#[test]
fn shared_dpkg_logs() {
    for f in [
        "packages/serverlog_ubuntu1404_dpkg.log",
        "packages/pinga_debian10_dpkg.log",
    ] {
        let Some(text) = shared_sample(f) else { return };
        let e = env();
        let out: Vec<Parsed> = text.lines().map(|l| parse_dpkg(&e, l)).collect();
        let expected = text
            .lines()
            .filter(|l| {
                let a = l.split(' ').nth(2).unwrap_or("");
                matches!(a, "install" | "upgrade" | "remove" | "purge")
            })
            .count();
        let records = out
            .iter()
            .filter(|p| matches!(p, Parsed::Record(_)))
            .count();
        assert_eq!(records, expected, "{f}");
        assert!(expected > 50);
        assert_eq!(
            out.iter().filter(|p| **p == Parsed::Malformed).count(),
            0,
            "{f}"
        );
        assert_eq!(
            out.iter().filter(|p| **p == Parsed::Unrecognized).count(),
            0,
            "{f}"
        );
    }
}

#[test]
fn shared_apt_histories() {
    for f in [
        "packages/serverlog_ubuntu1404_apt_history.log",
        "packages/pinga_debian10_apt_history.log",
    ] {
        let Some(text) = shared_sample(f) else { return };
        let out = apt(&text);
        let kinds = text
            .lines()
            .filter(|l| {
                [
                    "Install:",
                    "Upgrade:",
                    "Remove:",
                    "Purge:",
                    "Downgrade:",
                    "Reinstall:",
                ]
                .iter()
                .any(|k| l.starts_with(k))
            })
            .count();
        assert_eq!(out.len(), kinds, "{f}");
        let requested = text
            .lines()
            .filter(|l| l.starts_with("Requested-By:"))
            .count();
        if requested > 0 {
            assert!(out
                .iter()
                .any(|r| r.user_identity.as_ref().unwrap().user_name.as_deref() != Some("root")));
        }
    }
}
