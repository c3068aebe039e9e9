//! The accept loop every Groundtrail server runs (the collector's listeners, the agent's local
//! servers, the sidecar), after tokio-rs/mini-redis's `Listener`.
//!
//! [`Listener::run`] takes a connection slot, accepts, admits the peer
//! ([`ConnectionLimiter`]: a total cap and a cap per peer address), and runs the caller's
//! handler for the connection on a task of its own, holding the connection's [`Admission`]
//! until the handler's future ends, and gives the handler a [`Shutdown`] to close gracefully.
//!
//! # Guarantees
//!
//! - **At most `max` connections are served at once.** With [`WhenFull::Wait`] the loop waits
//!   for a free slot *before* accepting, so further connections wait in the kernel's queue,
//!   not in memory; with [`WhenFull::Refuse`] a connection that finds every slot taken is
//!   accepted and closed at once (a proxy in front of an application answers something rather
//!   than letting clients hang).
//! - **An accept error never ends the loop**: out of file descriptors and the like, it backs
//!   off and tries again.
//! - **`run` returns only when every connection task has ended** (the handlers saw the shutdown
//!   and closed), or, with a drain limit, when the limit passed and the rest were aborted. So
//!   when it returns, nothing a connection started is still running.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::task::JoinSet;

use crate::connections::{Admission, ConnectionLimiter, Refused};
use crate::shutdown::Shutdown;

/// How long the loop waits after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A socket that accepts connections.
pub trait Accept: Send {
    /// The connection's stream.
    type Stream: Send + 'static;
    /// Accepts one connection; its peer's address where it has one (not a Unix socket).
    fn accept(
        &mut self,
    ) -> impl Future<Output = std::io::Result<(Self::Stream, Option<SocketAddr>)>> + Send;
}

impl Accept for TcpListener {
    type Stream = TcpStream;
    async fn accept(&mut self) -> std::io::Result<(TcpStream, Option<SocketAddr>)> {
        let (s, a) = TcpListener::accept(self).await?;
        let _ = s.set_nodelay(true);
        Ok((s, Some(a)))
    }
}

impl Accept for UnixListener {
    type Stream = UnixStream;
    async fn accept(&mut self) -> std::io::Result<(UnixStream, Option<SocketAddr>)> {
        let (s, _) = UnixListener::accept(self).await?;
        Ok((s, None))
    }
}

/// What to do with a connection when every slot is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Do not accept until a slot is free.
    Wait,
    /// Accept and close at once.
    Refuse,
}

/// One accepted, admitted connection. Its slot is held by the loop until the handler's
/// future ends.
#[derive(Debug)]
pub struct Accepted<S> {
    pub stream: S,
    /// The peer's address (`None` on a Unix socket).
    pub peer: Option<SocketAddr>,
    /// Fires when the server stops: finish the request in flight and close.
    pub shutdown: Shutdown,
}

/// An accept loop (see the module doc).
#[derive(Debug)]
pub struct Listener<A> {
    acceptor: A,
    limiter: ConnectionLimiter,
    when_full: WhenFull,
    drain: Option<Duration>,
    name: &'static str,
}

impl<A: Accept> Listener<A> {
    /// A loop on `acceptor` bounded by `limiter`; `name` names it in logs.
    pub fn new(name: &'static str, acceptor: A, limiter: ConnectionLimiter) -> Listener<A> {
        Listener {
            acceptor,
            limiter,
            when_full: WhenFull::Wait,
            drain: None,
            name,
        }
    }

    /// What to do when every slot is taken (default [`WhenFull::Wait`]).
    pub fn when_full(mut self, when_full: WhenFull) -> Self {
        self.when_full = when_full;
        self
    }

    /// How long `run` waits for open connections after the shutdown before it aborts them
    /// (default: until they close, which their own timers bound).
    pub fn drain_within(mut self, limit: Duration) -> Self {
        self.drain = Some(limit);
        self
    }

    /// Accepts until `shutdown`, running `handler` for each connection; `refused` is told of
    /// each connection closed at once (the address, why). Returns when every connection task
    /// has ended (see the module doc).
    pub async fn run<H, F>(
        mut self,
        mut shutdown: Shutdown,
        refused: impl Fn(Option<SocketAddr>, &Refused),
        mut handler: H,
    ) where
        H: FnMut(Accepted<A::Stream>) -> F,
        F: Future<Output = ()> + Send + 'static,
    {
        let mut conns = JoinSet::new();
        loop {
            while conns.try_join_next().is_some() {}
            let waited = match self.when_full {
                WhenFull::Wait => tokio::select! {
                    s = self.limiter.slot() => Some(s),
                    _ = shutdown.recv() => break,
                },
                WhenFull::Refuse => None,
            };
            let (stream, peer) = tokio::select! {
                r = self.acceptor.accept() => match r {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(listener = self.name, "accept failed: {e}");
                        tokio::select! {
                            _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                            _ = shutdown.recv() => break,
                        }
                    }
                },
                _ = shutdown.recv() => break,
            };
            let admitted = match waited {
                Some(slot) => Ok(slot),
                None => self.limiter.try_slot(),
            }
            .and_then(|slot| self.limiter.admit(slot, peer.map(|p| p.ip())));
            let admission = match admitted {
                Ok(a) => a,
                Err(why) => {
                    refused(peer, &why);
                    continue;
                }
            };
            let connection = handler(Accepted {
                stream,
                peer,
                shutdown: shutdown.clone(),
            });
            conns.spawn(async move {
                connection.await;
                drop::<Admission>(admission);
            });
        }
        drop(self.acceptor);
        let all = async { while conns.join_next().await.is_some() {} };
        match self.drain {
            None => all.await,
            Some(limit) => {
                if tokio::time::timeout(limit, all).await.is_err() {
                    tracing::warn!(
                        listener = self.name,
                        "connections still open after the drain limit; closing them"
                    );
                    conns.abort_all();
                    while conns.join_next().await.is_some() {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::broadcast;

    /// The cap holds (a third client waits in the kernel's queue with `Wait`, is closed at once
    /// with `Refuse`), and `run` returns only after every handler has ended.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn caps_connections_and_drains_before_returning() {
        for when_full in [WhenFull::Wait, WhenFull::Refuse] {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let (stop, _) = broadcast::channel(1);
            let (open, ended, refusals) = (
                Arc::new(AtomicUsize::new(0)),
                Arc::new(AtomicUsize::new(0)),
                Arc::new(AtomicUsize::new(0)),
            );
            let (o, e, r) = (open.clone(), ended.clone(), refusals.clone());
            let server = tokio::spawn(
                Listener::new("test", l, ConnectionLimiter::new(2, 3))
                    .when_full(when_full)
                    .run(
                        Shutdown::new(stop.subscribe()),
                        move |_, _| {
                            r.fetch_add(1, Ordering::SeqCst);
                        },
                        move |mut c: Accepted<TcpStream>| {
                            o.fetch_add(1, Ordering::SeqCst);
                            let e = e.clone();
                            async move {
                                let _ = c.stream.write_all(b"hi").await;
                                c.shutdown.recv().await;
                                // A graceful close takes a moment.
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                e.fetch_add(1, Ordering::SeqCst);
                            }
                        },
                    ),
            );
            let mut clients = Vec::new();
            for _ in 0..2 {
                let mut c = TcpStream::connect(addr).await.unwrap();
                let mut b = [0u8; 2];
                c.read_exact(&mut b).await.unwrap();
                clients.push(c);
            }
            let mut third = TcpStream::connect(addr).await.unwrap();
            let mut b = [0u8; 2];
            let got = tokio::time::timeout(Duration::from_millis(300), third.read(&mut b)).await;
            match when_full {
                // Connected by the kernel, never accepted: no bytes, no close.
                WhenFull::Wait => assert!(got.is_err(), "the third waits: {got:?}"),
                // Accepted and closed at once: end of stream.
                WhenFull::Refuse => {
                    assert_eq!(got.unwrap().unwrap(), 0);
                    assert_eq!(refusals.load(Ordering::SeqCst), 1);
                }
            }
            assert_eq!(open.load(Ordering::SeqCst), 2);
            stop.send(()).unwrap();
            server.await.unwrap();
            assert_eq!(
                ended.load(Ordering::SeqCst),
                2,
                "run returned after the drain"
            );
        }
    }

    /// A drain limit aborts connections that do not close.
    #[tokio::test]
    async fn a_drain_limit_aborts_what_stays_open() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (stop, _) = broadcast::channel(1);
        let server = tokio::spawn(
            Listener::new("test", l, ConnectionLimiter::new(4, 4))
                .drain_within(Duration::from_millis(100))
                .run(
                    Shutdown::new(stop.subscribe()),
                    |_, _| {},
                    |c| async move {
                        let _keep = c;
                        std::future::pending::<()>().await;
                    },
                ),
        );
        let _client = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("run returns after the drain limit")
            .unwrap();
    }
}
