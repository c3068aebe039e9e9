//! Lines per second parsed, per source, on this machine:
//! `cargo run --release -p groundtrail-agent --example bench_sources`.
//!
//! Uses the real samples in `../shared/host-logs` when present, else the committed beats
//! fixtures; each input is repeated until about a second of work. Also measures the follower
//! end to end (file -> lines -> records -> in-memory sink) on a 200k-line file.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use groundtrail_agent::host_identity::HostIdentity;
use groundtrail_agent::sources::auditd::AuditHandler;
use groundtrail_agent::sources::auth_log::AuthLogParser;
use groundtrail_agent::sources::host_accounts::Passwd;
use groundtrail_agent::sources::tail::{
    FileId, Follower, LineHandler, LineRef, MemorySink, TailOptions,
};
use groundtrail_agent::sources::{Env, JournaldConfig, Parsed, Zone, journald, packages};
use groundtrail_common::shutdown::Shutdown;

fn sample(rel: &str, fallback: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/host-logs")
        .join(rel);
    std::fs::read_to_string(p).unwrap_or_else(|_| fallback.to_string())
}

fn env() -> Arc<Env> {
    let host = HostIdentity {
        host: "bench".into(),
        account_id: "123456789012".into(),
        region: "onprem-1".into(),
        domain: "onprem.internal".into(),
        partition: "aws".into(),
    };
    Arc::new(Env::new(
        &host,
        Passwd::from_pairs(&[(0, "root"), (1000, "user")]),
        Zone::parse("UTC").unwrap(),
    ))
}

fn measure(name: &str, lines_per_round: usize, mut round: impl FnMut() -> usize) {
    let start = Instant::now();
    let mut lines = 0usize;
    let mut records = 0usize;
    while start.elapsed() < Duration::from_secs(1) {
        records += round();
        lines += lines_per_round;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{name:<28} {:>12.0} lines/s  ({lines} lines, {records} records)",
        lines as f64 / secs
    );
}

fn main() {
    let env = env();
    let fid = FileId {
        dev: 1,
        ino: 1,
        head_len: 1,
        head: "00".into(),
    };

    let auth = sample(
        "auth/loghub_OpenSSH_2k.log",
        include_str!("../tests/fixtures/auth/beats_system_auth_test.log"),
    );
    let n = auth.lines().count();
    measure("auth_log (sshd brute force)", n, || {
        let mut p = AuthLogParser::new(env.clone(), Utc::now());
        auth.lines()
            .filter(|l| matches!(p.parse(l), Parsed::Record(_)))
            .count()
    });

    let audit = sample(
        "audit/laurel_shell-proc-trace.log",
        include_str!("../tests/fixtures/audit/beats_auditd_rhel6.log"),
    );
    let n = audit.lines().count();
    measure("auditd (execve traces)", n, || {
        let mut h = AuditHandler::new(env.clone(), true);
        let mut out = Vec::new();
        let mut off = 0u64;
        for l in audit.lines() {
            h.line(
                l.as_bytes(),
                LineRef {
                    host: "bench",
                    file: &fid,
                    offset: off,
                },
                &mut out,
            );
            off += l.len() as u64 + 1;
        }
        h.flush(&mut out);
        out.len()
    });

    let dpkg = sample(
        "packages/pinga_debian10_dpkg.log",
        "2021-03-23 05:26:25 install base-passwd:amd64 <none> 3.5.46\n",
    );
    let n = dpkg.lines().count();
    measure("packages (dpkg.log)", n, || {
        dpkg.lines()
            .filter(|l| matches!(packages::parse_dpkg(&env, l), Parsed::Record(_)))
            .count()
    });

    let entries: Vec<String> = (0..1000)
        .map(|i| {
            serde_json::json!({
                "__CURSOR": format!("s=1;i={i}"),
                "__REALTIME_TIMESTAMP": "1700000000123456",
                "SYSLOG_IDENTIFIER": if i % 2 == 0 { "sshd" } else { "systemd" },
                "MESSAGE": if i % 2 == 0 { "Accepted password for root from 10.0.0.1 port 2 ssh2" } else { "Started x.service." },
                "UNIT": "x.service", "JOB_TYPE": "start", "JOB_RESULT": "done",
            })
            .to_string()
        })
        .collect();
    let cfg = JournaldConfig::default();
    measure("journald (json entries)", entries.len(), || {
        entries
            .iter()
            .filter_map(|e| serde_json::from_str(e).ok())
            .filter(|v| matches!(journald::parse_entry(&env, &cfg, v), Parsed::Record(_)))
            .count()
    });

    // End to end through the follower.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.log");
        let mut text = String::new();
        let lines: Vec<&str> = auth.lines().collect();
        let total = 200_000;
        for i in 0..total {
            text.push_str(lines[i % lines.len()]);
            text.push('\n');
        }
        std::fs::write(&path, text).unwrap();
        let sink = MemorySink::new();
        let (stop, rx) = tokio::sync::broadcast::channel(1);
        let f = Follower::new(
            &path,
            "bench",
            "bench",
            sink.clone(),
            TailOptions::default(),
        );
        let env2 = env.clone();
        let start = Instant::now();
        let task = tokio::spawn(async move {
            let mut p = AuthLogParser::new(env2, Utc::now());
            let mut h = groundtrail_agent::sources::LineParser::new(
                &groundtrail_agent::sources::auth_log::STATS,
                move |l: &str| p.parse(l),
            );
            f.run(&mut h, Shutdown::new(rx)).await
        });
        let expected = {
            let mut p = AuthLogParser::new(env.clone(), Utc::now());
            (0..total)
                .filter(|i| matches!(p.parse(lines[i % lines.len()]), Parsed::Record(_)))
                .count()
        };
        sink.wait_for(expected).await;
        let secs = start.elapsed().as_secs_f64();
        let _ = stop.send(());
        let stats = task.await.unwrap().unwrap();
        println!(
            "{:<28} {:>12.0} lines/s  ({} lines, {} records, {} appends)",
            "tail + auth_log end to end",
            stats.lines as f64 / secs,
            stats.lines,
            sink.len(),
            sink.appends()
        );
    });
}
