//! Body decoding as an explicit state machine over a byte buffer.
//!
//! [`BodyDecoder::decode`] looks at the bytes buffered so far and says what
//! they are: a run of body data, a need for more bytes, or the end of the
//! body. It never copies and never allocates, so the caller decides how big
//! the buffer is and when to flush downstream before blocking on a read (this
//! is what makes a watch event reach the client as soon as it arrives).
//!
//! Chunked coding is read strictly by [`chunk_line`] (RFC 9112 7.1, line
//! ends CRLF only): `httparse::parse_chunk_size` accepts any byte, a bare LF
//! included, inside an extension and a space before the CRLF, which is
//! exactly the kind of slack two readers disagree on. Extensions are
//! ignored; trailer fields are checked and discarded, bounded by
//! [`MAX_TRAILER`].

use super::head::{is_tchar, Framing};
use super::HttpError;

/// Largest trailer section accepted (field lines and the final CRLF).
pub const MAX_TRAILER: usize = 16 * 1024;
/// Largest chunk-size line (size and extensions, without the CRLF) accepted.
pub const MAX_CHUNK_LINE: usize = 4 * 1024;

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
    /// After the last chunk: trailer lines until an empty line; the
    /// bytes of trailer section read so far.
    Trailer(usize),
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
            State::Trailer(seen) => self.trailer(buf, seen),
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
        match chunk_line(buf)? {
            Some((used, 0)) => {
                self.state = State::Trailer(0);
                Ok(Decoded::Skip(used))
            }
            Some((used, size)) => {
                self.state = State::ChunkData(size);
                Ok(Decoded::Skip(used))
            }
            None => Ok(Decoded::NeedMore),
        }
    }

    fn trailer(&mut self, buf: &[u8], seen: usize) -> Result<Decoded, HttpError> {
        // Each trailer line is checked and skipped on its own; the empty
        // line ends the body.
        let Some(cr) = buf.iter().position(|&b| b == b'\r' || b == b'\n') else {
            return if seen + buf.len() > MAX_TRAILER {
                Err(HttpError::BadChunk("trailer section too long"))
            } else {
                Ok(Decoded::NeedMore)
            };
        };
        if seen + cr + 2 > MAX_TRAILER {
            return Err(HttpError::BadChunk("trailer section too long"));
        }
        match buf.get(cr..cr + 2) {
            Some(b"\r\n") => {}
            None if buf[cr] == b'\r' => return Ok(Decoded::NeedMore),
            _ => return Err(HttpError::BadChunk("trailer line does not end in CRLF")),
        }
        if cr == 0 {
            self.state = State::Done;
            return Ok(Decoded::Done(2));
        }
        if !is_field_line(&buf[..cr]) {
            return Err(HttpError::BadChunk("malformed trailer field"));
        }
        self.state = State::Trailer(seen + cr + 2);
        Ok(Decoded::Skip(cr + 2))
    }
}

/// A trailer field line: `token ":" OWS value OWS`, no CTL but HTAB.
fn is_field_line(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    colon > 0
        && line[..colon].iter().all(|&b| is_tchar(b))
        && line[colon + 1..]
            .iter()
            .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// Where [`chunk_line`] is inside a chunk-size line.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Line {
    /// In the hex digits.
    Size,
    /// After whitespace: only `;` may follow.
    Space,
    /// After `;` (and whitespace): an extension name must follow.
    ExtStart,
    /// In an extension name.
    Name,
    /// After an extension name and whitespace: `=` or `;`.
    NameSpace,
    /// After `=` (and whitespace): a token or a quoted string.
    ValueStart,
    /// In a token value.
    Token,
    /// In a quoted string; `true` right after a backslash.
    Quoted(bool),
    /// Right after a closing quote.
    Closed,
    /// After CR: LF must follow.
    Cr,
}

/// Reads one chunk-size line (`1*HEXDIG *( BWS ";" BWS name [ BWS "="
/// BWS value ] ) CRLF`): `Ok(Some((bytes used, size)))`, `Ok(None)` when
/// more bytes are needed, or an error at the first byte out of place.
pub fn chunk_line(buf: &[u8]) -> Result<Option<(usize, u64)>, HttpError> {
    let bad = |why| Err(HttpError::BadChunk(why));
    let mut state = Line::Size;
    let mut size: u64 = 0;
    let mut digits = 0usize;
    for (i, &b) in buf.iter().enumerate().take(MAX_CHUNK_LINE + 2) {
        if i >= MAX_CHUNK_LINE && state != Line::Cr && b != b'\r' {
            return bad("chunk-size line too long");
        }
        let ws = b == b' ' || b == b'\t';
        state = match (state, b) {
            (Line::Size, _) if b.is_ascii_hexdigit() => {
                let digit = u64::from((b as char).to_digit(16).unwrap_or(0) as u8);
                size = match size.checked_mul(16).and_then(|s| s.checked_add(digit)) {
                    Some(s) => s,
                    None => return bad("chunk size overflows"),
                };
                digits += 1;
                Line::Size
            }
            (Line::Size, _) if digits == 0 => return bad("chunk size is not hexadecimal"),
            (Line::Cr, b'\n') => return Ok(Some((i + 1, size))),
            (Line::Cr, _) => return bad("chunk-size line does not end in CRLF"),
            (Line::Quoted(true), _) if b == b'\t' || b >= 0x20 && b != 0x7f => Line::Quoted(false),
            (Line::Quoted(false), b'"') => Line::Closed,
            (Line::Quoted(false), b'\\') => Line::Quoted(true),
            (Line::Quoted(false), _) if b == b'\t' || b >= 0x20 && b != 0x7f => Line::Quoted(false),
            (Line::Quoted(_), _) => return bad("bad quoted chunk extension"),
            (Line::Size | Line::Name | Line::Token | Line::Closed, b'\r') => Line::Cr,
            (
                Line::Size
                | Line::Space
                | Line::Name
                | Line::NameSpace
                | Line::Token
                | Line::Closed,
                b';',
            ) => Line::ExtStart,
            (Line::Size | Line::Token | Line::Closed, _) if ws => Line::Space,
            (Line::Space, _) if ws => Line::Space,
            (Line::ExtStart, _) if ws => Line::ExtStart,
            (Line::ExtStart | Line::Name, _) if is_tchar(b) => Line::Name,
            (Line::Name | Line::NameSpace, _) if ws => Line::NameSpace,
            (Line::Name | Line::NameSpace, b'=') => Line::ValueStart,
            (Line::ValueStart, _) if ws => Line::ValueStart,
            (Line::ValueStart, b'"') => Line::Quoted(false),
            (Line::ValueStart | Line::Token, _) if is_tchar(b) => Line::Token,
            (_, b'\n') => return bad("chunk-size line ends in a bare LF"),
            _ => return bad("malformed chunk-size line"),
        };
    }
    Ok(None)
}

/// Writes the chunk header for `len` bytes of data (`len` > 0).
pub fn chunk_header(len: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(format!("{len:x}\r\n").as_bytes());
}

/// Appends `data` as one chunk; nothing when it is empty (an empty chunk
/// would end the body).
pub fn push_chunk(data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    chunk_header(data.len(), out);
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
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
    fn strict_chunked_table() {
        let cases: &[(&[u8], Option<&[u8]>)] = &[
            (b"5;a=b\r\nhello\r\n0\r\n\r\n", Some(b"hello")),
            (b"5 ;a\r\nhello\r\n0\r\n\r\n", Some(b"hello")),
            (b"5; a = \"q;\\\"x\"\r\nhello\r\n0\r\n\r\n", Some(b"hello")),
            (b"5;a;b=c\r\nhello\r\n000;z\r\n\r\n", Some(b"hello")),
            (b"5\r\nhello\r\n0\r\nA: b\r\nC:\td\r\n\r\n", Some(b"hello")),
            (b"0000000000000000005\r\nhello\r\n0\r\n\r\n", Some(b"hello")),
            // slack httparse accepts and a strict reader must not
            (b"5 \r\nhello\r\n0\r\n\r\n", None),
            (b"5;a \r\nhello\r\n0\r\n\r\n", None),
            (b"5;a\nb\r\nhello\r\n0\r\n\r\n", None),
            (b"5\nhello\r\n0\r\n\r\n", None),
            (b"5\r\nhello\n0\r\n\r\n", None),
            (b"5\r\nhello\r\n0\n\r\n", None),
            (b"5\r\nhello\r\n0\r\n\n", None),
            (b"5\r\nhello\r\n0\r\nBad Field: x\r\n\r\n", None),
            (b"5\r\nhello\r\n0\r\nA: b\nc\r\n\r\n", None),
            (b"5\rhello\r\n0\r\n\r\n", None),
            (b";a\r\n0\r\n\r\n", None),
            (b"+5\r\nhello\r\n0\r\n\r\n", None),
            (b"0x5\r\nhello\r\n0\r\n\r\n", None),
            (b"10000000000000000\r\nhello\r\n0\r\n\r\n", None),
            (b"5;\"a\"\r\nhello\r\n0\r\n\r\n", None),
            (b"5;a=\"x\r\nhello\r\n0\r\n\r\n", None),
        ];
        for (wire, want) in cases {
            for step in [1, 3, 1000] {
                let got = decode_all(Framing::Chunked, wire, step)
                    .ok()
                    .filter(|(_, done)| *done)
                    .map(|(d, _)| d);
                assert_eq!(
                    got.as_deref(),
                    *want,
                    "{:?} step {step}",
                    String::from_utf8_lossy(wire)
                );
            }
        }
        let mut huge_trailer = b"0\r\n".to_vec();
        for i in 0..2000 {
            huge_trailer.extend_from_slice(format!("X-{i}: vvvv\r\n").as_bytes());
        }
        huge_trailer.extend_from_slice(b"\r\n");
        assert!(decode_all(Framing::Chunked, &huge_trailer, 100_000).is_err());
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
        let mut out = Vec::new();
        push_chunk(b"", &mut out);
        push_chunk(b"abc", &mut out);
        assert_eq!(out, b"3\r\nabc\r\n", "an empty piece is no chunk");
    }
}
