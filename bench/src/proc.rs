//! Process footprint from `/proc`: resident memory (`VmRSS`, `VmHWM`, and `RssAnon`, the part
//! that is not mapped files, in `/proc/<pid>/status`) and CPU time (`utime` + `stime` in
//! `/proc/<pid>/stat`), sampled over a window.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// CPU seconds (user + system) the process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state is field 3 of the man page; utime is 14, stime 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clk_tck())
}

/// CPU seconds the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`: nanoseconds, where
/// `/proc`'s ticks are 10 ms), for timing in-process work.
pub fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into; the clock id is a constant.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// (`VmRSS`, `VmHWM`) in bytes.
pub fn rss_bytes(pid: u32) -> Option<(u64, u64)> {
    let [rss, hwm] = status_bytes(pid, ["VmRSS:", "VmHWM:"])?;
    Some((rss, hwm))
}

/// `VmRSS` and `RssAnon` in bytes: all resident memory, and the part that is the process's own
/// (heap, stacks) rather than pages of its binary and libraries mapped from the page cache.
pub fn rss_and_anon_bytes(pid: u32) -> Option<(u64, u64)> {
    let [rss, anon] = status_bytes(pid, ["VmRSS:", "RssAnon:"])?;
    Some((rss, anon))
}

/// The `kB` fields `names` of `/proc/<pid>/status`, in bytes.
fn status_bytes<const N: usize>(pid: u32, names: [&str; N]) -> Option<[u64; N]> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    let mut out = [0; N];
    for (o, name) in out.iter_mut().zip(names) {
        *o = field(name)?;
    }
    Some(out)
}

/// What a window of samples saw.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Footprint {
    pub seconds: f64,
    pub cpu_seconds: f64,
    /// CPU time over wall time, in percent of one core.
    pub cpu_percent: f64,
    pub rss_mean_bytes: f64,
    pub rss_max_bytes: u64,
    /// Mean `RssAnon`: resident memory without the mapped binary and libraries.
    pub rss_anon_mean_bytes: f64,
    pub samples: usize,
}

/// Samples a process every 200 ms on a thread of its own until [`Sampler::stop`].
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Option<Footprint>>,
}

impl Sampler {
    pub fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let start = Instant::now();
            let cpu0 = cpu_seconds(pid)?;
            let (mut rss, mut anon) = (Vec::new(), Vec::new());
            let mut cpu1 = cpu0;
            // Until stopped, or until the process is gone.
            while let Some((r, a)) = rss_and_anon_bytes(pid) {
                rss.push(r);
                anon.push(a);
                if let Some(c) = cpu_seconds(pid) {
                    cpu1 = c;
                }
                if flag.load(Ordering::Acquire) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let seconds = start.elapsed().as_secs_f64();
            let cpu = cpu1 - cpu0;
            Some(Footprint {
                seconds,
                cpu_seconds: cpu,
                cpu_percent: 100.0 * cpu / seconds,
                rss_mean_bytes: rss.iter().sum::<u64>() as f64 / rss.len().max(1) as f64,
                rss_max_bytes: rss.iter().copied().max().unwrap_or(0),
                rss_anon_mean_bytes: anon.iter().sum::<u64>() as f64 / anon.len().max(1) as f64,
                samples: rss.len(),
            })
        });
        Sampler { stop, handle }
    }

    /// Takes a last sample and returns the window's figures (`None` if the process was gone).
    pub fn stop(self) -> Option<Footprint> {
        self.stop.store(true, Ordering::Release);
        self.handle.join().ok().flatten()
    }
}
