//! The plain-HTTP admin port: `/healthz` (alive), `/readyz` (listeners
//! up), `/metrics` (Prometheus text). Loopback by default; no TLS, no
//! secrets in it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use smol::net::{TcpListener, TcpStream};
use smol::Executor;

use crate::http::{Conn, RequestHead, ResponseHead};
use crate::k8s::reply;
use crate::proxy::Context;
use crate::workers::Workers;

/// What the admin port reports on.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The request path's context (metrics, health, cache stats).
    pub ctx: Arc<Context>,
    /// Whether every listener is up.
    pub ready: Arc<AtomicBool>,
    /// The executors client connections run on.
    pub workers: Arc<Workers>,
}

/// Serves the admin port until the task is dropped.
pub async fn serve(admin: Admin, ex: Arc<Executor<'static>>, listener: TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            smol::Timer::after(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let admin = admin.clone();
        ex.spawn(async move {
            if let Err(e) = serve_one(&admin, tcp).await {
                log::debug!("admin connection: {e}");
            }
        })
        .detach();
    }
}

async fn serve_one(admin: &Admin, tcp: TcpStream) -> std::io::Result<()> {
    let _ = tcp.set_nodelay(true);
    let mut conn = Conn::new(tcp);
    let Ok(Some(head)) = conn.read_head(RequestHead::parse).await else {
        return Ok(());
    };
    let (status, content_type, body) = answer(admin, &head);
    let mut res = ResponseHead::new(status);
    res.headers.set("Content-Type", content_type);
    res.headers.set("Connection", "close");
    reply::send(&mut conn, res, body.as_bytes()).await
}

/// Status, content type and body for an admin path.
fn answer(admin: &Admin, head: &RequestHead) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    if head.method != "GET" {
        return (405, TEXT, "method not allowed\n".to_owned());
    }
    match head.path() {
        "/healthz" | "/livez" => (200, TEXT, "ok\n".to_owned()),
        "/readyz" if admin.ready.load(Ordering::Acquire) => (200, TEXT, "ok\n".to_owned()),
        "/readyz" => (503, TEXT, "listeners not up\n".to_owned()),
        "/metrics" => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics(admin),
        ),
        _ => (404, TEXT, "not found\n".to_owned()),
    }
}

/// The request path's metrics, then the connections per `--workers`
/// executor.
fn metrics(admin: &Admin) -> String {
    use std::fmt::Write;
    let mut out = admin.ctx.render_metrics();
    let name = "lite_apiserver_worker_connections";
    crate::metrics::write_family(
        &mut out,
        "gauge",
        name,
        "Client connections open, by executor thread (0: the main one).",
    );
    for (worker, open) in admin.workers.open().into_iter().enumerate() {
        let _ = writeln!(out, "{name}{{worker=\"{worker}\"}} {open}");
    }
    out
}
