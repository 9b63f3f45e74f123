//! Connections to the cloud kube-apiserver: dialing (optionally through an
//! HTTP CONNECT proxy), TLS per identity, a keep-alive pool, and the probe.
//!
//! Pooled connections are keyed by (server, identity, TLS generation): a
//! client whose certificate maps to identity X only ever reuses connections
//! that presented X, anonymous callers only connections that presented no
//! certificate, and a certificate rotation (new generation) retires idle
//! connections made with the old one while in-flight ones finish untouched.

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_rustls::TlsConnector;
use rustls::pki_types::ServerName;
use smol::future::FutureExt;
use smol::net::TcpStream;
use smol::Timer;

use crate::config::{ProxyUrl, ServerUrl};
use crate::http::{Conn, RequestHead, ResponseHead};
use crate::tls::TlsMaterial;

/// The transport of an upstream connection.
pub type Transport = futures_rustls::client::TlsStream<TcpStream>;
/// A buffered upstream connection.
pub type UpConn = Conn<Transport>;

/// Idle connections older than this are not reused (the apiserver may have
/// closed them already).
const IDLE_LIMIT: Duration = Duration::from_secs(60);
/// Most idle connections kept across all keys.
const MAX_IDLE: usize = 64;

/// Why no connection to a server could be made.
#[derive(Debug)]
#[non_exhaustive]
pub enum DialError {
    /// TCP connect, CONNECT or TLS took longer than `--upstream-timeout`.
    Timeout,
    /// TCP connect failed.
    Connect(io::Error),
    /// The CONNECT proxy refused or broke.
    Proxy(String),
    /// The TLS handshake failed (bad certificate, wrong CA, ...).
    Tls(io::Error),
    /// The server's host is not a valid TLS server name.
    BadServerName(String),
}

impl fmt::Display for DialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DialError::Timeout => write!(f, "timed out"),
            DialError::Connect(e) => write!(f, "connect: {e}"),
            DialError::Proxy(why) => write!(f, "CONNECT proxy: {why}"),
            DialError::Tls(e) => write!(f, "TLS handshake: {e}"),
            DialError::BadServerName(h) => write!(f, "invalid server name {h:?}"),
        }
    }
}

impl std::error::Error for DialError {}

/// What a pooled connection may be reused for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PoolKey {
    server: usize,
    identity: Option<String>,
    generation: u64,
}

#[derive(Debug)]
struct Idle {
    key: PoolKey,
    conn: UpConn,
    since: Instant,
}

/// A connection checked out of the pool for one request.
#[derive(Debug)]
pub struct Lease {
    /// The connection.
    pub conn: UpConn,
    /// Index of the server it is connected to.
    pub server: usize,
    /// Whether it was reused from the pool (a reused connection may turn
    /// out to be closed by the server; the caller may retry once).
    pub reused: bool,
    key: PoolKey,
}

/// The upstream side: servers, TLS material, proxy, pool.
pub struct Upstream {
    servers: Vec<ServerUrl>,
    tls: Arc<TlsMaterial>,
    proxy: Option<ProxyUrl>,
    timeout: Duration,
    idle: Mutex<Vec<Idle>>,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// A new upstream side with an empty pool.
    pub fn new(
        servers: Vec<ServerUrl>,
        tls: Arc<TlsMaterial>,
        proxy: Option<ProxyUrl>,
        timeout: Duration,
    ) -> Upstream {
        Upstream {
            servers,
            tls,
            proxy,
            timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// How many servers there are.
    pub fn server_count(&self) -> usize {
        self.servers.len()
    }

    /// The server at `index`.
    pub fn server(&self, index: usize) -> &ServerUrl {
        &self.servers[index.min(self.servers.len() - 1)]
    }

    /// A connection to `server` for a caller whose verified client cert has
    /// CN `client_cn`: pooled if one fits, else freshly dialed.
    pub async fn checkout(
        &self,
        server: usize,
        client_cn: Option<&str>,
    ) -> Result<Lease, DialError> {
        let (identity, config) = self.tls.client_config(client_cn);
        let key = PoolKey {
            server,
            identity,
            generation: self.tls.generation(),
        };
        while let Some(mut conn) = self.take_idle(&key) {
            if is_quiet(&mut conn).await {
                return Ok(Lease {
                    conn,
                    server,
                    reused: true,
                    key,
                });
            }
            log::debug!("upstream: an idle connection spoke or closed; not reused");
        }
        let conn = self.dial(server, config).await?;
        Ok(Lease {
            conn,
            server,
            reused: false,
            key,
        })
    }

    /// A fresh connection for the same key as `lease` (after a reused one
    /// turned out dead).
    pub async fn redial(&self, lease: &Lease) -> Result<Lease, DialError> {
        let (_, config) = self.tls.client_config(lease.key.identity.as_deref());
        let conn = self.dial(lease.server, config).await?;
        Ok(Lease {
            conn,
            server: lease.server,
            reused: false,
            key: lease.key.clone(),
        })
    }

    /// Returns a connection whose last response was read completely.
    pub fn checkin(&self, lease: Lease) {
        if !lease.conn.buffered().is_empty() || lease.key.generation != self.tls.generation() {
            return;
        }
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push(Idle {
            key: lease.key,
            conn: lease.conn,
            since: Instant::now(),
        });
    }

    /// Drops idle connections (e.g. after going offline).
    pub fn clear_idle(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    fn take_idle(&self, key: &PoolKey) -> Option<UpConn> {
        let mut idle = self.idle.lock().ok()?;
        let now = Instant::now();
        idle.retain(|i| {
            now.duration_since(i.since) < IDLE_LIMIT && i.key.generation == key.generation
        });
        let pos = idle.iter().rposition(|i| &i.key == key)?;
        Some(idle.swap_remove(pos).conn)
    }

    /// TCP (or CONNECT tunnel), then TLS, within `--upstream-timeout`.
    async fn dial(
        &self,
        server: usize,
        config: Arc<rustls::ClientConfig>,
    ) -> Result<UpConn, DialError> {
        let target = self.server(server).clone();
        let name = ServerName::try_from(target.host.clone())
            .map_err(|_| DialError::BadServerName(target.host.clone()))?;
        let attempt = async {
            let tcp = match &self.proxy {
                Some(proxy) => connect_via_proxy(proxy, &target).await?,
                None => TcpStream::connect((target.host.as_str(), target.port))
                    .await
                    .map_err(DialError::Connect)?,
            };
            let _ = tcp.set_nodelay(true);
            let tls = TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(DialError::Tls)?;
            Ok(Conn::new(tls))
        };
        attempt.or(timeout(self.timeout)).await
    }

    /// `GET /readyz` on `server` over a fresh anonymous connection.
    pub async fn probe(&self, server: usize) -> Result<(), String> {
        let (_, config) = self.tls.client_config(None);
        let mut conn = self.dial(server, config).await.map_err(|e| e.to_string())?;
        let target = self.server(server);
        let head = format!(
            "GET {}/readyz HTTP/1.1\r\nHost: {}\r\nUser-Agent: lite-apiserver/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            target.path_prefix,
            target.authority,
            env!("CARGO_PKG_VERSION")
        );
        let exchange = async {
            conn.write_all(head.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            conn.flush().await.map_err(|e| e.to_string())?;
            match conn.read_head(ResponseHead::parse).await {
                Ok(Some(res)) if res.status == 200 => Ok(()),
                Ok(Some(res)) => Err(format!("/readyz answered {}", res.status)),
                Ok(None) => Err("closed before answering /readyz".to_owned()),
                Err(e) => Err(e.to_string()),
            }
        };
        exchange
            .or(async {
                Timer::after(self.timeout).await;
                Err("/readyz timed out".to_owned())
            })
            .await
    }
}

/// Whether an idle connection has nothing to say: no byte, no EOF, no TLS
/// alert. Anything read from an idle connection is an answer to nothing
/// (a framing doubt), so such a connection is never reused. One poll, no
/// waiting.
async fn is_quiet(conn: &mut UpConn) -> bool {
    smol::future::poll_once(conn.fill()).await.is_none()
}

async fn timeout<T>(after: Duration) -> Result<T, DialError> {
    Timer::after(after).await;
    Err(DialError::Timeout)
}

/// Opens a tunnel to `target` through an HTTP CONNECT proxy.
async fn connect_via_proxy(proxy: &ProxyUrl, target: &ServerUrl) -> Result<TcpStream, DialError> {
    let tcp = TcpStream::connect((proxy.host.as_str(), proxy.port))
        .await
        .map_err(DialError::Connect)?;
    let _ = tcp.set_nodelay(true);
    let authority = format!("{}:{}", target.host, target.port);
    let mut head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(auth) = &proxy.authorization {
        head.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
    }
    head.push_str("\r\n");
    let mut conn = Conn::new(tcp);
    conn.write_all(head.as_bytes())
        .await
        .map_err(DialError::Connect)?;
    conn.flush().await.map_err(DialError::Connect)?;
    let res = conn
        .read_head(ResponseHead::parse)
        .await
        .map_err(|e| DialError::Proxy(e.to_string()))?
        .ok_or_else(|| DialError::Proxy("closed before answering CONNECT".to_owned()))?;
    if !(200..300).contains(&res.status) {
        return Err(DialError::Proxy(format!(
            "CONNECT answered {} {}",
            res.status, res.reason
        )));
    }
    let (tcp, rest) = conn.into_parts();
    if !rest.is_empty() {
        return Err(DialError::Proxy(
            "proxy sent bytes before the tunnel was up".to_owned(),
        ));
    }
    Ok(tcp)
}

/// Rewrites a client's request head for the upstream: hop-by-hop headers
/// dropped (except the Upgrade pair of an upgrade request), exactly one
/// framing field that matches the body we will send, Host set to the
/// server, the path prefix of `--server` prepended.
pub fn upstream_head(client: &RequestHead, server: &ServerUrl) -> RequestHead {
    let mut head = client.clone();
    let upgrade = client
        .is_upgrade()
        .then(|| client.headers.get("upgrade").map(<[u8]>::to_vec))
        .flatten();
    head.headers.remove_hop_by_hop();
    head.headers.remove("expect");
    head.headers.set_framing(client.body_framing());
    head.headers.set("Host", server.authority.as_bytes());
    if let Some(proto) = upgrade {
        head.headers.set("Connection", "Upgrade");
        head.headers.set("Upgrade", proto);
    }
    if !server.path_prefix.is_empty() {
        head.target = format!("{}{}", server.path_prefix, client.target);
    }
    head
}
