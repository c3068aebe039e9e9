//! FIM rows -> records, on real files in a temporary directory.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use tokio::sync::broadcast;

use super::*;
use crate::sources::tail::MemorySink;
use crate::sources::testutil::env;

fn t() -> DateTime<Utc> {
    groundtrail_common::time::now_secs()
}

#[test]
fn put_change_permissions_delete() {
    let e = env();
    let dir = tempfile::tempdir().unwrap();
    let sudoers = dir.path().join("sudoers");
    let d = dir.path().join("sudoers.d");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(&sudoers, "root ALL=(ALL) ALL\n").unwrap();
    let paths = vec![sudoers.clone(), d.clone()];
    let s0 = scan(&paths, 1 << 20);
    assert_eq!(s0.len(), 1);
    assert_eq!(diff(&e, &s0, &s0, t()), vec![]);

    // A new file in a watched directory, and a modified file.
    std::fs::write(d.join("alice"), "alice ALL=(ALL) NOPASSWD: ALL\n").unwrap();
    std::fs::write(&sudoers, "root ALL=(ALL) ALL\n%sudo ALL=(ALL) ALL\n").unwrap();
    let s1 = scan(&paths, 1 << 20);
    let recs = diff(&e, &s0, &s1, t());
    let names: Vec<(&str, String)> = recs
        .iter()
        .map(|r| {
            (
                r.event_name.as_str(),
                r.service_event_details.as_ref().unwrap()["path"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("PutFile", sudoers.to_string_lossy().into_owned()),
            ("PutFile", d.join("alice").to_string_lossy().into_owned()),
        ]
    );
    let r = &recs[0];
    r.validate().unwrap();
    assert_eq!(
        (r.event_source.as_str(), r.event_type.as_str()),
        ("files.onprem.internal", "AwsServiceEvent")
    );
    let det = r.service_event_details.as_ref().unwrap();
    assert_ne!(det["before"]["sha256"], det["after"]["sha256"]);
    assert_eq!(det["after"]["size"], 39);
    assert_eq!(det["after"]["sha256"].as_str().unwrap().len(), 64);
    // Never the contents.
    let json = String::from_utf8(r.to_json()).unwrap();
    assert!(!json.contains("ALL=(ALL)"), "{json}");
    assert_eq!(
        r.resources.as_ref().unwrap()[0].resource_type.as_deref(),
        Some("Groundtrail::Host::File")
    );
    assert!(recs[1].service_event_details.as_ref().unwrap()["before"].is_null());

    // Only the mode changes.
    std::fs::set_permissions(&sudoers, std::fs::Permissions::from_mode(0o600)).unwrap();
    let s2 = scan(&paths, 1 << 20);
    let recs = diff(&e, &s1, &s2, t());
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].event_name, "ChangeFilePermissions");
    assert_eq!(
        recs[0].service_event_details.as_ref().unwrap()["after"]["mode"],
        "0600"
    );

    // Removed; and a symlink (systemd enable) is its target, not content.
    std::fs::remove_file(d.join("alice")).unwrap();
    std::os::unix::fs::symlink("/lib/systemd/system/nginx.service", d.join("nginx.service"))
        .unwrap();
    let s3 = scan(&paths, 1 << 20);
    let recs = diff(&e, &s2, &s3, t());
    let names: Vec<&str> = recs.iter().map(|r| r.event_name.as_str()).collect();
    assert_eq!(names, ["DeleteFile", "PutFile"]);
    assert_eq!(
        recs[1].service_event_details.as_ref().unwrap()["after"]["link"],
        "/lib/systemd/system/nginx.service"
    );
    // Same change, same eventID (re-detected after a crash).
    assert_eq!(diff(&e, &s2, &s3, t())[0].event_id, recs[0].event_id);
    // Large files are summarized without a hash.
    let s4 = scan(&paths, 4);
    assert!(
        s4.values()
            .all(|s| s.sha256.is_none() || s.link.is_some() || s.size <= 4)
    );
}

#[tokio::test]
async fn watcher_baseline_then_changes_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sshd_config");
    std::fs::write(&file, "PermitRootLogin no\n").unwrap();
    let config = FimConfig {
        enabled: true,
        paths: vec![file.clone()],
        debounce_ms: 50,
        max_hash_bytes: 1 << 20,
        rescan_secs: 1,
    };
    let sink = MemorySink::new();
    let e = Arc::new(env());
    let (stop, rx) = broadcast::channel(1);
    let task = spawn(config.clone(), e.clone(), sink.clone(), Shutdown::new(rx));
    // Baseline stored (an append with no records), then a change.
    tokio::time::timeout(Duration::from_secs(60), async {
        while sink.checkpoint(SOURCE_KEY).is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(sink.len(), 0);
    // An editor-style replace: write a temp file, rename over.
    let tmp = dir.path().join(".sshd_config.swp");
    std::fs::write(&tmp, "PermitRootLogin yes\n").unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    tokio::time::timeout(Duration::from_secs(60), sink.wait_for(1))
        .await
        .unwrap();
    let _ = stop.send(());
    task.await.unwrap();
    let recs = sink.records();
    assert_eq!(recs.len(), 1, "{recs:#?}");
    assert_eq!(recs[0].event_name, "PutFile");

    // Changed while stopped: found at the next start.
    std::fs::remove_file(&file).unwrap();
    let (stop, rx) = broadcast::channel(1);
    let task = spawn(config, e, sink.clone(), Shutdown::new(rx));
    tokio::time::timeout(Duration::from_secs(60), sink.wait_for(2))
        .await
        .unwrap();
    let _ = stop.send(());
    task.await.unwrap();
    assert_eq!(sink.records()[1].event_name, "DeleteFile");
    assert_eq!(sink.len(), 2);
}
