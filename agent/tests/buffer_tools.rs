//! `groundtrail-agent buffer inspect|verify|export` against real sled buffers written through
//! the agent's own `Buffer`, run as the real binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use groundtrail_agent::buffer::{Appended, Buffer, BufferOptions};
use groundtrail_agent::host_identity::HostIdentity;
use groundtrail_common::Record;
use serde_json::{Value, json};

fn id() -> HostIdentity {
    HostIdentity {
        host: "test-host".into(),
        account_id: "123456789012".into(),
        region: "us-east-1".into(),
        domain: "onprem.internal".into(),
        partition: "aws".into(),
    }
}

fn open(path: &Path) -> Buffer {
    open_report(path).0
}

/// Opens the buffer, waiting (up to 10 s) while a `Buffer` this test has just dropped still
/// holds the directory's lock: sled lets go of it only when the I/O thread that did the last
/// flush drops its handle, a moment after the flush returned (the same wait as the unit
/// tests' `buffer::testutil::while_locked`).
fn open_report(path: &Path) -> (Buffer, groundtrail_agent::buffer::OpenReport) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Buffer::open(path, BufferOptions::default(), id()) {
            Err(groundtrail_agent::buffer::BufferError::Locked { .. })
                if Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20))
            }
            r => return r.unwrap(),
        }
    }
}

/// A record that is not one of the agent's own (those are counted apart).
fn rec(i: u64) -> Record {
    let mut r = id().agent_record("TestEvent", json!({ "i": i }));
    r.event_source = "test.amazonaws.com".into();
    r
}

/// Appends one chunk of `n` records; returns their (seq, eventID).
fn append(b: &Buffer, n: u64) -> Vec<(u64, String)> {
    let records: Vec<Record> = (0..n).map(rec).collect();
    let Appended::Stored(Some((first, last))) = b.try_append(&records, None).unwrap() else {
        panic!("not stored")
    };
    assert_eq!(last - first + 1, n);
    (first..)
        .zip(records)
        .map(|(seq, r)| (seq, r.event_id))
        .collect()
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `groundtrail-agent buffer <args>`, again while it finds the buffer in use (up to 10 s):
/// right after a test drops its `Buffer`, sled may still hold the lock for a moment (see
/// [`open_report`]). A lock that stays is still reported.
fn run(args: &[&str]) -> Run {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = run_once(args);
        if r.code != 2 || !r.stderr.contains("is in use") || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run_once(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_groundtrail-agent"))
        .arg("buffer")
        .args(args)
        .env_remove("GROUNDTRAIL_AGENT_CONFIG")
        .output()
        .unwrap();
    Run {
        code: out.status.code().expect("exited"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn inspect_json(path: &Path) -> Value {
    let r = run(&["inspect", "--json", "--path", p(path)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap()
}

fn ids_of(ndjson: &str) -> Vec<String> {
    ndjson
        .lines()
        .map(|l| {
            let r = Record::from_json(l.as_bytes()).expect("every exported line is a record");
            r.event_id
        })
        .collect()
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            } else {
                out.insert(e.path(), std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

/// A sound buffer with a partly acknowledged chunk: inspect counts what is queued, verify
/// finds it sound, export yields exactly the unacknowledged records in order, and not one
/// byte of the directory changes.
#[test]
fn a_sound_buffer_is_inspected_verified_and_exported_without_being_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("buffer");
    let b = open(&path);
    let mut written = append(&b, 5);
    written.extend(append(&b, 3));
    written.extend(append(&b, 1));
    let acked = written[1].0;
    b.ack_up_to(acked).unwrap();
    b.flush().unwrap();
    drop(b);
    let expected: Vec<String> = written[2..].iter().map(|(_, id)| id.clone()).collect();
    let before = snapshot(&path);

    let i = inspect_json(&path);
    assert_eq!(i["readVia"], "sled-copy");
    assert_eq!(i["quarantined"], false);
    assert_eq!(i["chunks"], 3);
    assert_eq!(i["records"], 7);
    assert_eq!(i["acknowledgedInStoredChunks"], 2);
    assert_eq!(i["acknowledgedUpTo"], acked);
    assert_eq!(i["firstSeq"], acked + 1);
    assert_eq!(i["lastSeq"], written[8].0);
    assert_eq!(i["nextSeq"], written[8].0 + 1);
    assert_eq!(i["formats"], json!({ "lines-v3": 3 }));
    assert_eq!(i["problems"], json!([]));
    assert_eq!(i["agentRecords"], json!({}));
    assert!(i["oldestEventTime"].is_string() && i["newestEventTime"].is_string());
    let appended = |k: &str| {
        chrono::DateTime::parse_from_rfc3339(i[k].as_str().expect(k))
            .unwrap()
            .timestamp_millis()
    };
    let now = chrono::Utc::now().timestamp_millis();
    assert!(
        (now - 60_000..=now).contains(&appended("oldestAppended"))
            && appended("oldestAppended") <= appended("newestAppended"),
        "{i}"
    );
    assert!(i["bytesOnDisk"].as_u64().unwrap() > 0);

    let v = run(&["verify", "--path", p(&path)]);
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
    assert!(v.stdout.trim_end().ends_with("sound"), "{}", v.stdout);

    let e = run(&["export", "--path", p(&path)]);
    assert_eq!(e.code, 0, "{}", e.stderr);
    assert_eq!(ids_of(&e.stdout), expected);
    assert!(e.stderr.contains("exported 7 records"), "{}", e.stderr);
    // stderr is a pipe here: no progress display in it.
    assert_eq!(e.stderr.lines().count(), 1, "{}", e.stderr);
    let file = dir.path().join("out.ndjson");
    let e = run(&["export", "--path", p(&path), "--output", p(&file)]);
    assert_eq!(e.code, 0, "{}", e.stderr);
    assert_eq!(ids_of(&std::fs::read_to_string(&file).unwrap()), expected);

    // --from-seq starts inside a chunk; below the acknowledged position it changes nothing
    // (acknowledged records are never exported). `--out` is the short spelling of --output.
    let from = written[6].0.to_string();
    let e = run(&[
        "export",
        "--path",
        p(&path),
        "--from-seq",
        &from,
        "--out",
        p(&file),
    ]);
    assert_eq!(e.code, 0, "{}", e.stderr);
    let tail: Vec<String> = written[6..].iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(ids_of(&std::fs::read_to_string(&file).unwrap()), tail);
    assert!(e.stderr.contains("exported 3 records"), "{}", e.stderr);
    let e = run(&["export", "--path", p(&path), "--from-seq", "0"]);
    assert_eq!(e.code, 0, "{}", e.stderr);
    assert_eq!(ids_of(&e.stdout), expected);

    // The data-dir form finds the same buffer; human output names the counts.
    let h = run(&["inspect", "--data-dir", p(dir.path())]);
    assert_eq!(h.code, 0, "{}", h.stderr);
    assert!(h.stdout.contains("7 queued, 0 set aside"), "{}", h.stdout);

    assert!(
        before == snapshot(&path),
        "the buffer directory was modified"
    );
    // And the agent opens it as before.
    assert_eq!(open(&path).depth(), 7);
}

/// A data directory written by an agent before chunks held ndjson (`chunk-v2`: each record
/// length-prefixed in the frame) is still inspected, verified and exported by the tools, and
/// read by the agent, which ships it decoded (as `ship_batch` says).
#[test]
fn a_buffer_of_the_earlier_chunk_format_is_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("buffer");
    let b = open(&path);
    let mut written = append(&b, 4);
    written.extend(append(&b, 2));
    // Rewrite every chunk as the earlier agent stored it: same header, kind 0x02, and a frame
    // of (u32 BE length, JSON) per record.
    let tree = b.raw_tree().clone();
    for kv in tree.scan_prefix(b"r") {
        let (k, v) = kv.unwrap();
        assert_eq!(v[0], 3, "written as lines-v3");
        let ndjson = zstd::decode_all(&v[13..]).unwrap();
        let mut payload = Vec::new();
        for line in ndjson.strip_suffix(b"\n").unwrap().split(|c| *c == b'\n') {
            payload.extend_from_slice(&(line.len() as u32).to_be_bytes());
            payload.extend_from_slice(line);
        }
        let mut old = vec![2u8];
        old.extend_from_slice(&v[1..13]);
        old.extend(zstd::encode_all(&payload[..], 1).unwrap());
        tree.insert(k, old).unwrap();
    }
    b.flush().unwrap();
    drop(tree);
    drop(b);
    let expected: Vec<String> = written.iter().map(|(_, id)| id.clone()).collect();

    let i = inspect_json(&path);
    assert_eq!(i["formats"], json!({ "chunk-v2": 2 }));
    assert_eq!(i["records"], 6);
    assert_eq!(i["problems"], json!([]));
    let v = run(&["verify", "--path", p(&path)]);
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
    let e = run(&["export", "--path", p(&path)]);
    assert_eq!(e.code, 0, "{}", e.stderr);
    assert_eq!(ids_of(&e.stdout), expected);

    let b = open(&path);
    let batch = b.read_batch(100, usize::MAX, true).unwrap();
    assert_eq!((batch.len(), batch.stored_records()), (6, 0));
    let body = String::from_utf8(batch.body(false).unwrap()).unwrap();
    assert_eq!(ids_of(&body), expected);
}

/// The agent holds the buffer's lock while it runs: the tools refuse it (exit 2).
#[test]
fn a_buffer_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("buffer");
    let b = open(&path);
    append(&b, 2);
    for cmd in ["inspect", "verify", "export"] {
        let r = run_once(&[cmd, "--path", p(&path)]);
        assert_eq!(r.code, 2, "{cmd}: {}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains("is in use"), "{cmd}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{cmd}: {}", r.stdout);
    }
    drop(b);
    assert_eq!(run(&["verify", "--path", p(&path)]).code, 0);
}

/// One chunk's zstd frame damaged: verify names its key (exit 1), export yields every other
/// record and reports the skipped chunk (exit 1).
#[test]
fn a_damaged_chunk_is_named_and_the_rest_exported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("buffer");
    let b = open(&path);
    let chunks: Vec<Vec<(u64, String)>> = (0..4).map(|_| append(&b, 2)).collect();
    let bad = chunks[1][0].0;
    let mut key = vec![b'r'];
    key.extend_from_slice(&bad.to_be_bytes());
    let mut v = b.raw_tree().get(&key).unwrap().unwrap().to_vec();
    let n = v.len();
    v[n - 4..].copy_from_slice(b"\xde\xad\xbe\xef");
    b.raw_tree().insert(key, v).unwrap();
    b.flush().unwrap();
    drop(b);

    let v = run(&["verify", "--path", p(&path)]);
    assert_eq!(v.code, 1, "{}{}", v.stdout, v.stderr);
    let problems: Vec<&str> = v.stdout.lines().filter(|l| l.starts_with("r:")).collect();
    assert_eq!(problems.len(), 1, "{}", v.stdout);
    assert!(
        problems[0].starts_with(&format!("r:{bad}: records {bad}..={}", bad + 1)),
        "{}",
        problems[0]
    );

    let e = run(&["export", "--path", p(&path)]);
    assert_eq!(e.code, 1, "{}", e.stderr);
    let expected: Vec<String> = [&chunks[0], &chunks[2], &chunks[3]]
        .iter()
        .flat_map(|c| c.iter().map(|(_, id)| id.clone()))
        .collect();
    assert_eq!(ids_of(&e.stdout), expected);
    assert!(
        e.stderr.contains(&format!("skipped: r:{bad}:")),
        "{}",
        e.stderr
    );
    assert!(
        e.stderr
            .contains("exported 6 records; skipped 1 unreadable chunks (2 records)"),
        "{}",
        e.stderr
    );

    let i = inspect_json(&path);
    assert_eq!(
        (i["damagedChunks"].as_u64(), i["records"].as_u64()),
        (Some(1), Some(6))
    );

    // Past the damage, an export is whole again: the damaged chunk is not even read.
    let from = chunks[1][1].0 + 1;
    let e = run(&[
        "export",
        "--path",
        p(&path),
        "--from-seq",
        &from.to_string(),
    ]);
    assert_eq!(e.code, 0, "{}", e.stderr);
    let rest: Vec<String> = chunks[2..]
        .iter()
        .flat_map(|c| c.iter().map(|(_, id)| id.clone()))
        .collect();
    assert_eq!(ids_of(&e.stdout), rest);
    // Starting inside it, only its records at or above N count as skipped.
    let e = run(&[
        "export",
        "--path",
        p(&path),
        "--from-seq",
        &chunks[1][1].0.to_string(),
    ]);
    assert_eq!(e.code, 1, "{}", e.stderr);
    assert_eq!(ids_of(&e.stdout), rest);
    assert!(
        e.stderr
            .contains("exported 4 records; skipped 1 unreadable chunks (1 records)"),
        "{}",
        e.stderr
    );
}

/// A buffer the agent quarantined (sled refuses its settings file, the data file is intact)
/// is found next to the configured one, inspected and exported by salvage.
#[test]
fn a_quarantined_buffer_is_inspected_and_exported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("buffer");
    let b = open(&path);
    let mut written = append(&b, 3);
    written.extend(append(&b, 1));
    written.extend(append(&b, 4));
    drop(b);
    std::fs::write(path.join("conf"), vec![0xA5u8; 4096]).unwrap();
    // The way the agent does it.
    let (b, report) = open_report(&path);
    drop(b);
    let q = PathBuf::from(report.quarantined.expect("quarantined").path);
    assert!(q.exists());

    let i = inspect_json(&q);
    assert_eq!(i["readVia"], "salvage", "{i}");
    assert_eq!(i["quarantined"], true);
    assert_eq!(i["records"], 8, "{i}");
    assert!(i["sledError"].is_string());

    let e = run(&["export", "--path", p(&q)]);
    assert_eq!(e.code, 1, "salvage is reported: {}", e.stderr);
    let mut got = ids_of(&e.stdout);
    let mut want: Vec<String> = written.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(got.len(), want.len(), "no record twice: {}", e.stdout);
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert!(e.stderr.contains("sled cannot open it"), "{}", e.stderr);

    let v = run(&["verify", "--path", p(&q)]);
    assert_eq!(v.code, 1, "{}", v.stdout);

    // Salvaged records have no sequence numbers: --from-seq is refused, not ignored.
    let e = run(&["export", "--path", p(&q), "--from-seq", "1"]);
    assert_eq!(e.code, 2, "{}", e.stderr);
    assert!(e.stdout.is_empty(), "{}", e.stdout);
    assert!(e.stderr.contains("without --from-seq"), "{}", e.stderr);

    // The fresh buffer (holding the agent's BufferCorruption report) names it.
    let fresh = inspect_json(&path);
    assert_eq!(fresh["quarantinedSiblings"], json!([p(&q)]));
    assert_eq!(fresh["agentRecords"], json!({ "BufferCorruption": 1 }));
}

/// Clear errors, exit 2: missing, not a buffer, a data directory given as a buffer, a buffer of
/// an unknown format.
#[test]
fn what_cannot_be_examined_is_said_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let r = run(&["inspect", "--path", p(&missing)]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("does not exist"), "{}", r.stderr);

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let r = run(&["verify", "--path", p(&empty)]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("is not a buffer"), "{}", r.stderr);

    let data = dir.path().join("data");
    let b = open(&data.join("buffer"));
    let first = append(&b, 1)[0].0;
    let mut key = vec![b'r'];
    key.extend_from_slice(&first.to_be_bytes());
    let mut v = b.raw_tree().get(&key).unwrap().unwrap().to_vec();
    v[0] = 0x07;
    b.raw_tree().insert(key, v).unwrap();
    b.flush().unwrap();
    drop(b);
    let r = run(&["export", "--path", p(&data)]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("use --data-dir"), "{}", r.stderr);
    let r = run(&["inspect", "--data-dir", p(&data)]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(
        r.stderr
            .contains("format this agent does not know (value format 0x07)"),
        "{}",
        r.stderr
    );
}

/// Records inside a readable chunk: one that is not JSON is named and skipped, one that is
/// JSON but not a valid CloudTrail record is named and still exported (it can be fixed by hand).
#[test]
fn records_that_are_not_json_are_skipped_and_invalid_ones_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("buffer");
    let b = open(&path);
    let good = rec(1);
    let Appended::Stored(Some((first, _))) = b
        .try_append_json(
            &[
                good.to_json(),
                b"{not json".to_vec(),
                br#"{"eventID":"not-a-record"}"#.to_vec(),
            ],
            None,
        )
        .unwrap()
    else {
        panic!("not stored")
    };
    drop(b);

    let v = run(&["verify", "--path", p(&path)]);
    assert_eq!(v.code, 1, "{}", v.stdout);
    assert!(
        v.stdout.contains(&format!(
            "r:{first} (record {}): record is not JSON",
            first + 1
        )),
        "{}",
        v.stdout
    );
    assert!(
        v.stdout.contains(&format!(
            "r:{first} (record {}): not a valid CloudTrail record",
            first + 2
        )),
        "{}",
        v.stdout
    );
    let e = run(&["export", "--path", p(&path)]);
    assert_eq!(e.code, 1, "{}", e.stderr);
    let lines: Vec<&str> = e.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", e.stdout);
    assert_eq!(lines[0].as_bytes(), good.to_json().as_slice());
    assert_eq!(lines[1], r#"{"eventID":"not-a-record"}"#);
    assert!(
        e.stderr.contains("and 1 records that are not JSON"),
        "{}",
        e.stderr
    );
}
