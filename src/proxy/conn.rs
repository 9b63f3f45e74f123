//! One client connection, request by request: read a head (under time
//! limits), classify it as the apiserver would, identify the caller, hand
//! it to [`crate::proxy::online::route`], log one line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::future::FutureExt;
use smol::io::{AsyncRead, AsyncWrite};

use super::{incluster, online, Context, Outcome, Peer};
use crate::auth::identity::Caller;
use crate::http::{Conn, HttpError, RequestHead};
use crate::k8s::reply;
use crate::k8s::request::Classified;
use crate::metrics::Source;

/// A keep-alive connection may sit idle this long between requests.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Once a request started arriving, its head must be complete within this.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves every request of one client connection.
pub async fn serve_connection<S>(ctx: Arc<Context>, mut client: Conn<S>, peer: Peer)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let head = match read_request_head(&mut client).await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(e) => {
                reply::refuse_malformed(&mut client, &e).await;
                log::debug!("client connection: {e}");
                return;
            }
        };
        let outcome = handle(&ctx, &mut client, head, &peer).await;
        if !outcome.keep_alive {
            let _ = client.close().await;
            return;
        }
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
                crate::timeout::sleep(IDLE_TIMEOUT).await;
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
            crate::timeout::sleep(HEAD_TIMEOUT).await;
            Err(HttpError::Timeout)
        })
        .await
}

/// Handles one request and logs it.
async fn handle<S>(
    ctx: &Context,
    client: &mut Conn<S>,
    mut head: RequestHead,
    peer: &Peer,
) -> Outcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let class = Classified::new(&head.method, head.path(), head.query(), head.is_upgrade());
    let caller = ctx
        .cache_agents
        .with(|agents| Caller::new(&head, peer.cn.as_deref(), agents))
        .with_socket(peer.socket.clone());
    if caller.cached {
        online::ask_for_cacheable(&mut head);
    }
    incluster::prepare(ctx, &class, &caller, &mut head);
    let outcome = match online::route(ctx, client, &head, &class, &caller).await {
        Ok(outcome) => outcome,
        Err(e) => {
            log::debug!("{} {} {}: {e}", caller.agent, head.method, head.target);
            Outcome::broken(Source::Upstream)
        }
    };
    if outcome.source == Source::Upstream && (200..300).contains(&outcome.status) {
        if let Some(token) = caller
            .token
            .as_deref()
            .filter(|t| crate::auth::jwt::looks_like_jwt(t))
        {
            ctx.keys.learn_from(&ctx.upstream, token).await;
        }
    }
    ctx.metrics
        .record_request(class.verb, outcome.status, outcome.source);
    // One line per request at debug (`-v`): at info a gateway's journal
    // (on flash) would get a line per kubelet request, and formatting and
    // writing it cost as much CPU as proxying the request.
    log::debug!(
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
