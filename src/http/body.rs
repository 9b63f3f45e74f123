//! Body decoding as an explicit state machine over a byte buffer.
//!
//! [`BodyDecoder::decode`] looks at the bytes buffered so far and says what
//! they are: a run of body data, a need for more bytes, or the end of the
//! body. It never copies and never allocates, so the caller decides how big
//! the buffer is and when to flush downstream before blocking on a read (this
//! is what makes a watch event reach the client as soon as it arrives).
//!
//! Chunked coding reuses [`httparse::parse_chunk_size`]; trailers are read
//! and discarded, bounded by [`MAX_TRAILER`].

use super::head::Framing;
use super::HttpError;

/// Largest chunk-size line plus trailer section accepted.
pub const MAX_TRAILER: usize = 16 * 1024;

/// What the buffered bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// `buf[start..end]` is body data; consume `end` bytes afterwards.
    Data {
        /// Offset of the data in the buffer.
        start: usize,
        /// Offset one past the data; also how many bytes to consume.
        end: usize,
    },
    /// Framing bytes (chunk sizes, CRLFs) to consume, with no data.
    Skip(usize),
    /// More bytes are needed.
    NeedMore,
    /// The body is complete after consuming this many bytes.
    Done(usize),
}

/// The decoder's position in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `n` bytes of a Content-Length body remain.
    Length(u64),
    /// Expecting a chunk-size line.
    ChunkSize,
    /// `n` bytes of chunk data remain.
    ChunkData(u64),
    /// Expecting the CRLF after chunk data.
    ChunkEnd,
    /// After the last chunk: trailer lines until an empty line.
    Trailer,
    /// Until the connection closes.
    Close,
    /// Finished.
    Done,
}

/// Decodes one message body.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    state: State,
}

impl BodyDecoder {
    /// A decoder for the given framing.
    pub fn new(framing: Framing) -> BodyDecoder {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::Close => State::Close,
        };
        BodyDecoder { state }
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Advances over `buf` (the unconsumed buffered bytes). The caller must
    /// consume what the result says before calling again.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Decoded, HttpError> {
        match self.state {
            State::Done => Ok(Decoded::Done(0)),
            State::Length(remaining) | State::ChunkData(remaining) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let take = buf
                    .len()
                    .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                let left = remaining - take as u64;
                self.state = match (self.state, left) {
                    (State::Length(_), 0) => State::Done,
                    (State::Length(_), n) => State::Length(n),
                    (_, 0) => State::ChunkEnd,
                    (_, n) => State::ChunkData(n),
                };
                Ok(Decoded::Data {
                    start: 0,
                    end: take,
                })
            }
            State::Close => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                Ok(Decoded::Data {
                    start: 0,
                    end: buf.len(),
                })
            }
            State::ChunkSize => self.chunk_size(buf),
            State::ChunkEnd => match buf {
                [b'\r', b'\n', ..] => {
                    self.state = State::ChunkSize;
                    Ok(Decoded::Skip(2))
                }
                [] | [b'\r'] => Ok(Decoded::NeedMore),
                _ => Err(HttpError::BadChunk("missing CRLF after chunk data")),
            },
            State::Trailer => self.trailer(buf),
        }
    }

    /// Tells the decoder the stream ended; an error unless that ends the body.
    pub fn finish_at_eof(&mut self) -> Result<(), HttpError> {
        match self.state {
            State::Close | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(HttpError::UnexpectedEof),
        }
    }

    fn chunk_size(&mut self, buf: &[u8]) -> Result<Decoded, HttpError> {
        match httparse::parse_chunk_size(buf) {
            Ok(httparse::Status::Complete((used, 0))) => {
                self.state = State::Trailer;
                Ok(Decoded::Skip(used))
            }
            Ok(httparse::Status::Complete((used, size))) => {
                self.state = State::ChunkData(size);
                Ok(Decoded::Skip(used))
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_TRAILER => {
                Err(HttpError::BadChunk("chunk-size line too long"))
            }
            Ok(httparse::Status::Partial) => Ok(Decoded::NeedMore),
            Err(_) => Err(HttpError::BadChunk("invalid chunk size")),
        }
    }

    fn trailer(&mut self, buf: &[u8]) -> Result<Decoded, HttpError> {
        // Each trailer line is skipped on its own; the empty line ends the body.
        match buf.windows(2).position(|w| w == b"\r\n") {
            Some(0) => {
                self.state = State::Done;
                Ok(Decoded::Done(2))
            }
            Some(n) => Ok(Decoded::Skip(n + 2)),
            None if buf.len() > MAX_TRAILER => Err(HttpError::BadChunk("trailer line too long")),
            None => Ok(Decoded::NeedMore),
        }
    }
}

/// Writes the chunk header for `len` bytes of data (`len` > 0).
pub fn chunk_header(len: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(format!("{len:x}\r\n").as_bytes());
}

/// The last-chunk marker with no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` fed in pieces of `step` bytes; returns the data and
    /// whether the body completed.
    fn decode_all(
        framing: Framing,
        wire: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, bool), HttpError> {
        let mut dec = BodyDecoder::new(framing);
        let mut buf: Vec<u8> = Vec::new();
        let mut fed = 0;
        let mut data = Vec::new();
        loop {
            match dec.decode(&buf)? {
                Decoded::Data { start, end } => {
                    data.extend_from_slice(&buf[start..end]);
                    buf.drain(..end);
                }
                Decoded::Skip(n) => {
                    buf.drain(..n);
                }
                Decoded::Done(n) => {
                    buf.drain(..n);
                    return Ok((data, true));
                }
                Decoded::NeedMore => {
                    if fed >= wire.len() {
                        return dec.finish_at_eof().map(|_| (data, dec.is_done()));
                    }
                    let end = (fed + step).min(wire.len());
                    buf.extend_from_slice(&wire[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn decode_table() {
        type Case<'a> = (Framing, &'a [u8], Option<&'a [u8]>);
        let cases: &[Case<'_>] = &[
            (Framing::Length(5), b"hello", Some(b"hello")),
            (Framing::Length(5), b"hel", None),
            (Framing::Empty, b"", Some(b"")),
            (Framing::Close, b"until eof", Some(b"until eof")),
            (Framing::Chunked, b"5\r\nhello\r\n0\r\n\r\n", Some(b"hello")),
            (
                Framing::Chunked,
                b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                Some(b"hello world"),
            ),
            (
                Framing::Chunked,
                b"5\r\nhello\r\n0\r\nX-Trailer: v\r\n\r\n",
                Some(b"hello"),
            ),
            (
                Framing::Chunked,
                b"A\r\n0123456789\r\n0\r\n\r\n",
                Some(b"0123456789"),
            ),
            (Framing::Chunked, b"5\r\nhelloXX0\r\n\r\n", None),
            (Framing::Chunked, b"zz\r\nhello\r\n0\r\n\r\n", None),
            (Framing::Chunked, b"5\r\nhello\r\n", None),
            (Framing::Chunked, b"5\r\nhel", None),
        ];
        for (framing, wire, want) in cases {
            for step in [1, 2, 3, 7, 1000] {
                let got = decode_all(*framing, wire, step)
                    .ok()
                    .filter(|(_, done)| *done)
                    .map(|(d, _)| d);
                assert_eq!(
                    got.as_deref(),
                    *want,
                    "{framing:?} {:?} step {step}",
                    String::from_utf8_lossy(wire)
                );
            }
        }
    }

    #[test]
    fn decodes_the_real_watch_fixture() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/fixtures/watch-pods.raw"
        );
        let Ok(wire) = std::fs::read(path) else {
            return; // fixtures live beside the repository; CI has them
        };
        let (data, done) = decode_all(Framing::Chunked, &wire, 4096).expect("fixture decodes");
        assert!(done);
        let events = data
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
        assert!(events >= 3, "{events} events");
        assert!(data.starts_with(b"{\"type\":"));
    }

    #[test]
    fn overlong_chunk_line_is_refused() {
        let mut wire = b"5".to_vec();
        wire.extend(std::iter::repeat_n(b';', MAX_TRAILER + 10));
        assert!(decode_all(Framing::Chunked, &wire, 100_000).is_err());
    }

    #[test]
    fn chunk_headers() {
        let mut out = Vec::new();
        chunk_header(4095, &mut out);
        assert_eq!(out, b"fff\r\n");
    }
}
