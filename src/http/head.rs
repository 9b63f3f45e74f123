//! Request and response heads: parsing with httparse, serialization, framing.
//!
//! Heads are small and short-lived, so they own their bytes (one `Vec` per
//! header); bodies are never held here. Every limit is the caller's: the head
//! buffer is capped at [`MAX_HEAD`] and at most [`MAX_HEADERS`] headers parse.

use super::HttpError;

/// Largest request or response head accepted (request line + headers).
pub const MAX_HEAD: usize = 64 * 1024;
/// Most headers accepted in one head.
pub const MAX_HEADERS: usize = 100;

/// A parsed value, or a request for more bytes.
#[derive(Debug)]
pub enum Parsed<T> {
    /// The value and how many bytes of the buffer it used.
    Complete(T, usize),
    /// The head is not complete yet; read more.
    Partial,
}

/// One header as received: the name keeps its case, the value its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name, case as received.
    pub name: String,
    /// Raw value bytes (not necessarily UTF-8).
    pub value: Vec<u8>,
}

/// How a message body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes (responses only).
    Close,
}

/// Headers a proxy must not forward (RFC 9110 7.6.1), compared lower-case.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// A list of headers with case-insensitive look-ups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<Header>);

impl Headers {
    /// The first value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
    }

    /// The first value of `name` as UTF-8 text, if present and valid.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// All values of `name`.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
    }

    /// Whether any comma-separated token of any `name` header equals `token`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name).any(|v| {
            v.split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    }

    /// Removes every header called `name`.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|h| !h.name.eq_ignore_ascii_case(name));
    }

    /// Replaces every `name` header with one of the given value.
    pub fn set(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        self.remove(name);
        self.0.push(Header {
            name: name.to_owned(),
            value: value.into(),
        });
    }

    /// Drops hop-by-hop headers, including any named in `Connection`.
    pub fn remove_hop_by_hop(&mut self) {
        let named: Vec<String> = self
            .get_all("connection")
            .flat_map(|v| v.split(|&b| b == b','))
            .filter_map(|t| std::str::from_utf8(t.trim_ascii()).ok())
            .map(|t| t.to_ascii_lowercase())
            .collect();
        self.0.retain(|h| {
            let lower = h.name.to_ascii_lowercase();
            !HOP_BY_HOP.contains(&lower.as_str()) && !named.contains(&lower)
        });
    }

    /// The body framing these headers announce (request rules: no
    /// length and no chunking means no body).
    fn framing(&self) -> Result<Option<Framing>, HttpError> {
        let te: Vec<&[u8]> = self.get_all("transfer-encoding").collect();
        if !te.is_empty() {
            // Only "chunked" as the final coding can be delimited; we do not
            // decode other codings, so anything else is refused.
            let last = te
                .iter()
                .flat_map(|v| v.split(|&b| b == b','))
                .map(|t| t.trim_ascii())
                .rfind(|t| !t.is_empty());
            return match last {
                Some(t) if t.eq_ignore_ascii_case(b"chunked") => Ok(Some(Framing::Chunked)),
                _ => Err(HttpError::BadFraming("unsupported Transfer-Encoding")),
            };
        }
        let mut length = None;
        for v in self.get_all("content-length") {
            let n = parse_content_length(v)?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::BadFraming("conflicting Content-Length headers"));
            }
            length = Some(n);
        }
        Ok(length.map(|n| {
            if n == 0 {
                Framing::Empty
            } else {
                Framing::Length(n)
            }
        }))
    }

    fn encode(&self, out: &mut Vec<u8>) {
        for h in &self.0 {
            out.extend_from_slice(h.name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(&h.value);
            out.extend_from_slice(b"\r\n");
        }
    }

    fn from_httparse(headers: &[httparse::Header<'_>]) -> Headers {
        Headers(
            headers
                .iter()
                .map(|h| Header {
                    name: h.name.to_owned(),
                    value: h.value.to_vec(),
                })
                .collect(),
        )
    }
}

fn parse_content_length(v: &[u8]) -> Result<u64, HttpError> {
    let text = std::str::from_utf8(v.trim_ascii())
        .map_err(|_| HttpError::BadFraming("Content-Length is not a number"))?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HttpError::BadFraming("Content-Length is not a number"));
    }
    text.parse()
        .map_err(|_| HttpError::BadFraming("Content-Length is too large"))
}

/// A request line and its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Method, e.g. `GET`.
    pub method: String,
    /// Request target as sent: path and optional `?query`.
    pub target: String,
    /// HTTP minor version (0 or 1).
    pub minor: u8,
    /// Headers in order.
    pub headers: Headers,
}

impl RequestHead {
    /// Parses a request head from the start of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Parsed<RequestHead>, HttpError> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut slots);
        let used = match req.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
            Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
            Err(e) => return Err(HttpError::Malformed(e)),
        };
        let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
            return Ok(Parsed::Partial);
        };
        if !target.starts_with('/') {
            return Err(HttpError::BadTarget);
        }
        Ok(Parsed::Complete(
            RequestHead {
                method: method.to_owned(),
                target: target.to_owned(),
                minor,
                headers: Headers::from_httparse(req.headers),
            },
            used,
        ))
    }

    /// The path part of the target.
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(p, _)| p)
    }

    /// The query part of the target, without `?`.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// The request body's framing.
    pub fn framing(&self) -> Result<Framing, HttpError> {
        Ok(self.headers.framing()?.unwrap_or(Framing::Empty))
    }

    /// Whether the client asks to switch protocols (exec, attach, port-forward).
    pub fn is_upgrade(&self) -> bool {
        self.headers.has_token("connection", "upgrade") && self.headers.get("upgrade").is_some()
    }

    /// Whether the client allows the connection to be reused after this request.
    pub fn keep_alive(&self) -> bool {
        if self.headers.has_token("connection", "close") {
            return false;
        }
        self.minor >= 1 || self.headers.has_token("connection", "keep-alive")
    }

    /// Serializes the head as HTTP/1.1.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        self.headers.encode(out);
        out.extend_from_slice(b"\r\n");
    }
}

/// A status line and its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Reason phrase as received.
    pub reason: String,
    /// HTTP minor version (0 or 1).
    pub minor: u8,
    /// Headers in order.
    pub headers: Headers,
}

impl ResponseHead {
    /// A fresh HTTP/1.1 response head with no headers.
    pub fn new(status: u16) -> ResponseHead {
        ResponseHead {
            status,
            reason: crate::status::reason_phrase(status).to_owned(),
            minor: 1,
            headers: Headers::default(),
        }
    }

    /// Parses a response head from the start of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Parsed<ResponseHead>, HttpError> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut slots);
        let used = match res.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
            Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
            Err(e) => return Err(HttpError::Malformed(e)),
        };
        let (Some(status), Some(minor)) = (res.code, res.version) else {
            return Ok(Parsed::Partial);
        };
        Ok(Parsed::Complete(
            ResponseHead {
                status,
                reason: res.reason.unwrap_or("").to_owned(),
                minor,
                headers: Headers::from_httparse(res.headers),
            },
            used,
        ))
    }

    /// The response body's framing, given the request method it answers
    /// (RFC 9112 6.3: HEAD, 1xx, 204 and 304 have no body).
    pub fn framing(&self, request_method: &str) -> Result<Framing, HttpError> {
        if request_method.eq_ignore_ascii_case("HEAD")
            || (100..200).contains(&self.status)
            || self.status == 204
            || self.status == 304
        {
            return Ok(Framing::Empty);
        }
        Ok(self.headers.framing()?.unwrap_or(Framing::Close))
    }

    /// Whether the server keeps the connection open after this response.
    pub fn keep_alive(&self) -> bool {
        if self.headers.has_token("connection", "close") {
            return false;
        }
        self.minor >= 1 || self.headers.has_token("connection", "keep-alive")
    }

    /// The media type of `Content-Type` without parameters, lower-cased.
    pub fn media_type(&self) -> Option<String> {
        let ct = self.headers.get_str("content-type")?;
        Some(
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase(),
        )
    }

    /// Serializes the head as HTTP/1.1.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(self.status.to_string().as_bytes());
        out.push(b' ');
        let reason = if self.reason.is_empty() {
            crate::status::reason_phrase(self.status)
        } else {
            &self.reason
        };
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        self.headers.encode(out);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> RequestHead {
        match RequestHead::parse(text.as_bytes()) {
            Ok(Parsed::Complete(h, n)) => {
                assert_eq!(n, text.len());
                h
            }
            other => panic!("{text:?}: {other:?}"),
        }
    }

    #[test]
    fn request_framing_table() {
        let cases: &[(&str, Result<Framing, ()>)] = &[
            ("GET / HTTP/1.1\r\n\r\n", Ok(Framing::Empty)),
            (
                "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
                Ok(Framing::Length(5)),
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                Ok(Framing::Empty),
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                Ok(Framing::Chunked),
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                Ok(Framing::Chunked),
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
                Err(()),
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                Err(()),
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                Ok(Framing::Length(5)),
            ),
            ("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", Err(())),
            (
                "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                Err(()),
            ),
            // Transfer-Encoding wins over Content-Length (RFC 9112 6.3).
            (
                "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                Ok(Framing::Chunked),
            ),
        ];
        for (text, want) in cases {
            let got = req(text).framing().map_err(|_| ());
            assert_eq!(&got, want, "{text:?}");
        }
    }

    #[test]
    fn response_framing_table() {
        let cases: &[(&str, &str, Framing)] = &[
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
                "GET",
                Framing::Length(2),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
                "HEAD",
                Framing::Empty,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", "GET", Framing::Close),
            ("HTTP/1.1 204 No Content\r\n\r\n", "DELETE", Framing::Empty),
            ("HTTP/1.1 304 Not Modified\r\n\r\n", "GET", Framing::Empty),
            (
                "HTTP/1.1 101 Switching Protocols\r\n\r\n",
                "GET",
                Framing::Empty,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                "GET",
                Framing::Chunked,
            ),
        ];
        for (text, method, want) in cases {
            let Ok(Parsed::Complete(head, _)) = ResponseHead::parse(text.as_bytes()) else {
                panic!("{text:?}");
            };
            assert_eq!(head.framing(method).ok(), Some(*want), "{text:?}");
        }
    }

    #[test]
    fn partial_and_bad_heads() {
        assert!(matches!(
            RequestHead::parse(b"GET / HTTP/1.1\r\nHost: x\r\n"),
            Ok(Parsed::Partial)
        ));
        assert!(matches!(RequestHead::parse(b"GET"), Ok(Parsed::Partial)));
        assert!(RequestHead::parse(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n").is_err());
        assert!(matches!(
            RequestHead::parse(b"GET http://x/ HTTP/1.1\r\n\r\n"),
            Err(HttpError::BadTarget)
        ));
        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            many.push_str(&format!("X-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert!(matches!(
            RequestHead::parse(many.as_bytes()),
            Err(HttpError::TooManyHeaders)
        ));
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = req("GET /api?x=1 HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: 5\r\nAuthorization: Bearer t\r\nTE: trailers\r\nImpersonate-User: u\r\n\r\n");
        assert_eq!(h.path(), "/api");
        assert_eq!(h.query(), Some("x=1"));
        h.headers.remove_hop_by_hop();
        let names: Vec<&str> = h.headers.0.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["Host", "Authorization", "Impersonate-User"]);
    }

    #[test]
    fn keep_alive_and_upgrade() {
        assert!(req("GET / HTTP/1.1\r\n\r\n").keep_alive());
        assert!(!req("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive());
        assert!(!req("GET / HTTP/1.0\r\n\r\n").keep_alive());
        assert!(req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive());
        assert!(
            req("POST /exec HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n")
                .is_upgrade()
        );
        assert!(!req("GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n").is_upgrade());
    }

    #[test]
    fn encode_round_trips() {
        let text = "PUT /a/b?c HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
        let mut out = Vec::new();
        req(text).encode(&mut out);
        assert_eq!(out, text.as_bytes());
        let mut res = ResponseHead::new(503);
        res.headers.set("Retry-After", "5");
        let mut out = Vec::new();
        res.encode(&mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\n\r\n"
        );
    }
}
