//! The request reading path as a pure function, for fuzzing and
//! differential tests (`tests/http_fuzz.rs`, `tests/fuzz/`).
//!
//! [`split_requests`] runs exactly what the proxy runs on a client
//! connection — [`Conn::read_head`] with [`RequestHead::parse`],
//! [`RequestHead::framing`], then [`BodyDecoder`] + [`pump`] — over an
//! in-memory stream, and reports where it found each request to end. It is a
//! thin adapter on purpose: when the reading path changes, only this file
//! follows it. Not part of the crate's API.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use smol::io::{AsyncRead, AsyncWrite};

use super::{pump, BodyDecoder, Conn, HttpError, PumpError, RequestHead, Sink};

/// One request as the proxy would forward it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Method as received.
    pub method: String,
    /// Target as forwarded (origin-form).
    pub target: String,
    /// HTTP minor version (0 or 1).
    pub minor: u8,
    /// The decoded body bytes.
    pub body: Vec<u8>,
}

/// How the stream ended after the last complete request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Cleanly, between requests.
    Eof,
    /// In the middle of a head or a body (the proxy closes silently).
    Truncated,
    /// The proxy refuses the next request with this status, then closes.
    Refused(u16),
}

/// Reads every request in `input`, delivered in pieces whose sizes are
/// derived from the input itself (so a fuzzer explores them too).
pub fn split_requests(input: &[u8]) -> (Vec<Split>, End) {
    let seed = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let pieces: Vec<usize> = (0..8)
        .map(|i| 1 + ((seed >> (i * 8)) & 0xff) as usize * 37)
        .collect();
    split_requests_in_pieces(input, &pieces)
}

/// Reads every request in `input`, which arrives in reads of
/// `pieces[0]`, `pieces[1]`, ... bytes (cycled; 0 counts as 1), the way a
/// socket splits a stream arbitrarily. The result must not depend on
/// `pieces`.
pub fn split_requests_in_pieces(input: &[u8], pieces: &[usize]) -> (Vec<Split>, End) {
    let stream = Pieces {
        input,
        pos: 0,
        pieces,
        next: 0,
    };
    smol::block_on(read_all(Conn::new(stream)))
}

async fn read_all(mut conn: Conn<Pieces<'_>>) -> (Vec<Split>, End) {
    let mut splits = Vec::new();
    loop {
        let head = match conn.read_head(RequestHead::parse).await {
            Ok(Some(head)) => head,
            Ok(None) => return (splits, End::Eof),
            Err(e) => return (splits, end_of(&e)),
        };
        let framing = match head.framing() {
            Ok(f) => f,
            Err(e) => return (splits, end_of(&e)),
        };
        let mut dec = BodyDecoder::new(framing);
        let mut body = Collect(Vec::new());
        if let Err(e) = pump(&mut dec, &mut conn, &mut body).await {
            let end = match e {
                PumpError::Source(e) => end_of(&e),
                PumpError::Sink(_) => End::Truncated,
            };
            return (splits, end);
        }
        splits.push(Split {
            method: head.method,
            target: head.target,
            minor: head.minor,
            body: body.0,
        });
    }
}

/// What the proxy does on this error: answer with a status, or close.
fn end_of(e: &HttpError) -> End {
    e.client_status().map_or(End::Truncated, End::Refused)
}

/// A sink that keeps the body.
struct Collect(Vec<u8>);

impl Sink for Collect {
    async fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
    async fn idle(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An in-memory stream that hands out its bytes in the given piece sizes;
/// writes are discarded.
struct Pieces<'a> {
    input: &'a [u8],
    pos: usize,
    pieces: &'a [usize],
    next: usize,
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let piece = match this.pieces {
            [] => usize::MAX,
            p => p[this.next % p.len()].max(1),
        };
        this.next = this.next.wrapping_add(1);
        let n = piece.min(buf.len()).min(this.input.len() - this.pos);
        buf[..n].copy_from_slice(&this.input[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Pieces<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
