//! A private S3 server, for the tests that make S3 fail (an outage, a hang): a `moto_server`
//! process of the test's own.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::DEADLINE;

/// A `moto_server` process of the test's own on a given port.
pub struct Moto {
    pub endpoint: String,
    child: Child,
}

impl Moto {
    /// Starts moto on `port` and waits until it answers.
    pub async fn start(moto: &Path, port: u16) -> Moto {
        let child = Command::new(moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let mut m = Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let start = Instant::now();
        loop {
            if http_get_ok(addr) {
                break;
            }
            assert!(
                m.child.try_wait().ok().flatten().is_none(),
                "moto_server exited"
            );
            assert!(start.elapsed() < DEADLINE, "moto_server not answering");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        m
    }
}

impl Moto {
    /// SIGSTOP: every request to this S3 hangs (an upload in progress stays in progress).
    pub fn stop(&self) {
        // SAFETY: kill(2) with a pid we own.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGSTOP);
        }
    }

    /// SIGCONT after [`Moto::stop`].
    pub fn cont(&self) {
        // SAFETY: as above.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGCONT);
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get_ok(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).unwrap_or(0);
    buf[..n].starts_with(b"HTTP/1.0 200") || buf[..n].starts_with(b"HTTP/1.1 200")
}
