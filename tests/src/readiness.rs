//! Knowing when a process under test serves, and where, without guessing.
//!
//! Both binaries speak sd_notify(3) (`groundtrail_common::sd_notify`): given a `NOTIFY_SOCKET`
//! they send `READY=1` once every listener is bound and every task runs, with one
//! `X_LISTEN_<ROLE>=<ip:port>` line per TCP listener. So the kit's configs say port 0 and read
//! the port the kernel chose from the readiness ([`Ready::addr`]); no port is picked before the
//! start, and none can be taken by another test in between. A connect to a port proves less:
//! the port may be another process's, or this one's in the moment before a failed start exits.
//!
//! [`free_port`] remains where a port must be known before, or kept after, the process that
//! listens on it: the servers that cannot report a port (moto, nats-server, chromedriver), a
//! collector's ingest port (kept across its restarts, see `collector`), webhook receivers
//! that start after the collector naming them, and addresses where nothing may listen.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use groundtrail_common::sd_notify::LISTEN_PREFIX;

use crate::DEADLINE;

/// The `NOTIFY_SOCKET` a spawned binary reports to, under the system's temp directory (a socket
/// path must stay under 108 bytes). Drop it after the readiness: the binary's later
/// notifications then fail at once (a logged warning), they never wait on a full queue.
pub struct Readiness {
    pub path: PathBuf,
    sock: UnixDatagram,
    ready: Option<Ready>,
}

/// What a `READY=1` message said: the addresses bound, by role (`INGEST`, `API`, `METRICS`,
/// `APP_EVENTS`, `SIDECAR`).
#[derive(Debug, Clone, Default)]
pub struct Ready {
    pub listening: BTreeMap<String, SocketAddr>,
}

impl Ready {
    /// The address bound for `role`; panics naming what was reported when there is none.
    pub fn addr(&self, role: &str) -> SocketAddr {
        self.get(role).unwrap_or_else(|| {
            panic!(
                "READY=1 named no {LISTEN_PREFIX}{role} (it named {:?})",
                self.listening
            )
        })
    }

    pub fn get(&self, role: &str) -> Option<SocketAddr> {
        self.listening.get(role).copied()
    }

    /// The `READY=1` message's listeners; `None` when `message` is not a `READY=1`.
    pub fn parse(message: &str) -> Option<Ready> {
        if !message.lines().any(|l| l == "READY=1") {
            return None;
        }
        let listening = message
            .lines()
            .filter_map(|l| l.strip_prefix(LISTEN_PREFIX)?.split_once('='))
            .filter_map(|(role, addr)| Some((role.to_string(), addr.parse().ok()?)))
            .collect();
        Some(Ready { listening })
    }
}

impl Readiness {
    pub fn new() -> Readiness {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "gt-ready-{}-{}.sock",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).expect("bind NOTIFY_SOCKET");
        sock.set_nonblocking(true)
            .expect("non-blocking NOTIFY_SOCKET");
        Readiness {
            path,
            sock,
            ready: None,
        }
    }

    /// The `READY=1` message, once it has arrived (reads what is queued, never waits).
    pub fn poll(&mut self) -> Option<&Ready> {
        let mut buf = [0u8; 4096];
        while self.ready.is_none()
            && let Ok(n) = self.sock.recv(&mut buf)
        {
            self.ready = Ready::parse(&String::from_utf8_lossy(&buf[..n]));
        }
        self.ready.as_ref()
    }
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness::new()
    }
}

impl Drop for Readiness {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A TCP port on loopback that was free a moment ago, for what cannot bind port 0 and report
/// it (moto, nats-server) and for addresses where nothing should listen. Everything of ours
/// binds port 0 instead (see the module doc).
///
/// Not the kernel's choice for port 0: that port is free again once the probe closes, so two
/// tests of one process could get the same one. Ports are handed out from a process-wide counter
/// below Linux's ephemeral range (32768-60999), which the kernel never gives to port-0 binds or
/// outgoing connections; the start is spread by process id, and a port something else holds is
/// skipped.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() % 600) * 20,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN);
}

/// Polls `f` every 100 ms until it returns `Some`, or panics with `what` after [`DEADLINE`].
pub async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_is_read_with_its_listeners_and_nothing_before_it() {
        let mut r = Readiness::new();
        assert!(r.poll().is_none());
        let tx = UnixDatagram::unbound().unwrap();
        tx.send_to(b"STATUS=starting", &r.path).unwrap();
        assert!(r.poll().is_none(), "a status alone is not readiness");
        tx.send_to(
            b"READY=1\nSTATUS=listening\nX_LISTEN_INGEST=127.0.0.1:41000\nX_LISTEN_API=[::1]:41001",
            &r.path,
        )
        .unwrap();
        let ready = r.poll().expect("ready");
        assert_eq!(ready.addr("INGEST"), "127.0.0.1:41000".parse().unwrap());
        assert_eq!(ready.addr("API"), "[::1]:41001".parse().unwrap());
        assert_eq!(ready.get("METRICS"), None);
        // What follows READY=1 (a watchdog ping) does not replace it.
        tx.send_to(b"WATCHDOG=1", &r.path).unwrap();
        assert!(r.poll().is_some());
    }
}
