//! In-process measurements: the raw rates the system cannot beat (gzip of the log file bytes,
//! serde_json over the records, sled insert + flush) and the agent's `Buffer` appends. Used by
//! `groundtrail-bench` and by the `cargo bench` micro benchmarks.

use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use groundtrail_agent::buffer::FullPolicy;
use groundtrail_agent::buffer::{Buffer, BufferOptions};
use groundtrail_agent::host_identity::HostIdentity;
use groundtrail_common::Record;

/// A timed run: how many items in how long.
#[derive(Debug, Clone, Copy)]
pub struct Timed {
    pub items: usize,
    pub bytes: usize,
    pub secs: f64,
}

impl Timed {
    pub fn per_sec(&self) -> f64 {
        self.items as f64 / self.secs
    }

    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }
}

/// The log file body CloudTrail writes for `records`: `{"Records":[r1,r2,...]}`.
pub fn log_file_json(records: &[Vec<u8>]) -> Vec<u8> {
    let mut json = Vec::with_capacity(records.iter().map(|r| r.len() + 1).sum::<usize>() + 16);
    json.extend_from_slice(b"{\"Records\":[");
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        json.extend_from_slice(r);
    }
    json.extend_from_slice(b"]}");
    json
}

/// gzip at `flate2::Compression::default()` (level 6), the level `collector/src/batcher.rs`
/// writes log files with, on one thread. Returns the timing and the compressed size.
pub fn gzip(json: &[u8], records: usize) -> (Timed, usize) {
    let t = Instant::now();
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(json.len() / 8),
        flate2::Compression::default(),
    );
    enc.write_all(json).expect("gzip to memory");
    let gz = enc.finish().expect("gzip to memory");
    let secs = t.elapsed().as_secs_f64();
    (
        Timed {
            items: records,
            bytes: json.len(),
            secs,
        },
        gz.len(),
    )
}

/// serde_json: parse each record into a `Value` and serialize it again.
pub fn serde_value(records: &[Vec<u8>]) -> Timed {
    let t = Instant::now();
    let mut out = 0usize;
    for r in records {
        let v: serde_json::Value = serde_json::from_slice(r).expect("JSON");
        out += serde_json::to_vec(&v).expect("JSON").len();
    }
    black_box(out);
    Timed {
        items: records.len(),
        bytes: records.iter().map(Vec::len).sum(),
        secs: t.elapsed().as_secs_f64(),
    }
}

/// serde_json with the record model the collector uses: parse into `Record`, validate,
/// serialize.
pub fn serde_record(records: &[Vec<u8>]) -> Timed {
    let t = Instant::now();
    let mut out = 0usize;
    for r in records {
        let rec: Record = serde_json::from_slice(r).expect("record");
        rec.validate().expect("valid record");
        out += rec.to_json().len();
    }
    black_box(out);
    Timed {
        items: records.len(),
        bytes: records.iter().map(Vec::len).sum(),
        secs: t.elapsed().as_secs_f64(),
    }
}

fn identity() -> HostIdentity {
    HostIdentity {
        host: "bench-host".into(),
        account_id: crate::generator::ACCOUNTS[0].into(),
        region: "us-east-1".into(),
        domain: "onprem.internal".into(),
        partition: "aws".into(),
    }
}

fn options() -> BufferOptions {
    BufferOptions {
        max_bytes: 1 << 30,
        full_policy: FullPolicy::Block,
        flush_delay: Duration::ZERO,
        ..BufferOptions::default()
    }
}

/// Raw sled: insert one record-sized value and flush, `n` times (the floor of one fsync per
/// acknowledged append).
pub fn raw_sled(dir: &Path, records: &[Record], n: usize) -> anyhow::Result<Timed> {
    let db = sled::open(dir.join("raw-sled"))?;
    let tree = db.open_tree("t")?;
    let values: Vec<Vec<u8>> = records.iter().map(Record::to_json).collect();
    let t = Instant::now();
    for i in 0..n {
        tree.insert(
            (i as u64).to_be_bytes(),
            values[i % values.len()].as_slice(),
        )?;
        db.flush()?;
    }
    Ok(Timed {
        items: n,
        bytes: 0,
        secs: t.elapsed().as_secs_f64(),
    })
}

/// The agent's buffer: `appends` durable appends of `per_append` records each, from
/// `threads` threads at once. Returns appends (items = appends, bytes = records).
pub fn buffer_appends(
    dir: &Path,
    records: &[Record],
    appends: usize,
    per_append: usize,
    threads: usize,
) -> anyhow::Result<Timed> {
    let (b, _) = Buffer::open(dir, options(), identity())?;
    let per_thread = appends / threads;
    // Batches built before the clock starts (a few distinct ones, reused: the buffer stores
    // whatever it is given, so repeating content costs the same as new content).
    let batches: Vec<Vec<Record>> = (0..per_thread.clamp(1, 64) * threads)
        .map(|j| {
            (0..per_append)
                .map(|k| records[(j * per_append + k) % records.len()].clone())
                .collect()
        })
        .collect();
    let batches = &batches;
    let t = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for w in 0..threads {
            let b = b.clone();
            handles.push(s.spawn(move || -> anyhow::Result<()> {
                let mine = batches.len() / threads;
                for i in 0..per_thread {
                    b.try_append(&batches[w * mine + i % mine], None)?;
                }
                Ok(())
            }));
        }
        for h in handles {
            h.join().expect("appender thread")?;
        }
        Ok(())
    })?;
    let secs = t.elapsed().as_secs_f64();
    b.close();
    Ok(Timed {
        items: per_thread * threads,
        bytes: per_thread * threads * per_append,
        secs,
    })
}
