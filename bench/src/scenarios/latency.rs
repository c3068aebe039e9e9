//! Scenario 3: Delivery latency at a steady rate: the real agent (PutAuditEvents, default shipper
//! settings: batches wait up to 1 s) shipping to the real collector with a short
//! `log_file_interval`. Each event's capture time is taken just before its call is sent; a
//! watcher lists the destination every 100 ms and reads each new log file; an event's latency
//! is the time its file was first seen minus its capture time (so it includes up to one
//! polling period and the reading).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::fig;
use crate::Ctx;
use crate::harness::{self, HttpConn};
use crate::report::Goal;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let interval_s: u64 = ctx.size(5, 1);
    let rate = 200usize;
    let per_tick = rate / 10;
    let run_for = ctx.secs(30.0, 2.0);
    let data = super::agent_e2e::app_data(ctx);
    let dir = ctx.dir("latency")?;
    ctx.step("latency: starting collector and agent");
    let mut collector = harness::start_collector(
        &ctx.bins,
        &ctx.pki,
        &dir.join("collector"),
        &format!("{interval_s}s"),
        &["latency-agent".to_string()],
    )
    .await?;
    let mut agent = harness::start_agent(
        &ctx.bins,
        &ctx.pki,
        &dir.join("agent"),
        "latency-agent",
        collector.addr,
    )
    .await?;

    let base = Instant::now();
    let sent: Arc<Mutex<HashMap<String, f64>>> = Arc::default();
    let seen: Arc<Mutex<HashMap<String, f64>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Stops the watcher on every way out of this function, an early `?` included: a
    // blocking task still looping would keep the runtime (and the bench) from exiting.
    let _stop_watcher = StopOnDrop(stop.clone());
    let watcher = {
        let (seen, stop, trail) = (seen.clone(), stop.clone(), collector.trail.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let mut files = HashSet::new();
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                for f in harness::log_files(&trail) {
                    if files.insert(f.clone()) {
                        let at = base.elapsed().as_secs_f64();
                        let ids = harness::file_event_ids(&f)?;
                        let mut s = seen.lock().expect("lock");
                        for id in ids {
                            s.entry(id).or_insert(at);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(())
        })
    };

    ctx.step(format!(
        "latency: {rate} records/s for {} s, log_file_interval {interval_s} s",
        run_for.as_secs()
    ));
    let mut conn = HttpConn::plain(agent.app_addr);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut i = 0usize;
    let start = Instant::now();
    while start.elapsed() < run_for {
        tick.tick().await;
        let events: Vec<(String, String)> = (i..i + per_tick)
            .map(|k| (format!("lat-{k}"), data[k % data.len()].clone()))
            .collect();
        i += per_tick;
        let at = base.elapsed().as_secs_f64();
        let ids = conn.put_audit_events(&events).await?;
        let mut s = sent.lock().expect("lock");
        for id in ids {
            s.insert(id, at);
        }
    }
    let achieved = i as f64 / start.elapsed().as_secs_f64();
    ctx.step("latency: waiting for the last log files");
    let wait_until = Instant::now() + Duration::from_secs(interval_s + 30);
    loop {
        let done = {
            let s = sent.lock().expect("lock");
            let d = seen.lock().expect("lock");
            s.keys().all(|k| d.contains_key(k))
        };
        if done || Instant::now() > wait_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    watcher.await??;
    let _ = tokio::task::block_in_place(|| agent.proc.terminate(Duration::from_secs(30)));
    let _ = tokio::task::block_in_place(|| collector.proc.terminate(Duration::from_secs(120)));

    let sent = sent.lock().expect("lock").clone();
    let seen = seen.lock().expect("lock").clone();
    let mut lat: Vec<f64> = sent
        .iter()
        .filter_map(|(id, t)| seen.get(id).map(|s| s - t))
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    let missing = sent.len() - lat.len();
    let goal = interval_s as f64 + 2.0;
    ctx.report.note(format!(
        "latency: {} events at {achieved:.0} records/s for {} s through the real agent (PutAuditEvents, default batch_max_wait 1 s) to the real collector with log_file_interval {interval_s} s; capture = just before the call; seen = destination listed every 100 ms; {} events never seen within interval + 30 s",
        sent.len(),
        run_for.as_secs(),
        missing
    ));
    if lat.is_empty() {
        anyhow::bail!("no event reached a delivered log file");
    }
    // Events that never arrived count as infinitely late for p99 (they are not dropped).
    let total = sent.len();
    let q = |p: f64| {
        let k = ((total as f64 * p).ceil() as usize).clamp(1, total) - 1;
        lat.get(k).copied().unwrap_or(f64::INFINITY)
    };
    fig(
        ctx,
        "latency.p50_s",
        q(0.50),
        "s",
        None,
        &format!("log_file_interval {interval_s} s"),
    );
    fig(
        ctx,
        "latency.p99_s",
        q(0.99),
        "s",
        Some(Goal::AtMost(goal)),
        &format!("goal <= interval + 2 s = {goal:.0} s"),
    );
    fig(
        ctx,
        "latency.max_s",
        if missing > 0 {
            f64::INFINITY
        } else {
            lat[lat.len() - 1]
        },
        "s",
        None,
        "",
    );
    Ok(())
}

/// Sets its flag when dropped.
struct StopOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}
