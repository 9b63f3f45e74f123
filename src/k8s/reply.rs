//! Answers lite-apiserver writes itself (errors, cached entries, offline
//! watches), as opposed to answers relayed from the upstream.

use std::io;

use smol::io::{AsyncRead, AsyncWrite};

use crate::http::{Conn, HttpError, ResponseHead};
use crate::k8s::status::Status;

/// Writes a complete response with a Content-Length body and flushes.
pub async fn send<S>(conn: &mut Conn<S>, mut head: ResponseHead, body: &[u8]) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    head.headers.set("Content-Length", body.len().to_string());
    let mut out = Vec::with_capacity(256 + body.len());
    head.encode(&mut out);
    out.extend_from_slice(body);
    conn.write_all(&out).await?;
    conn.flush().await
}

/// Writes a Kubernetes `Status` answer.
pub async fn send_status<S>(conn: &mut Conn<S>, status: &Status, close: bool) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = ResponseHead::new(status.code);
    head.headers.set("Content-Type", "application/json");
    head.headers.set("Cache-Control", "no-cache, private");
    if close {
        head.headers.set("Connection", "close");
    }
    send(conn, head, status.to_json().as_bytes()).await
}

/// Answers a request that broke the HTTP rules (400, 405, 408, 431, 501),
/// when an answer still makes sense; the connection is closed after it.
pub async fn refuse_malformed<S>(client: &mut Conn<S>, e: &HttpError)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Some(code) = e.client_status() {
        let status = Status::new(code, e.status_reason(), format!("lite-apiserver: {e}"));
        let _ = send_status(client, &status, true).await;
    }
}
