//! Is the cloud reachable? One shared answer for every request, and the
//! per-server facts it is made of.
//!
//! - The state starts *online* on the first server, so the first request
//!   simply tries it: a failed dial fails over to the next server at once,
//!   and only when every server failed is the state *offline* (requests
//!   are then answered from the cache without waiting for a dial).
//! - A server is declared *down* by a failed dial or TLS handshake, a
//!   failed probe, or a connection that timed out. Each declaration bumps
//!   the server's epoch and wakes [`Health::wait_down`], which is how
//!   everything in flight on that server is cancelled at once.
//! - Requests that succeed are the health signal ([`Health::succeeded`]);
//!   requests waiting for an answer while nothing succeeds
//!   ([`Health::stalled_for`]) are the sign of a silent link. The probe
//!   runs only on such signs (the probe module decides when).
//! - Two probe successes in a row bring the state back online (or traffic
//!   back to an earlier server), so a flapping link does not bounce clients
//!   between cache and cloud; moving *away* from a dead server needs one.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use event_listener::Event;

/// Probe successes needed in a row before going back online.
pub const SUCCESSES_TO_ONLINE: u32 = 2;

/// What is known about one server.
#[derive(Debug, Default)]
struct Server {
    /// Not declared down since its last success.
    alive: AtomicBool,
    /// How many times it was declared down.
    epoch: AtomicU64,
    /// When a request or probe last succeeded, in ms since `Health::start`.
    last_ok_ms: AtomicU64,
    /// Requests waiting for the head of their answer.
    waiting: AtomicUsize,
    /// When `waiting` last rose from zero, in ms since `Health::start`.
    busy_since_ms: AtomicU64,
}

/// The shared health state.
#[derive(Debug)]
pub struct Health {
    online: AtomicBool,
    current: AtomicUsize,
    servers: Vec<Server>,
    /// Consecutive probe successes of the server in `candidate`.
    streak: AtomicU32,
    candidate: AtomicUsize,
    /// Online/offline flips.
    changed: Event,
    /// A server was declared down.
    down: Event,
    start: Instant,
}

impl Health {
    /// A new state for `servers` servers: online, on the first one.
    pub fn new(servers: usize) -> Health {
        let servers = (0..servers.max(1))
            .map(|_| Server {
                alive: AtomicBool::new(true),
                ..Server::default()
            })
            .collect();
        Health {
            online: AtomicBool::new(true),
            current: AtomicUsize::new(0),
            servers,
            streak: AtomicU32::new(0),
            candidate: AtomicUsize::new(0),
            changed: Event::new(),
            down: Event::new(),
            start: Instant::now(),
        }
    }

    fn server(&self, index: usize) -> &Server {
        &self.servers[index.min(self.servers.len() - 1)]
    }

    /// Whether requests should go upstream.
    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    /// Index of the server requests go to.
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Acquire)
    }

    /// Whether `server` has not been declared down since it last answered.
    pub fn is_alive(&self, server: usize) -> bool {
        self.server(server).alive.load(Ordering::Acquire)
    }

    /// The epoch of `server`: it changes when the server is declared down.
    pub fn epoch(&self, server: usize) -> u64 {
        self.server(server).epoch.load(Ordering::Acquire)
    }

    /// Completes once `server` was declared down after `epoch`.
    pub async fn wait_down(&self, server: usize, epoch: u64) {
        loop {
            if self.epoch(server) != epoch {
                return;
            }
            let listener = self.down.listen();
            if self.epoch(server) != epoch {
                return;
            }
            listener.await;
        }
    }

    /// A request or probe on `server` succeeded.
    pub fn succeeded(&self, server: usize) {
        let s = self.server(server);
        s.last_ok_ms.store(self.now_ms(), Ordering::Release);
        s.alive.store(true, Ordering::Release);
    }

    /// Marks a request on `server` as waiting for its answer until the
    /// guard is dropped.
    pub fn waiting(&self, server: usize) -> Waiting<'_> {
        let s = self.server(server);
        if s.waiting.fetch_add(1, Ordering::AcqRel) == 0 {
            s.busy_since_ms.store(self.now_ms(), Ordering::Release);
        }
        Waiting {
            health: self,
            server,
        }
    }

    /// How long requests on `server` have been waiting with nothing
    /// succeeding meanwhile (zero when none waits): a silent link shows up
    /// here first.
    pub fn stalled_for(&self, server: usize) -> Duration {
        let s = self.server(server);
        if s.waiting.load(Ordering::Acquire) == 0 {
            return Duration::ZERO;
        }
        let since = s
            .busy_since_ms
            .load(Ordering::Acquire)
            .max(s.last_ok_ms.load(Ordering::Acquire));
        Duration::from_millis(self.now_ms().saturating_sub(since))
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// How long since a request or probe on `server` last succeeded.
    pub fn quiet_for(&self, server: usize) -> Duration {
        let last = Duration::from_millis(self.server(server).last_ok_ms.load(Ordering::Acquire));
        self.start.elapsed().saturating_sub(last)
    }

    /// `server` failed (dial, TLS, timeout, probe): everything in flight on
    /// it is cancelled. Does not by itself make the state offline.
    pub fn server_down(&self, server: usize, why: &str) {
        let s = self.server(server);
        s.epoch.fetch_add(1, Ordering::AcqRel);
        if s.alive.swap(false, Ordering::AcqRel) {
            log::warn!("upstream server #{server} is down: {why}");
        }
        self.down.notify(usize::MAX);
    }

    /// Requests go to `server` from now on (it answered, or failover).
    pub fn use_server(&self, server: usize) {
        if self.current.swap(server, Ordering::AcqRel) != server {
            log::warn!("upstream: now using server #{server}");
        }
    }

    /// Offline, and the last probe succeeded: one more success brings the
    /// state back, so it is worth asking again soon.
    pub fn is_confirming(&self) -> bool {
        !self.is_online() && self.streak.load(Ordering::Acquire) > 0
    }

    /// Every server failed: offline now.
    pub fn all_down(&self, why: &str) {
        self.streak.store(0, Ordering::Release);
        if self.online.swap(false, Ordering::AcqRel) {
            log::warn!("upstream offline: {why}; answering from the cache");
            self.changed.notify(usize::MAX);
        }
    }

    /// The probe found `server` (the first healthy in order) answering.
    /// Returns true when this flipped the state to online or moved traffic.
    pub fn probe_succeeded(&self, server: usize) -> bool {
        self.succeeded(server);
        let streak = if self.candidate.swap(server, Ordering::AcqRel) == server {
            self.streak.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            self.streak.store(1, Ordering::Release);
            1
        };
        let current = self.current();
        if self.is_online() && current != server && !self.is_alive(current) {
            // Away from a dead server: at once.
            self.use_server(server);
            return true;
        }
        if streak < SUCCESSES_TO_ONLINE {
            return false;
        }
        if self.is_online() && current > server {
            self.use_server(server);
            return true;
        }
        if !self.is_online() {
            self.current.store(server, Ordering::Release);
            self.online.store(true, Ordering::Release);
            log::warn!("upstream online again (server #{server})");
            self.changed.notify(usize::MAX);
            return true;
        }
        false
    }

    /// Waits until the state is online.
    pub async fn wait_online(&self) {
        self.wait_for(true).await;
    }

    /// Waits until the state is offline.
    pub async fn wait_offline(&self) {
        self.wait_for(false).await;
    }

    async fn wait_for(&self, online: bool) {
        loop {
            if self.is_online() == online {
                return;
            }
            let listener = self.changed.listen();
            if self.is_online() == online {
                return;
            }
            listener.await;
        }
    }
}

/// A request waiting for its answer (see [`Health::waiting`]).
#[derive(Debug)]
pub struct Waiting<'a> {
    health: &'a Health,
    server: usize,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let s = self.health.server(self.server);
        s.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_requests_stall_until_something_succeeds() {
        let h = Health::new(1);
        assert_eq!(h.stalled_for(0), Duration::ZERO);
        let w = h.waiting(0);
        std::thread::sleep(Duration::from_millis(30));
        assert!(h.stalled_for(0) >= Duration::from_millis(25));
        h.succeeded(0);
        assert!(h.stalled_for(0) < Duration::from_millis(25));
        drop(w);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(h.stalled_for(0), Duration::ZERO, "none waits");
    }

    #[test]
    fn two_successes_bring_it_back() {
        let h = Health::new(1);
        assert!(h.is_online());
        assert!(!h.is_confirming());
        h.all_down("refused");
        assert!(!h.is_online());
        assert!(!h.is_confirming());
        assert!(!h.probe_succeeded(0));
        assert!(!h.is_online());
        assert!(h.is_confirming(), "one success: ask again soon");
        assert!(h.probe_succeeded(0));
        assert!(h.is_online());
    }

    #[test]
    fn a_failure_resets_the_streak() {
        let h = Health::new(1);
        h.all_down("x");
        h.probe_succeeded(0);
        h.all_down("y");
        h.probe_succeeded(0);
        assert!(!h.is_online());
    }

    #[test]
    fn traffic_returns_to_the_first_server() {
        let h = Health::new(2);
        h.use_server(1);
        h.probe_succeeded(0);
        assert_eq!(h.current(), 1);
        h.probe_succeeded(0);
        assert_eq!(h.current(), 0);
    }

    #[test]
    fn traffic_leaves_a_dead_server_at_once() {
        let h = Health::new(2);
        h.server_down(0, "probe timed out");
        assert!(h.probe_succeeded(1));
        assert_eq!(h.current(), 1);
        assert!(h.is_online());
    }

    #[test]
    fn down_wakes_what_is_in_flight_on_that_server_only() {
        let h = std::sync::Arc::new(Health::new(2));
        let e0 = h.epoch(0);
        let e1 = h.epoch(1);
        let h2 = h.clone();
        let t = std::thread::spawn(move || smol::block_on(h2.wait_down(0, e0)));
        h.server_down(1, "x");
        assert_eq!(h.epoch(1), e1 + 1);
        h.server_down(0, "y");
        t.join().unwrap();
        assert!(!h.is_alive(0));
        h.succeeded(0);
        assert!(h.is_alive(0));
        assert!(h.quiet_for(0) < Duration::from_secs(1));
    }

    #[test]
    fn waiters_wake_up() {
        let h = std::sync::Arc::new(Health::new(1));
        h.all_down("x");
        let h2 = h.clone();
        let t = std::thread::spawn(move || smol::block_on(h2.wait_online()));
        h.probe_succeeded(0);
        h.probe_succeeded(0);
        t.join().unwrap();
    }
}
