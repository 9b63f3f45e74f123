//! A buffered connection: heads read under limits, bodies pumped in pieces.
//!
//! The read buffer starts small ([`INITIAL_BUFFER`]) and only grows while a
//! head is being read, up to [`MAX_HEAD`]; bodies always flow through it in
//! pieces, so a 100 MB LIST costs the same memory as a 1 KB one.

use std::future::Future;
use std::io;
use std::time::Duration;

use smol::future::FutureExt;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::body::{BodyDecoder, Decoded};
use super::head::{Parsed, MAX_HEAD};
use super::HttpError;

/// Read buffer size for bodies (and the first try at a head).
pub const INITIAL_BUFFER: usize = 8 * 1024;

/// A transport with a read buffer in front of it.
#[derive(Debug)]
pub struct Conn<S> {
    io: S,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    read_timeout: Option<Duration>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Wraps a transport.
    pub fn new(io: S) -> Conn<S> {
        Conn {
            io,
            buf: vec![0; INITIAL_BUFFER],
            start: 0,
            end: 0,
            read_timeout: None,
        }
    }

    /// Bounds how long one read may wait for a byte (`None`: unbounded).
    /// A read that times out fails with [`io::ErrorKind::TimedOut`].
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    /// Bytes read but not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Marks `n` buffered bytes as used.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more bytes into the buffer; `Ok(0)` at end of stream.
    pub async fn fill(&mut self) -> io::Result<usize> {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let grown = (self.buf.len() * 2).min(MAX_HEAD + INITIAL_BUFFER);
                if grown == self.buf.len() {
                    return Err(io::Error::other("read buffer full"));
                }
                self.buf.resize(grown, 0);
            }
        }
        let read = self.io.read(&mut self.buf[self.end..]);
        let n = match self.read_timeout {
            None => read.await?,
            Some(limit) => {
                read.or(async {
                    crate::timeout::sleep(limit).await;
                    Err(io::ErrorKind::TimedOut.into())
                })
                .await?
            }
        };
        self.end += n;
        Ok(n)
    }

    /// Reads one head. `Ok(None)` if the peer closed cleanly before sending
    /// any byte of it (the end of a keep-alive connection).
    ///
    /// The head is parsed again only when new bytes bring a line end (or
    /// reach the size limit): a client dribbling a 64 KiB head one byte at a
    /// time costs one parse per line, not one per byte.
    pub async fn read_head<T>(
        &mut self,
        parse: impl Fn(&[u8]) -> Result<Parsed<T>, HttpError>,
    ) -> Result<Option<T>, HttpError> {
        let mut fresh = 0;
        loop {
            let buffered = self.buffered();
            let worth = fresh == 0
                || buffered[buffered.len() - fresh..].contains(&b'\n')
                || buffered.len() >= MAX_HEAD;
            if !buffered.is_empty() && worth {
                if let Parsed::Complete(head, used) = parse(buffered)? {
                    self.consume(used);
                    self.shrink();
                    return Ok(Some(head));
                }
                if self.buffered().len() >= MAX_HEAD {
                    return Err(HttpError::HeadTooLarge);
                }
            }
            fresh = self.fill().await?;
            if fresh == 0 {
                return if self.buffered().is_empty() {
                    Ok(None)
                } else {
                    Err(HttpError::UnexpectedEof)
                };
            }
        }
    }

    /// Gives back memory a large head needed, keeping buffered bytes.
    fn shrink(&mut self) {
        if self.buf.len() > INITIAL_BUFFER && self.end - self.start <= INITIAL_BUFFER {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            self.buf.truncate(INITIAL_BUFFER);
            self.buf.shrink_to_fit();
        }
    }

    /// Writes all of `bytes` to the transport (not flushed).
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.io.write_all(bytes).await
    }

    /// Flushes the transport.
    pub async fn flush(&mut self) -> io::Result<()> {
        self.io.flush().await
    }

    /// Closes the write side (TLS close_notify for TLS transports).
    pub async fn close(&mut self) -> io::Result<()> {
        self.io.close().await
    }

    /// The transport.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The transport, mutably (for byte copying after an upgrade, once the
    /// buffered bytes were taken).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// The transport and any bytes read past the last message.
    pub fn into_parts(self) -> (S, Vec<u8>) {
        let rest = self.buf[self.start..self.end].to_vec();
        (self.io, rest)
    }
}

/// Where a pumped body goes.
pub trait Sink {
    /// One piece of body data, in order.
    fn data(&mut self, bytes: &[u8]) -> impl Future<Output = io::Result<()>>;
    /// The source is about to wait for more bytes: flush what was written so
    /// the receiver sees it now (a watch event must not sit in a buffer).
    fn idle(&mut self) -> impl Future<Output = io::Result<()>>;
}

/// Why pumping a body stopped early.
#[derive(Debug)]
pub enum PumpError {
    /// Reading or decoding the source failed.
    Source(HttpError),
    /// Writing to the sink failed.
    Sink(io::Error),
}

impl std::fmt::Display for PumpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PumpError::Source(e) => write!(f, "reading body: {e}"),
            PumpError::Sink(e) => write!(f, "writing body: {e}"),
        }
    }
}

impl std::error::Error for PumpError {}

/// Moves one body from `src` into `sink`, piece by piece, until `dec` says
/// it is complete (or, for close-delimited bodies, until end of stream).
pub async fn pump<S, K>(
    dec: &mut BodyDecoder,
    src: &mut Conn<S>,
    sink: &mut K,
) -> Result<u64, PumpError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    K: Sink,
{
    let mut total = 0u64;
    loop {
        match dec.decode(src.buffered()).map_err(PumpError::Source)? {
            Decoded::Data { start, end } => {
                sink.data(&src.buffered()[start..end])
                    .await
                    .map_err(PumpError::Sink)?;
                total += (end - start) as u64;
                src.consume(end);
            }
            Decoded::Skip(n) => src.consume(n),
            Decoded::Done(n) => {
                src.consume(n);
                return Ok(total);
            }
            Decoded::NeedMore => {
                sink.idle().await.map_err(PumpError::Sink)?;
                let n = src.fill().await.map_err(|e| PumpError::Source(e.into()))?;
                if n == 0 {
                    dec.finish_at_eof().map_err(PumpError::Source)?;
                    return Ok(total);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{Framing, RequestHead};

    /// A sink that records pieces and flushes.
    #[derive(Default)]
    struct Record {
        pieces: Vec<Vec<u8>>,
        idles: usize,
    }

    impl Sink for Record {
        async fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
            self.pieces.push(bytes.to_vec());
            Ok(())
        }
        async fn idle(&mut self) -> io::Result<()> {
            self.idles += 1;
            Ok(())
        }
    }

    fn conn(bytes: &[u8]) -> Conn<smol::io::Cursor<Vec<u8>>> {
        Conn::new(smol::io::Cursor::new(bytes.to_vec()))
    }

    #[test]
    fn keep_alive_requests_with_bodies() {
        smol::block_on(async {
            let wire = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n0\r\n\r\n";
            let mut c = conn(wire);
            let mut bodies = Vec::new();
            while let Some(head) = c.read_head(RequestHead::parse).await.unwrap() {
                let mut dec = BodyDecoder::new(head.framing().unwrap());
                let mut rec = Record::default();
                pump(&mut dec, &mut c, &mut rec).await.unwrap();
                bodies.push((head.target, rec.pieces.concat()));
            }
            assert_eq!(
                bodies,
                [
                    ("/a".to_owned(), b"abc".to_vec()),
                    ("/b".to_owned(), b"xy".to_vec())
                ]
            );
        });
    }

    #[test]
    fn oversize_head_is_refused() {
        smol::block_on(async {
            let mut wire = b"GET / HTTP/1.1\r\nX: ".to_vec();
            wire.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
            let mut c = conn(&wire);
            assert!(matches!(
                c.read_head(RequestHead::parse).await,
                Err(HttpError::HeadTooLarge)
            ));
        });
    }

    #[test]
    fn eof_mid_head_and_mid_body() {
        smol::block_on(async {
            let mut c = conn(b"GET / HTTP/1.1\r\nHost");
            assert!(matches!(
                c.read_head(RequestHead::parse).await,
                Err(HttpError::UnexpectedEof)
            ));
            let mut c = conn(b"abc");
            let mut dec = BodyDecoder::new(Framing::Length(10));
            let r = pump(&mut dec, &mut c, &mut Record::default()).await;
            assert!(matches!(
                r,
                Err(PumpError::Source(HttpError::UnexpectedEof))
            ));
            let mut c = conn(b"");
            assert!(c.read_head(RequestHead::parse).await.unwrap().is_none());
        });
    }

    #[test]
    fn large_body_flows_through_a_small_buffer() {
        smol::block_on(async {
            let body = vec![b'z'; 1 << 20];
            let mut c = conn(&body);
            let mut dec = BodyDecoder::new(Framing::Length(body.len() as u64));
            let mut rec = Record::default();
            assert_eq!(pump(&mut dec, &mut c, &mut rec).await.unwrap(), 1 << 20);
            assert!(rec.pieces.iter().all(|p| p.len() <= INITIAL_BUFFER));
            assert_eq!(c.buf.len(), INITIAL_BUFFER);
        });
    }
}
