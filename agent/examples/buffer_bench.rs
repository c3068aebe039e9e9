//! Durable appends per second into the agent's buffer, beside raw sled on the same disk: insert
//! + flush per value (the floor of one fsync per acknowledged append), and 100 values per batch
//! + flush (what sled can do with the same records when an append carries many).
//!
//! `cargo run -p groundtrail-agent --example buffer_bench [--release] -- [N] [DIR]`
//! (N: appends per single-record run, default 1000; the 100-record runs make N/10 appends.
//! DIR defaults to a temporary directory under the current one, so it measures that disk.)

use std::time::{Duration, Instant};

use groundtrail_agent::buffer::FullPolicy;
use groundtrail_agent::buffer::{Buffer, BufferOptions};
use groundtrail_agent::host_identity::HostIdentity;
use serde_json::json;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let base = args.next().unwrap_or_else(|| ".".into());
    let dir = tempfile::tempdir_in(base).expect("temp dir");
    let id = HostIdentity {
        host: "bench-host".into(),
        account_id: "123456789012".into(),
        region: "us-east-1".into(),
        domain: "onprem.internal".into(),
        partition: "aws".into(),
    };
    let record = |i: u64| {
        id.agent_record(
            "RunCommand",
            json!({"command": "/usr/bin/systemctl restart nginx", "tty": "pts/0", "i": i}),
        )
    };
    let sample = record(0).to_json();
    println!(
        "record: {} bytes of JSON; {n} single-record appends, {} appends of 100 per run",
        sample.len(),
        n / 10
    );
    let hundreds = n / 10;

    // 1. Raw sled, the same values (uncompressed JSON), flushed like durable appends.
    {
        let db = sled::open(dir.path().join("raw")).expect("sled");
        let tree = db.open_tree("t").expect("tree");
        let t = Instant::now();
        for i in 0..n {
            tree.insert(i.to_be_bytes(), sample.as_slice())
                .expect("insert");
            db.flush().expect("flush");
        }
        report("raw sled: insert 1 value + flush", n, t.elapsed());
        let t = Instant::now();
        for b in 0..hundreds {
            let mut batch = sled::Batch::default();
            for i in 0..100 {
                batch.insert(&(n + b * 100 + i).to_be_bytes(), sample.as_slice());
            }
            tree.apply_batch(batch).expect("batch");
            db.flush().expect("flush");
        }
        report(
            "raw sled: batch of 100 values + flush (values/s)",
            hundreds * 100,
            t.elapsed(),
        );
    }

    let opts = BufferOptions {
        max_bytes: 1 << 30,
        full_policy: FullPolicy::Block,
        flush_delay: Duration::ZERO,
        ..BufferOptions::default()
    };
    let stored = |b: &Buffer| {
        let st = b.status();
        st.bytes as f64 / st.depth.max(1) as f64
    };
    // 2. Buffer: one record per durable append (one chunk, one zstd frame, flush).
    {
        let (b, _) = Buffer::open(&dir.path().join("one"), opts.clone(), id.clone()).expect("open");
        let t = Instant::now();
        for i in 0..n {
            b.try_append(&[record(i)], None).expect("append");
        }
        report("buffer: 1 record per append", n, t.elapsed());
        println!("{:<50} {:>10.0} B", "  stored per record", stored(&b));
    }
    // 3. Buffer: 100 records per append (a source flushing a burst of log lines).
    {
        let (b, _) =
            Buffer::open(&dir.path().join("hundred"), opts.clone(), id.clone()).expect("open");
        let batch: Vec<_> = (0..100).map(record).collect();
        let t = Instant::now();
        for _ in 0..hundreds {
            b.try_append(&batch, None).expect("append");
        }
        report(
            "buffer: 100 records per append (records/s)",
            hundreds * 100,
            t.elapsed(),
        );
        println!("{:<50} {:>10.0} B", "  stored per record", stored(&b));
        // Reading them back, as the shipper does (1000 per batch), and acknowledging.
        let t = Instant::now();
        let mut read = 0u64;
        loop {
            let got = b.read_from(0, 1000, usize::MAX).expect("read");
            let Some(last) = got.last() else { break };
            read += got.len() as u64;
            b.ack_up_to(last.seq).expect("ack");
        }
        report(
            "buffer: read + ack, 1000 per batch (records/s)",
            read,
            t.elapsed(),
        );
    }
    // 4. Buffer: 4 concurrent appenders, 1 record each (group commit shares flushes).
    {
        let (b, _) = Buffer::open(&dir.path().join("concurrent"), opts, id.clone()).expect("open");
        let t = Instant::now();
        std::thread::scope(|s| {
            for w in 0..4u64 {
                let b = b.clone();
                let record = &record;
                s.spawn(move || {
                    for i in 0..n / 4 {
                        b.try_append(&[record(w * n + i)], None).expect("append");
                    }
                });
            }
        });
        report(
            "buffer: 4 concurrent appenders, 1 record each",
            n / 4 * 4,
            t.elapsed(),
        );
    }
}

fn report(what: &str, n: u64, took: Duration) {
    println!(
        "{what:<50} {:>10.0} /s  ({n} in {:.2} s)",
        n as f64 / took.as_secs_f64(),
        took.as_secs_f64()
    );
}
