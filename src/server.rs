//! Wiring: the shared [`State`] and [`run`], which binds everything and
//! serves until shutdown.
//!
//! Tests and the demo call [`run`] with `--listen 127.0.0.1:0`-style configs
//! through the real binary; [`run`] itself is what the binary calls.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use smol::future::FutureExt;
use smol::net::TcpListener;
use smol::Executor;

use crate::cache::live::Watches;
use crate::cache::store::Store;
use crate::config::Config;
use crate::health::Health;
use crate::jwt::KeySet;
use crate::metrics::Metrics;
use crate::tls::TlsMaterial;
use crate::upstream::Upstream;

/// How often certificate files are checked for rotation.
const CERT_POLL: Duration = Duration::from_secs(5);
/// How often the service-account keys are refreshed while online.
const JWKS_REFRESH: Duration = Duration::from_secs(600);

/// Everything a request may need, shared by all connections.
pub struct State {
    /// The validated configuration.
    pub config: Config,
    /// Serving and identity certificates (reloaded on change).
    pub tls: Arc<TlsMaterial>,
    /// Online/offline.
    pub health: Health,
    /// Connections to the cloud.
    pub upstream: Upstream,
    /// The on-disk cache.
    pub store: Store,
    /// Cached lists kept current by watch events.
    pub watches: Watches,
    /// Paged LISTs waiting for their next page.
    pub pages: crate::cache::paging::Pages,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
    /// The cluster's service-account keys, for offline JWT checks.
    pub keys: KeySet,
    /// Open client connections (for `--max-connections`).
    pub connections: Arc<AtomicUsize>,
    ready: AtomicBool,
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State").finish_non_exhaustive()
    }
}

impl State {
    /// Whether every listener is up.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The Prometheus text for `/metrics`.
    pub fn render_metrics(&self) -> String {
        let stats = self.store.stats();
        self.metrics.set_upstream_online(self.health.is_online());
        self.metrics.set_cache(stats.bytes(), stats.entries());
        let mut out = String::with_capacity(4096);
        self.metrics.render(&mut out);
        stats.render(&mut out);
        out
    }
}

/// Why the daemon could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum RunError {
    /// TLS material could not be loaded.
    Tls(crate::tls::TlsError),
    /// The cache directory could not be opened.
    Store(crate::cache::store::StoreError),
    /// An address could not be bound.
    Bind(SocketAddr, std::io::Error),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Tls(e) => write!(f, "{e}"),
            RunError::Store(e) => write!(f, "--cache-dir: {e}"),
            RunError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
        }
    }
}

impl std::error::Error for RunError {}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Starts every listener and background task, serves until `shutdown`
/// completes, then flushes pending cache writes.
///
/// `on_ready` is called with the bound addresses (client listeners, then
/// the admin listener if any), which tests use with port 0.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(&[SocketAddr]),
) -> Result<(), RunError> {
    let tls = Arc::new(TlsMaterial::load(&config).map_err(RunError::Tls)?);
    let store = Store::open(&config.cache_dir).map_err(RunError::Store)?;
    let keys = KeySet::default();
    crate::jwks::load_persisted(&keys, &config.cache_dir);
    let mut listeners = Vec::new();
    for addr in &config.listen {
        listeners.push(
            TcpListener::bind(addr)
                .await
                .map_err(|e| RunError::Bind(*addr, e))?,
        );
    }
    let admin = match config.admin_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| RunError::Bind(addr, e))?,
        ),
        None => None,
    };
    let upstream = Upstream::new(
        config.servers.clone(),
        tls.clone(),
        config.proxy.clone(),
        config.upstream_timeout,
    );
    let state = Arc::new(State {
        watches: Watches::new(store.clone()),
        pages: Default::default(),
        store,
        tls,
        health: Health::new(),
        upstream,
        metrics: Metrics::default(),
        keys,
        connections: Arc::new(AtomicUsize::new(0)),
        ready: AtomicBool::new(false),
        config,
    });

    let ex = Arc::new(Executor::new());
    let mut bound: Vec<SocketAddr> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    let mut tasks = Vec::new();
    for listener in listeners {
        tasks.push(ex.spawn(crate::listener::serve(state.clone(), ex.clone(), listener)));
    }
    if let Some(admin) = admin {
        bound.extend(admin.local_addr().ok());
        tasks.push(ex.spawn(crate::admin::serve(state.clone(), ex.clone(), admin)));
    }
    tasks.push(ex.spawn(background(state.clone())));
    state.ready.store(true, Ordering::Release);
    log::info!("serving on {bound:?}");
    on_ready(&bound);

    // One executor thread: the benchmark measured extra work-stealing
    // threads as slower (cross-thread wake-ups) and they cost RSS; file I/O
    // has its own writer thread.
    ex.run(async {
        shutdown.await;
        log::info!("shutting down: flushing the cache");
        // Cancelled on this executor, so the listeners (which hold `ex`)
        // are closed now; dropping `ex` below then ends every connection.
        for task in tasks {
            task.cancel().await;
        }
        state.watches.flush_all().await;
        state.store.flush().await;
    })
    .await;
    drop(ex);
    Ok(())
}

/// The periodic jobs: health probe, certificate reload, GC, key refresh.
async fn background(state: Arc<State>) {
    let probe =
        crate::health::probe_loop(&state.health, &state.upstream, state.config.health_interval);
    let certs = crate::tls::watch(state.tls.clone(), CERT_POLL);
    let gc = gc_loop(&state);
    let coalesce = state.watches.run();
    let jwks = crate::jwks::refresh_loop(&state, JWKS_REFRESH);
    probe.or(certs).or(gc).or(coalesce).or(jwks).await;
}

/// Deletes entries not read for `--cache-ttl`, every tenth of it (at most
/// hourly, at least every minute).
async fn gc_loop(state: &State) {
    let every =
        (state.config.cache_ttl / 10).clamp(Duration::from_secs(60), Duration::from_secs(3600));
    loop {
        smol::Timer::after(every).await;
        let dir = state.config.cache_dir.clone();
        let ttl = state.config.cache_ttl;
        let stats =
            smol::unblock(move || crate::cache::gc::sweep(&dir, ttl, SystemTime::now())).await;
        log::info!("cache GC: {stats:?}");
    }
}
