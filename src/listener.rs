//! Accepting client connections: TCP, the rustls server handshake, the
//! connection cap, and handing each connection to [`crate::proxy`].
//!
//! Every new connection takes a fresh snapshot of the serving TLS config, so
//! a rotated serving certificate is used at once while established
//! connections keep theirs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_rustls::TlsAcceptor;
use smol::future::FutureExt;
use smol::net::{TcpListener, TcpStream};
use smol::Timer;

use crate::http::Conn;
use crate::proxy::Context;
use crate::tls::TlsMaterial;
use crate::workers::Workers;

/// A TLS handshake must complete within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the accept loop needs.
#[derive(Debug, Clone)]
pub struct Accept {
    /// The request path's context.
    pub ctx: Arc<Context>,
    /// The serving certificate (reloaded on change).
    pub tls: Arc<TlsMaterial>,
    /// Open client connections, across listeners.
    pub connections: Arc<AtomicUsize>,
    /// `--max-connections`.
    pub max_connections: usize,
    /// Where each connection runs (`--workers`).
    pub workers: Arc<Workers>,
}

/// Accepts connections on `listener` until the task is dropped; each runs
/// on the executor [`Workers`] picks.
pub async fn serve(state: Accept, listener: TcpListener) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                log::warn!("accept: {e}");
                Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(guard) = ConnectionGuard::acquire(&state.connections, state.max_connections)
        else {
            log::warn!(
                "refusing {peer}: {} connections open (--max-connections)",
                state.max_connections
            );
            drop(tcp);
            continue;
        };
        let connection = state.clone();
        state.workers.spawn(async move {
            let _guard = guard;
            serve_one(connection, tcp).await;
        });
    }
}

/// Handshake, then HTTP on one connection. Errors are logged here, in the
/// connection's own task.
async fn serve_one(state: Accept, tcp: TcpStream) {
    crate::net::tune(&tcp);
    let socket = Some(tcp.clone());
    let acceptor = TlsAcceptor::from(state.tls.server_config());
    let handshake = async { acceptor.accept(tcp).await.map(Some) }.or(async {
        crate::timeout::sleep(HANDSHAKE_TIMEOUT).await;
        Ok(None)
    });
    let tls = match handshake.await {
        Ok(Some(tls)) => tls,
        Ok(None) => {
            log::debug!("TLS handshake timed out");
            return;
        }
        Err(e) => {
            log::info!("TLS handshake failed: {e}");
            return;
        }
    };
    let peer_cn = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| crate::tls::common_name(cert.as_ref()));
    let ctx = state.ctx;
    ctx.metrics.connection_opened();
    let peer = crate::proxy::Peer {
        cn: peer_cn,
        socket,
    };
    crate::proxy::conn::serve_connection(ctx.clone(), Conn::new(tls), peer).await;
    ctx.metrics.connection_closed();
}

/// One slot of `--max-connections`, given back on drop.
pub struct ConnectionGuard(Arc<AtomicUsize>);

impl ConnectionGuard {
    /// Takes a slot if fewer than `max` are taken.
    pub fn acquire(count: &Arc<AtomicUsize>, max: usize) -> Option<ConnectionGuard> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ConnectionGuard(count.clone()))
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_cap() {
        let count = Arc::new(AtomicUsize::new(0));
        let a = ConnectionGuard::acquire(&count, 2);
        let b = ConnectionGuard::acquire(&count, 2);
        assert!(a.is_some() && b.is_some());
        assert!(ConnectionGuard::acquire(&count, 2).is_none());
        drop(a);
        assert!(ConnectionGuard::acquire(&count, 2).is_some());
    }
}
