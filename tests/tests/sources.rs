//! End to end for the host sources (issue 4): lines appended to a temporary auth log, audit log
//! and dpkg log while the real `groundtrail-agent` runs reach the real `groundtrail-collector`'s
//! trail as the expected CloudTrail records, each exactly once, also across an agent restart;
//! and the trail validates.
//!
//! The auth and audit lines are the real elastic/beats samples the agent carries in
//! `agent/tests/fixtures/` (Apache-2.0, provenance in its README), copied byte for byte. No
//! permissively licensed dpkg.log sample exists; the dpkg lines follow dpkg's exact log format
//! (`tool format`), as in the agent's own unit tests.
//!
//! Nothing asserts on time: waits poll until the trail holds what is expected (or give up
//! after the harness's generous deadline).

use std::io::Write;
use std::path::Path;

use groundtrail_tests::*;
use serde_json::Value;

const HOST: &str = "gt-e2e-host";

fn fixture(rel: &str) -> String {
    let p = workspace_root().join("agent/tests/fixtures").join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Appends `text` line by line (one write per line, as a logger does).
fn append_lines(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open log for append");
    for line in text.lines() {
        f.write_all(format!("{line}\n").as_bytes())
            .expect("append line");
    }
    f.sync_all().expect("sync");
}

/// One record the trail must hold exactly once.
struct Expected {
    source: &'static str,
    name: &'static str,
    /// The end of `eventTime` (classic syslog lines get their year from the file's mtime, so
    /// those are given without the year).
    time: &'static str,
    /// A JSON pointer and the value it must have, to tell records of the same second apart.
    detail: Option<(&'static str, &'static str)>,
}

const fn e(
    source: &'static str,
    name: &'static str,
    time: &'static str,
    detail: Option<(&'static str, &'static str)>,
) -> Expected {
    Expected {
        source,
        name,
        time,
        detail,
    }
}

impl Expected {
    fn matches(&self, r: &Value) -> bool {
        r["eventSource"] == format!("{}.onprem.internal", self.source)
            && r["eventName"] == self.name
            && r["eventTime"]
                .as_str()
                .is_some_and(|t| t.ends_with(self.time))
            && self
                .detail
                .is_none_or(|(ptr, v)| r.pointer(ptr).and_then(Value::as_str) == Some(v))
    }

    fn describe(&self) -> String {
        format!(
            "{}/{} at …{} {:?}",
            self.source, self.name, self.time, self.detail
        )
    }
}

/// Records appended before the restart: `beats_system_auth_test.log` (9 records, one line is
/// noise), `beats_auditd_rhel6.log` (a sudo command and its session; the rest is ignored),
/// `beats_auditd_test_excerpt.log` (an rpm install and an EXECVE), and dpkg lines.
fn first_leg() -> Vec<Expected> {
    vec![
        e(
            "sshd",
            "ConsoleLogin",
            "-02-21T21:54:44Z",
            Some(("/sourceIPAddress", "10.0.2.2")),
        ),
        e(
            "sshd",
            "ConsoleLogin",
            "-02-23T00:13:35Z",
            Some(("/sourceIPAddress", "192.168.33.1")),
        ),
        e(
            "sshd",
            "ConsoleLogin",
            "-02-21T21:56:12Z",
            Some(("/errorCode", "AccessDenied")),
        ),
        e(
            "sshd",
            "ConsoleLogin",
            "-02-20T08:35:22Z",
            Some(("/sourceIPAddress", "216.160.83.57")),
        ),
        e(
            "sudo",
            "RunCommand",
            "-02-21T23:35:33Z",
            Some(("/requestParameters/command", "/bin/ls")),
        ),
        e(
            "sudo",
            "RunCommand",
            "-02-23T00:08:48Z",
            Some(("/requestParameters/command", "/bin/cat /var/log/secure")),
        ),
        e(
            "sudo",
            "RunCommand",
            "-02-24T00:13:02Z",
            Some(("/errorMessage", "user NOT in sudoers")),
        ),
        e(
            "iam",
            "CreateGroup",
            "-02-22T11:47:05Z",
            Some(("/requestParameters/groupName", "apache")),
        ),
        e(
            "iam",
            "CreateUser",
            "-02-22T11:47:05Z",
            Some(("/requestParameters/userName", "apache")),
        ),
        // auditd
        e(
            "sudo",
            "RunCommand",
            "2017-03-14T19:20:56Z",
            Some((
                "/requestParameters/command",
                "/usr/lib64/nagios/plugins/check_asterisk_sip_peers -p 202",
            )),
        ),
        e("sudo", "AssumeRole", "2017-03-14T19:20:56Z", None),
        e(
            "packages",
            "InstallPackage",
            "2019-11-15T19:01:24Z",
            Some(("/requestParameters/packageName", "gcc")),
        ),
        e(
            "exec",
            "RunCommand",
            "2020-02-10T21:59:44Z",
            Some(("/requestParameters/command", "top")),
        ),
        // dpkg
        e(
            "packages",
            "InstallPackage",
            "2024-01-02T10:00:01Z",
            Some(("/requestParameters/packageName", "htop")),
        ),
        e(
            "packages",
            "UpgradePackage",
            "2016-03-07T02:23:48Z",
            Some(("/requestParameters/packageName", "python3.4")),
        ),
    ]
}

/// dpkg lines of the first leg (`tool format`: dpkg's `log_message` shapes).
const DPKG_1: &str = "\
2024-01-02 10:00:00 startup archives unpack
2024-01-02 10:00:01 install htop:amd64 <none> 3.3.0-4
2024-01-02 10:00:01 status half-installed htop:amd64 3.3.0-4
2016-03-07 02:23:48 upgrade python3.4:amd64 3.4.0-2ubuntu1.1 3.4.3-1ubuntu1~14.04.3
";

/// Records appended while the agent was stopped: `beats_secure_rhel7_excerpt.log` (two
/// failed and one accepted login, a logout; nine noise lines), `beats_auditd_useradd.log`
/// (group, user, password), `beats_auditd_cent7_node.log` (six unit starts), dpkg removals.
fn second_leg() -> Vec<Expected> {
    let mut v = vec![
        e(
            "sshd",
            "ConsoleLogin",
            "-02-22T16:48:03Z",
            Some(("/sourceIPAddress", "202.109.143.106")),
        ),
        e(
            "sshd",
            "ConsoleLogin",
            "-02-22T16:48:04Z",
            Some(("/sourceIPAddress", "69.245.39.97")),
        ),
        e(
            "sshd",
            "Logout",
            "-02-22T16:48:04Z",
            Some(("/userIdentity/userName", "drewr")),
        ),
        e(
            "sshd",
            "ConsoleLogin",
            "-02-22T16:48:05Z",
            Some(("/sourceIPAddress", "116.31.116.27")),
        ),
        e("iam", "CreateGroup", "2021-01-17T17:12:33Z", None),
        e("iam", "CreateUser", "2021-01-17T17:12:33Z", None),
        e(
            "iam",
            "UpdateLoginProfile",
            "2021-01-17T17:12:38Z",
            Some(("/requestParameters/userName", "charlie")),
        ),
        e(
            "packages",
            "RemovePackage",
            "2024-01-02T10:00:05Z",
            Some(("/requestParameters/previousVersion", "7.2-1")),
        ),
        e(
            "packages",
            "RemovePackage",
            "2024-01-02T10:00:06Z",
            Some(("/requestParameters/packageName", "nano")),
        ),
    ];
    for unit in [
        "auditd",
        "systemd-update-utmp",
        "rngd",
        "irqbalance",
        "abrtd",
        "abrt-xorg",
    ] {
        v.push(e(
            "systemd",
            "StartService",
            "2020-07-06T16:38:34Z",
            Some(("/requestParameters/unit", unit)),
        ));
    }
    v
}

/// dpkg lines of the second leg (`tool format`).
const DPKG_2: &str = "\
2024-01-02 10:00:05 remove nano:amd64 7.2-1 <none>
2024-01-02 10:00:05 status not-installed nano:amd64 <none>
2024-01-02 10:00:06 purge nano:amd64 7.2-1 <none>
";

/// The records of the host sources in the trail (the agent's own AgentStart/AgentStop left out).
async fn host_records(store: &Store) -> Vec<Value> {
    store
        .records()
        .await
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| {
            !r["eventSource"]
                .as_str()
                .unwrap_or_default()
                .starts_with("groundtrail.")
        })
        .collect()
}

/// Waits until every expected record is in the trail, then checks each is there exactly once,
/// that nothing else came from the host sources, and that no eventID repeats.
async fn wait_exactly(store: &Store, expected: &[&Expected], agent: &AgentProcess) -> Vec<Value> {
    let start = std::time::Instant::now();
    let records = loop {
        let records = host_records(store).await;
        let missing: Vec<String> = expected
            .iter()
            .filter(|x| !records.iter().any(|r| x.matches(r)))
            .map(|x| x.describe())
            .collect();
        if missing.is_empty() {
            break records;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "never reached the trail: {missing:#?}\nrecords so far: {}\nagent log:\n{}",
            serde_json::to_string_pretty(&records).unwrap_or_default(),
            agent.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    for x in expected {
        let n = records.iter().filter(|r| x.matches(r)).count();
        assert_eq!(n, 1, "{} is in the trail {n} times", x.describe());
    }
    let unexpected: Vec<&Value> = records
        .iter()
        .filter(|r| !expected.iter().any(|x| x.matches(r)))
        .collect();
    assert!(
        unexpected.is_empty(),
        "records nobody appended a line for (or repeats): {}",
        serde_json::to_string_pretty(&unexpected).unwrap_or_default()
    );
    let counts = store.event_id_counts().await;
    for r in &records {
        let id = r["eventID"].as_str().expect("eventID");
        assert_eq!(counts[id], 1, "eventID {id} repeats");
    }
    records
}

fn find<'a>(records: &'a [Value], x: &Expected) -> &'a Value {
    records
        .iter()
        .find(|r| x.matches(r))
        .expect("checked present")
}

/// `groundtrail_source_lines_total` of `source` on the agent's metrics page: `records` and
/// `ignored` as given, nothing unrecognized or malformed.
fn assert_source_lines(agent: &AgentProcess, source: &str, records: u64, ignored: u64) {
    let metrics = agent.metrics();
    for (outcome, n) in [
        ("records", records),
        ("ignored", ignored),
        ("unrecognized", 0),
        ("malformed", 0),
    ] {
        let line = format!(
            "groundtrail_source_lines_total{{source=\"{source}\",outcome=\"{outcome}\"}} {n}"
        );
        assert!(
            metrics.lines().any(|l| l == line),
            "expected `{line}` on the metrics page:\n{metrics}"
        );
    }
}

fn user_arn(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:user/{HOST}/{name}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_auth_audit_and_dpkg_lines_reach_the_trail_exactly_once_across_a_restart() {
    let started = chrono::Utc::now();
    let dir = tempfile::Builder::new()
        .prefix("gt-sources-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let d = dir.path();
    let trail = d.join("trail");
    let mut collector = Collector::start(
        &d.join("collector"),
        Spec::new(Dest::Local {
            path: trail.clone(),
            bucket: "sources-trail".into(),
        }),
    )
    .await;

    // The inputs exist (empty) before the agent starts; lines arrive while it runs.
    let logs = d.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let (auth, audit, dpkg, passwd) = (
        logs.join("auth.log"),
        logs.join("audit.log"),
        logs.join("dpkg.log"),
        logs.join("passwd"),
    );
    for f in [&auth, &audit, &dpkg] {
        std::fs::write(f, "").unwrap();
    }
    // The uids of the audit samples: 700 logged in and ran a nagios check as 497; 1000 ran
    // useradd, passwd and yum.
    std::fs::write(
        &passwd,
        "root:x:0:0:root:/root:/bin/bash\n\
         nagios:x:497:497::/var/spool/nagios:/sbin/nologin\n\
         ops:x:700:700::/home/ops:/bin/bash\n\
         alice:x:1000:1000::/home/alice:/bin/bash\n",
    )
    .unwrap();
    let q = |p: &Path| serde_json::to_string(&p.display().to_string()).unwrap();
    let adir = d.join("agent");
    let config = format!(
        "{head}[sources]\npasswd_path = {passwd}\ntimezone = \"UTC\"\n\n\
         [sources.auth_log]\npath = {auth}\n\n\
         [sources.auditd]\npath = {audit}\nexecve = true\n\n\
         [sources.packages]\ndpkg_log = {dpkg}\napt_history = \"\"\nyum_log = \"\"\ndnf_rpm_log = \"\"\n\n\
         [sources.fim]\nenabled = false\n\n\
         [sources.journald]\nenabled = false\n",
        head = agent_config_head(&adir, HOST, &[format!("http://{}", collector.addr)]),
        passwd = q(&passwd),
        auth = q(&auth),
        audit = q(&audit),
        dpkg = q(&dpkg),
    );
    let mut agent = AgentProcess::start(&adir, &config).await;
    let store = Store::Local(trail);

    // First leg: append while the agent runs.
    append_lines(&auth, &fixture("auth/beats_system_auth_test.log"));
    append_lines(&audit, &fixture("audit/beats_auditd_rhel6.log"));
    append_lines(&audit, &fixture("audit/beats_auditd_test_excerpt.log"));
    append_lines(&dpkg, DPKG_1);
    let first = first_leg();
    let records = wait_exactly(&store, &first.iter().collect::<Vec<_>>(), &agent).await;

    for r in &records {
        assert_eq!(r["recipientAccountId"], ACCOUNT, "{r}");
        assert_eq!(r["awsRegion"], REGION, "{r}");
        assert_eq!(r["readOnly"], false, "{r}");
    }
    // Every line is counted by outcome: the one noise line of the auth sample and dpkg's
    // startup/status lines are ignored, not errors.
    assert_source_lines(&agent, "auth_log", 9, 1);
    assert_source_lines(&agent, "packages", 2, 2);
    // An ssh login with a public key: the person, from the ssh peer, on the user resource.
    let r = find(&records, &first[0]);
    assert_eq!(r["eventType"], "AwsConsoleSignIn", "{r}");
    assert_eq!(r["userIdentity"]["type"], "IAMUser", "{r}");
    assert_eq!(r["userIdentity"]["arn"], user_arn("vagrant"), "{r}");
    assert_eq!(r["userIdentity"]["accountId"], ACCOUNT, "{r}");
    assert_eq!(r["responseElements"]["ConsoleLogin"], "Success", "{r}");
    assert_eq!(r["additionalEventData"]["AuthMethod"], "publickey", "{r}");
    assert_eq!(r["resources"][0]["ARN"], user_arn("vagrant"), "{r}");
    assert!(r.get("errorCode").is_none_or(Value::is_null), "{r}");
    // A failed password for root.
    let r = find(&records, &first[3]);
    assert_eq!(r["errorCode"], "AccessDenied", "{r}");
    assert_eq!(r["errorMessage"], "Failed authentication", "{r}");
    assert_eq!(r["responseElements"]["ConsoleLogin"], "Failure", "{r}");
    assert_eq!(r["userIdentity"]["userName"], "root", "{r}");
    // An invalid user: the name is hidden, as AWS does for console sign-in.
    let r = find(&records, &first[2]);
    assert_eq!(
        r["userIdentity"]["userName"], "HIDDEN_DUE_TO_SECURITY_REASONS",
        "{r}"
    );
    assert_eq!(r["sourceIPAddress"], "10.0.2.2", "{r}");
    // sudo: the person acting as root, on the command; no peer, so the host is the source.
    let r = find(&records, &first[4]);
    assert_eq!(r["eventType"], "AwsApiCall", "{r}");
    assert_eq!(r["userIdentity"]["type"], "AssumedRole", "{r}");
    assert_eq!(
        r["userIdentity"]["arn"],
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/root/vagrant"),
        "{r}"
    );
    assert_eq!(r["requestParameters"]["runAs"], "root", "{r}");
    assert_eq!(r["requestParameters"]["cwd"], "/home/vagrant", "{r}");
    assert_eq!(r["userAgent"], "sudo", "{r}");
    assert_eq!(r["sourceIPAddress"], HOST, "{r}");
    assert_eq!(
        r["resources"][0]["ARN"],
        format!("arn:aws:exec:{REGION}:{ACCOUNT}:command/{HOST}/bin/ls"),
        "{r}"
    );
    // Not in sudoers: refused, the person acted as themselves.
    let r = find(&records, &first[6]);
    assert_eq!(r["errorCode"], "AccessDenied", "{r}");
    assert_eq!(r["userIdentity"]["type"], "IAMUser", "{r}");
    assert_eq!(r["userIdentity"]["userName"], "tsg", "{r}");
    // useradd: CreateUser on the user resource.
    let r = find(&records, &first[8]);
    assert_eq!(r["requestParameters"]["shell"], "/sbin/nologin", "{r}");
    assert_eq!(r["resources"][0]["type"], "Groundtrail::Host::User", "{r}");
    assert_eq!(r["resources"][0]["ARN"], user_arn("apache"), "{r}");
    // auditd USER_CMD: auid 700 (ops) ran a command as uid 497 (nagios).
    let r = find(&records, &first[9]);
    assert_eq!(
        r["userIdentity"]["arn"],
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/nagios/ops"),
        "{r}"
    );
    assert_eq!(r["requestParameters"]["cwd"], "/", "{r}");
    assert_eq!(r["additionalEventData"]["auditSerial"], 19600329, "{r}");
    // auditd EXECVE.
    let r = find(&records, &first[12]);
    assert_eq!(r["additionalEventData"]["auditType"], "EXECVE", "{r}");
    // rpm install from auditd: auid 1000 (alice) ran yum as root.
    let r = find(&records, &first[11]);
    assert_eq!(r["userAgent"], "yum", "{r}");
    assert_eq!(
        r["userIdentity"]["arn"],
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/root/alice"),
        "{r}"
    );
    // dpkg install: the package resource.
    let r = find(&records, &first[13]);
    assert_eq!(r["userAgent"], "dpkg", "{r}");
    assert_eq!(r["requestParameters"]["version"], "3.3.0-4", "{r}");
    assert_eq!(
        r["resources"][0]["type"], "Groundtrail::Host::Package",
        "{r}"
    );
    assert_eq!(
        r["resources"][0]["ARN"],
        format!("arn:aws:packages:{REGION}:{ACCOUNT}:package/{HOST}/htop"),
        "{r}"
    );

    // Restart leg: lines appended while the agent is stopped arrive once after its restart,
    // and nothing of the first leg is read again.
    agent.sigterm().await;
    append_lines(&auth, &fixture("auth/beats_secure_rhel7_excerpt.log"));
    append_lines(&audit, &fixture("audit/beats_auditd_useradd.log"));
    append_lines(&audit, &fixture("audit/beats_auditd_cent7_node.log"));
    append_lines(&dpkg, DPKG_2);
    agent.spawn().await;
    let second = second_leg();
    let all: Vec<&Expected> = first.iter().chain(second.iter()).collect();
    let records = wait_exactly(&store, &all, &agent).await;
    // The restarted agent resumed each file at its checkpoint: it appended its AgentStart and
    // the second leg's records, nothing of the first leg (re-read lines would get the same
    // eventIDs and be dropped by the collector, so only the agent's count can show it).
    let st = agent.status();
    assert_eq!(
        st["buffer"]["appendedTotal"].as_u64(),
        Some(1 + second.len() as u64),
        "records appended since the restart: {st}"
    );
    // The restarted process counted only the new lines (nine sshd noise lines ignored).
    assert_source_lines(&agent, "auth_log", 4, 9);
    assert_source_lines(&agent, "packages", 2, 1);
    let r = find(&records, &second[1]);
    assert_eq!(r["userIdentity"]["arn"], user_arn("drewr"), "{r}");
    assert_eq!(r["responseElements"]["ConsoleLogin"], "Success", "{r}");
    let r = find(&records, &second[5]);
    assert_eq!(r["sourceIPAddress"], "127.0.0.1", "{r}");
    assert_eq!(r["userIdentity"]["userName"], "alice", "{r}");
    let r = find(&records, &second[8]);
    assert_eq!(r["requestParameters"]["purge"], true, "{r}");

    // The agent started twice and stopped once so far; then a clean stop and a valid trail.
    agent.sigterm().await;
    wait_for("the second AgentStop in the trail", || async {
        let stops = store
            .records()
            .await
            .into_iter()
            .filter(|(_, r)| r["eventName"] == "AgentStop")
            .count();
        (stops >= 2).then_some(())
    })
    .await;
    // A last look after everything is flushed: still exactly once.
    wait_exactly(&store, &all, &agent).await;
    let status = collector.sigterm().await;
    assert!(status.success(), "collector exit {status}");
    let mut args = vec![
        "--trail-arn".to_string(),
        TRAIL_ARN.into(),
        "--config".into(),
        collector.config_path.display().to_string(),
        "--verbose".into(),
    ];
    args.extend(window(started));
    groundtrail_validate(&args).assert_valid("validate-logs of the host sources' trail");
}
