//! Serving client connections: the routing decision, the online path with
//! its cache tee, and the offline answers.
//!
//! - [`conn`]: one client connection, request by request (keep-alive):
//!   read the head, classify it, identify the caller, route, log.
//! - [`online`]: forward upstream; cancellation when the server goes down
//!   while the request is in flight; failover; errors as `Status`.
//! - [`relay`]: stream the upstream's answer to the client, teeing a
//!   cacheable one into the store and a watch into its cached list.
//! - [`offline`], [`tokens`], [`watchlist`]: what is answered when the
//!   cloud is gone (a streaming list gets the cached list as events).
//! - [`lease`]: kubelet's Lease renewals answered offline, sent upstream
//!   the moment the cloud is back.
//! - [`agents`]: which agents are cached, `--cache-agents` plus a
//!   ConfigMap followed live.
//! - [`incluster`]: kubelet shown the `default/kubernetes` Service at
//!   `--incluster-address`, online and offline.
//!
//! Everything here works on a [`Context`]: exactly what the request path
//! needs, built by the wiring (`server.rs`).

pub mod agents;
pub mod conn;
pub mod incluster;
pub mod lease;
pub mod offline;
pub mod online;
pub mod relay;
pub mod tokens;
pub mod watchlist;

use crate::auth::jwks::ServiceAccountKeys;
use crate::cache::FileStore;
use crate::metrics::{Metrics, Source};
use crate::upstream::Upstream;
use agents::CacheAgents;

/// A request body may pause this long between two reads.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What the request path needs, shared by all connections.
#[derive(Debug)]
pub struct Context {
    /// Agents whose answers are cached (`*`: all), changed live.
    pub cache_agents: CacheAgents,
    /// The cloud.
    pub upstream: Upstream,
    /// The cache.
    pub store: FileStore,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
    /// The cluster's service-account keys, for offline JWT checks.
    pub keys: ServiceAccountKeys,
    /// Held offline watches end spread over this when the cloud returns.
    pub resume_spread: std::time::Duration,
    /// kubelet's renewals answered offline, to send when back online.
    pub leases: lease::DelayedLeases,
    /// `--incluster-address`: where kubelet is shown the `default/kubernetes`
    /// Service ([`incluster`]).
    pub incluster: Option<std::net::SocketAddr>,
}

impl Context {
    /// The Prometheus text for `/metrics`.
    pub fn render_metrics(&self) -> String {
        let stats = self.store.stats();
        self.metrics
            .set_upstream_online(self.upstream.health.is_online());
        self.metrics.set_cache(stats.bytes(), stats.entries());
        let mut out = String::with_capacity(4096);
        self.metrics.render(&mut out);
        self.upstream.render_metrics(&mut out);
        self.cache_agents.render(&mut out);
        stats.render(&mut out);
        out
    }
}

/// What happened to one request, for the log line and metrics.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// The status sent to the client (0 if none could be sent).
    pub status: u16,
    /// Who answered.
    pub source: Source,
    /// Whether the connection can serve another request.
    pub keep_alive: bool,
}

impl Outcome {
    /// An answer lite-apiserver made itself.
    pub fn local(status: u16, keep_alive: bool) -> Outcome {
        Outcome {
            status,
            source: Source::Local,
            keep_alive,
        }
    }

    /// Nothing could be answered; the connection closes.
    pub fn broken(source: Source) -> Outcome {
        Outcome {
            status: 0,
            source,
            keep_alive: false,
        }
    }
}

/// What is known about a client connection beyond its bytes.
#[derive(Debug, Default, Clone)]
pub struct Peer {
    /// CN of the verified client certificate.
    pub cn: Option<String>,
    /// The TCP socket under the TLS stream, to notice a client leaving a
    /// relayed watch without reading its stream.
    pub socket: Option<smol::net::TcpStream>,
}
