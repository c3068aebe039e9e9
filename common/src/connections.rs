//! Limits every Groundtrail server puts on its connections: a cap on how many are served at
//! once, a cap per peer address, and a timer on every phase of a connection.
//!
//! A server that only caps connections can be stalled by anyone who opens that many sockets
//! and sends nothing: hyper reads the HTTP/1 head or the HTTP/2 preface with no timer of its
//! own, and an HTTP/2 connection without streams is never closed. So, whatever the protocol:
//!
//! - a connection gets a slot from [`ConnectionLimiter`] (at most `max` at once) and a share of
//!   its peer address's allowance (at most `per_peer` at once, so one host cannot take every
//!   slot); over the per-peer cap a connection is closed at once;
//! - [`Activity`] watches each connection: with no request in flight it is closed
//!   `header` after it was opened when no request arrived yet (silent sockets, a slow TLS-less
//!   preface, an HTTP/2 stream whose headers never finish), and `idle` after the end of its last
//!   response (keep-alive, HTTP/1 or HTTP/2). A request counts as in flight from its headers
//!   until its response body is dropped, so a long answer is never cut by the idle timer;
//! - the remaining phases are timed where they happen: the TLS handshake by the accept loop
//!   (`handshake`), a request body by the handler that reads it (`body`), later HTTP/1 heads by
//!   hyper's `header_read_timeout`, and a dead HTTP/2 peer by keep-alive pings (`keepalive`).
//!
//! The collector's listener, the agent's local servers and the sidecar all use this, so the
//! guarantees and their tests live in one place.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

/// The timers of one server's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A TLS handshake must finish within this.
    pub handshake: Duration,
    /// The first request's headers (including the HTTP/2 preface) must arrive within this of
    /// the connection being accepted; later HTTP/1 heads within this of their first byte.
    pub header: Duration,
    /// A request body must arrive within this.
    pub body: Duration,
    /// A connection with no request in flight is closed this long after its last response.
    pub idle: Duration,
    /// HTTP/2: ping the peer after this much silence, and close when the ping is not answered
    /// within it.
    pub keepalive: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            handshake: Duration::from_secs(10),
            header: Duration::from_secs(30),
            body: Duration::from_secs(120),
            idle: Duration::from_secs(60),
            keepalive: Duration::from_secs(30),
        }
    }
}

/// Connection slots: at most `max` at once, at most `per_peer` per peer IP address. A clone
/// shares the slots.
#[derive(Debug, Clone)]
pub struct ConnectionLimiter {
    slots: Arc<Semaphore>,
    max: usize,
    per_peer: usize,
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// A connection's place: its slot and (when it has a peer address) its peer's share. Both are
/// given back when this is dropped.
#[derive(Debug)]
pub struct Admission {
    _slot: OwnedSemaphorePermit,
    _peer: Option<PeerShare>,
}

#[derive(Debug)]
struct PeerShare {
    ip: IpAddr,
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for PeerShare {
    fn drop(&mut self) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = peers.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                peers.remove(&self.ip);
            }
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("all {0} connection slots are taken")]
    Full(usize),
    #[error("the peer already holds {0} connections")]
    PeerFull(usize),
}

impl ConnectionLimiter {
    /// `max` and `per_peer` below 1 count as 1.
    pub fn new(max: usize, per_peer: usize) -> ConnectionLimiter {
        ConnectionLimiter {
            slots: Arc::new(Semaphore::new(max.max(1))),
            max: max.max(1),
            per_peer: per_peer.max(1),
            peers: Arc::default(),
        }
    }

    /// Waits for a free slot (the accept loop calls this before `accept`, so that further
    /// connections wait in the kernel's queue rather than in memory).
    pub async fn slot(&self) -> OwnedSemaphorePermit {
        // The semaphore is never closed.
        self.slots
            .clone()
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("the connection semaphore is never closed"))
    }

    /// A slot now, or `Refused::Full`.
    pub fn try_slot(&self) -> Result<OwnedSemaphorePermit, Refused> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Full(self.max))
    }

    /// Admits a connection holding `slot` from `peer` (`None` for Unix sockets, which have no
    /// address to share by), or refuses it when the peer is at its cap.
    pub fn admit(
        &self,
        slot: OwnedSemaphorePermit,
        peer: Option<IpAddr>,
    ) -> Result<Admission, Refused> {
        let share = match peer {
            None => None,
            Some(ip) => {
                // An IPv4 peer seen through an IPv6 socket is the same host.
                let ip = ip.to_canonical();
                let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
                let n = peers.entry(ip).or_insert(0);
                if *n >= self.per_peer {
                    return Err(Refused::PeerFull(self.per_peer));
                }
                *n += 1;
                Some(PeerShare {
                    ip,
                    peers: self.peers.clone(),
                })
            }
        };
        Ok(Admission {
            _slot: slot,
            _peer: share,
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct State {
    in_flight: usize,
    /// When the connection opened, or when the last request in flight ended.
    since: Instant,
    /// Whether a request ever arrived.
    served: bool,
}

/// Watches one connection's requests and says when it has been silent too long.
#[derive(Debug, Clone)]
pub struct Activity {
    state: Arc<watch::Sender<State>>,
    header: Duration,
    idle: Duration,
}

/// Held while a request is in flight (from its headers until its response body is dropped).
#[derive(Debug)]
pub struct InFlight {
    state: Arc<watch::Sender<State>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.send_modify(|s| {
            s.in_flight = s.in_flight.saturating_sub(1);
            s.since = Instant::now();
        });
    }
}

/// A response body that holds its request's [`InFlight`] until the body is dropped, i.e. until
/// the answer was written out (or the connection gave up on it). Wrapping the body keeps its
/// own `size_hint`, so an HTTP/1 answer keeps its `Content-Length` instead of turning chunked.
#[derive(Debug)]
pub struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, in_flight: InFlight) -> Tracked<B> {
        Tracked {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Activity {
    /// A connection accepted now.
    pub fn new(timeouts: &Timeouts) -> Activity {
        let (state, _) = watch::channel(State {
            in_flight: 0,
            since: Instant::now(),
            served: false,
        });
        Activity {
            state: Arc::new(state),
            header: timeouts.header,
            idle: timeouts.idle,
        }
    }

    /// A request arrived; it is in flight until the returned guard is dropped.
    pub fn begin(&self) -> InFlight {
        self.state.send_modify(|s| {
            s.in_flight += 1;
            s.served = true;
        });
        InFlight {
            state: self.state.clone(),
        }
    }

    /// Resolves when the connection has had no request in flight for too long: `header` since
    /// it opened when no request came yet, `idle` since the last one ended otherwise. Never
    /// resolves while a request is in flight.
    pub async fn expired(&self) {
        let mut rx = self.state.subscribe();
        loop {
            let s = *rx.borrow_and_update();
            if s.in_flight > 0 {
                if rx.changed().await.is_err() {
                    return;
                }
                continue;
            }
            let limit = if s.served { self.idle } else { self.header };
            tokio::select! {
                _ = tokio::time::sleep_until(s.since + limit) => return,
                r = rx.changed() => if r.is_err() { return },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeouts(header_ms: u64, idle_ms: u64) -> Timeouts {
        Timeouts {
            header: Duration::from_millis(header_ms),
            idle: Duration::from_millis(idle_ms),
            ..Timeouts::default()
        }
    }

    #[tokio::test]
    async fn a_silent_connection_expires_after_the_header_timeout() {
        let a = Activity::new(&timeouts(200, 60_000));
        let start = Instant::now();
        a.expired().await;
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(190) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
    }

    #[tokio::test]
    async fn a_request_in_flight_is_never_cut_and_idle_counts_from_its_end() {
        let a = Activity::new(&timeouts(50, 300));
        let guard = a.begin();
        let watcher = {
            let a = a.clone();
            tokio::spawn(async move { a.expired().await })
        };
        // Well past the header timeout: a request in flight keeps the connection.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!watcher.is_finished(), "expired with a request in flight");
        let end = Instant::now();
        drop(guard);
        watcher.await.unwrap();
        let idle = end.elapsed();
        assert!(
            idle >= Duration::from_millis(290) && idle < Duration::from_secs(5),
            "{idle:?}"
        );
    }

    #[test]
    fn the_per_peer_cap_is_per_address_and_given_back() {
        let limiter = ConnectionLimiter::new(10, 2);
        let one: IpAddr = "127.0.0.1".parse().unwrap();
        let two: IpAddr = "127.0.0.2".parse().unwrap();
        let a = limiter
            .admit(limiter.try_slot().unwrap(), Some(one))
            .unwrap();
        let _b = limiter
            .admit(limiter.try_slot().unwrap(), Some(one))
            .unwrap();
        assert_eq!(
            limiter
                .admit(limiter.try_slot().unwrap(), Some(one))
                .unwrap_err(),
            Refused::PeerFull(2)
        );
        // The same host through an IPv6 socket shares the allowance.
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(
            limiter
                .admit(limiter.try_slot().unwrap(), Some(mapped))
                .is_err()
        );
        let _c = limiter
            .admit(limiter.try_slot().unwrap(), Some(two))
            .unwrap();
        drop(a);
        assert!(
            limiter
                .admit(limiter.try_slot().unwrap(), Some(one))
                .is_ok()
        );
        // Unix sockets have no address: only the slot counts.
        let small = ConnectionLimiter::new(1, 1);
        let held = small.admit(small.try_slot().unwrap(), None).unwrap();
        assert!(matches!(small.try_slot(), Err(Refused::Full(_))));
        drop(held);
        assert!(small.try_slot().is_ok());
    }
}
