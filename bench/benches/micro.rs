//! Micro benchmarks (`cargo bench -p groundtrail-bench`): the in-process pieces, each on the
//! generator's records. No external harness: each figure is one timed pass, printed as a
//! rate. The end-to-end figures come from `groundtrail-bench` (see BENCHMARKS.md).

use std::time::Instant;

use groundtrail_bench::{dedup, generator, limits};
use groundtrail_collector::dedup::DedupSettings;
use groundtrail_common::Record;

fn main() {
    // `cargo bench` passes `--bench`; a filter argument, if any, picks benchmarks by name.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let want = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let n = 20_000;

    let t = Instant::now();
    let templates = generator::generate(1, n, chrono::Utc::now().timestamp());
    let gen_secs = t.elapsed().as_secs_f64();
    for l in generator::SizeSummary::of(&templates).lines() {
        println!("{l}");
    }
    let records: Vec<Vec<u8>> = templates.iter().map(|t| t.json.clone()).collect();
    let bytes: usize = records.iter().map(Vec::len).sum();
    let line = |name: &str, per_s: f64, mb_s: f64| {
        println!("{name:<48} {per_s:>12.0} records/s {mb_s:>9.1} MB/s");
    };
    if want("generator") {
        line(
            "generator",
            n as f64 / gen_secs,
            bytes as f64 / gen_secs / 1e6,
        );
    }
    if want("gzip") {
        let json = limits::log_file_json(&records);
        let (g, out) = limits::gzip(&json, n);
        line(
            "gzip level 6 of {\"Records\":[...]}",
            g.per_sec(),
            g.mb_per_sec(),
        );
        println!("  ratio {:.1}", json.len() as f64 / out as f64);
    }
    if want("zstd") {
        let t = Instant::now();
        for c in records.chunks(1000) {
            std::hint::black_box(groundtrail_bench::harness::zstd_batch(c));
        }
        let s = t.elapsed().as_secs_f64();
        line(
            "zstd level 3 of ndjson batches of 1000",
            n as f64 / s,
            bytes as f64 / s / 1e6,
        );
    }
    if want("serde") {
        let v = limits::serde_value(&records);
        line(
            "serde_json parse + serialize (Value)",
            v.per_sec(),
            v.mb_per_sec(),
        );
        let r = limits::serde_record(&records);
        line(
            "serde_json parse + validate + serialize (Record)",
            r.per_sec(),
            r.mb_per_sec(),
        );
    }
    if want("buffer") {
        let dir = tempfile::tempdir().expect("temp dir");
        let recs: Vec<Record> = records
            .iter()
            .take(1000)
            .map(|r| serde_json::from_slice(r).expect("record"))
            .collect();
        let raw = limits::raw_sled(dir.path(), &recs, 1000).expect("sled");
        println!(
            "{:<48} {:>12.0} appends/s",
            "raw sled insert + flush",
            raw.per_sec()
        );
        let one =
            limits::buffer_appends(&dir.path().join("one"), &recs, 1000, 1, 1).expect("buffer");
        println!(
            "{:<48} {:>12.0} appends/s",
            "agent buffer, 1 record per append",
            one.per_sec()
        );
        let b = limits::buffer_appends(&dir.path().join("b"), &recs, 100, 100, 1).expect("buffer");
        println!(
            "{:<48} {:>12.0} records/s",
            "agent buffer, 100 records per append",
            b.bytes as f64 / b.secs
        );
    }
    if want("put-audit-events") {
        put_audit_events(&templates);
    }
    // `-- dedup` runs both stores; `-- dedup-fjall` or `-- dedup-sled` one, for a clean RSS.
    for n in [1_000_000, 10_000_000] {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let name = format!("dedup-fjall {}M: contains miss + insert", n / 1_000_000);
        if want(&name) {
            let dir = tempfile::tempdir().expect("temp dir");
            let r = dedup::fjall(dir.path(), n, &DedupSettings::default()).expect("fjall");
            let s = r.stats.unwrap_or_default();
            println!(
                "{name:<48} {:>8.2} us/record (CPU {:.2} us)  hit {:.2} us  RSS +{:.0} MiB (peak {:.0})  disk {:.0} MiB",
                r.us_per_key(),
                r.cpu_us_per_key(),
                r.hit_secs_per_key * 1e6,
                mib(r.rss_growth),
                mib(r.rss_peak),
                mib(r.disk_bytes)
            );
            println!(
                "  stats: memtables {:.1} MiB, cache {:.1} MiB, pinned {:.2} MiB, {} keys, {} partitions",
                mib(s.memtable_bytes),
                mib(s.cache_bytes),
                mib(s.pinned_bytes),
                s.keys,
                s.partitions
            );
        }
        let name = format!("dedup-sled {}M: contains miss + insert", n / 1_000_000);
        if want(&name) {
            let dir = tempfile::tempdir().expect("temp dir");
            let r = dedup::sled(dir.path(), n).expect("sled");
            println!(
                "{name:<48} {:>8.2} us/record (CPU {:.2} us)  hit {:.2} us  RSS +{:.0} MiB (peak {:.0})  disk {:.0} MiB",
                r.us_per_key(),
                r.cpu_us_per_key(),
                r.hit_secs_per_key * 1e6,
                mib(r.rss_growth),
                mib(r.rss_peak),
                mib(r.disk_bytes)
            );
        }
    }
}

/// The agent's PutAuditEvents path in process: a call of 100 of the generator's application
/// events read ([`audit_events::parse_request`]) and each converted to its record
/// ([`audit_events::convert_to_json`]), then the records compressed as the buffer stores one
/// append (the buffer's own compressor, reused as the buffer reuses it). CPU time of this
/// thread, best of 5 passes: the end-to-end figure (`groundtrail-bench --only footprint`) adds
/// HTTP, sled and the shipper to it.
fn put_audit_events(templates: &[generator::Template]) {
    use groundtrail_common::audit_events;
    let data: Vec<String> = templates
        .iter()
        .take(2000)
        .map(|t| t.app_event_data("123456789012"))
        .collect();
    let calls: Vec<Vec<u8>> = data
        .chunks(100)
        .map(|c| {
            let events: Vec<_> = c
                .iter()
                .enumerate()
                .map(|(i, d)| serde_json::json!({"id": format!("ev-{i}"), "eventData": d}))
                .collect();
            serde_json::to_vec(&serde_json::json!({ "auditEvents": events })).expect("json")
        })
        .collect();
    let ctx = audit_events::Context {
        account_id: "123456789012",
        region: "us-east-1",
        reserved_source: "groundtrail.onprem.internal",
        owner: "this agent",
        sender_uid: Some(1000),
    };
    let channel = "arn:aws:cloudtrail:us-east-1:123456789012:channel/bench";
    // The buffer's compressor, kept for the process as the buffer keeps it: a fresh context per
    // call (`zstd::bulk::compress`) would also time the context's set-up, which the agent pays
    // once.
    let mut compressor = groundtrail_agent::buffer::chunk_compressor().expect("zstd");
    let (mut convert, mut zstd) = (f64::MAX, f64::MAX);
    for _ in 0..5 {
        let (mut c, mut z) = (0.0, 0.0);
        for body in &calls {
            let t = groundtrail_bench::proc::thread_cpu_secs();
            let events = audit_events::parse_request(body).expect("a good call");
            let records: Vec<Vec<u8>> = events
                .iter()
                .map(|ev| {
                    audit_events::convert_to_json(ev, channel, &ctx)
                        .expect("a good event")
                        .json
                })
                .collect();
            let t2 = groundtrail_bench::proc::thread_cpu_secs();
            let ndjson = groundtrail_bench::harness::ndjson(&records);
            std::hint::black_box(compressor.compress(&ndjson).expect("zstd"));
            c += t2 - t;
            z += groundtrail_bench::proc::thread_cpu_secs() - t2;
        }
        convert = convert.min(c);
        zstd = zstd.min(z);
    }
    let n = data.len() as f64;
    println!(
        "{:<48} {:>8.2} us/event (CPU)",
        "PutAuditEvents: parse + convert, 100 per call",
        convert / n * 1e6
    );
    println!(
        "{:<48} {:>8.2} us/event (CPU)",
        "PutAuditEvents: zstd level 1 of the append",
        zstd / n * 1e6
    );
}
