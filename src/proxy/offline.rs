//! What is answered when the cloud is gone.
//!
//! - GET/LIST: the cached entry, only if the caller's credential read it
//!   online (403 otherwise). A GET miss is 404 NotFound; a LIST (or
//!   discovery) miss is 503: an empty pod list would make kubelet kill every
//!   pod, so we never invent one. Offline LISTs ignore `limit`/`continue`
//!   (they are not part of the cache key) and return the whole collection.
//! - WATCH: 200, chunked, no events (a BOOKMARK with the cached
//!   resourceVersion if the client allows bookmarks, then every minute),
//!   held until the client's `timeoutSeconds` (or 5 minutes) or until the
//!   upstream is healthy again, then ended cleanly so the client re-lists
//!   through the proxy. Never an instant EOF, which makes clients spin.
//!   A streaming list (`sendInitialEvents=true`) first gets the cached
//!   list's items as ADDED events and the end-of-initial-events BOOKMARK
//!   ([`watchlist`]); with no cached list, 503 as for a LIST.
//! - kubelet's own node Lease renewal: 200 with the request body.
//! - TokenRequest: the cached token of the same service account while it
//!   has not expired; else 503. Never a locally signed token.
//! - Every other write: 503 ServiceUnavailable at once, with no
//!   `Retry-After` (client-go would retry such an answer ten times, so an
//!   offline `kubectl create` would hang for 10 s and then report a rate
//!   limiter instead of the outage; kubelet's own loops already retry).

use std::io;
use std::time::Duration;

use smol::future::FutureExt;
use smol::io::{AsyncRead, AsyncWrite};
use smol::Timer;

use crate::auth::identity::Caller;
use crate::cache::key::CacheKey;
use crate::cache::{Entry, Miss};
use crate::http::body::{push_chunk, LAST_CHUNK};
use crate::http::{pump, BodyDecoder, Conn, Framing, ResponseHead, Sink};
use crate::k8s::reply;
use crate::k8s::request::{Classified, Verb};
use crate::k8s::status::Status;
use crate::metrics::Source;
use crate::proxy::tokens;
use crate::proxy::watchlist::{self, InitialEvents};
use crate::proxy::{Context, Outcome};

/// Longest an offline watch is held without `timeoutSeconds`.
pub const DEFAULT_WATCH_HOLD: Duration = Duration::from_secs(300);
/// How often an offline watch sends a BOOKMARK.
pub const BOOKMARK_EVERY: Duration = Duration::from_secs(60);
/// Largest request body read offline (a Lease or TokenRequest is ~1 KB;
/// 1,000 slow clients cannot make this add up to much).
const MAX_OFFLINE_BODY: usize = 64 * 1024;

/// Whether the request's body is still to be read from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// Not read yet.
    Unread,
    /// Already sent upstream by an attempt that failed: the answer is
    /// given without it, and the connection closes after it.
    Consumed,
}

/// Answers a request without the upstream.
pub async fn answer<S>(
    state: &Context,
    client: &mut Conn<S>,
    head: &crate::http::RequestHead,
    class: &Classified,
    caller: &Caller,
    unread: Body,
) -> io::Result<Outcome>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let body = match unread {
        Body::Unread => read_body(client, head).await,
        Body::Consumed => None,
    };
    let keep_alive = head.keep_alive() && body.is_some();
    let body = body.unwrap_or_default();
    match class.verb {
        Verb::Get | Verb::List | Verb::Discovery => {
            serve_entry(state, client, head, class, caller, keep_alive).await
        }
        Verb::Watch => hold_watch(state, client, head, class, caller).await,
        Verb::Update if is_own_lease_renewal(class, caller) => {
            state.leases.record(head, &body, caller.cn.as_deref());
            renew_lease(client, head, &body, keep_alive).await
        }
        Verb::Create if class.is_token_request() => {
            replay_token(state, client, head, caller, keep_alive).await
        }
        _ => {
            let status = Status::unavailable(format!(
                "lite-apiserver: the cloud kube-apiserver is unreachable (offline); {} {} was not sent and cannot be done offline",
                head.method,
                head.path()
            ));
            refuse(client, &status, keep_alive).await
        }
    }
}

/// kubelet's own Lease renewal: 200 with its body, so the node does not
/// churn while the cloud cannot see it anyway (the newest is sent upstream
/// when the cloud is back: [`super::lease`]).
async fn renew_lease<S>(
    client: &mut Conn<S>,
    head: &crate::http::RequestHead,
    body: &[u8],
    keep_alive: bool,
) -> io::Result<Outcome>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut res = ResponseHead::new(200);
    let content_type = head
        .headers
        .get_str("content-type")
        .unwrap_or("application/json");
    res.headers.set("Content-Type", content_type);
    res.headers.set("Cache-Control", "no-cache, private");
    reply::send(client, res, body).await?;
    Ok(Outcome::local(200, keep_alive))
}

/// A TokenRequest: the cached answer while its token has not expired.
async fn replay_token<S>(
    ctx: &Context,
    client: &mut Conn<S>,
    head: &crate::http::RequestHead,
    caller: &Caller,
    keep_alive: bool,
) -> io::Result<Outcome>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let token = match lookup(ctx, head, caller).await {
        Ok(entry) => tokens::unexpired(entry).await,
        Err(_) => None,
    };
    let Some(bytes) = token else {
        let status = Status::unavailable("lite-apiserver: the cloud is unreachable and no unexpired token is cached for this service account");
        return refuse(client, &status, keep_alive).await;
    };
    let mut res = ResponseHead::new(201);
    res.headers.set("Content-Type", "application/json");
    res.headers.set("Cache-Control", "no-cache, private");
    reply::send(client, res, &bytes).await?;
    Ok(Outcome {
        status: 201,
        source: Source::Cache,
        keep_alive,
    })
}

/// Reads the request body into memory (bounded); `None` if it was too big
/// or broken, in which case the connection must close after the answer.
async fn read_body<S>(client: &mut Conn<S>, head: &crate::http::RequestHead) -> Option<Vec<u8>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let framing = head.body_framing();
    if framing == Framing::Empty {
        return Some(Vec::new());
    }
    let mut sink = Collect(Vec::new());
    let mut dec = BodyDecoder::new(framing);
    client.set_read_timeout(Some(crate::proxy::BODY_TIMEOUT));
    let pumped = pump(&mut dec, client, &mut sink).await;
    client.set_read_timeout(None);
    pumped.ok()?;
    Some(sink.0)
}

/// A sink that keeps a bounded body in memory.
struct Collect(Vec<u8>);

impl Sink for Collect {
    async fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.0.len() + bytes.len() > MAX_OFFLINE_BODY {
            return Err(io::Error::other("request body too large to handle offline"));
        }
        self.0.extend_from_slice(bytes);
        Ok(())
    }
    async fn idle(&mut self) -> io::Result<()> {
        Ok(())
    }
}

async fn refuse<S>(client: &mut Conn<S>, status: &Status, keep_alive: bool) -> io::Result<Outcome>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    reply::send_status(client, status, !keep_alive).await?;
    Ok(Outcome::local(status.code, keep_alive))
}

/// kubelet renewing the Lease of its own node (a client cert of
/// `system:node:NAME` must match the Lease name when there is one).
fn is_own_lease_renewal(class: &Classified, caller: &Caller) -> bool {
    let Some(node) = class.node_lease() else {
        return false;
    };
    caller.agent.as_str() == "kubelet"
        && caller
            .cn
            .as_deref()
            .is_none_or(|cn| cn.strip_prefix("system:node:") == Some(node))
}

/// Looks up the caller's entry and streams it, or says why not.
async fn serve_entry<S>(
    state: &Context,
    client: &mut Conn<S>,
    head: &crate::http::RequestHead,
    class: &Classified,
    caller: &Caller,
    keep_alive: bool,
) -> io::Result<Outcome>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let found = match class.certain {
        true => lookup(state, head, caller).await,
        false => Err(Status::not_found(format!(
            "lite-apiserver (offline): {} cannot be classified with certainty, so it is never cached",
            head.target
        ))),
    };
    match found {
        Ok(entry) => match super::incluster::offline(state, class, caller, &entry) {
            Some(rewrite) => {
                super::incluster::stream_entry(client, head, entry, rewrite, keep_alive).await
            }
            None => stream_entry(client, entry, keep_alive).await,
        },
        Err(status) => {
            let status = match (status.code, class.verb) {
                (404, Verb::List | Verb::Discovery) => Status::unavailable(format!(
                    "lite-apiserver: the cloud is unreachable and {} is not cached for this client",
                    head.path()
                )),
                _ => status,
            };
            refuse(client, &status, keep_alive).await
        }
    }
}

/// The entry for this caller and request, or the Status explaining a miss.
pub async fn lookup(
    state: &Context,
    head: &crate::http::RequestHead,
    caller: &Caller,
) -> Result<Entry, Status> {
    let key = CacheKey::new(
        &caller.agent,
        head.path(),
        head.query(),
        head.headers.get_str("accept"),
    )
    .map_err(|e| Status::bad_request(format!("lite-apiserver: {e}")))?;
    let keys = state.keys.get();
    let credential = caller
        .offline_credential(keys.as_deref(), crate::clock::unix_now())
        .map_err(|why| Status::forbidden(format!("lite-apiserver (offline): {why}")))?;
    match state.store.read(&key).await {
        Ok(entry) if entry.allows(&credential) => Ok(entry),
        Ok(_) => Err(Status::forbidden(format!(
            "lite-apiserver (offline): {} was not read online with this client's credential",
            head.path()
        ))),
        Err(Miss::Absent) | Err(_) => Err(Status::not_found(format!(
            "lite-apiserver (offline): {} is not cached for this client",
            head.path()
        ))),
    }
}

/// Streams an entry's body from disk in pieces.
async fn stream_entry<S>(
    client: &mut Conn<S>,
    mut entry: Entry,
    keep_alive: bool,
) -> io::Result<Outcome>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let status = entry.meta.status;
    let mut res = ResponseHead::new(status);
    res.headers
        .set("Content-Type", entry.meta.content_type.as_bytes());
    res.headers.set("Cache-Control", "no-cache, private");
    res.headers
        .set("Content-Length", entry.meta.length.to_string());
    if !keep_alive {
        res.headers.set("Connection", "close");
    }
    let mut out = Vec::with_capacity(1024);
    res.encode(&mut out);
    let mut sent = 0u64;
    while let Some(piece) = entry.next_piece().await? {
        if out.is_empty() {
            client.write_all(&piece).await?;
        } else {
            out.extend_from_slice(&piece);
            client.write_all(&out).await?;
            out = Vec::new();
        }
        sent += piece.len() as u64;
    }
    if !out.is_empty() {
        client.write_all(&out).await?;
    }
    if sent != entry.meta.length {
        return Err(io::Error::other("cache entry shorter than its header says"));
    }
    client.flush().await?;
    Ok(Outcome {
        status,
        source: Source::Cache,
        keep_alive,
    })
}

/// Holds an offline watch open with no events (bookmarks aside). A
/// streaming list (`sendInitialEvents=true`) first gets the cached list as
/// initial events and the end bookmark; with no cached list it is refused
/// as a LIST would be (503: never an invented empty list).
async fn hold_watch<S>(
    ctx: &Context,
    client: &mut Conn<S>,
    head: &crate::http::RequestHead,
    class: &Classified,
    caller: &Caller,
) -> io::Result<Outcome>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let hold = class
        .query
        .get_str("timeoutSeconds")
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(DEFAULT_WATCH_HOLD, Duration::from_secs);
    let bookmarks = class.query.flag("allowWatchBookmarks");
    let initial = match class.query.flag("sendInitialEvents") {
        true => match initial_events(ctx, head, class, caller).await {
            Ok(initial) => Some(initial),
            Err(status) => return refuse(client, &status, head.keep_alive()).await,
        },
        false => None,
    };
    let mut res = ResponseHead::new(200);
    res.headers.set("Content-Type", "application/json");
    res.headers.set("Cache-Control", "no-cache, private");
    res.headers.set("Transfer-Encoding", "chunked");
    let mut out = Vec::with_capacity(512);
    res.encode(&mut out);
    client.write_all(&out).await?;
    client.flush().await?;
    let bookmark = match (initial, bookmarks) {
        (Some(initial), _) => Some(initial.send(client).await?.bookmark()),
        (None, true) => match lookup(ctx, head, caller).await {
            Ok(entry) => watchlist::bookmark_of(entry).await,
            Err(_) => None,
        },
        (None, false) => None,
    }
    .filter(|_| bookmarks);
    ctx.metrics.watch_opened();
    let ended = hold_open(ctx, client, bookmark.as_deref(), hold).await;
    ctx.metrics.watch_closed();
    ended?;
    client.write_all(LAST_CHUNK).await?;
    client.flush().await?;
    Ok(Outcome {
        status: 200,
        source: Source::Cache,
        keep_alive: head.keep_alive(),
    })
}

/// The cached list a streaming list is answered with, or the 503 of a miss.
async fn initial_events(
    ctx: &Context,
    head: &crate::http::RequestHead,
    class: &Classified,
    caller: &Caller,
) -> Result<InitialEvents, Status> {
    let miss = || {
        Status::unavailable(format!(
            "lite-apiserver: the cloud is unreachable and {} is not cached for this client",
            head.path()
        ))
    };
    if !class.certain {
        return Err(miss());
    }
    let entry = lookup(ctx, head, caller)
        .await
        .map_err(|status| match status.code {
            404 => miss(),
            _ => status,
        })?;
    let rewrite = super::incluster::offline(ctx, class, caller, &entry);
    let mut initial = InitialEvents::open(entry).await.ok_or_else(miss)?;
    initial.rewrite = rewrite;
    Ok(initial)
}

/// Keeps an offline watch open (a bookmark now and then) until `hold`
/// passes or the cloud is back. When it is back, held watches end spread
/// over `--resume-spread`, so a fleet of nodes does not re-list and
/// re-watch in the same second.
async fn hold_open<S>(
    ctx: &Context,
    client: &mut Conn<S>,
    bookmark: Option<&[u8]>,
    hold: Duration,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let held = async {
        loop {
            if let Some(event) = bookmark {
                let mut chunk = Vec::with_capacity(event.len() + 16);
                push_chunk(event, &mut chunk);
                client.write_all(&chunk).await?;
                client.flush().await?;
            }
            Timer::after(BOOKMARK_EVERY).await;
        }
    };
    held.or(async {
        Timer::after(hold).await;
        Ok(())
    })
    .or(async {
        ctx.upstream.health.wait_online().await;
        Timer::after(crate::clock::random_within(ctx.resume_spread)).await;
        Ok(())
    })
    .await
}
