//! The cluster deployment files in `packaging/cluster/` and their guide, `docs/cluster.md`.
//!
//! An operator copies these files, so each is checked by the program that will read it:
//! the collector config by `check-config`, the NATS config by `nats-server -t` (which refuses
//! the unquoted durations a plain start only warns about), the units by `systemd-analyze
//! verify`, the user by `systemd-sysusers --dry-run`. Beyond that, three `nats-server`s and a
//! collector started from exactly these files (ports, paths and names rewritten for loopback)
//! form a working cluster over TLS, so the certificate requirements the guide states are the
//! ones that work. The guide names every `[cluster]` field and every cluster metric of the code,
//! so a new one cannot go undocumented.
//!
//! Missing tools (`nats-server`, `systemd-analyze`) skip with a notice, and fail under
//! `scripts/test.sh` (`GROUNDTRAIL_TESTS_REQUIRE_ALL=1`), as in the other packaging tests.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use groundtrail_tests::nats::nats_server;
use groundtrail_tests::{
    ACCOUNT, Readiness, bin, free_port, ndjson, record, require_all, workspace_root,
};

fn read(rel: &str) -> String {
    let path = workspace_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `text` with `from` replaced by `to`, which must occur: a file that changed shape fails here
/// instead of being tested half rewritten.
fn swap(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} is not in the file any more");
    text.replace(from, to)
}

/// A tool on the PATH, or `None` (with a notice) to skip; under scripts/test.sh, a failure.
fn on_path(name: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            !require_all(),
            "{name} is missing (apt-get install {package})"
        );
        eprintln!("skipping: {name} is missing (apt-get install {package})");
    }
    found
}

/// The names in `pub struct <name> { ... }` of a Rust source: its `pub <field>:` lines.
fn struct_fields(source: &str, name: &str) -> Vec<String> {
    let start = source
        .find(&format!("pub struct {name} {{"))
        .unwrap_or_else(|| panic!("no struct {name}"));
    let body = &source[start..];
    let body = &body[..body.find("\n}").expect("the struct ends")];
    body.lines()
        .filter_map(|l| l.trim().strip_prefix("pub "))
        .filter_map(|l| l.split_once(':').map(|(f, _)| f.trim().to_string()))
        .collect()
}

#[test]
fn the_guide_names_every_cluster_field_and_metric() {
    let guide = read("docs/cluster.md");
    let fields = struct_fields(&read("collector/src/cluster/config.rs"), "ClusterConfig");
    assert!(fields.len() >= 11, "{fields:?}");
    let metrics: Vec<String> = read("collector/src/cluster/metrics.rs")
        .split('"')
        .filter(|s| s.starts_with("groundtrail_cluster_"))
        .map(str::to_string)
        .collect();
    assert!(metrics.len() >= 13, "{metrics:?}");
    let objects = [
        "GT_RECORDS",
        "GT_SEEN",
        "GT_SHARDS",
        "GT_LEASES",
        "GT_FLOORS",
    ];
    let missing: Vec<&String> = fields
        .iter()
        .chain(&metrics)
        .filter(|name| !guide.contains(&format!("`{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/cluster.md does not name {missing:?}"
    );
    for object in objects {
        assert!(guide.contains(&format!("`{object}`")), "{object}");
    }
    // The version the guide asks for is the one the collector enforces.
    let nats = read("collector/src/cluster/nats.rs");
    assert!(nats.contains("MIN_SERVER: (u64, u64, u64) = (2, 12, 3)"));
    assert!(guide.contains("2.12.3 or newer"));
}

#[test]
fn the_collector_example_passes_check_config() {
    let file = workspace_root().join("packaging/cluster/collector.toml");
    let mut cmd = Command::new(bin("groundtrail-collector"));
    cmd.args(["check-config", "--config"]).arg(&file);
    for (k, _) in std::env::vars() {
        if k.starts_with("GROUNDTRAIL_") && k != "GROUNDTRAIL_BIN_DIR" {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let effective: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let cluster = effective["cluster"].as_table().unwrap();
    let urls = cluster["nats"].as_array().unwrap();
    assert_eq!(urls.len(), 3);
    assert!(
        urls.iter()
            .all(|u| u.as_str().unwrap().starts_with("tls://"))
    );
    assert_eq!(cluster["replicas"].as_integer(), Some(3));
    for f in ["tls_ca", "tls_cert", "tls_key"] {
        assert!(cluster.contains_key(f), "{f}");
    }
    assert_eq!(effective["destinations"][0]["type"].as_str(), Some("s3"));
    assert_eq!(effective["detection"]["enabled"].as_bool(), Some(false));
    // The stream fits in each NATS server's store, GT_SEEN beside it (decimal units: the
    // smaller reading of "16GB").
    let store = read("packaging/cluster/nats-server.conf")
        .lines()
        .find_map(|l| l.trim().strip_prefix("max_file_store: "))
        .and_then(|v| v.strip_suffix("GB"))
        .and_then(|n| n.parse::<i64>().ok())
        .expect("max_file_store: <n>GB")
        * 1_000_000_000;
    let stream = cluster["stream_max_bytes"].as_integer().unwrap();
    assert!(
        stream < store * 6 / 10,
        "stream_max_bytes {stream} leaves too little of max_file_store {store} for GT_SEEN"
    );
}

/// A CA, a certificate for the NATS servers (`localhost`, serverAuth and clientAuth, as routes
/// need) and a collector's client certificate, written as the packaged configs name them.
fn certificates(dir: &Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose as Eku, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_params = || {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(DnType::CommonName, "test NATS CA");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p
    };
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params().self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params(), &ca_key);
    let leaf = |name: &str, sans: Vec<String>, usages: Vec<Eku>| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = usages;
        (p.signed_by(&key, &issuer).unwrap(), key)
    };
    let (server, server_key) = leaf(
        "nats",
        vec!["localhost".into(), "127.0.0.1".into()],
        vec![Eku::ServerAuth, Eku::ClientAuth],
    );
    let (client, client_key) = leaf("collector-a", vec![], vec![Eku::ClientAuth]);
    std::fs::create_dir_all(dir).unwrap();
    for (name, pem) in [
        ("ca.pem", ca.pem()),
        ("server.pem", server.pem()),
        ("server.key", server_key.serialize_pem()),
        ("collector.pem", client.pem()),
        ("collector.key", client_key.serialize_pem()),
    ] {
        std::fs::write(dir.join(name), pem).unwrap();
    }
}

/// One NATS server's ports on loopback.
#[derive(Clone, Copy)]
struct Ports {
    client: u16,
    route: u16,
    monitor: u16,
}

/// The packaged NATS config as server `nats-<n>` (1-based) of `ports`, on loopback, with its
/// store under `dir` and the certificates in `tls`.
fn nats_config(n: usize, ports: &[Ports], dir: &Path, tls: &Path) -> String {
    let me = ports[n - 1];
    let mut conf = read("packaging/cluster/nats-server.conf");
    conf = swap(
        &conf,
        "server_name: nats-1",
        &format!("server_name: nats-{n}"),
    );
    conf = swap(
        &conf,
        "listen: 0.0.0.0:4222",
        &format!("listen: 127.0.0.1:{}", me.client),
    );
    conf = swap(
        &conf,
        "http: 127.0.0.1:8222",
        &format!("http: 127.0.0.1:{}", me.monitor),
    );
    conf = swap(
        &conf,
        "listen: 0.0.0.0:6222",
        &format!("listen: 127.0.0.1:{}", me.route),
    );
    for (i, p) in ports.iter().enumerate() {
        conf = swap(
            &conf,
            &format!("nats-route://nats-{}.example.net:6222", i + 1),
            &format!("nats-route://localhost:{}", p.route),
        );
    }
    conf = swap(&conf, "/etc/nats/tls/", &format!("{}/", tls.display()));
    let store = dir.join(format!("nats-{n}"));
    conf = swap(
        &conf,
        "store_dir: \"/var/lib/nats\"",
        &format!("store_dir: {:?}", store.display().to_string()),
    );
    // Small enough for any test machine's disk; the collector's stream is lowered to match.
    swap(&conf, "max_file_store: 16GB", "max_file_store: 1GB")
}

/// Durations written without quotes: `key: 30s`, `key: 2m`.
fn unquoted_durations(conf: &str) -> Vec<String> {
    conf.lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter(|l| {
            let Some((_, v)) = l.split_once(':') else {
                return false;
            };
            let v = v.trim().trim_end_matches(',');
            let digits = v.trim_end_matches(char::is_alphabetic);
            !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && ["ms", "s", "m", "h"].contains(&&v[digits.len()..])
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn the_nats_config_passes_nats_server_t_for_each_server() {
    let Some(nats) = nats_server("cluster_docs_nats_config") else {
        return;
    };
    let packaged = read("packaging/cluster/nats-server.conf");
    assert!(packaged.contains("\n  sync_interval: always\n"));
    assert_eq!(unquoted_durations(&packaged), Vec::<String>::new());
    assert_eq!(
        unquoted_durations("a: 2m\nb: \"2m\"\nc: 64GB\nd: always\n"),
        vec!["a: 2m"]
    );
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    certificates(&tls);
    // free_port: each server's config names the others' route ports before any starts, and
    // nats-server does not report a port it chose.
    let ports: Vec<Ports> = (0..3)
        .map(|_| Ports {
            client: free_port(),
            route: free_port(),
            monitor: free_port(),
        })
        .collect();
    for n in 1..=3 {
        let file = dir.path().join(format!("nats-{n}.conf"));
        std::fs::write(&file, nats_config(n, &ports, dir.path(), &tls)).unwrap();
        let out = Command::new(&nats)
            .arg("-t")
            .arg("-c")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nats-server -t nats-{n}: {}",
            text(&out)
        );
    }
    // What a plain start only warns about, -t refuses: the unit's ExecStartPre relies on it.
    let bad = dir.path().join("bad.conf");
    std::fs::write(
        &bad,
        nats_config(1, &ports, dir.path(), &tls)
            .replace("sync_interval: always", "sync_interval: 2m"),
    )
    .unwrap();
    let out = Command::new(&nats)
        .arg("-t")
        .arg("-c")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
}

#[test]
fn the_units_verify_and_the_nats_unit_is_locked_down() {
    let Some(analyze) = on_path("systemd-analyze", "systemd") else {
        return;
    };
    let Some(nats) = nats_server("cluster_docs_units") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The commands must exist for verify: point them at this build's binaries.
    let nats_unit = dir.path().join("nats-server.service");
    std::fs::write(
        &nats_unit,
        swap(
            &read("packaging/cluster/nats-server.service"),
            "/usr/local/bin/nats-server",
            nats.to_str().unwrap(),
        ),
    )
    .unwrap();
    let collector_unit = dir.path().join("groundtrail-collector.service");
    let bin_dir = bin("groundtrail-collector")
        .parent()
        .unwrap()
        .display()
        .to_string();
    std::fs::write(
        &collector_unit,
        swap(
            &read("packaging/systemd/groundtrail-collector.service"),
            "/usr/bin/",
            &format!("{bin_dir}/"),
        ),
    )
    .unwrap();
    // The drop-in beside the unit, where verify reads it.
    let drop_in = dir.path().join("groundtrail-collector.service.d");
    std::fs::create_dir_all(&drop_in).unwrap();
    std::fs::write(
        drop_in.join("cluster.conf"),
        read("packaging/cluster/groundtrail-collector.service.d/cluster.conf"),
    )
    .unwrap();
    let out = Command::new(&analyze)
        .arg("verify")
        .args([&nats_unit, &collector_unit])
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        text(&out)
    );
    let out = Command::new(&analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&nats_unit)
        .env("SYSTEMD_COLORS", "0")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let score: f64 = stdout
        .lines()
        .find_map(|l| l.split("Overall exposure level for ").nth(1))
        .and_then(|rest| rest.split(": ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score: {}", text(&out)));
    // Measured 1.2, as the collector's unit.
    assert!(
        score <= 2.0,
        "nats-server.service exposure {score}:\n{stdout}"
    );

    if let Some(sysusers) = on_path("systemd-sysusers", "systemd") {
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let out = Command::new(sysusers)
            .arg(format!("--root={}", root.display()))
            .arg("--dry-run")
            .arg(workspace_root().join("packaging/cluster/nats-server.sysusers"))
            .output()
            .unwrap();
        assert!(
            out.status.success() && text(&out).contains("Creating user 'nats'"),
            "{}",
            text(&out)
        );
    }
}

/// Child processes killed when the test ends, however it ends.
#[derive(Default)]
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `method path` on a loopback port over HTTP/1.0: the status and body, or `None` when
/// nothing answers.
fn http(port: u16, method: &str, path: &str, headers: &str, body: &[u8]) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let out = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = out.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Polls `f` every 200 ms until it returns `Some`; panics with `what` and `logs()` after 90 s.
fn wait<T>(what: &str, logs: impl Fn() -> String, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "gave up waiting for {what}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    format!(
        "--- {}\n{}\n",
        path.display(),
        lines[lines.len().saturating_sub(25)..].join("\n")
    )
}

/// Three NATS servers from the packaged config under `dir`, each seeing a meta leader and
/// fsyncing before it acknowledges; with fresh ports when one was taken before a server bound it.
fn start_nats(nats: &Path, dir: &Path, tls: &Path) -> (Processes, Vec<Ports>, Vec<PathBuf>) {
    let all_logs = |logs: &[PathBuf]| logs.iter().map(|l| tail(l)).collect::<String>();
    for attempt in 1..=3 {
        let ports: Vec<Ports> = (0..3)
            .map(|_| Ports {
                client: free_port(),
                route: free_port(),
                monitor: free_port(),
            })
            .collect();
        let mut procs = Processes::default();
        let mut logs = Vec::new();
        for n in 1..=3 {
            let conf = dir.join(format!("nats-{n}.conf"));
            std::fs::write(&conf, nats_config(n, &ports, dir, tls)).unwrap();
            let _ = std::fs::remove_dir_all(dir.join(format!("nats-{n}")));
            let log_path = dir.join(format!("nats-{n}.log"));
            let log = std::fs::File::create(&log_path).unwrap();
            procs.0.push(
                Command::new(nats)
                    .arg("-c")
                    .arg(&conf)
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    .spawn()
                    .unwrap(),
            );
            logs.push(log_path);
        }
        let clash = || {
            logs.iter().any(|l| {
                std::fs::read_to_string(l).is_ok_and(|t| t.contains("address already in use"))
            })
        };
        let mut ready = 0;
        let start = Instant::now();
        while ready < 3 && !clash() {
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "gave up waiting for a meta leader\n{}",
                all_logs(&logs)
            );
            let p = ports[ready];
            let seen = http(p.monitor, "GET", "/jsz", "", b"").and_then(|(status, body)| {
                let jsz: serde_json::Value = serde_json::from_str(&body).ok()?;
                if !jsz["config"].is_null() {
                    assert_eq!(jsz["config"]["sync_always"], true, "{body}");
                }
                let leader = jsz["meta_cluster"]["leader"].as_str().unwrap_or("");
                (status == 200 && !leader.is_empty() && jsz["meta_cluster"]["cluster_size"] == 3)
                    .then_some(())
            });
            match seen {
                Some(()) => ready += 1,
                None => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        if ready == 3 {
            return (procs, ports, logs);
        }
        assert!(attempt < 3, "ports kept clashing\n{}", all_logs(&logs));
        eprintln!("NATS: a port was taken before a server bound it; new ports");
    }
    unreachable!("the last attempt returns or panics")
}

/// The packaged NATS config on three servers and the packaged collector config form a
/// working cluster over TLS (client and route certificates as docs/cluster.md asks for):
/// the collector connects with its client certificate, creates the JetStream objects, writes
/// every shard, and acknowledges a batch.
#[test]
fn the_packaged_configs_form_a_cluster_over_tls() {
    let Some(nats) = nats_server("cluster_docs_tls_cluster") else {
        return;
    };
    let dir = tempfile::Builder::new()
        .prefix("gt-cluster-docs-")
        .tempdir_in("/tmp")
        .unwrap();
    let tls = dir.path().join("tls");
    certificates(&tls);
    let (mut procs, ports, logs) = start_nats(&nats, dir.path(), &tls);
    let all_logs = |logs: &[PathBuf]| logs.iter().map(|l| tail(l)).collect::<String>();

    let cdir = dir.path().join("collector");
    std::fs::create_dir_all(&cdir).unwrap();
    let mut conf = read("packaging/cluster/collector.toml");
    conf = swap(
        &conf,
        "listen = \"0.0.0.0:7480\"",
        "listen = \"127.0.0.1:0\"",
    );
    conf = swap(
        &conf,
        "listen = \"0.0.0.0:7481\"",
        "listen = \"127.0.0.1:0\"",
    );
    // Plain HTTP towards the test's agent: the agents' mTLS is the single-node setup's.
    for line in [
        "tls_cert = \"/etc/groundtrail/pki/server.pem\"\n",
        "tls_key = \"/etc/groundtrail/pki/server.key\"\n",
        "client_ca = \"/etc/groundtrail/pki/ca.pem\"\n",
    ] {
        conf = swap(&conf, line, "");
    }
    conf = swap(
        &conf,
        "/var/lib/groundtrail-collector/",
        &format!("{}/", cdir.display()),
    );
    conf = swap(
        &conf,
        "/etc/groundtrail/nats/",
        &format!("{}/", tls.display()),
    );
    for (i, p) in ports.iter().enumerate() {
        conf = swap(
            &conf,
            &format!("tls://nats-{}.example.net:4222", i + 1),
            &format!("tls://localhost:{}", p.client),
        );
    }
    conf = swap(
        &conf,
        "type = \"s3\"\nbucket = \"example-org-cloudtrail\"\nregion = \"eu-central-1\"\n",
        &format!(
            "type = \"local\"\npath = {:?}\n",
            cdir.join("trail").display().to_string()
        ),
    );
    conf = swap(
        &conf,
        "stream_max_bytes = 8589934592",
        "stream_max_bytes = 67108864",
    );
    let conf_path = cdir.join("collector.toml");
    std::fs::write(&conf_path, conf).unwrap();
    let clog = cdir.join("collector.log");
    let log = std::fs::File::create(&clog).unwrap();
    let mut cmd = Command::new(bin("groundtrail-collector"));
    cmd.args(["serve", "--config"])
        .arg(&conf_path)
        .current_dir(&cdir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    for (k, _) in std::env::vars() {
        if k.starts_with("GROUNDTRAIL_") && k != "GROUNDTRAIL_BIN_DIR" {
            cmd.env_remove(k);
        }
    }
    // Both listeners on port 0: the ports come with its READY=1.
    let mut readiness = Readiness::new();
    cmd.env("NOTIFY_SOCKET", &readiness.path);
    procs.0.push(cmd.spawn().unwrap());
    let everything = || format!("{}{}", tail(&clog), all_logs(&logs));
    let listen = wait("the collector's READY=1", everything, || {
        readiness
            .poll()
            .map(|r| r.addr(groundtrail_common::sd_notify::role::INGEST).port())
    });
    wait("the collector to write all 16 shards", everything, || {
        let (_, body) = http(listen, "GET", "/metrics", "", b"")?;
        body.lines()
            .any(|l| l == "groundtrail_cluster_shards_owned 16")
            .then_some(())
    });
    // A batch from the agent the config lists is acknowledged: published and replicated.
    let batch = ndjson(&[record(ACCOUNT, "eu-central-1")]);
    let (status, body) = http(
        listen,
        "POST",
        "/v1/events",
        "Content-Type: application/x-ndjson\r\nX-Groundtrail-Agent: web-1\r\n",
        &batch,
    )
    .unwrap_or_else(|| panic!("no answer to the batch\n{}", everything()));
    assert_eq!(status, 200, "{body}\n{}", everything());
    assert!(body.contains("\"committed\":1"), "{body}");
}
