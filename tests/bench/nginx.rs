//! nginx as a TLS reverse proxy to the same upstream, for comparison.
//!
//! It runs in a process group of its own, so stopping it reaches every
//! worker: SIGTERM (nginx's fast shutdown: the master stops its workers,
//! waits for them and exits), then a wait until no process of the group is
//! left, and SIGKILL to the group only if that wait runs out. Killing the
//! master alone with SIGKILL used to leave its workers running, orphaned.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::procs;
use crate::support::pki::Pki;

/// How nginx runs.
#[derive(Clone, Copy)]
pub enum Mode {
    /// A master and this many workers (the throughput comparison).
    Workers(usize),
    /// One process, no master (`master_process off`): what callgrind sees
    /// is all the work.
    Single,
}

/// A running nginx; stopped (the whole group) on drop.
pub struct Nginx {
    child: Option<Child>,
    pub addr: SocketAddr,
    dir: PathBuf,
}

/// The nginx binary, if installed.
pub fn find() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// The configuration: TLS 1.3 in front, TLS 1.3 to the upstream with the
/// node's client certificate, kept-alive upstream connections, no
/// buffering (as lite-apiserver streams).
fn config(dir: &Path, pki: &Pki, upstream: SocketAddr, port: u16, mode: Mode) -> String {
    let process = match mode {
        Mode::Workers(n) => format!("worker_processes {n};"),
        Mode::Single => "master_process off;\nworker_processes 1;".to_owned(),
    };
    format!(
        r#"daemon off;
{process}
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log notice;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/nginx-body;
  proxy_temp_path {dir}/nginx-proxy;
  upstream up {{ server {upstream}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.3;
    ssl_client_certificate {ca};
    ssl_verify_client optional;
    location / {{
      proxy_pass https://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_ssl_protocols TLSv1.3;
      proxy_ssl_trusted_certificate {ca};
      proxy_ssl_verify on;
      proxy_ssl_name localhost;
      proxy_ssl_server_name on;
      proxy_ssl_certificate {node_cert};
      proxy_ssl_certificate_key {node_key};
      proxy_ssl_session_reuse on;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 3600s;
    }}
  }}
}}
"#,
        dir = dir.display(),
        cert = pki.proxy.cert.display(),
        key = pki.proxy.key.display(),
        ca = pki.ca.pem.display(),
        node_cert = pki.node.cert.display(),
        node_key = pki.node.key.display(),
    )
}

/// Starts nginx with its files under `dir` (created), proxying to
/// `upstream`; `wrapper` runs it under another program (valgrind). None if
/// nginx is missing or does not listen within `wait`.
pub fn start(
    dir: &Path,
    pki: &Pki,
    upstream: SocketAddr,
    mode: Mode,
    wrapper: &[String],
    wait: Duration,
) -> Option<Nginx> {
    let bin = find()?;
    std::fs::create_dir_all(dir).ok()?;
    let port = crate::support::daemon::free_port();
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, config(dir, pki, upstream, port, mode)).ok()?;
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    let child = cmd
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .ok()?;
    procs::track_group(child.id());
    let mut nginx = Nginx {
        child: Some(child),
        addr: format!("127.0.0.1:{port}").parse().ok()?,
        dir: dir.to_owned(),
    };
    let deadline = Instant::now() + wait;
    while std::net::TcpStream::connect(nginx.addr).is_err() {
        let exited = nginx
            .child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some());
        if exited || Instant::now() > deadline {
            return None; // dropped: stopped
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(nginx)
}

impl Nginx {
    /// Every live process of the group (master and workers).
    pub fn pids(&self) -> Vec<u32> {
        self.child
            .as_ref()
            .map_or_else(Vec::new, |c| procs::group_members(c.id()))
    }

    /// Fast shutdown of the whole group, waited for; true if every process
    /// of it exited without SIGKILL.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let group = child.id();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut clean = false;
        let mut next_signal = Instant::now();
        while Instant::now() < deadline {
            // Again every 2 s: a signal that lands while nginx is busy,
            // just before it blocks in epoll_wait, leaves it blocked there
            // (under valgrind, whose signal delivery waits for a safe
            // point, that is likely). A repeated SIGTERM is harmless.
            if Instant::now() >= next_signal {
                procs::signal_group(group, "TERM");
                next_signal = Instant::now() + Duration::from_secs(2);
            }
            let master_done = matches!(child.try_wait(), Ok(Some(_)));
            if master_done && procs::group_members(group).is_empty() {
                clean = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !clean {
            let log = std::fs::read_to_string(self.dir.join("nginx-error.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            eprintln!(
                "error: nginx (process group {group}) did not stop on SIGTERM within 30 s (left: {:?}); killing the group; its log ends:\n{}",
                procs::group_members(group),
                tail.join("\n")
            );
            procs::signal_group(group, "KILL");
            let _ = child.wait();
        }
        clean
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}
