//! The rig of the silent-link tests: a double, a [`Relay`] in front of it,
//! and lite-apiserver whose `--server` is the relay, with fast health flips
//! (`--health-interval 1 --upstream-timeout 1`). Plus bounded waits on the
//! daemon's metrics.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::client::{Client, Response};
use super::daemon::Daemon;
use super::double::{Double, Opts};
use super::pki::Pki;
use super::relay::Relay;

/// kubelet's User-Agent: a cached agent.
pub const KUBELET: (&str, &str) = ("User-Agent", "kubelet/v1.36.2 (linux/arm64) kubernetes/abc");

/// Every wait for a behaviour of the proxy: well below TCP's own timeouts
/// (keepalive, retransmissions: tens of seconds to minutes), well above the
/// flip time (`--health-interval 1` + `--upstream-timeout 1`).
pub const BOUND: Duration = Duration::from_secs(10);

/// The flags every silence test uses for fast flips.
pub const FAST: [&str; 4] = ["--health-interval", "1", "--upstream-timeout", "1"];

/// Double -> relay -> lite-apiserver.
pub struct Rig {
    pub dir: PathBuf,
    pub pki: Pki,
    pub double: Double,
    pub relay: Relay,
    pub proxy: Daemon,
}

impl Rig {
    /// A rig with the default world, every agent cached, [`FAST`] flips
    /// and `extra` flags.
    pub fn new(name: &str, extra: &[&str]) -> Rig {
        let dir = super::temp_dir(name);
        let pki = Pki::generate(&dir.join("pki"));
        let double = Double::start(&pki, Opts::default());
        let relay = Relay::start(double.addr());
        let mut args: Vec<String> = vec!["--server".into(), relay.url()];
        args.extend(pki.proxy_flags());
        args.extend(["--cache-agents", "*"].map(String::from));
        args.extend(FAST.map(String::from));
        args.extend(extra.iter().map(|s| s.to_string()));
        let proxy = Daemon::start(&dir.join("cache"), &args);
        Rig {
            dir,
            pki,
            double,
            relay,
            proxy,
        }
    }

    /// A client of lite-apiserver with the node's certificate.
    pub fn node(&self) -> Client {
        Client::new(self.proxy.addr, &self.pki.ca.pem, Some(&self.pki.node))
    }

    /// The cache dir.
    pub fn cache(&self) -> PathBuf {
        self.proxy.cache_dir.clone()
    }
}

/// Waits until `lite_apiserver_upstream_online` is 1 (or 0).
pub fn wait_online(proxy: &Daemon, online: bool, timeout: Duration) {
    let want = if online { 1.0 } else { 0.0 };
    wait_until(
        &format!("lite_apiserver_upstream_online {want}"),
        timeout,
        || proxy.metric("lite_apiserver_upstream_online") == want,
        || proxy.log_text(),
    );
}

/// Polls `f` every 20 ms; panics after `timeout` with `context()`.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A request run on its own thread, so the test can bound the wait for
/// its answer (a request stuck on a dead link blocks its thread, not the
/// test).
pub struct InFlight {
    rx: mpsc::Receiver<std::io::Result<Response>>,
    started: Instant,
    what: String,
}

impl InFlight {
    /// Sends `method path` with `body` through `client` on a new thread.
    pub fn send(
        client: &Client,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> InFlight {
        let (tx, rx) = mpsc::channel();
        let client = client.clone();
        let (m, p, b) = (method.to_owned(), path.to_owned(), body.to_vec());
        let h: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        std::thread::spawn(move || {
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let _ = tx.send(client.try_request(&m, &p, &h, &b));
        });
        InFlight {
            rx,
            started: Instant::now(),
            what: format!("{method} {path}"),
        }
    }

    /// The answer, and how long after sending it came; panics if none came
    /// within `timeout` (measured from now) or the transport failed.
    pub fn answer(self, timeout: Duration, context: impl Fn() -> String) -> (Response, Duration) {
        match self.rx.recv_timeout(timeout) {
            Ok(Ok(r)) => (r, self.started.elapsed()),
            Ok(Err(e)) => panic!("{}: transport error {e}\n{}", self.what, context()),
            Err(_) => panic!(
                "{}: no answer {:?} after it was sent (waited {timeout:?} more)\n{}",
                self.what,
                self.started.elapsed(),
                context()
            ),
        }
    }
}
