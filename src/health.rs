//! Is the cloud reachable? One shared answer for every request.
//!
//! The state starts as *online* so the first request simply tries the
//! upstream: a refused dial flips it to offline at once and that request is
//! answered from the cache. Any dial or TLS failure marks offline
//! immediately; the background probe (`GET /readyz` every
//! `--health-interval`) needs two successes in a row to mark it online again,
//! so a flapping link does not bounce clients between cache and cloud.
//!
//! With several `--server`s, [`Health::current`] is the one requests go to.
//! The probe always tries the servers in order, so once the first one is
//! healthy twice again, traffic comes back to it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use event_listener::Event;

/// Probe successes needed in a row before going back online.
pub const SUCCESSES_TO_ONLINE: u32 = 2;

/// The shared health state.
#[derive(Debug, Default)]
pub struct Health {
    online: AtomicBool,
    current: AtomicUsize,
    /// Consecutive probe successes of the server in `candidate`.
    streak: AtomicU32,
    candidate: AtomicUsize,
    changed: Event,
}

impl Health {
    /// A new state: online, on the first server.
    pub fn new() -> Health {
        Health {
            online: AtomicBool::new(true),
            ..Health::default()
        }
    }

    /// Whether requests should go upstream.
    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    /// Index of the server requests go to.
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Acquire)
    }

    /// A request reached `server` after failing over to it.
    pub fn use_server(&self, server: usize) {
        if self.current.swap(server, Ordering::AcqRel) != server {
            log::warn!("upstream: now using server #{server}");
        }
    }

    /// A dial or TLS handshake failed on every server: offline now.
    pub fn mark_offline(&self, why: &str) {
        self.streak.store(0, Ordering::Release);
        if self.online.swap(false, Ordering::AcqRel) {
            log::warn!("upstream offline: {why}; answering from the cache");
            self.changed.notify(usize::MAX);
        }
    }

    /// The probe found `server` (the first healthy in order) answering.
    /// Returns true when this flipped the state to online or moved traffic.
    pub fn probe_succeeded(&self, server: usize) -> bool {
        let streak = if self.candidate.swap(server, Ordering::AcqRel) == server {
            self.streak.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            self.streak.store(1, Ordering::Release);
            1
        };
        if streak < SUCCESSES_TO_ONLINE {
            return false;
        }
        let moved = self.is_online() && self.current() > server;
        if moved {
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

    /// The probe found no server answering.
    pub fn probe_failed(&self, why: &str) {
        self.mark_offline(why);
    }

    /// Waits until the state is online.
    pub async fn wait_online(&self) {
        loop {
            if self.is_online() {
                return;
            }
            let listener = self.changed.listen();
            if self.is_online() {
                return;
            }
            listener.await;
        }
    }
}

/// Probes the servers in order every `every`, forever: the first one whose
/// `/readyz` answers 200 counts as a success for that server; none is a
/// failure.
pub async fn probe_loop(
    health: &Health,
    upstream: &crate::upstream::Upstream,
    every: std::time::Duration,
) {
    loop {
        let mut last_error = String::new();
        let mut healthy = None;
        for server in 0..upstream.server_count() {
            match upstream.probe(server).await {
                Ok(()) => {
                    healthy = Some(server);
                    break;
                }
                Err(e) => last_error = format!("{}: {e}", upstream.server(server).authority),
            }
        }
        match healthy {
            Some(server) => {
                health.probe_succeeded(server);
            }
            None => health.probe_failed(&last_error),
        }
        smol::Timer::after(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_successes_bring_it_back() {
        let h = Health::new();
        assert!(h.is_online());
        h.mark_offline("refused");
        assert!(!h.is_online());
        assert!(!h.probe_succeeded(0));
        assert!(!h.is_online());
        assert!(h.probe_succeeded(0));
        assert!(h.is_online());
    }

    #[test]
    fn a_failure_resets_the_streak() {
        let h = Health::new();
        h.mark_offline("x");
        h.probe_succeeded(0);
        h.probe_failed("y");
        h.probe_succeeded(0);
        assert!(!h.is_online());
    }

    #[test]
    fn traffic_returns_to_the_first_server() {
        let h = Health::new();
        h.use_server(1);
        h.probe_succeeded(0);
        assert_eq!(h.current(), 1);
        h.probe_succeeded(0);
        assert_eq!(h.current(), 0);
    }

    #[test]
    fn waiters_wake_up() {
        let h = std::sync::Arc::new(Health::new());
        h.mark_offline("x");
        let h2 = h.clone();
        let t = std::thread::spawn(move || smol::block_on(h2.wait_online()));
        h.probe_succeeded(0);
        h.probe_succeeded(0);
        t.join().unwrap();
    }
}
