//! The routing decision, and the online path.
//!
//! One client connection is served here request by request (keep-alive).
//! Each request is classified ([`crate::request`]), its caller identified
//! ([`crate::identity::Caller`]), and then either forwarded upstream (online)
//! or answered by [`crate::offline`]. A request whose dial fails on every
//! server is answered offline too: its body has not been read yet, so
//! nothing is lost by changing course.
//!
//! Online, the upstream's answer streams to the client piece by piece; a
//! cacheable 2xx JSON answer is teed into the store on the way, and a watch
//! stream is teed into the cached list it watches.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::future::FutureExt;
use smol::io::{AsyncRead, AsyncWrite};
use smol::Timer;

use crate::cache::key::CacheKey;
use crate::cache::live::WatchTee;
use crate::cache::paging::{self, Page};
use crate::cache::store::EntryWriter;
use crate::http::body::{chunk_header, LAST_CHUNK};
use crate::http::{
    pump, BodyDecoder, Conn, Framing, HttpError, PumpError, RequestHead, ResponseHead, Sink,
};
use crate::identity::Caller;
use crate::metrics::Source;
use crate::request::{Classified, Verb};
use crate::server::State;
use crate::status::Status;
use crate::upstream::{upstream_head, Lease, UpConn};
use crate::{offline, reply};

/// A keep-alive connection may sit idle this long between requests.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Once a request started arriving, its head must be complete within this.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A request body may pause this long between two reads.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a cacheable body is kept to find its resourceVersion.
const RV_PREFIX: usize = 64 * 1024;

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

/// What is known about a client connection beyond its bytes.
#[derive(Debug, Default, Clone)]
pub struct Peer {
    /// CN of the verified client certificate.
    pub cn: Option<String>,
    /// The TCP socket under the TLS stream, to notice a client leaving a
    /// relayed watch without reading its stream.
    pub socket: Option<smol::net::TcpStream>,
}

/// Serves every request of one client connection.
pub async fn serve_connection<S>(state: Arc<State>, mut client: Conn<S>, peer: Peer)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let head = match read_request_head(&mut client).await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(e) => {
                refuse_malformed(&mut client, &e).await;
                log::debug!("client connection: {e}");
                return;
            }
        };
        let outcome = handle(&state, &mut client, head, &peer).await;
        if !outcome.keep_alive {
            let _ = client.close().await;
            return;
        }
    }
}

/// Answers a request that broke the HTTP rules (400, 405, 408, 431, 501),
/// when an answer still makes sense; the connection is closed after it.
async fn refuse_malformed<S>(client: &mut Conn<S>, e: &HttpError)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Some(code) = e.client_status() {
        let status = Status::new(code, e.status_reason(), format!("lite-apiserver: {e}"));
        let _ = reply::send_status(client, &status, true).await;
    }
}

/// Reads the next head: the first byte may take [`IDLE_TIMEOUT`], the rest
/// of the head [`HEAD_TIMEOUT`].
async fn read_request_head<S>(client: &mut Conn<S>) -> Result<Option<RequestHead>, HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if client.buffered().is_empty() {
        let first = async { client.fill().await.map_err(HttpError::from) }
            .or(async {
                Timer::after(IDLE_TIMEOUT).await;
                Ok(0)
            })
            .await?;
        if first == 0 {
            return Ok(None);
        }
    }
    client
        .read_head(RequestHead::parse)
        .or(async {
            Timer::after(HEAD_TIMEOUT).await;
            Err(HttpError::Timeout)
        })
        .await
}

/// Handles one request and logs it.
async fn handle<S>(
    state: &State,
    client: &mut Conn<S>,
    mut head: RequestHead,
    peer: &Peer,
) -> Outcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let class = Classified::new(&head.method, head.path(), head.query(), head.is_upgrade());
    let caller = Caller::new(&head, peer.cn.as_deref(), &state.config.cache_agents)
        .with_socket(peer.socket.clone());
    if caller.cached {
        rewrite_accept(&mut head);
    }
    let outcome = match route(state, client, &head, &class, &caller).await {
        Ok(outcome) => outcome,
        Err(e) => {
            log::debug!("{} {} {}: {e}", caller.agent, head.method, head.target);
            Outcome {
                status: 0,
                source: Source::Upstream,
                keep_alive: false,
            }
        }
    };
    if outcome.source == Source::Upstream && (200..300).contains(&outcome.status) {
        if let Some(token) = caller
            .token
            .as_deref()
            .filter(|t| crate::jwt::looks_like_jwt(t))
        {
            crate::jwks::learn_from(state, token).await;
        }
    }
    state
        .metrics
        .record_request(class.verb, outcome.status, outcome.source);
    log::info!(
        "{} {} {} {} {}us {}",
        caller.agent,
        class.verb.as_str(),
        head.target,
        outcome.status,
        started.elapsed().as_micros(),
        outcome.source.as_str()
    );
    outcome
}

/// Online if we can, offline if we must.
async fn route<S>(
    state: &State,
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
    if caller.cached && is_watch_list(class) {
        return refuse_watch_list(client, head).await;
    }
    if state.health.is_online() {
        match connect(state, caller).await {
            Some(lease) => return forward(state, client, head, class, caller, lease).await,
            None => log::debug!(
                "no upstream for {} {}; answering offline",
                head.method,
                head.target
            ),
        }
    }
    offline::answer(state, client, head, class, caller).await
}

/// Whether this is a streaming list (`watch` with `sendInitialEvents=true`,
/// what client-go 1.35+ informers send instead of LIST then WATCH).
fn is_watch_list(class: &Classified) -> bool {
    class.verb == Verb::Watch && class.query.flag("sendInitialEvents")
}

/// Cached agents get the answer of an apiserver without the WatchList
/// feature, so client-go's reflector falls back to LIST then WATCH: a LIST
/// is what the cache stores (and serves after a reboot while offline),
/// and the WATCH is what keeps it current. Without this, an informer's
/// initial state would only ever travel as watch events, never be cached,
/// and kubelet would see no pods after an offline reboot.
async fn refuse_watch_list<S>(client: &mut Conn<S>, head: &RequestHead) -> io::Result<Outcome>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let status = Status::new(
        422,
        "Invalid",
        "ListOptions.meta.k8s.io \"\" is invalid: sendInitialEvents: Forbidden: lite-apiserver serves cached clients LIST then WATCH (list again without sendInitialEvents)",
    );
    reply::send_status(client, &status, !head.keep_alive()).await?;
    Ok(Outcome {
        status: 422,
        source: Source::Local,
        keep_alive: head.keep_alive(),
    })
}

/// A connection to the current server, failing over in order; `None` (and
/// offline) when no server could be reached.
async fn connect(state: &State, caller: &Caller) -> Option<Lease> {
    let count = state.upstream.server_count();
    let first = state.health.current();
    let mut last_error = String::new();
    for i in 0..count {
        let server = (first + i) % count;
        match state.upstream.checkout(server, caller.cn.as_deref()).await {
            Ok(lease) => {
                state.health.use_server(server);
                return Some(lease);
            }
            Err(e) => {
                state.metrics.upstream_dial_failed();
                last_error = format!("{}: {e}", state.upstream.server(server).authority);
                log::warn!("upstream {last_error}");
            }
        }
    }
    state.health.mark_offline(&last_error);
    state.upstream.clear_idle();
    None
}

/// Sends the request upstream and relays the answer.
async fn forward<S>(
    state: &State,
    client: &mut Conn<S>,
    head: &RequestHead,
    class: &Classified,
    caller: &Caller,
    mut lease: Lease,
) -> io::Result<Outcome>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let up_head = upstream_head(head, state.upstream.server(lease.server));
    let framing = head.body_framing();
    let response = match send_request(client, &mut lease.conn, &up_head, framing).await {
        Ok(res) => res,
        // A pooled connection the server had closed: one retry on a fresh
        // one, only when no request body was consumed.
        Err(SendError::Upstream(_)) if lease.reused && framing == Framing::Empty => {
            lease = match state.upstream.redial(&lease).await {
                Ok(fresh) => fresh,
                Err(e) => {
                    state.health.mark_offline(&e.to_string());
                    return offline::answer(state, client, head, class, caller).await;
                }
            };
            match send_request(client, &mut lease.conn, &up_head, framing).await {
                Ok(res) => res,
                Err(e) => return bad_gateway(client, e).await,
            }
        }
        Err(e) => return bad_gateway(client, e).await,
    };
    if response.status == 101 && head.is_upgrade() {
        return upgrade(client, lease, response).await;
    }
    relay(state, client, head, class, caller, lease, response).await
}

/// Why a request could not be delivered upstream.
#[derive(Debug)]
enum SendError {
    /// The upstream side broke (write, or reading the answer's head).
    Upstream(io::Error),
    /// The client's request body broke (the upstream saw an aborted
    /// request, and its connection is dropped with the lease).
    Client(HttpError),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Upstream(e) => write!(f, "upstream: {e}"),
            SendError::Client(e) => write!(f, "client: {e}"),
        }
    }
}

/// Writes head and body upstream, then reads the answer's head (skipping
/// interim 1xx answers other than 101).
async fn send_request<S>(
    client: &mut Conn<S>,
    up: &mut UpConn,
    head: &RequestHead,
    framing: Framing,
) -> Result<ResponseHead, SendError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = Vec::with_capacity(1024);
    head.encode(&mut out);
    up.write_all(&out).await.map_err(SendError::Upstream)?;
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
            .read_head(ResponseHead::parse)
            .await
            .map_err(|e| SendError::Upstream(io::Error::other(e)))?
            .ok_or_else(|| SendError::Upstream(io::ErrorKind::UnexpectedEof.into()))?;
        if (100..200).contains(&res.status) && res.status != 101 {
            continue;
        }
        return Ok(res);
    }
}

async fn bad_gateway<S>(client: &mut Conn<S>, e: SendError) -> io::Result<Outcome>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    log::warn!("proxying failed: {e}");
    if let SendError::Client(e) = &e {
        refuse_malformed(client, e).await;
        return Ok(Outcome {
            status: e.client_status().unwrap_or(0),
            source: Source::Local,
            keep_alive: false,
        });
    }
    let status = Status::new(
        502,
        "InternalError",
        format!("lite-apiserver: upstream failed: {e}"),
    );
    reply::send_status(client, &status, true).await?;
    Ok(Outcome {
        status: 502,
        source: Source::Local,
        keep_alive: false,
    })
}

/// After a 101, the connection is a byte pipe (exec, attach, port-forward).
async fn upgrade<S>(
    client: &mut Conn<S>,
    lease: Lease,
    response: ResponseHead,
) -> io::Result<Outcome>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = Vec::with_capacity(512);
    response.encode(&mut out);
    client.write_all(&out).await?;
    client.flush().await?;
    let client_rest = client.buffered().to_vec();
    client.consume(client_rest.len());
    let (up, up_rest) = lease.conn.into_parts();
    let _ = crate::http::upgrade::splice(ClientIo(client), client_rest, up, up_rest).await;
    Ok(Outcome {
        status: 101,
        source: Source::Upstream,
        keep_alive: false,
    })
}

/// Streams the upstream's answer to the client, teeing it into the cache.
async fn relay<S>(
    state: &State,
    client: &mut Conn<S>,
    head: &RequestHead,
    class: &Classified,
    caller: &Caller,
    mut lease: Lease,
    mut response: ResponseHead,
) -> io::Result<Outcome>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let up_framing = match response.framing(&head.method) {
        Ok(framing) => framing,
        // The lease is dropped: a connection whose answer cannot be
        // delimited is never used again.
        Err(e) => return bad_gateway(client, SendError::Upstream(io::Error::other(e))).await,
    };
    let upstream_keep_alive = response.keep_alive();
    let client_keep_alive = head.keep_alive();
    let status = response.status;
    let key = cache_key(caller, head, class, &response);
    response.headers.remove_hop_by_hop();
    let chunked = matches!(up_framing, Framing::Chunked | Framing::Close) && head.minor >= 1;
    if chunked {
        response.headers.set("Transfer-Encoding", "chunked");
    }
    let keep_alive = client_keep_alive && (up_framing != Framing::Close || chunked);
    if !keep_alive {
        response.headers.set("Connection", "close");
    }
    let mut out = Vec::with_capacity(1024);
    response.encode(&mut out);
    client.write_all(&out).await?;

    let mut sink = Forward::new(client, chunked);
    if let Some(key) = &key {
        if class.verb == Verb::Watch {
            // Table lists are re-rendered by the server, never patched:
            // their watches are only relayed.
            if !key.is_table() {
                sink.watch = Some(WatchTee::new(&state.watches, key.clone()));
            }
        } else {
            let content_type = response
                .headers
                .get_str("content-type")
                .unwrap_or("application/json");
            sink.tee = Some(state.store.writer(
                key,
                status,
                content_type,
                caller.online_credential(),
            ));
        }
    }
    let mut dec = BodyDecoder::new(up_framing);
    let streaming = class.verb == Verb::Watch || up_framing == Framing::Close;
    let pumped = match (&caller.socket, streaming) {
        (Some(socket), true) => {
            pump(&mut dec, &mut lease.conn, &mut sink)
                .or(async {
                    client_gone(socket).await;
                    Err(PumpError::Sink(io::ErrorKind::ConnectionAborted.into()))
                })
                .await
        }
        _ => pump(&mut dec, &mut lease.conn, &mut sink).await,
    };
    let finished = match pumped {
        Ok(_) => sink.finish().await,
        Err(PumpError::Sink(e)) => Err(e),
        Err(PumpError::Source(e)) => {
            // The upstream broke mid-body: the client must not mistake a
            // truncated body for a complete one, so close without the
            // terminator. The tee is dropped, which discards its temp file.
            log::warn!("upstream broke mid-body of {}: {e}", head.target);
            Err(io::Error::other(e))
        }
    };
    let Forward {
        tee, watch, prefix, ..
    } = sink;
    if let Some(watch) = watch {
        watch.end();
    }
    if let Err(e) = finished {
        drop(tee);
        return Err(e);
    }
    if let (Some(tee), Some(key)) = (tee, &key) {
        if let Err(e) = store_answer(state, head, class, caller, key, tee, &prefix).await {
            log::warn!("cache: could not store {}: {e}", head.target);
        }
    }
    if upstream_keep_alive && up_framing != Framing::Close {
        state.upstream.checkin(lease);
    }
    Ok(Outcome {
        status,
        source: Source::Upstream,
        keep_alive,
    })
}

/// Commits a cached answer: a whole answer to its key; a page of a paged
/// LIST to a page key, assembling the list when the last page arrives; a
/// fresh complete LIST also drops object entries no longer in it.
async fn store_answer(
    state: &State,
    head: &RequestHead,
    class: &Classified,
    caller: &Caller,
    key: &CacheKey,
    tee: EntryWriter,
    prefix: &[u8],
) -> Result<(), crate::cache::store::StoreError> {
    let rv = crate::cache::json::resource_version(prefix);
    if class.verb != Verb::List {
        return tee.commit_queued(None, rv).await;
    }
    match paging::classify(&class.query, prefix) {
        Page::Whole => {
            tee.commit_queued(None, rv).await?;
            state.store.converge(key).await;
        }
        Page::Part { this, next } => {
            let accept = head.headers.get_str("accept");
            let Some(page) = paging::page_key(
                &caller.agent,
                head.path(),
                head.query(),
                accept,
                this.as_deref(),
            ) else {
                return Ok(());
            };
            tee.commit_queued(Some(&page), rv).await?;
            if let Some(pages) = state.pages.add(key, page, this.as_deref(), next.as_deref()) {
                state.store.assemble(key, pages).await?;
                state.store.converge(key).await;
            }
        }
    }
    Ok(())
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
    response: &ResponseHead,
) -> Option<CacheKey> {
    let storable = caller.cached
        && (200..300).contains(&response.status)
        && response.media_type().as_deref() == Some("application/json");
    let watched =
        class.verb == Verb::Watch && class.certain && caller.cached && response.status == 200;
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

/// A [`Sink`] writing a body to a connection, raw or re-chunked, with
/// optional taps into the cache.
pub struct Forward<'a, S> {
    /// Tee of a watch stream into the cached list.
    pub watch: Option<WatchTee<'a>>,
    conn: &'a mut Conn<S>,
    chunked: bool,
    scratch: Vec<u8>,
    /// Tee of a cacheable answer into its entry.
    pub tee: Option<EntryWriter>,
    /// The first bytes of the body (to find its resourceVersion).
    pub prefix: Vec<u8>,
}

impl<'a, S: AsyncRead + AsyncWrite + Unpin> Forward<'a, S> {
    /// A sink into `conn`; `chunked` re-frames each piece as a chunk.
    pub fn new(conn: &'a mut Conn<S>, chunked: bool) -> Self {
        Forward {
            conn,
            chunked,
            scratch: Vec::new(),
            tee: None,
            watch: None,
            prefix: Vec::new(),
        }
    }

    /// Writes the last chunk (if chunked) and flushes.
    pub async fn finish(&mut self) -> io::Result<()> {
        if self.chunked {
            self.conn.write_all(LAST_CHUNK).await?;
        }
        self.conn.flush().await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink for Forward<'_, S> {
    async fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.chunked {
            self.scratch.clear();
            chunk_header(bytes.len(), &mut self.scratch);
            self.scratch.extend_from_slice(bytes);
            self.scratch.extend_from_slice(b"\r\n");
            self.conn.write_all(&self.scratch).await?;
        } else {
            self.conn.write_all(bytes).await?;
        }
        if let Some(tee) = &mut self.tee {
            if self.prefix.len() < RV_PREFIX {
                let take = bytes.len().min(RV_PREFIX - self.prefix.len());
                self.prefix.extend_from_slice(&bytes[..take]);
            }
            if let Err(e) = tee.write(bytes).await {
                log::warn!("cache: dropping an entry being written: {e}");
                self.tee = None;
            }
        }
        if let Some(watch) = &mut self.watch {
            watch.feed(bytes);
        }
        Ok(())
    }

    async fn idle(&mut self) -> io::Result<()> {
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
