//! Graceful shutdown, after tokio-rs/mini-redis.
//!
//! One `broadcast::Sender<()>` is owned by whoever decides to stop (the signal handler in
//! `main`, or a test). Every long-running task holds a [`Shutdown`] made from a receiver of it
//! and `select!`s on [`Shutdown::recv`] beside its real work. Dropping the sender also counts as
//! the signal, so a task can never miss it by subscribing late.

use std::future::Future;

use tokio::sync::broadcast;

/// Installs the SIGTERM and SIGINT handlers *now* and returns a future that resolves with the
/// name of the first of them that arrives.
///
/// Call it before binding any listener. A handler installed later (say, on the first poll of a
/// spawned task) leaves a window in which the process already answers connections, so a
/// supervisor or test may consider it up, but a SIGTERM still has its default action: the
/// process dies on the spot, without its clean stop (no final delivery, no final digest).
pub fn termination_signal() -> std::io::Result<impl Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}

/// Listens for the shutdown signal.
#[derive(Debug)]
pub struct Shutdown {
    is_shutdown: bool,
    notify: broadcast::Receiver<()>,
}

impl Shutdown {
    pub fn new(notify: broadcast::Receiver<()>) -> Shutdown {
        Shutdown {
            is_shutdown: false,
            notify,
        }
    }

    /// True once the signal has been received.
    pub fn is_shutdown(&self) -> bool {
        self.is_shutdown
    }

    /// Waits for the signal; returns at once if it already came.
    pub async fn recv(&mut self) {
        if self.is_shutdown {
            return;
        }
        // Lagged or closed both mean "stop": only one value is ever sent.
        let _ = self.notify.recv().await;
        self.is_shutdown = true;
    }
}

impl Clone for Shutdown {
    /// A clone starts where the new receiver starts (after everything already sent), so a
    /// signal sent but not yet received by `self` is carried over here: otherwise a clone made
    /// just after the signal would wait for a second one that never comes.
    fn clone(&self) -> Shutdown {
        Shutdown {
            is_shutdown: self.is_shutdown || !self.notify.is_empty(),
            notify: self.notify.resubscribe(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The handler is in place when `termination_signal` returns, before its future is first
    /// polled: a SIGTERM sent in between would otherwise kill this test process.
    #[tokio::test]
    async fn the_handler_is_installed_before_the_first_poll() {
        let signal = termination_signal().expect("install handlers");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let name = tokio::time::timeout(std::time::Duration::from_secs(10), signal)
            .await
            .expect("the signal arrived");
        assert_eq!(name, "SIGTERM");
    }

    #[tokio::test]
    async fn dropping_the_sender_stops_everyone() {
        let (tx, rx) = broadcast::channel(1);
        let mut a = Shutdown::new(rx);
        let mut b = a.clone();
        drop(tx);
        a.recv().await;
        b.recv().await;
        assert!(a.is_shutdown() && b.is_shutdown());
    }
    #[tokio::test]
    async fn a_clone_made_after_the_signal_still_stops() {
        let (tx, rx) = broadcast::channel(1);
        let a = Shutdown::new(rx);
        tx.send(()).unwrap();
        let mut b = a.clone();
        tokio::time::timeout(std::time::Duration::from_secs(5), b.recv())
            .await
            .expect("the clone missed the signal");
        drop(tx);
    }
}
