//! The routing decision and the online path up to the answer's head.
//!
//! A request goes upstream while the state is online; [`Upstream::connect`]
//! picks the server (failing over, or going offline). While it waits for
//! its answer it races the server's health epoch: when the server is
//! declared down (a probe timed out: the link went silent), the request is
//! cancelled at once instead of waiting for TCP. A cancelled read is asked
//! again of another server, or answered from the cache; a cancelled write
//! gets 503 saying its outcome is unknown (it may have been applied).
//!
//! [`Upstream::connect`]: crate::upstream::Upstream::connect

use std::io;

use smol::future::FutureExt;
use smol::io::{AsyncRead, AsyncWrite};

use super::offline::{self, Body};
use super::relay::{self, Forward};
use super::{Context, Outcome, BODY_TIMEOUT};
use crate::auth::identity::Caller;
use crate::http::{
    pump, BodyDecoder, Conn, ForwardHead, Framing, HttpError, PumpError, RequestHead,
};
use crate::k8s::reply;
use crate::k8s::request::{Classified, Verb};
use crate::k8s::status::Status;
use crate::upstream::{encode_upstream_head, Lease, UpConn};

/// Online if we can, offline if we must.
pub async fn route<S>(
    ctx: &Context,
    client: &mut Conn<S>,
    head: &RequestHead,
    class: &Classified,
    caller: &Caller,
) -> io::Result<Outcome>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if head.minor >= 1 && head.headers.has_token("expect", "100-continue") {
        // The upstream never sees Expect; tell the client to go ahead now.
        client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        client.flush().await?;
    }
    if ctx.upstream.health.is_online() {
        if class.node_lease().is_some() {
            ctx.leases.forget(head.path());
        }
        match ctx.upstream.connect(caller.cn.as_deref(), false).await {
            Ok(lease) => return forward(ctx, client, head, class, caller, lease).await,
            Err(e) => log::debug!("{} {}: {e}; answering offline", head.method, head.target),
        }
    }
    offline::answer(ctx, client, head, class, caller, Body::Unread).await
}

/// Why a request could not be delivered upstream.
#[derive(Debug)]
pub enum SendError {
    /// The upstream side broke (write, or reading the answer's head).
    Upstream(io::Error),
    /// The client's request body broke (the upstream saw an aborted
    /// request, and its connection is dropped with the lease).
    Client(HttpError),
    /// The upstream's answer head broke the HTTP rules: no retry (the
    /// request was delivered), 502.
    Malformed(HttpError),
    /// The server was declared down while we waited.
    Cancelled,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Upstream(e) => write!(f, "upstream: {e}"),
            SendError::Client(e) => write!(f, "client: {e}"),
            SendError::Malformed(e) => write!(f, "upstream answer: {e}"),
            SendError::Cancelled => write!(f, "the server was declared down"),
        }
    }
}

/// What to do after a failed attempt.
enum Next {
    /// Try again on this lease.
    Retry(Box<Lease>),
    /// Answer from the cache.
    Offline,
    /// Answer with this and close.
    Refuse(Status),
}

/// Sends the request upstream (again on another connection or server when
/// that is safe) and relays the answer.
async fn forward<S>(
    ctx: &Context,
    client: &mut Conn<S>,
    head: &RequestHead,
    class: &Classified,
    caller: &Caller,
    mut lease: Lease,
) -> io::Result<Outcome>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let framing = head.body_framing();
    let mut attempts = 0;
    let response = loop {
        attempts += 1;
        let error = match attempt(ctx, client, head, framing, &mut lease).await {
            Ok(res) => break res,
            Err(SendError::Client(e)) => {
                log::warn!("{} {}: client: {e}", head.method, head.target);
                reply::refuse_malformed(client, &e).await;
                return Ok(Outcome::local(e.client_status().unwrap_or(0), false));
            }
            Err(e) => e,
        };
        let failed = Attempt {
            repeatable: may_repeat(head, framing),
            exhausted: attempts > ctx.upstream.server_count(),
            verb: class.verb,
        };
        match next_step(ctx, caller, &error, &lease, failed).await {
            Next::Retry(fresh) => lease = *fresh,
            Next::Offline if framing == Framing::Empty => {
                return offline::answer(ctx, client, head, class, caller, Body::Unread).await;
            }
            Next::Offline => {
                return offline::answer(ctx, client, head, class, caller, Body::Consumed).await;
            }
            Next::Refuse(status) => {
                reply::send_status(client, &status, true).await?;
                return Ok(Outcome::local(status.code, false));
            }
        }
    };
    if response.status == 101 && head.is_upgrade() {
        return relay::upgrade(ctx, client, lease, response).await;
    }
    relay::relay(ctx, client, head, class, caller, lease, response).await
}

/// One attempt on `lease`, cancelled when its server is declared down.
async fn attempt<S>(
    ctx: &Context,
    client: &mut Conn<S>,
    head: &RequestHead,
    framing: Framing,
    lease: &mut Lease,
) -> Result<ForwardHead, SendError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut up_head = Vec::with_capacity(1024);
    encode_upstream_head(head, ctx.upstream.server(lease.server), &mut up_head);
    let (server, epoch) = (lease.server, lease.epoch);
    let _waiting = ctx.upstream.health.waiting(server);
    let result = send_request(client, &mut lease.conn, &up_head, framing)
        .or(async {
            ctx.upstream.health.wait_down(server, epoch).await;
            Err(SendError::Cancelled)
        })
        .await;
    if let Err(e) = &result {
        log::warn!("{} {} on server #{server}: {e}", head.method, head.target);
    }
    result
}

/// What is known about a failed attempt.
struct Attempt {
    /// Idempotent, and its body was not consumed.
    repeatable: bool,
    /// Every server had its chance.
    exhausted: bool,
    verb: Verb,
}

/// After a failed attempt: a read (or a request the server cannot have
/// acted on) is asked again, of another server if this one is down, or
/// answered from the cache; anything else is refused.
async fn next_step(
    ctx: &Context,
    caller: &Caller,
    error: &SendError,
    lease: &Lease,
    attempt: Attempt,
) -> Next {
    let upstream = &ctx.upstream;
    let down = match error {
        SendError::Cancelled => true,
        SendError::Upstream(e) if e.kind() == io::ErrorKind::TimedOut => {
            upstream.declare_down(lease.server, &format!("request timed out: {e}"));
            true
        }
        _ => false,
    };
    if down {
        ctx.metrics.cancelled(match attempt.verb {
            _ if !attempt.repeatable => "write",
            Verb::Watch => "watch",
            _ => "read",
        });
    }
    if !attempt.repeatable || matches!(error, SendError::Malformed(_)) {
        return Next::Refuse(if down {
            Status::unavailable("lite-apiserver: the cloud kube-apiserver went silent while this request was in flight; its outcome is unknown (it may or may not have been applied)")
        } else {
            Status::new(
                502,
                "InternalError",
                format!("lite-apiserver: upstream failed: {error}"),
            )
        });
    }
    if attempt.exhausted && !down {
        return Next::Refuse(Status::new(
            502,
            "InternalError",
            format!("lite-apiserver: upstream failed: {error}"),
        ));
    }
    if attempt.exhausted || !upstream.health.is_online() {
        return Next::Offline;
    }
    // A stale pooled connection, or a server that went down: a fresh
    // connection, on the same server if it is alive, else the next.
    match upstream.connect(caller.cn.as_deref(), true).await {
        Ok(fresh) => Next::Retry(Box::new(fresh)),
        Err(_) => Next::Offline,
    }
}

/// Whether a request may be sent again after an attempt failed: only an
/// idempotent one whose body was not consumed.
fn may_repeat(head: &RequestHead, framing: Framing) -> bool {
    framing == Framing::Empty
        && matches!(head.method.as_str(), "GET" | "HEAD" | "DELETE" | "OPTIONS")
}

/// Writes head and body upstream, then reads the answer's head (skipping
/// interim 1xx answers other than 101).
async fn send_request<S>(
    client: &mut Conn<S>,
    up: &mut UpConn,
    head: &[u8],
    framing: Framing,
) -> Result<ForwardHead, SendError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    up.write_all(head).await.map_err(SendError::Upstream)?;
    if framing != Framing::Empty {
        let mut dec = BodyDecoder::new(framing);
        let mut sink = Forward::new(up, framing == Framing::Chunked);
        client.set_read_timeout(Some(BODY_TIMEOUT));
        let pumped = pump(&mut dec, client, &mut sink).await;
        client.set_read_timeout(None);
        pumped.map_err(|e| match e {
            PumpError::Sink(e) => SendError::Upstream(e),
            PumpError::Source(e) => SendError::Client(e),
        })?;
        sink.finish().await.map_err(SendError::Upstream)?;
    }
    up.flush().await.map_err(SendError::Upstream)?;
    loop {
        let res = up
            .read_head(ForwardHead::parse)
            .await
            .map_err(|e| match e {
                HttpError::Io(e) => SendError::Upstream(e),
                other => SendError::Malformed(other),
            })?
            .ok_or_else(|| SendError::Upstream(io::ErrorKind::UnexpectedEof.into()))?;
        if (100..200).contains(&res.status) && res.status != 101 {
            continue;
        }
        return Ok(res);
    }
}

/// Shapes a cached agent's request so the answer is one we can store and
/// patch: JSON ([`rewrite_accept`]) and not compressed (kube-apiserver
/// gzips answers over 128 KiB when asked; Go clients ask implicitly and
/// decode either way, so dropping `Accept-Encoding` changes nothing for
/// them).
pub fn ask_for_cacheable(head: &mut RequestHead) {
    rewrite_accept(head);
    head.headers.remove("accept-encoding");
}

/// Removes protobuf from Accept so cached agents get JSON we can store and
/// patch (client-go decodes by Content-Type, so it accepts JSON).
pub fn rewrite_accept(head: &mut RequestHead) {
    let Some(accept) = head.headers.get_str("accept") else {
        return;
    };
    if !accept.contains("protobuf") {
        return;
    }
    let kept: Vec<&str> = accept
        .split(',')
        .map(str::trim)
        .filter(|range| !range.contains("protobuf"))
        .collect();
    let value = if kept.is_empty() {
        "application/json".to_owned()
    } else {
        kept.join(",")
    };
    head.headers.set("Accept", value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protobuf_is_removed_from_accept() {
        let cases = [
            ("application/vnd.kubernetes.protobuf,application/json", "application/json"),
            ("application/vnd.kubernetes.protobuf", "application/json"),
            (
                "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1;g=meta.k8s.io",
                "application/json;as=Table;v=v1;g=meta.k8s.io",
            ),
            ("application/json", "application/json"),
        ];
        for (input, want) in cases {
            let text = format!("GET / HTTP/1.1\r\nHost: h\r\nAccept: {input}\r\n\r\n");
            let Ok(crate::http::Parsed::Complete(mut head, _)) =
                RequestHead::parse(text.as_bytes())
            else {
                panic!()
            };
            rewrite_accept(&mut head);
            assert_eq!(head.headers.get_str("accept"), Some(want));
        }
    }
}
