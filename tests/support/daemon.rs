//! Runs the real `lite-apiserver` binary for integration tests.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running lite-apiserver process, killed on drop.
pub struct Daemon {
    child: Option<Child>,
    bin: PathBuf,
    /// Arguments before the daemon's own (e.g. the binary, under qemu).
    pre: Vec<String>,
    args: Vec<String>,
    /// The TLS listener.
    pub addr: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// The cache directory.
    pub cache_dir: PathBuf,
    log: PathBuf,
}

/// A free loopback port (bound then released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The binary under test: the one cargo built for this test run, else
/// the one next to the running executable's target directory.
pub fn binary() -> PathBuf {
    if let Some(path) = option_env!("CARGO_BIN_EXE_lite-apiserver") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.ancestors().find(|p| p.join("lite-apiserver").is_file());
    profile_dir
        .map(|d| d.join("lite-apiserver"))
        .unwrap_or_else(|| PathBuf::from("lite-apiserver"))
}

impl Daemon {
    /// Starts the binary with `args` plus listen/admin/cache-dir flags, and
    /// waits until it accepts connections.
    pub fn start(cache_dir: &Path, args: &[String]) -> Daemon {
        Daemon::start_with(binary(), Vec::new(), cache_dir, args)
    }

    /// Starts `program pre... args...` (e.g. `qemu-arm-static BINARY ...`).
    pub fn start_with(
        program: PathBuf,
        pre: Vec<String>,
        cache_dir: &Path,
        args: &[String],
    ) -> Daemon {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Daemon::start_at(program, pre, cache_dir, args, addr, admin)
    }

    /// [`Daemon::start_with`] listening on `addr` with the admin port on
    /// `admin` (e.g. addresses inside a network namespace, with
    /// `program = "ip"`, `pre = ["netns", "exec", NS, BINARY]`).
    pub fn start_at(
        program: PathBuf,
        pre: Vec<String>,
        cache_dir: &Path,
        args: &[String],
        addr: SocketAddr,
        admin: SocketAddr,
    ) -> Daemon {
        let mut all = vec![
            "--listen".to_owned(),
            addr.to_string(),
            "--admin-listen".to_owned(),
            admin.to_string(),
            "--cache-dir".to_owned(),
            cache_dir.display().to_string(),
        ];
        all.extend_from_slice(args);
        let log = cache_dir.with_extension(format!("log-{}", addr.port()));
        let mut d = Daemon {
            child: None,
            bin: program,
            pre,
            args: all,
            addr,
            admin,
            cache_dir: cache_dir.to_owned(),
            log,
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(&self.log).expect("log file");
        let child = Command::new(&self.bin)
            .args(&self.pre)
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start lite-apiserver");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&self.admin, Duration::from_millis(100)).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "lite-apiserver exited early ({status}):\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "lite-apiserver did not start:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// What the daemon logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait (flushes the cache); true if it exited 0 by itself
    /// within 10 s.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// SIGKILL, no chance to flush (a crash or power loss).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again with the same flags and ports.
    pub fn restart(&mut self) {
        assert!(
            self.stop(),
            "lite-apiserver did not exit cleanly on SIGTERM:\n{}",
            self.log_text()
        );
        self.spawn();
    }

    /// Starts again after a kill -9.
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// The PID, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// GET on the admin port; returns the body.
    pub fn admin_get(&self, path: &str) -> String {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(self.admin).expect("admin port");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default()
    }

    /// The value of a metric line starting with `prefix` (summed).
    pub fn metric(&self, prefix: &str) -> f64 {
        self.admin_get("/metrics")
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}
