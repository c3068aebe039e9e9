//! Packaging and the first run: the generated config reference, `check-config`, environment
//! overrides, and (below) the systemd units, readiness notification and the .deb packages.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use groundtrail_tests::{Ready, bin, workspace_root};

/// Runs a workspace binary with no inherited GROUNDTRAIL_* variables plus `env`.
fn run(name: &str, args: &[&str], env: &[(&str, &str)], dir: Option<&Path>) -> Output {
    let mut cmd = Command::new(bin(name));
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("GROUNDTRAIL_") && k != "GROUNDTRAIL_BIN_DIR" {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    cmd.output().expect("run binary")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn example_file(which: &str) -> PathBuf {
    workspace_root().join(format!("packaging/config/{which}.example.toml"))
}

/// The checked-in references are exactly what the binaries generate from their config types:
/// a config change without `scripts/gen-config-examples.sh` fails here.
#[test]
fn config_examples_are_generated_and_current() {
    for (which, binary) in [
        ("collector", "groundtrail-collector"),
        ("agent", "groundtrail-agent"),
    ] {
        let out = run(binary, &["config", "--example"], &[], None);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{binary} config --example: {stderr}");
        let file = example_file(which);
        let checked_in = std::fs::read_to_string(&file).expect("read example");
        assert!(
            checked_in == stdout,
            "{} is out of date: run scripts/gen-config-examples.sh",
            file.display()
        );
        // Every line is a comment or blank, and the file is a valid config (the default).
        assert!(stdout.lines().all(|l| l.is_empty() || l.starts_with('#')));
        let out = run(
            binary,
            &["check-config", "--config", file.to_str().unwrap()],
            &[],
            None,
        );
        assert!(out.status.success(), "{}", text(&out).1);
    }
}

/// The example documents every field that the effective config prints.
#[test]
fn every_effective_field_is_in_the_example() {
    for (which, binary) in [
        ("collector", "groundtrail-collector"),
        ("agent", "groundtrail-agent"),
    ] {
        let out = run(binary, &["check-config"], &[], None);
        assert!(out.status.success(), "{}", text(&out).1);
        let effective: toml::Table = toml::from_str(&text(&out).0).expect("effective config");
        let example = std::fs::read_to_string(example_file(which)).unwrap();
        fn walk(prefix: &str, t: &toml::Table, example: &str, missing: &mut Vec<String>) {
            for (k, v) in t {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match v {
                    toml::Value::Table(sub) => {
                        if !example.contains(&format!("#[{path}]\n")) {
                            missing.push(path.clone());
                        }
                        walk(&path, sub, example, missing);
                    }
                    // An empty list is shown either way: as tables (`[[agents]]`) or as a
                    // value (`types = []`).
                    toml::Value::Array(a) if a.first().is_none_or(|v| v.is_table()) => {
                        let as_tables = example.contains(&format!("#[[{path}]]\n"));
                        let as_value = a.is_empty() && example.contains(&format!("\n#{k} = "));
                        if !as_tables && !as_value {
                            missing.push(path);
                        }
                    }
                    _ => {
                        if !example.contains(&format!("\n#{k} = ")) {
                            missing.push(path);
                        }
                    }
                }
            }
        }
        let mut missing = Vec::new();
        walk("", &effective, &example, &mut missing);
        assert!(
            missing.is_empty(),
            "{which}: not in the example: {missing:?}"
        );
    }
}

#[test]
fn check_config_errors_are_precise() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[trail]\ndigest_intervall = \"1h\"\n").unwrap();
    let out = run(
        "groundtrail-collector",
        &["check-config", "--config", bad.to_str().unwrap()],
        &[],
        None,
    );
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("bad.toml")
            && stderr.contains("digest_intervall")
            && stderr.contains("line 2"),
        "{stderr}"
    );
    std::fs::write(&bad, "[server]\nlisten = \"0.0.0.0:7480\"\n").unwrap();
    let out = run(
        "groundtrail-collector",
        &["check-config", "--config", bad.to_str().unwrap()],
        &[],
        None,
    );
    assert!(!out.status.success());
    assert!(text(&out).1.contains("[server] listen"), "{}", text(&out).1);

    std::fs::write(&bad, "[buffer]\nmax_bytes = \"10KB\"\n").unwrap();
    let out = run(
        "groundtrail-agent",
        &["check-config", "--config", bad.to_str().unwrap()],
        &[],
        None,
    );
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("buffer.max_bytes"),
        "{}",
        text(&out).1
    );
}

#[test]
fn environment_overrides_go_through_the_same_checks() {
    let out = run(
        "groundtrail-collector",
        &["check-config"],
        &[
            ("GROUNDTRAIL_COLLECTOR__TRAIL__NAME", "from-env"),
            ("GROUNDTRAIL_COLLECTOR__SERVER__MAX_CONNECTIONS", "7"),
            ("GROUNDTRAIL_COLLECTOR__DESTINATIONS__0__TYPE", "local"),
            ("GROUNDTRAIL_COLLECTOR__DESTINATIONS__0__PATH", "/srv/trail"),
        ],
        None,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let c: toml::Table = toml::from_str(&stdout).unwrap();
    assert_eq!(c["trail"]["name"].as_str(), Some("from-env"));
    assert_eq!(c["server"]["max_connections"].as_integer(), Some(7));
    assert_eq!(c["destinations"][0]["path"].as_str(), Some("/srv/trail"));

    // A misspelt variable is an unknown field, named with the variable.
    let out = run(
        "groundtrail-collector",
        &["check-config"],
        &[("GROUNDTRAIL_COLLECTOR__SERVER__LISEN", "127.0.0.1:1")],
        None,
    );
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("unknown field `lisen`")
            && stderr.contains("GROUNDTRAIL_COLLECTOR__SERVER__LISEN"),
        "{stderr}"
    );
    // An override of a file's value is validated like the file.
    let out = run(
        "groundtrail-collector",
        &[
            "check-config",
            "--config",
            example_file("collector").to_str().unwrap(),
        ],
        &[("GROUNDTRAIL_COLLECTOR__SERVER__LISTEN", "0.0.0.0:7480")],
        None,
    );
    assert!(!out.status.success());
    assert!(text(&out).1.contains("loopback"), "{}", text(&out).1);

    let out = run(
        "groundtrail-agent",
        &["check-config"],
        &[
            ("GROUNDTRAIL_AGENT__AGENT__ACCOUNT_ID", "123456789012"),
            (
                "GROUNDTRAIL_AGENT__COLLECTOR__URLS",
                r#"["http://collector:7480"]"#,
            ),
            ("GROUNDTRAIL_AGENT__SOURCES__AUDITD__ENABLED", "false"),
        ],
        None,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let c: toml::Table = toml::from_str(&stdout).unwrap();
    assert_eq!(c["agent"]["account_id"].as_str(), Some("123456789012"));
    assert_eq!(
        c["collector"]["urls"][0].as_str(),
        Some("http://collector:7480")
    );
    assert_eq!(c["sources"]["auditd"]["enabled"].as_bool(), Some(false));
    let out = run(
        "groundtrail-agent",
        &["check-config"],
        &[("GROUNDTRAIL_AGENT__BUFFER__MAX_BYTES", "10KB")],
        None,
    );
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("buffer.max_bytes"),
        "{}",
        text(&out).1
    );
}

// --- systemd ---------------------------------------------------------------------------------

/// `systemd-analyze`, or `None` (with a notice) to skip; under scripts/test.sh (which installs
/// Debian's `systemd` package when missing) its absence is a failure.
fn systemd_analyze() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("systemd-analyze"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            !groundtrail_tests::require_all(),
            "systemd-analyze is missing (apt-get install systemd)"
        );
        eprintln!("skipping: systemd-analyze is missing (apt-get install systemd)");
    }
    found
}

const UNITS: [&str; 2] = ["groundtrail-collector", "groundtrail-agent"];

/// The unit files, copied with `/usr/bin/` pointing at the built binaries (verify checks that
/// the commands exist).
fn units_for_this_build(dir: &Path) -> Vec<PathBuf> {
    let bin_dir = bin("groundtrail-collector")
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    UNITS
        .iter()
        .map(|u| {
            let src = workspace_root().join(format!("packaging/systemd/{u}.service"));
            let text = std::fs::read_to_string(&src).unwrap();
            let dst = dir.join(format!("{u}.service"));
            std::fs::write(&dst, text.replace("/usr/bin/", &format!("{bin_dir}/"))).unwrap();
            dst
        })
        .collect()
}

#[test]
fn systemd_units_verify() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for unit in units_for_this_build(dir.path()) {
        let out = Command::new(&analyze)
            .arg("verify")
            .arg(&unit)
            .env("SYSTEMD_LOG_COLOR", "0")
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "systemd-analyze verify {}: {stdout}{stderr}",
            unit.display()
        );
    }
}

/// Exposure scores of `systemd-analyze security --offline=true` (0 = locked down, 10 = none).
/// Measured: collector 1.2, agent 1.7 (CAP_DAC_READ_SEARCH, no PrivateUsers=).
#[test]
fn systemd_units_are_locked_down() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for unit in units_for_this_build(dir.path()) {
        let out = Command::new(&analyze)
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&unit)
            .env("SYSTEMD_COLORS", "0")
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        let score: f64 = stdout
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|rest| rest.split(": ").nth(1))
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no exposure score: {stdout}{stderr}"));
        eprintln!("{}: exposure {score}", unit.display());
        assert!(
            score <= 2.0,
            "{} exposure {score} > 2.0:\n{stdout}",
            unit.display()
        );
    }
    // The capability sets are what the comments say.
    let agent = std::fs::read_to_string(
        workspace_root().join("packaging/systemd/groundtrail-agent.service"),
    )
    .unwrap();
    assert!(agent.contains("\nCapabilityBoundingSet=CAP_DAC_READ_SEARCH\n"));
    let collector = std::fs::read_to_string(
        workspace_root().join("packaging/systemd/groundtrail-collector.service"),
    )
    .unwrap();
    assert!(collector.contains("\nCapabilityBoundingSet=\n"));
}

/// Receives sd_notify datagrams until one contains `want`.
fn expect_notify(sock: &std::os::unix::net::UnixDatagram, want: &str, seen: &mut Vec<String>) {
    let mut buf = [0u8; 4096];
    loop {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                seen.push(msg.clone());
                if msg.lines().any(|l| l == want) {
                    return;
                }
            }
            Err(e) => panic!("no {want} ({e}); got {seen:?}"),
        }
    }
}

/// The start of the answer to `GET /metrics` on `addr`.
/// A child process that is killed (and reaped) when dropped while still held.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn metrics_answer(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the reported address");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Type=notify: READY=1 once serving, naming the TCP addresses bound (`X_LISTEN_<ROLE>`, here
/// on port 0, and each answers), WATCHDOG=1 at half WATCHDOG_USEC, STOPPING=1 on SIGTERM, then
/// a clean exit.
#[test]
fn readiness_watchdog_and_stop_are_notified() {
    let listen = "127.0.0.1:0";
    // free_port: an address where no collector listens (the agent's shipper retries on).
    let dead_collector = format!("[\"http://127.0.0.1:{}\"]", groundtrail_tests::free_port());
    type Case<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, &'a str)>);
    let cases: [Case; 2] = [
        (
            "groundtrail-collector",
            vec!["serve"],
            vec![("GROUNDTRAIL_COLLECTOR__SERVER__LISTEN", listen)],
        ),
        (
            "groundtrail-agent",
            vec!["run"],
            vec![
                (
                    "GROUNDTRAIL_AGENT__COLLECTOR__URLS",
                    dead_collector.as_str(),
                ),
                ("GROUNDTRAIL_AGENT__SHIPPER__DRAIN_TIMEOUT_MS", "200"),
                ("GROUNDTRAIL_AGENT__CONTROL__METRICS_LISTEN", listen),
                ("GROUNDTRAIL_AGENT__SOURCES__AUTH_LOG__ENABLED", "false"),
                ("GROUNDTRAIL_AGENT__SOURCES__AUDITD__ENABLED", "false"),
                ("GROUNDTRAIL_AGENT__SOURCES__PACKAGES__ENABLED", "false"),
                ("GROUNDTRAIL_AGENT__SOURCES__FIM__ENABLED", "false"),
            ],
        ),
    ];
    for (binary, args, env) in cases {
        let dir = tempfile::tempdir().unwrap();
        let sock_path = dir.path().join("notify.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let mut cmd = Command::new(bin(binary));
        cmd.args(&args)
            .current_dir(dir.path())
            .env("NOTIFY_SOCKET", &sock_path)
            .env("WATCHDOG_USEC", "400000")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, _) in std::env::vars() {
            if k.starts_with("GROUNDTRAIL_") && k != "GROUNDTRAIL_BIN_DIR" {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().copied());
        // Killed if an assertion below fails before the SIGTERM, so no binary outlives the test.
        let mut child = KillOnDrop(Some(cmd.spawn().unwrap()));
        let pid = child.0.as_ref().expect("spawned").id();
        let mut seen = Vec::new();
        expect_notify(&sock, "READY=1", &mut seen);
        let role = if binary == "groundtrail-collector" {
            groundtrail_common::sd_notify::role::INGEST
        } else {
            groundtrail_common::sd_notify::role::METRICS
        };
        let ready = seen.last().expect("the READY=1 message");
        let addr = Ready::parse(ready)
            .and_then(|r| r.get(role))
            .unwrap_or_else(|| panic!("{binary}: no {role} listener in {ready:?}"));
        assert_ne!(addr.port(), 0, "{binary}: {ready:?}");
        let answer = metrics_answer(addr);
        assert!(
            answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
            "{binary}: GET /metrics on {addr} from {ready:?}: {answer:?}"
        );
        expect_notify(&sock, "WATCHDOG=1", &mut seen);
        expect_notify(&sock, "WATCHDOG=1", &mut seen);
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        expect_notify(&sock, "STOPPING=1", &mut seen);
        let out = child.0.take().expect("running").wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{binary}: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// --- .deb packages ---------------------------------------------------------------------------

fn has_tool(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{cmd:?}: {stdout}{stderr}");
    stdout
}

/// scripts/build-deb.sh builds both packages; their metadata, contents and maintainer scripts
/// are right, and they install into (and purge from) a scratch root with `dpkg --root`,
/// creating the system users and state directories there, never on this machine.
#[test]
fn deb_packages_build_and_install_into_a_scratch_root() {
    if !has_tool("dpkg-deb") || !has_tool("dpkg") {
        assert!(!groundtrail_tests::require_all(), "dpkg-deb is missing");
        eprintln!("skipping: dpkg-deb is missing");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let bin_dir = bin("groundtrail-collector").parent().unwrap().to_path_buf();
    let built = ok(Command::new(workspace_root().join("scripts/build-deb.sh"))
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--out")
        .arg(&out_dir)
        .arg("--fast"));
    let debs: Vec<PathBuf> = built.lines().map(PathBuf::from).collect();
    assert_eq!(debs.len(), 2, "{built}");
    for (deb, pkg, conf) in [
        (&debs[0], "groundtrail-collector", "collector"),
        (&debs[1], "groundtrail-agent", "agent"),
    ] {
        let info = ok(Command::new("dpkg-deb").arg("-I").arg(deb));
        assert!(info.contains(&format!("Package: {pkg}\n")), "{info}");
        assert!(info.contains("conffiles"), "{info}");
        let contents = ok(Command::new("dpkg-deb").arg("-c").arg(deb));
        for path in [
            format!("./usr/bin/{pkg}"),
            format!("./lib/systemd/system/{pkg}.service"),
            format!("./usr/lib/sysusers.d/{pkg}.conf"),
            format!("./etc/groundtrail/{conf}.toml"),
            format!("./usr/share/doc/{pkg}/{conf}.example.toml"),
        ] {
            assert!(
                contents.contains(&format!(" {path}\n")),
                "{path} missing:\n{contents}"
            );
        }
        assert!(contents.contains("-rw-r----- root/root"), "{contents}");
        let control = dir.path().join(format!("{pkg}-control"));
        ok(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&control));
        assert_eq!(
            std::fs::read_to_string(control.join("conffiles")).unwrap(),
            format!("/etc/groundtrail/{conf}.toml\n")
        );
        for script in ["postinst", "prerm", "postrm"] {
            ok(Command::new("sh").arg("-n").arg(control.join(script)));
        }
        let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
        assert!(postinst.contains("systemd-sysusers") && postinst.contains("DPKG_ROOT"));
    }

    // Install into a scratch root: the maintainer scripts run here with DPKG_ROOT set.
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("var/lib/dpkg/info")).unwrap();
    std::fs::create_dir_all(root.join("var/lib/dpkg/updates")).unwrap();
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    let dpkg = |args: &[&str]| {
        let mut cmd = Command::new("dpkg");
        cmd.arg(format!("--root={}", root.display()))
            .args([
                "--force-script-chrootless",
                "--force-depends",
                "--force-not-root",
            ])
            .args(args);
        ok(&mut cmd)
    };
    let mut install = vec!["-i"];
    install.extend(debs.iter().map(|d| d.to_str().unwrap()));
    dpkg(&install);
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    for (pkg, conf) in [
        ("groundtrail-collector", "collector"),
        ("groundtrail-agent", "agent"),
    ] {
        let uid: u32 = passwd
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{pkg}:x:")))
            .and_then(|rest| rest.split(':').next())
            .and_then(|u| u.parse().ok())
            .unwrap_or_else(|| panic!("no {pkg} user in the scratch root:\n{passwd}"));
        assert!(uid > 0 && uid < 1000, "{pkg} is not a system user: {uid}");
        let state = std::fs::metadata(root.join(format!("var/lib/{pkg}"))).unwrap();
        assert_eq!(state.uid(), uid);
        assert_eq!(state.permissions().mode() & 0o777, 0o700);
        let config = root.join(format!("etc/groundtrail/{conf}.toml"));
        let meta = std::fs::metadata(&config).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        assert_eq!(meta.uid(), 0);
        // The installed binary accepts the installed config.
        ok(Command::new(root.join(format!("usr/bin/{pkg}")))
            .args(["check-config", "--config"])
            .arg(&config));
    }
    let status = dpkg(&["-l"]);
    assert!(status.contains("ii  groundtrail-collector"), "{status}");

    dpkg(&["--purge", "groundtrail-agent", "groundtrail-collector"]);
    assert!(!root.join("var/lib/groundtrail-collector").exists());
    assert!(!root.join("usr/bin/groundtrail-agent").exists());
    assert!(!root.join("etc/groundtrail").exists());
}

// --- containers and Kubernetes ---------------------------------------------------------------

/// The TOML embedded in a manifest as the block scalar `  <key>: |` (4-space indented).
fn embedded_toml(manifest: &str, key: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in manifest.lines() {
        if line == format!("  {key}: |") {
            inside = true;
            continue;
        }
        if inside {
            if line.is_empty() {
                out.push('\n');
            } else if let Some(l) = line.strip_prefix("    ") {
                out.push_str(l);
                out.push('\n');
            } else {
                break;
            }
        }
    }
    assert!(!out.is_empty(), "no {key} block");
    out
}

/// A small structural check (no YAML parser in the workspace): documents separated by `---`,
/// each with apiVersion, kind and metadata.name, no tabs, balanced flow braces per line.
fn check_manifest(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(!text.contains('\t'), "{}: tab", path.display());
    let docs: Vec<&str> = text.split("\n---\n").skip(1).collect();
    assert!(!docs.is_empty(), "{}: no documents", path.display());
    for doc in &docs {
        for key in ["apiVersion: ", "kind: ", "metadata:\n", "  name: "] {
            assert!(
                doc.contains(&format!("\n{key}")) || doc.starts_with(key),
                "{}: a document without {key:?}:\n{doc}",
                path.display()
            );
        }
        for line in doc.lines() {
            let code = line.split(" # ").next().unwrap();
            assert_eq!(
                code.matches('{').count(),
                code.matches('}').count(),
                "{}: {line}",
                path.display()
            );
            assert_eq!(
                code.matches('[').count(),
                code.matches(']').count(),
                "{line}"
            );
        }
    }
    text
}

#[test]
fn kubernetes_manifests_and_their_configs_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    let etc = format!("{}/", dir.path().display());
    // The files the configs name, where the manifests mount them.
    std::fs::create_dir_all(dir.path().join("tls")).unwrap();
    std::fs::create_dir_all(dir.path().join("jwks")).unwrap();
    for f in [
        "ca.pem",
        "agent.pem",
        "agent.key",
        "server.pem",
        "server.key",
    ] {
        std::fs::write(dir.path().join("tls").join(f), "").unwrap();
    }
    // RFC 7517 appendix A.1's EC public key.
    std::fs::write(
        dir.path().join("jwks/jwks.json"),
        r#"{"keys":[{"kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YilurN5NvV4vaYM1hkaW-rXbU8cWUdlJtA","alg":"ES256","kid":"1"}]}"#,
    )
    .unwrap();
    let k8s = workspace_root().join("packaging/kubernetes");
    for (manifest, key, binary) in [
        ("collector.yaml", "collector.toml", "groundtrail-collector"),
        ("sidecar-example.yaml", "agent.toml", "groundtrail-agent"),
    ] {
        let manifest_text = check_manifest(&k8s.join(manifest));
        let config = embedded_toml(&manifest_text, key).replace("/etc/groundtrail/", &etc);
        let file = dir.path().join(key);
        std::fs::write(&file, config).unwrap();
        let out = run(
            binary,
            &["check-config", "--config", file.to_str().unwrap()],
            &[],
            None,
        );
        assert!(out.status.success(), "{manifest}: {}", text(&out).1);
    }
    let collector = std::fs::read_to_string(k8s.join("collector.yaml")).unwrap();
    for want in [
        "kind: StatefulSet",
        "volumeClaimTemplates:",
        "kind: Service",
        "replicas: 1",
        "runAsNonRoot: true",
        "mountPath: /var/lib/groundtrail",
    ] {
        assert!(collector.contains(want), "collector.yaml lacks {want}");
    }
    // The Containerfiles: multi-stage, distroless, non-root, config by file and environment.
    for which in ["collector", "agent"] {
        let path = workspace_root().join(format!("packaging/container/Containerfile.{which}"));
        let file = std::fs::read_to_string(&path).unwrap();
        assert_eq!(file.matches("\nFROM ").count(), 2, "{which}: two stages");
        assert!(file.contains("\nUSER 65532:65532\n"), "{which}: non-root");
        assert!(
            file.contains("GROUNDTRAIL_"),
            "{which}: environment documented"
        );
        assert!(file.contains(&format!("--bin groundtrail-{which}")));
        // Every GROUNDTRAIL_AGENT__ default the image sets is a valid override.
        let env: Vec<(String, String)> = file
            .lines()
            .filter(|l| !l.starts_with('#'))
            .flat_map(|l| l.split_whitespace())
            .filter_map(|w| w.split_once('='))
            .filter(|(k, _)| k.starts_with("GROUNDTRAIL_AGENT__"))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if which == "agent" {
            assert!(env.len() >= 4, "{env:?}");
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let out = run("groundtrail-agent", &["check-config"], &env, None);
            assert!(out.status.success(), "{}", text(&out).1);
        }
    }
}

// --- the quickstart --------------------------------------------------------------------------

/// The README's main command reaches a validated trail (with the already built binaries, in a
/// scratch directory).
#[test]
fn quickstart_ends_with_a_valid_trail() {
    let dir = tempfile::tempdir().unwrap();
    let qs = dir.path().join("qs");
    let bin_dir = bin("groundtrail-collector").parent().unwrap().to_path_buf();
    let out = Command::new(workspace_root().join("scripts/quickstart.sh"))
        .env("QUICKSTART_BIN_DIR", &bin_dir)
        .env("QUICKSTART_DIR", &qs)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for want in [
        "\"failed\": []",
        "billing.example.com IssueRefund",
        "1 x [medium] refund-burst: Three refunds by one user within five minutes: 3 matches",
        "1/1 digest files valid",
        "log files valid",
        "done: a validated CloudTrail trail",
    ] {
        assert!(
            stdout.contains(want),
            "{want:?} missing:\n{stdout}\n{stderr}"
        );
    }
    assert!(!stdout.contains("INVALID"), "{stdout}");
}
