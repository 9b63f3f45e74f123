//! InClusterConfig pods, the Service side: with `--incluster-address`,
//! kubelet's answers about Services show the `default/kubernetes` Service
//! at that address ([`crate::k8s::masterservice`]), online and from the
//! cache, so every pod kubelet starts gets `KUBERNETES_SERVICE_HOST`/
//! `_PORT` pointing at lite-apiserver.
//!
//! Online, the relayed body is rewritten before it is split to the client,
//! the cache tee and the watch tee, so kubelet's cached lists (and the
//! lists patched from its watch events) keep the rewritten form and an
//! offline restart injects the same variables. Offline, a cached copy is
//! rewritten again on its way out (idempotent), so entries stored before
//! the flag was set, or with another address, are served right.
//!
//! The rewrite changes lengths: an answer is sent chunked (HTTP/1.1) or
//! delimited by closing the connection (HTTP/1.0).

use std::io;
use std::net::SocketAddr;

use smol::io::{AsyncRead, AsyncWrite};

use super::{online, Context, Outcome};
use crate::auth::identity::Caller;
use crate::cache::Entry;
use crate::http::body::{push_chunk, LAST_CHUNK};
use crate::http::{Conn, ForwardHead, Framing, RequestHead, ResponseHead};
use crate::k8s::masterservice::{self, Rewriter};
use crate::k8s::request::Classified;
use crate::metrics::Source;

/// Shapes kubelet's request about Services so that the answer is one the
/// rewriter reads: JSON (protobuf removed from Accept, also when kubelet is
/// not a cached agent: kubelet asks for protobuf first) and uncompressed
/// (Accept-Encoding removed: kube-apiserver gzips answers over 128 KiB,
/// which would pass unrewritten).
pub fn prepare(ctx: &Context, class: &Classified, caller: &Caller, head: &mut RequestHead) {
    if ctx.incluster.is_some() && masterservice::applies(class, caller.agent.as_str()) {
        online::ask_for_cacheable(head);
    }
}

/// The rewriter for a relayed answer, if kubelet is to see it rewritten.
pub fn online(
    ctx: &Context,
    class: &Classified,
    caller: &Caller,
    response: &ForwardHead,
) -> Option<Rewriter> {
    if !response.is_json() {
        return None;
    }
    let content_type = response.content_type().unwrap_or("");
    wanted(ctx.incluster, class, caller, response.status, content_type)
}

/// The rewriter for a cached answer, if kubelet is to see it rewritten.
pub fn offline(
    ctx: &Context,
    class: &Classified,
    caller: &Caller,
    entry: &Entry,
) -> Option<Rewriter> {
    let meta = &entry.meta;
    wanted(
        ctx.incluster,
        class,
        caller,
        meta.status,
        &meta.content_type,
    )
}

fn wanted(
    incluster: Option<SocketAddr>,
    class: &Classified,
    caller: &Caller,
    status: u16,
    content_type: &str,
) -> Option<Rewriter> {
    let addr = incluster?;
    (status == 200
        && masterservice::applies(class, caller.agent.as_str())
        && masterservice::rewritable(content_type))
    .then(|| Rewriter::new(addr))
}

/// The upstream framing as the client side must treat it: a body whose
/// length the rewrite may change is re-framed like a close-delimited one
/// (chunked for HTTP/1.1 clients).
pub fn client_side(up: Framing, rewriting: bool) -> Framing {
    match up {
        Framing::Length(_) if rewriting => Framing::Close,
        other => other,
    }
}

/// Removes `Content-Length` lines from a head being forwarded (its body
/// is re-framed).
pub fn strip_content_length(head: &mut Vec<u8>) {
    let mut kept = Vec::with_capacity(head.len());
    for line in head.split_inclusive(|&b| b == b'\n') {
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        if !name.eq_ignore_ascii_case(b"content-length") {
            kept.extend_from_slice(line);
        }
    }
    *head = kept;
}

/// Streams a cached entry through `rewrite`: chunked to an HTTP/1.1
/// client, close-delimited to an HTTP/1.0 one.
pub async fn stream_entry<S>(
    client: &mut Conn<S>,
    head: &RequestHead,
    mut entry: Entry,
    mut rewrite: Rewriter,
    keep_alive: bool,
) -> io::Result<Outcome>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let chunked = head.minor >= 1;
    let keep_alive = keep_alive && chunked;
    let status = entry.meta.status;
    let mut res = ResponseHead::new(status);
    res.headers
        .set("Content-Type", entry.meta.content_type.as_bytes());
    res.headers.set("Cache-Control", "no-cache, private");
    match chunked {
        true => res.headers.set("Transfer-Encoding", "chunked"),
        false => res.headers.set("Connection", "close"),
    }
    if chunked && !keep_alive {
        res.headers.set("Connection", "close");
    }
    let mut out = Vec::with_capacity(1024);
    res.encode(&mut out);
    let mut sent = 0u64;
    let mut piece_out = Vec::new();
    while let Some(piece) = entry.next_piece().await? {
        sent += piece.len() as u64;
        rewrite.push(&piece, &mut piece_out);
        frame(&mut out, &piece_out, chunked);
        piece_out.clear();
        client.write_all(&out).await?;
        out.clear();
    }
    if sent != entry.meta.length {
        return Err(io::Error::other("cache entry shorter than its header says"));
    }
    rewrite.finish(&mut piece_out);
    frame(&mut out, &piece_out, chunked);
    if chunked {
        out.extend_from_slice(LAST_CHUNK);
    }
    client.write_all(&out).await?;
    client.flush().await?;
    log_stats(&rewrite);
    Ok(Outcome {
        status,
        source: Source::Cache,
        keep_alive,
    })
}

/// Appends `data` to `out`, as a chunk if `chunked` (nothing if empty: an
/// empty chunk would end the body).
fn frame(out: &mut Vec<u8>, data: &[u8], chunked: bool) {
    match chunked {
        true => push_chunk(data, out),
        false => out.extend_from_slice(data),
    }
}

/// One debug line per answer in which the Service was shown rewritten.
pub fn log_stats(rewrite: &Rewriter) {
    let stats = rewrite.stats();
    if stats.rewritten > 0 {
        log::debug!(
            "kubelet shown default/kubernetes at --incluster-address ({} time(s))",
            stats.rewritten
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_lines_are_removed_and_nothing_else() {
        let mut head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncontent-length: 12\r\nAudit-Id: a\r\nContent-Length-X: 1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        strip_content_length(&mut head);
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nAudit-Id: a\r\nContent-Length-X: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn only_lengths_are_reframed() {
        assert_eq!(client_side(Framing::Length(5), true), Framing::Close);
        assert_eq!(client_side(Framing::Length(5), false), Framing::Length(5));
        assert_eq!(client_side(Framing::Chunked, true), Framing::Chunked);
        assert_eq!(client_side(Framing::Empty, true), Framing::Empty);
    }

    #[test]
    fn empty_pieces_are_not_chunks() {
        let mut out = Vec::new();
        frame(&mut out, b"", true);
        frame(&mut out, b"abc", true);
        frame(&mut out, b"de", false);
        assert_eq!(out, b"3\r\nabc\r\nde");
    }
}
