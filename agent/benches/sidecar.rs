//! Sidecar benchmark: added latency and throughput through the sidecar versus straight to the
//! upstream, with the same load generator in the same run, and CPU per request.
//!
//! ```text
//! cargo bench -p groundtrail-agent --bench sidecar            # full run (~40 s)
//! SIDECAR_BENCH_QUICK=1 cargo bench -p groundtrail-agent --bench sidecar
//! SIDECAR_BENCH_WORKERS=1 cargo bench -p groundtrail-agent --bench sidecar   # tokio workers
//! ```
//!
//! Setup, all in this process on loopback: a minimal hyper upstream answering `200 ok`, the
//! sidecar in its default `fail_open` mode with a route table, writing every record to the
//! agent's real buffer (sled + zstd, flushed) in a temporary directory, and a load generator of
//! keep-alive HTTP/1.1 connections. Phases:
//!
//! - latency: one connection, sequential requests, direct and sidecar interleaved in blocks
//!   (so drift in machine load hits both equally); p50/p99 of each and the difference;
//! - throughput: N concurrent connections for a fixed time, direct then sidecar then again
//!   both (best of two); requests per second and the ratio;
//! - CPU per request: process user+system time over the throughput phases divided by the
//!   requests. The direct run's figure is the load generator and upstream; the difference is
//!   what the sidecar (proxying, records, buffer writes) adds per request;
//! - the same throughput with an upstream that takes 2 ms per request (an application doing
//!   work) and 16 connections, where the application rather than the proxy's CPU is the limit.
//!
//! Goals (issue 5): added p50 latency < 0.2 ms; throughput >= 80% of direct.

#[path = "../tests/sidecar_common/mod.rs"]
#[allow(dead_code)]
mod sidecar_common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use groundtrail_agent::buffer::FullPolicy;
use groundtrail_agent::sink::{BoxFuture, Checkpoint, RecordSink, SinkError};
use groundtrail_agent::sources::sidecar::RouteConfig;
use groundtrail_common::Record;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use sidecar_common::{buffer_opts, start};

/// A sink that only counts: isolates the proxy's cost from the buffer's.
struct NullSink(AtomicU64);

impl RecordSink for NullSink {
    fn append(
        &self,
        r: Vec<Record>,
        _: Option<Checkpoint>,
    ) -> BoxFuture<'_, Result<(), SinkError>> {
        self.0.fetch_add(r.len() as u64, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }
    fn checkpoint(&self, _: &str) -> Option<Vec<u8>> {
        None
    }
}

/// A sidecar writing to [`NullSink`]; returns its address.
async fn null_sidecar(cfg: groundtrail_agent::sources::sidecar::SidecarConfig) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::broadcast::channel::<()>(1);
    std::mem::forget(tx); // runs until the process ends
    let sink = Arc::new(NullSink(AtomicU64::new(0)));
    tokio::spawn(groundtrail_agent::sources::sidecar::run(
        cfg,
        sidecar_common::host(),
        sink,
        l,
        groundtrail_common::shutdown::Shutdown::new(rx),
    ));
    addr
}

fn cpu_time() -> Duration {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// A minimal upstream: `200 ok`, optionally after `delay`.
async fn upstream(delay: Duration) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "text/plain")
                            .body(Full::new(Bytes::from_static(b"ok")))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> Sender {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn one(sender: &mut Sender, i: u64) -> Duration {
    let t = Instant::now();
    sender.ready().await.unwrap();
    let req = Request::get(format!("/orders/{i}?view=full"))
        .header("host", "orders.example.internal")
        .header("user-agent", "bench/1")
        .body(Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert!(resp.status().is_success());
    resp.into_body().collect().await.unwrap();
    t.elapsed()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `conns` connections hammering `addr` for `dur`: (requests, cpu).
async fn load(addr: SocketAddr, conns: usize, dur: Duration) -> (u64, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for _ in 0..conns {
        senders.push(connect(addr).await);
    }
    let cpu0 = cpu_time();
    let mut tasks = Vec::new();
    for mut s in senders {
        let (stop, count) = (stop.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                one(&mut s, i).await;
                i += 1;
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(dur).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    (count.load(Ordering::Relaxed), cpu_time() - cpu0)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "MET" } else { "NOT MET" }
}

fn main() {
    let quick = std::env::var_os("SIDECAR_BENCH_QUICK").is_some();
    // SIDECAR_BENCH_WORKERS: tokio worker threads (default 2, the machine's cores).
    let workers = std::env::var("SIDECAR_BENCH_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let direct = upstream(Duration::ZERO).await;
        let up = sidecar_common::Upstream {
            addr: direct,
            hits: Default::default(),
            last_headers: Default::default(),
        };
        let mut cfg = sidecar_common::config(&up);
        cfg.routes = vec![RouteConfig {
            method: "GET".into(),
            path: "/orders/{id}".into(),
            event_name: "GetOrder".into(),
            read_only: None,
            resources: vec![groundtrail_agent::sources::sidecar::ResourceTemplate {
                resource_type: "Shop::Order".into(),
                arn: "arn:{partition}:shop:{region}:{account}:order/{id}".into(),
            }],
        }];
        let sc = start(cfg.clone(), buffer_opts(1 << 30, FullPolicy::Block)).await;

        // Latency: one connection each, interleaved blocks.
        let (blocks, per) = if quick { (4, 250) } else { (20, 500) };
        let mut d = connect(direct).await;
        let mut s = connect(sc.addr).await;
        for i in 0..200 {
            one(&mut d, i).await;
            one(&mut s, i).await;
        }
        let (mut ld, mut ls) = (Vec::new(), Vec::new());
        for b in 0..blocks {
            for i in 0..per {
                ld.push(one(&mut d, (b * per + i) as u64).await);
            }
            for i in 0..per {
                ls.push(one(&mut s, (b * per + i) as u64).await);
            }
        }
        ld.sort();
        ls.sort();
        let (d50, d99, s50, s99) = (pct(&ld, 0.5), pct(&ld, 0.99), pct(&ls, 0.5), pct(&ls, 0.99));
        let added50 = ms(s50) - ms(d50);
        let added99 = ms(s99) - ms(d99);
        println!(
            "sidecar benchmark (loopback, {workers} tokio workers, same process; records to the real buffer)"
        );
        println!();
        println!("latency, 1 keep-alive connection, {} requests each, interleaved:", ld.len());
        println!("  direct   p50 {:.3} ms   p99 {:.3} ms", ms(d50), ms(d99));
        println!("  sidecar  p50 {:.3} ms   p99 {:.3} ms", ms(s50), ms(s99));
        println!(
            "  added    p50 {added50:.3} ms (goal < 0.200 ms: {})   p99 {added99:.3} ms",
            verdict(added50 < 0.2)
        );

        // Throughput and CPU.
        let (conns, secs) = if quick { (8, 1) } else { (16, 4) };
        let dur = Duration::from_secs(secs);
        let mut best_d = (0u64, Duration::ZERO);
        let mut best_s = (0u64, Duration::ZERO);
        for _ in 0..2 {
            let r = load(direct, conns, dur).await;
            if r.0 > best_d.0 {
                best_d = r;
            }
            let r = load(sc.addr, conns, dur).await;
            if r.0 > best_s.0 {
                best_s = r;
            }
        }
        let null_addr = null_sidecar(cfg.clone()).await;
        let mut best_n = (0u64, Duration::ZERO);
        for _ in 0..2 {
            let r = load(null_addr, conns, dur).await;
            if r.0 > best_n.0 {
                best_n = r;
            }
        }
        let rate = |n: u64| n as f64 / dur.as_secs_f64();
        let ratio = rate(best_s.0) / rate(best_d.0);
        let cpu_per = |r: (u64, Duration)| r.1.as_secs_f64() * 1e6 / r.0.max(1) as f64;
        println!();
        println!("throughput, {conns} keep-alive connections, {secs} s, best of 2:");
        println!("  direct   {:>9.0} req/s", rate(best_d.0));
        println!(
            "  sidecar  {:>9.0} req/s = {:.0}% of direct (goal >= 80%: {})",
            rate(best_s.0),
            ratio * 100.0,
            verdict(ratio >= 0.8)
        );
        println!(
            "  sidecar, records discarded (proxy + record building only): {:>9.0} req/s = {:.0}% of direct",
            rate(best_n.0),
            rate(best_n.0) / rate(best_d.0) * 100.0
        );
        println!();
        println!("CPU per request (process user+system over the throughput runs):");
        println!("  direct   {:.1} us (load generator + upstream)", cpu_per(best_d));
        println!("  sidecar  {:.1} us (load generator + upstream + sidecar + buffer)", cpu_per(best_s));
        println!("  sidecar's share {:.1} us per request, of which the buffer (sled, zstd, fsync) {:.1} us", cpu_per(best_s) - cpu_per(best_d), cpu_per(best_s) - cpu_per(best_n));

        // An upstream that does 2 ms of work per request.
        let slow = upstream(Duration::from_millis(2)).await;
        let mut cfg2 = cfg;
        cfg2.upstream = format!("http://{slow}");
        let sc2 = start(cfg2, buffer_opts(1 << 30, FullPolicy::Block)).await;
        // Few enough connections that the application, not the CPU, is the limit (as in production,
        // where the application does real work).
        let conns2 = 16;
        let rd = load(slow, conns2, dur).await;
        let rs = load(sc2.addr, conns2, dur).await;
        let ratio2 = rate(rs.0) / rate(rd.0);
        println!();
        println!("throughput with a 2 ms upstream, {conns2} connections, {secs} s:");
        println!("  direct   {:>9.0} req/s", rate(rd.0));
        println!(
            "  sidecar  {:>9.0} req/s = {:.0}% of direct (goal >= 80%: {})",
            rate(rs.0),
            ratio2 * 100.0,
            verdict(ratio2 >= 0.8)
        );
        let status = sc.buffer.status();
        println!();
        println!(
            "records in the buffer: {} (dropped {}, sidecar-lost {})",
            status.depth + sc2.buffer.status().depth,
            status.dropped_total,
            groundtrail_agent::sources::sidecar::STATS.records_lost.load(Ordering::Relaxed)
        );
        sc.stop().await;
        sc2.stop().await;
    });
}
