//! systemd's service notification protocol (`sd_notify(3)`), for `Type=notify` units: one
//! datagram per state change to the Unix socket named by `$NOTIFY_SOCKET`. Without that variable
//! (not started by systemd) every call is a no-op, so the binaries behave as before.
//!
//! Both binaries send `READY=1` once they serve, `WATCHDOG=1` every half `WatchdogSec=` from a
//! task on their async runtime (a wedged runtime stops the pings and systemd restarts the
//! service), and `STOPPING=1` when a SIGTERM starts the clean stop. A live runtime is not
//! enough to be healthy: [`watchdog_while`] stops the pings for good once its health check
//! fails (the collector's stuck journal, see `groundtrail_collector::store_health`), so systemd
//! restarts a process that runs but can no longer do its work.
//!
//! `READY=1` also names every TCP address the process bound, one `X_LISTEN_<ROLE>=<ip:port>`
//! line each ([`ready`]): sd_notify(3) recommends the `X_` prefix for a service's own variables,
//! and systemd ignores them. What reads them is whatever started the process with a
//! `NOTIFY_SOCKET` of its own, the black-box tests and the benchmark (`tests/src/readiness.rs`):
//! their configs say port 0, and the address the kernel chose arrives with the readiness, so no
//! port is guessed before the start. Roles: the collector's `INGEST` (`[server] listen`) and
//! `API` (`[api] listen`); the agent's `METRICS` (`[control] metrics_listen`), `APP_EVENTS`
//! (`[app_events] http_listen`) and `SIDECAR` (`[sidecar] listen`); each only when bound.

use std::time::Duration;

/// Sends `state` (e.g. `"READY=1\nSTATUS=listening"`) to `$NOTIFY_SOCKET`. Returns whether it
/// was sent; failures are logged, never fatal.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    match send(&path, state) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "sd_notify: cannot send {state:?}");
            false
        }
    }
}

/// Sends `READY=1`, `STATUS=<status>` and one `X_LISTEN_<ROLE>=<addr>` line per listener (see
/// the module doc). Returns whether it was sent.
pub fn ready<'a>(
    status: &str,
    listeners: impl IntoIterator<Item = (&'a str, std::net::SocketAddr)>,
) -> bool {
    notify(&ready_message(status, listeners))
}

fn ready_message<'a>(
    status: &str,
    listeners: impl IntoIterator<Item = (&'a str, std::net::SocketAddr)>,
) -> String {
    let mut state = format!("READY=1\nSTATUS={status}");
    for (role, addr) in listeners {
        state.push_str(&format!("\n{LISTEN_PREFIX}{role}={addr}"));
    }
    state
}

/// The roles of the listeners named in `READY=1` (`X_LISTEN_<ROLE>`), one constant each so
/// that the binaries that send them and the kit that reads them cannot disagree.
pub mod role {
    /// The collector's `[server] listen`.
    pub const INGEST: &str = "INGEST";
    /// The collector's `[api] listen`.
    pub const API: &str = "API";
    /// The agent's `[control] metrics_listen`.
    pub const METRICS: &str = "METRICS";
    /// The agent's `[app_events] http_listen`.
    pub const APP_EVENTS: &str = "APP_EVENTS";
    /// The agent's `[sidecar] listen`.
    pub const SIDECAR: &str = "SIDECAR";
}

/// The start of the variable that names a bound listener in `READY=1` (`X_LISTEN_INGEST=…`).
pub const LISTEN_PREFIX: &str = "X_LISTEN_";

fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::UnixDatagram;
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        // An abstract-namespace socket (what systemd itself uses).
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
            return Ok(());
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = name;
            return Err(std::io::Error::other("abstract sockets need Linux"));
        }
    }
    sock.send_to(state.as_bytes(), std::path::Path::new(path))?;
    Ok(())
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, when it is set and
/// `$WATCHDOG_PID` (if set) is this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Sends `WATCHDOG=1` every [`watchdog_interval`] forever; returns at once when systemd asked
/// for no watchdog. Spawn it on the runtime whose health it vouches for.
pub async fn watchdog() {
    watchdog_while(|| true).await
}

/// [`watchdog`], but each ping is sent only while `healthy()` holds; the first time it does not,
/// the pings stop for good (systemd then restarts the service after `WatchdogSec=`).
pub async fn watchdog_while(healthy: impl Fn() -> bool) {
    let Some(every) = watchdog_interval() else {
        return;
    };
    tracing::debug!(?every, "systemd watchdog enabled");
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if !healthy() {
            tracing::error!("unhealthy: no more systemd watchdog pings");
            return;
        }
        notify("WATCHDOG=1");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sends_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("gt-sdnotify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let rx = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        super::send(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_dir(&dir);
    }

    #[test]
    fn ready_names_each_bound_listener() {
        let ingest: std::net::SocketAddr = "127.0.0.1:40001".parse().unwrap();
        let api: std::net::SocketAddr = "[::1]:40002".parse().unwrap();
        assert_eq!(
            super::ready_message("listening", [("INGEST", ingest), ("API", api)]),
            "READY=1\nSTATUS=listening\nX_LISTEN_INGEST=127.0.0.1:40001\nX_LISTEN_API=[::1]:40002"
        );
        assert_eq!(
            super::ready_message("running", []),
            "READY=1\nSTATUS=running"
        );
    }
}
