//! Streaming the upstream's answer to the client, piece by piece, with
//! the cache tapping it on the way: a cacheable 2xx JSON answer goes to its
//! entry ([`crate::cache::Tee`]), a watch stream to the list it watches
//! ([`WatchTee`]). The bytes read from the upstream are written to the
//! client and copied once for the cache writer, which never makes the
//! client wait.
//!
//! A relayed stream ends early when the client leaves (a watch is not held
//! open for nobody) or when its server is declared down: a watch then ends
//! with a clean chunked terminator, so the client re-lists (from the cache)
//! and gets a held offline watch; any other body is cut (the client must
//! not mistake a truncated body for a complete one).

use std::io;

use smol::future::FutureExt;
use smol::io::{AsyncRead, AsyncWrite};

use super::{incluster, Context, Outcome};
use crate::auth::identity::Caller;
use crate::cache::key::CacheKey;
use crate::cache::live::WatchTee;
use crate::cache::{AnswerKind, Tee, TeeSpec};
use crate::http::body::{push_chunk, LAST_CHUNK};
use crate::http::{pump, BodyDecoder, Conn, ForwardHead, Framing, PumpError, RequestHead, Sink};
use crate::k8s::masterservice::Rewriter;
use crate::k8s::reply;
use crate::k8s::request::{Classified, Verb};
use crate::k8s::status::Status;
use crate::metrics::Source;
use crate::upstream::Lease;

/// Why a relayed body stopped early.
enum Stop {
    /// Reading the upstream or writing the client failed.
    Pump(PumpError),
    /// The client closed its connection.
    ClientGone,
    /// The server was declared down.
    Cancelled,
}

/// Streams the upstream's answer to the client, teeing it into the cache.
pub async fn relay<S>(
    ctx: &Context,
    client: &mut Conn<S>,
    head: &RequestHead,
    class: &Classified,
    caller: &Caller,
    mut lease: Lease,
    mut response: ForwardHead,
) -> io::Result<Outcome>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let up_framing = match response.framing(&head.method) {
        Ok(framing) => framing,
        // The lease is dropped: a connection whose answer cannot be
        // delimited is never used again.
        Err(e) => return bad_gateway(client, &e.to_string()).await,
    };
    if response.status < 500 {
        ctx.upstream.health.succeeded(lease.server);
    }
    let upstream_keep_alive = response.keep_alive() && up_framing != Framing::Close;
    let key = cache_key(caller, head, class, &response);
    // kubelet's view of default/kubernetes (--incluster-address).
    let rewrite = incluster::online(ctx, class, caller, &response);
    let client_up = incluster::client_side(up_framing, rewrite.is_some());
    let (chunked, keep_alive) = client_framing(head, &mut response, client_up);
    let mut sink = Forward::new(client, chunked);
    if let Some(key) = key {
        attach_cache(ctx, &mut sink, class, caller, key, &response);
    }
    if rewrite.is_some() {
        incluster::strip_content_length(&mut response.head);
        sink.rewrite = rewrite;
    }
    // The head goes out with the first piece of the body: one TLS record
    // (and one write) for a small answer instead of two.
    sink.pending = std::mem::take(&mut response.head);
    let streaming = class.verb == Verb::Watch || up_framing == Framing::Close;
    let stopped =
        pump_until_stopped(ctx, &mut lease, &mut sink, caller, up_framing, streaming).await;
    let watch = class.verb == Verb::Watch;
    let complete = settle(ctx, sink, stopped, watch, &lease, &head.target).await?;
    if complete && upstream_keep_alive {
        ctx.upstream.checkin(lease);
    }
    Ok(Outcome {
        status: response.status,
        source: Source::Upstream,
        keep_alive,
    })
}

/// Finishes the answer's head for the client (its hop-by-hop fields are
/// already gone): a close-delimited or chunked body re-chunked for an
/// HTTP/1.1 client; `Connection: close` when the client cannot keep the
/// connection. Returns (re-chunked, client keep-alive).
fn client_framing(head: &RequestHead, response: &mut ForwardHead, up: Framing) -> (bool, bool) {
    let chunked = matches!(up, Framing::Chunked | Framing::Close) && head.minor >= 1;
    if chunked {
        response
            .head
            .extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    let keep_alive = head.keep_alive() && (up != Framing::Close || chunked);
    if !keep_alive {
        response.head.extend_from_slice(b"Connection: close\r\n");
    }
    response.head.extend_from_slice(b"\r\n");
    (chunked, keep_alive)
}

/// Ends a relayed body: complete (terminator, cache commit: `Ok(true)`),
/// cut short by the server going down (a watch ends cleanly: `Ok(false)`;
/// anything else is cut), or broken (an error: the client connection
/// closes without a terminator, and the cache discards what it had).
async fn settle<S>(
    ctx: &Context,
    mut sink: Forward<'_, S>,
    stopped: Result<(), Stop>,
    watch: bool,
    lease: &Lease,
    target: &str,
) -> io::Result<bool>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if stopped.is_ok() {
        sink.end_rewrite().await?;
    }
    if let Some(tee) = sink.watch.take() {
        tee.end();
    }
    let tee = sink.tee.take();
    match stopped {
        Ok(()) => {
            sink.finish().await?;
            if let Some(tee) = tee {
                tee.commit();
            }
            Ok(true)
        }
        Err(Stop::Cancelled) if watch && sink.chunked => {
            ctx.metrics.cancelled("watch");
            log::warn!("{target}: server down, watch ended cleanly");
            sink.finish().await?;
            Ok(false)
        }
        Err(Stop::Cancelled) => {
            ctx.metrics.cancelled("read");
            Err(io::Error::other("server down mid-body"))
        }
        Err(Stop::ClientGone) => Err(io::ErrorKind::ConnectionAborted.into()),
        Err(Stop::Pump(PumpError::Sink(e))) => Err(e),
        Err(Stop::Pump(PumpError::Source(e))) => {
            log::warn!("upstream broke mid-body of {target}: {e}");
            if matches!(e, crate::http::HttpError::Timeout) {
                ctx.upstream
                    .declare_down(lease.server, &format!("timed out mid-body: {e}"));
            }
            Err(io::Error::other(e))
        }
    }
}

/// A 502 for an upstream answer we cannot relay; the lease is dropped.
pub async fn bad_gateway<S>(client: &mut Conn<S>, why: &str) -> io::Result<Outcome>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    log::warn!("proxying failed: {why}");
    let status = Status::new(
        502,
        "InternalError",
        format!("lite-apiserver: upstream failed: {why}"),
    );
    reply::send_status(client, &status, true).await?;
    Ok(Outcome {
        status: 502,
        source: Source::Local,
        keep_alive: false,
    })
}

/// Pumps the body until its end, the client leaving (for streams), or the
/// server going down.
async fn pump_until_stopped<S>(
    ctx: &Context,
    lease: &mut Lease,
    sink: &mut Forward<'_, S>,
    caller: &Caller,
    framing: Framing,
    streaming: bool,
) -> Result<(), Stop>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (server, epoch) = (lease.server, lease.epoch);
    let mut dec = BodyDecoder::new(framing);
    let body = async {
        pump(&mut dec, &mut lease.conn, sink)
            .await
            .map(|_| ())
            .map_err(Stop::Pump)
    };
    let down = async {
        ctx.upstream.health.wait_down(server, epoch).await;
        Err(Stop::Cancelled)
    };
    match (&caller.socket, streaming) {
        (Some(socket), true) => {
            body.or(down)
                .or(async {
                    client_gone(socket).await;
                    Err(Stop::ClientGone)
                })
                .await
        }
        _ => body.or(down).await,
    }
}

/// Sets the sink's cache taps for a cacheable answer.
fn attach_cache<S>(
    ctx: &Context,
    sink: &mut Forward<'_, S>,
    class: &Classified,
    caller: &Caller,
    key: CacheKey,
    response: &ForwardHead,
) {
    let kind = match class.verb {
        Verb::List | Verb::Watch => AnswerKind::List {
            continued: class.query.get_str("continue").map(str::to_owned),
        },
        _ => AnswerKind::Object,
    };
    let content_type = response
        .content_type()
        .unwrap_or("application/json")
        .to_owned();
    let spec = |key| TeeSpec {
        key,
        status: response.status,
        content_type,
        credential: caller.online_credential(),
        kind,
    };
    if class.verb != Verb::Watch {
        sink.tee = Some(ctx.store.tee(spec(key)));
    } else if key.is_table() {
        // Table lists are re-rendered by the server, never patched:
        // their watches are only relayed.
    } else if class.query.flag("sendInitialEvents") {
        // A streaming list: its initial events are the LIST entry.
        let list = ctx.store.tee(spec(key.clone()));
        sink.watch = Some(WatchTee::streaming_list(ctx.store.clone(), key, list));
    } else {
        sink.watch = Some(WatchTee::new(ctx.store.clone(), key));
    }
}

/// Completes when the client closes its connection (a peek sees EOF or an
/// error). Bytes from the client (a TLS alert, a pipelined request) are
/// left alone: the watch then ends at its next write, as before.
async fn client_gone(socket: &smol::net::TcpStream) {
    let mut byte = [0u8; 1];
    match socket.peek(&mut byte).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending::<()>().await,
    }
}

/// The cache key of a cacheable answer, or `None` if it is not stored.
fn cache_key(
    caller: &Caller,
    head: &RequestHead,
    class: &Classified,
    response: &ForwardHead,
) -> Option<CacheKey> {
    let storable = caller.cached && (200..300).contains(&response.status) && response.is_json();
    let watched = class.verb == Verb::Watch
        && class.certain
        && caller.cached
        && response.status == 200
        && response.is_json();
    if !(watched || storable && (class.is_cacheable() || class.is_token_request())) {
        return None;
    }
    CacheKey::new(
        &caller.agent,
        head.path(),
        head.query(),
        head.headers.get_str("accept"),
    )
    .ok()
}

/// After a 101, the connection is a byte pipe (exec, attach, port-forward)
/// until either side closes or the server is declared down.
pub async fn upgrade<S>(
    ctx: &Context,
    client: &mut Conn<S>,
    lease: Lease,
    mut response: ForwardHead,
) -> io::Result<Outcome>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    response.head.extend_from_slice(b"\r\n");
    client.write_all(&response.head).await?;
    client.flush().await?;
    let client_rest = client.buffered().to_vec();
    client.consume(client_rest.len());
    let (server, epoch) = (lease.server, lease.epoch);
    let (up, up_rest) = (*lease.conn).into_parts();
    let _ = crate::http::upgrade::splice(ClientIo(client), client_rest, up, up_rest)
        .or(async {
            ctx.upstream.health.wait_down(server, epoch).await;
            Ok(())
        })
        .await;
    Ok(Outcome {
        status: 101,
        source: Source::Upstream,
        keep_alive: false,
    })
}

/// A [`Sink`] writing a body to a connection, raw or re-chunked, with
/// optional taps into the cache.
pub struct Forward<'a, S> {
    conn: &'a mut Conn<S>,
    chunked: bool,
    /// Bytes to send before (with) the next piece: the answer's head.
    pending: Vec<u8>,
    /// Tee of a cacheable answer into its entry.
    pub tee: Option<Tee>,
    /// Tee of a watch stream into the cached list.
    pub watch: Option<WatchTee>,
    /// Rewrites the body before it reaches the client and the tees.
    pub rewrite: Option<Rewriter>,
    /// The rewriter's output for the current piece.
    rewritten: Vec<u8>,
}

impl<'a, S: AsyncRead + AsyncWrite + Unpin> Forward<'a, S> {
    /// A sink into `conn`; `chunked` re-frames each piece as a chunk.
    pub fn new(conn: &'a mut Conn<S>, chunked: bool) -> Self {
        Forward {
            conn,
            chunked,
            pending: Vec::new(),
            tee: None,
            watch: None,
            rewrite: None,
            rewritten: Vec::new(),
        }
    }

    /// The body ended: what the rewriter still holds goes out.
    pub async fn end_rewrite(&mut self) -> io::Result<()> {
        let Some(mut rewrite) = self.rewrite.take() else {
            return Ok(());
        };
        let mut rest = Vec::new();
        rewrite.finish(&mut rest);
        incluster::log_stats(&rewrite);
        self.piece(&rest).await
    }

    /// Writes the last chunk (if chunked) and flushes.
    pub async fn finish(&mut self) -> io::Result<()> {
        if self.chunked {
            self.pending.extend_from_slice(LAST_CHUNK);
        }
        self.write_pending().await?;
        self.conn.flush().await
    }

    async fn write_pending(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.conn.write_all(&self.pending).await?;
            self.pending.clear();
        }
        Ok(())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Forward<'_, S> {
    /// Sends one piece to the client and the tees.
    async fn piece(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            // Nothing to send (an empty chunk would end the body).
            return Ok(());
        }
        if self.chunked {
            push_chunk(bytes, &mut self.pending);
            self.write_pending().await?;
        } else if self.pending.is_empty() {
            self.conn.write_all(bytes).await?;
        } else {
            self.pending.extend_from_slice(bytes);
            self.write_pending().await?;
        }
        if let Some(tee) = &mut self.tee {
            tee.write(bytes);
        }
        if let Some(watch) = &mut self.watch {
            watch.feed(bytes);
        }
        Ok(())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink for Forward<'_, S> {
    async fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        let Some(rewrite) = &mut self.rewrite else {
            return self.piece(bytes).await;
        };
        let mut out = std::mem::take(&mut self.rewritten);
        rewrite.push(bytes, &mut out);
        let sent = self.piece(&out).await;
        out.clear();
        self.rewritten = out;
        sent
    }

    async fn idle(&mut self) -> io::Result<()> {
        self.write_pending().await?;
        self.conn.flush().await
    }
}

/// Lets the client side of an upgrade be spliced while the `Conn` (and its
/// buffer) stays borrowed.
struct ClientIo<'a, S>(&'a mut Conn<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ClientIo<'_, S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(self.get_mut().0.get_mut()).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ClientIo<'_, S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(self.get_mut().0.get_mut()).poll_write(cx, buf)
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(self.get_mut().0.get_mut()).poll_flush(cx)
    }
    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(self.get_mut().0.get_mut()).poll_close(cx)
    }
}
