//! Idle keep-alive connections, keyed by what they may be reused for.
//!
//! A key is (server, identity, TLS generation): a client whose certificate
//! maps to identity X only ever reuses connections that presented X,
//! anonymous callers only connections that presented no certificate, and a
//! certificate rotation (new generation) retires idle connections made with
//! the old one while in-flight ones finish untouched.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::dial::UpConn;

/// Most idle connections kept across all keys.
const MAX_IDLE: usize = 64;

/// What a pooled connection may be reused for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolKey {
    /// Index of the server.
    pub server: usize,
    /// CN of the identity it presented (`None`: no certificate).
    pub identity: Option<String>,
    /// TLS material generation it was made with.
    pub generation: u64,
}

#[derive(Debug)]
struct Idle {
    key: PoolKey,
    conn: Box<UpConn>,
    since: Instant,
}

/// The idle connections.
#[derive(Debug)]
pub struct Pool {
    idle: Mutex<Vec<Idle>>,
    /// Idle connections older than this are closed, never reused (the
    /// apiserver may have closed them already; the demand is gone).
    limit: Duration,
}

impl Pool {
    /// An empty pool whose connections may idle for `limit`.
    pub fn new(limit: Duration) -> Pool {
        Pool {
            idle: Mutex::new(Vec::new()),
            limit,
        }
    }

    /// How long a connection may idle.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Closes the connections idle for longer than the limit; how many.
    pub fn trim(&self) -> usize {
        let Ok(mut idle) = self.idle.lock() else {
            return 0;
        };
        let before = idle.len();
        let limit = self.limit;
        idle.retain(|i| i.since.elapsed() < limit);
        before - idle.len()
    }

    /// The most recently returned idle connection for `key` that is not
    /// too old. Expired ones and those of older generations are dropped
    /// when connections are put back, not on this hot path.
    pub fn take(&self, key: &PoolKey) -> Option<Box<UpConn>> {
        let mut idle = self.idle.lock().ok()?;
        loop {
            let pos = idle.iter().rposition(|i| &i.key == key)?;
            let found = idle.swap_remove(pos);
            if found.since.elapsed() < self.limit {
                return Some(found.conn);
            }
        }
    }

    /// Keeps a connection whose last answer was read exactly to its end.
    pub fn put(&self, key: PoolKey, conn: Box<UpConn>) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        let now = Instant::now();
        idle.retain(|i| {
            now.duration_since(i.since) < self.limit && i.key.generation == key.generation
        });
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push(Idle {
            key,
            conn,
            since: now,
        });
    }

    /// Drops the idle connections to `server` (it was declared down: none
    /// of them may carry a request after the outage).
    pub fn clear_server(&self, server: usize) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.retain(|i| i.key.server != server);
        }
    }

    /// How many connections are idle.
    pub fn len(&self) -> usize {
        self.idle.lock().map_or(0, |i| i.len())
    }

    /// Whether no connection is idle.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
