//! Request and response heads: parsing with httparse, strict validation,
//! serialization, framing.
//!
//! lite-apiserver is the *strict party* of RFC 9112: whatever two readers
//! could understand differently is refused here, before a byte reaches the
//! upstream, so no request can desync a pooled upstream connection. On top
//! of what httparse refuses, a request head is refused when a line ends in
//! a bare LF, the target is not origin- or absolute-form, `Host` is missing
//! or repeated, or its framing fields are ambiguous ([`framing_of`]).
//!
//! Heads are small and short-lived, so they own their bytes (one `Vec` per
//! header); bodies are never held here. Every limit is the caller's: at most
//! [`MAX_HEAD`] bytes of a head are looked at and at most [`MAX_HEADERS`]
//! fields parse.

pub use super::framing::{framing_of, is_tchar, same_name, trim_ows, Fields, Framing, HopByHop};
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

impl Fields for Headers {
    fn each(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.iter().map(|h| (h.name.as_str(), h.value.as_slice()))
    }
}

/// A list of headers with case-insensitive look-ups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<Header>);

impl Headers {
    /// The first value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|h| same_name(h.name.as_str(), name))
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
            .filter(move |h| same_name(h.name.as_str(), name))
            .map(|h| h.value.as_slice())
    }

    /// How many `name` fields there are.
    pub fn count(&self, name: &str) -> usize {
        self.get_all(name).count()
    }

    /// Whether any comma-separated token of any `name` header equals `token`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name).any(|v| {
            v.split(|&b| b == b',')
                .any(|t| same_name(t.trim_ascii(), token))
        })
    }

    /// Removes every header called `name`.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|h| !same_name(h.name.as_str(), name));
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
        let hop = self.hop_by_hop();
        let keep: Vec<bool> = self.0.iter().map(|h| !hop.contains(&h.name)).collect();
        let mut keep = keep.into_iter();
        self.0.retain(|_| keep.next().unwrap_or(true));
    }

    /// Which fields are hop-by-hop here: RFC 9110's and those named in
    /// `Connection` (one pass over the fields, no allocation but the set).
    pub fn hop_by_hop(&self) -> HopByHop<'_> {
        HopByHop::of(self)
    }

    /// Writes every field for which `keep` says yes.
    pub fn encode_where(&self, out: &mut Vec<u8>, keep: impl Fn(&Header) -> bool) {
        for h in self.0.iter().filter(|h| keep(h)) {
            out.extend_from_slice(h.name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(&h.value);
            out.extend_from_slice(b"\r\n");
        }
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

/// The bytes of `buf` a head may use.
pub(super) fn head_window(buf: &[u8]) -> &[u8] {
    &buf[..buf.len().min(MAX_HEAD)]
}

/// A head httparse found complete in its first `n` bytes, unless one of
/// its lines ends in a bare LF (httparse takes a bare LF as a line end, so
/// with the head complete nothing else can come before one).
pub(super) fn complete_head(window: &[u8], n: usize) -> Result<usize, HttpError> {
    match bare_lf(&window[..n]) {
        Some(_) => Err(HttpError::BadHead("a line ends in a bare LF")),
        None => Ok(n),
    }
}

/// Header slots httparse fills without their being initialised first
/// (initialising [`MAX_HEADERS`] of them is most of a small head's parse).
pub(super) type Slots<'b> = [std::mem::MaybeUninit<httparse::Header<'b>>; MAX_HEADERS];

/// Empty [`Slots`].
pub(super) fn slots<'b>() -> Slots<'b> {
    [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS]
}

/// Parses a head with httparse, looking at no more than [`MAX_HEAD`] bytes:
/// a head that does not end within them is [`HttpError::HeadTooLarge`].
/// `Ok(None)`: not complete yet. A bare LF is refused although httparse
/// accepts it (a reader downstream could see other lines), and whatever
/// breaks a rule first, by position, decides, as a strict reader going
/// byte by byte would.
pub(super) fn parse_within<'b>(
    buf: &'b [u8],
    mut parse: impl FnMut(&'b [u8]) -> Result<httparse::Status<usize>, httparse::Error>,
) -> Result<Option<usize>, HttpError> {
    let window = head_window(buf);
    if let Ok(httparse::Status::Complete(n)) = parse(window) {
        return complete_head(window, n).map(Some);
    }
    let lf = bare_lf(window);
    match parse(&window[..lf.unwrap_or(window.len())]) {
        Ok(httparse::Status::Complete(n)) => Ok(Some(n)),
        Ok(httparse::Status::Partial) if lf.is_some() => {
            Err(HttpError::BadHead("a line ends in a bare LF"))
        }
        Ok(httparse::Status::Partial) if window.len() >= MAX_HEAD => Err(HttpError::HeadTooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HttpError::TooManyHeaders),
        Err(e) => Err(HttpError::Malformed(e)),
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// 0x80 in exactly the bytes of `x` that are zero (no borrow between
/// bytes, so no false positives next to a real one).
fn zero_bytes(x: u64) -> u64 {
    const LOW: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    !(((x & LOW) + LOW) | x | LOW)
}

/// Offset of the first LF not preceded by CR, eight bytes at a time (a
/// head is scanned on every request and every answer).
fn bare_lf(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    // Whether the byte before `at` is CR.
    let mut cr_before = false;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let w = crate::json::word(chunk);
        let lf = zero_bytes(w ^ (ONES * u64::from(b'\n')));
        let cr = zero_bytes(w ^ (ONES * u64::from(b'\r')));
        // Byte i is preceded by CR when byte i-1 is (byte 0: the last
        // byte of the previous word).
        let after_cr = (cr << 8) | (u64::from(cr_before) << 7);
        let bare = lf & !after_cr;
        if bare != 0 {
            return Some(at + (bare.trailing_zeros() / 8) as usize);
        }
        cr_before = cr >> 63 != 0;
        at += 8;
    }
    for (i, &b) in bytes[at..].iter().enumerate() {
        if b == b'\n' && !cr_before {
            return Some(at + i);
        }
        cr_before = b == b'\r';
    }
    None
}

/// Offset of the first byte of `bytes` that is `needle` or, with
/// `non_ascii`, not ASCII; eight bytes at a time (targets are split and
/// checked on every request).
pub(super) fn find_byte(bytes: &[u8], needle: u8, non_ascii: bool) -> Option<usize> {
    let high = if non_ascii { HIGH } else { 0 };
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let w = crate::json::word(chunk);
        let hit = zero_bytes(w ^ (ONES * u64::from(needle))) | (w & high);
        if hit != 0 {
            return Some(at + (hit.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let rest = bytes[at..]
        .iter()
        .position(|&b| b == needle || non_ascii && !b.is_ascii());
    rest.map(|i| at + i)
}

/// The origin-form (`/path?query`) of a request target: origin-form as is,
/// absolute-form (`http[s]://authority/path?query`) reduced to its path;
/// anything else (asterisk- or authority-form, a fragment, a byte that is
/// not ASCII, which no form of request target has) is refused.
fn origin_form(target: &str) -> Result<String, HttpError> {
    if find_byte(target.as_bytes(), b'#', true).is_some() {
        return Err(HttpError::BadTarget);
    }
    if target.as_bytes().first() == Some(&b'/') {
        return Ok(target.to_owned());
    }
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &target[7..]
    } else if lower.starts_with("https://") {
        &target[8..]
    } else {
        return Err(HttpError::BadTarget);
    };
    let path_at = rest.find(['/', '?']).unwrap_or(rest.len());
    if path_at == 0 {
        return Err(HttpError::BadTarget);
    }
    Ok(match &rest[path_at..] {
        "" => "/".to_owned(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_owned(),
    })
}

/// A request line and its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Method, e.g. `GET`.
    pub method: String,
    /// Request target in origin-form: path and optional `?query`.
    pub target: String,
    /// HTTP minor version (0 or 1).
    pub minor: u8,
    /// Headers in order.
    pub headers: Headers,
    /// The body framing, validated at parse time.
    framing: Framing,
}

impl RequestHead {
    /// A request head built in code (no framing fields: no body).
    pub fn new(method: &str, target: &str, headers: Headers) -> RequestHead {
        RequestHead {
            method: method.to_owned(),
            target: target.to_owned(),
            minor: 1,
            headers,
            framing: Framing::Empty,
        }
    }

    /// The same head for a body of `n` bytes sent with Content-Length
    /// (a body read whole, sent again later).
    pub fn with_body_length(mut self, n: u64) -> RequestHead {
        self.headers.remove("transfer-encoding");
        self.headers.remove("content-length");
        self.framing = if n == 0 {
            Framing::Empty
        } else {
            Framing::Length(n)
        };
        self
    }

    /// Parses and validates a request head from the start of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Parsed<RequestHead>, HttpError> {
        // The usual head, complete in `buf`: parsed once.
        let window = head_window(buf);
        let mut slots = slots();
        let mut req = httparse::Request::new(&mut []);
        if let Ok(httparse::Status::Complete(n)) = req.parse_with_uninit_headers(window, &mut slots)
        {
            return Self::validate(&req, complete_head(window, n)?);
        }
        Self::parse_general(buf)
    }

    /// [`RequestHead::parse`] for a head that is not complete or not
    /// valid: the first rule broken decides.
    #[inline(never)]
    fn parse_general(buf: &[u8]) -> Result<Parsed<RequestHead>, HttpError> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut slots);
        let Some(used) = parse_within(buf, |b| req.parse(b))? else {
            return Ok(Parsed::Partial);
        };
        Self::validate(&req, used)
    }

    /// The head httparse parsed in `used` bytes, if valid.
    fn validate(
        req: &httparse::Request<'_, '_>,
        used: usize,
    ) -> Result<Parsed<RequestHead>, HttpError> {
        let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
            return Ok(Parsed::Partial);
        };
        // CONNECT first: its target is authority-form, which is refused
        // for every other method.
        if method == "CONNECT" {
            return Err(HttpError::MethodNotAllowed);
        }
        let target = origin_form(target)?;
        let headers = Headers::from_httparse(req.headers);
        let hosts = headers.count("host");
        if hosts > 1 || (hosts == 0 && minor >= 1) {
            return Err(HttpError::BadHead("a request needs exactly one Host field"));
        }
        let te = headers.get("transfer-encoding").is_some();
        if minor == 0 && te && headers.get("content-length").is_none() {
            // (with Content-Length too, framing_of says so first)
            return Err(HttpError::BadFraming(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        let framing = framing_of(&headers)?.unwrap_or(Framing::Empty);
        Ok(Parsed::Complete(
            RequestHead {
                method: method.to_owned(),
                target,
                minor,
                headers,
                framing,
            },
            used,
        ))
    }

    /// The path part of the target.
    pub fn path(&self) -> &str {
        self.query_at()
            .and_then(|i| self.target.get(..i))
            .unwrap_or(&self.target)
    }

    /// The query part of the target, without `?`.
    pub fn query(&self) -> Option<&str> {
        self.target.get(self.query_at()? + 1..)
    }

    /// Where the target's `?` is.
    fn query_at(&self) -> Option<usize> {
        find_byte(self.target.as_bytes(), b'?', false)
    }

    /// The request body's framing (validated by [`RequestHead::parse`]).
    pub fn framing(&self) -> Result<Framing, HttpError> {
        Ok(self.framing)
    }

    /// The request body's framing.
    pub fn body_framing(&self) -> Framing {
        self.framing
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
            reason: crate::http::reason_phrase(status).to_owned(),
            minor: 1,
            headers: Headers::default(),
        }
    }

    /// Parses a response head from the start of `buf` (same line rules as
    /// requests: the upstream is held to them too).
    pub fn parse(buf: &[u8]) -> Result<Parsed<ResponseHead>, HttpError> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut slots);
        let Some(used) = parse_within(buf, |b| res.parse(b))? else {
            return Ok(Parsed::Partial);
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
    /// (RFC 9112 6.3: HEAD, 1xx, 204 and 304 have no body). Ambiguous
    /// framing fields are an error even where the body is empty: such an
    /// upstream is not to be trusted with the next request either.
    pub fn framing(&self, request_method: &str) -> Result<Framing, HttpError> {
        let declared = framing_of(&self.headers)?;
        if request_method.eq_ignore_ascii_case("HEAD")
            || (100..200).contains(&self.status)
            || self.status == 204
            || self.status == 304
        {
            return Ok(Framing::Empty);
        }
        Ok(declared.unwrap_or(Framing::Close))
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
            crate::http::reason_phrase(self.status)
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
mod tests;
