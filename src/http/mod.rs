//! HTTP/1.1 on httparse: heads, body framing, chunked coding, streaming.
//!
//! - [`head`]: request/response heads, header look-ups, hop-by-hop rules.
//! - [`body`]: the body decoder state machine (Content-Length, chunked, close).
//! - [`forward`]: a response head parsed for forwarding, without owned fields.
//! - [`framing`]: which fields frame a body, which are hop-by-hop.
//! - [`conn`]: a buffered connection that reads heads under limits and pumps
//!   bodies into a [`conn::Sink`] with bounded memory.
//! - [`upgrade`]: byte copying both ways after `101 Switching Protocols`.

pub mod body;
pub mod conn;
pub mod forward;
pub mod framing;
#[doc(hidden)]
pub mod fuzzing;
pub mod head;
pub mod upgrade;

pub use body::{BodyDecoder, Decoded};
pub use conn::{pump, Conn, PumpError, Sink};
pub use forward::ForwardHead;
pub use head::{Framing, Header, Headers, Parsed, RequestHead, ResponseHead};

use std::fmt;
use std::io;

/// Why a message could not be read.
#[derive(Debug)]
#[non_exhaustive]
pub enum HttpError {
    /// The transport failed.
    Io(io::Error),
    /// httparse refused the head.
    Malformed(httparse::Error),
    /// More than [`head::MAX_HEADERS`] headers.
    TooManyHeaders,
    /// The head is longer than [`head::MAX_HEAD`].
    HeadTooLarge,
    /// The request target is not origin- or absolute-form.
    BadTarget,
    /// The head breaks a rule httparse does not check (bare LF, Host).
    BadHead(&'static str),
    /// A method a proxy must not forward (CONNECT).
    MethodNotAllowed,
    /// A transfer coding other than `chunked` (RFC 9112 6.1: 501).
    UnsupportedCoding,
    /// Content-Length/Transfer-Encoding cannot delimit the body.
    BadFraming(&'static str),
    /// The chunked coding is broken.
    BadChunk(&'static str),
    /// The peer closed in the middle of a message.
    UnexpectedEof,
    /// The peer was too slow.
    Timeout,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Io(e) => write!(f, "i/o error: {e}"),
            HttpError::Malformed(e) => write!(f, "malformed head: {e}"),
            HttpError::TooManyHeaders => write!(f, "more than {} headers", head::MAX_HEADERS),
            HttpError::HeadTooLarge => write!(f, "head larger than {} bytes", head::MAX_HEAD),
            HttpError::BadTarget => write!(f, "request target is not a path or an http(s) URL"),
            HttpError::BadHead(why) => write!(f, "bad head: {why}"),
            HttpError::MethodNotAllowed => write!(f, "CONNECT is not proxied"),
            HttpError::UnsupportedCoding => {
                write!(f, "transfer codings other than chunked are not implemented")
            }
            HttpError::BadFraming(why) => write!(f, "bad body framing: {why}"),
            HttpError::BadChunk(why) => write!(f, "bad chunked coding: {why}"),
            HttpError::UnexpectedEof => write!(f, "connection closed mid-message"),
            HttpError::Timeout => write!(f, "timed out"),
        }
    }
}

impl std::error::Error for HttpError {}

impl From<io::Error> for HttpError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::TimedOut => HttpError::Timeout,
            _ => HttpError::Io(e),
        }
    }
}

impl HttpError {
    /// The status to answer a client whose request failed this way, if an
    /// answer still makes sense (the connection is closed afterwards).
    pub fn client_status(&self) -> Option<u16> {
        match self {
            HttpError::TooManyHeaders | HttpError::HeadTooLarge => Some(431),
            HttpError::Malformed(_)
            | HttpError::BadTarget
            | HttpError::BadHead(_)
            | HttpError::BadFraming(_)
            | HttpError::BadChunk(_) => Some(400),
            HttpError::MethodNotAllowed => Some(405),
            HttpError::Timeout => Some(408),
            HttpError::UnsupportedCoding => Some(501),
            HttpError::Io(_) | HttpError::UnexpectedEof => None,
        }
    }

    /// The Kubernetes `Status` reason that goes with [`HttpError::client_status`].
    pub fn status_reason(&self) -> &'static str {
        match self.client_status() {
            Some(405) => "MethodNotAllowed",
            Some(408) => "Timeout",
            Some(431) => "RequestEntityTooLarge",
            _ => "BadRequest",
        }
    }
}

/// The standard reason phrase of an HTTP status code.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Payload Too Large",
        414 => "URI Too Long",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}
