//! The follower's guarantees, on real files: rotation by rename and by copytruncate mid-stream,
//! restarts from a checkpoint (also across a rotation that happened while stopped), files that
//! do not exist yet, partial lines, and a 100k-line burst — always every line exactly once.

use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

use groundtrail_common::shutdown::Shutdown;
use serde_json::json;
use tokio::sync::broadcast;

use super::*;

/// One record per line, carrying the line text.
struct Echo;

impl LineHandler for Echo {
    fn line(&mut self, line: &[u8], at: LineRef<'_>, out: &mut Vec<Record>) {
        out.push(Record {
            event_id: at.event_id(),
            request_parameters: Some(json!({"line": String::from_utf8_lossy(line)})),
            ..Record::default()
        });
    }
}

fn opts() -> TailOptions {
    TailOptions {
        poll_interval: Duration::from_millis(20),
        batch_delay: Duration::from_millis(5),
        rotate_grace: Duration::from_millis(100),
        idle_flush: Duration::from_millis(100),
        ..TailOptions::default()
    }
}

struct Running {
    stop: broadcast::Sender<()>,
    task: tokio::task::JoinHandle<Result<TailStats, TailError>>,
}

fn start(path: &Path, sink: &Arc<MemorySink>) -> Running {
    let (stop, rx) = broadcast::channel(1);
    let f = Follower::new(path, "test:file", "host1", sink.clone(), opts());
    let task = tokio::spawn(async move {
        let mut h = Echo;
        f.run(&mut h, Shutdown::new(rx)).await
    });
    Running { stop, task }
}

impl Running {
    async fn stop(self) -> TailStats {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap()
    }
}

/// Waits (with a generous failsafe, never a timing assertion) for `n` records.
async fn wait(sink: &MemorySink, n: usize) {
    if tokio::time::timeout(Duration::from_secs(120), sink.wait_for(n))
        .await
        .is_err()
    {
        panic!("only {} of {n} records arrived", sink.len());
    }
}

fn lines_of(sink: &MemorySink) -> Vec<String> {
    sink.records()
        .iter()
        .map(|r| {
            r.request_parameters.as_ref().unwrap()["line"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Every expected line exactly once, and every eventID unique.
fn assert_exactly_once(sink: &MemorySink, expected: &[String]) {
    let got = lines_of(sink);
    let mut sorted = got.clone();
    sorted.sort();
    let mut want = expected.to_vec();
    want.sort();
    assert_eq!(sorted.len(), want.len(), "count differs");
    assert_eq!(sorted, want);
    let ids: HashSet<String> = sink.records().into_iter().map(|r| r.event_id).collect();
    assert_eq!(ids.len(), got.len(), "eventIDs repeat");
}

fn append(path: &Path, lines: &[String]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut buf = String::new();
    for l in lines {
        buf.push_str(l);
        buf.push('\n');
    }
    f.write_all(buf.as_bytes()).unwrap();
}

fn make_lines(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix} line {i}")).collect()
}

#[tokio::test]
async fn waits_for_missing_file_and_partial_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.log");
    let sink = MemorySink::new();
    let run = start(&path, &sink);
    let a = make_lines("a", 0..3);
    append(&path, &a);
    wait(&sink, 3).await;
    // Half a line: not consumed until its newline arrives.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(b"half a li").unwrap();
    f.sync_all().unwrap();
    append(&path, &make_lines("b", 0..1));
    wait(&sink, 4).await;
    run.stop().await;
    let mut want = a.clone();
    want.push("half a lib line 0".into());
    assert_exactly_once(&sink, &want);
}

#[tokio::test]
async fn event_ids_are_deterministic_across_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.log");
    let lines = make_lines("x", 0..50);
    append(&path, &lines);
    let s1 = MemorySink::new();
    let r = start(&path, &s1);
    wait(&s1, 50).await;
    r.stop().await;
    // A second reader without checkpoint (as after a lost buffer) derives the same IDs.
    let s2 = MemorySink::new();
    let r = start(&path, &s2);
    wait(&s2, 50).await;
    r.stop().await;
    let ids = |s: &MemorySink| {
        s.records()
            .into_iter()
            .map(|r| r.event_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&s1), ids(&s2));
    assert!(
        ids(&s1)
            .iter()
            .all(|i| groundtrail_common::event::is_lower_uuid(i))
    );
}

#[tokio::test]
async fn rotation_by_rename_mid_stream() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.log");
    let sink = MemorySink::new();
    let run = start(&path, &sink);
    let a = make_lines("a", 0..1000);
    append(&path, &a);
    wait(&sink, 500).await;
    // logrotate: rename; the writer still appends to the old inode until told to reopen.
    std::fs::rename(&path, dir.path().join("auth.log.1")).unwrap();
    let a2 = make_lines("a2", 0..200);
    append(&dir.path().join("auth.log.1"), &a2);
    let b = make_lines("b", 0..1000);
    append(&path, &b);
    wait(&sink, 2200).await;
    let stats = run.stop().await;
    assert!(stats.rotations >= 1);
    let all: Vec<String> = [a, a2, b].concat();
    assert_exactly_once(&sink, &all);
}

#[tokio::test]
async fn rotation_by_copytruncate_mid_stream() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    let sink = MemorySink::new();
    let run = start(&path, &sink);
    let a = make_lines("a", 0..1000);
    append(&path, &a);
    wait(&sink, 1000).await;
    // copytruncate: copy away, truncate in place (same inode), keep writing.
    std::fs::copy(&path, dir.path().join("app.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    // More than before, so a size check alone would not notice the truncation.
    let b = make_lines("b-longer-lines", 0..1500);
    append(&path, &b);
    wait(&sink, 2500).await;
    let stats = run.stop().await;
    assert!(stats.truncations >= 1);
    assert_exactly_once(&sink, &[a, b].concat());
}

#[tokio::test]
async fn restart_resumes_from_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.log");
    let sink = MemorySink::new();
    let a = make_lines("a", 0..300);
    append(&path, &a);
    let run = start(&path, &sink);
    wait(&sink, 300).await;
    run.stop().await;
    // Written while the agent was down.
    let b = make_lines("b", 0..300);
    append(&path, &b);
    let run = start(&path, &sink);
    wait(&sink, 600).await;
    run.stop().await;
    assert_exactly_once(&sink, &[a, b].concat());
}

#[tokio::test]
async fn restart_after_rotation_while_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.log");
    let sink = MemorySink::new();
    let a = make_lines("a", 0..100);
    append(&path, &a);
    let run = start(&path, &sink);
    wait(&sink, 100).await;
    run.stop().await;
    // Down: more lines land in the old file, then it is rotated and a new one started.
    let a2 = make_lines("a2", 0..50);
    append(&path, &a2);
    std::fs::rename(&path, dir.path().join("auth.log.1")).unwrap();
    let b = make_lines("b", 0..70);
    append(&path, &b);
    let run = start(&path, &sink);
    wait(&sink, 220).await;
    run.stop().await;
    assert_exactly_once(&sink, &[a, a2, b].concat());
}

#[tokio::test]
async fn burst_of_100k_lines_no_loss_no_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("burst.log");
    let sink = MemorySink::new();
    let run = start(&path, &sink);
    let lines = make_lines("burst", 0..100_000);
    for chunk in lines.chunks(7_919) {
        append(&path, chunk);
    }
    wait(&sink, 100_000).await;
    run.stop().await;
    assert_exactly_once(&sink, &lines);
    // Batched: far fewer appends than lines.
    assert!(sink.appends() < 10_000, "{} appends", sink.appends());
}

#[tokio::test]
async fn over_long_lines_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.log");
    let sink = MemorySink::new();
    let (stop, rx) = broadcast::channel(1);
    let f = Follower::new(
        &path,
        "test:file",
        "host1",
        sink.clone(),
        TailOptions {
            max_line: 100,
            ..opts()
        },
    );
    append(
        &path,
        &["first".to_string(), "y".repeat(100_000), "last".to_string()],
    );
    let task = tokio::spawn(async move { f.run(&mut Echo, Shutdown::new(rx)).await });
    wait(&sink, 2).await;
    let _ = stop.send(());
    let stats = task.await.unwrap().unwrap();
    assert_eq!(lines_of(&sink), ["first", "last"]);
    assert_eq!(stats.oversize, 1);
}

#[tokio::test]
async fn start_at_end_skips_existing_content_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.log");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(b"old 1\nold 2\nhalf of old").unwrap();
    let sink = MemorySink::new();
    let (stop, rx) = broadcast::channel(1);
    let mut fl = Follower::new(
        &path,
        "test:file",
        "host1",
        sink.clone(),
        TailOptions {
            start_at_end: true,
            ..opts()
        },
    );
    // Open at the end now, before more is written (run() keeps this position).
    fl.restore();
    let task = tokio::spawn(async move { fl.run(&mut Echo, Shutdown::new(rx)).await });
    f.write_all(b" line\nnew 1\n").unwrap();
    wait(&sink, 1).await;
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    assert_eq!(lines_of(&sink), ["new 1"]);
}

/// A multi-line group open at shutdown holds the checkpoint back to its first line: after a
/// restart the whole group is read again and becomes one record.
#[tokio::test]
async fn open_group_survives_restart() {
    use crate::sources::auditd::AuditHandler;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let env = Arc::new(crate::sources::testutil::env());
    let sink = MemorySink::new();
    let slow_idle = TailOptions {
        idle_flush: Duration::from_secs(3600),
        ..opts()
    };
    // Shortened from real lines (beats' rhel6 USER_CMD, laurel's shell-proc-trace execve).
    append(
        &path,
        &[
            "type=USER_CMD msg=audit(1489519256.192:19600329): user pid=4151 uid=497 auid=700 ses=11988 msg='cwd=\"/\" cmd=2F62696E2F6C73 terminal=? res=success'".to_string(),
            "type=SYSCALL msg=audit(1682609045.530:29242): arch=c000003e syscall=59 success=yes exit=0 items=3 ppid=71505 pid=71507 auid=1000 uid=1000 tty=pts7 ses=3 comm=\"grep\" exe=\"/usr/bin/grep\" key=(null)".to_string(),
            "type=EXECVE msg=audit(1682609045.530:29242): argc=2 a0=\"grep\" a1=\"baz\"".to_string(),
        ],
    );
    let run = |sink: &Arc<MemorySink>| {
        let (stop, rx) = broadcast::channel(1);
        let f = Follower::new(
            &path,
            "auditd:test",
            "host1",
            sink.clone(),
            slow_idle.clone(),
        );
        let env = env.clone();
        let task = tokio::spawn(async move {
            let mut h = AuditHandler::new(env, true);
            f.run(&mut h, Shutdown::new(rx)).await
        });
        Running { stop, task }
    };
    let r = run(&sink);
    // The USER_CMD closes when the SYSCALL (another serial) arrives; the execve stays open.
    wait(&sink, 1).await;
    r.stop().await;
    let ck: TailCheckpoint =
        serde_json::from_slice(&sink.checkpoint("auditd:test").unwrap()).unwrap();
    let first_len = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .len() as u64
        + 1;
    assert_eq!(
        ck.offset, first_len,
        "checkpoint held at the open group's first line"
    );
    append(
        &path,
        &["type=EOE msg=audit(1682609045.530:29242): ".to_string()],
    );
    let r = run(&sink);
    wait(&sink, 2).await;
    r.stop().await;
    let names: Vec<String> = sink
        .records()
        .iter()
        .map(|r| format!("{} {}", r.event_source, r.event_name))
        .collect();
    assert_eq!(
        names,
        [
            "sudo.onprem.internal RunCommand",
            "exec.onprem.internal RunCommand"
        ]
    );
    assert_eq!(
        sink.records()[1].request_parameters.as_ref().unwrap()["command"],
        "grep baz"
    );
}

/// Opens and reads wake no watcher (every process start opens files in `/etc`); writes,
/// creations, renames and errors do.
#[test]
fn only_changes_wake_a_watcher() {
    use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind};
    let ev = |k| Ok(notify::Event::new(k));
    assert!(!is_change(&ev(EventKind::Access(AccessKind::Open(
        AccessMode::Any
    )))));
    assert!(!is_change(&ev(EventKind::Access(AccessKind::Close(
        AccessMode::Read
    )))));
    assert!(is_change(&ev(EventKind::Access(AccessKind::Close(
        AccessMode::Write
    )))));
    assert!(is_change(&ev(EventKind::Modify(ModifyKind::Any))));
    assert!(is_change(&ev(EventKind::Create(CreateKind::File))));
    assert!(is_change(&Err(notify::Error::generic("overflow"))));
}
