//! Wiring: [`run`] builds every part from the [`Config`], binds the
//! listeners, starts the background jobs, and serves until shutdown.
//! Nothing imports this module but `main`.
//!
//! Tests and the demo run the real binary with `--listen 127.0.0.1:0`-style
//! flags; [`run`] is what the binary calls.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use smol::future::FutureExt;
use smol::net::TcpListener;
use smol::Executor;

use crate::admin::Admin;
use crate::auth::jwks::ServiceAccountKeys;
use crate::cache::FileStore;
use crate::config::Config;
use crate::incluster::{AddressError, NodeAddress};
use crate::listener::Accept;
use crate::metrics::Metrics;
use crate::proxy::agents::CacheAgents;
use crate::proxy::Context;
use crate::tls::TlsMaterial;
use crate::upstream::Upstream;
use crate::workers::Workers;

/// How often certificate files are checked for rotation.
const CERT_POLL: Duration = Duration::from_secs(5);
/// How often the service-account keys are refreshed while online.
const JWKS_REFRESH: Duration = Duration::from_secs(600);

/// Why the daemon could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum RunError {
    /// TLS material could not be loaded.
    Tls(crate::tls::TlsError),
    /// The cache directory could not be opened.
    Store(crate::cache::file::StoreError),
    /// An address could not be bound.
    Bind(SocketAddr, std::io::Error),
    /// The `--incluster-address` IP could not be added to the node.
    InclusterAddress(crate::incluster::AddressError),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Tls(e) => write!(f, "{e}"),
            RunError::Store(e) => write!(f, "--cache-dir: {e}"),
            RunError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            RunError::InclusterAddress(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RunError {}

impl RunError {
    /// The process's exit code: 2 for a deployment that cannot work as
    /// configured (no privilege to add `--incluster-address`), as for a
    /// bad flag; 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::InclusterAddress(AddressError::NotPermitted(..)) => 2,
            _ => 1,
        }
    }
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
    let store = FileStore::open(&config.cache_dir).map_err(RunError::Store)?;
    // Before the binds (the IP must be local); dropped last, after every
    // listener and connection is closed, or on any error below.
    let node_address = match config.incluster_address {
        Some(addr) => Some(NodeAddress::ensure(addr.ip()).map_err(RunError::InclusterAddress)?),
        None => None,
    };
    let mut listeners = Vec::new();
    for addr in client_addresses(&config) {
        listeners.push(bind(addr).await?);
    }
    let admin = match config.admin_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let ctx = Arc::new(context(&config, tls.clone(), store));
    let ex = Arc::new(Executor::new());
    let workers = start_workers(&ex, config.workers);
    let accept = Accept {
        ctx: ctx.clone(),
        tls: tls.clone(),
        connections: Arc::new(AtomicUsize::new(0)),
        max_connections: config.max_connections,
        workers: workers.clone(),
    };
    let ready = Arc::new(AtomicBool::new(false));
    let (tasks, bound) = spawn(&ex, &ctx, accept, listeners, admin, &ready);
    ready.store(true, Ordering::Release);
    log::info!("serving on {bound:?}");
    on_ready(&bound);
    let mut tasks = tasks;
    tasks.push(ex.spawn(background(ctx.clone(), tls, config)));

    // This thread runs the main executor (the listeners, the background
    // jobs, the first connections); `--workers` adds threads of their own
    // for the connections past those (see crate::workers). File I/O has
    // its own writer thread and I/O pool.
    ex.run(async {
        shutdown.await;
        log::info!("shutting down: flushing the cache");
        // Cancelled on this executor, so the listeners (which hold `ex`)
        // are closed now; dropping `ex` below then ends every connection.
        for task in tasks {
            task.cancel().await;
        }
        ctx.store.close().await;
    })
    .await;
    workers.stop();
    drop(workers);
    drop(ex);
    drop(node_address);
    Ok(())
}

/// The executors for client connections: `ex` (run by this thread) and
/// `count - 1` threads.
fn start_workers(ex: &Arc<Executor<'static>>, count: usize) -> Arc<Workers> {
    let workers = Workers::start(ex.clone(), count.saturating_sub(1));
    if workers.count() < count {
        log::warn!(
            "only {} of {count} --workers threads started",
            workers.count()
        );
    }
    Arc::new(workers)
}

/// `--listen`, then `--incluster-address` (unless also a `--listen`): the
/// same TLS, request path and connection cap on each.
fn client_addresses(config: &Config) -> Vec<SocketAddr> {
    let mut out = config.listen.clone();
    out.extend(
        config
            .incluster_address
            .filter(|a| !config.listen.contains(a)),
    );
    out
}

/// The request path's context.
fn context(config: &Config, tls: Arc<TlsMaterial>, store: FileStore) -> Context {
    let cache_agents = CacheAgents::new(config.cache_agents.clone());
    crate::proxy::agents::follow::restore(&cache_agents, config);
    Context {
        cache_agents,
        upstream: Upstream::new(
            config.servers.clone(),
            tls,
            config.proxy.clone(),
            crate::upstream::Tuning {
                timeout: config.upstream_timeout,
                idle_timeout: config.upstream_idle_timeout,
                dial_rate: config.dial_rate,
            },
        ),
        keys: ServiceAccountKeys::load(&config.cache_dir),
        store,
        metrics: Metrics::default(),
        resume_spread: config.resume_spread,
        leases: Default::default(),
        incluster: config.incluster_address,
    }
}

/// Spawns the accept loops; returns their tasks and the bound addresses.
fn spawn(
    ex: &Arc<Executor<'static>>,
    ctx: &Arc<Context>,
    accept: Accept,
    listeners: Vec<TcpListener>,
    admin: Option<TcpListener>,
    ready: &Arc<AtomicBool>,
) -> (Vec<smol::Task<()>>, Vec<SocketAddr>) {
    let mut bound: Vec<SocketAddr> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    let mut tasks = Vec::new();
    for listener in listeners {
        tasks.push(ex.spawn(crate::listener::serve(accept.clone(), listener)));
    }
    if let Some(listener) = admin {
        bound.extend(listener.local_addr().ok());
        let admin = Admin {
            ctx: ctx.clone(),
            ready: ready.clone(),
            workers: accept.workers.clone(),
        };
        tasks.push(ex.spawn(crate::admin::serve(admin, ex.clone(), listener)));
    }
    (tasks, bound)
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, RunError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| RunError::Bind(addr, e))
}

/// The periodic jobs: health probe, certificate reload, GC, key refresh,
/// the cache-agents ConfigMap.
async fn background(ctx: Arc<Context>, tls: Arc<TlsMaterial>, config: Config) {
    let probe = crate::upstream::probe::probe_loop(&ctx.upstream, config.health_interval);
    let certs = crate::tls::watch(tls, CERT_POLL);
    let gc = gc_loop(&ctx, config.cache_ttl);
    let jwks = ctx.keys.refresh_loop(&ctx.upstream, JWKS_REFRESH);
    let trim = ctx.upstream.trim_loop();
    let leases = crate::proxy::lease::replay_loop(&ctx);
    let agents = crate::proxy::agents::follow::follow(&ctx.upstream, &ctx.cache_agents, &config);
    let all = probe.or(certs).or(gc).or(jwks);
    all.or(trim).or(leases).or(agents).await;
}

/// Deletes entries not read for `--cache-ttl`, every tenth of it (at most
/// hourly, at least every minute).
async fn gc_loop(ctx: &Context, ttl: Duration) {
    let every = (ttl / 10).clamp(Duration::from_secs(60), Duration::from_secs(3600));
    loop {
        smol::Timer::after(every).await;
        let stats = ctx.store.gc(ttl).await;
        log::info!("cache GC: {stats:?}");
    }
}
