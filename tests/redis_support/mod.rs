//! A private `redis-server` per test (127.0.0.1, a free port, no
//! persistence), started and stopped by PID; a small TCP proxy on 127.0.0.1
//! that can stall; and the helpers that re-run this test binary as worker
//! processes.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raceless_harness::model::SequentialSpec;
use serde::{Deserialize, Serialize};

/// A `redis-server` child process.
pub struct Server {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

/// Whether Debian's `redis-server` is installed; tests skip (with a message)
/// when it is not.
pub fn available() -> bool {
    let ok = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIP: redis-server not found (apt-get install redis-server)");
    }
    ok
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

impl Server {
    /// Starts a server on a free 127.0.0.1 port, or `None` (after printing
    /// why) when `redis-server` is not installed.
    pub fn start() -> Option<Self> {
        if !available() {
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = Self {
            child: None,
            port: free_port(),
            dir,
        };
        server.spawn();
        Some(server)
    }

    /// Starts a server listening only on a Unix socket in a private
    /// directory (`--port 0`), or `None` without `redis-server`.
    pub fn start_unix() -> Option<Self> {
        if !available() {
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = Self {
            child: None,
            port: 0,
            dir,
        };
        server.spawn();
        Some(server)
    }

    /// The Unix socket of a server started with [`Server::start_unix`].
    pub fn socket(&self) -> std::path::PathBuf {
        self.dir.path().join("redis.sock")
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--unixsocket", &self.socket().display().to_string()])
            .args(["--unixsocketperm", "700"])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--dir", &self.dir.path().display().to_string()])
            .args(["--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.port == 0 {
                if let Ok(mut s) = std::os::unix::net::UnixStream::connect(self.socket()) {
                    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                    let mut buf = [0u8; 7];
                    if s.write_all(b"PING\r\n").is_ok()
                        && s.read_exact(&mut buf).is_ok()
                        && &buf == b"+PONG\r\n"
                    {
                        return;
                    }
                }
            } else if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buf = [0u8; 7];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read_exact(&mut buf).is_ok()
                    && &buf == b"+PONG\r\n"
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's URL (its Unix socket's with `--port 0`).
    pub fn url(&self) -> String {
        if self.port == 0 {
            format!("redis+unix://{}", self.socket().display())
        } else {
            format!("redis://127.0.0.1:{}/", self.port)
        }
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill {sig} {}", self.pid());
    }

    /// SIGSTOP: the server stops answering (connections stay open).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (an empty dataset: no persistence).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A paused server does not die of SIGKILL until continued? It
            // does; CONT anyway so nothing lingers.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
    }
}

/// A TCP proxy on 127.0.0.1 in front of `upstream_port`. While `stall` is
/// set it forwards requests but holds every reply back (a server or network
/// that stalls mid-reply).
pub struct Proxy {
    pub port: u16,
    stall: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let stall = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        listener.set_nonblocking(true).unwrap();
        let (st, sp) = (stall.clone(), stop.clone());
        std::thread::spawn(move || {
            while !sp.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
                            continue;
                        };
                        pipe(
                            client.try_clone().unwrap(),
                            server.try_clone().unwrap(),
                            None,
                            sp.clone(),
                        );
                        pipe(server, client, Some(st.clone()), sp.clone());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self { port, stall, stop }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn set_stall(&self, on: bool) {
        self.stall.store(on, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to`; while `stall` is set, bytes read are held back
/// (the connection stays open), released when it clears.
fn pipe(
    mut from: TcpStream,
    mut to: TcpStream,
    stall: Option<Arc<AtomicBool>>,
    stop: Arc<AtomicBool>,
) {
    std::thread::spawn(move || {
        let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
        let mut held: Vec<u8> = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let stalled = || stall.as_ref().is_some_and(|s| s.load(Ordering::SeqCst));
            if !stalled() && !held.is_empty() {
                if to.write_all(&held).is_err() {
                    break;
                }
                held.clear();
            }
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    // Judged when the bytes arrive, so nothing read after
                    // `set_stall(true)` returned gets through.
                    if stalled() || !held.is_empty() {
                        held.extend_from_slice(&buf[..n]);
                    } else if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
        let _ = from.shutdown(std::net::Shutdown::Both);
    });
}

/// A namespace no other test uses.
pub fn namespace(test: &str) -> String {
    format!("t-{test}-{}", std::process::id())
}

/// Runs this test binary again as `n` worker processes, each running the
/// (ignored) test `worker_test` with `RACELESS_REDIS_WORKER=<i>` and the
/// given environment, and returns each worker's stdout lines that start
/// with `OUT `.
pub fn run_workers(worker_test: &str, n: usize, env: &[(&str, String)]) -> Vec<Vec<String>> {
    let exe = std::env::current_exe().expect("current exe");
    let children: Vec<Child> = (0..n)
        .map(|i| {
            let mut cmd = Command::new(&exe);
            cmd.args([
                worker_test,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("RACELESS_REDIS_WORKER", i.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
            for (k, v) in env {
                cmd.env(k, v);
            }
            cmd.spawn().expect("spawn worker")
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("worker output");
            assert!(out.status.success(), "worker failed: {:?}", out.status);
            String::from_utf8_lossy(&out.stdout)
                .lines()
                // libtest's "test worker ... " may precede the first line.
                .filter_map(|l| l.split_once("OUT ").map(|(_, r)| r.to_owned()))
                .collect()
        })
        .collect()
}

/// The worker's index, when this process is a worker.
pub fn worker_index() -> Option<usize> {
    std::env::var("RACELESS_REDIS_WORKER").ok()?.parse().ok()
}

// ---- the sequential model of one pair's arc -----------------------------

/// One pair's arc, identified by the kind name its starter chose.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct ArcModel(pub Option<String>);

/// An operation on one pair (a start names its arc by its kind's name).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ArcOp {
    Start(String),
    End,
    Status,
}

/// What it returned.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ArcRet {
    Started(String),
    AlreadyActive(String),
    Ended(String),
    NotFound,
    Status(Option<String>),
}

impl SequentialSpec for ArcModel {
    type Op = ArcOp;
    type Ret = ArcRet;
    fn apply(&mut self, op: &ArcOp) -> ArcRet {
        match op {
            ArcOp::Start(name) => match &self.0 {
                Some(cur) => ArcRet::AlreadyActive(cur.clone()),
                None => {
                    self.0 = Some(name.clone());
                    ArcRet::Started(name.clone())
                }
            },
            ArcOp::End => match self.0.take() {
                Some(cur) => ArcRet::Ended(cur),
                None => ArcRet::NotFound,
            },
            ArcOp::Status => ArcRet::Status(self.0.clone()),
        }
    }
}
